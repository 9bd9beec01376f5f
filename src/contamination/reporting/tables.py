"""Paper tables as CSV: every cell's measured value beside the value the paper reports.

A table spec (config `tables`) names the experiment, its models and metrics, and maps each row
label of the paper's table to the run that measures it (usually a mixture name). Each cell's
number is read from that run's metrics.json (written by the experiment); the paper's number comes
from the reported-values file shipped with the package (paper/reported.csv, one row per cell of
the paper). A measured value is never taken from that file: a cell whose run has no number gets
NaN and the run's reason.

metrics.json of a run: {"status": "ok" | "diverged" | ..., "metrics": {name: float | null},
"reasons": {name: "why it is null"}, "provenance": {...}}.

A cell's status is "ok" only if it holds a number: a NaN cell of a run that finished is
"unavailable" (the run could not compute that metric, e.g. SPICE offline) or "not run" (the run
has no such metric); a NaN cell of a run that did not finish has the run's status ("diverged").

Every row carries the run's ``tier`` (config ``tier``; the spec's "tier" key, absent at its
default "paper"). Only a paper-tier table has a ``difference``: another tier (config/budget.yaml)
measures other classes, resolutions and schedules, so its numbers stand beside the paper's for
direction only, and ``difference`` is NaN.
"""

import csv
import json
import math
from importlib import resources

from contamination.config import PAPER_TIER, settings_argument
from contamination.io import atomic_path, write_json
from contamination.reporting.provenance import table_provenance

TABLE_COLUMNS = ["table", "tier", "dataset", "model", "metric", "measured", "reported", "difference", "status", "note"]


def reported_values():
    """{(table, dataset, model, metric): (value, note)} from the paper."""
    text = resources.files("contamination.reporting").joinpath("paper/reported.csv").read_text()
    values = {}
    for row in csv.DictReader(text.splitlines()):
        key = (row["table"], row["dataset"], row["model"], row["metric"])
        values[key] = (float(row["value"]), row["note"])
    return values


def cell_metrics(metrics_path):
    with open(metrics_path) as handle:
        return json.load(handle)


def measured_value(run: dict, metric: str):
    """(value, reason): the run's number for ``metric``, or NaN and why there is none."""
    value = run.get("metrics", {}).get(metric)
    if value is not None and math.isfinite(value):
        return float(value), ""
    reason = run.get("reasons", {}).get(metric)
    if reason is None:
        status = run.get("status", "unknown")
        reason = f"run status {status}" if status != "ok" else f"metric {metric} was not measured"
    return math.nan, reason


def cell_status(run: dict, metric: str, measured: float) -> str:
    status = run.get("status", "unknown")
    if math.isfinite(measured) or status != "ok":
        return status
    return "unavailable" if metric in run.get("metrics", {}) else "not run"


def build_table(spec: dict, cells: dict, reported=None):
    """Rows of the table CSV. ``cells`` maps "<row label>|<model>" to that run's metrics.json path."""
    import pandas as pd

    reported = reported_values() if reported is None else reported
    tier = spec.get("tier", PAPER_TIER)
    rows = []
    for row in spec["rows"]:
        for model in spec["models"]:
            run = cell_metrics(cells[f"{row['dataset']}|{model}"])
            for metric in spec["metrics"]:
                measured, reason = measured_value(run, metric)
                paper_value, paper_note = reported.get(
                    (spec["reported_table"], row["dataset"], model, metric), (math.nan, "not reported")
                )
                notes = [note for note in (reason, f"paper: {paper_note}" if paper_note else "") if note]
                rows.append(
                    {
                        "table": spec["name"],
                        "tier": tier,
                        "dataset": row["dataset"],
                        "model": model,
                        "metric": metric,
                        "measured": measured,
                        "reported": paper_value,
                        "difference": measured - paper_value if tier == PAPER_TIER else math.nan,
                        "status": cell_status(run, metric, measured),
                        "note": "; ".join(notes),
                    }
                )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def write_table(frame, path) -> None:
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False, float_format="%.6g")


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("table", help="write one paper table as CSV, measured beside reported")
    parser.add_argument("--spec", required=True, type=settings_argument("tables[]"),
                        help="JSON: one entry of config `tables` (defaults may be left out) and the run's "
                             "`tier` unless it is paper")
    parser.add_argument("--cells", required=True, type=json.loads, help='JSON: {"<row>|<model>": metrics.json}')
    parser.add_argument("--out", required=True)
    parser.add_argument("--provenance", help="also write the table's provenance sidecar (JSON) here")
    parser.set_defaults(run=run_table)


def run_table(args) -> None:
    write_table(build_table(args.spec, args.cells), args.out)
    if args.provenance:
        write_json(table_provenance(args.spec, args.cells), args.provenance)
