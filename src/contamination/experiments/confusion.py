"""Figure 3: ImageNet-val confusion matrices of classifiers (the paper: ResNet-50 trained on
ImageNet and on SD-ImageNet), classes regrouped by superclass, counts in log scale, the
superclass blocks on the diagonal outlined.

The paper groups classes by the ``big_12`` superclasses of the robustness library (Engstrom et
al., 2019) and subsamples them. That grouping comes from WordNet's is-a relation, which is not
shipped here: config `classification.figure3.wordnet_is_a` names ImageNet's ``wordnet.is_a.txt``
(lines "parent_wnid child_wnid"), from which the grouping is derived as the robustness library
derives it. Alternatively `classification.figure3.superclasses` names a CSV with columns
``wnid,superclass`` (any grouping; superclasses drawn in the order they first appear). With
neither (the smoke run) classes are grouped into contiguous blocks of class indices, and the
figure's title says so.
"""

from contamination.errors import ConfigError, DataError
from contamination.io import atomic_path, read_parquet

GROUPING_NOTE = "classes grouped by index blocks (no WordNet is-a file or superclass map configured)"

# The robustness library's `big_12` superclasses (robustness/tools/imagenet_helpers.py), in its order.
BIG_12 = {
    "n02084071": "dog",
    "n04341686": "structure",
    "n01503061": "bird",
    "n03051540": "clothing",
    "n04576211": "wheeled vehicle",
    "n01661091": "reptile",
    "n02075296": "carnivore",
    "n02159955": "insect",
    "n03800933": "musical instrument",
    "n07555863": "food",
    "n03405725": "furniture",
    "n02469914": "primate",
}


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("plot-confusion", help="Figure 3: confusion matrices grouped by superclass (PNG)")
    parser.add_argument("--matrices", nargs="+", required=True, help="confusion .npy files, one panel each")
    parser.add_argument("--titles", nargs="+", required=True, help="panel titles, one per matrix")
    parser.add_argument("--classes", required=True, help="ImageNet class table (label, wnid)")
    grouping = parser.add_mutually_exclusive_group()
    grouping.add_argument("--wordnet-is-a", help="WordNet is-a file (parent child per line): big_12 superclasses")
    grouping.add_argument("--superclasses", help="CSV wnid,superclass; with neither: index blocks")
    parser.add_argument("--unbalanced", action="store_true",
                        help="with --wordnet-is-a: keep every class of a superclass (default: as many as the smallest has)")
    parser.add_argument("--blocks", type=int, default=12, help="number of index blocks without a superclass map")
    parser.add_argument("--out", required=True, help="PNG")
    parser.set_defaults(run=run_plot_confusion)


def run_plot_confusion(args) -> None:
    if len(args.matrices) != len(args.titles):
        raise ConfigError(f"--titles: {len(args.titles)} titles for {len(args.matrices)} matrices")
    matrices = [load_matrix(path) for path in args.matrices]
    classes = read_parquet(args.classes)
    wnids = classes.sort_values("label")["wnid"].tolist()
    for path, matrix in zip(args.matrices, matrices):
        if matrix.shape != (len(wnids), len(wnids)):
            raise DataError(f"{path}: a {matrix.shape} matrix for {len(wnids)} classes ({args.classes})")
    if args.unbalanced and not args.wordnet_is_a:
        raise ConfigError("--unbalanced: only with --wordnet-is-a")
    if args.wordnet_is_a:
        groups = big12_groups(wnids, read_is_a(args.wordnet_is_a), balanced=not args.unbalanced)
        note = f"classes grouped by big_12 superclasses ({'all' if args.unbalanced else 'balanced'}, {args.wordnet_is_a})"
    elif args.superclasses:
        groups = superclass_groups(wnids, read_superclasses(args.superclasses))
        note = f"classes grouped by superclass ({args.superclasses})"
    else:
        groups = index_block_groups(len(wnids), args.blocks)
        note = GROUPING_NOTE
    plot(matrices, args.titles, groups, note, args.out)
    print(f"{len(matrices)} confusion matrices, {len(groups)} groups -> {args.out}")


def load_matrix(path):
    import numpy as np

    matrix = np.load(path)
    if matrix.size == 0:
        raise DataError(f"{path} is empty: its training run diverged, so there is no confusion matrix")
    return matrix


