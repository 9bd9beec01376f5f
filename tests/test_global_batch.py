"""Recipes hold at any process count (issue 14 items 3 and 7): every trainer runs for real with
1 and with 2 CPU processes (torchrun, gloo) on the same config, a global batch that one process
takes in more accumulation steps than two, and both runs take the same optimizer steps on the same
learning-rate schedule (the StepWatch record: step count, first and last rate and a digest of all)
and load the same number of items (steps x global batch: each step took the whole batch); the
record names the world size, per-process batch and accumulation steps."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import contamination
import imagesets
from contamination import config as cfg
from contamination.io import read_json, save_pretrained, write_parquet
from helpers import SMOKE_CONFIG, environment

SOURCES = Path(contamination.__file__).resolve().parents[1]
HARNESS = Path(__file__).with_name("trainer_under_torchrun.py")
SIZE = 32
GLOBAL_BATCH = 8
MAX_PER_PROCESS = 2  # 1 process: 2 images x 4 accumulation steps; 2 processes: 2 x 2


def torchrun(processes: int, *arguments, check=True):
    """``python -m torch.distributed.run --standalone`` with this worktree's sources first."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               *map(str, arguments)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env=environment() | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(SOURCES)})
    if check:
        assert result.returncode == 0, f"{processes} process(es):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def run_trainer(trainer: str, inputs: dict, processes: int, directory: Path) -> dict:
    """The trainer's StepWatch record (``training`` of training.json for iddpm-train), with
    ``items``: the dataset items all processes loaded."""
    directory = directory / f"{trainer}-{processes}"
    directory.mkdir()
    inputs = dict(inputs, checkpoints=str(directory / "checkpoints"))
    (directory / "inputs.json").write_text(json.dumps(inputs))
    torchrun(processes, HARNESS, trainer, directory / "inputs.json", directory / "record.json")
    if trainer == "iddpm-train":
        status = read_json(directory / "training.json")
        assert status["status"] == "ok" and status["provenance"]["world_size"] == processes
        record = status["training"]
    else:
        record = json.loads((directory / "record.json").read_text())
    items = sum(int((directory / f"record.json.items-{rank}").read_text()) for rank in range(processes))
    return dict(record, items=items)


