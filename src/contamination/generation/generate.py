"""Sharded text-to-image generation (paper section 3.1 and appendix A.1) and the merged index.

A prompt table is cut into shards of ``generation.shard_size`` rows; one job makes one shard:
row r is in shard r // shard_size. Each image's initial noise comes from its own
``torch.Generator`` seeded with the row's seed (drawn on the CPU), so an image does not depend on
the batch it was made in, the shard size or the number of GPUs; regenerated alone it equals its
shard's pixels up to float rounding (~1e-6 across batch compositions and thread counts, which
every row records: ROUNDING_COLUMNS). The pipeline is any
diffusers text-to-image pipeline of PIPELINE_CLASSES (generators.py says which one a generated
dataset uses); the paper's is Stable Diffusion v1.1 with the CompVis PLMS sampler.
"""

import io
import json
import os
import platform
import zipfile
from importlib.metadata import version
from pathlib import Path

from contamination.config import add_settings_arguments
from contamination.errors import ConfigError, DataError
from contamination.records import model_fingerprint
from contamination.formats import GENERATED_COLUMNS, NO_LABEL, PROMPT_COLUMNS, shard_uri
from contamination.generation.shards import read_metadata, write_shard
from contamination.io import exclusive_lock, read_parquet, remove_stale_temporaries, write_parquet
from contamination.generation import generators

SETTINGS = [
    "class", "scheduler", "steps", "guidance_scale", "negative_prompt", "height", "width", "dtype", "call_arguments",
    "matmul_precision", "channels_last", "compile", "batch_size", "safety_checker", "watermark",
    "image_format", "image_quality", "shard_size",
]
# The diffusers text-to-image pipelines a generator may name (config `class`): the auto class,
# which picks the pipeline a directory's model_index.json names, and the families it was tested
# with or documented for (config/README.md "generators").
PIPELINE_CLASSES = (
    "AutoPipelineForText2Image", "StableDiffusionPipeline", "StableDiffusionXLPipeline", "PixArtAlphaPipeline",
    "PixArtSigmaPipeline", "StableDiffusion3Pipeline", "FluxPipeline",
)
# config `scheduler`: a CompVis sampler (SAMPLERS), "pipeline" (the scheduler saved with the
# pipeline, as its model card runs it) or one of these diffusers schedulers, made from the
# pipeline's scheduler config.
DIFFUSERS_SCHEDULERS = (
    "DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler",
    "PNDMScheduler", "UniPCMultistepScheduler",
)
PIPELINE_SCHEDULER = "pipeline"
# Pipeline call arguments the workflow sets itself (from the settings, per image, or fixed).
RESERVED_CALL_ARGUMENTS = ("prompt", "negative_prompt", "height", "width", "num_inference_steps", "guidance_scale",
                           "generator", "output_type", "num_images_per_prompt", "latents", "return_dict")
# The samplers of the CompVis scripts Stable Diffusion v1 was released with: timesteps
# 1 + k * 1000 / steps ("leading" spacing, offset 1), and the last step goes to the first
# training noise level, not to alpha = 1. The beta schedule stays the model's own.
SAMPLERS = {
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
}
COMPVIS_TIMESTEPS = {"set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}
# Pillow format name and file extension per config generation.image_format.
IMAGE_FORMATS = {"png": ("PNG", "png"), "jpeg": ("JPEG", "jpg"), "webp": ("WEBP", "webp")}
# The settings that can change pixels, stored with every image (channels_last and compile change
# float rounding only, but the record should say how an image was made).
SAMPLER_COLUMNS = ["scheduler", "steps", "guidance_scale", "negative_prompt", "height", "width", "dtype",
                   "matmul_precision", "channels_last", "compile"]
MATMUL_PRECISIONS = ("highest", "high", "medium")
# Besides its inputs, what the float rounding of an image made on the CPU depends on (a few pixels
# move by one 8-bit level): the batch it is made in (rows [k * batch_size, ...) of its shard), the
# thread count and the kernels' instruction set. Every row records them, so verify-generated can
# remake an image bit for bit (generation/card.py).
ROUNDING_COLUMNS = ("batch_size", "torch_threads", "cpu_capability")
VERSIONED_PACKAGES = ["contamination", "torch", "diffusers", "transformers", "pillow"]


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate one shard of a prompt table")
    parser.add_argument("--prompts", required=True, help="prompt table (Parquet)")
    parser.add_argument("--pipeline", required=True, help="local diffusers pipeline directory")
    parser.add_argument("--shard", required=True, type=int, help="shard number: rows [shard * shard_size, ...)")
    add_settings_arguments(parser, "--settings", "generation", help="config `generation`")
    parser.add_argument("--out", required=True, help="the shard file, shard-NNNNN.zip")
    parser.set_defaults(run=run_generate)

    parser = subparsers.add_parser("merge-shards", help="merge shard metadata into one generated index")
    parser.add_argument("shards", nargs="+")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_merge)


