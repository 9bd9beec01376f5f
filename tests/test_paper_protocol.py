"""Every protocol number the paper states, read from config/config.yaml (defaults filled by
contamination.config.load), one test per experiment. A failure names the paper's section and the
number it states, e.g. "paper A.1: 50 PLMS steps: config generation.steps is 25, the paper's is 50".

Sections: 3.1-3.2 (datasets, mixtures), 4.1-4.3 (experiments), 5.2-5.4, 6.1-6.2, appendix A and
its footnotes (the recipes it follows: torchvision v0.13.1 references/classification, LAVIS v0.1
caption_coco_ft, openai/improved-diffusion ImageNet-64, facebookresearch/mae); where the paper
only names a recipe, the number is that recipe's (/work/shared/notes/recipes.md) and the message
says so.
"""

import math

import pytest

from contamination import config as cfg
from contamination.experiments.training import batch_split

# The GPUs the paper trained on (A.2: 8, A.3: 2, A.6: 8 for pre-training, 16 for the probe): a job
# on as many splits the configured global batch into the paper's per-GPU batch and accumulation.
CLASSIFICATION_GPUS = 8
CAPTIONING_GPUS = 2
MAE_PRETRAIN_GPUS = 8
MAE_PROBE_GPUS = 16


def assert_paper_split(recipe: dict, gpus: int, per_gpu: int, accumulation: int, section: str) -> None:
    split = batch_split(recipe["global_batch_size"], gpus, recipe["max_batch_per_process"])
    assert (split.per_process_batch, split.accumulation_steps) == (per_gpu, accumulation), \
        (f"paper {section}: {gpus} GPUs x {per_gpu} images x accumulation {accumulation}; the config splits "
         f"over {gpus} processes into {split.per_process_batch} x accumulation {split.accumulation_steps}")


@pytest.fixture(scope="module")
def config():
    return cfg.load()


