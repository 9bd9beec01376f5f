"""BLIP captioning: tiny model round trip, data preparation, resume, and the scored run."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from contamination import config as cfg
from contamination import records
from contamination.experiments import training
from contamination.experiments.caption import (
    CaptionCollator,
    CaptionTrainingSet,
    KarpathySplit,
    caption_experiment,
    clean_caption,
    fine_tune,
    load_blip,
    run_identity,
    train_transform,
)
from contamination.metrics.caption_metrics import METRICS, score_captions
from contamination.errors import ConfigError, DataError
from contamination.io import read_json, write_parquet
from contamination.smoke.tiny_blip import build_tiny_blip
from contamination.io import save_pretrained
from helpers import SMOKE_CONFIG, cli, job_counts, paper_config_with_empty_roots, signal_during_step, snakemake

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer and METEOR need Java")
SIZE = 32
COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (50, 60, 210)}
SPLITS = {"train": 6, "val": 2, "test": 3}


@pytest.fixture(scope="module")
def caption_data(tmp_path_factory):
    """A COCO-like index (Karpathy train/val/test, two captions per image) and a manifest of its
    training captions; noisy images so augmentations change pixels."""
    directory = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(0)
    rows = []
    for split, count in SPLITS.items():
        for number in range(count):
            colour = list(COLOURS)[number % len(COLOURS)]
            pixels = np.clip(rng.normal(COLOURS[colour], 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            path = directory / f"{split}-{number}.png"
            from PIL import Image

            Image.fromarray(pixels).save(path)
            for sentence, caption in enumerate([f"A {colour} square.", f"a noisy {colour} picture"]):
                rows.append({"id": f"{split}{number}_{sentence}", "path": str(path), "label": -1, "wnid": "",
                             "caption": caption, "image_id": f"{split}{number}", "split": split})
    index = pd.DataFrame(rows)
    write_parquet(index, directory / "coco.parquet")
    train = index[index["split"] == "train"]
    manifest = pd.DataFrame({"id": train["id"], "uri": train["path"], "label": -1, "caption": train["caption"],
                             "origin": "coco"})
    write_parquet(manifest, directory / "manifest.parquet")
    return directory / "coco.parquet", directory / "manifest.parquet"


@pytest.fixture(scope="module")
def tiny_blip_dir(caption_data, tmp_path_factory):
    index, _ = caption_data
    out = tmp_path_factory.mktemp("models") / "tiny-blip"
    texts = list(pd.read_parquet(index)["caption"]) + ["a picture of "]
    save_pretrained(build_tiny_blip(texts, seed=0, image_size=SIZE), out)
    return out


@pytest.fixture
def settings():
    settings = dict(cfg.load(SMOKE_CONFIG)["captioning"])
    settings.update(image_size=SIZE, epochs=2, global_batch_size=4, eval_batch_size=4, device="cpu", num_workers=0, log_every=1)
    return settings


# ---- the tiny model -----------------------------------------------------------------------


def test_tiny_blip_loads_identically_and_generates(caption_data, tiny_blip_dir, settings):
    index, _ = caption_data
    texts = list(pd.read_parquet(index)["caption"]) + ["a picture of "]
    built = build_tiny_blip(texts, seed=0, image_size=SIZE).model.state_dict()
    model, processor = load_blip(tiny_blip_dir, settings)
    assert built.keys() == model.state_dict().keys()
    assert all(torch.equal(built[name], value) for name, value in model.state_dict().items())
    # Every caption word is in the vocabulary, and the special tokens are BLIP's.
    tokenizer = processor.tokenizer
    assert tokenizer.unk_token_id not in tokenizer("A noisy green picture. a blue square").input_ids
    assert tokenizer.bos_token == "[DEC]" and model.config.text_config.sep_token_id == tokenizer.sep_token_id
    # BLIP's recipe is applied on load: dropout 0.1 and label smoothing 0.1 in the text decoder.
    assert model.text_decoder.label_smoothing == settings["label_smoothing"] == 0.1
    assert model.config.text_config.hidden_dropout_prob == settings["text_dropout"] == 0.1
    model.eval()
    prompt = tokenizer(settings["prompt"], return_tensors="pt").input_ids
    output = model.generate(pixel_values=torch.zeros(2, 3, SIZE, SIZE), input_ids=prompt.repeat(2, 1),
                            num_beams=3, max_length=20, min_length=5)
    assert output.shape[0] == 2 and 5 <= output.shape[1] <= 20
    assert output[:, : prompt.shape[1] - 1].tolist() == [[tokenizer.bos_token_id] + prompt[0, 1:-1].tolist()] * 2


def test_the_same_seed_builds_the_same_tiny_model():
    first = build_tiny_blip(["a cat"], seed=3).model.state_dict()
    second = build_tiny_blip(["a cat"], seed=3).model.state_dict()
    other = build_tiny_blip(["a cat"], seed=4).model.state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_a_mismatched_image_size_names_the_config_key(tiny_blip_dir, settings):
    with pytest.raises(ConfigError, match="captioning.image_size: 64"):
        load_blip(tiny_blip_dir, dict(settings, image_size=64))


@pytest.mark.parametrize("change, message", [
    ("remove", "missing keys: vision_model.post_layernorm.weight"),
    ("add", "unexpected keys: text_decoder.bert.extra.weight"),
])
def test_a_missing_or_unknown_weight_fails_naming_the_key(tiny_blip_dir, settings, tmp_path, change, message):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "blip"
    shutil.copytree(tiny_blip_dir, broken)
    weights = load_file(broken / "model.safetensors")
    if change == "remove":
        del weights["vision_model.post_layernorm.weight"]
    else:
        weights["text_decoder.bert.extra.weight"] = torch.zeros(3)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(DataError, match=f"models.blip: .*{message}"):
        load_blip(broken, settings)


def test_a_missing_model_directory_names_models_blip(tmp_path, settings):
    with pytest.raises(ConfigError, match="models.blip"):
        load_blip(tmp_path / "nowhere", settings)


# ---- data ---------------------------------------------------------------------------------


def test_captions_are_cleaned_like_blip():
    assert clean_caption("  A Dog (brown) runs; FAST!\n", 50) == "a dog brown runs fast"
    assert clean_caption("one two three four", 2) == "one two"


def test_labels_score_the_caption_not_the_prompt_or_padding(tiny_blip_dir, settings):
    _, processor = load_blip(tiny_blip_dir, settings)
    tokenizer = processor.tokenizer
    collate = CaptionCollator(tokenizer, "a picture of ", max_tokens=40)
    pixels = torch.zeros(3, SIZE, SIZE)
    _, input_ids, mask, labels = collate([(pixels, "a picture of a red square"), (pixels, "a picture of red")])
    assert collate.prompt_tokens == 4  # [DEC] a picture of
    assert input_ids[:, 0].tolist() == [tokenizer.bos_token_id] * 2
    words = tokenizer.convert_ids_to_tokens(labels[0][labels[0] != -100].tolist())
    assert words == ["a", "red", "square", "[SEP]"]
    assert labels[1].tolist()[-2:] == [-100, -100] and mask[1].tolist()[-2:] == [0, 0]  # padding


def test_augmentation_depends_only_on_seed_epoch_and_item(caption_data, settings):
    _, manifest = caption_data
    transform = train_transform(settings, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    dataset = CaptionTrainingSet(manifest, transform, "a picture of ", 50, seed=0)
    first, caption = dataset[3]
    torch.rand(5)  # the global RNG state does not matter
    again, _ = dataset[3]
    dataset.set_epoch(1)
    next_epoch, _ = dataset[3]
    assert torch.equal(first, again) and not torch.equal(first, next_epoch)
    assert first.shape == (3, SIZE, SIZE) and caption == "a picture of a noisy green picture"


def lavis_autocontrast_reference(pixels):
    """LAVIS's per-channel table with its numpy uint8 scalars (min, max), computed independently."""
    out = []
    for channel in np.moveaxis(pixels, -1, 0):
        low, high = channel.min(), channel.max()  # np.uint8
        if high <= low:
            out.append(channel)
            continue
        scale = 255 / (high - low)
        with np.errstate(over="ignore"):
            offset = -low * scale  # -np.uint8(low) wraps to 256 - low
        out.append(np.clip(np.arange(256) * scale + offset, 0, 255).astype(np.uint8)[channel])
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("choice", ["correct", "as_run"])
def test_autocontrast_is_pils_or_lavis_as_run_wrap_around(settings, choice):
    from PIL import Image, ImageOps

    rng = np.random.default_rng(0)
    pixels = np.stack([rng.integers(10, 201, (8, 8)),  # minimum above 0: LAVIS whitens it
                       rng.integers(0, 101, (8, 8)),  # minimum 0: stretched by both
                       np.full((8, 8), 50)], axis=-1).astype(np.uint8)  # constant: left alone
    pixels[0, 0, 1] = 0
    image = Image.fromarray(pixels)
    augment = train_transform(dict(settings, autocontrast=choice), (0.5,) * 3, (0.5,) * 3).transforms[2]
    result = np.asarray(augment.apply("AutoContrast", image))
    correct = np.asarray(ImageOps.autocontrast(image))
    if choice == "correct":
        assert (result == correct).all()
    else:
        assert (result == lavis_autocontrast_reference(pixels)).all()
        assert (result[..., 0] == 255).all() and (result[..., 1:] == correct[..., 1:]).all()


