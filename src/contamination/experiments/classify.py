"""Image classification (paper sections 4.1, 5.2-5.4, A.2): train a torchvision classifier
(resnet50, swin_s, convnext_tiny; weights=None) from scratch on a mixture manifest with the
torchvision reference recipe, then score it on ImageNet val, ImageNet-A and ImageNet-R.

One job per (model, mixture). On GPUs the rule starts one process per GPU with torchrun (DDP);
on a CPU it is one process. The recipe is config `classification.models.<model>`
(classify_recipe.py maps it to optimizer, schedule and transforms); checkpointing, resume,
stop signals and divergence come from training.py.

Evaluation: every rank scores its share of each evaluation set (no padding), rank 0 gathers.
ImageNet-A and ImageNet-R have 200 of the 1,000 classes: their logits are restricted to their
official classes (sources.imagenet.official_wnids) among the classes of the ImageNet index before
top-k, never to whatever their own index holds. Scores are percentages, as in the paper. When the
recipe keeps an EMA model, both it and the raw weights are scored (metrics ``<name>_ema`` and
``<name>_raw``); the unsuffixed metrics the tables read are those of ``report_weights`` (the
paper reports Swin-S with EMA weights). A non-finite loss under AMP is a skipped step;
divergence is training.StepWatch's, recorded in metrics.json ("training") with its step.
Besides metrics.json the job saves the ImageNet-val confusion matrix (rows: true class,
columns: top-1 prediction) as .npy; a diverged run saves a 0x0 matrix.
"""

import time

from contamination import records
from contamination.experiments import training
from contamination.experiments import classify_recipe as recipes
from contamination.config import with_defaults
from contamination.data import ManifestDataset, index_rows
from contamination.errors import DataError
from contamination.io import atomic_path
from contamination.sources.imagenet import official_wnids

EVAL_SETS = ("imagenet_val", "imagenet_a", "imagenet_r")
TOP_K = (1, 5)
METRIC_NAMES = [f"top{k}_{name}" for name in EVAL_SETS for k in TOP_K]
# The keys of config `classification` a training job uses besides its model's recipe.
SPEC_KEYS = ("device", "num_workers", "print_freq", "keep_checkpoint", "checkpoint_every_minutes")


def table_metrics(config: dict) -> list:
    """What every run's metrics.json holds (experiments.EXPERIMENTS)."""
    return list(METRIC_NAMES)


def add_commands(subparsers) -> None:
    parser = training.add_resumable_command(
        subparsers, "train-classifier",
        "train a classifier on a mixture manifest and score it (metrics.json + confusion .npy)",
        "model, recipe (config classification.models.<model>), num_classes, seed, device, num_workers, "
        "print_freq, keep_checkpoint, checkpoint_every_minutes",
        "classification", SPEC_KEYS, restore_spec,
    )
    parser.add_argument("--manifest", required=True, help="mixture manifest (Parquet)")
    parser.add_argument("--imagenet", required=True, help="ImageNet index; its 'val' split is scored")
    parser.add_argument("--imagenet-a", required=True, help="ImageNet-A index")
    parser.add_argument("--imagenet-r", required=True, help="ImageNet-R index")
    parser.add_argument("--out", required=True, help="metrics.json")
    parser.add_argument("--confusion", required=True, help="ImageNet-val confusion matrix (.npy)")
    parser.set_defaults(run=run_train_classifier)


def restore_spec(values: dict) -> dict:
    spec = with_defaults("classification", values, SPEC_KEYS)
    return dict(spec, recipe=with_defaults("classification.models.*", spec["recipe"]))


