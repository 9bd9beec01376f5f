# Shared by every stage: config validation, result paths and the named input functions of the rules.
# Shell commands quote every placeholder ({input.x:q}, {params.spec:q}, ...) except params named
# `launcher` or `*arguments`: those hold several arguments, each already quoted (shlex.join) by
# their function here (tests/test_workflow_dag.py checks the convention).
import json
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

# The schema, its defaults and every semantic check, as `python -m contamination check-config` runs
# them; a bad config stops Snakemake with check-config's one line, not an exception with a stack.
try:
    cfg.validate(config)
except cfg.ConfigError as error:
    sys.exit(f"error: {error}")
# A site overlay made from config/smoke.yaml would run on stand-ins in place of its real data.
if cfg.stand_in_warning(config):
    logger.warning(cfg.stand_in_warning(config))

RESULTS = cfg.results_dir(config)
LOGS = RESULTS / "logs"
ENV = "../../envs/contamination.yaml"
CLASS_SOURCES = ["imagenet", "imagenet_a", "imagenet_r", "webvision"]
CAPTION_SOURCES = ["coco", "flickr30k"]
GENERATED = [spec["name"] for spec in config["generated"]]
MIXTURES = [mixture["name"] for mixture in config["mixtures"]]


wildcard_constraints:
    source="|".join(cfg.REAL_SOURCES),
    name="|".join(GENERATED),
    mixture="|".join(MIXTURES),
    shard=r"\d{5}",


def as_json(data):
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def settings_json(section, values, keys=None, **extra):
    """A job's settings as JSON for its params: config ``section`` without its default values
    and run-time keys (cfg.job_settings; the command restores them), plus ``extra`` (seed, names)."""
    return as_json(dict(cfg.job_settings(section, values, keys), **extra))


def runtime_json(section, keys=None):
    """A params function: the run-time keys of config ``section`` (cfg.RUNTIME_KEYS; only those
    among ``keys`` if given) as JSON for the command's --runtime. It takes ``threads`` only so that
    Snakemake leaves it out of the params it compares: a new num_workers or device re-runs nothing."""

    def runtime(wildcards, threads):
        return as_json(cfg.runtime_settings(section, config[section], keys))

    return runtime


def runtime_arguments(section, flags):
    """A params function, not compared either (see runtime_json): the flags ({flag: key}) of a
    command that takes flags, from run-time keys of config ``section``."""
    assert set(flags.values()) <= set(cfg.RUNTIME_KEYS[section]), "shaping keys belong in the compared params"

    def runtime(wildcards, threads):
        return shlex.join(argument for flag, key in flags.items() for argument in (flag, str(config[section][key])))

    return runtime


# ---- training jobs -------------------------------------------------------------------------


def torch_launcher(wildcards, resources, threads):
    """`python -m contamination` for one process; with several (one per GPU: resources
    `processes_per_node` and `nodes` from the profile, or `gpu` on one node) the `launch` verb,
    which starts torchrun on one node or srun + torchrun across nodes (src/contamination/launch.py).
    A params function of resources is no rerun trigger: a new GPU count re-runs nothing."""
    nodes = int(getattr(resources, "nodes", 1) or 1)
    processes = int(getattr(resources, "processes_per_node", 0) or getattr(resources, "gpu", 0) or 1)
    if nodes == 1 and processes == 1:
        return "python -m contamination"
    return shlex.join(["python", "-m", "contamination", "launch", f"--nodes={nodes}",
                       f"--processes-per-node={processes}", f"--cpus-per-node={threads}", "--"])


# ---- sources -------------------------------------------------------------------------------


def synthetic_roots():
    return {source: cfg.source_location(config, source)["root"] for source in cfg.REAL_SOURCES}


def synthetic_spec():
    spec = dict(cfg.job_settings("synthetic", config["synthetic"]), seed=config["seed"])
    spec["roots"] = synthetic_roots()
    spec["karpathy_json"] = {s: cfg.source_location(config, s)["karpathy_json"] for s in CAPTION_SOURCES}
    return as_json(spec)


def source_root(source):
    """The root of a real source: made by the synthetic rule under RESULTS, or the configured
    root, checked to exist on disk (an input only, never an output)."""
    key = f"sources.{source}.root"
    if config["synthetic"]["enabled"]:
        return cfg.source_location(config, source)["root"]
    cfg.require_existing(config, key)
    if source in CAPTION_SOURCES:
        cfg.require_existing(config, f"sources.{source}.karpathy_json")
    return cfg.source_location(config, source)["root"]


def classes_input(wildcards):
    return {"root": source_root("imagenet")}


