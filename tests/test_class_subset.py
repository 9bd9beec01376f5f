"""A class subset (config sources.imagenet.classes, e.g. ImageNet-100) is applied alike to every
source index, prompt table, mixture and evaluation: a class outside it appears nowhere, labels
are 0..K-1 in wnid order, and ImageNet-A/-R are scored over the classes they share with it."""

import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from contamination import config as cfg
from contamination.__main__ import main
from contamination.data import index_rows
from contamination.errors import ConfigError
from contamination.experiments import classify, training
from contamination.formats import GENERATED_COLUMNS
from contamination.smoke.synthetic import synthetic_classes
from contamination.sources.imagenet import class_table, official_wnids, shipped_class_lists, shipped_wnids
from layouts_real import CLASSES, write_synset_mapping

PAPER = cfg.load()
CLASS_SOURCES = ("imagenet", "imagenet_a", "imagenet_r", "webvision")


def with_classes(value, num_classes=1000):
    config = copy.deepcopy(PAPER)
    config["sources"]["imagenet"].update(classes=value, num_classes=num_classes)
    return config


# ---- the key -------------------------------------------------------------------------------


def test_imagenet100_is_cmcs_list_of_100_imagenet_wnids_with_its_source():
    wnids = shipped_wnids("imagenet100")
    assert len(wnids) == len(set(wnids)) == 100 and all(cfg.WNID_PATTERN.fullmatch(wnid) for wnid in wnids)
    header = (Path(cfg.PROJECT_ROOT) / "src/contamination/sources/imagenet100_wnids.txt").read_text()
    assert "https://github.com/HobbitLong/CMC/blob/master/imagenet100.txt" in header
    # Pinned after checking the file against HobbitLong/CMC imagenet100.txt at commit bc687a26
    # (its wnids in its order): a change to the list must be checked the same way.
    assert hashlib.sha256(" ".join(wnids).encode()).hexdigest() == \
        "fa2b1926ad6f96fb2011dfd8e1621f1d1c1014144cbb3465ee1579cb042df394"
    # What the budget tier's ImageNet-A/-R scores rest on (config/budget.yaml, README).
    assert (len(set(wnids) & set(official_wnids("imagenet_a"))), len(set(wnids) & set(official_wnids("imagenet_r")))) \
        == (15, 19)


def test_classes_is_all_a_shipped_list_a_file_or_a_list_and_sizes_follow(tmp_path):
    assert cfg.class_subset(PAPER) is None and cfg.class_count(PAPER) == 1000
    assert PAPER["sources"]["imagenet"]["classes"] == "all"
    assert cfg.class_subset(with_classes("imagenet100")) == sorted(shipped_wnids("imagenet100"))
    listed = tmp_path / "mine.txt"
    listed.write_text("# my classes\nn02504458\n\n  n01440764\n")
    config = with_classes(str(listed))
    cfg.validate(config)
    assert cfg.class_subset(config) == ["n01440764", "n02504458"] and cfg.class_count(config) == 2
    assert cfg.generated_size(config, "sd_imagenet") == 2 * 1400
    assert cfg.class_subset(with_classes(["n02504458", "n01440764", "n01443537"])) == \
        ["n01440764", "n01443537", "n02504458"]
    assert set(shipped_class_lists()) == {"imagenet100", "imagenet_a", "imagenet_r"}


@pytest.mark.parametrize("value, num_classes, message", [
    ("imagenet10", 1000, r"'imagenet10' is neither 'all', a shipped class list \(imagenet100, imagenet_a, "
                         r"imagenet_r\) nor an existing file"),
    ("file:bad", 1000, r"\(file '.*'\): 'n0144' is not a wnid"),
    ("file:repeat", 1000, r"\(file '.*'\): n01440764 is listed more than once"),
    ("file:one", 1000, r"1 classes; a subset needs 2 to sources.imagenet.num_classes \(1000\)"),
    ("imagenet100", 4, r"\(the shipped list 'imagenet100'\): 100 classes; a subset needs 2 to "
                       r"sources.imagenet.num_classes \(4\)"),
    (["n01440764", "n01440764"], 1000, r"non-unique|has non-unique elements"),
    (["n01440764"], 1000, r"too short|should be non-empty|is too short"),
])
def test_a_bad_class_subset_is_refused_naming_the_key(tmp_path, value, num_classes, message):
    files = {"file:bad": "n01440764\nn0144\n", "file:repeat": "n01440764\nn02504458\nn01440764\n",
             "file:one": "n01440764\n"}
    if isinstance(value, str) and value in files:
        path = tmp_path / "classes.txt"
        path.write_text(files[value])
        value = str(path)
    with pytest.raises(ConfigError, match=r"sources\.imagenet\.classes") as error:
        cfg.validate(with_classes(value, num_classes))
    assert re.search(message, str(error.value)), str(error.value)


def test_the_class_table_of_a_subset_labels_its_classes_in_wnid_order(tmp_path):
    write_synset_mapping(tmp_path)
    wnids = [wnid for wnid, _, _ in CLASSES]
    table = class_table(tmp_path, 4, subset=[wnids[3], wnids[1]])
    assert list(table["wnid"]) == [wnids[1], wnids[3]] and list(table["label"]) == [0, 1]
    assert list(table.loc[1, "names"]) == ["African elephant", "Loxodonta africana"]
    with pytest.raises(ConfigError, match=r"sources\.imagenet\.classes: 1 of its 2 classes are not classes of "
                                          r"'.*LOC_synset_mapping.txt' \(e.g. n09999999\)"):
        class_table(tmp_path, 4, subset=[wnids[0], "n09999999"])


# ---- every stage on the synthetic layouts ---------------------------------------------------

SYNTHETIC = {"classes": 4, "train_per_class": 20, "val_per_class": 4, "webvision_per_class": 4,
             "coco_train_images": 3, "coco_test_images": 2, "flickr30k_images": 3, "image_size": 16}
WNIDS = [cls["wnid"] for cls in synthetic_classes(4)]
# Synthetic class 0 is an ImageNet-A class only, 1 and 2 are in both lists, 3 an ImageNet-R class
# only. Leaving out class 2 keeps classes 0, 1, 3 (labels 0, 1, 2): ImageNet-A shares labels 0
# and 1 with the subset, ImageNet-R labels 1 and 2.
SUBSET, LEFT_OUT = [WNIDS[0], WNIDS[1], WNIDS[3]], WNIDS[2]


def index(directory, source, root, classes, *options):
    out = directory / f"{source}.parquet"
    code = main(["index", source, "--root", root, "--classes", str(classes), *options,
                 "--out", str(out), "--report", str(directory / f"{source}.json")])
    return out if code == 0 else None


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """The synthetic sources through classes (with the subset), index, prompts and mixtures, as
    the workflow runs them; a generated index stands in for generation (its images: ImageNet's)."""
    directory = tmp_path_factory.mktemp("subset")
    roots = {source: str(directory / "data" / source) for source in ("imagenet", *CLASS_SOURCES[1:], "coco", "flickr30k")}
    spec = dict(SYNTHETIC, seed=0, roots=roots, karpathy_json={
        source: f"{roots[source]}/dataset_{source}.json" for source in ("coco", "flickr30k")})
    assert main(["synthetic", "--spec", json.dumps(spec)]) == 0
    out = directory / "out"
    out.mkdir()
    classes = out / "imagenet_classes.parquet"
    assert main(["classes", "--root", roots["imagenet"], "--num-classes", "4", "--subset", json.dumps(SUBSET),
                 "--out", str(classes)]) == 0
    indexes = {source: index(out, source, roots[source], classes, "--class-subset") for source in CLASS_SOURCES}
    config = cfg.load()
    prompts = {}
    for generated in config["generated"][:2]:  # class_template and class_complex
        generated = dict(generated, per_class=20)  # as many as ImageNet's, so IN/SD-95% can draw
        job = dict(cfg.job_settings("generated[]", generated), seed=0, size=20 * len(SUBSET),
                   complex_prompts=config["complex_prompts"])
        prompts[generated["name"]] = out / f"{generated['name']}.prompts.parquet"
        assert main(["prompts", "--spec", json.dumps(job), "--index", str(classes),
                     "--out", str(prompts[generated["name"]])]) == 0
    imagenet = pd.read_parquet(indexes["imagenet"])
    stand_in = pd.read_parquet(prompts["sd_imagenet"]).assign(caption="")
    first_image = imagenet[imagenet["split"] == "train"].groupby("label")["path"].first()
    stand_in["uri"] = stand_in["label"].map(first_image)
    generated_index = out / "sd_imagenet.parquet"
    stand_in[GENERATED_COLUMNS].to_parquet(generated_index)
    manifests = {}
    for mixture in config["mixtures"]:
        if mixture["base"] not in ("imagenet", "webvision", "sd_imagenet") or mixture.get("by", "imagenet") not in (
                "imagenet", "webvision", "sd_imagenet"):
            continue
        inputs = {"imagenet": indexes["imagenet"], "webvision": indexes["webvision"], "sd_imagenet": generated_index}
        arguments = ["--base", str(inputs[mixture["base"]])]
        if mixture["kind"] != "subset":
            arguments += ["--by", str(inputs[mixture["by"]])]
        manifests[mixture["name"]] = out / f"{mixture['name']}.manifest.parquet"
        job = dict(cfg.job_settings("mixtures[]", mixture), seed=0)
        assert main(["mixture", "--spec", json.dumps(job), *arguments, "--out", str(manifests[mixture["name"]]),
                     "--summary", str(out / f"{mixture['name']}.json")]) == 0
    return roots, classes, indexes, prompts, manifests


