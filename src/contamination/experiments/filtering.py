"""Detect and filter (beyond the paper): a detector scores every image of a contaminated mixture,
the images above a threshold are dropped, and the classifier retrains on what is left.

For each mixture of config ``filtering.mixtures`` (a ``replace`` mixture of a real class dataset
by a generated one, e.g. IN/SD-20 %) and each detector of ``filtering.detectors``, named
``<classifier>_on_<features>``:

1. ``detector-set`` (once per mixture): the images the detectors learn from and are calibrated
   on, all from outside the mixture: a replace mixture leaves out the real images it replaced
   and the generated images it did not draw. ``train_images_per_source`` real and as many
   generated images are drawn from those to train on, and ``calibration_images`` more real ones
   are held out to set the threshold; then one row per image of the mixture, whose ``origin``
   tells the truth. Images are compared by URI, so no image of the mixture is trained or
   calibrated on under another id; ``filter`` checks it again before it trains.
2. ``detector-features`` (once per mixture and feature extractor): the features of all those
   images. ``resnet50_features``: section 6.1's ImageNet ResNet-50 (``models.resnet50_detector``,
   detect.py's preprocessing); ``clip_features`` and ``dinov2_features``: a frozen CLIP or
   DINOv2 image encoder from a local directory (``models.clip_vision``, ``models.dinov2``;
   encoders.py), as UnivFD probes CLIP ViT-L/14.
3. ``filter`` (once per mixture and detector): detect.py's linear or MLP detector trained on the
   training features with the recipe of config ``detection`` (standardised as there). Its score,
   the logit of "generated" minus that of "real", on the held-out real images sets the threshold
   (``threshold_at_fpr``): at most ``target_fpr`` of them score above it, so the share of real
   images lost is controlled. Every image of the mixture scoring above it is dropped, with all
   its rows; the rest is the filtered manifest ``mixtures/<mixture>-filtered-<detector>.parquet``,
   a training set like any mixture (a table row names it as its ``mixture``).

metrics.json of a filtering run (``filter/<detector>/<mixture>/``): ``tpr`` and ``fpr``, the
shares of the mixture's generated and real images dropped; ``items_kept`` (rows of the filtered
manifest) and ``kept_fraction``; ``generated_share_after``, the contamination ratio left;
``calibration_fpr`` (at most target_fpr) and ``threshold``.
"""

from contamination.config import add_settings_arguments, with_defaults
from contamination.errors import ConfigError, DataError
from contamination import records
from contamination.experiments import detect
from contamination.formats import MANIFEST_COLUMNS
from contamination.mixtures.manifests import named_rng, read_items

# A detector's features: the config `models` key of their extractor.
FEATURES = {"resnet50_features": "resnet50_detector", "clip_features": "clip_vision", "dinov2_features": "dinov2"}
RESNET50_WIDTH = 2048
FILTERED = "-filtered-"  # mixtures/<mixture>-filtered-<detector>.parquet; mixture names have no '-'
TRAIN, CALIBRATION, MIXTURE = "train", "calibration", "mixture"  # roles in the detector set
DETECTOR_SET_COLUMNS = MANIFEST_COLUMNS + ["role", "target"]
METRIC_NAMES = ("tpr", "fpr", "items_kept", "kept_fraction", "generated_share_after", "calibration_fpr", "threshold")
# The keys of config `filtering` each command uses; device, num_workers, feature_batch_size are run-time keys.
DETECTOR_SET_KEYS = ("train_images_per_source", "calibration_images")
FEATURE_KEYS = ("feature_batch_size", "num_workers", "device")
FILTER_KEYS = ("target_fpr", "device")
# The detector recipe: these keys of config `detection`, as section 6.1 trains its detectors.
RECIPE_KEYS = ("iterations", "batch_size", "lr", "standardize_features", "mlp_hidden")
SCORE_BLOCK = 65536  # features scored at once
PACKAGES = ("torch", "torchvision", "numpy", "transformers")


