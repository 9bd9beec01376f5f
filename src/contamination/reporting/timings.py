"""Where a run's time went: its jobs' Snakemake benchmark files summed per stage.

Every rule with a log has a ``benchmark:`` file at the log's path under
``results/<run>/benchmarks/`` (``.tsv`` for ``.log``): one TSV per job with its wall seconds
(``s``), CPU seconds (``cpu_time``) and peak resident memory (``max_rss``, MiB). The first folder
names the stage (``classify``, ``generate``, ``caption``, ...), as in ``logs/``. Wall seconds
add up job time, not the run's elapsed time (jobs overlap under ``--cores 2``); CPU seconds
depend less on what else the machine is doing, so compare those across machines and loads.

Command: ``timings``.
"""

import math
from pathlib import Path

from contamination.errors import DataError
from contamination.io import atomic_path

COLUMNS = ["stage", "jobs", "wall_seconds", "cpu_seconds", "share_of_wall", "slowest_job", "slowest_seconds",
           "max_rss_mib"]


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("timings", help="a run's job time per stage, from its benchmark files")
    parser.add_argument("--benchmarks", required=True, help="results/<run>/benchmarks")
    parser.add_argument("--out", help="also write the table as CSV here")
    parser.set_defaults(run=run_timings)


def read_benchmarks(directory) -> list:
    """One dict per job: stage, job (path under ``directory`` without .tsv), wall and CPU
    seconds, peak RSS. A job benchmarked several times (``--benchmark-repeats``) counts its mean."""
    import pandas as pd

    directory = Path(directory)
    files = sorted(directory.rglob("*.tsv"))
    if not files:
        raise DataError(f"no benchmark files under {directory} (run the workflow first)")
    jobs = []
    for path in files:
        table = pd.read_csv(path, sep="\t")
        missing = {"s", "cpu_time", "max_rss"} - set(table.columns)
        if missing:
            raise DataError(f"{path} is not a Snakemake benchmark file (no column {', '.join(sorted(missing))})")
        relative = path.relative_to(directory)
        jobs.append({
            "stage": relative.parts[0] if len(relative.parts) > 1 else "(top)",
            "job": str(relative.with_suffix("")),
            "wall_seconds": float(table["s"].mean()),
            "cpu_seconds": float(pd.to_numeric(table["cpu_time"], errors="coerce").mean()),
            "max_rss_mib": float(pd.to_numeric(table["max_rss"], errors="coerce").max()),
        })
    return jobs


def stage_table(jobs: list):
    """Per stage: job count, summed wall and CPU seconds, its share of all job wall time, its
    slowest job, and the largest peak RSS; slowest stage first, then a total row."""
    import pandas as pd

    frame = pd.DataFrame(jobs)
    total_wall = frame["wall_seconds"].sum()
    rows = []
    for stage, group in frame.groupby("stage", sort=False):
        slowest = group.loc[group["wall_seconds"].idxmax()]
        rows.append({
            "stage": stage, "jobs": len(group), "wall_seconds": group["wall_seconds"].sum(),
            "cpu_seconds": group["cpu_seconds"].sum(min_count=1),
            "share_of_wall": group["wall_seconds"].sum() / total_wall if total_wall else math.nan,
            "slowest_job": slowest["job"], "slowest_seconds": slowest["wall_seconds"],
            "max_rss_mib": group["max_rss_mib"].max(),
        })
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values("wall_seconds", ascending=False, kind="stable")
    total = {"stage": "all", "jobs": len(frame), "wall_seconds": total_wall,
             "cpu_seconds": frame["cpu_seconds"].sum(min_count=1), "share_of_wall": 1.0 if total_wall else math.nan,
             "slowest_job": table.iloc[0]["slowest_job"] if len(table) else "",
             "slowest_seconds": frame["wall_seconds"].max(), "max_rss_mib": frame["max_rss_mib"].max()}
    return pd.concat([table, pd.DataFrame([total], columns=COLUMNS)], ignore_index=True)


def run_timings(args) -> None:
    table = stage_table(read_benchmarks(args.benchmarks))
    shown = table.assign(share_of_wall=(100 * table["share_of_wall"]).round(1))
    print(shown.to_string(index=False, float_format=lambda value: f"{value:.1f}"))
    if args.out:
        with atomic_path(args.out) as temporary:
            table.to_csv(temporary, index=False)
