"""The `recursion` target: the paper config's dry run shows the chain of generations in seconds and
the planner prices every job of it; forcing one generation re-runs it and the generations after
it, not the ones before; the smoke run builds the table, its page and a plot per policy, with
each generation trained on the sizes and origins its policy defines."""

import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from contamination import config as cfg
from contamination.dag import Job
from contamination.experiments import recursion
from contamination.io import read_json
from contamination.reporting import plan
from helpers import SMOKE_CONFIG, copy_checkout, paper_config_with_empty_roots, snakemake, write_yaml

pytestmark = pytest.mark.workflow

JOB = re.compile(r"^(?:local)?rule (\w+):$")


def dry_run_jobs(output: str) -> list:
    """[(rule, {wildcard: value}, [outputs])] of a dry run's job listing."""
    jobs = []
    for line in output.splitlines():
        match = JOB.match(line)
        if match:
            jobs.append((match.group(1), {}, []))
        elif jobs and line.startswith("    wildcards: "):
            jobs[-1][1].update(part.split("=", 1) for part in line.removeprefix("    wildcards: ").split(", "))
        elif jobs and line.startswith("    output: "):
            jobs[-1][2].extend(line.removeprefix("    output: ").split(", "))
    return jobs


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """(directory, overlay, config, jobs of the paper config's dry run of `recursion`)."""
    directory = tmp_path_factory.mktemp("paper")
    site = yaml.safe_load(paper_config_with_empty_roots(directory).read_text())
    # The paper config runs no recursion (it is beyond the paper): a site turns it on.
    overlay = write_yaml(directory / "recursion.yaml", dict(site, recursion={"generations": 3}))
    output = snakemake("-n", "--forceall", "recursion", "--configfile", overlay, cwd=directory).stdout
    return directory, overlay, cfg.load(overlay), dry_run_jobs(output)


def test_the_paper_dry_run_shows_every_generation(paper):
    _, _, config, jobs = paper
    settings = config["recursion"]
    trained = {(wildcards["policy"], int(wildcards["generation"])) for rule, wildcards, _ in jobs if rule == "recursion_train"}
    assert trained == {(policy, generation) for policy in settings["policies"]
                       for generation in range(1, settings["generations"] + 1)}
    scored = {(wildcards["policy"], int(wildcards["generation"])) for rule, wildcards, _ in jobs if rule == "recursion_fidelity"}
    assert scored == trained | {("real", 0)}
    assert [wildcards["mixture"] for rule, wildcards, _ in jobs if rule == "iddpm_train"] == [settings["base"]]


def test_the_plan_prices_every_job_of_the_recursion(paper):
    _, _, config, jobs = paper
    costs = plan.Costs(config, plan.read_profile(plan.DEFAULT_PROFILE))
    per_generation = {}
    for rule, wildcards, _ in jobs:
        hours, note = costs.gpu_hours(Job.of(rule, **wildcards))
        assert math.isfinite(hours) and note == "", (rule, wildcards, note)
        assert (hours > 0) == (costs.gpus(rule) > 0), rule
        if rule.startswith("recursion_") and "generation" in wildcards:
            key = (wildcards["policy"], int(wildcards["generation"]))
            per_generation[key] = per_generation.get(key, 0.0) + hours
    # every later generation trains, samples and scores the same: the same GPU-hours
    later = {key: hours for key, hours in per_generation.items() if key[1] > 0}
    assert len(set(round(hours, 6) for hours in later.values())) == 1
    assert per_generation[("real", 0)] < min(later.values())  # generation 0's training is the iddpm run's
    sizes = [costs.storage_bytes(Job.of("recursion_mixture", policy="accumulate", generation=str(generation))) for generation in (1, 2, 3)]
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.fixture(scope="module")
def paper_done(paper):
    """The paper run's recursion with every output present and up to date (empty files, touched
    in DAG order), so a dry run shows what a forced generation re-runs."""
    directory, overlay, _, jobs = paper
    for _, _, outputs in jobs:
        for output in outputs:
            path = directory / output
            if path.name == "model":
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    snakemake("--touch", "--cores", "1", "recursion", "--configfile", overlay, cwd=directory)
    assert "Nothing to be done" in snakemake("-n", "recursion", "--configfile", overlay, cwd=directory).stdout
    return directory, overlay


