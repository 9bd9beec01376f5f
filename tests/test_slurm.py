"""The SLURM profile (profiles/slurm), proven on a real one-node SLURM cluster.

Without a cluster: the paper's dry run through the profile shows every job with its rule's
resources and the site settings taken from the environment, and every rule that submits jobs
has an entry in the profile.

On the cluster (tests/slurm/cluster.py; when it cannot start, these tests fail with the reason:
`make test` installs its packages, and `-m "not slurm"` deselects them where that cannot be
done): one smoke run through a profile
derived from profiles/slurm builds a Stable Diffusion mixture and trains a classifier, while the
test injects a failure into one generation shard and cancels the training job with scancel
after its first checkpoint. The tests then read SLURM's accounting (sacct) and what each rule
command saw in its job (tests/slurm/job_probe.py). A last test shows why generation shards are
not submitted as SLURM arrays.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from contamination import config as cfg
from helpers import (PROJECT, SMOKE_CONFIG, SNAKEFILE, environment, job_counts, paper_config_with_empty_roots,
                     write_yaml)
from slurm.cluster import SlurmCluster, unavailable_reason
from slurm.profile import PRODUCTION_PROFILE, SITE_PREFIX, production_profile, without_site_settings, write_test_profile

SITE = {"ACCOUNT": "proj42", "PARTITION": "cpu", "GPU_PARTITION": "gpu", "GPU_MODEL": "a100", "GPU_CONSTRAINT": "80gb"}
PAPER_GPUS = {"generate_shard": 1, "train_classifier": 8, "caption_finetune": 2, "iddpm_train": 8,
              "mae_pretrain": 8, "mae_linear_probe": 8}
NODE_GPUS = 4
TEST_MAX_GPUS = 2
FAILING_SHARD = "--shard 00001"
TRAINING = ("resnet50", "imagenet")
RUN_TIMEOUT = 1200
PREBUILT = ["results/smoke/models/tiny-sd", "results/smoke/prompts/sd_imagenet.parquet",
            *(f"results/smoke/index/{source}.parquet" for source in ("imagenet", "imagenet_a", "imagenet_r"))]


# ---- reading Snakemake's and SLURM's output -------------------------------------------------


def submitted_jobs(dry_run_output: str) -> list[tuple[str, dict]]:
    """(rule, resources) of every job a dry run through the profile would submit: blocks that
    start `rule X:` (not `localrule X:`) and have a shell command (not target rules like `all`)."""
    jobs, rule, resources = [], None, None
    for line in dry_run_output.splitlines():
        if match := re.match(r"(local)?rule (\w+):$", line):
            rule = None if match.group(1) else match.group(2)
        elif rule and line.startswith("    resources: "):
            resources = dict(item.split("=", 1) for item in line.removeprefix("    resources: ").split(", "))
        elif rule and line.startswith("Shell command:"):
            if line != "Shell command: None":
                jobs.append((rule, resources))
            rule = None
    return jobs


def rule_of(record: dict) -> str:
    """The rule of a sacct record, from the comment the plugin gives every job."""
    return re.match(r"rule_(.+?)(?:_wildcards_.*)?$", record["Comment"]).group(1)


def allocated(record: dict) -> dict:
    """AllocTRES of a sacct record as {'cpu': 2, 'gres/gpu': 1, ...} (memory left out)."""
    pairs = (item.split("=") for item in record["AllocTRES"].split(",") if item)
    return {key: int(value) for key, value in pairs if value.isdigit()}


def run_profile_dry_run(*arguments, cwd, env) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--profile", str(PRODUCTION_PROFILE.parent), "-n",
               "-s", str(SNAKEFILE), *map(str, arguments)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# ---- without a cluster: the production profile --------------------------------------------


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    """The paper config (dataset roots: empty directories) through profiles/slurm, dry, with
    every site setting given in the environment."""
    directory = tmp_path_factory.mktemp("paper")
    overlay = paper_config_with_empty_roots(directory)
    env = dict(os.environ, **{SITE_PREFIX + key: value for key, value in SITE.items()})
    started = time.monotonic()
    result = run_profile_dry_run("--configfile", overlay, cwd=directory, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, time.monotonic() - started, production_profile(env)


@pytest.mark.workflow
def test_paper_dry_run_shows_each_job_with_its_rules_profile_resources(paper_dry_run):
    result, seconds, profile = paper_dry_run
    jobs = submitted_jobs(result.stdout)
    assert seconds < 120, f"the paper dry run took {seconds:.0f} s"
    counts = Counter(rule for rule, _ in jobs)
    config = cfg.load()
    assert counts["generate_shard"] == sum(cfg.shard_count(config, spec["name"]) for spec in config["generated"])
    for rule, resources in jobs:
        expected = profile["set-resources"].get(rule)
        if expected is None:
            continue  # test_every_rule_that_submits_jobs_has_profile_resources... names it
        for key in ("runtime", "mem_mb", "cpus_per_task", "gpu"):
            if key in expected:
                assert resources[key] == str(expected[key]), (rule, key, resources)
            else:
                assert key not in resources, (rule, key, resources)
    for rule, gpus in PAPER_GPUS.items():
        assert {resources.get("gpu") for r, resources in jobs if r == rule} == {str(gpus)}, rule


@pytest.mark.workflow
def test_site_settings_from_the_environment_reach_every_job(paper_dry_run):
    result, _, _ = paper_dry_run
    for rule, resources in submitted_jobs(result.stdout):
        assert resources["slurm_account"] == SITE["ACCOUNT"], rule
        if "gpu" in resources:
            assert resources["slurm_partition"] == SITE["GPU_PARTITION"], rule
            assert resources["gpu_model"] == SITE["GPU_MODEL"], rule
            assert resources["constraint"] == SITE["GPU_CONSTRAINT"], rule
        else:
            assert resources["slurm_partition"] == SITE["PARTITION"], rule
            assert "gpu_model" not in resources and "constraint" not in resources, rule


def test_without_site_settings_the_profile_leaves_partition_account_and_gpu_model_to_the_cluster():
    profile = production_profile(without_site_settings(os.environ))
    assert set(profile["default-resources"]) == {"runtime", "mem_mb"}
    for resources in profile["set-resources"].values():
        assert not {"slurm_partition", "slurm_account", "gpu_model", "constraint"} & set(resources)


@pytest.mark.workflow
def test_every_rule_that_submits_jobs_has_profile_resources_and_no_entry_names_a_missing_rule(
    paper_dry_run, tmp_path
):
    smoke = run_profile_dry_run("--configfile", SMOKE_CONFIG, cwd=tmp_path, env=dict(os.environ))
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    submitted = {rule for output in (paper_dry_run[0].stdout, smoke.stdout) for rule, _ in submitted_jobs(output)}
    listed = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--list-rules", "--configfile", str(SMOKE_CONFIG)],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.split()
    profiled = set(paper_dry_run[2]["set-resources"])
    assert submitted - profiled == set(), "rules without an entry in profiles/slurm/config.yaml JOBS"
    assert profiled - set(listed) == set(), "JOBS entries that name no rule of the workflow"


# ---- on the cluster -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable_reason()
    if reason:
        pytest.fail(f"{reason}: `make test` installs the test cluster's packages (as root); where that cannot be "
                    'done, deselect these tests with -m "not slurm"')
    # Not pytest's tmp_path: the munge and mysql users must be able to enter the directory.
    scratch = Path(tempfile.mkdtemp(prefix="contamination-slurm-"))
    with SlurmCluster(scratch, gpus=NODE_GPUS) as running:
        yield running
    shutil.rmtree(scratch)


def job_environment(cluster, directory: Path) -> dict:
    """The cluster's environment with the job probe first on PATH as `python` and the fault."""
    shim = directory / "bin"
    shim.mkdir()
    probe = PROJECT / "tests" / "slurm" / "job_probe.py"
    (shim / "python").write_text(f'#!/bin/sh\nexec {sys.executable} {probe} "$@"\n')
    (shim / "python").chmod(0o755)
    probes = directory / "probes"
    probes.mkdir()
    env = cluster.environment(without_site_settings(os.environ))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["PATH"] = os.pathsep.join([str(shim), str(Path(sys.executable).parent), env["PATH"]])
    env["CONTAMINATION_TEST_PROBE_DIR"] = str(probes)
    env["CONTAMINATION_TEST_FAIL_ONCE"] = FAILING_SHARD
    return env


