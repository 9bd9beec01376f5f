"""Run every benchmark group, print one table and write benchmarks/results/<name>.json.

    python -m benchmarks.run                  # all groups: 6 min on 2 quiet cores (13 when shared)
    python -m benchmarks.run --long           # also torch.compile and a whole `make smoke`
    python -m benchmarks.run --quick --only loading metrics

Each group runs in its own process (python -m benchmarks.<group>), so one group's memory and
imports do not weigh on the next, and a group that fails becomes a row saying so. The JSON holds
the machine (CPU, cores, RAM, GPU, versions, load average before and after), the settings and
every row; see benchmarks/measure.py for what the columns mean.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import PROJECT, format_table, limit_threads, machine, project_environment, row

GROUPS = ["generation", "loading", "manifests", "workflow", "metrics"]
RESULTS = PROJECT / "benchmarks" / "results"


def run_group(group: str, workdir: Path, options: list, env: dict):
    """The group's rows, or one row saying why it failed; and its wall seconds."""
    out = workdir / f"{group}.json"
    command = [sys.executable, "-m", f"benchmarks.{group}", "--workdir", str(workdir / group), "--json", str(out),
               *options]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or not out.is_file():
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(result.stderr[-3000:], file=sys.stderr)
        return [row(group, "FAILED", unit="-", basis="-", baseline_label="-", baseline=None, ours=None,
                    higher_is_better=True, note=f"exit {result.returncode}: {reason}")], seconds
    return json.loads(out.read_text()), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="run these groups only")
    parser.add_argument("--quick", action="store_true", help="small sizes (to try the suite; not for the record)")
    parser.add_argument("--long", action="store_true", help="also torch.compile and a whole `make smoke`")
    parser.add_argument("--threads", type=int, default=1, help="threads of torch/BLAS/OpenMP per process (default 1)")
    parser.add_argument("--name", help="results file name (default: <date>-<cpus>cpu-<gpu or nogpu>[-quick])")
    parser.add_argument("--workdir", help="keep inputs here and reuse them (default: a temporary directory)")
    args = parser.parse_args(argv)

    limit_threads(args.threads)
    groups = args.only or GROUPS
    options = ["--threads", str(args.threads)] + ["--quick"] * args.quick + ["--long"] * args.long
    env = project_environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    started = datetime.datetime.now(datetime.timezone.utc)
    description = machine()
    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="contamination-benchmarks-")
    workdir = Path(args.workdir or temporary.name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rows, group_seconds = [], {}
    try:
        for group in groups:
            print(f"running {group} ...", flush=True)
            group_rows, group_seconds[group] = run_group(group, workdir, options, env)
            rows += group_rows
            print(format_table(group_rows) + "\n", flush=True)
    finally:
        if temporary is not None:
            temporary.cleanup()
    total = sum(group_seconds.values())
    description["load_average_at_end"] = list(os.getloadavg())
    gpu = "nogpu" if description["gpu"] == "no GPU" else "gpu"
    name = args.name or f"{started:%Y-%m-%d}-{description['usable_cpus']}cpu-{gpu}" + ("-quick" * args.quick)
    result = {
        "name": name,
        "started": started.isoformat(timespec="seconds"),
        "machine": description,
        "settings": {"groups": groups, "quick": args.quick, "long": args.long, "threads": args.threads},
        "seconds": {"total": total, **group_seconds},
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(rows))
    load = description["load_average"]
    print(f"\n{len(groups)} groups in {total / 60:.1f} min on {description['cpu_model']} "
          f"({description['usable_cpus']} CPUs, {description['ram_gib']} GiB, {description['gpu']}); "
          f"load average at start {load[0]:.2f}, at end {description['load_average_at_end'][0]:.2f}; "
          f"written to {path.relative_to(PROJECT)}")
    return 0 if all(r["case"] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
