"""Format-matched controls: the JPEG quality estimate, the real profile and re-stored shards."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from contamination import config as cfg
from contamination.__main__ import main
from contamination.errors import ConfigError, DataError
from contamination.generation import format_match
from contamination.generation.shards import read_metadata, write_shard
from contamination.io import write_parquet


def jpeg(quality: int, size=(40, 30), mode="RGB", subsampling=2) -> bytes:
    rng = np.random.default_rng(quality)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    options = {"subsampling": subsampling} if mode == "RGB" else {}
    image.save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def luminance_table(data: bytes) -> list:
    return Image.open(io.BytesIO(data)).quantization[0]


@pytest.mark.parametrize("quality", [50, 75, 90, 95])
def test_quality_of_a_pillow_jpeg_is_recovered_exactly(quality):
    assert format_match.estimate_jpeg_quality(luminance_table(jpeg(quality))) == (quality, 0.0)


def test_every_libjpeg_quality_is_recovered_within_one():
    for quality in range(1, 101):
        estimate, error = format_match.estimate_jpeg_quality(luminance_table(jpeg(quality, size=(8, 8))))
        assert abs(estimate - quality) <= 1 and error == 0, quality


def test_a_foreign_table_gets_the_nearest_quality_and_a_nonzero_error():
    table = [value + 1 for value in format_match.ijg_table(80)]  # another encoder's rounding
    quality, error = format_match.estimate_jpeg_quality(table)
    assert quality in (79, 80) and error > 0


@pytest.fixture
def real_source(tmp_path):
    """A real index of 8 training JPEGs in 4 formats, a PNG and a val image (neither profiled)."""
    formats = [(60, (40, 30), "RGB", 2), (75, (30, 40), "RGB", 1), (90, (50, 50), "L", 2), (95, (48, 32), "RGB", 0)]
    rows = []
    for number in range(8):
        quality, size, mode, subsampling = formats[number % 4]
        path = tmp_path / f"real_{number}.JPEG"
        path.write_bytes(jpeg(quality, size, mode, subsampling))
        rows.append((f"real_{number}", str(path), "train"))
    png = tmp_path / "real_png.JPEG"  # ImageNet has such files: a PNG under a .JPEG name
    Image.new("RGB", (20, 20)).save(png, "PNG")
    rows += [("real_png", str(png), "train"), ("real_val", str(tmp_path / "real_0.JPEG"), "val")]
    index = pd.DataFrame(rows, columns=["id", "path", "split"]).assign(image_id=lambda frame: frame["id"])
    return index, formats


def test_profile_reads_quality_size_mode_and_subsampling_of_training_jpegs(real_source):
    index, formats = real_source
    profile, skipped = format_match.build_profile(index, "imagenet", 100, 0, "index.parquet")

    assert skipped == 1 and len(profile) == 8 and "real_val" not in set(profile["id"])
    found = set(profile[["quality", "width", "height", "mode", "subsampling"]].itertuples(index=False, name=None))
    expected = {(quality, *size, mode, subsampling if mode == "RGB" else -1) for quality, size, mode, subsampling in formats}
    assert found == expected
    assert (profile["quality_error"] == 0).all()


def test_profile_sample_is_seeded_and_as_large_as_asked(real_source):
    index, _ = real_source
    first, skipped = format_match.build_profile(index, "imagenet", 4, 0, "index.parquet")
    again, _ = format_match.build_profile(index, "imagenet", 4, 0, "index.parquet")
    other, _ = format_match.build_profile(index, "imagenet", 4, 1, "index.parquet")
    assert len(first) + skipped == 4
    pd.testing.assert_frame_equal(first, again)
    assert set(first["id"]) != set(other["id"])


def test_a_source_without_jpegs_has_no_format_to_match(tmp_path):
    path = tmp_path / "only.png"
    Image.new("RGB", (8, 8)).save(path)
    index = pd.DataFrame({"id": ["a"], "image_id": ["a"], "path": [str(path)], "split": ["train"]})
    with pytest.raises(DataError, match="none of the 1 profiled training images of 'imagenet' is a JPEG"):
        format_match.build_profile(index, "imagenet", 10, 0, "index.parquet")


# ---- re-stored shards -----------------------------------------------------------------------

ROWS = 9


def generated_shard(path, rows):
    """A shard as generation writes it: 64 x 48 PNGs (row k's pixels seeded by k) and their metadata rows."""
    metadata = pd.DataFrame({"id": [f"sd_x_{k}" for k in rows], "prompt": "a photo", "seed": list(rows),
                             "member": [f"sd_x_{k}.png" for k in rows], "image_format": "png"})

    def images():
        for k, member in zip(rows, metadata["member"]):
            buffer = io.BytesIO()
            pixels = np.random.default_rng(k).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, "PNG")
            yield member, buffer.getvalue()

    write_shard(path, images(), metadata)
    return path


