"""GPU throughput the planner can use: Stable Diffusion v1's UNet and VAE decoder at the real
shapes, and one training step of every recipe's model at its per-GPU batch.

    python -m benchmarks.gpu                            # on a GPU node, no downloads (~6 min: an estimate)
    python -m benchmarks.gpu --device cpu --tiny        # the smoke run's tiny models: tries the code path
    python -m contamination plan --throughput benchmarks/results/<name>.json ...

Every model is built from its config with random weights (nothing is downloaded; speed does not
depend on the weights' values) and fed random tensors on the device, so rows measure the GPU, not
image decoding or data loading:

- Stable Diffusion v1 (benchmarks.generation.sd_unet / sd_vae): one sampler step is one UNet
  forward on 2 x batch latents (classifier-free guidance doubles the batch) with 77 x 768 text
  states; one image costs steps UNet steps of its batch and one VAE decode. Timed per precision
  and format (fp32, TF32, fp16, bf16, channels-last, torch.compile: generation's own speed options,
  generate.with_speed_options) and batch size. The text encoder and the sampler's arithmetic are
  left out (well under 1% of a 50-step image).
- Training: a step (forward, loss, backward, optimizer step; AMP with a gradient scaler where the
  recipe says amp: true) of each classifier of classification.models at its train_crop_size, BLIP
  base (transformers' BlipConfig defaults are BLIP base) at captioning.image_size and
  max_text_tokens, the IDDPM UNet of config `iddpm` with its hybrid loss, MAE pre-training and the
  linear probe (frozen encoder forward + head step) of config `mae`; plus IDDPM sampling
  (denoiser evaluations). The per-GPU batch is the recipe's per-process batch
  (training.batch_split) on the GPUs the profile gives the rule. Gradient accumulation, EMA
  updates every model_ema_steps and mixup happen per several steps or on the CPU and are left out.

Each row that measures what a key of config `planning.throughput` assumes names it
(``planning_key``) and holds the measured value in that key's unit (``ours``; ``baseline`` is the
config's assumption): `plan --throughput <json>` uses those in place of the assumptions. The
Stable Diffusion row for `generate` is the variant and batch the config's `generation` settings
run, at planning.generate_reference's steps and size. A row that could not be measured (out of
memory, or a variant this device lacks) has status other than "ok", no value and the reason.
"""

import argparse
import datetime
import gc
import json
import sys
import time
from pathlib import Path

from benchmarks.generation import calls_per_second, sd_unet, sd_vae
from benchmarks.measure import PROJECT, format_table, machine, measured, row

GROUP = "gpu"
RESULTS = PROJECT / "benchmarks" / "results"
# Precision and format variants of the SD UNet and VAE: generation settings (config/README.md).
SD_VARIANTS = {
    "fp32": {"dtype": "float32", "matmul_precision": "highest", "channels_last": False, "compile": False},
    "tf32": {"dtype": "float32", "matmul_precision": "high", "channels_last": False, "compile": False},
    "fp16": {"dtype": "float16", "matmul_precision": "highest", "channels_last": False, "compile": False},
    "bf16": {"dtype": "bfloat16", "matmul_precision": "highest", "channels_last": False, "compile": False},
    "bf16 channels-last": {"dtype": "bfloat16", "matmul_precision": "highest", "channels_last": True, "compile": False},
    "bf16 compile": {"dtype": "bfloat16", "matmul_precision": "highest", "channels_last": False, "compile": True},
}
SWEPT_BATCHES = (1, 4, 16, 32)  # besides the config's batch, for the config's variant and bf16
TINY_SWEPT_BATCHES = (1,)
SPEED_KEYS = ("dtype", "matmul_precision", "channels_last", "compile")


# ---- measuring ------------------------------------------------------------------------------


