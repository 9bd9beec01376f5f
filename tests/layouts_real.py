"""Tiny copies of the real dataset layouts (ILSVRC-2012 with its devkit or as Kaggle ships it, ImageNet-A/-R, WebVision
1.0, Karpathy's COCO and Flickr30k JSON), built by hand from the published formats and
independent of contamination.smoke.synthetic, for the adapter tests."""

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# Real wnids and names, in sorted order (labels 0..3); the ILSVRC2012_IDs are the devkit's,
# which do not follow wnid order.
CLASSES = [
    ("n01440764", "tench, Tinca tinca", 449),
    ("n01443537", "goldfish, Carassius auratus", 450),
    ("n02119789", "kit fox, Vulpes macrotis", 1),
    ("n02504458", "African elephant, Loxodonta africana", 386),
]


def write_image(path, value: int = 128) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, 255 - value, 60)).save(path, "JPEG")
    return path


def write_meta_mat(path, classes=CLASSES) -> Path:
    """meta.mat as in ILSVRC2012_devkit_t12/data: a (n, 1) struct array ``synsets`` with the
    devkit's fields, leaves (num_children 0) plus an inner node that is not a class."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((len(classes) + 1, 1), dtype=[(field, object) for field in fields])
    for row, (wnid, words, ilsvrc_id) in enumerate(classes):
        synsets[row, 0] = (np.array([[ilsvrc_id]], dtype=np.uint16), np.array([wnid]), np.array([words]),
                           np.array(["a gloss"]), np.array([[0]], dtype=np.uint8),
                           np.zeros((1, 0), dtype=np.uint8), np.array([[0]], dtype=np.uint8),
                           np.array([[1300]], dtype=np.uint16))
    synsets[len(classes), 0] = (np.array([[1001]], dtype=np.uint16), np.array(["n00001740"]),
                                np.array(["entity"]), np.array(["that which is perceived"]),
                                np.array([[len(classes)]], dtype=np.uint8),
                                np.array([[c[2] for c in classes]], dtype=np.uint16),
                                np.array([[19]], dtype=np.uint8), np.array([[0]], dtype=np.uint16))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"synsets": synsets})
    return path


def write_synset_mapping(root, classes=CLASSES) -> Path:
    # LOC_synset_mapping.txt lists the classes in wnid order; shuffled here to test the sorting.
    path = Path(root) / "LOC_synset_mapping.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{wnid} {words}\n" for wnid, words, _ in reversed(classes)))
    return path


def write_imagenet(root, val_layout: str, train_per_class: int = 2, val_per_class: int = 2) -> dict:
    """ILSVRC-2012: train/<wnid>/<wnid>_<n>.JPEG; val either in wnid folders or flat with the
    devkit ground truth. Returns ``{val file stem: wnid}``."""
    root = Path(root)
    write_meta_mat(root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat")
    for wnid, _, _ in CLASSES:
        for n in range(train_per_class):
            write_image(root / "train" / wnid / f"{wnid}_{1000 + n}.JPEG")
    val_wnids = [CLASSES[(k * 3) % len(CLASSES)][0] for k in range(len(CLASSES) * val_per_class)]
    truth = {}
    for number, wnid in enumerate(val_wnids, start=1):
        stem = f"ILSVRC2012_val_{number:08d}"
        folder = root / "val" / (wnid if val_layout == "folders" else "")
        write_image(folder / f"{stem}.JPEG")
        truth[stem] = wnid
    if val_layout == "flat":
        ids = {wnid: ilsvrc_id for wnid, _, ilsvrc_id in CLASSES}
        (root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text(
            "".join(f"{ids[wnid]}\n" for wnid in val_wnids)
        )
    return truth


def write_kaggle_imagenet(root, train_per_class: int = 2, val_per_class: int = 2) -> dict:
    """Kaggle's "ImageNet Object Localization Challenge" tree: LOC_synset_mapping.txt (wnid order),
    ILSVRC/Data/CLS-LOC/{train/<wnid>/, flat val/, test/}, and LOC_val_solution.csv, its rows
    in no particular order, each with one or more boxes. Returns ``{val file stem: wnid}``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{wnid} {words}\n" for wnid, words, _ in CLASSES))
    images = root / "ILSVRC" / "Data" / "CLS-LOC"
    for wnid, _, _ in CLASSES:
        for n in range(train_per_class):
            write_image(images / "train" / wnid / f"{wnid}_{2000 + n}.JPEG")
    truth = {}
    for number in range(1, len(CLASSES) * val_per_class + 1):
        stem = f"ILSVRC2012_val_{number:08d}"
        write_image(images / "val" / f"{stem}.JPEG")
        truth[stem] = CLASSES[(number * 3) % len(CLASSES)][0]
    write_image(images / "test" / "ILSVRC2012_test_00000001.JPEG")  # unlabelled: not indexed
    rows = [f"{stem},{wnid} 12 30 200 180" + (f" {wnid} 1 2 40 50" if k % 2 else "") + " "
            for k, (stem, wnid) in enumerate(truth.items())]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(f"{row}\n" for row in reversed(rows)))
    return truth


