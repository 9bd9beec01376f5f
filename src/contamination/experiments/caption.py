"""Image captioning (paper 4.2, 5.4, A.3): BLIP fine-tuned on a caption mixture, then scored on
the Karpathy test split of COCO.

The recipe is LAVIS v0.1's ``caption_coco_ft`` (run_scripts/blip/train/train_caption_coco.sh),
every number from config ``captioning``:

- model: BLIP base pre-trained (capfilt-large) as transformers ``BlipForConditionalGeneration``
  + ``BlipProcessor`` from the local directory ``models.blip``; the whole model is trained.
  BLIP's text decoder has dropout 0.1 (its med_config.json; converted checkpoints carry
  transformers' default 0) and label smoothing 0.1 in its language-model loss.
- data: one item per (image, caption) row of the mixture manifest. Train images:
  RandomResizedCrop(384, scale 0.5-1, bicubic), horizontal flip, BLIP's RandomAugment (2 ops of
  Identity, AutoContrast, Brightness, Sharpness, Equalize, ShearX/Y, TranslateX/Y, Rotate, each
  applied with probability 1/2 at magnitude 5 of 10), normalised with the processor's mean/std.
  AutoContrast (``autocontrast``) is PIL's by default ("correct"); "as_run" is LAVIS's, which
  negates a channel's minimum in uint8, so a channel whose minimum is above 0 (and not constant)
  becomes 255: the augmentation BLIP was actually fine-tuned with.
  Text: lower case, the punctuation ``.!"()*#:;~`` removed, at most 50 words, prefixed by the
  prompt "a picture of "; at most 40 tokens; the loss ignores the prompt and padding.
  Evaluation images: resized to 384x384, bicubic.
- optimisation: AdamW (all parameters) lr 1e-5, weight decay 0.05, cosine to 0 over 5 epochs
  stepped once per epoch, no warm-up; global batch 64 (the paper: 2 GPUs x 32), taken as
  training.batch_split says (gradient accumulation when ``max_batch_per_process`` is below the
  share of a process); the last micro-batches of an epoch that make no whole optimizer step are
  dropped.
- model selection: after each epoch the Karpathy val split is captioned and the weights with the
  highest BLEU-4 + CIDEr (LAVIS's ``agg_metrics``) are the ones tested (``select_by``; empty:
  the last epoch's).
- decoding: beam search, 3 beams, at most 20 and at least 5 tokens counting the prompt's 4.
- metrics: caption_metrics (pycocoevalcap scorers) against all reference captions of each test
  image; the generated captions are written next to metrics.json.

Without ``--manifest`` the starting model is evaluated as it is (Table 2's "w/o fine-tuning").
Each item's augmentation is drawn from its own seed (run seed, epoch, item), so it does not
depend on the number of GPUs or data-loading workers, and a resumed run continues bit-identically
on the CPU. Checkpointing, signals and metrics.json follow contamination.experiments.training.
"""

import hashlib
import math
import re
from pathlib import Path

from contamination import records
from contamination.experiments import training
from contamination.metrics.caption_metrics import METRICS, require_java, score_captions
from contamination.config import add_settings_arguments, without_runtime
from contamination.errors import ConfigError, DataError
from contamination.data import ManifestDataset, load_image
from contamination.io import write_json