def rate_and_peak(step, device, seconds: float) -> tuple:
    """(calls of ``step`` per second after a warm-up call, peak MiB): on a GPU the most memory
    PyTorch allocated, on the CPU the resident set's peak (benchmarks.measure)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        rate = calls_per_second(step, device, seconds)
        return rate, torch.cuda.max_memory_allocated(device) / 2**20
    with measured() as measurement:
        rate = calls_per_second(step, device, seconds)
    return rate, measurement.peak_mib


def release_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def failure_status(error) -> str:
    import torch

    return "out of memory" if isinstance(error, torch.OutOfMemoryError) else "failed"


def unmeasured_row(case: str, unit: str, status: str, reason: str, **extra) -> dict:
    return row(GROUP, case, unit=unit, basis="-", baseline_label="-", baseline=None, ours=None,
               higher_is_better=True, note=reason, status=status, **extra)


# ---- Stable Diffusion -----------------------------------------------------------------------


def sd_models(tiny: bool, device, settings: dict):
    """(UNet, VAE) of SD v1 with random weights in ``settings``' dtype and speed options; --tiny:
    the smoke run's tiny pipeline's."""
    import types

    import torch
    from diffusers.utils import logging

    from contamination.generation.generate import with_speed_options

    logging.set_verbosity_error()  # casting random weights with .to(dtype) is what is meant here

    if tiny:
        from contamination.smoke.tiny_sd import build_pipeline

        pipeline = build_pipeline(0)
        unet, vae = pipeline.unet, pipeline.vae
    else:
        with torch.device(device):
            unet, vae = sd_unet(), sd_vae()
    models = types.SimpleNamespace(unet=unet.to(device=device, dtype=getattr(torch, settings["dtype"])).eval(),
                                   vae=vae.to(device=device, dtype=getattr(torch, settings["dtype"])).eval())
    with_speed_options(models, settings)
    return models.unet, models.vae


def sd_rates(unet, vae, batch: int, latent_size: int, device, seconds: float) -> dict:
    """UNet steps per second (a forward on 2 x batch latents: guidance) and VAE decodes per
    second of ``batch`` latents, with the peak memory of either."""
    import torch

    dtype = next(unet.parameters()).dtype
    sample = torch.randn(2 * batch, unet.config.in_channels, latent_size, latent_size, device=device, dtype=dtype)
    context = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    timestep = torch.full((2 * batch,), 500, device=device)
    latents = torch.randn(batch, vae.config.latent_channels, latent_size, latent_size, device=device, dtype=dtype)
    with torch.inference_mode():
        unet_rate, unet_peak = rate_and_peak(lambda: unet(sample, timestep, context), device, seconds)
        decode_rate, decode_peak = rate_and_peak(lambda: vae.decode(latents), device, seconds)
    return {"unet_steps_per_second": unet_rate, "vae_decodes_per_second": decode_rate,
            "peak_mib": max(unet_peak, decode_peak)}


def sd_cases(config: dict, tiny: bool) -> list:
    """(variant name, settings, batch, planning key or None): every variant at the config's batch,
    other batches for the config's variant and bf16. The config's own combination of speed
    options is added as variant "config" when it is none of SD_VARIANTS."""
    generation = config["generation"]
    own = {key: generation[key] for key in SPEED_KEYS}
    variants = dict(SD_VARIANTS)
    config_variant = next((name for name, settings in variants.items() if settings == own), None)
    if config_variant is None:
        config_variant, variants["config"] = "config", own
    batch = generation["batch_size"]
    cases = [(name, settings, batch, "generate" if name == config_variant else None)
             for name, settings in variants.items()]
    for name in dict.fromkeys([config_variant, "bf16"]):
        cases += [(name, variants[name], swept, None)
                  for swept in (TINY_SWEPT_BATCHES if tiny else SWEPT_BATCHES) if swept != batch]
    return cases


def sd_rows(config: dict, device, tiny: bool, seconds: float, compile_models: bool) -> list:
    """One row per variant and batch: images/s of one full generation (steps UNet steps + one VAE
    decode at planning.generate_reference) against fp32 at the same batch."""
    import torch

    reference = config["planning"]["generate_reference"]
    steps, latent_size = reference["steps"], reference["height"] // 8
    label = f"SD v1{' (tiny)' if tiny else ''} {reference['height']} px, {steps} steps"
    rows, fp32 = [], {}
    for name, settings, batch, key in sd_cases(config, tiny):
        case = f"{label}: {name}, batch {batch}"
        extra = {"variant": name, "settings": settings, "batch": batch, "steps": steps, "planning_key": key}
        if settings["compile"] and not compile_models:
            rows.append(unmeasured_row(case, "images/s", "skipped", "--no-compile", **extra))
            continue
        if settings["dtype"] == "float16" and device.type == "cpu":
            rows.append(unmeasured_row(case, "images/s", "skipped", "float16 convolutions are a GPU feature", **extra))
            continue
        torch.set_float32_matmul_precision(settings["matmul_precision"])
        try:
            unet, vae = sd_models(tiny, device, settings)
            rates = sd_rates(unet, vae, batch, latent_size, device, seconds)
        except Exception as error:  # a variant this device cannot run is a row, not the end of the run
            rows.append(unmeasured_row(case, "images/s", failure_status(error), f"{type(error).__name__}: {error}",
                                       **extra))
            continue
        finally:
            unet = vae = None
            release_memory(device)
            torch.set_float32_matmul_precision("highest")
        images = batch / (steps / rates["unet_steps_per_second"] + 1 / rates["vae_decodes_per_second"])
        if name == "fp32":
            fp32[batch] = images
        rows.append(row(GROUP, case, unit="images/s", basis=basis(device), baseline_label="fp32, same batch",
                        baseline=fp32.get(batch), ours=images, higher_is_better=True, ours_peak_mib=rates["peak_mib"],
                        note=f"{rates['unet_steps_per_second']:.3g} UNet steps/s (2 x {batch} latents), "
                             f"{rates['vae_decodes_per_second'] * batch:.3g} VAE decodes/s",
                        status="ok", **extra, **{k: v for k, v in rates.items() if k != "peak_mib"}))
    return rows


def basis(device) -> str:
    """benchmarks.generation.calls_per_second clocks CPU time on the CPU, wall time on a GPU."""
    return "cpu" if device.type == "cpu" else "wall"


# ---- training -------------------------------------------------------------------------------


def per_gpu_batch(global_batch: int, max_batch, rule: str, profile: dict, key: str) -> int:
    """The recipe's per-process batch on the GPUs the profile gives ``rule`` (at least one)."""
    from contamination.experiments import training

    gpus = max(1, int(profile.get("set-resources", {}).get(rule, {}).get("gpu", 0) or 0))
    return training.batch_split(global_batch, gpus, max_batch, key).per_process_batch