def run_train_classifier(args) -> None:
    import numpy as np

    spec = args.spec
    eval_indexes = {"imagenet_val": args.imagenet, "imagenet_a": args.imagenet_a, "imagenet_r": args.imagenet_r}
    with training.distributed_run(spec["device"], args.checkpoint_dir) as env:
        status, metrics, reasons, confusion, steps = train_and_evaluate(
            spec, args.manifest, eval_indexes, args.checkpoint_dir, env
        )
    if env.is_main:
        with atomic_path(args.confusion) as temporary:
            with open(temporary, "wb") as handle:
                np.save(handle, confusion)
        provenance = records.provenance(run_identity(spec, args.manifest), spec["seed"], env.world_size, env.device.type)
        provenance["reported_weights"] = spec["recipe"]["report_weights"]
        records.write_metrics(args.out, metrics, reasons, status, provenance, steps)
        print(f"{status}: " + ", ".join(f"{name} {value}" for name, value in metrics.items()), flush=True)
        if not spec["keep_checkpoint"]:
            # Only now: a job killed before its outputs were written still finds its weights.
            run_checkpointer(spec, args.manifest, args.checkpoint_dir, env).remove()


def run_identity(spec: dict, manifest) -> dict:
    """What determines the trained weights: a checkpoint is resumed only if this matches."""
    return {key: spec[key] for key in ("model", "recipe", "num_classes", "seed")} | {"manifest_sha256": records.sha256_of_file(manifest)}


def run_checkpointer(spec: dict, manifest, checkpoint_dir, env) -> training.Checkpointer:
    return training.Checkpointer(checkpoint_dir, env, records.sha256_of_json(run_identity(spec, manifest)),
                                 every_minutes=spec["checkpoint_every_minutes"])


def train_and_evaluate(spec: dict, manifest, eval_indexes: dict, checkpoint_dir, env):
    """(status, metrics, reasons, confusion matrix, StepWatch record); raises
    training.Interrupted on a stop signal."""
    import numpy as np

    recipe = spec["recipe"]
    names = METRIC_NAMES + [f"{name}_{weights}" for weights in ("ema", "raw") for name in METRIC_NAMES
                            if recipe["model_ema"]]
    try:
        models, watch = train(spec, manifest, run_checkpointer(spec, manifest, checkpoint_dir, env), env)
    except training.Diverged as error:
        training.log(env, f"diverged: {error}")
        metrics, reasons = records.unavailable(names, f"training diverged: {error}")
        return "diverged", metrics, reasons, np.zeros((0, 0), dtype=np.int64), error.record
    scored = {weights: evaluate_all(model, spec, eval_indexes, env) for weights, model in models.items()}
    metrics, confusion = scored[recipe["report_weights"]]
    if recipe["model_ema"]:
        metrics = metrics | {f"{name}_{weights}": value for weights, (values, _) in scored.items()
                             for name, value in values.items()}
    return "ok", metrics, {}, confusion, watch.record()


# ---- training -------------------------------------------------------------------------------


