"""Bad configuration stops the run before any job, with a message naming the key and value."""

import copy

import pytest
import yaml

from contamination import config as cfg
from contamination.generation import format_match, generators
from contamination.errors import ConfigError
from contamination.experiments import table_metrics
from helpers import PAPER_CONFIG, SMOKE_CONFIG, cli, paper_config_with_empty_roots, snakemake, write_yaml


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
    # the smoke overlay changes sizes and paths, never the list of paper mixtures; its generator
    # comparison and format control add their own after them
    paper_mixtures = [m["name"] for m in paper["mixtures"]]
    added = [m["name"] for m in generators.comparison_entries(smoke)["mixtures"]]
    matched = [m["name"] for m in format_match.format_control_entries(smoke)["mixtures"]]
    assert [m["name"] for m in smoke["mixtures"]] == paper_mixtures + added + matched and added and matched


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
        (lambda c: mixture(c, "coco_20").update(name="pretrained"), "mixtures[26].name: 'pretrained' is reserved"),
        (lambda c: c["tables"][0].update(name="all_tables"), "tables[0].name: 'all_tables' is reserved"),
        (lambda c: c["spectra"].update(generated=["sd_imagenett"]), "spectra.generated[0]: 'sd_imagenett' is not a generated dataset"),
        (lambda c: c["classification"]["figure3"].update(mixtures=["imagenet", "sd_imagent"]), "classification.figure3.mixtures[1]: unknown mixture 'sd_imagent'"),
        (lambda c: c["classification"]["figure3"].update(wordnet_is_a="is_a.txt", superclasses="map.csv"),
         "classification.figure3: set wordnet_is_a (the big_12 superclasses) or superclasses"),
        (lambda c: c["tables"][0]["models"].append("vit_b_16"), "tables[0].models[3]: no recipe classification.models.vit_b_16"),
        (lambda c: c["tables"][11]["rows"][0].update(mixture="in_sd_20"), "tables[11].rows[0].mixture: unknown generated dataset 'in_sd_20'"),
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
    assert "config key mixtures[2].fraction: 4 is greater than the maximum of 1" in result.stdout + result.stderr


# ---- typos are errors --------------------------------------------------------------------------


def rename(mapping, old, new):
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: rename(c, "generation", "generaton"), "config key generaton: unknown key (did you mean 'generation'?)"),
        (lambda c: c["generation"].update(stpes=20), "config key generation.stpes: unknown key (did you mean 'steps'?)"),
        (lambda c: rename(mixture(c, "in_sd_20"), "fraction", "fracton"),
         "config key mixtures[1].fracton: unknown key (did you mean 'fraction'?)"),
        (lambda c: c["classification"].update(num_worker=2),
         "config key classification.num_worker: unknown key (did you mean 'num_workers'?)"),
    ],
    ids=["generaton", "generation.stpes", "mixture.fracton", "classification.num_worker"],
)
def test_unknown_key_names_its_path_and_the_closest_known_key(paper, change, expected):
    with pytest.raises(ConfigError) as error:
        validated(mutate(paper, change))
    assert str(error.value) == expected


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c["planning"]["dataset_sizes"].update(imagnet={"train": 3}),
         "config key planning.dataset_sizes.imagnet: unknown key (did you mean 'imagenet'?)"),
        (lambda c: c["planning"]["dataset_sizes"]["coco"].update(trian=3),
         "config key planning.dataset_sizes.coco.trian: unknown key (did you mean 'train'?)"),
        (lambda c: c["planning"]["throughput"]["train_classifier"].update(resnt50=3),
         "planning.throughput.train_classifier.resnt50: no recipe classification.models.resnt50 (did you mean 'resnet50'?)"),
    ],
    ids=["dataset_sizes.source", "dataset_sizes.split", "throughput.train_classifier.model"],
)
def test_misspelt_name_in_a_planning_map_names_the_closest_known_one(paper, change, expected):
    with pytest.raises(ConfigError) as error:
        validated(mutate(paper, change))
    assert str(error.value) == expected


def test_unknown_key_in_a_map_of_user_names_is_checked_in_the_value(paper):
    with pytest.raises(ConfigError, match=r"config key classification\.models\.swin_s\.epoch: unknown key "
                                          r"\(did you mean 'epochs'\?\)"):
        validated(mutate(paper, lambda c: c["classification"]["models"]["swin_s"].update(epoch=3)))