def index_input(wildcards):
    inputs = {"root": source_root(wildcards.source)}
    if wildcards.source in CLASS_SOURCES:
        inputs["classes"] = RESULTS / "index" / "imagenet_classes.parquet"
    return inputs


def index_class_arguments(wildcards, input):
    if "classes" not in input.keys():
        return ""
    return shlex.join(["--classes", str(input.classes)] + class_subset_flag())


def class_subset_flag():
    """--class-subset when sources.imagenet.classes keeps some classes: the indexes leave out the others."""
    return [] if cfg.class_subset(config) is None else ["--class-subset"]


def index_arguments(wildcards):
    location = cfg.source_location(config, wildcards.source)
    arguments = ["--on-unreadable", config["on_unreadable_image"]]
    if wildcards.source in CAPTION_SOURCES:
        arguments += ["--karpathy-json", location["karpathy_json"]]
    return shlex.join(arguments)


def classes_arguments():
    subset = cfg.class_subset(config)
    return shlex.join(["--num-classes", str(config["sources"]["imagenet"]["num_classes"])]
                      + ([] if subset is None else ["--subset", as_json(subset)]))


# ---- prompts and generation ----------------------------------------------------------------


def prompts_input(wildcards):
    spec = cfg.generated_spec(config, wildcards.name)
    if spec["source"] == "imagenet":
        return {"index": RESULTS / "index" / "imagenet_classes.parquet"}
    return {"index": RESULTS / "index" / f"{spec['source']}.parquet"}


def prompts_spec(wildcards):
    return settings_json(
        "generated[]",
        cfg.generated_spec(config, wildcards.name),
        seed=config["seed"],
        size=cfg.generated_size(config, wildcards.name),
        complex_prompts=cfg.job_settings("complex_prompts", config["complex_prompts"]),
    )


def stable_diffusion_dir():
    if config["models"]["build_tiny"]:
        return cfg.model_location(config, "stable_diffusion")
    return cfg.require_existing(config, "models.stable_diffusion")


def generation_settings():
    return settings_json("generation", config["generation"])


def shard_names(name):
    return [f"{shard:05d}" for shard in range(cfg.shard_count(config, name))]


def generated_shards(wildcards):
    return expand(
        RESULTS / "generated" / wildcards.name / "shard-{shard}.zip",
        shard=shard_names(wildcards.name),
    )


def all_generated_indexes():
    return [RESULTS / "generated" / name / "index.parquet" for name in GENERATED]


# ---- mixtures ------------------------------------------------------------------------------


def dataset_index(name):
    if name in cfg.TRAINING_SOURCES:
        return RESULTS / "index" / f"{name}.parquet"
    return RESULTS / "generated" / name / "index.parquet"


def mixture_spec_of(name):
    for mixture in config["mixtures"]:
        if mixture["name"] == name:
            return mixture


def mixture_input(wildcards):
    mixture = mixture_spec_of(wildcards.mixture)
    inputs = {"base": dataset_index(mixture["base"])}
    if mixture["kind"] != "subset":
        inputs["by"] = dataset_index(mixture["by"])
    return inputs


def mixture_spec(wildcards):
    return settings_json("mixtures[]", cfg.mixture_job_spec(config, wildcards.mixture))


def all_mixture_manifests():
    return [RESULTS / "mixtures" / f"{name}.parquet" for name in MIXTURES]


def mixture_arguments(wildcards, input):
    arguments = ["--base", str(input.base)]
    if "by" in input.keys():
        arguments += ["--by", str(input.by)]
    return shlex.join(arguments)


# ---- tables --------------------------------------------------------------------------------
# Each experiment's .smk adds its name to EXPERIMENTS when it defines the rule that writes
# RESULTS/<experiment>/<model>/<mixture>/metrics.json; tables of other experiments are not built.
EXPERIMENTS = set()
TABLES = {table["name"]: table for table in config["tables"]}


wildcard_constraints:
    table="|".join(TABLES),


def metrics_path(experiment, model, mixture):
    return RESULTS / experiment / model / mixture / "metrics.json"


def table_cells(wildcards):
    table = TABLES[wildcards.table]
    return {
        f"{row['dataset']}|{model}": metrics_path(table["experiment"], model, row["mixture"])
        for row in table["rows"]
        for model in table["models"]
    }


def table_cells_argument(wildcards, input):
    return as_json({key: str(path) for key, path in input.items()})


def table_spec(wildcards):
    # The run's tier travels with each table (left out at its default, as every default).
    return settings_json("tables[]", TABLES[wildcards.table], **cfg.job_settings("", config, ["tier"]))


def all_tables():
    return [
        RESULTS / "tables" / f"{name}.csv"
        for name, table in TABLES.items()
        if table["experiment"] in EXPERIMENTS
    ]


