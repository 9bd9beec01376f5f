"""Which text-to-image generator makes each generated dataset, with which settings.

A generated dataset (config ``generated[]``) names its generator with ``generator:``, a key of
config ``generators`` (the pipeline directory and class, scheduler, steps, guidance, resolution,
dtype, negative prompt and extra call arguments). Without one it is made by the paper's
generator, PAPER_GENERATOR: Stable Diffusion v1.1 at ``models.stable_diffusion`` with the
sampling settings of config ``generation``, byte for byte as before generators existed. The
run-wide keys of ``generation`` (speed options, image format, shard size, safety checker,
watermark; RUN_WIDE_KEYS) hold for every generator; ``batch_size`` and ``shard_size`` too unless
a generator sets its own (a slow generator's shards must fit the profile's wall time).

``generation_settings`` is what the generate job receives; ``generator_settings`` adds where the
pipeline is read from: the full effective settings of a generated dataset, for records;
``effective_settings`` what a dataset's card states (generation/card.py).
"""

from contamination import config as cfg
from contamination.errors import ConfigError

PAPER_GENERATOR = "stable_diffusion"  # the config key of its pipeline: models.stable_diffusion
# `pipeline: tiny:<family>`: a tiny random pipeline the workflow builds (models.build_tiny only).
TINY_PREFIX = "tiny:"
# What a generator sets for itself; everything else of `generation` is run-wide.
GENERATOR_KEYS = ("class", "scheduler", "steps", "guidance_scale", "negative_prompt", "height", "width", "dtype",
                  "call_arguments", "batch_size", "shard_size")
RUN_WIDE_KEYS = ("matmul_precision", "channels_last", "compile", "safety_checker", "watermark", "image_format",
                 "image_quality")
# A card's settings (effective_settings): how images are stored; the generator's keys that are
# not sampling settings; the licence of a generator the config `licenses` does not name.
STORAGE_KEYS = ("image_format", "image_quality", "shard_size")
NOT_SAMPLING = ("generator", "pipeline", "pipeline_path", "batch_size", *STORAGE_KEYS)
UNSTATED_LICENSE = "unstated"


def generator_name(spec: dict) -> str:
    """The generator of generated dataset ``spec`` (an entry of config ``generated``)."""
    return spec.get("generator", PAPER_GENERATOR)


def generation_settings(config: dict, name: str) -> dict:
    """The generate job's settings for generated dataset ``name``: config ``generation`` for the
    paper's generator; else its run-wide keys, the generator's own keys and its name."""
    generator = generator_name(cfg.generated_spec(config, name))
    if generator == PAPER_GENERATOR:
        return dict(config["generation"])
    own = config["generators"][generator]
    settings = {key: config["generation"][key] for key in (*RUN_WIDE_KEYS, "batch_size", "shard_size")}
    settings.update({key: own[key] for key in GENERATOR_KEYS if key in own})
    return dict(settings, generator=generator)


def generator_settings(config: dict, name: str) -> dict:
    """The full effective generator settings of generated dataset ``name``: every key the
    generate job uses (generation_settings, defaults filled), the generator's name, and the
    pipeline as configured (``pipeline``) and as read (``pipeline_path``)."""
    generator = generator_name(cfg.generated_spec(config, name))
    settings = cfg.with_defaults("generation", generation_settings(config, name))
    configured = pipeline_setting(config, generator)
    return dict(settings, generator=generator, pipeline=configured, pipeline_path=pipeline_location(config, generator))


def effective_settings(config: dict, name: str) -> dict:
    """How generated dataset ``name`` is made, as its card records it and verify-generated
    regenerates it (generation/card.py): the generator (name, the pipeline directory the workflow
    reads, class, licence as config `licenses` states it), its sampling settings, how its images are
    stored, the prompt recipe (the `generated` entry that made them) and the run's seed; for a
    format-matched copy also how it is re-stored (config `format_control`)."""
    origin = cfg.origin_name(config, name)
    spec = cfg.generated_spec(config, origin)
    settings = generator_settings(config, origin)
    recipe = dict(spec, complex_prompts=config["complex_prompts"]) if spec["prompts"] == "class_complex" else spec
    return {
        "name": name,
        "generator": {"name": settings["generator"], "pipeline": settings["pipeline_path"], "class": settings["class"],
                      "license": config["licenses"].get(settings["generator"], UNSTATED_LICENSE)},
        "sampling": {key: value for key, value in settings.items() if key not in NOT_SAMPLING},
        "storage": {key: settings[key] for key in STORAGE_KEYS},
        "prompts": recipe,
        "seed": config["seed"],
        "format_control": None if name == origin else {
            "from": origin, **{key: config["format_control"][key] for key in ("real_source", "profile_images")}},
    }


