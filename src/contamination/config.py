"""Loading, default-filling and checking of the workflow configuration.

The JSON schema (workflow/schemas/config.schema.yaml) checks types and ranges, rejects unknown
keys and fills defaults; ``check`` adds the checks a schema cannot express (names that must exist,
templates, duplicates, metric names, impossible options). ``validate`` runs both, the same way when
the Snakefile is parsed and in ``check-config``, so bad input stops the run before any job starts.
Every message names the config key and the offending value.
"""

import copy
import difflib
import functools
import json
import math
import re
from pathlib import Path

from contamination.errors import ConfigError
from contamination.experiments import EXPERIMENTS, PRETRAINED_RUN, table_metrics, table_runs

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "config.yaml"

REAL_SOURCES = ["imagenet", "imagenet_a", "imagenet_r", "webvision", "coco", "flickr30k"]
# Sources whose train split can be the base of a mixture or replace items in one.
CLASS_SOURCES = ["imagenet", "imagenet_a", "imagenet_r", "webvision"]  # indexed with ImageNet's class table
CAPTION_SOURCES = ["coco", "flickr30k"]  # with Karpathy split files
TRAINING_SOURCES = {"imagenet": "label", "webvision": "label", "coco": "caption", "flickr30k": "caption"}
PROMPT_KIND_TARGET = {"class_template": "label", "class_complex": "label", "captions": "caption"}
PROMPT_KIND_SOURCE = {"class_template": "imagenet", "class_complex": "imagenet", "captions": "coco"}
COMPLEX_FIELDS = ("qualifier", "medium", "name", "context")
# format_control: a generated dataset re-stored as JPEG in a real source's formats is <name>_jpeg.
FORMAT_MATCHED_SUFFIX = "_jpeg"
# The captioning run of the starting model, without fine-tuning: results/<run>/caption/blip/pretrained/.
# results/<run>/tables/<name>.csv files that are not tables of the config, and the target `filtering`.
RESERVED_TABLE_NAMES = ("all_tables", "spectra", "recursion", "filtering")
# The schema default of `tier`: a run at the paper's settings, whose tables are compared with the paper.
PAPER_TIER = "paper"
# sources.imagenet.classes: every class of the ImageNet root.
ALL_CLASSES = "all"
WNID_PATTERN = re.compile(r"n[0-9]{8}")


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
    config = read_config_file(base)
    for overlay in overlays:
        config = deep_merge(config, read_config_file(overlay))
    validate(config)
    return config


def read_config_file(path) -> dict:
    """One config file's mapping (an empty file is an empty one); a ConfigError naming the file
    (and the line of a YAML syntax error) if it is missing, unreadable or not a mapping."""
    import yaml

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file '{path}' cannot be read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file '{path}': YAML syntax error{where}: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}': not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}': must be a mapping of config keys, not a {type(data).__name__}")
    return data


def validate(config: dict) -> None:
    """Schema validation (filling defaults in place), the entries `generator_comparison` and
    `format_control` add (validated in turn), then the semantic checks."""
    from contamination.generation import format_match, generators

    validate_schema(config)
    added = generators.expand_comparison(config)
    added = format_match.expand_format_control(config) or added
    if added:
        validate_schema(config)
    check(config)


def add_entries(config: dict, entries: dict, made_by: str) -> bool:
    """Add ``entries`` ({"generated" | "mixtures" | "tables": [entry, ...]}) that config section
    ``made_by`` makes to the config's lists, in place. An entry already there (a run's saved
    config validated again) is kept if it is the same, an error if it differs. Returns whether
    anything was added."""
    added = False
    for section, new_entries in entries.items():
        existing = {entry["name"]: entry for entry in config[section]}
        for entry in new_entries:
            if entry["name"] not in existing:
                config[section].append(entry)
                added = True
            elif with_defaults(f"{section}[]", existing[entry["name"]]) != with_defaults(f"{section}[]", entry):
                raise ConfigError(f"{section}: '{entry['name']}' is both in the config and made by "
                                  f"{made_by}, with other settings; rename yours")
    return added