def same(actual, expected) -> bool:
    """Equal values of the same kind: numbers to 12 digits (True is not 1), lists elementwise."""
    if isinstance(expected, (list, tuple)):
        return isinstance(actual, (list, tuple)) and len(actual) == len(expected) and all(
            same(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return isinstance(actual, (int, float)) and not isinstance(actual, bool) and math.isclose(
            actual, expected, rel_tol=1e-12)
    return type(actual) is type(expected) and actual == expected


def lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def assert_paper(config: dict, claims) -> None:
    """``claims``: (paper section and what it says, dotted config key, the paper's value).
    Every mismatch is reported, not only the first."""
    wrong = []
    for claim, key, expected in claims:
        actual = lookup(config, key)
        if not same(actual, expected):
            wrong.append(f"paper {claim}: config {key} is {actual!r}, the paper's is {expected!r}")
    assert not wrong, "\n".join(wrong)


def named(items: list, name: str) -> dict:
    matches = [item for item in items if item["name"] == name]
    assert len(matches) == 1, f"config: expected one entry named '{name}', found {len(matches)}"
    return matches[0]


def table(config: dict, name: str) -> dict:
    return named(config["tables"], name)


# ---- mixtures: what each of the paper's row labels is made of (3.2, 5.2, 5.4) -------------------

IMAGENET_MIXTURES = {
    "ImageNet": ("subset", "imagenet", None, 1.0),
    "IN/SD-20%": ("replace", "imagenet", "sd_imagenet", 0.2),
    "IN/SD-40%": ("replace", "imagenet", "sd_imagenet", 0.4),
    "IN/SD-80%": ("replace", "imagenet", "sd_imagenet", 0.8),
    "SD-ImageNet": ("subset", "sd_imagenet", None, 1.0),
    "IN/WV-20%": ("replace", "imagenet", "webvision", 0.2),
    "IN/WV-40%": ("replace", "imagenet", "webvision", 0.4),
    "IN/WV-80%": ("replace", "imagenet", "webvision", 0.8),
    "WebVision": ("subset", "webvision", None, 1.0),
    "Complex SD-ImageNet": ("subset", "sd_imagenet_complex", None, 1.0),
    "ImageNet (5%)": ("subset", "imagenet", None, 0.05),
    "IN/SD-95%": ("replace", "imagenet", "sd_imagenet", 0.95),
    "IN/WV-95%": ("replace", "imagenet", "webvision", 0.95),
    "ImageNet (100%)": ("subset", "imagenet", None, 1.0),
    "ImageNet (100%) + SD-ImageNet (20%)": ("append", "imagenet", "sd_imagenet", 0.2),
    "ImageNet (100%) + SD-ImageNet (40%)": ("append", "imagenet", "sd_imagenet", 0.4),
    "ImageNet (100%) + SD-ImageNet (80%)": ("append", "imagenet", "sd_imagenet", 0.8),
    "ImageNet (20%)": ("subset", "imagenet", None, 0.2),
}
# Row labels the paper spells differently in other tables (Table 3's "-64", Table 5's "SD-IN",
# Table 11's "IN/WD" for IN/WV).
IMAGENET_ALIASES = {
    "ImageNet-64": "ImageNet", "IN/SD-20%-64": "IN/SD-20%", "IN/SD-40%-64": "IN/SD-40%",
    "IN/SD-80%-64": "IN/SD-80%", "SD-ImageNet-64": "SD-ImageNet", "ImageNet-64 (20%)": "ImageNet (20%)",
    "Original SD-IN": "SD-ImageNet", "Complex SD-IN": "Complex SD-ImageNet", "Original SD-ImageNet": "SD-ImageNet",
    "IN/WD-20%": "IN/WV-20%", "IN/WD-40%": "IN/WV-40%", "IN/WD-80%": "IN/WV-80%",
}
COCO_MIXTURES = {
    "COCO": ("subset", "coco", None, 1.0),
    "CO/SD-20%": ("replace", "coco", "sd_coco", 0.2),
    "CO/SD-40%": ("replace", "coco", "sd_coco", 0.4),
    "CO/SD-80%": ("replace", "coco", "sd_coco", 0.8),
    "SD-COCO": ("subset", "sd_coco", None, 1.0),
    "CO/FL-40%": ("replace", "coco", "flickr30k", 0.4),
    "Flickr30k": ("subset", "flickr30k", None, 1.0),
    "COCO (5%)": ("subset", "coco", None, 0.05),
    "CO/SD-95%": ("replace", "coco", "sd_coco", 0.95),
    "COCO (20%)": ("subset", "coco", None, 0.2),
}


def assert_rows_are_the_papers_mixtures(config: dict, table_name: str, section: str, labels: list) -> None:
    """The table's rows are ``labels`` in order, each measured on the mixture the paper describes:
    kind, base, what replaces or is appended, the fraction, and sampling with replacement exactly
    where the paper says so (3.2: SD images "without replacement", WebVision "sampling by
    replacement to create balanced mixtures", i.e. class by class)."""
    spec = table(config, table_name)
    assert [row["dataset"] for row in spec["rows"]] == labels, f"paper {section}: the rows of {table_name} are {labels}"
    wrong = []
    for row in spec["rows"]:
        if row["mixture"] == "pretrained":
            continue
        label = IMAGENET_ALIASES.get(row["dataset"], row["dataset"])
        kind, base, by, fraction = {**IMAGENET_MIXTURES, **COCO_MIXTURES}[label]
        mixture = named(config["mixtures"], row["mixture"])
        actual = (mixture["kind"], mixture["base"], mixture.get("by"), mixture["fraction"])
        if not same(actual, (kind, base, by, fraction)):
            wrong.append(f"paper {section}: '{row['dataset']}' is {kind} of {base}"
                         f"{f' by {by}' if by else ''} at {fraction:.0%}; config mixture '{row['mixture']}' is {actual}")
        if by in ("sd_imagenet", "sd_coco") and mixture["with_replacement"]:
            wrong.append(f"paper 3.2: '{row['dataset']}' substitutes generated images without replacement; "
                         f"config mixture '{row['mixture']}' has with_replacement: true")
        if by == "webvision" and (not mixture["with_replacement"] or mixture.get("match", "label") != "label"):
            wrong.append(f"paper 3.2: '{row['dataset']}' samples WebVision by replacement into balanced (per-class) "
                         f"mixtures; config mixture '{row['mixture']}' has with_replacement "
                         f"{mixture['with_replacement']}, match {mixture.get('match', 'label')}")
    assert not wrong, "\n".join(wrong)


TABLE1_ROWS = ["ImageNet", "IN/SD-20%", "IN/SD-40%", "IN/SD-80%", "SD-ImageNet",
               "IN/WV-20%", "IN/WV-40%", "IN/WV-80%", "WebVision"]


# ---- the experiments ------------------------------------------------------------------------------


def test_generation_follows_section_3_1_and_appendix_a1_a5(config):
    assert_paper(config, [
        ("A.1: the PLMS sampler", "generation.scheduler", "plms"),
        ("A.1: 50 PLMS steps", "generation.steps", 50),
        ("A.1: unconditional guidance scale 7.5", "generation.guidance_scale", 7.5),
        ("A.1 (its web application's setting): the unconditional prompt is empty", "generation.negative_prompt", ""),
        ("A.1 (Stable Diffusion v1's web application): 512 px high", "generation.height", 512),
        ("A.1 (Stable Diffusion v1's web application): 512 px wide", "generation.width", 512),
        ("A.1 (the official scripts): float32", "generation.dtype", "float32"),
        ("A.1 (the official scripts): full float32 matrix products", "generation.matmul_precision", "highest"),
        ("3.1: the safety checker disabled", "generation.safety_checker", False),
        ("3.1: watermarking disabled", "generation.watermark", False),
        ("3.1: the 1,000 ILSVRC-2012 categories", "sources.imagenet.num_classes", 1000),
        ("3.1: 113,000 COCO training images of the Karpathy split (113,287)", "sources.coco.train_images", 113287),
    ])
    sd_imagenet = named(config["generated"], "sd_imagenet")
    complex_imagenet = named(config["generated"], "sd_imagenet_complex")
    sd_coco = named(config["generated"], "sd_coco")
    assert_paper({"g": sd_imagenet, "c": complex_imagenet, "s": sd_coco}, [
        ("3.1: SD-ImageNet prompts from the category names", "g.prompts", "class_template"),
        ("3.1: prompts like 'A photo of African elephant'", "g.template", "A photo of {name}"),
        ("3.1: 1,400 images for each class", "g.per_class", 1400),
        ("5.2 / A.5: complex SD-ImageNet prompts from the A.5 script", "c.prompts", "class_complex"),
        ("5.2: complex SD-ImageNet is SD-ImageNet with other prompts (1,400 per class)", "c.per_class", 1400),
        ("3.1: SD-COCO prompts are the COCO captions", "s.prompts", "captions"),
        ("3.1: five captions for each image, one generated image per caption", "s.captions_per_image", 5),
    ])
    assert abs(cfg.generated_size(config, "sd_coco") - 565_000) / 565_000 < 0.01, \
        f"paper 3.1: about 565,000 SD-COCO images, the config makes {cfg.generated_size(config, 'sd_coco')}"
    assert cfg.generated_size(config, "sd_imagenet") == 1_400_000, "paper 3.1: 1,400 x 1,000 SD-ImageNet images"

    # A.5's script, its ■ being spaces.
    complex_prompts = config["complex_prompts"]
    assert_paper(config, [
        ("A.5: the qualifiers _0", "complex_prompts.qualifiers",
         ["", "high quality", "low quality", "monochrome", "blured", "atmospheric", "rendered", "zoomed",
          "wide-angle", "hdr", "high resolution"]),
        ("A.5: the media _1", "complex_prompts.media", ["photo", "picture", "realistic photo", "image"]),
        ("A.5: the contexts _2", "complex_prompts.contexts",
         ["", "taken with iPhone", "inside", "outside", "without background"]),
    ])
    template = complex_prompts["template"]
    positions = [template.index("{" + field + "}") for field in ("qualifier", "medium", "name", "context")]
    assert positions == sorted(positions), \
        f"paper A.5 / 5.2 ('a monochrome image of African elephant taken with iPhone'): qualifier, medium, name, " \
        f"context in this order; config complex_prompts.template is {template!r}"


def test_classification_follows_section_4_1_and_appendix_a2(config):
    models = config["classification"]["models"]
    assert set(models) == {"resnet50", "swin_s", "convnext_tiny"}, \
        "paper 4.1: ResNet-50, Swin-S and ConvNeXt-T, from torchvision"
    v0131 = "4.1 fn. 3 / A.2 (torchvision v0.13.1 references/classification"
    common = [
        ("4.1: 1,000 ImageNet categories", "sources.imagenet.num_classes", 1000),
    ]
    resnet = "classification.models.resnet50"
    resnet_claims = [
        (f"{v0131}, ResNet-50): 90 epochs", f"{resnet}.epochs", 90),
        (f"{v0131}, ResNet-50): batch 32 per GPU, 256 on the paper's 8 GPUs", f"{resnet}.global_batch_size", 256),
        (f"{v0131}, ResNet-50): SGD", f"{resnet}.opt", "sgd"),
        (f"{v0131}, ResNet-50): lr 0.1", f"{resnet}.lr", 0.1),
        (f"{v0131}, ResNet-50): momentum 0.9", f"{resnet}.momentum", 0.9),
        (f"{v0131}, ResNet-50): weight decay 1e-4", f"{resnet}.weight_decay", 1e-4),
        (f"{v0131}, ResNet-50): the same decay on norms", f"{resnet}.norm_weight_decay", None),
        (f"{v0131}, ResNet-50): the same decay on biases", f"{resnet}.bias_weight_decay", None),
        (f"{v0131}, ResNet-50): StepLR", f"{resnet}.lr_scheduler", "steplr"),
        (f"{v0131}, ResNet-50): lr step every 30 epochs", f"{resnet}.lr_step_size", 30),
        (f"{v0131}, ResNet-50): lr gamma 0.1", f"{resnet}.lr_gamma", 0.1),
        (f"{v0131}, ResNet-50): no warmup", f"{resnet}.lr_warmup_epochs", 0),
        (f"{v0131}, ResNet-50): no label smoothing", f"{resnet}.label_smoothing", 0.0),
        (f"{v0131}, ResNet-50): no mixup", f"{resnet}.mixup_alpha", 0.0),
        (f"{v0131}, ResNet-50): no cutmix", f"{resnet}.cutmix_alpha", 0.0),
        (f"{v0131}, ResNet-50): no auto-augment", f"{resnet}.auto_augment", None),
        (f"{v0131}, ResNet-50): no random erasing", f"{resnet}.random_erase", 0.0),
        (f"{v0131}, ResNet-50): bilinear interpolation", f"{resnet}.interpolation", "bilinear"),
        (f"{v0131}, ResNet-50): train crop 224", f"{resnet}.train_crop_size", 224),
        (f"{v0131}, ResNet-50): horizontal flips with probability 0.5", f"{resnet}.hflip_prob", 0.5),
        (f"{v0131}, ResNet-50): val resize 256", f"{resnet}.val_resize_size", 256),
        (f"{v0131}, ResNet-50): val crop 224", f"{resnet}.val_crop_size", 224),
        (f"{v0131}, ResNet-50): no gradient clipping", f"{resnet}.clip_grad_norm", None),
        (f"{v0131}, ResNet-50): no AMP", f"{resnet}.amp", False),
        (f"{v0131}, ResNet-50): no EMA", f"{resnet}.model_ema", False),
        (f"{v0131}, ResNet-50): no repeated augmentation", f"{resnet}.ra_sampler", False),
    ]
    swin = "classification.models.swin_s"
    swin_claims = [
        (f"{v0131}, Swin-S): 300 epochs", f"{swin}.epochs", 300),
        (f"{v0131}, Swin-S): batch 128 per GPU, 1,024 on the paper's 8 GPUs", f"{swin}.global_batch_size", 1024),
        (f"{v0131}, Swin-S): AdamW", f"{swin}.opt", "adamw"),
        (f"{v0131}, Swin-S): lr 1e-3", f"{swin}.lr", 1e-3),
        (f"{v0131}, Swin-S): weight decay 0.05", f"{swin}.weight_decay", 0.05),
        (f"{v0131}, Swin-S): no decay on norms", f"{swin}.norm_weight_decay", 0.0),
        (f"{v0131}, Swin-S): no decay on biases", f"{swin}.bias_weight_decay", 0.0),
        (f"{v0131}, Swin-S): no decay on the transformer embeddings", f"{swin}.transformer_embedding_decay", 0.0),
        (f"{v0131}, Swin-S): cosine schedule", f"{swin}.lr_scheduler", "cosineannealinglr"),
        (f"{v0131}, Swin-S): down to lr 1e-5", f"{swin}.lr_min", 1e-5),
        (f"{v0131}, Swin-S): 20 warmup epochs", f"{swin}.lr_warmup_epochs", 20),
        (f"{v0131}, Swin-S): linear warmup", f"{swin}.lr_warmup_method", "linear"),
        (f"{v0131}, Swin-S): warmup from 0.01 x lr", f"{swin}.lr_warmup_decay", 0.01),
        (f"{v0131}, Swin-S): label smoothing 0.1", f"{swin}.label_smoothing", 0.1),
        (f"{v0131}, Swin-S): mixup alpha 0.8", f"{swin}.mixup_alpha", 0.8),
        (f"{v0131}, Swin-S): cutmix alpha 1.0", f"{swin}.cutmix_alpha", 1.0),
        (f"{v0131}, Swin-S): TrivialAugmentWide", f"{swin}.auto_augment", "ta_wide"),
        (f"{v0131}, Swin-S): random erasing 0.25", f"{swin}.random_erase", 0.25),
        (f"{v0131}, Swin-S): bicubic interpolation", f"{swin}.interpolation", "bicubic"),
        (f"{v0131}, Swin-S): train crop 224", f"{swin}.train_crop_size", 224),
        (f"{v0131}, Swin-S): val resize 224", f"{swin}.val_resize_size", 224),
        (f"{v0131}, Swin-S): val crop 224", f"{swin}.val_crop_size", 224),
        (f"{v0131}, Swin-S): gradient clipping at norm 5", f"{swin}.clip_grad_norm", 5.0),
        (f"{v0131}, Swin-S): AMP", f"{swin}.amp", True),
        ("A.2: Swin-S results from the EMA weights", f"{swin}.model_ema", True),
        (f"{v0131}, Swin-S): EMA every 32 steps", f"{swin}.model_ema_steps", 32),
        (f"{v0131}, Swin-S): EMA decay 0.99998", f"{swin}.model_ema_decay", 0.99998),
        (f"{v0131}, Swin-S): repeated-augment sampler", f"{swin}.ra_sampler", True),
        (f"{v0131}, Swin-S): 4 repetitions", f"{swin}.ra_reps", 4),
        (f"{v0131}, Swin-S): the epoch rounded to multiples of 256", f"{swin}.ra_round_to", 256),
    ]
    convnext = "classification.models.convnext_tiny"
    convnext_claims = [
        ("4.1 fn. 3: ConvNeXt trained for 300 epochs", f"{convnext}.epochs", 300),
        (f"{v0131}, ConvNeXt-T): batch 128 per GPU, 1,024 on the paper's 8 GPUs", f"{convnext}.global_batch_size",
         1024),
        (f"{v0131}, ConvNeXt-T): AdamW", f"{convnext}.opt", "adamw"),
        (f"{v0131}, ConvNeXt-T): lr 1e-3", f"{convnext}.lr", 1e-3),
        (f"{v0131}, ConvNeXt-T): weight decay 0.05", f"{convnext}.weight_decay", 0.05),
        (f"{v0131}, ConvNeXt-T): no decay on norms", f"{convnext}.norm_weight_decay", 0.0),
        (f"{v0131}, ConvNeXt-T): biases decayed", f"{convnext}.bias_weight_decay", None),
        (f"{v0131}, ConvNeXt-T): cosine schedule", f"{convnext}.lr_scheduler", "cosineannealinglr"),
        (f"{v0131}, ConvNeXt-T): down to lr 0", f"{convnext}.lr_min", 0.0),
        (f"{v0131}, ConvNeXt-T): 5 warmup epochs", f"{convnext}.lr_warmup_epochs", 5),
        (f"{v0131}, ConvNeXt-T): linear warmup", f"{convnext}.lr_warmup_method", "linear"),
        (f"{v0131}, ConvNeXt-T): warmup from 0.01 x lr", f"{convnext}.lr_warmup_decay", 0.01),
        (f"{v0131}, ConvNeXt-T): label smoothing 0.1", f"{convnext}.label_smoothing", 0.1),
        (f"{v0131}, ConvNeXt-T): mixup alpha 0.2", f"{convnext}.mixup_alpha", 0.2),
        (f"{v0131}, ConvNeXt-T): cutmix alpha 1.0", f"{convnext}.cutmix_alpha", 1.0),
        (f"{v0131}, ConvNeXt-T): TrivialAugmentWide", f"{convnext}.auto_augment", "ta_wide"),
        (f"{v0131}, ConvNeXt-T): random erasing 0.1", f"{convnext}.random_erase", 0.1),
        (f"{v0131}, ConvNeXt-T): bilinear interpolation", f"{convnext}.interpolation", "bilinear"),
        (f"{v0131}, ConvNeXt-T): train crop 176", f"{convnext}.train_crop_size", 176),
        (f"{v0131}, ConvNeXt-T): val resize 232", f"{convnext}.val_resize_size", 232),
        (f"{v0131}, ConvNeXt-T): val crop 224", f"{convnext}.val_crop_size", 224),
        (f"{v0131}, ConvNeXt-T): no gradient clipping", f"{convnext}.clip_grad_norm", None),
        (f"{v0131}, ConvNeXt-T): no AMP", f"{convnext}.amp", False),
        (f"{v0131}, ConvNeXt-T): EMA", f"{convnext}.model_ema", True),
        (f"{v0131}, ConvNeXt-T): EMA every 32 steps", f"{convnext}.model_ema_steps", 32),
        (f"{v0131}, ConvNeXt-T): EMA decay 0.99998", f"{convnext}.model_ema_decay", 0.99998),
        (f"{v0131}, ConvNeXt-T): repeated-augment sampler", f"{convnext}.ra_sampler", True),
        (f"{v0131}, ConvNeXt-T): 4 repetitions", f"{convnext}.ra_reps", 4),
    ]
    assert_paper(config, common + resnet_claims + swin_claims + convnext_claims)
    for model, per_gpu in {"resnet50": 32, "swin_s": 128, "convnext_tiny": 128}.items():
        assert_paper_split(models[model], CLASSIFICATION_GPUS, per_gpu, 1, f"A.2 ({model})")

    assert_rows_are_the_papers_mixtures(config, "table1", "4.1, Table 1", TABLE1_ROWS)
    assert_rows_are_the_papers_mixtures(config, "table5", "5.2, Table 5", ["Original SD-IN", "Complex SD-IN"])
    assert_rows_are_the_papers_mixtures(config, "table6", "5.3, Table 6",
                                        [label for label in TABLE1_ROWS if label not in ("SD-ImageNet", "WebVision")])
    assert_rows_are_the_papers_mixtures(config, "table7", "5.4, Table 7", ["ImageNet (5%)", "IN/SD-95%", "IN/WV-95%"])
    assert_rows_are_the_papers_mixtures(config, "table8", "5.4, Table 8", [
        "ImageNet (100%)", "ImageNet (100%) + SD-ImageNet (20%)", "ImageNet (100%) + SD-ImageNet (40%)",
        "ImageNet (100%) + SD-ImageNet (80%)"])
    for name, models_used, section in (("table1", ["resnet50", "swin_s", "convnext_tiny"], "4.1, Table 1"),
                                       ("table5", ["resnet50", "swin_s", "convnext_tiny"], "5.2, Table 5"),
                                       ("table6", ["resnet50"], "5.3, Table 6"), ("table7", ["resnet50"], "5.4, Table 7"),
                                       ("table8", ["resnet50"], "5.4, Table 8")):
        assert table(config, name)["models"] == models_used, f"paper {section}: models {models_used}"
    assert table(config, "table6")["metrics"] == ["top1_imagenet_val", "top1_imagenet_a", "top1_imagenet_r"], \
        "paper 5.3, Table 6: accuracy on ImageNet val, ImageNet-A and ImageNet-R"
    assert_paper(config, [
        ("4.1, Figure 3: confusion matrices of ResNet-50", "classification.figure3.model", "resnet50"),
        ("4.1, Figure 3: trained on ImageNet and SD-ImageNet", "classification.figure3.mixtures",
         ["imagenet", "sd_imagenet"]),
        ("4.1, Figure 3: 12 superclasses (big_12)", "classification.figure3.blocks", 12),
    ])


def test_captioning_follows_section_4_2_and_appendix_a3(config):
    lavis = "A.3 (LAVIS v0.1 BLIP caption_coco_ft"
    key = "captioning"
    assert_paper(config, [
        ("4.2: fine-tuned for five epochs", f"{key}.epochs", 5),
        ("4.2: beam search with a beam size of three", f"{key}.num_beams", 3),
        (f"{lavis}): batch 32 per GPU, 64 on the paper's 2 GPUs", f"{key}.global_batch_size", 64),
        (f"{lavis}): AdamW lr 1e-5", f"{key}.lr", 1e-5),
        (f"{lavis}): cosine to min lr 0", f"{key}.min_lr", 0.0),
        (f"{lavis}): weight decay 0.05", f"{key}.weight_decay", 0.05),
        (f"{lavis}): 384 px images", f"{key}.image_size", 384),
        (f"{lavis}): RandomResizedCrop scale from 0.5", f"{key}.min_crop_scale", 0.5),
        (f"{lavis}): RandomResizedCrop scale to 1.0", f"{key}.max_crop_scale", 1.0),
        (f"{lavis}): RandomAugment with 2 operations", f"{key}.randaugment_ops", 2),
        (f"{lavis}): RandomAugment magnitude 5", f"{key}.randaugment_magnitude", 5),
        (f"{lavis}): the prompt 'a picture of '", f"{key}.prompt", "a picture of "),
        (f"{lavis}): captions cut to 50 words", f"{key}.max_words", 50),
        (f"{lavis}): at most 20 tokens decoded", f"{key}.max_length", 20),
        (f"{lavis}): at least 5 tokens decoded", f"{key}.min_length", 5),
        (f"{lavis}): no repetition penalty", f"{key}.repetition_penalty", 1.0),
        (f"{lavis}): label smoothing 0.1 in the decoder's loss", f"{key}.label_smoothing", 0.1),
        (f"{lavis}, med_config.json): text dropout 0.1", f"{key}.text_dropout", 0.1),
        ("4.2: the COCO test split of Karpathy's splits (5,000 images)", "planning.dataset_sizes.coco.test", 5000),
    ])
    assert_paper_split(config["captioning"], CAPTIONING_GPUS, 32, 1, "A.3")
    assert_rows_are_the_papers_mixtures(config, "table2", "4.2, Table 2", [
        "COCO", "CO/SD-20%", "CO/SD-40%", "CO/SD-80%", "SD-COCO", "CO/FL-40%", "Flickr30k", "w/o fine-tuning"])
    assert table(config, "table2")["rows"][-1]["mixture"] == "pretrained", \
        "paper 4.2, Table 2: 'w/o fine-tuning' is the pre-trained BLIP"
    assert table(config, "table2")["metrics"] == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "SPICE", "METEOR",
                                                  "ROUGE-L", "CIDEr"], "paper 4.2, Table 2: its eight metrics"
    assert_rows_are_the_papers_mixtures(config, "table9", "5.4, Table 9",
                                        ["COCO (5%)", "CO/SD-95%", "COCO (20%)", "CO/SD-80%"])
    assert table(config, "table9")["metrics"] == ["BLEU-4", "SPICE", "CIDEr"], "paper 5.4, Table 9: its three metrics"


def test_iddpm_follows_section_4_3_and_appendix_a4(config):
    code = "A.4 (openai/improved-diffusion ImageNet-64"
    key = "iddpm"
    assert_paper(config, [
        ("4.3: datasets resized to 64x64", f"{key}.image_size", 64),
        ("4.3 / A.4: 1.8 x 10^6 iterations", f"{key}.iterations", 1_800_000),
        ("4.3 / A.4: batch size 512", f"{key}.global_batch_size", 512),
        ("4.3 / A.4: 5.0 x 10^4 generated images", f"{key}.sample_count", 50_000),
        ("4.3 / A.4: 250 sampling steps", f"{key}.sample_steps", 250),
        ("4.3 / A.4: the L_hybrid objective, lambda = 0.001", f"{key}.vlb_weight", 0.001),
        (f"{code}): 128 x (1, 2, 3, 4) channels", f"{key}.unet.block_out_channels", [128, 256, 384, 512]),
        (f"{code}): 3 residual blocks per level", f"{key}.unet.layers_per_block", 3),
        (f"{code}): attention at 16 and 8 px", f"{key}.unet.attention_resolutions", [16, 8]),
        (f"{code}): dropout 0", f"{key}.unet.dropout", 0.0),
        (f"{code}): 4,000 diffusion steps", f"{key}.diffusion_steps", 4000),
        (f"{code}): timesteps rescaled to [0, 1000)", f"{key}.rescale_timesteps", True),
        (f"{code}): lr 1e-4", f"{key}.lr", 1e-4),
        (f"{code}): no weight decay", f"{key}.weight_decay", 0.0),
        ("A.4: samples from the EMA model, EMA rate 0.9999", f"{key}.ema_decay", 0.9999),
        ("4.3: precision and recall of 5-nearest neighbours", "fidelity.k", 5),
    ])
    references = [(ref["source"], ref["split"]) for ref in config["iddpm"]["references"]]
    assert references == [("imagenet", "val"), ("webvision", "val")], \
        "paper 4.3, Table 3: against all validation data of ImageNet and of WebVision, in this order"
    assert_rows_are_the_papers_mixtures(config, "table3", "4.3, Table 3", [
        "ImageNet-64", "IN/SD-20%-64", "IN/SD-40%-64", "IN/SD-80%-64", "SD-ImageNet-64"])
    assert_rows_are_the_papers_mixtures(config, "table10", "5.4, Table 10", ["ImageNet-64 (20%)", "IN/SD-80%-64"])
    names = [ref["name"] for ref in config["iddpm"]["references"]]
    expected = [f"{metric}_vs_{name}" for name in names for metric in ("FID", "precision@5", "recall@5")]
    assert table(config, "table3")["metrics"] == expected, f"paper Table 3: FID, Precision@5, Recall@5: {expected}"
    assert table(config, "table10")["metrics"] == expected[:3], f"paper Table 10: {expected[:3]}"


def test_fidelity_table4_follows_section_5_1(config):
    assert_paper(config, [
        ("4.3 / 5.1: improved precision and recall with k = 5 nearest neighbours", "fidelity.k", 5),
        ("5.1, Table 4: Inception-V3 features (299 px input)", "fidelity.inception_resolution", 299),
        ("5.1, Table 4: images at Inception-V3's 299 px", "fidelity.image_size", 299),
    ])
    references = [(ref["source"], ref["split"]) for ref in config["fidelity"]["references"]]
    assert references == [("imagenet", "val")], "paper 5.1, Table 4: compared with the ImageNet validation data"
    assert_rows_are_the_papers_mixtures(config, "table4", "5.1, Table 4",
                                        ["ImageNet", "Original SD-ImageNet", "Complex SD-ImageNet"])
    name = config["fidelity"]["references"][0]["name"]
    assert table(config, "table4")["metrics"] == [f"precision_vs_{name}", f"recall_vs_{name}"], \
        "paper 5.1, Table 4: precision and recall"


def test_mae_follows_section_6_2_and_appendix_a6(config):
    mae_code = "A.6 (facebookresearch/mae"
    model, pretrain, probe = "mae.model", "mae.pretrain", "mae.linear_probe"
    assert_paper(config, [
        ("6.2: ViT-B: 224 px images", f"{model}.image_size", 224),
        ("6.2: ViT-B/16: 16 px patches", f"{model}.patch_size", 16),
        ("6.2: ViT-B: width 768", f"{model}.hidden_size", 768),
        ("6.2: ViT-B: 12 layers", f"{model}.num_hidden_layers", 12),
        ("6.2: ViT-B: 12 heads", f"{model}.num_attention_heads", 12),
        ("6.2: ViT-B: MLP 3072", f"{model}.intermediate_size", 3072),
        (f"{mae_code} mae_vit_base_patch16_dec512d8b): decoder width 512", f"{model}.decoder_hidden_size", 512),
        (f"{mae_code} mae_vit_base_patch16_dec512d8b): 8 decoder blocks", f"{model}.decoder_num_hidden_layers", 8),
        (f"{mae_code} mae_vit_base_patch16_dec512d8b): 16 decoder heads", f"{model}.decoder_num_attention_heads", 16),
        (f"{mae_code} mae_vit_base_patch16_dec512d8b): decoder MLP 2048", f"{model}.decoder_intermediate_size", 2048),
        (f"{mae_code}): LayerNorm eps 1e-6", f"{model}.layer_norm_eps", 1e-6),
        ("6.2: mask ratio 0.75", f"{pretrain}.mask_ratio", 0.75),
        ("6.2 / A.6: pre-trained for 200 epochs", f"{pretrain}.epochs", 200),
        ("A.6: a 40-epoch warmup", f"{pretrain}.warmup_epochs", 40),
        ("A.6: batch size 4096", f"{pretrain}.global_batch_size", 4096),
        (f"{mae_code}): norm-pix loss", f"{pretrain}.norm_pix_loss", True),
        (f"{mae_code}): base lr 1.5e-4 (lr = blr x batch / 256)", f"{pretrain}.base_lr", 1.5e-4),
        (f"{mae_code}): min lr 0", f"{pretrain}.min_lr", 0.0),
        (f"{mae_code}): weight decay 0.05", f"{pretrain}.weight_decay", 0.05),
        (f"{mae_code}): AdamW betas (0.9, 0.95)", f"{pretrain}.betas", [0.9, 0.95]),
        (f"{mae_code}): RandomResizedCrop scale (0.2, 1)", f"{pretrain}.crop_scale", [0.2, 1.0]),
        ("6.2 / A.6: 90 epochs of linear probing", f"{probe}.epochs", 90),
        ("A.6: batch size 16,384", f"{probe}.global_batch_size", 16384),
        (f"{mae_code} main_linprobe.py): 10 warmup epochs", f"{probe}.warmup_epochs", 10),
        (f"{mae_code} main_linprobe.py): base lr 0.1", f"{probe}.base_lr", 0.1),
        (f"{mae_code} main_linprobe.py): min lr 0", f"{probe}.min_lr", 0.0),
        (f"{mae_code} main_linprobe.py): weight decay 0", f"{probe}.weight_decay", 0.0),
        (f"A.6: the LARS optimizer (MAE's util/lars.py: momentum 0.9)", f"{probe}.momentum", 0.9),
        (f"A.6: the LARS optimizer (MAE's util/lars.py: trust coefficient 0.001)", f"{probe}.trust_coefficient", 0.001),
        (f"{mae_code} main_linprobe.py): RandomResizedCrop scale (0.08, 1)", f"{probe}.crop_scale", [0.08, 1.0]),
        (f"{mae_code} main_linprobe.py): val resize 256", f"{probe}.val_resize_size", 256),
    ])
    # A.6: "gradient accumulation once in every two iterations" on 8 GPUs: 4096 = 8 x 256 x 2.
    assert_paper_split(config["mae"]["pretrain"], MAE_PRETRAIN_GPUS, 256, 2, "A.6 (pre-training)")
    assert_paper_split(config["mae"]["linear_probe"], MAE_PROBE_GPUS, 1024, 1, "A.6 (linear probe)")
    assert_rows_are_the_papers_mixtures(config, "table11", "6.2, Table 11", [
        "ImageNet", "IN/SD-20%", "IN/SD-40%", "IN/SD-80%", "SD-ImageNet", "IN/WD-20%", "IN/WD-40%", "IN/WD-80%",
        "WebVision"])
    assert table(config, "table11")["metrics"] == ["linear_probe_top1_imagenet_val"], \
        "paper 6.2, Table 11: validation accuracy of linear probing on ImageNet"


def test_detection_and_spectra_follow_section_6_1_and_appendix_a7(config):
    key = "detection"
    assert_paper(config, [
        ("A.7: features of images from ImageNet", f"{key}.real_source", "imagenet"),
        ("A.7: 12,000 images from ImageNet and SD-ImageNet, 6,000 each", f"{key}.images_per_source", 6000),
        ("A.7: 2,000 test vectors, 1,000 of each", f"{key}.test_images_per_source", 1000),
        ("A.7: 5,000 iterations", f"{key}.iterations", 5000),
        ("A.7: batch size 128", f"{key}.batch_size", 128),
        ("A.7: a two-layer MLP with a hidden size of 1,024", f"{key}.mlp_hidden", 1024),
        ("6.1, Figure 6: spectra of images from ImageNet", "spectra.real_source", "imagenet"),
        ("6.1, Figure 6: and from SD-ImageNet", "spectra.generated", ["sd_imagenet"]),
        ("6.1, Figure 6: 10^3 images of each", "spectra.images_per_source", 1000),
    ])
    train = 2 * (config[key]["images_per_source"] - config[key]["test_images_per_source"])
    assert train == 10_000, f"paper A.7 / 6.1: 10,000 training feature vectors, the config gives {train}"
    detection = table(config, "detection")
    assert [row["mixture"] for row in detection["rows"]] == ["sd_imagenet"], \
        "paper 6.1 / A.7: real ImageNet against SD-ImageNet"
    assert detection["models"] == ["linear_on_resnet50_features", "mlp_on_resnet50_features"], \
        "paper A.7: a linear classifier and a two-layer MLP on ResNet-50 features"
