"""Per-dataset caches of prepared images: a mixture's array gathered from them is byte-identical
to the array decoded from the mixture's own manifest."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from contamination.__main__ import main
from contamination.errors import DataError
from contamination.formats import GENERATED_COLUMNS, INDEX_COLUMNS, shard_uri
from contamination.generation.shards import write_shard
from contamination.io import write_parquet
from contamination.mixtures.manifests import build_mixture, read_items

SIZE = 16
LABELS = 3


def photo_like(rng, width, height):
    """Smooth noise, so box halvings and bicubic resizing have something to average."""
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BILINEAR)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A real source index (JPEGs of several sizes, train and val rows) and a generated index
    (PNGs in a shard), 3 classes each."""
    directory = tmp_path_factory.mktemp("datasets")
    rng = np.random.default_rng(0)
    rows = []
    for number in range(24):
        label, split = number % LABELS, "val" if number >= 21 else "train"
        path = directory / "real" / f"r{number}.JPEG"
        path.parent.mkdir(exist_ok=True)
        photo_like(rng, [80, 67, 40][number % 3], [60, 90, 41][number % 3]).save(path, quality=90)
        rows.append([f"r{number}", str(path), label, f"w{label}", "", f"r{number}", split])
    real = directory / "imagenet.parquet"
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_parquet(real)

    shard = directory / "generated" / "shard-00000.zip"
    shard.parent.mkdir()
    members, encoded = [f"g{number}.png" for number in range(15)], []
    for _ in members:
        buffer = io.BytesIO()
        photo_like(rng, 64, 64).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    write_shard(shard, zip(members, encoded), pd.DataFrame({"member": members}))
    generated = directory / "sd_imagenet.parquet"
    pd.DataFrame([[f"g{number}", number % LABELS, f"w{number % LABELS}", "", "a photo", number, "",
                   shard_uri(str(shard), member)] for number, member in enumerate(members)],
                 columns=GENERATED_COLUMNS).to_parquet(generated)
    return {"imagenet": real, "sd_imagenet": generated}


def mixture_manifest(datasets, path, subsample=None, **spec):
    spec = {"name": "in_sd", "kind": "replace", "base": "imagenet", "by": "sd_imagenet", "fraction": 0.4,
            "seed": 3, "subsample": subsample or {}, **spec}
    manifest, _ = build_mixture(spec, read_items(datasets["imagenet"], "imagenet"),
                                read_items(datasets["sd_imagenet"], "sd_imagenet"))
    write_parquet(manifest, path)
    return manifest


def build_cache(datasets, directory, name, *options):
    out, uris = directory / f"{name}.npy", directory / f"{name}-uris.parquet"
    assert main(["image-cache", "--index", str(datasets[name]), "--dataset", name, "--size", str(SIZE), *options,
                 "--out", str(out), "--out-uris", str(uris)]) == 0
    return [name, str(out), str(uris)]


@pytest.mark.parametrize("options", [[], ["--reduced-jpeg-decode"]], ids=["default", "reduced-jpeg-decode"])
def test_gathered_mixture_array_is_byte_identical_to_the_decoded_one(datasets, tmp_path, options):
    # The base cut to 15 of its 21 training images, as sources.imagenet.train_subset cuts it;
    # "append" with replacement takes some generated images twice.
    manifest = tmp_path / "in_sd.parquet"
    rows = mixture_manifest(datasets, manifest, subsample={"imagenet": 15}, kind="append", fraction=1.0,
                            with_replacement=True)
    origins = rows["origin"].to_pylist()
    assert origins.count("imagenet") == 15 and origins.count("sd_imagenet") == 15
    assert any("~" in item for item in rows["id"].to_pylist())
    direct = tmp_path / "direct.npy"
    assert main(["image-array", "--manifest", str(manifest), "--size", str(SIZE), *options, "--out", str(direct)]) == 0

    caches = [build_cache(datasets, tmp_path, "imagenet", "--train-subset", "15", "--seed", "3", *options),
              build_cache(datasets, tmp_path, "sd_imagenet", *options)]
    assert np.load(caches[0][1]).shape == (15, SIZE, SIZE, 3)
    gathered = tmp_path / "gathered.npy"
    # the caches in either order
    assert main(["gather-rows", "--manifest", str(manifest), "--cache", *caches[1], "--cache", *caches[0],
                 "--out", str(gathered)]) == 0
    assert gathered.read_bytes() == direct.read_bytes()
    distinct = len(set(rows["uri"].to_pylist()))
    assert distinct < 30 and len(np.unique(np.load(gathered).reshape(30, -1), axis=0)) == distinct


def test_one_cache_serves_every_mixture_of_its_dataset(datasets, tmp_path):
    caches = [build_cache(datasets, tmp_path, name) for name in ("imagenet", "sd_imagenet")]
    for fraction in (0.2, 0.6):
        manifest = tmp_path / f"in_sd_{fraction}.parquet"
        mixture_manifest(datasets, manifest, fraction=fraction)
        direct, gathered = tmp_path / "direct.npy", tmp_path / "gathered.npy"
        assert main(["image-array", "--manifest", str(manifest), "--size", str(SIZE), "--out", str(direct)]) == 0
        assert main(["gather-rows", "--manifest", str(manifest), "--cache", *caches[0], "--cache", *caches[1],
                     "--out", str(gathered)]) == 0
        assert np.array_equal(np.load(gathered), np.load(direct))


def test_a_cache_of_other_rows_or_a_missing_cache_is_an_error(datasets, tmp_path, capsys):
    manifest = tmp_path / "in_sd.parquet"
    mixture_manifest(datasets, manifest)
    small = build_cache(datasets, tmp_path, "imagenet", "--train-subset", "5", "--seed", "3")
    generated = build_cache(datasets, tmp_path, "sd_imagenet")
    out = tmp_path / "gathered.npy"
    assert main(["gather-rows", "--manifest", str(manifest), "--cache", *small, "--cache", *generated,
                 "--out", str(out)]) == 2
    assert "the cache of 'imagenet'" in capsys.readouterr().err and not out.exists()
    assert main(["gather-rows", "--manifest", str(manifest), "--cache", *generated, "--out", str(out)]) == 2
    assert "['imagenet'], for which no --cache was given" in capsys.readouterr().err and not out.exists()


def test_a_dataset_of_several_rows_per_image_is_cached_once_per_image(tmp_path):
    from contamination.metrics.image_cache import cache_items

    rows = [[f"c{image}_{caption}", f"/data/{image}.jpg", 1, "w1", f"caption {caption}", f"c{image}", "train"]
            for image in range(3) for caption in range(2)]
    index = tmp_path / "coco.parquet"
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_parquet(index)
    items = cache_items(index, "coco")
    assert items["uri"].tolist() == ["/data/0.jpg", "/data/1.jpg", "/data/2.jpg"]
    assert (items["origin"] == "coco").all()


def test_cache_rows_reject_a_cache_whose_uris_and_images_differ(datasets, tmp_path):
    from contamination.metrics.image_cache import cache_rows

    manifest = tmp_path / "in_sd.parquet"
    mixture_manifest(datasets, manifest)
    caches = {name: (images, uris) for name, images, uris in
              (build_cache(datasets, tmp_path, name) for name in ("imagenet", "sd_imagenet"))}
    which, rows = cache_rows(manifest, caches)
    assert sorted(set(which)) == [0, 1]
    images = caches["sd_imagenet"][0]
    np.save(images, np.load(images)[:-1])
    with pytest.raises(DataError, match="differ in rows"):
        cache_rows(manifest, caches)
