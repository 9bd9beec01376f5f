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
from contamination import config as cfg
from contamination.experiments import training

CPU = training.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def spy_on(monkeypatch, owner, name: str, record_calls=None) -> list:
    """Replace class ``owner.name`` by a subclass that keeps every instance it makes; returns
    that list. ``record_calls``: {method name: list} to also record each call's ``(instance, args,
    kwargs)`` as it is made, or {method name: function of them} to record what it returns."""
    original = getattr(owner, name)
    made = []
    namespace = {"__init__": lambda self, *args, **kwargs: (original.__init__(self, *args, **kwargs),
                                                            made.append(self))[0]}
    for method, calls in (record_calls or {}).items():
        def recording(self, *args, _method=method, _calls=calls, **kwargs):
            _calls.append((self, args, kwargs)) if isinstance(_calls, list) else _calls(self, args, kwargs)
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
    # Besides the checkpoint only the run's lock (io.exclusive_lock), no half-written file.
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(".lock")) == [training.CHECKPOINT_NAME]


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
    from contamination.generation import generate

    settings = {"steps": 7, "guidance_scale": 3.25, "height": 24, "width": 40, "negative_prompt": "blurry",
                "call_arguments": {"clip_skip": 2}}
    pipeline = RecordingPipeline()
    generate.generate_images(pipeline, ["a cat", "a dog"], [11, 12], settings)
    call = only(pipeline.calls, "pipeline call")
    assert call.get("clip_skip") == 2, "a generator's call_arguments not passed"
    assert call.get("num_inference_steps") == 7, "generation.steps not passed (diffusers' default is the paper's 50)"
    assert call.get("guidance_scale") == 3.25, "generation.guidance_scale not passed (diffusers' default is the paper's 7.5)"
    assert (call.get("height"), call.get("width")) == (24, 40), "generation.height/width not passed (default: the model's 512)"
    assert call.get("negative_prompt") == ["blurry", "blurry"], "generation.negative_prompt not passed"
    assert [generator.initial_seed() for generator in call["generator"]] == [11, 12], "one generator per image seed"


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory):
    from contamination.smoke import tiny_sd
    from contamination.io import save_pretrained

    out = tmp_path_factory.mktemp("models") / "tiny-sd"
    save_pretrained(tiny_sd.build_pipeline(0), out)
    return out