def train(spec: dict, manifest, checkpointer, env):
    """Train to the end of the recipe (resuming from the checkpoint if there is one); return
    ({"raw": model, "ema": EMA model if the recipe keeps one}, the run's StepWatch)."""
    import torch
    import torchvision

    recipe = spec["recipe"]
    training.seed_everything(spec["seed"], env)
    split = batch_split(spec, env.world_size)

    dataset = ManifestDataset(manifest, recipes.train_transform(recipe), target="label")
    if recipe["ra_sampler"]:
        sampler = training.RepeatedAugmentSampler(
            dataset, env, spec["seed"], repetitions=recipe["ra_reps"], round_to=recipe["ra_round_to"]
        )
    else:
        sampler = training.distributed_sampler(dataset, env, spec["seed"])
    if len(sampler) < 2:
        raise DataError(f"manifest {manifest}: {len(sampler)} item(s) per epoch, too few to train on")
    # The reference keeps the last partial batch; a batch of one item would break BatchNorm.
    drop_last = len(sampler) % split.per_process_batch == 1
    sampler = training.ResumableSampler(sampler, split.per_process_batch)
    collate = recipes.collate_function(recipe, spec["num_classes"])

    model = torchvision.models.get_model(spec["model"], weights=None, num_classes=spec["num_classes"])
    model.to(env.device)
    trained = model
    if env.distributed:
        # DDP copies rank 0's weights to every rank here, so the EMA below starts equal everywhere.
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.local_rank] if env.device.type == "cuda" else None
        )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    optimizer = recipes.build_optimizer(model, recipe)
    scheduler = recipes.build_scheduler(optimizer, recipe)
    scaler = torch.amp.GradScaler("cuda") if recipe["amp"] and env.device.type == "cuda" else None
    ema = None
    if recipe["model_ema"]:
        ema = training.ExponentialMovingAverage(
            model, recipes.ema_decay_per_update(recipe), device=env.device
        )
    watch = training.StepWatch(model, scaler, recipe["max_skipped_steps"], batch=split)
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "ema": ema, "scaler": scaler,
             "watch": watch}
    position = checkpointer.load(**state)
    stop = training.StopRequest()

    training.log(env, f"training {spec['model']} on {len(dataset)} items for {recipe['epochs']} epochs, "
                      f"{env.world_size} process(es) x {split.per_process_batch} images x {split.accumulation_steps} "
                      f"accumulation steps on {env.device.type}")
    for epoch in range(position.epoch, recipe["epochs"]):
        sampler.set_epoch(epoch, skip_batches=position.step if epoch == position.epoch else 0)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=split.per_process_batch,
            sampler=sampler,
            num_workers=training.loader_workers(spec["num_workers"]),
            pin_memory=env.device.type == "cuda",
            drop_last=drop_last,
            collate_fn=collate,
            generator=training.loader_generator(spec["seed"], env, epoch),
        )
        train_one_epoch(trained, criterion, optimizer, loader, sampler.skipped_batches, epoch, recipe,
                        env, ema, watch, stop, checkpointer, state, spec["print_freq"])
        scheduler.step()
        # Not after every epoch: full-size weights, EMA and optimizer per epoch were at least 57 GB
        # of writes in the smoke run; check_step's interval bounds what a kill without warning loses.
        checkpointer.end_epoch(training.Position(epoch + 1, 0), epoch + 1 == recipe["epochs"], **state)
    watch.check_weights(env)
    return {"raw": model} | ({"ema": ema.module} if ema is not None else {}), watch


