"""Data loading: images/s of ManifestDataset + DataLoader vs. torchvision ImageFolder on the same
images, for (a) loose JPEGs shaped like ImageNet's and (b) PNGs in a generation shard (ImageFolder
reads the same PNGs as loose files), at 224 px (the ResNet-50 training transform of the config)
and at 64 px (features.downsample, the IDDPM image arrays of Tables 3 and 10).

At 64 px a JPEG need not be decoded at full size: libjpeg's scaled IDCT decodes at 1/2, 1/4 or
1/8 size directly (PIL ``Image.draft``). Config ``image_sets.reduced_jpeg_decode`` switches this on
(features.draft_halvings; off by default, see config/README.md); it is measured here beside the
default, with how far its 64 px arrays move from the default's.

The 64 px arrays of several mixtures of one source: decoded per mixture (``image-array`` on each
manifest, as before) vs. the source's images decoded once (``image-cache``) and each mixture's
rows gathered from them (``gather-rows``), with the arrays compared byte for byte. The mixtures
hold the shares of ImageNet that Tables 3 and 10's mixtures hold (100, 80, 60, 20 and 20%), so
per-mixture decoding decodes each image 2.8 times on average.

Also: what one generation shard costs a reading process (ShardReader keeps each shard's member
table, not an open file).
"""

import functools

from benchmarks.measure import alternate, group_main, measured, rate_row, row, timed

GROUP = "loading"
CLASSES = 8
BATCH = 32


# ---- inputs ---------------------------------------------------------------------------------


def sample_photo():
    """A real photograph that ships with matplotlib (Grace Hopper, 512 x 600 JPEG)."""
    from pathlib import Path

    import matplotlib
    from PIL import Image

    return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")