@pytest.mark.parametrize("sampler, class_name", [("plms", "PNDMScheduler"), ("ddim", "DDIMScheduler")])
def test_loaded_pipeline_samples_with_the_configured_sampler(tiny_sd_dir, sampler, class_name):
    """generation.scheduler reaches the pipeline, with the CompVis timesteps (PLMS without its
    Runge-Kutta warm-up steps, 'leading' spacing offset by 1, no final alpha of 1)."""
    from contamination.generation import generate
    from contamination import config as cfg

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
    classes 0-2, ImageNet-R classes 0 and 2 (the real ones hold 200 of the 1,000): real wnids on
    the official lists that way (class 1 only on ImageNet-A's, class 3 on neither)."""
    wnids = ["n01531178", "n01558993", "n01614925", "n15075141"]
    root = tmp_path_factory.mktemp("classes")
    images, labels = imagesets.class_images(24, CLASSES, SIZE, seed=1)
    paths = imagesets.write_images(root / "files", images, "img")
    manifest = imagesets.manifest(root / "manifest.parquet", paths[:16], labels[:16])
    val_paths, val_labels = paths[16:], labels[16:]
    indexes = {"imagenet_val": imagesets.source_index(root / "imagenet.parquet", val_paths, val_labels, ["val"] * 8,
                                                      wnids)}
    for name, kept in (("imagenet_a", {0, 1, 2}), ("imagenet_r", {0, 2})):
        chosen = [k for k, label in enumerate(val_labels) if label in kept]
        indexes[name] = imagesets.source_index(root / f"{name}.parquet", [val_paths[k] for k in chosen],
                                               val_labels[chosen], ["val"] * len(chosen), wnids)
    return manifest, indexes


class FixedLogits(torch.nn.Module):
    """Ranks the classes 3, 1, 0, 2 for every image."""

    def forward(self, images):
        return torch.tensor([1.0, 2.0, 0.5, 9.0]).expand(len(images), CLASSES)


def eval_spec():
    from contamination import config as cfg

    recipe = dict(cfg.load()["classification"]["models"]["resnet50"], val_resize_size=SIZE, val_crop_size=SIZE,
                  global_batch_size=3, max_batch_per_process=None)
    return {"model": "resnet50", "recipe": recipe, "num_classes": CLASSES, "num_workers": 0}


def test_evaluate_all_scores_imagenet_a_and_r_over_their_own_classes(class_data):
    from contamination.experiments import classify

    metrics, _ = classify.evaluate_all(FixedLogits(), eval_spec(), class_data[1], CPU)
    assert metrics["top1_imagenet_val"] == 25.0  # always class 3: right for 2 of 8
    # Class 3 is not in ImageNet-A: among 0-2 the model ranks 1 first, right for 2 of 6 images.
    assert metrics["top1_imagenet_a"] == pytest.approx(100 / 3), "ImageNet-A scored over all classes"
    # ImageNet-R holds 0 and 2: class 0 first, right for 2 of 4 (over all classes: 0%).
    assert metrics["top1_imagenet_r"] == 50.0, "ImageNet-R scored over all classes"
    assert metrics["top5_imagenet_a"] == metrics["top5_imagenet_r"] == 100.0


def test_evaluate_all_confusion_rows_are_true_classes_columns_predictions(class_data):
    from contamination.experiments import classify

    _, matrix = classify.evaluate_all(FixedLogits(), eval_spec(), class_data[1], CPU)
    expected = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    expected[:, 3] = 2  # every true class (row) predicted as class 3 (column)
    assert matrix.tolist() == expected.tolist(), "confusion matrix transposed (rows must be the true class)"
    assert classify.confusion_matrix(np.array([0, 0, 1]), np.array([2, 2, 0]), 3).tolist() == \
        [[0, 0, 2], [1, 0, 0], [0, 0, 0]]


def test_evaluation_images_get_the_recipe_resize_crop_and_interpolation(class_data, monkeypatch):
    from torchvision.transforms import InterpolationMode, v2

    from contamination.experiments import classify

    resizes = spy_on(monkeypatch, v2, "Resize")
    shapes = []

    class Recorder(FixedLogits):
        def forward(self, images):
            shapes.append(tuple(images.shape[1:]))
            return super().forward(images)

    spec = eval_spec()
    spec["recipe"].update(val_resize_size=20, val_crop_size=12, interpolation="bicubic")
    classify.evaluate_all(Recorder(), spec, {"imagenet_val": class_data[1]["imagenet_val"],
                                             "imagenet_a": class_data[1]["imagenet_a"],
                                             "imagenet_r": class_data[1]["imagenet_r"]}, CPU)
    assert {(resize.size[0], resize.interpolation) for resize in resizes} == {(20, InterpolationMode.BICUBIC)}, \
        "val_resize_size / interpolation not passed to the evaluation Resize"
    assert set(shapes) == {(3, 12, 12)}, "val_crop_size not applied"


def test_warmup_and_cosine_schedule_get_the_recipe_numbers(monkeypatch):
    from contamination.experiments import classify_recipe

    schedulers = torch.optim.lr_scheduler
    linear, constant, cosine = (spy_on(monkeypatch, schedulers, name) for name in ("LinearLR", "ConstantLR",
                                                                                     "CosineAnnealingLR"))
    recipe = dict(TRAIN_RECIPE, epochs=11, lr_scheduler="cosineannealinglr", lr_min=0.003, lr_warmup_epochs=3,
                  lr_warmup_decay=0.2)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    classify_recipe.build_scheduler(optimizer, recipe)
    warmup = only(linear, "linear warmup")
    assert (warmup.start_factor, warmup.total_iters) == (0.2, 3), \
        "lr_warmup_decay / lr_warmup_epochs not passed (LinearLR's default 5 epochs are ConvNeXt-T's)"
    main = only(cosine, "cosine schedule")
    assert (main.T_max, main.eta_min) == (8, 0.003), "epochs - warmup / lr_min not passed (default eta_min 0)"
    classify_recipe.build_scheduler(optimizer, dict(recipe, lr_warmup_method="constant"))
    warmup = only(constant, "constant warmup")
    assert (warmup.factor, warmup.total_iters) == (0.2, 3)


TRAIN_RECIPE = cfg.with_defaults("classification.models.*", {
    "epochs": 1, "global_batch_size": 4, "opt": "sgd", "lr": 0.05, "momentum": 0.8, "weight_decay": 3e-4,
    "norm_weight_decay": None, "bias_weight_decay": None, "transformer_embedding_decay": None,
    "lr_scheduler": "steplr", "lr_step_size": 2, "lr_gamma": 0.5, "lr_min": 0.0, "lr_warmup_epochs": 0,
    "lr_warmup_method": "linear", "lr_warmup_decay": 0.01, "label_smoothing": 0.3, "mixup_alpha": 0.3,
    "cutmix_alpha": 0.7, "auto_augment": "ta_wide", "random_erase": 0.35, "interpolation": "bicubic",
    "train_crop_size": 12, "val_resize_size": 16, "val_crop_size": 16, "hflip_prob": 0.4, "ra_magnitude": 9,
    "augmix_severity": 3, "clip_grad_norm": 2.5, "amp": False, "model_ema": True, "model_ema_steps": 1,
    "model_ema_decay": 0.95, "ra_sampler": True, "ra_reps": 2, "ra_round_to": 4, "report_weights": "ema",
})


@pytest.fixture(scope="module")
def classifier_run(class_data, tmp_path_factory):
    """One epoch of classify.train_and_evaluate with TRAIN_RECIPE, every library object it
    builds recorded, and the model it hands to evaluate_all."""
    from torchvision.transforms import v2

    from contamination.experiments import classify

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
        # Each evaluation scores its call number, so the table's metric shows which model it came from.
        monkeypatch.setattr(classify, "evaluate_all", lambda model, spec, indexes, env: (
            recorded["evaluated"].append(model),
            ({"top1_imagenet_val": float(len(recorded["evaluated"]))}, np.zeros((0, 0), dtype=np.int64)))[1])
        spec = {"model": "resnet18", "recipe": TRAIN_RECIPE, "num_classes": CLASSES, "seed": 0, "device": "cpu",
                "num_workers": 0, "print_freq": 100, "keep_checkpoint": True,
                "checkpoint_every_minutes": 30}
        directory = tmp_path_factory.mktemp("classifier")
        manifest, indexes = class_data
        status, recorded["metrics"], _, _, _ = classify.train_and_evaluate(spec, manifest, indexes, directory, CPU)
    finally:
        monkeypatch.undo()
    assert status == "ok"
    recorded["checkpoint"] = torch.load(directory / training.CHECKPOINT_NAME, map_location="cpu", weights_only=True)
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
    # The reference: 1 - (1 - 0.95) x (world size 1 x batch 4 = the global batch 4) x every 1 step / 1 epoch
    assert ema.decay == pytest.approx(1 - 0.05 * 4), "model_ema_decay / model_ema_steps not passed"


def test_classifier_is_scored_with_its_ema_weights(classifier_run):
    """Both weights are scored; the unsuffixed metric the tables read is the EMA model's
    (report_weights: ema), and the model scored as EMA holds the EMA weights."""
    state = classifier_run["checkpoint"]["state"]
    ema = {name.removeprefix("module."): tensor for name, tensor in state["ema"].items() if name != "n_averaged"}
    evaluated = [unwrapped_state(model) for model in classifier_run["evaluated"]]
    assert len(evaluated) == 2, "EMA and raw weights are each scored once"
    ema_call = next(number for number, scored in enumerate(evaluated, start=1) if same_state(scored, ema))
    raw_call = next(number for number, scored in enumerate(evaluated, start=1) if same_state(scored, state["model"]))
    assert ema_call != raw_call
    metrics = classifier_run["metrics"]
    assert metrics["top1_imagenet_val"] == metrics["top1_imagenet_val_ema"] == ema_call, "the raw weights were reported"
    assert metrics["top1_imagenet_val_raw"] == raw_call


# ---- captioning (paper 4.2, A.3) ----------------------------------------------------------------

CAPTION_SIZE = 32


@pytest.fixture(scope="module")
def caption_data(tmp_path_factory):
    """A COCO-like index (Karpathy train/test, two captions an image), a manifest of the training
    captions and a tiny BLIP saved as a model directory."""
    from PIL import Image

    from contamination.io import save_pretrained, write_parquet
    from contamination.smoke.tiny_blip import build_tiny_blip

    directory = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(0)
    rows = []
    for split, count in (("train", 8), ("test", 3)):
        for number in range(count):
            path = directory / f"{split}-{number}.png"
            Image.fromarray(rng.integers(0, 256, (CAPTION_SIZE, CAPTION_SIZE, 3), dtype=np.uint8)).save(path)
            for sentence, caption in enumerate(["a red square on a table", "a small noisy picture"]):
                rows.append({"id": f"{split}{number}_{sentence}", "path": str(path), "label": -1, "wnid": "",
                             "caption": caption, "image_id": f"{split}{number}", "split": split})
    index = pd.DataFrame(rows)
    write_parquet(index, directory / "coco.parquet")
    train = index[index["split"] == "train"]
    write_parquet(pd.DataFrame({"id": train["id"], "uri": train["path"], "label": -1, "caption": train["caption"],
                                "origin": "coco"}), directory / "manifest.parquet")
    save_pretrained(build_tiny_blip(list(index["caption"]) + ["a picture of "], seed=0, image_size=CAPTION_SIZE),
                    directory / "blip")
    return directory / "coco.parquet", directory / "manifest.parquet", directory / "blip"


CAPTION_SETTINGS = cfg.with_defaults("captioning", {
    "device": "cpu", "image_size": CAPTION_SIZE, "min_crop_scale": 0.3, "max_crop_scale": 0.9,
    "randaugment_ops": 3, "randaugment_magnitude": 7, "prompt": "a picture of ", "max_words": 4,
    "max_text_tokens": 12, "text_dropout": 0.2, "label_smoothing": 0.3, "epochs": 2, "global_batch_size": 4,
    "lr": 3e-4, "min_lr": 2e-5, "weight_decay": 0.07, "select_by": [], "eval_batch_size": 2, "num_beams": 2,
    "max_length": 9, "min_length": 7, "repetition_penalty": 1.3, "num_workers": 0, "log_every": 100,
    "keep_checkpoint": False, "spice_corenlp_dir": None,
})


def test_blip_loss_and_dropout_get_the_configured_label_smoothing_and_dropout(caption_data):
    from contamination.experiments import caption

    model, _ = caption.load_blip(caption_data[2], CAPTION_SETTINGS)
    decoder = model.text_decoder
    assert decoder.label_smoothing == 0.3, "captioning.label_smoothing dropped (transformers' default is 0)"
    dropouts = {module.p for module in decoder.modules() if isinstance(module, torch.nn.Dropout)}
    assert dropouts == {0.2}, f"captioning.text_dropout not applied: the decoder's dropouts are {dropouts}"


def test_caption_decoding_gets_beams_lengths_and_repetition_penalty(caption_data, monkeypatch):
    from contamination.experiments import caption

    index, _, model_dir = caption_data
    model, processor = caption.load_blip(model_dir, CAPTION_SETTINGS)
    calls = []
    real_generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kwargs: (calls.append(kwargs), real_generate(**kwargs))[1])
    captions = caption.generate_captions(model, processor, caption.KarpathySplit(index, "test"), CAPTION_SETTINGS, CPU)
    assert len(captions) == 3 and len(calls) == 2  # 3 test images in batches of eval_batch_size 2
    for call in calls:
        assert call.get("num_beams") == 2, "num_beams not passed to generate (the model's default: greedy)"
        assert call.get("max_length") == 9, "max_length not passed to generate (BLIP's default 20 is LAVIS's)"
        assert call.get("min_length") == 7, "min_length not passed to generate"
        assert call.get("repetition_penalty") == 1.3, "repetition_penalty not passed (default 1.0 is LAVIS's)"
        assert call.get("do_sample") is False


