"""Shard members read back byte for byte, in any order, without holding shards open."""

import os
import random
import zipfile

import pandas as pd

from contamination.generation import shards
from contamination.formats import shard_uri


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


def test_members_read_back_exactly_without_keeping_files_open(tmp_path):
    paths = []
    for number in range(20):
        path = tmp_path / f"shard-{number:05d}.zip"
        images = [(f"{number}_{member}.png", os.urandom(50 + member)) for member in range(30)]
        shards.write_shard(path, images, pd.DataFrame({"member": [name for name, _ in images]}))
        paths.append(path)
    reader = shards.ShardReader()
    before = open_descriptors()
    requests = [(path, f"{number}_{member}.png") for number, path in enumerate(paths) for member in range(30)]
    random.Random(0).shuffle(requests)
    for path, member in requests:
        with zipfile.ZipFile(path) as archive:
            assert reader.read(str(path), member) == archive.read(member)
    assert open_descriptors() == before


def test_read_item_reads_files_and_shard_members(tmp_path):
    loose = tmp_path / "image.jpg"
    loose.write_bytes(b"loose bytes")
    shards.write_shard(tmp_path / "shard.zip", [("a.png", b"member bytes")], pd.DataFrame({"member": ["a.png"]}))
    assert shards.read_item(str(loose)) == b"loose bytes"
    assert shards.read_item(shard_uri(tmp_path / "shard.zip", "a.png")) == b"member bytes"