def test_table_row_naming_an_unknown_mixture_names_the_row(paper):
    change = lambda c: c["tables"][0]["rows"][2].update(mixture="in_sd_30")  # noqa: E731
    with pytest.raises(ConfigError, match=r"tables\[0\]\.rows\[2\]\.mixture: unknown mixture 'in_sd_30'"):
        validated(mutate(paper, change))


def test_duplicate_table_name_names_the_second_table(paper):
    change = lambda c: c["tables"].append(dict(c["tables"][3]))  # noqa: E731
    with pytest.raises(ConfigError, match=rf"tables\[{len(paper['tables'])}\]\.name: duplicate table name 'table4'"):
        validated(mutate(paper, change))


def test_metric_the_experiment_never_writes_names_the_metric(paper):
    change = lambda c: c["tables"][5]["metrics"].append("top1_imagenet_v2")  # noqa: E731
    with pytest.raises(ConfigError, match=r"tables\[5\]\.metrics\[3\]: classify runs do not write "
                                          r"'top1_imagenet_v2' \(did you mean 'top1_imagenet_val'\?\)"):
        validated(mutate(paper, change))


def test_every_paper_table_asks_only_for_metrics_its_experiment_writes(paper):
    config = validated(paper)
    for table in config["tables"]:
        assert set(table["metrics"]) <= set(table_metrics(config, table["experiment"])), table["name"]


@pytest.mark.parametrize("run", ["..", ".", "/tmp/elsewhere", "a/../../b"])
def test_run_name_that_would_escape_results_is_refused(paper, run):
    with pytest.raises(ConfigError, match=r"^run: .* is not a directory name under results/"):
        validated(mutate(paper, lambda c: c.update(run=run)))


def test_watermark_is_refused_at_config_time(paper):
    with pytest.raises(ConfigError, match="generation.watermark: true is not supported"):
        validated(mutate(paper, lambda c: c["generation"].update(watermark=True)))


def test_safety_checker_with_tiny_models_is_refused_at_config_time():
    smoke = cfg.load(SMOKE_CONFIG)
    smoke["generation"]["safety_checker"] = True
    with pytest.raises(ConfigError, match="generation.safety_checker: true, but models.build_tiny"):
        cfg.check(smoke)


def check_config_error(*overlays):
    return check_config_error_in(None, *overlays)


def check_config_error_in(directory, *overlays):
    result = cli("check-config", *overlays, check=False, cwd=directory)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_check_config_names_file_and_line_of_a_yaml_error(tmp_path):
    overlay = tmp_path / "site.yaml"
    overlay.write_text("generation:\n  steps: 20\n  height: [32\nseed: 1\n")
    message = check_config_error(overlay)
    assert message.startswith(f"error: config file '{overlay}': YAML syntax error at line 4, column ")


def test_check_config_names_a_missing_overlay(tmp_path):
    assert check_config_error(SMOKE_CONFIG, tmp_path / "no-such.yaml") == (
        f"error: config file '{tmp_path / 'no-such.yaml'}' does not exist"
    )


def test_empty_overlay_changes_nothing(tmp_path):
    overlay = tmp_path / "empty.yaml"
    overlay.write_text("# nothing here yet\n")
    assert cfg.load(SMOKE_CONFIG, overlay) == cfg.load(SMOKE_CONFIG)


def test_check_config_names_an_overlay_that_is_not_a_mapping(tmp_path):
    overlay = tmp_path / "list.yaml"
    overlay.write_text("- run: smoke\n")
    assert check_config_error(overlay) == f"error: config file '{overlay}': must be a mapping of config keys, not a list"


