# Shared by all rule files. The config (validated once, by the same code as check-config), every
# path the workflow writes (each named once, below) and the rules' input and params functions
# (get_*). Decisions live in the package: these functions only look up the config and call it.
# Shell commands quote every placeholder ({input.x:q}, {params.spec:q}, ...) except params named
# `launcher` or `*arguments`: those hold several arguments, each already quoted (shlex.join) by
# their function here (tests/test_workflow_dag.py checks the convention).
import re
import shlex
import sys
from pathlib import Path

# The rules run `python -m contamination` from this checkout's src/, in whatever Python runs the
# job (the venv, or a conda env of envs/ with --sdm conda): the package need not be installed
# there. Parsing the Snakefile needs only the light config module.
SOURCE_DIR = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SOURCE_DIR)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(SOURCE_DIR)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")

from contamination import config as cfg
from contamination.experiments import filtering
from contamination.experiments.encoders import MODEL_KEYS as ENCODER_MODEL_KEYS
from contamination.experiments import iddpm as iddpm_recipe
from contamination.experiments import recursion
from contamination.experiments.classify import SPEC_KEYS as CLASSIFIER_KEYS
from contamination.experiments.mae import MODEL_NAME as MAE_MODEL
from contamination.experiments.mae import PRETRAIN_SPEC_KEYS as MAE_PRETRAIN_KEYS
from contamination.experiments.mae import PROBE_SPEC_KEYS as MAE_PROBE_KEYS
from contamination.generation import generators
from contamination.generation.format_match import SPEC_KEYS as FORMAT_MATCH_KEYS
from contamination.launch import launcher_command
from contamination.metrics import image_cache
from contamination.metrics.spectra import SPEC_KEYS as SPECTRA_KEYS

# The schema, its defaults and every semantic check, as `python -m contamination check-config` runs
# them; a bad config stops Snakemake with check-config's one line, not an exception with a stack.
try:
    cfg.validate(config)
except cfg.ConfigError as error:
    sys.exit(f"error: {error}")
# A site overlay made from config/smoke.yaml would run on stand-ins in place of its real data.
if cfg.stand_in_warning(config):
    logger.warning(cfg.stand_in_warning(config))

ENV = "../../envs/contamination.yaml"


def any_of(names):
    """A wildcard constraint matching exactly ``names``; none if there are none (Snakemake takes
    an empty constraint for no constraint)."""
    return "|".join(map(re.escape, names)) or "(?!)"


PROFILE = Path(workflow.basedir) / "profiles" / "slurm"
GENERATED = [spec["name"] for spec in config["generated"]]  # made by prompts and generation
FORMAT_MATCHED = list(cfg.format_matched(config))  # re-stored by format_control.smk
MIXTURES = {mixture["name"]: mixture for mixture in config["mixtures"]}
# Filtered mixtures, {<mixture>-filtered-<detector>: (mixture, detector)}: manifests experiments train on like MIXTURES.
FILTERED = filtering.filtered_runs(config)
TABLES = {table["name"]: table for table in config["tables"]}
CLASSIFIERS = list(config["classification"]["models"])
RECURSION = config["recursion"]
# Model names in the paths of runs whose experiment has one model.
FIDELITY_MODEL = "inception_v3_features"
DINOV2_MODEL = "dinov2_features"
IDDPM_MODEL = "iddpm"
EXTRACTOR = "inception"


wildcard_constraints:
    source="|".join(cfg.REAL_SOURCES),
    name="|".join(GENERATED + FORMAT_MATCHED),
    mixture="|".join([*MIXTURES, *FILTERED]),
    table="|".join(TABLES),
    shard=r"\d{5}",
    split="train|val|test",
    size=r"\d+",
    policy="|".join((recursion.REAL, *recursion.POLICIES)),
    generation=r"\d+",