# BLIP's RandomAugment operations for captioning (LAVIS BlipImageTrainProcessor).
AUGMENTATIONS = ("Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize",
                 "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
MAX_MAGNITUDE = 10
TRANSLATE_PIXELS = 10  # at full magnitude, in pixels whatever the image size (as in BLIP)
AUGMENT_FILL = (128, 128, 128)
CAPTION_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
# Besides the run-time keys (config.RUNTIME_KEYS), a setting that changes the scores but not the
# training: a checkpoint stays valid when it changes.
NOT_FINGERPRINTED = ("spice_corenlp_dir",)


def table_metrics(config: dict) -> list:
    """What every run's metrics.json holds (experiments.EXPERIMENTS): the COCO caption metrics."""
    return list(METRICS)


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="fine-tune BLIP on a caption mixture (or not), caption the Karpathy test split and score it",
        description="Run it under torchrun for several GPUs; a stop signal checkpoints and exits "
                    f"with {training.EXIT_RESUME}, and running it again resumes.",
    )
    parser.add_argument("--index", required=True, help="COCO index Parquet (Karpathy splits: val, test)")
    parser.add_argument("--model", required=True, help="directory of the starting BlipForConditionalGeneration + BlipProcessor")
    add_settings_arguments(parser, "--settings", "captioning", help="config `captioning`")
    parser.add_argument("--manifest", help="mixture manifest to fine-tune on; omitted: evaluate the model as it is")
    parser.add_argument("--checkpoint-dir", help="where the resumable checkpoint lives (not a workflow output)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", required=True, help="metrics.json")
    parser.add_argument("--captions", required=True, help="JSON written with {image id: generated caption}")
    parser.set_defaults(run=run_caption)


def run_caption(args) -> None:
    import torch

    if args.manifest and not args.checkpoint_dir:
        raise ConfigError("caption: --checkpoint-dir is required with --manifest")
    require_java()  # fail now, not after hours of training
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        caption_experiment(args.settings, args.index, args.model, args.out, args.captions, seed=args.seed,
                           manifest=args.manifest, checkpoint_dir=args.checkpoint_dir)
    except training.Interrupted:
        print(f"stopped by a signal; checkpoint in {args.checkpoint_dir}, exit {training.EXIT_RESUME}", flush=True)
        raise SystemExit(training.EXIT_RESUME)


# ---- the experiment -------------------------------------------------------------------------


def caption_experiment(settings, index, model_dir, out, captions_out, seed=0, manifest=None,
                       checkpoint_dir=None, stop=None):
    """Fine-tune (if ``manifest``), caption the test split, write captions and metrics.json.

    ``stop``: anything with a ``requested`` flag (default: a training.StopRequest on SIGTERM and
    SIGUSR1). Raises training.Interrupted after checkpointing when it is set.
    """
    env = training.setup_distributed(settings["device"])
    try:
        training.seed_everything(seed, env)
        model, processor = load_blip(model_dir, settings)
        model.to(env.device)
        spec = run_identity(settings, index, model_dir, seed, manifest)
        status, metrics, reasons, history, steps = "ok", {}, {}, None, None
        if manifest is not None:
            val = KarpathySplit(index, "val") if settings["select_by"] else None
            checkpointer = training.Checkpointer(checkpoint_dir, env, records.sha256_of_json(spec),
                                                 every_minutes=settings["checkpoint_every_minutes"])
            best = training.Checkpointer(Path(checkpoint_dir) / "best", env, records.sha256_of_json(spec))
            try:
                history, steps = fine_tune(model, processor, manifest, val, settings, seed, env, checkpointer, best,
                                           stop if stop is not None else training.StopRequest())
            except training.Diverged as error:
                status, steps = "diverged", error.record
                training.log(env, f"diverged: {error}")
                metrics, reasons = records.unavailable(METRICS, f"training diverged: {error}")
        captions = {}
        if status == "ok":
            test = KarpathySplit(index, "test")
            captions = generate_captions(model, processor, test, settings, env)
            if env.is_main:
                metrics, reasons = score_captions(test.references, captions, settings["spice_corenlp_dir"])
        if env.is_main:
            write_json(captions, captions_out)
            record = records.provenance(spec, seed, env.world_size, env.device.type,
                                        packages=("torch", "torchvision", "transformers", "pycocoevalcap"))
            record["fine_tuned"] = manifest is not None
            if history is not None:
                record["selection"] = history
            records.write_metrics(out, metrics, reasons, status, record, steps)
        if manifest is not None and status == "ok" and not settings["keep_checkpoint"]:
            checkpointer.remove()
            best.remove()
    finally:
        training.teardown_distributed(env)




