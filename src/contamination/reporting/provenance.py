"""The provenance of a table.

A run's metrics.json carries ``provenance`` (records.provenance): the SHA-256 of the spec that
defines the run (``config_sha256``), the ``seed``, the ``packages`` and their versions, and with
``models=`` the fingerprint of every model file or directory the run read (``models``).

A table CSV (tables.py) gets a sidecar ``<table>.provenance.json`` written by the same job: the
hash of the table spec and of the paper's reported values, the versions of the packages that
wrote the table, and for every cell the metrics.json it was read from (path, SHA-256, status)
with that run's own provenance. Cells whose provenance lacks a field are listed under
``incomplete``, so a gap is visible instead of silently passed on.
"""

import hashlib
import json
from importlib import resources
from pathlib import Path

from contamination.records import package_versions, sha256_of_file, sha256_of_json

# The fields a cell's provenance must have; runs that read no model record "models": {}.
REQUIRED_FIELDS = ("config_sha256", "seed", "packages", "models")


def reported_values_sha256() -> str:
    return hashlib.sha256(resources.files("contamination.reporting").joinpath("paper/reported.csv").read_bytes()).hexdigest()


def table_provenance(spec: dict, cells: dict) -> dict:
    """The sidecar of a table CSV; ``cells`` maps "<row>|<model>" to that run's metrics.json."""
    records, incomplete = {}, {}
    for key, path in sorted(cells.items()):
        run = json.loads(Path(path).read_text())
        run_provenance = run.get("provenance") or {}
        records[key] = {
            "metrics_json": str(path),
            "metrics_sha256": sha256_of_file(path),
            "status": run.get("status", "unknown"),
            "provenance": run_provenance,
        }
        missing = [field for field in REQUIRED_FIELDS if field not in run_provenance]
        if missing:
            incomplete[key] = missing
    return {
        "table": spec["name"],
        "spec_sha256": sha256_of_json(spec),
        "reported_values_sha256": reported_values_sha256(),
        "packages": package_versions(("contamination", "pandas")),
        "cells": records,
        "incomplete": incomplete,
    }
