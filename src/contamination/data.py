"""Training data over a mixture manifest: (image, target) pairs for every model of the paper.

Items are loose image files or members of generation shards (formats: item URIs); both are read
through ``shards.read_item``, whose open shard handles belong to one process, so the dataset is
safe in DataLoader workers. The manifest's columns are held as Arrow arrays, not Python lists:
workers touching millions of Python strings would copy the pages their reference counts sit on.
"""

import io
import zipfile
from pathlib import Path

from contamination.errors import DataError
from contamination.formats import MANIFEST_COLUMNS
from contamination.io import read_parquet
from contamination.generation.shards import read_item

TARGETS = ("label", "caption")
# Pillow's modes of 16-bit grey (PNG bit depth 16, TIFF); "I" (32-bit) is how older Pillow
# releases open 16-bit PNGs. Pillow's convert("RGB") clips these to 255 (white), so they are
# scaled here; its 16-bit RGB(A) decoders already keep the high byte.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb8(image):
    """The PIL image as 8-bit RGB. 16-bit grey keeps the high byte of each value (as Pillow does
    for 16-bit RGB); images whose 8-bit scale is undefined (float, integers beyond 16 bits)
    raise ValueError, for the caller to name the file."""
    import numpy as np
    from PIL import Image

    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise ValueError(f"mode {image.mode} image with values {values.min()}..{values.max()}, "
                             "outside the 16-bit range 0..65535: no defined 8-bit scale")
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        raise ValueError("floating-point (mode F) image: no defined 8-bit scale")
    return image.convert("RGB")


def load_image(uri: str, jpeg_draft=None):
    """The 8-bit RGB PIL image (``to_rgb8``) at an item URI (a file path or ``zip://shard#member``).
    ``jpeg_draft``, if given, is called with a JPEG before it is decoded and may return it drafted
    to a reduced size (features.draft_halvings); other formats are decoded whole."""
    from PIL import Image

    try:
        data = read_item(uri)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read item {uri}: {error}") from error
    try:
        with Image.open(io.BytesIO(data)) as image:
            if jpeg_draft is not None and image.format == "JPEG":
                image = jpeg_draft(image)
            return to_rgb8(image)
    except (OSError, ValueError) as error:
        raise DataError(f"item {uri} is not a readable image: {error}") from error


class ManifestDataset:
    """Map-style dataset over a manifest (a Parquet path or a DataFrame with
    formats.MANIFEST_COLUMNS): item i is ``(transform(image), target)``, the target being the
    class index (``target="label"``) or the caption text (``target="caption"``). ``jpeg_draft``:
    see ``load_image``."""

    def __init__(self, manifest, transform=None, target: str = "label", jpeg_draft=None):
        import pyarrow as pa

        frame, name = read_manifest(manifest)
        missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
        if missing:
            raise DataError(f"manifest {name} lacks the columns {', '.join(missing)}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        if target == "label" and (frame["label"] < 0).any():
            raise DataError(f"manifest {name} has items without a class label; it is caption data")
        if target == "caption" and (frame["caption"] == "").any():
            raise DataError(f"manifest {name} has items without a caption; it is class data")
        self.transform = transform
        self.target = target
        self.jpeg_draft = jpeg_draft
        self.uris = pa.array(frame["uri"].to_numpy(), type=pa.large_string())
        if target == "label":
            self.targets = frame["label"].to_numpy(dtype="int64")
        else:
            self.targets = pa.array(frame["caption"].to_numpy(), type=pa.large_string())

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, index: int):
        image = load_image(self.uris[index].as_py(), self.jpeg_draft)
        if self.transform is not None:
            image = self.transform(image)
        if self.target == "label":
            return image, int(self.targets[index])
        return image, self.targets[index].as_py()


def read_manifest(manifest):
    """``(frame, name for messages)`` from a manifest path or frame."""
    import pandas as pd

    if isinstance(manifest, pd.DataFrame):
        return manifest, "(in memory)"
    try:
        return pd.read_parquet(manifest), str(manifest)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read manifest {manifest}: {error}") from error


def index_rows(index_path, split: str):
    """The rows of one split of a source index as a manifest frame (formats.MANIFEST_COLUMNS,
    uri = the image path, origin = the index's name), numbered from 0."""
    index = read_parquet(index_path)
    rows = index[index["split"] == split]
    if rows.empty:
        raise DataError(f"index {index_path} has no '{split}' rows")
    return rows.assign(uri=rows["path"], origin=Path(index_path).stem)[MANIFEST_COLUMNS].reset_index(drop=True)
