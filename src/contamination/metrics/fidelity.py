"""Fidelity metrics of image sets from their Inception features: FID and improved precision/recall.

FID (Heusel et al., 2017): ``|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))``. The
trace of the matrix square root is taken from the eigenvalues of ``S_1^(1/2) S_2 S_1^(1/2)``
(symmetric, positive semi-definite, the same eigenvalues as ``S_1 S_2``): no
``scipy.linalg.sqrtm`` (whose ``disp`` argument pytorch-fid passes is gone in SciPy 1.18), no
complex round-off to discard, and agreement with sqrtm to 9+ digits. Means and covariances are
accumulated in float64 over row blocks, so a feature file is never copied whole.

Improved precision and recall (Kynkänniemi et al., 2019; NVlabs stylegan2-ada-pytorch
metrics/precision_recall.py, which the paper's A.4 names): each point of a set gets the radius
of its k-th nearest neighbour in its own set (the point itself is its 0th neighbour, so the
(k+1)-th smallest distance); a point is covered by a set if it lies within the radius (<=) of at
least one of the set's points. precision = share of generated points covered by the real set,
recall = share of real points covered by the generated set.

Distances are computed in row x column blocks of ``block_size`` (squared distances via
``|x|^2 + |y|^2 - 2 x.y``, in float32 by default, float64 on request): every point keeps its k+1
smallest squared distances while the blocks pass by (within a set each pair of blocks is
computed once and serves both), so memory is bounded however large the sets are (1.28M
ImageNet training images against 50k, Table 4). Converting a block (a copy out of the
memory-mapped feature file, to the device) is not free either: a panel of as many consecutive
row blocks as fit in ``resident_bytes`` stays resident while the other blocks stream past it once
per panel, so a set that fits is converted once per pass, and 1.28M x 2048 float32 features are
copied about 3 times for the radii (2 GiB panels: 31 GB) instead of once per block pair (2.7 TB). Same
numbers for any block size and any ``resident_bytes`` (the same block pairs are computed, and the
k+1 smallest distances do not depend on the order they arrive in). Runs on the GPU when there is
one.

Command: ``fidelity`` writes a run's metrics.json (records.write_metrics contract). With
``--sample-size`` each set larger than it is cut to a seeded random subsample first (Table 4:
k-NN radii, and so precision and recall, depend on how many points a set has).
"""

import json

from contamination import records
from contamination.errors import ConfigError
from contamination.io import read_json
from contamination.metrics.features import feature_device
from contamination.mixtures.manifests import named_rng

DINOV2_FD = "FD_DINOv2"  # the Fréchet distance on DINOv2 features (Stein et al., 2023)
DEFAULT_BLOCK = 2500  # rows per distance block: 25 MB of float32 distances, well cached
DEFAULT_RESIDENT_BYTES = 2 * 2**30  # converted feature blocks held at once: a panel of rows
STATISTICS_BLOCK = 8192


# ---- FID ------------------------------------------------------------------------------------


def feature_statistics(features, block_rows: int = STATISTICS_BLOCK):
    """(mean, covariance) of the rows of ``features`` in float64 (covariance with n - 1, as
    numpy.cov), from two passes over row blocks."""
    import numpy as np

    count, dim = features.shape
    if count < 2:
        raise ValueError(f"a covariance needs at least 2 feature rows, got {count}")
    total = np.zeros(dim, dtype=np.float64)
    for start in range(0, count, block_rows):
        total += np.asarray(features[start:start + block_rows], dtype=np.float64).sum(axis=0)
    mean = total / count
    scatter = np.zeros((dim, dim), dtype=np.float64)
    for start in range(0, count, block_rows):
        centred = np.asarray(features[start:start + block_rows], dtype=np.float64) - mean
        scatter += centred.T @ centred
    return mean, scatter / (count - 1)


def frechet_distance(mean_1, covariance_1, mean_2, covariance_2) -> float:
    """The Fréchet distance of two Gaussians (FID when they are fitted to Inception features)."""
    import numpy as np

    eigenvalues, eigenvectors = np.linalg.eigh(covariance_1)
    root_1 = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    middle = root_1 @ covariance_2 @ root_1
    middle_eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(middle_eigenvalues, 0.0, None)).sum()
    difference = np.asarray(mean_1, dtype=np.float64) - mean_2
    return float(difference @ difference + np.trace(covariance_1) + np.trace(covariance_2) - 2.0 * trace_sqrt)


