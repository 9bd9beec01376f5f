"""Bad configuration stops the run before any job, with a message naming the key and value."""

import copy

import pytest
import yaml

from contamination import config as cfg
from contamination.errors import ConfigError
from helpers import PAPER_CONFIG, SMOKE_CONFIG, paper_config_with_empty_roots, snakemake, write_yaml


@pytest.fixture(scope="module")
def paper():
    return yaml.safe_load(PAPER_CONFIG.read_text())


def validated(config):
    config = copy.deepcopy(config)
    cfg.validate(config)
    return config


def test_paper_and_smoke_configs_are_valid():
    paper = cfg.load()
    smoke = cfg.load(SMOKE_CONFIG)
    assert paper["run"] == "paper" and smoke["run"] == "smoke"
    assert smoke["synthetic"]["enabled"] and not paper["synthetic"]["enabled"]
    # the smoke overlay changes sizes and paths, never the list of paper mixtures
    assert [m["name"] for m in smoke["mixtures"]] == [m["name"] for m in paper["mixtures"]]


def test_defaults_are_filled(paper):
    config = validated(paper)
    assert config["on_unreadable_image"] == "fail"
    assert config["synthetic"]["enabled"] is False
    replace = next(m for m in config["mixtures"] if m["name"] == "in_sd_20")
    assert replace["with_replacement"] is False


def test_paper_sizes_follow_from_config(paper):
    config = validated(paper)
    assert cfg.generated_size(config, "sd_imagenet") == 1400 * 1000
    assert cfg.generated_size(config, "sd_imagenet_complex") == 1400 * 1000
    assert cfg.generated_size(config, "sd_coco") == 113287 * 5
    assert cfg.shard_count(config, "sd_imagenet") == 1400
    assert cfg.shard_count(config, "sd_coco") == 567


def mutate(paper, change):
    config = copy.deepcopy(paper)
    change(config)
    return config


def mixture(config, name):
    return next(m for m in config["mixtures"] if m["name"] == name)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: mixture(c, "in_sd_20").update(fraction=1.5), "mixtures[1].fraction: 1.5 is greater than the maximum of 1"),
        (lambda c: mixture(c, "in_sd_20").update(fraction=-0.1), "mixtures[1].fraction: -0.1 is less than the minimum of 0"),
        (lambda c: mixture(c, "in_sd_20").update(by="sd_imagenett"), "mixtures[1].by: unknown source 'sd_imagenett'"),
        (lambda c: mixture(c, "imagenet").update(base="imagenet21k"), "mixtures[0].base: unknown source 'imagenet21k'"),
        (lambda c: c["mixtures"].append(dict(mixture(c, "in_sd_40"))), "duplicate mixture name 'in_sd_40'"),
        (lambda c: c["generated"][0].update(template="A photo of {class}"), "generated[0].template: 'A photo of {class}' has no {name} placeholder"),
        (lambda c: c["complex_prompts"].update(template="{medium} of {name}"), "complex_prompts.template"),
        (lambda c: mixture(c, "co_sd_20").update(by="sd_imagenet"), "mixtures[18].by: 'sd_imagenet' has labels but base 'coco' has captions"),
        (lambda c: mixture(c, "co_fl_40").update(match="source"), "mixtures[22].match: 'source' needs 'flickr30k' to be generated from 'coco'"),
        (lambda c: c.update(on_unreadable_image="ignore"), "on_unreadable_image: 'ignore' is not one of"),
        (lambda c: c["generation"].update(height=500), "generation.height: 500 is not a multiple of 8"),
        (lambda c: c["generation"].update(matmul_precision="fast"), "generation.matmul_precision: 'fast' is not one of"),
        (lambda c: c["image_sets"].update(reduced_jpeg_decode="often"), "image_sets.reduced_jpeg_decode: 'often' is not of type 'boolean'"),
        (lambda c: mixture(c, "coco_5").update(unit="caption"), "mixtures[24].unit: 'caption' is not one of ['image', 'pair']"),
        (lambda c: c["sources"]["webvision"].update(train_subset=0), "sources.webvision.train_subset: 0 is less than the minimum of 1"),
        (lambda c: c["fidelity"].update(dataset_sample_size=1), "fidelity.dataset_sample_size: 1 is less than the minimum of 2"),
    ],
)
def test_bad_config_names_key_and_value(paper, change, expected):
    with pytest.raises(ConfigError) as error:
        validated(mutate(paper, change))
    assert expected in str(error.value)


def test_missing_dataset_root_stops_dry_run_before_any_job(tmp_path):
    overlay = yaml.safe_load(paper_config_with_empty_roots(tmp_path).read_text())
    overlay["sources"]["imagenet"]["root"] = str(tmp_path / "no-such-imagenet")
    write_yaml(tmp_path / "paper.yaml", overlay)
    result = snakemake("-n", "--configfile", tmp_path / "paper.yaml", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert f"sources.imagenet.root: '{tmp_path / 'no-such-imagenet'}' does not exist" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_missing_model_directory_stops_dry_run(tmp_path):
    overlay = yaml.safe_load(paper_config_with_empty_roots(tmp_path).read_text())
    overlay["models"]["stable_diffusion"] = "/nowhere/sd-v1-1"
    write_yaml(tmp_path / "paper.yaml", overlay)
    result = snakemake("-n", "--configfile", tmp_path / "paper.yaml", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "models.stable_diffusion: '/nowhere/sd-v1-1' does not exist" in result.stdout + result.stderr


def test_bad_fraction_stops_snakemake_with_key(tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    paper = yaml.safe_load(PAPER_CONFIG.read_text())
    config["mixtures"] = paper["mixtures"]
    config["mixtures"][2]["fraction"] = 4
    write_yaml(tmp_path / "bad.yaml", config)
    result = snakemake("-n", "--configfile", tmp_path / "bad.yaml", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "4 is greater than the maximum of 1" in result.stdout + result.stderr
    assert "'mixtures'][2]['fraction']" in result.stdout + result.stderr


def test_set_sizes_the_paper_leaves_open_have_defaults_and_reach_the_mixture_jobs(paper):
    config = validated(paper)
    assert config["sources"]["webvision"]["train_subset"] == 1281167  # ImageNet's training set
    assert config["fidelity"]["dataset_sample_size"] == 50000
    defaults = validated(mutate(paper, lambda c: (c["sources"]["webvision"].pop("train_subset"),
                                                  c["fidelity"].pop("dataset_sample_size"))))
    assert defaults["sources"]["webvision"]["train_subset"] == 1281167
    assert defaults["fidelity"]["dataset_sample_size"] == 50000
    for name in ("in_wv_20", "in_wv_95", "webvision"):
        assert cfg.mixture_job_spec(config, name)["subsample"] == {"webvision": 1281167}
    job = cfg.mixture_job_spec(config, "co_sd_20")
    assert job["subsample"] == {} and job["seed"] == 0 and job["unit"] == "image" and job["match"] == "source"
    everything = validated(mutate(paper, lambda c: c["sources"]["webvision"].update(train_subset=None)))
    assert cfg.mixture_job_spec(everything, "in_wv_20")["subsample"] == {}