def test_autocontrast_defaults_to_the_correct_one():
    from contamination import config as cfg

    assert cfg.load()["captioning"]["autocontrast"] == "correct"


def test_the_karpathy_split_groups_every_reference(caption_data):
    index, _ = caption_data
    test = KarpathySplit(index, "test")
    assert test.image_ids == ["test0", "test1", "test2"]
    assert test.references["test1"] == ["A green square.", "a noisy green picture"]


# ---- resume -------------------------------------------------------------------------------


class StopAfterSteps:
    """A stop request that arrives after ``steps`` optimizer steps (what SIGTERM does, on cue)."""

    def __init__(self, steps=None):
        self.steps = steps
        self.checks = 0

    @property
    def requested(self):
        self.checks += 1
        return self.steps is not None and self.checks >= self.steps


@needs_java
def test_a_stopped_fine_tune_resumes_to_identical_weights(caption_data, tiny_blip_dir, settings, tmp_path):
    index, manifest = caption_data
    env = training.setup_distributed("cpu")
    val = KarpathySplit(index, "val")

    def fine_tune_in(directory, stop):
        training.seed_everything(0, env)
        model, processor = load_blip(tiny_blip_dir, settings)
        checkpointer = training.Checkpointer(directory, env, "spec")
        best = training.Checkpointer(directory / "best", env, "spec")
        history, _ = fine_tune(model, processor, manifest, val, settings, 0, env, checkpointer, best, stop)
        return model.state_dict(), history

    initial = load_blip(tiny_blip_dir, settings)[0].state_dict()
    reference, reference_history = fine_tune_in(tmp_path / "straight", StopAfterSteps())
    # 12 captions in batches of 4: 3 steps per epoch; stop after step 2 of epoch 1 (mid-epoch,
    # after epoch 0's validation).
    with pytest.raises(training.Interrupted):
        fine_tune_in(tmp_path / "stopped", StopAfterSteps(5))
    assert (tmp_path / "stopped" / training.CHECKPOINT_NAME).exists()
    continuation = StopAfterSteps()
    resumed, resumed_history = fine_tune_in(tmp_path / "stopped", continuation)
    assert continuation.checks == 1  # only the last of the 6 steps was left to do
    assert resumed_history == reference_history and len(reference_history["val_scores"]) == 2
    assert not all(torch.equal(initial[name], reference[name]) for name in initial)  # it trained
    assert all(torch.equal(reference[name], resumed[name]) for name in reference)


