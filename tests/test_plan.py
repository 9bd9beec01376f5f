"""The compute planner counts the workflow's own jobs, from Snakemake's DAG (its counts equal the
dry run's, also for a rule the planner has never heard of), and its GPU-hours and storage follow
from the config's planning assumptions, the profile and the sizes the pipeline's own code makes."""

import contextlib
import copy
import math
import subprocess
import sys

import pandas as pd
import pytest

from contamination import config as cfg
from contamination.dag import Job, closure
from contamination.errors import ConfigError
from contamination.mixtures import manifests
from contamination.reporting import plan
from helpers import (PROJECT, SMOKE_CONFIG, cli, cli_in, copy_checkout, environment, job_counts,
                     paper_config_with_empty_roots, snakemake, write_yaml)
from test_mixtures import arrow_table, generated_index, items, real_index

PAPER = cfg.load()
PROFILE = plan.read_profile(plan.DEFAULT_PROFILE)


def planned_counts(dag, target):
    return plan.job_counts(closure(dag, [Job(target)]))


def dry_run_counts(*arguments, cwd, snakefile=PROJECT / "Snakefile"):
    counts = job_counts(snakemake("-n", *arguments, cwd=cwd, snakefile=snakefile).stdout)
    counts.pop("total")
    return counts


def jobs_in(directory, config):
    """plan.workflow_jobs, with Snakemake's bookkeeping folder in ``directory``, not the checkout."""
    with contextlib.chdir(directory):
        return plan.workflow_jobs(config)


@pytest.fixture(scope="module")
def paper_overlay(tmp_path_factory):
    directory = tmp_path_factory.mktemp("paper")
    return directory, paper_config_with_empty_roots(directory)


@pytest.fixture(scope="module")
def paper(paper_overlay):
    """The paper config with its dataset and model paths made to exist, and its DAG."""
    directory, overlay = paper_overlay
    config = cfg.load(overlay)
    return config, jobs_in(directory, config)


@pytest.mark.workflow
def test_planned_jobs_equal_the_paper_dry_run(paper, paper_overlay):
    directory, overlay = paper_overlay
    planned = planned_counts(paper[1], "all")
    assert planned == dry_run_counts("--configfile", overlay, cwd=directory)
    assert planned["generate_shard"] == 3367 and planned["train_classifier"] == 45  # 36 of the paper tables, 9 on filtered mixtures


@pytest.mark.workflow
@pytest.mark.parametrize("table", ["table2", "table3"])
def test_planned_jobs_of_one_table_equal_its_dry_run(paper, paper_overlay, table):
    directory, overlay = paper_overlay
    assert planned_counts(paper[1], table) == dry_run_counts(table, "--configfile", overlay, cwd=directory)


@pytest.mark.workflow
def test_planned_jobs_equal_the_smoke_dry_run(tmp_path):
    # the smoke run adds the synthetic sources and the tiny models
    planned = planned_counts(jobs_in(tmp_path, cfg.load(SMOKE_CONFIG)), "all")
    assert planned["synthetic_sources"] == 1 and planned["tiny_sd"] == 1
    assert planned == dry_run_counts("--configfile", SMOKE_CONFIG, cwd=tmp_path)


def scope_row(frame, scope, rule):
    return frame[(frame["scope"] == scope) & (frame["rule"] == rule)].iloc[0]


def test_paper_plan_estimates_every_gpu_rule(paper):
    frame = plan.build_plan(PAPER, PROFILE, paper[1])
    everything = frame[frame["scope"] == "all"]
    assert not everything["gpu_hours"].isna().any() and (everything["note"] == "").all()
    # every rule with GPUs in the profile costs GPU-hours; rules without GPUs cost none
    assert (everything.loc[everything["gpus_per_job"] > 0, "gpu_hours"] > 0).all()
    assert (everything.loc[everything["gpus_per_job"] == 0, "gpu_hours"] == 0).all()


def test_generation_costs_follow_images_throughput_and_bytes(paper):
    frame = plan.build_plan(PAPER, PROFILE, paper[1])
    images = sum(cfg.generated_size(PAPER, spec["name"]) for spec in PAPER["generated"])
    row = scope_row(frame, "all", "generate_shard")
    assert row["jobs"] == sum(cfg.shard_count(PAPER, spec["name"]) for spec in PAPER["generated"])
    assert row["gpus_per_job"] == PROFILE["set-resources"]["generate_shard"]["gpu"]
    assert row["gpu_hours"] == pytest.approx(images / PAPER["planning"]["throughput"]["generate"] / 3600)
    assert row["storage_bytes"] == pytest.approx(images * PAPER["planning"]["bytes_per_generated_image"])


