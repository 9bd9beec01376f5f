"""Tables put the measured number beside the paper's, and never take a measured number from the paper."""

import json
import math
import subprocess
import sys

import pandas as pd

from contamination.reporting import tables
from helpers import cli, environment

SPEC = {
    "name": "table1",
    "reported_table": "1",
    "experiment": "classify",
    "models": ["resnet50", "swin_s"],
    "metrics": ["top1_imagenet_val"],
    "rows": [{"dataset": "ImageNet", "mixture": "imagenet"}, {"dataset": "IN/WV-80%", "mixture": "in_wv_80"}],
}


def write_metrics(path, status, value, reason=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {"status": status, "metrics": {"top1_imagenet_val": value}, "reasons": {}}
    if reason:
        run["reasons"]["top1_imagenet_val"] = reason
    path.write_text(json.dumps(run))
    return str(path)


def cells(tmp_path):
    return {
        "ImageNet|resnet50": write_metrics(tmp_path / "a.json", "ok", 61.25),
        "ImageNet|swin_s": write_metrics(tmp_path / "b.json", "ok", 12.5),
        "IN/WV-80%|resnet50": write_metrics(tmp_path / "c.json", "ok", 40.0),
        "IN/WV-80%|swin_s": write_metrics(tmp_path / "d.json", "diverged", None, "loss became inf at epoch 3"),
    }


def test_measured_beside_reported(tmp_path):
    frame = tables.build_table(SPEC, cells(tmp_path)).set_index(["dataset", "model"])
    cell = frame.loc[("ImageNet", "resnet50")]
    assert cell["measured"] == 61.25 and cell["reported"] == 75.7
    assert math.isclose(cell["difference"], 61.25 - 75.7)
    assert frame.loc[("ImageNet", "swin_s"), "reported"] == 83.1


def test_every_row_names_the_tier_and_only_the_paper_tier_has_a_difference(tmp_path):
    paper = tables.build_table(SPEC, cells(tmp_path))
    assert set(paper["tier"]) == {"paper"} and paper["difference"].notna().sum() == 3
    budget = tables.build_table(dict(SPEC, tier="budget"), cells(tmp_path)).set_index(["dataset", "model"])
    assert set(budget["tier"]) == {"budget"} and budget["difference"].isna().all()
    cell = budget.loc[("ImageNet", "resnet50")]
    assert cell["measured"] == 61.25 and cell["reported"] == 75.7 and cell["status"] == "ok"
    out = tmp_path / "table1.csv"  # the tier reaches the CSV through the command's spec
    cli("table", "--spec", json.dumps(dict(SPEC, tier="budget")), "--cells", json.dumps(cells(tmp_path)), "--out", out)
    assert set(pd.read_csv(out)["tier"]) == {"budget"}


def test_diverged_cell_is_nan_with_reason_and_paper_note(tmp_path):
    frame = tables.build_table(SPEC, cells(tmp_path)).set_index(["dataset", "model"])
    cell = frame.loc[("IN/WV-80%", "swin_s")]
    assert math.isnan(cell["measured"]) and cell["status"] == "diverged"
    assert "loss became inf at epoch 3" in cell["note"]
    assert "paper: loss exploded" in cell["note"]  # the paper's own cell is NaN too


def test_a_nan_cell_of_a_finished_run_says_why_it_is_not_ok(tmp_path):
    """SPICE without CoreNLP: the run is "ok", its SPICE is null with a reason."""
    spec = dict(SPEC, metrics=["top1_imagenet_val", "SPICE", "CIDEr"])
    run = {"status": "ok", "metrics": {"top1_imagenet_val": 61.25, "SPICE": None},
           "reasons": {"SPICE": "SPICE needs Stanford CoreNLP 3.6.0"}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    runs = dict(cells(tmp_path), **{"ImageNet|resnet50": str(tmp_path / "run.json")})
    frame = tables.build_table(spec, runs).set_index(["dataset", "model", "metric"])
    assert frame.loc[("ImageNet", "resnet50", "top1_imagenet_val"), "status"] == "ok"
    spice = frame.loc[("ImageNet", "resnet50", "SPICE")]
    assert spice["status"] == "unavailable" and "CoreNLP" in spice["note"]
    cider = frame.loc[("ImageNet", "resnet50", "CIDEr")]
    assert cider["status"] == "not run" and "metric CIDEr was not measured" in cider["note"]
    assert frame.loc[("IN/WV-80%", "swin_s", "SPICE"), "status"] == "diverged"
    nan_cells = frame[frame["measured"].isna()]
    assert len(nan_cells) == 9 and not (nan_cells["status"] == "ok").any()


def test_cli_writes_csv(tmp_path):
    out = tmp_path / "tables" / "table1.csv"
    cli("table", "--spec", json.dumps(SPEC), "--cells", json.dumps(cells(tmp_path)), "--out", out)
    frame = pd.read_csv(out)
    assert list(frame.columns) == tables.TABLE_COLUMNS
    assert len(frame) == 4


def test_every_configured_table_cell_has_a_reported_value():
    from contamination import config as cfg

    reported = tables.reported_values()
    for table in cfg.load()["tables"]:
        if not table["reported_table"]:  # beyond the paper
            continue
        for row in table["rows"]:
            for model in table["models"]:
                for metric in table["metrics"]:
                    assert (table["reported_table"], row["dataset"], model, metric) in reported, (table["name"], row, model, metric)


def test_table_command_does_not_import_torch():
    code = (
        "import sys; from contamination.__main__ import build_parser; build_parser();"
        "import contamination.reporting.tables;"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'pandas', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
