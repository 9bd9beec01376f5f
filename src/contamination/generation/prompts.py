"""Prompt tables: one row per image to generate, each with its own seed (formats.PROMPT_COLUMNS).

Three kinds of prompts (config ``generated[].prompts``):

- ``class_template`` (SD-ImageNet, paper section 3.1): ``per_class`` images per ImageNet class,
  all from ``template`` filled with the class's first name, e.g. "A photo of tench".
- ``class_complex`` (complex SD-ImageNet, section 5.2 and appendix A.5): prompts combining a
  qualifier, a medium, one of the class's synonyms and a context, e.g. "monochrome image of
  tench taken with iPhone"; 11 x 4 x 5 = 220 distinct prompts per synonym.
- ``captions`` (SD-COCO, section 3.1): one image per caption of each COCO training image.

Every image's seed is a hash of (global seed, dataset name, image id): it does not depend on the
row's position, the shard size, the batch size or the number of GPUs, so any image can be
regenerated alone.
"""

import hashlib
import json

from contamination.config import with_defaults
from contamination.errors import ConfigError, DataError
from contamination.formats import NO_LABEL, PROMPT_COLUMNS
from contamination.io import read_parquet, write_parquet

SEED_BITS = 63  # seeds are non-negative int64 values: Parquet and torch.Generator both take them
CLASS_TABLE_COLUMNS = ["label", "wnid", "names"]
CAPTION_INDEX_COLUMNS = ["id", "image_id", "caption", "split"]


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("prompts", help="build the prompt table of a generated dataset")
    parser.add_argument(
        "--spec",
        required=True,
        type=parse_spec,
        help="JSON: one entry of config `generated` plus seed, size and complex_prompts (defaults may be left out)",
    )
    parser.add_argument("--index", required=True, help="ImageNet class table, or the COCO index for captions")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_prompts)


def parse_spec(text: str) -> dict:
    spec = with_defaults("generated[]", json.loads(text))
    return dict(spec, complex_prompts=with_defaults("complex_prompts", spec["complex_prompts"]))


def run_prompts(args) -> None:
    table = build_prompt_table(args.spec, read_parquet(args.index), args.index)
    write_parquet(table, args.out)
    print(f"{args.spec['name']}: {len(table)} prompts written to {args.out}")


def build_prompt_table(spec: dict, index, index_path):
    """The prompt table of the generated dataset ``spec`` (see the module docstring)."""
    import pandas as pd

    kind = spec["prompts"]
    if kind == "class_template":
        rows = class_template_rows(spec, class_table(index, index_path))
    elif kind == "class_complex":
        rows = class_complex_rows(spec, class_table(index, index_path))
    else:
        rows = caption_rows(spec, index, index_path)
    table = pd.DataFrame(rows, columns=["id", "label", "wnid", "source_id", "prompt"])
    table["label"] = table["label"].astype("int64")
    table["seed"] = pd.Series([image_seed(spec["seed"], spec["name"], i) for i in table["id"]], dtype="int64")
    check_size(spec, table, index_path)
    return table[PROMPT_COLUMNS]


def image_seed(global_seed: int, dataset: str, item_id: str) -> int:
    """The noise seed of one image, in [0, 2**63): a stable hash, the same on every machine."""
    key = json.dumps([global_seed, dataset, item_id]).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def spec_key(spec: dict, field: str) -> str:
    return f"generated[name={spec['name']}].{field}"


def class_table(index, index_path) -> list:
    """(label, wnid, names) per class, in label order."""
    require_columns(index, CLASS_TABLE_COLUMNS, index_path)
    classes = []
    for row in index.sort_values("label").itertuples(index=False):
        names = [str(name) for name in row.names]
        if not names:
            raise DataError(f"{index_path}: class {row.wnid} has no names")
        classes.append((int(row.label), str(row.wnid), names))
    return classes


def class_template_rows(spec: dict, classes: list) -> list:
    rows = []
    for label, wnid, names in classes:
        prompt = render(spec["template"], spec_key(spec, "template"), name=names[0])
        for k in range(spec["per_class"]):
            rows.append((class_item_id(spec, wnid, k), label, wnid, wnid, prompt))
    return rows


