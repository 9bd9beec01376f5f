"""Benchmark (not a test): improved precision/recall (k=5) of 50,000 generated against 200,000
real 2048-d features, the size of NVlabs' pr50k3 protocol, within this machine's memory.

    python benchmarks/precision_recall.py                    # 200,000 x 2048 vs 50,000, blocks of 2,500
    python benchmarks/precision_recall.py --real 20000 --generated 5000 --out result.json
    python benchmarks/precision_recall.py --baseline --real 100000 --generated 25000 --out result.json

Random features (a ReLU of correlated Gaussians, like Inception pool features: non-negative,
correlated); the cost does not depend on the values. Prints, and optionally writes as JSON, the
wall and CPU time of each phase, the peak resident memory and ``distances_per_second``: the pair
distances the metric needs (real^2 + generated^2 + 2 real x generated; within a set each pair is
computed once and serves both points) divided by the metric's wall time.

The features are read through a memory map of a .npy file, as the fidelity job reads them, and
every row read out of it is counted (``ReadCounter``). ``--baseline`` also runs the block loops
as they were before panels (``streamed_radii``, ``streamed_covered_counts``: every block pair
converts its column block anew), alternately with today's, checks that both give the same radii
and counts, and records the rows each converted, counted and as ``converted_rows`` computes
them; ``--project`` adds that count at other set sizes (1.28M ImageNet training images).
"""

import argparse
import contextlib
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

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


class ReadCounter:
    """A feature matrix that counts the rows read out of it (``rows_read``)."""

    def __init__(self, features):
        self.features = features
        self.shape = features.shape
        self.rows_read = 0

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, rows):
        block = self.features[rows]
        self.rows_read += len(block)
        return block


def streamed_radii(points, k: int):
    """fidelity.neighbourhood_radii before panels (the baseline): every row block against every
    later block, each column block converted anew for each row block."""
    import torch

    from contamination.metrics.fidelity import squared_distances

    nearest = torch.full((len(points), k + 1), float("inf"), dtype=points.dtype, device=points.device)

    def merge(first, candidates):
        rows = slice(first, first + len(candidates))
        nearest[rows] = torch.cat([nearest[rows], candidates], dim=1).topk(k + 1, dim=1, largest=False).values

    for row_start, rows in points.blocks():
        row_norms = points.norms[row_start:row_start + len(rows)]
        for column_start, columns in points.blocks(first_row=row_start):
            distances = squared_distances(rows, row_norms, columns, points.norms[column_start:column_start + len(columns)])
            if column_start == row_start:
                distances.fill_diagonal_(0.0)
            merge(row_start, distances.topk(min(k + 1, len(columns)), dim=1, largest=False).values)
            if column_start != row_start:
                merge(column_start, distances.topk(min(k + 1, len(rows)), dim=0, largest=False).values.T)
    return nearest[:, k].contiguous()


def streamed_covered_counts(real, generated, real_radii, generated_radii):
    """fidelity.covered_counts before panels (the baseline): every generated block converted anew
    for each real block."""
    import torch

    from contamination.metrics.fidelity import squared_distances

    generated_covered = torch.zeros(len(generated), dtype=torch.bool, device=generated.device)
    real_covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    for row_start, rows in real.blocks():
        row_end = row_start + len(rows)
        for column_start, columns in generated.blocks():
            column_end = column_start + len(columns)
            distances = squared_distances(rows, real.norms[row_start:row_end], columns, generated.norms[column_start:column_end])
            generated_covered[column_start:column_end] |= (distances <= real_radii[row_start:row_end, None]).any(dim=0)
            real_covered[row_start:row_end] |= (distances <= generated_radii[None, column_start:column_end]).any(dim=1)
    return int(generated_covered.sum()), int(real_covered.sum())


def converted_rows(real: int, generated: int, block: int, panel_rows: int) -> dict:
    """Rows each phase converts (copies out of the feature file) before panels ("streamed") and
    with panels of ``panel_rows`` rows ("panels"); the norms pass (once per set) is not included."""
    def streamed_radii_rows(count):  # each row block, then the blocks from it on
        return count + sum(count - start for start in range(0, count, block))

    def panel_radii_rows(count):  # each panel, then the blocks after it
        return count + sum(max(0, count - start - panel_rows) for start in range(0, count, panel_rows))

    def panels(count):
        return -(-count // panel_rows)

    return {
        "streamed": {"radii_real": streamed_radii_rows(real), "radii_generated": streamed_radii_rows(generated),
                     "coverage": real + -(-real // block) * generated},
        "panels": {"radii_real": panel_radii_rows(real), "radii_generated": panel_radii_rows(generated),
                   "coverage": min(real + generated * panels(real), generated + real * panels(generated))},
    }


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=int, default=200000)
    parser.add_argument("--generated", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--block-size", type=int, default=fidelity.DEFAULT_BLOCK)
    parser.add_argument("--resident-bytes", type=int, default=fidelity.DEFAULT_RESIDENT_BYTES)
    parser.add_argument("--baseline", action="store_true", help="also the loops before panels, alternately")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each compared phase (medians reported)")
    parser.add_argument("--project", nargs="*", default=[], metavar="REAL:GENERATED",
                        help="also the rows converted at these set sizes (e.g. 1281167:50000)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", help="where the feature files are written (default: a temporary directory)")
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    timings = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="precision-recall-")))
        started = time.perf_counter()
        paths = {}
        for seed, (name, count) in enumerate([("real", args.real), ("generated", args.generated)]):
            paths[name] = workdir / f"features-{name}-{count}x{args.dim}.npy"
            if not paths[name].is_file():
                np.save(paths[name], random_features(count, args.dim, seed=seed))
        real, generated = (ReadCounter(np.load(paths[name], mmap_mode="r")) for name in ("real", "generated"))
        timings["make_features"] = time.perf_counter() - started
        result = measure_phases(real, generated, args)
    result["seconds"] = {"make_features": round(timings["make_features"], 2), **result["seconds"]}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


