"""Prepared images per dataset, decoded once: the 64 px arrays of mixtures gathered from them.

Every mixture that IDDPM trains on (Tables 3 and 10, the recursion's base) needs its images at
``iddpm.image_size`` as one uint8 array (features.py). Decoding them per mixture decodes each
ImageNet image once per mixture that holds it. Here each dataset a mixture draws from (a real
source's training split, cut to ``sources.<name>.train_subset`` as the mixtures cut it, or a
generated dataset) is prepared once per size: ``image-cache`` decodes each distinct image URI of
the dataset with the same function as before (features.ImagesOnly: features.downsample, or
draft_halvings with ``image_sets.reduced_jpeg_decode``) into one uint8 .npy, with the URI of
each row beside it (Parquet). ``gather-rows`` then builds a mixture's array by taking, for each
manifest row in manifest order, the cache row of its URI in the cache of its ``origin``. A pixel
depends only on the image's bytes, the size and the decode option, so the gathered array is
byte-identical to the one decoded per mixture (tests/test_image_cache.py).

Numbers at paper scale (planning.dataset_sizes): the six IDDPM mixtures (ImageNet, IN/SD-20, 40,
80%, SD-ImageNet, ImageNet 20%) hold 6.66M images, decoded once each per mixture; the caches of
ImageNet and SD-ImageNet decode 2.56M, 2.6x fewer, for 31 GB of cache (1.28M x 12 KiB each) on top
of the 82 GB of mixture arrays. benchmarks/loading.py measures both ways.

The Inception inputs (fidelity.image_size, 299 px; DINOv2's dinov2_image_size) are left alone,
decoded per image set as before. A pixel cache of one 1.28M-image dataset at 299 px would take
1.28M x 299 x 299 x 3 B = 344 GB. A cache of Inception features instead (1.28M x 2048 x 4 B =
10.5 GB per dataset) would save decoding and network passes only where an image is in more than
one feature set, and in the paper's DAG none is: Table 4's rows (ImageNet, SD-ImageNet,
SD-ImageNet complex) are each one whole dataset, and the reference sets are splits (val) no
mixture holds. It would cost 10.5 GB per dataset for nothing saved, and a set's features would
no longer be computed in that set's own batches (a convolution's float rounding may depend on
the batch), moving features in their last bits. A site config that scores several mixtures of
one dataset for fidelity would gain from such a features cache; the paper's does not.

Commands: ``image-cache`` and ``gather-rows``.
"""

from contamination.errors import ConfigError, DataError
from contamination.experiments.filtering import filtered_runs
from contamination.formats import MANIFEST_COLUMNS
from contamination.io import write_parquet
from contamination.metrics.features import ImagesOnly, image_batches, write_rows
from contamination.mixtures.manifests import read_items, subsampled

GATHER_ROWS = 4096  # manifest rows gathered per write: 48 MiB at 64 px


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("image-cache", help="one dataset's distinct images at a fixed size: uint8 .npy "
                                                       "(N, S, S, 3) and their URIs (Parquet)")
    parser.add_argument("--index", required=True, help="the dataset's index (a source index: its train rows; "
                                                       "a generated index: all rows)")
    parser.add_argument("--dataset", required=True, help="the dataset's name (a mixture's base or by)")
    parser.add_argument("--train-subset", type=int,
                        help="sources.<dataset>.train_subset: the rows mixtures keep (with --seed)")
    parser.add_argument("--seed", type=int, help="the run's seed (with --train-subset)")
    parser.add_argument("--size", type=int, required=True, help="side of the square images")
    parser.add_argument("--reduced-jpeg-decode", action="store_true",
                        help="decode JPEGs at reduced size in place of box halvings (config image_sets)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--out", required=True, help="the images (.npy)")
    parser.add_argument("--out-uris", required=True, help="the URI of each row of --out (Parquet)")
    parser.set_defaults(run=run_image_cache)

    parser = subparsers.add_parser("gather-rows", help="a manifest's rows, in manifest order, from the caches "
                                                       "of the datasets it draws from, as one .npy")
    parser.add_argument("--manifest", required=True, help="mixture manifest (Parquet)")
    parser.add_argument("--cache", nargs=3, action="append", required=True, metavar=("DATASET", "NPY", "URIS"),
                        help="a dataset's cache (image-cache --out) and its URIs (--out-uris); once per origin")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_gather_rows)


def mixture_datasets(config: dict, mixture: str) -> list:
    """The datasets mixture ``mixture`` (or the one a filtered mixture filters) draws from."""

    filtered = filtered_runs(config)
    name = filtered[mixture][0] if mixture in filtered else mixture
    spec = next(spec for spec in config["mixtures"] if spec["name"] == name)
    return [spec["base"]] + ([spec["by"]] if spec["kind"] != "subset" else [])


# ---- caches ---------------------------------------------------------------------------------


