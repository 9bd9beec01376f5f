"""The card of a generated dataset and verify-generated, on a tiny dataset made by the tiny pipeline."""

import copy
import hashlib
import io
import json
import shutil
import zipfile

import pandas as pd
import pytest
import torch
from PIL import Image

from contamination.__main__ import main
from contamination import config as cfg
from contamination.config import PROJECT_ROOT, load
from contamination.errors import DataError
from contamination.generation import card, format_match
from contamination.generation.generate import ROUNDING_COLUMNS
from contamination.generation import generators
from contamination.generation.generators import effective_settings
from contamination.generation.prompts import build_prompt_table
from contamination.generation.shards import read_metadata, write_shard
from contamination.io import save_pretrained, write_parquet
from contamination.records import model_fingerprint
from contamination.smoke import tiny_sd
from contamination.smoke.tiny_sd import TINY_FAMILIES
from helpers import SMOKE_CONFIG, cli, snakemake

NAME, MATCHED = "sd_imagenet", "sd_imagenet_jpeg"  # smoke.yaml's, and its format-matched copy
WNIDS = ["n01440764", "n01443537"]
PER_CLASS = 3  # 6 images in shards of 4 and 2; shard 0 is made in batches of 3 and 1
LICENSE = "CreativeML OpenRAIL-M (as the test states it)"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    config = load(PROJECT_ROOT / "config" / "smoke.yaml")
    config["generation"].update(steps=3, height=16, width=16, batch_size=3, shard_size=4)
    next(spec for spec in config["generated"] if spec["name"] == NAME).update(per_class=PER_CLASS)
    config["licenses"]["stable_diffusion"] = LICENSE
    return config


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny-sd"
    save_pretrained(tiny_sd.build_pipeline(0), out)
    return out


def settings_of(config, name, pipeline_dir) -> dict:
    settings = effective_settings(config, name)
    settings["generator"]["pipeline"] = str(pipeline_dir)
    return settings


def write_card(config, name, directory, pipeline_dir) -> int:
    shards = sorted(map(str, directory.glob("shard-*.zip")))
    assert main(["merge-shards", *shards, "--out", str(directory / "index.parquet")]) == 0
    return main(["generated-card", "--settings", json.dumps(settings_of(config, name, pipeline_dir)),
                 "--index", str(directory / "index.parquet"), "--shards", *shards,
                 "--out-json", str(directory / "card.json"), "--out-readme", str(directory / "README.md")])


def make_dataset(results, config, name, pipeline_dir):
    """results/generated/<name>/: the shards of generated dataset ``name`` of ``config`` (two
    classes), its index and card."""
    directory = results / "generated" / name
    spec = dict(cfg.generated_spec(config, name), seed=0)
    spec["size"] = 2 * spec["per_class"]
    classes = pd.DataFrame({"label": [0, 1], "wnid": WNIDS, "names": [["tench"], ["goldfish"]]})
    prompts = results / f"{name}-prompts.parquet"
    write_parquet(build_prompt_table(spec, classes, "classes"), prompts)
    for shard in range(-(-spec["size"] // cfg.shard_size(config, name))):
        assert main(["generate", "--prompts", str(prompts), "--pipeline", str(pipeline_dir), "--shard", str(shard),
                     "--settings", json.dumps(generators.generation_settings(config, name)),
                     "--out", str(directory / f"shard-{shard:05d}.zip")]) == 0
    assert write_card(config, name, directory, pipeline_dir) == 0


@pytest.fixture(scope="module")
def results(tmp_path_factory, config, pipeline_dir):
    """results/generated/sd_imagenet/: its shards, index and card."""
    results = tmp_path_factory.mktemp("run") / "results"
    make_dataset(results, config, NAME, pipeline_dir)
    return results


def verify(results, name=NAME, *arguments):
    return main(["verify-generated", name, "--results", str(results), *arguments])


def copied(results, tmp_path):
    shutil.copytree(results, tmp_path / "results")
    return tmp_path / "results", tmp_path / "results" / "generated" / NAME


def test_card_states_counts_checksums_generator_and_settings(results, pipeline_dir):
    directory = results / "generated" / NAME
    written = json.loads((directory / "card.json").read_text())

    assert written["counts"] == {"images": 6, "per_class": {WNIDS[0]: 3, WNIDS[1]: 3}}
    assert [shard["file"] for shard in written["shards"]] == ["shard-00000.zip", "shard-00001.zip"]
    for shard in written["shards"]:
        assert shard["sha256"] == hashlib.sha256((directory / shard["file"]).read_bytes()).hexdigest()
    assert [shard["rows"] for shard in written["shards"]] == [4, 2]
    assert written["generator"] == {"name": "stable_diffusion", "pipeline": str(pipeline_dir),
                                    "class": "StableDiffusionPipeline", "license": LICENSE,
                                    "fingerprints": [model_fingerprint(pipeline_dir)]}
    assert written["sampling"]["steps"] == 3 and written["sampling"]["scheduler"] == "plms"
    assert written["prompts"]["template"] == "A photo of {name}" and written["seed_rule"]["global_seed"] == 0
    assert written["format"] == {"image_format": "png", "image_quality": None, "width": 16, "height": 16}
    assert {key: written["made_on"][key] for key in ("device", "batch_size", "torch_threads")} == \
        {"device": ["cpu"], "batch_size": [3], "torch_threads": [1]}
    readme = (directory / "README.md").read_text()
    assert f"{written['shards'][1]['sha256']}  shard-00001.zip" in readme
    assert LICENSE in readme and f"verify-generated {NAME}" in readme


def test_verify_passes_and_regenerated_rows_are_bit_identical_on_the_cpu(results, capsys):
    torch.set_num_threads(2)  # verify regenerates with the thread count the shard recorded (1)
    assert verify(results, NAME, "--rows", "6") == 0
    assert torch.get_num_threads() == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "mean absolute difference" in line]
    assert len(lines) == 6
    assert all("mean absolute difference 0.0000, largest 0 (must be identical)" in line for line in lines), lines


@pytest.mark.parametrize("family", ["sdxl", "pixart_sigma"])
def test_other_families_datasets_have_cards_and_regenerate_bit_identically(family, config, tmp_path, capsys):
    """The smoke run's tiny SDXL and PixArt-Sigma datasets (config generators), two classes of two."""
    name = {"sdxl": "tiny_sdxl_imagenet", "pixart_sigma": "tiny_pixart_imagenet"}[family]
    config = copy.deepcopy(config)
    cfg.generated_spec(config, name).update(per_class=2)
    pipeline_dir = tmp_path / f"tiny-{family}"
    save_pretrained(TINY_FAMILIES[family](0), pipeline_dir)
    make_dataset(tmp_path / "results", config, name, pipeline_dir)

    written = json.loads((tmp_path / "results" / "generated" / name / "card.json").read_text())
    generator = config["generated"][[spec["name"] for spec in config["generated"]].index(name)]["generator"]
    assert written["generator"]["name"] == generator and written["generator"]["license"] == "unstated"
    assert written["sampling"] == {key: value for key, value in generators.generator_settings(config, name).items()
                                   if key not in generators.NOT_SAMPLING}
    assert written["counts"] == {"images": 4, "per_class": {WNIDS[0]: 2, WNIDS[1]: 2}}
    assert verify(tmp_path / "results", name, "--rows", "4") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "mean absolute difference" in line]
    assert len(lines) == 4 and all("largest 0 (must be identical)" in line for line in lines), lines


