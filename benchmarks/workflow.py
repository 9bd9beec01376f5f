"""Workflow overhead: the dry run of the paper DAG (time, job count), the start-up of CLI jobs,
and (with --long) the wall time of the whole `make smoke` against its 6-minute target, with the
smoke run's job time per stage.

Baselines: for the dry run, Snakemake planning a one-rule workflow with the same number of jobs
(what Snakemake itself costs per job, so the speed-up says what our Snakefile's input functions
and config checks add); for a CLI job, the bare import of the libraries that job needs. The
paper config gets empty dataset and model directories (tests/helpers.py
paper_config_with_empty_roots, the DAG tests' overlay), as a dry run needs them to exist.
"""

import json
import sys

from benchmarks.measure import PROJECT, alternate, group_main, median_of, peak_of, project_environment, row, \
    run_command

GROUP = "workflow"
SNAKEFILE = PROJECT / "Snakefile"
# A workflow of `jobs` jobs of one rule, planned by the same Snakemake: the baseline of the dry run.
FLAT_SNAKEFILE = """
rule all:
    input: expand("out/{number}.txt", number=range(int(config["jobs"])))

rule make:
    output: "out/{number}.txt"
    shell: "touch {output}"
"""


def test_helpers():
    sys.path.insert(0, str(PROJECT / "tests"))
    import helpers

    return helpers


def paper_overlay(directory):
    """The DAG tests' overlay, plus an empty placeholder for any model path it does not cover yet
    (a file where the path has a suffix, else a directory)."""
    import yaml

    helpers = test_helpers()
    directory.mkdir(parents=True, exist_ok=True)
    overlay = helpers.paper_config_with_empty_roots(directory)
    settings = yaml.safe_load(overlay.read_text())
    for key, value in settings["models"].items():
        if isinstance(value, str) and value.startswith("/path/to/"):
            placeholder = directory / "models" / value.rsplit("/", 1)[-1]
            placeholder.parent.mkdir(parents=True, exist_ok=True)
            placeholder.touch() if placeholder.suffix else placeholder.mkdir(exist_ok=True)
            settings["models"][key] = str(placeholder)
    return helpers.write_yaml(overlay, settings)


def dry_run_rows(workdir, repeats: int):
    helpers = test_helpers()
    paper_dir = workdir / "paper-dry-run"
    if paper_dir.exists():
        import shutil

        shutil.rmtree(paper_dir)
    paper_overlay(paper_dir)
    env = project_environment()
    paper = [sys.executable, "-m", "snakemake", "-s", SNAKEFILE, "-n", "--configfile", paper_dir / "paper.yaml"]
    first = run_command(paper, cwd=paper_dir, env=env)
    counts = helpers.job_counts(first["stdout"])
    jobs = counts.pop("total")
    flat_dir = workdir / "flat-dry-run"
    flat_dir.mkdir(exist_ok=True)
    (flat_dir / "Snakefile").write_text(FLAT_SNAKEFILE)
    flat = [sys.executable, "-m", "snakemake", "-n", "--config", f"jobs={jobs - 1}"]
    results = alternate({"baseline": lambda: run_command(flat, cwd=flat_dir, env=env),
                         "ours": lambda: run_command(paper, cwd=paper_dir, env=env)}, repeats)
    ours_cpu, ours_wall = median_of(results["ours"], "cpu_seconds"), median_of(results["ours"], "seconds")
    largest = sorted(counts.items(), key=lambda item: -item[1])[:4]
    return [row(GROUP, f"dry run of the paper DAG ({jobs:,} jobs)", unit="s",
                baseline_label=f"Snakemake, 1 rule x {jobs:,} jobs", baseline=median_of(results["baseline"], "cpu_seconds"),
                ours=ours_cpu, higher_is_better=False, baseline_peak_mib=peak_of(results["baseline"]),
                ours_peak_mib=peak_of(results["ours"]), target="< 10 s", target_met=ours_cpu < 10,
                note=f"wall {ours_wall:.1f} s at this load; largest rules: "
                     + ", ".join(f"{name} {count}" for name, count in largest),
                job_counts=counts, ours_wall=ours_wall)]


def table_inputs(workdir):
    """The table1 spec of the paper config and a metrics.json for each of its cells."""
    from contamination import config

    spec = next(table for table in config.load()["tables"] if table["name"] == "table1")
    cells = {}
    for number, table_row in enumerate(spec["rows"]):
        for model in spec["models"]:
            path = workdir / "cells" / f"{number}-{model}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"status": "ok", "metrics": {metric: 0.5 for metric in spec["metrics"]}}))
            cells[f"{table_row['dataset']}|{model}"] = str(path)
    return spec, cells


