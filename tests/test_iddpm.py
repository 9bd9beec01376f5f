"""Improved DDPM: the L_vlb terms against closed forms, the sampler against the training
parameterisation, resume after a stop, per-image sampling seeds, the diverged path."""

import math
import types

import numpy as np
import pytest
import torch

from contamination import records
from contamination.experiments import diffusion
from contamination.metrics import fidelity
from contamination.experiments import iddpm
from contamination.experiments import training
from contamination.io import read_json
from helpers import FakeClock, signal_during_step

torch.set_num_threads(1)

T = 4000


@pytest.fixture(scope="module")
def gaussian():
    return diffusion.GaussianDiffusion.from_scheduler(diffusion.scheduler(T))


@pytest.fixture(scope="module")
def chain():
    """The forward process from the betas alone: betas and cumulative alpha products (float64)."""
    betas = diffusion.scheduler(T).betas.double()
    return betas, torch.cumprod(1.0 - betas, dim=0)


def toy_case(seed, t_values):
    generator = torch.Generator().manual_seed(seed)
    t = torch.tensor(t_values)
    x_start = torch.rand(len(t), 3, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    x_t = torch.randn(len(t), 3, 4, 4, generator=generator, dtype=torch.float64)
    eps = torch.randn(len(t), 3, 4, 4, generator=generator, dtype=torch.float64)
    v = torch.rand(len(t), 3, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    return t, x_start, x_t, torch.cat([eps, v], dim=1)


def bayes_posterior(chain, x_start, x_t, t):
    """q(x_{t-1} | x_t, x_0) as the product of q(x_t | x_{t-1}) and q(x_{t-1} | x_0)."""
    betas, alphas_cumprod = chain
    beta = betas[t].view(-1, 1, 1, 1)
    previous = alphas_cumprod[t - 1].view(-1, 1, 1, 1)
    precision = 1.0 / (1.0 - previous) + (1.0 - beta) / beta
    variance = 1.0 / precision
    mean = variance * (previous.sqrt() * x_start / (1.0 - previous) + (1.0 - beta).sqrt() * x_t / beta)
    return mean, variance


def test_vlb_term_equals_closed_form_gaussian_kl(gaussian, chain):
    t, x_start, x_t, output = toy_case(0, [1, 7, 250, 2000, 3999])
    betas, alphas_cumprod = chain
    true_mean, true_variance = bayes_posterior(chain, x_start, x_t, t)
    eps, v = output.split(3, dim=1)
    predicted_x_start = (x_t - (1.0 - alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1) * eps) / alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    model_mean, _ = bayes_posterior(chain, predicted_x_start, x_t, t)
    fraction = (v + 1) / 2
    model_variance = torch.exp(fraction * betas[t].log().view(-1, 1, 1, 1) + (1 - fraction) * true_variance.log())
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(true_mean, true_variance.sqrt()),
        torch.distributions.Normal(model_mean, model_variance.sqrt()),
    )
    expected = kl.mean(dim=(1, 2, 3)) / math.log(2.0)
    measured = gaussian.vlb_terms(output, x_start, x_t, t)
    assert (expected > 0).all()
    torch.testing.assert_close(measured, expected, rtol=1e-9, atol=0.0)


def test_vlb_term_at_t0_is_the_discretised_decoder_nll(gaussian, chain):
    t, x_start, noise, output = toy_case(1, [0, 0])
    x_start = torch.round((x_start + 1) * 127.5) / 127.5 - 1  # 256 pixel levels
    x_start[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # both edge bins
    x_t = gaussian.q_sample(x_start, t, noise)
    output[:, :3] = noise + 0.3 * output[:, :3]  # a decent eps, so the decoder is near x_0
    mean, log_variance, _ = gaussian.p_mean_variance(output, x_t, t)
    decoder = torch.distributions.Normal(mean, torch.exp(0.5 * log_variance))
    upper = torch.where(x_start > 0.999, torch.ones_like(x_start), decoder.cdf(x_start + 1 / 255))
    lower = torch.where(x_start < -0.999, torch.zeros_like(x_start), decoder.cdf(x_start - 1 / 255))
    expected = -torch.log(upper - lower).mean(dim=(1, 2, 3)) / math.log(2.0)
    torch.testing.assert_close(gaussian.vlb_terms(output, x_start, x_t, t), expected, rtol=1e-6, atol=0.0)


def test_the_decoder_floors_every_pixel_at_1e_12_like_improved_diffusion():
    """Pixels far outside a sharp decoder: improved-diffusion clamps each probability at 1e-12
    before the log, the edge bins (-1 and 1) as well as the interior ones."""
    x = torch.tensor([-1.0, 1.0, 0.0, -1.0, 1.0, 0.0], dtype=torch.float64)
    mean = torch.tensor([0.9, -0.9, 0.9, -1.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    log_scale = torch.full_like(x, math.log(0.01))
    log_probability = diffusion.discretized_gaussian_log_likelihood(x, mean, log_scale)
    torch.testing.assert_close(log_probability[:3], torch.full((3,), math.log(1e-12), dtype=torch.float64),
                               check_dtype=False)
    # The floor stops the gradient of floored pixels; it never makes gradients NaN (torch.where
    # differentiates the branches it does not select too).
    (gradient,) = torch.autograd.grad(log_probability.sum(), mean)
    assert torch.isfinite(gradient).all() and (gradient[:3] == 0).all()
    log_probability = log_probability.detach()
    # Near the mean the floor does not bind: the edge bins reach to -inf / +inf.
    normal = torch.distributions.Normal(mean[3:], 0.01)
    expected = torch.log(torch.stack([normal.cdf(x[3] + 1 / 255)[0], 1 - normal.cdf(x[4] - 1 / 255)[1],
                                      normal.cdf(x[5] + 1 / 255)[2] - normal.cdf(x[5] - 1 / 255)[2]]))
    torch.testing.assert_close(log_probability[3:], expected)


def test_hybrid_loss_trains_the_mean_by_mse_only(gaussian):
    t, x_start, x_t, output = toy_case(2, [3, 900, 3999])
    output.requires_grad_(True)
    noise = torch.randn_like(x_start)
    loss, mse, vlb = gaussian.hybrid_loss(output, x_start, x_t, t, noise, vlb_weight=0.001)
    torch.testing.assert_close(loss, mse + 0.001 * T * vlb)
    (gradient,) = torch.autograd.grad((loss - mse).sum(), output)
    assert torch.count_nonzero(gradient[:, :3]) == 0  # stop-gradient on the mean (eps)
    assert torch.count_nonzero(gradient[:, 3:]) > 0  # L_vlb trains the variance


def test_respaced_sampler_step_is_improved_ddpm_respacing():
    """diffusers' step at 250 respaced steps = the mean and variance of a diffusion whose betas
    are recomputed between the kept timesteps (improved-diffusion's SpacedDiffusion)."""
    ddpm = diffusion.scheduler(T)
    alphas_cumprod = ddpm.alphas_cumprod.double()
    ddpm.set_timesteps(250)
    kept = ddpm.timesteps.flip(0)
    assert kept.tolist() == [round(x) for x in np.linspace(0, T - 1, 250)]
    respaced_cumprod = alphas_cumprod[kept]
    respaced_betas = 1 - respaced_cumprod / torch.cat([torch.ones(1, dtype=torch.float64), respaced_cumprod[:-1]])
    respaced = diffusion.GaussianDiffusion(respaced_betas)
    for index in (1, 100, 249):
        timestep = kept[index]
        generator = torch.Generator().manual_seed(index)
        x_start = torch.rand(2, 3, 4, 4, generator=generator) - 0.5
        noise = torch.randn(2, 3, 4, 4, generator=generator)
        x_t = respaced.q_sample(x_start, torch.tensor([index, index]), noise)
        v = torch.rand(2, 3, 4, 4, generator=generator) * 2 - 1
        output = torch.cat([noise, v], dim=1)  # exact eps: x0 stays inside the clip range
        stepped = ddpm.step(output, timestep, x_t, generator=torch.Generator().manual_seed(99)).prev_sample
        mean, log_variance, _ = respaced.p_mean_variance(output, x_t, torch.tensor([index, index]))
        z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(99))
        torch.testing.assert_close(stepped, mean + torch.exp(0.5 * log_variance) * z, rtol=1e-4, atol=1e-4)


# ---- training, resume, sampling -------------------------------------------------------------

TINY_SPEC = {
    "image_size": 16,
    "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "attention_resolutions": [8],
             "attention_head_dim": 16, "norm_num_groups": 8, "dropout": 0.0},
    "diffusion_steps": T, "rescale_timesteps": True, "vlb_weight": 0.001, "iterations": 7, "global_batch_size": 4, "max_batch_per_process": None,
    "lr": 1e-3, "weight_decay": 0.0, "ema_decay": 0.9, "seed": 3, "checkpoint_every": 100, "log_every": 100,
    "num_workers": 0, "device": "cpu", "keep_checkpoint": False, "checkpoint_every_minutes": 30,
    "sample_count": 6, "sample_steps": 8, "sample_batch_size": 4, "sample_shard_size": 4,
}


@pytest.fixture
def images(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    return path


class StopAfter:
    """A StopRequest whose flag rises once ``steps`` training steps have checked it."""

    def __init__(self, steps):
        self.remaining = steps

    @property
    def requested(self):
        self.remaining -= 1
        return self.remaining < 0


def train(spec, images, checkpoint_dir, stop=None):
    env = training.setup_distributed("cpu")
    checkpointer = training.Checkpointer(checkpoint_dir, env, records.sha256_of_json(spec))
    unet, _ = iddpm.train(spec, images, checkpointer, env, stop=stop)
    return unet, checkpointer


def test_resumed_training_ends_with_identical_weights(tmp_path, images):
    # 12 images in batches of 4: 3 steps per epoch; stop inside the second epoch.
    straight, _ = train(TINY_SPEC, images, tmp_path / "straight", stop=StopAfter(100))
    with pytest.raises(training.Interrupted):
        train(TINY_SPEC, images, tmp_path / "resumed", stop=StopAfter(4))
    checkpoint = torch.load(tmp_path / "resumed" / training.CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["position"] == {"epoch": 1, "step": 2}  # 5 steps done (the 5th saw the flag)
    resumed, _ = train(TINY_SPEC, images, tmp_path / "resumed", stop=StopAfter(100))
    straight_state, resumed_state = straight.state_dict(), resumed.state_dict()
    assert straight_state.keys() == resumed_state.keys()
    assert all(torch.equal(straight_state[name], resumed_state[name]) for name in straight_state)
    fresh = iddpm.build_unet(TINY_SPEC["unet"], 16).state_dict()
    assert not all(torch.equal(fresh[name], straight_state[name]) for name in fresh)  # it did train


def train_command(spec, images, directory):
    manifest = directory / "manifest.parquet"
    if not manifest.exists():
        directory.mkdir(parents=True, exist_ok=True)
        manifest.write_bytes(b"identity of the training data")
    iddpm.run_train(types.SimpleNamespace(spec=spec, images=str(images), manifest=str(manifest), data_status=None,
                                          checkpoint_dir=str(directory / "checkpoints"), out=str(directory / "model"),
                                          status=str(directory / "training.json")))
    checkpoint = torch.load(directory / "checkpoints" / training.CHECKPOINT_NAME, weights_only=True)
    return checkpoint, read_json(directory / "training.json")


def test_sigusr1_mid_epoch_exits_75_and_the_retry_ends_as_an_uninterrupted_run(tmp_path, images, monkeypatch):
    from safetensors.torch import load_file

    spec = dict(TINY_SPEC, keep_checkpoint=True)
    straight, straight_status = train_command(spec, images, tmp_path / "straight")
    signal_during_step(monkeypatch, 5)  # 3 steps per epoch: the 2nd step of epoch 1
    with pytest.raises(SystemExit) as stopped:
        train_command(spec, images, tmp_path / "resumed")
    assert stopped.value.code == training.EXIT_RESUME
    saved = torch.load(tmp_path / "resumed" / "checkpoints" / training.CHECKPOINT_NAME, weights_only=True)
    assert saved["position"] == {"epoch": 1, "step": 2} and saved["state"]["watch"]["steps"] == 5
    assert not (tmp_path / "resumed" / "training.json").exists()
    monkeypatch.undo()
    torch.manual_seed(99)  # the retry must not depend on the state the stopped run left
    resumed, resumed_status = train_command(spec, images, tmp_path / "resumed")
    assert resumed["position"] == straight["position"] == {"epoch": 2, "step": 1}
    assert resumed["state"]["watch"] == straight["state"]["watch"]
    for name in ("model", "ema"):  # raw and EMA weights
        assert all(torch.equal(straight["state"][name][key], resumed["state"][name][key])
                   for key in straight["state"][name])
    moments = [(state["exp_avg"], state["exp_avg_sq"]) for state in straight["state"]["optimizer"]["state"].values()]
    resumed_moments = [(state["exp_avg"], state["exp_avg_sq"])
                       for state in resumed["state"]["optimizer"]["state"].values()]
    assert len(moments) == len(resumed_moments) > 0
    assert all(torch.equal(a, b) for pair, other in zip(moments, resumed_moments) for a, b in zip(pair, other))
    assert resumed_status["training"] == straight_status["training"] and resumed_status["status"] == "ok"
    saved_models = [load_file(tmp_path / run / "model" / "diffusion_pytorch_model.safetensors")
                    for run in ("straight", "resumed")]
    assert all(torch.equal(saved_models[0][key], saved_models[1][key]) for key in saved_models[0])


@pytest.mark.parametrize("signalled_call, position", [(3, (1, 1)), (4, (1, 1)), (5, (2, 0))])
def test_a_stop_inside_an_optimizer_step_that_spans_two_epochs_resumes_identically(
        tmp_path, images, monkeypatch, signalled_call, position):
    """Accumulation 2 of 4 images, 12 images: 3 micro-batches per epoch, so optimizer step 2 takes
    the last batch of epoch 0 and the first of epoch 1. A stop on either of its micro-steps saves
    after it, at 4 micro-batches done (epoch 1, batch 1); one on step 3's first saves at (2, 0).
    The retry skips exactly those batches and ends with the uninterrupted run's weights."""
    spec = dict(TINY_SPEC, global_batch_size=8, max_batch_per_process=4, iterations=4)
    straight, straight_checkpointer = train(spec, images, tmp_path / "straight", stop=StopAfter(100))
    signal_during_step(monkeypatch, signalled_call)
    with pytest.raises(training.Interrupted):
        train(spec, images, tmp_path / "resumed")
    saved = torch.load(tmp_path / "resumed" / training.CHECKPOINT_NAME, weights_only=True)
    assert saved["position"] == dict(zip(("epoch", "step"), position))
    assert saved["state"]["watch"]["steps"] == (signalled_call + 1) // 2
    monkeypatch.undo()
    torch.manual_seed(99)  # the retry must not depend on the state the stopped run left
    resumed, resumed_checkpointer = train(spec, images, tmp_path / "resumed", stop=StopAfter(100))
    assert all(torch.equal(value, resumed.state_dict()[key]) for key, value in straight.state_dict().items())
    first, second = (torch.load(checkpointer.path, weights_only=True)
                     for checkpointer in (straight_checkpointer, resumed_checkpointer))
    assert first["position"] == second["position"] == {"epoch": 2, "step": 2}
    assert first["state"]["watch"] == second["state"]["watch"] and first["state"]["watch"]["steps"] == 4
    for name in ("model", "ema"):
        assert all(torch.equal(value, second["state"][name][key]) for key, value in first["state"][name].items())


def test_wall_time_checkpoints_mid_epoch_and_training_goes_on_unchanged(tmp_path, images, monkeypatch):
    straight, _ = train(TINY_SPEC, images, tmp_path / "straight", stop=StopAfter(100))
    clock, saved = FakeClock(), []
    checkpointer = training.Checkpointer(tmp_path / "timed", training.setup_distributed("cpu"), "x",
                                         every_minutes=30, clock=clock)
    real_save, real_check_step = checkpointer.save, training.check_step
    checkpointer.save = lambda position, **state: (saved.append(position), real_save(position, **state))
    steps = iter(range(1, 100))

    def half_an_hour_into_step_5(*args, **kwargs):
        if next(steps) == 5:
            clock.now += 30 * 60
        return real_check_step(*args, **kwargs)

    monkeypatch.setattr(training, "check_step", half_an_hour_into_step_5)
    timed, _ = iddpm.train(TINY_SPEC, images, checkpointer, training.setup_distributed("cpu"), stop=StopAfter(100))
    # checkpoint_every (100) is never reached: the wall time saves after step 5, the end after step 7
    assert saved == [training.Position(1, 2), training.Position(2, 1)]
    assert all(torch.equal(value, timed.state_dict()[key]) for key, value in straight.state_dict().items())


def test_samples_depend_on_their_number_only(tmp_path, images):
    unet, _ = train(dict(TINY_SPEC, iterations=2), images, tmp_path / "run", stop=StopAfter(100))
    device = torch.device("cpu")
    together = np.concatenate(list(iddpm.sample(unet, TINY_SPEC, range(0, 4), device)))
    alone = np.concatenate(list(iddpm.sample(unet, dict(TINY_SPEC, sample_batch_size=1), range(2, 4), device)))
    assert together.shape == (4, 16, 16, 3) and together.dtype == np.uint8
    # Batch composition changes float round-off (1e-6), which can move a pixel by one level.
    assert np.abs(together[2:].astype(int) - alone.astype(int)).max() <= 1
    assert not np.array_equal(together[0], together[1])


def test_shards_cover_the_sample_count_once():
    numbers = [n for shard in range(2) for n in iddpm.shard_numbers(TINY_SPEC, shard)]
    assert numbers == list(range(TINY_SPEC["sample_count"]))
    with pytest.raises(Exception, match="iddpm.sample_count"):
        iddpm.shard_numbers(TINY_SPEC, 2)


def test_diverged_training_writes_status_and_empty_samples(tmp_path, images):
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"identity of the training data")
    spec = dict(TINY_SPEC, lr=1e30, iterations=20)  # Adam steps of 1e30 make the loss non-finite
    train_args = types.SimpleNamespace(spec=spec, images=str(images), manifest=str(manifest), data_status=None,
                                       checkpoint_dir=str(tmp_path / "checkpoint"), out=str(tmp_path / "model"),
                                       status=str(tmp_path / "training.json"))
    iddpm.run_train(train_args)
    status = read_json(tmp_path / "training.json")
    assert status["status"] == "diverged" and "non-finite training loss" in status["reason"]
    diverged = status["training"]["diverged"]
    assert diverged["step"] == status["training"]["optimizer_steps"] + 1 and f"optimizer step {diverged['step']}" in status["reason"]
    assert list((tmp_path / "model").iterdir()) == []
    iddpm.run_sample(types.SimpleNamespace(spec=spec, model=str(tmp_path / "model"), status=train_args.status,
                                           shard=0, out=str(tmp_path / "samples.npy")))
    assert np.load(tmp_path / "samples.npy").shape == (0, 16, 16, 3)
    np.save(tmp_path / "generated.npy", np.zeros((0, 8), np.float32))
    np.save(tmp_path / "real.npy", np.random.default_rng(1).normal(size=(10, 8)).astype(np.float32))
    fidelity.run_fidelity(types.SimpleNamespace(
        generated=str(tmp_path / "generated.npy"), reference=[f"imagenet64_val={tmp_path / 'real.npy'}"],
        kind="samples", k=5, block_size=8, device="cpu", training=train_args.status, sample_size=None, seed=0,
        fd_name=None, out=str(tmp_path / "m.json")))
    metrics = read_json(tmp_path / "m.json")
    assert metrics["status"] == "diverged" and metrics["metrics"]["FID_vs_imagenet64_val"] is None
    assert "non-finite training loss" in metrics["reasons"]["recall@5_vs_imagenet64_val"]


def test_trained_model_is_saved_and_sampled_through_from_pretrained(tmp_path, images):
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"identity of the training data")
    spec = dict(TINY_SPEC, iterations=3)
    train_args = types.SimpleNamespace(spec=spec, images=str(images), manifest=str(manifest), data_status=None,
                                       checkpoint_dir=str(tmp_path / "checkpoint"), out=str(tmp_path / "model"),
                                       status=str(tmp_path / "training.json"))
    iddpm.run_train(train_args)
    assert read_json(tmp_path / "training.json")["status"] == "ok"
    assert read_json(tmp_path / "training.json")["training"]["optimizer_steps"] == 3
    assert not (tmp_path / "checkpoint" / training.CHECKPOINT_NAME).exists()  # keep_checkpoint: false
    for shard in (0, 1):
        iddpm.run_sample(types.SimpleNamespace(spec=spec, model=train_args.out, status=train_args.status,
                                               shard=shard, out=str(tmp_path / f"samples-{shard}.npy")))
    shards = [np.load(tmp_path / f"samples-{shard}.npy") for shard in (0, 1)]
    assert [len(shard) for shard in shards] == [4, 2]
    assert all(shard.dtype == np.uint8 and shard.shape[1:] == (16, 16, 3) for shard in shards)
