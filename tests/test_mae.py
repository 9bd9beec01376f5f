"""MAE pre-training and linear probing (Table 11) on a tiny ViT, 32 px images, one thread."""

import json
import math
import signal
import subprocess
import sys

import pytest
import torch

from contamination.experiments import mae
from contamination.experiments import training
from contamination.__main__ import build_parser
from contamination.errors import ConfigError
from contamination.io import save_pretrained
from helpers import FakeClock, environment, signal_during_step
from imagesets import class_images, manifest, source_index, write_images

MODEL = {
    "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 64, "decoder_hidden_size": 32, "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 4, "decoder_intermediate_size": 64, "layer_norm_eps": 1e-6,
}
PRETRAIN = {
    "mask_ratio": 0.75, "norm_pix_loss": True, "epochs": 2, "warmup_epochs": 1, "global_batch_size": 16, "max_batch_per_process": 8,
    "base_lr": 1.5e-3, "min_lr": 0.0, "weight_decay": 0.05, "betas": [0.9, 0.95], "crop_scale": [0.2, 1.0],
    "amp": True, "max_skipped_steps": 100,
}
PROBE = {
    "epochs": 2, "warmup_epochs": 1, "global_batch_size": 16, "max_batch_per_process": None, "base_lr": 0.1, "min_lr": 0.0,
    "weight_decay": 0.0, "momentum": 0.9, "trust_coefficient": 0.001, "crop_scale": [0.08, 1.0],
    "val_resize_size": 36, "amp": True, "max_skipped_steps": 100,
}
RUN = {"seed": 0, "device": "cpu", "num_workers": 0, "print_freq": 1, "keep_checkpoint": False,
       "checkpoint_every_minutes": 30}
PRETRAIN_SPEC = dict(RUN, model=MODEL, pretrain=PRETRAIN)
PROBE_SPEC = dict(RUN, linear_probe=PROBE, num_classes=4)


def run_command(*arguments):
    """A CLI command in this process (parsed by the real parser; no interpreter start-up)."""
    args = build_parser().parse_args([str(argument) for argument in arguments])
    args.run(args)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """40 images of 4 colour classes: a manifest of 32 for pre-training and an ImageNet index
    (train 32, val 8) for probing."""
    directory = tmp_path_factory.mktemp("images")
    pictures, labels = class_images(40, classes=4, size=32, seed=0)
    paths = write_images(directory / "files", pictures, "img")
    return {
        "manifest": manifest(directory / "mixture.parquet", paths[:32], labels[:32]),
        "imagenet": source_index(directory / "imagenet.parquet", paths, labels, ["train"] * 32 + ["val"] * 8),
    }


def cpu():
    return training.setup_distributed("cpu")


def states_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


# ---- the model ------------------------------------------------------------------------------


def test_sincos_position_embedding_matches_an_independent_implementation():
    from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

    reference = build_2d_sinusoidal_position_embedding(height=4, width=4, embed_dim=32, cls_token=True)
    half = reference.shape[-1] // 2  # transformers rotates its halves to MAE's (column, row) layout
    reference = torch.cat([reference[..., half:], reference[..., :half]], dim=-1)
    assert torch.allclose(mae.sincos_position_embedding(32, 4)[0], reference, atol=1e-6)


def test_built_model_is_initialised_as_mae_does():
    torch.manual_seed(0)
    model = mae.build_mae(MODEL, PRETRAIN)
    embeddings, decoder = model.vit.embeddings, model.decoder
    # transformers 5.23 leaves these at zero; MAE sets them
    assert torch.equal(embeddings.position_embeddings, mae.sincos_position_embedding(32, 4))
    assert torch.equal(decoder.decoder_pos_embed, mae.sincos_position_embedding(32, 4))
    assert not embeddings.position_embeddings.requires_grad and not decoder.decoder_pos_embed.requires_grad
    assert 0.01 < embeddings.cls_token.std() < 0.04 and 0.01 < decoder.mask_token.std() < 0.04
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    assert all(torch.count_nonzero(linear.bias) == 0 for linear in linears)
    fan_in, fan_out = linears[0].weight.shape[1], linears[0].weight.shape[0]
    assert linears[0].weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))  # Xavier-uniform bound
    assert model.config.mask_ratio == 0.75 and model.config.norm_pix_loss


