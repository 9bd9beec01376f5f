"""The FID Inception: the weights layout of pytorch-fid's file, the TF-graph quirks, the random
stand-in saved and loaded through the production loader, and the image-set commands."""

import types

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from contamination.metrics import features
from contamination.metrics import inception
from contamination.smoke import tiny_models
from contamination.errors import ConfigError

torch.set_num_threads(1)
RESOLUTION = inception.MIN_RESOLUTION


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "tiny-inception.pth"
    tiny_models.run_tiny_inception(types.SimpleNamespace(out=str(path), seed=0, resolution=RESOLUTION))
    return path


@pytest.fixture(scope="module")
def torchvision_inception():
    """torchvision's Inception3 as pytorch-fid builds it before loading its weights file."""
    return torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False).eval()


def test_parameters_have_the_layout_of_the_pytorch_fid_weights_file(torchvision_inception):
    ours = inception.FIDInceptionV3().state_dict()
    theirs = torchvision_inception.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[name].shape == theirs[name].shape for name in ours)


def test_blocks_match_torchvision_except_the_tf_pooling(weights, torchvision_inception):
    network = inception.load(weights, RESOLUTION)
    torchvision_inception.load_state_dict(network.state_dict())
    x = torch.rand(2, 288, 17, 17)
    with torch.no_grad():
        # Reduction blocks are the same in both.
        torch.testing.assert_close(network.Mixed_6a(x), torchvision_inception.Mixed_6a(x))
        ours, theirs = network.Mixed_5d(x), torchvision_inception.Mixed_5d(x)
    # Mixed_5d: the last 64 channels are the pool branch, whose average pool ignores the padding
    # in TF: equal inside, different on the border.
    torch.testing.assert_close(ours[:, :-64], theirs[:, :-64])
    torch.testing.assert_close(ours[:, -64:, 1:-1, 1:-1], theirs[:, -64:, 1:-1, 1:-1])
    assert not torch.allclose(ours[:, -64:, 0], theirs[:, -64:, 0])


def test_random_inception_saves_loads_and_gives_sane_deterministic_features(weights):
    rebuilt = inception.build_random(0, RESOLUTION)
    loaded = inception.load(weights, RESOLUTION)
    assert all(torch.equal(tensor, loaded.state_dict()[name]) for name, tensor in rebuilt.state_dict().items())
    images = inception.calibration_images(seed=5, count=6, resolution=32)
    with torch.no_grad():
        first, second = loaded(images), loaded(images)
    assert first.shape == (6, inception.FEATURE_DIM)
    assert torch.isfinite(first).all() and torch.equal(first, second)
    # Re-estimated BatchNorm statistics: features of order one, not 1e10 or 1e-8.
    assert 0.05 < float(first.std()) < 50.0


def test_load_names_the_config_key_for_a_wrong_file(tmp_path):
    with pytest.raises(ConfigError, match="models.inception: Inception weights file .* does not exist"):
        inception.load(tmp_path / "missing.pth")
    wrong = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ConfigError, match="models.inception: .* is not the FID Inception-V3"):
        inception.load(wrong)


def test_downsample_is_box_then_bicubic_then_centre_crop():
    wide = np.zeros((40, 100, 3), dtype=np.uint8)
    wide[:, 30:70] = 255  # a white band in the middle
    out = features.downsample(Image.fromarray(wide), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[:, 2:-2].min() >= 250  # the centre crop is inside the band
    large = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)

    def halve(array):
        """PIL's box filter at scale 1/2: mean of column pairs, then of row pairs, each pass
        rounded half up to integers."""
        array = array.astype(float)
        columns = np.floor((array[:, 0::2] + array[:, 1::2]) / 2 + 0.5)
        return np.floor((columns[0::2] + columns[1::2]) / 2 + 0.5)

    # 128 -> 64 -> 32 by box halvings; the bicubic resize to 32 is then the identity.
    np.testing.assert_array_equal(features.downsample(Image.fromarray(large), 32), halve(halve(large)))


