"""Mixture manifests: real datasets with a share of items replaced by, or appended from, others.

A mixture (one entry of config ``mixtures``) turns a base index and, for ``replace``/``append``,
a second index ``by`` into a manifest (formats.MANIFEST_COLUMNS), one row per training item: a
class image, or for COCO and Flickr30k an (image, caption) pair. What is drawn is a unit:
``unit: image`` (the default, the paper's "n% of real images") draws whole images, all rows
sharing an ``image_id`` together; ``unit: pair`` draws single rows, so an image can lose some of
its captions (a departure from the paper, kept as an option). For class datasets, one row per
image, the two are the same.

Common random numbers make the mixtures of one base comparable. Every unit of the base gets a
random key from a generator seeded by (seed, base name) alone; within each stratum (a class for
``match: label``, the whole set otherwise) units are ranked by that key, and a fraction f
replaces the first round-half-up(f * n) ranks of each stratum of n units. So the units replaced
at 20% are among those replaced at 40%, and ``subset`` with fraction p keeps exactly the units
that ``replace`` with 1 - p keeps, n - round-half-up((1 - p) * n) of them (ImageNet 5% is the
real part of IN/SD-95%). Fractions are taken as the decimals they are written as (0.95 is
19/20), so 1 - 0.05 and 0.95 give the same count.

The units put in come from ``by`` through a second generator seeded by (seed, by name): the
real unit of rank k in a class gets the ``by`` unit of rank k in that class (no unit used twice,
and the choice at 20% is part of the choice at 40%), or, ``with_replacement``, the unit of rank
k modulo the class size: a short class is cycled through in its random order, so every unit is
used before any is used again (the paper samples "by replacement" because WebVision classes are
short; an i.i.d. draw would also repeat items in classes that have enough, about a fifth of
IN/WV-95%'s WebVision slots at paper scale). A ``by`` image comes with all its rows (CO/FL: a
Flickr30k image with its captions in place of a COCO image with its captions). ``match:
source`` puts in, for each row of a replaced unit, the image generated from its caption (CO/SD:
a replaced COCO image becomes the images generated from its captions; its captions without one
leave with it). ``append`` keeps the base and adds the same choice at the end.

``subsample`` (filled by the workflow from ``sources.<name>.train_subset``) first cuts a dataset
to the rows with the smallest keys of a generator seeded by (seed, "<name>:subsample"), in index
order: the same subset in every mixture that uses the dataset.

Everything runs on Arrow tables and NumPy arrays, without pandas: at paper scale (1.28M-2.4M
rows, 27 jobs) converting strings to Python objects and back cost more than the mixture itself.
"""

import hashlib
from fractions import Fraction

from contamination.config import settings_argument, with_defaults
from contamination.errors import ConfigError, DataError
from contamination.formats import GENERATED_COLUMNS, INDEX_COLUMNS, NO_LABEL
from contamination.io import write_json, write_parquet

KINDS = ("subset", "replace", "append")
MATCHES = ("label", "source", "none")
UNITS = ("image", "pair")
# The columns of read_items' tables. Strings are Arrow's large_string, as pandas writes them.
ITEM_COLUMNS = {"id": "large_string", "uri": "large_string", "label": "int64", "caption": "large_string",
                "source_id": "large_string", "image_id": "large_string"}


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("mixture", help="build one mixture manifest")
    parser.add_argument("--spec", required=True, type=settings_argument("mixtures[]"),
                        help="one config `mixtures` entry as JSON (defaults may be left out), plus the run's `seed`")
    parser.add_argument("--base", required=True, help="index of the base dataset (Parquet)")
    parser.add_argument("--by", help="index of the dataset items come from (replace, append)")
    parser.add_argument("--out", required=True, help="manifest to write (Parquet)")
    parser.add_argument("--summary", required=True, help="counts to write (JSON)")
    parser.set_defaults(run=run_mixture)


def run_mixture(args) -> None:
    spec = checked_spec(args.spec)
    base = read_items(args.base, spec["base"])
    by = None
    if spec["kind"] != "subset":
        if args.by is None:
            raise ConfigError(f"mixture '{spec['name']}': kind '{spec['kind']}' needs --by (mixtures[..].by)")
        by = read_items(args.by, spec["by"])
    manifest, summary = build_mixture(spec, base, by)
    write_parquet(manifest, args.out)
    write_json(summary, args.summary)
    print(f"mixture {spec['name']}: {summary['total']} rows, {summary['counts']}")


