"""The DAG is static: a dry run needs no data and schedules what the config says."""

import math
import sys
import subprocess

import pytest
import yaml

from contamination import config as cfg
from helpers import PROJECT, SMOKE_CONFIG, job_counts, paper_config_with_empty_roots, snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("paper")
    overlay = paper_config_with_empty_roots(directory)
    result = snakemake("-n", "--configfile", overlay, cwd=directory)
    return cfg.load(overlay), result.stdout


def test_paper_dry_run_schedules_every_generation_shard(paper_dry_run):
    config, output = paper_dry_run
    counts = job_counts(output)
    shard_size = config["generation"]["shard_size"]
    expected = (
        math.ceil(1400 * 1000 / shard_size)  # SD-ImageNet: 1,400 images for each of 1,000 classes
        + math.ceil(1400 * 1000 / shard_size)  # complex SD-ImageNet
        + math.ceil(113287 * 5 / shard_size)  # SD-COCO: one image per training caption
    )
    assert counts["generate_shard"] == expected == 3367
    assert counts["prompts"] == counts["merge_generated"] == 3


def test_paper_dry_run_builds_every_mixture_once(paper_dry_run):
    config, output = paper_dry_run
    assert job_counts(output)["mixture"] == len(config["mixtures"]) == 27


def test_paper_dry_run_indexes_each_training_source(paper_dry_run):
    _, output = paper_dry_run
    counts = job_counts(output)
    assert counts["imagenet_classes"] == 1
    assert counts["index_source"] >= 4
    assert "synthetic_sources" not in counts and "tiny_sd" not in counts


def test_smoke_dry_run_builds_tiny_models_and_synthetic_data(tmp_path):
    counts = job_counts(snakemake("-n", "--configfile", SMOKE_CONFIG, cwd=tmp_path).stdout)
    assert counts["synthetic_sources"] == 1 and counts["tiny_sd"] == 1
    smoke = cfg.load(SMOKE_CONFIG)
    assert counts["generate_shard"] == sum(cfg.shard_count(smoke, g["name"]) for g in smoke["generated"])
    # format_control: SD-ImageNet re-stored shard by shard; every generated dataset gets a card.
    assert counts["format_match_shard"] == cfg.shard_count(smoke, "sd_imagenet") and counts["format_profile"] == 1
    assert counts["merge_generated"] == counts["generated_card"] == len(cfg.generated_names(smoke))


def test_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--configfile", "config/smoke.yaml"],
        cwd=PROJECT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_reduced_jpeg_decode_reaches_the_jobs_that_decode_images(tmp_path):
    overlay = tmp_path / "reduced.yaml"
    overlay.write_text(yaml.safe_dump({"image_sets": {"reduced_jpeg_decode": True}}))
    commands = {}
    for name, configs in (("default", [SMOKE_CONFIG]), ("reduced", [SMOKE_CONFIG, overlay])):
        output = snakemake("-n", "-p", "--configfile", *configs, cwd=tmp_path).stdout
        commands[name] = [line for line in output.splitlines() if "python -m contamination" in line]
    decoding = [line for line in commands["reduced"] if decodes_images(line)]
    assert len(decoding) > 5 and all("--reduced-jpeg-decode" in line for line in decoding)
    assert sum("--reduced-jpeg-decode" in line for line in commands["reduced"]) == len(decoding)
    assert not any("--reduced-jpeg-decode" in line for line in commands["default"])


def decodes_images(command: str) -> bool:
    """An image-cache or image-array job, or a features job over a manifest or an index (not over
    sample arrays)."""
    return " image-cache " in command or " image-array " in command or (" features " in command and ("--manifest" in command or "--index" in command))


def test_subset_sizes_reach_the_mixture_and_table4_jobs(tmp_path):
    import json

    smoke = cfg.load(SMOKE_CONFIG)
    output = snakemake("-n", "-p", "--configfile", SMOKE_CONFIG, cwd=tmp_path).stdout
    commands = [line for line in output.splitlines() if "python -m contamination" in line]
    specs = {}
    for line in commands:
        if " mixture --spec " in line:
            spec = json.loads(line.split("--spec ", 1)[1].split("' ", 1)[0].strip("'"))
            specs[spec["name"]] = spec
    assert specs["in_wv_20"]["subsample"] == specs["webvision"]["subsample"] == {"webvision": 32}
    # Defaults are left out of params (cfg.job_settings): the command restores them.
    assert "subsample" not in specs["co_sd_20"] and cfg.with_defaults("mixtures[]", specs["co_sd_20"])["unit"] == "image"
    # Table 4's runs (the generator comparison's and the format control's fidelity runs come on top)
    table4_mixtures = {row["mixture"] for row in smoke["tables"][3]["rows"]}
    table4 = [line for line in commands if " fidelity --kind dataset " in line
              and line.split("--generated ", 1)[1].split()[0].strip("'").split("/")[-3:-1] == ["inception", "mixtures"]
              and any(f"/mixtures/{mixture}-" in line.split("--generated ", 1)[1].split()[0] for mixture in table4_mixtures)]
    assert smoke["tables"][3]["name"] == "table4" and len(table4) == len(table4_mixtures) == 3
    assert all("--sample-size 48 --seed 0" in line for line in table4)
    assert not any("--sample-size" in line for line in commands if " fidelity --kind samples " in line)


def shell_commands(smk_text: str) -> list:
    """The string literals of every `shell:` block of a rule file."""
    import re

    blocks = re.findall(r"^( +)shell:\n((?:\1 +.*\n?)+)", smk_text, flags=re.M)
    return [literal for _, block in blocks for literal in re.findall(r'"((?:[^"\\]|\\.)*)"', block)]


def test_every_shell_placeholder_is_quoted_or_a_prequoted_argument_list():
    """A path or config string reaches the shell quoted ({x:q}); only params named `launcher`
    or `*arguments` stand bare, holding arguments their function quoted with shlex."""
    import re

    from helpers import PROJECT

    bare = []
    for rule_file in sorted((PROJECT / "workflow" / "rules").glob("*.smk")):
        commands = shell_commands(rule_file.read_text())
        assert commands or rule_file.name == "common.smk", f"{rule_file.name}: no shell command found"
        for command in commands:
            for placeholder in re.findall(r"\{([a-z_.]+)\}", command):
                if placeholder not in ("threads", "params.launcher") and not placeholder.endswith("arguments"):
                    bare.append(f"{rule_file.name}: {{{placeholder}}}")
    assert not bare, "unquoted shell placeholders: " + ", ".join(bare)
