"""A card for every generated dataset, and the check of a dataset against its card.

``generated-card`` writes ``results/<run>/generated/<name>/card.json`` and ``README.md`` beside the
shards: the generator (pipeline directory, class, the fingerprint every shard recorded, the licence
as the config states it), every sampling setting, the prompt recipe, the seed rule, how images are
stored (for a format-matched dataset the qualities, subsamplings and sizes it drew), the counts
per class, the SHA-256 of every shard, and how to reproduce one image from its row. The settings
come from generate.effective_settings; a shard whose recorded sampler settings differ from them
stops the card (it would describe other images).

``verify-generated <name> --results results/<run>`` checks the dataset against its card: every
shard present with its SHA-256, the row counts (per shard, per class, in all) of the shards and
the index, and N random rows regenerated from their prompt and seed and compared with the stored
image. The batch an image is made in and torch's thread count move a few pixels by one 8-bit
level, so each row is regenerated in its batch (rows [k * batch_size, (k + 1) * batch_size) of its
shard) with its thread count, both recorded per row (generate.ROUNDING_COLUMNS). Then on the CPU,
for a row made on the CPU with the same kernel instruction set and package versions, the decoded
pixels must be identical. Otherwise (a GPU on either side, other versions, or a shard from before
these columns) a row passes if the mean absolute difference of its pixels is at most
``--tolerance`` 8-bit levels (default GPU_TOLERANCE: an assumption, not measured here: this
machine has no GPU), and the output says why. Any failure exits with status 2 and lists every
problem found.
"""

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

from contamination.errors import DataError
from contamination.formats import parse_uri
from contamination.generation import generate
from contamination.generation.format_match import SUBSAMPLING_NAMES, decoded, restored
from contamination.generation.generate import (COMPVIS_TIMESTEPS, PIPELINE_SCHEDULER, ROUNDING_COLUMNS,
                                               SAMPLER_COLUMNS, SAMPLERS)
from contamination.generation.prompts import SEED_BITS
from contamination.generation.shards import read_metadata
from contamination.io import atomic_path, read_parquet, write_json
from contamination.records import model_fingerprint, sha256_of_file

CARD_JSON, CARD_README = "card.json", "README.md"
# Mean absolute pixel difference (8-bit levels) a regenerated row may have where bit-identity is
# not expected. Assumption: a GPU's kernels change float rounding, which over 50 denoising steps
# moves pixels by a level or two on average; other weights, prompts or seeds differ by tens.
GPU_TOLERANCE = 2.0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("generated-card", help="the card (card.json, README.md) of a generated dataset")
    parser.add_argument("--settings", required=True, type=json.loads,
                        help="JSON: how the dataset is made (generation.generate.effective_settings)")
    parser.add_argument("--index", required=True, help="the dataset's index")
    parser.add_argument("--shards", required=True, nargs="+", help="its shards, in order")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-readme", required=True)
    parser.set_defaults(run=run_card)

    parser = subparsers.add_parser("verify-generated", help="check a generated dataset against its card; regenerate rows")
    parser.add_argument("name", help="the generated dataset")
    parser.add_argument("--results", required=True, help="the run's results directory, e.g. results/paper")
    parser.add_argument("--rows", type=int, default=4, help="random rows to regenerate (default 4; 0: none)")
    parser.add_argument("--id", action="append", default=[], dest="ids", help="also regenerate this row (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choice of rows")
    parser.add_argument("--pipeline", help="the generator's directory, if not where the card says")
    parser.add_argument("--tolerance", type=float, default=GPU_TOLERANCE,
                        help="mean absolute pixel difference allowed where bit-identity is not expected (8-bit levels)")
    parser.add_argument("--save-dir", help="also write the regenerated images here, as <id>.<ext>")
    parser.set_defaults(run=run_verify)


# ---- the card -------------------------------------------------------------------------------


def run_card(args) -> None:
    card = build_card(args.settings, read_parquet(args.index), args.shards)
    write_json(card, args.out_json)
    with atomic_path(args.out_readme) as temporary:
        temporary.write_text(render_readme(card))
    print(f"card of {card['name']}: {card['counts']['images']} images in {len(card['shards'])} shards, "
          f"written to {args.out_json} and {args.out_readme}")


