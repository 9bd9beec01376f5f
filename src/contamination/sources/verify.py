"""Checking that every indexed image decodes, before any training job meets a broken file.

A decode per file is the only check that catches truncated downloads; at ImageNet scale (1.28M
files) it runs in a process pool, and JPEGs are decoded in PIL's draft mode (libjpeg's DCT
scaling), which still reads every byte of the stream but skips most of the pixel work.
"""

import multiprocessing
import sys

from contamination.data import to_rgb8

PROGRESS_EVERY = 100_000
# JPEG draft target: libjpeg scales by 1/8 at most, so this asks for the smallest decode.
DRAFT_SIZE = (1, 1)


def image_error(path: str):
    """Why the image at ``path`` cannot be decoded to 8-bit RGB, or None if it can."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", DRAFT_SIZE)
            to_rgb8(image)  # the conversion every reader of the index makes
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(error).__name__}: {error}"
    return None


def unreadable_images(paths: list, workers: int, stop_at_first: bool) -> dict:
    """``{path: reason}`` of the images in ``paths`` that do not decode."""
    failures = {}
    if workers > 1 and len(paths) > 1:
        # Big chunks keep the per-task overhead small; a few per worker keep the load balanced.
        chunksize = max(1, min(1024, len(paths) // (workers * 8)))
        # spawn, not fork: the parent holds pyarrow's thread pools, and forking a threaded
        # process can deadlock a child; the workers import only PIL.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            collect(paths, pool.imap(image_error, paths, chunksize=chunksize), failures, stop_at_first)
    else:
        collect(paths, map(image_error, paths), failures, stop_at_first)
    return failures


def collect(paths, errors, failures: dict, stop_at_first: bool) -> None:
    for count, (path, error) in enumerate(zip(paths, errors), start=1):
        if error is not None:
            failures[path] = error
            if stop_at_first:
                return
        if count % PROGRESS_EVERY == 0:
            print(f"checked {count}/{len(paths)} images, {len(failures)} unreadable", file=sys.stderr, flush=True)
