"""Outputs appear complete or not at all, readable as the umask says, with reproducible bytes."""

import os

import pandas as pd
import pytest

from contamination.errors import Locked
from contamination.io import atomic_path, exclusive_lock, remove_stale_temporaries, write_parquet
from helpers import lock_holder


def test_failed_write_leaves_nothing(tmp_path):
    final = tmp_path / "out" / "table.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_written_file_follows_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "shared.txt") as temporary:
            temporary.write_text("ok")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644


def test_same_rows_same_bytes(tmp_path):
    frame = pd.DataFrame({"id": ["b", "a"], "label": [1, 0]})
    write_parquet(frame, tmp_path / "one.parquet")
    write_parquet(frame.copy(), tmp_path / "two.parquet")
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()


def test_a_lock_held_by_a_live_process_stops_the_second_and_dies_with_its_holder(tmp_path):
    out = tmp_path / "shard-00000.zip"
    holder = lock_holder(out)
    try:
        expected = (r"the output is being written by another live process, "
                    r"which holds the lock .*/\.shard-00000\.zip\.lock;")
        with pytest.raises(Locked, match=expected):
            with exclusive_lock(out, "the output"):
                pass
    finally:
        holder.kill()  # like a job killed mid-write: nothing releases the lock but the kernel
        holder.wait()
    with exclusive_lock(out, "the output"):
        assert (tmp_path / ".shard-00000.zip.lock").exists()
    assert list(tmp_path.iterdir()) == []  # the holder removes the lock file when it is done


def test_stale_temporaries_of_one_output_are_removed(tmp_path):
    out = tmp_path / "a[1].zip"  # glob characters in the name match literally
    with atomic_path(out) as temporary:
        stale = temporary.with_name(temporary.name.replace(".zip.", ".zip.killed"))
    stale.write_bytes(b"half")
    others = [tmp_path / ".a1.zip.killed.tmp", tmp_path / ".a[1].zip.lock", out]
    for path in others:
        path.write_bytes(b"keep")
    remove_stale_temporaries(out)
    assert not stale.exists() and all(path.exists() for path in others)
