"""Compute planner: jobs, GPUs, GPU-hours and storage per table and in total, before any job runs.

    python -m contamination plan --configfile config/config.yaml my-site.yaml [--profile profiles/slurm]

The jobs are Snakemake's own: contamination.dag builds the DAG a dry run builds, for `all` and
every table's named target at once, so its counts per rule are those of the dry run and a new
rule is planned without an edit here. Like a dry run it reads the rules' input functions, which
need the configured dataset and model paths to exist. Per table it counts what ``snakemake
<table>`` runs from nothing (the jobs the table's target needs; tables share jobs, so the tables
add up to more than the total); the total is ``rule all``.

GPUs per job and the wall-time limit come from the SLURM profile's ``set-resources`` (the YTE
template is evaluated as Snakemake does). GPU-hours come from the throughput assumptions of the
config's ``planning`` section (images per second per GPU; each documented in config/config.yaml
with its source): work / throughput for rules whose work scales with images (``Costs``, which
reads a job's wildcards), ``job_hours`` for the small ones, 0 for jobs without GPUs. Sizes come
from the code that makes them: mixture sizes from mixtures.manifests.mixture_size, generation
shards from generate.shard_span, IDDPM sample shards from iddpm.shard_numbers. Storage counts the
bulky outputs: generation shards, image arrays, IDDPM samples and feature files. What cannot be
estimated (a rule with GPUs but no assumption) is NaN with the planning key it needs.
``--throughput <json>`` takes measured values (``python -m benchmarks.gpu``) in place of the
assumptions they name, and the output says which values are measured and which assumed.
"""

import math
from pathlib import Path

from contamination import config as cfg
from contamination.dag import Job, closure, workflow_dag
from contamination.errors import ConfigError
from contamination.experiments.iddpm import shard_numbers
from contamination.generation.generate import shard_span
from contamination.mixtures.manifests import mixture_size
from contamination.generation import generators
from contamination.experiments import recursion
from contamination.experiments.filtering import filtered_runs

DEFAULT_PROFILE = cfg.PROJECT_ROOT / "profiles" / "slurm"
PLAN_COLUMNS = ["scope", "rule", "jobs", "gpus_per_job", "gpu_hours", "hours_per_job", "runtime_limit_hours",
                "submissions", "storage_bytes", "note"]
FEATURE_BYTES = 2048 * 4  # one Inception pool feature vector, float32 (features.py)
DINOV2_FEATURE_BYTES = 1024 * 4  # one DINOv2 ViT-L/14 class token, float32 (dinov2.py)
# One feature vector of each filtering extractor, float32: ResNet-50's pool, the projected
# embedding of CLIP ViT-L/14, the class token of DINOv2 ViT-L/14 (other sizes differ).
DETECTOR_FEATURE_BYTES = {"resnet50_features": 2048 * 4, "clip_features": 768 * 4, "dinov2_features": 1024 * 4}


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="jobs, GPUs, GPU-hours and storage per table, from config and profile")
    parser.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                        help="overlays on config/config.yaml, in order (as Snakemake's --configfile)")
    parser.add_argument("--profile", default=str(DEFAULT_PROFILE), help="Snakemake profile directory with config.yaml")
    parser.add_argument("--out", help="also write the plan as CSV")
    parser.add_argument("--throughput", metavar="JSON",
                        help="measured throughputs (`python -m benchmarks.gpu`) in place of planning.throughput's")
    parser.set_defaults(run=run_plan)


# ---- the jobs -------------------------------------------------------------------------------


def plan_targets(config: dict) -> list:
    """The scopes of the plan: each table's named target, then `all`."""
    return [table["name"] for table in config["tables"]] + ["all"]


def workflow_jobs(config: dict) -> dict:
    """The DAG of every scope of the plan (contamination.dag.workflow_dag), built with ``config``."""
    return workflow_dag(plan_targets(config), config=config)


# ---- the costs ------------------------------------------------------------------------------


def read_profile(profile) -> dict:
    """The profile's config.yaml, its YTE template evaluated as Snakemake does."""
    import yaml

    path = Path(profile) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"--profile: no config.yaml in '{profile}'")
    with open(path) as handle:
        if "__use_yte__: true" in path.read_text():
            import yte

            return yte.process_yaml(handle)
        return yaml.safe_load(handle)


