"""Benchmark (not a test): improved precision/recall (k=5) of 50,000 generated against 200,000
real 2048-d features, the size of NVlabs' pr50k3 protocol, within this machine's memory.

    python benchmarks/precision_recall.py                    # 200,000 x 2048 vs 50,000, blocks of 10,000
    python benchmarks/precision_recall.py --real 20000 --generated 5000 --out result.json

Random features (a ReLU of correlated Gaussians, like Inception pool features: non-negative,
correlated); the cost does not depend on the values. Prints, and optionally writes as JSON, the
wall time of each phase, the peak resident memory and ``distances_per_second``: the pair
distances the metric needs (real^2 + generated^2 + 2 real x generated; within a set each pair is
computed once and serves both points) divided by the metric's wall time.
"""

import argparse
import json
import platform
import resource
import time

from contamination.metrics import fidelity


def random_features(count: int, dim: int, seed: int, block: int = 10000):
    """float32 features made block by block, so no float64 copy of the whole set exists."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mixing = (rng.standard_normal((dim, dim), dtype=np.float32) / np.sqrt(dim)).astype(np.float32)
    features = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, block):
        rows = rng.standard_normal((min(block, count - start), dim), dtype=np.float32)
        np.maximum(rows @ mixing, 0.0, out=features[start:start + len(rows)])
    return features


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=int, default=200000)
    parser.add_argument("--generated", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--block-size", type=int, default=fidelity.DEFAULT_BLOCK)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    timings = {}
    started = time.perf_counter()
    real = random_features(args.real, args.dim, seed=0)
    generated = random_features(args.generated, args.dim, seed=1)
    timings["make_features"] = time.perf_counter() - started
    device, dtype = torch.device(args.device), torch.float32

    def phase(name, function, *arguments):
        begun = time.perf_counter()
        value = function(*arguments)
        timings[name] = time.perf_counter() - begun
        print(f"{name}: {timings[name]:.1f} s, peak memory {peak_memory_gib():.2f} GiB", flush=True)
        return value

    real_blocks = phase("norms_real", fidelity.FeatureBlocks, real, args.block_size, device, dtype)
    generated_blocks = phase("norms_generated", fidelity.FeatureBlocks, generated, args.block_size, device, dtype)
    real_radii = phase("radii_real", fidelity.neighbourhood_radii, real_blocks, args.k)
    generated_radii = phase("radii_generated", fidelity.neighbourhood_radii, generated_blocks, args.k)
    precision_count, recall_count = phase(
        "coverage", fidelity.covered_counts, real_blocks, generated_blocks, real_radii, generated_radii
    )
    metric_seconds = sum(seconds for name, seconds in timings.items() if name != "make_features")
    # Self distances by symmetric blocks (about half of n^2 each), cross distances once.
    distances = (args.real**2 + args.generated**2) // 2 + args.real * args.generated
    result = {
        "real": args.real, "generated": args.generated, "dim": args.dim, "k": args.k, "block_size": args.block_size,
        "device": args.device, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "precision": precision_count / args.generated, "recall": recall_count / args.real,
        "seconds": {name: round(seconds, 2) for name, seconds in timings.items()},
        "metric_seconds": round(metric_seconds, 1),
        "distances_per_second": round(distances / metric_seconds),
        "feature_gib": round((real.nbytes + generated.nbytes) / 2**30, 2),
        "peak_memory_gib": round(peak_memory_gib(), 2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