def build_card(settings: dict, index, shard_paths) -> dict:
    import pandas as pd

    shards, frames = [], []
    for path in shard_paths:
        frame = shard_metadata(path)
        check_recorded(frame, settings["sampling"], path)
        shards.append({"file": Path(path).name, "sha256": sha256_of_file(path), "rows": len(frame)})
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    if sorted(rows["id"]) != sorted(index["id"]):
        raise DataError(f"the index of {settings['name']} and its shards {shard_paths[0]}... hold different rows; "
                        "merge the shards again")
    return {
        "name": settings["name"],
        "generator": dict(settings["generator"], fingerprints=sorted(rows["model_fingerprint"].unique())),
        "sampling": settings["sampling"],
        "storage": settings["storage"],
        "prompts": settings["prompts"],
        "seed_rule": seed_rule(settings),
        "format": stored_format(rows, settings),
        "format_control": settings["format_control"],
        "made_on": {
            **{column: sorted(rows[column].unique().tolist()) for column in ("device", *ROUNDING_COLUMNS)
               if column in rows},
            "versions": [json.loads(text) for text in sorted(rows["versions"].unique())],
            "safety_checker_flagged": int(rows["nsfw_detected"].sum()),
        },
        "counts": counts(index),
        "shards": shards,
    }


def shard_metadata(path):
    try:
        return read_metadata(path)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable generation shard ({error})") from error


def check_recorded(frame, sampling: dict, path) -> None:
    """The sampler settings every row of a shard recorded are the ones the card states."""
    for column in SAMPLER_COLUMNS:
        recorded = frame[column].drop_duplicates().tolist()
        if recorded != [sampling[column]]:
            raise DataError(f"{path}: its images were made with {column} {recorded}, but the config says "
                            f"{sampling[column]!r}; the card would describe other images: generate them again")


def seed_rule(settings: dict) -> dict:
    origin = settings["prompts"]["name"]
    rule = {
        "global_seed": settings["seed"],
        "noise_seed": f"int.from_bytes(hashlib.blake2b(json.dumps([{settings['seed']}, \"{origin}\", id]).encode(), "
                      f"digest_size=8).digest(), 'big') >> {64 - SEED_BITS}  (contamination.generation.prompts.image_seed)",
        "noise": "each image's initial latents come from its own torch.Generator('cpu').manual_seed(noise_seed), "
                 "so an image depends on its row alone (up to the float rounding of the batch it is made in), "
                 "not on its shard or GPU count",
    }
    if settings["format_control"]:
        rule["format_pick"] = (f"the format of profile row image_seed({settings['seed']}, \"{settings['name']}\", id) "
                               "% rows of the real source's profile (contamination.generation.format_match.profile_row)")
    return rule


def stored_format(rows, settings: dict) -> dict:
    """How the images are stored: the configured format, or the drawn JPEG formats."""
    if not settings["format_control"]:
        storage = settings["storage"]
        quality = None if storage["image_format"] == "png" else storage["image_quality"]
        return {"image_format": storage["image_format"], "image_quality": quality,
                "width": settings["sampling"]["width"], "height": settings["sampling"]["height"]}
    def histogram(values):
        return {str(key): int(count) for key, count in values.value_counts().sort_index().items()}

    return {
        "image_format": "jpeg",
        "matched_to": settings["format_control"]["real_source"],
        "quality": histogram(rows["jpeg_quality"]),
        "subsampling": histogram(rows["jpeg_subsampling"].map(SUBSAMPLING_NAMES)),
        "mode": histogram(rows["stored_mode"]),
        "width": quantiles(rows["stored_width"]),
        "height": quantiles(rows["stored_height"]),
    }


def quantiles(values) -> dict:
    return {name: int(values.quantile(q, interpolation="lower")) for name, q in
            (("min", 0), ("median", 0.5), ("max", 1))}


def counts(index) -> dict:
    """Images in all and per class (wnid, in label order); caption datasets have no classes."""
    labelled = index[index["label"] >= 0]
    per_class = labelled.groupby(["label", "wnid"]).size()
    return {"images": len(index), "per_class": {wnid: int(count) for (_, wnid), count in per_class.items()}}


# ---- README ---------------------------------------------------------------------------------


def scheduler_line(scheduler: str) -> str:
    """How to set config scheduler ``scheduler`` on a loaded pipeline ``pipe`` (generate.make_scheduler)."""
    if scheduler == PIPELINE_SCHEDULER:
        return "keep the scheduler saved with it"
    if scheduler in SAMPLERS:
        class_name, options = SAMPLERS[scheduler]
        arguments = ", ".join(f"{key}={value!r}" for key, value in {**options, **COMPVIS_TIMESTEPS}.items())
        return f"set `pipe.scheduler = diffusers.{class_name}.from_config(pipe.scheduler.config, {arguments})`"
    return f"set `pipe.scheduler = diffusers.{scheduler}.from_config(pipe.scheduler.config)`"


