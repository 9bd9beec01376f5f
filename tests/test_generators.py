"""Generators beyond the paper's: tiny pipelines of three families generate deterministic shards
with the prompt rows' own seeds, and the config names the key of every bad generator setting."""

import copy
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from contamination import config as cfg
from contamination.__main__ import main
from contamination.errors import ConfigError
from contamination.formats import PROMPT_COLUMNS
from contamination.generation import generate, generators
from contamination.generation.prompts import image_seed
from contamination.generation.shards import read_metadata
from contamination.io import save_pretrained, write_parquet
from contamination.smoke.tiny_sd import TINY_FAMILIES, build_t5_tokenizer

SIZE = 32
# What a generator entry of each family says (as in config/smoke.yaml): its own sampler, steps
# and guidance; PixArt's resolution binning snaps sizes to its trained aspect-ratio buckets,
# which a 32 px tiny model is not.
FAMILY_SETTINGS = {
    "sd": {"class": "StableDiffusionPipeline", "scheduler": "plms", "guidance_scale": 7.5},
    "sdxl": {"class": "AutoPipelineForText2Image", "scheduler": "pipeline", "guidance_scale": 5.0},
    "pixart_sigma": {"class": "AutoPipelineForText2Image", "scheduler": "pipeline", "guidance_scale": 4.5,
                     "call_arguments": {"use_resolution_binning": False}},
}


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    paths = {}
    for family, build in TINY_FAMILIES.items():
        paths[family] = directory / f"tiny-{family}"
        save_pretrained(build(0), paths[family])
    return paths


@pytest.fixture(scope="module")
def prompt_table(tmp_path_factory):
    rows = [(f"gen_x_n0{label}_{k:05d}", label, f"n0{label}", f"n0{label}", f"A photo of class {label}")
            for label in range(2) for k in range(2)] + [("gen_x_coco_0", -1, "", "coco_0", "a caption")]
    table = pd.DataFrame(rows, columns=PROMPT_COLUMNS[:-1])
    table["seed"] = [image_seed(0, "gen_x", item_id) for item_id in table["id"]]
    path = tmp_path_factory.mktemp("prompts") / "gen_x.parquet"
    write_parquet(table, path)
    return path


def family_settings(family: str) -> dict:
    generation = cfg.load(cfg.PROJECT_ROOT / "config" / "smoke.yaml")["generation"]
    return {**generation, "steps": 2, "height": SIZE, "width": SIZE, "batch_size": 2, "shard_size": 5,
            "generator": f"tiny_{family}", **FAMILY_SETTINGS[family]}


def generate_cli(prompt_table, pipeline, settings, out):
    return main(["generate", "--prompts", str(prompt_table), "--pipeline", str(pipeline), "--shard", "0",
                 "--settings", json.dumps(settings), "--out", str(out)])


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_each_family_writes_the_same_shard_twice_with_its_generator_recorded(family, pipelines, prompt_table,
                                                                           tmp_path):
    settings = family_settings(family)
    first, second = tmp_path / "first" / "shard-00000.zip", tmp_path / "second" / "shard-00000.zip"
    assert generate_cli(prompt_table, pipelines[family], settings, first) == 0
    assert generate_cli(prompt_table, pipelines[family], settings, second) == 0

    assert first.read_bytes() == second.read_bytes()
    metadata = read_metadata(first)
    table = pd.read_parquet(prompt_table)
    assert metadata["id"].tolist() == table["id"].tolist()
    assert metadata["seed"].tolist() == table["seed"].tolist()
    assert set(metadata["generator"]) == {f"tiny_{family}"}
    assert set(metadata["pipeline_class"]) == {settings["class"]}
    assert set(metadata["call_arguments"]) == {json.dumps(settings["call_arguments"], sort_keys=True)}
    with zipfile.ZipFile(first) as archive:
        images = [Image.open(io.BytesIO(archive.read(member))) for member in metadata["member"]]
    assert {image.size for image in images} == {(SIZE, SIZE)}
    # Different rows, different images: the pipeline really ran on each row's noise.
    assert len({image.tobytes() for image in images}) == len(images)


class SeedSpy:
    """A pipeline that records the seeds of the generators it is called with."""

    def __init__(self, pipeline):
        self.pipeline, self.seeds = pipeline, []

    def __call__(self, **arguments):
        self.seeds += [generator.initial_seed() for generator in arguments["generator"]]
        return self.pipeline(**arguments)


def test_every_family_draws_each_images_noise_from_its_prompt_rows_seed(pipelines, prompt_table):
    rows = pd.read_parquet(prompt_table)
    seen = {}
    for family in sorted(TINY_FAMILIES):
        settings = family_settings(family)
        spy = SeedSpy(generate.load_pipeline(pipelines[family], settings))
        batched, _ = generate.generate_images(spy, rows["prompt"][:3], rows["seed"][:3], settings)
        alone, _ = generate.generate_images(spy, rows["prompt"][2:3], rows["seed"][2:3], settings)
        seen[family] = spy.seeds
        # The third image made alone equals the one made in a batch of three, up to float rounding.
        difference = np.abs(np.asarray(alone[0], dtype=int) - np.asarray(batched[2], dtype=int))
        assert difference.max() <= 1, family
    expected = [*rows["seed"][:3], rows["seed"][2]]
    assert seen == {family: expected for family in TINY_FAMILIES}


