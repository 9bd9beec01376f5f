"""The `filtering` target: the paper config's dry run schedules (and plans) the detectors and
the retraining on what they keep, in seconds; a small smoke run of it writes the tables, their
report pages and plots, from filtered manifests that hold none of the detectors' images."""

import json
import time

import pandas as pd
import pytest

from contamination import config as cfg
from helpers import SMOKE_CONFIG, copy_checkout, job_counts, paper_config_with_empty_roots, snakemake, write_yaml

pytestmark = pytest.mark.workflow


def test_paper_dry_run_of_the_filtering_target_takes_seconds(tmp_path):
    overlay = paper_config_with_empty_roots(tmp_path)
    start = time.monotonic()
    output = snakemake("-n", "filtering", "--configfile", overlay, cwd=tmp_path).stdout
    seconds = time.monotonic() - start
    counts = job_counts(output)
    # 3 mixtures; 2 extractors (ResNet-50, CLIP); 3 detectors; ResNet-50 on ImageNet, IN/SD-n% and 9 filtered sets
    assert (counts["detector_set"], counts["detector_features"], counts["filter_mixture"]) == (3, 6, 9)
    assert counts["train_classifier"] == 13 and counts["table"] == counts["table_report"] == 2
    assert seconds < 60, f"the dry run took {seconds:.0f} s"


# IN/SD-20% filtered by the linear detectors on ResNet-50 and tiny-CLIP features.
DETECTORS = ["linear_on_resnet50_features", "linear_on_clip_features"]


def small_filtering_overlay(directory):
    tables = {table["name"]: table for table in cfg.load(SMOKE_CONFIG)["tables"]}
    detection = dict(tables["filtering_detection"], models=DETECTORS, rows=[{"dataset": "IN/SD-20%", "mixture": "in_sd_20"}])
    top1 = dict(tables["filtering_top1"], rows=[{"dataset": "ImageNet", "mixture": "imagenet"},
                                                {"dataset": "IN/SD-20%", "mixture": "in_sd_20"}]
                + [{"dataset": f"IN/SD-20%, {detector}", "mixture": f"in_sd_20-filtered-{detector}"} for detector in DETECTORS])
    return write_yaml(directory / "filtering.yaml", {"filtering": {"mixtures": ["in_sd_20"], "detectors": DETECTORS},
                                                     "tables": [detection, top1]})


@pytest.fixture(scope="module")
def filtering_run(tmp_path_factory):
    checkout = copy_checkout(tmp_path_factory.mktemp("filtering") / "checkout")
    overlay = small_filtering_overlay(checkout)
    snakemake("--cores", "2", "filtering", "--configfile", SMOKE_CONFIG, overlay, cwd=checkout,
              snakefile=checkout / "Snakefile")
    return checkout / "results" / "smoke"


def test_the_filtering_tables_pages_and_plots_are_written(filtering_run):
    detection = pd.read_csv(filtering_run / "tables" / "filtering_detection.csv")
    assert set(detection["model"]) == set(DETECTORS) and (detection["status"] == "ok").all()
    assert detection["measured"].notna().all()
    top1 = pd.read_csv(filtering_run / "tables" / "filtering_top1.csv")
    assert len(top1) == 4 and (top1["status"] == "ok").all() and top1["measured"].between(0, 100).all()
    for name in ("filtering_detection", "filtering_top1"):
        assert "beyond the paper" in (filtering_run / "report" / "tables" / f"{name}.html").read_text()
        assert (filtering_run / "figures" / f"{name}-vs-contamination.png").read_bytes().startswith(b"\x89PNG")


def test_the_classifier_trained_on_what_each_detector_kept(filtering_run):
    mixture = pd.read_parquet(filtering_run / "mixtures" / "in_sd_20.parquet")
    detector_set = pd.read_parquet(filtering_run / "filtering" / "in_sd_20" / "detector_set.parquet")
    held = detector_set[detector_set["role"] != "mixture"]
    assert not set(held["uri"]) & set(mixture["uri"])
    for detector in DETECTORS:
        kept = pd.read_parquet(filtering_run / "mixtures" / f"in_sd_20-filtered-{detector}.parquet")
        record = json.loads((filtering_run / "filter" / detector / "in_sd_20" / "metrics.json").read_text())
        assert set(kept["id"]) <= set(mixture["id"]) and record["metrics"]["items_kept"] == len(kept)
        classified = json.loads((filtering_run / "classify" / "resnet50" / f"in_sd_20-filtered-{detector}" /
                                 "metrics.json").read_text())
        assert classified["status"] == "ok"