def write_class_folders(root, wnids, names=("art_0.jpg", "sketch_1.jpg")) -> Path:
    """ImageNet-A / ImageNet-R: <root>/<wnid>/*.jpg (the same names in every folder, as in -R)."""
    root = Path(root)
    for wnid in wnids:
        for name in names:
            write_image(root / wnid / name)
    (root / "README.txt").write_text("not an image folder\n")
    return root


def write_webvision(root, synset_wnids, google, flickr, val) -> Path:
    """WebVision 1.0: info/ lists, google/ and flickr/ query folders, val_images_256/.

    ``google``/``flickr``/``val``: lists of (relative path or file name, WebVision label)."""
    root = Path(root)
    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "synsets.txt").write_text("".join(f"{wnid} some name\n" for wnid in synset_wnids))
    for list_name, entries, folder in (("train_filelist_google.txt", google, ""),
                                       ("train_filelist_flickr.txt", flickr, ""),
                                       ("val_filelist.txt", val, "val_images_256")):
        (info / list_name).write_text("".join(f"{name} {label}\n" for name, label in entries))
        for name, _ in entries:
            write_image(root / folder / name)
    return root


def write_karpathy(root, json_path, images: list, with_filepath: bool) -> Path:
    """Karpathy split JSON plus the image files. ``images``: dicts with filename, split,
    captions and (COCO) filepath and cocoid."""
    root = Path(root)
    entries, sentid = [], 0
    for imgid, image in enumerate(images):
        sentences = [{"tokens": raw.lower().split(), "raw": raw, "imgid": imgid, "sentid": sentid + j}
                     for j, raw in enumerate(image["captions"])]
        sentid += len(sentences) + 10  # sentids are unique, not necessarily contiguous
        entry = {"filename": image["filename"], "imgid": imgid, "split": image["split"],
                 "sentences": sentences, "sentids": [s["sentid"] for s in sentences]}
        if with_filepath:
            entry.update(filepath=image["filepath"], cocoid=image["cocoid"])
            write_image(root / image["filepath"] / image["filename"])
        else:
            write_image(root / "flickr30k-images" / image["filename"])
        entries.append(entry)
    Path(json_path).write_text(json.dumps({"images": entries, "dataset": "x"}))
    return Path(json_path)


def write_class_table(path, classes=CLASSES):
    """The classes table as `python -m contamination classes` writes it."""
    import pandas as pd

    from contamination.io import write_parquet

    wnids = sorted(wnid for wnid, _, _ in classes)
    names = {wnid: words.split(", ") for wnid, words, _ in classes}
    write_parquet(pd.DataFrame({"label": range(len(wnids)), "wnid": wnids,
                                "names": [names[w] for w in wnids]}), path)
    return path
