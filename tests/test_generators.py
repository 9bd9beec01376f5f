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
from helpers import write_yaml

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
    schedulers = {"sd": "PNDMScheduler", "sdxl": "EulerDiscreteScheduler", "pixart_sigma": "DPMSolverMultistepScheduler"}
    assert set(metadata["scheduler_class"]) == {schedulers[family]}
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


def test_a_generator_may_set_its_own_shard_and_batch_size():
    config = validated(with_generator(SMOKE, shard_size=3, batch_size=5))
    assert cfg.shard_count(config, "xl_imagenet") == 3  # 4 classes x 2 images in shards of 3
    assert cfg.shard_count(config, "sd_imagenet") == 96 // config["generation"]["shard_size"]
    assert cfg.runtime_settings("generation", generators.generation_settings(config, "xl_imagenet")) == {"batch_size": 5}


# ---- the comparison ----------------------------------------------------------------------------


def test_the_comparison_adds_datasets_mixtures_and_tables_per_generator():
    tables = {table["name"]: table for table in SMOKE["tables"] if table.get("group") == "generators"}
    assert list(tables) == ["generators_classify", "generators_inception", "generators_dinov2"]
    assert [row["mixture"] for row in tables["generators_classify"]["rows"]] == [
        "imagenet", "in_sd_40", "sd_imagenet", "in_tiny_sdxl_40", "tiny_sdxl_imagenet",
        "in_tiny_pixart_40", "tiny_pixart_imagenet"]
    assert tables["generators_dinov2"]["metrics"] == [
        "FD_DINOv2_vs_imagenet_val", "precision_vs_imagenet_val", "recall_vs_imagenet_val"]
    assert tables["generators_inception"]["metrics"] == ["precision_vs_imagenet_val", "recall_vs_imagenet_val"]
    spec = cfg.generated_spec(SMOKE, "tiny_pixart_imagenet")
    assert (spec["generator"], spec["per_class"], spec["prompts"]) == ("tiny_pixart", 24, "class_template")
    mixture = next(mixture for mixture in SMOKE["mixtures"] if mixture["name"] == "in_tiny_pixart_40")
    assert (mixture["label"], mixture["by"], mixture["fraction"], mixture["match"]) == \
        ("IN/PixArt-40%", "tiny_pixart_imagenet", 0.4, "label")


def test_a_saved_run_config_validates_again_to_the_same_config(tmp_path):
    # results/<run>/config.yaml holds the added entries; the planner loads it again.
    overlay = write_yaml(tmp_path / "run.yaml", json.loads(cfg.settings_json("", SMOKE)))
    assert cfg.load(overlay) == SMOKE


def test_an_entry_of_the_same_name_with_other_settings_is_an_error():
    config = copy.deepcopy(cfg.read_config_file(cfg.PROJECT_ROOT / "config" / "smoke.yaml"))
    config = cfg.deep_merge(cfg.read_config_file(cfg.DEFAULT_CONFIG), config)
    config["mixtures"].append({"name": "in_tiny_sdxl_40", "kind": "replace", "base": "imagenet",
                               "by": "sd_imagenet", "fraction": 0.4})
    with pytest.raises(ConfigError, match="mixtures: 'in_tiny_sdxl_40' is both in the config and made by "
                                          "generator_comparison, with other settings"):
        cfg.validate(config)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c["generator_comparison"].update(generators=["tiny_sdxl", "sdxl"]),
         "generator_comparison.generators[1]: unknown generator 'sdxl' (config `generators`) (did you mean 'tiny_sdxl'?)"),
        (lambda c: c["generator_comparison"].update(fidelity_models=["clip_features"]),
         "config key generator_comparison.fidelity_models[0]: 'clip_features' is not one of"),
        (lambda c: c["tables"][0].update(group="table2"), "tables[0].group: 'table2' is a table's name"),
        (lambda c: c["planning"]["throughput"].update(generators={"tiny_sdx": 2.0}),
         "planning.throughput.generators.tiny_sdx: no generator generators.tiny_sdx (did you mean 'tiny_sdxl'?)"),
    ],
)
def test_bad_comparison_settings_name_their_key(change, expected):
    config = cfg.deep_merge(cfg.read_config_file(cfg.DEFAULT_CONFIG), cfg.read_config_file(cfg.PROJECT_ROOT / "config" / "smoke.yaml"))
    config["generator_comparison"] = dict(config["generator_comparison"])
    config.setdefault("planning", {}).setdefault("throughput", {})
    change(config)
    with pytest.raises(ConfigError) as error:
        cfg.validate(config)
    assert expected in str(error.value)


def test_dinov2_tables_need_models_dinov2_outside_the_smoke_run():
    config = cfg.load(cfg.PROJECT_ROOT / "config" / "generators.yaml")
    assert config["models"]["dinov2"] == "/path/to/dinov2-large"
    del config["models"]["dinov2"]
    with pytest.raises(ConfigError, match=r"models.dinov2: tables\[\d+\] \(generators_dinov2\) compares DINOv2"):
        cfg.check(config)


# ---- planning ---------------------------------------------------------------------------------


