"""The test profile: profiles/slurm scaled down to the one-node test cluster.

Everything but the sizes stays as in the production profile (executor, retries, status command,
which rules get GPUs, CPUs as threads): GPU counts are capped at what the test node has, a job
gets one CPU per GPU (one without GPUs), memory and wall time shrink to test sizes, and the
plugin checks job status after 1 s instead of 40.
"""

import os
from pathlib import Path
from unittest import mock

import yaml
import yte

from helpers import PROJECT

PRODUCTION_PROFILE = PROJECT / "profiles" / "slurm" / "config.yaml"
SITE_PREFIX = "CONTAMINATION_SLURM_"
TEST_MEMORY_MB = 1500
TEST_RUNTIME_MINUTES = 15


def production_profile(environment: dict) -> dict:
    """profiles/slurm/config.yaml rendered as Snakemake renders it, with `environment` as the
    process environment (the template reads site settings from os.environ)."""
    with mock.patch.dict(os.environ, environment, clear=True), open(PRODUCTION_PROFILE) as stream:
        return yte.process_yaml(stream, require_use_yte=True)


def without_site_settings(environment: dict) -> dict:
    return {k: v for k, v in environment.items() if not k.startswith(SITE_PREFIX)}


def scaled(resources: dict, max_gpus: int) -> dict:
    """Test sizes: at most `max_gpus` GPUs, one CPU per GPU (one without GPUs)."""
    job = dict(resources, mem_mb=TEST_MEMORY_MB, runtime=TEST_RUNTIME_MINUTES)
    if "gpu" in job:
        job["gpu"] = min(job["gpu"], max_gpus)
    job["processes_per_node"] = max(1, job.get("gpu", 0))  # one process per (test) GPU
    job["cpus_per_task"] = min(job["cpus_per_task"], max(1, job.get("gpu", 0)))
    return job


def write_test_profile(directory: Path, max_gpus: int) -> dict:
    """Write the test profile to `directory`/config.yaml and return it."""
    profile = production_profile(without_site_settings(os.environ))
    profile["set-resources"] = {rule: scaled(job, max_gpus) for rule, job in profile["set-resources"].items()}
    profile["set-threads"] = {rule: job["cpus_per_task"] for rule, job in profile["set-resources"].items()}
    profile["default-resources"] = {"mem_mb": TEST_MEMORY_MB, "runtime": TEST_RUNTIME_MINUTES}
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["slurm-keep-successful-logs"] = True
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile
