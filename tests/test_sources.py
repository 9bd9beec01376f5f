"""The dataset adapters on tiny copies of the real layouts (tests/layouts_real.py)."""

import hashlib
import json

import pandas as pd
import pytest

from contamination.__main__ import main
from contamination.errors import ConfigError, DataError
from contamination.formats import INDEX_COLUMNS
from contamination.sources import read_source
from contamination.sources.imagenet import class_table, official_wnids
from layouts_real import (
    CLASSES,
    write_class_folders,
    write_class_table,
    write_image,
    write_imagenet,
    write_kaggle_imagenet,
    write_karpathy,
    write_meta_mat,
    write_synset_mapping,
    write_webvision,
)

WNIDS = [wnid for wnid, _, _ in CLASSES]


def run_index(tmp_path, source, root, *options):
    """Run ``python -m contamination index``; return (exit code, index, report)."""
    out, report = tmp_path / f"{source}.parquet", tmp_path / f"{source}.report.json"
    code = main(["index", source, "--root", str(root), *options, "--out", str(out), "--report", str(report)])
    if code != 0:
        return code, None, None
    return code, pd.read_parquet(out), json.loads(report.read_text())


# ---- classes -------------------------------------------------------------------------------


def test_class_table_from_synset_mapping_is_in_wnid_order_with_synonyms(tmp_path):
    write_synset_mapping(tmp_path)
    table = class_table(tmp_path, 4)
    assert list(table["wnid"]) == WNIDS
    assert list(table["label"]) == [0, 1, 2, 3]
    assert list(table.loc[3, "names"]) == ["African elephant", "Loxodonta africana"]