def checked_spec(spec: dict) -> dict:
    """The spec with the schema's defaults filled; a ConfigError for what cannot be built."""
    spec = {"subsample": {}, **with_defaults("mixtures[]", spec)}  # subsample: added by the workflow
    name = spec.get("name", "?")
    for key in ("name", "kind", "base", "fraction", "seed"):
        if key not in spec:
            raise ConfigError(f"mixture '{name}': the spec has no '{key}'")
    if spec["kind"] not in KINDS:
        raise ConfigError(f"mixtures[..].kind of '{name}': '{spec['kind']}' is not one of {', '.join(KINDS)}")
    if spec["match"] not in MATCHES:
        raise ConfigError(f"mixtures[..].match of '{name}': '{spec['match']}' is not one of {', '.join(MATCHES)}")
    if spec["unit"] not in UNITS:
        raise ConfigError(f"mixtures[..].unit of '{name}': '{spec['unit']}' is not one of {', '.join(UNITS)}")
    for dataset, size in spec["subsample"].items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"sources.{dataset}.train_subset: {size!r} is not a positive whole number")
    if not 0 <= spec["fraction"] <= 1:
        raise ConfigError(f"mixtures[..].fraction of '{name}': {spec['fraction']} is outside [0, 1]")
    if spec["kind"] != "subset" and not spec.get("by"):
        raise ConfigError(f"mixtures[..].by of '{name}': required for kind '{spec['kind']}'")
    if spec["kind"] != "subset" and spec["by"] == spec["base"]:
        raise ConfigError(f"mixtures[..].by of '{name}': '{spec['by']}' is also its base")
    if spec["match"] == "source" and spec["with_replacement"]:
        raise ConfigError(
            f"mixtures[..].with_replacement of '{name}': match 'source' pairs each caption with the "
            "one image generated from it, so there is nothing to draw with replacement"
        )
    return spec


