# Shared by every stage: config checks, result paths and the named input functions of the rules.
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

cfg.check(config)

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


# ---- training jobs -------------------------------------------------------------------------


def torch_launcher(wildcards, resources):
    """`python` for one process; torchrun with one process per GPU when the job has GPUs
    (resource `gpu`, set per rule in the profile)."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    return shlex.join(["torchrun", "--standalone", f"--nproc-per-node={gpus}"]) if gpus > 1 else "python"


# ---- sources -------------------------------------------------------------------------------


def synthetic_roots():
    return {source: cfg.source_location(config, source)["root"] for source in cfg.REAL_SOURCES}


def synthetic_spec():
    spec = dict(config["synthetic"], seed=config["seed"])
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


def index_classes_argument(wildcards, input):
    return shlex.join(["--classes", str(input.classes)]) if "classes" in input.keys() else ""


def index_arguments(wildcards):
    location = cfg.source_location(config, wildcards.source)
    arguments = ["--on-unreadable", config["on_unreadable_image"]]
    if wildcards.source in CAPTION_SOURCES:
        arguments += ["--karpathy-json", location["karpathy_json"]]
    return shlex.join(arguments)


def classes_arguments():
    return shlex.join(["--num-classes", str(config["sources"]["imagenet"]["num_classes"])])


# ---- prompts and generation ----------------------------------------------------------------


def prompts_input(wildcards):
    spec = cfg.generated_spec(config, wildcards.name)
    if spec["source"] == "imagenet":
        return {"index": RESULTS / "index" / "imagenet_classes.parquet"}
    return {"index": RESULTS / "index" / f"{spec['source']}.parquet"}


def prompts_spec(wildcards):
    spec = dict(cfg.generated_spec(config, wildcards.name))
    spec.update(
        seed=config["seed"],
        size=cfg.generated_size(config, wildcards.name),
        complex_prompts=config["complex_prompts"],
    )
    return as_json(spec)


def stable_diffusion_dir():
    if config["models"]["build_tiny"]:
        return cfg.model_location(config, "stable_diffusion")
    return cfg.require_existing(config, "models.stable_diffusion")


def generation_settings():
    return as_json(config["generation"])


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
    return as_json(dict(mixture_spec_of(wildcards.mixture), seed=config["seed"]))


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
    return as_json(TABLES[wildcards.table])


def all_tables():
    return [
        RESULTS / "tables" / f"{name}.csv"
        for name, table in TABLES.items()
        if table["experiment"] in EXPERIMENTS
    ]


# ---- captioning ----------------------------------------------------------------------------
# RESULTS/caption/blip/<run>/: <run> is a caption mixture, or "pretrained" for the starting model.
from contamination.errors import ConfigError

PRETRAINED_RUN = "pretrained"
if PRETRAINED_RUN in MIXTURES:
    raise ConfigError(f"mixtures: the name '{PRETRAINED_RUN}' is reserved for the captioning run without fine-tuning")


def blip_dir():
    if config["models"]["build_tiny"]:
        return cfg.model_location(config, "blip")
    return cfg.require_existing(config, "models.blip")


def captioning_settings():
    return as_json(config["captioning"])


def caption_checkpoint_dir(wildcards):
    return RESULTS / "checkpoints" / "caption" / "blip" / wildcards.mixture


# ---- self-supervised and detection -------------------------------------------------------
from contamination.mae import MODEL_NAME as MAE_MODEL  # noqa: E402


def mae_pretrain_spec():
    settings = config["mae"]
    spec = {key: settings[key] for key in ("model", "pretrain", "device", "num_workers", "print_freq", "keep_checkpoint")}
    return as_json(dict(spec, seed=config["seed"]))


def mae_probe_spec():
    settings = config["mae"]
    spec = {key: settings[key] for key in ("linear_probe", "device", "num_workers", "print_freq", "keep_checkpoint")}
    return as_json(dict(spec, seed=config["seed"], num_classes=config["sources"]["imagenet"]["num_classes"]))


def resnet50_detector_weights():
    if config["models"]["build_tiny"]:
        return cfg.model_location(config, "resnet50_detector")
    return cfg.require_existing(config, "models.resnet50_detector")


def detection_spec(wildcards):
    return as_json(dict(config["detection"], seed=config["seed"], generated=wildcards.name))


def spectra_spec(wildcards):
    settings = config["spectra"]
    return as_json({
        "real_source": settings["real_source"],
        "generated": wildcards.name,
        "images_per_source": settings["images_per_source"],
        "crop_size": settings["crop_size"],
        "seed": config["seed"],
    })


def all_spectra():
    for index, name in enumerate(config["spectra"]["generated"]):
        if name not in GENERATED:
            raise cfg.ConfigError(f"spectra.generated[{index}]: '{name}' is not a generated dataset "
                                  f"(known: {', '.join(GENERATED)})")
    return [RESULTS / "spectra" / f"{name}.{kind}" for name in config["spectra"]["generated"] for kind in ("csv", "png")]


# ---- classification ------------------------------------------------------------------------
from contamination import classify_recipe  # noqa: E402

CLASSIFIERS = list(config["classification"]["models"])


def check_classification():
    """Recipes, and every model a classification table or Figure 3 asks for, exist and agree."""
    for model, recipe in config["classification"]["models"].items():
        classify_recipe.check(recipe, f"classification.models.{model}")
    for index, table in enumerate(config["tables"]):
        if table["experiment"] != "classify":
            continue
        for model in table["models"]:
            if model not in CLASSIFIERS:
                raise cfg.ConfigError(f"tables[{index}].models: no recipe classification.models.{model} "
                                      f"(known: {', '.join(CLASSIFIERS)})")
    figure = config["classification"]["figure3"]
    if figure["model"] not in CLASSIFIERS:
        raise cfg.ConfigError(f"classification.figure3.model: no recipe for '{figure['model']}'")
    for mixture in figure["mixtures"]:
        if mixture not in MIXTURES:
            raise cfg.ConfigError(f"classification.figure3.mixtures: unknown mixture '{mixture}'")


check_classification()


def classifier_spec(wildcards):
    settings = config["classification"]
    spec = {key: settings[key] for key in ("device", "num_workers", "print_freq", "keep_checkpoint")}
    spec.update(
        model=wildcards.model,
        recipe=settings["models"][wildcards.model],
        num_classes=config["sources"]["imagenet"]["num_classes"],
        seed=config["seed"],
    )
    return as_json(spec)


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
    if figure["superclasses"]:
        inputs["superclasses"] = cfg.require_existing(config, "classification.figure3.superclasses")
    return inputs


def figure3_arguments(wildcards, input):
    figure = config["classification"]["figure3"]
    titles = [mixture_spec_of(mixture).get("label", mixture) for mixture in figure["mixtures"]]
    arguments = ["--titles", *titles, "--blocks", str(figure["blocks"])]
    if "superclasses" in input.keys():
        arguments += ["--superclasses", str(input.superclasses)]
    return shlex.join(arguments)


# ---- image generation and fidelity ---------------------------------------------------------
# Features: RESULTS/features/inception/{index,mixtures,iddpm}/<set>.npy, one per image set.
# Table 4 runs: RESULTS/fidelity/inception_v3_features/<mixture>/; IDDPM runs (Tables 3, 10):
# RESULTS/iddpm/iddpm/<mixture>/ (model, training.json, samples/, metrics.json).
from contamination import fidelity as fidelity_metrics  # noqa: E402
from contamination import iddpm as iddpm_recipe  # noqa: E402

EXTRACTOR = "inception"
FIDELITY_MODEL = "inception_v3_features"
IDDPM_MODEL = "iddpm"


wildcard_constraints:
    split="train|val|test",
    size=r"\d+",


def check_fidelity_tables():
    """Every metric an iddpm or fidelity table asks for is one the runs write."""
    k = config["fidelity"]["k"]
    settings = {"iddpm": ("samples", config["iddpm"]["references"]), "fidelity": ("dataset", config["fidelity"]["references"])}
    for index, table in enumerate(config["tables"]):
        if table["experiment"] not in settings:
            continue
        kind, references = settings[table["experiment"]]
        written = [name for reference in references for name in fidelity_metrics.metric_names(kind, reference["name"], k).values()]
        for metric in table["metrics"]:
            if metric not in written:
                raise cfg.ConfigError(f"tables[{index}].metrics: '{metric}' is not written by {table['experiment']} runs "
                                      f"with fidelity.k={k} and their references (written: {', '.join(written)})")


check_fidelity_tables()


def inception_weights():
    if config["models"]["build_tiny"]:
        return cfg.model_location(config, "inception")
    return cfg.require_existing(config, "models.inception")


def features_path(kind, name):
    return RESULTS / "features" / EXTRACTOR / kind / f"{name}.npy"


def feature_settings(wildcards):
    settings = config["fidelity"]
    return shlex.join(["--resolution", str(settings["inception_resolution"]), "--batch-size",
                       str(settings["feature_batch_size"]), "--workers", str(settings["num_workers"]),
                       "--device", settings["device"]])


def image_set_options(wildcards):
    return "--reduced-jpeg-decode" if config["image_sets"]["reduced_jpeg_decode"] else ""


def fidelity_settings():
    settings = config["fidelity"]
    return shlex.join(["--k", str(settings["k"]), "--block-size", str(settings["block_size"]),
                       "--device", settings["device"]])


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
    settings = dict(config["iddpm"], seed=config["seed"])
    return as_json({key: settings[key] for key in keys})


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

for _name in ("all_tables", "spectra"):
    if _name in TABLES:
        raise cfg.ConfigError(f"tables: the name '{_name}' is reserved for results/<run>/tables/{_name}.csv")


def built_tables():
    return [name for name, table in TABLES.items() if table["experiment"] in EXPERIMENTS]


def table_provenance_files():
    return [RESULTS / "tables" / f"{name}.provenance.json" for name in built_tables()]


# Functions, not strings: Snakemake would expand the braces of templates in the JSON as wildcards.
def mixtures_spec(wildcards):
    return as_json(config["mixtures"])


def run_config_json(wildcards):
    return as_json(config)


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