def render_readme(card: dict) -> str:
    name, generator, sampling, storage = card["name"], card["generator"], card["sampling"], card["storage"]
    per_class = card["counts"]["per_class"]
    lines = [
        f"# Generated dataset `{name}`",
        "",
        f"{card['counts']['images']} images in {len(card['shards'])} shards (`shard-NNNNN.zip`: the images and "
        "`metadata.parquet`, one row per image), indexed in `index.parquet`. Written by the contamination "
        "workflow; `card.json` holds everything below as data.",
        "",
        "## Generator",
        "",
        f"- `{generator['name']}`: pipeline `{generator['pipeline']}` (diffusers `{generator['class']}`)",
        f"- fingerprint (BLAKE2b-128 over its files, as every shard recorded): {', '.join(generator['fingerprints'])}",
        f"- licence (as the config states it; not checked): **{generator['license']}**. Read the model's own "
        "licence before you publish or train on these images.",
        "- made on: " + "; ".join(f"{column} {', '.join(map(str, card['made_on'].get(column, ['not recorded'])))}"
                                  for column in ("device", *ROUNDING_COLUMNS)),
        f"- images flagged by a safety checker: {card['made_on']['safety_checker_flagged']}",
        "",
        "## Sampling settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| `{key}` | `{json.dumps(value)}` |" for key, value in sampling.items()],
        "",
        "## Prompts and seeds",
        "",
        f"Prompt recipe (`generated` entry `{card['prompts']['name']}`): `{json.dumps(card['prompts'])}`",
        "",
        *[f"- {key}: `{value}`" if key != "noise" else f"- {key}: {value}" for key, value in card["seed_rule"].items()],
        "",
        "## Format",
        "",
        f"`{json.dumps(card['format'])}`",
        "",
    ]
    if card["format_control"]:
        lines += [f"Re-stored from `{card['format_control']['from']}` (stored there as `{json.dumps(storage)}`): "
                  f"each image centre-cropped to the size it drew, resized (Lanczos) and encoded as JPEG, with the "
                  f"quality, subsampling and colour mode of a profiled `{card['format_control']['real_source']}` "
                  "training image (contamination.generation.format_match).", ""]
    lines += [
        "## Counts",
        "",
        f"{card['counts']['images']} images" + (
            f"; {len(per_class)} classes, {min(per_class.values())} to {max(per_class.values())} per class."
            if per_class else "; no classes (one image per caption)."),
        "",
    ]
    if per_class:
        lines += ["<details><summary>per class</summary>", "", "| wnid | images |", "|---|---|",
                  *[f"| {wnid} | {count} |" for wnid, count in per_class.items()], "", "</details>", ""]
    lines += [
        "## Shards (SHA-256, `sha256sum -c` format)",
        "",
        "```",
        *[f"{shard['sha256']}  {shard['file']}" for shard in card["shards"]],
        "```",
        "",
        "## Reproduce an image from its row",
        "",
        f"    python -m contamination verify-generated {name} --results <results/run> --id <row id> --rows 0 --save-dir <dir>",
        "",
        "regenerates the row, compares it with the stored image and writes it to `<dir>`. By hand: take the "
        "row's `prompt` and `seed` (`index.parquet`), load the pipeline above with "
        f"`diffusers.{generator['class']}.from_pretrained(<dir>, torch_dtype=torch.{sampling['dtype']})` (with "
        f"`safety_checker=None` if it has one), {scheduler_line(sampling['scheduler'])} and call "
        "`pipe(prompt=[prompt], negative_prompt=[negative_prompt], height=height, width=width, "
        "num_inference_steps=steps, guidance_scale=guidance_scale, generator=[torch.Generator('cpu').manual_seed(seed)], "
        "**call_arguments)` with the settings above. For the exact pixels on a CPU, generate the row's whole batch "
        "with the row's `torch_threads` (`torch.set_num_threads`): the rows [k * batch_size, (k + 1) * batch_size) "
        "of its shard's `metadata.parquet` that hold it, in order (another batch or thread count moves a few pixels "
        "by one level).",
        "",
    ]
    if card["format_control"]:
        lines[-1:-1] = ["Then store it as `storage` above says and re-store it in the row's format: "
                        "`contamination.generation.format_match.restored(image, pick)` with the row's `stored_width`, "
                        "`stored_height`, `stored_mode`, `jpeg_subsampling` and `jpeg_quality` as the pick's width, "
                        "height, mode, subsampling and quality.", ""]
    return "\n".join(lines)


