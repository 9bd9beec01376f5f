"""Power spectra of real and generated images (paper section 6.1, Figure 6).

For ``images_per_source`` images of each dataset (1,000 in the paper; drawn as in detect.py:
the real source's train split, all of the generated dataset), each image is converted to
grey levels (PIL "L", ITU-R 601 luma) in [0, 1], centre-cropped to ``crop_size`` x ``crop_size``
at its own resolution (so no resampling filter shapes the high frequencies; an image smaller
than the crop is first enlarged, bicubic, to make its shorter side crop_size), and its power
spectrum ``|FFT2|^2 / pixels`` is averaged over rings of equal integer radius around zero
frequency (the azimuthal average), from radius 0 to crop_size // 2 (the Nyquist frequency;
corners beyond it are left out). Radius r is the spatial frequency r / crop_size cycles per pixel.

Per dataset and frequency the CSV holds the mean and standard deviation over images of
log10(power) (the spectra span many orders of magnitude, and Figure 6 is read on a log scale);
the PNG plots each dataset's mean with a band of one standard deviation. ``spectra-table`` puts
every generated dataset's spectra (and the real source's once) in one CSV and draws Figure 6.
"""

from contamination.config import settings_argument
from contamination.data import load_image
from contamination.experiments.detect import sample_items
from contamination.io import atomic_path
from contamination.reporting.tables import write_table

# The keys of config `spectra` a spectra job uses (`generated` lists the datasets of all jobs).
SPEC_KEYS = ("real_source", "images_per_source", "crop_size")
CSV_COLUMNS = ["dataset", "radius", "frequency", "mean_log10_power", "std_log10_power", "images"]
# Adds nothing to a real spectrum; keeps log10 finite where a ring has exactly zero power.
POWER_FLOOR = 1e-20


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("spectra", help="azimuthally averaged power spectra of real and generated images")
    parser.add_argument("--spec", required=True, type=settings_argument("spectra", SPEC_KEYS),
                        help="JSON: SPEC_KEYS of config `spectra` (defaults may be left out) + seed + generated "
                             "(the dataset's name)")
    parser.add_argument("--real", required=True, help="index of the real source (its 'train' split is used)")
    parser.add_argument("--generated", required=True, help="index of the generated dataset")
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-png", required=True)
    parser.set_defaults(run=run_spectra)

    parser = subparsers.add_parser("spectra-table", help="all power spectra in one CSV, and Figure 6")
    parser.add_argument("--spectra", required=True, nargs="+", help="spectra CSVs (the spectra command), one per generated dataset")
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-png", required=True)
    parser.set_defaults(run=run_spectra_table)


def run_spectra(args) -> None:
    import pandas as pd

    spec = args.spec
    tables = []
    for index, name in ((args.real, spec["real_source"]), (args.generated, spec["generated"])):
        items = sample_items(index, name, spec["images_per_source"], spec["seed"], "spectra.images_per_source")
        spectra = [radial_power_spectrum(grey_crop(uri, spec["crop_size"])) for uri in items["uri"]]
        tables.append(spectrum_statistics(name, spectra))
    table = pd.concat(tables, ignore_index=True)
    with atomic_path(args.out_csv) as temporary:
        table.to_csv(temporary, index=False, float_format="%.6g")
    plot_spectra(table, args.out_png)
    print(f"spectra of {spec['images_per_source']} images each of {spec['real_source']} and {spec['generated']} "
          f"-> {args.out_csv}, {args.out_png}")


def grey_crop(uri: str, crop_size: int):
    """The centre crop_size x crop_size grey levels (float64 in [0, 1]) of the image at ``uri``."""
    import numpy as np
    from PIL import Image

    image = load_image(uri).convert("L")
    shorter = min(image.size)
    if shorter < crop_size:
        scale = crop_size / shorter
        size = (max(crop_size, round(image.width * scale)), max(crop_size, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (image.width - crop_size) // 2, (image.height - crop_size) // 2
    image = image.crop((left, top, left + crop_size, top + crop_size))
    return np.asarray(image, dtype=np.float64) / 255.0


def radial_power_spectrum(grey):
    """Mean of ``|FFT2(grey)|^2 / pixels`` over each ring of integer radius 0 .. n // 2 around
    zero frequency (radius rounded to the nearest integer) of a square n x n image."""
    import numpy as np

    height, width = grey.shape
    if height != width:
        raise ValueError(f"radial_power_spectrum needs a square image, not {height}x{width}")
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey))) ** 2 / grey.size
    centre = height // 2
    rows, columns = np.indices(grey.shape)
    radius = np.rint(np.hypot(rows - centre, columns - centre)).astype(np.int64).ravel()
    inside = radius <= height // 2
    sums = np.bincount(radius[inside], weights=power.ravel()[inside], minlength=height // 2 + 1)
    counts = np.bincount(radius[inside], minlength=height // 2 + 1)
    return sums / counts


def spectrum_statistics(name: str, spectra):
    """One dataset's rows of the CSV: mean and std over images of log10 power per radius."""
    import numpy as np
    import pandas as pd

    logs = np.log10(np.maximum(np.stack(spectra), POWER_FLOOR))
    size = 2 * (logs.shape[1] - 1)
    radius = np.arange(logs.shape[1])
    return pd.DataFrame({
        "dataset": name,
        "radius": radius,
        "frequency": radius / size,
        "mean_log10_power": logs.mean(axis=0),
        "std_log10_power": logs.std(axis=0),
        "images": len(logs),
    }, columns=CSV_COLUMNS)


def plot_spectra(table, path) -> None:
    """Figure 6: mean log10 power per frequency of each dataset, with a +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5))
    for name, rows in table.groupby("dataset", sort=False):
        mean, std = rows["mean_log10_power"], rows["std_log10_power"]
        axes.plot(rows["frequency"], mean, label=f"{name} ({rows['images'].iloc[0]} images)")
        axes.fill_between(rows["frequency"], mean - std, mean + std, alpha=0.3)
    axes.set_xlabel("spatial frequency (cycles / pixel)")
    axes.set_ylabel("log10 power")
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        # no "Software" entry: the PNG then depends on the plotted numbers, not the matplotlib version
        figure.savefig(temporary, format="png", dpi=150, metadata={"Software": None})
    plt.close(figure)


def run_spectra_table(args) -> None:
    import pandas as pd

    # The real source is in every spectra CSV, measured on the same seeded sample: keep it once.
    table = pd.concat([pd.read_csv(path) for path in args.spectra], ignore_index=True)
    table = table.drop_duplicates(subset=["dataset", "radius"], keep="first").reset_index(drop=True)
    write_table(table, args.out_csv)
    plot_spectra(table, args.out_png)
