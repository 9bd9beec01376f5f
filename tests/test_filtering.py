"""Detect and filter: the threshold at a target false-positive rate, a detector set disjoint from
the mixture it filters, the filtered manifest and its metrics, the frozen encoders, and the
commands end to end on images with a known signal."""

import contextlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from contamination import config as cfg
from contamination.errors import ConfigError, DataError
from contamination.experiments import encoders, filtering
from contamination.formats import MANIFEST_COLUMNS
from contamination import records
from contamination.smoke import tiny_encoders, tiny_models
from helpers import SMOKE_CONFIG, cli, paper_config_with_empty_roots
from imagesets import generated_index, source_index, write_images
from test_mixtures import build_mixture, generated_index as generated_frame, items, real_index, spec

# ---- threshold ------------------------------------------------------------------------------


def share_above(scores, threshold):
    return float(np.mean(np.asarray(scores) > threshold))


def test_threshold_is_the_exact_quantile_of_distinct_scores():
    scores = np.random.default_rng(0).permutation(100).astype(float)  # 0..99, shuffled
    threshold = filtering.threshold_at_fpr(scores, 0.05)
    assert threshold == 94.0 and share_above(scores, threshold) == 0.05  # 95..99 pass it
    assert share_above(scores, np.nextafter(threshold, -np.inf)) == 0.06  # any lower one lets a sixth through
    assert filtering.threshold_at_fpr(scores, 0.0) == 99.0  # no real image above
    assert filtering.threshold_at_fpr(scores, 0.999) == 0.0  # 99 of 100 may pass


@pytest.mark.parametrize("target, allowed", [(0.07, 7), (0.29, 29), (0.57, 57)])
def test_threshold_counts_floating_point_targets_exactly(target, allowed):
    # 0.29 x 100 is 28.999999999999996 and 0.57 x 100 is 56.99999999999999 in floating point
    scores = np.arange(100.0)
    threshold = filtering.threshold_at_fpr(scores, target)
    assert np.sum(scores > threshold) == allowed


def test_ties_at_the_threshold_stay_below_it():
    scores = [0, 1, 2, 2, 2, 2, 3, 4, 5, 6]
    threshold = filtering.threshold_at_fpr(scores, 0.5)
    # five may pass, but 2 cannot be split: four pass (3, 4, 5, 6); below 2, eight would
    assert threshold == 2 and share_above(scores, threshold) == 0.4
    assert share_above(scores, 1.999) == 0.8
    assert filtering.threshold_at_fpr([3.0] * 7, 0.5) == 3.0  # all tied: none passes


def test_threshold_achieves_at_most_the_target_and_is_the_smallest_that_does():
    rng = np.random.default_rng(1)
    for _ in range(300):
        scores = rng.integers(0, 12, size=rng.integers(1, 60)).astype(float)  # many ties
        target = float(rng.uniform(0, 0.99))
        threshold = filtering.threshold_at_fpr(scores, target)
        assert share_above(scores, threshold) <= target
        lower = scores[scores < threshold]
        if lower.size:  # the next lower candidate lets too many through
            assert share_above(scores, lower.max()) > target


def test_threshold_refuses_no_or_non_finite_scores_and_targets_outside_0_1():
    with pytest.raises(DataError, match="finite scores"):
        filtering.threshold_at_fpr([], 0.05)
    with pytest.raises(DataError, match="1 non-finite"):
        filtering.threshold_at_fpr([0.1, np.nan], 0.05)
    with pytest.raises(ConfigError, match="filtering.target_fpr"):
        filtering.threshold_at_fpr([0.1], 1.0)


# ---- the detector set -----------------------------------------------------------------------

CLASSES = {label: 20 for label in range(4)}
SET_SPEC = {"train_images_per_source": 6, "calibration_images": 5, "seed": 0, "base": "imagenet", "by": "sd_imagenet"}


@pytest.fixture
def sources(tmp_path):
    return (items(real_index("imagenet", CLASSES), "imagenet", tmp_path),
            items(generated_frame("sd_imagenet", {label: 24 for label in CLASSES}), "sd_imagenet", tmp_path))