def table_metrics(config: dict) -> list:
    """What every run's metrics.json holds (experiments.EXPERIMENTS)."""
    return list(METRIC_NAMES)


def detector_parts(detector: str) -> tuple:
    """("linear" | "mlp", features) of a detector name such as linear_on_clip_features."""
    classifier, _, features = detector.partition("_on_")
    return classifier, features


def filtered_run(mixture: str, detector: str) -> str:
    """The name of ``mixture`` filtered by ``detector``: its manifest's and its runs' name."""
    return f"{mixture}{FILTERED}{detector}"


def filtered_runs(config: dict) -> dict:
    """{filtered run: (mixture, detector)} for every mixture and detector of config ``filtering``."""
    settings = config["filtering"]
    return {filtered_run(mixture, detector): (mixture, detector)
            for mixture in settings["mixtures"] for detector in settings["detectors"]}


def feature_kinds(config: dict) -> list:
    """The features the configured detectors read, each once, in the order of the detectors."""
    return list(dict.fromkeys(detector_parts(detector)[1] for detector in config["filtering"]["detectors"]))


def filtering_tables(config: dict) -> list:
    """The tables of `snakemake filtering`: those of filtering runs and those with a filtered row."""
    filtered = filtered_runs(config)
    return [table["name"] for table in config["tables"]
            if table["experiment"] == "filter" or any(row["mixture"] in filtered for row in table["rows"])]


def with_filtered_mixtures(config: dict, table: dict) -> list:
    """Config ``mixtures`` and, for each filtered mixture a row of ``table`` names, the entry of the
    mixture it filters under its own name with ``filtered_by`` (report.contamination_positions)."""
    mixtures = {mixture["name"]: mixture for mixture in config["mixtures"]}
    rows = {row["mixture"] for row in table["rows"]}
    return list(config["mixtures"]) + [dict(mixtures[mixture], name=run, filtered_by=detector)
                                       for run, (mixture, detector) in filtered_runs(config).items() if run in rows]


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("detector-set", help="the images a filtering detector learns from, outside the mixture, "
                                                        "and the mixture's images")
    add_settings_arguments(parser, "--spec", "filtering", DETECTOR_SET_KEYS,
                           help="config `filtering` (train_images_per_source, calibration_images) + seed, mixture, "
                                "base, by")
    parser.add_argument("--manifest", required=True, help="the mixture's manifest")
    parser.add_argument("--base", required=True, help="index of the mixture's base (real) dataset")
    parser.add_argument("--by", required=True, help="index of the generated dataset it draws from")
    parser.add_argument("--out", required=True, help="the detector set (Parquet)")
    parser.set_defaults(run=run_detector_set)

    parser = subparsers.add_parser("detector-features", help="features of a detector set's images (.npy)")
    add_settings_arguments(parser, "--spec", "filtering", FEATURE_KEYS,
                           help="features (resnet50_features | clip_features | dinov2_features), and for "
                                "resnet50_features config detection's resize_size and crop_size")
    parser.add_argument("--items", required=True, help="the detector set (Parquet)")
    parser.add_argument("--model", required=True, help="the feature extractor (config models.*)")
    parser.add_argument("--out", required=True, help="features (.npy, float32, one row per item)")
    parser.set_defaults(run=run_detector_features)

    parser = subparsers.add_parser("filter", help="train a detector, drop the mixture's images above the threshold "
                                                  "(filtered manifest + metrics.json)")
    add_settings_arguments(parser, "--spec", "filtering", FILTER_KEYS, restore_filter_spec,
                           help="config `filtering` (target_fpr) + seed, mixture, generated, detector, recipe "
                                "(config detection's " + ", ".join(RECIPE_KEYS) + ")")
    parser.add_argument("--items", required=True, help="the detector set (Parquet)")
    parser.add_argument("--features", required=True, help="its features (.npy)")
    parser.add_argument("--manifest", required=True, help="the mixture's manifest")
    parser.add_argument("--model", required=True, help="the feature extractor (fingerprinted into the provenance)")
    parser.add_argument("--out-manifest", required=True, help="the filtered manifest (Parquet)")
    parser.add_argument("--out-summary", required=True, help="its counts (JSON)")
    parser.add_argument("--out-scores", required=True, help="every item's score and role (Parquet)")
    parser.add_argument("--out-metrics", required=True, help="metrics.json")
    parser.set_defaults(run=run_filter)


