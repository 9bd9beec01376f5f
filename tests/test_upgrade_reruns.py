"""A workflow upgrade re-runs only what it changes: after a finished run, a new default-valued
config key and a requoted command leave nothing to do, while a changed generation setting
re-runs exactly the generation shards and what depends on them. Runs on a copy of the project,
so the copy's schema and rules can be edited as an upgrade would."""

import re
import subprocess
import sys

import pytest
import yaml

from contamination import config as cfg
from helpers import SMOKE_CONFIG, copy_checkout, environment, job_counts, write_yaml

pytestmark = pytest.mark.workflow

GENERATED = "sd_imagenet"
MIXTURE = "in_sd_20"  # ImageNet with 20% of its items replaced by SD-ImageNet ones
TARGETS = [f"results/smoke/generated/{GENERATED}/index.parquet", f"results/smoke/mixtures/{MIXTURE}.parquet"]


def snakemake(project, *arguments, check=True):
    command = [sys.executable, "-m", "snakemake", "-s", str(project / "Snakefile"), *map(str, arguments)]
    result = subprocess.run(command, cwd=project.parent / "work", capture_output=True, text=True, env=environment())
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A copy of the project and the smoke run of TARGETS made with it (fewer, larger shards)."""
    directory = tmp_path_factory.mktemp("upgrade")
    project = copy_checkout(directory / "project")
    (directory / "work").mkdir()
    overlay = write_yaml(directory / "overlay.yaml", {"generation": {"shard_size": 48}})
    configs = ["--configfile", SMOKE_CONFIG, overlay]
    snakemake(project, "--cores", "2", *TARGETS, *configs)
    assert "Nothing to be done" in snakemake(project, "-n", *TARGETS, *configs)
    return project, configs


def upgrade(project):
    """What a `git pull` might bring: a generation key whose default keeps today's behaviour, and
    the generate command requoted and reformatted."""
    schema_path = project / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    schema["properties"]["generation"]["properties"]["new_option"] = {"type": "boolean", "default": False}
    schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))
    rules = project / "workflow" / "rules" / "generate.smk"
    text = rules.read_text()
    line = next(line for line in text.splitlines() if "contamination generate --prompts" in line)
    quoted = "{input.prompts:q}" in line
    requoted = line.replace(*(("{input.prompts:q}", "{input.prompts}") if quoted else ("{input.prompts}", "{input.prompts:q}")))
    requoted = requoted.replace(" --pipeline", "  --pipeline")
    rules.write_text(text.replace(line, requoted))


def test_upgrade_leaves_a_finished_run_with_nothing_to_do(finished_run):
    project, configs = finished_run
    upgrade(project)
    output = snakemake(project, "-n", *TARGETS, *configs)
    assert "Nothing to be done" in output, output
    # Without the workflow profile, Snakemake's `code` trigger would regenerate every shard.
    counts = job_counts(snakemake(project, "-n", "--workflow-profile", "none", *TARGETS, *configs))
    assert counts["generate_shard"] == 2


def test_changed_generation_steps_rerun_exactly_the_shards_and_their_dependents(finished_run, tmp_path):
    project, configs = finished_run
    steps = write_yaml(tmp_path / "steps.yaml", {"generation": {"steps": 5}})
    output = snakemake(project, "-n", *TARGETS, *configs, steps)
    config = cfg.load(SMOKE_CONFIG, configs[-1], steps)
    assert cfg.shard_count(config, GENERATED) == 2
    assert job_counts(output) == {"generate_shard": 2, "merge_generated": 1, "mixture": 1, "total": 4}, output


def test_a_stated_licence_remakes_the_card_and_nothing_else(finished_run, tmp_path):
    project, configs = finished_run
    licence = write_yaml(tmp_path / "licence.yaml", {"licenses": {"stable_diffusion": "CreativeML OpenRAIL-M"}})
    card = f"results/smoke/generated/{GENERATED}/card.json"
    snakemake(project, "--cores", "1", card, *configs)
    output = snakemake(project, "-n", *TARGETS, card, *configs, licence)
    assert job_counts(output) == {"generated_card": 1, "total": 1}, output


# ---- run-time settings: how a job runs, not what it computes ----------------------------------
TABLE1 = "results/smoke/tables/table1.csv"


@pytest.fixture(scope="module")
def touched_run(tmp_path_factory):
    """Table 1's results tree (27 classifier runs, their mixtures, shards and indexes) as a
    finished run leaves it to Snakemake, without training: every output of its DAG made as an
    empty file (a directory when it has no suffix), then recorded with `--touch --forceall`."""
    work = tmp_path_factory.mktemp("touched")
    configs = ["--configfile", SMOKE_CONFIG]
    summary = snakemake_in(work, "--summary", TABLE1, *configs).stdout
    for line in summary.splitlines()[1:]:
        path = work / line.split("\t")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if not path.suffix else path.touch()
    snakemake_in(work, "--touch", "--forceall", "--cores", "1", TABLE1, *configs)
    assert "Nothing to be done" in dry_run(work, configs)
    return work, configs


def snakemake_in(work, *arguments):
    from helpers import snakemake as run

    return run(*arguments, cwd=work)


def dry_run(work, configs):
    result = snakemake_in(work, "-n", TABLE1, *configs)
    return result.stdout + result.stderr


def test_changed_runtime_settings_leave_a_finished_run_with_nothing_to_do(touched_run, tmp_path):
    work, configs = touched_run
    runtime = write_yaml(tmp_path / "runtime.yaml", {
        "classification": {"num_workers": 3, "print_freq": 7, "keep_checkpoint": False, "device": "auto"},
        "generation": {"batch_size": 2},
    })
    output = dry_run(work, [*configs, runtime])
    assert "Nothing to be done" in output, output


def test_changed_classifier_recipe_reruns_exactly_its_training_jobs(touched_run, tmp_path):
    work, configs = touched_run
    lr = write_yaml(tmp_path / "lr.yaml", {"classification": {"models": {"resnet50": {"lr": 0.01}}}})
    output = dry_run(work, [*configs, lr])
    table = next(table for table in cfg.load(SMOKE_CONFIG)["tables"] if table["name"] == "table1")
    assert job_counts(output) == {"train_classifier": len(table["rows"]), "table": 1, "total": len(table["rows"]) + 1}
    trained = re.findall(r"output: results/smoke/classify/(\w+)/", output)
    assert set(trained) == {"resnet50"}, trained
