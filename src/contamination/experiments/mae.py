"""Self-supervised learning as a remedy (paper section 6.2, A.6, Table 11): MAE pre-training of
a ViT-B/16 on a mixture, then linear probing of its frozen encoder on ImageNet.

The recipe is facebookresearch/mae (main_pretrain.py, main_linprobe.py), every number from
config `mae`:
- pre-training: transformers ``ViTMAEForPreTraining`` built from config `mae.model` with MAE's
  own initialisation (``initialize_like_mae``), mask ratio 0.75, norm-pix loss;
  RandomResizedCrop (scale 0.2-1, bicubic) + flip; AdamW with betas (0.9, 0.95) and weight decay
  on weights only; lr = base_lr x global_batch_size / 256; half-cycle cosine after a linear warmup,
  set every iteration; gradient accumulation; AMP on GPUs.
- linear probing: the encoder frozen; features = the CLS token of its last layer (after the
  final LayerNorm), computed with mask ratio 0 and the identity token order, so a feature does
  not depend on the random number generator; head = BatchNorm1d(affine=False, eps 1e-6) +
  Linear; LARS (lars.py) with the same per-iteration schedule; MAE's own random resized crop
  (``OneDrawResizedCrop``, main_linprobe.py's util/crop.py) + flip for training, resize + centre
  crop for ImageNet val. Reported: top-1 (percent) on ImageNet val.

``global_batch_size`` is the effective batch (all processes x accumulation steps), as in the
paper (4,096 for pre-training, 16,384 for probing), so the recipe does not depend on the GPU
count: training.batch_split derives each process's batch and the accumulation steps from the
world size and ``max_batch_per_process`` (the paper's 8 GPUs x 256 x 2 for pre-training).

Both stages run under torchrun (DDP) and use training.py for seeding, checkpoint/resume, stop
signals (exit 75, run again to resume) and divergence (status "diverged", NaN in the table; a
step the AMP loss scaler skips is not divergence, ``max_skipped_steps`` of them in a row are).
"""

import math
from pathlib import Path

from contamination import records
from contamination.data import ManifestDataset, index_rows
from contamination.experiments import training
from contamination.errors import ConfigError
from contamination.experiments.classify_recipe import IMAGENET_MEAN, IMAGENET_STD
from contamination.io import read_json, save_pretrained, write_json

MODEL_NAME = "mae_vit_b"
PROBE_METRICS = ["linear_probe_top1_imagenet_val", "linear_probe_top5_imagenet_val"]
PRETRAIN_LOSS_METRIC = "pretrain_final_loss"
METRIC_NAMES = PROBE_METRICS + [PRETRAIN_LOSS_METRIC]  # what metrics.json of a Table 11 run holds
TOP_K = (1, 5)
LR_REFERENCE_BATCH = 256  # MAE: lr = base_lr * effective batch / 256
PACKAGES = ("torch", "torchvision", "transformers", "numpy")
# The keys of config `mae` each command uses.
PRETRAIN_SPEC_KEYS = ("model", "pretrain", "device", "num_workers", "print_freq", "keep_checkpoint",
                      "checkpoint_every_minutes")
PROBE_SPEC_KEYS = ("linear_probe", "device", "num_workers", "print_freq", "keep_checkpoint", "checkpoint_every_minutes")
CROP_ASPECT_RATIOS = (3 / 4, 4 / 3)  # the default of torchvision's and MAE's random resized crops


def table_metrics(config: dict) -> list:
    """What every run's metrics.json holds (experiments.EXPERIMENTS)."""
    return list(METRIC_NAMES)


def add_commands(subparsers) -> None:
    parser = training.add_resumable_command(
        subparsers, "mae-pretrain",
        "MAE pre-training of a ViT on a mixture manifest (saves the model + a summary JSON)",
        "model, pretrain (config mae.model, mae.pretrain), seed, device, num_workers, print_freq, keep_checkpoint",
        "mae", PRETRAIN_SPEC_KEYS,
    )
    parser.add_argument("--manifest", required=True, help="mixture manifest (Parquet)")
    parser.add_argument("--out", required=True, help="directory for the pre-trained model (save_pretrained)")
    parser.add_argument("--summary", required=True, help="JSON: status, loss per epoch, provenance")
    parser.set_defaults(run=run_pretrain)

    parser = training.add_resumable_command(
        subparsers, "mae-linear-probe",
        "linear probing of a pre-trained MAE encoder on ImageNet (metrics.json)",
        "linear_probe (config mae.linear_probe), num_classes, seed, device, num_workers, print_freq, keep_checkpoint",
        "mae", PROBE_SPEC_KEYS,
    )
    parser.add_argument("--pretrained", required=True, help="directory written by mae-pretrain")
    parser.add_argument("--pretrain-summary", required=True, help="summary JSON written by mae-pretrain")
    parser.add_argument("--imagenet", required=True, help="ImageNet index: trained on 'train', scored on 'val'")
    parser.add_argument("--out", required=True, help="metrics.json")
    parser.set_defaults(run=run_linear_probe)