def test_weight_decay_spares_biases_and_one_dimensional_parameters():
    model = mae.build_mae(MODEL, PRETRAIN)
    no_decay, decay = mae.weight_decay_groups(model, 0.05)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert all(parameter.ndim > 1 for parameter in decay["params"])
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    assert len(no_decay["params"]) + len(decay["params"]) == len(trainable)
    assert any(parameter is model.vit.embeddings.cls_token for parameter in decay["params"])  # 3-D, as timm


def test_half_cycle_cosine_warms_up_linearly_then_decays_to_min_lr():
    def lr(epoch):
        return mae.half_cycle_cosine(epoch, peak_lr=1.0, min_lr=0.1, warmup_epochs=10, epochs=30)

    assert lr(0) == 0.0 and lr(5) == pytest.approx(0.5) and lr(10) == pytest.approx(1.0)
    assert lr(20) == pytest.approx(0.55) and lr(30) == pytest.approx(0.1)


def test_effective_batch_must_split_over_processes_and_names_the_key():
    env = training.DistEnv(rank=0, world_size=3, local_rank=0, device=torch.device("cpu"))
    split = mae.batch_split({"global_batch_size": 12, "max_batch_per_process": 2}, env, "mae.pretrain")
    assert (split.per_process_batch, split.accumulation_steps) == (2, 2)
    with pytest.raises(ConfigError, match=r"mae.pretrain.global_batch_size: 16 images do not split over 3 processes"):
        mae.batch_split({"global_batch_size": 16, "max_batch_per_process": 2}, env, "mae.pretrain")


def test_probe_head_is_batchnorm_without_affine_and_a_small_linear_layer():
    norm, linear = mae.probe_head(256, 10)
    assert not norm.affine and norm.eps == 1e-6
    assert 0.009 < linear.weight.std() < 0.011 and torch.count_nonzero(linear.bias) == 0


# ---- features -------------------------------------------------------------------------------


def test_features_are_deterministic_cls_tokens_of_the_saved_encoder(tmp_path):
    torch.manual_seed(0)
    model = mae.build_mae(MODEL, PRETRAIN)
    save_pretrained(model, tmp_path / "pretrained")
    encoder = mae.load_encoder(tmp_path / "pretrained")
    assert encoder.config.mask_ratio == 0.0 and not any(p.requires_grad for p in encoder.parameters())
    assert states_equal(encoder.state_dict(), model.vit.state_dict())

    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        first = mae.cls_features(encoder, images)
        torch.manual_seed(1234)  # ViTMAE would shuffle the patches with this RNG without the fixed noise
        second = mae.cls_features(encoder, images)
        alone = mae.cls_features(encoder, images[1:2])
        reference = encoder(pixel_values=images, noise=torch.arange(16.0).expand(3, 16)).last_hidden_state[:, 0]
    assert first.shape == (3, 32)
    assert torch.equal(first, second) and torch.equal(first, reference)
    assert torch.allclose(alone[0], first[1], atol=1e-5)
    assert not torch.allclose(first[0], first[1])


# ---- training ---------------------------------------------------------------------------------


def test_pretraining_interrupted_by_sigusr1_mid_epoch_resumes_to_identical_weights(images, tmp_path, monkeypatch):
    uninterrupted, history, status, _, steps = mae.pretrain(
        PRETRAIN_SPEC, images["manifest"], training.Checkpointer(tmp_path / "a", cpu(), "x"), cpu())
    assert status == "ok" and len(history.losses) == 2 and all(math.isfinite(loss) for loss in history.losses)

    checkpointer = training.Checkpointer(tmp_path / "b", cpu(), "x")
    # signalled during the 1st of the 4 batches of epoch 0; with accumulation 2 it stops after the 2nd
    signal_during_step(monkeypatch, 1)
    with pytest.raises(training.Interrupted):
        mae.pretrain(PRETRAIN_SPEC, images["manifest"], checkpointer, cpu())
    saved = torch.load(checkpointer.path, weights_only=True)
    assert saved["position"] == {"epoch": 0, "step": 2}
    monkeypatch.undo()
    torch.manual_seed(99)  # the resumed run must not depend on the state this process is in
    resumed, resumed_history, status, _, resumed_steps = mae.pretrain(PRETRAIN_SPEC, images["manifest"],
                                                                      checkpointer, cpu())

    assert status == "ok" and resumed_steps == steps
    assert states_equal(resumed.state_dict(), uninterrupted.state_dict())
    assert resumed_history.losses == history.losses
    assert not states_equal(resumed.state_dict(), mae.build_mae(MODEL, PRETRAIN).state_dict())