def cancel_after_first_checkpoint(cluster, run_id: str, checkpoint: Path, process) -> str | None:
    """scancel the running training job once its first checkpoint exists; its SLURM job id."""
    while process.poll() is None:
        queue = cluster.run("squeue", "--noheader", "--name", run_id, "--states=RUNNING", "--format=%i|%k").stdout
        for line in queue.splitlines():
            job_id, comment = line.split("|", 1)
            if comment.startswith("rule_train_classifier") and checkpoint.exists():
                cluster.run("scancel", job_id)
                return job_id
        time.sleep(0.2)
    return None


def smaller_smoke_config() -> dict:
    """An overlay on the smoke config that keeps the test short: SD-ImageNet in two shards (one
    of them fails once), a ResNet-50 trained for two epochs that checkpoints after every step (a
    wall-time interval of 0.06 s), so it is cancelled with a checkpoint to resume from."""
    smoke = yaml.safe_load(SMOKE_CONFIG.read_text())
    generated = [dict(spec, per_class=8) if spec["name"] == "sd_imagenet" else spec for spec in smoke["generated"]]
    model, _ = TRAINING
    return {"generated": generated,
            "classification": {"checkpoint_every_minutes": 0.001, "models": {model: {"epochs": 2}}}}


@pytest.fixture(scope="module")
def smoke_run(cluster, tmp_path_factory):
    """One Stable Diffusion mixture and one classifier training of the smoke config through the
    test profile, with one generation shard failing once and the training cancelled once."""
    directory = tmp_path_factory.mktemp("slurm-run")
    profile = write_test_profile(directory / "profile", max_gpus=TEST_MAX_GPUS)
    env = job_environment(cluster, directory)
    smaller = write_yaml(directory / "smaller.yaml", smaller_smoke_config())
    model, mixture = TRAINING
    targets = ["results/smoke/mixtures/in_sd_20.parquet", f"results/smoke/classify/{model}/{mixture}/metrics.json"]
    checkpoint = directory / "results" / "smoke" / "checkpoints" / "classify" / model / mixture / "checkpoint.pt"
    configs = ["-s", str(SNAKEFILE), "--directory", str(directory), "--configfile", str(SMOKE_CONFIG), str(smaller)]
    # The synthetic sources, their indexes, the prompts and the tiny model are made locally
    # first: each stage through SLURM costs tens of seconds of status polling.
    local = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *configs, "--", *PREBUILT],
                           env=environment(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert local.returncode == 0, local.stdout + local.stderr
    log = directory / "snakemake.log"
    command = [sys.executable, "-m", "snakemake", "--profile", str(directory / "profile"), *configs, "--", *targets]
    run_id = cancelled = None
    with open(log, "w") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
        try:
            while run_id is None and process.poll() is None:
                found = re.search(r"SLURM run ID: (\S+)", log.read_text())
                if found:
                    run_id = found.group(1)
                else:
                    time.sleep(0.2)
            if run_id:
                cancelled = cancel_after_first_checkpoint(cluster, run_id, checkpoint, process)
            process.wait(timeout=RUN_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
    time.sleep(1)  # slurmctld hands the last job ends to slurmdbd
    return {
        "returncode": process.returncode,
        "output": log.read_text(),
        "records": [r for r in cluster.accounting() if r["JobName"] == run_id],
        "probes": [json.loads(p.read_text()) for p in (directory / "probes").glob("*.json")],
        "profile": profile,
        "cancelled": cancelled,
        "results": directory / "results" / "smoke",
        "targets": [directory / target for target in targets],
    }


@pytest.mark.slurm
def test_every_job_went_through_sbatch(smoke_run):
    assert smoke_run["returncode"] == 0, smoke_run["output"][-5000:]
    assert all(target.exists() for target in smoke_run["targets"])
    planned = job_counts(smoke_run["output"])
    completed = Counter(rule_of(r) for r in smoke_run["records"] if r["State"] == "COMPLETED")
    submitted = {rule: count for rule, count in planned.items() if rule in smoke_run["profile"]["set-resources"]}
    assert completed == Counter(submitted)
    assert {"generate_shard", "mixture", "train_classifier"} <= set(completed)


@pytest.mark.slurm
def test_each_job_got_the_gpus_cpus_and_time_of_its_rule(smoke_run):
    resources = smoke_run["profile"]["set-resources"]
    for record in smoke_run["records"]:
        expected = resources[rule_of(record)]
        tres = allocated(record)
        assert tres.get("gres/gpu", 0) == expected.get("gpu", 0), record
        assert tres["cpu"] == expected["cpus_per_task"], record
        assert record["Timelimit"] == f"00:{expected['runtime']:02d}:00", record
    assert resources["train_classifier"]["gpu"] == TEST_MAX_GPUS


@pytest.mark.slurm
def test_rule_commands_see_their_jobs_gpus_as_cuda_visible_devices(smoke_run):
    gpus_of_job = {r["JobID"]: allocated(r).get("gres/gpu", 0) for r in smoke_run["records"]}
    assert smoke_run["probes"]
    for probe in smoke_run["probes"]:
        assert probe["slurm_job_id"] in gpus_of_job, probe
        devices = probe["cuda_visible_devices"]
        # Without cgroups a job sees the node's GPU indices, e.g. "1" beside a job holding "0".
        assert (len(devices.split(",")) if devices else 0) == gpus_of_job[probe["slurm_job_id"]], probe
    generation = [p for p in smoke_run["probes"] if p["arguments"][2] == "generate"]
    assert generation and all(len(p["cuda_visible_devices"].split(",")) == 1 for p in generation)


@pytest.mark.slurm
def test_a_job_failing_once_is_retried_and_the_run_completes(smoke_run):
    injected = [p for p in smoke_run["probes"] if p["injected_failure"]]
    assert len(injected) == 1 and FAILING_SHARD in " ".join(injected[0]["arguments"])
    shard_runs = [p for p in smoke_run["probes"] if FAILING_SHARD in " ".join(p["arguments"])]
    shard_jobs = sorted((p["slurm_job_id"] for p in shard_runs), key=int)
    states = {r["JobID"]: r["State"] for r in smoke_run["records"]}
    assert [states[job] for job in shard_jobs] == ["FAILED", "COMPLETED"]
    assert smoke_run["returncode"] == 0


@pytest.mark.slurm
def test_cancelled_training_resumes_from_its_checkpoint_on_the_retry(smoke_run):
    assert smoke_run["cancelled"], "the training job finished before the test could cancel it"
    training = [r for r in smoke_run["records"] if rule_of(r) == "train_classifier"]
    assert [r["JobID"] for r in training] == [smoke_run["cancelled"], training[1]["JobID"]]
    assert training[0]["State"].startswith("CANCELLED")  # "CANCELLED by <uid>"
    assert training[1]["State"] == "COMPLETED"
    model, mixture = TRAINING
    directory = smoke_run["results"]
    log = (directory / "logs" / "classify" / model / f"{mixture}.log").read_text()
    resumed = re.search(r"resuming from \S+checkpoint.pt at epoch (\d+), step (\d+)", log)
    assert resumed and resumed.groups() != ("0", "0"), log[-3000:]
    metrics = json.loads((directory / "classify" / model / mixture / "metrics.json").read_text())
    assert metrics["provenance"]["world_size"] == TEST_MAX_GPUS  # torchrun: a process per GPU


# ---- why the profile submits shards one by one, not as arrays --------------------------------

ARRAY_SNAKEFILE = """
rule all:
    input: expand("out/{i}.txt", i=range(1, 4))
rule shard:
    output: "out/{i}.txt"
    resources: runtime=5, mem_mb=500, cpus_per_task=1
    shell: "if [ {wildcards.i} = 2 ]; then sleep 6; exit 1; fi; sleep 2; echo {wildcards.i} > {output}"
"""


@pytest.mark.slurm
@pytest.mark.xfail(strict=True, reason="snakemake-executor-plugin-slurm 2.8.0: array task k>1 also "
                   "checks task 1's outputs and deletes them when task k fails; when this passes, "
                   "put slurm-array-jobs back into profiles/slurm/config.yaml")
def test_plugin_array_jobs_keep_the_outputs_of_shards_that_succeeded(cluster, tmp_path):
    """Shard 2 fails; shards 1 and 3 succeed and must keep their outputs, whatever task ids the
    plugin gives the three shards in the array."""
    (tmp_path / "Snakefile").write_text(ARRAY_SNAKEFILE)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--executor", "slurm", "--jobs", "10", "--keep-going",
         "--slurm-array-jobs", "shard", "--slurm-status-command", "squeue",
         "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "2"],
        cwd=tmp_path, env=cluster.environment(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert (tmp_path / "out" / "1.txt").exists() and (tmp_path / "out" / "3.txt").exists(), result.stdout[-3000:]