def class_complex_rows(spec: dict, classes: list) -> list:
    """``per_class`` prompts per class, cycling through a seeded permutation of its prompt space.

    The paper (appendix A.5) draws each prompt's parts i.i.d. uniformly. Cycling through a random
    permutation of the distinct prompts gives each image the same uniform marginal distribution,
    but every distinct prompt is used before any repeats, so the per-class prompt counts differ
    by at most one instead of varying by chance: the same distribution with lower variance.
    """
    rows = []
    for label, wnid, names in classes:
        space = complex_prompt_space(names, spec["complex_prompts"])
        order = sorted(space, key=lambda prompt: prompt_rank(spec, wnid, prompt))
        for k in range(spec["per_class"]):
            rows.append((class_item_id(spec, wnid, k), label, wnid, wnid, order[k % len(order)]))
    return rows


def prompt_rank(spec: dict, wnid: str, prompt: str) -> int:
    # Sorting by a keyed hash is a uniformly random permutation that, unlike a library
    # shuffle, is defined by this line alone and so never changes with a library version.
    return image_seed(spec["seed"], spec["name"], f"{wnid}\n{prompt}")


def complex_prompt_space(names: list, complex_prompts: dict) -> list:
    """The distinct prompts of one class: qualifiers x media x synonyms x contexts.

    Each is the template filled in with whitespace collapsed (an empty qualifier or context leaves
    no stray space), in that nested order, duplicates dropped (first occurrence kept).
    """
    template = complex_prompts["template"]
    prompts = (
        " ".join(render(template, "complex_prompts.template", qualifier=q, medium=m, name=n, context=c).split())
        for q in complex_prompts["qualifiers"]
        for m in complex_prompts["media"]
        for n in names
        for c in complex_prompts["contexts"]
    )
    return list(dict.fromkeys(prompts))


def render(template: str, key: str, **fields) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(
            f"{key}: {template!r} cannot be filled with the fields {sorted(fields)} ({error!r})"
        ) from error


def class_item_id(spec: dict, wnid: str, k: int) -> str:
    return f"{spec['name']}_{wnid}_{k:05d}"


def caption_rows(spec: dict, index, index_path) -> list:
    """The first ``captions_per_image`` captions of every training image, in index order."""
    require_columns(index, CAPTION_INDEX_COLUMNS, index_path)
    wanted = spec["captions_per_image"]
    train = index[index["split"] == "train"]
    captions_of = {}
    for row in train.itertuples(index=False):
        captions_of.setdefault(row.image_id, []).append((str(row.id), str(row.caption)))
    rows = []
    for image_id, captions in captions_of.items():
        if len(captions) < wanted:
            raise DataError(
                f"{index_path}: training image {image_id} has {len(captions)} captions, but "
                f"{spec_key(spec, 'captions_per_image')} asks for {wanted}"
            )
        for caption_id, caption in captions[:wanted]:
            rows.append((f"{spec['name']}_{caption_id}", NO_LABEL, "", caption_id, caption))
    return rows


def check_size(spec: dict, table, index_path) -> None:
    """The table must have the size the workflow planned its shards for from the config alone."""
    if len(table) == spec["size"]:
        return
    if spec["prompts"] == "captions":
        key, per_item_field, unit = "sources.coco.train_images", "captions_per_image", "training images"
    else:
        key, per_item_field, unit = "sources.imagenet.num_classes", "per_class", "classes"
    per_item = spec[per_item_field]
    found = len(table) // per_item
    raise ConfigError(
        f"{key}: the config expects {spec['size']} prompts for '{spec['name']}' ({key} x "
        f"{spec_key(spec, per_item_field)} = {spec['size'] // per_item} x {per_item}), but {index_path} "
        f"has {found} {unit}: set {key} to {found}"
    )


def require_columns(frame, columns: list, path) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (has {list(frame.columns)})")