def test_the_planner_prices_each_generator_by_steps_pixels_and_guidance_passes():
    from contamination.dag import Job
    from contamination.reporting import plan

    config = cfg.load(cfg.PROJECT_ROOT / "config" / "generators.yaml")
    costs = plan.Costs(config, plan.read_profile(plan.DEFAULT_PROFILE))
    throughput = config["planning"]["throughput"]["generate"]

    def seconds_per_image(name):
        seconds, note = costs.work_seconds(Job.of("generate_shard", name=name, shard="00000"))
        assert note == ""
        return seconds / costs.shard_images(name, 0)

    assert seconds_per_image("sd_imagenet") == pytest.approx(1 / throughput)  # the reference itself
    # SDXL: 50 steps at 1024 px with guidance, 4x the pixels of the paper's 512 px
    assert seconds_per_image("sdxl_imagenet") == pytest.approx(4 / throughput)
    # FLUX.1-schnell: 4 steps at 1024 px, guidance 0 (one pass a step): 4 x 4/50 / 2
    assert seconds_per_image("flux_schnell_imagenet") == pytest.approx(4 * 4 / 50 / 2 / throughput)
    bytes_per_image = config["planning"]["bytes_per_generated_image"]
    assert costs.storage_bytes(Job.of("generate_shard", name="sd_2_1_imagenet", shard="00000")) == pytest.approx(
        costs.shard_images("sd_2_1_imagenet", 0) * bytes_per_image * (768 / 512) ** 2)
    # A stated rate for a generator wins over the scaled reference.
    config["planning"]["throughput"]["generators"] = {"sdxl": 0.5}
    assert seconds_per_image("sdxl_imagenet") == pytest.approx(1 / 0.5)


# ---- DINOv2 features --------------------------------------------------------------------------


def test_dinov2_features_are_the_normalised_images_class_token_and_feed_fd_dinov2(tmp_path):
    from transformers import Dinov2Model

    from contamination.metrics import dinov2

    model_dir = tmp_path / "tiny-dinov2"
    assert main(["tiny-encoder", str(model_dir), "--kind", "dinov2", "--seed", "0", "--image-size", "32"]) == 0
    rng = np.random.default_rng(0)
    real, generated = (tmp_path / "real.npy", tmp_path / "generated.npy")
    np.save(real, rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    np.save(generated, rng.integers(0, 128, (12, 32, 32, 3), dtype=np.uint8))
    paths = {}
    for name, images in [("real", real), ("generated", generated), ("again", real)]:
        paths[name] = tmp_path / f"{name}-features.npy"
        assert main(["features", "--encoder", "dinov2", "--images", str(images), "--extractor", str(model_dir),
                     "--device", "cpu", "--batch-size", "5", "--out", str(paths[name])]) == 0
    features = np.load(paths["real"])
    assert features.shape == (12, 32) and features.dtype == np.float32
    assert paths["again"].read_bytes() == paths["real"].read_bytes()

    model = Dinov2Model.from_pretrained(model_dir).eval()
    pixels = torch.from_numpy(np.load(real)[:2]).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(dinov2.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(dinov2.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():  # DINOv2's x_norm_clstoken: the class token after the final layer norm
        expected = model(pixel_values=(pixels - mean) / std).last_hidden_state[:, 0]
    np.testing.assert_allclose(features[:2], expected.numpy(), rtol=1e-4, atol=1e-5)

    metrics_path = tmp_path / "metrics.json"
    assert main(["fidelity", "--kind", "dataset", "--generated", str(paths["generated"]), "--reference",
                 f"imagenet_val={paths['real']}", "--k", "3", "--fd-name", "FD_DINOv2", "--device", "cpu",
                 "--out", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())["metrics"]
    assert set(metrics) == {"FD_DINOv2_vs_imagenet_val", "precision_vs_imagenet_val", "recall_vs_imagenet_val"}
    assert metrics["FD_DINOv2_vs_imagenet_val"] > 0


def test_a_dinov2_path_that_is_no_model_names_its_key(tmp_path, capsys):
    out = tmp_path / "features.npy"
    np.save(tmp_path / "images.npy", np.zeros((2, 32, 32, 3), dtype=np.uint8))
    assert main(["features", "--encoder", "dinov2", "--images", str(tmp_path / "images.npy"), "--extractor",
                 str(tmp_path), "--out", str(out)]) == 2
    assert f"models.dinov2: '{tmp_path}' is not a transformers model directory" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("family", ["sdxl", "pixart_sigma"])
def test_a_tiny_pipeline_is_the_same_files_for_the_same_seed(family, pipelines, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    assert main(["tiny-pipeline", family, str(again), "--seed", "0"]) == 0
    save_pretrained(TINY_FAMILIES[family](1), other)

    def files(directory):  # without the builder's ownership marker
        return {path.relative_to(directory).as_posix(): path.read_bytes()
                for path in sorted(directory.rglob("*")) if path.is_file() and not path.name.startswith(".")}

    assert files(again) == files(pipelines[family])
    assert files(other).keys() == files(again).keys() and files(other) != files(again)


def test_a_missing_pipeline_directory_names_the_generators_key(prompt_table, tmp_path, capsys):
    out = tmp_path / "shard-00000.zip"
    assert generate_cli(prompt_table, tmp_path / "missing", family_settings("sdxl"), out) == 2
    assert f"error: generators.tiny_sdxl.pipeline: '{tmp_path / 'missing'}' does not exist" in capsys.readouterr().err
    assert not out.exists()
