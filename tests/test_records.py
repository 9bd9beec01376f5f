"""A run's record: metrics.json with a reason for every null, provenance from plain values, the
canonical JSON hash and the fingerprints of the models a run read."""

import hashlib
import json
import math
from importlib.metadata import version

import pytest

from contamination import records
from contamination.errors import DataError


def test_write_metrics_nulls_non_finite_values_and_requires_reasons(tmp_path):
    path = tmp_path / "metrics.json"
    provenance = records.provenance({"a": 1}, seed=0, world_size=1, device="cpu")
    records.write_metrics(path, {"top1": 12.5, "fid": math.nan}, {"fid": "no Inception weights"}, "ok", provenance)
    written = json.loads(path.read_text())
    assert written["metrics"] == {"top1": 12.5, "fid": None}
    assert written["reasons"] == {"fid": "no Inception weights"}
    assert written["provenance"]["config_sha256"] == records.sha256_of_json({"a": 1})
    assert written["provenance"]["packages"]["torch"] == version("torch")
    assert written["provenance"]["seed"] == 0 and written["status"] == "ok" and "training" not in written
    with pytest.raises(ValueError, match="fid is nan without a reason"):
        records.write_metrics(path, {"fid": math.nan}, {}, "ok", provenance)


def test_unavailable_gives_every_metric_null_with_the_reason():
    metrics, reasons = records.unavailable(["a", "b"], "training diverged")
    assert metrics == {"a": None, "b": None} and reasons == {"a": "training diverged", "b": "training diverged"}


def test_provenance_records_the_processes_and_device_it_is_given():
    record = records.provenance({"a": 1}, 7, world_size=4, device="cuda", packages=("diffusers",))
    assert record == {"config_sha256": records.sha256_of_json({"a": 1}), "seed": 7, "world_size": 4, "device": "cuda",
                      "packages": records.package_versions(("contamination", "diffusers"))}
    assert set(record["packages"]) == {"python", "contamination", "diffusers"}


def test_the_hash_of_a_spec_is_that_of_its_canonical_json():
    """Checkpoints are fingerprinted with it: a resumed run recognises a checkpoint written for
    the same spec only while these bytes stay the same (sorted keys, no spaces, ASCII escapes)."""
    spec = {"seed": 0, "recipe": {"lr": 0.5, "amp": True, "ema": None}, "name": "ü", "sizes": [1, 2]}
    canonical = b'{"name":"\\u00fc","recipe":{"amp":true,"ema":null,"lr":0.5},"seed":0,"sizes":[1,2]}'
    assert records.sha256_of_json(spec) == hashlib.sha256(canonical).hexdigest()
    assert records.sha256_of_json(dict(reversed(spec.items()))) == records.sha256_of_json(spec)


def test_model_fingerprints_follow_the_bytes_of_files_and_directories(tmp_path):
    weights = tmp_path / "resnet50.pth"
    weights.write_bytes(b"weights")
    model_dir = tmp_path / "blip"
    (model_dir / "sub").mkdir(parents=True)
    (model_dir / "sub" / "model.safetensors").write_bytes(b"tensors")
    record = records.provenance({"a": 1}, 0, 1, "cpu", packages=(), models={"detector": weights, "blip": model_dir})
    assert record["models"]["detector"]["path"] == str(weights)
    before = {role: model["fingerprint"] for role, model in record["models"].items()}
    weights.write_bytes(b"other weights")
    (model_dir / "sub" / "model.safetensors").write_bytes(b"other tensors")
    after = records.model_fingerprints({"detector": weights, "blip": model_dir})
    assert all(after[role]["fingerprint"] != before[role] for role in before)
    assert "models" not in records.provenance({"a": 1}, 0, 1, "cpu", packages=())
    with pytest.raises(DataError, match="missing.pth"):
        records.path_fingerprint(tmp_path / "missing.pth")
