"""Prompt tables: counts, the complex prompt space, seeds, captions and error messages."""

import collections

import pandas as pd
import pytest
import yaml

from contamination.generation import prompts
from contamination.__main__ import main
from contamination.config import DEFAULT_CONFIG
from contamination.errors import ConfigError, DataError
from contamination.formats import PROMPT_COLUMNS
from contamination.io import write_parquet

PAPER_COMPLEX_PROMPTS = yaml.safe_load(DEFAULT_CONFIG.read_text())["complex_prompts"]
CLASS_NAMES = {
    "n01440764": ["tench", "Tinca tinca"],
    "n02504458": ["African elephant", "Loxodonta africana", "Elephas maximus africana"],
    "n03452741": ["grand piano"],
}


@pytest.fixture
def class_index(tmp_path):
    path = tmp_path / "imagenet_classes.parquet"
    table = pd.DataFrame(
        {"label": [0, 1, 2], "wnid": list(CLASS_NAMES), "names": list(CLASS_NAMES.values())}
    )
    write_parquet(table, path)
    return path


def class_spec(kind, per_class, size=None, seed=0, **extra):
    spec = {
        "name": "sd_imagenet" if kind == "class_template" else "sd_imagenet_complex",
        "prompts": kind,
        "source": "imagenet",
        "per_class": per_class,
        "seed": seed,
        "size": len(CLASS_NAMES) * per_class if size is None else size,
        "complex_prompts": PAPER_COMPLEX_PROMPTS,
    }
    if kind == "class_template":
        spec["template"] = "A photo of {name}"
    spec.update(extra)
    return spec


def build(spec, index_path):
    return prompts.build_prompt_table(spec, pd.read_parquet(index_path), index_path)


def test_class_template_has_per_class_rows_per_class(class_index):
    table = build(class_spec("class_template", per_class=7), class_index)

    assert list(table.columns) == PROMPT_COLUMNS
    assert table["wnid"].value_counts().to_dict() == {wnid: 7 for wnid in CLASS_NAMES}
    assert table["id"].is_unique and table["seed"].is_unique
    assert (table["source_id"] == table["wnid"]).all()
    for wnid, names in CLASS_NAMES.items():
        rows = table[table["wnid"] == wnid]
        assert set(rows["prompt"]) == {f"A photo of {names[0]}"}
        assert list(rows["id"]) == [f"sd_imagenet_{wnid}_{k:05d}" for k in range(7)]
    assert table["label"].tolist() == [0] * 7 + [1] * 7 + [2] * 7
    assert str(table["seed"].dtype) == "int64" and (table["seed"] >= 0).all()


@pytest.mark.parametrize("synonyms", [1, 2, 3])
def test_complex_prompt_space_is_220_per_synonym(synonyms):
    names = CLASS_NAMES["n02504458"][:synonyms]
    space = prompts.complex_prompt_space(names, PAPER_COMPLEX_PROMPTS)

    assert len(space) == len(set(space)) == 220 * synonyms
    assert all(prompt == " ".join(prompt.split()) for prompt in space)  # no stray whitespace
    assert "photo of African elephant" in space  # empty qualifier and context
    assert "monochrome image of African elephant taken with iPhone" in space  # the paper's example
    assert {name for name in names if any(name in prompt for prompt in space)} == set(names)


def test_complex_prompts_use_every_prompt_before_any_repeats(class_index):
    per_class = 500  # more than 220 and 440, fewer than 660: each class cycles differently
    table = build(class_spec("class_complex", per_class=per_class), class_index)

    assert table["wnid"].value_counts().to_dict() == {wnid: per_class for wnid in CLASS_NAMES}
    for wnid, names in CLASS_NAMES.items():
        space = prompts.complex_prompt_space(names, PAPER_COMPLEX_PROMPTS)
        used = table.loc[table["wnid"] == wnid, "prompt"].tolist()
        first_cycle = used[: min(per_class, len(space))]
        assert len(set(first_cycle)) == len(first_cycle)
        assert set(used) <= set(space)
        counts = collections.Counter(used)
        if per_class >= len(space):
            assert set(counts) == set(space)
        assert max(counts.values()) - min(counts.values()) <= 1
    # A seeded permutation, not the space's nested order.
    nested_order = prompts.complex_prompt_space(CLASS_NAMES["n01440764"], PAPER_COMPLEX_PROMPTS)
    assert table["prompt"].iloc[:5].tolist() != nested_order[:5]