# ---- commands -------------------------------------------------------------------------------


def run_pretrain(args) -> None:
    spec = args.spec
    with training.distributed_run(spec["device"], args.checkpoint_dir) as env:
        identity = pretrain_identity(spec, args.manifest)
        checkpointer = training.Checkpointer(args.checkpoint_dir, env, records.sha256_of_json(identity),
                                             every_minutes=spec["checkpoint_every_minutes"])
        model, history, status, reason, steps = pretrain(spec, args.manifest, checkpointer, env)
        if env.is_main:
            save_pretrained(model, args.out)
            provenance = records.provenance(identity, spec["seed"], env.world_size, env.device.type, PACKAGES)
            write_json({"status": status, "reason": reason, "loss_per_epoch": history.losses, "training": steps,
                        "provenance": provenance}, args.summary)
            print(f"pre-training {status}: loss per epoch {history.losses}", flush=True)
        if status == "ok" and not spec["keep_checkpoint"]:
            checkpointer.remove()


def run_linear_probe(args) -> None:
    spec = args.spec
    with training.distributed_run(spec["device"], args.checkpoint_dir) as env:
        identity = probe_identity(spec, args.pretrained, args.imagenet)
        pretraining = read_json(args.pretrain_summary)
        checkpointer = training.Checkpointer(args.checkpoint_dir, env, records.sha256_of_json(identity),
                                             every_minutes=spec["checkpoint_every_minutes"])
        steps = None
        if pretraining["status"] == "ok":
            status, metrics, reasons, steps = linear_probe(spec, args.pretrained, args.imagenet, checkpointer, env)
        else:
            status = pretraining["status"]
            metrics, reasons = records.unavailable(PROBE_METRICS, f"MAE pre-training {status}: {pretraining['reason']}")
        losses = pretraining["loss_per_epoch"]
        metrics[PRETRAIN_LOSS_METRIC] = losses[-1] if losses else None
        if not losses:
            reasons[PRETRAIN_LOSS_METRIC] = f"MAE pre-training {pretraining['status']} before its first epoch ended"
        if env.is_main:
            provenance = records.provenance(identity, spec["seed"], env.world_size, env.device.type, PACKAGES)
            records.write_metrics(args.out, metrics, reasons, status, provenance, steps)
            print(f"{status}: " + ", ".join(f"{name} {value}" for name, value in metrics.items()), flush=True)
        if status == "ok" and not spec["keep_checkpoint"]:
            checkpointer.remove()




def pretrain_identity(spec: dict, manifest) -> dict:
    """What determines the pre-trained weights: a checkpoint is resumed only if this matches."""
    return {key: spec[key] for key in ("model", "pretrain", "seed")} | {"manifest_sha256": records.sha256_of_file(manifest)}


def probe_identity(spec: dict, pretrained, imagenet_index) -> dict:
    files = sorted(path for path in Path(pretrained).iterdir() if path.is_file())
    return {key: spec[key] for key in ("linear_probe", "num_classes", "seed")} | {
        "pretrained_sha256": {path.name: records.sha256_of_file(path) for path in files},
        "imagenet_index_sha256": records.sha256_of_file(imagenet_index),
    }


# ---- the model ------------------------------------------------------------------------------


