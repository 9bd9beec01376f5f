"""What every adapter shares: finding files, the class table, and turning rows into an index."""

import os
from pathlib import Path

from contamination.errors import DataError
from contamination.formats import INDEX_COLUMNS, NO_LABEL

# Suffixes of the image files found by listing folders (compared lower-case): ImageNet has
# .JPEG, ImageNet-A/-R and WebVision .jpg, some re-distributions .png.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def require_dir(path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{what}: directory '{path}' does not exist")
    return path


def require_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: file '{path}' does not exist")
    return path


def subdirectories(directory: Path) -> list:
    with os.scandir(directory) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


def image_files(directory: Path) -> list:
    """Names of the image files directly in ``directory``, sorted (scandir: one syscall per
    folder, which matters for ImageNet's 1.28M files)."""
    with os.scandir(directory) as entries:
        return sorted(
            entry.name
            for entry in entries
            if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file()
        )


def read_class_table(path) -> dict:
    """The ImageNet class table written by ``classes``, as ``{wnid: label}``."""
    import pandas as pd

    if path is None:
        raise DataError("this source has class labels: pass the ImageNet class table with --classes")
    table = pd.read_parquet(require_file(path, "ImageNet class table"), columns=["label", "wnid"])
    return dict(zip(table["wnid"], table["label"].astype(int)))


def class_label(classes: dict, wnid: str, where) -> int:
    if wnid not in classes:
        raise DataError(f"{where}: class '{wnid}' is not in the ImageNet class table ({len(classes)} classes)")
    return classes[wnid]


def class_row(item_id: str, path: Path, wnid: str, label: int, split: str) -> dict:
    return {
        "id": item_id, "path": str(path), "label": label, "wnid": wnid,
        "caption": "", "image_id": item_id, "split": split,
    }


def caption_row(item_id: str, path: Path, caption: str, image_id: str, split: str) -> dict:
    return {
        "id": item_id, "path": str(path), "label": NO_LABEL, "wnid": "",
        "caption": caption, "image_id": image_id, "split": split,
    }


def index_frame(rows: list, where):
    """The rows as an index DataFrame (formats.INDEX_COLUMNS); ids must be unique."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    frame["label"] = frame["label"].astype("int64")
    duplicated = frame["id"][frame["id"].duplicated()]
    if len(duplicated):
        raise DataError(f"{where}: item id '{duplicated.iloc[0]}' occurs more than once")
    return frame
