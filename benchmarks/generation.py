"""Generation: images/s of the shard job path (generate.write_generated_shard) vs. the paper's
official scripts redone with plain diffusers, and the effect of the speed options.

Baseline (moskomule/dataset-contamination src/sd_imagenet.py): fp32, ``n_samples`` = 3 copies of
one class prompt per call, noise from the global RNG seeded once, every image written as a loose
PNG. Ours: the shard job's code path (per-image seeded generators, PNG encoding, the stored ZIP
shard) at the paper's batch size 8. Both use the same loaded pipeline and the paper's sampler
settings (PLMS, 50 steps, guidance 7.5) so only the job's own work differs.

On the CPU the pipeline is the tiny one (``contamination.smoke.tiny_sd``) at 64 px; with a GPU an
SD-sized pipeline with random weights (SD v1's UNet, VAE and text encoder shapes) at 512 px, and
the achieved fraction of the GPU's bf16 peak by the UNet. Speed options are measured on our path
against its default; each reports how far its pixels move from the fp32 default (same seeds).
"""

import time

from benchmarks.measure import alternate, group_main, measured, rate_row, row, timed

GROUP = "generation"
CLASS_NAMES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray",
               "stingray", "cock"]
# bf16 dense tensor-core peaks (FLOP/s) from the vendors' data sheets, by device-name substring.
BF16_PEAK = {"H100 SXM": 989e12, "H100 PCIe": 756e12, "H100": 756e12, "A100": 312e12, "L40S": 362e12,
             "A10G": 70e12, "A10": 125e12, "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def prompt_rows(count: int):
    """A prompt table of ``count`` images: classes in blocks of 3 (the baseline's batch)."""
    import pandas as pd

    from contamination.generation.prompts import image_seed

    rows = []
    for number in range(count):
        label = (number // 3) % len(CLASS_NAMES)
        item_id = f"bench_{number:06d}"
        rows.append({"id": item_id, "label": label, "wnid": f"n{label:08d}", "source_id": f"n{label:08d}",
                     "prompt": f"A photo of {CLASS_NAMES[label]}", "seed": image_seed(0, "bench", item_id)})
    return pd.DataFrame(rows)


def official_script_batches(pipeline, rows, settings, out_dir, seed=42) -> None:
    """The official script's loop on diffusers: one global seed, 3 images per call, loose PNGs."""
    import torch
    from torchvision.io import write_png

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    count = 0
    with torch.inference_mode():
        for start in range(0, len(rows), 3):
            prompts = list(rows["prompt"].iloc[start:start + 3])
            images = pipeline(prompt=prompts, negative_prompt=[""] * len(prompts), height=settings["height"],
                              width=settings["width"], num_inference_steps=settings["steps"],
                              guidance_scale=settings["guidance_scale"], output_type="pt").images
            for image in images:
                write_png((255 * image.cpu()).to(torch.uint8), str(out_dir / f"{count:05}.png"))
                count += 1


def shard_job(pipeline, rows, settings, provenance, out) -> None:
    """What `python -m contamination generate` does once the pipeline is loaded."""
    from contamination.generation.generate import write_generated_shard

    write_generated_shard(pipeline, rows, settings, provenance, out)


def shard_pixels(path):
    """The images of a shard as one uint8 array, in row order."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    from contamination.generation.shards import read_metadata

    members = read_metadata(path)["member"]
    with zipfile.ZipFile(path) as archive:
        return np.stack([np.asarray(Image.open(io.BytesIO(archive.read(member))).convert("RGB"))
                         for member in members])


def apply_speed_options(pipeline, options: dict):
    """Speed options on a loaded pipeline: the job's own (generate.with_speed_options:
    channels-last memory, torch.compile of the UNet), plus two measured here only: fused QKV
    projections (no gain, so not offered) and attention "math", which swaps SDPA (diffusers'
    default) for the classic processor to show what SDPA is worth. TF32 matmuls
    (``matmul_precision``) are a process-wide switch, set by the caller around each call."""
    from contamination.generation.generate import with_speed_options

    if options.get("fuse_qkv"):
        pipeline.fuse_qkv_projections()
    if options.get("attention") == "math":
        from diffusers.models.attention_processor import AttnProcessor

        pipeline.unet.set_attn_processor(AttnProcessor())
    return with_speed_options(pipeline, options)


def tiny_pipeline_dir(workdir):
    from contamination.io import save_pretrained
    from contamination.smoke.tiny_sd import build_pipeline

    directory = workdir / "tiny-sd"
    if not (directory / "model_index.json").is_file():
        save_pretrained(build_pipeline(0), directory)
    return directory


def sd_sized_pipeline(dtype, device):
    """Stable Diffusion v1's architecture with random weights: UNet (860M parameters), VAE (84M),
    CLIP ViT-L/14 text encoder (86M here: the tiny pipeline's byte-level tokenizer has 514 tokens,
    not 49,408, so only the embedding table is smaller than the real 123M)."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from contamination.generation.generate import make_scheduler
    from contamination.smoke.tiny_sd import MAX_PROMPT_TOKENS, build_tokenizer

    tokenizer = build_tokenizer()
    with torch.device(device):
        unet, vae = sd_unet(), sd_vae()
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=MAX_PROMPT_TOKENS, hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    # SD v1's scheduler config; make_scheduler below turns it into the configured sampler.
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.scheduler = make_scheduler("plms", pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device=device, dtype=dtype)


def sd_unet():
    """Stable Diffusion v1's UNet (random weights, on the current default device)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280))


def sd_vae():
    """Stable Diffusion v1's autoencoder (random weights, on the current default device)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                         sample_size=512)


def unet_flops_per_image(unet, latent_size: int, text_tokens: int = 77) -> float:
    """FLOPs of one UNet forward for one latent, counted on the meta device (no compute)."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta_unet = copy.deepcopy(unet).to("meta") if next(unet.parameters()).device.type != "meta" else unet
    sample = torch.empty(1, unet.config.in_channels, latent_size, latent_size, device="meta")
    context = torch.empty(1, text_tokens, unet.config.cross_attention_dim, device="meta")
    with FlopCounterMode(display=False) as counter:
        meta_unet(sample, torch.tensor([10], device="meta"), context)
    return float(counter.get_total_flops())


def clock(device):
    """CPU time on the CPU (see benchmarks.measure), wall time on a GPU."""
    import torch

    return time.process_time if torch.device(device).type == "cpu" else time.perf_counter


def synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def calls_per_second(function, device, seconds: float) -> float:
    """How often ``function()`` runs per second, after one warm-up call (at least one timed call)."""
    now = clock(device)
    function()
    synchronize(device)
    calls, start = 0, now()
    while calls == 0 or now() - start < seconds:
        function()
        calls += 1
        synchronize(device)
    return calls / (now() - start)


def matmul_peak(device, dtype, size: int, seconds: float) -> float:
    """FLOP/s of a large square matmul: the best this device attains in ``dtype``."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 * calls_per_second(lambda: a @ b, device, seconds)


def unet_throughput(unet, batch: int, latent_size: int, dtype, device, seconds: float) -> float:
    """UNet forwards per second on ``batch`` latents (classifier-free guidance doubles the batch
    the sampler sends; the caller passes the doubled size)."""
    import torch

    sample = torch.randn(batch, unet.config.in_channels, latent_size, latent_size, device=device, dtype=dtype)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    timestep = torch.tensor([500] * batch, device=device)
    with torch.inference_mode():
        return calls_per_second(lambda: unet(sample, timestep, context), device, seconds)


def utilisation_rows(unet, *, label: str, batch: int, latent_size: int, dtype, device, seconds: float,
                     matmul_size: int):
    """Achieved FLOP/s of UNet forwards as a fraction of the measured matmul peak (baseline) and,
    on a known GPU, of its data-sheet bf16 peak."""
    import torch

    flops = unet_flops_per_image(unet, latent_size)
    forwards = unet_throughput(unet, batch, latent_size, dtype, device, seconds)
    achieved = forwards * batch * flops
    peak = matmul_peak(device, dtype, matmul_size, seconds)
    spec_peak, spec_name = None, ""
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(device)
        spec_name, spec_peak = next(((key, value) for key, value in BF16_PEAK.items() if key in name), ("", None))
    note = (f"{flops / 1e9:.3g} GFLOP per latent per forward; matmul {matmul_size}^2 {dtype} attains "
            f"{peak / 1e12:.3g} TFLOP/s")
    basis = "cpu" if torch.device(device).type == "cpu" else "wall"
    rows = [row(GROUP, f"{label}: UNet TFLOP/s vs matmul peak", unit="TFLOP/s", baseline_label="dense matmul",
                baseline=peak / 1e12, ours=achieved / 1e12, higher_is_better=True, basis=basis, note=note,
                unet_gflop_per_latent=flops / 1e9)]
    if spec_peak:
        rows.append(row(GROUP, f"{label}: fraction of bf16 peak", unit="TFLOP/s",
                        baseline_label=f"{spec_name} data sheet", baseline=spec_peak / 1e12,
                        ours=achieved / 1e12, higher_is_better=True, basis=basis,
                        note=f"achieved {achieved / spec_peak:.1%} of the data-sheet bf16 peak"))
    return rows


def compare_paths(pipeline, provenance, settings, rows, workdir, label: str, repeats: int, option_sets: dict):
    """Rows: baseline vs ours at batch 3 and at the paper's batch, then each option vs our default."""
    import numpy as np

    paper_batch = settings["batch_size"]
    ours_paper = f"ours_b{paper_batch}"

    def ours(batch, out):
        return timed(shard_job, pipeline, rows, {**settings, "batch_size": batch}, provenance, out)

    results = alternate({"baseline": timed(official_script_batches, pipeline, rows, settings, workdir / "official"),
                         "ours_b3": ours(3, workdir / "ours-b3.zip"),
                         ours_paper: ours(paper_batch, workdir / f"{ours_paper}.zip")}, repeats)
    reference = shard_pixels(workdir / f"{ours_paper}.zip")
    batch_difference = int(np.abs(shard_pixels(workdir / "ours-b3.zip").astype(int) - reference).max())
    out = [
        rate_row(GROUP, f"{label}: shard job, batch 3", len(rows), results["baseline"], results["ours_b3"],
                 unit="images/s", baseline_label="official script (batch 3)",
                 note="same batch: what per-image generators, PNG encoding and the ZIP shard cost"),
        rate_row(GROUP, f"{label}: shard job, batch {paper_batch} (config)", len(rows), results["baseline"],
                 results[ours_paper], unit="images/s", baseline_label="official script (batch 3)",
                 note=f"largest pixel difference batch 3 vs {paper_batch}: {batch_difference}/255 (per-image seeds)"),
    ]
    for name, (options, option_settings) in option_sets.items():
        out.append(option_row(pipeline, rows, settings, option_settings, options, provenance, workdir, label,
                              name, reference, max(1, repeats - 1)))
    return out


def option_row(default_pipeline, rows, settings, option_settings, options, provenance, workdir, label, name,
               reference, repeats):
    """One speed option on our path, vs. our default measured beside it."""
    import numpy as np
    import torch

    changed = apply_speed_options(option_copy(default_pipeline, option_settings), options)
    varied = {**settings, **option_settings}
    out_default, out_option = workdir / "option-default.zip", workdir / f"option-{name}.zip"
    note = ""
    if options.get("compile"):
        with measured() as warm_up:
            shard_job(changed, rows.iloc[:varied["batch_size"]], varied, provenance, workdir / "compile-warm-up.zip")
        note = f"; compiling (first batch) took {warm_up.seconds:.0f} s wall, {warm_up.cpu_seconds:.0f} s CPU"

    def with_precision(precision):
        # A process-wide switch: set only while the option runs.
        torch.set_float32_matmul_precision(precision)
        try:
            shard_job(changed, rows, varied, provenance, out_option)
        finally:
            torch.set_float32_matmul_precision("highest")

    results = alternate({"default": timed(shard_job, default_pipeline, rows, settings, provenance, out_default),
                         "option": timed(with_precision, options.get("matmul_precision", "highest"))}, repeats)
    difference = int(np.abs(shard_pixels(out_option).astype(int) - reference).max())
    return rate_row(GROUP, f"{label}: option {name}", len(rows), results["default"], results["option"],
                    unit="images/s", baseline_label="ours, default options",
                    note=f"largest pixel difference vs the fp32 default: {difference}/255" + note)


def option_copy(pipeline, option_settings):
    """A separate copy of the pipeline for an option (in the option's dtype), so options never
    leak into the default it is compared with."""
    import copy

    import torch

    copied = copy.deepcopy(pipeline)
    if "dtype" in option_settings:
        copied.to(dtype=getattr(torch, option_settings["dtype"]))
    return copied


def run_group(workdir, quick: bool, long: bool):
    import torch

    from contamination import config
    from contamination.generation.generate import generation_provenance, load_pipeline

    paper = config.load()["generation"]
    results = []
    images = 6 if quick else 24
    repeats = 1 if quick else 3
    tiny_settings = {**paper, "height": 64, "width": 64, "steps": 10 if quick else paper["steps"]}
    pipeline_dir = tiny_pipeline_dir(workdir)
    pipeline = load_pipeline(pipeline_dir, tiny_settings).to("cpu")
    provenance = generation_provenance(pipeline_dir, tiny_settings, pipeline.device)
    label = f"tiny SD {tiny_settings['height']} px, {tiny_settings['steps']} steps, CPU"
    options = {
        "bfloat16": ({}, {"dtype": "bfloat16"}),
        "channels_last": ({"channels_last": True}, {}),
        "fuse_qkv": ({"fuse_qkv": True}, {}),
        "attention math (no SDPA)": ({"attention": "math"}, {}),
        "batch 24": ({}, {"batch_size": 24}),
    }
    if long:
        options["torch.compile"] = ({"compile": True}, {})
    results += compare_paths(pipeline, provenance, tiny_settings, prompt_rows(images), workdir, label, repeats, options)
    results += utilisation_rows(pipeline.unet, label="tiny UNet fp32 CPU", batch=2 * paper["batch_size"],
                                latent_size=tiny_settings["height"] // 8, dtype=torch.float32, device="cpu",
                                seconds=2 if quick else 4, matmul_size=1024)
    if torch.cuda.is_available():
        results += gpu_rows(paper, workdir, quick, long)
    else:
        results.append(row(GROUP, "SD-sized UNet on GPU, fraction of bf16 peak", unit="TFLOP/s", basis="-",
                           baseline_label="-", baseline=None, ours=None, higher_is_better=True,
                           note="no GPU: torch.cuda.is_available() is False on this machine"))
    results.append(sd_flops_row(paper))
    return results


def gpu_rows(paper, workdir, quick: bool, long: bool):
    """SD-sized pipeline with random weights on the GPU: our path vs. the official loop (fp32),
    the options, and the UNet's achieved fraction of the bf16 peak."""
    import torch

    from contamination.generation.generate import SAMPLER_COLUMNS

    settings = {**paper, "steps": 10 if quick else 25}
    label = f"SD-sized {settings['height']} px, {settings['steps']} steps, {torch.cuda.get_device_name()}"
    pipeline = sd_sized_pipeline(torch.float32, "cuda")
    options = {
        "bfloat16": ({}, {"dtype": "bfloat16"}),
        "float16": ({}, {"dtype": "float16"}),
        "tf32 matmuls": ({"matmul_precision": "high"}, {}),
        "bfloat16 + channels_last": ({"channels_last": True}, {"dtype": "bfloat16"}),
        "bfloat16, batch 32": ({}, {"dtype": "bfloat16", "batch_size": 32}),
    }
    if long:
        options["bfloat16 + torch.compile"] = ({"compile": True}, {"dtype": "bfloat16"})
    provenance = {column: settings[column] for column in SAMPLER_COLUMNS}
    provenance.update(image_format=settings["image_format"], model_fingerprint="random SD-sized weights",
                      device=torch.cuda.get_device_name(), versions="{}")
    rows = compare_paths(pipeline, provenance, settings, prompt_rows(24), workdir, label, 1 if quick else 2, options)
    unet = sd_sized_pipeline(torch.bfloat16, "cuda").unet
    rows += utilisation_rows(unet, label="SD-sized UNet bf16 GPU", batch=2 * 16, latent_size=64,
                             dtype=torch.bfloat16, device="cuda", seconds=10, matmul_size=8192)
    return rows


def sd_flops_row(paper):
    """Planning numbers: FLOPs of the paper's generation with SD v1 shapes (counted on the meta
    device, not run), and A100 GPU-hours at 40% of its peak per precision."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet, vae = sd_unet(), sd_vae()
    latent = paper["height"] // 8
    per_forward = unet_flops_per_image(unet, latent)
    with FlopCounterMode(display=False) as counter:
        vae.decode(torch.empty(1, 4, latent, latent, device="meta"))
    guidance = 2 if paper["guidance_scale"] > 1 else 1
    per_image = per_forward * paper["steps"] * guidance + counter.get_total_flops()
    images = 1400 * 1000 * 2 + 113287 * 5
    a100 = {"bf16": 312e12, "tf32": 156e12, "fp32 (no TF32)": 19.5e12}
    hours = {precision: images * per_image / (peak * 0.4) / 3600 for precision, peak in a100.items()}
    return row(GROUP, "SD v1 FLOPs, the paper's 3.37M images", unit="PFLOP", basis="-", baseline_label="-",
               baseline=None, ours=images * per_image / 1e15, higher_is_better=True,
               note=(f"{per_image / 1e12:.1f} TFLOP per image: UNet {per_forward / 1e12:.2f} TFLOP x {paper['steps']} "
                     f"steps x {guidance} (guidance) + VAE decoding {counter.get_total_flops() / 1e12:.2f}; "
                     "A100 GPU-hours at 40% of peak: "
                     + ", ".join(f"{precision} {value:,.0f}" for precision, value in hours.items())),
               a100_gpu_hours_at_40_percent=hours)


if __name__ == "__main__":
    group_main(run_group, __doc__.splitlines()[0])
