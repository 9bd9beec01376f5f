"""Adapters from real dataset layouts on disk to Parquet indexes (columns: formats.INDEX_COLUMNS).

One module per layout family (imagenet: ImageNet, -A, -R; webvision; karpathy: COCO, Flickr30k);
each turns a root into index rows, then ``run_index`` checks that every image decodes, applies
the unreadable-image policy, and writes the index and a report.
"""

import os

from contamination.errors import DataError, UserError
from contamination.io import write_json, write_parquet
from contamination.sources import imagenet, karpathy, webvision
from contamination.sources.common import read_class_table
from contamination.sources.imagenet import class_table
from contamination.sources.verify import unreadable_images

SOURCES = ["imagenet", "imagenet_a", "imagenet_r", "webvision", "coco", "flickr30k"]
CAPTION_SOURCES = {"coco", "flickr30k"}


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("classes", help="ImageNet class table: label, wnid, names")
    parser.add_argument("--root", required=True)
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--subset", type=wnid_list,
                        help="JSON list of the wnids to keep (config sources.imagenet.classes); default: all")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_classes)

    parser = subparsers.add_parser("index", help="index one real source")
    parser.add_argument("source", choices=SOURCES)
    parser.add_argument("--root", required=True)
    parser.add_argument("--classes", help="ImageNet class table (class datasets)")
    parser.add_argument("--class-subset", action="store_true",
                        help="the class table holds a subset of ImageNet's classes (config sources.imagenet.classes): "
                             "leave out images of other classes instead of refusing them")
    parser.add_argument("--karpathy-json", help="Karpathy split JSON (coco, flickr30k)")
    parser.add_argument("--on-unreadable", choices=["fail", "skip"], default="fail")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--report", required=True)
    parser.set_defaults(run=run_index)


def wnid_list(text: str) -> list:
    import json

    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(wnid, str) for wnid in value):
        raise ValueError(f"not a JSON list of wnids: {text}")
    return value


def run_classes(args) -> None:
    table = class_table(args.root, args.num_classes, args.subset)
    write_parquet(table, args.out)
    print(f"{len(table)} ImageNet classes -> {args.out}")


def read_source(source: str, root, classes_path=None, karpathy_json=None, class_subset=False):
    """The index rows of ``source`` at ``root``, before the readability check. ``class_subset``:
    the class table holds some of ImageNet's classes; images of the others are left out."""
    root = os.path.abspath(root)  # the index holds absolute paths; symlinks are kept as given
    if source in CAPTION_SOURCES:
        if karpathy_json is None:
            raise UserError(f"index {source}: pass its Karpathy split JSON with --karpathy-json")
        read = karpathy.index_coco if source == "coco" else karpathy.index_flickr30k
        return read(root, karpathy_json)
    classes = read_class_table(classes_path)
    if source == "imagenet":
        return imagenet.index_imagenet(root, classes, class_subset)
    if source == "webvision":
        return webvision.index_webvision(root, classes, class_subset)
    return imagenet.index_class_folders(root, classes, source)


def run_index(args) -> None:
    frame = read_source(args.source, args.root, args.classes, args.karpathy_json, args.class_subset)
    # Caption sources have one row per caption: check each image file once.
    paths = list(dict.fromkeys(frame["path"]))
    failures = unreadable_images(paths, args.workers, stop_at_first=args.on_unreadable == "fail")
    if failures and args.on_unreadable == "fail":
        path, reason = next(iter(failures.items()))
        raise DataError(
            f"unreadable image '{path}' ({reason}); fix or remove it, or set on_unreadable_image: skip "
            "to leave such images out of the index"
        )
    frame = frame[~frame["path"].isin(list(failures))]
    if args.source not in CAPTION_SOURCES:
        # Caption sources keep the JSON's order (captions of an image in their given order).
        frame = frame.sort_values(["split", "id"], kind="stable")
    frame = frame.reset_index(drop=True)
    write_parquet(frame, args.out)
    write_json(index_report(args, frame, failures), args.report)
    print(f"{args.source}: {len(frame)} rows, {frame['image_id'].nunique()} images, "
          f"{len(failures)} unreadable -> {args.out}")


def index_report(args, frame, failures: dict) -> dict:
    return {
        "source": args.source,
        "root": os.path.abspath(args.root),
        "rows": len(frame),
        "rows_per_split": {split: int(n) for split, n in frame.groupby("split").size().items()},
        "images_per_split": {
            split: int(n) for split, n in frame.groupby("split")["image_id"].nunique().items()
        },
        "on_unreadable": args.on_unreadable,
        "unreadable": {"count": len(failures), "paths": sorted(failures), "errors": failures},
    }