def run_generate(args) -> None:
    settings = check_settings(args.settings)
    check_pipeline_dir(args.pipeline, settings)
    rows = shard_rows(read_parquet(args.prompts), args.shard, settings["shard_size"], args.prompts)
    # A requeued job may start while the old one still writes this shard: only the lock holder
    # may remove temporaries, so a live writer's file is never taken for a killed run's.
    with exclusive_lock(args.out, f"shard {args.shard} ({args.out})") as held:
        if held:
            remove_stale_temporaries(args.out)
        pipeline = load_pipeline(args.pipeline, settings)
        provenance = generation_provenance(args.pipeline, settings, pipeline.device, type(pipeline.scheduler).__name__)
        print(f"shard {args.shard}: {len(rows)} images on {provenance['device']}, model {provenance['model_fingerprint']}")
        write_generated_shard(pipeline, rows, settings, provenance, args.out)
    print(f"shard {args.shard} written to {args.out}")


def check_settings(settings: dict, key: str = None) -> dict:
    """``settings`` as the generate command takes them; ``key``, the config section named in
    messages, is by default the generator's (``generators.<name>``) or ``generation``."""
    key = key or settings_key(settings)
    missing = [name for name in SETTINGS if name not in settings]
    if missing:
        raise ConfigError(f"{key}: missing keys {', '.join(key + '.' + name for name in missing)}")
    if settings["watermark"]:
        raise ConfigError(
            "generation.watermark: true is not supported: the pipelines' invisible watermarkers are not wired "
            "(the paper disabled watermarking, section 3.1); set it to false"
        )
    if settings["class"] not in PIPELINE_CLASSES:
        raise ConfigError(f"{key}.class: '{settings['class']}' is not one of the supported diffusers pipelines "
                          f"{list(PIPELINE_CLASSES)}")
    schedulers = [*SAMPLERS, PIPELINE_SCHEDULER, *DIFFUSERS_SCHEDULERS]
    if settings["scheduler"] not in schedulers:
        raise ConfigError(f"{key}.scheduler: '{settings['scheduler']}' is not one of {schedulers}")
    reserved = sorted(set(settings["call_arguments"]) & set(RESERVED_CALL_ARGUMENTS))
    if reserved:
        raise ConfigError(f"{key}.call_arguments.{reserved[0]}: set by the workflow (from the settings steps, "
                          "guidance_scale, height, width, negative_prompt, or per image); remove it")
    for name, value in settings["call_arguments"].items():
        if not (value is None or isinstance(value, (str, int, float, bool))):
            raise ConfigError(f"{key}.call_arguments.{name}: {value!r} is not a JSON scalar (string, number, "
                              "boolean or null)")
    if settings["matmul_precision"] not in MATMUL_PRECISIONS:
        raise ConfigError(
            f"generation.matmul_precision: '{settings['matmul_precision']}' is not one of {list(MATMUL_PRECISIONS)}"
        )
    if settings["image_format"] not in IMAGE_FORMATS:
        raise ConfigError(
            f"generation.image_format: '{settings['image_format']}' is not one of {sorted(IMAGE_FORMATS)}"
        )
    return settings


def settings_key(settings: dict) -> str:
    """The config section of a generator's settings: ``generators.<name>``, or ``generation``
    for the paper's generator (whose settings carry no name)."""
    return f"generators.{settings['generator']}" if "generator" in settings else "generation"


def check_pipeline_dir(pipeline_dir, settings: dict) -> None:
    key = generators.pipeline_key(settings.get("generator", generators.PAPER_GENERATOR))
    model_index = Path(pipeline_dir) / "model_index.json"
    if not Path(pipeline_dir).is_dir():
        raise ConfigError(f"{key}: '{pipeline_dir}' does not exist")
    if not model_index.is_file():
        raise ConfigError(f"{key}: '{pipeline_dir}' is not a diffusers pipeline directory (no model_index.json)")
    has_checker = json.loads(model_index.read_text()).get("safety_checker", [None])[0] is not None
    if settings["safety_checker"] and not has_checker:
        raise ConfigError(
            f"generation.safety_checker: true, but the pipeline in '{pipeline_dir}' has no safety checker; "
            "set it to false (the paper disabled it, section 3.1)"
        )