def restore_filter_spec(values: dict) -> dict:
    spec = with_defaults("filtering", values, FILTER_KEYS)
    return dict(spec, recipe=with_defaults("detection", spec["recipe"], RECIPE_KEYS))


# ---- the detector set -----------------------------------------------------------------------


def run_detector_set(args) -> None:
    from contamination.io import read_parquet, write_parquet

    spec = args.spec
    items = detector_set(read_parquet(args.manifest), read_items(args.base, spec["base"]).to_pandas(),
                         read_items(args.by, spec["by"]).to_pandas(), spec)
    write_parquet(items, args.out)
    print(f"detector set of {spec['mixture']}: {items.groupby(['role', 'target']).size().to_dict()} (role, target)")


def detector_set(manifest, base, by, spec: dict):
    """The detector set (DETECTOR_SET_COLUMNS; target 0 real, 1 generated) of a mixture's
    ``manifest`` whose real images come from ``base`` and generated ones from ``by`` (frames of
    mixtures.read_items' columns): ``train`` and ``calibration`` rows drawn, seeded by (seed,
    mixture, dataset), from the images of base and by that the mixture does not hold, then one
    ``mixture`` row per image (URI) of the manifest, in manifest order."""
    import pandas as pd

    unknown = sorted(set(manifest["origin"]) - {spec["base"], spec["by"]})
    if unknown:
        raise DataError(f"mixture '{spec['mixture']}' holds items of {unknown}, not only of '{spec['base']}' "
                        f"and '{spec['by']}'")
    in_mixture = set(manifest["uri"])
    train, calibration = spec["train_images_per_source"], spec["calibration_images"]
    real = drawn(base[~base["uri"].isin(in_mixture)], train + calibration, spec, spec["base"],
                 "filtering.train_images_per_source + filtering.calibration_images")
    generated = drawn(by[~by["uri"].isin(in_mixture)], train, spec, spec["by"], "filtering.train_images_per_source")
    images = manifest.drop_duplicates("uri")
    parts = [labelled(real.iloc[:train], spec["base"], TRAIN, detect.REAL),
             labelled(real.iloc[train:], spec["base"], CALIBRATION, detect.REAL),
             labelled(generated, spec["by"], TRAIN, detect.GENERATED),
             images.assign(role=MIXTURE, target=(images["origin"] == spec["by"]).astype("int64"))]
    return pd.concat([part[DETECTOR_SET_COLUMNS] for part in parts], ignore_index=True)


def drawn(pool, count: int, spec: dict, name: str, key: str):
    """``count`` images (one row per URI) of ``pool`` drawn without replacement, seeded by
    (seed, mixture, name)."""
    pool = pool.drop_duplicates("uri")
    if count > len(pool):
        raise ConfigError(f"{key}: {count} images of '{name}' wanted from outside mixture '{spec['mixture']}', "
                          f"which leaves only {len(pool)}")
    chosen = named_rng(spec["seed"], f"{spec['mixture']}:{name}:detector").choice(len(pool), size=count, replace=False)
    return pool.iloc[chosen]


def labelled(items, origin: str, role: str, target: int):
    """Index rows as detector-set rows: manifest ids ``<origin>/<id>``."""
    return items.assign(id=origin + "/" + items["id"], origin=origin, role=role, target=target)