def build_mae(model_config: dict, recipe: dict):
    """``ViTMAEForPreTraining`` with the architecture of config `mae.model`, initialised as MAE."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(**model_config, mask_ratio=recipe["mask_ratio"], norm_pix_loss=recipe["norm_pix_loss"])
    model = ViTMAEForPreTraining(config)
    initialize_like_mae(model)
    return model


def initialize_like_mae(model) -> None:
    """MAE's ``initialize_weights``: fixed 2-D sin-cos position embeddings (encoder and decoder),
    the patch projection Xavier-uniform as a matrix, CLS and mask tokens N(0, 0.02), every Linear
    Xavier-uniform with zero bias, LayerNorms (1, 0).

    Needed, not cosmetic: transformers 5.23 builds ViTMAE from a config with both position
    embeddings, the CLS token and the mask token all zero (its generic initialisation marks the
    patch projection as done and the MAE-specific one then returns early), so the encoder would
    not know where any patch is.
    """
    import torch
    from torch import nn

    embeddings, decoder = model.vit.embeddings, model.decoder
    grid = int(round(embeddings.patch_embeddings.num_patches ** 0.5))
    with torch.no_grad():
        embeddings.position_embeddings.copy_(sincos_position_embedding(embeddings.position_embeddings.shape[-1], grid))
        decoder.decoder_pos_embed.copy_(sincos_position_embedding(decoder.decoder_pos_embed.shape[-1], grid))
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        projection = embeddings.patch_embeddings.projection.weight
        nn.init.xavier_uniform_(projection.view(projection.shape[0], -1))
        nn.init.normal_(embeddings.cls_token, std=0.02)
        nn.init.normal_(decoder.mask_token, std=0.02)


def sincos_position_embedding(dim: int, grid_size: int):
    """MAE's ``get_2d_sincos_pos_embed(dim, grid_size, cls_token=True)``: shape
    (1, 1 + grid_size**2, dim), row 0 (the CLS token) zero. For the patch in row i, column j
    (row-major order) the first half of the vector encodes j and the second half i, each as
    [sin(p * omega) | cos(p * omega)] with omega_k = 10000 ** (-k / (dim / 4))."""
    import torch

    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, not {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, columns = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")

    def encode(positions):
        angles = positions.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.cat([encode(columns), encode(rows)], dim=1)])
    return table.float().unsqueeze(0)


def load_encoder(pretrained):
    """The frozen encoder of a pre-trained MAE (mask ratio 0), loaded through the whole model so
    every checkpoint key is expected and a missing one is reported."""
    from transformers import ViTMAEForPreTraining

    encoder = ViTMAEForPreTraining.from_pretrained(pretrained, mask_ratio=0.0).vit
    encoder.requires_grad_(False)
    return encoder.eval()


def cls_features(encoder, images):
    """The CLS token of the encoder's last layer. ``noise = arange`` keeps the patches in their
    order: with noise=None ViTMAE shuffles them with the global RNG even at mask ratio 0."""
    import torch

    batch, patches = images.shape[0], encoder.embeddings.patch_embeddings.num_patches
    noise = torch.arange(patches, device=images.device, dtype=torch.float32).expand(batch, patches)
    return encoder(pixel_values=images, noise=noise).last_hidden_state[:, 0]


def probe_head(width: int, num_classes: int):
    """MAE's linear-probe head: BatchNorm without affine parameters, then a Linear layer with
    weights N(0, 0.01) truncated at +-2 and zero bias."""
    from torch import nn

    linear = nn.Linear(width, num_classes)
    nn.init.trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(width, affine=False, eps=1e-6), linear)


def weight_decay_groups(model, weight_decay: float) -> list:
    """timm's ``add_weight_decay`` as MAE uses it: no decay on biases and 1-D parameters."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


# ---- data -----------------------------------------------------------------------------------


