"""Metrics on 10,000 x 2048 features per set (Inception-sized): improved precision/recall (k=5)
of contamination.metrics.fidelity vs. the ``prdc`` package, and FID of contamination.metrics.fidelity vs. the
usual ``scipy.linalg.sqrtm`` implementation (pytorch-fid's calculate_frechet_distance):
time, peak memory and agreement on the same features.

Features are benchmarks.precision_recall.random_features (ReLU of correlated Gaussians; the two
sets have different mixing matrices, so they differ in distribution). Every computation runs in
its own process so its peak memory is its own; processes load the features from .npy files.

The k-NN radii of precision/recall (Table 4's costliest phase) also run in-process against the
block loops before panels (benchmarks.precision_recall.streamed_radii), on the real set read
through a memory map, with the rows each copies out of it counted.

``prdc`` (0.2, which needs scikit-learn) is not a project dependency: it is installed once into a
separate virtual environment (PRDC_VENV, outside the project) that sees the project venv's numpy
and scipy through a .pth file, so the project's own environment is untouched.
"""

import json
import os
import sys
from pathlib import Path

from benchmarks.measure import PROJECT, alternate, group_main, median_of, measured, peak_of, project_environment, \
    row, run_command

GROUP = "metrics"
K = 5
PRDC_REQUIREMENTS = ["prdc==0.2", "scikit-learn==1.9.1"]
PRDC_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "contamination-benchmarks" / "prdc-venv"

OURS_PRECISION_RECALL = """
import json, sys
import numpy as np
from contamination.metrics.fidelity import precision_recall
result = precision_recall(np.load(sys.argv[1]), np.load(sys.argv[2]), k=int(sys.argv[3]))
print(json.dumps({"precision": result["precision"], "recall": result["recall"]}))
"""
PRDC_PRECISION_RECALL = """
import contextlib, io, json, sys
import numpy as np
import prdc
with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
    result = prdc.compute_prdc(real_features=np.load(sys.argv[1]), fake_features=np.load(sys.argv[2]),
                               nearest_k=int(sys.argv[3]))
print(json.dumps({"precision": float(result["precision"]), "recall": float(result["recall"])}))
"""
FID = """
import json, sys
import numpy as np
from {module} import {function} as fid
print(json.dumps({{"fid": fid(np.load(sys.argv[1]), np.load(sys.argv[2]))}}))
"""


def scipy_fid(features_1, features_2) -> float:
    """FID as pytorch-fid computes it: numpy mean and covariance, scipy.linalg.sqrtm of the
    product of the covariances, its real part."""
    import numpy as np
    from scipy import linalg

    mean_1, mean_2 = features_1.mean(axis=0), features_2.mean(axis=0)
    covariance_1, covariance_2 = np.cov(features_1, rowvar=False), np.cov(features_2, rowvar=False)
    root = linalg.sqrtm(covariance_1.dot(covariance_2))
    if not np.isfinite(root).all():
        offset = np.eye(len(covariance_1)) * 1e-6
        root = linalg.sqrtm((covariance_1 + offset).dot(covariance_2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(root.imag))}")
        root = root.real
    difference = mean_1 - mean_2
    return float(difference.dot(difference) + np.trace(covariance_1) + np.trace(covariance_2) - 2 * np.trace(root))


def feature_files(workdir, count: int, dim: int = 2048):
    import numpy as np

    from benchmarks.precision_recall import random_features

    paths = [workdir / f"features-{name}-{count}x{dim}.npy" for name in ("real", "generated")]
    for seed, path in enumerate(paths):
        if not path.is_file():
            np.save(path, random_features(count, dim, seed=seed))
    return paths


def prdc_python():
    """The interpreter of the prdc environment, made on first use (pip, from PyPI); (path, reason
    it is unavailable)."""
    import subprocess

    python = PRDC_VENV / "bin" / "python"
    if python.is_file():
        return python, ""
    try:
        subprocess.run([sys.executable, "-m", "venv", PRDC_VENV], check=True, capture_output=True)
        site_packages = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                       check=True, capture_output=True, text=True).stdout.strip()
        ours = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site_packages, "project-venv.pth").write_text(ours + "\n")
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *PRDC_REQUIREMENTS], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        return None, f"could not install {' '.join(PRDC_REQUIREMENTS)} into {PRDC_VENV}: {error} {detail[-300:]}"
    return python, ""


