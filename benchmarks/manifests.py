"""Manifests at full scale: every mixture of config/config.yaml built by the workflow's command
(``python -m contamination mixture``, one process per mixture as Snakemake runs it) from
synthetic indexes of the real sizes: ImageNet 1,281,167 training images (+50k val), SD-ImageNet
and complex SD-ImageNet 1.4M each, WebVision 2.44M, COCO 566,435 (image, caption) pairs
(113,287 Karpathy train+restval images x 5), SD-COCO one image per such caption, Flickr30k
145,000 pairs.

Baseline: the I/O floor of the same job: a process that imports pandas, reads the same index
columns and writes a manifest-shaped Parquet of the base's rows, so the speed-up (< 1) says how
much the mixture logic adds to what any implementation must pay. Target: all mixtures in < 30 s
and < 4 GiB, measured twice: the CPU seconds of one job after another (what one core pays), and the
wall time of the jobs run side by side on the machine's cores, as ``snakemake --cores all`` runs
them (what a researcher waits).
"""

import json
import os
import sys

from benchmarks.measure import alternate, group_main, project_environment, row, run_command

GROUP = "manifests"
IMAGENET_TRAIN = 1_281_167
PER_CLASS_GENERATED = 1400
WEBVISION_TRAIN = 2_439_574
COCO_IMAGES, FLICKR_IMAGES, CAPTIONS_PER_IMAGE = 113_287, 29_000, 5
SHARD_SIZE = 1000
CAPTION_WORDS = ("a man riding a wave on top of a surfboard", "two dogs playing with a frisbee in the park",
                 "a kitchen with a stove and a refrigerator", "a plate of food with broccoli and rice",
                 "a group of people standing around a table", "a red double decker bus on a city street")


def class_sizes(total: int, classes: int, smallest: int, largest: int, seed: int):
    """``classes`` sizes in [smallest, largest] summing to ``total``, uneven like the real sets:
    lognormal weights scaled (by bisection) so that their clipped sizes add up, then +-1 steps."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 0.6, classes)

    def sizes_at(factor):
        return np.clip(np.round(weights * factor), smallest, largest).astype(np.int64)

    low, high = 0.0, largest / weights.min()
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if sizes_at(middle).sum() < total else (low, middle)
    sizes = sizes_at(high)
    step = 1 if sizes.sum() < total else -1
    movable = np.flatnonzero((sizes < largest) if step > 0 else (sizes > smallest))
    sizes[rng.choice(movable, abs(int(total - sizes.sum())), replace=False)] += step
    return sizes


def strings(*parts):
    """Element-wise concatenation of pyarrow string arrays and Python strings."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*parts, "")


