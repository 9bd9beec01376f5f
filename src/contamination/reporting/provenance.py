"""What produced a number: model fingerprints for metrics.json, and the provenance of a table.

A run's metrics.json carries ``provenance`` (training.provenance): the SHA-256 of the spec that
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
from pathlib import Path

# The fields a cell's provenance must have; runs that read no model record "models": {}.
REQUIRED_FIELDS = ("config_sha256", "seed", "packages", "models")


def sha256_of_file(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_of_json(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_fingerprint(pipeline_dir) -> str:
    """A model directory's BLAKE2b-128 over every file's relative path and contents (hidden files
    such as .git or .cache left out, file times ignored)."""
    root = Path(pipeline_dir)
    files = sorted(
        path for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    digest = hashlib.blake2b(digest_size=16)
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "blake2b").digest())
    return digest.hexdigest()


def path_fingerprint(path) -> str:
    """A weights file's BLAKE2b-128, or a model directory's (model_fingerprint)."""
    from contamination.errors import DataError

    path = Path(path)
    if path.is_dir():
        return model_fingerprint(path)
    if not path.is_file():
        raise DataError(f"model '{path}' does not exist, so it cannot be fingerprinted")
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def model_fingerprints(models: dict) -> dict:
    """{role: {"path", "fingerprint"}} for {role: path} (e.g. {"blip": "models/blip"})."""
    return {role: {"path": str(path), "fingerprint": path_fingerprint(path)} for role, path in sorted(models.items())}


def package_versions(packages) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def reported_values_sha256() -> str:
    from importlib import resources

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