def to_normalized_tensor():
    import torch
    from torchvision.transforms import v2

    return [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def one_draw_crop_box(height: int, width: int, scale, ratio=CROP_ASPECT_RATIOS):
    """(top, left, crop height, crop width) of MAE's linear-probe crop (its util/crop.py, after
    BYOL's TF code): area and log aspect ratio are drawn once, uniformly, and a side longer than
    the image is cut to the image. torchvision instead redraws (up to ten times) until the crop
    fits, which favours small areas: with scale (0.08, 1) its mean crop is 43-48% of the image,
    this one's 52-53%. Draws from torch's global RNG, as torchvision's transforms do."""
    import torch

    area = height * width * float(torch.empty(()).uniform_(scale[0], scale[1]))
    aspect = math.exp(float(torch.empty(()).uniform_(math.log(ratio[0]), math.log(ratio[1]))))
    crop_width = min(width, round(math.sqrt(area * aspect)))
    crop_height = min(height, round(math.sqrt(area / aspect)))
    top = int(torch.randint(height - crop_height + 1, ()))
    left = int(torch.randint(width - crop_width + 1, ()))
    return top, left, crop_height, crop_width


class OneDrawResizedCrop:
    """A PIL image -> its one_draw_crop_box region resized to ``size`` x ``size`` (bicubic)."""

    def __init__(self, size: int, scale):
        self.size = size
        self.scale = tuple(scale)

    def __call__(self, image):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional

        box = one_draw_crop_box(image.height, image.width, self.scale)
        return functional.resized_crop(image, *box, [self.size, self.size], interpolation=InterpolationMode.BICUBIC,
                                       antialias=True)


def train_transform(image_size: int, crop_scale, crop: str = "torchvision"):
    """Random resized crop (bicubic) + horizontal flip: torchvision's RandomResizedCrop as in
    main_pretrain.py (``crop`` "torchvision"), or MAE's own as in main_linprobe.py ("mae")."""
    from torchvision.transforms import InterpolationMode, v2

    if crop == "mae":
        resized_crop = OneDrawResizedCrop(image_size, crop_scale)
    else:
        resized_crop = v2.RandomResizedCrop(image_size, scale=tuple(crop_scale),
                                            interpolation=InterpolationMode.BICUBIC, antialias=True)
    return v2.Compose([resized_crop, v2.RandomHorizontalFlip(), *to_normalized_tensor()])


def eval_transform(image_size: int, resize_size: int):
    from torchvision.transforms import InterpolationMode, v2

    resize = v2.Resize(resize_size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return v2.Compose([resize, v2.CenterCrop(image_size), *to_normalized_tensor()])


def batch_split(recipe: dict, env, key: str) -> "training.BatchSplit":
    return training.batch_split(recipe["global_batch_size"], env.world_size, recipe["max_batch_per_process"], key)


# ---- the training loop both stages share ----------------------------------------------------


def half_cycle_cosine(epoch: float, peak_lr: float, min_lr: float, warmup_epochs: int, epochs: int) -> float:
    """MAE's ``lr_sched.adjust_learning_rate`` at a fractional epoch: linear warmup from 0, then
    half a cosine from peak_lr down to min_lr at the last epoch."""
    if epoch < warmup_epochs:
        return peak_lr * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LossHistory:
    """Mean training loss of each finished epoch, and the running sum of the current one (so an
    epoch interrupted and resumed reports the same mean); checkpointed with the run."""

    def __init__(self):
        self.losses = []
        self.running_sum, self.running_count = 0.0, 0

    def add(self, loss: float) -> None:
        self.last = loss
        self.running_sum += loss
        self.running_count += 1

    def end_epoch(self, env) -> float:
        self.losses.append(mean_over_processes(self.running_sum, self.running_count, env))
        self.running_sum, self.running_count = 0.0, 0
        return self.losses[-1]

    def state_dict(self):
        return {"losses": list(self.losses), "running_sum": self.running_sum, "running_count": self.running_count}

    def load_state_dict(self, state):
        self.losses = list(state["losses"])
        self.running_sum, self.running_count = state["running_sum"], state["running_count"]


def fit(loss_of, trained, optimizer, dataset, recipe: dict, key: str, spec: dict, checkpointer, state: dict,
        history: LossHistory, env, stop=None):
    """Train for recipe["epochs"] as MAE's engines do, resuming from the checkpoint if any;
    returns the run's training.StepWatch (raises training.Diverged, which carries its record).

    ``loss_of(images, targets)`` returns the loss of a batch through ``trained`` (the DDP-wrapped
    module when distributed). Every accumulation_steps batches (batch_split): set the learning rate for the current
    fractional epoch, step (through the AMP scaler on GPUs). ``state`` (objects with a
    state_dict) and ``history`` are checkpointed at the end of every epoch, and after the
    current optimizer step when a stop signal arrives or the checkpointer's wall time is up.
    """
    import torch

    split = batch_split(recipe, env, key)
    batch, accum = split.per_process_batch, split.accumulation_steps
    sampler = training.ResumableSampler(training.distributed_sampler(dataset, env, spec["seed"]), batch)
    steps_per_epoch = len(sampler.sampler) // batch
    if steps_per_epoch < accum:
        raise training_data_error(key, recipe, len(dataset))
    peak_lr = recipe["base_lr"] * recipe["global_batch_size"] / LR_REFERENCE_BATCH
    scaler = state.get("scaler")
    watch = training.StepWatch(trained, scaler, recipe["max_skipped_steps"], batch=split)
    state = dict(state, history=history, watch=watch)
    position = checkpointer.load(**state)
    stop = training.StopRequest() if stop is None else stop

    training.log(env, f"{key}: {len(dataset)} images, {recipe['epochs']} epochs of {steps_per_epoch} steps of "
                      f"{batch} x {env.world_size} process(es), accumulation {accum}, peak lr {peak_lr:.3g}")
    for epoch in range(position.epoch, recipe["epochs"]):
        sampler.set_epoch(epoch, skip_batches=position.step if epoch == position.epoch else 0)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch, sampler=sampler, num_workers=training.loader_workers(spec["num_workers"]),
            pin_memory=env.device.type == "cuda", drop_last=True,
            generator=training.loader_generator(spec["seed"], env, epoch),
        )
        trained.train()
        end = training.StepEnd.CONTINUE
        optimizer.zero_grad(set_to_none=True)
        for step, (images, targets) in enumerate(loader, start=sampler.skipped_batches):
            if step % accum == 0:
                lr = half_cycle_cosine(epoch + step / steps_per_epoch, peak_lr, recipe["min_lr"],
                                       recipe["warmup_epochs"], recipe["epochs"])
                for group in optimizer.param_groups:
                    group["lr"] = lr
            updating = (step + 1) % accum == 0
            with training.gradient_sync(trained, env, updating):
                with torch.autocast(device_type=env.device.type, enabled=scaler is not None):
                    loss = loss_of(images.to(env.device, non_blocking=True), targets.to(env.device, non_blocking=True))
                end = max(end, training.check_step(loss, stop, env, watch, checkpointer))
                scaled = loss / accum
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if updating:
                watch.step(optimizer)
                optimizer.zero_grad(set_to_none=True)
            history.add(float(loss.detach()))
            if step % spec["print_freq"] == 0:
                training.log(env, f"epoch {epoch} step {step}/{steps_per_epoch} loss {history.last:.4f} "
                                  f"lr {optimizer.param_groups[0]['lr']:.3g}")
            if updating:  # a checkpoint holds no half-accumulated gradients
                checkpointer.after_step(end, training.Position(epoch, step + 1), **state)
                end = training.StepEnd.CONTINUE
        training.log(env, f"epoch {epoch} done: mean loss {history.end_epoch(env):.4f}")
        # A request during the last batches, which did not complete an update, is served here.
        checkpointer.after_step(max(end, training.StepEnd.CHECKPOINT), training.Position(epoch + 1, 0), **state)
    watch.check_weights(env)
    return watch


def mean_over_processes(total: float, count: int, env) -> float:
    """The mean of per-batch losses over all processes."""
    import torch
    import torch.distributed as dist

    if not env.distributed:
        return total / max(count, 1)
    sums = torch.tensor([total, count], dtype=torch.float64, device=env.device)
    dist.all_reduce(sums)
    return float(sums[0] / sums[1].clamp(min=1))


def training_data_error(key: str, recipe: dict, size: int):
    return ConfigError(f"{key}.global_batch_size: {recipe['global_batch_size']} images per optimizer step are more "
                       f"than the {size} training images allow")


def wrap_distributed(module, env):
    import torch

    if not env.distributed:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[env.local_rank] if env.device.type == "cuda" else None
    )