def mixture_of(sources, fraction):
    base, by = sources
    name = f"in_sd_{round(fraction * 100)}"
    manifest, _ = build_mixture(spec(name, "replace", fraction, by="sd_imagenet"), base, by)
    return name, manifest


@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.8])
def test_the_detector_never_learns_from_or_calibrates_on_an_image_of_the_mixture(sources, fraction):
    name, manifest = mixture_of(sources, fraction)
    detector_set = filtering.detector_set(manifest, *sources, dict(SET_SPEC, mixture=name))
    held = detector_set[detector_set["role"] != filtering.MIXTURE]
    assert not set(held["uri"]) & set(manifest["uri"])
    assert not set(held["id"]) & set(manifest["id"])
    assert held["uri"].is_unique
    filtering.check_disjoint(detector_set)
    counts = held.groupby(["role", "origin", "target"]).size().to_dict()
    assert counts == {("calibration", "imagenet", 0): 5, ("train", "imagenet", 0): 6, ("train", "sd_imagenet", 1): 6}
    # the real ones are images the mixture replaced, the generated ones images it did not draw
    base, by = sources
    assert set(held.loc[held["target"] == 0, "uri"]) <= set(base["uri"])
    assert set(held.loc[held["target"] == 1, "uri"]) <= set(by["uri"])
    # every image of the mixture is scored once, its origin telling the truth
    scored = detector_set[detector_set["role"] == filtering.MIXTURE]
    assert scored["uri"].tolist() == manifest["uri"].tolist()
    assert (scored["target"] == (manifest["origin"] == "sd_imagenet").astype(int).to_numpy()).all()
    assert detector_set.equals(filtering.detector_set(manifest, *sources, dict(SET_SPEC, mixture=name)))


def test_a_leak_into_the_detector_set_is_refused(sources):
    name, manifest = mixture_of(sources, 0.4)
    detector_set = filtering.detector_set(manifest, *sources, dict(SET_SPEC, mixture=name))
    leaked = detector_set.copy()
    first_mixture_row = leaked.index[leaked["role"] == filtering.MIXTURE][0]
    leaked.loc[leaked.index[0], "uri"] = leaked.loc[first_mixture_row, "uri"]
    with pytest.raises(DataError, match="1 training or calibration images .* are also images of the mixture"):
        filtering.check_disjoint(leaked)
    repeated = detector_set.copy()
    repeated.loc[repeated.index[1], "uri"] = repeated.loc[repeated.index[0], "uri"]
    with pytest.raises(DataError, match="are used twice"):
        filtering.check_disjoint(repeated)


def test_too_few_images_outside_the_mixture_name_the_config_keys(sources):
    name, manifest = mixture_of(sources, 0.2)  # replaces 4 x 4 = 16 real images
    with pytest.raises(ConfigError, match=r"train_images_per_source \+ filtering.calibration_images: 17 images of "
                                          r"'imagenet' wanted from outside mixture 'in_sd_20', which leaves only 16"):
        filtering.detector_set(manifest, *sources, dict(SET_SPEC, mixture=name, train_images_per_source=12))
    name, manifest = mixture_of(sources, 0.8)  # draws 64 of the 96 generated images
    with pytest.raises(ConfigError, match="filtering.train_images_per_source: 40 images of 'sd_imagenet'.* only 32"):
        filtering.detector_set(manifest, *sources, dict(SET_SPEC, mixture=name, train_images_per_source=40,
                                                        calibration_images=1))


# ---- filtering a manifest -------------------------------------------------------------------


def scored_set():
    """A detector set whose mixture holds two real images (one with two rows) and two generated ones."""
    rows = [("r0", "train", 0), ("g0", "train", 1), ("c0", "calibration", 0), ("c1", "calibration", 0),
            ("m_real_a", "mixture", 0), ("m_real_b", "mixture", 0), ("m_gen_a", "mixture", 1), ("m_gen_b", "mixture", 1)]
    detector_set = pd.DataFrame({"id": [uri for uri, _, _ in rows], "uri": [uri for uri, _, _ in rows],
                                 "role": [role for _, role, _ in rows], "target": [target for _, _, target in rows]})
    manifest = pd.DataFrame({"id": ["a", "a2", "b", "c", "d"], "uri": ["m_real_a", "m_real_a", "m_real_b", "m_gen_a", "m_gen_b"],
                             "label": 0, "caption": "", "origin": ["imagenet", "imagenet", "imagenet", "sd", "sd"]})
    return detector_set, manifest