def check_disjoint(items) -> None:
    """A DataError if an image the detector learns from or is calibrated on is also one of the
    mixture's or is used twice: the detector would be scored on what it was fitted to."""
    held = items[items["role"] != MIXTURE]
    leaked = held[held["uri"].isin(set(items.loc[items["role"] == MIXTURE, "uri"]))]
    repeated = held[held["uri"].duplicated()]
    for problem, rows in (("are also images of the mixture", leaked), ("are used twice", repeated)):
        if len(rows):
            raise DataError(f"{len(rows)} training or calibration images of the detector set {problem}, "
                            f"e.g. {rows['uri'].iloc[0]}")


# ---- features -------------------------------------------------------------------------------


def run_detector_features(args) -> None:
    from contamination.io import read_parquet
    from contamination.metrics.features import feature_device, write_rows

    spec = args.spec
    items = read_parquet(args.items)
    device = feature_device(spec["device"])
    model, transform, width = feature_extractor(spec["features"], args.model, spec)
    count = write_rows(args.out, (len(items), width), "float32",
                       detect.feature_batches(model, items, transform, spec, device))
    print(f"{spec['features']} of {count} images ({width} each, {device.type}) -> {args.out}")


def feature_extractor(features: str, model_path, spec: dict) -> tuple:
    """(model, transform, feature width) of a detector's ``features``; model maps a batch of
    transformed images to their features."""
    from contamination.experiments import encoders

    if features == "resnet50_features":
        return detect.load_feature_extractor(model_path), detect.feature_transform(spec), RESNET50_WIDTH
    return encoders.load_encoder(features.removesuffix("_features"), model_path)


# ---- the filter -----------------------------------------------------------------------------


def threshold_at_fpr(real_scores, target_fpr: float) -> float:
    """The smallest score threshold with at most ``target_fpr`` of ``real_scores`` strictly above
    it: a detector flagging what scores above it flags at most that share of these real images.
    Ties at the threshold all stay below it, so the share achieved can be smaller than the target."""
    import math

    import numpy as np

    scores = np.sort(np.asarray(real_scores, dtype=np.float64))
    if scores.size == 0 or not np.isfinite(scores).all():
        raise DataError(f"the threshold needs finite scores of held-out real images, got {scores.size} with "
                        f"{int(np.sum(~np.isfinite(scores)))} non-finite")
    if not 0 <= target_fpr < 1:
        raise ConfigError(f"filtering.target_fpr: {target_fpr} is outside [0, 1)")
    # round: 0.07 x 100 is 7.000000000000001 in floating point, and 7 images may score above
    allowed = math.floor(round(target_fpr * scores.size, 9))
    return float(scores[scores.size - 1 - allowed])


def detector_scores(classifier: str, features, items, recipe: dict, device):
    """Every item's score (float64, logit of generated minus logit of real) by a ``classifier``
    detector trained on the ``train`` rows (detect.train_detector with ``recipe``)."""
    import numpy as np
    import torch

    train = (items["role"] == TRAIN).to_numpy()
    x = torch.as_tensor(np.asarray(features[train], dtype=np.float32), device=device)
    y = torch.as_tensor(items["target"].to_numpy()[train], dtype=torch.int64, device=device)
    shift, scale = (0.0, 1.0)
    if recipe["standardize_features"]:
        shift, scale = detect.standardizer(x)
        # A feature constant over the training images tells the detector nothing, and divided by
        # MIN_STD a scored image's deviation in it would swamp its score (a few dozen training
        # images of a random network leave hundreds such): it is left out.
        scale = scale.masked_fill(scale <= detect.MIN_STD, float("inf"))
    detector = detect.train_detector(classifier, (x - shift) / scale, y, recipe, device)
    scores = np.empty(len(features), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(features), SCORE_BLOCK):
            block = torch.as_tensor(np.asarray(features[start:start + SCORE_BLOCK], dtype=np.float32), device=device)
            logits = detector((block - shift) / scale)
            scores[start:start + len(block)] = (logits[:, detect.GENERATED] - logits[:, detect.REAL]).double().cpu().numpy()
    return scores


