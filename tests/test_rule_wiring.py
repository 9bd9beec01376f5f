"""The rules hand the config to the commands: every command of a dry run (smoke config with a
seed, a neighbourhood size and a real fraction other than the commands' defaults) is parsed by
the real CLI parser, and its settings equal the config's. A value a rule forgot would leave the command's default,
which for --k and --seed is the paper's (5, 0), so only a non-default config shows it."""

import shlex
from pathlib import Path

import pytest
import yaml

from contamination import config as cfg
from contamination.experiments import iddpm
from contamination.generation import generators
from contamination.metrics import fidelity
from contamination.__main__ import build_parser
from helpers import SMOKE_CONFIG, snakemake, write_yaml

pytestmark = pytest.mark.workflow

OVERLAY = {"seed": 4, "fidelity": {"k": 3}, "recursion": {"real_fraction": 0.75}}


def overlay_with_tables() -> dict:
    """OVERLAY, with the tables naming the precision@3 / recall@3 that k = 3 writes."""
    merged = cfg.deep_merge(yaml.safe_load(cfg.DEFAULT_CONFIG.read_text()), yaml.safe_load(SMOKE_CONFIG.read_text()))
    tables = [dict(table, metrics=[metric.replace("@5_", "@3_") for metric in table["metrics"]])
              for table in merged["tables"]]
    return dict(OVERLAY, tables=tables)


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """(config, {verb: [parsed arguments, ...]}) of a dry run of the smoke config + OVERLAY."""
    directory = tmp_path_factory.mktemp("dry-run")
    overlay = write_yaml(directory / "overlay.yaml", overlay_with_tables())
    output = snakemake("-n", "-p", "--configfile", SMOKE_CONFIG, overlay, cwd=directory).stdout
    parser = build_parser()
    parsed = {}
    for line in output.splitlines():
        if not line.startswith("Shell command: python -m contamination "):
            continue
        words = shlex.split(line.removeprefix("Shell command: python -m contamination "))
        words = words[:words.index(">")] if ">" in words else words
        args = parser.parse_args(words)
        parsed.setdefault(args.verb, []).append(args)
    return cfg.load(SMOKE_CONFIG, overlay), parsed


def jobs(parsed: dict, verb: str) -> list:
    assert parsed.get(verb), f"the dry run has no '{verb}' job"
    return parsed[verb]


def test_fidelity_jobs_get_the_configured_k_and_block_size(commands):
    config, parsed = commands
    for args in jobs(parsed, "fidelity"):
        assert args.k == 3, "fidelity.k not passed to the fidelity command (its default 5 is the paper's)"
        assert args.block_size == config["fidelity"]["block_size"]
        assert args.resident_bytes == config["fidelity"]["resident_bytes"] != fidelity.DEFAULT_RESIDENT_BYTES
        assert args.device == config["fidelity"]["device"]


def test_generation_jobs_get_their_generators_settings_and_pipeline(commands):
    config, parsed = commands
    made_by = {}
    for args in jobs(parsed, "generate"):
        name = Path(args.prompts).stem
        generator = generators.generator_name(cfg.generated_spec(config, name))
        made_by.setdefault(generator, set()).add(name)
        assert args.pipeline == generators.pipeline_location(config, generator)
        if generator == generators.PAPER_GENERATOR:
            assert args.settings == config["generation"]
        else:  # the generator's own keys over the run-wide ones of `generation`
            own = config["generators"][generator]
            assert args.settings == cfg.with_defaults("generation", generators.generation_settings(config, name))
            assert {key: args.settings[key] for key in ("steps", "guidance_scale", "height", "class", "call_arguments")} \
                == {key: own[key] for key in ("steps", "guidance_scale", "height", "class", "call_arguments")}
            assert args.settings["image_format"] == config["generation"]["image_format"]
    assert set(made_by) == {generators.PAPER_GENERATOR, "tiny_sdxl", "tiny_pixart"}