def precision_recall_row(paths, count: int, repeats: int):
    env = project_environment()
    ours = [sys.executable, "-c", OURS_PRECISION_RECALL, *paths, K]
    python, reason = prdc_python()
    if python is None:
        result = run_command(ours, env=env)
        return row(GROUP, f"precision/recall k={K}, {count:,} x 2048 each", unit="s", baseline_label="prdc 0.2",
                   baseline=None, ours=result["cpu_seconds"], higher_is_better=False, ours_peak_mib=result["peak_mib"],
                   target=">= 3x prdc, less memory, same result", target_met=None, note=f"prdc: {reason}")
    prdc = [python, "-c", PRDC_PRECISION_RECALL, *paths, K]
    results = alternate({"baseline": lambda: run_command(prdc, env=env),
                         "ours": lambda: run_command(ours, env=env)}, repeats)
    values = {name: json.loads(runs[-1]["stdout"]) for name, runs in results.items()}
    seconds = {name: median_of(runs, "cpu_seconds") for name, runs in results.items()}
    peaks = {name: peak_of(runs) for name, runs in results.items()}
    differences = {metric: abs(values["ours"][metric] - values["baseline"][metric]) for metric in ("precision", "recall")}
    same = all(difference * count < 1.5 for difference in differences.values())
    met = seconds["baseline"] / seconds["ours"] >= 3 and peaks["ours"] < peaks["baseline"] and same
    return row(GROUP, f"precision/recall k={K}, {count:,} x 2048 each", unit="s", baseline_label="prdc 0.2",
               baseline=seconds["baseline"], ours=seconds["ours"], higher_is_better=False,
               baseline_peak_mib=peaks["baseline"], ours_peak_mib=peaks["ours"],
               target=">= 3x prdc, less memory, same result", target_met=met,
               note=(f"ours precision {values['ours']['precision']:.4f} recall {values['ours']['recall']:.4f}; "
                     f"prdc {values['baseline']['precision']:.4f} / {values['baseline']['recall']:.4f} "
                     f"(prdc counts strictly inside the radius, NVlabs and ours include it)"),
               values=values, wall={name: median_of(runs, "seconds") for name, runs in results.items()})


def fid_row(paths, count: int, repeats: int):
    env = project_environment()
    env["PYTHONPATH"] = str(PROJECT)
    commands = {"baseline": [sys.executable, "-c", FID.format(module="benchmarks.metrics", function="scipy_fid"),
                             *paths],
                "ours": [sys.executable, "-c", FID.format(module="contamination.metrics.fidelity", function="fid"), *paths]}
    results = alternate({name: (lambda command=command: run_command(command, env=env))
                         for name, command in commands.items()}, repeats)
    values = {name: json.loads(runs[-1]["stdout"])["fid"] for name, runs in results.items()}
    seconds = {name: median_of(runs, "cpu_seconds") for name, runs in results.items()}
    relative = abs(values["ours"] - values["baseline"]) / abs(values["baseline"])
    return row(GROUP, f"FID, {count:,} x 2048 each", unit="s", baseline_label="scipy.linalg.sqrtm (pytorch-fid)",
               baseline=seconds["baseline"], ours=seconds["ours"], higher_is_better=False,
               baseline_peak_mib=peak_of(results["baseline"]), ours_peak_mib=peak_of(results["ours"]),
               note=f"FID ours {values['ours']:.6f}, sqrtm {values['baseline']:.6f}: relative difference {relative:.1e}",
               values=values, wall={name: median_of(runs, "seconds") for name, runs in results.items()})


def radius_row(path, count: int, repeats: int):
    import numpy as np
    import torch

    from benchmarks.precision_recall import ReadCounter, streamed_radii
    from contamination.metrics import fidelity

    features = ReadCounter(np.load(path, mmap_mode="r"))
    points = fidelity.FeatureBlocks(features, fidelity.DEFAULT_BLOCK, torch.device("cpu"), torch.float32)
    radii, rows_read = {}, {}

    def case(name, function):
        def run():
            read_before = features.rows_read
            with measured() as measurement:
                radii[name] = function(points, K)
            rows_read[name] = features.rows_read - read_before
            return measurement.as_dict()
        return run

    results = alternate({"baseline": case("baseline", streamed_radii),
                         "ours": case("ours", fidelity.neighbourhood_radii)}, repeats)
    same = torch.equal(radii["baseline"], radii["ours"])
    return row(GROUP, f"precision/recall k-NN radii, {count:,} x 2048, memory map", unit="s",
               baseline_label="column blocks copied per block pair",
               baseline=median_of(results["baseline"], "cpu_seconds"),
               ours=median_of(results["ours"], "cpu_seconds"), higher_is_better=False,
               baseline_peak_mib=peak_of(results["baseline"]), ours_peak_mib=peak_of(results["ours"]),
               note=(f"rows copied {rows_read['baseline']:,} before, {rows_read['ours']:,} with panels "
                     f"(blocks of {fidelity.DEFAULT_BLOCK:,}, default resident_bytes); "
                     f"radii {'bit-identical' if same else 'DIFFERENT'}"),
               rows_read=rows_read, same_radii=same,
               wall={name: median_of(runs, "seconds") for name, runs in results.items()})


def run_group(workdir, quick: bool, long: bool):
    count = 2000 if quick else 10000
    paths = feature_files(workdir, count)
    return [precision_recall_row(paths, count, repeats=1), fid_row(paths, count, repeats=1),
            radius_row(paths[0], count, repeats=1)]


if __name__ == "__main__":
    group_main(run_group, __doc__.splitlines()[0])
