"""Atomic, deterministic writing of outputs.

Every output is written under a temporary name in its own directory and renamed into place only
when complete, so a killed job never leaves a half-written file under the final name and a rerun
starts clean. Parquet files are written without pandas index metadata or timestamps, so the same
rows give the same bytes.
"""

import contextlib
import glob
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from contamination.errors import DataError, Locked


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


def remove_stale_temporaries(final_path) -> None:
    """Delete the temporary files ``atomic_path`` left beside ``final_path`` when a kill skipped
    its clean-up. Only while ``exclusive_lock(final_path)`` holds the lock (yields True): a live
    writer's temporary looks the same."""
    final_path = Path(final_path)
    for stale in final_path.parent.glob(f".{glob.escape(final_path.name)}.*.tmp"):
        print(f"removing {stale}, left by an interrupted run", flush=True)
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(final_path, what: str):
    """Hold the lock file ``.<name>.lock`` beside ``final_path`` for the block, so one process at
    a time writes it (e.g. a requeued SLURM job while the old one still runs); raise Locked,
    naming ``what`` and the lock file, if another live process holds it.

    An fcntl (POSIX) lock, not the file's existence: the kernel releases it when its holder exits
    or is killed, so a killed job never blocks its retry. Across the nodes of a cluster that needs
    a file system with working POSIX locks (NFSv4, NFSv3 with lockd, GPFS, BeeGFS, Lustre mounted
    with ``-o flock``); where locking fails (ENOLCK, ENOSYS) a warning says the guard is off.
    Yields whether the lock is held: without it, another process may be writing, so its
    temporaries must not be taken for stale ones.
    """
    import fcntl

    final_path = Path(final_path)
    lock_path = final_path.parent / f".{final_path.name}.lock"
    final_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock_path, "a")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: another process holds it
            handle.close()
            raise Locked(f"{what} is being written by another live process, which holds the lock {lock_path}; "
                         "this one stops (wait for that process, or end it, and run again)") from None
        except OSError as error:
            print(f"warning: cannot lock {lock_path} ({error.strerror}): this file system has no POSIX locks, "
                  f"so a second process writing {what} would not be detected, and temporaries left beside it "
                  "by killed runs are kept (they may be a live process's)", file=sys.stderr, flush=True)
            handle.close()
            yield False
            return
        # The holder before us may have removed the file after we opened it: lock the current one.
        try:
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield True
    finally:
        lock_path.unlink(missing_ok=True)  # still held: nobody else can be using it
        handle.close()


@contextlib.contextmanager
def atomic_directory(final_path):
    """Yield a temporary directory next to ``final_path``; it replaces ``final_path`` (and
    whatever was there) only if the block succeeds."""
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