def fid(features_1, features_2) -> float:
    return frechet_distance(*feature_statistics(features_1), *feature_statistics(features_2))


# ---- improved precision and recall ----------------------------------------------------------


class FeatureBlocks:
    """Row blocks of a feature matrix (numpy array or memory map) as tensors on ``device``,
    with the squared norms of all rows; blocks are held in panels of at most ``resident_bytes``
    (at least one block)."""

    def __init__(self, features, block_size: int, device, dtype, resident_bytes: int = DEFAULT_RESIDENT_BYTES):
        import torch

        self.features = features
        self.block_size = block_size
        self.device = device
        self.dtype = dtype
        block_bytes = block_size * features.shape[1] * torch.finfo(dtype).bits // 8
        self.panel_rows = block_size * max(1, resident_bytes // max(1, block_bytes))
        self.norms = torch.cat([(block * block).sum(dim=1) for _, block in self.blocks()]) if len(self) else None

    def __len__(self) -> int:
        return len(self.features)

    def blocks(self, first_row: int = 0):
        """(first row, block tensor) pairs covering every row from ``first_row`` (a block
        start) on, in order, each converted as it comes."""
        for start in range(first_row, len(self.features), self.block_size):
            yield start, self.block(start)

    def block(self, start: int):
        import numpy as np
        import torch

        numpy_dtype = {torch.float32: np.float32, torch.float64: np.float64}[self.dtype]
        # A copy: memory-mapped feature files are read-only, which torch does not accept.
        block = np.array(self.features[start:start + self.block_size], dtype=numpy_dtype, order="C", copy=True)
        return torch.from_numpy(block).to(self.device)

    def panels(self):
        """Lists of consecutive (first row, block tensor) pairs of at most ``panel_rows`` rows,
        covering every row in order."""
        for panel_start in range(0, len(self), self.panel_rows):
            panel_end = min(panel_start + self.panel_rows, len(self))
            panel = [(start, self.block(start)) for start in range(panel_start, panel_end, self.block_size)]
            yield panel
            # The caller's loop variable still holds this list while the next panel is loaded.
            panel.clear()

    def panel_count(self) -> int:
        return -(-len(self) // self.panel_rows)


def squared_distances(rows, row_norms, columns, column_norms):
    # In place on the product: one block-sized buffer instead of three temporaries.
    distances = rows @ columns.T
    return distances.mul_(-2.0).add_(row_norms[:, None]).add_(column_norms[None, :]).clamp_min_(0.0)


def neighbourhood_radii(points: FeatureBlocks, k: int):
    """Squared distance of every point to its k-th nearest neighbour in the same set (the point
    itself counting as the 0th), as a tensor on the points' device.

    Distances are symmetric, so each pair of blocks is computed once (the upper triangle) and
    updates the nearest neighbours of both its row and its column points. The pairs within a
    panel come from the panel; the blocks after it are converted once per panel.
    """
    import torch

    if len(points) < k + 1:
        raise ValueError(f"k={k} neighbours need at least {k + 1} points, got {len(points)}")
    nearest = torch.full((len(points), k + 1), float("inf"), dtype=points.dtype, device=points.device)

    def merge(first, candidates):
        """Keep the k+1 smallest of the points' current nearest and ``candidates`` (rows)."""
        rows = slice(first, first + len(candidates))
        nearest[rows] = torch.cat([nearest[rows], candidates], dim=1).topk(k + 1, dim=1, largest=False).values

    def pair(row_start, rows, column_start, columns):
        distances = squared_distances(rows, points.norms[row_start:row_start + len(rows)],
                                      columns, points.norms[column_start:column_start + len(columns)])
        if column_start == row_start:
            # The point itself is at distance exactly 0 (the expansion leaves round-off there).
            distances.fill_diagonal_(0.0)
        merge(row_start, distances.topk(min(k + 1, len(columns)), dim=1, largest=False).values)
        if column_start != row_start:
            merge(column_start, distances.topk(min(k + 1, len(rows)), dim=0, largest=False).values.T)

    for panel in points.panels():
        for index, (row_start, rows) in enumerate(panel):
            for column_start, columns in panel[index:]:
                pair(row_start, rows, column_start, columns)
        panel_end = panel[-1][0] + len(panel[-1][1])
        for column_start, columns in points.blocks(first_row=panel_end):
            for row_start, rows in panel:
                pair(row_start, rows, column_start, columns)
    return nearest[:, k].contiguous()


def covered_counts(real: FeatureBlocks, generated: FeatureBlocks, real_radii, generated_radii):
    """(generated points inside some real point's radius, real points inside some generated
    point's radius): one pass over the real x generated distances answers both."""
    import torch

    generated_covered = torch.zeros(len(generated), dtype=torch.bool, device=generated.device)
    real_covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    for row_start, rows, column_start, columns in cross_block_pairs(real, generated):
        row_end, column_end = row_start + len(rows), column_start + len(columns)
        distances = squared_distances(rows, real.norms[row_start:row_end], columns, generated.norms[column_start:column_end])
        generated_covered[column_start:column_end] |= (distances <= real_radii[row_start:row_end, None]).any(dim=0)
        real_covered[row_start:row_end] |= (distances <= generated_radii[None, column_start:column_end]).any(dim=1)
    return int(generated_covered.sum()), int(real_covered.sum())


def cross_block_pairs(rows: FeatureBlocks, columns: FeatureBlocks):
    """(row start, row block, column start, column block) for every pair of a row block and a
    column block, once: panels of one set stay resident while the other set's blocks stream past
    each panel, the set held chosen for the fewer rows converted, then for the fewer rows held."""
    def cost(held, streamed):
        return len(held) + len(streamed) * held.panel_count(), len(held)

    rows_held = cost(rows, columns) <= cost(columns, rows)
    held, streamed = (rows, columns) if rows_held else (columns, rows)
    for panel in held.panels():
        for streamed_start, streamed_block in streamed.blocks():
            for held_start, held_block in panel:
                if rows_held:
                    yield held_start, held_block, streamed_start, streamed_block
                else:
                    yield streamed_start, streamed_block, held_start, held_block


def precision_recall(real, generated, k: int = 5, block_size: int = DEFAULT_BLOCK, device="cpu", dtype=None,
                     resident_bytes: int = DEFAULT_RESIDENT_BYTES):
    """{"precision", "recall", "precision_count", "recall_count"} of ``generated`` against
    ``real`` (feature matrices, rows = images)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    real_blocks = FeatureBlocks(real, block_size, torch.device(device), dtype, resident_bytes)
    generated_blocks = FeatureBlocks(generated, block_size, torch.device(device), dtype, resident_bytes)
    precision_count, recall_count = covered_counts(
        real_blocks, generated_blocks, neighbourhood_radii(real_blocks, k), neighbourhood_radii(generated_blocks, k)
    )
    return {
        "precision": precision_count / len(generated),
        "recall": recall_count / len(real),
        "precision_count": precision_count,
        "recall_count": recall_count,
    }


# ---- a run's metrics ------------------------------------------------------------------------


def metric_names(kind: str, reference: str, k: int, fd_name=None) -> dict:
    """The paper's column names: Table 3 (IDDPM samples) "FID", "Precision@5", "Recall@5";
    Table 4 (datasets) "Precision", "Recall", and with ``fd_name`` (e.g. FD_DINOv2, on DINOv2
    features) the Fréchet distance under that name."""
    if kind == "samples":
        return {"fid": f"FID_vs_{reference}", "precision": f"precision@{k}_vs_{reference}",
                "recall": f"recall@{k}_vs_{reference}"}
    names = {"fid": f"{fd_name}_vs_{reference}"} if fd_name else {}
    return {**names, "precision": f"precision_vs_{reference}", "recall": f"recall_vs_{reference}"}


def evaluate(generated, references: dict, kind: str, k: int, block_size: int, device, dtype=None, fd_name=None,
             resident_bytes: int = DEFAULT_RESIDENT_BYTES):
    """(metrics, reasons) of ``generated`` features against each named reference feature set."""
    metrics, reasons = {}, {}
    for reference, real in references.items():
        names = metric_names(kind, reference, k, fd_name)
        if len(generated) < k + 1 or len(real) < k + 1:
            for name in names.values():
                metrics[name] = None
                reasons[name] = (f"needs at least k+1={k + 1} images in each set: {len(generated)} generated, "
                                 f"{len(real)} in {reference}")
            continue
        if "fid" in names:
            metrics[names["fid"]] = fid(generated, real)
        scores = precision_recall(real, generated, k, block_size, device, dtype, resident_bytes)
        metrics[names["precision"]] = scores["precision"]
        metrics[names["recall"]] = scores["recall"]
    return metrics, reasons


def table_metrics(config: dict) -> list:
    """What the Table 4 runs' metrics.json hold (experiments.EXPERIMENTS): precision and recall
    against each reference set of config ``fidelity.references``, and for runs on DINOv2
    features (model dinov2_features) also FD_DINOv2."""
    return reference_metric_names("dataset", config["fidelity"]["references"], config["fidelity"]["k"], DINOV2_FD)


def reference_metric_names(kind: str, references: list, k: int, fd_name=None) -> list:
    """metric_names for every reference set (config ``fidelity.references`` or ``iddpm.references``)."""
    return [name for reference in references for name in metric_names(kind, reference["name"], k, fd_name).values()]


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "fidelity", help="FID and improved precision/recall of a feature set against reference sets (metrics.json)"
    )
    parser.add_argument("--generated", required=True, help="features (.npy) of the set under test")
    parser.add_argument("--reference", required=True, action="append", metavar="NAME=FEATURES",
                        help="a reference set's name (used in metric names) and features (.npy); repeatable")
    parser.add_argument("--kind", required=True, choices=["samples", "dataset"],
                        help="samples: FID, precision@k, recall@k (Table 3); dataset: precision, recall (Table 4)")
    parser.add_argument("--k", type=int, default=5, help="neighbourhood size")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK, help="rows and columns per distance block")
    parser.add_argument("--resident-bytes", type=int, default=DEFAULT_RESIDENT_BYTES,
                        help="converted feature blocks held at once (a panel of row blocks; at least one block)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--sample-size", type=int, help="compare a seeded random subsample of this many "
                                                          "items of each larger set (default: whole sets)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsamples")
    parser.add_argument("--fd-name", help="dataset kind: also the Fréchet distance, named <FD_NAME>_vs_<reference> "
                                          f"({DINOV2_FD} on DINOv2 features)")
    parser.add_argument("--training", help="training.json of the model that made the samples; "
                                           "a run that did not finish gives null metrics with its reason")
    parser.add_argument("--out", required=True, help="metrics.json")
    parser.set_defaults(run=run_fidelity)


def parse_references(pairs) -> dict:
    references = {}
    for pair in pairs:
        name, separator, path = pair.partition("=")
        if not separator or not name or not path:
            raise ConfigError(f"--reference '{pair}': expected NAME=FEATURES.npy")
        references[name] = path
    return references


def sampled(features, size, seed: int, name: str):
    """``size`` rows of ``features`` (all of them if it has no more, or size is None), drawn by a
    generator seeded by (seed, name), in their order in the file."""
    import numpy as np

    if size is None or len(features) <= size:
        return features
    key = named_rng(seed, f"{name}:sample").permutation(len(features))
    return np.asarray(features[np.flatnonzero(key < size)])


def run_fidelity(args) -> None:
    import numpy as np
    import torch

    device = feature_device(args.device)
    references = parse_references(args.reference)
    spec = {"kind": args.kind, "k": args.k, "block_size": args.block_size, "generated": args.generated,
            "references": references, "sample_size": args.sample_size, "seed": args.seed,
            **({"fd_name": args.fd_name} if args.fd_name else {})}
    status, metrics, reasons, set_sizes = "ok", {}, {}, {}
    model_status = read_json(args.training) if args.training else {"status": "ok"}
    if model_status["status"] != "ok":
        names = [name for reference in references
                 for name in metric_names(args.kind, reference, args.k, args.fd_name).values()]
        metrics, reasons = records.unavailable(names, f"the model did not train: {model_status.get('reason', '')}")
        status = model_status["status"]
    else:
        generated = sampled(np.load(args.generated, mmap_mode="r"), args.sample_size, args.seed, "generated")
        loaded = {name: sampled(np.load(path, mmap_mode="r"), args.sample_size, args.seed, name)
                  for name, path in references.items()}
        set_sizes = {"generated": len(generated), **{name: len(real) for name, real in loaded.items()}}
        metrics, reasons = evaluate(generated, loaded, args.kind, args.k, args.block_size, device, torch.float32,
                                    args.fd_name, args.resident_bytes)
    record = dict(records.provenance(spec, args.seed, world_size=1, device=device.type), set_sizes=set_sizes)
    records.write_metrics(args.out, metrics, reasons, status, record)
    print(json.dumps({"status": status, "metrics": metrics}))