def numbers(values, width: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0")


def class_index(root: str, sizes, split_sizes: dict, extension: str):
    """A class source index: rows per class, then extra splits (e.g. val) spread over classes."""
    import numpy as np
    import pyarrow as pa

    labels = np.repeat(np.arange(len(sizes)), sizes)
    splits = np.repeat(np.array(["train"], dtype=object), len(labels))
    for split, count in split_sizes.items():
        labels = np.concatenate([labels, np.arange(count) % len(sizes)])
        splits = np.concatenate([splits, np.repeat(np.array([split], dtype=object), count)])
    wnids = strings("n", numbers(1_440_764 + labels * 997, 8))
    # File numbers in no particular order, as in ImageNet (n01440764_10026.JPEG).
    ids = strings(wnids, "_", numbers(np.random.default_rng(len(labels)).permutation(len(labels)), 1))
    paths = strings(root, "/", pa.array(splits), "/", wnids, "/", ids, extension)
    return pa.table({"id": ids, "path": paths, "label": pa.array(labels, pa.int64()), "wnid": wnids,
                     "caption": pa.array(np.repeat("", len(labels))), "image_id": ids,
                     "split": pa.array(splits, pa.string())})


def caption_index(root: str, prefix: str, split_images: dict):
    """A caption source index: CAPTIONS_PER_IMAGE rows per image (Karpathy layout)."""
    import numpy as np
    import pyarrow as pa

    image_numbers = np.random.default_rng(len(split_images)).permutation(600_000)[:sum(split_images.values())]
    splits = np.concatenate([np.repeat(np.array([split], dtype=object), count) for split, count in split_images.items()])
    rows = np.repeat(image_numbers, CAPTIONS_PER_IMAGE)
    image_ids = strings(prefix, "_", numbers(rows, 6))
    ids = strings(image_ids, "_", numbers(np.arange(len(rows)), 7))
    captions = strings(pa.array(np.array(CAPTION_WORDS, dtype=object)[np.arange(len(rows)) % len(CAPTION_WORDS)]),
                       " ", numbers(np.arange(len(rows)), 1))
    return pa.table({"id": ids, "path": strings(root, "/", image_ids, ".jpg"),
                     "label": pa.array(np.full(len(rows), -1), pa.int64()), "wnid": pa.array(np.repeat("", len(rows))),
                     "caption": captions, "image_id": image_ids, "split": pa.array(np.repeat(splits, CAPTIONS_PER_IMAGE),
                                                                                 pa.string())})


def generated_index(name: str, labels, source_ids, prompts):
    """A generated index (formats.GENERATED_COLUMNS) in shards of SHARD_SIZE rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = np.arange(len(labels))
    ids = strings(f"{name}_", numbers(rows, 7))
    uris = strings(f"zip:///results/paper/generated/{name}/shard-", numbers(rows // SHARD_SIZE, 5), ".zip#", ids,
                   ".png")
    labelled = pa.array(labels, pa.int64())
    wnids = pc.if_else(pc.greater_equal(labelled, 0), strings("n", numbers(1_440_764 + np.maximum(labels, 0) * 997, 8)),
                       "")
    captions = pc.if_else(pc.less(labelled, 0), prompts, "")
    return pa.table({"id": ids, "label": labelled, "wnid": wnids, "source_id": source_ids, "prompt": prompts,
                     "seed": pa.array(np.random.default_rng(len(rows)).integers(0, 2**63 - 1, len(rows)), pa.int64()),
                     "caption": captions, "uri": uris})


def make_indexes(directory) -> dict:
    """{dataset name: index path} for every dataset the paper's mixtures use (made once)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from contamination.io import write_parquet

    paths = {name: directory / f"{name}.parquet" for name in
             ("imagenet", "webvision", "coco", "flickr30k", "sd_imagenet", "sd_imagenet_complex", "sd_coco")}
    if all(path.is_file() for path in paths.values()):
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    imagenet_sizes = class_sizes(IMAGENET_TRAIN, 1000, 732, 1300, seed=0)
    tables = {
        "imagenet": class_index("/data/ILSVRC2012", imagenet_sizes, {"val": 50_000}, ".JPEG"),
        "webvision": class_index("/data/webvision", class_sizes(WEBVISION_TRAIN, 1000, 300, 10_000, seed=1),
                                 {"val": 50_000}, ".jpg"),
        "coco": caption_index("/data/coco/images", "coco", {"train": COCO_IMAGES, "val": 5000, "test": 5000}),
        "flickr30k": caption_index("/data/flickr30k/images", "flickr", {"train": FLICKR_IMAGES, "val": 1000,
                                                                         "test": 1000}),
    }
    class_labels = np.repeat(np.arange(1000), PER_CLASS_GENERATED)
    class_prompts = strings("A photo of class ", numbers(class_labels, 1))
    class_sources = strings("n", numbers(1_440_764 + class_labels * 997, 8))
    tables["sd_imagenet"] = generated_index("sd_imagenet", class_labels, class_sources, class_prompts)
    tables["sd_imagenet_complex"] = generated_index("sd_imagenet_complex", class_labels, class_sources,
                                                    strings("monochrome image of class ", numbers(class_labels, 1)))
    coco_train = tables["coco"].filter(pc.equal(tables["coco"]["split"], "train"))
    tables["sd_coco"] = generated_index("sd_coco", np.full(len(coco_train), -1), coco_train["id"].combine_chunks(),
                                        coco_train["caption"].combine_chunks())
    for name, table in tables.items():
        # As the workflow writes indexes: from pandas, whose strings are Arrow's large_string.
        schema = pa.schema([(field.name, pa.large_string() if field.type == pa.string() else field.type)
                            for field in table.schema])
        write_parquet(table.cast(schema), paths[name])
    return paths


def io_floor(spec: dict, base, by, out) -> None:
    """The baseline job: read what contamination.mixtures.manifests.read_items reads, write the base rows
    as a manifest."""
    import pandas as pd
    import pyarrow.parquet as pq

    from contamination.formats import INDEX_COLUMNS
    from contamination.io import write_parquet

    frames = []
    for path in [base] + ([by] if by else []):
        if set(INDEX_COLUMNS) <= set(pq.read_schema(path).names):
            frame = pd.read_parquet(path, columns=["id", "path", "label", "caption", "split"])
            frame = frame[frame["split"] == "train"].rename(columns={"path": "uri"})
        else:
            frame = pd.read_parquet(path, columns=["id", "uri", "label", "caption", "source_id"])
        frames.append(frame)
    manifest = frames[0][["id", "uri", "label", "caption"]].assign(origin=spec["base"])
    write_parquet(manifest, out)


def mixture_command(spec: dict, seed: int, indexes: dict, out_dir):
    """The workflow's command for one mixture (as workflow/rules/mixtures.smk runs it)."""
    spec = dict(spec, seed=seed)
    inputs = ["--base", str(indexes[spec["base"]])]
    if spec["kind"] != "subset":
        inputs += ["--by", str(indexes[spec["by"]])]
    return [sys.executable, "-m", "contamination", "mixture", "--spec", json.dumps(spec), *inputs,
            "--out", str(out_dir / f"{spec['name']}.parquet"), "--summary", str(out_dir / f"{spec['name']}.json")]


def floor_command(spec: dict, indexes: dict, out_dir):
    by = str(indexes[spec["by"]]) if spec["kind"] != "subset" else ""
    return [sys.executable, "-c", "import json, sys; from benchmarks.manifests import io_floor; "
            "io_floor(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] or None, sys.argv[4])",
            json.dumps(spec), str(indexes[spec["base"]]), by, str(out_dir / f"floor-{spec['name']}.parquet")]


def concurrently(commands, env, jobs: int) -> dict:
    """Wall seconds of running ``commands`` ``jobs`` at a time, as ``snakemake --cores <jobs>`` runs
    independent jobs; their CPU seconds summed, and the largest peak of any one."""
    import functools
    import time
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(functools.partial(run_command, env=env), commands))
    return {"seconds": time.perf_counter() - start, "cpu_seconds": sum(result["cpu_seconds"] for result in results),
            "peak_mib": max(result["peak_mib"] for result in results)}


