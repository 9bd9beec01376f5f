"""The workflow's jobs and their dependencies, from Snakemake's own DAG, built in-process.

``workflow_dag`` parses the project's Snakefile with a config and builds the DAG that
``snakemake --forceall --dry-run TARGETS`` would schedule: every job of the targets, whatever
is on disk, with nothing run and no output written. Like a dry run it evaluates the rules' input
functions, so the configured dataset and model paths must exist, and it leaves Snakemake's
bookkeeping folder ``.snakemake/`` in the working directory (the workdir; relative paths of the
config stay relative to it). It takes no lock, so it also works inside a job of a running
workflow (``rule plan``), which holds the locks of the same working directory.

Snakemake's API has no public call that builds a DAG without printing or running it: this uses
``WorkflowApi._workflow`` and ``Workflow._prepare_dag``/``_build_dag`` (what ``printdag`` calls),
as in the Snakemake versions pyproject.toml pins (>=9.27,<10).
"""

import re
import sys
from typing import NamedTuple

from contamination import config as cfg
from contamination.errors import ConfigError

SNAKEFILE = cfg.PROJECT_ROOT / "Snakefile"


class Job(NamedTuple):
    """One job: its rule and its wildcards as sorted (name, value) pairs, so that it is hashable."""

    rule: str
    wildcard_items: tuple = ()

    @classmethod
    def of(cls, rule: str, **wildcards) -> "Job":
        return cls(rule, tuple(sorted(wildcards.items())))

    @property
    def wildcards(self) -> dict:
        return dict(self.wildcard_items)


def workflow_dag(targets, config: dict) -> dict:
    """{job: frozenset of the jobs it needs} for every job that ``snakemake --forceall TARGETS``
    runs with ``config`` (a whole config, as contamination.config.load returns it; given as
    Snakemake's ``--config``, it overrides every key of config/config.yaml). Targets are rule names
    or files. A config the Snakefile rejects and a configured path that does not exist are a
    ConfigError."""
    import logging

    from snakemake.api import SnakemakeApi
    from snakemake.exceptions import WorkflowError
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

    output = OutputSettings(quiet={Quietness.ALL}, enable_file_logging=False, dryrun=True,
                            log_level_override=logging.ERROR)
    config_settings = ConfigSettings(config=config)
    # The Snakefile puts its src/ first on sys.path at every parse.
    saved_path = list(sys.path)
    try:
        with SnakemakeApi(output) as api:
            # workdir None: the current directory, without a chdir.
            workflow_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                        config_settings=config_settings, snakefile=SNAKEFILE, workdir=None)
            workflow_api.dag(DAGSettings(targets=frozenset(targets), forceall=True))  # sets the targets
            workflow = workflow_api._workflow  # parses the Snakefile
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            return dependencies(workflow.dag)
    except SystemExit as exit:
        # common.smk stops on a bad config with sys.exit("error: <check-config's message>").
        raise ConfigError(str(exit.code).removeprefix("error: ")) from None
    except WorkflowError as error:
        config_error = wrapped_config_error(error)
        if config_error is None:
            raise
        raise config_error from None
    finally:
        sys.path[:] = saved_path


def dependencies(dag) -> dict:
    needed = set(dag.needrun_jobs(exclude_finished=False))

    def job(snakemake_job):
        return Job.of(snakemake_job.rule.name, **snakemake_job.wildcards_dict)

    return {job(each): frozenset(job(dependency) for dependency in dag.dependencies[each] if dependency in needed)
            for each in needed}


def wrapped_config_error(error):
    """The ConfigError an input function raised (a configured path that does not exist), or None.
    Snakemake wraps it in an InputFunctionException that keeps it only as text, "ConfigError:
    <message>" on a line of its own."""
    match = re.search(r"^\s*ConfigError: (.+)$", str(error), re.MULTILINE)
    return None if match is None else ConfigError(match.group(1))


def closure(dag: dict, roots) -> set:
    """The jobs ``roots`` need, directly or not, and ``roots`` themselves."""
    jobs, pending = set(), list(roots)
    while pending:
        job = pending.pop()
        if job not in jobs:
            jobs.add(job)
            pending.extend(dag[job])
    return jobs
