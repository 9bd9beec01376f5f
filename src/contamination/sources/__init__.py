"""Adapters from real dataset layouts on disk to Parquet indexes (columns: formats.INDEX_COLUMNS)."""


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("classes", help="ImageNet class table: label, wnid, names")
    parser.add_argument("--root", required=True)
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_classes)

    parser = subparsers.add_parser("index", help="index one real source")
    parser.add_argument("source", choices=["imagenet", "imagenet_a", "imagenet_r", "webvision", "coco", "flickr30k"])
    parser.add_argument("--root", required=True)
    parser.add_argument("--classes", help="ImageNet class table (class datasets)")
    parser.add_argument("--karpathy-json", help="Karpathy split JSON (coco, flickr30k)")
    parser.add_argument("--on-unreadable", choices=["fail", "skip"], default="fail")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--report", required=True)
    parser.set_defaults(run=run_index)


def run_classes(args) -> None:
    raise NotImplementedError("being written")


def run_index(args) -> None:
    raise NotImplementedError("being written")
