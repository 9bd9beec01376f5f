"""WebVision 1.0 as distributed (the 2017 challenge data, ImageNet-1k classes).

Layout read:
    <root>/info/synsets.txt                 line i: "<wnid> <names>" of WebVision label i
    <root>/info/train_filelist_google.txt   "google/q0001/000000.jpg 0" per line
    <root>/info/train_filelist_flickr.txt   "flickr/q0001/000000.jpg 0" per line
    <root>/info/val_filelist.txt            "val000001.jpg 0" per line
    <root>/google/, <root>/flickr/          the training images, at the listed paths
    <root>/val_images_256/ (resized release) or <root>/val_images/ (original size)

WebVision labels are mapped to wnids through synsets.txt and then to the ImageNet class table's
labels, so the two datasets share one label space; with a class subset (config
sources.imagenet.classes) the images of other classes are left out.
"""

from pathlib import Path

from contamination.errors import DataError
from contamination.sources.common import class_label, class_row, index_frame, require_dir, require_file

TRAIN_LISTS = ("train_filelist_google.txt", "train_filelist_flickr.txt")
VAL_LIST = "val_filelist.txt"
VAL_IMAGE_DIRS = ("val_images_256", "val_images")


def index_webvision(root, classes: dict, subset: bool = False):
    root = require_dir(root, "WebVision")
    info = root / "info"
    synsets_path = require_file(info / "synsets.txt", "WebVision synsets")
    wnids = [line.split()[0] for line in synsets_path.read_text().splitlines() if line.strip()]
    rows = []
    for list_name in TRAIN_LISTS:
        for relative, wnid in read_file_list(info / list_name, wnids, synsets_path):
            if subset and wnid not in classes:
                continue
            item_id = str(Path(relative).with_suffix("")).replace("/", "_")
            label = class_label(classes, wnid, synsets_path)
            rows.append(class_row(item_id, root / relative, wnid, label, "train"))
    val_dir = next((root / name for name in VAL_IMAGE_DIRS if (root / name).is_dir()), None)
    if val_dir is None:
        raise DataError(f"WebVision val: neither of {[str(root / name) for name in VAL_IMAGE_DIRS]} exists")
    for name, wnid in read_file_list(info / VAL_LIST, wnids, synsets_path):
        if subset and wnid not in classes:
            continue
        label = class_label(classes, wnid, synsets_path)
        rows.append(class_row(Path(name).stem, val_dir / name, wnid, label, "val"))
    return index_frame(rows, root)


def read_file_list(path: Path, wnids: list, synsets_path: Path) -> list:
    """``(relative path, wnid)`` per line of a WebVision file list."""
    require_file(path, "WebVision file list")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        relative, _, label = line.strip().rpartition(" ")
        if not relative or not label.isdigit():
            raise DataError(f"{path}:{number}: expected '<image path> <label>', got {line!r}")
        if int(label) >= len(wnids):
            raise DataError(f"{path}:{number}: label {label} but '{synsets_path}' lists {len(wnids)} synsets")
        entries.append((relative.strip(), wnids[int(label)]))
    return entries
