"""Atomic, deterministic writing of outputs.

Every output is written under a temporary name in its own directory and renamed into place only
when complete, so a killed job never leaves a half-written file under the final name and a rerun
starts clean. Parquet files are written without pandas index metadata or timestamps, so the same
rows give the same bytes.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final_path):
    """Yield a temporary path next to ``final_path``; rename it there only if the block succeeds."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent
    )
    os.close(descriptor)
    temporary = Path(temporary)
    # mkstemp creates 0600 files; outputs on a shared cluster file system follow the umask instead.
    umask = os.umask(0)
    os.umask(umask)
    temporary.chmod(0o666 & ~umask)
    try:
        yield temporary
        os.replace(temporary, final_path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(final_path):
    """Yield a temporary directory next to ``final_path``; it replaces ``final_path`` (and
    whatever was there) only if the block succeeds."""
    import shutil

    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent))
    # mkdtemp makes it private; the directory should be like any other folder (the umask's).
    umask = os.umask(0)
    os.umask(umask)
    temporary.chmod(0o777 & ~umask)
    try:
        yield temporary
        if final_path.exists():
            # A directory cannot be renamed over another: move the old one aside first.
            stale = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.", suffix=".old", dir=final_path.parent))
            os.replace(final_path, stale / final_path.name)
            os.replace(temporary, final_path)
            shutil.rmtree(stale)
        else:
            os.replace(temporary, final_path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# Left in every directory the workflow builds in place of data or models a user could own
# (synthetic datasets, tiny models): only a directory holding it may be replaced.
OWNER_MARKER = ".written-by-contamination"


def require_replaceable(path) -> None:
    """A DataError naming ``path`` unless it is absent, an empty directory, or a directory this
    package wrote (it holds OWNER_MARKER): anything else may be the user's data or weights."""
    from contamination.errors import DataError

    path = Path(path)
    if not os.path.lexists(path):
        return
    if not path.is_dir() or path.is_symlink():
        raise DataError(f"'{path}' already exists: not replacing it (it may be your data or weights). "
                        "Choose another path, or remove it yourself.")
    if any(path.iterdir()) and not (path / OWNER_MARKER).is_file():
        raise DataError(f"'{path}' is a non-empty directory that contamination did not write (no {OWNER_MARKER} "
                        "in it): not replacing it or writing into it. Choose another path, or remove it yourself.")


@contextlib.contextmanager
def owned_directory(final_path):
    """``atomic_directory`` for a directory that could be mistaken for the user's: refuses to
    replace one it did not write (require_replaceable) and marks what it writes as its own."""
    require_replaceable(final_path)
    with atomic_directory(final_path) as directory:
        yield directory
        (directory / OWNER_MARKER).write_text("Written by python -m contamination; it may replace this directory.\n")
        require_replaceable(final_path)  # still ours after the (possibly long) build


def save_pretrained(model, out, owned: bool = False) -> None:
    """``model.save_pretrained`` (a transformers or diffusers model or pipeline) into ``out``,
    atomically: written to a temporary directory beside it, then renamed into place. ``owned``:
    through ``owned_directory`` (for models built in place of ones a user could own)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    with (owned_directory if owned else atomic_directory)(out) as directory:
        model.save_pretrained(directory, safe_serialization=True)


def write_parquet(table, path) -> None:
    """Write a pandas DataFrame or an Arrow table to Parquet atomically and byte-reproducibly.

    Without dictionary encoding: most of our string columns (ids, paths, URIs, captions) are
    unique, where Parquet's dictionary pages only overflow and fall back, and reading such a
    column took 1.7x as long; zstd still compresses repeated values (labels, origins) to little. No
    column statistics: nothing filters row groups by them, and they cost a sixth of the writing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as temporary:
        pq.write_table(table.replace_schema_metadata(None), temporary, compression="zstd", use_dictionary=False,
                       write_statistics=False)


def read_parquet(path):
    import pandas as pd

    return pd.read_parquet(path)


def write_json(data, path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())
