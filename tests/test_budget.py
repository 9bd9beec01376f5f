"""The budget tier (config/budget.yaml): ImageNet-100, ResNet-50 only, fp16 generation; its plan
fits one 8-GPU node-day at the planner's throughputs, its DAG is the paper's with fewer jobs, and
its tables are named and labelled like the paper's."""

import contextlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from contamination import config as cfg
from contamination.dag import Job, closure
from contamination.reporting import plan
from contamination.smoke.synthetic import synthetic_wnids
from helpers import BUDGET_CONFIG, SMOKE_BUDGET_CONFIG, SMOKE_CONFIG, budget_overlays, job_counts, snakemake

NODE_DAY_GPU_HOURS = 8 * 24
PAPER = cfg.load()


@pytest.fixture(scope="module")
def budget(tmp_path_factory):
    directory = tmp_path_factory.mktemp("budget")
    overlays = budget_overlays(directory)
    return directory, overlays, cfg.load(*overlays)


def test_the_budget_plan_fits_one_8_gpu_node_day_with_every_gpu_rule_estimated(budget):
    directory, _, config = budget
    with contextlib.chdir(directory):  # Snakemake's bookkeeping folder there, not in the checkout
        dag = plan.workflow_jobs(config)
    frame = plan.build_plan(config, plan.read_profile(plan.DEFAULT_PROFILE), dag)
    everything = frame[frame["scope"] == "all"]
    total = everything[everything["rule"] == "*"].iloc[0]
    assert total["gpu_hours"] <= NODE_DAY_GPU_HOURS
    assert not everything["gpu_hours"].isna().any() and (everything["note"] == "").all()
    assert (everything.loc[everything["gpus_per_job"] > 0, "gpu_hours"] > 0).all()
    by_rule = everything.set_index("rule")
    # what the total is made of: 135,000 fp16 images and 15 ResNet-50 runs of 200 epochs
    assert by_rule.loc["generate_shard", "gpu_hours"] == pytest.approx(135_000 / 1.2 / 3600)
    assert by_rule.loc["train_classifier", "jobs"] == 15
    assert 0.5 < by_rule.loc["train_classifier", "gpu_hours"] / total["gpu_hours"] < 0.8


def test_the_budget_tier_is_imagenet_100_with_resnet_50_and_fp16_generation(budget):
    _, _, config = budget
    assert config["tier"] == "budget" and config["run"] == "budget"
    assert cfg.class_count(config) == 100 and config["sources"]["imagenet"]["num_classes"] == 1000
    assert {model for table in config["tables"] if table["experiment"] == "classify" for model in table["models"]} \
        == {"resnet50"}
    generation = config["generation"]
    assert (generation["dtype"], generation["matmul_precision"], generation["channels_last"], generation["compile"]) \
        == ("float16", "high", True, True)
    assert cfg.generated_size(config, "sd_imagenet") == 130_000
    # Table 4 compares sets of ImageNet-100 val's size, as the paper config compares ImageNet val's
    assert config["fidelity"]["dataset_sample_size"] == config["planning"]["dataset_sizes"]["imagenet"]["val"]
    assert config["sources"]["webvision"]["train_subset"] == config["planning"]["dataset_sizes"]["imagenet"]["train"]


def test_budget_tables_are_named_and_labelled_like_the_papers(budget):
    _, _, config = budget
    paper_tables = {table["name"]: table for table in PAPER["tables"]}
    assert [table["name"] for table in config["tables"]] == ["table1", "table4", "table6", "table7", "table8",
                                                            "detection"]
    for table in config["tables"]:
        paper = paper_tables[table["name"]]
        assert (table["reported_table"], table["experiment"], table["metrics"], table["rows"]) == \
            (paper["reported_table"], paper["experiment"], paper["metrics"], paper["rows"]), table["name"]
        assert set(table["models"]) <= set(paper["models"])