def test_wall_time_checkpoints_at_the_next_update_and_pretraining_goes_on_unchanged(images, tmp_path, monkeypatch):
    uninterrupted, history, _, _, _ = mae.pretrain(
        PRETRAIN_SPEC, images["manifest"], training.Checkpointer(tmp_path / "a", cpu(), "x"), cpu())
    clock, saved = FakeClock(), []
    checkpointer = training.Checkpointer(tmp_path / "b", cpu(), "x", every_minutes=30, clock=clock)
    real_save, real_check_step = checkpointer.save, training.check_step
    checkpointer.save = lambda position, **state: (saved.append(position), real_save(position, **state))
    batches = iter(range(1, 100))

    def half_an_hour_into_batch_5(*args, **kwargs):
        if next(batches) == 5:  # the 1st batch of epoch 1, which accumulates: no update yet
            clock.now += 30 * 60
        return real_check_step(*args, **kwargs)

    monkeypatch.setattr(training, "check_step", half_an_hour_into_batch_5)
    timed, timed_history, status, _, _ = mae.pretrain(PRETRAIN_SPEC, images["manifest"], checkpointer, cpu())
    assert status == "ok"
    assert saved == [training.Position(1, 0), training.Position(1, 2), training.Position(2, 0)]
    assert states_equal(timed.state_dict(), uninterrupted.state_dict()) and timed_history.losses == history.losses


def test_pretraining_reports_divergence_instead_of_crashing(images, tmp_path):
    spec = dict(PRETRAIN_SPEC, pretrain=dict(PRETRAIN, base_lr=float("inf")))
    _, history, status, reason, steps = mae.pretrain(spec, images["manifest"],
                                                     training.Checkpointer(tmp_path, cpu(), "x"), cpu())
    # The first update (after 2 accumulated batches) makes the weights infinite; the next batch finds it.
    assert status == "diverged" and reason == "non-finite weights at optimizer step 1"
    assert steps["diverged"] == {"step": 1, "reason": "non-finite weights"} and steps["optimizer_steps"] == 1


def test_a_batch_larger_than_the_data_names_the_config_key(images, tmp_path):
    spec = dict(PRETRAIN_SPEC, pretrain=dict(PRETRAIN, global_batch_size=64))
    with pytest.raises(ConfigError, match="mae.pretrain.global_batch_size: 64"):
        mae.pretrain(spec, images["manifest"], training.Checkpointer(tmp_path, cpu(), "x"), cpu())


def test_probe_crops_like_maes_util_crop_one_draw_cut_to_the_image():
    """MAE's linear-probe crop draws area and log aspect once and cuts a too-long side to the image;
    its mean area, integrated independently, differs from torchvision's (which redraws)."""
    import numpy as np
    from torchvision import transforms

    height, width, scale, draws = 375, 500, (0.08, 1.0), 20000
    torch.manual_seed(0)
    boxes = np.array([mae.one_draw_crop_box(height, width, scale) for _ in range(draws)])
    top, left, crop_height, crop_width = boxes.T
    assert (top >= 0).all() and (top + crop_height <= height).all() and (left + crop_width <= width).all()
    assert (crop_height == height).mean() > 0.1  # too tall crops are cut, not redrawn
    areas = crop_height * crop_width / (height * width)
    # E[min(sqrt(sAr), W) min(sqrt(sA/r), H)] / A over s ~ U(scale), log r ~ U(log 3/4, log 4/3)
    grid = (np.arange(1000) + 0.5) / 1000
    s = scale[0] + grid[:, None] * (scale[1] - scale[0])
    r = np.exp(np.log(3 / 4) + grid[None, :] * (np.log(4 / 3) - np.log(3 / 4)))
    area = height * width
    expected = (np.minimum(np.sqrt(s * area * r), width) * np.minimum(np.sqrt(s * area / r), height)).mean() / area
    tolerance = 4 * areas.std() / math.sqrt(draws)
    assert abs(areas.mean() - expected) < tolerance
    image = torch.empty(1, height, width)
    torchvision_boxes = np.array([transforms.RandomResizedCrop.get_params(image, scale, (3 / 4, 4 / 3))
                                  for _ in range(draws)])
    torchvision_mean = (torchvision_boxes[:, 2] * torchvision_boxes[:, 3]).mean() / area
    assert abs(torchvision_mean - expected) > 10 * tolerance
    # The offset is uniform over the positions where the crop fits.
    free = (height - crop_height) > 0
    assert abs((top[free] / (height - crop_height[free])).mean() - 0.5) < 0.02