# ---- paths: every file and directory the workflow writes, each named once -------------------
# Call them with a wildcard ("{mixture}") in a rule's input/output, with a name in a function.
RESULTS = cfg.results_dir(config)
LOGS = RESULTS / "logs"
BENCHMARKS = RESULTS / "benchmarks"  # Snakemake benchmark: files, one TSV per job (wall and CPU seconds, memory)
CLASS_TABLE = RESULTS / "index" / "imagenet_classes.parquet"
RUN_CONFIG = RESULTS / "config.yaml"
PLAN = RESULTS / "plan.csv"
ALL_TABLES = RESULTS / "tables" / "all_tables.csv"
SPECTRA_TABLE = RESULTS / "tables" / "spectra.csv"
FIGURE3 = RESULTS / "figures" / "figure3.png"
FIGURE6 = RESULTS / "figures" / "figure6.png"
CONFIG_PAGE = RESULTS / "report" / "config.html"
DIFFERENCES_PAGE = RESULTS / "report" / "differences.html"


def index_path(source):
    return RESULTS / "index" / f"{source}.parquet"


def prompts_path(name):
    return RESULTS / "prompts" / f"{name}.parquet"


def shard_path(name, shard):
    return RESULTS / "generated" / name / f"shard-{shard}.zip"


def generated_index_path(name):
    return RESULTS / "generated" / name / "index.parquet"


def card_json_path(name):
    """The card of a generated dataset, as data (generation/card.py) and as text (card_readme_path)."""
    return RESULTS / "generated" / name / "card.json"


def card_readme_path(name):
    return RESULTS / "generated" / name / "README.md"


def format_profile_path(source):
    return RESULTS / "format_control" / f"{source}-profile.parquet"


def manifest_path(mixture):
    return RESULTS / "mixtures" / f"{mixture}.parquet"


def filtered_manifest_path(mixture, detector):
    return manifest_path(filtering.filtered_run(mixture, detector))


def detector_set_path(mixture):
    return RESULTS / "filtering" / mixture / "detector_set.parquet"


def detector_features_path(mixture, features):
    return RESULTS / "filtering" / mixture / f"{features}.npy"


def run_dir(experiment, model, run):
    """RESULTS/<experiment>/<model>/<run>/: a run is a mixture (or a filtered one), a generated
    dataset (detection) or `pretrained` (captioning without fine-tuning)."""
    return RESULTS / experiment / model / run


def metrics_path(experiment, model, run):
    """The cell of a table: what the run of one experiment writes (experiments/__init__.py)."""
    return run_dir(experiment, model, run) / "metrics.json"


def checkpoint_dir(stage, model, run):
    return RESULTS / "checkpoints" / stage / model / run


def image_array_path(mixture, size):
    return RESULTS / "images" / f"{mixture}-{size}px.npy"


def image_cache_path(dataset, size, suffix="npy"):
    """A dataset's images prepared once at one size (npy), and the URI of each row (parquet)."""
    return RESULTS / "image_cache" / f"{dataset}-{size}px.{suffix}"


def features_path(kind, name, extractor=EXTRACTOR):
    """Features of one image set by ``extractor`` (inception or dinov2): kind index|mixtures|iddpm."""
    return RESULTS / "features" / extractor / kind / f"{name}.npy"


def recursion_path(chain, generation):
    """RESULTS/recursion/iddpm/<chain>/generation-<k>/: one generation's training data, model,
    samples and metrics (chain: its policy, or `real` for generation 0; recursion.chain)."""
    return run_dir("recursion", IDDPM_MODEL, f"{chain}/generation-{generation}")


def recursion_figure_path(policy):
    return RESULTS / "figures" / f"recursion-{policy}.png"


def spectra_path(name, suffix):
    return RESULTS / "spectra" / f"{name}.{suffix}"


def table_path(table, suffix="csv"):
    return RESULTS / "tables" / f"{table}.{suffix}"


def table_page_path(table):
    return RESULTS / "report" / "tables" / f"{table}.html"


def table_plot_path(table):
    return RESULTS / "figures" / f"{table}-vs-contamination.png"


def examples_page_path(name):
    return RESULTS / "report" / "examples" / f"{name}.html"


# ---- what `rule all` and the named targets build ---------------------------------------------


def get_generated_indexes():
    return [generated_index_path(name) for name in GENERATED + FORMAT_MATCHED]


def get_generated_cards():
    return [path(name) for name in GENERATED + FORMAT_MATCHED for path in (card_json_path, card_readme_path)]


def get_mixture_manifests():
    return [manifest_path(name) for name in MIXTURES]


def get_tables():
    return [table_path(name) for name in TABLES]


def get_spectra():
    return [spectra_path(name, suffix) for name in config["spectra"]["generated"] for suffix in ("csv", "png")]


