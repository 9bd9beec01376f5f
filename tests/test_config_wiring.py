"""Config values reach the library calls that use them: the real code path from a spec with
NON-default values (none equal to the paper's value or the library's default) to the object the
library builds, so a value dropped on the way (the library default then silently standing in for
it, often equal to the paper's) fails here.

The library classes are replaced by recording subclasses (``spy_on``), which behave as the
originals; tests read what the library object received (``loss.label_smoothing``,
``mixup.alpha``, ``optimizer.defaults``...), not the arguments the code meant to pass.
"""

import json
import math
import types

import numpy as np
import pandas as pd
import pytest
import torch

import imagesets
from contamination import training

CPU = training.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def spy_on(monkeypatch, owner, name: str, record_calls=None) -> list:
    """Replace class ``owner.name`` by a subclass that keeps every instance it makes; returns
    that list. ``record_calls``: {method name: list} to also record each call's arguments."""
    original = getattr(owner, name)
    made = []
    namespace = {"__init__": lambda self, *args, **kwargs: (original.__init__(self, *args, **kwargs),
                                                            made.append(self))[0]}
    for method, calls in (record_calls or {}).items():
        def recording(self, *args, _method=method, _calls=calls, **kwargs):
            _calls.append((self, args, kwargs))
            return getattr(original, _method)(self, *args, **kwargs)
        namespace[method] = recording
    monkeypatch.setattr(owner, name, type(original.__name__, (original,), namespace))
    return made


def only(instances: list, what: str):
    assert len(instances) == 1, f"expected one {what}, the code made {len(instances)}"
    return instances[0]


def unwrapped_state(module) -> dict:
    """A state dict without AveragedModel's ``module.`` prefix and step counter."""
    return {name.removeprefix("module."): tensor for name, tensor in module.state_dict().items()
            if name != "n_averaged"}