def write_images(directory, count, size):
    rng = np.random.default_rng(1)
    paths = []
    for number in range(count):
        path = directory / f"image_{number}.png"
        Image.fromarray(rng.integers(0, 256, (size, size + 7, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_features_of_a_manifest_and_of_its_image_array_are_equal(tmp_path, weights):
    paths = write_images(tmp_path, 5, 40)
    manifest = pd.DataFrame({"id": [f"i{n}" for n in range(5)], "uri": paths, "label": 0, "caption": "",
                             "origin": "imagenet"})
    manifest.to_parquet(tmp_path / "manifest.parquet")
    common = dict(index=None, split=None, size=24, workers=0, reduced_jpeg_decode=False)
    features.run_image_array(types.SimpleNamespace(manifest=str(tmp_path / "manifest.parquet"),
                                                   out=str(tmp_path / "images.npy"), **common))
    images = np.load(tmp_path / "images.npy")
    assert images.shape == (5, 24, 24, 3) and images.dtype == np.uint8
    # Batches of 5 in both runs: the same batch composition gives bit-identical features.
    extract = dict(extractor=str(weights), encoder="inception", resolution=RESOLUTION, batch_size=5, device="cpu", **common)
    features.run_features(types.SimpleNamespace(manifest=str(tmp_path / "manifest.parquet"), images=None,
                                                out=str(tmp_path / "from_manifest.npy"), **extract))
    features.run_features(types.SimpleNamespace(manifest=None, images=[str(tmp_path / "images.npy")] * 2,
                                                out=str(tmp_path / "from_arrays.npy"), **extract))
    from_manifest, from_arrays = np.load(tmp_path / "from_manifest.npy"), np.load(tmp_path / "from_arrays.npy")
    assert from_manifest.shape == (5, inception.FEATURE_DIM) and from_arrays.shape == (10, inception.FEATURE_DIM)
    np.testing.assert_array_equal(from_arrays[:5], from_manifest)
    np.testing.assert_array_equal(from_arrays[5:], from_manifest)


def test_an_image_set_is_named_exactly_once():
    with pytest.raises(ConfigError, match="exactly one of"):
        features.image_set(types.SimpleNamespace(manifest="m.parquet", index="i.parquet", images=None, split=None,
                                                 size=8))
    with pytest.raises(ConfigError, match="--index needs --split"):
        features.image_set(types.SimpleNamespace(manifest=None, index="i.parquet", images=None, split=None, size=8))


def test_reduced_jpeg_decode_moves_jpeg_pixels_a_little_and_leaves_pngs_alone(tmp_path):
    """image-array --reduced-jpeg-decode: the 16 px array of 500 x 375 JPEGs stays within a few grey
    levels of the full decode; the same images as PNGs come out bit-identical."""
    from contamination.__main__ import main

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500]
    uris = {"jpeg": [], "png": []}
    for number in range(3):
        smooth = 128 + 100 * np.sin(x / (20 + 9 * number))[..., None] * np.cos(y / 31)[..., None] * [1, 0.6, -0.8]
        image = Image.fromarray(np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8))
        for kind, extension in (("jpeg", "jpg"), ("png", "png")):
            image.save(tmp_path / f"photo_{number}.{extension}", quality=90)
            uris[kind].append(str(tmp_path / f"photo_{number}.{extension}"))
    arrays = {}
    for kind, paths in uris.items():
        manifest = tmp_path / f"{kind}.parquet"
        pd.DataFrame({"id": paths, "uri": paths, "label": 0, "caption": "", "origin": kind}).to_parquet(manifest)
        for reduced in (False, True):
            out = tmp_path / f"{kind}-{reduced}.npy"
            flag = ["--reduced-jpeg-decode"] if reduced else []
            assert main(["image-array", "--manifest", str(manifest), "--size", "16", *flag, "--out", str(out)]) == 0
            arrays[kind, reduced] = np.load(out).astype(int)
    difference = np.abs(arrays["jpeg", True] - arrays["jpeg", False])
    assert arrays["jpeg", True].shape == (3, 16, 16, 3)
    assert 0 < difference.mean() < 4
    np.testing.assert_array_equal(arrays["png", True], arrays["png", False])


@pytest.mark.parametrize("width, height, size", [(500, 375, 64), (375, 500, 16), (640, 480, 64), (100, 90, 64),
                                                 (513, 257, 32)])
def test_draft_halvings_decodes_small_and_reaches_the_size_of_the_halvings_it_replaces(tmp_path, width, height, size):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    sizes = features.halving_sizes((width, height), size)
    with Image.open(path) as image:
        drafted = features.draft_halvings(image, size)
        assert drafted.size == sizes[min(len(sizes) - 1, 3)]
        assert features.downsample(drafted, size).shape == (size, size, 3)
