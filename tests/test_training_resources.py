"""How a training job divides its resources among its processes."""

import os

import pytest

from contamination.experiments import training


@pytest.mark.parametrize("cpus, processes, configured, expected", [
    (64, 8, 16, 7),   # the paper's 8-GPU jobs: 7 workers per process, not 16
    (64, 1, 16, 16),  # one process keeps its configured workers
    (8, 8, 4, 0),     # one CPU per process: loading in the training loop
    (2, 1, 0, 0),     # configured 0 stays 0
])
def test_loader_workers_share_the_jobs_cpus_among_its_processes(monkeypatch, cpus, processes, configured, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert training.loader_workers(configured) == expected