def test_images_above_the_threshold_leave_with_all_their_rows_and_the_metrics_count_them():
    detector_set, manifest = scored_set()
    scores = np.array([0, 0, 0.5, 2.0, 3.0, -1.0, 5.0, 0.9])
    kept, metrics, reasons = filtering.filtered(detector_set, scores, 1.0, manifest, "sd")
    assert kept["id"].tolist() == ["b", "d"]  # m_real_a (both rows) and m_gen_a are above 1.0
    assert metrics == {"tpr": 0.5, "fpr": 0.5, "items_kept": 2, "kept_fraction": 0.4, "generated_share_after": 0.5,
                       "calibration_fpr": 0.5, "threshold": 1.0}
    assert reasons == {}


def test_filtering_refuses_a_manifest_the_set_was_not_made_from_and_an_empty_result():
    detector_set, manifest = scored_set()
    other = pd.concat([manifest, manifest.iloc[:1].assign(id="x", uri="elsewhere")], ignore_index=True)
    with pytest.raises(DataError, match="1 items of the manifest have no row in the detector set"):
        filtering.filtered(detector_set, np.zeros(8), 0.0, other, "sd")
    with pytest.raises(DataError, match="drops every image"):
        filtering.filtered(detector_set, np.ones(8), 0.0, manifest, "sd")


def test_a_mixture_without_generated_images_has_no_tpr_and_says_why():
    detector_set, manifest = scored_set()
    real_only = detector_set.assign(target=np.where(detector_set["role"] == "mixture", 0, detector_set["target"]))
    _, metrics, reasons = filtering.filtered(real_only, np.zeros(8), 1.0, manifest, "sd")
    assert metrics["tpr"] is None and reasons == {"tpr": "the mixture has no generated image"}


def test_filtered_runs_are_named_for_their_mixture_and_detector():
    smoke = cfg.load(SMOKE_CONFIG)
    runs = filtering.filtered_runs(smoke)
    assert runs["in_sd_40-filtered-linear_on_clip_features"] == ("in_sd_40", "linear_on_clip_features")
    assert len(runs) == len(smoke["filtering"]["mixtures"]) * len(smoke["filtering"]["detectors"])
    assert filtering.detector_parts("mlp_on_resnet50_features") == ("mlp", "resnet50_features")
    assert filtering.feature_kinds(smoke) == ["resnet50_features", "clip_features"]
    assert filtering.filtering_tables(smoke) == ["filtering_detection", "filtering_top1"]


# ---- encoders -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, width", [("clip", 16), ("dinov2", 32)])
def test_tiny_encoders_load_like_real_directories_and_give_features(tmp_path, kind, width):
    out = tmp_path / kind
    cli("tiny-encoder", out, "--kind", kind, "--image-size", 32, "--seed", 0)
    model, transform, found_width = encoders.load_encoder(kind, out)
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    pixels = transform(image)
    assert pixels.shape == (3, 32, 32) and found_width == width
    with torch.inference_mode():
        features = model.to("cpu")(pixels[None].repeat(2, 1, 1, 1))
    assert features.shape == (2, width) and torch.isfinite(features).all()
    again, _ = tiny_encoders.build_tiny_encoder(kind, 32, 0)
    for name, tensor in again.state_dict().items():
        assert torch.equal(tensor, model.model.state_dict()[name]), name


def test_encoders_name_the_config_key_of_what_they_cannot_load(tmp_path):
    with pytest.raises(ConfigError, match=r"models.clip_vision: .* holds no saved transformers model"):
        encoders.load_encoder("clip", tmp_path)
    clip = tmp_path / "clip"
    cli("tiny-encoder", clip, "--kind", "clip")
    with pytest.raises(DataError, match="models.dinov2"):
        encoders.load_encoder("dinov2", clip)


# ---- the commands end to end ----------------------------------------------------------------

IMAGES = 48


