"""The benchmark harness measures what it says (no timing is asserted: benchmarks time, tests
check): per-block and per-command peak memory, the baselines' own correctness, the synthetic
inputs' shapes."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks import loading, manifests, measure, metrics  # noqa: E402

MIB = 1024 * 1024


def test_measured_block_gets_its_own_peak():
    with measure.measured() as big:
        block = np.ones(200 * MIB // 8)
        block[::512] = 2.0
    del block
    with measure.measured() as small:
        sum(range(1000))
    assert big.peak_mib - big.start_mib > 150
    assert small.peak_mib - small.start_mib < 50
    assert big.cpu_seconds >= 0 and big.seconds > 0


def test_command_peak_is_its_own_not_the_parents():
    held = np.ones(300 * MIB // 8)  # a parent holding memory must not inflate the child's peak
    held[::512] = 2.0
    bare = measure.run_command([sys.executable, "-c", "pass"])
    allocating = measure.run_command([sys.executable, "-c", "import numpy; numpy.ones(100 * 2**20 // 8)[::512] = 2"])
    assert bare["peak_mib"] < 100 < allocating["peak_mib"] < 300
    assert bare["returncode"] == 0 and bare["cpu_seconds"] >= 0


def test_failing_command_raises_with_its_output():
    with pytest.raises(RuntimeError, match="exit-code-7"):
        measure.run_command([sys.executable, "-c", "import sys; print('exit-code-7'); sys.exit(7)"])
    result = measure.run_command([sys.executable, "-c", "import sys; sys.exit(7)"], check=False)
    assert result["returncode"] == 7


def test_speedup_is_above_one_when_ours_is_better_whatever_the_unit():
    faster = measure.row("g", "rate", unit="images/s", baseline_label="b", baseline=10.0, ours=20.0,
                         higher_is_better=True)
    quicker = measure.row("g", "time", unit="s", baseline_label="b", baseline=10.0, ours=5.0, higher_is_better=False)
    assert faster["speedup"] == quicker["speedup"] == 2.0
    table = measure.format_table([faster, quicker])
    assert "2x" in table and "rate" in table.splitlines()[2]


def test_synthetic_class_sizes_have_the_real_total_and_bounds():
    sizes = manifests.class_sizes(manifests.IMAGENET_TRAIN, 1000, 732, 1300, seed=0)
    assert sizes.sum() == 1_281_167 and sizes.min() == 732 and sizes.max() == 1300 and len(set(sizes)) > 20
    webvision = manifests.class_sizes(manifests.WEBVISION_TRAIN, 1000, 300, 10_000, seed=1)
    assert webvision.sum() == 2_439_574 and webvision.min() >= 300 and webvision.max() <= 10_000


def test_scipy_fid_baseline_agrees_with_ours():
    from contamination.metrics.fidelity import fid

    rng = np.random.default_rng(0)
    first = rng.standard_normal((400, 16))
    second = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16)) * 0.5 + 1.0
    assert metrics.scipy_fid(first, second) == pytest.approx(fid(first, second), rel=1e-8)


def test_every_project_name_a_benchmark_imports_exists():
    """Benchmarks import inside functions (so a group starts fast); a renamed function would only
    fail when that group runs, so every such import is resolved here."""
    import ast
    import importlib

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    imported = set()
    for path in benchmarks.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("contamination"):
                imported.update((path.name, node.module, alias.name) for alias in node.names)
    assert len(imported) > 20
    def resolves(module, attribute):
        if hasattr(importlib.import_module(module), attribute):
            return True
        try:
            importlib.import_module(f"{module}.{attribute}")  # a submodule: from contamination import config
        except ModuleNotFoundError:
            return False
        return True

    missing = [f"{name}: {module}.{attribute}" for name, module, attribute in sorted(imported)
               if not resolves(module, attribute)]
    assert missing == []


def test_the_generation_benchmark_builds_and_loads_the_tiny_pipeline(tmp_path):
    from benchmarks import generation

    from contamination import config
    from contamination.generation.generate import load_pipeline

    directory = generation.tiny_pipeline_dir(tmp_path)
    assert generation.tiny_pipeline_dir(tmp_path) == directory
    pipeline = load_pipeline(directory, config.load()["generation"])
    assert pipeline.unet.config.sample_size > 0


def test_the_smoke_row_adds_both_runs_against_the_six_minute_target_and_a_failure_misses_it(tmp_path, monkeypatch):
    from benchmarks import workflow

    def finished_run(argv, cwd=None, env=None, check=True):
        stage = Path(cwd) / "results" / "smoke" / "benchmarks" / "classify"
        stage.mkdir(parents=True, exist_ok=True)
        (stage / "resnet50-in.tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n100.0\t0:01:40\t900\t150.0\n")
        failed = "smoke-budget.yaml" in " ".join(map(str, argv)) and fail
        return {"seconds": 200.0, "cpu_seconds": 300.0, "peak_mib": 900.0, "returncode": 1 if failed else 0,
                "stdout": "Finished jobid: 1\nFinished jobid: 2\n", "stderr": "boom" if failed else ""}

    monkeypatch.setattr(workflow, "run_command", finished_run)
    fail = False
    result = workflow.smoke_row(tmp_path)
    assert result["ours"] == 400.0 and result["target"] == "6 min" and result["target_met"] is False
    assert result["note"].startswith("4 jobs; CPU 600 s")
    assert result["stages"][0]["stage"] == "classify" and result["stages"][0]["cpu_seconds"] == 150.0
    monkeypatch.setattr(workflow, "SMOKE_TARGET_SECONDS", 400)
    assert workflow.smoke_row(tmp_path)["target_met"] is True
    fail = True
    failed = workflow.smoke_row(tmp_path)
    assert failed["target_met"] is False and "smoke-budget FAILED (exit 1): boom" in failed["note"]