@functools.lru_cache(maxsize=None)
def load_schema() -> dict:
    """The config schema; callers must not modify it (it is read once per process)."""
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_schema(config: dict) -> None:
    import jsonschema

    schema = load_schema()
    validator_class = jsonschema.validators.validator_for(schema)

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validator_class.VALIDATORS["properties"](validator, properties, instance, schema)

    filling = jsonschema.validators.extend(validator_class, {"properties": fill_defaults})
    errors = list(filling(schema).iter_errors(config))
    # A misspelt key usually also leaves a required key missing: the spelling is the news.
    unknown = [error for error in errors if error.validator == "additionalProperties" and "properties" in error.schema]
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0]))
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        key = key_name(error.absolute_path) or "(top level)"
        raise ConfigError(f"config key {key}: {error.message}")


def unknown_key_message(error) -> str:
    """'config key generaton: unknown key (did you mean 'generation'?)' for an object's first
    key that its schema does not list."""
    known = list(error.schema["properties"])
    extra = next(str(key) for key in error.instance if str(key) not in known)
    return f"config key {key_name([*error.absolute_path, extra])}: unknown key{closest(extra, known)}"


# ---- job settings: what a job's params carry -------------------------------------------------
# Snakemake re-runs a job when its params change. A job's settings JSON therefore leaves out every
# key at its schema default, and the command puts the defaults back (with_defaults): adding a key
# with a default that keeps today's behaviour leaves every finished job's params, and so its
# outputs, as they are, while setting a key to another value re-runs exactly the jobs that use it.
# The other side of the bargain: a schema default must never change its value (a job relying on
# it would keep its old outputs); change behaviour with a new key or an explicit config value.
# A section is named by its schema address: "generation", "mixtures[]" (an item of the list
# `mixtures`), "classification.models.*" (a value of the mapping `classification.models`), ""
# (the whole config).
#
# Run-time settings say how a job runs, not what it computes: loader workers, log cadence,
# device, whether a finished run's checkpoint is kept, and batch sizes of work whose results
# do not depend on the batch (inference with per-item noise, features, blocked distances).
# They leave the job's settings JSON (job_settings) for a second one (runtime_settings) that the
# rules pass with a params function taking `threads`, which Snakemake does not compare: a new
# num_workers re-runs nothing. Checkpoint fingerprints leave them out too, so a run resumes.
# Not here because they shape outputs: batch sizes of training, generation.shard_size (the
# shard files), sample_shard_size, generation.{channels_last, compile} (recorded with every
# image), captioning.spice_corenlp_dir (whether SPICE is scored).
RUNTIME_KEYS = {
    "generation": ("batch_size",),
    "classification": ("device", "num_workers", "print_freq", "keep_checkpoint", "checkpoint_every_minutes"),
    "captioning": ("device", "num_workers", "log_every", "keep_checkpoint", "checkpoint_every_minutes",
                   "eval_batch_size"),
    "mae": ("device", "num_workers", "print_freq", "keep_checkpoint", "checkpoint_every_minutes"),
    "detection": ("device", "num_workers", "feature_batch_size"),
    "filtering": ("device", "num_workers", "feature_batch_size"),
    "iddpm": ("device", "num_workers", "log_every", "checkpoint_every", "checkpoint_every_minutes", "keep_checkpoint",
              "sample_batch_size"),
    "fidelity": ("device", "num_workers", "feature_batch_size", "block_size", "resident_bytes"),
}


def section_schema(section: str) -> dict:
    schema = load_schema()
    for part in section.split(".") if section else []:
        if part == "*":
            schema = schema["additionalProperties"]
        elif part.endswith("[]"):
            schema = schema["properties"][part[:-2]]["items"]
        else:
            schema = schema["properties"][part]
    return schema


def job_settings(section: str, values: dict, keys=None) -> dict:
    """``values`` of config ``section`` (only ``keys`` of it if given) without its run-time keys
    and without the keys at their schema default, nested sections included; keys the section's
    schema does not know (seed, names added by the rule) are kept."""
    runtime = RUNTIME_KEYS.get(section, ())
    values = {key: values[key] for key in (values if keys is None else keys) if key not in runtime}
    return without_defaults(section_schema(section), values)


def runtime_settings(section: str, values: dict, keys=None) -> dict:
    """The run-time keys (RUNTIME_KEYS) of ``values`` of config ``section`` (those among ``keys``
    if given) that are not at their schema default: what job_settings left out."""
    runtime = [key for key in RUNTIME_KEYS.get(section, ()) if keys is None or key in keys]
    return without_defaults(section_schema(section), {key: values[key] for key in runtime})


