"""The classification part of the DAG: one training job per distinct (model, mixture) cell of
Tables 1, 5, 6, 7 and 8, launched one process per GPU (src/contamination/launch.py) when the
profile gives the job GPUs, on one node or several."""

import re

import pytest

from contamination import config as cfg
from helpers import SMOKE_CONFIG, job_counts, paper_config_with_empty_roots, snakemake

pytestmark = pytest.mark.workflow

CLASSIFICATION_TABLES = ["table1", "table5", "table6", "table7", "table8"]


def distinct_cells(config):
    return {
        (model, row["mixture"])
        for table in config["tables"]
        if table["name"] in CLASSIFICATION_TABLES
        for model in table["models"]
        for row in table["rows"]
    }


def test_paper_dry_run_trains_each_distinct_cell_once(tmp_path):
    overlay = paper_config_with_empty_roots(tmp_path)
    result = snakemake("-n", *CLASSIFICATION_TABLES, "--configfile", overlay, cwd=tmp_path)
    cells = distinct_cells(cfg.load(overlay))
    # Table 1: 3 models x 9 rows; Table 5 adds complex SD-ImageNet (3); Table 6 reuses Table 1's
    # ResNet-50 runs; Table 7 adds 3 ResNet-50 runs; Table 8 adds 3 (its ImageNet row is Table 1's).
    assert len(cells) == 27 + 3 + 3 + 3
    assert job_counts(result.stdout)["train_classifier"] == len(cells)
    scheduled = set(re.findall(r"wildcards: model=(\w+), mixture=(\w+)", result.stdout))
    assert scheduled == cells


def test_smoke_job_runs_one_python_process_and_gpu_jobs_launch_one_per_gpu(tmp_path):
    target = "results/smoke/classify/resnet50/imagenet/metrics.json"
    plain = snakemake("-n", "-p", target, "--configfile", SMOKE_CONFIG, cwd=tmp_path).stdout
    assert "python -m contamination train-classifier" in plain and "torchrun" not in plain
    assert "--checkpoint-dir results/smoke/checkpoints/classify/resnet50/imagenet" in plain
    gpus = snakemake("-n", "-p", target, "--set-resources", "train_classifier:gpu=8",
                     "--configfile", SMOKE_CONFIG, cwd=tmp_path).stdout
    assert ("python -m contamination launch --nodes=1 --processes-per-node=8 --cpus-per-node=1 -- "
            "train-classifier") in gpus
    nodes = snakemake("-n", "-p", target, "--set-resources", "train_classifier:nodes=2",
                      "train_classifier:processes_per_node=4", "--set-threads", "train_classifier=32", "--cores", "64",
                      "--configfile", SMOKE_CONFIG, cwd=tmp_path).stdout
    assert ("python -m contamination launch --nodes=2 --processes-per-node=4 --cpus-per-node=32 -- "
            "train-classifier") in nodes