class TransformSeen(Exception):
    pass


def test_the_probe_trains_with_maes_crop_and_pretraining_with_torchvisions(images, tmp_path, monkeypatch):
    from torchvision.transforms import v2

    def record_transform(rows, transform, **_):
        raise TransformSeen(transform.transforms[0])

    monkeypatch.setattr(mae, "ManifestDataset", record_transform)
    with pytest.raises(TransformSeen) as pretraining:
        mae.pretrain(PRETRAIN_SPEC, images["manifest"], training.Checkpointer(tmp_path / "a", cpu(), "x"), cpu())
    crop = pretraining.value.args[0]
    assert isinstance(crop, v2.RandomResizedCrop) and crop.scale == (0.2, 1.0)
    save_pretrained(mae.build_mae(MODEL, PRETRAIN), tmp_path / "pretrained")
    with pytest.raises(TransformSeen) as probing:
        mae.linear_probe(PROBE_SPEC, tmp_path / "pretrained", images["imagenet"],
                         training.Checkpointer(tmp_path / "b", cpu(), "x"), cpu())
    crop = probing.value.args[0]
    assert isinstance(crop, mae.OneDrawResizedCrop) and crop.scale == (0.08, 1.0) and crop.size == 32


def test_the_probe_crop_resizes_its_box_bicubically():
    import numpy as np
    from PIL import Image

    image = Image.fromarray((torch.rand(30, 40, 3) * 255).byte().numpy())
    torch.manual_seed(5)
    cropped = mae.OneDrawResizedCrop(16, (0.3, 0.6))(image)
    torch.manual_seed(5)
    top, left, height, width = mae.one_draw_crop_box(30, 40, (0.3, 0.6))
    assert cropped.size == (16, 16) and (height, width) != (30, 40)
    expected = image.crop((left, top, left + width, top + height)).resize((16, 16), Image.Resampling.BICUBIC)
    assert (np.asarray(cropped) == np.asarray(expected)).all()


def test_linear_probe_learns_classes_from_frozen_features(images, tmp_path):
    torch.manual_seed(0)
    save_pretrained(mae.build_mae(MODEL, PRETRAIN), tmp_path / "pretrained")
    # LARS steps are a fraction (lr x trust coefficient) of the weight norm: at the paper's 0.001 the
    # head needs thousands of steps (the paper: about 7,000); 0.02 and lr 1 make 40 enough.
    probe = dict(PROBE, epochs=20, warmup_epochs=2, base_lr=16.0, trust_coefficient=0.02, crop_scale=[0.9, 1.0])
    spec = dict(PROBE_SPEC, linear_probe=probe)
    status, metrics, reasons, _ = mae.linear_probe(spec, tmp_path / "pretrained", images["imagenet"],
                                                training.Checkpointer(tmp_path / "probe", cpu(), "x"), cpu())
    assert status == "ok" and reasons == {}
    assert metrics["linear_probe_top1_imagenet_val"] >= 75.0  # chance: 25
    assert metrics["linear_probe_top5_imagenet_val"] == 100.0  # 4 classes