def test_without_the_subset_flag_an_index_refuses_the_classes_left_out(stages, tmp_path, capsys):
    roots, classes, _, _, _ = stages
    for source in ("imagenet", "webvision"):
        assert index(tmp_path, source, roots[source], classes) is None
        assert f"class '{LEFT_OUT}' is not in the ImageNet class table (3 classes)" in capsys.readouterr().err


def test_a_class_outside_the_subset_appears_in_no_index_prompt_table_or_mixture(stages):
    _, classes, indexes, prompts, manifests = stages
    table = pd.read_parquet(classes)
    assert list(table["wnid"]) == SUBSET and list(table["label"]) == [0, 1, 2]
    label_of = dict(zip(table["wnid"], table["label"]))
    left_out_names = synthetic_classes(4)[2]["names"]
    kept_ids = set()
    for source, path in indexes.items():
        frame = pd.read_parquet(path)
        assert LEFT_OUT not in set(frame["wnid"]) and not frame["path"].str.contains(LEFT_OUT).any(), source
        assert (frame["wnid"].map(label_of) == frame["label"]).all(), source  # one label space, 0..2
        kept_ids |= set(frame["id"])
    assert set(pd.read_parquet(indexes["imagenet"])["wnid"]) == set(SUBSET)
    assert set(pd.read_parquet(indexes["webvision"])["wnid"]) == set(SUBSET)
    assert set(pd.read_parquet(indexes["imagenet_a"])["wnid"]) == {WNIDS[0], WNIDS[1]}
    assert set(pd.read_parquet(indexes["imagenet_r"])["wnid"]) == {WNIDS[1], WNIDS[3]}
    for name, path in prompts.items():
        frame = pd.read_parquet(path)
        assert set(frame["wnid"]) == set(SUBSET) and set(frame["label"]) == {0, 1, 2}, name
        assert not any(left in prompt for prompt in frame["prompt"] for left in left_out_names), name
        kept_ids |= set(frame["id"])
    assert len(manifests) == 16  # every class mixture of the paper but the complex SD one
    for name, path in manifests.items():
        frame = pd.read_parquet(path)
        assert len(frame) and set(frame["label"]) <= {0, 1, 2}, name
        # every item is an item of a subset index or prompt table (manifest ids: "<origin>/<id>",
        # "~<n>" added to an item drawn again)
        item_ids = frame["id"].str.replace(r"~\d+$", "", regex=True).str.partition("/")[2]
        assert item_ids.isin(kept_ids).all(), name


class FixedLogits(torch.nn.Module):
    """Scores every image alike over the 3 classes in use: label 2 first, then 0, then 1."""

    def forward(self, images):
        return torch.tensor([[5.0, 1.0, 9.0]]).expand(images.shape[0], -1)


def test_imagenet_a_and_r_are_scored_over_the_classes_they_share_with_the_subset(stages):
    _, _, indexes, _, _ = stages
    recipe = dict(PAPER["classification"]["models"]["resnet50"], train_crop_size=16, val_resize_size=16,
                  val_crop_size=16)
    spec = {"model": "resnet18", "recipe": recipe, "num_classes": 3, "seed": 0, "device": "cpu", "num_workers": 0,
            "print_freq": 100, "keep_checkpoint": False, "checkpoint_every_minutes": 30}
    eval_indexes = {"imagenet_val": indexes["imagenet"], "imagenet_a": indexes["imagenet_a"],
                    "imagenet_r": indexes["imagenet_r"]}
    metrics, confusion = classify.evaluate_all(FixedLogits(), spec, eval_indexes,
                                               training.DistEnv(0, 1, 0, torch.device("cpu")))
    assert metrics["top1_imagenet_val"] == pytest.approx(100 / 3)  # label 2 for all: a third of val
    # ImageNet-A shares labels 0, 1: the prediction is 0, right for half its images (unrestricted,
    # label 2 would be right for none); ImageNet-R shares 1, 2: the prediction is 2, half right.
    assert metrics["top1_imagenet_a"] == metrics["top1_imagenet_r"] == 50.0
    assert metrics["top5_imagenet_a"] == metrics["top5_imagenet_r"] == 100.0
    assert confusion.shape == (3, 3) and confusion[:, 2].sum() == confusion.sum()
    labels = classify.official_labels("imagenet_a", indexes["imagenet"], index_rows(
        indexes["imagenet_a"], "val"), indexes["imagenet_a"])
    assert labels.tolist() == [0, 1]
