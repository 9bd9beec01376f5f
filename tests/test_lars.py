"""LARS against updates worked out by hand."""

import pytest
import torch

from contamination.experiments.lars import LARS


def test_weight_step_is_scaled_by_the_trust_ratio_and_bias_step_is_plain_momentum():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # norm 5
    bias = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    optimizer = LARS([weight, bias], lr=2.0, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)

    weight.grad = torch.tensor([[0.6, 0.0], [0.0, 0.8]])
    bias.grad = torch.tensor([0.5, 0.5])
    optimizer.step()
    # weight: g + wd w = [[0.9, 0], [0, 1.2]] (norm 1.5); trust 0.001 * 5 / 1.5 = 1/300;
    # update [[0.003, 0], [0, 0.004]]; w - 2 * update.
    assert torch.allclose(weight, torch.tensor([[2.994, 0.0], [0.0, 3.992]]), atol=1e-7)
    # bias: 1-D, so no decay and no trust ratio: w - 2 * 0.5.
    assert torch.allclose(bias, torch.tensor([0.0, -2.0]))

    bias.grad = torch.tensor([0.5, 0.5])
    weight.grad = None  # a parameter without a gradient is left alone
    optimizer.step()
    # momentum buffer 0.9 * 0.5 + 0.5 = 0.95; w - 2 * 0.95
    assert torch.allclose(bias, torch.tensor([-1.9, -3.9]))
    assert torch.allclose(weight, torch.tensor([[2.994, 0.0], [0.0, 3.992]]), atol=1e-7)


def test_zero_weights_take_the_plain_gradient_step():
    weight = torch.nn.Parameter(torch.zeros(2, 3))
    optimizer = LARS([weight], lr=0.5, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001)
    weight.grad = torch.full((2, 3), 2.0)
    optimizer.step()
    # ||w|| = 0: trust ratio 1, so w = 0 - 0.5 * 2
    assert torch.equal(weight.detach(), torch.full((2, 3), -1.0))


def test_state_round_trips_through_state_dict():
    weight = torch.nn.Parameter(torch.tensor([[1.0, 2.0]]))
    optimizer = LARS([weight], lr=0.1)
    weight.grad = torch.tensor([[1.0, 1.0]])
    optimizer.step()
    restored = LARS([torch.nn.Parameter(weight.detach().clone())], lr=0.1)
    restored.load_state_dict(optimizer.state_dict())
    buffer = next(iter(restored.state.values()))["momentum_buffer"]
    assert torch.equal(buffer, optimizer.state[weight]["momentum_buffer"])
    assert buffer.abs().sum() > 0


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_trust_ratio_makes_the_step_size_independent_of_gradient_scale(momentum):
    steps = []
    for scale in (1.0, 1000.0):
        weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
        optimizer = LARS([weight], lr=1.0, momentum=momentum, trust_coefficient=0.01)
        weight.grad = torch.tensor([[1.0, -2.0]]) * scale
        optimizer.step()
        steps.append(weight.detach() - torch.tensor([[3.0, 4.0]]))
    assert torch.allclose(steps[0], steps[1])
    assert torch.allclose(steps[0].norm(), torch.tensor(0.01 * 5.0))