class Costs:
    """GPUs, wall-time limit, GPU-hours and storage of a job (a contamination.dag.Job, read by its
    rule and wildcards), from the profile and `planning`."""

    def __init__(self, config: dict, profile: dict):
        self.config = config
        self.planning = config["planning"]
        self.resources = profile.get("set-resources", {})
        self.default_runtime = profile.get("default-resources", {}).get("runtime")
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
            return self.source_size(name, "train")
        return cfg.generated_size(self.config, name), ""

    def mixture_size(self, name) -> tuple:
        # A filtered mixture is priced at the size of the mixture it filters, an upper bound: what a
        # detector drops is known once it has run.
        if name in self.filtered:
            return self.mixture_size(self.filtered[name][0])
        spec = cfg.mixture_job_spec(self.config, name)
        base, note = self.dataset_size(spec["base"])
        if math.isnan(base):
            return base, note
        return mixture_size(spec, base), note

    def generation_cost(self, name) -> tuple:
        """(throughput key, cost of one image relative to it) for generated dataset ``name``: the
        generator's own throughput (planning.throughput.generators.<generator>) as stated, else
        planning.throughput.generate, made at planning.generate_reference, scaled by denoiser
        passes: steps x pixels x (2 with classifier-free guidance, guidance_scale > 1, else 1)."""
        settings = generators.generation_settings(self.config, name)
        generator = settings.get("generator", generators.PAPER_GENERATOR)
        if generator in self.planning["throughput"]["generators"]:
            return ("generators", generator), 1.0
        reference = self.planning["generate_reference"]
        passes = settings["steps"] * settings["height"] * settings["width"] * (2 if settings["guidance_scale"] > 1 else 1)
        return ("generate",), passes / (reference["steps"] * reference["height"] * reference["width"] * 2)

    def detector_set_size(self, mixture) -> tuple:
        """Images of a filtering detector set: the mixture's, and those the detector learns from."""
        size, note = self.mixture_size(mixture)
        settings = self.config["filtering"]
        return size + 2 * settings["train_images_per_source"] + settings["calibration_images"], note

    def shard_images(self, name, shard) -> int:
        images, shard_size = cfg.generated_size(self.config, name), cfg.shard_size(self.config, name)
        return len(shard_span(images, int(shard), shard_size))

    def sample_images(self, shard) -> int:
        return len(shard_numbers(self.config["iddpm"], int(shard)))

    def recursion_sample_images(self, shard) -> int:
        return len(shard_numbers(recursion.sample_settings(self.config), int(shard)))

    def recursion_mixture_images(self, policy, generation) -> int:
        settings = self.config["recursion"]
        return recursion.mixture_size(policy, int(generation), self.mixture_size(settings["base"])[0],
                                      settings["sample_count"])

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

    def work_seconds(self, job: Job):
        """(GPU-seconds, note) for rules whose work scales with images; None for the others."""
        rule, wildcards, config = job.rule, job.wildcards, self.config
        if rule == "generate_shard":
            keys, scale = self.generation_cost(wildcards["name"])
            return self.seconds(((self.shard_images(wildcards["name"], wildcards["shard"]) * scale, ""), keys))
        if rule == "train_classifier":
            model, mixture = wildcards["model"], wildcards["mixture"]
            epochs = config["classification"]["models"][model]["epochs"]
            return self.seconds((self.times(epochs, self.mixture_size(mixture)), ("train_classifier", model)))
        if rule == "caption_finetune":
            settings = config["captioning"]
            validation = settings["epochs"] if settings["select_by"] else 0
            return self.seconds(
                (self.times(settings["epochs"], self.mixture_size(wildcards["mixture"])), ("caption_train",)),
                (self.times(validation, self.source_size("coco", "val")), ("caption_generate",)),
                (self.source_size("coco", "test"), ("caption_generate",)))
        if rule == "caption_pretrained":
            return self.seconds((self.source_size("coco", "test"), ("caption_generate",)))
        if rule in ("iddpm_train", "recursion_train"):
            settings = config["iddpm"]
            return self.seconds(((settings["iterations"] * settings["global_batch_size"], ""), ("iddpm_train",)))
        if rule == "iddpm_sample":
            evaluations = self.sample_images(wildcards["shard"]) * config["iddpm"]["sample_steps"]
            return self.seconds(((evaluations, ""), ("iddpm_sample",)))
        if rule == "iddpm_sample_features":
            return self.seconds(((config["iddpm"]["sample_count"], ""), ("inception_features",)))
        if rule == "recursion_sample":
            evaluations = self.recursion_sample_images(wildcards["shard"]) * config["iddpm"]["sample_steps"]
            return self.seconds(((evaluations, ""), ("iddpm_sample",)))
        if rule == "recursion_sample_features":
            return self.seconds(((config["recursion"]["sample_count"], ""), ("inception_features",)))
        if rule == "index_features":
            return self.seconds((self.source_size(wildcards["source"], wildcards["split"]), ("inception_features",)))
        if rule == "mixture_features":
            return self.seconds((self.mixture_size(wildcards["mixture"]), ("inception_features",)))
        if rule == "dinov2_index_features":
            return self.seconds((self.source_size(wildcards["source"], wildcards["split"]), ("dinov2_features",)))
        if rule == "dinov2_mixture_features":
            return self.seconds((self.mixture_size(wildcards["mixture"]), ("dinov2_features",)))
        if rule == "dinov2_dataset_fidelity":  # the same distances as dataset_fidelity's, on smaller features
            return self.gpus(rule) * self.planning["job_hours"]["dataset_fidelity"] * 3600, ""
        if rule == "mae_pretrain":
            epochs = config["mae"]["pretrain"]["epochs"]
            return self.seconds((self.times(epochs, self.mixture_size(wildcards["mixture"])), ("mae_pretrain",)))
        if rule == "mae_linear_probe":
            epochs = config["mae"]["linear_probe"]["epochs"]
            return self.seconds((self.times(epochs, self.source_size("imagenet", "train")), ("mae_linear_probe",)),
                                (self.source_size("imagenet", "val"), ("mae_linear_probe",)))
        if rule == "detect":
            return self.seconds(((2 * config["detection"]["images_per_source"], ""), ("detect_features",)))
        if rule == "detector_features":
            mixture, features = wildcards["mixture"], wildcards["features"]
            return self.seconds((self.detector_set_size(mixture), ("detector_features", features)))
        return None

    @staticmethod
    def times(factor, size) -> tuple:
        return factor * size[0], size[1]

    def gpu_hours(self, job: Job) -> tuple:
        """(GPU-hours, note): planning.job_hours x GPUs, or work / throughput; 0 without GPUs."""
        gpus = self.gpus(job.rule)
        if gpus == 0:
            return 0.0, ""
        if job.rule in self.planning["job_hours"]:
            return gpus * self.planning["job_hours"][job.rule], ""
        work = self.work_seconds(job)
        if work is None:
            return math.nan, f"no planning assumption for rule {job.rule} (planning.throughput or planning.job_hours.{job.rule})"
        seconds, note = work
        return seconds / 3600, note

    def storage_bytes(self, job: Job) -> float:
        rule, wildcards = job.rule, job.wildcards
        if rule == "generate_shard":
            settings = generators.generation_settings(self.config, wildcards["name"])
            reference = self.planning["generate_reference"]
            pixels = settings["height"] * settings["width"] / (reference["height"] * reference["width"])
            return self.shard_images(wildcards["name"], wildcards["shard"]) * pixels * self.planning["bytes_per_generated_image"]
        if rule == "format_match_shard":
            return self.shard_images(wildcards["name"], wildcards["shard"]) * self.planning["bytes_per_format_matched_image"]
        if rule == "image_cache":
            size, dataset = int(wildcards["size"]), wildcards["dataset"]
            subset = cfg.train_subset(self.config, dataset)
            images = self.dataset_size(dataset)[0]
            return (images if subset is None else min(images, subset)) * size * size * 3
        if rule == "image_array":
            size = int(wildcards["size"])
            return self.mixture_size(wildcards["mixture"])[0] * size * size * 3
        if rule == "iddpm_sample":
            size = self.config["iddpm"]["image_size"]
            return self.sample_images(wildcards["shard"]) * size * size * 3
        if rule == "iddpm_sample_features":
            return self.config["iddpm"]["sample_count"] * FEATURE_BYTES
        if rule == "recursion_mixture":
            size = self.config["iddpm"]["image_size"]
            return self.recursion_mixture_images(wildcards["policy"], wildcards["generation"]) * size * size * 3
        if rule == "recursion_sample":
            size = self.config["iddpm"]["image_size"]
            return self.recursion_sample_images(wildcards["shard"]) * size * size * 3
        if rule == "recursion_sample_features":
            return self.config["recursion"]["sample_count"] * FEATURE_BYTES
        if rule == "index_features":
            return self.source_size(wildcards["source"], wildcards["split"])[0] * FEATURE_BYTES
        if rule == "mixture_features":
            return self.mixture_size(wildcards["mixture"])[0] * FEATURE_BYTES
        if rule == "dinov2_index_features":
            return self.source_size(wildcards["source"], wildcards["split"])[0] * DINOV2_FEATURE_BYTES
        if rule == "dinov2_mixture_features":
            return self.mixture_size(wildcards["mixture"])[0] * DINOV2_FEATURE_BYTES
        if rule == "detector_features":
            return (self.detector_set_size(wildcards["mixture"])[0]
                    * DETECTOR_FEATURE_BYTES[wildcards["features"]])
        return 0.0