def get_filtering_outputs():
    """The tables of filtering runs or of filtered mixtures, with their report pages and plots."""
    names = filtering.filtering_tables(config)
    return [path for name in names for path in (table_path(name), table_page_path(name), table_plot_path(name))]


def get_spectra_outputs():
    """The combined spectra table and Figure 6, when some generated dataset has spectra."""
    return [SPECTRA_TABLE, FIGURE6] if config["spectra"]["generated"] else []


def get_recursion_outputs():
    """The recursion table, its page and a plot per policy, when config recursion has generations."""
    if not RECURSION["generations"]:
        return []
    return ([table_path(recursion.TABLE), table_page_path(recursion.TABLE)]
            + [recursion_figure_path(policy) for policy in RECURSION["policies"]])


def get_report_files():
    return (
        [table_page_path(name) for name in TABLES]
        + [ALL_TABLES]
        + get_spectra_outputs()
        + [examples_page_path(name) for name in GENERATED + FORMAT_MATCHED]
        + [CONFIG_PAGE]
        + get_recursion_outputs()
    )


# ---- params shared by many rules ------------------------------------------------------------


def get_settings(section, values=None, keys=None, **extra):
    """A job's settings as JSON for its params: config ``section`` (or ``values``) without its
    default values and run-time keys (the command restores them), plus ``extra`` (seed, names)."""
    return cfg.settings_json(section, config[section] if values is None else values, keys, **extra)


def get_runtime(section, keys=None):
    """A params function: the run-time keys of config ``section`` (cfg.RUNTIME_KEYS; only those
    among ``keys`` if given) as JSON for the command's --runtime. It takes ``threads`` only so that
    Snakemake leaves it out of the params it compares: a new num_workers or device re-runs nothing."""

    def runtime(wildcards, threads):
        return cfg.as_json(cfg.runtime_settings(section, config[section], keys))

    return runtime


def get_runtime_arguments(section, flags):
    """A params function, not compared either (see get_runtime): the flags ({flag: key}) of a
    command that takes flags, from run-time keys of config ``section``."""
    assert set(flags.values()) <= set(cfg.RUNTIME_KEYS[section]), "shaping keys belong in the compared params"

    def runtime(wildcards, threads):
        return shlex.join(argument for flag, key in flags.items() for argument in (flag, str(config[section][key])))

    return runtime


def get_launcher(wildcards, resources, threads):
    """`python -m contamination`, or its `launch` verb for one process per GPU (resources
    `processes_per_node` and `nodes` from the profile, or `gpu` on one node). A params function of
    resources is no rerun trigger: a new GPU count re-runs nothing."""
    nodes = int(getattr(resources, "nodes", 1) or 1)
    processes = int(getattr(resources, "processes_per_node", 0) or getattr(resources, "gpu", 0) or 1)
    return launcher_command(nodes, processes, threads)


# ---- sources ---------------------------------------------------------------------------------


def get_synthetic_roots():
    return [cfg.source_location(config, source)["root"] for source in cfg.REAL_SOURCES]


def get_synthetic_spec():
    return cfg.as_json(cfg.synthetic_spec(config))


def get_classes_input(wildcards):
    return {"root": cfg.source_root(config, "imagenet")}


def get_classes_arguments():
    subset = cfg.class_subset(config)
    return shlex.join(["--num-classes", str(config["sources"]["imagenet"]["num_classes"])]
                      + ([] if subset is None else ["--subset", cfg.as_json(subset)]))


def get_index_input(wildcards):
    inputs = {"root": cfg.source_root(config, wildcards.source)}
    if wildcards.source in cfg.CLASS_SOURCES:
        inputs["classes"] = CLASS_TABLE
    return inputs


def get_index_class_arguments(wildcards, input):
    """--classes, and --class-subset when sources.imagenet.classes keeps some classes (the indexes
    then leave out the images of the others)."""
    if "classes" not in input.keys():
        return ""
    subset_flag = [] if cfg.class_subset(config) is None else ["--class-subset"]
    return shlex.join(["--classes", str(input.classes)] + subset_flag)


