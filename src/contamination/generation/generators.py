"""Which text-to-image generator makes each generated dataset, with which settings.

A generated dataset (config ``generated[]``) names its generator with ``generator:``, a key of
config ``generators`` (the pipeline directory and class, scheduler, steps, guidance, resolution,
dtype, negative prompt and extra call arguments). Without one it is made by the paper's
generator, PAPER_GENERATOR: Stable Diffusion v1.1 at ``models.stable_diffusion`` with the
sampling settings of config ``generation``, byte for byte as before generators existed. The
run-wide keys of ``generation`` (speed options, image format, shard size, safety checker,
watermark; RUN_WIDE_KEYS) hold for every generator; ``batch_size`` too unless a generator sets
its own.

``generation_settings`` is what the generate job receives; ``generator_settings`` adds where the
pipeline is read from: the full effective settings of a generated dataset, for records and cards.
"""

from contamination import config as cfg
from contamination.errors import ConfigError

PAPER_GENERATOR = "stable_diffusion"  # the config key of its pipeline: models.stable_diffusion
# `pipeline: tiny:<family>`: a tiny random pipeline the workflow builds (models.build_tiny only).
TINY_PREFIX = "tiny:"
# What a generator sets for itself; everything else of `generation` is run-wide.
GENERATOR_KEYS = ("class", "scheduler", "steps", "guidance_scale", "negative_prompt", "height", "width", "dtype",
                  "call_arguments", "batch_size")
RUN_WIDE_KEYS = ("matmul_precision", "channels_last", "compile", "safety_checker", "watermark", "image_format",
                 "image_quality", "shard_size")


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
    settings = {key: config["generation"][key] for key in (*RUN_WIDE_KEYS, "batch_size")}
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
