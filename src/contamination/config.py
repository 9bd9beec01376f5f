"""Loading, default-filling and checking of the workflow configuration.

The JSON schema (workflow/schemas/config.schema.yaml) checks types and ranges and fills defaults;
``check`` adds the checks a schema cannot express (names that must exist, templates, duplicates).
Both run when the Snakefile is parsed, so bad input stops the run before any job starts. Every
message names the config key and the offending value.
"""

import copy
import math
from pathlib import Path

from contamination.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "config.yaml"

REAL_SOURCES = ["imagenet", "imagenet_a", "imagenet_r", "webvision", "coco", "flickr30k"]
# Sources whose train split can be the base of a mixture or replace items in one.
TRAINING_SOURCES = {"imagenet": "label", "webvision": "label", "coco": "caption", "flickr30k": "caption"}
PROMPT_KIND_TARGET = {"class_template": "label", "class_complex": "label", "captions": "caption"}
PROMPT_KIND_SOURCE = {"class_template": "imagenet", "class_complex": "imagenet", "captions": "coco"}
COMPLEX_FIELDS = ("qualifier", "medium", "name", "context")


def deep_merge(base: dict, overlay: dict) -> dict:
    """Merge ``overlay`` into a copy of ``base`` the way Snakemake merges config files."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load(*overlays, base=DEFAULT_CONFIG) -> dict:
    """The paper config, overlaid by each file in ``overlays``, validated with defaults filled."""
    import yaml

    config = yaml.safe_load(Path(base).read_text())
    for overlay in overlays:
        config = deep_merge(config, yaml.safe_load(Path(overlay).read_text()) or {})
    validate(config)
    return config


def validate(config: dict) -> None:
    """Schema validation (filling defaults in place), then the semantic checks."""
    validate_schema(config)
    check(config)


def validate_schema(config: dict) -> None:
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator_class = jsonschema.validators.validator_for(schema)

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validator_class.VALIDATORS["properties"](validator, properties, instance, schema)

    filling = jsonschema.validators.extend(validator_class, {"properties": fill_defaults})
    error = jsonschema.exceptions.best_match(filling(schema).iter_errors(config))
    if error is not None:
        key = key_name(error.absolute_path) or "(top level)"
        raise ConfigError(f"config key {key}: {error.message}")


def key_name(path) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def check(config: dict) -> None:
    """Checks that need more than the schema: names, references, templates, duplicates."""
    generated = config["generated"]
    seen = set(TRAINING_SOURCES)
    for index, spec in enumerate(generated):
        key = f"generated[{index}]"
        if spec["name"] in seen:
            raise ConfigError(f"{key}.name: '{spec['name']}' is used twice (or is a real source's name)")
        seen.add(spec["name"])
        kind = spec["prompts"]
        if spec["source"] != PROMPT_KIND_SOURCE[kind]:
            raise ConfigError(
                f"{key}.source: prompts '{kind}' are made from '{PROMPT_KIND_SOURCE[kind]}', not '{spec['source']}'"
            )
        if kind.startswith("class_") and "per_class" not in spec:
            raise ConfigError(f"{key}.per_class: required for prompts '{kind}'")
        if kind == "class_template" and "{name}" not in spec.get("template", ""):
            raise ConfigError(f"{key}.template: {spec.get('template')!r} has no {{name}} placeholder")
        if kind == "captions" and "captions_per_image" not in spec:
            raise ConfigError(f"{key}.captions_per_image: required for prompts 'captions'")
    template = config["complex_prompts"]["template"]
    for field in COMPLEX_FIELDS:
        if "{" + field + "}" not in template:
            raise ConfigError(f"complex_prompts.template: {template!r} has no {{{field}}} placeholder")
    check_mixtures(config)


def dataset_target(config: dict, name: str):
    """'label' or 'caption' for a dataset a mixture can draw from; None if there is none so named."""
    if name in TRAINING_SOURCES:
        return TRAINING_SOURCES[name]
    for spec in config["generated"]:
        if spec["name"] == name:
            return PROMPT_KIND_TARGET[spec["prompts"]]
    return None


def check_mixtures(config: dict) -> None:
    known = sorted(list(TRAINING_SOURCES) + [spec["name"] for spec in config["generated"]])
    names = set()
    for index, mixture in enumerate(config["mixtures"]):
        key = f"mixtures[{index}]"
        if mixture["name"] in names:
            raise ConfigError(f"{key}.name: duplicate mixture name '{mixture['name']}'")
        names.add(mixture["name"])
        if not 0 <= mixture["fraction"] <= 1:
            raise ConfigError(f"{key}.fraction: {mixture['fraction']} is outside [0, 1]")
        base_target = dataset_target(config, mixture["base"])
        if base_target is None:
            raise ConfigError(f"{key}.base: unknown source '{mixture['base']}' (known: {', '.join(known)})")
        if mixture["kind"] == "subset":
            continue
        if "by" not in mixture:
            raise ConfigError(f"{key}.by: required for kind '{mixture['kind']}'")
        by_target = dataset_target(config, mixture["by"])
        if by_target is None:
            raise ConfigError(f"{key}.by: unknown source '{mixture['by']}' (known: {', '.join(known)})")
        if by_target != base_target:
            raise ConfigError(
                f"{key}.by: '{mixture['by']}' has {by_target}s but base '{mixture['base']}' has {base_target}s"
            )
        match = mixture.get("match", "label")
        if match == "label" and base_target != "label":
            raise ConfigError(f"{key}.match: 'label' needs class datasets, '{mixture['base']}' has captions")
        if match == "source" and generated_from(config, mixture["by"]) != mixture["base"]:
            raise ConfigError(
                f"{key}.match: 'source' needs '{mixture['by']}' to be generated from '{mixture['base']}' captions"
            )


def generated_spec(config: dict, name: str) -> dict:
    for spec in config["generated"]:
        if spec["name"] == name:
            return spec
    raise ConfigError(f"generated: no generated dataset named '{name}'")


def generated_from(config: dict, name: str):
    """The real source a generated dataset's prompts come from, or None for a real source."""
    for spec in config["generated"]:
        if spec["name"] == name and spec["prompts"] == "captions":
            return spec["source"]
    return None