def run_identity(settings, index, model_dir, seed, manifest=None) -> dict:
    """What defines a run, hashed into its checkpoint fingerprint and its provenance: the settings
    that shape the numbers, the seed, and the contents (not the paths) of the index, the manifest
    and the model's files, so new weights saved over the old directory start training over."""
    fingerprinted = without_runtime("captioning", settings)
    spec = {"settings": {k: v for k, v in fingerprinted.items() if k not in NOT_FINGERPRINTED},
            "model": records.path_fingerprint(model_dir), "index": records.sha256_of_file(index), "seed": seed}
    if manifest is not None:
        spec["manifest"] = records.sha256_of_file(manifest)
    return spec


# ---- model ----------------------------------------------------------------------------------


def load_blip(model_dir, settings):
    """``(model, processor)`` from a local directory saved with save_pretrained (never a hub id)."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

    directory = Path(model_dir)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"models.blip: '{directory}' holds no saved BLIP model (config.json); "
                          "README: 'BLIP weights' explains how to make one")
    config = BlipConfig.from_pretrained(directory, local_files_only=True)
    config.text_config.hidden_dropout_prob = settings["text_dropout"]
    config.text_config.attention_probs_dropout_prob = settings["text_dropout"]
    config.text_config.label_smoothing = settings["label_smoothing"]
    model, loading = BlipForConditionalGeneration.from_pretrained(directory, config=config, local_files_only=True,
                                                                  output_loading_info=True)
    require_every_weight(directory, loading)
    processor = BlipProcessor.from_pretrained(directory, local_files_only=True)
    tokenizer, text = processor.tokenizer, config.text_config
    expected = {"bos ([DEC])": (tokenizer.bos_token_id, text.bos_token_id),
                "sep": (tokenizer.sep_token_id, text.sep_token_id),
                "pad": (tokenizer.pad_token_id, text.pad_token_id)}
    for name, (token_id, config_id) in expected.items():
        if token_id is None or token_id != config_id:
            raise ConfigError(f"models.blip: '{directory}': the tokenizer's {name} token id is {token_id} "
                              f"but the model's text config says {config_id}")
    if config.vision_config.image_size != settings["image_size"]:
        raise ConfigError(f"captioning.image_size: {settings['image_size']}, but the model in '{directory}' "
                          f"takes {config.vision_config.image_size} px images")
    return model, processor


def require_every_weight(directory, loading) -> None:
    """Fail naming the keys if the saved weights and the model do not match one to one:
    transformers would otherwise initialise a missing weight at random and drop an unknown one,
    and the run would train from a silently different model."""
    problems = {name: sorted(str(key) for key in loading.get(name) or ())
                for name in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()) or loading.get("error_msgs"):
        found = "; ".join(f"{name.replace('_', ' ')}: {', '.join(keys)}" for name, keys in problems.items() if keys)
        raise DataError(f"models.blip: the weights in '{directory}' do not fill the BLIP model exactly "
                        f"({found or '; '.join(map(str, loading['error_msgs']))})")


# ---- data -----------------------------------------------------------------------------------


class RandomAugment:
    """BLIP's RandomAugment: ``num_ops`` operations drawn with replacement from AUGMENTATIONS,
    each applied with probability 1/2 at ``magnitude`` (of MAX_MAGNITUDE); shears, translations
    and rotations take a random sign and fill with grey. Draws from torch's global RNG."""

    def __init__(self, num_ops: int, magnitude: float, autocontrast: str = "correct"):
        self.num_ops = num_ops
        self.level = magnitude / MAX_MAGNITUDE
        self.autocontrast = autocontrast

    def __call__(self, image):
        import torch

        for _ in range(self.num_ops):
            name = AUGMENTATIONS[int(torch.randint(len(AUGMENTATIONS), ()))]
            if float(torch.rand(())) < 0.5:
                image = self.apply(name, image)
        return image

    def apply(self, name, image):
        import torch
        from PIL import Image, ImageEnhance, ImageOps

        sign = 1 if float(torch.rand(())) < 0.5 else -1
        enhance = self.level * 1.8 + 0.1  # 1.0 (no change) at magnitude 5
        affine = {
            "ShearX": (1, sign * 0.3 * self.level, 0, 0, 1, 0),
            "ShearY": (1, 0, 0, sign * 0.3 * self.level, 1, 0),
            "TranslateX": (1, 0, sign * TRANSLATE_PIXELS * self.level, 0, 1, 0),
            "TranslateY": (1, 0, 0, 0, 1, sign * TRANSLATE_PIXELS * self.level),
        }
        if name in affine:
            return image.transform(image.size, Image.Transform.AFFINE, affine[name],
                                   resample=Image.Resampling.BILINEAR, fillcolor=AUGMENT_FILL)
        if name == "Rotate":
            return image.rotate(sign * 30 * self.level, resample=Image.Resampling.BILINEAR, fillcolor=AUGMENT_FILL)
        if name == "AutoContrast":
            return ImageOps.autocontrast(image) if self.autocontrast == "correct" else autocontrast_as_run(image)
        if name == "Equalize":
            return ImageOps.equalize(image)
        if name == "Brightness":
            return ImageEnhance.Brightness(image).enhance(enhance)
        if name == "Sharpness":
            return ImageEnhance.Sharpness(image).enhance(enhance)
        return image  # Identity


