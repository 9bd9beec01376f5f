"""Compute planner: jobs, GPUs, GPU-hours and storage per table and in total, before any job runs.

    python -m contamination plan --configfile config/config.yaml my-site.yaml [--profile profiles/slurm]

The jobs are the workflow's own: ``WorkflowJobs`` names, for every rule of workflow/rules/*.smk,
the jobs it makes and the jobs each one needs, computed from the same config and the same
functions the rules use (config.shard_count, the mixtures, tables and their cells, the IDDPM
sample shards, the reference feature sets). A test checks that its counts per rule equal those
of Snakemake's dry run for the paper and the smoke configs, so a rule change that is not
mirrored here fails the tests. Per table it counts what ``snakemake <table>`` runs from nothing
(tables share jobs, so the tables add up to more than the total); the total is ``rule all``.

GPUs per job and the wall-time limit come from the SLURM profile's ``set-resources`` (the YTE
template is evaluated as Snakemake does). GPU-hours come from the throughput assumptions of the
config's ``planning`` section (images per second per GPU; each documented in config/config.yaml
with its source): work / throughput for rules whose work scales with images, ``job_hours`` for
the small ones, 0 for jobs without GPUs. Storage counts the bulky outputs: generation shards,
image arrays, IDDPM samples and feature files. What cannot be estimated (a GPU rule without an
assumption) is NaN with the planning key it needs.
"""

import math
from pathlib import Path

from contamination import config as cfg
from contamination.experiments.filtering import filtered_runs

DEFAULT_PROFILE = cfg.PROJECT_ROOT / "profiles" / "slurm"
PLAN_COLUMNS = ["scope", "rule", "jobs", "gpus_per_job", "gpu_hours", "hours_per_job", "runtime_limit_hours",
                "submissions", "storage_bytes", "note"]
# As in workflow/rules/common.smk.
CLASS_SOURCES = ("imagenet", "imagenet_a", "imagenet_r", "webvision")
PRETRAINED_RUN = "pretrained"
FEATURE_BYTES = 2048 * 4  # one Inception pool feature vector, float32 (features.py)
# One feature vector of each filtering extractor, float32: ResNet-50's pool, the projected
# embedding of CLIP ViT-L/14, the class token of DINOv2 ViT-L/14 (other sizes differ).
DETECTOR_FEATURE_BYTES = {"resnet50_features": 2048 * 4, "clip_features": 768 * 4, "dinov2_features": 1024 * 4}
# The tables' experiments and the rule whose job writes a cell's metrics.json.
EXPERIMENT_RULES = {
    "classify": "train_classifier",
    "caption": "caption_finetune",
    "iddpm": "iddpm_fidelity",
    "fidelity": "dataset_fidelity",
    "mae": "mae_linear_probe",
    "detect": "detect",
}


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="jobs, GPUs, GPU-hours and storage per table, from config and profile")
    parser.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                        help="overlays on config/config.yaml, in order (as Snakemake's --configfile)")
    parser.add_argument("--profile", default=str(DEFAULT_PROFILE), help="Snakemake profile directory with config.yaml")
    parser.add_argument("--out", help="also write the plan as CSV")
    parser.set_defaults(run=run_plan)


# ---- the jobs -------------------------------------------------------------------------------