def read_superclasses(path) -> dict:
    """{superclass: [wnid, ...]} in file order, from a CSV with columns wnid,superclass."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read superclass map {path}: {error}") from error
    if not {"wnid", "superclass"} <= set(table.columns):
        raise DataError(f"superclass map {path} needs the columns wnid,superclass (has {', '.join(table.columns)})")
    groups = {}
    for wnid, superclass in zip(table["wnid"], table["superclass"]):
        groups.setdefault(superclass, []).append(wnid)
    return groups


def read_is_a(path) -> dict:
    """{child wnid: parent wnid} from a WordNet is-a file. A synset with several parents keeps the
    one on its last line, as the robustness library's tree does (the big_12 groups are disjoint
    only under that rule: a dog is also a carnivore through its other parent)."""
    parents = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as error:
        raise DataError(f"cannot read WordNet is-a file {path}: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected 'parent_wnid child_wnid', got {line!r}")
        parent, child = fields
        parents[child] = parent
    return parents


def big12_groups(wnids: list, parents: dict, balanced: bool = True) -> list:
    """[(superclass, [class index, ...])] for the big_12 superclasses: a class belongs to the
    superclass on its chain of parents. Balanced (the robustness library's default, the paper's
    "subsampled"): every superclass keeps its lowest class indices, as many as the smallest has."""
    members = {wnid: [] for wnid in BIG_12}
    for label, wnid in enumerate(wnids):
        found, node, seen = [], wnid, {wnid}
        while node in parents:
            node = parents[node]
            if node in seen:
                raise DataError(f"WordNet is-a file: a cycle through {node}")
            seen.add(node)
            if node in BIG_12:
                found.append(node)
        if len(found) > 1:
            raise DataError(f"WordNet is-a file: class {wnid} is under two big_12 superclasses "
                            f"({', '.join(BIG_12[w] for w in found)})")
        if found:
            members[found[0]].append(label)
    empty = [BIG_12[wnid] for wnid, labels in members.items() if not labels]
    if empty:
        raise DataError(f"WordNet is-a file: no class of this run is under {', '.join(empty)}; "
                        "big_12 needs all twelve (is it ImageNet's wordnet.is_a.txt?)")
    keep = min(len(labels) for labels in members.values()) if balanced else None
    return [(BIG_12[wnid], sorted(labels)[:keep]) for wnid, labels in members.items()]


def superclass_groups(wnids: list, superclasses: dict) -> list:
    """[(superclass, [class index, ...])]: classes in label order within each superclass;
    classes in no superclass are left out, superclasses with no known class are dropped."""
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    groups = []
    for name, members in superclasses.items():
        labels = sorted(label_of[wnid] for wnid in members if wnid in label_of)
        if labels:
            groups.append((name, labels))
    if not groups:
        raise DataError("superclass map: none of its wnids is an ImageNet class of this run")
    return groups


def index_block_groups(num_classes: int, blocks: int) -> list:
    """[(name, [class index, ...])]: ``blocks`` contiguous runs of class indices."""
    import numpy as np

    return [
        (f"{chunk[0]}" if len(chunk) == 1 else f"{chunk[0]}-{chunk[-1]}", [int(label) for label in chunk])
        for chunk in np.array_split(np.arange(num_classes), min(blocks, num_classes))
    ]


def regroup(matrix, groups: list):
    """The matrix with rows and columns in group order, and each group's (start, stop)."""
    order = [label for _, labels in groups for label in labels]
    bounds, start = [], 0
    for _, labels in groups:
        bounds.append((start, start + len(labels)))
        start += len(labels)
    return matrix[order][:, order], bounds


def plot(matrices, titles, groups, note, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    figure, axes = plt.subplots(1, len(matrices), figsize=(5.5 * len(matrices), 5.5), squeeze=False)
    for axis, matrix, title in zip(axes[0], matrices, titles):
        ordered, bounds = regroup(matrix, groups)
        counts = np.ma.masked_equal(ordered, 0)  # empty cells stay white, as in the paper
        image = axis.imshow(counts, norm=LogNorm(vmin=1, vmax=max(1, int(ordered.max()))),
                            cmap="viridis", interpolation="nearest")
        for start, stop in bounds:
            axis.add_patch(Rectangle((start - 0.5, start - 0.5), stop - start, stop - start,
                                     fill=False, edgecolor="red", linewidth=0.8))
        centres = [(start + stop - 1) / 2 for start, stop in bounds]
        names = [name for name, _ in groups]
        axis.set_xticks(centres, names, rotation=90, fontsize=7)
        axis.set_yticks(centres, names, fontsize=7)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        accuracy = np.trace(matrix) / max(1, matrix.sum()) * 100
        axis.set_title(f"{title} (top-1 {accuracy:.1f}%)")
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="images (log scale)")
    figure.suptitle(f"ImageNet-val confusion matrices; {note}", fontsize=9)
    figure.tight_layout()
    with atomic_path(out) as temporary:
        figure.savefig(temporary, format="png", dpi=150, metadata={"Software": None})
    plt.close(figure)