def read_items(path, name: str):
    """The rows of an index as an Arrow table ``id, uri, label, caption, source_id, image_id``.

    A source index (formats.INDEX_COLUMNS) gives its "train" rows; a generated index
    (formats.GENERATED_COLUMNS) gives all rows, each its own image. ``name`` is the dataset's name, for messages.
    Ids are taken to be unique within the index, as the commands that write indexes (``index``,
    ``merge-shards``) ensure; ``assembled`` relies on it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        columns = set(pq.read_schema(path).names)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the index of '{name}': {error}") from error
    if set(INDEX_COLUMNS) <= columns:
        # One thread: a mixture job gets one CPU (profiles/slurm), where reader threads only
        # take turns.
        table = pq.read_table(path, columns=["id", "path", "label", "caption", "image_id", "split"],
                              use_threads=False)
        table = table.filter(pc.equal(table["split"], "train"))
        table = pa.table({"id": table["id"], "uri": table["path"], "label": table["label"],
                          "caption": table["caption"], "source_id": pa.repeat(pa.scalar("", pa.large_string()),
                                                                              table.num_rows),
                          "image_id": table["image_id"]})
    elif set(GENERATED_COLUMNS) <= columns:
        table = pq.read_table(path, columns=["id", "uri", "label", "caption", "source_id"], use_threads=False)
    else:
        raise DataError(
            f"{path}: the index of '{name}' is neither a source index ({', '.join(INDEX_COLUMNS)}) "
            f"nor a generated index ({', '.join(GENERATED_COLUMNS)})"
        )
    if table.num_rows == 0:
        raise DataError(f"{path}: the index of '{name}' has no training rows")
    if table["label"].null_count:
        raise DataError(f"{path}: the index of '{name}' has {table['label'].null_count} rows without a label")
    return as_items(table)


def as_items(table):
    """The table with read_items' column types, in one chunk per column. A table without
    ``image_id`` has one row per image."""
    import pyarrow as pa

    if "image_id" not in table.column_names:
        table = table.append_column("image_id", table["id"])
    schema = pa.schema([(column, getattr(pa, type_name)()) for column, type_name in ITEM_COLUMNS.items()])
    return table.select(list(ITEM_COLUMNS)).cast(schema).combine_chunks()


def build_mixture(spec: dict, base, by=None):
    """The manifest (an Arrow table, formats.MANIFEST_COLUMNS) and its summary for ``spec`` over
    the Arrow tables ``base``/``by`` (with read_items' columns)."""
    import numpy as np

    spec = checked_spec(spec)
    base = subsampled(as_items(base), spec["base"], spec)
    if by is not None:
        by = subsampled(as_items(by), spec["by"], spec)
    units = Units(base, spec["unit"])
    base_key = named_rng(spec["seed"], spec["base"]).permutation(units.count)
    base_strata = strata_of(units.labels, spec["match"])
    every_row = np.arange(len(base))

    if spec["kind"] == "subset":
        dropped = ranked_selection(base_strata, base_key, np.ones(units.count, bool), spec)
        take = np.flatnonzero(~units.rows_of(dropped.rows))
        return assembled(spec, base, None, take, take, replaced=0,
                         units={"base": units.count, "base_kept": units.count - len(dropped.rows), "added": 0})

    counterpart = None
    candidates = np.ones(units.count, bool)
    if spec["match"] == "source":
        counterpart = generated_counterparts(base, by, spec)
        candidates = np.bincount(units.codes, weights=counterpart >= 0, minlength=units.count) > 0
    selected = ranked_selection(base_strata, base_key, candidates, spec)
    paired_rows = np.flatnonzero(units.rows_of(selected.rows))
    if counterpart is not None:
        # Each row of a replaced unit gives way to the image generated from its caption, in its place.
        generated = counterpart[paired_rows] >= 0
        positions, incoming = paired_rows[generated], len(base) + counterpart[paired_rows[generated]]
        incoming_captions, added = positions, len(positions)
    else:
        by_units = Units(by, spec["unit"])
        chosen = chosen_items(by_units, selected, spec)
        # A unit of `by` comes with all its rows, where the first row of the unit it replaces was.
        by_rows, owner = by_units.members(chosen)
        positions, incoming = units.first_row[selected.rows][owner], len(base) + by_rows
        incoming_captions, added = incoming, len(chosen)
    in_base_order = np.argsort(positions, kind="stable")
    positions, incoming = positions[in_base_order], incoming[in_base_order]
    incoming_captions = incoming_captions[in_base_order]
    if spec["kind"] == "replace":
        kept = np.setdiff1d(every_row, paired_rows, assume_unique=True)
        order = np.argsort(np.concatenate([kept, positions]), kind="stable")
        take = np.concatenate([kept, incoming])[order]
        caption_take = np.concatenate([kept, incoming_captions])[order]
        return assembled(spec, base, by, take, caption_take, replaced=len(paired_rows),
                         units={"base": units.count, "base_kept": units.count - len(selected.rows), "added": added})
    take = np.concatenate([every_row, incoming])
    caption_take = np.concatenate([every_row, incoming_captions])
    return assembled(spec, base, by, take, caption_take, replaced=0,
                     units={"base": units.count, "base_kept": units.count, "added": added})


class Units:
    """The rows of an items table grouped into the units a mixture draws: images (rows sharing an
    ``image_id``, numbered in order of first appearance) for ``unit: image``, rows for ``pair``."""

    def __init__(self, items, unit: str):
        import numpy as np
        import pyarrow.compute as pc

        # Ids are unique within an index, so image ids equal to them mean one row per image (class
        # datasets): no string hashing for 1.28M ImageNet rows.
        if unit == "pair" or pc.all(pc.equal(items["image_id"], items["id"])).as_py():
            self.codes = np.arange(len(items))
            self.first_row = self.codes
        else:
            self.codes = pc.dictionary_encode(items["image_id"]).combine_chunks().indices.to_numpy().astype(np.int64)
            # Codes count up in order of first appearance: a unit's first row raises the running maximum.
            self.first_row = np.flatnonzero(np.diff(np.maximum.accumulate(self.codes), prepend=-1) > 0)
        self.count = len(self.first_row)
        self.labels = items["label"].to_numpy()[self.first_row]

    def rows_of(self, units):
        """A mask of the rows that belong to ``units``."""
        import numpy as np

        chosen = np.zeros(self.count, bool)
        chosen[units] = True
        return chosen[self.codes]

    def members(self, units):
        """The rows of each of ``units`` in row order, one unit after another, and for each row the
        position in ``units`` of the unit it belongs to."""
        import numpy as np

        row_order = np.argsort(self.codes, kind="stable")
        all_sizes = np.bincount(self.codes, minlength=self.count)
        starts = np.cumsum(all_sizes) - all_sizes
        sizes = all_sizes[units]
        owner = np.repeat(np.arange(len(units)), sizes)
        within = np.arange(len(owner)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return row_order[starts[units][owner] + within], owner


def subsampled(items, name: str, spec):
    """``items`` cut to ``spec["subsample"][name]`` rows (all when absent or not fewer): those with
    the smallest keys of (seed, "<name>:subsample"), in their index order."""
    import numpy as np

    size = subsample_size(spec, name, items.num_rows)
    if size == items.num_rows:
        return items
    key = named_rng(spec["seed"], f"{name}:subsample").permutation(items.num_rows)
    return items.take(np.flatnonzero(key < size))


def subsample_size(spec, name: str, rows: int) -> int:
    """How many of the ``rows`` of dataset ``name`` a mixture keeps after ``spec["subsample"]``."""
    size = spec["subsample"].get(name)
    return rows if size is None else min(size, rows)


def drawn_counts(spec, stratum_sizes) -> list:
    """Units drawn from each stratum of n units: round-half-up(fraction * n), those replaced or
    matched for ``replace``/``append``; round-half-up((1 - fraction) * n), those left out, for
    ``subset`` (so subset p keeps what replace 1 - p keeps)."""
    fraction = exact_fraction(spec["fraction"])
    share = 1 - fraction if spec["kind"] == "subset" else fraction
    return [round_half_up(share, int(size)) for size in stratum_sizes]


def mixture_size(spec: dict, base_size: int) -> int:
    """Rows of mixture ``spec`` over a base of ``base_size`` rows (before its subsample), drawn as
    one stratum of one-row units, each drawn unit bringing one row: what build_mixture makes of
    such a base. The planner knows a dataset's size, not its classes nor its captions per image:
    a ``match: label`` mixture, rounded per class, may be up to half a unit per class away."""
    spec = checked_spec(spec)
    base = subsample_size(spec, spec["base"], base_size)
    drawn = sum(drawn_counts(spec, [base]))
    return {"subset": base - drawn, "replace": base, "append": base + drawn}[spec["kind"]]


def exact_fraction(value):
    """A config fraction as the decimal it is written as: 0.95 -> 19/20 (so 1 - 0.05 == 0.95)."""
    return Fraction(repr(float(value)))


def round_half_up(fraction, count: int) -> int:
    """round(fraction * count), halves up, in exact integer arithmetic."""
    return (2 * fraction.numerator * count + fraction.denominator) // (2 * fraction.denominator)


def named_rng(seed: int, name: str):
    """A generator for (seed, dataset name): the same name draws the same numbers in every mixture."""
    import numpy as np

    name_entropy = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), name_entropy])