def test_each_dataset_of_the_iddpm_mixtures_is_prepared_once_at_64_px(paper):
    frame = plan.build_plan(PAPER, PROFILE, paper[1])
    caches = {job.wildcard_items for job in paper[1] if job.rule == "image_cache"}
    assert caches == {(("dataset", name), ("size", "64")) for name in ("imagenet", "sd_imagenet")}
    images = PAPER["planning"]["dataset_sizes"]["imagenet"]["train"] + cfg.generated_size(PAPER, "sd_imagenet")
    assert scope_row(frame, "all", "image_cache")["storage_bytes"] == pytest.approx(images * 64 * 64 * 3)
    # Table 3's mixtures gather their arrays from those two caches
    assert scope_row(frame, "table3", "image_cache")["jobs"] == 2


def test_training_costs_follow_epochs_mixture_sizes_and_throughput(paper):
    frame = plan.build_plan(PAPER, PROFILE, paper[1])
    recipe, speed = PAPER["classification"]["models"], PAPER["planning"]["throughput"]["train_classifier"]
    imagenet = PAPER["planning"]["dataset_sizes"]["imagenet"]["train"]
    # Table 7: ResNet-50 on ImageNet (5%) and on the two 95%-filled (full-size) sets
    expected = recipe["resnet50"]["epochs"] * (round(0.05 * imagenet) + 2 * imagenet) / speed["resnet50"] / 3600
    jobs = closure(paper[1], [Job("table7")])
    costs = plan.Costs(PAPER, PROFILE)
    assert sum(costs.gpu_hours(job)[0] for job in jobs if job.rule == "train_classifier") == pytest.approx(expected)
    # a job's wall time is its GPU-hours over the profile's GPUs; beyond the limit it resumes
    row = scope_row(frame, "all", "iddpm_train")
    settings = PAPER["iddpm"]
    hours = settings["iterations"] * settings["global_batch_size"] / PAPER["planning"]["throughput"]["iddpm_train"] / 3600
    assert row["hours_per_job"] == pytest.approx(hours / row["gpus_per_job"])
    assert row["submissions"] == math.ceil(row["hours_per_job"] / row["runtime_limit_hours"])


def test_tables_share_jobs_so_the_total_counts_them_once(paper):
    dag = paper[1]
    frame = plan.build_plan(PAPER, PROFILE, dag)
    totals = frame[frame["rule"] == "*"].set_index("scope")
    table6 = {job for job in closure(dag, [Job("table6")]) if job.rule == "train_classifier"}
    assert table6 and table6 <= closure(dag, [Job("table1")])
    assert totals.loc["all", "jobs"] < totals.drop("all")["jobs"].sum()
    assert totals.loc["all", "gpu_hours"] < totals.drop("all")["gpu_hours"].sum()


def test_a_gpu_rule_without_an_assumption_is_nan_with_the_key_it_needs(paper):
    config = copy.deepcopy(PAPER)
    del config["planning"]["throughput"]["train_classifier"]["swin_s"]
    frame = plan.build_plan(config, PROFILE, paper[1])
    row = scope_row(frame, "table5", "train_classifier")
    assert math.isnan(row["gpu_hours"]) and "no planning.throughput.train_classifier.swin_s" in row["note"]
    assert not math.isnan(scope_row(frame, "table6", "train_classifier")["gpu_hours"])  # ResNet-50 only


def test_gpus_come_from_the_profile_given(paper, tmp_path):
    profile = tmp_path / "site"
    profile.mkdir()
    write_yaml(profile / "config.yaml", {"retries": 1, "set-resources": {"train_classifier": {"gpu": 4, "runtime": 600}}})
    frame = plan.build_plan(PAPER, plan.read_profile(profile), paper[1])
    row = scope_row(frame, "all", "train_classifier")
    default = scope_row(plan.build_plan(PAPER, PROFILE, paper[1]), "all", "train_classifier")
    assert row["gpus_per_job"] == 4 and row["runtime_limit_hours"] == 10
    assert row["gpu_hours"] == pytest.approx(default["gpu_hours"])  # per-GPU throughput: GPU-hours do not change
    assert scope_row(frame, "all", "generate_shard")["gpu_hours"] == 0  # no GPUs in that profile


