"""The conda environment for clusters pins the same versions as the venv's lock file."""

import yaml

from helpers import PROJECT


def locked_versions():
    versions = {}
    for line in (PROJECT / "requirements.lock").read_text().splitlines():
        name, separator, version = line.partition("==")
        if separator:
            versions[name.lower().replace("_", "-")] = version
    return versions


def test_conda_environment_pins_the_locked_versions():
    environment = yaml.safe_load((PROJECT / "envs" / "contamination.yaml").read_text())
    pip = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    locked = locked_versions()
    pins = dict(requirement.split("==") for requirement in pip)
    assert {"torch", "diffusers", "transformers", "snakemake", "pycocoevalcap"} <= set(pins)
    for name, version in pins.items():
        assert locked[name.lower()] == version, name