def autocontrast_as_run(image):
    """LAVIS's AutoContrast (randaugment.py, cutoff 0) with its uint8 wrap-around: the offset
    -min x scale is computed from the channel's uint8 minimum, so it is (256 - min) x scale; every
    value of a channel with 0 < min < max maps above 255 and is clipped to white. A channel whose
    minimum is 0 is stretched correctly, a constant one is left alone."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"))
    channels = []
    for channel in np.moveaxis(pixels, -1, 0):
        low, high = int(channel.min()), int(channel.max())
        if high <= low:
            channels.append(channel)
            continue
        scale = 255 / (high - low)
        wrapped_offset = ((256 - low) % 256) * scale
        table = np.clip(np.arange(256) * scale + wrapped_offset, 0, 255).astype(np.uint8)
        channels.append(table[channel])
    return Image.fromarray(np.stack(channels, axis=-1))


def train_transform(settings, mean, std):
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    return transforms.Compose([
        transforms.RandomResizedCrop(settings["image_size"], scale=(settings["min_crop_scale"], settings["max_crop_scale"]),
                                     interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        RandomAugment(settings["randaugment_ops"], settings["randaugment_magnitude"], settings["autocontrast"]),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def eval_transform(settings, mean, std):
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    size = settings["image_size"]
    return transforms.Compose([
        transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def clean_caption(caption: str, max_words: int) -> str:
    """BLIP's caption text: lower case, some punctuation removed, spaces collapsed, word limit."""
    caption = CAPTION_PUNCTUATION.sub(" ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    return " ".join(caption.split(" ")[:max_words])


def item_seed(seed: int, epoch: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{epoch}/{index}".encode()).digest()[:8], "little")


class CaptionTrainingSet:
    """Manifest items as ``(augmented image tensor, prompt + cleaned caption)``; the augmentation
    of item i in epoch e comes from its own seed, so it is the same however items are loaded."""

    def __init__(self, manifest, transform, prompt: str, max_words: int, seed: int):
        self.items = ManifestDataset(manifest, transform=None, target="caption")
        self.transform = transform
        self.prompt = prompt
        self.max_words = max_words
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import torch

        image, caption = self.items[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.epoch, index))
            pixels = self.transform(image)
        return pixels, self.prompt + clean_caption(caption, self.max_words)


class CaptionCollator:
    """Batches of (pixels, input ids starting with [DEC], attention mask, labels): labels are the
    input ids with padding and the prompt's tokens set to -100 (not scored), as in BLIP."""

    def __init__(self, tokenizer, prompt: str, max_tokens: int):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.prompt_tokens = len(tokenizer(prompt).input_ids) - 1  # [CLS] + prompt words, not [SEP]

    def __call__(self, batch):
        import torch

        text = self.tokenizer([caption for _, caption in batch], padding="longest", truncation=True,
                              max_length=self.max_tokens, return_tensors="pt")
        input_ids = text.input_ids.clone()
        input_ids[:, 0] = self.tokenizer.bos_token_id
        labels = input_ids.masked_fill(input_ids == self.tokenizer.pad_token_id, -100)
        labels[:, : self.prompt_tokens] = -100
        return torch.stack([pixels for pixels, _ in batch]), input_ids, text.attention_mask, labels


class KarpathySplit:
    """The images of one Karpathy split of the COCO index, each with all its reference captions."""

    def __init__(self, index, split: str):
        import pandas as pd

        try:
            frame = pd.read_parquet(index, columns=["image_id", "path", "caption", "split"])
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f"cannot read the COCO index {index}: {error}") from error
        rows = frame[frame["split"] == split]
        if rows.empty:
            raise DataError(f"{index}: no images in the Karpathy '{split}' split")
        self.paths, self.references = {}, {}
        for image_id, path, caption in zip(rows["image_id"], rows["path"], rows["caption"]):
            self.paths.setdefault(image_id, path)
            self.references.setdefault(image_id, []).append(caption)
        self.image_ids = list(self.paths)