def generated_size(config: dict, name: str) -> int:
    """Number of images of a generated dataset, known from the config alone (the DAG is static)."""
    spec = generated_spec(config, name)
    if spec["prompts"] == "captions":
        return config["sources"]["coco"]["train_images"] * spec["captions_per_image"]
    return config["sources"]["imagenet"]["num_classes"] * spec["per_class"]


def shard_count(config: dict, name: str) -> int:
    return math.ceil(generated_size(config, name) / config["generation"]["shard_size"])


def results_dir(config: dict) -> Path:
    return Path("results") / config["run"]


# The tiny models' file names under results/<run>/models/ (config `models.build_tiny`).
TINY_MODEL_NAMES = {"stable_diffusion": "tiny-sd", "blip": "tiny-blip", "resnet50_detector": "resnet50-random.pth",
                    "inception": "tiny-inception.pth"}


def source_location(config: dict, source: str) -> dict:
    """Where the workflow reads real ``source`` from: {"root": ..., and for caption sources
    "karpathy_json": ...}. With ``synthetic.enabled`` that is the synthetic copy under the run's
    results directory, and the configured ``sources.<source>`` paths are never read nor written;
    otherwise the configured paths, which are only ever read."""
    settings = config["sources"][source]
    if not config["synthetic"]["enabled"]:
        return {key: settings[key] for key in ("root", "karpathy_json") if key in settings}
    root = results_dir(config) / "synthetic" / source
    location = {"root": str(root)}
    if "karpathy_json" in settings:
        location["karpathy_json"] = str(root / f"dataset_{source}.json")
    return location


def model_location(config: dict, key: str) -> str:
    """Where the workflow reads model ``key`` from: with ``models.build_tiny`` the tiny model it
    builds under the run's results directory (``models.<key>`` is ignored), else ``models.<key>``."""
    if config["models"]["build_tiny"]:
        return str(results_dir(config) / "models" / TINY_MODEL_NAMES[key])
    return config["models"][key]


def require_existing(config: dict, key: str) -> str:
    """The path at dotted config ``key``; a ConfigError naming key and value if it does not exist."""
    value = config
    for part in key.split("."):
        value = value[part]
    if not Path(value).exists():
        raise ConfigError(f"{key}: '{value}' does not exist")
    return value


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("check-config", help="validate config files as the workflow does")
    parser.add_argument("configfiles", nargs="*", help="overlays on config/config.yaml, in order")
    parser.set_defaults(run=run_check_config)


def run_check_config(args) -> None:
    config = load(*args.configfiles)
    print(f"config ok: run '{config['run']}', {len(config['mixtures'])} mixtures, "
          f"{sum(shard_count(config, spec['name']) for spec in config['generated'])} generation shards")