@pytest.mark.workflow
def test_typo_in_an_overlay_stops_snakemake_with_the_check_config_message(tmp_path):
    overlay = write_yaml(tmp_path / "typo.yaml", {"generation": {"stpes": 20}})
    message = check_config_error(SMOKE_CONFIG, overlay).removeprefix("error: ")
    assert message == "config key generation.stpes: unknown key (did you mean 'steps'?)"
    result = snakemake("-n", "--configfile", SMOKE_CONFIG, overlay, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert f"error: {message}" in result.stderr.splitlines()
    assert 'File "' not in result.stdout + result.stderr  # no stack of the exception
    assert not (tmp_path / "results").exists()


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
    assert "subsample" not in job and job["seed"] == 0 and job["unit"] == "image" and job["match"] == "source"
    everything = validated(mutate(paper, lambda c: c["sources"]["webvision"].update(train_subset=None)))
    assert "subsample" not in cfg.mixture_job_spec(everything, "in_wv_20")


# ---- job settings: params carry what differs from the schema defaults --------------------------


def received_settings(verb, option, sent, runtime):
    """The settings the command ``verb`` works with when its rule passes ``sent`` as ``option``
    and ``runtime`` as --runtime (None: a command without run-time keys, whose ``option`` type
    reads it alone), parsed by its own argument parser."""
    import json

    from contamination.__main__ import build_parser

    subparsers = next(action for action in build_parser()._actions if action.dest == "verb")
    parser = subparsers.choices[verb]
    if runtime is None:
        return parser._option_string_actions[option].type(json.dumps(sent))
    arguments = [option, json.dumps(sent), "--runtime", json.dumps(runtime)]
    for action in parser._actions:  # the command's other required arguments, as dummies
        if action.required and action.option_strings and action.option_strings[0] != option:
            arguments += [action.option_strings[0], "0"]
    return getattr(parser.parse_args(arguments), option.lstrip("-"))


def settings_cases(config):
    """(verb, option, the JSON a rule passes, its --runtime JSON or None, the settings the command
    must see) for every settings JSON of workflow/rules/common.smk, built the way its functions
    build them."""
    from contamination.experiments import classify
    from contamination.experiments import iddpm
    from contamination.experiments import mae
    from contamination.experiments import recursion
    from contamination.metrics import spectra

    seed = {"seed": config["seed"]}
    cases = [
        ("generate", "--settings", cfg.job_settings("generation", config["generation"]),
         cfg.runtime_settings("generation", config["generation"]), config["generation"]),
        ("caption", "--settings", cfg.job_settings("captioning", config["captioning"]),
         cfg.runtime_settings("captioning", config["captioning"]), config["captioning"]),
        ("synthetic", "--spec", dict(cfg.job_settings("synthetic", config["synthetic"]), **seed), None,
         dict(config["synthetic"], **seed)),
        ("detect", "--spec", dict(cfg.job_settings("detection", config["detection"]), generated="sd_imagenet", **seed),
         cfg.runtime_settings("detection", config["detection"]), dict(config["detection"], generated="sd_imagenet", **seed)),
    ]
    for verb, section, keys in (("spectra", "spectra", spectra.SPEC_KEYS), ("mae-pretrain", "mae", mae.PRETRAIN_SPEC_KEYS),
                                ("mae-linear-probe", "mae", mae.PROBE_SPEC_KEYS),
                                ("iddpm-train", "iddpm", iddpm.TRAIN_SPEC_KEYS),
                                ("iddpm-sample", "iddpm", iddpm.SAMPLE_SPEC_KEYS)):
        settings = dict(config[section], **seed)
        runtime = cfg.runtime_settings(section, settings, keys) if section in cfg.RUNTIME_KEYS else None
        cases.append((verb, "--spec", dict(cfg.job_settings(section, settings, keys), **seed), runtime,
                      {key: settings[key] for key in keys} | seed))
    sampling = dict(recursion.sample_settings(config), **seed)
    cases.append(("iddpm-sample", "--spec", dict(cfg.job_settings("iddpm", sampling, iddpm.SAMPLE_SPEC_KEYS), **seed),
                  cfg.runtime_settings("iddpm", sampling, iddpm.SAMPLE_SPEC_KEYS),
                  {key: sampling[key] for key in iddpm.SAMPLE_SPEC_KEYS} | seed))
    generation = {"policy": "replace", "generation": 2, **seed}
    cases.append(("recursion-mixture", "--spec",
                  dict(cfg.job_settings("recursion", config["recursion"], recursion.POLICY_KEYS["replace"]), **generation),
                  None, {key: config["recursion"][key] for key in recursion.MIXTURE_KEYS} | generation))
    for model, recipe in config["classification"]["models"].items():
        extra = {"model": model, "num_classes": 4, **seed}
        cases.append(("train-classifier", "--spec",
                      dict(cfg.job_settings("classification", config["classification"], classify.SPEC_KEYS),
                           recipe=cfg.job_settings("classification.models.*", recipe), **extra),
                      cfg.runtime_settings("classification", config["classification"], classify.SPEC_KEYS),
                      {key: config["classification"][key] for key in classify.SPEC_KEYS} | {"recipe": recipe} | extra))
    for mixture in config["mixtures"]:
        cases.append(("mixture", "--spec", dict(cfg.job_settings("mixtures[]", mixture), **seed), None, dict(mixture, **seed)))
    for spec in config["generated"]:
        prompts = {"complex_prompts": config["complex_prompts"], "size": 10, **seed}
        cases.append(("prompts", "--spec", dict(cfg.job_settings("generated[]", spec), **prompts), None,
                      dict(spec, **prompts)))
    for table in config["tables"]:
        for verb in ("table", "table-report"):
            cases.append((verb, "--spec", cfg.job_settings("tables[]", table), None, table))
    cases.append(("table-report", "--mixtures", [cfg.job_settings("mixtures[]", m) for m in config["mixtures"]], None,
                  config["mixtures"]))
    cases.append(("run-config", "--config", cfg.job_settings("", config), None, config))
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
    for verb, option, sent, runtime, expected in cases:
        received = received_settings(verb, option, sent, runtime)
        assert canonical(received) == canonical(expected), (verb, option)
        # in the order the full JSON had them (sorted): commands that write settings out keep their output
        assert json.dumps(received) == canonical(expected), (verb, option)


def test_runtime_keys_travel_apart_from_the_compared_settings():
    """In the smoke config some run-time keys are away from their defaults (no loader workers,
    print every step, checkpoints not kept): the compared settings JSON has none of them, --runtime has them, and
    --runtime refuses a key that shapes outputs."""
    from contamination.experiments import classify

    smoke = cfg.load(SMOKE_CONFIG)
    runtime_sections = {"generate": "generation", "caption": "captioning", "detect": "detection", "mae-pretrain": "mae",
                        "mae-linear-probe": "mae", "iddpm-train": "iddpm", "iddpm-sample": "iddpm",
                        "train-classifier": "classification"}
    for verb, option, sent, runtime, expected in settings_cases(smoke):
        if verb in runtime_sections:
            keys = set(cfg.RUNTIME_KEYS[runtime_sections[verb]])
            assert not set(sent) & keys and set(runtime) <= keys, (verb, sent, runtime)
    classification = cfg.runtime_settings("classification", smoke["classification"], classify.SPEC_KEYS)
    assert classification == {"num_workers": 0, "print_freq": 1, "keep_checkpoint": False}
    spec = {"model": "resnet50", "recipe": {}, "num_classes": 4, "seed": 0}
    with pytest.raises(SystemExit):
        received_settings("train-classifier", "--spec", spec, {"num_workers": 0, "recipe": {"lr": 1.0}})
    # the workflow passes --runtime after the settings; the order does not matter
    received = received_settings("train-classifier", "--spec", spec, {"num_workers": 3})
    assert received["num_workers"] == 3 and received["print_freq"] == 10


def test_checkpoint_fingerprints_leave_out_runtime_keys(tmp_path):
    """A resumed run with another num_workers, device, log cadence or eval batch resumes: no
    run-time key reaches a checkpoint fingerprint, while a key that shapes the weights does."""
    from contamination.experiments import caption
    from contamination.experiments import classify
    from contamination.experiments import iddpm
    from contamination import records
    from contamination.experiments import mae

    paper = cfg.load()
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"rows")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"weights")
    seed = {"seed": 0}
    identities = {
        "classification": lambda s: classify.run_identity(s, manifest),
        "iddpm": lambda s: iddpm.run_identity(s, manifest),
        "mae": lambda s: mae.pretrain_identity(s, manifest) | mae.probe_identity(s, tmp_path / "model", manifest),
        "captioning": lambda s: caption.run_identity(s, manifest, tmp_path / "model", 0, manifest),
    }
    settings = {
        "classification": dict(paper["classification"], model="resnet50", recipe={"lr": 0.1}, num_classes=4, **seed),
        "iddpm": dict(paper["iddpm"], **seed),
        "mae": dict(paper["mae"], num_classes=4, **seed),
        "captioning": paper["captioning"],
    }
    shaping = {"classification": ("recipe", {"lr": 0.2}), "iddpm": ("lr", 0.5), "mae": ("pretrain", {"epochs": 1}),
               "captioning": ("lr", 0.5)}
    for section, identity in identities.items():
        original = records.sha256_of_json(identity(settings[section]))
        for key in cfg.RUNTIME_KEYS[section]:
            value = settings[section][key]
            changed = {"auto": "cpu", True: False, False: True}.get(value, value + 1 if isinstance(value, int) else value)
            assert changed != value
            assert records.sha256_of_json(identity(dict(settings[section], **{key: changed}))) == original, (section, key)
        key, value = shaping[section]
        assert records.sha256_of_json(identity(dict(settings[section], **{key: value}))) != original, section