def strata_of(labels, match: str):
    """Stratum of each unit of ``labels``: its class for ``match: label``, one stratum for the whole
    set otherwise."""
    import numpy as np

    if match == "label":
        return labels
    return np.zeros(len(labels), dtype=np.int64)


class Selection:
    """Selected units (``rows`` of the unit arrays) with their stratum and their rank in it (fixed
    for a base, whatever the fraction)."""

    def __init__(self, rows, strata, ranks):
        self.rows, self.strata, self.ranks = rows, strata, ranks


def ranked(strata, key):
    """Rows ordered by (stratum, key), the stratum of each, and each one's rank within it."""
    import numpy as np

    # One int64 sort key (stratum, then key) sorts several times faster than np.lexsort; the
    # keys are distinct, so the order is unique.
    strata = strata.astype(np.int64)
    offset = strata - strata.min(initial=0)
    order = np.argsort(offset * (int(key.max(initial=0)) + 1) + key)
    sorted_strata = strata[order]
    ranks = np.arange(len(order)) - np.searchsorted(sorted_strata, sorted_strata, side="left")
    return order, sorted_strata, ranks


def ranked_selection(strata, key, candidates, spec) -> Selection:
    """The first drawn_counts(spec, ...) candidates by key in each stratum."""
    import numpy as np

    candidate_rows = np.flatnonzero(candidates)
    order, sorted_strata, ranks = ranked(strata[candidate_rows], key[candidate_rows])
    values, sizes = np.unique(strata, return_counts=True)
    wanted = np.array(drawn_counts(spec, sizes), dtype=np.int64)
    available = np.bincount(np.searchsorted(values, sorted_strata), minlength=len(values))
    short = np.flatnonzero(available < wanted)
    if len(short):
        stratum = short[0]
        raise DataError(
            f"mixture '{spec['name']}': {stratum_name(values[stratum], spec)} of '{spec['base']}' needs "
            f"{wanted[stratum]} {unit_noun(spec)} with an image generated from them in '{spec.get('by')}', but only "
            f"{available[stratum]} of its {sizes[stratum]} {unit_noun(spec)} have one"
        )
    taken = ranks < wanted[np.searchsorted(values, sorted_strata)]
    positions = np.flatnonzero(taken)
    return Selection(candidate_rows[order[positions]], sorted_strata[positions], ranks[positions])


