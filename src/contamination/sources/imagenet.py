"""ImageNet (ILSVRC-2012) and its 200-class test sets ImageNet-A and ImageNet-R.

Layouts read:
    <root>/LOC_synset_mapping.txt                          "n01440764 tench, Tinca tinca" per line
    <root>/ILSVRC2012_devkit_t12/data/meta.mat             the devkit's synsets (used without the above)
    <root>/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt
    <root>/train/<wnid>/<wnid>_<n>.JPEG
    <root>/val/<wnid>/ILSVRC2012_val_<n>.JPEG              or flat: <root>/val/ILSVRC2012_val_<n>.JPEG
  or, as Kaggle's "ImageNet Object Localization Challenge" unpacks (when <root>/train is absent):
    <root>/ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG
    <root>/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<n>.JPEG (flat)
    <root>/LOC_val_solution.csv                            "ILSVRC2012_val_<n>,<wnid> <box> [<wnid> <box>...]"
    <imagenet-a or -r root>/<wnid>/<name>.jpg

Labels are positions in sorted wnid order (torchvision's ImageFolder order) among the classes of
the class table, the same for all three datasets: ImageNet-1k labels, or 0..K-1 when the table
holds a subset of K classes (config ``sources.imagenet.classes``, e.g. ImageNet-100). With a
subset, the images of other classes are left out of every index. ImageNet-A/-R copies must hold
exactly their official classes (imagenet_a_wnids.txt, imagenet_r_wnids.txt, shipped with this
package) among the classes of the ImageNet class table in use.
"""

import csv
from importlib import resources
from pathlib import Path

from contamination.errors import ConfigError, DataError
from contamination.sources.common import (
    class_label,
    class_row,
    image_files,
    index_frame,
    require_dir,
    subdirectories,
)

SYNSET_MAPPING = "LOC_synset_mapping.txt"
DEVKIT_DATA = Path("ILSVRC2012_devkit_t12") / "data"
META_MAT = DEVKIT_DATA / "meta.mat"
VAL_GROUND_TRUTH = DEVKIT_DATA / "ILSVRC2012_validation_ground_truth.txt"
KAGGLE_IMAGES = Path("ILSVRC") / "Data" / "CLS-LOC"
KAGGLE_VAL_SOLUTION = "LOC_val_solution.csv"
OFFICIAL_CLASSES = {"imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R"}
# Class lists shipped with this package: <name>_wnids.txt, one wnid per line, '#' comments.
WNID_LIST_SUFFIX = "_wnids.txt"


def class_table(root, num_classes: int, subset=None):
    """DataFrame (label, wnid, names): the classes of the ImageNet at ``root``, or only those of
    ``subset`` (wnids, config sources.imagenet.classes), labelled by their positions among them."""
    import pandas as pd

    root = Path(root)
    mapping, meta = root / SYNSET_MAPPING, root / META_MAT
    if mapping.is_file():
        source, names_by_wnid = mapping, read_synset_mapping(mapping)
    elif meta.is_file():
        source = meta
        names_by_wnid = {wnid: words.split(", ") for _, wnid, words in read_meta_leaves(meta)}
    else:
        raise DataError(f"ImageNet classes: neither '{mapping}' nor '{meta}' exists")
    if len(names_by_wnid) != num_classes:
        raise ConfigError(
            f"sources.imagenet.num_classes: config says {num_classes} classes but '{source}' "
            f"lists {len(names_by_wnid)}"
        )
    if subset is not None:
        missing = sorted(set(subset) - set(names_by_wnid))
        if missing:
            raise ConfigError(f"sources.imagenet.classes: {len(missing)} of its {len(subset)} classes are not "
                              f"classes of '{source}' (e.g. {', '.join(missing[:3])})")
    wnids = sorted(names_by_wnid if subset is None else subset)
    return pd.DataFrame(
        {"label": range(len(wnids)), "wnid": wnids, "names": [names_by_wnid[wnid] for wnid in wnids]}
    ).astype({"label": "int64"})


def read_synset_mapping(path: Path) -> dict:
    names = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, words = line.strip().partition(" ")
        if not words or wnid in names:
            raise DataError(f"{path}:{number}: expected '<wnid> <name>, <name>...' with a new wnid, got {line!r}")
        names[wnid] = [word.strip() for word in words.split(",")]
    return names


