"""Mixture manifests: real datasets with a share of items replaced by, or appended from, others."""

import json


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("mixture", help="build one mixture manifest")
    parser.add_argument("--spec", required=True, type=json.loads)
    parser.add_argument("--base", required=True)
    parser.add_argument("--by")
    parser.add_argument("--out", required=True)
    parser.add_argument("--summary", required=True)
    parser.set_defaults(run=run_mixture)


def run_mixture(args) -> None:
    raise NotImplementedError("being written")
