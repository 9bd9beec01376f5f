"""Recursive contamination (beyond the paper): IDDPM generations, each trained on real data mixed
with the samples of earlier generations, under three policies of the model-collapse literature.

Generation 0 is the IDDPM run (experiments/iddpm.py) on the real base, config ``recursion.base``
(a subset of a real source; its run is the one Tables 3 and 10 use when they name that mixture).
Every generation then samples M = ``recursion.sample_count`` images, and generation k >= 1 of a
policy trains the same recipe (config ``iddpm``) on D_k, made of R, the base's image array at
``iddpm.image_size`` (N rows), and S_j, the samples of generation j of the same policy (S_0 is
shared by the policies):

- ``replace`` (Shumailov et al. 2024, with a fresh real fraction as in Bertrand et al. 2024):
  round-half-up(f N) rows of R, drawn afresh every generation, and N minus that many rows of
  S_{k-1}: N rows, f = ``recursion.real_fraction``. The draw needs M >= N - round(f N).
- ``accumulate`` (Gerstgrasser et al. 2024): R, S_0, ..., S_{k-1}, every row: N + k M rows.
- ``accumulate_subsample``: N rows drawn uniformly, without replacement, from the rows of
  ``accumulate`` (the real share falls as N / (N + k M) on average).

Draws come from generators seeded by (seed, policy, generation), so a generation's rows depend
on the config alone, not on the order jobs ran in. Every generation trains from the same seed
and samples with the same per-image noise seeds, so generations differ by their data only.

A generation whose sources did not all train (a diverged generation, or one after it) builds
an empty array whose summary says why; its training then records that status instead of
training, and its metrics are null with the reason (iddpm-train --data-status, iddpm-sample and
fidelity carry it on).

Commands: ``recursion-mixture`` (one generation's training array, with the origin of every row),
``recursion-table`` (FID, precision and recall of every policy and generation, and the size and
real share of its training data), ``recursion-plot`` (one policy's metrics against generation)
and ``recursion-report`` (the table and plots as an HTML page).
"""

import html
import json
import math

from contamination.config import settings_argument

POLICIES = ("replace", "accumulate", "accumulate_subsample")
REAL = "real"  # the origin of the base's rows, and the chain of generation 0 (trained on them only)
# The recursion keys the mixture command reads, and those each policy's draw depends on (a
# mixture job's params carry only these: a new real_fraction rebuilds no accumulate generation).
MIXTURE_KEYS = ("real_fraction",)
POLICY_KEYS = {"replace": ("real_fraction",), "accumulate": (), "accumulate_subsample": ()}
TABLE = "recursion"
TABLE_COLUMNS = ["table", "policy", "generation", "metric", "measured", "status", "note"]
# What the table adds to each generation's metrics.json: the size and real share of its data.
COMPOSITION_METRICS = ("training_images", "real_share")
CHUNK_ROWS = 4096


# ---- generations and their data --------------------------------------------------------------


def chain(policy: str, generation: int) -> str:
    """The chain a generation belongs to: ``real`` for generation 0 (shared), else its policy."""
    return REAL if generation == 0 else policy


def run_name(policy: str, generation: int) -> str:
    """The run of a generation under results/<run>/recursion/iddpm/ (``real/generation-0``)."""
    return f"{chain(policy, generation)}/generation-{generation}"


def origin(generation: int) -> str:
    """The origin of the rows that are generation ``generation``'s samples."""
    return f"generation-{generation}"


def sample_settings(config: dict) -> dict:
    """Config ``iddpm`` with the recursion's sample count: how every generation samples."""
    return dict(config["iddpm"], sample_count=config["recursion"]["sample_count"])


def sample_shard_count(config: dict) -> int:
    settings = sample_settings(config)
    return math.ceil(settings["sample_count"] / settings["sample_shard_size"])


def source_generations(policy: str, generation: int) -> list:
    """The generations whose samples generation ``generation`` (>= 1) of ``policy`` trains on."""
    if policy not in POLICIES:
        raise ValueError(f"unknown recursion policy '{policy}' (known: {', '.join(POLICIES)})")
    if generation < 1:
        raise ValueError(f"generation {generation} has no mixture: generation 0 trains on the real base")
    return [generation - 1] if policy == "replace" else list(range(generation))


