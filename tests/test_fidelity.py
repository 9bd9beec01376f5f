"""FID against scipy's sqrtm formula; improved precision/recall against brute force and prdc, and
against the block loops before panels (benchmarks.precision_recall); the metrics.json a fidelity
run writes."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from contamination.metrics import fidelity
from contamination.io import read_json, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.precision_recall import ReadCounter, streamed_covered_counts, streamed_radii  # noqa: E402

torch.set_num_threads(1)


def correlated_features(seed, count, dim, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return (rng.normal(size=(count, dim)) @ mixing * scale + shift).astype(np.float32)


def sqrtm_fid(features_1, features_2):
    """pytorch-fid's formula: scipy.linalg.sqrtm of the covariance product."""
    mean_1, mean_2 = features_1.mean(axis=0, dtype=np.float64), features_2.mean(axis=0, dtype=np.float64)
    covariance_1 = np.cov(features_1.astype(np.float64), rowvar=False)
    covariance_2 = np.cov(features_2.astype(np.float64), rowvar=False)
    root = scipy.linalg.sqrtm(covariance_1 @ covariance_2).real
    return float(((mean_1 - mean_2) ** 2).sum() + np.trace(covariance_1) + np.trace(covariance_2) - 2 * np.trace(root))


def brute_force_precision_recall(real, generated, k):
    """Every pairwise Euclidean distance in float64; radius = (k+1)-th smallest distance in the
    own set (the point itself included); covered = within the radius of some point."""
    real, generated = real.astype(np.float64), generated.astype(np.float64)

    def distances(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))

    real_radii = np.sort(distances(real, real), axis=1)[:, k]
    generated_radii = np.sort(distances(generated, generated), axis=1)[:, k]
    across = distances(real, generated)
    precision = (across <= real_radii[:, None]).any(axis=0).mean()
    recall = (across <= generated_radii[None, :]).any(axis=1).mean()
    return precision, recall


@pytest.fixture(scope="module")
def feature_sets():
    real = correlated_features(0, 300, 24)
    generated = correlated_features(1, 240, 24, shift=0.3, scale=0.8)
    return real, generated


