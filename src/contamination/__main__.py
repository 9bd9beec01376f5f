"""Command line: ``python -m contamination <verb> ...``.

Each module in COMMAND_MODULES registers its verbs with ``add_commands(subparsers)`` and keeps
its heavy imports inside the command functions, so parsing the command line stays cheap.
"""

import argparse
import importlib
import sys

from contamination.errors import UserError

COMMAND_MODULES = [
    "contamination.smoke.synthetic",
    "contamination.sources",
    "contamination.generation.prompts",
    "contamination.smoke.tiny_sd",
    "contamination.generation.generate",
    "contamination.generation.format_match",
    "contamination.generation.card",
    "contamination.mixtures.manifests",
    "contamination.experiments.classify",
    "contamination.experiments.confusion",
    "contamination.smoke.tiny_blip",
    "contamination.experiments.caption",
    "contamination.experiments.blip_weights",
    "contamination.experiments.mae",
    "contamination.experiments.detect",
    "contamination.experiments.filtering",
    "contamination.smoke.tiny_models",
    "contamination.smoke.tiny_encoders",
    "contamination.metrics.spectra",
    "contamination.metrics.features",
    "contamination.metrics.image_cache",
    "contamination.experiments.iddpm",
    "contamination.experiments.recursion",
    "contamination.metrics.fidelity",
    "contamination.reporting.tables",
    "contamination.reporting.report",
    "contamination.reporting.plan",
    "contamination.reporting.timings",
    "contamination.config",
    "contamination.launch",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m contamination", description=__doc__)
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="<verb>")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