def read_meta_leaves(path: Path) -> list:
    """``(ILSVRC2012_ID, wnid, words)`` of the devkit's leaf synsets (the classes)."""
    import numpy as np
    import scipy.io

    try:
        synsets = np.atleast_1d(scipy.io.loadmat(path, squeeze_me=True)["synsets"])
        return [
            (int(synset["ILSVRC2012_ID"]), str(synset["WNID"]), str(synset["words"]))
            for synset in synsets
            if int(synset["num_children"]) == 0
        ]
    except (KeyError, ValueError, TypeError, OSError) as error:
        raise DataError(f"{path}: not an ILSVRC-2012 devkit meta.mat (synsets with ILSVRC2012_ID, WNID, "
                        f"words, num_children): {error}") from error


def index_imagenet(root, classes: dict, subset: bool = False):
    """Train and val images of the classes in ``classes``; those of other classes are an error
    (an unknown class folder), or with ``subset`` (a class table of some of the classes) left out."""
    root = Path(root)
    images = image_root(root)
    train = require_dir(images / "train", "ImageNet train")
    rows = wnid_folder_rows(train, classes, "train", prefix_wnid=False, folders=folders_in_use(train, classes, subset))
    require_all_classes(rows, classes, images / "train")
    val = require_dir(images / "val", "ImageNet val")
    folders, files = subdirectories(val), image_files(val)
    if folders and files:
        raise DataError(f"ImageNet val '{val}' holds both class folders and images; use one layout")
    if folders:
        val_rows = wnid_folder_rows(val, classes, "val", prefix_wnid=False, folders=folders_in_use(val, classes, subset))
    elif files:
        val_rows = flat_val_rows(root, val, files, classes, subset)
    else:
        raise DataError(f"ImageNet val '{val}' holds no images")
    require_all_classes(val_rows, classes, val)
    return index_frame(rows + val_rows, root)


def official_wnids(source: str) -> list:
    """The 200 wnids of ``source`` (imagenet_a or imagenet_r) as published with the dataset."""
    return shipped_wnids(source)


def shipped_class_lists() -> list:
    """Names of the class lists shipped with this package (imagenet100, imagenet_a, imagenet_r)."""
    return sorted(entry.name[:-len(WNID_LIST_SUFFIX)] for entry in resources.files(__package__).iterdir()
                  if entry.name.endswith(WNID_LIST_SUFFIX))


def shipped_wnids(name: str) -> list:
    """The wnids of the shipped class list ``name``, in the file's order."""
    return wnid_lines(resources.files(__package__).joinpath(name + WNID_LIST_SUFFIX).read_text())


def wnid_lines(text: str) -> list:
    """The entries of a class list file: one per line, blank lines and '#' comments skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def folders_in_use(directory: Path, classes: dict, subset: bool):
    """The class folders of ``directory`` to index: all (None), or with a class subset those of
    its classes."""
    return [wnid for wnid in subdirectories(directory) if wnid in classes] if subset else None


def image_root(root: Path) -> Path:
    """The folder holding train/ and val/: the root, or Kaggle's <root>/ILSVRC/Data/CLS-LOC."""
    if not (root / "train").is_dir() and (root / KAGGLE_IMAGES).is_dir():
        return root / KAGGLE_IMAGES
    return root


def index_class_folders(root, classes: dict, source: str):
    """ImageNet-A or ImageNet-R: ``<root>/<wnid>/*.jpg``, all of it the evaluation split; a copy
    must hold every official class of ``source`` that is in the class table, and no other. With a
    class table of fewer classes, the folders of official classes outside it are not indexed."""
    root = require_dir(root, f"{OFFICIAL_CLASSES[source]} class folders")
    name, official = OFFICIAL_CLASSES[source], official_wnids(source)
    folders = subdirectories(root)
    foreign = sorted(set(folders) - set(official))
    if foreign:
        raise DataError(f"'{root}': {len(foreign)} class folder(s) not among the {len(official)} {name} classes "
                        f"(e.g. {', '.join(foreign[:3])}): is this {name}?")
    in_use = set(official) & set(classes)
    if not in_use:
        raise DataError(f"'{root}': none of the {len(classes)} classes of the ImageNet class table is one of "
                        f"the {len(official)} {name} classes, so there is nothing to score {name} on")
    # Their file names repeat across classes (ImageNet-R: art_0.jpg in many folders): prefix the wnid.
    rows = wnid_folder_rows(root, classes, "val", prefix_wnid=True, folders=sorted(in_use & set(folders)))
    missing = sorted(in_use - {row["wnid"] for row in rows})
    if missing:
        raise DataError(f"'{root}' has no images of {len(missing)} of the {len(in_use)} {name} classes in the "
                        f"ImageNet class table (e.g. {', '.join(missing[:5])}): incomplete copy?")
    return index_frame(rows, root)