def stratum_name(value, spec) -> str:
    return f"class {value}" if spec["match"] == "label" else "the whole set"


def unit_noun(spec) -> str:
    return "images" if spec["unit"] == "image" else "rows"


def generated_counterparts(base, by, spec):
    """For each base row, the ``by`` row generated from its caption (source_id == id), or -1.

    Should several images come from one caption, the first by the (seed, by) key is taken.
    """
    import numpy as np
    import pyarrow.compute as pc

    rows_in_key_order = np.argsort(named_rng(spec["seed"], spec["by"]).permutation(by.num_rows))
    # index_in answers the first position of a value in the set: the first in key order.
    found = pc.index_in(base["id"], value_set=by["source_id"].take(rows_in_key_order))
    found = found.fill_null(-1).to_numpy()
    return np.where(found >= 0, rows_in_key_order[found], -1)


def chosen_items(by_units: Units, selected: Selection, spec):
    """The ``by`` unit for each selected base unit: rank k of its stratum gets the ``by`` unit of
    rank k in the same stratum, or with replacement rank k modulo the stratum's size."""
    import numpy as np

    rng = named_rng(spec["seed"], spec["by"])
    order, sorted_strata, _ = ranked(strata_of(by_units.labels, spec["match"]), rng.permutation(by_units.count))
    starts = np.searchsorted(sorted_strata, selected.strata, side="left")
    sizes = np.searchsorted(sorted_strata, selected.strata, side="right") - starts
    short = (sizes == 0) if spec["with_replacement"] else (selected.ranks >= sizes)
    if short.any():
        first = np.flatnonzero(short)[0]
        stratum = selected.strata[first]
        needed = int(np.count_nonzero(selected.strata == stratum))
        remedy = ("" if spec["with_replacement"] else
                  " without replacement; set mixtures[..].with_replacement: true for this mixture or lower its fraction")
        raise DataError(
            f"mixture '{spec['name']}': {stratum_name(stratum, spec)} needs {needed} {unit_noun(spec)} from "
            f"'{spec['by']}', which has {sizes[first]}{remedy}"
        )
    offsets = selected.ranks % sizes if spec["with_replacement"] else selected.ranks
    return order[starts + offsets]