def test_class_table_from_devkit_meta_mat_keeps_only_leaf_synsets(tmp_path):
    write_meta_mat(tmp_path / "ILSVRC2012_devkit_t12" / "data" / "meta.mat")
    out = tmp_path / "classes.parquet"
    assert main(["classes", "--root", str(tmp_path), "--num-classes", "4", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert list(table["wnid"]) == WNIDS  # the inner node n00001740 "entity" is not a class
    assert list(table.loc[2, "names"]) == ["kit fox", "Vulpes macrotis"]


def test_wrong_num_classes_names_the_config_key_both_counts_and_the_file(tmp_path):
    mapping = write_synset_mapping(tmp_path)
    with pytest.raises(ConfigError) as error:
        class_table(tmp_path, 1000)
    message = str(error.value)
    assert "sources.imagenet.num_classes" in message and "1000" in message and " 4" in message
    assert str(mapping) in message


def test_missing_class_files_name_both_paths(tmp_path, capsys):
    assert main(["classes", "--root", str(tmp_path), "--num-classes", "4", "--out", str(tmp_path / "c.parquet")]) == 2
    message = capsys.readouterr().err
    assert "LOC_synset_mapping.txt" in message and "meta.mat" in message


# ---- ImageNet ------------------------------------------------------------------------------


@pytest.mark.parametrize("val_layout", ["folders", "flat"])
def test_imagenet_index_labels_train_and_both_val_layouts(tmp_path, val_layout):
    truth = write_imagenet(tmp_path / "imagenet", val_layout)
    classes = write_class_table(tmp_path / "classes.parquet")
    code, index, report = run_index(tmp_path, "imagenet", tmp_path / "imagenet", "--classes", str(classes))
    assert code == 0
    assert list(index.columns) == INDEX_COLUMNS
    assert report["rows_per_split"] == {"train": 8, "val": 8}
    train = index[index["split"] == "train"]
    assert set(train["id"]) == {f"{wnid}_{1000 + n}" for wnid in WNIDS for n in range(2)}
    assert (train["label"] == train["wnid"].map(WNIDS.index)).all()
    val = index[index["split"] == "val"].set_index("id")
    # Flat: labels come through the ground truth's ILSVRC2012_IDs and meta.mat, not wnid order.
    assert val["wnid"].to_dict() == truth
    assert (val["label"] == val["wnid"].map(WNIDS.index)).all()
    assert (index["image_id"] == index["id"]).all() and (index["caption"] == "").all()
    assert index["path"].map(lambda p: p.startswith("/")).all()
    assert list(index["id"]) == sorted(index["id"], key=lambda i: (i.startswith("ILSVRC"), i))


def test_kaggle_imagenet_layout_is_detected_and_labelled_from_its_csv(tmp_path):
    root = tmp_path / "imagenet-object-localization-challenge"
    truth = write_kaggle_imagenet(root)
    classes = tmp_path / "classes.parquet"
    assert main(["classes", "--root", str(root), "--num-classes", "4", "--out", str(classes)]) == 0
    code, index, report = run_index(tmp_path, "imagenet", root, "--classes", str(classes))
    assert code == 0
    assert report["rows_per_split"] == {"train": 8, "val": 8}  # test/ is not indexed
    images = root / "ILSVRC" / "Data" / "CLS-LOC"
    train = index[index["split"] == "train"].set_index("id")
    assert train.loc[f"{WNIDS[2]}_2001", ["wnid", "label", "path"]].tolist() == [
        WNIDS[2], 2, str(images / "train" / WNIDS[2] / f"{WNIDS[2]}_2001.JPEG")]
    assert (train["label"] == train["wnid"].map(WNIDS.index)).all()
    val = index[index["split"] == "val"].set_index("id")
    assert val["wnid"].to_dict() == truth and len(set(truth.values())) == 4
    assert (val["label"] == val["wnid"].map(WNIDS.index)).all()
    assert val.loc["ILSVRC2012_val_00000001", "path"] == str(images / "val" / "ILSVRC2012_val_00000001.JPEG")


def test_kaggle_val_image_missing_from_the_solution_csv_is_named(tmp_path):
    root = tmp_path / "kaggle"
    write_kaggle_imagenet(root)
    solution = root / "LOC_val_solution.csv"
    lines = solution.read_text().splitlines()
    solution.write_text("\n".join(line for line in lines if not line.startswith("ILSVRC2012_val_00000003")) + "\n")
    with pytest.raises(DataError, match=r"LOC_val_solution.csv has no label for 1 image\(s\).*ILSVRC2012_val_00000003"):
        read_source("imagenet", root, write_class_table(tmp_path / "classes.parquet"))


def test_imagenet_folder_of_an_unknown_class_is_named(tmp_path):
    write_imagenet(tmp_path / "imagenet", "folders")
    write_image(tmp_path / "imagenet" / "train" / "n09999999" / "n09999999_1.JPEG")
    classes = write_class_table(tmp_path / "classes.parquet")
    with pytest.raises(DataError, match="n09999999"):
        read_source("imagenet", tmp_path / "imagenet", classes)


def test_flat_imagenet_val_without_ground_truth_names_the_file(tmp_path):
    write_imagenet(tmp_path / "imagenet", "flat")
    truth = tmp_path / "imagenet" / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.unlink()
    with pytest.raises(DataError, match="ILSVRC2012_validation_ground_truth.txt"):
        read_source("imagenet", tmp_path / "imagenet", write_class_table(tmp_path / "classes.parquet"))


def test_missing_imagenet_root_is_named(tmp_path, capsys):
    classes = write_class_table(tmp_path / "classes.parquet")
    code, _, _ = run_index(tmp_path, "imagenet", tmp_path / "nowhere", "--classes", str(classes))
    assert code == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


# ---- ImageNet-A / -R -----------------------------------------------------------------------


# Of CLASSES, only the goldfish (label 1) is an ImageNet-R class and only the African elephant
# (label 3) an ImageNet-A class.
@pytest.mark.parametrize("source, label", [("imagenet_a", 3), ("imagenet_r", 1)])
def test_class_folder_sets_get_thousand_way_labels_and_unique_ids(tmp_path, source, label):
    root = write_class_folders(tmp_path / source, [WNIDS[label]])
    classes = write_class_table(tmp_path / "classes.parquet")
    code, index, report = run_index(tmp_path, source, root, "--classes", str(classes))
    assert code == 0
    assert report["rows_per_split"] == {"val": 2}
    assert set(index["label"]) == {label}  # the label in the full class table
    assert set(index["id"]) == {f"{WNIDS[label]}_{stem}" for stem in ("art_0", "sketch_1")}


def test_class_folder_not_in_the_class_table_is_named(tmp_path):
    root = write_class_folders(tmp_path / "imagenet-r", [WNIDS[1], "n07777777"])
    with pytest.raises(DataError, match="n07777777"):
        read_source("imagenet_r", root, write_class_table(tmp_path / "classes.parquet"))


def test_official_class_lists_have_200_distinct_imagenet_wnids_each():
    for source in ("imagenet_a", "imagenet_r"):
        wnids = official_wnids(source)
        assert len(wnids) == len(set(wnids)) == 200
        assert all(len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit() for wnid in wnids)
    assert "n01443537" in official_wnids("imagenet_r") and "n02504458" in official_wnids("imagenet_a")
    # Pinned after checking both lists against hendrycks/natural-adv-examples eval.py (thousand_k_to_200
    # over imagenet-r eval.py's sorted all_wnids), imagenet-r eval.py (imagenet_r_wnids) and timm's
    # imagenet_{a,r}_indices.txt: a change to either file must be checked the same way.
    digests = {source: hashlib.sha256(" ".join(official_wnids(source)).encode()).hexdigest()
               for source in ("imagenet_a", "imagenet_r")}
    assert digests == {"imagenet_a": "ff8c384504d3ec59dd70537e83c7ed3dfa0debb07210febc47b58c136a443706",
                       "imagenet_r": "354baa0a46566aa68cee6a8093d8de471b7d45a1004b81a95c6210f757ad3740"}


def official_class_table(path, wnids):
    return write_class_table(path, [(wnid, f"class {wnid}", 0) for wnid in wnids])


def test_a_partial_imagenet_r_copy_is_refused_naming_the_missing_classes(tmp_path):
    in_use = official_wnids("imagenet_r")[:10]
    classes = official_class_table(tmp_path / "classes.parquet", in_use + [WNIDS[0]])  # + tench, not in -R
    root = write_class_folders(tmp_path / "imagenet-r", in_use[:3] + in_use[7:])
    (root / in_use[5]).mkdir()  # a folder without images holds no class either
    with pytest.raises(DataError) as error:
        read_source("imagenet_r", root, classes)
    message = str(error.value)
    assert "no images of 4 of the 10 ImageNet-R classes" in message and str(root) in message
    assert ", ".join(in_use[3:7]) in message
    write_class_folders(root, in_use[3:7])
    assert set(read_source("imagenet_r", root, classes)["wnid"]) == set(in_use)


def test_a_full_copy_with_a_class_subset_indexes_the_official_classes_in_use(tmp_path):
    official = official_wnids("imagenet_a")
    in_use = [official[4], official[150]]
    classes = official_class_table(tmp_path / "classes.parquet", [WNIDS[0], *in_use])  # tench: label 0, not in -A
    index = read_source("imagenet_a", write_class_folders(tmp_path / "imagenet-a", official), classes)
    assert index.groupby("wnid")["label"].unique().map(list).to_dict() == {in_use[0]: [1], in_use[1]: [2]}
    assert len(index) == 4


def test_a_class_folder_outside_the_official_list_is_refused(tmp_path):
    classes = write_class_table(tmp_path / "classes.parquet")
    root = write_class_folders(tmp_path / "imagenet-a", [WNIDS[3], WNIDS[2]])  # kit fox: not in ImageNet-A
    with pytest.raises(DataError, match=f"1 class folder\\(s\\) not among the 200 ImageNet-A classes \\(e.g. {WNIDS[2]}\\)"):
        read_source("imagenet_a", root, classes)


# ---- WebVision -----------------------------------------------------------------------------


def test_webvision_lists_map_through_synsets_to_imagenet_labels(tmp_path):
    # WebVision label 0 is n02119789 here, which is label 2 in the ImageNet class table.
    synsets = [WNIDS[2], WNIDS[0]]
    root = write_webvision(
        tmp_path / "webvision", synsets,
        google=[("google/q0001/000000.jpg", 0), ("google/q0002/000000.jpg", 1)],
        flickr=[("flickr/q0001/000000.jpg", 0)],
        val=[("val000001.jpg", 1), ("val000002.jpg", 0)],
    )
    classes = write_class_table(tmp_path / "classes.parquet")
    code, index, report = run_index(tmp_path, "webvision", root, "--classes", str(classes))
    assert code == 0
    assert report["rows_per_split"] == {"train": 3, "val": 2}
    rows = index.set_index("id")
    assert rows.loc["google_q0001_000000", ["wnid", "label"]].tolist() == [WNIDS[2], 2]
    assert rows.loc["flickr_q0001_000000", "label"] == 2
    assert rows.loc["google_q0002_000000", "label"] == 0
    assert rows.loc["val000001", ["wnid", "label", "split"]].tolist() == [WNIDS[0], 0, "val"]
    assert rows.loc["val000002", "path"] == str(root / "val_images_256" / "val000002.jpg")


def test_webvision_label_beyond_synsets_names_the_list(tmp_path):
    root = write_webvision(tmp_path / "webvision", [WNIDS[0]], google=[("google/q0001/0.jpg", 5)], flickr=[], val=[])
    with pytest.raises(DataError, match=r"train_filelist_google.txt:1: label 5"):
        read_source("webvision", root, write_class_table(tmp_path / "classes.parquet"))


# ---- COCO and Flickr30k --------------------------------------------------------------------

COCO_IMAGES = [
    {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "cocoid": 391895, "split": "test",
     "captions": ["A man rides a bike. ", "b", "c", "d", "e"]},
    {"filepath": "train2014", "filename": "COCO_train2014_000000000009.jpg", "cocoid": 9, "split": "train",
     "captions": ["z first", "y", "x", "w", "v", "u sixth"]},
    {"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "cocoid": 42, "split": "restval",
     "captions": ["1", "2", "3", "4", "5"]},
    {"filepath": "val2014", "filename": "COCO_val2014_000000000073.jpg", "cocoid": 73, "split": "val",
     "captions": ["p", "q", "r", "s", "t"]},
]


def test_coco_one_row_per_caption_in_json_order_with_restval_as_train(tmp_path):
    json_path = write_karpathy(tmp_path / "coco", tmp_path / "dataset_coco.json", COCO_IMAGES, with_filepath=True)
    code, index, report = run_index(tmp_path, "coco", tmp_path / "coco", "--karpathy-json", str(json_path))
    assert code == 0
    assert report["rows_per_split"] == {"test": 5, "train": 11, "val": 5}
    assert report["images_per_split"] == {"test": 1, "train": 2, "val": 1}
    expected_captions = [c.strip() for image in COCO_IMAGES for c in image["captions"]]
    assert list(index["caption"]) == expected_captions  # the JSON's order, not sorted
    assert index["id"].iloc[0] == "coco_391895_0"
    assert index["image_id"].tolist()[:6] == ["coco_391895"] * 5 + ["coco_9"]
    assert index.loc[index["image_id"] == "coco_42", "split"].unique().tolist() == ["train"]
    assert index["path"].iloc[5] == str(tmp_path / "coco" / "train2014" / "COCO_train2014_000000000009.jpg")
    assert (index["label"] == -1).all() and (index["wnid"] == "").all()


def test_flickr30k_images_live_in_flickr30k_images(tmp_path):
    images = [{"filename": "1000092795.jpg", "split": "train", "captions": list("abcde")},
              {"filename": "10002456.jpg", "split": "test", "captions": list("fghij")}]
    json_path = write_karpathy(tmp_path / "f30k", tmp_path / "dataset_flickr30k.json", images, with_filepath=False)
    code, index, report = run_index(tmp_path, "flickr30k", tmp_path / "f30k", "--karpathy-json", str(json_path))
    assert code == 0
    assert report["rows_per_split"] == {"test": 5, "train": 5}
    assert index["image_id"].unique().tolist() == ["flickr30k_1000092795", "flickr30k_10002456"]
    assert index["id"].iloc[5] == "flickr30k_10002456_15"
    assert index["path"].iloc[0] == str(tmp_path / "f30k" / "flickr30k-images" / "1000092795.jpg")


def test_missing_karpathy_json_is_named(tmp_path, capsys):
    (tmp_path / "coco").mkdir()
    code, _, _ = run_index(tmp_path, "coco", tmp_path / "coco", "--karpathy-json", str(tmp_path / "nope.json"))
    assert code == 2
    assert str(tmp_path / "nope.json") in capsys.readouterr().err


def test_unknown_karpathy_split_is_named(tmp_path):
    images = [dict(COCO_IMAGES[0], split="holdout")]
    json_path = write_karpathy(tmp_path / "coco", tmp_path / "dataset_coco.json", images, with_filepath=True)
    with pytest.raises(DataError, match="holdout"):
        read_source("coco", tmp_path / "coco", karpathy_json=json_path)


@pytest.mark.parametrize("caption", ["", "  \t\n "])
def test_empty_or_blank_caption_fails_naming_its_position_and_the_file(tmp_path, caption):
    images = [COCO_IMAGES[0], dict(COCO_IMAGES[1], captions=["z first", "y", caption, "w", "v"])]
    json_path = write_karpathy(tmp_path / "coco", tmp_path / "dataset_coco.json", images, with_filepath=True)
    with pytest.raises(DataError, match=r"images\[1\]\.sentences\[2\] has an empty caption") as error:
        read_source("coco", tmp_path / "coco", karpathy_json=json_path)
    assert str(json_path) in str(error.value)


def test_empty_flickr30k_caption_fails_naming_its_position_and_the_file(tmp_path):
    images = [{"filename": "1000092795.jpg", "split": "train", "captions": list("abcde")},
              {"filename": "10002456.jpg", "split": "test", "captions": ["f", "g", "h", "i", " "]}]
    json_path = write_karpathy(tmp_path / "f30k", tmp_path / "dataset_flickr30k.json", images, with_filepath=False)
    with pytest.raises(DataError, match=r"dataset_flickr30k\.json: images\[1\]\.sentences\[4\] has an empty caption"):
        read_source("flickr30k", tmp_path / "f30k", karpathy_json=json_path)


# ---- unreadable images ---------------------------------------------------------------------


def break_images(tmp_path):
    """An ImageNet copy with one garbage file and one truncated JPEG."""
    write_imagenet(tmp_path / "imagenet", "folders", train_per_class=3)
    garbage = tmp_path / "imagenet" / "train" / WNIDS[1] / f"{WNIDS[1]}_1001.JPEG"
    garbage.write_bytes(b"this is not a JPEG")
    truncated = tmp_path / "imagenet" / "val" / WNIDS[0] / "ILSVRC2012_val_00000001.JPEG"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return garbage, truncated


def test_unreadable_image_fails_naming_the_file_and_the_config_key(tmp_path, capsys):
    garbage, truncated = break_images(tmp_path)
    classes = write_class_table(tmp_path / "classes.parquet")
    code, _, _ = run_index(tmp_path, "imagenet", tmp_path / "imagenet", "--classes", str(classes), "--workers", "2")
    assert code == 2
    message = capsys.readouterr().err
    assert str(garbage) in message or str(truncated) in message
    assert "on_unreadable_image" in message
    assert not (tmp_path / "imagenet.parquet").exists()


def test_skip_drops_unreadable_images_and_reports_them(tmp_path):
    garbage, truncated = break_images(tmp_path)
    classes = write_class_table(tmp_path / "classes.parquet")
    code, index, report = run_index(tmp_path, "imagenet", tmp_path / "imagenet", "--classes", str(classes),
                                    "--on-unreadable", "skip", "--workers", "2")
    assert code == 0
    assert report["unreadable"]["count"] == 2
    assert report["unreadable"]["paths"] == sorted([str(garbage), str(truncated)])
    assert "truncated" in report["unreadable"]["errors"][str(truncated)].lower()
    assert report["rows_per_split"] == {"train": 11, "val": 7}
    assert not index["path"].isin([str(garbage), str(truncated)]).any()


def test_skip_drops_every_caption_of_an_unreadable_coco_image(tmp_path):
    json_path = write_karpathy(tmp_path / "coco", tmp_path / "dataset_coco.json", COCO_IMAGES, with_filepath=True)
    (tmp_path / "coco" / "train2014" / "COCO_train2014_000000000009.jpg").unlink()  # listed but missing
    code, index, report = run_index(tmp_path, "coco", tmp_path / "coco", "--karpathy-json", str(json_path),
                                    "--on-unreadable", "skip")
    assert code == 0
    assert "coco_9" not in set(index["image_id"])
    assert report["rows_per_split"]["train"] == 5
    assert "FileNotFoundError" in next(iter(report["unreadable"]["errors"].values()))


def test_an_index_refuses_a_repeated_item_id(tmp_path):
    """Mixtures rely on unique ids within an index (mixtures.assembled does not compare them)."""
    from contamination.sources.common import caption_row, index_frame

    rows = [caption_row("coco_1_0", tmp_path / "1.jpg", "a dog", "coco_1", "train"),
            caption_row("coco_1_0", tmp_path / "1.jpg", "a cat", "coco_1", "train")]
    with pytest.raises(DataError, match="karpathy.json: item id 'coco_1_0' occurs more than once"):
        index_frame(rows, "karpathy.json")
    assert len(index_frame(rows[:1], "karpathy.json")) == 1
