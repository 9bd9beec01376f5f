"""Sharded Stable Diffusion generation."""

import json


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate one shard of a prompt table")
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--shard", required=True, type=int)
    parser.add_argument("--settings", required=True, type=json.loads)
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_generate)

    parser = subparsers.add_parser("merge-shards", help="merge shard metadata into one generated index")
    parser.add_argument("shards", nargs="+")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_merge)


def run_generate(args) -> None:
    raise NotImplementedError("being written")


def run_merge(args) -> None:
    raise NotImplementedError("being written")