def wnid_folder_rows(directory: Path, classes: dict, split: str, prefix_wnid: bool, folders=None) -> list:
    """Rows of the images in the class folders of ``directory`` (all of them, or ``folders``)."""
    rows = []
    for wnid in subdirectories(directory) if folders is None else folders:
        label = class_label(classes, wnid, directory / wnid)
        for name in image_files(directory / wnid):
            stem = Path(name).stem
            item_id = f"{wnid}_{stem}" if prefix_wnid else stem
            rows.append(class_row(item_id, directory / wnid / name, wnid, label, split))
    return rows


def flat_val_rows(root: Path, val: Path, files: list, classes: dict, subset: bool) -> list:
    """Flat val/: labelled by Kaggle's LOC_val_solution.csv if the root has it, else by the devkit;
    with ``subset``, only the images of the class table's classes."""
    solution = root / KAGGLE_VAL_SOLUTION
    if solution.is_file():
        labels_from, wnids = solution, kaggle_val_wnids(solution, val, files)
    else:
        labels_from, wnids = root / VAL_GROUND_TRUTH, devkit_val_wnids(root, val, files)
    return [
        class_row(Path(name).stem, val / name, wnid, class_label(classes, wnid, labels_from), "val")
        for name, wnid in zip(files, wnids)
        if not subset or wnid in classes
    ]


def devkit_val_wnids(root: Path, val: Path, files: list) -> list:
    """The wnid of each file: line i of the ground truth is the ILSVRC2012_ID of the i-th val file
    in name order, and meta.mat maps ILSVRC2012_IDs to wnids."""
    truth_path, meta_path = root / VAL_GROUND_TRUTH, root / META_MAT
    for path in (truth_path, meta_path):
        if not path.is_file():
            raise DataError(f"ImageNet val '{val}' is flat (no class folders), so it needs '{path}' "
                            f"(or, in Kaggle's layout, '{root / KAGGLE_VAL_SOLUTION}')")
    wnid_of_id = {ilsvrc_id: wnid for ilsvrc_id, wnid, _ in read_meta_leaves(meta_path)}
    truth = truth_path.read_text().split()
    if len(truth) != len(files):
        raise DataError(f"{truth_path}: {len(truth)} labels for {len(files)} images in '{val}'")
    wnids = []
    for number, ilsvrc_id in enumerate(truth, start=1):
        if not ilsvrc_id.isdigit() or int(ilsvrc_id) not in wnid_of_id:
            raise DataError(f"{truth_path}:{number}: {ilsvrc_id!r} is not the ILSVRC2012_ID of a class in '{meta_path}'")
        wnids.append(wnid_of_id[int(ilsvrc_id)])
    return wnids


def kaggle_val_wnids(path: Path, val: Path, files: list) -> list:
    """The wnid of each file from LOC_val_solution.csv: rows "ImageId,PredictionString" in any
    order, the class being the first token of the PredictionString (its boxes follow)."""
    wnid_of_image = {}
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["ImageId", "PredictionString"]:
            raise DataError(f"{path}: expected the header 'ImageId,PredictionString', got {header!r}")
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            tokens = row[1].split() if len(row) == 2 else []
            if not tokens or row[0] in wnid_of_image:
                raise DataError(f"{path}:{number}: expected '<image id>,<wnid> <box>...' with a new image id, "
                                f"got {','.join(row)!r}")
            wnid_of_image[row[0]] = tokens[0]
    stems = [Path(name).stem for name in files]
    unlabelled = [stem for stem in stems if stem not in wnid_of_image]
    if unlabelled:
        raise DataError(f"{path} has no label for {len(unlabelled)} image(s) in '{val}' "
                        f"(e.g. {', '.join(unlabelled[:3])})")
    absent = sorted(set(wnid_of_image) - set(stems))
    if absent:
        raise DataError(f"'{val}' lacks {len(absent)} of the images {path} lists (e.g. {', '.join(absent[:3])}): "
                        "incomplete copy?")
    return [wnid_of_image[stem] for stem in stems]


def require_all_classes(rows: list, classes: dict, directory: Path) -> None:
    missing = sorted(set(classes) - {row["wnid"] for row in rows})
    if missing:
        raise DataError(
            f"'{directory}' has no images of {len(missing)} of the {len(classes)} classes "
            f"(e.g. {', '.join(missing[:3])}): incomplete copy?"
        )
