"""Image generation (paper sections 4.3, 5.4, A.4): improved DDPM trained on 64x64 versions of
the mixtures, then sampled for FID and precision/recall (Tables 3 and 10).

The recipe is openai/improved-diffusion's unconditional ImageNet-64 with L_hybrid (config
``iddpm``): a UNet of ``unet.block_out_channels`` levels (128 x (1, 2, 3, 4) at 64 px),
``unet.layers_per_block`` residual blocks per level with scale-shift timestep conditioning,
self-attention at the resolutions in ``unet.attention_resolutions`` (16 and 8) and in the
middle, 6 output channels (eps and the variance interpolation v); 4000 diffusion steps with the
cosine schedule; timesteps fed to the network rescaled to [0, 1000) (``rescale_timesteps``);
AdamW at a constant learning rate without weight decay; EMA of the weights; a uniformly drawn
timestep per image. diffusion.py holds the schedule and the loss. The network is diffusers'
UNet2DModel; it differs from improved-diffusion's in small ways: attention heads are set by
channels per head (``unet.attention_head_dim``; 128 gives improved-diffusion's 4 heads at 512
channels, 3 instead of 4 at 384), and output layers are not zero-initialised.

Training reads the mixture's uint8 image array (features.py ``image-array``: box + bicubic
downsampling, centre crop) and runs under torchrun with one process per GPU
(``global_batch_size`` is split over the processes, with gradient accumulation, as
improved-diffusion's ``microbatch``, when ``max_batch_per_process`` is below a process's share:
training.batch_split; ``iterations`` counts optimizer steps); training.py provides seeding,
checkpoint/resume (every ``checkpoint_every`` iterations, every ``checkpoint_every_minutes`` of
wall time, and on SIGTERM/SIGUSR1, exit 75), divergence handling and the EMA. The output is the EMA UNet (``save_pretrained``) and training.json with the run's
status. A diverged run saves no weights and its samples are empty; the metrics then say why. So
does a run whose ``--data-status`` says its images could not be made (recursion.py).

Sampling: 250 respaced steps (``sample_steps``) from the EMA weights, ``sample_count`` images in
shards of ``sample_shard_size`` (one job each); every image has its own noise seed derived from
(seed, image number), so an image does not depend on the shard size or batch size.
"""

import json

from contamination import records
from contamination.experiments import diffusion, training
from contamination.config import add_settings_arguments
from contamination.errors import ConfigError, DataError
from contamination.io import atomic_directory, read_json, write_json
from contamination.metrics.features import ArrayImages, write_rows

# The config keys that determine the trained weights (a checkpoint is resumed only if they match).
TRAINING_KEYS = ("image_size", "unet", "diffusion_steps", "rescale_timesteps", "vlb_weight", "iterations",
                 "global_batch_size", "max_batch_per_process", "lr", "weight_decay", "ema_decay", "seed")
# What each command's --spec holds (config iddpm + seed): sampling settings stay out of the
# training job's parameters, so changing them does not retrain.
TRAIN_SPEC_KEYS = TRAINING_KEYS + ("checkpoint_every", "checkpoint_every_minutes", "log_every", "num_workers", "device",
                                   "keep_checkpoint")
SAMPLE_SPEC_KEYS = ("image_size", "diffusion_steps", "rescale_timesteps", "sample_count", "sample_steps",
                    "sample_batch_size", "sample_shard_size", "device", "seed")
OUT_CHANNELS = 6  # eps (3) and v (3)


def table_metrics(config: dict) -> list:
    """What every run's metrics.json holds (experiments.EXPERIMENTS): FID, precision and recall
    against each reference set of config ``iddpm.references``."""
    from contamination.metrics.fidelity import reference_metric_names

    return reference_metric_names("samples", config["iddpm"]["references"], config["fidelity"]["k"])


def add_commands(subparsers) -> None:
    parser = training.add_resumable_command(
        subparsers, "iddpm-train",
        "train improved DDPM on an image array; save the EMA UNet and training.json", "config iddpm + seed",
        "iddpm", TRAIN_SPEC_KEYS,
    )
    parser.add_argument("--images", required=True, help="uint8 image array (N, S, S, 3) of the mixture")
    parser.add_argument("--manifest", required=True, help="the mixture manifest the array was made from (run identity)")
    parser.add_argument("--out", required=True, help="model directory (the EMA UNet)")
    parser.add_argument("--status", required=True, help="training.json")
    parser.add_argument("--data-status", help="JSON whose status says whether the image array could be made "
                                              "(recursion-mixture's summary): any but ok trains nothing and "
                                              "writes training.json with that status and reason")
    parser.set_defaults(run=run_train)

    parser = subparsers.add_parser("iddpm-sample", help="one shard of IDDPM samples as a uint8 array (.npy)")
    add_settings_arguments(parser, "--spec", "iddpm", SAMPLE_SPEC_KEYS, help="config iddpm + seed")
    parser.add_argument("--model", required=True, help="model directory written by iddpm-train")
    parser.add_argument("--status", required=True, help="training.json written by iddpm-train")
    parser.add_argument("--shard", required=True, type=int)
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_sample)