def mixture_size(policy: str, generation: int, real_size: int, sample_count: int) -> int:
    """Rows of D_k when every earlier generation made ``sample_count`` samples (the planner's size)."""
    return real_size + generation * sample_count if policy == "accumulate" else real_size


def generation_rows(policy: str, generation: int, real_size: int, sample_sizes: dict, real_fraction: float,
                    seed: int) -> dict:
    """{origin: the ascending row numbers D_k takes from that source}: ``real`` (R, ``real_size``
    rows) and ``generation-j`` (S_j, ``sample_sizes[j]`` rows) for each source generation j, in
    that order (module docstring)."""
    import numpy as np

    from contamination.errors import DataError
    from contamination.mixtures.manifests import exact_fraction, named_rng, round_half_up

    sources = source_generations(policy, generation)
    if sorted(sample_sizes) != sources:
        raise ValueError(f"generation {generation} of {policy} draws from generations {sources}, "
                         f"got samples of {sorted(sample_sizes)}")
    sizes = {REAL: real_size, **{origin(j): sample_sizes[j] for j in sources}}

    def draw(name: str, size: int, count: int):
        """``count`` of ``size`` rows, the smallest keys of a generator seeded by (seed, name)."""
        return np.flatnonzero(named_rng(seed, f"recursion:{policy}:{generation}:{name}").permutation(size) < count)

    if policy == "accumulate":
        return {name: np.arange(size) for name, size in sizes.items()}
    if policy == "replace":
        real_count = round_half_up(exact_fraction(real_fraction), real_size)
        previous = origin(sources[0])
        if real_size - real_count > sizes[previous]:
            raise DataError(f"replace needs {real_size - real_count} samples of {previous} (recursion.real_fraction "
                            f"{real_fraction} of {real_size} real images is {real_count}), but it has "
                            f"{sizes[previous]}: raise recursion.sample_count")
        return {REAL: draw(REAL, real_size, real_count), previous: draw(previous, sizes[previous], real_size - real_count)}
    pooled = draw("pool", sum(sizes.values()), real_size)
    bounds = np.cumsum([0, *sizes.values()])
    return {name: pooled[(pooled >= start) & (pooled < end)] - start
            for name, start, end in zip(sizes, bounds[:-1], bounds[1:])}


# ---- the mixture command ---------------------------------------------------------------------


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("recursion-mixture", help="one recursion generation's training images (uint8 .npy) "
                                                             "with the origin of every row")
    parser.add_argument("--spec", required=True, type=settings_argument("recursion", MIXTURE_KEYS),
                        help="JSON: the policy's config `recursion` keys (defaults may be left out), policy, "
                             "generation and the run's seed")
    parser.add_argument("--real", required=True, help="the real base's image array (N, S, S, 3)")
    parser.add_argument("--sources", required=True, type=json.loads,
                        help='JSON: {"<generation>": {"status": training.json, "samples": [shard .npy, ...]}} '
                             "of every generation the policy draws from")
    parser.add_argument("--out-images", required=True, help="the training array (.npy)")
    parser.add_argument("--out-origins", required=True, help="origin and source row of every row (Parquet)")
    parser.add_argument("--out-summary", required=True, help="status, counts by origin and the images' SHA-256 (JSON)")
    parser.set_defaults(run=run_mixture)

    parser = subparsers.add_parser("recursion-table", help="the recursion table: metrics of every policy and generation")
    parser.add_argument("--spec", required=True, type=json.loads, help="JSON: policies, generations and metrics")
    parser.add_argument("--cells", required=True, type=json.loads,
                        help='JSON: {"<policy>|<generation>": {"metrics": metrics.json, "mixture": summary JSON}}')
    parser.add_argument("--out", required=True, help="the table (CSV)")
    parser.add_argument("--provenance", required=True, help="its provenance sidecar (JSON)")
    parser.set_defaults(run=run_table)

    parser = subparsers.add_parser("recursion-plot", help="one policy's metrics against generation (PNG)")
    parser.add_argument("--table", required=True, help="the recursion table (CSV)")
    parser.add_argument("--policy", required=True, choices=POLICIES)
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_plot)

    parser = subparsers.add_parser("recursion-report", help="the recursion table and plots as an HTML page")
    parser.add_argument("--table", required=True, help="the recursion table (CSV)")
    parser.add_argument("--provenance", required=True, help="its provenance sidecar (JSON)")
    parser.add_argument("--plots", required=True, nargs="+", help="the plots of recursion-plot, in policy order")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_report)