class WorkflowJobs:
    """The jobs of the workflow as tuples (rule, *wildcards), and what each needs. One method per
    rule, returning the jobs its inputs come from; it mirrors the rule's input functions."""

    def __init__(self, config: dict):
        self.config = config
        self.table_specs = {table["name"]: table for table in config["tables"]}
        self.mixture_specs = {mixture["name"]: mixture for mixture in config["mixtures"]}
        self.generated_names = [spec["name"] for spec in config["generated"]]

    def needs(self, job) -> list:
        rule, *wildcards = job
        if rule in self.table_specs:  # the named target of one table
            return [("table", rule)]
        return getattr(self, rule)(*wildcards)

    def closure(self, roots) -> set:
        jobs, pending = set(), list(roots)
        while pending:
            job = pending.pop()
            if job not in jobs:
                jobs.add(job)
                pending.extend(self.needs(job))
        return jobs

    # -- targets (localrules without a shell; Snakemake counts them as jobs too)
    def all(self):
        return ([("merge_generated", name) for name in self.generated_names]
                + [("mixture", name) for name in self.mixture_specs] + self.all_tables() + [("figure3",)]
                + self.spectra() + self.report_files() + [("plan",)])

    def tables(self):
        return self.all_tables() + [("concatenate_tables",)] + self.spectra_tables()

    def spectra(self):
        return [("power_spectra", name) for name in self.config["spectra"]["generated"]]

    def report_files(self):
        return ([("table_report", name) for name in self.table_specs] + [("concatenate_tables",)] + self.spectra_tables()
                + [("generated_examples", name) for name in self.generated_names] + [("run_config",)])

    def report_pieces(self):
        return self.report_files() + [("plan",)]

    def spectra_tables(self):
        return [("spectra_table",)] if self.config["spectra"]["generated"] else []

    # -- sources and models
    def source_root(self):
        return [("synthetic_sources",)] if self.config["synthetic"]["enabled"] else []

    def tiny(self, rule):
        return [(rule,)] if self.config["models"]["build_tiny"] else []

    def synthetic_sources(self):
        return []

    def tiny_sd(self):
        return []

    def tiny_resnet50(self):
        return []

    def tiny_inception(self):
        return []

    def tiny_blip(self):
        return [("index_source", "coco")]

    def imagenet_classes(self):
        return self.source_root()

    def index_source(self, source):
        return self.source_root() + ([("imagenet_classes",)] if source in CLASS_SOURCES else [])

    def dataset_index(self, name):
        return ("index_source", name) if name in cfg.TRAINING_SOURCES else ("merge_generated", name)

    # -- generation and mixtures
    def prompts(self, name):
        source = cfg.generated_spec(self.config, name)["source"]
        return [("imagenet_classes",)] if source == "imagenet" else [("index_source", source)]

    def generate_shard(self, name, shard):
        return [("prompts", name)] + self.tiny("tiny_sd")

    def merge_generated(self, name):
        return [("generate_shard", name, shard) for shard in range(cfg.shard_count(self.config, name))]

    def mixture(self, name):
        mixture = self.mixture_specs[name]
        inputs = [self.dataset_index(mixture["base"])]
        if mixture["kind"] != "subset":
            inputs.append(self.dataset_index(mixture["by"]))
        return inputs

    # -- experiments
    def train_classifier(self, model, mixture):
        return [("mixture", mixture)] + [("index_source", source) for source in ("imagenet", "imagenet_a", "imagenet_r")]

    def figure3(self):
        figure = self.config["classification"]["figure3"]
        return [("train_classifier", figure["model"], mixture) for mixture in figure["mixtures"]] + [("imagenet_classes",)]

    def caption_finetune(self, mixture):
        return [("mixture", mixture), ("index_source", "coco")] + self.tiny("tiny_blip")

    def caption_pretrained(self):
        return [("index_source", "coco")] + self.tiny("tiny_blip")

    def image_array(self, mixture, size):
        return [("mixture", mixture)]

    def iddpm_train(self, mixture):
        return [("image_array", mixture, self.config["iddpm"]["image_size"]), ("mixture", mixture)]

    def iddpm_sample_shards(self):
        settings = self.config["iddpm"]
        return math.ceil(settings["sample_count"] / settings["sample_shard_size"])

    def iddpm_sample(self, mixture, shard):
        return [("iddpm_train", mixture)]

    def iddpm_sample_features(self, mixture):
        shards = [("iddpm_sample", mixture, shard) for shard in range(self.iddpm_sample_shards())]
        return shards + self.tiny("tiny_inception")

    def reference_features(self, references, size):
        return [("index_features", reference["source"], reference["split"], size) for reference in references]

    def index_features(self, source, split, size):
        return [("index_source", source)] + self.tiny("tiny_inception")

    def mixture_features(self, mixture, size):
        return [("mixture", mixture)] + self.tiny("tiny_inception")

    def iddpm_fidelity(self, mixture):
        settings = self.config["iddpm"]
        return ([("iddpm_sample_features", mixture), ("iddpm_train", mixture)]
                + self.reference_features(settings["references"], settings["image_size"]))

    def dataset_fidelity(self, mixture):
        settings = self.config["fidelity"]
        return ([("mixture_features", mixture, settings["image_size"])]
                + self.reference_features(settings["references"], settings["image_size"]))

    def mae_pretrain(self, mixture):
        return [("mixture", mixture)]

    def mae_linear_probe(self, mixture):
        return [("mae_pretrain", mixture), ("index_source", "imagenet")]

    def detect(self, name):
        real = self.config["detection"]["real_source"]
        return [self.dataset_index(real), ("merge_generated", name)] + self.tiny("tiny_resnet50")

    def power_spectra(self, name):
        return [self.dataset_index(self.config["spectra"]["real_source"]), ("merge_generated", name)]

    # -- tables and report
    def cell_job(self, experiment, model, mixture):
        if experiment == "caption" and mixture == PRETRAINED_RUN:
            return ("caption_pretrained",)
        if experiment == "classify":
            return ("train_classifier", model, mixture)
        return (EXPERIMENT_RULES[experiment], mixture)

    def table(self, name):
        table = self.table_specs[name]
        return list(dict.fromkeys(self.cell_job(table["experiment"], model, row["mixture"])
                                  for row in table["rows"] for model in table["models"]))

    def table_report(self, name):
        return [("table", name)]

    def all_tables(self):
        return [("table", name) for name in self.table_specs]

    def concatenate_tables(self):
        return self.all_tables()

    def spectra_table(self):
        return self.spectra()

    def generated_examples(self, name):
        return [("merge_generated", name)]

    def run_config(self):
        return []

    def plan(self):
        return [("run_config",)]