def test_cli_prints_tables_and_total_and_writes_csv(paper_overlay, tmp_path):
    directory, overlay = paper_overlay
    out = tmp_path / "plan.csv"
    result = cli("plan", "--configfile", overlay, "--out", out, cwd=directory)
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


def test_plan_starts_without_torch(tmp_path):
    code = (f"import sys; from contamination.__main__ import main; main(['plan', '--configfile', {str(SMOKE_CONFIG)!r}]);"
            "print(sorted(m for m in ('torch', 'torchvision', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment(),
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_webvision_mixtures_are_planned_at_the_subset_size():
    costs = plan.Costs(PAPER, PROFILE)
    assert costs.mixture_size("webvision") == (PAPER["sources"]["webvision"]["train_subset"], "") == (1281167, "")
    assert costs.mixture_size("in_wv_80")[0] == PAPER["planning"]["dataset_sizes"]["imagenet"]["train"]
    whole = copy.deepcopy(PAPER)
    whole["sources"]["webvision"]["train_subset"] = None
    assert plan.Costs(whole, PROFILE).mixture_size("webvision")[0] == PAPER["planning"]["dataset_sizes"]["webvision"]["train"]


def test_cli_names_a_missing_data_path_as_a_dry_run_does(tmp_path):
    # the DAG evaluates the rules' input functions: the paper config's placeholder paths stop it
    result = cli("plan", check=False, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: models.") and result.stderr.rstrip().endswith("does not exist")


def test_a_path_an_input_function_finds_missing_is_a_config_error(paper_overlay, tmp_path):
    config = cfg.load(paper_overlay[1])
    config["sources"]["imagenet"]["root"] = str(tmp_path / "no imagenet")
    path = list(sys.path)
    with pytest.raises(ConfigError, match=r"^sources\.imagenet\.root: '.*no imagenet' does not exist$"):
        jobs_in(tmp_path, config)
    assert sys.path == path  # the Snakefile's insertion of its src/ is undone


def test_a_config_the_snakefile_rejects_is_a_config_error_not_an_exit(tmp_path):
    config = cfg.load(SMOKE_CONFIG)
    config["generation"]["shard_size"] = 0
    with pytest.raises(ConfigError, match=r"^config key generation\.shard_size: 0 is less than the minimum of 1$"):
        jobs_in(tmp_path, config)


def test_planned_mixture_sizes_are_those_of_the_built_manifests(tmp_path):
    # 30 ImageNet images: fractions 0.05 and 0.15 land on halves (1.5, 28.5, 4.5), where Python's
    # round() (halves to even) and the mixtures' round-half-up differ
    config = copy.deepcopy(PAPER)
    config["planning"]["dataset_sizes"]["imagenet"]["train"] = 30
    config["mixtures"] = [
        {"name": "imagenet_5", "kind": "subset", "base": "imagenet", "fraction": 0.05, "match": "none"},
        {"name": "in_sd_15", "kind": "replace", "base": "imagenet", "by": "sd_imagenet", "fraction": 0.15, "match": "none"},
        {"name": "in_plus_sd_15", "kind": "append", "base": "imagenet", "by": "sd_imagenet", "fraction": 0.15,
         "match": "none"},
    ]
    imagenet = arrow_table(items(real_index("imagenet", {0: 12, 1: 11, 2: 7}), "imagenet", tmp_path))
    sd_imagenet = arrow_table(items(generated_index("sd_imagenet", {0: 10, 1: 10, 2: 10}), "sd_imagenet", tmp_path))
    costs = plan.Costs(config, PROFILE)
    built = {}
    for mixture in config["mixtures"]:
        spec = cfg.mixture_job_spec(config, mixture["name"])
        _, summary = manifests.build_mixture(spec, imagenet, None if spec["kind"] == "subset" else sd_imagenet)
        built[mixture["name"]] = summary["total"]
        assert costs.mixture_size(mixture["name"]) == (summary["total"], "")
    assert built == {"imagenet_5": 1, "in_sd_15": 30, "in_plus_sd_15": 35}


# A rule the planner has never heard of: one job per mixture, in `rule all`.
NEW_RULE = """
rule manifest_rows:
    input:
        manifest_path("{mixture}"),
    output:
        RESULTS / "manifest_rows" / "{mixture}.txt",
    log:
        LOGS / "manifest_rows" / "{mixture}.log",
    shell:
        "python -m contamination manifest-rows {input:q} > {output:q} 2> {log:q}"
"""


@pytest.fixture(scope="module")
def checkout_with_a_new_rule(tmp_path_factory):
    """A copy of the checkout whose workflow has one more rule, included and wanted by `rule all`."""
    directory = copy_checkout(tmp_path_factory.mktemp("extended") / "checkout")
    (directory / "workflow" / "rules" / "manifest_rows.smk").write_text(NEW_RULE)
    snakefile = directory / "Snakefile"
    text = snakefile.read_text()
    last_include, plan_input = 'include: "workflow/rules/report.smk"\n', '        PLAN,\n'
    assert text.count(last_include) == text.count(plan_input) == 1
    text = text.replace(last_include, last_include + 'include: "workflow/rules/manifest_rows.smk"\n')
    wanted = '        [RESULTS / "manifest_rows" / f"{name}.txt" for name in MIXTURES],\n'
    text = text.replace(plan_input, plan_input + wanted)
    snakefile.write_text(text)
    return directory


@pytest.mark.workflow
def test_a_new_rule_is_planned_without_a_planner_edit(checkout_with_a_new_rule, tmp_path):
    checkout = checkout_with_a_new_rule
    smoke = checkout / "config" / "smoke.yaml"
    result = cli_in(checkout, "plan", "--configfile", smoke, "--out", tmp_path / "plan.csv", cwd=tmp_path)
    assert "warning: run 'smoke' uses synthetic datasets" in result.stdout  # Snakemake's log of it is silenced
    frame = pd.read_csv(tmp_path / "plan.csv", keep_default_na=False, na_values=[""])
    everything = frame[(frame["scope"] == "all") & (frame["rule"] != "*")]
    dry_run = dry_run_counts("--configfile", smoke, cwd=tmp_path, snakefile=checkout / "Snakefile")
    assert dict(zip(everything["rule"], everything["jobs"])) == dry_run
    row = scope_row(frame, "all", "manifest_rows")
    assert row["jobs"] == len(cfg.load(smoke)["mixtures"])
    assert row["gpus_per_job"] == 0 and row["gpu_hours"] == 0 and pd.isna(row["note"])  # no note: read as NaN
    # given GPUs, a rule without a planning assumption is NaN with the keys it needs
    site = tmp_path / "site"
    site.mkdir()
    write_yaml(site / "config.yaml", {"set-resources": {"manifest_rows": {"gpu": 1, "runtime": 60}}})
    cli_in(checkout, "plan", "--configfile", smoke, "--profile", site, "--out", tmp_path / "site.csv", cwd=tmp_path)
    row = scope_row(pd.read_csv(tmp_path / "site.csv", keep_default_na=False, na_values=[""]), "all", "manifest_rows")
    assert math.isnan(row["gpu_hours"])
    assert row["note"] == ("no planning assumption for rule manifest_rows "
                           "(planning.throughput or planning.job_hours.manifest_rows)")


@pytest.mark.workflow
def test_the_plan_job_of_a_run_plans_the_runs_config(checkout_with_a_new_rule, tmp_path):
    # the job builds the DAG in-process while the run holds the locks of the same working directory
    checkout = checkout_with_a_new_rule
    overlay = write_yaml(tmp_path / "overlay.yaml", {"generation": {"shard_size": 48}})
    configs = ("--configfile", checkout / "config" / "smoke.yaml", overlay)
    work = tmp_path / "work"
    work.mkdir()
    snakemake("--cores", "1", "results/smoke/plan.csv", *configs, cwd=work, snakefile=checkout / "Snakefile")
    frame = pd.read_csv(work / "results" / "smoke" / "plan.csv", keep_default_na=False, na_values=[""])
    everything = frame[(frame["scope"] == "all") & (frame["rule"] != "*")]
    planned = dict(zip(everything["rule"], everything["jobs"]))
    assert planned == dry_run_counts("--forceall", *configs, cwd=work, snakefile=checkout / "Snakefile")
    run_config = cfg.load(checkout / "config" / "smoke.yaml", overlay)
    shards = sum(cfg.shard_count(run_config, spec["name"]) for spec in run_config["generated"])
    assert planned["generate_shard"] == shards < sum(cfg.shard_count(cfg.load(checkout / "config" / "smoke.yaml"), spec["name"])
                                                     for spec in run_config["generated"])  # the smoke config's own shard size
    result = snakemake("-n", "results/smoke/plan.csv", *configs, cwd=work, snakefile=checkout / "Snakefile")
    assert "Nothing to be done" in result.stdout + result.stderr