def test_caption_fine_tuning_gets_optimizer_schedule_and_augmentation_settings(caption_data, tmp_path, monkeypatch):
    from torchvision import transforms

    from contamination.experiments import caption

    _, manifest, model_dir = caption_data
    adamw = spy_on(monkeypatch, torch.optim, "AdamW")
    cosine = spy_on(monkeypatch, torch.optim.lr_scheduler, "CosineAnnealingLR")
    crops = spy_on(monkeypatch, transforms, "RandomResizedCrop")
    augments = spy_on(monkeypatch, caption, "RandomAugment")
    collators = spy_on(monkeypatch, caption, "CaptionCollator")
    model, processor = caption.load_blip(model_dir, CAPTION_SETTINGS)
    checkpointer = training.Checkpointer(tmp_path, CPU, "run")
    best = training.Checkpointer(tmp_path / "best", CPU, "run")
    stop = types.SimpleNamespace(requested=False)
    caption.fine_tune(model, processor, manifest, None, CAPTION_SETTINGS, 0, CPU, checkpointer, best, stop)

    optimizer = only(adamw, "AdamW")
    assert optimizer.defaults["lr"] == pytest.approx(3e-4) and optimizer.defaults["weight_decay"] == 0.07, \
        "captioning.lr / weight_decay not passed (AdamW's default decay 0.01)"
    schedule = only(cosine, "cosine schedule")
    assert (schedule.T_max, schedule.eta_min) == (2, 2e-5), "captioning.epochs / min_lr not passed (default eta_min 0)"
    crop = only(crops, "RandomResizedCrop")
    assert crop.size == (CAPTION_SIZE, CAPTION_SIZE) and crop.scale == (0.3, 0.9), \
        "captioning crop scale not passed (torchvision's default (0.08, 1))"
    augment = only(augments, "RandomAugment")
    assert augment.num_ops == 3 and augment.level == pytest.approx(0.7)
    collator = only(collators, "collator")
    assert collator.max_tokens == 12, "captioning.max_text_tokens not passed"