def grad_scaler(recipe: dict, env):
    import torch

    return torch.amp.GradScaler("cuda") if recipe["amp"] and env.device.type == "cuda" else None


# ---- pre-training ---------------------------------------------------------------------------


def pretrain(spec: dict, manifest, checkpointer, env, stop=None):
    """(model, loss history, status, reason, StepWatch record): MAE pre-training to the end of
    the recipe."""
    import torch

    recipe = spec["pretrain"]
    training.seed_everything(spec["seed"], env)
    dataset = ManifestDataset(manifest, train_transform(spec["model"]["image_size"], recipe["crop_scale"]))
    model = build_mae(spec["model"], recipe).to(env.device)
    trained = wrap_distributed(model, env)
    optimizer = torch.optim.AdamW(weight_decay_groups(model, recipe["weight_decay"]), lr=0.0,
                                  betas=tuple(recipe["betas"]))
    state = {"model": model, "optimizer": optimizer, "scaler": grad_scaler(recipe, env)}

    def reconstruction_loss(images, targets):
        return trained(pixel_values=images).loss

    history = LossHistory()
    try:
        watch = fit(reconstruction_loss, trained, optimizer, dataset, recipe, "mae.pretrain", spec, checkpointer,
                    state, history, env, stop)
    except training.Diverged as error:
        training.log(env, f"diverged: {error}")
        return model.cpu(), history, "diverged", str(error), error.record
    return model.cpu(), history, "ok", "", watch.record()


