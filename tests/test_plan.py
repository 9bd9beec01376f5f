"""The compute planner counts the workflow's own jobs (its counts equal Snakemake's dry run), and
its GPU-hours and storage follow from the config's planning assumptions and the profile."""

import copy
import math
import subprocess
import sys

import pandas as pd
import pytest

from contamination import config as cfg
from contamination.reporting import plan
from helpers import PAPER_CONFIG, SMOKE_CONFIG, cli, environment, job_counts, paper_config_with_empty_roots, snakemake, write_yaml

PAPER = cfg.load()
PROFILE = plan.read_profile(plan.DEFAULT_PROFILE)


def planned_counts(config, target):
    return plan.job_counts(plan.WorkflowJobs(config).closure([(target,)]))


def dry_run_counts(*arguments, cwd):
    counts = job_counts(snakemake("-n", *arguments, cwd=cwd).stdout)
    counts.pop("total")
    return counts


@pytest.fixture(scope="module")
def paper_overlay(tmp_path_factory):
    directory = tmp_path_factory.mktemp("paper")
    return directory, paper_config_with_empty_roots(directory)


@pytest.mark.workflow
def test_planned_jobs_equal_the_paper_dry_run(paper_overlay):
    directory, overlay = paper_overlay
    planned = planned_counts(cfg.load(overlay), "all")
    assert planned == dry_run_counts("--configfile", overlay, cwd=directory)
    assert planned["generate_shard"] == 3367 and planned["train_classifier"] == 36


@pytest.mark.workflow
@pytest.mark.parametrize("table", ["table2", "table3"])
def test_planned_jobs_of_one_table_equal_its_dry_run(paper_overlay, table):
    directory, overlay = paper_overlay
    assert planned_counts(cfg.load(overlay), table) == dry_run_counts(table, "--configfile", overlay, cwd=directory)


@pytest.mark.workflow
def test_planned_jobs_equal_the_smoke_dry_run(tmp_path):
    # the smoke run adds the synthetic sources and the tiny models
    planned = planned_counts(cfg.load(SMOKE_CONFIG), "all")
    assert planned["synthetic_sources"] == 1 and planned["tiny_sd"] == 1
    assert planned == dry_run_counts("--configfile", SMOKE_CONFIG, cwd=tmp_path)


def scope_row(frame, scope, rule):
    return frame[(frame["scope"] == scope) & (frame["rule"] == rule)].iloc[0]


def test_paper_plan_estimates_every_gpu_rule():
    frame = plan.build_plan(PAPER, PROFILE)
    everything = frame[frame["scope"] == "all"]
    assert not everything["gpu_hours"].isna().any() and (everything["note"] == "").all()
    # every rule with GPUs in the profile costs GPU-hours; rules without GPUs cost none
    assert (everything.loc[everything["gpus_per_job"] > 0, "gpu_hours"] > 0).all()
    assert (everything.loc[everything["gpus_per_job"] == 0, "gpu_hours"] == 0).all()


def test_generation_costs_follow_images_throughput_and_bytes():
    frame = plan.build_plan(PAPER, PROFILE)
    images = sum(cfg.generated_size(PAPER, spec["name"]) for spec in PAPER["generated"])
    row = scope_row(frame, "all", "generate_shard")
    assert row["jobs"] == sum(cfg.shard_count(PAPER, spec["name"]) for spec in PAPER["generated"])
    assert row["gpus_per_job"] == PROFILE["set-resources"]["generate_shard"]["gpu"]
    assert row["gpu_hours"] == pytest.approx(images / PAPER["planning"]["throughput"]["generate"] / 3600)
    assert row["storage_bytes"] == pytest.approx(images * PAPER["planning"]["bytes_per_generated_image"])


def test_training_costs_follow_epochs_mixture_sizes_and_throughput():
    frame = plan.build_plan(PAPER, PROFILE)
    recipe, speed = PAPER["classification"]["models"], PAPER["planning"]["throughput"]["train_classifier"]
    imagenet = PAPER["planning"]["dataset_sizes"]["imagenet"]["train"]
    # Table 7: ResNet-50 on ImageNet (5%) and on the two 95%-filled (full-size) sets
    expected = recipe["resnet50"]["epochs"] * (round(0.05 * imagenet) + 2 * imagenet) / speed["resnet50"] / 3600
    jobs = plan.WorkflowJobs(PAPER).closure([("table7",)])
    costs = plan.Costs(PAPER, PROFILE)
    assert sum(costs.gpu_hours(job)[0] for job in jobs if job[0] == "train_classifier") == pytest.approx(expected)
    # a job's wall time is its GPU-hours over the profile's GPUs; beyond the limit it resumes
    row = scope_row(frame, "all", "iddpm_train")
    settings = PAPER["iddpm"]
    hours = settings["iterations"] * settings["global_batch_size"] / PAPER["planning"]["throughput"]["iddpm_train"] / 3600
    assert row["hours_per_job"] == pytest.approx(hours / row["gpus_per_job"])
    assert row["submissions"] == math.ceil(row["hours_per_job"] / row["runtime_limit_hours"])