def test_verify_saves_a_regenerated_row(results, tmp_path):
    row = pd.read_parquet(results / "generated" / NAME / "index.parquet").iloc[4]
    assert verify(results, NAME, "--rows", "0", "--id", row["id"], "--save-dir", str(tmp_path)) == 0
    saved = Image.open(tmp_path / f"{row['id']}.png")
    with zipfile.ZipFile(results / "generated" / NAME / "shard-00001.zip") as archive:
        assert saved.tobytes() == Image.open(io.BytesIO(archive.read(f"{row['id']}.png"))).tobytes()


def test_verify_fails_on_a_changed_shard(results, tmp_path, capsys):
    results, directory = copied(results, tmp_path)
    shard = directory / "shard-00001.zip"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))

    assert verify(results) == 2
    error = capsys.readouterr().err
    assert "shard shard-00001.zip has changed: SHA-256" in error and "shard-00000.zip" not in error


def test_verify_fails_on_a_missing_shard(results, tmp_path, capsys):
    results, directory = copied(results, tmp_path)
    (directory / "shard-00000.zip").unlink()

    assert verify(results, NAME, "--rows", "6") == 2
    error = capsys.readouterr().err
    assert "shard shard-00000.zip is missing" in error
    assert "not regenerated: their shard shard-00000.zip is missing or changed" in error


def test_verify_fails_on_other_counts_in_the_index(results, tmp_path, capsys):
    results, directory = copied(results, tmp_path)
    index = pd.read_parquet(directory / "index.parquet")
    write_parquet(index.iloc[1:], directory / "index.parquet")

    assert verify(results, NAME, "--rows", "0") == 2
    error = capsys.readouterr().err
    assert "the index has 5 rows, the card says 6" in error and f"e.g. {WNIDS[0]}: 2 in the index, 3 in the card" in error


