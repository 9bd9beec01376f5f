"""Azimuthally averaged power spectra (Figure 6)."""

import json

import numpy as np
import pandas as pd
import pytest

from contamination.metrics.spectra import CSV_COLUMNS, grey_crop, radial_power_spectrum
from helpers import cli
from imagesets import generated_index, source_index, write_images


def sinusoid(size: int, cycles_x: int, cycles_y: int):
    rows, columns = np.indices((size, size))
    return np.cos(2 * np.pi * (cycles_x * columns + cycles_y * rows) / size)


@pytest.mark.parametrize("cycles_x, cycles_y, radius", [(8, 0, 8), (0, 5, 5), (6, 8, 10)])
def test_spectrum_of_a_pure_sinusoid_peaks_at_its_frequency(cycles_x, cycles_y, radius):
    spectrum = radial_power_spectrum(sinusoid(64, cycles_x, cycles_y))
    assert spectrum.shape == (33,)  # radius 0 .. Nyquist (64 // 2)
    assert np.argmax(spectrum) == radius
    others = np.delete(spectrum, radius)
    assert others.max() < 1e-20 * spectrum[radius] + 1e-12


def test_a_constant_image_has_power_only_at_zero_frequency():
    spectrum = radial_power_spectrum(np.full((16, 16), 0.5))
    assert spectrum[0] == pytest.approx(0.25 * 256)  # |sum|^2 / pixels = (0.5 * 256)^2 / 256
    assert np.allclose(spectrum[1:], 0.0)


def test_non_square_input_is_refused():
    with pytest.raises(ValueError, match="square"):
        radial_power_spectrum(np.zeros((8, 10)))


def test_grey_crop_takes_the_centre_at_native_resolution_and_enlarges_small_images(tmp_path):
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[10:30, 20:40] = 255  # a white 20x20 square in the middle
    (path,) = write_images(tmp_path, [image], "big")
    crop = grey_crop(path, 20)
    assert crop.shape == (20, 20) and np.allclose(crop, 1.0)

    (small,) = write_images(tmp_path, [np.full((8, 12, 3), 128, dtype=np.uint8)], "small")
    crop = grey_crop(small, 16)
    assert crop.shape == (16, 16) and np.allclose(crop, 128 / 255, atol=1 / 255)


def test_cli_writes_mean_and_std_per_frequency_and_a_png_reproducibly(tmp_path):
    rng = np.random.default_rng(0)
    smooth = [np.repeat(np.repeat(rng.integers(0, 256, (8, 8, 3)), 4, 0), 4, 1) for _ in range(6)]
    noisy = [rng.integers(0, 256, (32, 32, 3)) for _ in range(6)]
    real = source_index(tmp_path / "real.parquet", write_images(tmp_path / "real", smooth, "r"), [0] * 6,
                        ["train"] * 5 + ["val"])
    generated = generated_index(tmp_path / "gen.parquet", write_images(tmp_path / "gen", noisy, "g"), [0] * 6)
    spec = {"real_source": "imagenet", "generated": "sd_imagenet", "images_per_source": 5, "crop_size": 32, "seed": 0}
    outputs = []
    for run in ("a", "b"):
        csv, png = tmp_path / f"{run}.csv", tmp_path / f"{run}.png"
        cli("spectra", "--spec", json.dumps(spec), "--real", real, "--generated", generated,
            "--out-csv", csv, "--out-png", png)
        outputs.append((csv.read_bytes(), png.read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][1].startswith(b"\x89PNG")

    table = pd.read_csv(tmp_path / "a.csv")
    assert list(table.columns) == CSV_COLUMNS
    assert set(table["dataset"]) == {"imagenet", "sd_imagenet"}
    for _, rows in table.groupby("dataset"):
        assert rows["frequency"].tolist() == pytest.approx(np.arange(17) / 32)
        assert (rows["images"] == 5).all() and (rows["std_log10_power"] >= 0).all()
    # 4x4 blocks carry little power near Nyquist; white noise has a flat spectrum.
    top = table[table["radius"] == 16].set_index("dataset")["mean_log10_power"]
    assert top["sd_imagenet"] > top["imagenet"] + 1


def test_cli_names_the_config_key_when_there_are_too_few_images(tmp_path):
    paths = write_images(tmp_path, [np.zeros((8, 8, 3))] * 2, "x")
    real = source_index(tmp_path / "real.parquet", paths, [0, 0], ["train", "train"])
    generated = generated_index(tmp_path / "gen.parquet", paths, [0, 0])
    spec = {"real_source": "imagenet", "generated": "sd_imagenet", "images_per_source": 3, "crop_size": 8, "seed": 0}
    result = cli("spectra", "--spec", json.dumps(spec), "--real", real, "--generated", generated,
                 "--out-csv", tmp_path / "s.csv", "--out-png", tmp_path / "s.png", check=False)
    assert result.returncode == 2
    assert "spectra.images_per_source: 3 images wanted" in result.stderr and "has only 2" in result.stderr