def train_one_epoch(model, criterion, optimizer, loader, first_step, epoch, recipe, env, ema, watch, stop,
                    checkpointer, state, print_freq) -> None:
    import torch

    model.train()
    started, seen, loss_sum = time.monotonic(), 0, 0.0
    accumulation, end = watch.batch.accumulation_steps, first_step + len(loader)
    request = training.StepEnd.CONTINUE  # what check_step asked of the current optimizer step
    for step, (images, targets) in enumerate(loader, start=first_step):
        images = images.to(env.device, non_blocking=True)
        targets = targets.to(env.device, non_blocking=True)
        scaler = watch.scaler
        group_start = step - step % accumulation
        # The epoch's last group may be short (the reference keeps the last partial batch).
        micro_steps = min(accumulation, end - group_start)
        updating = step + 1 == group_start + micro_steps
        with training.gradient_sync(model, env, updating):
            with torch.autocast(device_type=env.device.type, enabled=scaler is not None):
                loss = criterion(model(images), targets)
            request = max(request, training.check_step(loss, stop, env, watch, checkpointer))
            if step == group_start:
                optimizer.zero_grad(set_to_none=True)
            scaled = loss / micro_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if updating:
            if recipe["clip_grad_norm"] is not None:
                if scaler is not None:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["clip_grad_norm"])
            watch.step(optimizer)
            if ema is not None and (step // accumulation) % recipe["model_ema_steps"] == 0:
                ema.update(model.module if env.distributed else model)
                if epoch < recipe["lr_warmup_epochs"]:
                    # As the reference: during warmup the EMA keeps copying the weights.
                    ema.restart()
            checkpointer.after_step(request, training.Position(epoch, step + 1), **state)
            request = training.StepEnd.CONTINUE
        seen += images.shape[0]
        loss_sum += float(loss.detach())
        if step % print_freq == 0:
            training.log(env, f"epoch {epoch} step {step}/{first_step + len(loader)} loss {float(loss.detach()):.4f} "
                              f"lr {optimizer.param_groups[0]['lr']:.3g}")
    elapsed = time.monotonic() - started
    batches = max(1, len(loader))
    training.log(env, f"epoch {epoch} done: mean loss {loss_sum / batches:.4f}, "
                      f"{seen * env.world_size / max(elapsed, 1e-9):.1f} images/s")


def batch_split(spec: dict, world_size: int) -> training.BatchSplit:
    recipe = spec["recipe"]
    return training.batch_split(recipe["global_batch_size"], world_size, recipe["max_batch_per_process"],
                                f"classification.models.{spec['model']}")


# ---- evaluation -----------------------------------------------------------------------------


def evaluate_all(model, spec: dict, eval_indexes: dict, env):
    """({metric: percent}, ImageNet-val confusion matrix); the numbers are valid on rank 0."""
    import numpy as np

    num_classes = spec["num_classes"]
    metrics, confusion = {}, None
    for name in EVAL_SETS:
        rows = index_rows(eval_indexes[name], "val")
        if name == "imagenet_val":
            classes = np.arange(num_classes)
        else:
            classes = official_labels(name, eval_indexes["imagenet_val"], rows, eval_indexes[name])
        labels, predictions = predict(model, rows, classes, spec, env)
        for k in TOP_K:
            metrics[f"top{k}_{name}"] = topk_accuracy(labels, predictions, k)
        if name == "imagenet_val":
            confusion = confusion_matrix(labels, predictions[:, 0], num_classes)
        training.log(env, f"{name}: " + ", ".join(f"top{k} {metrics[f'top{k}_{name}']:.2f}" for k in TOP_K))
    return metrics, confusion


def official_labels(source: str, imagenet_index, rows, source_index):
    """The labels ImageNet-A or -R (``source``) is scored over: its official wnids among the
    classes of the ImageNet index, i.e. the classes in use (config/README.md)."""
    import numpy as np
    import pandas as pd

    in_use = pd.read_parquet(imagenet_index, columns=["wnid", "label"]).drop_duplicates()
    labels = np.sort(in_use.loc[in_use["wnid"].isin(official_wnids(source)), "label"].to_numpy())
    if not len(labels):
        raise DataError(f"ImageNet index {imagenet_index}: none of its classes is a {source} class")
    outside = sorted(set(rows["label"].tolist()) - set(labels.tolist()))
    if outside:
        raise DataError(f"index {source_index} has images of classes outside the official {source} classes "
                        f"in use (labels {outside[:5]}); re-index it")
    return labels


def restricted_topk(logits, classes, k: int):
    """Top-k class indices among ``classes`` only (logits of other classes are ignored)."""
    import torch

    classes = torch.as_tensor(classes, device=logits.device)
    top = logits[:, classes].topk(min(k, len(classes)), dim=1).indices
    return classes[top]


def predict(model, rows, classes, spec: dict, env):
    """(labels, top-k predictions) of every row, gathered on all ranks in row order."""
    import numpy as np
    import torch

    recipe = spec["recipe"]
    dataset = ManifestDataset(rows, recipes.eval_transform(recipe), target="label")
    mine = list(range(env.rank, len(dataset), env.world_size))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, mine), batch_size=batch_split(spec, env.world_size).per_process_batch,
        num_workers=training.loader_workers(spec["num_workers"]), pin_memory=env.device.type == "cuda",
    )
    model.eval()
    k = min(max(TOP_K), len(classes))
    labels, predictions = [np.zeros(0, dtype=np.int64)], [np.zeros((0, k), dtype=np.int64)]
    with torch.inference_mode():
        for images, targets in loader:
            with torch.autocast(device_type=env.device.type, enabled=recipe["amp"] and env.device.type == "cuda"):
                logits = model(images.to(env.device, non_blocking=True))
            predictions.append(restricted_topk(logits.float(), classes, k).cpu().numpy())
            labels.append(targets.numpy())
    share = (np.asarray(mine, dtype=np.int64), np.concatenate(labels), np.concatenate(predictions))
    order, all_labels, all_predictions = (np.concatenate(part) for part in zip(*training.gather_objects(share, env)))
    ranking = np.argsort(order)
    return all_labels[ranking], all_predictions[ranking]


def topk_accuracy(labels, predictions, k: int) -> float:
    """Percentage of rows whose label is among the first k predictions."""
    return float((predictions[:, :k] == labels[:, None]).any(axis=1).mean() * 100.0)


def confusion_matrix(labels, predicted, num_classes: int):
    import numpy as np

    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)