def test_tables_share_jobs_so_the_total_counts_them_once():
    frame = plan.build_plan(PAPER, PROFILE)
    totals = frame[frame["rule"] == "*"].set_index("scope")
    jobs = plan.WorkflowJobs(PAPER)
    assert {job for job in jobs.closure([("table6",)]) if job[0] == "train_classifier"} <= jobs.closure([("table1",)])
    assert totals.loc["all", "jobs"] < totals.drop("all")["jobs"].sum()
    assert totals.loc["all", "gpu_hours"] < totals.drop("all")["gpu_hours"].sum()


def test_a_gpu_rule_without_an_assumption_is_nan_with_the_key_it_needs():
    config = copy.deepcopy(PAPER)
    del config["planning"]["throughput"]["train_classifier"]["swin_s"]
    frame = plan.build_plan(config, PROFILE)
    row = scope_row(frame, "table5", "train_classifier")
    assert math.isnan(row["gpu_hours"]) and "no planning.throughput.train_classifier.swin_s" in row["note"]
    assert not math.isnan(scope_row(frame, "table6", "train_classifier")["gpu_hours"])  # ResNet-50 only


def test_gpus_come_from_the_profile_given(tmp_path):
    profile = tmp_path / "site"
    profile.mkdir()
    write_yaml(profile / "config.yaml", {"retries": 1, "set-resources": {"train_classifier": {"gpu": 4, "runtime": 600}}})
    frame = plan.build_plan(PAPER, plan.read_profile(profile))
    row = scope_row(frame, "all", "train_classifier")
    default = scope_row(plan.build_plan(PAPER, PROFILE), "all", "train_classifier")
    assert row["gpus_per_job"] == 4 and row["runtime_limit_hours"] == 10
    assert row["gpu_hours"] == pytest.approx(default["gpu_hours"])  # per-GPU throughput: GPU-hours do not change
    assert scope_row(frame, "all", "generate_shard")["gpu_hours"] == 0  # no GPUs in that profile


def test_cli_prints_tables_and_total_and_writes_csv(tmp_path):
    out = tmp_path / "plan.csv"
    result = cli("plan", "--configfile", PAPER_CONFIG, "--out", out)
    lines = result.stdout.splitlines()
    for table in PAPER["tables"]:
        assert any(line.split()[:1] == [table["name"]] for line in lines)
    total = next(line for line in lines if line.split()[:1] == ["all"])
    frame = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(frame.columns) == plan.PLAN_COLUMNS
    assert int(total.split()[1]) == scope_row(frame, "all", "*")["jobs"]
    assert "each iddpm_train job needs" in result.stdout  # longer than the profile's wall time


def test_cli_names_a_missing_profile(tmp_path):
    result = cli("plan", "--configfile", SMOKE_CONFIG, "--profile", tmp_path, check=False)
    assert result.returncode == 2 and f"--profile: no config.yaml in '{tmp_path}'" in result.stderr


def test_plan_starts_without_torch():
    code = ("import sys; from contamination.__main__ import main; main(['plan', '--configfile', 'config/smoke.yaml']);"
            "print(sorted(m for m in ('torch', 'torchvision', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment(),
                            cwd=PAPER_CONFIG.parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_webvision_mixtures_are_planned_at_the_subset_size():
    costs = plan.Costs(PAPER, PROFILE)
    assert costs.mixture_size("webvision") == (PAPER["sources"]["webvision"]["train_subset"], "") == (1281167, "")
    assert costs.mixture_size("in_wv_80")[0] == PAPER["planning"]["dataset_sizes"]["imagenet"]["train"]
    whole = copy.deepcopy(PAPER)
    whole["sources"]["webvision"]["train_subset"] = None
    assert plan.Costs(whole, PROFILE).mixture_size("webvision")[0] == PAPER["planning"]["dataset_sizes"]["webvision"]["train"]