def startup_rows(workdir, repeats: int):
    env = project_environment()
    python = sys.executable
    spec, cells = table_inputs(workdir)
    commands = {
        "--help": ([python, "-c", "pass"], [python, "-m", "contamination", "--help"],
                   "python -c pass", "< 1 s"),
        "table-only command (table)": (
            [python, "-c", "import pandas"],
            [python, "-m", "contamination", "table", "--spec", json.dumps(spec), "--cells", json.dumps(cells),
             "--out", workdir / "table1.csv"],
            "python -c 'import pandas'", "< 1 s"),
        "torch command (tiny-sd)": (
            [python, "-c", "import torch, diffusers, transformers"],
            [python, "-m", "contamination", "tiny-sd", workdir / "tiny-sd", "--seed", "0"],
            "import torch, diffusers, transformers", ""),
    }
    rows = []
    for name, (floor, ours, floor_label, target) in commands.items():
        results = alternate({"baseline": lambda: run_command(floor, env=env),
                             "ours": lambda: run_command(ours, env=env)}, repeats)
        ours_cpu = median_of(results["ours"], "cpu_seconds")
        rows.append(row(GROUP, f"CLI start-up: {name}", unit="s", baseline_label=floor_label,
                        baseline=median_of(results["baseline"], "cpu_seconds"), ours=ours_cpu,
                        higher_is_better=False, baseline_peak_mib=peak_of(results["baseline"]),
                        ours_peak_mib=peak_of(results["ours"]), target=target,
                        target_met=(ours_cpu < 1) if target else None,
                        note=f"wall {median_of(results['ours'], 'seconds'):.2f} s at this load",
                        ours_wall=median_of(results["ours"], "seconds")))
    return rows


# What `make smoke` runs after set-up (Makefile), its reports left out: the smoke run, then the budget tier in miniature.
SMOKE_RUNS = {
    "smoke": ["--configfile", PROJECT / "config" / "smoke.yaml"],
    "smoke-budget": ["--configfile", *(PROJECT / "config" / name for name in ("budget.yaml", "smoke.yaml", "smoke-budget.yaml"))],
}
SMOKE_TARGET_SECONDS = 6 * 60


def smoke_row(workdir):
    """`make smoke` after set-up, from nothing in a fresh directory: its wall time against the
    6-minute target, and the smoke run's job time per stage (reporting/timings.py)."""
    from contamination.reporting.timings import read_benchmarks, stage_table

    directory = workdir / "smoke"
    directory.mkdir(exist_ok=True)
    seconds = cpu_seconds = jobs = 0
    peak, failures = 0.0, []
    for name, configs in SMOKE_RUNS.items():
        command = [sys.executable, "-m", "snakemake", "-s", SNAKEFILE, "--cores", "all", *configs]
        result = run_command(command, cwd=directory, env=project_environment(), check=False)
        seconds += result["seconds"]
        cpu_seconds += result["cpu_seconds"]
        peak = max(peak, result["peak_mib"] or 0.0)
        jobs += result["stdout"].count("Finished jobid") + result["stderr"].count("Finished jobid")
        if result["returncode"] != 0:
            failures.append(f"{name} FAILED (exit {result['returncode']}): {result['stderr'][-300:]}")
    stages = stage_table(read_benchmarks(directory / "results" / "smoke" / "benchmarks"))
    note = "; ".join([f"{jobs} jobs; CPU {cpu_seconds:.0f} s (with the jobs' processes)", *failures])
    return row(GROUP, "make smoke (the smoke run, then smoke-budget; --cores all, fresh directory)", unit="s",
               basis="wall", baseline_label="-", baseline=None, ours=seconds, higher_is_better=False,
               ours_peak_mib=peak, target=f"{SMOKE_TARGET_SECONDS // 60} min",
               target_met=not failures and seconds <= SMOKE_TARGET_SECONDS, note=note,
               returncode=1 if failures else 0, stages=stages.to_dict(orient="records"))


def run_group(workdir, quick: bool, long: bool):
    repeats = 1 if quick else 3
    rows = dry_run_rows(workdir, 1 if quick else 2) + startup_rows(workdir, repeats)
    if long:
        rows.append(smoke_row(workdir))
    return rows


if __name__ == "__main__":
    group_main(run_group, __doc__.splitlines()[0])
