"""Sharded generation with the tiny pipeline: per-image seeds, atomic shards, merging, errors."""

import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from contamination.generation import generate
from contamination import records
from contamination.smoke import tiny_sd
from contamination.io import save_pretrained
from contamination.__main__ import main
from contamination.config import PROJECT_ROOT, load
from contamination.errors import ConfigError, DataError
from contamination.formats import GENERATED_COLUMNS, PROMPT_COLUMNS, parse_uri
from contamination.io import write_parquet
from contamination.generation.prompts import image_seed
from contamination.generation.shards import read_item, read_metadata
from helpers import environment

SIZE = 16
SHARD_SIZE = 4
BATCH_SIZE = 3  # shard 0 is made in batches of 3 and 1


@pytest.fixture(scope="module")
def settings():
    generation = load(PROJECT_ROOT / "config" / "smoke.yaml")["generation"]
    return dict(generation, steps=3, height=SIZE, width=SIZE, batch_size=BATCH_SIZE, shard_size=SHARD_SIZE)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny-sd"
    save_pretrained(tiny_sd.build_pipeline(0), out)
    return out


@pytest.fixture(scope="module")
def prompt_table(tmp_path_factory):
    """Seven rows, shards of four: class rows and caption rows (label -1)."""
    rows = [(f"sd_x_n0{label}_{k:05d}", label, f"n0{label}", f"n0{label}", f"A photo of class {label}")
            for label in range(2) for k in range(2)]
    rows += [(f"sd_x_coco_{k}", -1, "", f"coco_{k}", f"a caption number {k}") for k in range(3)]
    table = pd.DataFrame(rows, columns=PROMPT_COLUMNS[:-1])
    table["seed"] = [image_seed(0, "sd_x", item_id) for item_id in table["id"]]
    path = tmp_path_factory.mktemp("prompts") / "sd_x.parquet"
    write_parquet(table, path)
    return path


def generate_cli(prompt_table, pipeline_dir, shard, settings, out):
    return main(["generate", "--prompts", str(prompt_table), "--pipeline", str(pipeline_dir), "--shard", str(shard),
                 "--settings", json.dumps(settings), "--out", str(out)])


@pytest.fixture(scope="module")
def shards(tmp_path_factory, prompt_table, pipeline_dir, settings):
    directory = tmp_path_factory.mktemp("generated")
    paths = [directory / f"shard-{shard:05d}.zip" for shard in range(2)]
    for shard, path in enumerate(paths):
        assert generate_cli(prompt_table, pipeline_dir, shard, settings, path) == 0
    return paths


def pixels(encoded: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), dtype=np.int16)