def assert_same_optimisation(records: dict, global_batch: int, steps: int, items: int,
                             max_per_process: int = MAX_PER_PROCESS):
    share = {1: global_batch, 2: global_batch // 2}
    assert {processes: record["items"] for processes, record in records.items()} == {1: items, 2: items}, \
        "the processes did not load the global batch for every optimizer step"
    for processes, record in records.items():
        assert record["batch"] == {
            "global_batch_size": global_batch, "world_size": processes, "per_process_batch": max_per_process,
            "accumulation_steps": share[processes] // max_per_process}, f"{processes} process(es)"
        assert record["optimizer_steps"] == steps, f"{processes} process(es): {record['optimizer_steps']} steps"
    assert records[1]["learning_rate"] == records[2]["learning_rate"], "the learning-rate schedules differ"


@pytest.fixture(scope="module")
def class_data(tmp_path_factory):
    """32 training images of 4 colour classes (a manifest and an ImageNet-like index with 8 val images)."""
    directory = tmp_path_factory.mktemp("classes")
    pictures, labels = imagesets.class_images(40, classes=4, size=SIZE, seed=0)
    paths = imagesets.write_images(directory / "files", pictures, "img")
    return {"manifest": str(imagesets.manifest(directory / "mixture.parquet", paths[:32], labels[:32])),
            "imagenet": str(imagesets.source_index(directory / "imagenet.parquet", paths, labels,
                                                   ["train"] * 32 + ["val"] * 8))}


def test_classifier_1_and_2_processes_take_the_same_steps_and_schedule(class_data, tmp_path):
    recipe = dict(cfg.load()["classification"]["models"]["resnet50"], epochs=2, global_batch_size=GLOBAL_BATCH,
                  max_batch_per_process=MAX_PER_PROCESS, lr=0.01, lr_step_size=1, lr_gamma=0.5, model_ema=True,
                  model_ema_steps=1, train_crop_size=SIZE, val_resize_size=SIZE, val_crop_size=SIZE)
    spec = {"model": "resnet18", "recipe": recipe, "num_classes": 4, "seed": 0, "device": "cpu", "num_workers": 0,
            "print_freq": 100, "keep_checkpoint": True}
    inputs = {"spec": spec, "manifest": class_data["manifest"]}
    records = {processes: run_trainer("classify", inputs, processes, tmp_path) for processes in (1, 2)}
    # 32 images / 8 per step = 4 steps per epoch, 2 epochs; StepLR halves the rate after epoch 0.
    assert_same_optimisation(records, GLOBAL_BATCH, steps=8, items=64)
    assert (records[1]["learning_rate"]["first"], records[1]["learning_rate"]["last"]) == (0.01, 0.005)


def test_blip_fine_tuning_1_and_2_processes_take_the_same_steps_and_schedule(tmp_path):
    from contamination.smoke.tiny_blip import build_tiny_blip

    pictures, labels = imagesets.class_images(4, classes=4, size=SIZE, seed=1)
    paths = imagesets.write_images(tmp_path / "files", pictures, "cap")
    captions = [f"a {word} square" for word in ("red", "green", "blue", "grey")]
    rows = [{"id": f"{number}_{copy}", "uri": path, "label": -1, "caption": f"{captions[number]} {copy}",
             "origin": "coco"} for number, path in enumerate(paths) for copy in range(2)]
    write_parquet(pd.DataFrame(rows), tmp_path / "manifest.parquet")
    save_pretrained(build_tiny_blip([row["caption"] for row in rows] + ["a picture of "], seed=0, image_size=SIZE),
                    tmp_path / "tiny-blip")
    settings = dict(cfg.load(SMOKE_CONFIG)["captioning"],
                    image_size=SIZE, epochs=2, global_batch_size=4, max_batch_per_process=1, select_by=[],
                    device="cpu", num_workers=0, log_every=100, lr=1e-3)
    inputs = {"settings": settings, "model": str(tmp_path / "tiny-blip"), "manifest": str(tmp_path / "manifest.parquet")}
    records = {processes: run_trainer("caption", inputs, processes, tmp_path) for processes in (1, 2)}
    # 8 captions / 4 per step = 2 steps per epoch, 2 epochs; the cosine halves the rate after epoch 0.
    assert_same_optimisation(records, 4, steps=4, items=16, max_per_process=1)
    assert (records[1]["learning_rate"]["first"], records[1]["learning_rate"]["last"]) == pytest.approx((1e-3, 5e-4))


def test_iddpm_1_and_2_processes_take_the_same_steps_and_record_the_split_in_training_json(tmp_path):
    images = tmp_path / "images.npy"
    np.save(images, np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    (tmp_path / "manifest.parquet").write_bytes(b"identity only")
    spec = {"image_size": 16, "unet": {"block_out_channels": [16, 32], "layers_per_block": 1,
                                       "attention_resolutions": [8], "attention_head_dim": 16, "norm_num_groups": 8},
            "iterations": 3, "global_batch_size": GLOBAL_BATCH, "max_batch_per_process": MAX_PER_PROCESS,
            "lr": 1e-3, "ema_decay": 0.9, "seed": 0, "num_workers": 0, "device": "cpu", "log_every": 100}
    records = {}
    for processes in (1, 2):
        out = tmp_path / f"iddpm-train-{processes}"
        arguments = ["--spec", json.dumps(spec), "--images", images, "--manifest", tmp_path / "manifest.parquet",
                     "--out", out / "model", "--status", out / "training.json", "--checkpoint-dir", out / "checkpoints"]
        records[processes] = run_trainer("iddpm-train", {"arguments": list(map(str, arguments))}, processes, tmp_path)
    # 16 images / 8 per step: 2 steps per epoch, so the third step starts a second epoch.
    assert_same_optimisation(records, GLOBAL_BATCH, steps=3, items=3 * GLOBAL_BATCH)


@pytest.fixture(scope="module")
def mae_specs():
    model = {"image_size": SIZE, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "decoder_hidden_size": 32, "decoder_num_hidden_layers": 1,
             "decoder_num_attention_heads": 4, "decoder_intermediate_size": 64}
    run = {"seed": 0, "device": "cpu", "num_workers": 0, "print_freq": 100, "keep_checkpoint": False}
    pretrain = cfg.with_defaults("mae.pretrain", {"epochs": 2, "warmup_epochs": 1, "global_batch_size": 16,
                                                  "max_batch_per_process": 4, "amp": False})
    probe = cfg.with_defaults("mae.linear_probe", {"epochs": 2, "warmup_epochs": 1, "global_batch_size": 16,
                                                   "max_batch_per_process": 4, "val_resize_size": 36, "amp": False})
    return {"pretrain": dict(run, model=cfg.with_defaults("mae.model", model), pretrain=pretrain),
            "probe": dict(run, linear_probe=probe, num_classes=4)}


def test_mae_pretraining_1_and_2_processes_take_the_same_steps_and_schedule(class_data, mae_specs, tmp_path):
    inputs = {"spec": mae_specs["pretrain"], "manifest": class_data["manifest"]}
    records = {processes: run_trainer("mae-pretrain", inputs, processes, tmp_path) for processes in (1, 2)}
    # 32 images / 16 per step = 2 steps per epoch, 2 epochs, the lr set every step (warmup, cosine).
    assert_same_optimisation(records, 16, steps=4, items=64, max_per_process=4)
    assert records[1]["learning_rate"]["first"] == 0.0 and records[1]["learning_rate"]["last"] > 0


def test_mae_linear_probe_1_and_2_processes_take_the_same_steps_and_schedule(class_data, mae_specs, tmp_path):
    from contamination.experiments import mae

    save_pretrained(mae.build_mae(mae_specs["pretrain"]["model"], mae_specs["pretrain"]["pretrain"]),
                    tmp_path / "pretrained")
    inputs = {"spec": mae_specs["probe"], "pretrained": str(tmp_path / "pretrained"),
              "imagenet": class_data["imagenet"]}
    records = {processes: run_trainer("mae-linear-probe", inputs, processes, tmp_path) for processes in (1, 2)}
    # 4 steps of 16 training images, then the 8 val images scored once.
    assert_same_optimisation(records, 16, steps=4, items=4 * 16 + 8, max_per_process=4)
    assert records[1]["learning_rate"]["first"] == 0.0 and records[1]["learning_rate"]["last"] > 0


def test_a_global_batch_the_gpus_cannot_share_fails_before_training_with_the_numbers(class_data, tmp_path):
    spec = {"model": "resnet18", "num_classes": 4, "seed": 0, "device": "cpu", "num_workers": 0, "print_freq": 100,
            "keep_checkpoint": True,
            "recipe": dict(cfg.load()["classification"]["models"]["resnet50"], global_batch_size=7)}
    (tmp_path / "inputs.json").write_text(json.dumps({"spec": spec, "manifest": class_data["manifest"],
                                                      "checkpoints": str(tmp_path / "checkpoints")}))
    result = torchrun(2, HARNESS, "classify", tmp_path / "inputs.json", tmp_path / "record.json", check=False)
    assert result.returncode != 0
    assert ("classification.models.resnet18.global_batch_size: 7 images do not split over 2 processes "
            "(7 / 2 = 3.5 per process)") in result.stdout + result.stderr
    assert "training resnet18" not in result.stdout  # refused before training started