def get_index_arguments(wildcards):
    arguments = ["--on-unreadable", config["on_unreadable_image"]]
    if wildcards.source in cfg.CAPTION_SOURCES:
        arguments += ["--karpathy-json", cfg.source_location(config, wildcards.source)["karpathy_json"]]
    return shlex.join(arguments)


def get_model(key):
    """Model ``key`` of config ``models``: the smoke run's tiny stand-in (smoke.smk builds it) or
    the configured path, which must exist (an input only, never an output)."""
    return cfg.model_path(config, key)


def dataset_index(name):
    """The index a mixture or experiment reads dataset ``name`` from: a real source's or a
    generated dataset's."""
    return index_path(name) if name in cfg.TRAINING_SOURCES else generated_index_path(name)


# ---- prompts and generation ------------------------------------------------------------------


def get_prompts_input(wildcards):
    source = cfg.generated_spec(config, wildcards.name)["source"]
    return {"index": CLASS_TABLE if source == "imagenet" else index_path(source)}


def get_prompts_spec(wildcards):
    return cfg.settings_json(
        "generated[]",
        cfg.generated_spec(config, wildcards.name),
        seed=config["seed"],
        size=cfg.generated_size(config, wildcards.name),
        complex_prompts=cfg.job_settings("complex_prompts", config["complex_prompts"]),
    )


def get_generator_pipeline(wildcards):
    """The pipeline directory of the dataset's generator: a tiny one smoke.smk builds, or the
    configured one, which must exist (an input only, never an output)."""
    generator = generators.generator_name(cfg.generated_spec(config, wildcards.name))
    if generator == generators.PAPER_GENERATOR:
        return get_model("stable_diffusion")
    if generators.tiny_family(config, generator):
        return generators.pipeline_location(config, generator)
    return cfg.require_existing(config, generators.pipeline_key(generator))


def get_generation_settings(wildcards):
    return cfg.settings_json("generation", generators.generation_settings(config, wildcards.name))


def get_generation_runtime(wildcards, threads):
    """Not compared by Snakemake (see get_runtime): the generator's batch size."""
    return cfg.as_json(cfg.runtime_settings("generation", generators.generation_settings(config, wildcards.name)))


def get_generated_shards(wildcards):
    return [shard_path(wildcards.name, f"{shard:05d}") for shard in range(cfg.shard_count(config, wildcards.name))]


def get_card_settings(wildcards):
    return cfg.as_json(generators.effective_settings(config, wildcards.name))


# ---- format control --------------------------------------------------------------------------


def get_format_match_input(wildcards):
    origin = cfg.origin_name(config, wildcards.name)
    return {"shard": shard_path(origin, wildcards.shard),
            "profile": format_profile_path(config["format_control"]["real_source"])}


def get_format_match_spec(wildcards):
    return get_settings("format_control", keys=FORMAT_MATCH_KEYS, name=wildcards.name,
                        **{"from": cfg.origin_name(config, wildcards.name)}, seed=config["seed"])


# ---- mixtures --------------------------------------------------------------------------------


def get_mixture_input(wildcards):
    mixture = MIXTURES[wildcards.mixture]
    inputs = {"base": dataset_index(mixture["base"])}
    if mixture["kind"] != "subset":
        inputs["by"] = dataset_index(mixture["by"])
    return inputs


def get_mixture_spec(wildcards):
    return cfg.settings_json("mixtures[]", cfg.mixture_job_spec(config, wildcards.mixture))


def get_mixture_arguments(wildcards, input):
    arguments = ["--base", str(input.base)]
    if "by" in input.keys():
        arguments += ["--by", str(input.by)]
    return shlex.join(arguments)


# ---- classification --------------------------------------------------------------------------


def get_classifier_spec(wildcards):
    settings = config["classification"]
    return get_settings(
        "classification",
        keys=CLASSIFIER_KEYS,
        model=wildcards.model,
        recipe=cfg.job_settings("classification.models.*", settings["models"][wildcards.model]),
        num_classes=cfg.class_count(config),
        seed=config["seed"],
    )


def get_classifier_checkpoints(wildcards):
    return checkpoint_dir("classify", wildcards.model, wildcards.mixture)


def get_figure3_input(wildcards):
    figure = config["classification"]["figure3"]
    inputs = {
        "matrices": [run_dir("classify", figure["model"], mixture) / "confusion.npy" for mixture in figure["mixtures"]],
        "classes": CLASS_TABLE,
    }
    for key in ("wordnet_is_a", "superclasses"):
        if figure[key]:
            inputs[key] = cfg.require_existing(config, f"classification.figure3.{key}")
    return inputs