def without_runtime(section: str, settings: dict) -> dict:
    """``settings`` of config ``section`` without its run-time keys: what a checkpoint
    fingerprint may hash."""
    return {key: value for key, value in settings.items() if key not in RUNTIME_KEYS.get(section, ())}


def with_defaults(section: str, values: dict, keys=None) -> dict:
    """The settings ``job_settings(section, settings, keys)`` was made from: every schema key of
    the section (only ``keys`` if given) that ``values`` lacks is back at its default. Keys come
    in sorted order at every level, as the JSON of the job's params has them."""
    return json.loads(json.dumps(filled_defaults(section_schema(section), values, keys), sort_keys=True))


def settings_argument(section: str, keys=None):
    """An argparse ``type`` for a command's settings JSON made by ``job_settings(section, ..., keys)``."""
    def settings(text: str) -> dict:
        return with_defaults(section, json.loads(text), keys)

    settings.__name__ = f"`{section or 'config'}` settings JSON"  # argparse names the type in its errors
    return settings


def add_settings_arguments(parser, option: str, section: str, keys=None, restore=None, help="") -> None:
    """``option`` (required): a job's settings JSON made by ``job_settings(section, ..., keys)``,
    and ``--runtime``: the JSON runtime_settings made of the rest. The command reads the two merged
    with every default restored (``restore``, by default ``with_defaults(section, ..., keys)``) as
    the attribute of ``option``, whichever comes first: the settings it had when all were one JSON.
    ``--runtime`` may only hold run-time keys, so nothing that shapes outputs escapes the params
    Snakemake compares."""
    import argparse

    restore = restore or functools.partial(with_defaults, section, keys=keys)
    allowed = [key for key in RUNTIME_KEYS[section] if keys is None or key in keys]
    dest = option.lstrip("-").replace("-", "_")

    def merge(action, namespace):
        try:
            setattr(namespace, dest, restore({**namespace.settings_json, **namespace.runtime}))
        except (KeyError, TypeError, ValueError) as error:
            raise argparse.ArgumentError(action, f"cannot restore the `{section}` settings: {error!r}")

    class Settings(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            namespace.settings_json = values
            merge(self, namespace)

    class Runtime(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            unknown = sorted(set(values) - set(allowed))
            if unknown:
                raise argparse.ArgumentError(self, f"{unknown} are not run-time keys of `{section}` ({allowed})")
            namespace.runtime = values
            if namespace.settings_json is not None:
                merge(self, namespace)

    parser.add_argument(option, required=True, type=json_object(section), action=Settings,
                        help=f"JSON: {help} (keys at their default may be left out)")
    parser.add_argument("--runtime", type=json_object(section), action=Runtime, default={},
                        help=f"JSON: the run-time keys of config `{section}` ({', '.join(allowed)}), which "
                             "the workflow passes apart so that changing them re-runs nothing")
    parser.set_defaults(settings_json=None)


def json_object(section: str):
    """An argparse ``type``: a JSON object (of config ``section``'s settings)."""
    def settings(text: str) -> dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"not a JSON object: {text}")
        return value

    settings.__name__ = f"`{section or 'config'}` settings JSON"  # argparse names the type in its errors
    return settings


def value_schema(schema: dict, key) -> dict:
    """The schema of ``key`` in an object of ``schema``: a named property or any other key's."""
    other = schema.get("additionalProperties")
    return schema.get("properties", {}).get(key, other if isinstance(other, dict) else {})


def without_defaults(schema: dict, values: dict) -> dict:
    compact = {}
    for key, value in values.items():
        subschema = value_schema(schema, key)
        if "default" in subschema and same_json(value, filled_value(subschema, subschema["default"])):
            continue
        if isinstance(value, dict) and is_object_schema(subschema):
            value = without_defaults(subschema, value)
        elif isinstance(value, list) and is_object_schema(subschema.get("items", {})):
            value = [without_defaults(subschema["items"], item) for item in value]
        compact[key] = value
    return compact


def filled_defaults(schema: dict, values: dict, keys=None) -> dict:
    filled = copy.deepcopy(values)
    for key in dict.fromkeys([*schema.get("properties", {}), *filled]) if keys is None else keys:
        subschema = value_schema(schema, key)
        if key not in filled and "default" in subschema:
            filled[key] = copy.deepcopy(subschema["default"])
        if key in filled:
            filled[key] = filled_value(subschema, filled[key])
    return filled


def filled_value(schema: dict, value):
    """``value`` with the defaults of its nested objects (also those in a list) filled in."""
    if isinstance(value, dict) and is_object_schema(schema):
        return filled_defaults(schema, value)
    if isinstance(value, list) and is_object_schema(schema.get("items", {})):
        return [filled_defaults(schema["items"], item) for item in value]
    return value


def is_object_schema(schema: dict) -> bool:
    """An object whose keys the schema describes (and so may have defaults)."""
    return "properties" in schema or isinstance(schema.get("additionalProperties"), dict)


def same_json(a, b) -> bool:
    """Equal as JSON, types included: 1 is not 1.0 and true is not 1, so a restored default
    reaches the command exactly as the config gave it."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def key_name(path) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def closest(name: str, known) -> str:
    """The tail of a message about a misspelt name: the closest known name, or all of them."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"


def check(config: dict) -> None:
    """Checks that need more than the schema: names, references, templates, duplicates, metric
    names and options the jobs would refuse. Expects a config the schema accepted."""
    check_run_name(config)
    check_user_paths(config)
    class_subset(config)
    check_generated(config)
    check_format_control(config)
    check_licenses(config)
    check_complex_prompts(config)
    check_mixtures(config)
    check_generation(config)
    check_spectra(config)
    check_classification(config)
    check_filtering(config)
    check_tables(config)
    check_fidelity_models(config)
    check_recursion(config)
    check_planning(config)


def check_run_name(config: dict) -> None:
    run = config["run"]
    if run in (".", "..") or not re.fullmatch(r"[A-Za-z0-9_.-]+", run):
        raise ConfigError(f"run: {run!r} is not a directory name under results/ "
                          "(letters, digits, '_', '-' and '.', but not '.' or '..')")


def user_paths(config: dict) -> dict:
    """Every path the config names for the workflow to read, the user's data and models: {config key: path}."""
    from contamination.generation import generators

    paths = {f"sources.{source}.{key}": value for source, settings in config["sources"].items()
             for key, value in settings.items() if key in ("root", "karpathy_json")}
    paths.update({f"models.{key}": value for key, value in config["models"].items() if key != "build_tiny"})
    paths.update(generators.user_pipelines(config))
    figure = config["classification"]["figure3"]
    paths.update({f"classification.figure3.{key}": figure[key] for key in ("wordnet_is_a", "superclasses") if figure[key]})
    if config["captioning"]["spice_corenlp_dir"]:
        paths["captioning.spice_corenlp_dir"] = config["captioning"]["spice_corenlp_dir"]
    return paths


def check_user_paths(config: dict) -> None:
    """No configured path lies inside results/<run>/ (or holds it): --delete-all-output, -R and
    --forceall of this run would remove or overwrite it."""
    results = results_dir(config).resolve()
    for key, value in user_paths(config).items():
        path = Path(value).resolve()
        if path == results or results in path.parents or path in results.parents:
            raise ConfigError(f"{key}: '{value}' overlaps this run's results directory '{results_dir(config)}', "
                              "which the workflow writes and deletes; keep your data outside it")


def stand_in_warning(config: dict) -> str:
    """'' for a run on the configured datasets and models; else what it uses in their place."""
    stand_ins = []
    if config["synthetic"]["enabled"]:
        stand_ins.append("synthetic datasets (the sources.* paths are not read)")
    if config["models"]["build_tiny"]:
        stand_ins.append("tiny random models (the models.* paths are not read)")
    if not stand_ins:
        return ""
    return f"warning: run '{config['run']}' uses {' and '.join(stand_ins)}, written under {results_dir(config)}/"


def check_generated(config: dict) -> None:
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


def check_format_control(config: dict) -> None:
    """Each dataset to re-store is an entry of `generated`, and its copy's name is free."""
    generated = [spec["name"] for spec in config["generated"]]
    seen = set(TRAINING_SOURCES) | set(generated)
    for index, name in enumerate(config["format_control"]["generated"]):
        key = f"format_control.generated[{index}]"
        if name not in generated:
            raise ConfigError(f"{key}: '{name}' is not an entry of `generated`{closest(name, generated)}")
        if f"{name}{FORMAT_MATCHED_SUFFIX}" in seen:
            raise ConfigError(f"{key}: its copy's name '{name}{FORMAT_MATCHED_SUFFIX}' is taken (or '{name}' is listed twice)")
        seen.add(f"{name}{FORMAT_MATCHED_SUFFIX}")


def check_licenses(config: dict) -> None:
    from contamination.generation.generators import PAPER_GENERATOR

    known = [PAPER_GENERATOR, *config["generators"]]
    for generator in config["licenses"]:
        if generator not in known:
            raise ConfigError(f"licenses.{generator}: no generator of that name (the paper's '{PAPER_GENERATOR}' "
                              f"or a key of `generators`){closest(generator, known)}")


def check_complex_prompts(config: dict) -> None:
    template = config["complex_prompts"]["template"]
    for field in COMPLEX_FIELDS:
        if "{" + field + "}" not in template:
            raise ConfigError(f"complex_prompts.template: {template!r} has no {{{field}}} placeholder")


def dataset_target(config: dict, name: str):
    """'label' or 'caption' for a dataset a mixture can draw from; None if there is none so named."""
    if name in TRAINING_SOURCES:
        return TRAINING_SOURCES[name]
    if name in generated_names(config):
        return PROMPT_KIND_TARGET[origin_spec(config, name)["prompts"]]
    return None


def check_mixtures(config: dict) -> None:
    known = sorted(list(TRAINING_SOURCES) + generated_names(config))
    names = set()
    for index, mixture in enumerate(config["mixtures"]):
        key = f"mixtures[{index}]"
        if mixture["name"] in names:
            raise ConfigError(f"{key}.name: duplicate mixture name '{mixture['name']}'")
        if mixture["name"] == PRETRAINED_RUN:
            raise ConfigError(f"{key}.name: '{PRETRAINED_RUN}' is reserved for the captioning run without fine-tuning")
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


def check_generation(config: dict) -> None:
    """Options the generate job would refuse, for every generator, refused before any job runs."""
    from contamination.generation import generators

    settings = config["generation"]
    generators.check(config)
    if settings["safety_checker"] and config["models"]["build_tiny"]:
        raise ConfigError("generation.safety_checker: true, but models.build_tiny builds a pipeline without a "
                          "safety checker; set it to false")


def check_spectra(config: dict) -> None:
    generated = generated_names(config)
    for index, name in enumerate(config["spectra"]["generated"]):
        if name not in generated:
            raise ConfigError(f"spectra.generated[{index}]: '{name}' is not a generated dataset{closest(name, generated)}")


def check_classification(config: dict) -> None:
    """Recipes, and every model a classification table or Figure 3 asks for, exist and agree."""
    from contamination.experiments import classify_recipe

    settings = config["classification"]
    classifiers = list(settings["models"])
    for model, recipe in settings["models"].items():
        classify_recipe.check(recipe, f"classification.models.{model}")
    for index, table in enumerate(config["tables"]):
        if table["experiment"] != "classify":
            continue
        for position, model in enumerate(table["models"]):
            if model not in classifiers:
                raise ConfigError(f"tables[{index}].models[{position}]: no recipe classification.models.{model}"
                                  f"{closest(model, classifiers)}")
    figure = settings["figure3"]
    if figure["model"] not in classifiers:
        raise ConfigError(f"classification.figure3.model: no recipe for '{figure['model']}'"
                          f"{closest(figure['model'], classifiers)}")
    mixtures = [mixture["name"] for mixture in config["mixtures"]]
    for position, mixture in enumerate(figure["mixtures"]):
        if mixture not in mixtures:
            raise ConfigError(f"classification.figure3.mixtures[{position}]: unknown mixture '{mixture}'"
                              f"{closest(mixture, mixtures)}")
    if figure["wordnet_is_a"] and figure["superclasses"]:
        raise ConfigError("classification.figure3: set wordnet_is_a (the big_12 superclasses) or superclasses "
                          "(a CSV map), not both")


def check_filtering(config: dict) -> None:
    """Filtered mixtures replace real class images by generated ones (the replaced images and the
    generated ones left out train the detector), every detector's extractor is configured, and
    the tables of filtering runs name configured detectors."""
    from contamination.experiments.filtering import FEATURES, feature_kinds

    settings = config["filtering"]
    mixtures = {mixture["name"]: mixture for mixture in config["mixtures"]}
    generated = [spec["name"] for spec in config["generated"]]
    for index, name in enumerate(settings["mixtures"]):
        key = f"filtering.mixtures[{index}]"
        if name not in mixtures:
            raise ConfigError(f"{key}: unknown mixture '{name}'{closest(name, mixtures)}")
        mixture = mixtures[name]
        if mixture["kind"] != "replace":
            raise ConfigError(f"{key}: '{name}' is a {mixture['kind']} mixture; filtering needs a replace mixture, "
                              "whose replaced real images train the detector")
        if TRAINING_SOURCES.get(mixture["base"]) != "label" or mixture["by"] not in generated:
            raise ConfigError(f"{key}: '{name}' replaces images of '{mixture['base']}' by '{mixture['by']}'; filtering "
                              "needs a class dataset's images replaced by a generated dataset's (the classifier "
                              "retrains on the rest)")
    if not config["models"]["build_tiny"]:
        for features in feature_kinds(config):
            if FEATURES[features] not in config["models"]:
                raise ConfigError(f"models.{FEATURES[features]}: required by the detectors on {features} "
                                  "(filtering.detectors)")
    for index, table in enumerate(config["tables"]):
        if table["experiment"] != "filter":
            continue
        for position, model in enumerate(table["models"]):
            if model not in settings["detectors"]:
                raise ConfigError(f"tables[{index}].models[{position}]: '{model}' is not one of filtering.detectors"
                                  f"{closest(model, settings['detectors'])}")


def check_tables(config: dict) -> None:
    """Unique names, rows naming runs the workflow makes, metrics the experiment writes."""
    names = set()
    for index, table in enumerate(config["tables"]):
        key = f"tables[{index}]"
        if table["name"] in names:
            raise ConfigError(f"{key}.name: duplicate table name '{table['name']}'")
        if table["name"] in RESERVED_TABLE_NAMES:
            raise ConfigError(f"{key}.name: '{table['name']}' is reserved for results/<run>/tables/{table['name']}.csv")
        names.add(table["name"])
        if table.get("group") in [other["name"] for other in config["tables"]]:
            raise ConfigError(f"{key}.group: '{table['group']}' is a table's name; a group's target would hide its rule")
        experiment = table["experiment"]
        if experiment not in EXPERIMENTS:
            raise ConfigError(f"{key}.experiment: unknown experiment '{experiment}'{closest(experiment, EXPERIMENTS)}"
                              f" (contamination.experiments.EXPERIMENTS)")
        runs = table_runs(config, experiment)
        for position, row in enumerate(table["rows"]):
            if row["mixture"] not in runs:
                what = {"generated datasets": "generated dataset",
                        "filtering mixtures": "mixture of filtering.mixtures"}.get(EXPERIMENTS[experiment]["runs"], "mixture")
                raise ConfigError(f"{key}.rows[{position}].mixture: unknown {what} '{row['mixture']}' for a "
                                  f"{experiment} table{closest(row['mixture'], runs)}")
        written = table_metrics(config, experiment)
        for position, metric in enumerate(table["metrics"]):
            if metric not in written:
                raise ConfigError(f"{key}.metrics[{position}]: {experiment} runs do not write '{metric}'"
                                  f"{closest(metric, written)}")


def check_fidelity_models(config: dict) -> None:
    """Fidelity tables name an encoder the workflow has, and models.dinov2 is set when one needs it."""
    for index, table in enumerate(config["tables"]):
        if table["experiment"] != "fidelity":
            continue
        for position, model in enumerate(table["models"]):
            if model not in FIDELITY_ENCODERS:
                raise ConfigError(f"tables[{index}].models[{position}]: fidelity runs on the features of "
                                  f"{list(FIDELITY_ENCODERS)}, not '{model}'{closest(model, FIDELITY_ENCODERS)}")
            if FIDELITY_ENCODERS[model] == "dinov2" and "dinov2" not in config["models"] and not config["models"]["build_tiny"]:
                raise ConfigError(f"models.dinov2: tables[{index}] ({table['name']}) compares DINOv2 features; set it "
                                  "to a transformers Dinov2Model directory")


def check_recursion(config: dict) -> None:
    """The recursion's real data is a mixture that holds real images only."""
    settings = config["recursion"]
    if settings["generations"] == 0:
        return
    mixtures = {mixture["name"]: mixture for mixture in config["mixtures"]}
    base = mixtures.get(settings["base"])
    if base is None:
        raise ConfigError(f"recursion.base: unknown mixture '{settings['base']}'{closest(settings['base'], mixtures)}")
    if base["kind"] != "subset" or base["base"] not in TRAINING_SOURCES:
        raise ConfigError(f"recursion.base: mixture '{base['name']}' is not real data: it must be of kind subset "
                          f"of a real source ({', '.join(TRAINING_SOURCES)})")


def check_planning(config: dict) -> None:
    """A throughput for a misspelt model would be ignored and the recipe's own assumption kept."""
    known = list(config["generators"])
    for generator in config["planning"]["throughput"]["generators"]:
        if generator not in known:
            raise ConfigError(f"planning.throughput.generators.{generator}: no generator generators.{generator}"
                              f"{closest(generator, known or ['none'])}")
    classifiers = list(config["classification"]["models"])
    for model in config["planning"]["throughput"]["train_classifier"]:
        if model not in classifiers:
            raise ConfigError(f"planning.throughput.train_classifier.{model}: no recipe classification.models.{model}"
                              f"{closest(model, classifiers)}")


def class_subset(config: dict):
    """The sorted wnids of ``sources.imagenet.classes``, or None for all the root's classes. The
    value is a list of wnids, the name of a class list shipped with the package (imagenet100), or
    the path of a file in that format (one wnid per line, '#' comments)."""
    from contamination.sources.imagenet import shipped_class_lists, shipped_wnids, wnid_lines

    key, value = "sources.imagenet.classes", config["sources"]["imagenet"]["classes"]
    if value == ALL_CLASSES:
        return None
    if isinstance(value, list):
        wnids, where = value, ""
    elif value in shipped_class_lists():
        wnids, where = shipped_wnids(value), f" (the shipped list '{value}')"
    else:
        try:
            wnids, where = wnid_lines(Path(value).read_text()), f" (file '{value}')"
        except FileNotFoundError:
            raise ConfigError(f"{key}: '{value}' is neither '{ALL_CLASSES}', a shipped class list "
                              f"({', '.join(shipped_class_lists())}) nor an existing file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{key}: file '{value}' cannot be read: {error}") from None
    bad = [wnid for wnid in wnids if not WNID_PATTERN.fullmatch(wnid)]
    if bad:
        raise ConfigError(f"{key}{where}: {bad[0]!r} is not a wnid (n followed by 8 digits)")
    repeated = sorted({wnid for wnid in wnids if wnids.count(wnid) > 1})
    if repeated:
        raise ConfigError(f"{key}{where}: {repeated[0]} is listed more than once")
    total = config["sources"]["imagenet"]["num_classes"]
    if not 2 <= len(wnids) <= total:
        raise ConfigError(f"{key}{where}: {len(wnids)} classes; a subset needs 2 to sources.imagenet.num_classes "
                          f"({total})")
    return sorted(wnids)


def class_count(config: dict) -> int:
    """The number of classes in use: of the subset ``sources.imagenet.classes``, or all of them.
    Classifiers and linear probes have this many outputs; labels are 0 .. class_count - 1."""
    subset = class_subset(config)
    return config["sources"]["imagenet"]["num_classes"] if subset is None else len(subset)


def train_subset(config: dict, name: str):
    """The size of the seeded subset of a real source's training split that mixtures use
    (``sources.<name>.train_subset``), or None: all of it."""
    return config["sources"].get(name, {}).get("train_subset")


def mixture_job_spec(config: dict, name: str) -> dict:
    """What the mixture command builds mixture ``name`` from: its config entry, the run's seed and
    the subset sizes of the datasets it draws from (omitted when none is cut, so a mixture of
    other sources keeps its params)."""
    mixture = next(mixture for mixture in config["mixtures"] if mixture["name"] == name)
    datasets = [mixture["base"]] + ([mixture["by"]] if mixture["kind"] != "subset" else [])
    subsample = {dataset: train_subset(config, dataset) for dataset in datasets
                 if train_subset(config, dataset) is not None}
    return dict(mixture, seed=config["seed"], **({"subsample": subsample} if subsample else {}))


def generated_spec(config: dict, name: str) -> dict:
    for spec in config["generated"]:
        if spec["name"] == name:
            return spec
    raise ConfigError(f"generated: no generated dataset named '{name}'")


def format_matched(config: dict) -> dict:
    """{copy: the `generated` entry it re-stores} of config format_control."""
    return {f"{name}{FORMAT_MATCHED_SUFFIX}": name for name in config["format_control"]["generated"]}


def generated_names(config: dict) -> list:
    """Every generated dataset: the entries of `generated`, then the format-matched copies."""
    return [spec["name"] for spec in config["generated"]] + list(format_matched(config))


def origin_name(config: dict, name: str) -> str:
    """The `generated` entry that made the images of generated dataset ``name``: itself, or the
    one a format-matched copy re-stores."""
    return format_matched(config).get(name, name)


def origin_spec(config: dict, name: str) -> dict:
    return generated_spec(config, origin_name(config, name))


def generated_from(config: dict, name: str):
    """The real source a generated dataset's prompts come from, or None for a real source."""
    if name not in generated_names(config):
        return None
    spec = origin_spec(config, name)
    return spec["source"] if spec["prompts"] == "captions" else None


def generated_size(config: dict, name: str) -> int:
    """Number of images of a generated dataset, known from the config alone (the DAG is static)."""
    spec = origin_spec(config, name)
    if spec["prompts"] == "captions":
        return config["sources"]["coco"]["train_images"] * spec["captions_per_image"]
    return class_count(config) * spec["per_class"]


def shard_size(config: dict, name: str) -> int:
    """Images per generation job of generated dataset ``name`` (its generator's or generation's);
    a format-matched copy has a shard per shard of the dataset it re-stores."""
    from contamination.generation import generators

    return generators.generation_settings(config, origin_name(config, name))["shard_size"]


def shard_count(config: dict, name: str) -> int:
    return math.ceil(generated_size(config, name) / shard_size(config, name))


def results_dir(config: dict) -> Path:
    return Path("results") / config["run"]


# The tiny models' file names under results/<run>/models/ (config `models.build_tiny`).
TINY_MODEL_NAMES = {"stable_diffusion": "tiny-sd", "blip": "tiny-blip", "resnet50_detector": "resnet50-random.pth",
                    "inception": "tiny-inception.pth", "clip_vision": "tiny-clip-vision", "dinov2": "tiny-dinov2"}
# The models a fidelity table may name: the encoder whose features its runs compare.
FIDELITY_ENCODERS = {"inception_v3_features": "inception", "dinov2_features": "dinov2"}


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


def source_root(config: dict, source: str) -> str:
    """The root the workflow reads ``source`` from (source_location), with the configured root and
    Karpathy file checked to exist when they are the ones read."""
    location = source_location(config, source)
    if not config["synthetic"]["enabled"]:
        for key in location:
            require_existing(config, f"sources.{source}.{key}")
    return location["root"]


def model_path(config: dict, key: str) -> str:
    """The model ``key`` the workflow reads (model_location), checked to exist when it is the
    configured one (a tiny stand-in is built by the workflow)."""
    if config["models"]["build_tiny"]:
        return model_location(config, key)
    return require_existing(config, f"models.{key}")


def synthetic_spec(config: dict) -> dict:
    """What the synthetic command writes: config ``synthetic``, the seed, and where each source
    and Karpathy file goes (source_location)."""
    spec = dict(job_settings("synthetic", config["synthetic"]), seed=config["seed"])
    spec["roots"] = {source: source_location(config, source)["root"] for source in REAL_SOURCES}
    spec["karpathy_json"] = {source: source_location(config, source)["karpathy_json"] for source in CAPTION_SOURCES}
    return spec


def iddpm_sample_shard_count(config: dict) -> int:
    settings = config["iddpm"]
    return math.ceil(settings["sample_count"] / settings["sample_shard_size"])


def as_json(data) -> str:
    """Canonical JSON, as the rules pass settings to the commands."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def settings_json(section: str, values: dict, keys=None, **extra) -> str:
    """A job's settings as the rules pass them: ``values`` of config ``section`` without defaults
    and run-time keys (job_settings; the command restores them), plus ``extra`` (seed, names)."""
    return as_json(dict(job_settings(section, values, keys), **extra))


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
    """The config's checks, then the DAG as a dry run builds it (contamination.dag): the input
    functions check that every dataset and model path a job would read exists."""
    from contamination.dag import workflow_dag

    config = load(*args.configfiles)
    jobs = workflow_dag(["all"] + [table["name"] for table in config["tables"]], config)
    print(f"config ok: run '{config['run']}', {len(config['mixtures'])} mixtures, "
          f"{sum(shard_count(config, spec['name']) for spec in config['generated'])} generation shards, "
          f"{len(jobs)} jobs")
    if stand_in_warning(config):
        print(stand_in_warning(config))