def filtered(items, scores, threshold: float, manifest, generated: str) -> tuple:
    """(filtered manifest, metrics, reasons): the manifest without the rows of the images whose
    mixture row in ``items`` scores above ``threshold``; METRIC_NAMES with a reason for each NaN."""
    import numpy as np

    above = np.asarray(scores) > threshold
    mixture = (items["role"] == MIXTURE).to_numpy()
    images = items[mixture].assign(dropped=above[mixture])
    unscored = ~manifest["uri"].isin(set(images["uri"]))
    if unscored.any():
        raise DataError(f"{int(unscored.sum())} items of the manifest have no row in the detector set (e.g. "
                        f"{manifest['uri'][unscored].iloc[0]}): it was made from another manifest")
    kept = manifest[~manifest["uri"].isin(set(images.loc[images["dropped"], "uri"]))].reset_index(drop=True)
    if kept.empty:
        raise DataError(f"the detector drops every image of the mixture (threshold {threshold:.4g}): nothing to train on")
    is_generated = (images["target"] == detect.GENERATED).to_numpy()
    metrics = {
        "tpr": images["dropped"][is_generated].mean() if is_generated.any() else None,
        "fpr": images["dropped"][~is_generated].mean() if (~is_generated).any() else None,
        "items_kept": len(kept),
        "kept_fraction": len(kept) / len(manifest),
        "generated_share_after": float((kept["origin"] == generated).mean()),
        "calibration_fpr": float(above[(items["role"] == CALIBRATION).to_numpy()].mean()),
        "threshold": threshold,
    }
    reasons = {name: f"the mixture has no {kind} image" for name, kind in (("tpr", "generated"), ("fpr", "real"))
               if metrics[name] is None}
    return kept, metrics, reasons


def run_filter(args) -> None:
    import numpy as np

    from contamination.io import read_parquet, write_json, write_parquet
    from contamination.metrics.features import feature_device

    spec = args.spec
    recipe = dict(spec["recipe"], seed=spec["seed"])
    items = read_parquet(args.items)
    check_disjoint(items)
    features = np.load(args.features, mmap_mode="r")
    if len(features) != len(items):
        raise DataError(f"{args.features} holds {len(features)} feature rows for the {len(items)} items of {args.items}")
    device = feature_device(spec["device"])
    scores = detector_scores(detector_parts(spec["detector"])[0], features, items, recipe, device)
    threshold = threshold_at_fpr(scores[(items["role"] == CALIBRATION).to_numpy()], spec["target_fpr"])
    manifest = read_parquet(args.manifest)
    kept, metrics, reasons = filtered(items, scores, threshold, manifest, spec["generated"])
    name = filtered_run(spec["mixture"], spec["detector"])
    write_parquet(kept[MANIFEST_COLUMNS], args.out_manifest)
    write_json({"name": name, "mixture": spec["mixture"], "detector": spec["detector"], "threshold": threshold,
                "target_fpr": spec["target_fpr"], "total": len(kept),
                "counts": kept["origin"].value_counts().sort_index().to_dict(),
                "dropped": manifest["origin"][~manifest["id"].isin(set(kept["id"]))].value_counts().sort_index().to_dict()},
               args.out_summary)
    write_parquet(items[["id", "uri", "origin", "role", "target"]].assign(score=scores, above_threshold=scores > threshold),
                  args.out_scores)
    write_record(args.out_metrics, metrics, reasons, {"filter": spec, "items": str(args.items), "features": str(args.features),
                                                      "manifest": str(args.manifest)}, spec["seed"], device, args.model)
    print(f"{name}: {len(kept)} of {len(manifest)} items kept; " + ", ".join(
        f"{key} {value:.4g}" for key, value in metrics.items() if value is not None), flush=True)


def write_record(path, metrics: dict, reasons: dict, identity: dict, seed: int, device, model) -> None:
    """metrics.json of a filtering run, with the fingerprint of the feature extractor."""
    records.write_metrics(path, metrics, reasons, "ok",
                          records.provenance(identity, seed, world_size=1, device=device.type, packages=PACKAGES,
                                             models={"features": model}))