def read_arrays(paths) -> list:
    """Memory maps of uint8 image arrays (n, S, S, 3), all of one image size."""
    from contamination.metrics.features import ArrayImages

    return ArrayImages(paths).arrays


def selected_rows(arrays: list, rows):
    """uint8 batches of the given ascending rows of ``arrays`` read as one array, in order."""
    import numpy as np

    offsets = np.cumsum([0] + [len(array) for array in arrays])
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        parts = np.searchsorted(offsets, chunk, side="right") - 1
        yield np.concatenate([arrays[part][chunk[parts == part] - offsets[part]] for part in np.unique(parts)])


def hashed(batches, digest):
    """``batches`` passed on, their bytes fed to ``digest`` (a hash of the pixels in row order)."""
    import numpy as np

    for batch in batches:
        digest.update(np.ascontiguousarray(batch))
        yield batch


def origins_table(rows: dict):
    """The origin and source row of every row of a training array drawn as ``rows`` (an Arrow table)."""
    import numpy as np
    import pyarrow as pa

    names = np.repeat(np.array(list(rows), dtype=object), [len(taken) for taken in rows.values()])
    return pa.table({"origin": pa.array(names, pa.large_string()),
                     "row": pa.array(np.concatenate([np.empty(0, np.int64), *rows.values()]), pa.int64())})


def untrained_source(sources: dict):
    """(generation, reason) of the first source generation whose training did not finish, or None."""
    from contamination.io import read_json

    for generation in sorted(sources, key=int):
        status = read_json(sources[generation]["status"])
        if status["status"] != "ok":
            return int(generation), f"{status['status']}: {status.get('reason', '')}"
    return None


def run_mixture(args) -> None:
    import hashlib

    from contamination.errors import ConfigError, DataError
    from contamination.io import write_json, write_parquet
    from contamination.metrics.features import write_rows

    spec = args.spec
    policy, generation = spec["policy"], spec["generation"]
    expected = source_generations(policy, generation)
    if sorted(map(int, args.sources)) != expected:
        raise ConfigError(f"--sources: generation {generation} of {policy} draws from generations {expected}, "
                          f"got {sorted(map(int, args.sources))}")
    real = read_arrays([args.real])
    shape = real[0].shape[1:]
    summary = {"policy": policy, "generation": generation, "seed": spec["seed"],
               **{key: spec[key] for key in POLICY_KEYS[policy]}}
    untrained = untrained_source(args.sources)
    if untrained is not None:
        write_rows(args.out_images, (0, *shape), "uint8", [])
        write_parquet(origins_table({}), args.out_origins)
        reason = f"generation {untrained[0]} did not train ({untrained[1]})"
        write_json(dict(summary, status="not run", reason=reason, total=0, counts={}), args.out_summary)
        print(f"no training images: {reason}")
        return
    sources = {REAL: real, **{origin(int(j)): read_arrays(source["samples"]) for j, source in args.sources.items()}}
    if any(array.shape[1:] != shape for arrays in sources.values() for array in arrays):
        raise DataError(f"the samples of {sorted(args.sources)} are not {shape[0]} px images like {args.real}")
    rows = generation_rows(policy, generation, len(real[0]), {int(j): sum(map(len, sources[origin(int(j))]))
                                                              for j in args.sources},
                           spec["real_fraction"], spec["seed"])
    digest = hashlib.sha256()
    batches = (batch for name, taken in rows.items() for batch in selected_rows(sources[name], taken))
    total = write_rows(args.out_images, (sum(map(len, rows.values())), *shape), "uint8", hashed(batches, digest))
    write_parquet(origins_table(rows), args.out_origins)
    counts = {name: len(taken) for name, taken in rows.items()}
    write_json(dict(summary, status="ok", reason="", total=total, counts=counts, images_sha256=digest.hexdigest()),
               args.out_summary)
    print(f"generation {generation} of {policy}: {total} images, {counts}")


# ---- the table, its plots and its page ---------------------------------------------------------


def composition(summary: dict, generation: int) -> tuple:
    """(training images, real share, status, reason) of a generation's data, from its mixture
    summary; generation 0's is the base mixture's (all real, config.check_recursion)."""
    if generation == 0:
        return summary["total"], 1.0, "ok", ""
    if summary["status"] != "ok":
        return float("nan"), float("nan"), summary["status"], summary["reason"]
    return summary["total"], summary["counts"].get(REAL, 0) / summary["total"], "ok", ""


