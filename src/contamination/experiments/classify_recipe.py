"""A torchvision classification reference recipe (config `classification.models.<model>`) turned
into the objects it names: parameter groups and optimizer, LR schedule, train/eval transforms,
the mixup/cutmix batch transform and the EMA decay per update.

Keys follow the reference script's command-line flags (references/classification/train.py,
torchvision v0.13.1, the version the paper cites), so a recipe reads like its README line.
"""

from contamination.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Parameter names the reference's --transformer-embedding-decay applies to.
TRANSFORMER_EMBEDDING_KEYS = ("class_token", "position_embedding", "relative_position_bias_table")


def norm_classes():
    import torch.nn as nn

    return (
        nn.modules.batchnorm._BatchNorm,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.LocalResponseNorm,
    )


def parameter_groups(model, recipe: dict) -> list:
    """Optimizer parameter groups with the recipe's weight decays.

    As the reference's utils.set_weight_decay: a parameter whose name is one of the custom keys
    (``bias`` if bias_weight_decay is set; the transformer embeddings if
    transformer_embedding_decay is set) gets that decay; otherwise parameters of normalisation
    layers get norm_weight_decay if it is set; everything else gets weight_decay.
    """
    custom = {}
    if recipe["bias_weight_decay"] is not None:
        custom["bias"] = recipe["bias_weight_decay"]
    if recipe["transformer_embedding_decay"] is not None:
        for key in TRANSFORMER_EMBEDDING_KEYS:
            custom[key] = recipe["transformer_embedding_decay"]
    decay_of = {"other": recipe["weight_decay"], "norm": recipe["norm_weight_decay"], **custom}
    groups = {name: [] for name in decay_of}
    norms = norm_classes()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            if name in custom:
                groups[name].append(parameter)
            elif recipe["norm_weight_decay"] is not None and isinstance(module, norms):
                groups["norm"].append(parameter)
            else:
                groups["other"].append(parameter)
    return [
        {"params": params, "weight_decay": decay_of[name], "group": name}
        for name, params in groups.items()
        if params
    ]


def build_optimizer(model, recipe: dict):
    import torch

    groups = parameter_groups(model, recipe)
    if recipe["opt"] in ("sgd", "sgd_nesterov"):
        return torch.optim.SGD(
            groups, lr=recipe["lr"], momentum=recipe["momentum"], nesterov=recipe["opt"] == "sgd_nesterov"
        )
    return torch.optim.AdamW(groups, lr=recipe["lr"])


def build_scheduler(optimizer, recipe: dict):
    """Per-epoch LR schedule: the main schedule after ``lr_warmup_epochs`` of linear or constant
    warmup starting at ``lr * lr_warmup_decay`` (the reference's SequentialLR)."""
    import torch.optim.lr_scheduler as schedulers

    warmup = recipe["lr_warmup_epochs"]
    if recipe["lr_scheduler"] == "steplr":
        main = schedulers.StepLR(optimizer, step_size=recipe["lr_step_size"], gamma=recipe["lr_gamma"])
    else:
        main = schedulers.CosineAnnealingLR(optimizer, T_max=recipe["epochs"] - warmup, eta_min=recipe["lr_min"])
    if warmup == 0:
        return main
    if recipe["lr_warmup_method"] == "linear":
        first = schedulers.LinearLR(optimizer, start_factor=recipe["lr_warmup_decay"], total_iters=warmup)
    else:
        first = schedulers.ConstantLR(optimizer, factor=recipe["lr_warmup_decay"], total_iters=warmup)
    return schedulers.SequentialLR(optimizer, schedulers=[first, main], milestones=[warmup])


def interpolation(recipe: dict):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(recipe["interpolation"])


def train_transform(recipe: dict):
    """The reference's ClassificationPresetTrain: random resized crop, flip, auto-augment,
    tensor + normalise, random erasing."""
    import torch
    from torchvision.transforms import v2

    mode = interpolation(recipe)
    steps = [v2.RandomResizedCrop(recipe["train_crop_size"], interpolation=mode, antialias=True)]
    if recipe["hflip_prob"] > 0:
        steps.append(v2.RandomHorizontalFlip(recipe["hflip_prob"]))
    policy = recipe["auto_augment"]
    if policy == "ra":
        steps.append(v2.RandAugment(interpolation=mode, magnitude=recipe["ra_magnitude"]))
    elif policy == "ta_wide":
        steps.append(v2.TrivialAugmentWide(interpolation=mode))
    elif policy == "augmix":
        steps.append(v2.AugMix(interpolation=mode, severity=recipe["augmix_severity"]))
    elif policy is not None:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy(policy), interpolation=mode))
    steps += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if recipe["random_erase"] > 0:
        steps.append(v2.RandomErasing(p=recipe["random_erase"]))
    return v2.Compose(steps)


def eval_transform(recipe: dict):
    """The reference's ClassificationPresetEval: resize, centre crop, tensor + normalise."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.Resize(recipe["val_resize_size"], interpolation=interpolation(recipe), antialias=True),
            v2.CenterCrop(recipe["val_crop_size"]),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def collate_function(recipe: dict, num_classes: int):
    """The training DataLoader's collate_fn: default collation, then mixup or cutmix (one of them
    chosen at random per batch, as in the reference) if the recipe uses them, which turns the
    targets into class probabilities."""
    from torch.utils.data import default_collate
    from torchvision.transforms import v2

    mixes = []
    if recipe["mixup_alpha"] > 0:
        mixes.append(v2.MixUp(alpha=recipe["mixup_alpha"], num_classes=num_classes))
    if recipe["cutmix_alpha"] > 0:
        mixes.append(v2.CutMix(alpha=recipe["cutmix_alpha"], num_classes=num_classes))
    if not mixes:
        return default_collate
    return MixingCollate(mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes))


class MixingCollate:
    """A picklable collate_fn (DataLoader workers may be started by spawn or forkserver)."""

    def __init__(self, mix):
        self.mix = mix

    def __call__(self, batch):
        from torch.utils.data import default_collate

        return self.mix(*default_collate(batch))


def ema_decay_per_update(recipe: dict) -> float:
    """The reference's EMA decay, rescaled so the averaging horizon in epochs does not depend on
    the number of processes, the batch size or the update interval. The reference writes
    ``alpha = min(1, (1 - model_ema_decay) * world_size * batch_size * model_ema_steps / epochs)``
    with its per-GPU batch, i.e. the global batch of an optimizer step, which this uses, so the
    decay per sample is the same whatever the process count and accumulation."""
    adjust = recipe["global_batch_size"] * recipe["model_ema_steps"] / recipe["epochs"]
    alpha = min(1.0, (1.0 - recipe["model_ema_decay"]) * adjust)
    return 1.0 - alpha


def check(recipe: dict, key: str) -> None:
    """Recipe checks the schema cannot express; messages name the config key."""
    if recipe["lr_scheduler"] == "cosineannealinglr" and recipe["lr_warmup_epochs"] >= recipe["epochs"]:
        raise ConfigError(
            f"{key}.lr_warmup_epochs: {recipe['lr_warmup_epochs']} leaves no epochs of the cosine schedule "
            f"(epochs {recipe['epochs']})"
        )
    if recipe["report_weights"] == "ema" and not recipe["model_ema"]:
        raise ConfigError(f"{key}.report_weights: 'ema', but model_ema is false (there are no EMA weights)")
    if recipe["val_crop_size"] > recipe["val_resize_size"]:
        raise ConfigError(f"{key}.val_crop_size: {recipe['val_crop_size']} exceeds val_resize_size {recipe['val_resize_size']}")
