"""Image sets at a fixed size, and their Inception features.

An image set is the images of a mixture manifest, of one split of a source index, or of image
arrays (uint8, N x H x W x 3, e.g. IDDPM samples). Items are brought to ``size`` x ``size`` as
openai/improved-diffusion prepares ImageNet-64: halve with a box filter while the short side is
at least twice the target, then resize the short side to the target with bicubic
interpolation, then take the centre crop. The same function makes the 64x64 training arrays of
IDDPM, the 64x64 reference sets of Table 3 and the 299x299 inputs of Table 4, so real and
generated images are always prepared alike. The one exception is opt-in
(``--reduced-jpeg-decode``, config ``image_sets.reduced_jpeg_decode``): JPEGs (the real images,
and generated ones stored as JPEG) are then decoded at reduced size by libjpeg's scaled inverse
DCT in place of the box halvings it saves (draft_halvings), about twice as fast at 64 px with
different pixels (benchmarks/loading.py measures both), while PNGs still take the box path.

Features are the FID Inception's 2048-d pool features (inception.py), or DINOv2's class token
(dinov2.py, ``--encoder dinov2``), float32, one row per item in set order, written as one .npy
file per (dataset, extractor): the workflow keeps them under
results/<run>/features/<extractor>/ and every metric that needs a set's features reads that
file, so each set passes through the network once. Arrays are written through memory maps, so
neither 1.28M training images nor their features have to fit in memory.

Commands: ``image-array`` and ``features``.
"""

import functools
import json

from contamination.data import ManifestDataset, index_rows, to_rgb8
from contamination.errors import ConfigError, DataError
from contamination.experiments.training import loader_workers
from contamination.io import atomic_path

FEATURE_BATCH = 200


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("image-array", help="an image set at a fixed size as one uint8 .npy (N, S, S, 3)")
    add_image_set_arguments(parser)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_image_array)

    parser = subparsers.add_parser("features", help="FID Inception (N, 2048) or DINOv2 features of an image set as .npy")
    add_image_set_arguments(parser)
    parser.add_argument("--images", nargs="+", help="uint8 image arrays (.npy), in order, instead of a manifest/index")
    parser.add_argument("--encoder", choices=["inception", "dinov2"], default="inception",
                        help="inception: the FID Inception-V3; dinov2: a DINOv2 (dinov2.py) at the images' own size")
    parser.add_argument("--extractor", required=True,
                        help="Inception weights (config models.inception) or DINOv2 directory (models.dinov2)")
    parser.add_argument("--resolution", type=int, default=299, help="the Inception's input size")
    parser.add_argument("--batch-size", type=int, default=FEATURE_BATCH)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_features)


def add_image_set_arguments(parser) -> None:
    parser.add_argument("--manifest", help="mixture manifest (Parquet)")
    parser.add_argument("--index", help="source index (Parquet); with --split")
    parser.add_argument("--split", help="split of --index: train, val or test")
    parser.add_argument("--size", type=int, help="side of the square images")
    parser.add_argument("--reduced-jpeg-decode", action="store_true",
                        help="decode JPEGs at reduced size in place of box halvings (config image_sets)")


# ---- image sets -----------------------------------------------------------------------------


