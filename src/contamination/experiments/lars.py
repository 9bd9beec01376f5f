"""LARS (You et al., 2017, "Large Batch Training of Convolutional Networks"), as MAE's linear
probing uses it (facebookresearch/mae, util/lars.py).

For each parameter with more than one dimension (weights; biases and normalisation parameters
are left alone), weight decay is added to the gradient and the result is rescaled by the
trust ratio ``trust_coefficient * ||w|| / ||g + wd * w||`` (1 when either norm is 0). Every
parameter then takes a heavy-ball momentum step::

    mu = momentum * mu + update
    w  = w - lr * mu

Unlike the other modules of the package this one imports torch at the top: it defines a
``torch.optim.Optimizer`` subclass, and only training code (which already runs torch) imports it.
"""

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                update = parameter.grad
                if parameter.ndim > 1:
                    update = update.add(parameter, alpha=group["weight_decay"])
                    parameter_norm = torch.linalg.vector_norm(parameter)
                    update_norm = torch.linalg.vector_norm(update)
                    one = torch.ones_like(parameter_norm)
                    ratio = torch.where(
                        (parameter_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * parameter_norm / update_norm,
                        one,
                    )
                    update = update.mul(ratio)
                state = self.state[parameter]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(parameter)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                parameter.add_(buffer, alpha=-group["lr"])
        return loss
