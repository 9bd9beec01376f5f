"""The per-stage job time of a run, from its Snakemake benchmark files."""

import pytest

from contamination.__main__ import main
from contamination.reporting.timings import read_benchmarks, stage_table

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_benchmark(path, *measurements):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{wall}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n" for wall, cpu, rss in measurements]
    path.write_text(HEADER + "".join(lines))


@pytest.fixture
def benchmarks(tmp_path):
    directory = tmp_path / "benchmarks"
    write_benchmark(directory / "classify" / "resnet50" / "IN.tsv", (30.0, 50.0, 900.0))
    write_benchmark(directory / "classify" / "resnet50" / "IN-SD-20.tsv", (10.0, 12.0, 700.0))
    # Two repeats of one job count as their mean.
    write_benchmark(directory / "generate" / "sd_imagenet" / "shard-00000.tsv", (5.0, 4.0, 300.0), (15.0, 6.0, 310.0))
    write_benchmark(directory / "report" / "spectra.tsv", (0.5, "-", 100.0))
    return directory


def test_stages_sum_their_jobs_and_the_slowest_stage_comes_first(benchmarks):
    table = stage_table(read_benchmarks(benchmarks)).set_index("stage")
    assert list(table.index) == ["classify", "generate", "report", "all"]
    assert table.loc["classify", ["jobs", "wall_seconds", "cpu_seconds", "max_rss_mib"]].tolist() == [2, 40.0, 62.0, 900.0]
    assert table.loc["classify", "slowest_job"] == "classify/resnet50/IN"
    assert table.loc["generate", "wall_seconds"] == 10.0 and table.loc["generate", "max_rss_mib"] == 310.0
    assert table.loc["all", "wall_seconds"] == 50.5 and table.loc["all", "jobs"] == 4
    assert table.loc["classify", "share_of_wall"] == pytest.approx(40.0 / 50.5)
    assert table.loc["report", "cpu_seconds"] != table.loc["report", "cpu_seconds"]  # "-" is unknown, not 0


def test_the_command_prints_and_writes_the_table(benchmarks, tmp_path, capsys):
    out = tmp_path / "timings.csv"
    assert main(["timings", "--benchmarks", str(benchmarks), "--out", str(out)]) == 0
    assert "classify" in capsys.readouterr().out
    assert out.read_text().splitlines()[0].startswith("stage,jobs,wall_seconds,cpu_seconds")


def test_a_directory_without_benchmarks_or_a_foreign_tsv_is_an_error(tmp_path, capsys):
    assert main(["timings", "--benchmarks", str(tmp_path)]) == 2
    assert f"no benchmark files under {tmp_path}" in capsys.readouterr().err
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "other.tsv").write_text("a\tb\n1\t2\n")
    assert main(["timings", "--benchmarks", str(tmp_path)]) == 2
    assert "other.tsv is not a Snakemake benchmark file (no column cpu_time, max_rss, s)" in capsys.readouterr().err
