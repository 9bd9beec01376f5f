"""Small helpers shared by the tests (config overlays, running the CLI and Snakemake)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
SNAKEFILE = PROJECT / "Snakefile"
SMOKE_CONFIG = PROJECT / "config" / "smoke.yaml"
PAPER_CONFIG = PROJECT / "config" / "config.yaml"
BUDGET_CONFIG = PROJECT / "config" / "budget.yaml"
SMOKE_BUDGET_CONFIG = PROJECT / "config" / "smoke-budget.yaml"


CHECKOUT = ("Snakefile", "workflow", "src", "config", "profiles", "envs")


def copy_checkout(directory) -> Path:
    """A copy of what a clone holds to run the workflow (no results, no caches) in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for part in CHECKOUT:
        if (PROJECT / part).is_dir():
            shutil.copytree(PROJECT / part, directory / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(PROJECT / part, directory / part)
    return directory


def write_yaml(path, data) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def paper_config_with_empty_roots(directory) -> Path:
    """An overlay on the paper config whose dataset and model locations are empty directories."""
    directory = Path(directory)
    config = yaml.safe_load(PAPER_CONFIG.read_text())
    for source, settings in config["sources"].items():
        root = directory / "data" / source
        root.mkdir(parents=True)
        settings["root"] = str(root)
        if "karpathy_json" in settings:
            settings["karpathy_json"] = str(root / Path(settings["karpathy_json"]).name)
            Path(settings["karpathy_json"]).touch()
    # Every model location exists: a weights file (a name with a suffix) or a model directory.
    for key, location in config["models"].items():
        if not isinstance(location, str):
            continue
        path = directory / "models" / Path(location).name
        path.parent.mkdir(parents=True, exist_ok=True)
        if Path(location).suffix:
            path.touch()
        else:
            path.mkdir()
        config["models"][key] = str(path)
    return write_yaml(directory / "paper.yaml", {"sources": config["sources"], "models": config["models"]})


def budget_overlays(directory) -> list:
    """config/budget.yaml and a site overlay whose dataset and model locations are empty
    directories: paper_config_with_empty_roots' locations only, as a site overlay holds them (its
    other `sources` keys, the paper's, would override the budget's)."""
    site = yaml.safe_load(paper_config_with_empty_roots(directory).read_text())
    site["sources"] = {source: {key: value for key, value in settings.items() if key in ("root", "karpathy_json")}
                       for source, settings in site["sources"].items()}
    return [BUDGET_CONFIG, write_yaml(Path(directory) / "site.yaml", site)]


def environment():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(*arguments, cwd, check=True, snakefile=SNAKEFILE) -> subprocess.CompletedProcess:
    """Run Snakemake on the project's Snakefile (or ``snakefile``) with ``cwd`` as its working directory."""
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), *map(str, arguments)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=environment())
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return result


def cli(*arguments, check=True, cwd=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "contamination", *map(str, arguments)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment(), cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"contamination {arguments[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result


def cli_in(checkout, *arguments, cwd) -> subprocess.CompletedProcess:
    """`python -m contamination` of a copied checkout's own src/ (and so of its Snakefile)."""
    env = dict(environment(), PYTHONPATH=str(Path(checkout) / "src"))
    result = subprocess.run([sys.executable, "-m", "contamination", *map(str, arguments)], cwd=cwd,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def job_counts(dry_run_output: str) -> dict:
    """The 'Job stats' table of a Snakemake dry run as {rule: count}."""
    lines = dry_run_output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    counts = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def lock_holder(final_path) -> subprocess.Popen:
    """Another process holding io.exclusive_lock(final_path) until its stdin closes or it is killed."""
    code = ("import sys\nfrom contamination.io import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1], 'the test output'):\n    print('held', flush=True)\n    sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(final_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=environment())
    assert holder.stdout.readline() == "held\n"
    return holder


def signal_during_step(monkeypatch, step: int, signum=None) -> None:
    """Send this process ``signum`` (default SIGUSR1, SLURM's warning before a time limit) during
    training step ``step`` (counted from 1 across epochs), after its forward pass: from
    training.check_step, before it checks the step, so the trainer's own StopRequest handler
    catches the real signal at a known step."""
    import itertools
    import signal

    from contamination.experiments import training

    real_check_step = training.check_step
    calls = itertools.count(1)

    def check_step(loss, stop, *args, **kwargs):
        if next(calls) == step:
            assert isinstance(stop, training.StopRequest), "the trainer must listen for real signals"
            os.kill(os.getpid(), signal.SIGUSR1 if signum is None else signum)
            assert stop.requested, "the signal did not reach the trainer's handler"
        return real_check_step(loss, stop, *args, **kwargs)

    monkeypatch.setattr(training, "check_step", check_step)


class FakeClock:
    """A monotonic clock (seconds) that moves only when told (Checkpointer's ``clock``)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