# ---- the costs ------------------------------------------------------------------------------


def read_profile(profile) -> dict:
    """The profile's config.yaml, its YTE template evaluated as Snakemake does."""
    import yaml

    path = Path(profile) / "config.yaml"
    if not path.is_file():
        from contamination.errors import ConfigError

        raise ConfigError(f"--profile: no config.yaml in '{profile}'")
    with open(path) as handle:
        if "__use_yte__: true" in path.read_text():
            import yte

            return yte.process_yaml(handle)
        return yaml.safe_load(handle)


class Costs:
    """GPUs, wall-time limit, GPU-hours and storage of a job, from the profile and `planning`."""

    def __init__(self, config: dict, profile: dict):
        self.config = config
        self.planning = config["planning"]
        self.resources = profile.get("set-resources", {})
        self.default_runtime = profile.get("default-resources", {}).get("runtime")
        self.mixture_specs = {mixture["name"]: mixture for mixture in config["mixtures"]}
        self.filtered = filtered_runs(config)

    def gpus(self, rule) -> int:
        return int(self.resources.get(rule, {}).get("gpu", 0) or 0)

    def runtime_hours(self, rule) -> float:
        minutes = self.resources.get(rule, {}).get("runtime", self.default_runtime)
        return math.nan if minutes is None else minutes / 60

    # -- sizes: (items, note); NaN and the planning key when the config does not say
    def source_size(self, source, split) -> tuple:
        size = self.planning["dataset_sizes"].get(source, {}).get(split)
        if size is None:
            return math.nan, f"no planning.dataset_sizes.{source}.{split}"
        return size, ""

    def dataset_size(self, name) -> tuple:
        if name in cfg.TRAINING_SOURCES:
            size, note = self.source_size(name, "train")
            subset = cfg.train_subset(self.config, name)
            return (size if subset is None else min(size, subset)), note
        return cfg.generated_size(self.config, name), ""

    def mixture_size(self, name) -> tuple:
        # A filtered mixture is priced at the size of the mixture it filters, an upper bound: what a
        # detector drops is known once it has run.
        if name in self.filtered:
            return self.mixture_size(self.filtered[name][0])
        mixture = self.mixture_specs[name]
        base, note = self.dataset_size(mixture["base"])
        if math.isnan(base):
            return base, note
        added = round(mixture["fraction"] * base)
        return {"subset": added, "replace": base, "append": base + added}[mixture["kind"]], note

    def detector_set_size(self, mixture) -> tuple:
        """Images of a filtering detector set: the mixture's, and those the detector learns from."""
        size, note = self.mixture_size(mixture)
        settings = self.config["filtering"]
        return size + 2 * settings["train_images_per_source"] + settings["calibration_images"], note

    def shard_images(self, name, shard) -> int:
        size, shard_size = cfg.generated_size(self.config, name), self.config["generation"]["shard_size"]
        return min(shard_size, size - shard * shard_size)

    def sample_images(self, shard) -> int:
        settings = self.config["iddpm"]
        return min(settings["sample_shard_size"], settings["sample_count"] - shard * settings["sample_shard_size"])

    # -- time
    def seconds(self, *parts) -> tuple:
        """(GPU-seconds, note): the sum of units / planning.throughput[keys] over (units, keys)
        parts, where units is (number, note) as the size functions return it."""
        total, notes = 0.0, []
        for (units, note), keys in parts:
            value = self.planning["throughput"]
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                value, note = math.nan, "; ".join(n for n in (note, f"no planning.throughput.{'.'.join(keys)}") if n)
            total += units / value
            notes += [note] if note else []
        return total, "; ".join(notes)

    def work_seconds(self, job):
        """(GPU-seconds, note) for rules whose work scales with images; None for the others."""
        rule, *wildcards = job
        config = self.config
        if rule == "generate_shard":
            return self.seconds(((self.shard_images(*wildcards), ""), ("generate",)))
        if rule == "train_classifier":
            model, mixture = wildcards
            epochs = config["classification"]["models"][model]["epochs"]
            return self.seconds((self.times(epochs, self.mixture_size(mixture)), ("train_classifier", model)))
        if rule == "caption_finetune":
            settings = config["captioning"]
            validation = settings["epochs"] if settings["select_by"] else 0
            return self.seconds((self.times(settings["epochs"], self.mixture_size(wildcards[0])), ("caption_train",)),
                                (self.times(validation, self.source_size("coco", "val")), ("caption_generate",)),
                                (self.source_size("coco", "test"), ("caption_generate",)))
        if rule == "caption_pretrained":
            return self.seconds((self.source_size("coco", "test"), ("caption_generate",)))
        if rule == "iddpm_train":
            settings = config["iddpm"]
            return self.seconds(((settings["iterations"] * settings["global_batch_size"], ""), ("iddpm_train",)))
        if rule == "iddpm_sample":
            evaluations = self.sample_images(wildcards[1]) * config["iddpm"]["sample_steps"]
            return self.seconds(((evaluations, ""), ("iddpm_sample",)))
        if rule == "iddpm_sample_features":
            return self.seconds(((config["iddpm"]["sample_count"], ""), ("inception_features",)))
        if rule == "index_features":
            return self.seconds((self.source_size(wildcards[0], wildcards[1]), ("inception_features",)))
        if rule == "mixture_features":
            return self.seconds((self.mixture_size(wildcards[0]), ("inception_features",)))
        if rule == "mae_pretrain":
            epochs = config["mae"]["pretrain"]["epochs"]
            return self.seconds((self.times(epochs, self.mixture_size(wildcards[0])), ("mae_pretrain",)))
        if rule == "mae_linear_probe":
            epochs = config["mae"]["linear_probe"]["epochs"]
            return self.seconds((self.times(epochs, self.source_size("imagenet", "train")), ("mae_linear_probe",)),
                                (self.source_size("imagenet", "val"), ("mae_linear_probe",)))
        if rule == "detect":
            return self.seconds(((2 * config["detection"]["images_per_source"], ""), ("detect_features",)))
        if rule == "detector_features":
            mixture, features = wildcards
            return self.seconds((self.detector_set_size(mixture), ("detector_features", features)))
        return None

    @staticmethod
    def times(factor, size) -> tuple:
        return factor * size[0], size[1]

    def gpu_hours(self, job) -> tuple:
        """(GPU-hours, note): planning.job_hours x GPUs, or work / throughput; 0 without GPUs."""
        rule = job[0]
        gpus = self.gpus(rule)
        if gpus == 0:
            return 0.0, ""
        if rule in self.planning["job_hours"]:
            return gpus * self.planning["job_hours"][rule], ""
        work = self.work_seconds(job)
        if work is None:
            return math.nan, f"no planning assumption for rule {rule} (planning.throughput or planning.job_hours.{rule})"
        seconds, note = work
        return seconds / 3600, note

    def storage_bytes(self, job) -> float:
        rule, *wildcards = job
        if rule == "generate_shard":
            return self.shard_images(*wildcards) * self.planning["bytes_per_generated_image"]
        if rule == "image_array":
            mixture, size = wildcards
            return self.mixture_size(mixture)[0] * size * size * 3
        if rule == "iddpm_sample":
            size = self.config["iddpm"]["image_size"]
            return self.sample_images(wildcards[1]) * size * size * 3
        if rule == "iddpm_sample_features":
            return self.config["iddpm"]["sample_count"] * FEATURE_BYTES
        if rule == "index_features":
            return self.source_size(wildcards[0], wildcards[1])[0] * FEATURE_BYTES
        if rule == "mixture_features":
            return self.mixture_size(wildcards[0])[0] * FEATURE_BYTES
        if rule == "detector_features":
            mixture, features = wildcards
            return self.detector_set_size(mixture)[0] * DETECTOR_FEATURE_BYTES[features]
        return 0.0


