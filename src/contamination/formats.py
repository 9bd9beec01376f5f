"""The tables that flow between workflow stages: their columns and the item URI scheme.

index (one Parquet per real source, ``results/<run>/index/<source>.parquet``), one row per item:
    id        str   unique within the source, e.g. "n01440764_10026" or "coco_391895_770337"
    path      str   absolute path of the image file
    label     int   class index: position in sorted wnid order among the classes in use (ImageNet-1k
                    indices, or 0..K-1 with a class subset, config sources.imagenet.classes); -1
                    where the source has no class
    wnid      str   WordNet id of the class; "" where none
    caption   str   caption text; "" where none (COCO and Flickr30k: one row per caption)
    image_id  str   groups the caption rows of one image; equals id for class datasets
    split     str   "train", "val" or "test" (Karpathy: "restval" counts as "train")

prompts (one Parquet per generated dataset, ``results/<run>/prompts/<name>.parquet``), one row per
image to make, in generation order (row r goes to shard r // shard_size):
    id, label, wnid, source_id (the class wnid, or the id of the caption row the prompt is),
    prompt (str), seed (int64, the image's own noise seed)

generated index (``results/<run>/generated/<name>/index.parquet``): the prompt columns plus
    caption (= prompt for caption datasets, "" otherwise), uri (see below)

manifest (one Parquet per mixture, ``results/<run>/mixtures/<name>.parquet``), one row per
training item:
    id      str   unique within the manifest
    uri     str   where the image is (see below)
    label   int   class index, -1 for caption datasets
    caption str   "" for class datasets
    origin  str   the source or generated dataset the item comes from (e.g. "imagenet")

An item URI is either an absolute file path, or ``zip://<absolute shard path>#<member name>`` for
an image stored inside a generation shard.
"""

INDEX_COLUMNS = ["id", "path", "label", "wnid", "caption", "image_id", "split"]
PROMPT_COLUMNS = ["id", "label", "wnid", "source_id", "prompt", "seed"]
GENERATED_COLUMNS = PROMPT_COLUMNS + ["caption", "uri"]
MANIFEST_COLUMNS = ["id", "uri", "label", "caption", "origin"]

SHARD_SCHEME = "zip://"
NO_LABEL = -1


def shard_uri(shard_path, member: str) -> str:
    return f"{SHARD_SCHEME}{shard_path}#{member}"


def parse_uri(uri: str):
    """Return ``(path, member)``; member is None for a plain file."""
    if uri.startswith(SHARD_SCHEME):
        path, _, member = uri[len(SHARD_SCHEME):].rpartition("#")
        return path, member
    return uri, None
