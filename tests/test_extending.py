"""README "Extending": a new experiment added to a copy of the checkout through the files that
section names (its module with a verb and table_metrics, its entry in EXPERIMENTS and in
COMMAND_MODULES, its rule file and include, a table in the config) is checked, planned and run
by the workflow like the paper's own, and its table holds the numbers its runs wrote."""

import textwrap

import pandas as pd
import pytest

from contamination import config as cfg
from helpers import SMOKE_CONFIG, cli_in, copy_checkout, job_counts, snakemake, write_yaml

pytestmark = pytest.mark.workflow

COUNTING_MODULE = '''
"""A toy experiment: how many items a mixture has, and from how many datasets."""

from contamination import records

METRIC_NAMES = ["items", "origins"]


def table_metrics(config: dict) -> list:
    return list(METRIC_NAMES)


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("count-items", help="count the items of a mixture manifest")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_count_items)


def run_count_items(args) -> None:
    from contamination.io import read_parquet

    manifest = read_parquet(args.manifest)
    metrics = {"items": len(manifest), "origins": manifest["origin"].nunique()}
    provenance = records.provenance({"manifest": records.sha256_of_file(args.manifest)}, seed=0, world_size=1,
                                    device="cpu", packages=("pandas",), models={})
    records.write_metrics(args.out, metrics, {}, "ok", provenance)
'''

COUNTING_RULES = '''
# The toy experiment of tests/test_extending.py: one job per mixture a table asks for.


rule count_items:
    input:
        manifest_path("{mixture}"),
    output:
        metrics_path("counting", "items", "{mixture}"),
    log:
        LOGS / "counting" / "{mixture}.log",
    conda:
        ENV
    shell:
        "python -m contamination count-items --manifest {input:q} --out {output:q} > {log:q} 2>&1"
'''

TOY_TABLE = {"name": "counts", "reported_table": "none", "experiment": "counting", "models": ["items"],
             "metrics": ["items", "origins"],
             "rows": [{"dataset": "ImageNet", "mixture": "imagenet"}, {"dataset": "IN/WV-40%", "mixture": "in_wv_40"}]}


def add_text(path, anchor: str, text: str) -> None:
    """Insert ``text`` after the first line holding ``anchor`` (the test fails if there is none)."""
    lines = path.read_text().splitlines(keepends=True)
    position = next(number for number, line in enumerate(lines) if anchor in line)
    lines.insert(position + 1, text)
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    directory = tmp_path_factory.mktemp("extending")
    checkout = copy_checkout(directory / "checkout")
    package = checkout / "src" / "contamination"
    (package / "experiments" / "counting.py").write_text(COUNTING_MODULE.lstrip())
    add_text(package / "experiments" / "__init__.py", "EXPERIMENTS = {",
             '    "counting": {"module": "contamination.experiments.counting", "runs": "mixtures"},\n')
    add_text(package / "__main__.py", "COMMAND_MODULES = [", '    "contamination.experiments.counting",\n')
    (checkout / "workflow" / "rules" / "counting.smk").write_text(COUNTING_RULES.lstrip())
    add_text(checkout / "Snakefile", 'include: "workflow/rules/report.smk"', 'include: "workflow/rules/counting.smk"\n')
    tables = cfg.load(SMOKE_CONFIG)["tables"] + [TOY_TABLE]
    overlay = write_yaml(directory / "counting.yaml", {"tables": tables})
    return checkout, ["--configfile", SMOKE_CONFIG, overlay]


def run(checkout, *arguments, check=True):
    return snakemake(*arguments, cwd=checkout, snakefile=checkout / "Snakefile", check=check)


def test_an_unknown_experiment_is_refused_naming_the_closest(extended, tmp_path):
    checkout, configs = extended
    table = dict(TOY_TABLE, experiment="countin")
    overlay = write_yaml(tmp_path / "typo.yaml", {"tables": cfg.load(SMOKE_CONFIG)["tables"] + [table]})
    result = run(checkout, "-n", "--configfile", SMOKE_CONFIG, overlay, check=False)
    assert result.returncode != 0
    assert "unknown experiment 'countin' (did you mean 'counting'?)" in result.stdout + result.stderr


def test_the_new_experiment_is_in_the_dag_the_plan_and_its_table(extended, tmp_path):
    checkout, configs = extended
    counts = job_counts(run(checkout, "-n", "--forceall", *configs).stdout)
    assert counts["count_items"] == 2 and counts["table"] == len(cfg.load(SMOKE_CONFIG)["tables"]) + 1
    cli_in(checkout, "plan", "--configfile", *configs[1:], "--out", tmp_path / "plan.csv", cwd=checkout)
    plan = pd.read_csv(tmp_path / "plan.csv")
    counted = plan[(plan["scope"] == "counts") & (plan["rule"] == "count_items")].iloc[0]
    assert counted["jobs"] == 2 and counted["gpu_hours"] == 0
    run(checkout, "--cores", "2", "counts", *configs)
    table = pd.read_csv(checkout / "results" / "smoke" / "tables" / "counts.csv")
    manifests = {row["dataset"]: pd.read_parquet(checkout / "results" / "smoke" / "mixtures" / f"{row['mixture']}.parquet")
                 for row in TOY_TABLE["rows"]}
    for dataset, manifest in manifests.items():
        cells = table[table["dataset"] == dataset].set_index("metric")
        assert cells.loc["items", "measured"] == len(manifest) > 0
        assert cells.loc["origins", "measured"] == manifest["origin"].nunique()
        assert (cells["status"] == "ok").all()
    assert table.loc[table["dataset"] == "IN/WV-40%", "measured"].tolist() == [len(manifests["IN/WV-40%"]), 2]