def test_training_jobs_get_their_config_sections_and_the_seed(commands):
    config, parsed = commands
    for args in jobs(parsed, "train-classifier"):
        assert args.spec["recipe"] == config["classification"]["models"][args.spec["model"]]
        assert args.spec["num_classes"] == config["sources"]["imagenet"]["num_classes"]
        assert args.spec["seed"] == 4, "seed not passed to train-classifier"
    for args in jobs(parsed, "caption"):
        assert args.settings == config["captioning"]
        assert args.seed == 4, "seed not passed to caption (its default 0)"
    for args in jobs(parsed, "iddpm-train"):
        assert args.spec == {key: config["iddpm"][key] for key in iddpm.TRAIN_SPEC_KEYS if key != "seed"} | {"seed": 4}
    for args in jobs(parsed, "iddpm-sample"):
        # the recursion's generations make recursion.sample_count samples each
        count = config["recursion" if "/recursion/" in args.out else "iddpm"]["sample_count"]
        assert args.spec == {key: config["iddpm"][key] for key in iddpm.SAMPLE_SPEC_KEYS if key != "seed"} | {
            "seed": 4, "sample_count": count}
    for args in jobs(parsed, "recursion-mixture"):
        assert args.spec["seed"] == 4
        if args.spec["policy"] == "replace":
            assert args.spec["real_fraction"] == config["recursion"]["real_fraction"]
    for args in jobs(parsed, "mae-pretrain"):
        assert (args.spec["model"], args.spec["pretrain"], args.spec["seed"]) == \
            (config["mae"]["model"], config["mae"]["pretrain"], 4)
    for args in jobs(parsed, "mae-linear-probe"):
        assert (args.spec["linear_probe"], args.spec["seed"]) == (config["mae"]["linear_probe"], 4)
    for args in jobs(parsed, "detect"):
        assert {key: args.spec[key] for key in config["detection"]} == config["detection"]
        assert args.spec["seed"] == 4


def test_filtering_jobs_get_their_settings_the_detection_recipe_and_the_seed(commands):
    from contamination.experiments import filtering

    config, parsed = commands
    settings = config["filtering"]
    for args in jobs(parsed, "detector-set"):
        assert {key: args.spec[key] for key in filtering.DETECTOR_SET_KEYS} == \
            {key: settings[key] for key in filtering.DETECTOR_SET_KEYS}
        assert args.spec["seed"] == 4 and args.spec["mixture"] in settings["mixtures"]
    features = [args.spec for args in jobs(parsed, "detector-features")]
    assert sorted(spec["features"] for spec in features) == sorted(filtering.feature_kinds(config) * len(settings["mixtures"]))
    for spec in features:
        assert {key: spec[key] for key in filtering.FEATURE_KEYS} == {key: settings[key] for key in filtering.FEATURE_KEYS}
        if spec["features"] == "resnet50_features":
            assert (spec["resize_size"], spec["crop_size"]) == (config["detection"]["resize_size"], config["detection"]["crop_size"])
    filters = jobs(parsed, "filter")
    assert len(filters) == len(filtering.filtered_runs(config))
    for args in filters:
        assert (args.spec["target_fpr"], args.spec["device"], args.spec["seed"]) == (settings["target_fpr"], settings["device"], 4)
        assert args.spec["recipe"] == {key: config["detection"][key] for key in filtering.RECIPE_KEYS}


def test_format_control_and_card_jobs_get_the_seed_and_their_settings(commands):
    config, parsed = commands
    for args in jobs(parsed, "format-profile"):
        assert (args.source, args.images, args.seed) == (config["format_control"]["real_source"],
                                                          config["format_control"]["profile_images"], 4)
    for args in jobs(parsed, "format-match"):
        assert args.spec == {"name": "sd_imagenet_jpeg", "from": "sd_imagenet",
                             "real_source": config["format_control"]["real_source"], "seed": 4}
    cards = jobs(parsed, "generated-card")
    assert sorted(args.settings["name"] for args in cards) == sorted(cfg.generated_names(config))
    for args in cards:
        assert args.settings == generators.effective_settings(config, args.settings["name"])
        assert args.settings["seed"] == 4
