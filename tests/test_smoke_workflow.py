"""The smoke workflow for real, from nothing: synthetic sources in the real layouts, indexes,
prompts, tiny Stable Diffusion, generation shards, every mixture of the paper, one training
cell and the compute plan, in a fresh copy of the checkout whose path (and so the results path)
holds a space and a non-ASCII letter. (The experiments' own targets run in their test files.)"""

import json

import pandas as pd
import pytest

from contamination import config as cfg
from helpers import SMOKE_CONFIG, copy_checkout, snakemake

pytestmark = pytest.mark.workflow

TRAINING_CELL = "results/smoke/classify/resnet50/imagenet/metrics.json"
PLAN = "results/smoke/plan.csv"


def smoke_targets(config) -> list:
    return [f"results/smoke/mixtures/{mixture['name']}.parquet" for mixture in config["mixtures"]] + [TRAINING_CELL, PLAN]


def run_in_checkout(checkout, *arguments):
    return snakemake(*arguments, "--configfile", checkout / "config" / "smoke.yaml", cwd=checkout,
                     snakefile=checkout / "Snakefile")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    directory = copy_checkout(tmp_path_factory.mktemp("smoke") / "check out é")
    config = cfg.load(SMOKE_CONFIG)
    run_in_checkout(directory, "--cores", "2", *smoke_targets(config))
    return directory, config


def test_generated_datasets_have_every_planned_image(smoke_run):
    directory, config = smoke_run
    for spec in config["generated"]:
        index = pd.read_parquet(directory / "results/smoke/generated" / spec["name"] / "index.parquet")
        assert len(index) == cfg.generated_size(config, spec["name"])
        assert index["id"].is_unique and index["uri"].str.startswith("zip://").all()
        shards = sorted((directory / "results/smoke/generated" / spec["name"]).glob("shard-*.zip"))
        assert len(shards) == cfg.shard_count(config, spec["name"])


def test_every_paper_mixture_is_built_with_its_summary(smoke_run):
    directory, config = smoke_run
    for mixture in config["mixtures"]:
        manifest = pd.read_parquet(directory / f"results/smoke/mixtures/{mixture['name']}.parquet")
        summary = json.loads((directory / f"results/smoke/mixtures/{mixture['name']}.json").read_text())
        assert len(manifest) == summary["total"] > 0
        assert manifest["id"].is_unique
        assert sum(summary["counts"].values()) == len(manifest)


def test_contaminated_imagenet_mixture_keeps_the_class_histogram(smoke_run):
    directory, _ = smoke_run
    real = pd.read_parquet(directory / "results/smoke/mixtures/imagenet.parquet")
    mixed = pd.read_parquet(directory / "results/smoke/mixtures/in_sd_40.parquet")
    assert real["label"].value_counts().equals(mixed["label"].value_counts())
    assert set(mixed["origin"]) == {"imagenet", "sd_imagenet"}


def test_resnet50_on_the_all_real_smoke_set_beats_chance_clearly(smoke_run):
    directory, config = smoke_run
    metrics = json.loads((directory / TRAINING_CELL).read_text())
    chance = 100 / config["sources"]["imagenet"]["num_classes"]
    assert metrics["status"] == "ok"
    assert metrics["metrics"]["top1_imagenet_val"] >= 2 * chance


def test_the_plan_is_made_from_the_checkouts_profile(smoke_run):
    directory, _ = smoke_run
    plan = pd.read_csv(directory / PLAN)
    assert {"all", "table1"} <= set(plan["scope"]) and (plan["jobs"] > 0).all()


def test_a_second_run_has_nothing_to_do(smoke_run):
    directory, config = smoke_run
    result = run_in_checkout(directory, "-n", *smoke_targets(config))
    assert "Nothing to be done" in result.stdout + result.stderr