def test_job_settings_leave_out_every_default_value(paper):
    """With every defaulted section left to its defaults, the settings JSON of every job carries
    only what the rule adds; a value set to something else is kept, with its JSON type."""
    config = copy.deepcopy(paper)
    defaulted = ("generation", "captioning", "synthetic", "detection", "spectra", "mae", "iddpm", "recursion")
    for section in defaulted:
        config.pop(section, None)
    config["classification"] = {"models": {model: {} for model in paper["classification"]["models"]}}
    config = validated(config)
    for verb, option, sent, runtime, expected in settings_cases(config):
        if verb == "train-classifier":
            assert sent["recipe"] == {} and set(sent) == {"recipe", "model", "num_classes", "seed"}, verb
        elif verb == "mixture" or option == "--mixtures":
            for mixture in sent if option == "--mixtures" else [sent]:
                assert mixture.get("match") != "label" and mixture.get("with_replacement") is not False, mixture
        elif verb == "run-config":
            assert not set(sent) & set(defaulted) and "seed" not in sent
            assert all("match" not in m or m["match"] != "label" for m in sent["mixtures"])
        elif verb == "recursion-mixture":
            assert set(sent) <= {"seed", "policy", "generation"}, sent
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


@pytest.mark.parametrize("key", ["sources.imagenet.root", "sources.coco.karpathy_json", "models.blip",
                                 "classification.figure3.superclasses", "captioning.spice_corenlp_dir"])
