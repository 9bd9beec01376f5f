"""Real-vs-generated detectors on ResNet-50 features (section 6.1)."""

import hashlib
import json

import numpy as np
import pytest
import torch

from contamination.experiments import detect
from contamination.mixtures.manifests import read_items
from contamination.smoke import tiny_models
from contamination.errors import ConfigError, DataError
from helpers import cli
from imagesets import generated_index, source_index, write_images

SPEC = {"iterations": 1000, "batch_size": 64, "lr": 1e-3, "mlp_hidden": 64, "standardize_features": True, "seed": 0}


def split_sets(real, generated, test_per_source):
    features = np.concatenate([real, generated]).astype(np.float32)
    targets = np.repeat([detect.REAL, detect.GENERATED], [len(real), len(generated)])
    is_test = np.concatenate([np.arange(len(real)) < test_per_source, np.arange(len(generated)) < test_per_source])
    return features, targets, is_test


@pytest.mark.parametrize("standardize", [True, False])
def test_detectors_find_a_known_signal(standardize):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 32)) + 2.0
    generated = rng.normal(size=(300, 32)) + 2.0
    generated[:, :4] += 3.0  # a shift along four feature directions: Bayes accuracy Phi(3) = 0.9987
    spec = dict(SPEC, standardize_features=standardize)
    results = detect.train_and_score(*split_sets(real, generated, 100), spec, torch.device("cpu"))
    assert results["linear"]["test"] > 0.95 and results["mlp"]["test"] > 0.95


def test_identical_sets_stay_at_chance():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 32))
    results = detect.train_and_score(*split_sets(real, real.copy(), 100), SPEC, torch.device("cpu"))
    # every test feature appears once as real and once as generated: any detector is right on half
    assert results["linear"]["test"] == 0.5 and results["mlp"]["test"] == 0.5


def test_sets_from_one_distribution_stay_near_chance_even_when_the_mlp_fits_its_training_set():
    rng = np.random.default_rng(2)
    real, generated = rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    results = detect.train_and_score(*split_sets(real, generated, 100), dict(SPEC, iterations=1500),
                                     torch.device("cpu"))
    assert results["mlp"]["train"] > 0.8  # it memorises noise ...
    for kind in ("linear", "mlp"):
        assert abs(results[kind]["test"] - 0.5) < 0.12  # ... which does not carry over


def test_training_is_deterministic():
    rng = np.random.default_rng(3)
    features, targets, is_test = split_sets(rng.normal(size=(50, 8)), rng.normal(size=(50, 8)) + 0.3, 10)
    x, y = torch.as_tensor(features[~is_test]), torch.as_tensor(targets[~is_test])
    first, second = (detect.train_detector("mlp", x, y, SPEC, torch.device("cpu")) for _ in range(2))
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_detectors_have_the_paper_architectures():
    linear = detect.build_detector("linear", 2048, 1024)
    mlp = detect.build_detector("mlp", 2048, 1024)
    assert isinstance(linear, torch.nn.Linear) and (linear.in_features, linear.out_features) == (2048, 2)
    assert [type(layer) for layer in mlp] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert (mlp[0].out_features, mlp[2].out_features) == (1024, 2)


IMAGES = 64


@pytest.fixture
def image_sets(tmp_path):
    """64 noise images of each kind; the 'generated' ones carry a known signal: a saturated red channel."""
    rng = np.random.default_rng(0)
    real_images = rng.integers(60, 196, size=(IMAGES + 4, 32, 32, 3))
    generated_images = rng.integers(60, 196, size=(IMAGES, 32, 32, 3))
    generated_images[..., 0] = 255
    real = source_index(tmp_path / "imagenet.parquet", write_images(tmp_path / "real", real_images, "r"),
                        [0] * (IMAGES + 4), ["train"] * IMAGES + ["val"] * 4)
    generated = generated_index(tmp_path / "gen.parquet", write_images(tmp_path / "gen", generated_images, "g"),
                                [0] * IMAGES)
    return real, generated