# ---- IDDPM (paper 4.3, A.4) ---------------------------------------------------------------------

IDDPM_STEPS = 40  # diffusion steps: the network must see t x 1000 / 40 = multiples of 25
IDDPM_SPEC = {
    "image_size": 16,
    "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "attention_resolutions": [8],
             "attention_head_dim": 16, "norm_num_groups": 8, "dropout": 0.1},
    "diffusion_steps": IDDPM_STEPS, "rescale_timesteps": True, "vlb_weight": 0.02, "iterations": 3, "global_batch_size": 4, "max_batch_per_process": None,
    "lr": 2e-3, "weight_decay": 0.01, "ema_decay": 0.8, "seed": 3, "checkpoint_every": 100, "log_every": 100,
    "num_workers": 0, "device": "cpu", "keep_checkpoint": True,
    "sample_count": 2, "sample_steps": 5, "sample_batch_size": 2, "sample_shard_size": 2,
}


def improved_ddpm_cosine_betas(steps: int):
    """improved-diffusion's get_named_beta_schedule("cosine", steps), written out."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                        dtype=torch.float64)


@pytest.fixture(scope="module")
def iddpm_run(tmp_path_factory):
    """Three iterations of iddpm.train, recording the diffusion it trains, the timesteps drawn
    (q_sample) and the ones the UNet is given, the loss weight, the optimizer and the EMA."""
    from diffusers import UNet2DModel

    from contamination.experiments import diffusion
    from contamination.experiments import iddpm

    directory = tmp_path_factory.mktemp("iddpm")
    images = directory / "images.npy"
    np.save(images, np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    monkeypatch = pytest.MonkeyPatch()
    recorded = {"q_sample": [], "hybrid_loss": [], "forward": []}
    try:
        recorded["diffusions"] = spy_on(monkeypatch, diffusion, "GaussianDiffusion",
                                        {"q_sample": recorded["q_sample"], "hybrid_loss": recorded["hybrid_loss"]})
        recorded["optimizers"] = spy_on(monkeypatch, torch.optim, "AdamW")
        recorded["emas"] = spy_on(monkeypatch, training, "ExponentialMovingAverage")
        real_forward = UNet2DModel.forward
        monkeypatch.setattr(UNet2DModel, "forward", lambda self, sample, timestep, *args, **kwargs: (
            recorded["forward"].append(torch.as_tensor(timestep).clone()),
            real_forward(self, sample, timestep, *args, **kwargs))[1])
        checkpointer = training.Checkpointer(directory, CPU, "run")
        recorded["returned"], _ = iddpm.train(IDDPM_SPEC, images, checkpointer, CPU,
                                              stop=types.SimpleNamespace(requested=False))
    finally:
        monkeypatch.undo()
    recorded["checkpoint"] = torch.load(directory / training.CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    return recorded


def test_iddpm_trains_the_cosine_schedule_of_the_configured_length(iddpm_run):
    gaussian = only(iddpm_run["diffusions"], "Gaussian diffusion")
    assert gaussian.num_timesteps == IDDPM_STEPS, "iddpm.diffusion_steps not passed (diffusers' default 1000)"
    assert torch.allclose(gaussian.log_betas.exp(), improved_ddpm_cosine_betas(IDDPM_STEPS), rtol=1e-5), \
        "the betas are not improved DDPM's cosine schedule (diffusers' default is linear)"


def test_iddpm_network_sees_timesteps_rescaled_to_0_1000(iddpm_run):
    drawn = torch.cat([args[1] for _, args, _ in iddpm_run["q_sample"]])
    seen = torch.cat([timesteps.reshape(-1) for timesteps in iddpm_run["forward"]])
    assert len(drawn) == len(seen) == 3 * 4
    assert drawn.max() < IDDPM_STEPS
    assert torch.equal(seen.float(), drawn.float() * 1000 / IDDPM_STEPS), \
        "the UNet is not given t x 1000 / diffusion_steps (rescale_timesteps)"


def test_iddpm_loss_optimizer_and_ema_follow_the_spec(iddpm_run):
    weights = {kwargs["vlb_weight"] if "vlb_weight" in kwargs else args[5] for _, args, kwargs in iddpm_run["hybrid_loss"]}
    assert weights == {0.02}, "iddpm.vlb_weight not passed to the L_hybrid loss"
    optimizer = only(iddpm_run["optimizers"], "AdamW")
    assert optimizer.defaults["lr"] == 2e-3 and optimizer.defaults["weight_decay"] == 0.01, \
        "iddpm.lr / weight_decay not passed"
    assert only(iddpm_run["emas"], "EMA").decay == 0.8, "iddpm.ema_decay not passed"


def test_iddpm_unet_is_built_from_the_spec(iddpm_run):
    config = iddpm_run["returned"].config
    unet = IDDPM_SPEC["unet"]
    assert list(config.block_out_channels) == unet["block_out_channels"]
    assert config.layers_per_block == unet["layers_per_block"]
    assert (config.attention_head_dim, config.norm_num_groups) == (16, 8)
    assert config.dropout == 0.1, "iddpm.unet.dropout not passed (diffusers' default 0 is the paper's)"
    assert list(config.down_block_types) == ["DownBlock2D", "AttnDownBlock2D"], "attention only at 8 px"
    assert config.sample_size == 16 and config.out_channels == 6 and config.resnet_time_scale_shift == "scale_shift"


def test_iddpm_hands_on_its_ema_weights(iddpm_run):
    state = iddpm_run["checkpoint"]["state"]
    returned = iddpm_run["returned"].state_dict()
    ema = {name.removeprefix("module."): tensor for name, tensor in state["ema"].items() if name != "n_averaged"}
    assert not same_state(returned, state["model"]), "the raw weights were handed on, not the EMA"
    assert same_state(returned, ema), "the weights handed on are not the EMA weights"


def test_iddpm_samples_with_the_respaced_cosine_schedule_and_rescaled_timesteps(iddpm_run, monkeypatch):
    import diffusers
    from diffusers import UNet2DModel

    from contamination.experiments import iddpm

    schedulers = spy_on(monkeypatch, diffusers, "DDPMScheduler")
    seen = []
    real_forward = UNet2DModel.forward
    monkeypatch.setattr(UNet2DModel, "forward", lambda self, sample, timestep, *args, **kwargs: (
        seen.append(float(torch.as_tensor(timestep))), real_forward(self, sample, timestep, *args, **kwargs))[1])
    batches = list(iddpm.sample(iddpm_run["returned"], IDDPM_SPEC, [0, 1], torch.device("cpu")))
    assert len(batches) == 1 and batches[0].shape == (2, 16, 16, 3)
    ddpm = only(schedulers, "sampling scheduler")
    assert torch.allclose(ddpm.betas.double(), improved_ddpm_cosine_betas(IDDPM_STEPS), rtol=1e-5), \
        "sampling does not use the cosine schedule"
    # improved-diffusion's space_timesteps(40, "5"): round(linspace(0, 39, 5)) = 0, 10, 20, 29, 39.
    assert seen == [t * 1000 / IDDPM_STEPS for t in (39, 29, 20, 10, 0)], \
        "not 5 (sample_steps) respaced steps seen as t x 1000 / diffusion_steps"


# ---- MAE (paper 6.2, A.6) -----------------------------------------------------------------------

MAE_MODEL = {  # every value differs from transformers' ViTMAEConfig default (ViT-B/16's)
    "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 48, "decoder_hidden_size": 24, "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 2, "decoder_intermediate_size": 40, "layer_norm_eps": 1e-5,
}
MAE_PRETRAIN = cfg.with_defaults("mae.pretrain", {
    "mask_ratio": 0.5, "norm_pix_loss": True, "epochs": 1, "warmup_epochs": 0, "global_batch_size": 8, "max_batch_per_process": 4,
    "base_lr": 0.64, "min_lr": 0.001, "weight_decay": 0.07, "betas": [0.8, 0.9], "crop_scale": [0.3, 0.9],
    "amp": False,
})
MAE_PROBE = cfg.with_defaults("mae.linear_probe", {
    "epochs": 1, "warmup_epochs": 0, "global_batch_size": 8, "base_lr": 0.64, "min_lr": 0.001,
    "weight_decay": 0.003, "momentum": 0.7, "trust_coefficient": 0.002, "crop_scale": [0.3, 0.9],
    "val_resize_size": 40, "amp": False,
})
MAE_RUN = {"seed": 0, "device": "cpu", "num_workers": 0, "print_freq": 100, "keep_checkpoint": False}


@pytest.fixture(scope="module")
def mae_images(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mae")
    pictures, labels = imagesets.class_images(20, classes=4, size=32, seed=0)
    paths = imagesets.write_images(directory / "files", pictures, "img")
    return {
        "manifest": imagesets.manifest(directory / "mixture.parquet", paths[:16], labels[:16]),
        "imagenet": imagesets.source_index(directory / "imagenet.parquet", paths, labels, ["train"] * 16 + ["val"] * 4),
    }


def peak_and_midway_lr(recipe):
    """MAE's schedule without warmup for one epoch of 2 updates: the peak lr = blr x batch / 256,
    then half a cosine later (epoch 0.5) min_lr + (peak - min_lr) / 2."""
    peak = recipe["base_lr"] * recipe["global_batch_size"] / 256
    return [peak, recipe["min_lr"] + (peak - recipe["min_lr"]) / 2]


def test_mae_pretraining_gets_mask_ratio_architecture_lr_scaling_and_adamw_settings(mae_images, tmp_path, monkeypatch):
    from torchvision.transforms import v2

    from contamination.experiments import mae

    learning_rates = []
    adamw = spy_on(monkeypatch, torch.optim, "AdamW",
                   {"step": lambda optimizer, args, kwargs: learning_rates.append(optimizer.param_groups[0]["lr"])})
    crops = spy_on(monkeypatch, v2, "RandomResizedCrop")
    spec = dict(MAE_RUN, model=MAE_MODEL, pretrain=MAE_PRETRAIN)
    model, _, status, _, _ = mae.pretrain(spec, mae_images["manifest"], training.Checkpointer(tmp_path, CPU, "run"), CPU,
                                       stop=types.SimpleNamespace(requested=False))
    assert status == "ok"
    for key, value in MAE_MODEL.items():
        assert getattr(model.config, key) == value, f"mae.model.{key} not passed (the default is ViT-B/16's)"
    assert model.config.mask_ratio == 0.5, "mae.pretrain.mask_ratio not passed (transformers' default is 0.75)"
    assert model.config.norm_pix_loss is True, "mae.pretrain.norm_pix_loss not passed"
    with torch.no_grad():
        output = model(pixel_values=torch.rand(2, 3, 32, 32))
    assert output.mask.mean().item() == 0.5, "the model does not mask half the patches"

    optimizer = only(adamw, "AdamW")
    assert optimizer.defaults["betas"] == (0.8, 0.9), "mae.pretrain.betas not passed"
    assert {group["weight_decay"] for group in optimizer.param_groups} == {0.0, 0.07}
    assert learning_rates == pytest.approx(peak_and_midway_lr(MAE_PRETRAIN), rel=1e-9), \
        "the learning rate is not base_lr x global_batch_size / 256 on MAE's schedule"
    crop = only(crops, "RandomResizedCrop")
    assert crop.scale == (0.3, 0.9) and crop.size == (32, 32), "mae.pretrain.crop_scale not passed"


def test_mae_linear_probe_gets_lars_settings_lr_scaling_and_transforms(mae_images, tmp_path, monkeypatch):
    from torchvision.transforms import v2

    from contamination.experiments import lars
    from contamination.experiments import mae
    from contamination.io import save_pretrained

    save_pretrained(mae.build_mae(MAE_MODEL, MAE_PRETRAIN), tmp_path / "pretrained")
    learning_rates = []
    optimizers = spy_on(monkeypatch, lars, "LARS",
                        {"step": lambda optimizer, args, kwargs: learning_rates.append(optimizer.param_groups[0]["lr"])})
    crops = spy_on(monkeypatch, mae, "OneDrawResizedCrop")  # MAE's util/crop.RandomResizedCrop
    resizes = spy_on(monkeypatch, v2, "Resize")
    spec = dict(MAE_RUN, linear_probe=MAE_PROBE, num_classes=4)
    status, metrics, _, _ = mae.linear_probe(spec, tmp_path / "pretrained", mae_images["imagenet"],
                                          training.Checkpointer(tmp_path / "probe", CPU, "run"), CPU,
                                          stop=types.SimpleNamespace(requested=False))
    assert status == "ok" and not math.isnan(metrics["linear_probe_top1_imagenet_val"])
    optimizer = only(optimizers, "LARS")
    assert (optimizer.defaults["weight_decay"], optimizer.defaults["momentum"],
            optimizer.defaults["trust_coefficient"]) == (0.003, 0.7, 0.002), \
        "mae.linear_probe weight_decay / momentum / trust_coefficient not passed (LARS defaults 0, 0.9, 0.001)"
    assert learning_rates == pytest.approx(peak_and_midway_lr(MAE_PROBE), rel=1e-9), \
        "the probe's learning rate is not base_lr x global_batch_size / 256 on MAE's schedule"
    assert only(crops, "the probe's crop").scale == (0.3, 0.9), \
        "mae.linear_probe.crop_scale not passed (torchvision's default (0.08, 1) is the paper's)"
    assert only(resizes, "val Resize").size == [40], "mae.linear_probe.val_resize_size not passed"


# ---- detection (paper 6.1, A.7) and fidelity (4.3, 5.1) -----------------------------------------


def test_detectors_get_lr_hidden_size_iterations_and_batch_size(monkeypatch):
    from contamination.experiments import detect

    steps, batches = [], []
    adams = spy_on(monkeypatch, torch.optim, "Adam", {"step": steps})
    spy_on(monkeypatch, torch.nn, "CrossEntropyLoss", {"forward": batches})
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(40, 6)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 2, 40))
    spec = {"seed": 0, "mlp_hidden": 7, "lr": 0.05, "iterations": 9, "batch_size": 5}
    detector = detect.train_detector("mlp", x, y, spec, torch.device("cpu"))
    assert [layer.out_features for layer in detector if isinstance(layer, torch.nn.Linear)] == [7, 2], \
        "detection.mlp_hidden not passed"
    assert only(adams, "Adam").defaults["lr"] == 0.05, "detection.lr not passed (Adam's default 1e-3 is the config's)"
    assert len(steps) == 9, "detection.iterations not followed"
    assert {args[0].shape[0] for _, args, _ in batches} == {5}, "detection.batch_size not followed"


def test_detection_features_use_the_configured_resize_crop_and_batch(tmp_path):
    from contamination.experiments import detect

    pictures, labels = imagesets.class_images(7, classes=2, size=30, seed=0)
    paths = imagesets.write_images(tmp_path, pictures, "img")
    items = pd.read_parquet(imagesets.manifest(tmp_path / "items.parquet", paths, labels))
    shapes = []

    class Recorder(torch.nn.Module):
        def forward(self, images):
            shapes.append(tuple(images.shape))
            return images.flatten(1)

    spec = {"resize_size": 20, "crop_size": 12, "feature_batch_size": 3, "num_workers": 0}
    features = detect.extract_features(Recorder(), items, spec, torch.device("cpu"))
    assert features.shape == (7, 3 * 12 * 12)
    assert shapes == [(3, 3, 12, 12), (3, 3, 12, 12), (1, 3, 12, 12)], "detection crop / feature batch not followed"


def test_fidelity_command_uses_the_given_k(tmp_path, monkeypatch):
    """--k (config fidelity.k) reaches the neighbourhoods: the command's default is the paper's 5."""
    from contamination.metrics import fidelity
    from contamination.__main__ import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "generated.npy", rng.normal(size=(12, 4)).astype(np.float32))
    np.save(tmp_path / "real.npy", rng.normal(size=(10, 4)).astype(np.float32))
    neighbourhoods = []
    real_radii = fidelity.neighbourhood_radii
    monkeypatch.setattr(fidelity, "neighbourhood_radii",
                        lambda points, k: (neighbourhoods.append(k), real_radii(points, k))[1])
    assert main(["fidelity", "--generated", str(tmp_path / "generated.npy"), "--reference",
                 f"val={tmp_path / 'real.npy'}", "--kind", "samples", "--k", "2", "--device", "cpu",
                 "--out", str(tmp_path / "metrics.json")]) == 0
    assert neighbourhoods == [2, 2], "--k not passed to the neighbourhoods"
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"FID_vs_val", "precision@2_vs_val", "recall@2_vs_val"}


# ---- every trainer: checkpoint_every_minutes reaches its Checkpointer ----------------------------


class TrainingStarted(Exception):
    """Raised by a stand-in trainer with the Checkpointer the command built for it."""


def refuse_to_train(monkeypatch, module, name: str, position: int) -> None:
    def record(*args, **kwargs):
        raise TrainingStarted(args[position])

    monkeypatch.setattr(module, name, record)


@pytest.mark.parametrize("command", ["train-classifier", "caption", "iddpm-train", "mae-pretrain", "mae-linear-probe"])
def test_every_trainer_checkpoints_by_the_configured_wall_time(command, tmp_path, monkeypatch):
    """The command's own spec parsing and Checkpointer construction, with a non-default 7 minutes
    (the trainer itself is replaced: its use of the Checkpointer is tested in each trainer's tests)."""
    from contamination.experiments import caption
    from contamination.experiments import classify
    from contamination.experiments import iddpm
    from contamination.experiments import mae
    from contamination.__main__ import build_parser

    data = tmp_path / "data"
    data.write_bytes(b"any file: hashed into the run identity")
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "config.json").write_text("{}")
    (tmp_path / "summary.json").write_text(json.dumps({"status": "ok", "reason": "", "loss_per_epoch": [1.0]}))
    common = ["--checkpoint-dir", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "out")]
    minutes = {"checkpoint_every_minutes": 7, "device": "cpu"}
    if command == "train-classifier":
        refuse_to_train(monkeypatch, classify, "train", 2)
        spec = dict(minutes, model="resnet18", recipe={}, num_classes=4, seed=0)
        arguments = ["--manifest", data, "--imagenet", data, "--imagenet-a", data, "--imagenet-r", data,
                     "--confusion", tmp_path / "confusion.npy"]
    elif command == "caption":
        refuse_to_train(monkeypatch, caption, "fine_tune", 7)
        monkeypatch.setattr(caption, "load_blip", lambda directory, settings: (torch.nn.Linear(1, 1), None))
        monkeypatch.setattr(caption, "require_java", lambda: None)
        spec = dict(minutes, select_by=[])
        arguments = ["--index", data, "--model", tmp_path / "pretrained", "--manifest", data,
                     "--captions", tmp_path / "captions.json"]
    elif command == "iddpm-train":
        refuse_to_train(monkeypatch, iddpm, "train", 2)
        spec = dict(minutes, seed=0)
        arguments = ["--images", data, "--manifest", data, "--status", tmp_path / "training.json"]
    elif command == "mae-pretrain":
        refuse_to_train(monkeypatch, mae, "pretrain", 2)
        spec = dict(minutes, seed=0)
        arguments = ["--manifest", data, "--summary", tmp_path / "summary.json"]
    else:
        refuse_to_train(monkeypatch, mae, "linear_probe", 3)
        spec = dict(minutes, seed=0, num_classes=4)
        arguments = ["--pretrained", tmp_path / "pretrained", "--pretrain-summary", tmp_path / "summary.json",
                     "--imagenet", data]
    option = "--settings" if command == "caption" else "--spec"
    args = build_parser().parse_args([command, option, json.dumps(spec), *common, *map(str, arguments)])
    with pytest.raises(TrainingStarted) as started:
        args.run(args)
    checkpointer = started.value.args[0]
    assert isinstance(checkpointer, training.Checkpointer) and checkpointer.every_seconds == 7 * 60