# ---- linear probing -------------------------------------------------------------------------


def linear_probe(spec: dict, pretrained, imagenet_index, checkpointer, env, stop=None):
    """(status, metrics, reasons, StepWatch record): train the probe head on ImageNet train,
    score ImageNet val."""
    import torch

    recipe = spec["linear_probe"]
    training.seed_everything(spec["seed"], env)
    encoder = load_encoder(pretrained).to(env.device)
    head = probe_head(encoder.config.hidden_size, spec["num_classes"]).to(env.device)
    trained = wrap_distributed(head, env)
    optimizer = lars_optimizer(head, recipe)
    state = {"head": head, "optimizer": optimizer, "scaler": grad_scaler(recipe, env)}
    image_size = encoder.config.image_size
    dataset = ManifestDataset(index_rows(imagenet_index, "train"),
                              train_transform(image_size, recipe["crop_scale"], crop="mae"))
    criterion = torch.nn.CrossEntropyLoss()

    def classification_loss(images, targets):
        with torch.no_grad():
            features = cls_features(encoder, images)
        return criterion(trained(features.float()), targets)

    try:
        watch = fit(classification_loss, trained, optimizer, dataset, recipe, "mae.linear_probe", spec, checkpointer,
                    state, LossHistory(), env, stop)
    except training.Diverged as error:
        training.log(env, f"diverged: {error}")
        metrics, reasons = records.unavailable(PROBE_METRICS, f"linear probing diverged: {error}")
        return "diverged", metrics, reasons, error.record
    val = ManifestDataset(index_rows(imagenet_index, "val"), eval_transform(image_size, recipe["val_resize_size"]))
    accuracy = topk_accuracy(encoder, head, val, spec, env)
    metrics = {f"linear_probe_top{k}_imagenet_val": accuracy[k] for k in TOP_K}
    training.log(env, ", ".join(f"{name} {value:.2f}" for name, value in metrics.items()))
    return "ok", metrics, {}, watch.record()


def lars_optimizer(head, recipe: dict):
    from contamination.experiments.lars import LARS

    return LARS(head.parameters(), lr=0.0, weight_decay=recipe["weight_decay"], momentum=recipe["momentum"],
                trust_coefficient=recipe["trust_coefficient"])


def topk_accuracy(encoder, head, dataset, spec: dict, env) -> dict:
    """{k: percent of images whose class is among the head's k best} over the whole set; every
    process scores the images rank, rank + world size, ... and the counts are summed."""
    import torch
    import torch.distributed as dist

    recipe = spec["linear_probe"]
    mine = torch.utils.data.Subset(dataset, range(env.rank, len(dataset), env.world_size))
    loader = torch.utils.data.DataLoader(mine, batch_size=batch_split(recipe, env, "mae.linear_probe").per_process_batch,
                                         num_workers=training.loader_workers(spec["num_workers"]), pin_memory=env.device.type == "cuda")
    head.eval()
    correct = torch.zeros(len(TOP_K) + 1, dtype=torch.float64, device=env.device)
    with torch.inference_mode():
        for images, targets in loader:
            images, targets = images.to(env.device, non_blocking=True), targets.to(env.device, non_blocking=True)
            with torch.autocast(device_type=env.device.type, enabled=recipe["amp"] and env.device.type == "cuda"):
                logits = head(cls_features(encoder, images).float())
            ranked = logits.float().topk(min(max(TOP_K), logits.shape[1]), dim=1).indices
            hits = ranked == targets[:, None]
            for position, k in enumerate(TOP_K):
                correct[position] += hits[:, :k].any(dim=1).sum()
            correct[-1] += len(targets)
    if env.distributed:
        dist.all_reduce(correct)
    return {k: float(correct[position] / correct[-1] * 100.0) for position, k in enumerate(TOP_K)}