def get_figure3_arguments(wildcards, input):
    figure = config["classification"]["figure3"]
    titles = [MIXTURES[mixture].get("label", mixture) for mixture in figure["mixtures"]]
    arguments = ["--titles", *titles, "--blocks", str(figure["blocks"])]
    if "wordnet_is_a" in input.keys():
        arguments += ["--wordnet-is-a", str(input.wordnet_is_a)]
        if not figure["balanced"]:
            arguments.append("--unbalanced")
    if "superclasses" in input.keys():
        arguments += ["--superclasses", str(input.superclasses)]
    return shlex.join(arguments)


# ---- captioning ------------------------------------------------------------------------------


def get_caption_checkpoints(wildcards):
    return checkpoint_dir("caption", "blip", wildcards.mixture)


# ---- self-supervised learning, detection and spectra -----------------------------------------


def get_mae_pretrain_spec():
    return get_settings("mae", keys=MAE_PRETRAIN_KEYS, seed=config["seed"])


def get_mae_probe_spec():
    return get_settings("mae", keys=MAE_PROBE_KEYS, seed=config["seed"],
                        num_classes=cfg.class_count(config))


def get_detection_spec(wildcards):
    return get_settings("detection", seed=config["seed"], generated=wildcards.name)


def get_spectra_spec(wildcards):
    return get_settings("spectra", keys=SPECTRA_KEYS, generated=wildcards.name, seed=config["seed"])


def get_spectra_csvs():
    return [path for path in get_spectra() if path.suffix == ".csv"]


# ---- filtering -------------------------------------------------------------------------------


def get_detector_set_input(wildcards):
    mixture = MIXTURES[wildcards.mixture]
    return {"manifest": manifest_path(wildcards.mixture), "base": dataset_index(mixture["base"]),
            "by": dataset_index(mixture["by"])}


def get_detector_set_spec(wildcards):
    mixture = MIXTURES[wildcards.mixture]
    return get_settings("filtering", keys=filtering.DETECTOR_SET_KEYS, seed=config["seed"], mixture=wildcards.mixture,
                        base=mixture["base"], by=mixture["by"])


def get_detector_features_input(wildcards):
    return {"detector_set": detector_set_path(wildcards.mixture), "model": get_model(filtering.FEATURES[wildcards.features])}


def get_detector_features_spec(wildcards):
    # section 6.1's preprocessing for its ResNet-50; the encoders bring their own processors
    preprocessing = ({key: config["detection"][key] for key in ("resize_size", "crop_size")}
                     if wildcards.features == "resnet50_features" else {})
    return get_settings("filtering", keys=filtering.FEATURE_KEYS, features=wildcards.features, **preprocessing)


def get_filter_input(wildcards):
    features = filtering.detector_parts(wildcards.detector)[1]
    return {"manifest": manifest_path(wildcards.mixture), "detector_set": detector_set_path(wildcards.mixture),
            "features": detector_features_path(wildcards.mixture, features),
            "model": get_model(filtering.FEATURES[features])}


def get_filter_spec(wildcards):
    return get_settings("filtering", keys=filtering.FILTER_KEYS, seed=config["seed"], mixture=wildcards.mixture,
                        generated=MIXTURES[wildcards.mixture]["by"], detector=wildcards.detector,
                        recipe=cfg.job_settings("detection", config["detection"], filtering.RECIPE_KEYS))


# ---- image sets, fidelity and IDDPM ----------------------------------------------------------


def get_feature_arguments(wildcards):
    return shlex.join(["--resolution", str(config["fidelity"]["inception_resolution"])])


get_feature_runtime_arguments = get_runtime_arguments(
    "fidelity", {"--batch-size": "feature_batch_size", "--workers": "num_workers", "--device": "device"})
get_image_cache_runtime_arguments = get_runtime_arguments("iddpm", {"--workers": "num_workers"})
get_fidelity_runtime_arguments = get_runtime_arguments(
    "fidelity", {"--block-size": "block_size", "--resident-bytes": "resident_bytes", "--device": "device"}
)