def test_sampling_draws_without_replacement_and_holds_out_test_images(image_sets):
    real, generated = image_sets
    spec = {"images_per_source": 20, "test_images_per_source": 5, "real_source": "imagenet", "generated": "gen",
            "seed": 0}
    items = detect.sample_detection_set(real, generated, spec)
    assert len(items) == 40 and items["uri"].is_unique
    assert items[items["target"] == detect.REAL]["id"].str.startswith("r").all()
    assert items[items["target"] == detect.GENERATED]["id"].str.startswith("g").all()
    counts = items.groupby(["target", "split"]).size().to_dict()
    assert counts == {(0, "test"): 5, (0, "train"): 15, (1, "test"): 5, (1, "train"): 15}
    assert items.equals(detect.sample_detection_set(real, generated, spec))
    with pytest.raises(ConfigError, match=r"detection.images_per_source: 65 images wanted.*only 64"):
        detect.sample_detection_set(real, generated, dict(spec, images_per_source=65))
    with pytest.raises(ConfigError, match="detection.test_images_per_source"):
        detect.sample_detection_set(real, generated, dict(spec, test_images_per_source=20))


def test_a_sources_sample_is_the_draw_seeded_by_the_seed_and_the_sources_name(image_sets):
    """The same rows as before the draw shared mixtures.named_rng: the seed with the first 8 bytes
    (little-endian) of the SHA-256 of the name seed numpy's generator."""
    real, _ = image_sets
    rows = read_items(real, "imagenet").to_pandas()
    name_entropy = int.from_bytes(hashlib.sha256(b"imagenet").digest()[:8], "little")
    drawn = np.random.default_rng([3, name_entropy]).choice(len(rows), size=10, replace=False)
    assert detect.sample_items(real, "imagenet", 10, 3, "key")["id"].tolist() == rows["id"].iloc[drawn].tolist()


def test_unreadable_weights_name_the_config_key(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(DataError, match="models.resnet50_detector"):
        detect.load_feature_extractor(bad)
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(DataError, match="not a torchvision ResNet-50"):
        detect.load_feature_extractor(bad)


def test_cli_detects_a_known_image_signal_through_resnet50_features(tmp_path, image_sets):
    real, generated = image_sets
    weights = tmp_path / "resnet50.pth"
    tiny_models.save_random_resnet50(weights, seed=0)
    spec = {"real_source": "imagenet", "generated": "gen", "images_per_source": IMAGES, "test_images_per_source": 16,
            "resize_size": 32, "crop_size": 32, "feature_batch_size": 32, "iterations": 200, "batch_size": 32,
            "lr": 1e-3, "mlp_hidden": 64, "standardize_features": True, "device": "cpu", "num_workers": 0, "seed": 0}
    linear, mlp = tmp_path / "linear.json", tmp_path / "mlp.json"
    cli("detect", "--spec", json.dumps(spec), "--real", real, "--generated", generated, "--weights", weights,
        "--out-linear", linear, "--out-mlp", mlp)
    for path in (linear, mlp):
        result = json.loads(path.read_text())
        assert result["status"] == "ok" and result["reasons"] == {}
        # even random ResNet-50 weights see the red channel (chance: 0.5)
        assert result["metrics"]["detection_accuracy"] >= 0.85
        assert 0.0 <= result["metrics"]["detection_train_accuracy"] <= 1.0


def test_the_random_stand_in_weights_are_reproducible_and_load_like_real_ones(tmp_path):
    tiny_models.save_random_resnet50(tmp_path / "a.pth", seed=0)
    tiny_models.save_random_resnet50(tmp_path / "b.pth", seed=0)
    assert (tmp_path / "a.pth").read_bytes() == (tmp_path / "b.pth").read_bytes()
    model = detect.load_feature_extractor(tmp_path / "a.pth")
    assert not model.training
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2048)