def same_state(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


# ---- training.py: seeds per rank, atomic checkpoints ---------------------------------------------


def test_every_rank_draws_its_own_random_numbers():
    """The official generation scripts seed every rank alike; here rank r is seeded with seed + r,
    so two ranks never draw the same augmentations or dropout masks."""
    import random

    def draws(rank):
        env = training.DistEnv(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
        training.seed_everything(7, env)
        loader = training.loader_generator(7, env, epoch=0)
        return torch.rand(3), np.random.rand(), random.random(), torch.rand(3, generator=loader)

    rank0, rank1, again = draws(0), draws(1), draws(0)
    for name, a, b, c in zip(("torch", "numpy", "python", "DataLoader generator"), rank0, rank1, again):
        assert not np.array_equal(np.asarray(a), np.asarray(b)), f"{name}: ranks 0 and 1 draw the same numbers"
        assert np.array_equal(np.asarray(a), np.asarray(c)), f"{name}: the same rank and seed must draw the same"


def test_a_checkpoint_is_never_written_in_place(tmp_path, monkeypatch):
    """A save killed half-way (here torch.save writes half its bytes and dies) leaves the previous
    checkpoint whole: it is written under another name and renamed."""
    model = torch.nn.Linear(3, 2)
    checkpointer = training.Checkpointer(tmp_path, CPU, fingerprint="run")
    checkpointer.save(training.Position(epoch=1), model=model)
    real_save = torch.save

    def dies_half_way(payload, destination, *args, **kwargs):
        real_save(payload, destination, *args, **kwargs)
        with open(destination, "r+b") as handle:
            handle.truncate(handle.seek(0, 2) // 2)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save(training.Position(epoch=2), model=model)
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpointer.load(model=torch.nn.Linear(3, 2)) == training.Position(epoch=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == [training.CHECKPOINT_NAME]


# ---- generation (paper A.1): sampler, steps, guidance, size, seeds ------------------------------


class RecordingPipeline:
    """Stands in for StableDiffusionPipeline.__call__: records its keyword arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        from PIL import Image

        self.calls.append(kwargs)
        count = len(kwargs["prompt"])
        return types.SimpleNamespace(images=[Image.new("RGB", (8, 8))] * count, nsfw_content_detected=None)


def test_generation_passes_steps_guidance_size_and_unconditional_prompt_to_the_pipeline():
    from contamination import generate

    settings = {"steps": 7, "guidance_scale": 3.25, "height": 24, "width": 40, "negative_prompt": "blurry"}
    pipeline = RecordingPipeline()
    generate.generate_images(pipeline, ["a cat", "a dog"], [11, 12], settings)
    call = only(pipeline.calls, "pipeline call")
    assert call.get("num_inference_steps") == 7, "generation.steps not passed (diffusers' default is the paper's 50)"
    assert call.get("guidance_scale") == 3.25, "generation.guidance_scale not passed (diffusers' default is the paper's 7.5)"
    assert (call.get("height"), call.get("width")) == (24, 40), "generation.height/width not passed (default: the model's 512)"
    assert call.get("negative_prompt") == ["blurry", "blurry"], "generation.negative_prompt not passed"
    assert [generator.initial_seed() for generator in call["generator"]] == [11, 12], "one generator per image seed"


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory):
    from contamination import tiny_sd
    from contamination.io import save_pretrained

    out = tmp_path_factory.mktemp("models") / "tiny-sd"
    save_pretrained(tiny_sd.build_pipeline(0), out)
    return out


@pytest.mark.parametrize("sampler, class_name", [("plms", "PNDMScheduler"), ("ddim", "DDIMScheduler")])
def test_loaded_pipeline_samples_with_the_configured_sampler(tiny_sd_dir, sampler, class_name):
    """generation.scheduler reaches the pipeline, with the CompVis timesteps (PLMS without its
    Runge-Kutta warm-up steps, 'leading' spacing offset by 1, no final alpha of 1)."""
    from contamination import generate, config as cfg

    settings = dict(cfg.load()["generation"], scheduler=sampler)
    pipeline = generate.load_pipeline(tiny_sd_dir, settings)
    scheduler = pipeline.scheduler
    assert type(scheduler).__name__ == class_name, f"generation.scheduler '{sampler}' not installed"
    assert scheduler.config.steps_offset == 1 and scheduler.config.timestep_spacing == "leading"
    assert scheduler.config.set_alpha_to_one is False
    if sampler == "plms":
        assert scheduler.config.skip_prk_steps is True
    assert pipeline.safety_checker is None, "generation.safety_checker: false not applied"
    assert pipeline.unet.dtype == torch.float32


# ---- classification (paper 4.1, A.2) ------------------------------------------------------------

CLASSES = 4
SIZE = 16


@pytest.fixture(scope="module")
def class_data(tmp_path_factory):
    """16 training images of 4 classes; ImageNet val 8 images (2 a class); ImageNet-A holds
    classes 0-2, ImageNet-R classes 0 and 2 (the real ones hold 200 of the 1,000)."""
    root = tmp_path_factory.mktemp("classes")
    images, labels = imagesets.class_images(24, CLASSES, SIZE, seed=1)
    paths = imagesets.write_images(root / "files", images, "img")
    manifest = imagesets.manifest(root / "manifest.parquet", paths[:16], labels[:16])
    val_paths, val_labels = paths[16:], labels[16:]
    indexes = {"imagenet_val": imagesets.source_index(root / "imagenet.parquet", val_paths, val_labels, ["val"] * 8)}
    for name, kept in (("imagenet_a", {0, 1, 2}), ("imagenet_r", {0, 2})):
        chosen = [k for k, label in enumerate(val_labels) if label in kept]
        indexes[name] = imagesets.source_index(root / f"{name}.parquet", [val_paths[k] for k in chosen],
                                               val_labels[chosen], ["val"] * len(chosen))
    return manifest, indexes


class FixedLogits(torch.nn.Module):
    """Ranks the classes 3, 1, 0, 2 for every image."""

    def forward(self, images):
        return torch.tensor([1.0, 2.0, 0.5, 9.0]).expand(len(images), CLASSES)


def eval_spec():
    from contamination import config as cfg

    recipe = dict(cfg.load()["classification"]["models"]["resnet50"], val_resize_size=SIZE, val_crop_size=SIZE,
                  batch_size=3)
    return {"recipe": recipe, "num_classes": CLASSES, "num_workers": 0}


def test_evaluate_all_scores_imagenet_a_and_r_over_their_own_classes(class_data):
    from contamination import classify

    metrics, _ = classify.evaluate_all(FixedLogits(), eval_spec(), class_data[1], CPU)
    assert metrics["top1_imagenet_val"] == 25.0  # always class 3: right for 2 of 8
    # Class 3 is not in ImageNet-A: among 0-2 the model ranks 1 first, right for 2 of 6 images.
    assert metrics["top1_imagenet_a"] == pytest.approx(100 / 3), "ImageNet-A scored over all classes"
    # ImageNet-R holds 0 and 2: class 0 first, right for 2 of 4 (over all classes: 0%).
    assert metrics["top1_imagenet_r"] == 50.0, "ImageNet-R scored over all classes"
    assert metrics["top5_imagenet_a"] == metrics["top5_imagenet_r"] == 100.0


def test_evaluate_all_confusion_rows_are_true_classes_columns_predictions(class_data):
    from contamination import classify

    _, matrix = classify.evaluate_all(FixedLogits(), eval_spec(), class_data[1], CPU)
    expected = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    expected[:, 3] = 2  # every true class (row) predicted as class 3 (column)
    assert matrix.tolist() == expected.tolist(), "confusion matrix transposed (rows must be the true class)"
    assert classify.confusion_matrix(np.array([0, 0, 1]), np.array([2, 2, 0]), 3).tolist() == \
        [[0, 0, 2], [1, 0, 0], [0, 0, 0]]


TRAIN_RECIPE = {
    "epochs": 1, "batch_size": 4, "opt": "sgd", "lr": 0.05, "momentum": 0.8, "weight_decay": 3e-4,
    "norm_weight_decay": None, "bias_weight_decay": None, "transformer_embedding_decay": None,
    "lr_scheduler": "steplr", "lr_step_size": 2, "lr_gamma": 0.5, "lr_min": 0.0, "lr_warmup_epochs": 0,
    "lr_warmup_method": "linear", "lr_warmup_decay": 0.01, "label_smoothing": 0.3, "mixup_alpha": 0.3,
    "cutmix_alpha": 0.7, "auto_augment": "ta_wide", "random_erase": 0.35, "interpolation": "bicubic",
    "train_crop_size": 12, "val_resize_size": 16, "val_crop_size": 16, "hflip_prob": 0.4, "ra_magnitude": 9,
    "augmix_severity": 3, "clip_grad_norm": 2.5, "amp": False, "model_ema": True, "model_ema_steps": 1,
    "model_ema_decay": 0.95, "ra_sampler": True, "ra_reps": 2, "ra_round_to": 4,
}


@pytest.fixture(scope="module")
def classifier_run(class_data, tmp_path_factory):
    """One epoch of classify.train_and_evaluate with TRAIN_RECIPE, every library object it
    builds recorded, and the model it hands to evaluate_all."""
    from torchvision.transforms import v2

    from contamination import classify

    monkeypatch = pytest.MonkeyPatch()
    recorded = {"evaluated": [], "clipped": []}
    try:
        for owner, name in ((torch.nn, "CrossEntropyLoss"), (v2, "MixUp"), (v2, "CutMix"), (torch.optim, "SGD"),
                            (torch.optim.lr_scheduler, "StepLR"), (training, "ExponentialMovingAverage"),
                            (training, "RepeatedAugmentSampler"), (v2, "RandomResizedCrop"),
                            (v2, "RandomHorizontalFlip"), (v2, "TrivialAugmentWide"), (v2, "RandomErasing")):
            recorded[name] = spy_on(monkeypatch, owner, name)
        real_clip = torch.nn.utils.clip_grad_norm_
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda parameters, max_norm, *args, **kwargs: (
            recorded["clipped"].append(max_norm), real_clip(parameters, max_norm, *args, **kwargs))[1])
        monkeypatch.setattr(classify, "evaluate_all", lambda model, spec, indexes, env: (
            recorded["evaluated"].append(model), ({}, np.zeros((0, 0), dtype=np.int64)))[1])
        spec = {"model": "resnet18", "recipe": TRAIN_RECIPE, "num_classes": CLASSES, "seed": 0, "device": "cpu",
                "num_workers": 0, "print_freq": 100, "keep_checkpoint": True}
        directory = tmp_path_factory.mktemp("classifier")
        manifest, indexes = class_data
        status, _, _, _ = classify.train_and_evaluate(spec, manifest, indexes, directory, CPU)
    finally:
        monkeypatch.undo()
    assert status == "ok"
    recorded["checkpoint"] = torch.load(directory / training.CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    return recorded


def test_classifier_loss_gets_the_recipe_label_smoothing(classifier_run):
    loss = only(classifier_run["CrossEntropyLoss"], "training loss")
    assert loss.label_smoothing == 0.3, "label_smoothing dropped (torch's default 0 is ResNet-50's value)"


def test_classifier_mixup_and_cutmix_get_their_own_alphas(classifier_run):
    assert only(classifier_run["MixUp"], "MixUp").alpha == 0.3, "MixUp not given mixup_alpha"
    assert only(classifier_run["CutMix"], "CutMix").alpha == 0.7, "CutMix not given cutmix_alpha"


def test_classifier_optimizer_schedule_and_clipping_follow_the_recipe(classifier_run):
    optimizer = only(classifier_run["SGD"], "SGD optimizer")
    assert optimizer.defaults["lr"] == 0.05 and optimizer.defaults["momentum"] == 0.8
    assert {group["weight_decay"] for group in optimizer.param_groups} == {3e-4}
    schedule = only(classifier_run["StepLR"], "StepLR")
    assert (schedule.step_size, schedule.gamma) == (2, 0.5), "lr_step_size / lr_gamma (torch's default gamma 0.1)"
    assert classifier_run["clipped"] and set(classifier_run["clipped"]) == {2.5}, "clip_grad_norm not passed"


def test_classifier_augmentation_and_sampler_follow_the_recipe(classifier_run):
    from torchvision.transforms import InterpolationMode

    crop = only(classifier_run["RandomResizedCrop"], "RandomResizedCrop")
    assert crop.size == (12, 12) and crop.interpolation == InterpolationMode.BICUBIC
    assert only(classifier_run["RandomHorizontalFlip"], "flip").p == 0.4
    assert only(classifier_run["TrivialAugmentWide"], "TrivialAugmentWide").interpolation == InterpolationMode.BICUBIC
    assert only(classifier_run["RandomErasing"], "RandomErasing").p == 0.35
    sampler = only(classifier_run["RepeatedAugmentSampler"], "repeated-augment sampler")
    assert sampler.repetitions == 2 and sampler.num_selected == 16, "ra_reps / ra_round_to not passed"


def test_classifier_ema_decay_is_the_rescaled_recipe_decay(classifier_run):
    ema = only(classifier_run["ExponentialMovingAverage"], "EMA")
    # The reference: 1 - (1 - 0.95) x world size 1 x batch 4 x every 1 step / 1 epoch
    assert ema.decay == pytest.approx(1 - 0.05 * 4), "model_ema_decay / model_ema_steps not passed"


def test_classifier_is_scored_with_its_ema_weights(classifier_run):
    evaluated = only(classifier_run["evaluated"], "evaluated model")
    state = classifier_run["checkpoint"]["state"]
    ema = {name.removeprefix("module."): tensor for name, tensor in state["ema"].items() if name != "n_averaged"}
    scored = unwrapped_state(evaluated)
    assert not same_state(scored, state["model"]), "the raw weights were scored, not the EMA"
    assert same_state(scored, ema), "the scored weights are not the EMA weights"