# ---- verification ---------------------------------------------------------------------------


def run_verify(args) -> None:
    directory = Path(args.results) / "generated" / args.name
    card_path = directory / CARD_JSON
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"verify-generated {args.name}: cannot read its card {card_path} ({error}); "
                        f"make it with `snakemake {card_path}`") from error
    problems, intact = check_shards(card, directory)
    index = read_index(directory, problems)
    if index is not None:
        problems += check_counts(card, index, directory, intact)
        chosen = chosen_ids(index, args.rows, args.ids, args.seed, problems)
        problems += check_regenerated(card, directory, index, chosen, intact, args)
    if problems:
        raise DataError(f"verify-generated {args.name}: {len(problems)} problem(s) in {directory}:\n  - "
                        + "\n  - ".join(problems))
    print(f"verify-generated {args.name}: ok ({card['counts']['images']} images, {len(card['shards'])} shards match "
          "their checksums and counts; regenerated rows match)")


def check_shards(card: dict, directory: Path):
    """(problems, names of the shards present with their card's SHA-256)."""
    problems, intact = [], set()
    for shard in card["shards"]:
        path = directory / shard["file"]
        if not path.is_file():
            problems.append(f"shard {shard['file']} is missing")
        elif sha256_of_file(path) != shard["sha256"]:
            problems.append(f"shard {shard['file']} has changed: SHA-256 {sha256_of_file(path)}, the card says {shard['sha256']}")
        else:
            intact.add(shard["file"])
    return problems, intact


def read_index(directory: Path, problems: list):
    try:
        return read_parquet(directory / "index.parquet")
    except (OSError, ValueError) as error:
        problems.append(f"cannot read its index {directory / 'index.parquet'} ({error})")
        return None


def check_counts(card: dict, index, directory: Path, intact: set) -> list:
    problems = []
    found = counts(index)
    if found["images"] != card["counts"]["images"]:
        problems.append(f"the index has {found['images']} rows, the card says {card['counts']['images']}")
    differing = sorted(wnid for wnid in set(found["per_class"]) | set(card["counts"]["per_class"])
                       if found["per_class"].get(wnid) != card["counts"]["per_class"].get(wnid))
    if differing:
        problems.append(f"{len(differing)} classes have other counts than the card says, e.g. {differing[0]}: "
                        f"{found['per_class'].get(differing[0], 0)} in the index, "
                        f"{card['counts']['per_class'].get(differing[0], 0)} in the card")
    for shard in card["shards"]:
        if shard["file"] in intact and len(shard_metadata(directory / shard["file"])) != shard["rows"]:
            problems.append(f"shard {shard['file']} does not hold the {shard['rows']} rows the card says")
    return problems


def chosen_ids(index, rows: int, ids: list, seed: int, problems: list) -> list:
    """``rows`` ids drawn at random (seeded), then ``ids``; unknown ids are problems."""
    import numpy as np

    picked = np.random.default_rng(seed).choice(len(index), size=min(rows, len(index)), replace=False)
    known = set(index["id"])
    problems += [f"no row has id {item_id!r}" for item_id in ids if item_id not in known]
    return list(dict.fromkeys([*index["id"].iloc[np.sort(picked)], *(i for i in ids if i in known)]))