@pytest.mark.parametrize("where", ["results/paper/synthetic/imagenet", "results/paper", "results"])
def test_a_configured_path_overlapping_the_run_results_is_refused(paper, key, where):
    config = copy.deepcopy(paper)
    *sections, last = key.split(".")
    settings = config
    for section in sections:
        settings = settings.setdefault(section, {})
    settings[last] = where
    with pytest.raises(ConfigError, match=rf"^{key}: '{where}' overlaps this run's results directory"):
        validated(config)
    settings[last] = "results-elsewhere/paper"  # a neighbour of results/ is fine
    validated(config)


def test_check_config_and_snakemake_warn_when_stand_ins_replace_the_configured_paths(tmp_path):
    site = paper_config_with_empty_roots(tmp_path)
    assert "warning" not in cli("check-config", site).stdout
    stand_ins = write_yaml(tmp_path / "stand_ins.yaml", {"synthetic": {"enabled": True}})
    warning = cli("check-config", site, stand_ins).stdout.splitlines()[-1]
    assert warning == "warning: run 'paper' uses synthetic datasets (the sources.* paths are not read), written under results/paper/"
    stand_ins = write_yaml(tmp_path / "stand_ins.yaml", {"synthetic": {"enabled": True}, "models": {"build_tiny": True}})
    dry_run = snakemake("-n", "results/paper/config.yaml", "--configfile", site, stand_ins, cwd=tmp_path)
    assert "and tiny random models (the models.* paths are not read)" in dry_run.stdout + dry_run.stderr


def test_check_config_finds_a_missing_path_as_the_dry_run_does(tmp_path):
    site = paper_config_with_empty_roots(tmp_path)
    assert cli("check-config", site, cwd=tmp_path).stdout.startswith("config ok: run 'paper', ")
    missing = write_yaml(tmp_path / "missing.yaml", {"sources": {"webvision": {"root": str(tmp_path / "no-webvision")}}})
    message = check_config_error_in(tmp_path, site, missing)
    assert message == f"error: sources.webvision.root: '{tmp_path / 'no-webvision'}' does not exist"
    dry_run = snakemake("-n", "--configfile", site, missing, cwd=tmp_path, check=False)
    assert dry_run.returncode != 0 and message.removeprefix("error: ") in dry_run.stdout + dry_run.stderr
