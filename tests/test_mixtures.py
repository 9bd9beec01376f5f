"""Mixture manifests: exact counts, common random numbers, pairing of captions, determinism."""

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from contamination.__main__ import main
from contamination.errors import ConfigError, DataError
from contamination.formats import GENERATED_COLUMNS, INDEX_COLUMNS, MANIFEST_COLUMNS
from contamination.mixtures import manifests as mixtures
from contamination.mixtures.manifests import read_items

# Class sizes chosen so that some fractions land on halves (5 * 0.1, 15 * 0.3, 10 * 0.95).
CLASS_SIZES = {0: 20, 1: 13, 2: 5, 3: 10, 4: 15}


def real_index(name, sizes, extra_splits=True):
    rows = []
    for label, size in sizes.items():
        for number in range(size):
            item = f"{name}_{label}_{number}"
            rows.append([item, f"/data/{name}/{item}.jpg", label, f"w{label}", "", item, "train"])
        if extra_splits:
            item = f"{name}_{label}_val"
            rows.append([item, f"/data/{name}/{item}.jpg", label, f"w{label}", "", item, "val"])
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def generated_index(name, sizes):
    rows = []
    for label, size in sizes.items():
        for number in range(size):
            item = f"{name}_{label}_{number:05d}"
            shard = f"/results/generated/{name}/shard-00000.zip"
            rows.append([item, label, f"w{label}", f"w{label}", f"photo of {label}", number, "",
                         f"zip://{shard}#{item}.png"])
    return pd.DataFrame(rows, columns=GENERATED_COLUMNS)


def caption_index(name, images, captions_per_image=5, extra_captions=None):
    """``images`` images (the last 2 in the test split) of ``captions_per_image`` captions, plus
    ``extra_captions[image]`` more for some (Karpathy's COCO has images with 6 or 7)."""
    rows = []
    extra_captions = extra_captions or {}
    for image in range(images):
        for caption in range(captions_per_image + extra_captions.get(image, 0)):
            item = f"{name}_{image}_{caption}"
            split = "train" if image < images - 2 else "test"
            rows.append([item, f"/data/{name}/{image}.jpg", -1, "", f"caption {image}.{caption}",
                         f"{name}_{image}", split])
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def captions_generated(name, real, skip=(), first=5):
    """One image per training caption, from the ``first`` captions of each image (as SD-COCO)."""
    train = real[(real["split"] == "train") & ~real["id"].isin(skip)
                 & (real.groupby("image_id").cumcount() < first)]
    return pd.DataFrame({
        "id": [f"{name}_{number:06d}" for number in range(len(train))],
        "label": -1, "wnid": "",
        "source_id": train["id"].to_numpy(),
        "prompt": train["caption"].to_numpy(),
        "seed": np.arange(len(train)),
        "caption": train["caption"].to_numpy(),
        "uri": [f"zip:///gen/{name}/shard-00000.zip#{name}_{number:06d}.png" for number in range(len(train))],
    })


def items(frame, name, tmp_path):
    """The frame as the mixture command reads it back from an index file (as a frame, to assert with
    pandas)."""
    path = tmp_path / f"{name}.parquet"
    frame.to_parquet(path)
    return read_items(path, name).to_pandas()


def build_mixture(spec, base, by=None):
    """mixtures.build_mixture on frames; the manifest comes back as a frame."""
    manifest, summary = mixtures.build_mixture(spec, arrow_table(base), None if by is None else arrow_table(by))
    return manifest.to_pandas(), summary


def arrow_table(frame):
    return mixtures.as_items(pa.Table.from_pandas(frame, preserve_index=False))


@pytest.fixture
def imagenet(tmp_path):
    return items(real_index("imagenet", CLASS_SIZES), "imagenet", tmp_path)


@pytest.fixture
def sd_imagenet(tmp_path):
    return items(generated_index("sd_imagenet", {label: 24 for label in CLASS_SIZES}), "sd_imagenet", tmp_path)


@pytest.fixture
def webvision(tmp_path):
    return items(real_index("webvision", {0: 3, 1: 2, 2: 6, 3: 1, 4: 4}), "webvision", tmp_path)


# 30 training images: 0.05 and 0.95 of them land on halves. Images 1 and 4 have 6 and 7 captions.
COCO_EXTRA_CAPTIONS = {1: 1, 4: 2}
COCO_TRAIN_IMAGES = 30


@pytest.fixture
def coco_frame():
    return caption_index("coco", COCO_TRAIN_IMAGES + 2, extra_captions=COCO_EXTRA_CAPTIONS)


@pytest.fixture
def coco(coco_frame, tmp_path):
    return items(coco_frame, "coco", tmp_path)


@pytest.fixture
def sd_coco(coco_frame, tmp_path):
    return items(captions_generated("sd_coco", coco_frame), "sd_coco", tmp_path)


def spec(name, kind, fraction, base="imagenet", by=None, seed=0, **options):
    return {"name": name, "label": name.upper(), "kind": kind, "base": base, "by": by,
            "fraction": fraction, "seed": seed, **options}