def test_linear_probe_interrupted_by_sigusr1_mid_epoch_ends_with_the_uninterrupted_head_and_metrics(
        images, tmp_path, monkeypatch):
    torch.manual_seed(0)
    save_pretrained(mae.build_mae(MODEL, PRETRAIN), tmp_path / "pretrained")

    def probe(directory):
        checkpointer = training.Checkpointer(tmp_path / directory, cpu(), "x")
        result = mae.linear_probe(PROBE_SPEC, tmp_path / "pretrained", images["imagenet"], checkpointer, cpu())
        return result, torch.load(checkpointer.path, weights_only=True)

    (status, metrics, _, steps), straight = probe("straight")
    assert status == "ok" and steps["optimizer_steps"] == 4
    signal_during_step(monkeypatch, 3)  # 32 images, 16 per step: the 1st of epoch 1's 2 steps
    with pytest.raises(training.Interrupted):
        probe("resumed")
    saved = torch.load(tmp_path / "resumed" / training.CHECKPOINT_NAME, weights_only=True)
    assert saved["position"] == {"epoch": 1, "step": 1}
    monkeypatch.undo()
    torch.manual_seed(99)  # the retry must not depend on the state the stopped run left
    (status, resumed_metrics, _, resumed_steps), resumed = probe("resumed")
    assert status == "ok" and resumed_metrics == metrics and resumed_steps == steps
    assert states_equal(resumed["state"]["head"], straight["state"]["head"])
    assert resumed["state"]["history"] == straight["state"]["history"]
    momenta = [[state[key] for key in sorted(state)] for run in (straight, resumed)
               for state in run["state"]["optimizer"]["state"].values()]
    assert len(momenta) == 4 and all(torch.equal(a, b) for a, b in zip(sum(momenta[:2], []), sum(momenta[2:], [])))


@pytest.mark.parametrize("global_batch, per_process, signalled_call, position", [(16, 8, 5, (1, 2)), (12, 4, 7, (1, 0))])
def test_the_linear_probe_stopped_on_the_first_micro_step_of_a_group_resumes_identically_with_accumulation(
        images, tmp_path, monkeypatch, global_batch, per_process, signalled_call, position):
    """32 images, 8 or 4 per forward pass: accumulation 2 (2 optimizer steps per epoch), or 3 (2
    steps, then 2 micro-batches that make no step). A stop on the first micro-step of a group
    saves after its update; one on the epoch's leftover micro-batches saves at the epoch's end,
    never mid-group. The retry ends with the uninterrupted run's head, momenta and steps."""
    torch.manual_seed(0)
    save_pretrained(mae.build_mae(MODEL, PRETRAIN), tmp_path / "pretrained")
    spec = dict(PROBE_SPEC, linear_probe=dict(PROBE, global_batch_size=global_batch, max_batch_per_process=per_process))

    def probe(directory):
        checkpointer = training.Checkpointer(tmp_path / directory, cpu(), "x")
        result = mae.linear_probe(spec, tmp_path / "pretrained", images["imagenet"], checkpointer, cpu())
        return result, torch.load(checkpointer.path, weights_only=True)

    (status, metrics, _, steps), straight = probe("straight")
    assert status == "ok" and steps["optimizer_steps"] == 4 and steps["batch"]["accumulation_steps"] > 1
    signal_during_step(monkeypatch, signalled_call)
    with pytest.raises(training.Interrupted):
        probe("resumed")
    saved = torch.load(tmp_path / "resumed" / training.CHECKPOINT_NAME, weights_only=True)
    assert saved["position"] == dict(zip(("epoch", "step"), position))
    monkeypatch.undo()
    torch.manual_seed(99)  # the retry must not depend on the state the stopped run left
    (status, resumed_metrics, _, resumed_steps), resumed = probe("resumed")
    assert status == "ok" and resumed_metrics == metrics and resumed_steps == steps
    assert states_equal(resumed["state"]["head"], straight["state"]["head"])
    assert resumed["state"]["optimizer"]["state"].keys() == straight["state"]["optimizer"]["state"].keys()
    for number, state in straight["state"]["optimizer"]["state"].items():
        assert all(torch.equal(value, resumed["state"]["optimizer"]["state"][number][key]) for key, value in state.items())