def get_image_set_arguments(wildcards):
    return "--reduced-jpeg-decode" if config["image_sets"]["reduced_jpeg_decode"] else ""


def get_fidelity_arguments():
    return shlex.join(["--k", str(config["fidelity"]["k"])])


def get_image_cache_input(wildcards):
    return {"index": dataset_index(wildcards.dataset)}


def get_image_cache_arguments(wildcards):
    """The rows mixtures keep of the dataset (sources.<name>.train_subset, drawn with the seed)."""
    subset = cfg.train_subset(config, wildcards.dataset)
    return shlex.join(["--dataset", wildcards.dataset]
                      + ([] if subset is None else ["--train-subset", str(subset), "--seed", str(config["seed"])]))


def get_image_array_input(wildcards):
    caches = {}
    for dataset in image_cache.mixture_datasets(config, wildcards.mixture):
        caches[f"cache_{dataset}"] = image_cache_path(dataset, wildcards.size)
        caches[f"uris_{dataset}"] = image_cache_path(dataset, wildcards.size, "parquet")
    return {"manifest": manifest_path(wildcards.mixture), **caches}


def get_image_array_cache_arguments(wildcards, input):
    return shlex.join(argument for dataset in image_cache.mixture_datasets(config, wildcards.mixture)
                      for argument in ("--cache", dataset, str(input[f"cache_{dataset}"]),
                                       str(input[f"uris_{dataset}"])))


def get_dataset_fidelity_arguments():
    size = config["fidelity"]["dataset_sample_size"]
    sample = [] if size is None else ["--sample-size", str(size), "--seed", str(config["seed"])]
    return " ".join([get_fidelity_arguments(), shlex.join(sample)]).strip()


def reference_features(references, size, extractor=EXTRACTOR):
    return {
        f"reference_{reference['name']}": features_path("index", f"{reference['source']}-{reference['split']}-{size}px",
                                                        extractor)
        for reference in references
    }


def get_reference_arguments(wildcards, input):
    prefix = "reference_"
    return shlex.join(argument for key, path in input.items() if key.startswith(prefix)
                      for argument in ("--reference", f"{key[len(prefix):]}={path}"))


def get_dataset_fidelity_input(wildcards, extractor=EXTRACTOR, size_key="image_size"):
    size = config["fidelity"][size_key]
    return {
        "generated": features_path("mixtures", f"{wildcards.mixture}-{size}px", extractor),
        **reference_features(config["fidelity"]["references"], size, extractor),
    }


def get_dinov2_fidelity_input(wildcards):
    return get_dataset_fidelity_input(wildcards, "dinov2", "dinov2_image_size")


def get_dinov2_fidelity_arguments():
    return " ".join([get_dataset_fidelity_arguments(), shlex.join(["--fd-name", "FD_DINOv2"])])


def get_iddpm_images(wildcards):
    return image_array_path(wildcards.mixture, config["iddpm"]["image_size"])


def get_iddpm_spec(keys):
    return cfg.settings_json("iddpm", dict(config["iddpm"], seed=config["seed"]), keys)


def get_iddpm_checkpoints(wildcards):
    return checkpoint_dir("iddpm", IDDPM_MODEL, wildcards.mixture)


def get_iddpm_sample_shards(wildcards):
    return [run_dir("iddpm", IDDPM_MODEL, wildcards.mixture) / "samples" / f"shard-{shard:05d}.npy"
            for shard in range(cfg.iddpm_sample_shard_count(config))]


def get_iddpm_fidelity_input(wildcards):
    settings = config["iddpm"]
    return {
        "generated": features_path("iddpm", wildcards.mixture),
        "status": run_dir("iddpm", IDDPM_MODEL, wildcards.mixture) / "training.json",
        **reference_features(settings["references"], settings["image_size"]),
    }


# ---- recursive contamination -----------------------------------------------------------------


def recursion_model(chain, generation):
    """{"model", "status"} of a generation: generation 0's is the iddpm run on recursion.base."""
    directory = run_dir("iddpm", IDDPM_MODEL, RECURSION["base"]) if int(generation) == 0 else recursion_path(chain, generation)
    return {"model": directory / "model", "status": directory / "training.json"}