@pytest.fixture
def profile(tmp_path, real_source):
    index, _ = real_source
    path = tmp_path / "profile.parquet"
    write_parquet(format_match.build_profile(index, "imagenet", 100, 0, "index.parquet")[0], path)
    return path


def match_cli(shard, profile, out, name="sd_x_jpeg", seed=0):
    spec = json.dumps({"name": name, "from": "sd_x", "real_source": "imagenet", "seed": seed})
    return main(["format-match", "--spec", spec, "--shard", str(shard), "--profile", str(profile), "--out", str(out)])


def stored(shard) -> dict:
    with zipfile.ZipFile(shard) as archive:
        return {member: archive.read(member) for member in read_metadata(shard)["member"]}


def test_restored_images_have_the_format_of_their_profile_row(tmp_path, profile):
    source = generated_shard(tmp_path / "shard-00000.zip", range(ROWS))
    out = tmp_path / "jpeg" / "shard-00000.zip"
    assert match_cli(source, profile, out) == 0

    metadata = read_metadata(out)
    assert metadata["id"].tolist() == read_metadata(source)["id"].tolist()
    assert (metadata["image_format"] == "jpeg").all() and metadata["member"].str.endswith(".jpg").all()
    picked = pd.read_parquet(profile).set_index("id").loc[metadata["profile_id"]]
    assert metadata["jpeg_quality"].tolist() == picked["quality"].tolist()
    for row, data in zip(metadata.itertuples(), stored(out).values()):
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.size == (row.stored_width, row.stored_height)
        assert image.mode == row.stored_mode
        assert format_match.estimate_jpeg_quality(image.quantization[0])[0] == row.jpeg_quality
    # Qualities and sizes are drawn per image from the profile, not one for all.
    assert metadata["jpeg_quality"].nunique() > 1 and metadata["stored_width"].nunique() > 1


def test_restoring_does_not_depend_on_the_shard_size(tmp_path, profile):
    whole = generated_shard(tmp_path / "whole.zip", range(ROWS))
    parts = [generated_shard(tmp_path / "a.zip", range(4)), generated_shard(tmp_path / "b.zip", range(4, ROWS))]
    assert match_cli(whole, profile, tmp_path / "whole-jpeg.zip") == 0
    for part in parts:
        assert match_cli(part, profile, tmp_path / f"{part.stem}-jpeg.zip") == 0

    split = {**stored(tmp_path / "a-jpeg.zip"), **stored(tmp_path / "b-jpeg.zip")}
    assert split == stored(tmp_path / "whole-jpeg.zip")
    # A different dataset name draws other formats for the same images.
    assert match_cli(whole, profile, tmp_path / "other.zip", name="sd_x_other") == 0
    assert read_metadata(tmp_path / "other.zip")["profile_id"].tolist() != read_metadata(tmp_path / "whole-jpeg.zip")["profile_id"].tolist()


def test_crop_keeps_the_centre_and_the_aspect_ratio():
    image = Image.new("RGB", (64, 48), (255, 0, 0))
    image.paste((0, 0, 255), (16, 0, 48, 48))  # a blue band in the middle third
    pick = pd.Series({"width": 16, "height": 24, "mode": "RGB", "subsampling": 0, "quality": 95})
    restored = Image.open(io.BytesIO(format_match.restored(image, pick)))
    assert restored.size == (16, 24)
    red, green, blue = np.asarray(restored.convert("RGB"), dtype=int).mean(axis=(0, 1))
    assert blue > 200 and red < 60  # the 32 px wide centre crop is all blue


# ---- the config: copies, their mixtures and the comparison tables ------------------------------


def raw_smoke_config() -> dict:
    return cfg.deep_merge(cfg.read_config_file(cfg.DEFAULT_CONFIG), cfg.read_config_file(cfg.PROJECT_ROOT / "config" / "smoke.yaml"))