def shard_pixels(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {member: pixels(archive.read(member)) for member in read_metadata(path)["member"]}


def test_shard_holds_its_rows_images_and_provenance(shards, prompt_table, pipeline_dir, settings):
    table = pd.read_parquet(prompt_table)
    metadata = read_metadata(shards[0])

    pd.testing.assert_frame_equal(metadata[PROMPT_COLUMNS], table.iloc[:SHARD_SIZE])
    assert metadata["member"].tolist() == [f"{item_id}.png" for item_id in table["id"].iloc[:SHARD_SIZE]]
    with zipfile.ZipFile(shards[0]) as archive:
        assert sorted(archive.namelist()) == sorted([*metadata["member"], "metadata.parquet"])
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    first = metadata.iloc[0]
    assert (first["scheduler"], first["steps"], first["guidance_scale"], first["height"]) == ("plms", 3, 7.5, SIZE)
    assert first["model_fingerprint"] == records.model_fingerprint(pipeline_dir)
    assert json.loads(first["versions"])["diffusers"] == "0.42.1"
    assert not metadata["nsfw_detected"].any()
    assert read_metadata(shards[1])["id"].tolist() == table["id"].iloc[SHARD_SIZE:].tolist()


def test_image_regenerated_alone_equals_its_shard_pixels(shards, prompt_table, pipeline_dir, settings):
    row = pd.read_parquet(prompt_table).iloc[2]  # the last image of shard 0's first batch
    pipeline = generate.load_pipeline(pipeline_dir, settings)
    alone, _ = generate.generate_images(pipeline, [row["prompt"]], [row["seed"]], settings)
    other_seed, _ = generate.generate_images(pipeline, [row["prompt"]], [row["seed"] + 1], settings)

    in_shard = shard_pixels(shards[0])[f"{row['id']}.png"]
    # Float rounding differs by ~1e-6 between batch compositions: at most one 8-bit level.
    assert np.abs(pixels_of(alone[0]) - in_shard).max() <= 1
    assert np.abs(pixels_of(other_seed[0]) - in_shard).mean() > 5  # the seed does matter


def pixels_of(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_batch_size_does_not_change_the_images(shards, prompt_table, pipeline_dir, settings, tmp_path):
    out = tmp_path / "shard-00000.zip"
    assert generate_cli(prompt_table, pipeline_dir, 0, dict(settings, batch_size=2), out) == 0

    reference, rebatched = shard_pixels(shards[0]), shard_pixels(out)
    assert reference.keys() == rebatched.keys()
    for member, image in reference.items():
        assert np.abs(rebatched[member] - image).max() <= 1, member


def test_rerun_gives_identical_bytes(shards, prompt_table, pipeline_dir, settings, tmp_path):
    out = tmp_path / "shard-00001.zip"
    assert generate_cli(prompt_table, pipeline_dir, 1, settings, out) == 0
    assert out.read_bytes() == shards[1].read_bytes()


class FailsOnSecondBatch:
    """A pipeline that is interrupted after its first batch, like a job killed mid-shard."""

    def __init__(self, pipeline):
        self.pipeline, self.calls = pipeline, 0

    def __call__(self, **arguments):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt("killed")
        return self.pipeline(**arguments)


def test_interrupted_shard_leaves_nothing_and_a_rerun_completes_it(
    shards, prompt_table, pipeline_dir, settings, tmp_path
):
    out = tmp_path / "shard-00000.zip"
    pipeline = generate.load_pipeline(pipeline_dir, settings)
    rows = pd.read_parquet(prompt_table).iloc[:SHARD_SIZE]
    provenance = generate.generation_provenance(pipeline_dir, settings, pipeline.device)
    interrupted = FailsOnSecondBatch(pipeline)
    with pytest.raises(KeyboardInterrupt):
        generate.write_generated_shard(interrupted, rows, settings, provenance, out)

    assert interrupted.calls == 2
    assert list(tmp_path.iterdir()) == []
    # A SIGKILL would skip the clean-up: the rerun removes what such a run leaves behind.
    stale = tmp_path / ".shard-00000.zip.killed.tmp"
    stale.write_bytes(b"half a shard")
    assert generate_cli(prompt_table, pipeline_dir, 0, settings, out) == 0
    assert [path.name for path in tmp_path.iterdir()] == ["shard-00000.zip"]
    assert out.read_bytes() == shards[0].read_bytes()


def test_without_posix_locks_a_generator_keeps_temporaries_that_may_be_live(
    shards, prompt_table, pipeline_dir, settings, tmp_path, monkeypatch, capsys
):
    import errno
    import fcntl

    def no_locks(*arguments):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    out = tmp_path / "shard-00000.zip"
    maybe_live = tmp_path / ".shard-00000.zip.other.tmp"  # a requeued job's twin may be writing it
    maybe_live.write_bytes(b"being written")
    assert generate_cli(prompt_table, pipeline_dir, 0, settings, out) == 0
    assert "this file system has no POSIX locks" in capsys.readouterr().err
    assert maybe_live.exists() and out.read_bytes() == shards[0].read_bytes()


# The first generator: the real command, paused before its first batch (its shard's temporary
# file exists) until the test creates the file "go".
PAUSED_GENERATOR = """
import pathlib, sys, time
from contamination.generation import generate
from contamination.__main__ import main

ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
generate_images = generate.generate_images

def paused(*args, **kwargs):
    ready.touch()
    while not go.exists():
        time.sleep(0.05)
    return generate_images(*args, **kwargs)

generate.generate_images = paused
sys.exit(main(sys.argv[3:]))
"""


def test_a_second_generator_of_a_shard_stops_and_leaves_the_first_intact(
    shards, prompt_table, pipeline_dir, settings, tmp_path, capsys
):
    out = tmp_path / "shards" / "shard-00000.zip"
    ready, go = tmp_path / "ready", tmp_path / "go"
    # The thread count moves pixels and is recorded per row: the first generator uses the fixture's.
    threads = str(read_metadata(shards[0])["torch_threads"].iloc[0])
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_GENERATOR, str(ready), str(go), "generate", "--prompts", str(prompt_table),
         "--pipeline", str(pipeline_dir), "--shard", "0", "--settings", json.dumps(settings), "--out", str(out)],
        env=environment() | {"OMP_NUM_THREADS": threads}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.poll() else "slow"
            time.sleep(0.05)
        live = list(out.parent.glob(".shard-00000.zip.*.tmp"))
        assert len(live) == 1  # the first generator's shard in progress

        assert generate_cli(prompt_table, pipeline_dir, 0, settings, out) == 2
        message = capsys.readouterr().err
        assert f"shard 0 ({out}) is being written by another live process, which holds the lock " \
               f"{out.parent / '.shard-00000.zip.lock'}" in message
        assert live[0].exists() and not out.exists()
    finally:
        go.touch()
        output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert out.read_bytes() == shards[0].read_bytes()
    assert [path.name for path in out.parent.iterdir()] == ["shard-00000.zip"]


def test_merge_gives_unique_ids_and_readable_uris(shards, prompt_table, tmp_path):
    out = tmp_path / "index.parquet"
    assert main(["merge-shards", *map(str, shards), "--out", str(out)]) == 0
    index = pd.read_parquet(out)
    table = pd.read_parquet(prompt_table)

    assert list(index.columns) == GENERATED_COLUMNS
    assert index["id"].tolist() == table["id"].tolist() and index["id"].is_unique
    is_caption = index["label"] == -1
    assert (index.loc[is_caption, "caption"] == index.loc[is_caption, "prompt"]).all()
    assert (index.loc[~is_caption, "caption"] == "").all()
    for uri in index["uri"]:
        path, member = parse_uri(uri)
        assert path in {str(shard) for shard in shards} and member.endswith(".png")
        image = Image.open(io.BytesIO(read_item(uri)))
        assert image.size == (SIZE, SIZE) and image.mode == "RGB"


def test_merge_rejects_repeated_ids(shards, tmp_path):
    with pytest.raises(DataError, match=r"4 ids occur more than once: sd_x_n00_00000 in zip://"):
        generate.merge_shards([shards[0], shards[0]])


def test_jpeg_members(prompt_table, pipeline_dir, settings, tmp_path):
    out = tmp_path / "shard-00001.zip"
    assert generate_cli(prompt_table, pipeline_dir, 1, dict(settings, image_format="jpeg", image_quality=80), out) == 0
    member = read_metadata(out)["member"].iloc[0]
    assert member.endswith(".jpg")
    with zipfile.ZipFile(out) as archive:
        assert Image.open(io.BytesIO(archive.read(member))).format == "JPEG"


def test_samplers_use_the_compvis_timesteps(pipeline_dir, settings):
    from diffusers import DDIMScheduler, PNDMScheduler

    base = generate.load_pipeline(pipeline_dir, settings).scheduler.config
    compvis_timesteps = set(range(1, 1000, 20))  # CompVis: range(0, 1000, 1000 // 50) + 1
    for name, scheduler_class in [("plms", PNDMScheduler), ("ddim", DDIMScheduler)]:
        scheduler = generate.make_scheduler(name, base)
        scheduler.set_timesteps(50)
        assert isinstance(scheduler, scheduler_class)
        assert set(scheduler.timesteps.tolist()) == compvis_timesteps
        assert scheduler.config.set_alpha_to_one is False


@pytest.mark.parametrize(
    ("settings_change", "pipeline_missing", "shard", "message"),
    [
        ({"watermark": True}, False, 0, "error: generation.watermark: true is not supported"),
        ({"safety_checker": True}, False, 0, "error: generation.safety_checker: true, but the pipeline"),
        ({}, True, 0, "error: models.stable_diffusion: '.*missing' does not exist"),
        ({}, False, 2, r"error: .*sd_x\.parquet: has 7 rows, 2 shards of generation.shard_size 4; there is no shard 2"),
    ],
)
def test_bad_inputs_name_the_key(
    settings_change, pipeline_missing, shard, message, prompt_table, pipeline_dir, settings, tmp_path, capsys
):
    out = tmp_path / "shard.zip"
    pipeline = tmp_path / "missing" if pipeline_missing else pipeline_dir

    assert generate_cli(prompt_table, pipeline, shard, dict(settings, **settings_change), out) == 2
    assert re.match(message, capsys.readouterr().err)
    assert not out.exists()


def test_speed_options_change_pixels_by_float_rounding_only(prompt_table, pipeline_dir, settings):
    rows = pd.read_parquet(prompt_table).head(2)
    default = generate.load_pipeline(pipeline_dir, settings)
    fast = generate.load_pipeline(pipeline_dir, dict(settings, channels_last=True))
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    expected, _ = generate.generate_images(default, rows["prompt"], rows["seed"], settings)
    images, _ = generate.generate_images(fast, rows["prompt"], rows["seed"], settings)
    for image, reference in zip(images, expected):
        assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).max() <= 2


def test_unknown_matmul_precision_names_its_key(settings):
    with pytest.raises(ConfigError, match="generation.matmul_precision"):
        generate.check_settings(dict(settings, matmul_precision="fast"))