def photo_like(rng, width: int, height: int, photo):
    """An RGB image with a photograph's statistics (so its JPEG/PNG size and decoding cost are a
    photo's): a random crop of ``photo``, resized, maybe mirrored, with per-channel gains."""
    import numpy as np
    from PIL import Image

    scale = rng.uniform(0.5, 1.0)
    crop_width, crop_height = int(photo.width * scale), int(photo.height * scale)
    left, top = rng.integers(0, photo.width - crop_width + 1), rng.integers(0, photo.height - crop_height + 1)
    image = photo.crop((left, top, left + crop_width, top + crop_height)).resize((width, height), Image.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    gains = rng.uniform(0.8, 1.2, 3)
    return Image.fromarray(np.clip(np.asarray(image) * gains, 0, 255).astype(np.uint8))


def make_jpeg_folder(root, count: int):
    """ImageFolder layout, ImageNet-like: JPEG quality 90, mostly 500 x 375/333 and portraits."""
    import numpy as np

    rng = np.random.default_rng(0)
    photo = sample_photo()
    shapes = [(500, 375), (500, 333), (375, 500), (500, 400), (640, 480)]
    for number in range(count):
        path = root / f"class_{number % CLASSES}" / f"image_{number:05d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        width, height = shapes[number % len(shapes)]
        photo_like(rng, width, height, photo).save(path, quality=90)


def make_shard_and_folder(shard_path, root, count: int):
    """A generation shard of 512 x 512 PNGs (the paper's output), and the same PNGs as loose files."""
    import io

    import numpy as np
    import pandas as pd

    from contamination.generation.shards import write_shard

    rng = np.random.default_rng(1)
    photo = sample_photo()
    members, encoded = [], []
    for number in range(count):
        buffer = io.BytesIO()
        photo_like(rng, 512, 512, photo).save(buffer, format="PNG")
        members.append(f"sd_{number:05d}.png")
        encoded.append(buffer.getvalue())
        path = root / f"class_{number % CLASSES}" / members[-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded[-1])
    write_shard(shard_path, zip(members, encoded), pd.DataFrame({"member": members}))
    return members


def folder_manifest(folder):
    """The manifest of an ImageFolder's files, in its order (so both read the same sequence)."""
    import pandas as pd
    from torchvision.datasets import ImageFolder

    samples = ImageFolder(folder).samples
    return pd.DataFrame({"id": [f"i{n}" for n in range(len(samples))], "uri": [path for path, _ in samples],
                         "label": [label for _, label in samples], "caption": "", "origin": "bench"})


def shard_manifest(folder, shard_path):
    """The same images as ``folder_manifest(folder)``, as members of the shard."""
    from pathlib import Path

    from contamination.formats import shard_uri

    manifest = folder_manifest(folder)
    manifest["uri"] = [shard_uri(str(shard_path), Path(path).name) for path in manifest["uri"]]
    return manifest


# ---- measurement ------------------------------------------------------------------------------


def train_transform_224():
    from contamination import config
    from contamination.experiments.classify_recipe import train_transform

    return train_transform(config.load()["classification"]["models"]["resnet50"])


def read_all(dataset) -> None:
    """One epoch through a DataLoader: shuffled with a fixed seed, in the main process."""
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    for _ in loader:
        pass


def compare(label, count, datasets: dict, repeats: int, **keywords):
    """``datasets``: {"baseline": ..., "ours": ...}; one row, each read ``repeats`` times alternately."""
    for dataset in datasets.values():
        read_all(dataset)  # warm the page cache and the open shard handle for both
    results = alternate({name: timed(read_all, dataset) for name, dataset in datasets.items()}, repeats)
    return rate_row(GROUP, label, count, results["baseline"], results["ours"], unit="images/s", **keywords)


def array_difference(first, second) -> str:
    import numpy as np

    difference = np.abs(np.stack([first[i][0] for i in range(len(first))]).astype(int)
                        - np.stack([second[i][0] for i in range(len(second))]).astype(int))
    return (f"64 px pixels vs. full decode: mean |difference| {difference.mean():.2f}, 99th percentile "
            f"{np.percentile(difference, 99):.0f}, largest {difference.max()} (of 255)")


# The ImageNet part of each mixture of Tables 3 and 10 holding ImageNet: ImageNet, IN/SD-20%,
# IN/SD-40%, IN/SD-80%, ImageNet (20%).
TABLE3_IMAGENET_SHARES = (1.0, 0.8, 0.6, 0.2, 0.2)


def source_index(folder, path):
    """An ImageNet-like source index (all rows train) of the ImageFolder's files."""
    from contamination.formats import INDEX_COLUMNS

    manifest = folder_manifest(folder)
    manifest.assign(path=manifest["uri"], wnid=manifest["label"].map("w{}".format), image_id=manifest["id"],
                    split="train")[INDEX_COLUMNS].to_parquet(path)


def cache_versus_per_mixture(workdir, folder, count: int, repeats: int):
    """One row: 64 px arrays of the TABLE3_IMAGENET_SHARES mixtures of one JPEG source, per
    mixture vs. one cache and a gather per mixture; the arrays must be byte-identical."""
    import types

    from contamination.io import write_parquet
    from contamination.metrics.features import run_image_array
    from contamination.metrics.image_cache import run_gather_rows, run_image_cache
    from contamination.mixtures.manifests import build_mixture, read_items

    directory = workdir / "image-cache"
    directory.mkdir(exist_ok=True)
    index = directory / "imagenet.parquet"
    source_index(folder, index)
    manifests, arrays = [], 0
    for number, share in enumerate(TABLE3_IMAGENET_SHARES):
        spec = {"name": f"mixture_{number}", "kind": "subset", "base": "imagenet", "fraction": share, "seed": 0}
        manifest = build_mixture(spec, read_items(index, "imagenet"))[0]
        manifests.append(directory / f"mixture_{number}.parquet")
        write_parquet(manifest, manifests[-1])
        arrays += manifest.num_rows
    common = dict(size=64, workers=0, reduced_jpeg_decode=False)
    cache = ["imagenet", str(directory / "cache.npy"), str(directory / "cache-uris.parquet")]

    def per_mixture():
        for manifest in manifests:
            run_image_array(types.SimpleNamespace(manifest=str(manifest), index=None, split=None, images=None,
                                                  out=str(manifest.with_suffix(".decoded.npy")), **common))

    def cached():
        run_image_cache(types.SimpleNamespace(index=str(index), dataset="imagenet", train_subset=None, seed=None,
                                              out=cache[1], out_uris=cache[2], **common))
        for manifest in manifests:
            run_gather_rows(types.SimpleNamespace(manifest=str(manifest), cache=[cache],
                                                  out=str(manifest.with_suffix(".gathered.npy"))))

    results = alternate({"baseline": timed(per_mixture), "ours": timed(cached)}, repeats)
    same = all(manifest.with_suffix(".decoded.npy").read_bytes() == manifest.with_suffix(".gathered.npy").read_bytes()
               for manifest in manifests)
    speed = rate_row(GROUP, f"64 px arrays of {len(manifests)} mixtures of one source (loose JPEG), image cache",
                     arrays, results["baseline"], results["ours"], unit="mixture images/s",
                     baseline_label="decoded per mixture (image-array)", target=">= 2x, same pixels",
                     note=(f"{count} source images; the mixtures hold {arrays} ({arrays / count:.1f} per source image); "
                           f"arrays byte-identical: {'yes' if same else 'NO'}"), identical=same)
    return dict(speed, target_met=same and speed["speedup"] >= 2)


def open_shard_cost(workdir, members: int = 1000, shards: int = 64) -> dict:
    """Resident MiB and file descriptors per shard a ShardReader holds after reading from it (its
    member table of ``members`` items; no file should stay open)."""
    import os

    import pandas as pd

    from contamination.generation.shards import ShardReader, write_shard

    shard = workdir / "directory-cost.zip"
    names = [f"sd_imagenet_{n:07d}.png" for n in range(members)]
    if not shard.is_file():
        write_shard(shard, ((name, b"x") for name in names), pd.DataFrame({"member": names}))
    links = []
    for number in range(shards):
        link = workdir / "links" / f"shard-{number:05d}.zip"
        link.parent.mkdir(exist_ok=True)
        if not link.exists():
            link.symlink_to(shard)
        links.append(str(link))
    reader = ShardReader()
    descriptors = len(os.listdir("/proc/self/fd"))
    with measured() as measurement:
        for link in links:
            reader.read(link, names[0])
    return {"mib_per_shard": (measurement.peak_mib - measurement.start_mib) / shards,
            "fds_per_shard": (len(os.listdir("/proc/self/fd")) - descriptors) / shards, "members": members}


def run_group(workdir, quick: bool, long: bool):
    from torchvision.datasets import ImageFolder

    from contamination.data import ManifestDataset
    from contamination.metrics.features import downsample, draft_halvings

    jpeg_count, png_count = (48, 24) if quick else (256, 96)
    repeats = 1 if quick else 3
    jpeg_folder, png_folder = workdir / f"photo-jpeg-{jpeg_count}", workdir / f"photo-png-{png_count}"
    shard = workdir / f"photo-shard-{png_count}.zip"
    if not jpeg_folder.is_dir():
        make_jpeg_folder(jpeg_folder, jpeg_count)
    if not shard.is_file():
        make_shard_and_folder(shard, png_folder, png_count)

    to_64 = functools.partial(downsample, size=64)
    transforms = {"224 px (ResNet-50 train transform)": train_transform_224(), "64 px (features.downsample)": to_64}
    sets = {"loose JPEG": (jpeg_folder, folder_manifest(jpeg_folder), jpeg_count),
            "PNG in shard": (png_folder, shard_manifest(png_folder, shard), png_count)}
    rows = []
    for set_name, (folder, manifest, count) in sets.items():
        for size_name, transform in transforms.items():
            datasets = {"baseline": ImageFolder(folder, transform=transform),
                        "ours": ManifestDataset(manifest, transform)}
            rows.append(compare(f"{set_name}, {size_name}", count, datasets, repeats,
                                baseline_label="torchvision ImageFolder",
                                target="", note="DataLoader, batch 32, main process"))
    jpeg_manifest = sets["loose JPEG"][1]
    target = ">= 2x ImageFolder"
    rows[1].update(target=target, target_met=rows[1]["speedup"] >= 2)
    reduced = ManifestDataset(jpeg_manifest, to_64, jpeg_draft=functools.partial(draft_halvings, size=64))
    speed = compare("loose JPEG, 64 px, image_sets.reduced_jpeg_decode: true", jpeg_count,
                    {"baseline": ImageFolder(jpeg_folder, transform=to_64), "ours": reduced}, repeats,
                    baseline_label="torchvision ImageFolder", target=target,
                    note=array_difference(ManifestDataset(jpeg_manifest, to_64), reduced))
    rows.append(dict(speed, target_met=speed["speedup"] >= 2))

    rows.append(cache_versus_per_mixture(workdir, jpeg_folder, jpeg_count, repeats))

    cost = open_shard_cost(workdir)
    shards_per_dataset = 1400
    rows.append(row(GROUP, "read shards (ShardReader)", unit="MiB per shard", basis="-",
                    baseline_label="-", baseline=None, ours=cost["mib_per_shard"], higher_is_better=False,
                    note=(f"{cost['members']} members per shard, {cost['fds_per_shard']:.0f} file descriptor(s) "
                          f"left open per shard; SD-ImageNet's {shards_per_dataset} shards: "
                          f"{cost['mib_per_shard'] * shards_per_dataset:,.0f} MiB and "
                          f"{cost['fds_per_shard'] * shards_per_dataset:.0f} open files per DataLoader worker"), **cost))
    return rows


if __name__ == "__main__":
    group_main(run_group, __doc__.splitlines()[0])
