"""Tiny image sets on disk for the MAE, detection and spectra tests: PNG files plus the tables
the workflow passes between stages (source index, generated index, manifest; formats.py)."""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def write_images(directory, images, prefix: str) -> list:
    """Save uint8 HxWx3 arrays as PNG files; return their absolute paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, array in enumerate(images):
        path = directory / f"{prefix}{number:04d}.png"
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
        paths.append(str(path.resolve()))
    return paths


def source_index(path, image_paths, labels, splits, wnids=None) -> Path:
    """A source index (formats.INDEX_COLUMNS) of the given images; ``wnids[label]`` is a class's
    wnid (default: made-up ``n<label>``)."""
    ids = [Path(image).stem for image in image_paths]
    frame = pd.DataFrame({
        "id": ids, "path": image_paths, "label": np.asarray(labels, dtype=np.int64),
        "wnid": [wnids[label] if wnids else f"n{label:08d}" for label in labels], "caption": "", "image_id": ids, "split": list(splits),
    })
    frame.to_parquet(path, index=False)
    return Path(path)


def generated_index(path, image_paths, labels) -> Path:
    """A generated-dataset index (formats.GENERATED_COLUMNS) whose URIs are plain files."""
    ids = [Path(image).stem for image in image_paths]
    frame = pd.DataFrame({
        "id": ids, "label": np.asarray(labels, dtype=np.int64), "wnid": [f"n{label:08d}" for label in labels],
        "source_id": [f"n{label:08d}" for label in labels], "prompt": "A photo of a thing",
        "seed": np.arange(len(ids), dtype=np.int64), "caption": "", "uri": image_paths,
    })
    frame.to_parquet(path, index=False)
    return Path(path)


def manifest(path, image_paths, labels) -> Path:
    """A mixture manifest (formats.MANIFEST_COLUMNS) of the given images."""
    frame = pd.DataFrame({
        "id": [Path(image).stem for image in image_paths], "uri": image_paths,
        "label": np.asarray(labels, dtype=np.int64), "caption": "", "origin": "imagenet",
    })
    frame.to_parquet(path, index=False)
    return Path(path)


def class_images(count: int, classes: int, size: int, seed: int):
    """(images, labels): noisy images whose mean colour tells their class apart."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    palette = rng.integers(30, 226, size=(classes, 3))
    noise = rng.normal(0, 20, size=(count, size, size, 3))
    images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return list(images), labels
