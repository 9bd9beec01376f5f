"""Timing, peak memory, the machine's description and the result rows every benchmark shares.

Peak memory is the resident set's high-water mark (Linux ``VmHWM``): reset before a measured
block by writing 5 to ``/proc/self/clear_refs``, so each block gets its own peak even inside one
long process; for a subprocess it is the child's own ``ru_maxrss`` from ``wait4``. Both include
what the process already held (interpreter, imported libraries), so a block's cost is its peak
minus ``start_mib``.

Time is measured twice: wall seconds, and CPU seconds (``time.process_time`` for a block: all
threads of this process; ``wait4``'s usage for a subprocess: it and the children it waited for). On a machine shared with other
work, wall time stretches with the load while CPU time of single-threaded work stays what an idle
core would take, so rows are computed on the CPU-time ``basis`` unless they say "wall"; the
benchmarks run single-threaded (benchmarks.run sets the thread counts) so that CPU time is not
inflated by threads spinning while they wait for a core. Baseline and ours are also run
alternately (``alternate``), so a slow patch of the machine hits both; each reports the median of
its repeats.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


class Measurement:
    """Wall and CPU seconds, peak resident MiB, and the resident MiB when the block started."""

    def __init__(self):
        self.seconds = self.cpu_seconds = self.peak_mib = self.start_mib = None

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "peak_mib": self.peak_mib,
                "start_mib": self.start_mib}


@contextlib.contextmanager
def measured():
    measurement = Measurement()
    reset_peak()
    measurement.start_mib = _status_mib("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        yield measurement
    finally:
        measurement.seconds = time.perf_counter() - start
        measurement.cpu_seconds = time.process_time() - cpu_start
        measurement.peak_mib = _status_mib("VmHWM")


def timed(function, *arguments, **keywords):
    """A case for ``alternate``: calls ``function`` and returns its measurement as a dict."""
    def case():
        with measured() as measurement:
            function(*arguments, **keywords)
        return measurement.as_dict()
    return case


# Started by run_command in place of the command: a fresh small process, so that the command's
# peak is its own. (Linux carries the exec-ing process's peak RSS over into ru_maxrss, so a
# command started straight from a benchmark holding gigabytes would report at least those.)
LAUNCHER = """
import json, os, sys, time
report, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
os.chdir(cwd)
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(report, "w") as handle:
    json.dump({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
               "peak_mib": usage.ru_maxrss / 1024, "returncode": os.waitstatus_to_exitcode(status)}, handle)
"""


def run_command(argv, cwd=None, env=None, check=True) -> dict:
    """Run ``argv``: wall and CPU seconds (with the children it waited for), peak resident MiB of
    it or any such child, return code and output."""
    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "usage.json"
        with open(Path(directory) / "out", "w+") as out, open(Path(directory) / "err", "w+") as err:
            subprocess.run([sys.executable, "-c", LAUNCHER, str(report), str(cwd or os.getcwd()), *map(str, argv)],
                           env=env, stdout=out, stderr=err, check=True)
            out.seek(0)
            err.seek(0)
            result = {**json.loads(report.read_text()), "stdout": out.read(), "stderr": err.read()}
    if check and result["returncode"] != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({result['returncode']}):\n"
                           f"{result['stdout'][-2000:]}\n{result['stderr'][-4000:]}")
    return result


def project_environment() -> dict:
    """The environment with this interpreter's directory first on PATH (snakemake, python)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def alternate(cases: dict, repeats: int) -> dict:
    """Call each ``cases[name]()`` (which returns a dict with at least ``seconds``) ``repeats``
    times, round-robin with the starting case rotating; {name: list of results}."""
    names = list(cases)
    results = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(cases[name]())
    return results


def median_of(results, key: str):
    return statistics.median(result[key] for result in results)


def peak_of(results):
    return max(result["peak_mib"] for result in results)