# ---- captioning ----------------------------------------------------------------------------
# RESULTS/caption/blip/<run>/: <run> is a caption mixture, or "pretrained" for the starting model.


def blip_dir():
    if config["models"]["build_tiny"]:
        return cfg.model_location(config, "blip")
    return cfg.require_existing(config, "models.blip")


def captioning_settings():
    return settings_json("captioning", config["captioning"])


def caption_checkpoint_dir(wildcards):
    return RESULTS / "checkpoints" / "caption" / "blip" / wildcards.mixture


# ---- self-supervised and detection -------------------------------------------------------
from contamination.experiments.mae import MODEL_NAME as MAE_MODEL  # noqa: E402
from contamination.experiments.mae import PRETRAIN_SPEC_KEYS as MAE_PRETRAIN_KEYS  # noqa: E402
from contamination.experiments.mae import PROBE_SPEC_KEYS as MAE_PROBE_KEYS  # noqa: E402
from contamination.metrics.spectra import SPEC_KEYS as SPECTRA_KEYS  # noqa: E402


def mae_pretrain_spec():
    return settings_json("mae", config["mae"], MAE_PRETRAIN_KEYS, seed=config["seed"])


def mae_probe_spec():
    return settings_json("mae", config["mae"], MAE_PROBE_KEYS, seed=config["seed"],
                         num_classes=cfg.class_count(config))


def resnet50_detector_weights():
    if config["models"]["build_tiny"]:
        return cfg.model_location(config, "resnet50_detector")
    return cfg.require_existing(config, "models.resnet50_detector")


def detection_spec(wildcards):
    return settings_json("detection", config["detection"], seed=config["seed"], generated=wildcards.name)


def spectra_spec(wildcards):
    return settings_json("spectra", config["spectra"], SPECTRA_KEYS, generated=wildcards.name,
                         seed=config["seed"])


def all_spectra():
    return [RESULTS / "spectra" / f"{name}.{kind}" for name in config["spectra"]["generated"] for kind in ("csv", "png")]


# ---- classification ------------------------------------------------------------------------
from contamination.experiments.classify import SPEC_KEYS as CLASSIFIER_KEYS  # noqa: E402

CLASSIFIERS = list(config["classification"]["models"])


def classifier_spec(wildcards):
    settings = config["classification"]
    return settings_json(
        "classification",
        settings,
        CLASSIFIER_KEYS,
        model=wildcards.model,
        recipe=cfg.job_settings("classification.models.*", settings["models"][wildcards.model]),
        num_classes=cfg.class_count(config),
        seed=config["seed"],
    )


def classifier_checkpoint_dir(wildcards):
    return RESULTS / "checkpoints" / "classify" / wildcards.model / wildcards.mixture


def confusion_path(model, mixture):
    return RESULTS / "classify" / model / mixture / "confusion.npy"


def figure3_input(wildcards):
    figure = config["classification"]["figure3"]
    inputs = {
        "matrices": [confusion_path(figure["model"], mixture) for mixture in figure["mixtures"]],
        "classes": RESULTS / "index" / "imagenet_classes.parquet",
    }
    if figure["wordnet_is_a"]:
        inputs["wordnet_is_a"] = cfg.require_existing(config, "classification.figure3.wordnet_is_a")
    if figure["superclasses"]:
        inputs["superclasses"] = cfg.require_existing(config, "classification.figure3.superclasses")
    return inputs


def figure3_arguments(wildcards, input):
    figure = config["classification"]["figure3"]
    titles = [mixture_spec_of(mixture).get("label", mixture) for mixture in figure["mixtures"]]
    arguments = ["--titles", *titles, "--blocks", str(figure["blocks"])]
    if "wordnet_is_a" in input.keys():
        arguments += ["--wordnet-is-a", str(input.wordnet_is_a)]
        if not figure["balanced"]:
            arguments.append("--unbalanced")
    if "superclasses" in input.keys():
        arguments += ["--superclasses", str(input.superclasses)]
    return shlex.join(arguments)


# ---- image generation and fidelity ---------------------------------------------------------
# Features: RESULTS/features/inception/{index,mixtures,iddpm}/<set>.npy, one per image set.
# Table 4 runs: RESULTS/fidelity/inception_v3_features/<mixture>/; IDDPM runs (Tables 3, 10):
# RESULTS/iddpm/iddpm/<mixture>/ (model, training.json, samples/, metrics.json).
from contamination.experiments import iddpm as iddpm_recipe  # noqa: E402

EXTRACTOR = "inception"
FIDELITY_MODEL = "inception_v3_features"
IDDPM_MODEL = "iddpm"