def half_up(fraction, count):
    return int((Decimal(repr(fraction)) * count).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def raw_ids(manifest, origin):
    rows = manifest[manifest["origin"] == origin]
    return set(rows["id"].str.removeprefix(origin + "/"))


def test_read_items_takes_train_rows_of_an_index_and_all_rows_of_a_generated_one(imagenet, sd_imagenet):
    assert len(imagenet) == sum(CLASS_SIZES.values())
    assert not imagenet["id"].str.endswith("_val").any()
    assert imagenet["uri"].iloc[0] == "/data/imagenet/imagenet_0_0.jpg"
    assert len(sd_imagenet) == 24 * len(CLASS_SIZES)
    assert sd_imagenet["uri"].str.startswith("zip://").all()


def test_read_items_names_the_file_that_is_no_index(tmp_path):
    path = tmp_path / "other.parquet"
    pd.DataFrame({"id": ["a"], "label": [0]}).to_parquet(path)
    with pytest.raises(DataError, match="other.parquet.*neither a source index"):
        read_items(path, "imagenet")
    with pytest.raises(DataError, match="missing.parquet"):
        read_items(tmp_path / "missing.parquet", "imagenet")


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.4, 0.8, 0.95])
def test_replace_takes_exact_counts_per_class_and_keeps_the_class_histogram(imagenet, sd_imagenet, fraction):
    manifest, summary = build_mixture(spec("mix", "replace", fraction, by="sd_imagenet", match="label"),
                                      imagenet, sd_imagenet)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["id"].is_unique
    assert manifest["label"].value_counts().sort_index().to_dict() == CLASS_SIZES
    generated = manifest[manifest["origin"] == "sd_imagenet"]
    replaced_per_class = generated["label"].value_counts().to_dict()
    for label, size in CLASS_SIZES.items():
        assert replaced_per_class.get(label, 0) == half_up(fraction, size)
    assert summary["replaced"] == len(generated) == summary["counts"]["sd_imagenet"]
    # No generated item used twice, each with its own class.
    assert generated["uri"].is_unique
    assert (generated["uri"].str.extract(r"sd_imagenet_(\d+)_")[0].astype(int) == generated["label"]).all()


def test_replace_keeps_base_order_with_replacements_in_place(imagenet, sd_imagenet):
    manifest, _ = build_mixture(spec("mix", "replace", 0.4, by="sd_imagenet"), imagenet, sd_imagenet)
    real = manifest["origin"] == "imagenet"
    assert (manifest["id"][real].to_numpy() == ("imagenet/" + imagenet["id"])[real.to_numpy()].to_numpy()).all()
    assert (manifest["label"].to_numpy() == imagenet["label"].to_numpy()).all()


def test_replaced_sets_and_their_replacements_are_nested_across_fractions(imagenet, sd_imagenet):
    replaced, pairs = {}, {}
    for fraction in (0.2, 0.4, 0.8):
        manifest, _ = build_mixture(spec("mix", "replace", fraction, by="sd_imagenet"), imagenet, sd_imagenet)
        swapped = manifest["origin"].to_numpy() == "sd_imagenet"
        replaced[fraction] = set(imagenet["id"][swapped])
        pairs[fraction] = dict(zip(imagenet["id"][swapped], manifest["uri"][swapped]))
    assert replaced[0.2] < replaced[0.4] < replaced[0.8]
    # The same real item gets the same generated item at every fraction.
    assert all(pairs[0.8][item] == uri for item, uri in pairs[0.2].items())
    assert all(pairs[0.8][item] == uri for item, uri in pairs[0.4].items())


@pytest.mark.parametrize("kept", [0.05, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9])
def test_subset_is_the_real_part_of_the_complementary_replace(imagenet, sd_imagenet, kept):
    replaced_fraction = float(Decimal(1) - Decimal(repr(kept)))  # 0.95, 0.8, ... as config writes them
    subset, summary = build_mixture(spec("sub", "subset", kept), imagenet)
    mixture, _ = build_mixture(spec("mix", "replace", replaced_fraction, by="sd_imagenet"), imagenet, sd_imagenet)
    assert set(subset["id"]) == set(mixture["id"][mixture["origin"] == "imagenet"])
    for label, size in CLASS_SIZES.items():
        assert (subset["label"] == label).sum() == size - half_up(replaced_fraction, size)
    assert summary["counts"] == {"imagenet": len(subset)}


def test_float_arithmetic_does_not_change_counts(imagenet, sd_imagenet):
    # 1 - 0.8 is 0.19999999999999996 in floats; it must count like 0.2.
    written, computed = build_mixture(spec("a", "subset", 0.2), imagenet)[0], build_mixture(
        spec("a", "subset", 1 - 0.8), imagenet)[0]
    assert written["id"].tolist() == computed["id"].tolist()


def images_of(manifest, origin="coco"):
    """The real images (image ids) behind a manifest's rows of ``origin``."""
    return set(manifest["uri"][manifest["origin"] == origin].str.extract(r"/(\d+)\.jpg$")[0].map(lambda n: f"coco_{n}"))


def captions_by_image(coco):
    return coco.groupby("image_id")["caption"].apply(set).to_dict()


