"""The synthetic smoke datasets: real layouts the adapters read, learnable classes, true captions."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from contamination import config as cfg
from contamination.__main__ import main
from contamination.errors import ConfigError
from contamination.smoke.synthetic import BACKGROUNDS, COLOURS, write_all
from helpers import SMOKE_CONFIG

ROOT_NAMES = {"imagenet": "imagenet", "imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r",
              "webvision": "webvision", "coco": "coco", "flickr30k": "flickr30k"}


def smoke_spec(directory) -> dict:
    """The spec the workflow passes (common.smk: config `synthetic` + seed + roots), at smoke sizes."""
    config = cfg.load(SMOKE_CONFIG)
    roots = {source: str(Path(directory) / name) for source, name in ROOT_NAMES.items()}
    return dict(config["synthetic"], seed=config["seed"], roots=roots,
                karpathy_json={"coco": f"{roots['coco']}/dataset_coco.json",
                               "flickr30k": f"{roots['flickr30k']}/dataset_flickr30k.json"})


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Synthetic datasets written, then read by `classes` and `index` exactly as the workflow does."""
    directory = tmp_path_factory.mktemp("synthetic")
    spec = smoke_spec(directory / "data")
    assert main(["synthetic", "--spec", json.dumps(spec)]) == 0
    out = directory / "index"
    classes = out / "imagenet_classes.parquet"
    assert main(["classes", "--root", spec["roots"]["imagenet"], "--num-classes", str(spec["classes"]),
                 "--out", str(classes)]) == 0
    frames, reports = {"classes": pd.read_parquet(classes)}, {}
    for source, root in spec["roots"].items():
        options = (["--karpathy-json", spec["karpathy_json"][source]] if source in spec["karpathy_json"]
                   else ["--classes", str(classes)])
        assert main(["index", source, "--root", root, *options, "--workers", "2",
                     "--out", str(out / f"{source}.parquet"), "--report", str(out / f"{source}.json")]) == 0
        frames[source] = pd.read_parquet(out / f"{source}.parquet")
        reports[source] = json.loads((out / f"{source}.json").read_text())
    return spec, frames, reports


def test_adapters_read_every_synthetic_dataset_with_the_expected_counts(indexed):
    spec, frames, reports = indexed
    classes, train, val, web = spec["classes"], spec["train_per_class"], spec["val_per_class"], spec["webvision_per_class"]
    assert len(frames["classes"]) == classes
    assert reports["imagenet"]["rows_per_split"] == {"train": classes * train, "val": classes * val}
    # ImageNet-A and -R hold 3 of every 4 classes (different ones), like their 200 of 1000.
    subset = sum(1 for k in range(classes) if k % 4 != 3)
    assert reports["imagenet_a"]["rows_per_split"] == {"val": subset * val}
    assert reports["imagenet_r"]["rows_per_split"] == {"val": subset * val}
    assert set(frames["imagenet_a"]["wnid"]) != set(frames["imagenet_r"]["wnid"])
    assert reports["webvision"]["rows_per_split"] == {"train": classes * web, "val": classes * val}
    test = spec["coco_test_images"]
    assert reports["coco"]["images_per_split"] == {"train": spec["coco_train_images"], "val": test, "test": test}
    per_image = frames["coco"].groupby("image_id").size()
    assert set(per_image) == {5, 6}  # five captions, a few images six, as in COCO
    flickr = reports["flickr30k"]["images_per_split"]
    assert sum(flickr.values()) == spec["flickr30k_images"] and set(flickr) == {"train", "val", "test"}
    assert all(report["unreadable"]["count"] == 0 for report in reports.values())


def test_synthetic_imagenet_a_and_r_hold_exactly_their_official_classes_in_use(indexed):
    """Evaluation scores ImageNet-A/-R over the official lists intersected with the ImageNet
    classes: for the smoke run that must be what the synthetic copies hold, and a strict subset."""
    from contamination.sources.imagenet import official_wnids
    from contamination.smoke.synthetic import MAX_CLASSES, synthetic_classes

    _, frames, _ = indexed
    in_use = set(frames["classes"]["wnid"])
    for source in ("imagenet_a", "imagenet_r"):
        held = set(frames[source]["wnid"])
        assert held == in_use & set(official_wnids(source)) and held < in_use
    wnids = [cls["wnid"] for cls in synthetic_classes(MAX_CLASSES)]
    assert wnids == sorted(wnids) and len(set(wnids)) == MAX_CLASSES  # class k has label k


def test_class_names_have_one_to_three_distinct_synonyms(indexed):
    _, frames, _ = indexed
    names = [list(n) for n in frames["classes"]["names"]]
    assert {len(n) for n in names} == {1, 2, 3}
    assert all(len(set(n)) == len(n) for n in names)
    assert len({name for n in names for name in n}) == sum(len(n) for n in names)