@pytest.fixture
def signal_mixture(tmp_path):
    """IN/SD-50% of noise images, where every 'generated' one has a saturated red channel."""
    rng = np.random.default_rng(0)
    real_images = rng.integers(60, 196, size=(IMAGES, 32, 32, 3))
    generated_images = rng.integers(60, 196, size=(IMAGES, 32, 32, 3))
    generated_images[..., 0] = 255
    labels = [number % 2 for number in range(IMAGES)]
    real = source_index(tmp_path / "imagenet.parquet", write_images(tmp_path / "real", real_images, "r"), labels,
                        ["train"] * IMAGES)
    generated = generated_index(tmp_path / "gen.parquet", write_images(tmp_path / "gen", generated_images, "g"), labels)
    manifest_path = tmp_path / "in_sd_50.parquet"
    cli("mixture", "--spec", json.dumps(spec("in_sd_50", "replace", 0.5, by="sd_imagenet")), "--base", real,
        "--by", generated, "--out", manifest_path, "--summary", tmp_path / "in_sd_50.json")
    return real, generated, manifest_path


@pytest.mark.parametrize("detector", ["linear_on_resnet50_features", "mlp_on_resnet50_features", "linear_on_clip_features"])
def test_commands_filter_out_images_with_a_known_signal(tmp_path, signal_mixture, detector):
    real, generated, manifest_path = signal_mixture
    features = filtering.detector_parts(detector)[1]
    model = tmp_path / "model"
    if features == "resnet50_features":
        tiny_models.save_random_resnet50(model, seed=0)
    else:
        cli("tiny-encoder", model, "--kind", "clip")
    detector_set = tmp_path / "detector_set.parquet"
    cli("detector-set", "--spec", json.dumps({"train_images_per_source": 12, "calibration_images": 10, "seed": 0,
                                              "mixture": "in_sd_50", "base": "imagenet", "by": "sd_imagenet"}),
        "--manifest", manifest_path, "--base", real, "--by", generated, "--out", detector_set)
    feature_file = tmp_path / f"{features}.npy"
    cli("detector-features", "--spec", json.dumps({"features": features, "resize_size": 32, "crop_size": 32}),
        "--runtime", json.dumps({"device": "cpu", "num_workers": 0, "feature_batch_size": 16}),
        "--items", detector_set, "--model", model, "--out", feature_file)
    outputs = {name: tmp_path / name for name in ("filtered.parquet", "filtered.json", "scores.parquet", "metrics.json")}
    recipe = {"iterations": 200, "batch_size": 16, "mlp_hidden": 32}
    cli("filter", "--spec", json.dumps({"target_fpr": 0.1, "seed": 0, "mixture": "in_sd_50", "generated": "sd_imagenet",
                                        "detector": detector, "recipe": recipe}),
        "--runtime", json.dumps({"device": "cpu"}), "--items", detector_set, "--features", feature_file,
        "--manifest", manifest_path, "--model", model, "--out-manifest", outputs["filtered.parquet"],
        "--out-summary", outputs["filtered.json"], "--out-scores", outputs["scores.parquet"],
        "--out-metrics", outputs["metrics.json"])
    manifest, kept = pd.read_parquet(manifest_path), pd.read_parquet(outputs["filtered.parquet"])
    scores = pd.read_parquet(outputs["scores.parquet"])
    record = json.loads(outputs["metrics.json"].read_text())
    metrics = record["metrics"]
    assert record["status"] == "ok" and set(metrics) == set(filtering.METRIC_NAMES)
    # the red channel is found (chance would drop generated and real images alike)
    assert metrics["tpr"] >= 0.9 and metrics["fpr"] <= 0.25
    assert metrics["calibration_fpr"] <= 0.1
    assert list(kept.columns) == MANIFEST_COLUMNS and set(kept["id"]) <= set(manifest["id"])
    assert metrics["items_kept"] == len(kept) and metrics["generated_share_after"] == (kept["origin"] == "sd_imagenet").mean()
    mixture_scores = scores[scores["role"] == "mixture"]
    assert set(kept["uri"]) == set(mixture_scores.loc[~mixture_scores["above_threshold"], "uri"])
    assert not set(scores.loc[scores["role"] != "mixture", "uri"]) & set(manifest["uri"])
    assert record["provenance"]["models"]["features"]["fingerprint"] == records.path_fingerprint(model)
    summary = json.loads(outputs["filtered.json"].read_text())
    assert summary["name"] == f"in_sd_50-filtered-{detector}" and summary["total"] == len(kept)
    assert sum(summary["dropped"].values()) == len(manifest) - len(kept)