# ---- the plan -------------------------------------------------------------------------------


def scopes(jobs: WorkflowJobs) -> dict:
    """{scope: the jobs it runs from nothing}: each table's target, then `all`."""
    plan = {name: jobs.closure([(name,)]) for name in jobs.table_specs}
    plan["all"] = jobs.closure([("all",)])
    return plan


def job_counts(jobs: set) -> dict:
    """{rule: number of jobs}, as in the 'Job stats' of a Snakemake dry run."""
    counts = {}
    for job in jobs:
        counts[job[0]] = counts.get(job[0], 0) + 1
    return counts


def build_plan(config: dict, profile: dict):
    """The plan as a DataFrame (PLAN_COLUMNS): per scope one row per rule and one row "*" in all."""
    import pandas as pd

    costs = Costs(config, profile)
    estimates = {}
    rows = []
    for scope, scope_jobs in scopes(WorkflowJobs(config)).items():
        by_rule = {}
        for job in scope_jobs:
            if job not in estimates:
                estimates[job] = (*costs.gpu_hours(job), costs.storage_bytes(job))
            by_rule.setdefault(job[0], []).append(estimates[job])
        for rule, values in sorted(by_rule.items()):
            gpus = costs.gpus(rule)
            hours = [job_hours for job_hours, _, _ in values]
            longest = math.nan if any(math.isnan(job_hours) for job_hours in hours) else max(hours)
            hours_per_job = longest / gpus if gpus else math.nan
            limit = costs.runtime_hours(rule)
            rows.append({
                "scope": scope, "rule": rule, "jobs": len(values), "gpus_per_job": gpus, "gpu_hours": sum(hours),
                "hours_per_job": hours_per_job, "runtime_limit_hours": limit,
                "submissions": math.ceil(hours_per_job / limit) if gpus and math.isfinite(hours_per_job / limit) else math.nan,
                "storage_bytes": sum(size for _, _, size in values),
                "note": "; ".join(sorted({note for _, note, _ in values if note})),
            })
        scope_rows = [row for row in rows if row["scope"] == scope]
        rows.append({
            "scope": scope, "rule": "*", "jobs": len(scope_jobs),
            "gpus_per_job": max(row["gpus_per_job"] for row in scope_rows),
            "gpu_hours": sum(row["gpu_hours"] for row in scope_rows), "hours_per_job": math.nan,
            "runtime_limit_hours": math.nan, "submissions": math.nan,
            "storage_bytes": sum(row["storage_bytes"] for row in scope_rows),
            "note": "; ".join(sorted({row["note"] for row in scope_rows if row["note"]})),
        })
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