# ---- measured throughputs ---------------------------------------------------------------------


def throughput_keys(throughput: dict, prefix: str = "") -> dict:
    """{dotted key: value} of every number in planning.throughput."""
    keys = {}
    for name, value in throughput.items():
        if isinstance(value, dict):
            keys.update(throughput_keys(value, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = value
    return keys


def read_measured_throughput(path, config: dict) -> dict:
    """The measurements of a benchmarks.gpu result file: {"measured": {dotted planning.throughput
    key: value}, "failed": {key: reason}, "device", "tiny"}. A row names the key it measures in
    ``planning_key``; a row whose status is not "ok" leaves its key assumed. ConfigError naming the
    file for a file that is not such a result, a key planning.throughput does not have, a key
    measured twice or a value that is not a positive number."""
    import json

    where = f"--throughput '{path}'"
    try:
        result = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{where}: not a readable JSON file ({error})") from None
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
        raise ConfigError(f"{where}: not a result of `python -m benchmarks.gpu` (no list of rows)")
    known = throughput_keys(config["planning"]["throughput"])
    measured, failed = {}, {}
    for number, entry in enumerate(result["rows"]):
        key = entry.get("planning_key") if isinstance(entry, dict) else None
        if key is None:
            continue
        case = entry.get("case", f"row {number}")
        if key not in known:
            raise ConfigError(f"{where}: row '{case}' measures planning.throughput.{key}, which the config does not "
                              f"have (its keys: {', '.join(sorted(known))})")
        if key in measured or key in failed:
            raise ConfigError(f"{where}: planning.throughput.{key} is measured by more than one row")
        if entry.get("status") != "ok":
            failed[key] = f"{entry.get('status')}: {entry.get('note', '')}"
            continue
        value = entry.get("ours")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(f"{where}: row '{case}' gives planning.throughput.{key} the value {value!r}; "
                              "a throughput is a positive number")
        measured[key] = value
    return {"measured": measured, "failed": failed, "device": result.get("device", "unknown device"),
            "tiny": bool(result.get("settings", {}).get("tiny"))}


def with_measured_throughput(config: dict, measured: dict) -> dict:
    """A copy of ``config`` whose planning.throughput holds the ``measured`` values."""
    import copy

    config = copy.deepcopy(config)
    for key, value in measured.items():
        *parents, leaf = key.split(".")
        target = config["planning"]["throughput"]
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def throughput_sources(config: dict, measurements, path) -> str:
    """Which planning.throughput values are measured (from which file) and which are assumed."""
    keys = throughput_keys(config["planning"]["throughput"])
    measured = measurements["measured"] if measurements else {}
    lines = []
    if measurements:
        tiny = " (--tiny: the smoke run's tiny models, not for planning)" if measurements["tiny"] else ""
        lines.append(f"throughputs measured on {measurements['device']}, from {path}{tiny}:")
        lines += [f"  {key} = {value:.4g} (assumed {keys[key]:.4g})" for key, value in sorted(measured.items())]
    assumed = [key for key in sorted(keys) if key not in measured]
    failed = measurements["failed"] if measurements else {}
    lines.append(f"throughputs assumed (config planning.throughput, for {config['planning']['gpu']}): "
                 + ", ".join(f"{key} (measurement {failed[key]})" if key in failed else key for key in assumed))
    return "\n".join(lines)


# ---- the plan -------------------------------------------------------------------------------


def scopes(config: dict, dag: dict) -> dict:
    """{scope: the jobs it runs from nothing}: each table's target, then `all`."""
    return {target: closure(dag, [Job(target)]) for target in plan_targets(config)}


def job_counts(jobs) -> dict:
    """{rule: number of jobs}, as in the 'Job stats' of a Snakemake dry run."""
    counts = {}
    for job in jobs:
        counts[job.rule] = counts.get(job.rule, 0) + 1
    return counts


def build_plan(config: dict, profile: dict, dag: dict):
    """The plan as a DataFrame (PLAN_COLUMNS): per scope one row per rule and one row "*" in all,
    for the jobs of ``dag`` (workflow_jobs(config))."""
    import pandas as pd

    costs = Costs(config, profile)
    estimates = {}
    rows = []
    for scope, scope_jobs in scopes(config, dag).items():
        by_rule = {}
        for job in scope_jobs:
            if job not in estimates:
                estimates[job] = (*costs.gpu_hours(job), costs.storage_bytes(job))
            by_rule.setdefault(job.rule, []).append(estimates[job])
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
    measurements = read_measured_throughput(args.throughput, config) if args.throughput else None
    sources = throughput_sources(config, measurements, args.throughput)
    if measurements:
        config = with_measured_throughput(config, measurements["measured"])
    plan = build_plan(config, profile, workflow_jobs(config))
    print(f"run '{config['run']}', profile {args.profile}")
    print(sources)
    if cfg.stand_in_warning(config):
        print(cfg.stand_in_warning(config))
    print(format_plan(plan, profile.get("retries", 0)))
    if args.out:
        write_table(plan, args.out)