@pytest.mark.parametrize("global_batch, signalled_call, position", [(4, 3, (0, 4)), (8, 5, (1, 4))])
def test_a_stop_on_the_first_micro_step_of_a_group_resumes_identically_with_accumulation(
        caption_data, tiny_blip_dir, settings, tmp_path, monkeypatch, global_batch, signalled_call, position):
    """12 captions, 2 per forward pass: accumulation 2 (3 optimizer steps per epoch) or 4 (one step
    of 4 micro-batches; the last 2 batches make no step and are left out). A stop on the first
    micro-step of a group saves after that group's update, at the micro-batches done; the retry
    ends with the uninterrupted run's weights and steps."""
    _, manifest = caption_data
    env = training.setup_distributed("cpu")
    settings = dict(settings, global_batch_size=global_batch, max_batch_per_process=2, select_by=[])

    def fine_tune_in(directory):
        training.seed_everything(0, env)
        model, processor = load_blip(tiny_blip_dir, settings)
        checkpointer = training.Checkpointer(directory, env, "spec")
        _, steps = fine_tune(model, processor, manifest, None, settings, 0, env, checkpointer,
                             training.Checkpointer(directory / "best", env, "spec"), training.StopRequest())
        return model.state_dict(), steps

    reference, reference_steps = fine_tune_in(tmp_path / "straight")
    assert reference_steps["optimizer_steps"] == 2 * (12 // global_batch)  # 2 epochs of whole steps
    signal_during_step(monkeypatch, signalled_call)
    with pytest.raises(training.Interrupted):
        fine_tune_in(tmp_path / "stopped")
    saved = torch.load(tmp_path / "stopped" / training.CHECKPOINT_NAME, weights_only=True)
    assert saved["position"] == dict(zip(("epoch", "step"), position))
    monkeypatch.undo()
    torch.manual_seed(99)  # the retry must not depend on the state the stopped run left
    resumed, resumed_steps = fine_tune_in(tmp_path / "stopped")
    assert resumed_steps == reference_steps
    assert all(torch.equal(reference[name], resumed[name]) for name in reference)


def test_new_weights_in_the_same_model_directory_start_training_over(caption_data, tiny_blip_dir, settings,
                                                                      tmp_path):
    from safetensors.torch import load_file, save_file

    index, manifest = caption_data
    model_dir = tmp_path / "blip"
    shutil.copytree(tiny_blip_dir, model_dir)

    def fingerprint(directory):
        return records.sha256_of_json(run_identity(settings, index, directory, 0, manifest))

    before = fingerprint(model_dir)
    shutil.copytree(model_dir, tmp_path / "moved")
    assert fingerprint(tmp_path / "moved") == before  # the same files elsewhere: the same run
    env = training.setup_distributed("cpu")
    saved = training.Checkpointer(tmp_path / "checkpoints", env, before)
    saved.save(training.Position(1, 0), model=torch.nn.Linear(2, 2))
    assert training.Checkpointer(tmp_path / "checkpoints", env, fingerprint(model_dir)).load(
        model=torch.nn.Linear(2, 2)) == training.Position(1, 0)

    weights = load_file(model_dir / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    after = fingerprint(model_dir)
    assert after != before
    assert training.Checkpointer(tmp_path / "checkpoints", env, after).load(
        model=torch.nn.Linear(2, 2)) == training.Position()  # ignored: training starts over


# ---- the whole run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fine_tuned_run(caption_data, tiny_blip_dir, tmp_path_factory):
    if shutil.which("java") is None:
        pytest.fail("the PTB tokenizer and METEOR need Java: `make test` installs it (make system-packages)")
    index, manifest = caption_data
    out = tmp_path_factory.mktemp("run")
    settings = dict(cfg.load(SMOKE_CONFIG)["captioning"])
    settings.update(image_size=SIZE, epochs=2, global_batch_size=4, eval_batch_size=4, device="cpu", num_workers=0)
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        caption_experiment(settings, index, tiny_blip_dir, out / "metrics.json", out / "captions.json", seed=0,
                           manifest=manifest, checkpoint_dir=out / "checkpoints", stop=StopAfterSteps())
    return index, out


def test_every_metric_but_spice_is_measured(fine_tuned_run):
    _, out = fine_tuned_run
    run = read_json(out / "metrics.json")
    assert run["status"] == "ok" and sorted(run["metrics"]) == sorted(METRICS)
    measured = {name: value for name, value in run["metrics"].items() if name != "SPICE"}
    assert all(value is not None and 0 <= value for value in measured.values())
    assert all(value <= 1 for name, value in measured.items() if name != "CIDEr")
    assert run["metrics"]["SPICE"] is None and "captioning.spice_corenlp_dir" in run["reasons"]["SPICE"]
    assert run["provenance"]["fine_tuned"] and len(run["provenance"]["selection"]["val_scores"]) == 2
    assert run["training"]["optimizer_steps"] == 6 and run["training"]["diverged"] is None  # 2 epochs of 12 / 4
    assert not (out / "checkpoints" / training.CHECKPOINT_NAME).exists()  # removed after success


def test_rescoring_the_saved_captions_gives_the_saved_metrics(fine_tuned_run):
    index, out = fine_tuned_run
    captions = json.loads((out / "captions.json").read_text())
    test = KarpathySplit(index, "test")
    assert list(captions) == test.image_ids and all(isinstance(text, str) for text in captions.values())
    values, reasons = score_captions(test.references, captions)
    saved = read_json(out / "metrics.json")
    assert values == saved["metrics"] and reasons == saved["reasons"]


def test_sigusr1_mid_epoch_exits_75_and_the_retry_scores_as_the_uninterrupted_run(fine_tuned_run, caption_data,
                                                                                    tiny_blip_dir, tmp_path,
                                                                                    monkeypatch):
    from contamination.__main__ import main as cli_main

    index, straight = fine_tuned_run
    _, manifest = caption_data
    settings = dict(cfg.load(SMOKE_CONFIG)["captioning"])  # as fine_tuned_run's
    settings.update(image_size=SIZE, epochs=2, global_batch_size=4, eval_batch_size=4, device="cpu", num_workers=0)
    arguments = ["caption", "--index", str(index), "--model", str(tiny_blip_dir), "--settings", json.dumps(settings),
                 "--manifest", str(manifest), "--checkpoint-dir", str(tmp_path / "checkpoints"), "--seed", "0",
                 "--threads", "1", "--out", str(tmp_path / "metrics.json"), "--captions", str(tmp_path / "captions.json")]
    signal_during_step(monkeypatch, 5)  # 12 captions in batches of 4: the 2nd step of epoch 1
    with pytest.raises(SystemExit) as stopped:
        cli_main(arguments)
    assert stopped.value.code == training.EXIT_RESUME
    saved = torch.load(tmp_path / "checkpoints" / training.CHECKPOINT_NAME, weights_only=True)
    assert saved["position"] == {"epoch": 1, "step": 2} and saved["state"]["selection"]["scores"]  # epoch 0 scored
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.undo()
    torch.manual_seed(99)  # the retry must not depend on the state the stopped run left
    assert cli_main(arguments) == 0
    resumed, uninterrupted = read_json(tmp_path / "metrics.json"), read_json(straight / "metrics.json")
    for key in ("status", "metrics", "reasons", "training"):
        assert resumed[key] == uninterrupted[key], key
    assert resumed["provenance"]["selection"] == uninterrupted["provenance"]["selection"]
    assert read_json(tmp_path / "captions.json") == read_json(straight / "captions.json")


@needs_java
def test_the_cli_evaluates_the_starting_model_without_training(caption_data, tiny_blip_dir, tmp_path):
    index, _ = caption_data
    settings = dict(cfg.load(SMOKE_CONFIG)["captioning"], image_size=SIZE, device="cpu", eval_batch_size=4)
    cli("caption", "--index", index, "--model", tiny_blip_dir, "--settings", json.dumps(settings), "--threads", 1,
        "--out", tmp_path / "metrics.json", "--captions", tmp_path / "captions.json")
    run = read_json(tmp_path / "metrics.json")
    assert run["status"] == "ok" and not run["provenance"]["fine_tuned"] and "selection" not in run["provenance"]
    assert run["metrics"]["CIDEr"] is not None and run["metrics"]["SPICE"] is None
    assert sorted(read_json(tmp_path / "captions.json")) == ["test0", "test1", "test2"]


def test_the_cli_names_a_bad_model_directory(caption_data, tmp_path):
    index, _ = caption_data
    settings = dict(cfg.load(SMOKE_CONFIG)["captioning"], device="cpu")
    result = cli("caption", "--index", index, "--model", tmp_path / "missing", "--settings", json.dumps(settings),
                 "--out", tmp_path / "metrics.json", "--captions", tmp_path / "captions.json", check=False)
    assert result.returncode == 2 and "models.blip" in result.stderr and "Traceback" not in result.stderr


# ---- the workflow -------------------------------------------------------------------------


@pytest.mark.workflow
def test_paper_dry_run_fine_tunes_once_per_caption_mixture(tmp_path):
    overlay = paper_config_with_empty_roots(tmp_path)
    paper = cfg.load(overlay)
    counts = job_counts(snakemake("-n", "--configfile", overlay, "--", "table2", "table9", cwd=tmp_path).stdout)
    runs = {row["mixture"] for table in paper["tables"] if table["experiment"] == "caption" for row in table["rows"]}
    assert len(runs) == 11 and "pretrained" in runs  # Tables 2 and 9 share CO/SD-80%
    assert counts["caption_finetune"] == len(runs) - 1 == 10
    assert counts["caption_pretrained"] == 1
    assert "tiny_blip" not in counts


@pytest.mark.workflow
def test_smoke_dry_run_builds_the_tiny_blip(tmp_path):
    counts = job_counts(snakemake("-n", "--configfile", SMOKE_CONFIG, "--", "table2", cwd=tmp_path).stdout)
    assert counts["tiny_blip"] == 1 and counts["caption_finetune"] == 7 and counts["caption_pretrained"] == 1


def test_a_diverged_fine_tune_writes_null_metrics_with_the_reason(caption_data, tiny_blip_dir, tmp_path):
    index, manifest = caption_data
    settings = dict(cfg.load(SMOKE_CONFIG)["captioning"])
    settings.update(image_size=SIZE, global_batch_size=4, device="cpu", num_workers=0, select_by=[], lr=1e30)
    with torch.random.fork_rng(devices=[]):
        caption_experiment(settings, index, tiny_blip_dir, tmp_path / "metrics.json", tmp_path / "captions.json",
                           manifest=manifest, checkpoint_dir=tmp_path / "checkpoints", stop=StopAfterSteps())
    run = read_json(tmp_path / "metrics.json")
    assert run["status"] == "diverged" and set(run["metrics"].values()) == {None}
    diverged = run["training"]["diverged"]
    assert all(reason == f"training diverged: {diverged['reason']} at optimizer step {diverged['step']}"
               for reason in run["reasons"].values())
    assert diverged["reason"].startswith(("non-finite weights", "non-finite training loss"))
    assert read_json(tmp_path / "captions.json") == {}