def pipeline_setting(config: dict, generator: str) -> str:
    return config["models"]["stable_diffusion"] if generator == PAPER_GENERATOR else config["generators"][generator]["pipeline"]


def pipeline_key(generator: str) -> str:
    """The config key naming ``generator``'s pipeline, for messages."""
    return "models.stable_diffusion" if generator == PAPER_GENERATOR else f"generators.{generator}.pipeline"


def tiny_family(config: dict, generator: str):
    """The tiny family ``generator`` is built as, or None for a pipeline the user provides."""
    if generator == PAPER_GENERATOR:
        return "sd" if config["models"]["build_tiny"] else None
    pipeline = config["generators"][generator]["pipeline"]
    return pipeline[len(TINY_PREFIX):] if pipeline.startswith(TINY_PREFIX) else None


def tiny_pipeline_location(config: dict, family: str) -> str:
    """Where the workflow builds the tiny pipeline of ``family`` (tiny-sd is the paper generator's)."""
    return str(cfg.results_dir(config) / "models" / f"tiny-{family}")


def pipeline_location(config: dict, generator: str) -> str:
    """Where the workflow reads ``generator``'s pipeline: a tiny one it builds, or the configured
    directory (only ever read)."""
    family = tiny_family(config, generator)
    return tiny_pipeline_location(config, family) if family else pipeline_setting(config, generator)


def tiny_families(config: dict) -> list:
    """The tiny families the run's generators need besides the paper's tiny-sd, in order."""
    families = [tiny_family(config, generator) for generator in config["generators"]]
    return sorted({family for family in families if family and family != "sd"})


def user_pipelines(config: dict) -> dict:
    """{config key: directory} of the generators' pipelines the user provides."""
    return {pipeline_key(generator): settings["pipeline"] for generator, settings in config["generators"].items()
            if not settings["pipeline"].startswith(TINY_PREFIX)}


def check(config: dict) -> None:
    """Every generator's settings as the generate job would check them, its tiny family, and
    every generated dataset's generator exists."""
    from contamination.generation.generate import check_settings
    from contamination.smoke.tiny_sd import TINY_FAMILIES

    check_settings(config["generation"], "generation")
    generators = config["generators"]
    if PAPER_GENERATOR in generators:
        raise ConfigError(f"generators.{PAPER_GENERATOR}: the name is reserved for the paper's generator "
                          "(models.stable_diffusion with the `generation` settings); choose another")
    for generator, own in generators.items():
        key = f"generators.{generator}"
        check_settings(dict(config["generation"], **own), key)
        family = tiny_family(config, generator)
        if family is not None:
            if family not in TINY_FAMILIES:
                raise ConfigError(f"{key}.pipeline: '{own['pipeline']}' names no tiny family"
                                  f"{cfg.closest(family, TINY_FAMILIES)}")
            if not config["models"]["build_tiny"]:
                raise ConfigError(f"{key}.pipeline: '{own['pipeline']}' is built only with models.build_tiny: true; "
                                  "give a local diffusers pipeline directory")
    known = [PAPER_GENERATOR, *generators]
    for index, spec in enumerate(config["generated"]):
        if generator_name(spec) not in known:
            raise ConfigError(f"generated[{index}].generator: unknown generator '{spec['generator']}' "
                              f"(config `generators`){cfg.closest(spec['generator'], known)}")


# ---- the generator comparison: datasets, mixtures and tables per generator ---------------------
# Config lists are replaced, not extended, by an overlay; `generator_comparison` (a mapping, which
# overlays merge) names the generators to compare and adds their entries to `generated`,
# `mixtures` and `tables` when the config is validated, so an overlay adds generators without
# restating the paper's lists.
COMPARISON_GROUP = "generators"  # the named target that makes every comparison table
CLASSIFY_METRICS = ["top1_imagenet_val", "top1_imagenet_a", "top1_imagenet_r"]


def comparison_dataset(generator: str) -> str:
    return f"{generator}_imagenet"