def build_table(spec: dict, cells: dict):
    """The recursion table (TABLE_COLUMNS): for each policy, generations 0..K (generation 0, the
    shared run on the real base, in every policy's rows), each metric of its metrics.json and the
    composition of its training data. A cell without a number is NaN with the run's reason."""
    import pandas as pd

    from contamination.io import read_json
    from contamination.reporting.tables import cell_status, measured_value

    rows = []
    for policy in spec["policies"]:
        for generation in range(spec["generations"] + 1):
            cell = cells[f"{policy}|{generation}"]
            run = read_json(cell["metrics"])
            values = []
            for metric in spec["metrics"]:
                measured, reason = measured_value(run, metric)
                values.append((metric, measured, cell_status(run, metric, measured), reason))
            images, real_share, status, reason = composition(read_json(cell["mixture"]), generation)
            values += [(metric, value, status, reason) for metric, value in zip(COMPOSITION_METRICS, (images, real_share))]
            rows += [{"table": TABLE, "policy": policy, "generation": generation, "metric": metric, "measured": measured,
                      "status": status, "note": reason} for metric, measured, status, reason in values]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def run_table(args) -> None:
    from contamination.io import write_json
    from contamination.reporting.provenance import table_provenance
    from contamination.reporting.tables import write_table

    write_table(build_table(args.spec, args.cells), args.out)
    write_json(table_provenance(dict(args.spec, name=TABLE), {key: cell["metrics"] for key, cell in args.cells.items()}),
               args.provenance)


def read_table(path):
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def run_plot(args) -> None:
    from contamination.reporting.plots import plot_generations

    frame = read_table(args.table)
    plot_generations(frame[frame["policy"] == args.policy], f"recursive contamination: {args.policy}", args.out)


def table_html(frame) -> str:
    """Rows: policy and generation; columns: metrics; a cell without a number is n/a, its reason on hover."""
    from contamination.reporting.report import number

    metrics = list(dict.fromkeys(frame["metric"]))
    cells = frame.set_index(["policy", "generation", "metric"])
    header = "".join(f"<th>{html.escape(metric)}</th>" for metric in metrics)
    lines = [f"<table class=\"results\"><thead><tr><th>policy</th><th>generation</th>{header}</tr></thead><tbody>"]
    for policy, generation in dict.fromkeys(zip(frame["policy"], frame["generation"])):
        entries = []
        for metric in metrics:
            cell = cells.loc[(policy, generation, metric)]
            value = number(cell["measured"])
            css = " class=\"missing\"" if value == "n/a" else ""
            note = f" title=\"{html.escape(cell['note'])}\"" if isinstance(cell["note"], str) and cell["note"] else ""
            entries.append(f"<td{css}{note}>{value}</td>")
        lines.append(f"<tr><td>{html.escape(policy)}</td><td>{generation}</td>{''.join(entries)}</tr>")
    return "\n".join(lines + ["</tbody></table>"])


def run_report(args) -> None:
    from contamination.io import atomic_path, read_json
    from contamination.reporting.report import data_uri, page, provenance_html

    frame = read_table(args.table)
    plots = []
    for path in args.plots:
        with open(path, "rb") as handle:
            plots.append(f"<img alt=\"metrics against generation\" src=\"{data_uri(handle.read(), 'image/png')}\">")
    noted = frame[frame["note"].fillna("") != ""]
    notes = "".join(f"<li>{html.escape(f'{r.policy} / generation {r.generation} / {r.metric}')}: {html.escape(r.note)}</li>"
                    for r in noted.itertuples())
    body = (
        "<p>Generation 0 is IDDPM trained on the real base; generation k of a policy is trained on real images "
        "mixed with earlier generations' samples (config/README.md, <code>recursion</code>). FID, precision and "
        "recall of each generation's samples against the reference sets; training_images and real_share describe "
        "its training data. n/a: no number (hover for the reason, or see the notes).</p>\n"
        f"{table_html(frame)}\n{''.join(plots)}\n" + (f"<h2>Notes</h2><ul>{notes}</ul>\n" if notes else "")
        + provenance_html(read_json(args.provenance))
    )
    with atomic_path(args.out) as temporary:
        temporary.write_text(page("Recursive contamination (beyond the paper)", body))