def test_features_have_one_row_per_item_of_the_detector_set_in_order(tmp_path, signal_mixture):
    real, generated, manifest_path = signal_mixture
    frame = pd.read_parquet(manifest_path).assign(role="mixture", target=0).iloc[:5]
    detector_set = tmp_path / "set.parquet"
    frame.to_parquet(detector_set)
    model = tmp_path / "resnet.pth"
    tiny_models.save_random_resnet50(model, seed=0)
    runtime = json.dumps({"device": "cpu", "num_workers": 0, "feature_batch_size": 2})
    for name in ("a", "b"):
        cli("detector-features", "--spec", json.dumps({"features": "resnet50_features", "resize_size": 32, "crop_size": 32}),
            "--runtime", runtime, "--items", detector_set, "--model", model, "--out", tmp_path / f"{name}.npy")
    first = np.load(tmp_path / "a.npy")
    assert first.shape == (5, 2048) and first.dtype == np.float32
    assert np.array_equal(first, np.load(tmp_path / "b.npy"))


# ---- config ---------------------------------------------------------------------------------


def smoke_with(**filtering_settings):
    config = cfg.load(SMOKE_CONFIG)
    config["filtering"].update(filtering_settings)
    return config


@pytest.mark.parametrize("mixtures, message", [
    (["in_sd_2"], r"filtering.mixtures\[0\]: unknown mixture 'in_sd_2' \(did you mean 'in_sd_20'\?\)"),
    (["in_sd_20", "imagenet_plus_sd_20"], r"filtering.mixtures\[1\]: 'imagenet_plus_sd_20' is a append mixture"),
    (["in_wv_20"], r"'in_wv_20' replaces images of 'imagenet' by 'webvision'"),
    (["co_sd_20"], r"'co_sd_20' replaces images of 'coco' by 'sd_coco'"),
])
def test_only_class_images_replaced_by_generated_ones_can_be_filtered(mixtures, message):
    config = smoke_with(mixtures=mixtures)
    with pytest.raises(ConfigError, match=message):
        cfg.check(config)


def test_tables_may_name_only_configured_detectors_and_filtered_runs():
    config = smoke_with(detectors=["linear_on_resnet50_features"])
    with pytest.raises(ConfigError, match=r"tables\[\d+\].models\[1\]: 'mlp_on_resnet50_features' is not one of "
                                          r"filtering.detectors"):
        cfg.check(config)
    config = smoke_with(mixtures=["in_sd_20", "in_sd_40"])
    with pytest.raises(ConfigError, match=r"rows\[\d+\].mixture: unknown mixture of filtering.mixtures 'in_sd_80'"):
        cfg.check(config)
    config["tables"] = [table for table in config["tables"] if table["name"] != "filtering_detection"]
    with pytest.raises(ConfigError, match="unknown mixture 'in_sd_80-filtered-linear_on_resnet50_features'"):
        cfg.check(config)


def test_a_detector_needs_its_extractor_configured():
    config = cfg.load()
    del config["models"]["clip_vision"]
    with pytest.raises(ConfigError, match=r"models.clip_vision: required by the detectors on clip_features"):
        cfg.check(config)
    config["filtering"]["detectors"] = ["linear_on_resnet50_features", "mlp_on_resnet50_features"]
    config["tables"] = [dict(table, models=config["filtering"]["detectors"]) if table["experiment"] == "filter" else table
                        for table in config["tables"] if table["name"] != "filtering_top1"]
    cfg.check(config)


def test_a_table_cannot_take_the_name_of_the_filtering_target():
    config = cfg.load(SMOKE_CONFIG)
    config["tables"][0]["name"] = "filtering"
    with pytest.raises(ConfigError, match="'filtering' is reserved"):
        cfg.check(config)


# ---- report and plan ------------------------------------------------------------------------

PAPER = cfg.load()


