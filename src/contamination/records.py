"""A run's record: its metrics.json, what produced it (provenance), and the fingerprints of what
it read. Plain values in, so any command can write one, trained or not; standard library only.

metrics.json::

    {"status": "ok" | "diverged" | ...,
     "metrics": {name: float | null},
     "reasons": {name: why it is null},      # every null has one: NaN never passes silently
     "provenance": {"config_sha256", "seed", "world_size", "device", "packages", ["models"], ...},
     ["training": StepWatch.record (optimizer and skipped steps, divergence)]}

``config_sha256`` is ``sha256_of_json`` of the spec that defines the run: the one hash of
canonical JSON, also the checkpoint fingerprint (training.Checkpointer) and the hash of a table's
spec (reporting.provenance), so a resumed run recognises the checkpoint of the same spec.
With ``models=`` ({role: weights file or model directory}) the provenance also holds each
model's fingerprint (``path_fingerprint``): BLAKE2b-128 of the bytes, not of the path.
"""

import hashlib
import json
import math
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from contamination.errors import DataError
from contamination.io import write_json

TRAINING_PACKAGES = ("torch", "torchvision", "numpy")


# ---- hashes and fingerprints ----------------------------------------------------------------


def sha256_of_json(data) -> str:
    """SHA-256 of the canonical JSON of ``data`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_of_file(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
    """{"python": its version, package: installed version or None} for ``packages``."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


# ---- metrics.json ---------------------------------------------------------------------------


def provenance(spec, seed: int, world_size: int, device: str, packages=TRAINING_PACKAGES, models=None) -> dict:
    """What produced the numbers: config hash, seed, world size (processes), device type ("cpu",
    "cuda"), package versions, and with ``models`` ({role: weights file or model directory}) the
    fingerprint of each model the run read; pass ``models={}`` for a run that read none."""
    record = {
        "config_sha256": sha256_of_json(spec),
        "seed": seed,
        "world_size": world_size,
        "device": device,
        "packages": package_versions(("contamination",) + tuple(packages)),
    }
    if models is not None:
        record["models"] = model_fingerprints(models)
    return record


def unavailable(names, reason: str):
    """(metrics, reasons) with every metric null for the same reason."""
    return {name: None for name in names}, {name: reason for name in names}


def write_metrics(path, metrics: dict, reasons: dict, status: str, provenance: dict, steps=None) -> None:
    """Write metrics.json atomically. Non-finite numbers become null; every null needs a reason.
    ``steps``: a StepWatch.record (optimizer and skipped steps, divergence), written as "training"."""
    clean, why = {}, dict(reasons)
    for name, value in metrics.items():
        if value is not None and math.isfinite(float(value)):
            clean[name] = float(value)
            why.pop(name, None)
        else:
            clean[name] = None
            if name not in why:
                raise ValueError(f"metric {name} is {value} without a reason")
    record = {"status": status, "metrics": clean, "reasons": why, "provenance": provenance}
    if steps is not None:
        record["training"] = steps
    write_json(record, path)