def cache_items(index, dataset: str, train_subset=None, seed=None):
    """One manifest-like row (formats.MANIFEST_COLUMNS) per distinct image URI of the dataset's
    training rows as mixtures read them (manifests.read_items, cut to ``train_subset``), in
    index order, as a pandas DataFrame."""
    import numpy as np
    import pyarrow as pa

    if (train_subset is None) != (seed is None):
        raise ConfigError("image-cache: --train-subset and --seed go together")
    items = read_items(index, dataset)
    if train_subset is not None:
        items = subsampled(items, dataset, {"seed": seed, "subsample": {dataset: train_subset}})
    # Caption datasets hold several rows per image: each image is prepared once.
    _, first = np.unique(items["uri"].to_numpy(), return_index=True)
    items = items.take(np.sort(first))
    frame = items.append_column("origin", pa.repeat(pa.scalar(dataset, pa.large_string()), items.num_rows))
    return frame.select(MANIFEST_COLUMNS).to_pandas()


def run_image_cache(args) -> None:
    import pyarrow as pa

    items = cache_items(args.index, args.dataset, args.train_subset, args.seed)
    images = ImagesOnly(items, args.size, args.reduced_jpeg_decode)
    batches = (batch.numpy() for batch in image_batches(images, 256, args.workers))
    count = write_rows(args.out, (len(images), args.size, args.size, 3), "uint8", batches)
    write_parquet(pa.table({"uri": pa.array(items["uri"].to_numpy(), pa.large_string())}), args.out_uris)
    print(f"{args.dataset}: {count} images at {args.size}x{args.size} -> {args.out}")


# ---- gathering ------------------------------------------------------------------------------


def cache_rows(manifest, caches: dict):
    """For each manifest row, (its dataset's position in ``caches``, its row in that cache).

    ``caches``: {dataset: (npy path, URIs path)}. A row's dataset is its ``origin``; a URI the
    cache lacks is a DataError (the cache was built for other rows)."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(manifest, columns=["uri", "origin"])
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read manifest {manifest}: {error}") from error
    origins = table["origin"].to_numpy()
    uris = table["uri"].to_numpy()
    names = list(caches)
    missing = sorted(set(np.unique(origins)) - set(names))
    if missing:
        raise DataError(f"manifest {manifest} has items of {missing}, for which no --cache was given")
    which = np.empty(len(uris), dtype=np.int64)
    rows = np.empty(len(uris), dtype=np.int64)
    for position, name in enumerate(names):
        mine = np.flatnonzero(origins == name)
        cached = pd.Index(pq.read_table(caches[name][1], columns=["uri"])["uri"].to_numpy())
        if len(cached) != len(np.load(caches[name][0], mmap_mode="r")):
            raise DataError(f"the cache of '{name}': {caches[name][0]} and {caches[name][1]} differ in rows")
        found = cached.get_indexer(uris[mine])
        if (found < 0).any():
            raise DataError(f"the cache of '{name}' ({caches[name][0]}) lacks {int((found < 0).sum())} of the items "
                            f"manifest {manifest} takes from it, e.g. {uris[mine][found < 0][0]}: it was built "
                            f"from another index or train_subset; rebuild it")
        which[mine], rows[mine] = position, found
    return which, rows


def gathered_batches(arrays: list, which, rows):
    """Arrays of the rows ``rows[i]`` of ``arrays[which[i]]``, in order, GATHER_ROWS at a time."""
    import numpy as np

    for start in range(0, len(rows), GATHER_ROWS):
        part_which, part_rows = which[start:start + GATHER_ROWS], rows[start:start + GATHER_ROWS]
        batch = np.empty((len(part_rows), *arrays[0].shape[1:]), dtype=arrays[0].dtype)
        for position, array in enumerate(arrays):
            mine = np.flatnonzero(part_which == position)
            if len(mine):
                # Read in cache order (a forward sweep through the memory map), placed in manifest order.
                order = np.argsort(part_rows[mine], kind="stable")
                batch[mine[order]] = array[part_rows[mine][order]]
        yield batch


def run_gather_rows(args) -> None:
    import numpy as np

    caches = {}
    for name, array_path, uris_path in args.cache:
        if name in caches:
            raise ConfigError(f"gather-rows: --cache '{name}' given twice")
        caches[name] = (array_path, uris_path)
    arrays = [np.load(array_path, mmap_mode="r") for array_path, _ in caches.values()]
    shapes = {(array.dtype.str, array.shape[1:]) for array in arrays}
    if len(shapes) > 1:
        raise DataError(f"the caches differ in dtype or row shape {sorted(shapes)}: {list(caches.values())}")
    which, rows = cache_rows(args.manifest, caches)
    count = write_rows(args.out, (len(rows), *arrays[0].shape[1:]), arrays[0].dtype,
                       gathered_batches(arrays, which, rows))
    print(f"{count} rows of {args.manifest} from the caches of {', '.join(caches)} -> {args.out}")