def downsample(image, size: int):
    """A PIL image -> uint8 array (size, size, 3): box halvings, bicubic resize of the short side
    to ``size``, centre crop (openai/improved-diffusion's ImageNet-64 preparation)."""
    import numpy as np
    from PIL import Image

    image = to_rgb8(image)
    for halved in halving_sizes(image.size, size)[1:]:
        image = image.resize(halved, resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top = (array.shape[0] - size) // 2
    left = (array.shape[1] - size) // 2
    return np.array(array[top:top + size, left:left + size])  # a writable copy (PIL's array is read-only)


def halving_sizes(size: tuple, target: int) -> list:
    """The image sizes ``downsample`` passes through while it halves: [size, size // 2, ...]."""
    sizes = [tuple(size)]
    while min(sizes[-1]) >= 2 * target:
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes


def draft_halvings(image, size: int):
    """A JPEG (not yet decoded) decoded by libjpeg's scaled inverse DCT at 1/2, 1/4 or 1/8 size in
    place of as many of ``downsample``'s box halvings, then box-resized to the size those halvings
    reach (libjpeg rounds sides up, halvings round down), so ``downsample`` goes on from the same
    geometry. The scaled IDCT is a different low-pass filter than box averaging: pixels move (see
    config image_sets)."""
    from PIL import Image

    width, height = image.size
    sizes = halving_sizes((width, height), size)
    scale = 2 ** min(len(sizes) - 1, 3)
    if scale == 1:
        return image
    image.draft("RGB", (width // scale, height // scale))
    halvings = next(k for k in (3, 2, 1, 0) if image.size == (-(-width // 2**k), -(-height // 2**k)))
    return image.convert("RGB").resize(sizes[halvings], resample=Image.BOX) if halvings else image


class ImagesOnly:
    """The images of a ManifestDataset, brought to ``size`` x ``size`` (labels dropped), JPEGs
    decoded at reduced size if ``reduced_jpeg_decode`` (see the module's docstring)."""

    def __init__(self, manifest, size: int, reduced_jpeg_decode: bool = False):
        self.items = ManifestDataset(manifest, functools.partial(downsample, size=size), target="label",
                                     jpeg_draft=functools.partial(draft_halvings, size=size) if reduced_jpeg_decode
                                     else None)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index][0]


class ArrayImages:
    """The images of several uint8 arrays (N_i, H, W, 3) as one set of uint8 (H, W, 3) items.

    The arrays are memory-mapped, and mapped again in each DataLoader worker: a pickled map
    would carry the whole array with it."""

    def __init__(self, paths):
        import numpy as np

        self.paths = [str(path) for path in paths]
        self.arrays = [np.load(path, mmap_mode="r") for path in self.paths]
        if any(array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 for array in self.arrays):
            raise DataError(f"image arrays must be uint8 (N, H, W, 3): {self.paths}")
        shapes = {array.shape[1:] for array in self.arrays}
        if len(shapes) > 1:
            raise DataError(f"image arrays differ in image size {sorted(shapes)}: {self.paths}")
        self.offsets = np.cumsum([0] + [len(array) for array in self.arrays])

    def __getstate__(self):
        return {**self.__dict__, "arrays": None}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int):
        import numpy as np

        if self.arrays is None:
            self.arrays = [np.load(path, mmap_mode="r") for path in self.paths]
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return np.array(self.arrays[part][index - self.offsets[part]])  # a writable copy of the mapped row


def image_set(args):
    """The image set named by the command's --manifest / --index --split / --images arguments."""
    sources = [name for name in ("manifest", "index", "images") if getattr(args, name, None)]
    if len(sources) != 1:
        raise ConfigError("give exactly one of --manifest, --index (with --split) or --images")
    if sources == ["images"]:
        return ArrayImages(args.images)
    if not args.size:
        raise ConfigError(f"--{sources[0]} needs --size")
    if args.index:
        if not args.split:
            raise ConfigError("--index needs --split")
        return ImagesOnly(index_rows(args.index, args.split), args.size, args.reduced_jpeg_decode)
    return ImagesOnly(args.manifest, args.size, args.reduced_jpeg_decode)


def image_batches(dataset, batch_size: int, workers: int):
    """uint8 tensors (B, H, W, 3) in set order."""
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(workers))


def write_rows(path, shape, dtype, batches) -> int:
    """Write ``batches`` (arrays whose rows fill ``shape`` in order) into the .npy ``path`` through
    a memory map, atomically. Returns the number of rows written."""
    import numpy as np

    with atomic_path(path) as temporary:
        output = np.lib.format.open_memmap(temporary, mode="w+", dtype=dtype, shape=shape)
        filled = 0
        for batch in batches:
            output[filled:filled + len(batch)] = batch
            filled += len(batch)
        if filled != shape[0]:
            raise DataError(f"{path}: expected {shape[0]} rows, the image set gave {filled}")
        output.flush()
        del output
    return filled


def run_image_array(args) -> None:
    dataset = image_set(args)
    size = args.size
    batches = (batch.numpy() for batch in image_batches(dataset, 256, args.workers))
    count = write_rows(args.out, (len(dataset), size, size, 3), "uint8", batches)
    print(f"{count} images at {size}x{size} -> {args.out}")


# ---- features -------------------------------------------------------------------------------


def extract(network, batches, device):
    """Inception features of uint8 image batches (B, H, W, 3), as float32 numpy arrays."""
    import torch

    network.to(device).eval()
    with torch.inference_mode():
        for batch in batches:
            images = batch.to(device).permute(0, 3, 1, 2).float() / 255.0
            yield network(images).float().cpu().numpy()


def feature_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        # TF32 convolutions would change the features in the 3rd digit; FID is defined in fp32.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return torch.device(name)


def run_features(args) -> None:
    dataset = image_set(args)
    if args.encoder == "dinov2":
        from contamination.metrics import dinov2

        network = dinov2.load(args.extractor)
        dimension, resolution = network.feature_dim, None
    else:
        from contamination.metrics import inception

        network = inception.load(args.extractor, args.resolution)
        dimension, resolution = inception.FEATURE_DIM, args.resolution
    device = feature_device(args.device)
    batches = extract(network, image_batches(dataset, args.batch_size, args.workers), device)
    count = write_rows(args.out, (len(dataset), dimension), "float32", batches)
    print(json.dumps({"features": args.out, "items": count, "encoder": args.encoder, "extractor": args.extractor,
                      "resolution": resolution, "device": device.type}))