def comparison_entries(config: dict) -> dict:
    """{"generated", "mixtures", "tables"}: the entries config ``generator_comparison`` adds.

    Per generator: an SD-ImageNet made by it (class_template prompts, ``per_class`` images per
    class), its subset mixture and IN/<label>-<n>% for each fraction. The tables (group
    ``generators``) have a row per such mixture, after ImageNet's and the paper generator's
    (the config's own ImageNet and SD-ImageNet mixtures at the same fractions, where it has them):
    ``generators_classify`` (the classifier's top-1 on ImageNet val, -A and -R) and one per
    fidelity model, ``generators_inception`` or ``generators_dinov2`` (Table 4's precision and
    recall, and FD_DINOv2 for DINOv2)."""
    from contamination.experiments import table_metrics

    comparison = config["generator_comparison"]
    generated, mixtures, rows = [], [], [*baseline_rows(config, comparison["fractions"])]
    for generator in comparison["generators"]:
        label, dataset = config["generators"][generator].get("label", generator), comparison_dataset(generator)
        generated.append({"name": dataset, "prompts": "class_template", "source": "imagenet",
                          "per_class": comparison["per_class"], "template": comparison["template"],
                          "generator": generator})
        subset = {"name": dataset, "label": f"{label}-ImageNet", "kind": "subset", "base": dataset, "fraction": 1.0}
        replaced = [{"name": f"in_{generator}_{percent(fraction)}", "label": f"IN/{label}-{percent(fraction)}%",
                     "kind": "replace", "base": "imagenet", "by": dataset, "fraction": fraction, "match": "label"}
                    for fraction in comparison["fractions"]]
        mixtures += [*replaced, subset]
        rows += [{"dataset": mixture["label"], "mixture": mixture["name"]} for mixture in [*replaced, subset]]
    tables = [{"name": f"{COMPARISON_GROUP}_classify", "group": COMPARISON_GROUP, "reported_table": COMPARISON_GROUP,
               "experiment": "classify", "models": [comparison["classifier"]], "metrics": CLASSIFY_METRICS,
               "rows": rows}]
    fidelity_metrics = table_metrics(config, "fidelity")
    for model in comparison["fidelity_models"]:
        tables.append({"name": f"{COMPARISON_GROUP}_{model.split('_')[0]}", "group": COMPARISON_GROUP,
                       "reported_table": COMPARISON_GROUP, "experiment": "fidelity", "models": [model],
                       "metrics": [metric for metric in fidelity_metrics if metric_of_model(metric, model)],
                       "rows": rows})
    return {"generated": generated, "mixtures": mixtures, "tables": tables}


def metric_of_model(metric: str, model: str) -> bool:
    """Whether a fidelity run of ``model`` writes ``metric`` (only DINOv2 runs write FD_DINOv2)."""
    return not metric.startswith("FD_DINOv2") or model == "dinov2_features"


def percent(fraction: float) -> str:
    return f"{round(fraction * 100)}"


def baseline_rows(config: dict, fractions) -> list:
    """Rows for ImageNet and the paper generator's SD-ImageNet mixtures, from the config's own
    mixtures (any name): all of ImageNet, and those replacing ImageNet items by (or made of all
    of) a class-template dataset of the paper's generator at the compared fractions."""
    paper_datasets = {spec["name"] for spec in config["generated"]
                      if generator_name(spec) == PAPER_GENERATOR and spec["prompts"] == "class_template"}
    rows = []
    for mixture in config["mixtures"]:
        everything = mixture["kind"] == "subset" and mixture["fraction"] == 1.0
        if (everything and mixture["base"] in {"imagenet", *paper_datasets}) or (
                mixture["kind"] == "replace" and mixture["base"] == "imagenet" and mixture.get("by") in paper_datasets
                and mixture["fraction"] in fractions and mixture["match"] == "label"):
            rows.append({"dataset": mixture.get("label", mixture["name"]), "mixture": mixture["name"]})
    return rows


def expand_comparison(config: dict) -> bool:
    """Add the entries of ``generator_comparison`` (comparison_entries) to the config's lists, in
    place; an entry already there (a run's saved config validated again) is kept if it is the
    same, an error if it differs. Returns whether anything was added."""
    comparison = config["generator_comparison"]
    for index, generator in enumerate(comparison["generators"]):
        if generator not in config["generators"]:
            raise ConfigError(f"generator_comparison.generators[{index}]: unknown generator '{generator}' "
                              f"(config `generators`){cfg.closest(generator, list(config['generators']) or ['none'])}")
    if not comparison["generators"]:
        return False
    return cfg.add_entries(config, comparison_entries(config), "generator_comparison")
