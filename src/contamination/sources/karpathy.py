"""COCO and Flickr30k captions with Karpathy's splits (dataset_coco.json, dataset_flickr30k.json).

JSON read: ``{"images": [{"filename", "split", "sentences": [{"raw", "sentid"}], ...}]}``; COCO
images also have ``filepath`` (train2014 / val2014, a folder under the root) and ``cocoid``;
Flickr30k images all sit in ``<root>/flickr30k-images/``.

One row per caption, in the JSON's order of images and of their sentences: downstream takes the
first N captions of each image in index order. Karpathy's "restval" (the COCO val2014 images
outside his val and test) is training data, as in the paper and in BLIP.
"""

import json
from pathlib import Path

from contamination.errors import DataError
from contamination.sources.common import caption_row, index_frame, require_dir, require_file

SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
FLICKR30K_IMAGES = "flickr30k-images"


def index_coco(root, karpathy_json):
    root = require_dir(root, "COCO")

    def locate(image):
        return root / image["filepath"] / image["filename"], f"coco_{int(image['cocoid'])}"

    return caption_rows(root, karpathy_json, locate)


def index_flickr30k(root, karpathy_json):
    images = require_dir(Path(root) / FLICKR30K_IMAGES, "Flickr30k images")

    def locate(image):
        return images / image["filename"], f"flickr30k_{Path(image['filename']).stem}"

    return caption_rows(Path(root), karpathy_json, locate)


def caption_rows(root: Path, karpathy_json, locate):
    """``locate(image entry) -> (path, image id)``; ids of rows are ``<image id>_<sentid>``."""
    path = require_file(karpathy_json, "Karpathy split JSON")
    try:
        images = json.loads(path.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a Karpathy split JSON with an 'images' list: {error}") from error
    rows = []
    for number, image in enumerate(images):
        try:
            image_path, image_id = locate(image)
            split = SPLITS.get(image["split"])
            if split is None:
                raise DataError(f"{path}: images[{number}] has split {image['split']!r}, expected one of {sorted(SPLITS)}")
            for number_in_image, sentence in enumerate(image["sentences"]):
                caption = sentence["raw"].strip()
                if not caption:
                    # An empty caption would become an unconditional prompt for Stable Diffusion.
                    raise DataError(f"{path}: images[{number}].sentences[{number_in_image}] has an empty caption "
                                    f"({sentence['raw']!r})")
                rows.append(caption_row(f"{image_id}_{int(sentence['sentid'])}", image_path, caption, image_id, split))
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{path}: images[{number}] lacks a field or has a bad value: {error!r}") from error
    return index_frame(rows, path)