def test_the_smoke_config_compares_sd_imagenet_with_its_jpeg_copy():
    smoke = cfg.load(cfg.PROJECT_ROOT / "config" / "smoke.yaml")
    assert cfg.generated_names(smoke)[-1] == "sd_imagenet_jpeg"
    assert cfg.generated_size(smoke, "sd_imagenet_jpeg") == cfg.generated_size(smoke, "sd_imagenet")
    assert cfg.shard_count(smoke, "sd_imagenet_jpeg") == cfg.shard_count(smoke, "sd_imagenet")
    tables = {table["name"]: table for table in smoke["tables"] if table.get("group") == "format_control"}
    assert [row["mixture"] for row in tables["format_control_classify"]["rows"]] == [
        "imagenet", "in_sd_40", "in_sd_imagenet_jpeg_40", "sd_imagenet", "sd_imagenet_jpeg"]
    assert tables["format_control_classify"]["metrics"] == ["top1_imagenet_val", "top1_imagenet_a", "top1_imagenet_r"]
    assert [(row["dataset"], row["mixture"]) for row in tables["format_control_detection"]["rows"]] == [
        ("ImageNet vs SD-ImageNet", "sd_imagenet"), ("ImageNet vs SD-ImageNet (JPEG-matched)", "sd_imagenet_jpeg")]
    mixture = next(mixture for mixture in smoke["mixtures"] if mixture["name"] == "in_sd_imagenet_jpeg_40")
    assert (mixture["label"], mixture["by"], mixture["fraction"]) == ("IN/SD-40% (JPEG-matched)", "sd_imagenet_jpeg", 0.4)
    # The paper run has no copies.
    paper = cfg.load()
    assert "sd_imagenet_jpeg" not in cfg.generated_names(paper)
    assert not any(table.get("group") == "format_control" for table in paper["tables"])


def test_a_caption_dataset_is_compared_by_the_detectors_only():
    config = raw_smoke_config()
    config["format_control"]["generated"] = ["sd_coco"]
    cfg.validate(config)
    tables = [table for table in config["tables"] if table.get("group") == "format_control"]
    assert [table["name"] for table in tables] == ["format_control_detection"]
    assert [row["mixture"] for row in tables[0]["rows"]] == ["sd_coco", "sd_coco_jpeg"]
    assert cfg.dataset_target(config, "sd_coco_jpeg") == "caption" and cfg.generated_from(config, "sd_coco_jpeg") == "coco"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c["format_control"].update(generated=["sd_imagenett"]),
         "format_control.generated[0]: 'sd_imagenett' is not an entry of `generated` (did you mean 'sd_imagenet'?)"),
        (lambda c: c["format_control"].update(generated=["sd_imagenet", "sd_imagenet"]),
         "format_control.generated[1]: its copy's name 'sd_imagenet_jpeg' is taken"),
        (lambda c: c["generated"].append(dict(c["generated"][0], name="sd_imagenet_jpeg")),
         "format_control.generated[0]: its copy's name 'sd_imagenet_jpeg' is taken"),
        (lambda c: c["format_control"].update(real_source="imagenet_a"),
         "config key format_control.real_source: 'imagenet_a' is not one of"),
        (lambda c: c["format_control"].update(quality=90), "config key format_control.quality: unknown key"),
        (lambda c: c.update(licenses={"stable_difusion": "MIT"}),
         "licenses.stable_difusion: no generator of that name (the paper's 'stable_diffusion' or a key of "
         "`generators`) (did you mean 'stable_diffusion'?)"),
        (lambda c: c["mixtures"].append({"name": "sd_imagenet_jpeg", "kind": "subset", "base": "imagenet", "fraction": 1.0}),
         "mixtures: 'sd_imagenet_jpeg' is both in the config and made by format_control, with other settings"),
    ],
)
def test_bad_format_control_settings_name_their_key(change, expected):
    config = raw_smoke_config()
    change(config)
    with pytest.raises(ConfigError) as error:
        cfg.validate(config)
    assert expected in str(error.value)


def test_a_saved_run_config_validates_again_to_the_same_config(tmp_path):
    smoke = cfg.load(cfg.PROJECT_ROOT / "config" / "smoke.yaml")
    overlay = tmp_path / "run.yaml"
    overlay.write_text(yaml.safe_dump(json.loads(cfg.settings_json("", smoke))))
    assert cfg.load(overlay) == smoke