def format_plan(plan, retries) -> str:
    """The summary printed by `plan`: per table and in total, then the total by rule and warnings."""
    totals = plan[plan["rule"] == "*"]
    everything = plan[(plan["scope"] == "all") & (plan["rule"] != "*")]
    lines = ["Per table (what `snakemake <table>` runs from nothing; tables share jobs) and in total (`all`):",
             f"{'scope':<12} {'jobs':>7} {'GPU jobs':>9} {'max GPUs/job':>13} {'GPU-hours':>11} {'storage':>10}"]
    for row in totals.itertuples():
        scope_rows = plan[(plan["scope"] == row.scope) & (plan["rule"] != "*")]
        gpu_jobs = int(scope_rows.loc[scope_rows["gpus_per_job"] > 0, "jobs"].sum())
        lines.append(f"{row.scope:<12} {row.jobs:>7} {gpu_jobs:>9} {row.gpus_per_job:>13} "
                     f"{row.gpu_hours:>11,.1f} {human_bytes(row.storage_bytes):>10}")
    lines += ["", "Total by rule:",
              f"{'rule':<24} {'jobs':>6} {'GPUs/job':>9} {'GPU-hours':>11} {'h/job':>8} {'limit h':>8} {'storage':>10}"]
    for row in everything.itertuples():
        hours = "-" if math.isnan(row.hours_per_job) else f"{row.hours_per_job:.1f}"
        lines.append(f"{row.rule:<24} {row.jobs:>6} {row.gpus_per_job:>9} {row.gpu_hours:>11,.1f} "
                     f"{hours:>8} {row.runtime_limit_hours:>8.1f} {human_bytes(row.storage_bytes):>10}")
    for row in everything.itertuples():
        if row.submissions > 1:
            fits = "" if row.submissions <= retries + 1 else f"; more than the profile's retries ({retries}) + 1: raise them"
            lines.append(f"note: each {row.rule} job needs up to ~{row.hours_per_job:.0f} h on {row.gpus_per_job} GPUs, over "
                         f"the {row.runtime_limit_hours:.0f} h limit: {int(row.submissions)} submissions, each resuming "
                         f"from its checkpoint{fits}")
    for note in sorted({note for note in plan["note"] if note}):
        lines.append(f"not estimated: {note}")
    return "\n".join(lines)


def human_bytes(size) -> str:
    if not math.isfinite(size):
        return "n/a"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def run_plan(args) -> None:
    from contamination.reporting.tables import write_table

    config = cfg.load(*args.configfile)
    profile = read_profile(args.profile)
    plan = build_plan(config, profile)
    print(f"run '{config['run']}', profile {args.profile}, throughputs for {config['planning']['gpu']}")
    print(format_plan(plan, profile.get("retries", 0)))
    if args.out:
        write_table(plan, args.out)