# Rounding: a fraction f of n images is round-half-up(f * n) images (half_up); a subset of p
# keeps n - round-half-up((1 - p) * n), the real part of the replace with 1 - p.
@pytest.mark.parametrize("kept, replaced_fraction", [(0.05, 0.95), (0.2, 0.8), (0.6, 0.4), (0.8, 0.2)])
def test_caption_subsets_keep_whole_images_the_real_part_of_co_sd(coco, sd_coco, kept, replaced_fraction):
    subset, summary = build_mixture(spec("coco_sub", "subset", kept, base="coco"), coco)
    kept_images = images_of(subset)
    assert len(kept_images) == COCO_TRAIN_IMAGES - half_up(replaced_fraction, COCO_TRAIN_IMAGES)
    assert summary["units"] == {"base": COCO_TRAIN_IMAGES, "base_kept": len(kept_images), "added": 0}
    # Every caption of a kept image is there, once.
    captions = captions_by_image(coco)
    assert len(subset) == sum(len(captions[image]) for image in kept_images)
    for image in kept_images:
        assert captions[image] <= set(subset["caption"])
    mixture, _ = build_mixture(
        spec("co_sd", "replace", replaced_fraction, base="coco", by="sd_coco", match="source"), coco, sd_coco)
    assert set(subset["id"]) == set(mixture["id"][mixture["origin"] == "coco"])
    assert "counts_by_class" not in summary


@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.8, 0.95])
def test_co_sd_replaces_whole_images_by_the_images_generated_from_their_captions(coco, sd_coco, fraction):
    manifest, summary = build_mixture(spec("co_sd", "replace", fraction, base="coco", by="sd_coco", match="source"),
                                      coco, sd_coco)
    assert manifest["id"].is_unique
    real_images = images_of(manifest)
    replaced_images = set(coco["image_id"]) - real_images
    assert len(replaced_images) == half_up(fraction, COCO_TRAIN_IMAGES)
    assert len(real_images) == COCO_TRAIN_IMAGES - half_up(fraction, COCO_TRAIN_IMAGES)
    captions = captions_by_image(coco)
    real = manifest[manifest["origin"] == "coco"]
    assert len(real) == sum(len(captions[image]) for image in real_images)
    # A replaced image becomes the images generated from its captions (its first 5), each with
    # the caption it was made from, where the caption's real row was.
    generated_of = dict(zip(sd_coco["source_id"], sd_coco["uri"]))
    wanted = coco[coco["image_id"].isin(replaced_images) & coco["id"].isin(generated_of)]
    generated = manifest[manifest["origin"] == "sd_coco"]
    assert generated["uri"].tolist() == [generated_of[item] for item in wanted["id"]]
    assert generated["caption"].tolist() == wanted["caption"].tolist()
    assert (generated["label"] == -1).all()
    assert summary["units"] == {"base": COCO_TRAIN_IMAGES, "base_kept": len(real_images), "added": len(generated)}
    assert summary["replaced"] == len(coco) - len(real)
    # In place: the manifest follows the base order of the rows it keeps or stands in for.
    stands_for = np.where(manifest["origin"] == "coco", manifest["id"].str.removeprefix("coco/"),
                          manifest["uri"].map({uri: item for item, uri in generated_of.items()}))
    order = pd.Series(range(len(coco)), index=coco["id"])
    assert order[stands_for].is_monotonic_increasing


def test_co_sd_by_image_is_nested_across_fractions(coco, sd_coco):
    replaced, generated = {}, {}
    for fraction in (0.2, 0.4, 0.8, 0.95):
        manifest, _ = build_mixture(spec("co_sd", "replace", fraction, base="coco", by="sd_coco", match="source"),
                                    coco, sd_coco)
        replaced[fraction] = set(coco["image_id"]) - images_of(manifest)
        generated[fraction] = set(manifest["uri"][manifest["origin"] == "sd_coco"])
    assert replaced[0.2] < replaced[0.4] < replaced[0.8] < replaced[0.95]
    assert generated[0.2] < generated[0.4] < generated[0.8] < generated[0.95]


def test_co_sd_by_image_replaces_only_images_with_a_generated_image(coco_frame, tmp_path):
    coco = items(coco_frame, "coco", tmp_path)
    # Image 0 lost 2 of its generated images, image 3 all 5.
    missing = {"coco_0_0", "coco_0_1"} | {f"coco_3_{caption}" for caption in range(5)}
    sd_coco = items(captions_generated("sd_coco", coco_frame, skip=missing), "sd_coco", tmp_path)
    manifest, _ = build_mixture(spec("co_sd", "replace", 0.95, base="coco", by="sd_coco", match="source"),
                                coco, sd_coco)
    real_images = images_of(manifest)
    assert "coco_3" in real_images and len(real_images) == COCO_TRAIN_IMAGES - half_up(0.95, COCO_TRAIN_IMAGES)
    if "coco_0" not in real_images:  # replaced by the 3 images it has
        assert not {"coco/coco_0_0", "coco/coco_0_1"} & set(manifest["id"])
    with pytest.raises(DataError, match="co_sd.*needs 30 images with an image generated from them in 'sd_coco', "
                                        "but only 29 of its 30 images have one"):
        build_mixture(spec("co_sd", "replace", 1.0, base="coco", by="sd_coco", match="source"), coco, sd_coco)