class EvaluationImages:
    def __init__(self, split: KarpathySplit, image_ids, transform):
        self.split = split
        self.image_ids = image_ids
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, position: int):
        return self.transform(load_image(self.split.paths[self.image_ids[position]])), position


# ---- training -------------------------------------------------------------------------------


class Selection:
    """Validation scores by epoch (sum of the ``select_by`` metrics); the best epoch's weights are
    the ones evaluated. Checkpointed with the run, so a resumed run keeps its history."""

    def __init__(self):
        self.scores = []

    def record(self, score: float) -> bool:
        """Add the next epoch's score; True if it is the best so far (strictly, as in LAVIS)."""
        improved = all(score > previous for previous in self.scores)
        self.scores.append(score)
        return improved

    @property
    def best_epoch(self):
        return max(range(len(self.scores)), key=lambda epoch: (self.scores[epoch], -epoch)) if self.scores else None

    def state_dict(self):
        return {"scores": list(self.scores)}

    def load_state_dict(self, state):
        self.scores = list(state["scores"])


def fine_tune(model, processor, manifest, val, settings, seed, env, checkpointer, best, stop):
    """Train ``model`` in place (ending with the selected epoch's weights); returns (the selection
    history for provenance or None without model selection, the StepWatch record)."""
    import torch
    from torch.utils.data import DataLoader

    image_processor = processor.image_processor
    dataset = CaptionTrainingSet(
        manifest,
        train_transform(settings, image_processor.image_mean, image_processor.image_std),
        settings["prompt"], settings["max_words"], seed,
    )
    split = training.batch_split(settings["global_batch_size"], env.world_size, settings["max_batch_per_process"],
                                 "captioning")
    batch_size = split.per_process_batch
    if len(dataset) < settings["global_batch_size"]:
        raise DataError(f"manifest {manifest}: {len(dataset)} items, fewer than one batch of "
                        f"captioning.global_batch_size {settings['global_batch_size']}")
    sampler = training.ResumableSampler(training.distributed_sampler(dataset, env, seed), batch_size)
    collate = CaptionCollator(processor.tokenizer, settings["prompt"], settings["max_text_tokens"])
    network = model
    if env.distributed:
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings["epochs"], eta_min=settings["min_lr"])
    selection = Selection()
    watch = training.StepWatch(model, batch=split)  # fp32, as LAVIS: a non-finite loss or weight is divergence
    position = checkpointer.load(model=model, optimizer=optimizer, scheduler=scheduler, selection=selection,
                                 watch=watch)
    epochs = settings["epochs"]
    accumulation = split.accumulation_steps
    # Whole optimizer steps only: the last micro-batches of an epoch that make no full step are left out.
    batches_per_epoch = len(sampler.sampler) // batch_size // accumulation * accumulation
    training.log(env, f"fine-tuning on {len(dataset)} captions, {batches_per_epoch // accumulation} optimizer steps "
                      f"per epoch of {env.world_size} process(es) x {batch_size} x {accumulation} accumulation steps, "
                      f"from epoch {position.epoch} step {position.step}")
    for epoch in range(position.epoch, epochs):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip_batches=position.step if epoch == position.epoch else 0)
        loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=training.loader_workers(settings["num_workers"]),
            collate_fn=collate, pin_memory=env.device.type == "cuda", drop_last=True,
            generator=training.loader_generator(seed, env, epoch),
        )
        network.train()
        end = training.StepEnd.CONTINUE
        for step, (pixels, input_ids, attention_mask, labels) in enumerate(loader, start=sampler.skipped_batches):
            if step == batches_per_epoch:
                break
            updating = (step + 1) % accumulation == 0
            with training.gradient_sync(network, env, updating):
                loss = network(pixel_values=pixels.to(env.device), input_ids=input_ids.to(env.device),
                               attention_mask=attention_mask.to(env.device), labels=labels.to(env.device)).loss
                end = max(end, training.check_step(loss, stop, env, watch, checkpointer))
                if step % accumulation == 0:
                    optimizer.zero_grad(set_to_none=True)
                (loss / accumulation).backward()
            if updating:
                watch.step(optimizer)
            if step % settings["log_every"] == 0:
                training.log(env, f"epoch {epoch} step {step} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.3g}")
            if updating:  # a checkpoint holds no half-accumulated gradients
                checkpointer.after_step(end, training.Position(epoch, step + 1), model=model, optimizer=optimizer,
                                        scheduler=scheduler, selection=selection, watch=watch)
                end = training.StepEnd.CONTINUE
        scheduler.step()
        if val is not None:
            score = validation_score(model, processor, val, settings, env)
            training.log(env, f"epoch {epoch}: val {' + '.join(settings['select_by'])} = {score:.4f}")
            if selection.record(score):
                best.save(training.Position(epoch + 1, 0), model=model)
        checkpointer.save(training.Position(epoch + 1, 0), model=model, optimizer=optimizer,
                          scheduler=scheduler, selection=selection, watch=watch)
    watch.check_weights(env)
    if val is None:
        return None, watch.record()
    training.log(env, f"testing the weights of epoch {selection.best_epoch} (best val {' + '.join(settings['select_by'])})")
    best.load(model=model)
    return {"metric": " + ".join(settings["select_by"]), "val_scores": selection.scores,
            "epoch": selection.best_epoch}, watch.record()


