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


# ---- job settings: params carry what differs from the schema defaults --------------------------


def command_type(verb, option):
    """How the command ``verb`` reads its JSON ``option`` (the argparse ``type``)."""
    from contamination.__main__ import build_parser

    subparsers = next(action for action in build_parser()._actions if action.dest == "verb")
    return subparsers.choices[verb]._option_string_actions[option].type


def settings_cases(config):
    """(verb, option, the JSON a rule passes, the settings the command must see) for every
    settings JSON of workflow/rules/common.smk, built the way its functions build them."""
    from contamination import classify, iddpm, mae, spectra

    seed = {"seed": config["seed"]}
    cases = [
        ("generate", "--settings", cfg.job_settings("generation", config["generation"]), config["generation"]),
        ("caption", "--settings", cfg.job_settings("captioning", config["captioning"]), config["captioning"]),
        ("synthetic", "--spec", dict(cfg.job_settings("synthetic", config["synthetic"]), **seed),
         dict(config["synthetic"], **seed)),
        ("detect", "--spec", dict(cfg.job_settings("detection", config["detection"]), generated="sd_imagenet", **seed),
         dict(config["detection"], generated="sd_imagenet", **seed)),
    ]
    for verb, section, keys in (("spectra", "spectra", spectra.SPEC_KEYS), ("mae-pretrain", "mae", mae.PRETRAIN_SPEC_KEYS),
                                ("mae-linear-probe", "mae", mae.PROBE_SPEC_KEYS),
                                ("iddpm-train", "iddpm", iddpm.TRAIN_SPEC_KEYS),
                                ("iddpm-sample", "iddpm", iddpm.SAMPLE_SPEC_KEYS)):
        settings = dict(config[section], **seed)
        cases.append((verb, "--spec", dict(cfg.job_settings(section, settings, keys), **seed),
                      {key: settings[key] for key in keys} | seed))
    for model, recipe in config["classification"]["models"].items():
        extra = {"model": model, "num_classes": 4, **seed}
        cases.append(("train-classifier", "--spec",
                      dict(cfg.job_settings("classification", config["classification"], classify.SPEC_KEYS),
                           recipe=cfg.job_settings("classification.models.*", recipe), **extra),
                      {key: config["classification"][key] for key in classify.SPEC_KEYS} | {"recipe": recipe} | extra))
    for mixture in config["mixtures"]:
        cases.append(("mixture", "--spec", dict(cfg.job_settings("mixtures[]", mixture), **seed), dict(mixture, **seed)))
    for spec in config["generated"]:
        prompts = {"complex_prompts": config["complex_prompts"], "size": 10, **seed}
        cases.append(("prompts", "--spec", dict(cfg.job_settings("generated[]", spec), **prompts), dict(spec, **prompts)))
    for table in config["tables"]:
        for verb in ("table", "table-report"):
            cases.append((verb, "--spec", cfg.job_settings("tables[]", table), table))
    cases.append(("table-report", "--mixtures", [cfg.job_settings("mixtures[]", m) for m in config["mixtures"]],
                  config["mixtures"]))
    cases.append(("run-config", "--config", cfg.job_settings("", config), config))
    return cases


def canonical(data):
    import json

    return json.dumps(data, sort_keys=True)


@pytest.mark.parametrize("overlay", [None, SMOKE_CONFIG], ids=["paper", "smoke"])
def test_commands_restore_the_exact_settings_from_job_settings(overlay):
    import json

    config = cfg.load(*[overlay] if overlay else [])
    cases = settings_cases(config)
    assert {verb for verb, *_ in cases} >= {"generate", "caption", "synthetic", "detect", "spectra", "mae-pretrain",
                                            "mae-linear-probe", "iddpm-train", "iddpm-sample", "train-classifier",
                                            "mixture", "prompts", "table", "table-report", "run-config"}
    for verb, option, sent, expected in cases:
        received = command_type(verb, option)(json.dumps(sent))
        assert canonical(received) == canonical(expected), (verb, option)
        # in the order the full JSON had them (sorted): commands that write settings out keep their output
        assert json.dumps(received) == canonical(expected), (verb, option)


def test_job_settings_leave_out_every_default_value(paper):
    """With every defaulted section left to its defaults, the settings JSON of every job carries
    only what the rule adds; a value set to something else is kept, with its JSON type."""
    config = copy.deepcopy(paper)
    defaulted = ("generation", "captioning", "synthetic", "detection", "spectra", "mae", "iddpm")
    for section in defaulted:
        config.pop(section, None)
    config["classification"] = {"models": {"resnet50": {}}}
    config = validated(config)
    for verb, option, sent, expected in settings_cases(config):
        if verb == "train-classifier":
            assert sent["recipe"] == {} and set(sent) == {"recipe", "model", "num_classes", "seed"}, verb
        elif verb == "mixture" or option == "--mixtures":
            for mixture in sent if option == "--mixtures" else [sent]:
                assert mixture.get("match") != "label" and mixture.get("with_replacement") is not False, mixture
        elif verb == "run-config":
            assert not set(sent) & set(defaulted) and "seed" not in sent
            assert all("match" not in m or m["match"] != "label" for m in sent["mixtures"])
        elif verb not in ("table", "table-report", "prompts"):  # these have no defaults to leave out
            assert set(sent) <= {"seed", "generated"}, (verb, sent)
    smoke = cfg.load(SMOKE_CONFIG)
    assert cfg.job_settings("generation", smoke["generation"]) == {"steps": 10, "height": 32, "width": 32,
                                                                   "shard_size": 16}
    # 0 is not the default 0.0: the command gets the integer the config gave
    config["mae"]["pretrain"]["min_lr"] = 0
    compact = cfg.job_settings("mae", config["mae"], ["pretrain"])
    assert compact == {"pretrain": {"min_lr": 0}}
    assert type(cfg.with_defaults("mae", compact, ["pretrain"])["pretrain"]["min_lr"]) is int