def amp_step(model_loss, parameters, optimizer, device, amp: bool, clip=None):
    """A training step as the project's loops take it: autocast and a gradient scaler with AMP
    (on a GPU), gradients clipped to ``clip`` if given."""
    import torch

    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
    parameters = list(parameters)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            loss = model_loss()
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if clip is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    return step


def classifier_case(config, profile, name, device):
    import torch
    import torchvision

    from contamination import config as cfg
    from contamination.experiments import classify_recipe

    recipe = config["classification"]["models"][name]
    batch = per_gpu_batch(recipe["global_batch_size"], recipe["max_batch_per_process"], "train_classifier", profile,
                          f"classification.models.{name}")
    classes = cfg.class_count(config)
    model = torchvision.models.get_model(name, weights=None, num_classes=classes).to(device).train()
    optimizer = classify_recipe.build_optimizer(model, recipe)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    size = recipe["train_crop_size"]
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randint(0, classes, (batch,), device=device)
    step = amp_step(lambda: criterion(model(images), targets), model.parameters(), optimizer, device, recipe["amp"],
                    recipe["clip_grad_norm"])
    return step, batch, f"{size} px, {'AMP' if recipe['amp'] else 'fp32'}"


def blip_model(settings: dict, tiny: bool):
    """BLIP base with random weights (transformers' BlipConfig defaults: ViT-B/16 image encoder,
    BERT-base text decoder) at captioning.image_size; --tiny: the smoke run's tiny BLIP."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    if tiny:
        from contamination.smoke.tiny_blip import build_tiny_blip

        return build_tiny_blip([settings["prompt"] + "a dog"], seed=0, image_size=settings["image_size"]).model
    blip = BlipConfig()
    blip.vision_config.image_size = settings["image_size"]
    blip.text_config.hidden_dropout_prob = blip.text_config.attention_probs_dropout_prob = settings["text_dropout"]
    blip.text_config.label_smoothing = settings["label_smoothing"]
    return BlipForConditionalGeneration(blip)


def blip_train_case(config, profile, device, tiny: bool):
    import torch

    settings = config["captioning"]
    batch = per_gpu_batch(settings["global_batch_size"], settings["max_batch_per_process"], "caption_finetune",
                          profile, "captioning")
    model = blip_model(settings, tiny).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    size, tokens = settings["image_size"], settings["max_text_tokens"]
    pixels = torch.randn(batch, 3, size, size, device=device)
    ids = torch.randint(0, model.config.text_config.vocab_size, (batch, tokens), device=device)
    mask = torch.ones_like(ids)

    def loss():
        return model(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=ids).loss

    return amp_step(loss, model.parameters(), optimizer, device, amp=False), batch, f"{size} px, {tokens} tokens, fp32"


def blip_generate_case(config, profile, device, tiny: bool):
    """Beam search as caption.generate_captions runs it. Random weights rarely pick the end token,
    so every caption runs to max_length: an upper bound on the cost of real captions."""
    import torch

    settings = config["captioning"]
    batch, size = settings["eval_batch_size"], settings["image_size"]
    model = blip_model(settings, tiny).to(device).eval()
    text = model.config.text_config
    # The decoder start token and three words, as "a picture of " is tokenized.
    prompt = torch.tensor([[text.bos_token_id, *range(text.pad_token_id + 1, text.pad_token_id + 4)]], device=device)
    pixels = torch.randn(batch, 3, size, size, device=device)

    def step():
        with torch.no_grad():
            model.generate(pixel_values=pixels, input_ids=prompt.repeat(batch, 1), num_beams=settings["num_beams"],
                           max_length=settings["max_length"], min_length=settings["min_length"],
                           repetition_penalty=settings["repetition_penalty"], do_sample=False)

    return step, batch, f"{size} px, beam {settings['num_beams']}, {settings['max_length']} tokens"


def iddpm_train_case(config, profile, device):
    import torch

    from contamination.experiments import diffusion, iddpm, training

    spec = config["iddpm"]
    batch = per_gpu_batch(spec["global_batch_size"], spec["max_batch_per_process"], "iddpm_train", profile, "iddpm")
    unet = iddpm.build_unet(spec["unet"], spec["image_size"]).to(device).train()
    gaussian = diffusion.GaussianDiffusion.from_scheduler(diffusion.scheduler(spec["diffusion_steps"]))
    optimizer = torch.optim.AdamW(unet.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    ema = training.ExponentialMovingAverage(unet, spec["ema_decay"], device=device)
    size = spec["image_size"]
    x_start = torch.rand(batch, 3, size, size, device=device) * 2 - 1

    def loss():
        t = torch.randint(0, gaussian.num_timesteps, (batch,), device=device)
        noise = torch.randn_like(x_start)
        x_t = gaussian.q_sample(x_start, t, noise)
        output = unet(x_t, iddpm.model_timesteps(t, spec)).sample
        return gaussian.hybrid_loss(output, x_start, x_t, t, noise, spec["vlb_weight"])[0].mean()

    train = amp_step(loss, unet.parameters(), optimizer, device, amp=False)

    def step():
        train()
        ema.update(unet)  # every iteration, as iddpm.train

    return step, batch, f"{size} px, fp32, EMA every step"


def iddpm_sample_case(config, profile, device):
    import torch

    from contamination.experiments import iddpm

    spec = config["iddpm"]
    batch, size = spec["sample_batch_size"], spec["image_size"]
    unet = iddpm.build_unet(spec["unet"], size).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    t = iddpm.model_timesteps(torch.full((batch,), spec["diffusion_steps"] // 2, device=device), spec)

    def step():
        with torch.inference_mode():
            unet(x, t)

    return step, batch, f"{size} px, fp32, one denoiser evaluation per image"


def mae_pretrain_case(config, profile, device):
    import torch

    from contamination.experiments import mae

    spec, recipe = config["mae"], config["mae"]["pretrain"]
    batch = per_gpu_batch(recipe["global_batch_size"], recipe["max_batch_per_process"], "mae_pretrain", profile,
                          "mae.pretrain")
    model = mae.build_mae(spec["model"], recipe).to(device).train()
    optimizer = torch.optim.AdamW(mae.weight_decay_groups(model, recipe["weight_decay"]), lr=recipe["base_lr"],
                                  betas=tuple(recipe["betas"]))
    size = spec["model"]["image_size"]
    images = torch.randn(batch, 3, size, size, device=device)
    step = amp_step(lambda: model(pixel_values=images).loss, model.parameters(), optimizer, device, recipe["amp"])
    return step, batch, f"{size} px, mask {recipe['mask_ratio']}, {'AMP' if recipe['amp'] else 'fp32'}"


def mae_probe_case(config, profile, device):
    import torch

    from contamination import config as cfg
    from contamination.experiments import mae

    spec, recipe = config["mae"], config["mae"]["linear_probe"]
    batch = per_gpu_batch(recipe["global_batch_size"], recipe["max_batch_per_process"], "mae_linear_probe", profile,
                          "mae.linear_probe")
    # The probe's frozen encoder: the pre-training model's, as load_encoder reads it (mask ratio 0).
    encoder = mae.build_mae(spec["model"], {**spec["pretrain"], "mask_ratio": 0.0}).vit.to(device).eval()
    encoder.requires_grad_(False)
    classes = cfg.class_count(config)
    head = mae.probe_head(encoder.config.hidden_size, classes).to(device).train()
    optimizer = mae.lars_optimizer(head, recipe)
    criterion = torch.nn.CrossEntropyLoss()
    size = spec["model"]["image_size"]
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randint(0, classes, (batch,), device=device)

    def loss():
        with torch.no_grad():
            features = mae.cls_features(encoder, images)
        return criterion(head(features.float()), targets)

    step = amp_step(loss, head.parameters(), optimizer, device, recipe["amp"])
    return step, batch, f"{size} px, frozen encoder, {'AMP' if recipe['amp'] else 'fp32'}"


def training_cases(config: dict, profile: dict, device, tiny: bool) -> list:
    """(case, unit, planning key, builder returning (step, items per step, description))."""
    cases = [(f"train {name}", "images/s", f"train_classifier.{name}",
              lambda name=name: classifier_case(config, profile, name, device))
             for name in config["classification"]["models"]]
    cases += [
        ("train BLIP (caption fine-tuning)", "pairs/s", "caption_train",
         lambda: blip_train_case(config, profile, device, tiny)),
        ("caption with BLIP", "images/s", "caption_generate", lambda: blip_generate_case(config, profile, device, tiny)),
        ("train IDDPM UNet", "images/s", "iddpm_train", lambda: iddpm_train_case(config, profile, device)),
        ("sample IDDPM UNet", "evaluations/s", "iddpm_sample", lambda: iddpm_sample_case(config, profile, device)),
        ("MAE pre-training", "images/s", "mae_pretrain", lambda: mae_pretrain_case(config, profile, device)),
        ("MAE linear probe", "images/s", "mae_linear_probe", lambda: mae_probe_case(config, profile, device)),
    ]
    return cases


def assumed_throughput(config: dict, key: str):
    value = config["planning"]["throughput"]
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def training_rows(config: dict, profile: dict, device, tiny: bool, seconds: float) -> list:
    import torch

    rows = []
    for case, unit, key, build in training_cases(config, profile, device, tiny):
        extra = {"planning_key": key}
        torch.manual_seed(0)
        try:
            step, batch, description = build()
            rate, peak = rate_and_peak(step, device, seconds)
        except Exception as error:  # out of memory on a small GPU is a result, not the end of the run
            rows.append(unmeasured_row(case, unit, failure_status(error), f"{type(error).__name__}: {error}", **extra))
            continue
        finally:
            step = None
            release_memory(device)
        rows.append(row(GROUP, case, unit=unit, basis=basis(device), baseline_label="config planning.throughput",
                        baseline=assumed_throughput(config, key), ours=rate * batch, higher_is_better=True,
                        ours_peak_mib=peak, note=f"per-GPU batch {batch}, {description}", status="ok", batch=batch,
                        **extra))
    return rows


# ---- the command ----------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (the first GPU, else an error), cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true",
                        help="the smoke run's tiny models and shapes (config/smoke.yaml overlaid): tries the code "
                             "path in seconds; its figures are not for planning")
    parser.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                        help="overlays on config/config.yaml, as for `plan` (recipes, batch sizes, generation)")
    parser.add_argument("--profile", help="Snakemake profile whose GPUs per rule set the per-GPU batch "
                                          "(default profiles/slurm)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per measurement after a warm-up call (default 4; --tiny: 0)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (minutes of compiling)")
    parser.add_argument("--only", choices=["sd", "training"], help="one half only")
    parser.add_argument("--out", help="JSON file (default benchmarks/results/<date>-<gpu>[-tiny]-gpu-benchmark.json)")
    args = parser.parse_args(argv)

    import torch

    from contamination import config as cfg
    from contamination.reporting.plan import DEFAULT_PROFILE, read_profile

    if args.device == "auto" and not torch.cuda.is_available():
        parser.error("no GPU here (torch.cuda.is_available() is False): run on a GPU node, or pass "
                     "--device cpu --tiny to try the code path")
    device = torch.device("cuda" if args.device == "auto" else args.device)
    if device.type == "cuda":
        # An index throughout: torch.cuda.set_device rejects a bare "cuda".
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
    overlays = ([cfg.PROJECT_ROOT / "config" / "smoke.yaml"] if args.tiny else []) + args.configfile
    config = cfg.load(*overlays)
    profile = read_profile(args.profile or DEFAULT_PROFILE)
    seconds = args.seconds if args.seconds is not None else (0.0 if args.tiny else 4.0)

    started = datetime.datetime.now(datetime.timezone.utc)
    begin = time.perf_counter()
    rows = []
    if args.only in (None, "sd"):
        rows += sd_rows(config, device, args.tiny, seconds, compile_models=not args.no_compile)
    if args.only in (None, "training"):
        rows += training_rows(config, profile, device, args.tiny, seconds)
    description = machine()
    name = torch.cuda.get_device_name(device).replace(" ", "-") if device.type == "cuda" else "cpu"
    out = Path(args.out or RESULTS / f"{started:%Y-%m-%d}-{name}{'-tiny' * args.tiny}-gpu-benchmark.json")
    result = {
        "name": out.stem,
        "started": started.isoformat(timespec="seconds"),
        "machine": description,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "settings": {"device": str(device), "tiny": args.tiny, "configfile": [str(path) for path in overlays],
                     "profile": str(args.profile or DEFAULT_PROFILE), "seconds": seconds,
                     "compile": not args.no_compile, "only": args.only},
        "seconds": time.perf_counter() - begin,
        "rows": rows,
    }
    from contamination.io import write_json

    write_json(result, out)
    print(format_table(rows))
    print(f"\n{len(rows)} rows in {result['seconds'] / 60:.1f} min on {result['device']}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