def test_fid_agrees_with_sqrtm_to_nine_digits():
    features_1 = correlated_features(2, 3000, 64)
    features_2 = correlated_features(3, 2500, 64, shift=0.1, scale=1.3)
    reference = sqrtm_fid(features_1, features_2)
    assert reference > 1.0
    assert fidelity.fid(features_1, features_2) == pytest.approx(reference, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero():
    features = correlated_features(4, 500, 16)
    assert abs(fidelity.fid(features, features)) < 1e-9


def test_blocked_statistics_equal_numpy_mean_and_cov():
    features = correlated_features(5, 1001, 12)
    mean, covariance = fidelity.feature_statistics(features, block_rows=97)
    np.testing.assert_allclose(mean, features.mean(axis=0, dtype=np.float64), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(covariance, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_precision_recall_equal_brute_force(feature_sets, k, dtype):
    real, generated = feature_sets
    scores = fidelity.precision_recall(real, generated, k=k, block_size=64, dtype=dtype)
    precision, recall = brute_force_precision_recall(real, generated, k)
    assert 0.0 < precision < 1.0 and 0.0 < recall < 1.0  # the sets overlap only partly
    assert scores["precision"] == precision
    assert scores["recall"] == recall


def test_precision_recall_do_not_depend_on_the_block_size(feature_sets):
    real, generated = feature_sets[0][:80], feature_sets[1][:70]
    results = {size: fidelity.precision_recall(real, generated, k=5, block_size=size) for size in (1, 6, 33, 79, 10000)}
    counts = {(r["precision_count"], r["recall_count"]) for r in results.values()}
    assert len(counts) == 1, results
    assert all(0 < count < total for count, total in zip(counts.pop(), (len(generated), len(real))))


def block_bytes(features, block_size):
    return block_size * features.shape[1] * 4  # float32


@pytest.mark.parametrize("panel_blocks", [1, 3, 4, 100])
def test_panels_give_the_radii_and_counts_of_the_block_loops_before_them(feature_sets, panel_blocks):
    real, generated = feature_sets[0][:150], feature_sets[1][:70]
    size = 16  # real: 10 blocks, the last one short; generated: 5 blocks

    def blocks(features, resident_bytes):
        return fidelity.FeatureBlocks(features, size, torch.device("cpu"), torch.float32, resident_bytes)

    before = [blocks(features, block_bytes(features, size)) for features in (real, generated)]
    after = [blocks(features, panel_blocks * block_bytes(features, size)) for features in (real, generated)]
    radii_before = [streamed_radii(points, 5) for points in before]
    radii_after = [fidelity.neighbourhood_radii(points, 5) for points in after]
    assert all(torch.equal(old, new) for old, new in zip(radii_before, radii_after))  # bit for bit
    counts = fidelity.covered_counts(*after, *radii_after)
    assert counts == streamed_covered_counts(*before, *radii_before)
    assert 0 < counts[0] < len(generated) and 0 < counts[1] < len(real)


def test_resident_bytes_do_not_change_precision_and_recall(feature_sets):
    real, generated = feature_sets
    results = [fidelity.precision_recall(real, generated, k=5, block_size=32, resident_bytes=budget)
               for budget in (1, block_bytes(real, 32) * 3, block_bytes(real, 32) * 5, 2**30)]
    assert all(result == results[0] for result in results), results
    assert 0 < results[0]["precision_count"] < len(generated) and 0 < results[0]["recall_count"] < len(real)


def rows_read(features, block_size, resident_bytes, phase):
    """Rows ``phase`` (radii of ``features[0]``, or coverage of the two sets) reads out of the feature
    files; the norms pass, and the radii coverage needs, not included."""
    counters = [ReadCounter(array) for array in features]
    points = [fidelity.FeatureBlocks(counter, block_size, torch.device("cpu"), torch.float32, resident_bytes)
              for counter in counters]
    radii = [fidelity.neighbourhood_radii(blocks, 5) for blocks in points] if phase == "coverage" else None
    before = sum(counter.rows_read for counter in counters)
    if phase == "radii":
        fidelity.neighbourhood_radii(points[0], 5)
    else:
        fidelity.covered_counts(*points, *radii)
    return sum(counter.rows_read for counter in counters) - before


def test_radii_read_each_block_once_per_panel_before_it_not_once_per_block_pair(feature_sets):
    real = feature_sets[0][:160]  # 10 blocks of 16 rows
    one_block = block_bytes(real, 16)
    # Before panels: each row block, then every block from it on, anew: 160 + 16 * (10 + 9 + ... + 1) = 1040.
    # Panels of one block: each block, then the blocks after it: 160 + 16 * (9 + 8 + ... + 0).
    assert rows_read([real], 16, one_block, "radii") == 160 + 16 * 45
    # Panels of 4 blocks (rows 0-63, 64-127, 128-159): each panel once, then the 6 and 2 blocks after the first two.
    assert rows_read([real], 16, 4 * one_block, "radii") == 160 + 16 * (6 + 2)
    # The whole set fits: every row converted once.
    assert rows_read([real], 16, 10 * one_block, "radii") == 160


def test_coverage_holds_panels_of_one_set_and_streams_the_other_once_per_panel(feature_sets):
    real, generated = feature_sets[0][:160], feature_sets[1][:48]  # 10 and 3 blocks of 16 rows
    one_block = block_bytes(real, 16)
    # One block resident: the generated set is held block by block, the real set streams 3 times.
    assert rows_read([real, generated], 16, one_block, "coverage") == 48 + 3 * 160
    # 3 blocks: all generated rows stay resident, the real set streams once.
    assert rows_read([real, generated], 16, 3 * one_block, "coverage") == 48 + 160
    # Before panels the generated set was converted anew for each of the 10 real blocks.
    assert rows_read([real, generated], 16, one_block, "coverage") < 160 + 10 * 48


def test_coverage_holds_the_smaller_set_when_either_costs_the_same_copies(feature_sets):
    real, generated = feature_sets[0][:160], feature_sets[1][:48]
    points = [fidelity.FeatureBlocks(features, 16, torch.device("cpu"), torch.float32, 2**20)
              for features in (real, generated)]  # both sets fit: each converted once whichever is held
    pairs = [(row_start, column_start) for row_start, _, column_start, _ in fidelity.cross_block_pairs(*points)]
    # The generated blocks stay resident while each real block streams past them.
    assert pairs == [(row_start, column_start) for row_start in range(0, 160, 16) for column_start in (0, 16, 32)]


def test_precision_recall_equal_prdc(feature_sets):
    import prdc  # the reference implementation, pinned in requirements.lock

    real, generated = feature_sets
    reference = prdc.compute_prdc(real_features=real, fake_features=generated, nearest_k=5)
    scores = fidelity.precision_recall(real, generated, k=5, block_size=50)
    # prdc uses "<" where NVlabs uses "<="; continuous features have no ties, so they agree.
    assert scores["precision"] == reference["precision"]
    assert scores["recall"] == reference["recall"]


def test_neighbourhood_radius_needs_k_plus_one_points():
    with pytest.raises(ValueError, match="at least 6 points"):
        fidelity.precision_recall(correlated_features(6, 5, 4), correlated_features(7, 20, 4), k=5)


def run_fidelity(tmp_path, generated, references, kind, training=None, sample_size=None, seed=0):
    paths = {}
    for name, features in {"generated": generated, **references}.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], features)
    out = tmp_path / "metrics.json"
    args = types.SimpleNamespace(
        generated=str(paths["generated"]), reference=[f"{name}={paths[name]}" for name in references], kind=kind,
        k=5, block_size=32, device="cpu", training=training, out=str(out), sample_size=sample_size, seed=seed, fd_name=None,
        resident_bytes=2 * 32 * 24 * 4,  # panels of 2 blocks of the 24-wide test features
    )
    fidelity.run_fidelity(args)
    return read_json(out)


def test_samples_run_writes_fid_and_precision_recall_at_k(tmp_path, feature_sets):
    real, generated = feature_sets
    run = run_fidelity(tmp_path, generated, {"imagenet64_val": real, "webvision64_val": real[:100]}, "samples")
    assert run["status"] == "ok"
    assert set(run["metrics"]) == {f"{metric}_vs_{reference}" for metric in ("FID", "precision@5", "recall@5")
                                   for reference in ("imagenet64_val", "webvision64_val")}
    precision, recall = brute_force_precision_recall(real, generated, 5)
    assert run["metrics"]["precision@5_vs_imagenet64_val"] == precision
    assert run["metrics"]["recall@5_vs_imagenet64_val"] == recall
    assert run["metrics"]["FID_vs_imagenet64_val"] == pytest.approx(sqrtm_fid(generated, real), rel=1e-6)


def test_dataset_run_writes_precision_and_recall(tmp_path, feature_sets):
    real, generated = feature_sets
    run = run_fidelity(tmp_path, generated, {"imagenet_val": real}, "dataset")
    assert set(run["metrics"]) == {"precision_vs_imagenet_val", "recall_vs_imagenet_val"}
    assert all(0.0 < value < 1.0 for value in run["metrics"].values())


def test_too_few_points_give_null_metrics_with_the_reason(tmp_path, feature_sets):
    real, _ = feature_sets
    run = run_fidelity(tmp_path, real[:4], {"imagenet_val": real}, "dataset")
    assert run["metrics"] == {"precision_vs_imagenet_val": None, "recall_vs_imagenet_val": None}
    assert "at least k+1=6 images in each set: 4 generated" in run["reasons"]["precision_vs_imagenet_val"]


def test_a_model_that_did_not_train_gives_null_metrics_with_its_reason(tmp_path, feature_sets):
    real, _ = feature_sets
    status = tmp_path / "training.json"
    write_json({"status": "diverged", "reason": "training diverged: non-finite training loss (nan on rank 0)"}, status)
    run = run_fidelity(tmp_path, np.zeros((0, 24), np.float32), {"imagenet64_val": real}, "samples", str(status))
    assert run["status"] == "diverged"
    assert set(run["metrics"].values()) == {None}
    assert "non-finite training loss" in run["reasons"]["FID_vs_imagenet64_val"]


def test_sampled_takes_a_seeded_subsample_of_larger_sets_in_file_order(feature_sets):
    real, _ = feature_sets
    taken = fidelity.sampled(real, 100, 0, "imagenet_val")
    rows = [int(np.flatnonzero((real == row).all(axis=1))[0]) for row in taken]
    assert len(taken) == 100 and len(set(rows)) == 100 and rows == sorted(rows)
    assert np.array_equal(fidelity.sampled(real, 100, 0, "imagenet_val"), taken)
    assert not np.array_equal(fidelity.sampled(real, 100, 1, "imagenet_val"), taken)
    assert fidelity.sampled(real, 300, 0, "imagenet_val") is real
    assert fidelity.sampled(real, None, 0, "imagenet_val") is real


def test_dataset_run_compares_subsamples_of_the_sample_size(tmp_path, feature_sets):
    real, generated = feature_sets
    run = run_fidelity(tmp_path, generated, {"imagenet_val": real}, "dataset", sample_size=100, seed=3)
    precision, recall = brute_force_precision_recall(fidelity.sampled(real, 100, 3, "imagenet_val"),
                                                     fidelity.sampled(generated, 100, 3, "generated"), 5)
    assert run["metrics"] == {"precision_vs_imagenet_val": precision, "recall_vs_imagenet_val": recall}
    whole = run_fidelity(tmp_path, generated, {"imagenet_val": real}, "dataset")
    assert whole["metrics"] != run["metrics"]
    assert run["provenance"]["set_sizes"] == {"generated": 100, "imagenet_val": 100}
    assert whole["provenance"]["set_sizes"] == {"generated": 240, "imagenet_val": 300}