# ---- model and data -------------------------------------------------------------------------


def build_unet(unet: dict, image_size: int):
    """diffusers UNet2DModel shaped like improved-diffusion's ImageNet-64 UNet (see module doc)."""
    from diffusers import UNet2DModel

    levels = len(unet["block_out_channels"])
    resolutions = [image_size // 2**level for level in range(levels)]
    attention = set(unet["attention_resolutions"])
    return UNet2DModel(
        sample_size=image_size,
        in_channels=3,
        out_channels=OUT_CHANNELS,
        block_out_channels=tuple(unet["block_out_channels"]),
        layers_per_block=unet["layers_per_block"],
        down_block_types=tuple("AttnDownBlock2D" if r in attention else "DownBlock2D" for r in resolutions),
        up_block_types=tuple("AttnUpBlock2D" if r in attention else "UpBlock2D" for r in reversed(resolutions)),
        attention_head_dim=unet["attention_head_dim"],
        norm_num_groups=unet["norm_num_groups"],
        dropout=unet["dropout"],
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
        add_attention=True,
    )


def model_timesteps(t, spec: dict):
    """The timestep values the network sees: rescaled to [0, 1000) as improved-diffusion does."""
    if spec["rescale_timesteps"]:
        return t.float() * (1000.0 / spec["diffusion_steps"])
    return t


def run_identity(spec: dict, manifest) -> dict:
    return {key: spec[key] for key in TRAINING_KEYS} | {"manifest_sha256": records.sha256_of_file(manifest)}


# ---- training -------------------------------------------------------------------------------


def train(spec: dict, images_path, checkpointer, env, stop=None):
    """Train to ``spec["iterations"]`` (resuming from the checkpoint if there is one) and return
    (the EMA UNet, the StepWatch record). Raises training.Interrupted after checkpointing when a
    stop is requested and training.Diverged on a non-finite loss or weights."""
    import torch

    training.seed_everything(spec["seed"], env)
    dataset = ArrayImages([images_path])
    split = training.batch_split(spec["global_batch_size"], env.world_size, spec["max_batch_per_process"], "iddpm")
    batch_size, accumulation = split.per_process_batch, split.accumulation_steps
    sampler = training.ResumableSampler(training.distributed_sampler(dataset, env, spec["seed"]), batch_size)
    batches_per_epoch = len(sampler.sampler) // batch_size
    if batches_per_epoch == 0:
        raise DataError(f"{images_path}: {len(dataset)} images make no batch of {batch_size} per process")

    unet = build_unet(spec["unet"], spec["image_size"]).to(env.device)
    model = unet
    if env.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            unet, device_ids=[env.local_rank] if env.device.type == "cuda" else None
        )
    gaussian = diffusion.GaussianDiffusion.from_scheduler(diffusion.scheduler(spec["diffusion_steps"]))
    optimizer = torch.optim.AdamW(unet.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    ema = training.ExponentialMovingAverage(unet, spec["ema_decay"], device=env.device)
    watch = training.StepWatch(unet, batch=split)  # fp32: a non-finite loss or weight is divergence
    state = {"model": unet, "optimizer": optimizer, "ema": ema, "watch": watch}
    position = checkpointer.load(**state)
    stop = training.StopRequest() if stop is None else stop

    def position_after(iterations_done: int):
        batches_done = iterations_done * accumulation  # an optimizer step may span two epochs
        return training.Position(batches_done // batches_per_epoch, batches_done % batches_per_epoch)

    done = (position.epoch * batches_per_epoch + position.step) // accumulation
    micro_step = 0  # forward passes of the current optimizer step
    epoch = position.epoch
    training.log(env, f"training IDDPM on {len(dataset)} images from iteration {done} to {spec['iterations']}, "
                      f"{env.world_size} process(es) x {batch_size} images x {accumulation} accumulation steps "
                      f"on {env.device.type}")
    unet.train()
    end = training.StepEnd.CONTINUE
    while done < spec["iterations"]:
        sampler.set_epoch(epoch, skip_batches=position.step if epoch == position.epoch else 0)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=training.loader_workers(spec["num_workers"]), drop_last=True,
            pin_memory=env.device.type == "cuda", generator=training.loader_generator(spec["seed"], env, epoch),
        )
        for images in loader:
            # uint8 (B, S, S, 3) -> float (B, 3, S, S) in [-1, 1], as improved-diffusion scales pixels.
            x_start = images.to(env.device, non_blocking=True).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            t = torch.randint(0, gaussian.num_timesteps, (len(x_start),), device=env.device)
            noise = torch.randn_like(x_start)
            x_t = gaussian.q_sample(x_start, t, noise)
            micro_step += 1
            updating = micro_step == accumulation
            with training.gradient_sync(model, env, updating):
                output = model(x_t, model_timesteps(t, spec)).sample
                losses, mse, vlb = gaussian.hybrid_loss(output, x_start, x_t, t, noise, spec["vlb_weight"])
                loss = losses.mean()
                end = max(end, training.check_step(loss, stop, env, watch, checkpointer))
                if micro_step == 1:
                    optimizer.zero_grad(set_to_none=True)
                (loss / accumulation).backward()
            if not updating:
                continue
            micro_step = 0
            watch.step(optimizer)
            ema.update(unet)
            done += 1
            if done % spec["checkpoint_every"] == 0 or done == spec["iterations"]:
                end = max(end, training.StepEnd.CHECKPOINT)
            checkpointer.after_step(end, position_after(done), **state)  # only between optimizer steps
            end = training.StepEnd.CONTINUE
            if done % spec["log_every"] == 0:
                training.log(env, f"iteration {done}: loss {float(loss.detach()):.4f} mse {float(mse.mean().detach()):.4f} "
                                  f"vlb {float(vlb.mean().detach()):.4f} bits/dim")
            if done == spec["iterations"]:
                break
        epoch += 1
    watch.check_weights(env)
    return ema.module.module, watch.record()


def run_train(args) -> None:
    from contamination.io import read_json

    spec = args.spec
    with training.distributed_run(spec["device"], args.checkpoint_dir) as env:
        identity = run_identity(spec, args.manifest)
        checkpointer = training.Checkpointer(args.checkpoint_dir, env, records.sha256_of_json(identity),
                                             every_minutes=spec["checkpoint_every_minutes"])
        status, reason, ema_unet, steps = "ok", "", None, None
        data = read_json(args.data_status) if args.data_status else {"status": "ok"}
        if data["status"] != "ok":
            status, reason = data["status"], f"no training images: {data['reason']}"
            training.log(env, reason)
        else:
            try:
                ema_unet, steps = train(spec, args.images, checkpointer, env)
            except training.Diverged as error:
                status, reason, steps = "diverged", f"training diverged: {error}", error.record
                training.log(env, reason)
        if env.is_main:
            write_model(ema_unet, args.out, args.status, status, reason, spec,
                        records.provenance(identity, spec["seed"], env.world_size, env.device.type,
                                           packages=("torch", "diffusers")), steps)
        if status == "ok" and not spec["keep_checkpoint"]:
            checkpointer.remove()  # collective, after the outputs exist


def write_model(ema_unet, out, status_path, status: str, reason: str, spec: dict, provenance: dict,
                steps=None) -> None:
    """The EMA UNet (save_pretrained; an empty directory when training did not finish) and
    training.json (with ``steps``, the StepWatch record)."""
    with atomic_directory(out) as directory:
        if ema_unet is not None:
            ema_unet.save_pretrained(directory, safe_serialization=True)
    write_json({"status": status, "reason": reason, "iterations": spec["iterations"], "training": steps,
                "provenance": provenance}, status_path)
    print(json.dumps({"status": status, "reason": reason, "model": str(out)}))


# ---- sampling -------------------------------------------------------------------------------


def sample_seed(seed: int, number: int) -> int:
    """The noise seed of sample ``number`` (independent of shards and batches)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def shard_numbers(spec: dict, shard: int) -> range:
    first = shard * spec["sample_shard_size"]
    if not 0 <= first < spec["sample_count"]:
        raise ConfigError(f"shard {shard} is outside iddpm.sample_count {spec['sample_count']} "
                          f"in shards of iddpm.sample_shard_size {spec['sample_shard_size']}")
    return range(first, min(spec["sample_count"], first + spec["sample_shard_size"]))


def sample(unet, spec: dict, numbers, device):
    """uint8 (B, S, S, 3) batches of the samples with the given numbers, in order."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    ddpm = diffusion.scheduler(spec["diffusion_steps"])
    ddpm.set_timesteps(spec["sample_steps"])  # CPU timesteps, as diffusers' pipelines keep them
    size = spec["image_size"]
    unet.to(device).eval()
    numbers = list(numbers)
    for start in range(0, len(numbers), spec["sample_batch_size"]):
        batch = numbers[start:start + spec["sample_batch_size"]]
        generators = [torch.Generator(device).manual_seed(sample_seed(spec["seed"], n)) for n in batch]
        x = randn_tensor((len(batch), 3, size, size), generator=generators, device=device)
        with torch.inference_mode():
            for t in ddpm.timesteps:
                output = unet(x, model_timesteps(t, spec)).sample
                x = ddpm.step(output, t, x, generator=generators).prev_sample
        # improved-diffusion's conversion: truncate, not round.
        yield ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def run_sample(args) -> None:
    from diffusers import UNet2DModel

    spec = args.spec
    numbers = shard_numbers(spec, args.shard)
    size = spec["image_size"]
    status = read_json(args.status)
    if status["status"] != "ok":
        write_rows(args.out, (0, size, size, 3), "uint8", [])
        print(f"no samples: {status['reason']}")
        return
    device = training.setup_distributed(spec["device"]).device
    unet = UNet2DModel.from_pretrained(args.model)
    count = write_rows(args.out, (len(numbers), size, size, 3), "uint8", sample(unet, spec, numbers, device))
    print(f"{count} samples (numbers {numbers.start}-{numbers.stop - 1}) -> {args.out}")