wildcard_constraints:
    split="train|val|test",
    size=r"\d+",


def inception_weights():
    if config["models"]["build_tiny"]:
        return cfg.model_location(config, "inception")
    return cfg.require_existing(config, "models.inception")


def features_path(kind, name):
    return RESULTS / "features" / EXTRACTOR / kind / f"{name}.npy"


def feature_arguments(wildcards):
    return shlex.join(["--resolution", str(config["fidelity"]["inception_resolution"])])


feature_runtime_arguments = runtime_arguments("fidelity", {"--batch-size": "feature_batch_size", "--workers": "num_workers",
                                             "--device": "device"})
image_array_runtime_arguments = runtime_arguments("iddpm", {"--workers": "num_workers"})
fidelity_runtime_arguments = runtime_arguments("fidelity", {"--block-size": "block_size", "--device": "device"})


def image_set_arguments(wildcards):
    return "--reduced-jpeg-decode" if config["image_sets"]["reduced_jpeg_decode"] else ""


def fidelity_arguments():
    return shlex.join(["--k", str(config["fidelity"]["k"])])


def dataset_fidelity_arguments():
    size = config["fidelity"]["dataset_sample_size"]
    sample = [] if size is None else ["--sample-size", str(size), "--seed", str(config["seed"])]
    return " ".join([fidelity_arguments(), shlex.join(sample)]).strip()


def reference_features(references, size):
    return {
        f"reference_{reference['name']}": features_path("index", f"{reference['source']}-{reference['split']}-{size}px")
        for reference in references
    }


def reference_arguments(wildcards, input):
    prefix = "reference_"
    return shlex.join(argument for key, path in input.items() if key.startswith(prefix)
                      for argument in ("--reference", f"{key[len(prefix):]}={path}"))


def dataset_fidelity_input(wildcards):
    size = config["fidelity"]["image_size"]
    return {
        "generated": features_path("mixtures", f"{wildcards.mixture}-{size}px"),
        **reference_features(config["fidelity"]["references"], size),
    }


def iddpm_run_dir(mixture):
    return RESULTS / "iddpm" / IDDPM_MODEL / mixture


def iddpm_images(wildcards):
    return RESULTS / "images" / f"{wildcards.mixture}-{config['iddpm']['image_size']}px.npy"


def iddpm_spec(keys):
    return settings_json("iddpm", dict(config["iddpm"], seed=config["seed"]), keys)


def iddpm_checkpoint_dir(wildcards):
    return RESULTS / "checkpoints" / "iddpm" / IDDPM_MODEL / wildcards.mixture


def iddpm_sample_shards(wildcards):
    settings = config["iddpm"]
    shards = -(-settings["sample_count"] // settings["sample_shard_size"])
    return [iddpm_run_dir(wildcards.mixture) / "samples" / f"shard-{shard:05d}.npy" for shard in range(shards)]


def iddpm_fidelity_input(wildcards):
    settings = config["iddpm"]
    return {
        "generated": features_path("iddpm", wildcards.mixture),
        "status": iddpm_run_dir(wildcards.mixture) / "training.json",
        **reference_features(settings["references"], settings["image_size"]),
    }


# ---- report and planning -------------------------------------------------------------------
# report.smk: a page and a plot per table, all tables in one CSV, Figure 6, generated examples,
# the run's effective config and the compute plan; `rule all` builds them (report_files()).
PROFILE = Path(workflow.basedir) / "profiles" / "slurm"


def built_tables():
    return [name for name, table in TABLES.items() if table["experiment"] in EXPERIMENTS]


def table_provenance_files():
    return [RESULTS / "tables" / f"{name}.provenance.json" for name in built_tables()]


# Functions, not strings: Snakemake would expand the braces of templates in the JSON as wildcards.
def mixtures_spec(wildcards):
    return as_json([cfg.job_settings("mixtures[]", mixture) for mixture in config["mixtures"]])


def run_config_json(wildcards):
    return settings_json("", config)


def spectra_csvs():
    return [path for path in all_spectra() if path.suffix == ".csv"]


def spectra_outputs():
    """The combined spectra table and Figure 6, when some generated dataset has spectra."""
    if not config["spectra"]["generated"]:
        return []
    return [RESULTS / "tables" / "spectra.csv", RESULTS / "figures" / "figure6.png"]


def report_files():
    return (
        [RESULTS / "report" / "tables" / f"{name}.html" for name in built_tables()]
        + [RESULTS / "tables" / "all_tables.csv"]
        + spectra_outputs()
        + [RESULTS / "report" / "examples" / f"{name}.html" for name in GENERATED]
        + [RESULTS / "report" / "config.html"]
    )