def assembled(spec, base, by, take, caption_take, replaced: int, units: dict):
    """Manifest (an Arrow table) and summary of the rows ``take`` of base followed by ``by``
    (captions from rows ``caption_take``); ``units`` counts what was drawn (summary_of). Ids become ``<origin>/<id>``; the n-th reuse of an
    item gets ``~n``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [(spec["base"], base)] + ([(spec["by"], by)] if by is not None else [])

    def pooled(columns):
        # One array, not a ChunkedArray: Arrow's take is 7x faster on it.
        return pa.concat_arrays([chunk for column in columns for chunk in column.chunks])

    from_by = take >= base.num_rows
    origins = pa.array([origin for origin, _ in parts], pa.large_string()).take(from_by.astype(np.int8))
    raw_ids = pooled([table["id"] for _, table in parts]).take(take)
    ids = joined("/", origins, raw_ids)
    # Ids are unique without comparing them: input ids are unique within their index (the index and
    # merge-shards commands refuse repeats), origins tell the indexes apart, and reused rows get
    # "~<n>" suffixes. Only an input id containing "~" could meet a suffixed one.
    repeat = occurrence(take)
    reused = repeat > 0
    if reused.any():
        suffixed = joined("~", ids, pc.cast(pa.array(repeat), pa.large_string()))
        ids = pc.if_else(pa.array(reused), suffixed, ids)
        if pc.any(pc.match_substring(raw_ids, "~")).as_py() and len(pc.unique(ids)) != len(ids):
            raise DataError(
                f"mixture '{spec['name']}': the id '{first_repeated(ids)}' occurs twice: an input id "
                "ends like the '~<n>' that marks the reuse of an item"
            )
    manifest = pa.table({
        "id": ids,
        "uri": pooled([table["uri"] for _, table in parts]).take(take),
        "label": np.concatenate([table["label"].to_numpy() for _, table in parts])[take],
        "caption": pooled([table["caption"] for _, table in parts]).take(caption_take),
        "origin": origins,
    })
    return manifest, summary_of(spec, manifest, from_by, replaced=replaced, units=units,
                                appended=len(take) - base.num_rows if spec["kind"] == "append" else 0,
                                reused=int(reused.sum()))


def joined(separator: str, *parts):
    """Element-wise ``separator.join(parts)`` of large_string arrays and Python strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def large(part):
        return pa.scalar(part, pa.large_string()) if isinstance(part, str) else part

    return pc.binary_join_element_wise(*map(large, parts), large(separator))


def first_repeated(ids) -> str:
    """The first value of ``ids`` that an earlier one repeats."""
    import numpy as np
    import pyarrow.compute as pc

    first_seen_at = pc.index_in(ids, value_set=ids).to_numpy()
    return ids[int(np.flatnonzero(first_seen_at != np.arange(len(ids)))[0])].as_py()


def occurrence(take):
    """For each entry of ``take``, how many earlier entries hold the same row (0 for the first)."""
    import numpy as np

    order = np.argsort(take, kind="stable")
    in_order = take[order]
    counts = np.empty(len(take), dtype=np.int64)
    counts[order] = np.arange(len(take)) - np.searchsorted(in_order, in_order, side="left")
    return counts


def summary_of(spec, manifest, from_by, replaced: int, units: dict, appended: int, reused: int) -> dict:
    """Counts of rows by origin (and class), ``replaced`` base rows, and ``units``: the base's
    units (images, or rows for ``unit: pair``), how many of them stay, how many ``by`` units
    (generated rows for ``match: source``) came in."""
    import numpy as np

    origins = [spec["base"], spec.get("by")]
    from_by_count = int(from_by.sum())
    counts = {origin: count for origin, count in zip(origins, (manifest.num_rows - from_by_count, from_by_count))
              if count}
    summary = {
        "name": spec["name"],
        "label": spec.get("label", spec["name"]),
        "kind": spec["kind"],
        "base": spec["base"],
        "by": spec.get("by"),
        "match": spec["match"],
        "with_replacement": spec["with_replacement"],
        "unit": spec["unit"],
        "subsample": spec["subsample"],
        "fraction": spec["fraction"],
        "seed": spec["seed"],
        "total": manifest.num_rows,
        "counts": counts,
        "replaced": replaced,
        "appended": appended,
        "reused": reused,
        "units": units,
    }
    labels = manifest["label"].to_numpy()
    labelled = labels != NO_LABEL
    if labelled.any():
        codes, code_counts = np.unique(2 * labels[labelled] + from_by[labelled], return_counts=True)
        summary["counts_by_class"] = {}
        for code, count in zip(codes.tolist(), code_counts.tolist()):
            summary["counts_by_class"].setdefault(str(code // 2), {})[origins[code % 2]] = count
    return summary
