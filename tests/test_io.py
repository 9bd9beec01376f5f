"""Outputs appear complete or not at all, readable as the umask says, with reproducible bytes."""

import os

import pandas as pd
import pytest

from contamination.io import atomic_path, write_parquet


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
