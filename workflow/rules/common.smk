# Shared by every stage: config checks, result paths and the named input functions of the rules.
import json
import sys
from pathlib import Path

# The Snakefile only needs the package's light config module; putting src/ on the path lets a
# dry run work from any Python that has Snakemake, even before the package is installed.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from contamination import config as cfg
from contamination.formats import INDEX_COLUMNS  # noqa: F401  (documents the index contract)

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


# ---- sources -------------------------------------------------------------------------------


def synthetic_roots():
    return {source: config["sources"][source]["root"] for source in cfg.REAL_SOURCES}


def synthetic_spec():
    spec = dict(config["synthetic"], seed=config["seed"])
    spec["roots"] = synthetic_roots()
    spec["karpathy_json"] = {s: config["sources"][s]["karpathy_json"] for s in CAPTION_SOURCES}
    return as_json(spec)


def source_root(source):
    """The root of a real source: made by the synthetic rule, or checked to exist on disk."""
    key = f"sources.{source}.root"
    if config["synthetic"]["enabled"]:
        return config["sources"][source]["root"]
    cfg.require_existing(config, key)
    if source in CAPTION_SOURCES:
        cfg.require_existing(config, f"sources.{source}.karpathy_json")
    return config["sources"][source]["root"]


def classes_input(wildcards):
    return {"root": source_root("imagenet")}


def index_input(wildcards):
    inputs = {"root": source_root(wildcards.source)}
    if wildcards.source in CLASS_SOURCES:
        inputs["classes"] = RESULTS / "index" / "imagenet_classes.parquet"
    return inputs


def index_classes_argument(wildcards, input):
    return f"--classes {input.classes}" if "classes" in input.keys() else ""


def index_arguments(wildcards):
    source = config["sources"][wildcards.source]
    arguments = [f"--on-unreadable {config['on_unreadable_image']}"]
    if wildcards.source in CAPTION_SOURCES:
        arguments.append(f"--karpathy-json {source['karpathy_json']}")
    return " ".join(arguments)


def classes_arguments():
    return f"--num-classes {config['sources']['imagenet']['num_classes']}"


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
        return config["models"]["stable_diffusion"]
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
    arguments = f"--base {input.base}"
    if "by" in input.keys():
        arguments += f" --by {input.by}"
    return arguments


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