def check_regenerated(card: dict, directory: Path, index, ids: list, intact: set, args) -> list:
    """Regenerate rows ``ids`` (those in intact shards) and compare them with the stored images."""
    if not ids:
        return []
    pipeline_dir = args.pipeline or card["generator"]["pipeline"]
    if not Path(pipeline_dir).is_dir():
        return [f"cannot regenerate rows: the generator {pipeline_dir} does not exist (pass --pipeline)"]
    fingerprint = model_fingerprint(pipeline_dir)
    if fingerprint not in card["generator"]["fingerprints"]:
        return [f"cannot regenerate rows: the generator {pipeline_dir} has fingerprint {fingerprint}, but the images "
                f"were made by {card['generator']['fingerprints']}"]
    settings = dict(card["sampling"], **card["storage"])
    pipeline = generate.load_pipeline(pipeline_dir, settings)
    shard_of = {row.id: Path(parse_uri(row.uri)[0]).name for row in index.itertuples()}
    problems = []
    for shard in dict.fromkeys(shard_of[item_id] for item_id in ids):
        wanted = [item_id for item_id in ids if shard_of[item_id] == shard]
        if shard not in intact:
            problems.append(f"rows {wanted} not regenerated: their shard {shard} is missing or changed")
            continue
        metadata = shard_metadata(directory / shard)
        with zipfile.ZipFile(directory / shard) as archive:
            for item_id, regenerated, reasons in regenerated_rows(pipeline, metadata, wanted, card, settings):
                row = metadata.loc[metadata["id"] == item_id].iloc[0]
                stored = pixels(archive.read(row["member"]))
                if args.save_dir:
                    save(regenerated, Path(args.save_dir) / row["member"])
                problems += compared(item_id, stored, pixels(regenerated), reasons, args.tolerance)
    return problems


def regenerated_rows(pipeline, metadata, ids: list, card: dict, settings: dict):
    """(id, encoded image as stored, why its pixels may differ: [] if they must be identical) for
    every id, each made in its recorded batch of the shard's rows with its recorded thread count."""
    import torch

    batches = {}
    for item_id in ids:
        position = int(metadata.index[metadata["id"] == item_id][0])
        row = metadata.iloc[position]
        size = int(row["batch_size"]) if "batch_size" in metadata else 1
        start = position - position % size
        if start not in batches:
            batch = metadata.iloc[start:start + size]
            if "torch_threads" in metadata:
                torch.set_num_threads(int(row["torch_threads"]))
            batches[start] = generate.generate_images(pipeline, batch["prompt"], batch["seed"], settings)[0]
        encoded = generate.encode_image(batches[start][position - start], settings)
        if card["format_control"]:
            pick = SimpleNamespace(width=row["stored_width"], height=row["stored_height"], mode=row["stored_mode"],
                                   subsampling=row["jpeg_subsampling"], quality=row["jpeg_quality"])
            encoded = restored(decoded(encoded), pick)
        yield item_id, encoded, inexact_reasons(row, metadata, pipeline.device)


def inexact_reasons(row, metadata, device) -> list:
    """Why a regenerated row's pixels may differ from the stored ones by float rounding; [] if
    they must be identical: made and remade on the CPU, in the same batch, with the same thread
    count, kernel instruction set and package versions."""
    import torch

    reasons = []
    if device.type != "cpu" or row["device"] != "cpu":
        reasons.append(f"made on {row['device']}, regenerated on {device.type}")
    missing = [column for column in ROUNDING_COLUMNS if column not in metadata]
    if missing:
        reasons.append(f"its shard does not record {', '.join(missing)}")
    elif row["cpu_capability"] != torch.backends.cpu.get_cpu_capability():
        reasons.append(f"made with {row['cpu_capability']} kernels, regenerated with "
                       f"{torch.backends.cpu.get_cpu_capability()}")
    if json.loads(row["versions"]) != generate.generation_versions():
        reasons.append(f"made with the packages {row['versions']}")
    return reasons


def pixels(encoded: bytes):
    import numpy as np

    return np.asarray(decoded(encoded), dtype=np.int16)


def compared(item_id: str, stored, regenerated, reasons: list, tolerance: float) -> list:
    import numpy as np

    if stored.shape != regenerated.shape:
        return [f"row {item_id}: regenerated {regenerated.shape[1]}x{regenerated.shape[0]} px, stored "
                f"{stored.shape[1]}x{stored.shape[0]} px"]
    difference = np.abs(stored - regenerated)
    mean, largest = float(difference.mean()), int(difference.max())
    exact = not reasons
    print(f"  {item_id}: mean absolute difference {mean:.4f}, largest {largest} "
          f"({'must be identical' if exact else f'tolerance {tolerance}: ' + '; '.join(reasons)})", flush=True)
    if exact and largest:
        return [f"row {item_id}: regenerated on the CPU as it was made, but {int((difference > 0).sum())} pixel "
                f"values differ (by up to {largest})"]
    if not exact and mean > tolerance:
        return [f"row {item_id}: regenerated pixels differ by {mean:.3f} levels on average, more than the "
                f"tolerance {tolerance}"]
    return []


def save(encoded: bytes, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(encoded)