def validation_score(model, processor, val, settings, env) -> float:
    """Sum of the ``select_by`` metrics on the val split, the same on every rank."""
    captions = generate_captions(model, processor, val, settings, env)
    score = -math.inf
    if env.is_main:
        values, _ = score_captions(val.references, captions, metrics=settings["select_by"])
        score = sum(values.values())
    return training.all_reduce_max([score], env)[0]


# ---- captioning -----------------------------------------------------------------------------


def generate_captions(model, processor, split: KarpathySplit, settings, env) -> dict:
    """``{image id: caption}`` for every image of ``split`` (each rank captions a share; every
    rank gets them all). Captions are the decoded tokens after the prompt, as in LAVIS."""
    import torch
    from torch.utils.data import DataLoader

    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    transform = eval_transform(settings, image_processor.image_mean, image_processor.image_std)
    share = split.image_ids[env.rank :: env.world_size]
    loader = DataLoader(EvaluationImages(split, share, transform), batch_size=settings["eval_batch_size"],
                        num_workers=training.loader_workers(settings["num_workers"]), pin_memory=env.device.type == "cuda")
    prompt = tokenizer(settings["prompt"], return_tensors="pt").input_ids.to(env.device)  # generate() drops its [SEP]
    captions = {}
    model.eval()
    with torch.no_grad():
        for pixels, positions in loader:
            output = model.generate(
                pixel_values=pixels.to(env.device),
                input_ids=prompt.repeat(len(pixels), 1),
                num_beams=settings["num_beams"],
                max_length=settings["max_length"],
                min_length=settings["min_length"],
                repetition_penalty=settings["repetition_penalty"],
                do_sample=False,
            )
            texts = tokenizer.batch_decode(output[:, prompt.shape[1] - 1 :], skip_special_tokens=True)
            for position, text in zip(positions.tolist(), texts):
                captions[share[position]] = text.strip()
    merged = {}
    for part in training.gather_objects(captions, env):
        merged.update(part)
    return {image_id: merged[image_id] for image_id in split.image_ids}