def test_cli_pretraining_killed_by_sigterm_resumes_and_the_probe_writes_metrics(images, tmp_path):
    """SIGTERM to a pre-training process (exit 75 after checkpointing) + rerun = the weights of an
    uninterrupted run; then linear probing writes metrics.json."""
    spec = dict(PRETRAIN_SPEC, pretrain=dict(PRETRAIN, epochs=6), keep_checkpoint=True)
    reference, _, _, _, _ = mae.pretrain(spec, images["manifest"], training.Checkpointer(tmp_path / "ref", cpu(), "x"),
                                      cpu())
    arguments = ["mae-pretrain", "--spec", json.dumps(spec), "--manifest", images["manifest"],
                 "--checkpoint-dir", tmp_path / "checkpoints", "--out", tmp_path / "pretrained",
                 "--summary", tmp_path / "pretrain.json"]
    env = dict(environment(), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "contamination", *map(str, arguments)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line.startswith("epoch 1 step"):
            process.send_signal(signal.SIGTERM)
            break
    output = process.communicate(timeout=120)[0]
    assert process.returncode == training.EXIT_RESUME, output
    assert (tmp_path / "checkpoints" / training.CHECKPOINT_NAME).exists()
    assert not (tmp_path / "pretrained").exists()

    run_command(*arguments)  # the rerun (in this process, also one thread) resumes from the checkpoint
    from transformers import ViTMAEForPreTraining

    saved = ViTMAEForPreTraining.from_pretrained(tmp_path / "pretrained")
    assert states_equal(saved.state_dict(), reference.state_dict())
    summary = json.loads((tmp_path / "pretrain.json").read_text())
    assert summary["status"] == "ok" and len(summary["loss_per_epoch"]) == 6
    # 6 epochs of 32 images, 16 per update: 12 updates, counted across the resume.
    assert summary["training"].items() >= {"optimizer_steps": 12, "skipped_steps": 0,
                                           "max_consecutive_skipped_steps": None, "diverged": None}.items()
    assert summary["training"]["batch"] == {"global_batch_size": 16, "world_size": 1, "per_process_batch": 8,
                                            "accumulation_steps": 2}

    run_command("mae-linear-probe", "--spec", json.dumps(PROBE_SPEC), "--pretrained", tmp_path / "pretrained",
                "--pretrain-summary", tmp_path / "pretrain.json", "--imagenet", images["imagenet"],
                "--checkpoint-dir", tmp_path / "probe-checkpoints", "--out", tmp_path / "metrics.json")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["reasons"] == {}
    assert metrics["training"]["optimizer_steps"] == 4 and metrics["training"]["diverged"] is None
    assert metrics["training"]["batch"] == {"global_batch_size": 16, "world_size": 1, "per_process_batch": 16,
                                            "accumulation_steps": 1}
    assert 0.0 <= metrics["metrics"]["linear_probe_top1_imagenet_val"] <= 100.0
    assert metrics["metrics"]["pretrain_final_loss"] == pytest.approx(summary["loss_per_epoch"][-1])
    assert not (tmp_path / "probe-checkpoints" / training.CHECKPOINT_NAME).exists()  # keep_checkpoint false


def test_probe_after_diverged_pretraining_writes_null_metrics_with_the_reason(images, tmp_path):
    torch.manual_seed(0)
    save_pretrained(mae.build_mae(MODEL, PRETRAIN), tmp_path / "pretrained")
    (tmp_path / "pretrain.json").write_text(json.dumps(
        {"status": "diverged", "reason": "non-finite training loss (nan on rank 0)", "loss_per_epoch": []}))
    run_command("mae-linear-probe", "--spec", json.dumps(PROBE_SPEC), "--pretrained", tmp_path / "pretrained",
                "--pretrain-summary", tmp_path / "pretrain.json", "--imagenet", images["imagenet"],
                "--checkpoint-dir", tmp_path / "checkpoints", "--out", tmp_path / "metrics.json")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    assert metrics["metrics"]["linear_probe_top1_imagenet_val"] is None
    assert "MAE pre-training diverged: non-finite training loss" in metrics["reasons"]["linear_probe_top1_imagenet_val"]