def test_a_call_argument_the_pipeline_does_not_take_names_its_key(pipelines):
    settings = dict(family_settings("sdxl"), call_arguments={"use_resolution_binning": False})
    with pytest.raises(ConfigError, match=r"generators.tiny_sdxl.call_arguments.use_resolution_binning: not an "
                                          r"argument of StableDiffusionXLPipeline \(it takes .*denoising_end"):
        generate.load_pipeline(pipelines["sdxl"], settings)


def test_tiny_t5_tokenizer_is_built_offline_and_ends_prompts_with_eos():
    tokenizer = build_t5_tokenizer()
    ids = tokenizer("A photo of tench", padding="max_length", max_length=24).input_ids
    assert len(ids) == 24 and tokenizer.unk_token_id not in ids
    assert ids[ids.index(tokenizer.eos_token_id) + 1:] == [tokenizer.pad_token_id] * (23 - ids.index(tokenizer.eos_token_id))
    assert tokenizer.decode(ids, skip_special_tokens=True) == "A photo of tench"


# ---- config ---------------------------------------------------------------------------------

SMOKE = cfg.load(cfg.PROJECT_ROOT / "config" / "smoke.yaml")


def validated(config):
    config = copy.deepcopy(config)
    cfg.validate(config)
    return config


def with_generator(config, name="xl", **settings):
    config = copy.deepcopy(config)
    entry = {"pipeline": "tiny:sdxl", "steps": 4, "guidance_scale": 5.0, "height": 32, "width": 32, **settings}
    config["generators"] = {**config.get("generators", {}), name: entry}
    config["generated"].append({"name": "xl_imagenet", "prompts": "class_template", "source": "imagenet",
                                "per_class": 2, "template": "A photo of {name}", "generator": name})
    return config


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"class": "StableDiffusionXLImg2ImgPipeline"},
         "generators.xl.class: 'StableDiffusionXLImg2ImgPipeline' is not one of the supported diffusers pipelines"),
        ({"scheduler": "euler"}, "generators.xl.scheduler: 'euler' is not one of ['plms', 'ddim', 'pipeline'"),
        ({"call_arguments": {"num_inference_steps": 8}}, "generators.xl.call_arguments.num_inference_steps: set by the workflow"),
        ({"call_arguments": {"clip_skip": [1, 2]}}, "config key generators.xl.call_arguments.clip_skip: [1, 2] is not of type"),
        ({"pipeline": "tiny:flux"}, "generators.xl.pipeline: 'tiny:flux' names no tiny family"),
        ({"height": 30}, "config key generators.xl.height: 30 is not a multiple of 8"),
        ({"stpes": 4}, "config key generators.xl.stpes: unknown key (did you mean 'steps'?)"),
    ],
)
def test_bad_generator_settings_name_their_key(change, expected):
    with pytest.raises(ConfigError) as error:
        validated(with_generator(SMOKE, **change))
    assert expected in str(error.value)


def test_an_unknown_generator_name_names_the_generated_dataset():
    config = with_generator(SMOKE)
    config["generated"][-1]["generator"] = "sdxl"
    with pytest.raises(ConfigError, match=r"generated\[\d+\].generator: unknown generator 'sdxl' \(config "
                                          r"`generators`\) \(did you mean 'xl'\?\)"):
        validated(config)


def test_tiny_pipelines_need_build_tiny_and_the_paper_generators_name_is_reserved():
    paper = cfg.load()
    with pytest.raises(ConfigError, match="generators.xl.pipeline: 'tiny:sdxl' is built only with models.build_tiny"):
        validated(with_generator(paper))
    with pytest.raises(ConfigError, match="generators.stable_diffusion: the name is reserved"):
        validated(with_generator(SMOKE, name="stable_diffusion"))


def test_the_paper_generators_job_settings_are_config_generation_unchanged():
    paper = cfg.load()
    for spec in paper["generated"]:
        assert generators.generation_settings(paper, spec["name"]) == paper["generation"]
    # Every key at its default: the same (empty) settings JSON as before generators existed.
    assert cfg.settings_json("generation", generators.generation_settings(paper, "sd_imagenet")) == "{}"


def test_generator_settings_are_the_full_effective_settings_of_a_dataset():
    config = validated(with_generator(SMOKE, batch_size=3, dtype="float32"))
    settings = generators.generator_settings(config, "xl_imagenet")

    assert settings["generator"] == "xl" and settings["pipeline"] == "tiny:sdxl"
    assert settings["pipeline_path"] == "results/smoke/models/tiny-sdxl"
    assert (settings["class"], settings["scheduler"], settings["steps"], settings["guidance_scale"]) == \
        ("AutoPipelineForText2Image", "pipeline", 4, 5.0)
    assert (settings["batch_size"], settings["shard_size"]) == (3, config["generation"]["shard_size"])
    assert set(generate.SETTINGS) <= set(settings)
    paper = generators.generator_settings(config, "sd_imagenet")
    assert paper["generator"] == generators.PAPER_GENERATOR and paper["class"] == "StableDiffusionPipeline"
    assert paper["pipeline_path"] == "results/smoke/models/tiny-sd"