def pixel_features(paths) -> np.ndarray:
    return np.stack([
        np.asarray(Image.open(path).convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=float).ravel() / 255
        for path in paths
    ])


def test_classes_are_learnable_and_the_other_class_sets_are_shifted(indexed):
    """Nearest class mean on 8x8 pixels, fitted on ImageNet train, scored on each val set."""
    spec, frames, _ = indexed
    imagenet = frames["imagenet"]
    train = imagenet[imagenet["split"] == "train"]
    features, labels = pixel_features(train["path"]), train["label"].to_numpy()
    means = np.stack([features[labels == k].mean(axis=0) for k in range(spec["classes"])])

    def accuracy(frame):
        frame = frame[frame["split"] == "val"]
        distances = ((pixel_features(frame["path"])[:, None, :] - means[None]) ** 2).sum(axis=-1)
        return float((distances.argmin(axis=1) == frame["label"].to_numpy()).mean())

    chance = 1 / spec["classes"]
    imagenet_val = accuracy(imagenet)
    assert imagenet_val >= 0.75
    for source in ("imagenet_a", "imagenet_r", "webvision"):
        shifted = accuracy(frames[source])
        assert chance + 0.1 < shifted < imagenet_val, source  # related, but harder


def colour_names_in(text: str) -> set:
    """The base colour names mentioned in ``text`` (synonyms mapped back)."""
    words = text.lower().rstrip(". ").split()
    names = {name for name, (_, synonyms) in COLOURS.items() if any(s in words for s in synonyms)}
    return names | {name for name in BACKGROUNDS if name in words}


@pytest.mark.parametrize("source", ["coco", "flickr30k"])
def test_captions_name_the_colours_the_image_shows(indexed, source):
    """Each image's captions name two colours: the background's (most pixels) and the shape's
    (the commonest shape colour among the rest; shapes are never white, black or gray)."""
    _, frames, _ = indexed
    names = list(BACKGROUNDS)
    palette = np.array([BACKGROUNDS[name] for name in names], dtype=float)
    is_shape_colour = np.array([name in COLOURS for name in names])
    for path, rows in frames[source].groupby("path"):
        mentioned = set().union(*(colour_names_in(caption) for caption in rows["caption"]))
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float).reshape(-1, 3)
        nearest = ((pixels[:, None, :] - palette[None]) ** 2).sum(axis=-1).argmin(axis=1)
        counts = np.bincount(nearest, minlength=len(names))
        background = names[counts.argmax()]
        counts[counts.argmax()] = 0
        shape_colour = names[np.where(is_shape_colour, counts, -1).argmax()]
        assert mentioned == {background, shape_colour}, (path, list(rows["caption"]))


def test_same_seed_gives_the_same_bytes_and_reruns_replace_roots_cleanly(tmp_path):
    spec = smoke_spec(tmp_path / "first")
    write_all(spec)
    stray = Path(spec["roots"]["coco"]) / "left-over-from-a-killed-run.jpg"
    stray.write_bytes(b"x")
    write_all(spec)
    assert not stray.exists()
    assert not list((tmp_path / "first").glob(".*"))  # no staging directories left behind
    write_all(smoke_spec(tmp_path / "second"))

    def contents(root):
        return {path.relative_to(root): path.read_bytes() for path in sorted(Path(root).rglob("*")) if path.is_file()}

    first, second = contents(tmp_path / "first"), contents(tmp_path / "second")
    assert len(first) > 300 and first == second
    other_seed = dict(smoke_spec(tmp_path / "third"), seed=1)
    write_all(other_seed)
    assert contents(tmp_path / "third") != first


def test_spec_errors_name_the_config_key(tmp_path):
    spec = smoke_spec(tmp_path)
    with pytest.raises(ConfigError, match=r"synthetic\.classes"):
        write_all(dict(spec, classes=37))
    nested = dict(spec, roots=dict(spec["roots"], imagenet_a=str(Path(spec["roots"]["imagenet"]) / "a")))
    with pytest.raises(ConfigError, match=r"sources\.imagenet_a\.root"):
        write_all(nested)
    with pytest.raises(ConfigError, match=r"synthetic\.image_size"):
        write_all({key: value for key, value in spec.items() if key != "image_size"})


def test_karpathy_json_outside_its_root_is_refused(tmp_path):
    """The writer replaces only directories it owns: a JSON elsewhere could be the user's file."""
    spec = smoke_spec(tmp_path / "data")
    spec["karpathy_json"] = dict(spec["karpathy_json"], flickr30k=str(tmp_path / "splits" / "flickr30k.json"))
    with pytest.raises(ConfigError, match=r"sources\.flickr30k\.karpathy_json: .* must be inside"):
        write_all(spec)
    assert not (tmp_path / "data").exists() and not (tmp_path / "splits").exists()