def recursion_sample_shards(chain, generation):
    return [recursion_path(chain, generation) / "samples" / f"shard-{shard:05d}.npy"
            for shard in range(recursion.sample_shard_count(config))]


def get_recursion_mixture_input(wildcards):
    inputs = {"real": image_array_path(RECURSION["base"], config["iddpm"]["image_size"])}
    for source in recursion.source_generations(wildcards.policy, int(wildcards.generation)):
        chain = recursion.chain(wildcards.policy, source)
        inputs[f"samples_{source}"] = recursion_sample_shards(chain, source)
        inputs[f"status_{source}"] = recursion_model(chain, source)["status"]
    return inputs


def get_recursion_sources_argument(wildcards, input):
    sources = recursion.source_generations(wildcards.policy, int(wildcards.generation))
    return cfg.as_json({str(source): {"status": str(getattr(input, f"status_{source}")),
                                      "samples": [str(path) for path in getattr(input, f"samples_{source}")]}
                        for source in sources})


def get_recursion_mixture_spec(wildcards):
    return cfg.settings_json("recursion", RECURSION, recursion.POLICY_KEYS[wildcards.policy], policy=wildcards.policy,
                             generation=int(wildcards.generation), seed=config["seed"])


def get_recursion_checkpoints(wildcards):
    return checkpoint_dir("recursion", IDDPM_MODEL, f"{wildcards.policy}/generation-{wildcards.generation}")


def get_recursion_model(wildcards):
    return recursion_model(wildcards.policy, wildcards.generation)


def get_recursion_sample_spec():
    return cfg.settings_json("iddpm", dict(recursion.sample_settings(config), seed=config["seed"]),
                             iddpm_recipe.SAMPLE_SPEC_KEYS)


def get_recursion_sample_shards(wildcards):
    return recursion_sample_shards(wildcards.policy, wildcards.generation)


def get_recursion_fidelity_input(wildcards):
    settings = config["iddpm"]
    return {
        "generated": features_path("recursion", f"{wildcards.policy}/generation-{wildcards.generation}"),
        "status": recursion_model(wildcards.policy, wildcards.generation)["status"],
        **reference_features(settings["references"], settings["image_size"]),
    }


def get_recursion_table_input(wildcards):
    """The metrics.json and training-data summary of every policy's generations 0..K."""
    cells = {}
    for policy in RECURSION["policies"]:
        for generation in range(RECURSION["generations"] + 1):
            directory = recursion_path(recursion.chain(policy, generation), generation)
            cells[f"metrics|{policy}|{generation}"] = directory / "metrics.json"
            cells[f"mixture|{policy}|{generation}"] = (manifest_path(RECURSION["base"]).with_suffix(".json")
                                                       if generation == 0 else directory / "mixture.json")
    return cells


def get_recursion_table_cells_argument(wildcards, input):
    cells = {}
    for key, path in input.items():
        kind, policy, generation = key.split("|")
        cells.setdefault(f"{policy}|{generation}", {})[kind] = str(path)
    return cfg.as_json(cells)


def get_recursion_table_spec(wildcards):
    return cfg.as_json({"policies": RECURSION["policies"], "generations": RECURSION["generations"],
                        "metrics": iddpm_recipe.table_metrics(config)})


# ---- tables and report -----------------------------------------------------------------------


def get_table_cells(wildcards):
    table = TABLES[wildcards.table]
    return {
        f"{row['dataset']}|{model}": metrics_path(table["experiment"], model, row["mixture"])
        for row in table["rows"]
        for model in table["models"]
    }


def get_table_cells_argument(wildcards, input):
    return cfg.as_json({key: str(path) for key, path in input.items()})


def get_table_spec(wildcards):
    # The run's tier travels with each table (left out at its default, as every default).
    return cfg.settings_json("tables[]", TABLES[wildcards.table], **cfg.job_settings("", config, ["tier"]))


def get_table_provenance_files():
    return [table_path(name, "provenance.json") for name in TABLES]


# Functions, not strings: Snakemake would expand the braces of templates in the JSON as wildcards.
def get_mixtures_spec(wildcards):
    mixtures = filtering.with_filtered_mixtures(config, TABLES[wildcards.table])
    return cfg.as_json([cfg.job_settings("mixtures[]", mixture) for mixture in mixtures])


def get_run_config(wildcards):
    return cfg.settings_json("", config)