def test_same_seed_gives_identical_bytes_and_another_seed_differs(class_index, tmp_path):
    import json

    outputs = []
    for run, seed in enumerate([0, 0, 1]):
        out = tmp_path / f"prompts-{run}.parquet"
        spec = json.dumps(class_spec("class_complex", per_class=30, seed=seed))
        assert main(["prompts", "--spec", spec, "--index", str(class_index), "--out", str(out)]) == 0
        outputs.append(out)

    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    first, other = pd.read_parquet(outputs[0]), pd.read_parquet(outputs[2])
    assert (first["id"] == other["id"]).all()
    assert not (first["seed"] == other["seed"]).any()
    assert (first["prompt"] != other["prompt"]).any()


def test_seeds_do_not_depend_on_table_size(class_index):
    small = build(class_spec("class_template", per_class=3), class_index).set_index("id")
    large = build(class_spec("class_template", per_class=5), class_index).set_index("id")

    assert (large.loc[small.index, "seed"] == small["seed"]).all()
    # Pinned so that a change to the seed derivation, which would change every image, is noticed.
    assert prompts.image_seed(0, "sd_imagenet", "sd_imagenet_n01440764_00000") == small["seed"].iloc[0]
    assert prompts.image_seed(0, "sd_imagenet", "sd_imagenet_n01440764_00000") == 5770541344139494849


def coco_index(path, captions_per_train_image):
    rows = []
    for image, count in enumerate(captions_per_train_image):
        for caption in range(count):
            rows.append((f"coco_{image}_{caption}", f"coco_{image}", f"image {image} caption {caption}", "train"))
    rows.append(("coco_9_0", "coco_9", "a test image", "test"))
    index = pd.DataFrame(rows, columns=["id", "image_id", "caption", "split"])
    index["path"], index["label"], index["wnid"] = "/data/x.jpg", -1, ""
    write_parquet(index, path)
    return path


def caption_spec(size, captions_per_image=5):
    return {"name": "sd_coco", "prompts": "captions", "source": "coco", "captions_per_image": captions_per_image,
            "seed": 0, "size": size}


def test_captions_take_the_first_captions_of_each_training_image(tmp_path):
    index = coco_index(tmp_path / "coco.parquet", [6, 5])
    table = build(caption_spec(size=10), index)

    assert table["source_id"].tolist() == [f"coco_0_{c}" for c in range(5)] + [f"coco_1_{c}" for c in range(5)]
    assert table["id"].tolist() == [f"sd_coco_{source}" for source in table["source_id"]]
    assert table["prompt"].iloc[0] == "image 0 caption 0"
    assert (table["label"] == -1).all() and (table["wnid"] == "").all()
    assert table["seed"].is_unique


def test_image_with_too_few_captions_is_named(tmp_path):
    index = coco_index(tmp_path / "coco.parquet", [5, 4])
    with pytest.raises(DataError, match=r"coco\.parquet: training image coco_1 has 4 captions.*captions_per_image"):
        build(caption_spec(size=10), index)


def test_size_mismatch_names_the_config_key(class_index, tmp_path):
    with pytest.raises(ConfigError, match=r"sources\.imagenet\.num_classes.*per_class.*has 3 classes"):
        build(class_spec("class_template", per_class=2, size=8), class_index)
    index = coco_index(tmp_path / "coco.parquet", [5, 5])
    with pytest.raises(ConfigError, match=r"^sources\.coco\.train_images: .*has 2 training images"):
        build(caption_spec(size=15), index)


def test_cli_prints_the_error_without_traceback(class_index, tmp_path, capsys):
    import json

    spec = json.dumps(class_spec("class_template", per_class=2, size=99))
    out = tmp_path / "prompts.parquet"
    assert main(["prompts", "--spec", spec, "--index", str(class_index), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: sources.imagenet.num_classes:")
    assert not out.exists()


def test_bad_template_and_missing_columns_are_named(class_index, tmp_path):
    with pytest.raises(ConfigError, match=r"generated\[name=sd_imagenet\]\.template"):
        build(class_spec("class_template", per_class=1, template="A {style} photo of {name}"), class_index)
    no_names = tmp_path / "classes.parquet"
    write_parquet(pd.DataFrame({"label": [0], "wnid": ["n01440764"]}), no_names)
    with pytest.raises(DataError, match=r"classes\.parquet: missing columns \['names'\]"):
        build(class_spec("class_template", per_class=1, size=1), no_names)
