"""Tiny synthetic datasets written in the real on-disk layouts (the smoke run's "real" data)."""

import json


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("synthetic", help="write tiny synthetic datasets in the real layouts")
    parser.add_argument("--spec", required=True, type=json.loads, help="JSON: config `synthetic` + roots")
    parser.set_defaults(run=run_synthetic)


def run_synthetic(args) -> None:
    raise NotImplementedError("synthetic sources: being written")