def measure_phases(real, generated, args) -> dict:
    """Today's phases (and with ``args.baseline`` the baseline's, alternately, the first case
    rotating with each of ``args.repeats`` runs): median seconds and rows read per phase, and the
    result."""
    import statistics

    import torch

    device, dtype = torch.device(args.device), torch.float32
    runs, cpu_runs, reads, values = {}, {}, {}, {}

    def phase(name, function, *arguments):
        begun, cpu_begun = time.perf_counter(), time.process_time()
        read_before = real.rows_read + generated.rows_read
        values[name] = function(*arguments)
        runs.setdefault(name, []).append(time.perf_counter() - begun)
        cpu_runs.setdefault(name, []).append(time.process_time() - cpu_begun)
        reads[name] = real.rows_read + generated.rows_read - read_before
        print(f"{name}: {runs[name][-1]:.1f} s ({cpu_runs[name][-1]:.1f} CPU s), {reads[name]:,} rows read, "
              f"peak memory {peak_memory_gib():.2f} GiB", flush=True)
        return values[name]

    def compared(name, baseline, ours, *arguments):
        cases = [(f"baseline_{name}", baseline), (name, ours)] if args.baseline else [(name, ours)]
        for repeat in range(args.repeats):
            shift = repeat % len(cases)
            for case_name, function in cases[shift:] + cases[:shift]:
                phase(case_name, function, *arguments)
        baseline_value = values.get(f"baseline_{name}")
        if args.baseline and not torch.equal(torch.as_tensor(baseline_value), torch.as_tensor(values[name])):
            raise AssertionError(f"{name}: {values[name]} differs from the baseline's {baseline_value}")
        return values[name]

    real_blocks = phase("norms_real", fidelity.FeatureBlocks, real, args.block_size, device, dtype, args.resident_bytes)
    generated_blocks = phase("norms_generated", fidelity.FeatureBlocks, generated, args.block_size, device, dtype,
                             args.resident_bytes)
    radii = {name: compared(f"radii_{name}", streamed_radii, fidelity.neighbourhood_radii, blocks, args.k)
             for name, blocks in (("real", real_blocks), ("generated", generated_blocks))}
    precision_count, recall_count = compared("coverage", streamed_covered_counts, fidelity.covered_counts,
                                             real_blocks, generated_blocks, radii["real"], radii["generated"])
    timings = {name: statistics.median(seconds) for name, seconds in runs.items()}
    cpu_timings = {name: statistics.median(seconds) for name, seconds in cpu_runs.items()}
    metric_seconds = sum(seconds for name, seconds in timings.items() if not name.startswith("baseline_"))
    # Self distances by symmetric blocks (about half of n^2 each), cross distances once.
    distances = (args.real**2 + args.generated**2) // 2 + args.real * args.generated
    row_bytes = args.dim * torch.finfo(dtype).bits // 8
    result = {
        "real": args.real, "generated": args.generated, "dim": args.dim, "k": args.k, "block_size": args.block_size,
        "resident_bytes": args.resident_bytes, "panel_rows": real_blocks.panel_rows,
        "device": args.device, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "features": "float32 .npy files read through memory maps (in the page cache)",
        "precision": precision_count / args.generated, "recall": recall_count / args.real,
        "seconds": {name: round(seconds, 2) for name, seconds in timings.items()},
        "cpu_seconds": {name: round(seconds, 2) for name, seconds in cpu_timings.items()},
        "repeats": args.repeats,
        "runs_cpu_seconds": {name: [round(seconds, 2) for seconds in each] for name, each in cpu_runs.items()},
        "metric_seconds": round(metric_seconds, 1),
        "distances_per_second": round(distances / metric_seconds),
        "feature_gib": round((args.real + args.generated) * row_bytes / 2**30, 2),
        "peak_memory_gib": round(peak_memory_gib(), 2),
        "rows_read": reads,
    }
    formula = converted_rows(args.real, args.generated, args.block_size, real_blocks.panel_rows)
    if args.baseline:
        counted = {"streamed": {phase_name: reads[f"baseline_{phase_name}"] for phase_name in formula["streamed"]},
                   "panels": {phase_name: reads[phase_name] for phase_name in formula["panels"]}}
        if counted != formula:
            raise AssertionError(f"rows read {counted} differ from converted_rows {formula}")
        result["same_radii_and_counts_as_baseline"] = True
    result["converted_gb"] = {
        f"{args.real}:{args.generated}": converted_gb(formula, row_bytes),
        **{sizes: converted_gb(converted_rows(*map(int, sizes.split(":")), args.block_size, real_blocks.panel_rows),
                               row_bytes) for sizes in args.project},
    }
    return result


def converted_gb(rows: dict, row_bytes: int) -> dict:
    return {algorithm: {phase_name: round(count * row_bytes / 1e9, 2) for phase_name, count in phases.items()}
            for algorithm, phases in rows.items()}


if __name__ == "__main__":
    main()