def inputs_of(spec: dict):
    return spec["base"], spec.get("by") if spec["kind"] != "subset" else None


def stage_seconds(spec: dict, seed: int, indexes: dict, out_dir) -> dict:
    """CPU seconds of reading, building and writing one mixture, in this process."""
    from contamination.io import write_parquet
    from contamination.mixtures.manifests import build_mixture, read_items

    from benchmarks.measure import measured

    spec = dict(spec, seed=seed)
    seconds = {}
    with measured() as reading:
        base = read_items(indexes[spec["base"]], spec["base"])
        by = read_items(indexes[spec["by"]], spec["by"]) if spec["kind"] != "subset" else None
    with measured() as building:
        manifest, _ = build_mixture(spec, base, by)
    with measured() as writing:
        write_parquet(manifest, out_dir / "stages.parquet")
    for name, measurement in (("read", reading), ("build", building), ("write", writing)):
        seconds[name] = measurement.cpu_seconds
    return seconds


def run_group(workdir, quick: bool, long: bool):
    from contamination import config

    from benchmarks.measure import PROJECT

    paper = config.load()
    mixtures = paper["mixtures"]
    if quick:
        mixtures = [m for m in mixtures if m["name"] in ("in_sd_40", "in_wv_95", "co_sd_20", "imagenet_plus_sd_80")]
    indexes = make_indexes(workdir / "indexes")
    out_dir = workdir / "mixtures"
    out_dir.mkdir(exist_ok=True)
    env = project_environment()
    env["PYTHONPATH"] = str(PROJECT)
    # The floor depends only on the inputs: measured once per (base, by), next to the first
    # mixture that reads them.
    floors, results = {}, []
    for spec in mixtures:
        cases = {"ours": lambda: run_command(mixture_command(spec, paper["seed"], indexes, out_dir), env=env)}
        if inputs_of(spec) not in floors:
            cases["baseline"] = lambda: run_command(floor_command(spec, indexes, out_dir), env=env)
        measured = {name: runs[0] for name, runs in alternate(cases, repeats=1).items()}
        floors.setdefault(inputs_of(spec), measured.get("baseline"))
        summary = json.loads((out_dir / f"{spec['name']}.json").read_text())
        results.append({"name": spec["name"], "rows": summary["total"],
                        **{f"{side}_{key}": source[key] for side, source in
                           (("baseline", floors[inputs_of(spec)]), ("ours", measured["ours"]))
                           for key in ("seconds", "cpu_seconds", "peak_mib")}})
    heaviest = next(spec for spec in mixtures if spec["name"] == "in_sd_40")
    stages = stage_seconds(heaviest, paper["seed"], indexes, out_dir)
    jobs = len(os.sched_getaffinity(0))
    together = alternate({
        "baseline": lambda: concurrently([floor_command(spec, indexes, out_dir) for spec in mixtures], env, jobs),
        "ours": lambda: concurrently([mixture_command(spec, paper["seed"], indexes, out_dir) for spec in mixtures],
                                     env, jobs),
    }, repeats=1)
    return summary_rows(results, stages, quick) + [concurrent_row(together, len(mixtures), jobs, quick)]