def test_co_fl_swaps_whole_coco_images_for_whole_flickr_images(coco, tmp_path):
    flickr_frame = caption_index("flickr30k", 9, extra_captions={2: 1})  # 7 training images
    flickr = items(flickr_frame, "flickr30k", tmp_path)
    manifest, summary = build_mixture(
        spec("co_fl", "replace", 0.4, base="coco", by="flickr30k", match="none", with_replacement=True), coco, flickr)
    assert manifest["id"].is_unique
    real_images = images_of(manifest)
    assert len(real_images) == COCO_TRAIN_IMAGES - half_up(0.4, COCO_TRAIN_IMAGES)
    taken = manifest[manifest["origin"] == "flickr30k"]
    # 12 COCO images out, 12 Flickr30k images in: its 7 training images in one random order, then
    # the first 5 of that order again (every image once before any twice), each with all its captions.
    uses = taken.groupby("uri")["caption"].agg(list)
    assert summary["units"]["added"] == half_up(0.4, COCO_TRAIN_IMAGES) == 12
    flickr_captions = flickr.groupby("uri")["caption"].agg(sorted)
    assert set(uses.index) == set(flickr_captions.index)
    for uri, captions in uses.items():
        used = len(captions) // len(flickr_captions[uri])
        assert used in (1, 2) and sorted(captions) == sorted(flickr_captions[uri] * used)
    assert sum(len(captions) // len(flickr_captions[uri]) for uri, captions in uses.items()) == 12
    assert summary["reused"] == taken["id"].str.contains("~").sum() > 0
    # The captions of an image stay together, in the place of the COCO image it replaced.
    use = taken["uri"] + taken["id"].str.extract(r"(~\d+)$")[0].fillna("")
    assert (use != use.shift()).sum() == use.nunique() == 12
    with pytest.raises(DataError, match=r"co_fl.*whole set needs 12 images from 'flickr30k', which has 7.*"
                                        r"mixtures\[\.\.\]\.with_replacement"):
        build_mixture(spec("co_fl", "replace", 0.4, base="coco", by="flickr30k", match="none"), coco, flickr)


def test_co_fl_by_image_is_nested_across_fractions(coco, tmp_path):
    flickr = items(caption_index("flickr30k", 9), "flickr30k", tmp_path)
    pairs = {}
    for fraction in (0.2, 0.4):
        manifest, _ = build_mixture(spec("co_fl", "replace", fraction, base="coco", by="flickr30k", match="none",
                                         with_replacement=True), coco, flickr)
        pairs[fraction] = set(manifest["id"][manifest["origin"] == "flickr30k"]), images_of(manifest)
    assert pairs[0.2][0] < pairs[0.4][0] and pairs[0.4][1] < pairs[0.2][1]


# unit: pair, the departure kept as an option: (image, caption) rows are drawn one by one.
def test_pair_subset_of_caption_data_is_the_real_part_of_co_sd(tmp_path):
    # Every caption has a generated image here: by pairs, a caption without one cannot be
    # replaced, and the subset is then not the real part of CO/SD.
    coco_frame = caption_index("coco", COCO_TRAIN_IMAGES + 2)
    coco, sd_coco = items(coco_frame, "coco", tmp_path), items(captions_generated("sd_coco", coco_frame), "sd_coco", tmp_path)
    for kept, replaced_fraction in ((0.05, 0.95), (0.2, 0.8)):
        subset, summary = build_mixture(spec("coco_sub", "subset", kept, base="coco", unit="pair"), coco)
        mixture, _ = build_mixture(spec("co_sd", "replace", replaced_fraction, base="coco", by="sd_coco",
                                        match="source", unit="pair"), coco, sd_coco)
        assert set(subset["id"]) == set(mixture["id"][mixture["origin"] == "coco"])
        assert len(subset) == len(coco) - half_up(replaced_fraction, len(coco))
        assert summary["unit"] == "pair" and summary["units"]["base"] == len(coco)
    # By pairs, a 5% subset keeps far more than 5% of the images (the departure the option names).
    assert len(images_of(subset)) > COCO_TRAIN_IMAGES - half_up(replaced_fraction, COCO_TRAIN_IMAGES)


def test_pair_match_source_pairs_each_replaced_caption_with_the_image_generated_from_it(coco, sd_coco):
    manifest, summary = build_mixture(spec("co_sd", "replace", 0.4, base="coco", by="sd_coco", match="source",
                                           unit="pair"), coco, sd_coco)
    swapped = manifest["origin"].to_numpy() == "sd_coco"
    assert swapped.sum() == half_up(0.4, len(coco)) == summary["replaced"]
    generated_of = dict(zip(sd_coco["source_id"], sd_coco["uri"]))
    for real_id, caption, row in zip(coco["id"][swapped], coco["caption"][swapped], manifest[swapped].itertuples()):
        assert row.uri == generated_of[real_id]
        assert row.caption == caption
        assert row.label == -1
    assert (manifest["caption"].to_numpy() == coco["caption"].to_numpy()).all()


def test_pair_match_source_replaces_only_rows_that_have_a_generated_counterpart(coco_frame, tmp_path):
    coco = items(coco_frame, "coco", tmp_path)
    missing = {"coco_0_0", "coco_0_1", "coco_3_4"}
    sd_coco = items(captions_generated("sd_coco", coco_frame, skip=missing), "sd_coco", tmp_path)
    manifest, _ = build_mixture(spec("co_sd", "replace", 0.8, base="coco", by="sd_coco", match="source",
                                     unit="pair"), coco, sd_coco)
    assert {f"coco/{item}" for item in missing} <= set(manifest["id"])
    assert (manifest["origin"] == "sd_coco").sum() == half_up(0.8, len(coco))
    with pytest.raises(DataError, match="co_sd.*needs 153 rows with an image generated from them in 'sd_coco', "
                                        "but only 147 "):
        build_mixture(spec("co_sd", "replace", 1.0, base="coco", by="sd_coco", match="source", unit="pair"),
                      coco, sd_coco)


def test_pair_match_none_takes_any_rows_of_by(coco, tmp_path):
    flickr = items(caption_index("flickr30k", 20), "flickr30k", tmp_path)
    manifest, summary = build_mixture(spec("co_fl", "replace", 0.4, base="coco", by="flickr30k", match="none",
                                           unit="pair"), coco, flickr)
    taken = manifest[manifest["origin"] == "flickr30k"]
    assert len(taken) == half_up(0.4, len(coco)) == summary["counts"]["flickr30k"]
    assert taken["caption"].str.startswith("caption").all() and taken["uri"].str.contains("flickr30k").all()
    assert taken["id"].is_unique
    with pytest.raises(DataError, match="co_fl.*whole set needs 122 rows from 'flickr30k', which has 90.*"
                                        r"mixtures\[\.\.\]\.with_replacement"):
        build_mixture(spec("co_fl", "replace", 0.8, base="coco", by="flickr30k", match="none", unit="pair"),
                      coco, flickr)


def test_short_classes_fail_clearly_without_replacement(imagenet, webvision):
    with pytest.raises(DataError) as error:
        build_mixture(spec("in_wv_40", "replace", 0.4, by="webvision"), imagenet, webvision)
    message = str(error.value)
    assert "in_wv_40" in message and "class 0 needs 8 images from 'webvision', which has 3" in message
    assert "mixtures[..].with_replacement" in message


def test_with_replacement_fills_short_classes_with_distinct_ids(imagenet, webvision):
    manifest, summary = build_mixture(
        spec("in_wv_80", "replace", 0.8, by="webvision", with_replacement=True), imagenet, webvision)
    assert manifest["id"].is_unique
    taken = manifest[manifest["origin"] == "webvision"]
    for label, size in CLASS_SIZES.items():
        in_class = taken[taken["label"] == label]
        assert len(in_class) == half_up(0.8, size)
        assert in_class["uri"].str.contains(f"webvision_{label}_").all()
    # Class 3 has one WebVision image for 8 slots: it is used 8 times under 8 ids.
    assert taken[taken["label"] == 3]["uri"].nunique() == 1
    assert summary["reused"] == len(taken) - taken["uri"].nunique() > 0
    assert taken["id"].str.contains("~").sum() == summary["reused"]
    # A short class is cycled: every item is used before any is used again.
    for label in CLASS_SIZES:
        uses = taken[taken["label"] == label]["uri"].value_counts()
        assert uses.max() - uses.min() <= 1


def test_with_replacement_draws_are_nested_across_fractions(imagenet, webvision):
    pairs = {}
    for fraction in (0.2, 0.8):
        manifest, _ = build_mixture(spec("in_wv", "replace", fraction, by="webvision", with_replacement=True),
                                    imagenet, webvision)
        swapped = manifest["origin"].to_numpy() == "webvision"
        pairs[fraction] = dict(zip(imagenet["id"][swapped], manifest["uri"][swapped]))
    assert all(pairs[0.8][item] == uri for item, uri in pairs[0.2].items())


def test_a_class_missing_from_by_fails_even_with_replacement(imagenet, tmp_path):
    webvision = items(real_index("webvision", {0: 3, 1: 2, 2: 6, 4: 4}), "webvision", tmp_path)
    with pytest.raises(DataError, match="class 3 needs 2 images from 'webvision', which has 0"):
        build_mixture(spec("in_wv", "replace", 0.2, by="webvision", with_replacement=True), imagenet, webvision)


def test_append_keeps_the_base_and_adds_per_class_counts_at_the_end(imagenet, sd_imagenet):
    manifest, summary = build_mixture(spec("plus", "append", 0.4, by="sd_imagenet"), imagenet, sd_imagenet)
    base_rows = len(imagenet)
    assert (manifest["id"][:base_rows] == "imagenet/" + imagenet["id"]).all()
    appended = manifest[base_rows:]
    assert (appended["origin"] == "sd_imagenet").all() and appended["uri"].is_unique
    for label, size in CLASS_SIZES.items():
        assert (appended["label"] == label).sum() == half_up(0.4, size)
    assert summary["appended"] == len(appended) and summary["replaced"] == 0
    assert summary["total"] == base_rows + len(appended)
    # Appended items are the ones the same fraction of replace would put in.
    replaced, _ = build_mixture(spec("mix", "replace", 0.4, by="sd_imagenet"), imagenet, sd_imagenet)
    assert set(appended["uri"]) == set(replaced["uri"][replaced["origin"] == "sd_imagenet"])


def test_summary_counts_by_origin_and_class(imagenet, sd_imagenet):
    manifest, summary = build_mixture(spec("mix", "replace", 0.2, by="sd_imagenet"), imagenet, sd_imagenet)
    assert summary["name"] == "mix" and summary["label"] == "MIX" and summary["kind"] == "replace"
    assert summary["fraction"] == 0.2 and summary["seed"] == 0 and summary["total"] == len(imagenet)
    assert summary["counts"] == manifest["origin"].value_counts().to_dict()
    for label, size in CLASS_SIZES.items():
        by_origin = summary["counts_by_class"][str(label)]
        assert by_origin.get("sd_imagenet", 0) == half_up(0.2, size)
        assert sum(by_origin.values()) == size


def test_seed_decides_the_manifest_bytes(imagenet, sd_imagenet, tmp_path):
    from contamination.io import write_parquet

    paths = []
    for run, seed in enumerate((0, 0, 1)):
        manifest, _ = build_mixture(spec("mix", "replace", 0.4, by="sd_imagenet", seed=seed), imagenet, sd_imagenet)
        paths.append(tmp_path / f"run{run}.parquet")
        write_parquet(manifest, paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    first, other = pd.read_parquet(paths[0]), pd.read_parquet(paths[2])
    assert set(first["uri"]) != set(other["uri"])
    assert raw_ids(first, "imagenet") != raw_ids(other, "imagenet")


def test_bad_specs_name_the_key(imagenet, sd_imagenet):
    with pytest.raises(ConfigError, match=r"mixtures\[\.\.\]\.by of 'mix'"):
        build_mixture(spec("mix", "replace", 0.2), imagenet)
    with pytest.raises(ConfigError, match=r"with_replacement of 'mix'"):
        build_mixture(spec("mix", "replace", 0.2, by="sd_imagenet", match="source", with_replacement=True),
                      imagenet, sd_imagenet)
    with pytest.raises(ConfigError, match=r"by of 'mix': 'imagenet' is also its base"):
        build_mixture(spec("mix", "append", 0.2, by="imagenet"), imagenet, imagenet)
    with pytest.raises(ConfigError, match=r"fraction of 'mix': 1.5"):
        build_mixture(spec("mix", "subset", 1.5), imagenet)


def test_paper_scale_shapes_stay_vectorised():
    """~200k rows over 1000 classes (ImageNet-like) and 100k pairs (COCO-like): these finish in
    seconds only if nothing loops over rows."""
    rng = np.random.default_rng(0)
    labels = np.sort(rng.integers(0, 1000, 200_000))
    base = pd.DataFrame({"id": [f"r{i}" for i in range(len(labels))], "uri": "/x.jpg", "label": labels,
                         "caption": "", "source_id": "", "origin": "imagenet"})
    by = pd.DataFrame({"id": [f"g{i}" for i in range(220_000)], "uri": "zip:///s.zip#g.png",
                       "label": np.repeat(np.arange(1000), 220), "caption": "", "source_id": "",
                       "origin": "sd_imagenet"})
    manifest, summary = build_mixture(spec("big", "replace", 0.8, by="sd_imagenet"), base, by)
    assert summary["replaced"] == sum(half_up(0.8, n) for n in np.bincount(labels, minlength=1000))
    manifest, summary = build_mixture(spec("big_wv", "replace", 0.95, by="sd_imagenet", with_replacement=True),
                                      base, by)
    assert manifest["id"].is_unique
    pairs = pd.DataFrame({"id": [f"c{i}" for i in range(100_000)], "uri": "/c.jpg", "label": -1,
                          "caption": "a caption", "source_id": "", "origin": "coco",
                          "image_id": [f"i{i // 5}" for i in range(100_000)]})
    generated = pd.DataFrame({"id": [f"s{i}" for i in range(100_000)], "uri": "zip:///s.zip#s.png", "label": -1,
                              "caption": "a caption", "source_id": pairs["id"][::-1].to_numpy(), "origin": "sd_coco"})
    for unit in ("image", "pair"):
        manifest, summary = build_mixture(spec("big_co", "replace", 0.8, base="coco", by="sd_coco", match="source",
                                               unit=unit), pairs, generated)
        assert summary["replaced"] == 80_000
    flickr = pairs.assign(id="f" + pairs["id"], image_id="f" + pairs["image_id"])[:30_000]
    manifest, summary = build_mixture(spec("big_fl", "replace", 0.4, base="coco", by="flickr30k", match="none",
                                           with_replacement=True), pairs, flickr)
    assert summary["units"]["added"] == 8_000 and manifest["id"].is_unique


def test_cli_writes_manifest_and_summary(tmp_path, capsys):
    import json

    coco_frame = caption_index("coco", 12)  # 10 training images of 5 captions
    base, by = tmp_path / "coco.parquet", tmp_path / "sd_coco" / "index.parquet"
    by.parent.mkdir()
    coco_frame.to_parquet(base)
    captions_generated("sd_coco", coco_frame).to_parquet(by)
    mixture = {"name": "co_sd_20", "label": "CO/SD-20%", "kind": "replace", "base": "coco", "by": "sd_coco",
               "fraction": 0.2, "match": "source", "seed": 0}
    out, summary = tmp_path / "mixtures" / "co_sd_20.parquet", tmp_path / "mixtures" / "co_sd_20.json"
    arguments = ["mixture", "--spec", json.dumps(mixture), "--base", str(base), "--out", str(out),
                 "--summary", str(summary)]
    assert main(arguments + ["--by", str(by)]) == 0
    manifest = pd.read_parquet(out)
    written = json.loads(summary.read_text())
    assert len(manifest) == written["total"] == 50
    assert written["counts"] == {"coco": 40, "sd_coco": 10} and written["replaced"] == 10
    assert written["unit"] == "image" and written["units"] == {"base": 10, "base_kept": 8, "added": 10}
    assert main(arguments) == 2
    assert "co_sd_20" in capsys.readouterr().err


def test_a_reuse_suffix_that_meets_an_input_id_is_reported(imagenet, tmp_path):
    webvision = real_index("webvision", {0: 3, 1: 2, 2: 6, 3: 1, 4: 4})
    webvision.loc[webvision["id"] == "webvision_3_0", "id"] = "webvision_3_0~1"
    webvision.loc[webvision["id"] == "webvision_2_0", "id"] = "webvision_3_0~1~1"
    with pytest.raises(DataError, match=r"in_wv.*the id 'webvision/webvision_3_0~1~1' occurs twice"):
        build_mixture(spec("in_wv", "replace", 0.8, by="webvision", with_replacement=True), imagenet,
                      items(webvision, "webvision", tmp_path))


def test_ids_with_a_tilde_pass_when_nothing_collides(imagenet, webvision, tmp_path):
    tilde = real_index("webvision", {0: 3, 1: 2, 2: 6, 3: 1, 4: 4})
    tilde["id"] = tilde["id"] + "~x"
    manifest, summary = build_mixture(spec("in_wv", "replace", 0.8, by="webvision", with_replacement=True),
                                      imagenet, items(tilde, "webvision", tmp_path))
    assert manifest["id"].is_unique and summary["reused"] > 0


def test_read_items_names_the_index_with_rows_without_a_label(tmp_path):
    frame = real_index("imagenet", {0: 2, 1: 2}, extra_splits=False)
    frame["label"] = frame["label"].astype("float64")
    frame.loc[1, "label"] = np.nan
    path = tmp_path / "imagenet.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataError, match=r"imagenet.parquet: the index of 'imagenet' has 1 rows without a label"):
        read_items(path, "imagenet")


def test_build_mixture_takes_tables_of_any_chunking_and_string_type(imagenet, sd_imagenet):
    """What read_items gives is one chunk of large_string per column; other Arrow tables work too."""
    expected, _ = build_mixture(spec("mix", "replace", 0.4, by="sd_imagenet"), imagenet, sd_imagenet)
    plain = pa.Table.from_pandas(imagenet, preserve_index=False).cast(pa.schema(
        [(name, pa.int64() if name == "label" else pa.string()) for name in imagenet.columns]))
    chunked = pa.Table.from_batches(pa.Table.from_pandas(sd_imagenet, preserve_index=False).to_batches(max_chunksize=7))
    manifest, _ = mixtures.build_mixture(spec("mix", "replace", 0.4, by="sd_imagenet"), plain, chunked)
    pd.testing.assert_frame_equal(manifest.to_pandas(), expected)


# Manifest ids the pair-level code gave before whole images became the default (commit a5bd116).
PAIR_RESULTS_BEFORE_UNITS = {
    "co_sd": ['sd_coco/sd_coco_000000', 'sd_coco/sd_coco_000001', 'coco/coco_0_2', 'coco/coco_0_3',
              'sd_coco/sd_coco_000004', 'coco/coco_1_0', 'coco/coco_1_1', 'coco/coco_1_2', 'sd_coco/sd_coco_000008',
              'coco/coco_1_4', 'coco/coco_1_5', 'coco/coco_2_0', 'sd_coco/sd_coco_000011', 'coco/coco_2_2',
              'coco/coco_2_3', 'coco/coco_2_4', 'sd_coco/sd_coco_000015', 'sd_coco/sd_coco_000016', 'coco/coco_3_2',
              'coco/coco_3_3', 'sd_coco/sd_coco_000019'],
    "co_fl": ['flickr30k/flickr30k_1_3', 'flickr30k/flickr30k_0_3', 'coco/coco_0_2', 'coco/coco_0_3',
              'flickr30k/flickr30k_0_1', 'coco/coco_1_0', 'coco/coco_1_1', 'coco/coco_1_2', 'flickr30k/flickr30k_0_4',
              'coco/coco_1_4', 'coco/coco_1_5', 'coco/coco_2_0', 'flickr30k/flickr30k_0_0', 'coco/coco_2_2',
              'coco/coco_2_3', 'coco/coco_2_4', 'flickr30k/flickr30k_1_2', 'flickr30k/flickr30k_0_2', 'coco/coco_3_2',
              'coco/coco_3_3', 'flickr30k/flickr30k_1_1'],
    "coco_20": ['coco/coco_1_4', 'coco/coco_2_3', 'coco/coco_3_2', 'coco/coco_3_3'],
}


def test_unit_pair_gives_the_pair_level_manifests_of_before(tmp_path):
    coco_frame = caption_index("coco", 6, extra_captions={1: 1})
    coco = items(coco_frame, "coco", tmp_path)
    sd_coco = items(captions_generated("sd_coco", coco_frame), "sd_coco", tmp_path)
    flickr = items(caption_index("flickr30k", 4), "flickr30k", tmp_path)
    specs = {"co_sd": (spec("co_sd", "replace", 0.4, base="coco", by="sd_coco", match="source", unit="pair"), sd_coco),
             "co_fl": (spec("co_fl", "replace", 0.4, base="coco", by="flickr30k", match="none", with_replacement=True,
                            unit="pair"), flickr),
             "coco_20": (spec("coco_20", "subset", 0.2, base="coco", unit="pair"), None)}
    for name, (mixture, by) in specs.items():
        assert build_mixture(mixture, coco, by)[0]["id"].tolist() == PAIR_RESULTS_BEFORE_UNITS[name]
        by_image = build_mixture({**mixture, "unit": "image"}, coco, by)[0]["id"].tolist()
        assert by_image != PAIR_RESULTS_BEFORE_UNITS[name]


def test_caption_mixtures_by_image_do_not_depend_on_chunking_or_row_order_of_by(coco, sd_coco, tmp_path):
    flickr = items(caption_index("flickr30k", 9), "flickr30k", tmp_path)
    for mixture, by in ((spec("co_sd", "replace", 0.4, base="coco", by="sd_coco", match="source"), sd_coco),
                        (spec("co_fl", "replace", 0.4, base="coco", by="flickr30k", match="none",
                              with_replacement=True), flickr),
                        (spec("coco_20", "subset", 0.2, base="coco"), None)):
        expected, summary = build_mixture(mixture, coco, by)
        chunked_base = pa.Table.from_batches(arrow_table(coco).to_batches(max_chunksize=7))
        chunked_by = None if by is None else pa.Table.from_batches(arrow_table(by).to_batches(max_chunksize=4))
        manifest, again = mixtures.build_mixture(mixture, chunked_base, chunked_by)
        pd.testing.assert_frame_equal(manifest.to_pandas(), expected)
        assert again == summary


def test_a_subsampled_source_is_the_same_seeded_subset_in_every_mixture(imagenet, tmp_path):
    webvision = items(real_index("webvision", {0: 6, 1: 4, 2: 8, 3: 3, 4: 5}), "webvision", tmp_path)
    subset, summary = build_mixture(spec("webvision", "subset", 1.0, base="webvision", subsample={"webvision": 10}),
                                    webvision)
    assert len(subset) == 10 == summary["total"] and summary["subsample"] == {"webvision": 10}
    kept = set(subset["uri"])
    assert kept < set(webvision["uri"])
    # The subset keeps index order, and a replace draws only from it.
    order = pd.Series(range(len(webvision)), index=webvision["uri"])
    assert order[subset["uri"]].is_monotonic_increasing
    mixture, _ = build_mixture(spec("in_wv", "replace", 0.8, by="webvision", with_replacement=True,
                                    subsample={"webvision": 10}), imagenet, webvision)
    assert set(mixture["uri"][mixture["origin"] == "webvision"]) <= kept
    whole, _ = build_mixture(spec("in_wv", "replace", 0.8, by="webvision", with_replacement=True), imagenet, webvision)
    assert not set(whole["uri"][whole["origin"] == "webvision"]) <= kept
    # Seeded: another seed, another subset; a size at least the set's keeps it whole.
    other, _ = build_mixture(spec("webvision", "subset", 1.0, base="webvision", subsample={"webvision": 10}, seed=1),
                             webvision)
    assert set(other["uri"]) != kept
    everything, _ = build_mixture(spec("webvision", "subset", 1.0, base="webvision", subsample={"webvision": 26}),
                                  webvision)
    assert len(everything) == len(webvision)
    with pytest.raises(ConfigError, match=r"sources\.webvision\.train_subset: 0 is not a positive whole number"):
        build_mixture(spec("webvision", "subset", 1.0, base="webvision", subsample={"webvision": 0}), webvision)


def test_an_unknown_unit_names_the_key(coco):
    with pytest.raises(ConfigError, match=r"mixtures\[\.\.\]\.unit of 'coco_5': 'caption' is not one of image, pair"):
        build_mixture(spec("coco_5", "subset", 0.05, base="coco", unit="caption"), coco)
