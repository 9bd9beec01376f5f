"""Prompt tables: one row per image to generate, each with its own seed."""

import json


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("prompts", help="build the prompt table of a generated dataset")
    parser.add_argument("--spec", required=True, type=json.loads)
    parser.add_argument("--index", required=True)
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_prompts)


def run_prompts(args) -> None:
    raise NotImplementedError("being written")