def concurrent_row(together: dict, count: int, jobs: int, quick: bool):
    baseline, ours = together["baseline"][0], together["ours"][0]
    return row(GROUP, f"all {count} mixtures{' (quick)' if quick else ''}, {jobs} jobs at a time", unit="s",
               basis="wall", baseline_label="I/O floor jobs", baseline=baseline["seconds"], ours=ours["seconds"],
               higher_is_better=False, baseline_peak_mib=baseline["peak_mib"], ours_peak_mib=ours["peak_mib"],
               target="< 30 s and < 4 GiB", target_met=ours["seconds"] < 30 and jobs * ours["peak_mib"] < 4096,
               note=(f"as snakemake --cores {jobs} runs them on this machine; CPU {ours['cpu_seconds']:.1f} s "
                     f"(floor {baseline['cpu_seconds']:.1f} s); memory: {jobs} x the largest job's peak "
                     f"bounds the total"))


def summary_rows(results, stages: dict, quick: bool):
    total = {key: sum(result[key] for result in results) for key in
             ("baseline_seconds", "baseline_cpu_seconds", "ours_seconds", "ours_cpu_seconds")}
    peak = {side: max(result[f"{side}_peak_mib"] for result in results) for side in ("baseline", "ours")}
    largest = max(results, key=lambda result: result["ours_peak_mib"])
    slowest = max(results, key=lambda result: result["ours_cpu_seconds"])
    scope = f"{len(results)} mixtures" + (" (quick: a sample)" if quick else "")
    return [
        row(GROUP, f"all {scope}, one job each", unit="s", baseline_label="I/O floor jobs",
            baseline=total["baseline_cpu_seconds"], ours=total["ours_cpu_seconds"], higher_is_better=False,
            baseline_peak_mib=peak["baseline"], ours_peak_mib=peak["ours"],
            target="< 30 s and < 4 GiB", target_met=total["ours_cpu_seconds"] < 30 and peak["ours"] < 4096,
            note=(f"wall {total['ours_seconds']:.1f} s (floor {total['baseline_seconds']:.1f} s) at this load; "
                  f"largest peak {largest['name']} ({largest['rows']:,} rows), slowest {slowest['name']} "
                  f"({slowest['ours_cpu_seconds']:.1f} s); in_sd_40 in one process: read "
                  f"{stages['read']:.1f} s, build {stages['build']:.1f} s, write {stages['write']:.1f} s"),
            mixtures=results, in_sd_40_stages=stages),
    ]


if __name__ == "__main__":
    group_main(run_group, __doc__.splitlines()[0])
