"""The experiments: each trains or scores models on a mixture (or on a generated dataset) and its
runs write ``results/<run>/<experiment>/<model>/<run>/metrics.json``, the cells of the tables.

EXPERIMENTS is the explicit list a table's ``experiment`` may name (config.check_tables): for each,
the module whose ``table_metrics(config)`` names what every run's metrics.json holds, and what a
table row's ``mixture`` names (``runs``): a mixture (also a filtered one, ``<mixture>-filtered-
<detector>``, which experiments train on like any other); also ``pretrained`` (captioning
evaluates the starting model); a generated dataset (detection runs once per generated dataset);
or a mixture of config ``filtering.mixtures`` (the filtering runs, one per detector). The rules
of an experiment are workflow/rules/<experiment>.smk; README "Extending" adds one.
"""

import importlib

PRETRAINED_RUN = "pretrained"  # the run id of captioning's starting model

EXPERIMENTS = {
    "classify": {"module": "contamination.experiments.classify", "runs": "mixtures"},
    "caption": {"module": "contamination.experiments.caption", "runs": "mixtures and pretrained"},
    "iddpm": {"module": "contamination.experiments.iddpm", "runs": "mixtures"},
    "fidelity": {"module": "contamination.metrics.fidelity", "runs": "mixtures"},
    "mae": {"module": "contamination.experiments.mae", "runs": "mixtures"},
    "detect": {"module": "contamination.experiments.detect", "runs": "generated datasets"},
    "filter": {"module": "contamination.experiments.filtering", "runs": "filtering mixtures"},
}


def table_metrics(config: dict, experiment: str) -> list:
    """The metric names every run of ``experiment`` writes to its metrics.json."""
    return list(importlib.import_module(EXPERIMENTS[experiment]["module"]).table_metrics(config))


def table_runs(config: dict, experiment: str) -> list:
    """The names a table row's ``mixture`` may take for ``experiment``."""
    from contamination.experiments.filtering import filtered_runs

    runs = EXPERIMENTS[experiment]["runs"]
    if runs == "generated datasets":
        from contamination.config import generated_names  # config imports this module

        return generated_names(config)
    if runs == "filtering mixtures":
        return list(config["filtering"]["mixtures"])
    mixtures = [mixture["name"] for mixture in config["mixtures"]] + list(filtered_runs(config))
    return mixtures + [PRETRAINED_RUN] if runs == "mixtures and pretrained" else mixtures