@pytest.mark.workflow
def test_the_budget_dry_run_completes_with_100_classes_in_every_job_that_needs_them(budget):
    directory, overlays, config = budget
    result = snakemake("-n", "-p", "--configfile", *overlays, cwd=directory)
    counts = job_counts(result.stdout)
    with contextlib.chdir(directory):
        dag = plan.workflow_jobs(config)
    expected = plan.job_counts(closure(dag, [Job("all")]))
    assert counts.pop("total") == sum(expected.values()) and counts == expected
    assert counts["train_classifier"] == 15 and counts["generate_shard"] == 27
    commands = [line for line in result.stdout.splitlines() if "python -m contamination" in line]
    classes = next(line for line in commands if "contamination classes " in line)
    subset = json.loads(re.search(r"--subset '(\[.*?\])'", classes).group(1))
    assert subset == cfg.class_subset(config) and len(subset) == 100
    indexes = [line for line in commands if " index " in line]
    assert len(indexes) == 4 and all("--class-subset" in line for line in indexes)
    for line in commands:
        if "train-classifier" in line:
            assert '"num_classes":100' in line
        if "contamination table " in line:
            assert '"tier":"budget"' in line


# ---- the budget tier in miniature (config/smoke-budget.yaml) ---------------------------------

SMOKE_BUDGET = "results/smoke-budget"
TRAINING_CELL = f"{SMOKE_BUDGET}/classify/resnet50/imagenet"


@pytest.fixture(scope="module")
def smoke_budget_run(tmp_path_factory):
    """Every mixture of the budget tier at smoke size, from synthetic sources through generation,
    and the ResNet-50 cell of Table 6's clean row, which scores ImageNet-A and -R."""
    directory = tmp_path_factory.mktemp("smoke-budget")
    overlays = [BUDGET_CONFIG, SMOKE_CONFIG, SMOKE_BUDGET_CONFIG]
    config = cfg.load(*overlays)
    targets = [f"{SMOKE_BUDGET}/mixtures/{mixture['name']}.parquet" for mixture in config["mixtures"]]
    snakemake("--cores", "2", *targets, f"{TRAINING_CELL}/metrics.json", "--configfile", *overlays, cwd=directory)
    return directory / SMOKE_BUDGET, config


@pytest.mark.workflow
def test_the_smoke_budget_run_leaves_the_class_outside_its_subset_out_of_every_stage(smoke_budget_run):
    results, config = smoke_budget_run
    subset = cfg.class_subset(config)
    left_out = sorted(set(synthetic_wnids(config["synthetic"]["classes"])) - set(subset))
    assert len(subset) == 3 and len(left_out) == 1
    classes = pd.read_parquet(results / "index/imagenet_classes.parquet")
    assert list(classes["wnid"]) == subset and list(classes["label"]) == [0, 1, 2]
    for source in ("imagenet", "imagenet_a", "imagenet_r", "webvision"):
        index = pd.read_parquet(results / f"index/{source}.parquet")
        assert set(index["wnid"]) <= set(subset) and set(index["label"]) <= {0, 1, 2}, source
    for spec in config["generated"]:
        generated = pd.read_parquet(results / f"generated/{spec['name']}/index.parquet")
        assert set(generated["wnid"]) == set(subset) and len(generated) == cfg.generated_size(config, spec["name"])
    for mixture in config["mixtures"]:
        manifest = pd.read_parquet(results / f"mixtures/{mixture['name']}.parquet")
        assert len(manifest) and set(manifest["label"]) <= {0, 1, 2}, mixture["name"]
        assert not manifest["uri"].str.contains(left_out[0]).any(), mixture["name"]


@pytest.mark.workflow
def test_the_smoke_budget_classifier_has_3_outputs_and_scores_a_and_r_on_the_classes_they_share(smoke_budget_run):
    results, _ = smoke_budget_run
    metrics = json.loads((results / "classify/resnet50/imagenet/metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert all(0 <= metrics["metrics"][f"top1_{name}"] <= 100 for name in ("imagenet_val", "imagenet_a", "imagenet_r"))
    # top-5 over the two classes each shares with the subset: always right
    assert metrics["metrics"]["top5_imagenet_a"] == metrics["metrics"]["top5_imagenet_r"] == 100.0
    assert np.load(results / "classify/resnet50/imagenet/confusion.npy").shape == (3, 3)
    for source, shared in (("imagenet_a", {0, 1}), ("imagenet_r", {1, 2})):
        assert set(pd.read_parquet(results / f"index/{source}.parquet")["label"]) == shared