def paper_table(name):
    return next(table for table in PAPER["tables"] if table["name"] == name)


def test_filtered_rows_are_plotted_at_their_mixtures_ratio_in_a_series_per_detector():
    from contamination.reporting import report

    table = paper_table("filtering_top1")
    positions = report.contamination_positions(table, filtering.with_filtered_mixtures(PAPER, table))
    found = {}
    for position in positions:
        found.setdefault(position["dataset"], set()).add((position["series"], position["ratio"]))
    assert found["IN/SD-40%"] == {("sd_imagenet", 0.4)}
    assert found["IN/SD-40%, filtered: linear on CLIP"] == {("sd_imagenet filtered by linear_on_clip_features", 0.4)}
    # clean ImageNet starts every line
    assert found["ImageNet"] == {("sd_imagenet", 0.0)} | {(f"sd_imagenet filtered by {detector}", 0.0)
                                                         for detector in PAPER["filtering"]["detectors"]}
    # a table without filtered rows gets the config's mixtures alone (its report job keeps its params)
    assert filtering.with_filtered_mixtures(PAPER, paper_table("table1")) == PAPER["mixtures"]


def test_a_table_beyond_the_paper_is_titled_so(tmp_path):
    spec = dict(paper_table("filtering_detection"), models=["linear_on_resnet50_features"], rows=[
        {"dataset": "IN/SD-20%", "mixture": "in_sd_20"}])
    run = tmp_path / "metrics.json"
    run.write_text(json.dumps({"status": "ok", "metrics": dict.fromkeys(filtering.METRIC_NAMES, 0.5), "reasons": {},
                               "provenance": {"config_sha256": "", "seed": 0, "packages": {}, "models": {}}}))
    csv, sidecar, html, png = (tmp_path / name for name in ("t.csv", "t.json", "t.html", "t.png"))
    cli("table", "--spec", json.dumps(spec), "--cells", json.dumps({"IN/SD-20%|linear_on_resnet50_features": str(run)}),
        "--out", csv, "--provenance", sidecar)
    table = pd.read_csv(csv)
    assert (table["measured"] == 0.5).all() and table["reported"].isna().all()
    cli("table-report", "--spec", json.dumps(spec), "--mixtures", json.dumps(PAPER["mixtures"]), "--table", csv,
        "--provenance", sidecar, "--out-html", html, "--out-png", png)
    assert "<h1>filtering_detection: beyond the paper (filter)</h1>" in html.read_text()


def test_the_plan_prices_detector_features_and_retraining_on_filtered_mixtures(tmp_path):
    from contamination.reporting import plan

    config = cfg.load(paper_config_with_empty_roots(tmp_path))  # the paper, with paths the DAG finds
    with contextlib.chdir(tmp_path):
        dag = plan.workflow_jobs(config)
    frame = plan.build_plan(config, plan.read_profile(plan.DEFAULT_PROFILE), dag).set_index(["scope", "rule"])
    imagenet = PAPER["planning"]["dataset_sizes"]["imagenet"]["train"]
    settings, speed = PAPER["filtering"], PAPER["planning"]["throughput"]
    images = imagenet + 2 * settings["train_images_per_source"] + settings["calibration_images"]
    features = frame.loc[("filtering_detection", "detector_features")]
    assert features["jobs"] == 3 * 2 and features["note"] == ""
    per_image = 1 / speed["detector_features"]["resnet50_features"] + 1 / speed["detector_features"]["clip_features"]
    assert features["gpu_hours"] == pytest.approx(3 * images * per_image / 3600)
    assert features["storage_bytes"] == 3 * images * (2048 + 768) * 4
    assert frame.loc[("filtering_detection", "filter_mixture"), "jobs"] == 9
    # ResNet-50 on clean ImageNet, IN/SD-20/40/80% and the 9 filtered sets, each priced at the full size
    training = frame.loc[("filtering_top1", "train_classifier")]
    epochs = PAPER["classification"]["models"]["resnet50"]["epochs"]
    assert training["jobs"] == 13 and training["note"] == ""
    assert training["gpu_hours"] == pytest.approx(13 * epochs * imagenet / speed["train_classifier"]["resnet50"] / 3600)