def rewritten(directory, change_images=lambda images, members: None, change_metadata=lambda metadata: metadata):
    """Shard 0 rewritten with changed images or metadata, its new checksum put into the card."""
    shard = directory / "shard-00000.zip"
    metadata = read_metadata(shard)
    with zipfile.ZipFile(shard) as archive:
        images = {member: archive.read(member) for member in metadata["member"]}
    change_images(images, metadata["member"].tolist())
    write_shard(shard, images.items(), change_metadata(metadata))
    written = json.loads((directory / "card.json").read_text())
    written["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (directory / "card.json").write_text(json.dumps(written))
    return metadata


def test_verify_fails_when_a_stored_image_is_not_what_its_row_makes(results, tmp_path, capsys):
    """A shard rewritten with one image swapped (and its checksum put into the card) passes the
    checksums, but not the regeneration of that row."""
    results, directory = copied(results, tmp_path)
    metadata = rewritten(directory, lambda images, members: images.update({members[1]: images[members[0]]}))

    assert verify(results, NAME, "--rows", "0", "--id", metadata["id"].iloc[0]) == 0
    assert verify(results, NAME, "--rows", "0", "--id", metadata["id"].iloc[1]) == 2
    assert f"row {metadata['id'].iloc[1]}: regenerated on the CPU as it was made, but" in capsys.readouterr().err


def test_rows_whose_rounding_is_not_recorded_are_held_to_the_tolerance(results, tmp_path, capsys):
    results, directory = copied(results, tmp_path)
    rewritten(directory, change_metadata=lambda metadata: metadata.drop(columns=list(ROUNDING_COLUMNS)))
    assert verify(results, NAME, "--rows", "0", "--id", "sd_imagenet_n01440764_00002") == 0
    assert "(tolerance 2.0: its shard does not record batch_size, torch_threads, cpu_capability)" in capsys.readouterr().out


def test_verify_refuses_another_generator(results, tmp_path, capsys):
    other = tmp_path / "other-sd"
    save_pretrained(tiny_sd.build_pipeline(1), other)
    assert verify(results, NAME, "--rows", "1", "--pipeline", str(other)) == 2
    assert f"the generator {other} has fingerprint" in capsys.readouterr().err


def test_verify_without_a_card_says_how_to_make_it(tmp_path, capsys):
    assert verify(tmp_path, NAME) == 2
    assert f"snakemake {tmp_path}/generated/{NAME}/card.json" in capsys.readouterr().err


def test_card_refuses_shards_made_with_other_settings(results, config, pipeline_dir):
    directory = results / "generated" / NAME
    settings = settings_of(config, NAME, pipeline_dir)
    settings["sampling"]["steps"] = 50
    with pytest.raises(DataError, match=r"shard-00000.zip: its images were made with steps \[3\], but the config says 50"):
        card.build_card(settings, pd.read_parquet(directory / "index.parquet"), sorted(directory.glob("shard-*.zip")))


def test_format_matched_dataset_has_a_card_and_regenerates_bit_identically(results, config, pipeline_dir, tmp_path,
                                                                           capsys):
    profile = tmp_path / "profile.parquet"
    rows = []
    for number, (quality, size) in enumerate([(70, (20, 30)), (92, (24, 16)), (85, (16, 16))]):
        path = tmp_path / f"real_{number}.JPEG"
        Image.new("RGB", size, (40 * number, 90, 200)).save(path, "JPEG", quality=quality)
        rows.append((f"real_{number}", f"real_{number}", str(path), "train"))
    index = pd.DataFrame(rows, columns=["id", "image_id", "path", "split"])
    write_parquet(format_match.build_profile(index, "imagenet", 10, 0, "index")[0], profile)
    spec = json.dumps({"name": MATCHED, "from": NAME, "real_source": "imagenet", "seed": 0})
    directory = results / "generated" / MATCHED
    for shard in ("shard-00000.zip", "shard-00001.zip"):
        assert main(["format-match", "--spec", spec, "--shard", str(results / "generated" / NAME / shard),
                     "--profile", str(profile), "--out", str(directory / shard)]) == 0
    assert write_card(config, MATCHED, directory, pipeline_dir) == 0

    written = json.loads((directory / "card.json").read_text())
    assert written["counts"] == {"images": 6, "per_class": {WNIDS[0]: 3, WNIDS[1]: 3}}
    assert written["format"]["image_format"] == "jpeg" and written["format"]["matched_to"] == "imagenet"
    assert sum(written["format"]["quality"].values()) == 6 and set(written["format"]["quality"]) <= {"70", "92", "85"}
    assert written["format_control"]["from"] == NAME and written["generator"]["license"] == LICENSE
    capsys.readouterr()
    assert verify(results, MATCHED, "--rows", "6") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "mean absolute difference" in line]
    assert len(lines) == 6 and all("largest 0 (must be identical)" in line for line in lines), lines


@pytest.mark.workflow
def test_the_smoke_workflow_writes_a_card_that_verifies(tmp_path):
    """The rules end to end: SD-ImageNet generated, re-stored as JPEG, indexed and carded by the
    smoke workflow; verify-generated then regenerates rows of the JPEG copy bit for bit."""
    card_json = f"results/smoke/generated/{MATCHED}/card.json"
    snakemake("--cores", "2", card_json, "--configfile", SMOKE_CONFIG, cwd=tmp_path)
    written = json.loads((tmp_path / card_json).read_text())
    assert written["counts"]["images"] == 96 and written["format"]["image_format"] == "jpeg"
    result = cli("verify-generated", MATCHED, "--results", "results/smoke", "--rows", "3", cwd=tmp_path)
    assert result.stdout.count("largest 0 (must be identical)") == 3, result.stdout