def shard_span(rows: int, shard: int, shard_size: int) -> range:
    """The rows of shard ``shard`` of a prompt table of ``rows`` rows: [shard * shard_size,
    (shard + 1) * shard_size), cut at the end; empty for a shard that does not exist."""
    start = shard * shard_size
    if shard < 0 or start >= rows:
        return range(0)
    return range(start, min(rows, start + shard_size))


def shard_rows(table, shard: int, shard_size: int, prompts_path):
    """The rows shard_span gives of the prompt table."""
    span = shard_span(len(table), shard, shard_size)
    if not span:
        shards = -(-len(table) // shard_size)
        raise DataError(
            f"{prompts_path}: has {len(table)} rows, {shards} shards of generation.shard_size {shard_size}; "
            f"there is no shard {shard}"
        )
    return table.iloc[span.start:span.stop].reset_index(drop=True)


def load_pipeline(pipeline_dir, settings: dict):
    """The pipeline of class ``settings["class"]`` from a local directory, with the configured
    sampler and speed options, on the GPU if there is one.

    Speed options (all off by default, the paper's fp32 with PyTorch's defaults):
    ``matmul_precision`` "high" lets float32 matrix products use TF32 tensor cores (Ampere and later
    GPUs; about 8x the fp32 peak, 10 bits of mantissa in the products; cuDNN convolutions follow
    PyTorch's own default, which already allows TF32); ``channels_last`` stores UNet and VAE activations NHWC, which
    cuDNN's convolutions prefer in half precision; ``compile`` runs the denoiser (UNet or
    transformer) through torch.compile (minutes of compilation per process, then faster steps).
    Attention is already PyTorch's scaled_dot_product_attention (diffusers' default processor)."""
    import diffusers
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Per-component loading bars would bury the per-batch progress lines in the job log.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    options = {"dtype": getattr(torch, settings["dtype"]), "local_files_only": True}
    components = json.loads((Path(pipeline_dir) / "model_index.json").read_text())
    if not settings["safety_checker"] and "safety_checker" in components:
        options.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline = getattr(diffusers, settings["class"]).from_pretrained(pipeline_dir, **options)
    check_call_arguments(pipeline, settings)
    if settings["scheduler"] != PIPELINE_SCHEDULER:
        pipeline.scheduler = make_scheduler(settings["scheduler"], pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    pipeline = pipeline.to("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision(settings["matmul_precision"])
    return with_speed_options(pipeline, settings)


def with_speed_options(pipeline, settings: dict):
    """The pipeline with generation.channels_last and generation.compile applied (matmul_precision
    is process-wide: load_pipeline sets it)."""
    import torch

    denoiser = "unet" if hasattr(pipeline, "unet") else "transformer"
    if settings.get("channels_last"):
        getattr(pipeline, denoiser).to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
    if settings.get("compile"):
        setattr(pipeline, denoiser, torch.compile(getattr(pipeline, denoiser)))
    return pipeline


def check_call_arguments(pipeline, settings: dict) -> None:
    """Every extra call argument is a parameter of the pipeline's __call__ (a misspelt one would
    be an error deep inside the first batch, or silently swallowed by **kwargs)."""
    import inspect

    parameters = inspect.signature(pipeline.__call__).parameters
    unknown = sorted(set(settings["call_arguments"]) - set(parameters))
    if unknown:
        known = [name for name in parameters if name not in RESERVED_CALL_ARGUMENTS and name != "kwargs"]
        raise ConfigError(f"{settings_key(settings)}.call_arguments.{unknown[0]}: not an argument of "
                          f"{type(pipeline).__name__} (it takes {', '.join(known)})")


def make_scheduler(name: str, model_scheduler_config):
    """A CompVis sampler (SAMPLERS) or a diffusers scheduler class, from the pipeline's scheduler config."""
    import diffusers

    if name in SAMPLERS:
        class_name, options = SAMPLERS[name]
        return getattr(diffusers, class_name).from_config(model_scheduler_config, **options, **COMPVIS_TIMESTEPS)
    return getattr(diffusers, name).from_config(model_scheduler_config)


def generate_images(pipeline, prompts, seeds, settings: dict):
    """One batch: PIL images and safety-checker flags (all False without a checker)."""
    import torch

    prompts = list(prompts)
    generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
    output = pipeline(
        prompt=prompts,
        negative_prompt=[settings["negative_prompt"]] * len(prompts),
        height=settings["height"],
        width=settings["width"],
        num_inference_steps=settings["steps"],
        guidance_scale=settings["guidance_scale"],
        generator=generators,
        output_type="pil",
        **settings["call_arguments"],
    )
    # Only Stable Diffusion 1/2 pipelines with a safety checker flag images.
    flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(prompts)
    return output.images, [bool(flag) for flag in flagged]


def encode_image(image, settings: dict) -> bytes:
    pillow_format, _ = IMAGE_FORMATS[settings["image_format"]]
    options = {} if pillow_format == "PNG" else {"quality": settings["image_quality"]}
    buffer = io.BytesIO()
    image.save(buffer, format=pillow_format, **options)
    return buffer.getvalue()


def write_generated_shard(pipeline, rows, settings: dict, provenance: dict, out) -> None:
    """Generate ``rows`` batch by batch straight into the shard file (complete or absent)."""
    _, extension = IMAGE_FORMATS[settings["image_format"]]
    members = [f"{item_id}.{extension}" for item_id in rows["id"]]
    batch_size = settings["batch_size"]
    flagged = []

    def encoded_images():
        for start in range(0, len(rows), batch_size):
            batch = rows.iloc[start:start + batch_size]
            images, flags = generate_images(pipeline, batch["prompt"], batch["seed"], settings)
            flagged.extend(flags)
            yield from zip(members[start:start + batch_size], (encode_image(image, settings) for image in images))
            print(f"  {min(start + batch_size, len(rows))}/{len(rows)} images", flush=True)

    def metadata():
        frame = rows.copy()
        frame["member"] = members
        frame["nsfw_detected"] = flagged
        for column, value in provenance.items():
            frame[column] = value
        return frame

    write_shard(out, encoded_images(), metadata)


def generation_provenance(pipeline_dir, settings: dict, device, scheduler_class: str = None) -> dict:
    """What made the images, stored with every row: sampler, float rounding (ROUNDING_COLUMNS),
    model, device and package versions; for a generator of config `generators` also its name,
    pipeline class, call arguments and the scheduler class it sampled with."""
    import torch

    provenance = {column: settings[column] for column in SAMPLER_COLUMNS}
    if "generator" in settings:  # the paper generator's shards keep the columns they always had
        provenance.update(generator=settings["generator"], pipeline_class=settings["class"],
                          call_arguments=json.dumps(settings["call_arguments"], sort_keys=True),
                          scheduler_class=scheduler_class)
    provenance["image_format"] = settings["image_format"]
    provenance.update(batch_size=settings["batch_size"], torch_threads=torch.get_num_threads(),
                      cpu_capability=torch.backends.cpu.get_cpu_capability())
    provenance["model_fingerprint"] = model_fingerprint(pipeline_dir)
    provenance["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    provenance["versions"] = json.dumps(generation_versions(), sort_keys=True)
    return provenance


def generation_versions() -> dict:
    return {"python": platform.python_version(), **{package: version(package) for package in VERSIONED_PACKAGES}}


def run_merge(args) -> None:
    index = merge_shards(args.shards)
    write_parquet(index, args.out)
    print(f"{len(index)} generated images from {len(args.shards)} shards indexed in {args.out}")


def merge_shards(shard_paths):
    """The generated index (formats.GENERATED_COLUMNS) of the shards, in the order given."""
    import pandas as pd

    frames = []
    for shard_path in shard_paths:
        shard_path = os.path.abspath(shard_path)
        try:
            metadata = read_metadata(shard_path)
            with zipfile.ZipFile(shard_path) as archive:
                members = set(archive.namelist())
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise DataError(f"{shard_path}: not a readable generation shard ({error})") from error
        absent = sorted(set(metadata["member"]) - members)
        if absent:
            raise DataError(f"{shard_path}: metadata lists members the shard lacks, e.g. {absent[:3]}")
        frame = metadata[PROMPT_COLUMNS].copy()
        frame["caption"] = frame["prompt"].where(frame["label"] == NO_LABEL, "")
        frame["uri"] = [shard_uri(shard_path, member) for member in metadata["member"]]
        frames.append(frame)
    index = pd.concat(frames, ignore_index=True)
    repeated = index.loc[index["id"].duplicated(keep=False)].sort_values("id")
    if len(repeated):
        examples = "; ".join(f"{row.id} in {row.uri}" for row in repeated.head(4).itertuples())
        raise DataError(f"merge-shards: {repeated['id'].nunique()} ids occur more than once: {examples}")
    return index[GENERATED_COLUMNS]