def row(group: str, case: str, *, unit: str, baseline_label: str, baseline, ours,
        higher_is_better: bool, basis: str = "cpu", baseline_peak_mib=None, ours_peak_mib=None,
        target: str = "", target_met=None, note: str = "", **extra) -> dict:
    """One result: ``speedup`` > 1 means ours is better than the baseline, whatever the unit.
    ``basis`` says whether times are CPU or wall seconds."""
    speedup = None
    if baseline and ours:
        speedup = ours / baseline if higher_is_better else baseline / ours
    return {
        "group": group, "case": case, "unit": unit, "basis": basis, "baseline_label": baseline_label,
        "baseline": baseline, "ours": ours, "speedup": speedup,
        "baseline_peak_mib": baseline_peak_mib, "ours_peak_mib": ours_peak_mib,
        "target": target, "target_met": target_met, "note": note, **extra,
    }


def rate_row(group: str, case: str, count: int, baseline_results, ours_results, *, unit: str,
             baseline_label: str, **keywords) -> dict:
    """A throughput row (``count`` items per median second) on the CPU basis, with the wall-time
    rates beside it."""
    def rate(results, key):
        return count / median_of(results, key)

    return row(group, case, unit=unit, baseline_label=baseline_label,
               baseline=rate(baseline_results, "cpu_seconds"), ours=rate(ours_results, "cpu_seconds"),
               higher_is_better=True, baseline_peak_mib=peak_of(baseline_results),
               ours_peak_mib=peak_of(ours_results), baseline_wall=rate(baseline_results, "seconds"),
               ours_wall=rate(ours_results, "seconds"), **keywords)


def machine() -> dict:
    """What the numbers were measured on."""
    from importlib.metadata import PackageNotFoundError, version

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "numpy", "scipy", "pandas", "pyarrow", "pillow", "diffusers",
                    "transformers", "snakemake"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    gpu = "no GPU"
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "gpu": gpu,
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
        "versions": versions,
        "project_commit": git_commit(),
    }


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" (with uncommitted changes)" if dirty else "")


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def format_table(rows) -> str:
    """The rows as a plain-text table: baseline, ours, speed-up, peak memory, target."""
    header = ["group", "case", "unit", "basis", "baseline (what)", "baseline", "ours", "speed-up",
              "peak MiB base/ours", "target", "met"]
    lines = []
    for result in rows:
        peaks = f"{format_value(result['baseline_peak_mib'])}/{format_value(result['ours_peak_mib'])}"
        met = {True: "yes", False: "NO", None: ""}[result["target_met"]]
        lines.append([result["group"], result["case"], result["unit"], result["basis"], result["baseline_label"],
                      format_value(result["baseline"]), format_value(result["ours"]),
                      format_value(result["speedup"]) + ("x" if result["speedup"] else ""), peaks,
                      result["target"], met])
    widths = [max(len(str(line[i])) for line in [header] + lines) for i in range(len(header))]
    render = lambda cells: "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()
    return "\n".join([render(header), render(["-" * width for width in widths])] + [render(line) for line in lines])


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Set the thread counts of the numeric libraries; before they are imported, and inherited by
    subprocesses."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)


def group_main(run_group, description: str) -> None:
    """Command line of one benchmark group: ``python -m benchmarks.<group> [--quick] ...``.

    ``run_group(workdir, quick, long)`` returns the rows; they are printed, and written as JSON to
    ``--json`` if given (how benchmarks.run collects them).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, for trying the benchmark out")
    parser.add_argument("--long", action="store_true", help="also the long optional cases (torch.compile, make smoke)")
    parser.add_argument("--workdir", help="where inputs are made (kept; reused when present)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--threads", type=int, default=1, help="threads of torch, BLAS and OpenMP (default 1)")
    args = parser.parse_args()
    limit_threads(args.threads)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
        Path(workdir).mkdir(parents=True, exist_ok=True)
        rows = run_group(Path(workdir).resolve(), args.quick, args.long)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