@pytest.mark.parametrize("policy", ["replace", "accumulate"])
def test_forcing_generation_2_reruns_it_and_the_later_generations_only(paper, paper_done, policy):
    directory, overlay = paper_done
    config = paper[2]
    mixture = f"results/paper/recursion/iddpm/{policy}/generation-2/mixture.npy"
    output = snakemake("-n", "recursion", "--configfile", overlay, "--forcerun", mixture, cwd=directory).stdout
    rerun = {(rule, tuple(sorted(wildcards.items()))) for rule, wildcards, _ in dry_run_jobs(output)}
    shards = [f"{shard:05d}" for shard in range(recursion.sample_shard_count(config))]
    expected = {("recursion_table", ()), ("recursion_report", ()), ("recursion", ())}
    expected |= {("recursion_plot", (("policy", name),)) for name in config["recursion"]["policies"]}
    for generation in range(2, config["recursion"]["generations"] + 1):
        wildcards = (("generation", str(generation)), ("policy", policy))
        expected |= {(rule, wildcards) for rule in ("recursion_mixture", "recursion_train", "recursion_sample_features",
                                                    "recursion_fidelity")}
        expected |= {("recursion_sample", (("generation", str(generation)), ("policy", policy), ("shard", shard)))
                     for shard in shards}
    assert rerun == expected


# ---- the smoke run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    directory = copy_checkout(tmp_path_factory.mktemp("recursion"))
    arguments = ("recursion", "--configfile", directory / "config" / "smoke.yaml")
    snakemake("--cores", "2", *arguments, cwd=directory, snakefile=directory / "Snakefile")
    return directory, cfg.load(SMOKE_CONFIG), arguments


def test_smoke_run_builds_the_table_its_page_and_a_plot_per_policy(smoke_run):
    directory, config, _ = smoke_run
    settings = config["recursion"]
    table = pd.read_csv(directory / "results/smoke/tables/recursion.csv")
    generations = settings["generations"] + 1
    metrics = len(config["iddpm"]["references"]) * 3 + len(recursion.COMPOSITION_METRICS)
    assert len(table) == len(settings["policies"]) * generations * metrics
    assert (table["status"] == "ok").all() and table["measured"].notna().all()
    for policy in settings["policies"]:
        assert (directory / f"results/smoke/figures/recursion-{policy}.png").read_bytes()[:4] == b"\x89PNG"
    page = (directory / "results/smoke/report/tables/recursion.html").read_text()
    assert page.count("<img") == len(settings["policies"])


def test_smoke_generations_train_on_the_sizes_and_origins_of_their_policy(smoke_run):
    directory, config, _ = smoke_run
    settings = config["recursion"]
    real = len(np.load(directory / "results/smoke/images/imagenet_20-16px.npy", mmap_mode="r"))
    for policy in settings["policies"]:
        for generation in range(1, settings["generations"] + 1):
            run = directory / "results/smoke/recursion/iddpm" / policy / f"generation-{generation}"
            summary = read_json(run / "mixture.json")
            samples = {j: settings["sample_count"] for j in recursion.source_generations(policy, generation)}
            expected = recursion.generation_rows(policy, generation, real, samples, settings["real_fraction"], config["seed"])
            assert summary["counts"] == {origin: len(rows) for origin, rows in expected.items()}
            origins = pd.read_parquet(run / "mixture.parquet")
            assert len(np.load(run / "mixture.npy", mmap_mode="r")) == len(origins) == summary["total"]
            assert read_json(run / "training.json")["status"] == "ok"


def test_a_second_smoke_run_has_nothing_to_do(smoke_run):
    directory, _, arguments = smoke_run
    output = snakemake("-n", *arguments, cwd=directory, snakefile=directory / "Snakefile").stdout
    assert "Nothing to be done" in output
