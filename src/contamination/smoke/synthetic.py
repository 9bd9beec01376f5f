"""Tiny synthetic datasets written in the real on-disk layouts (the smoke run's "real" data).

The smoke run reads what this writes (under results/<run>/synthetic/, config.source_location)
in place of every ``sources.<name>`` location, so the real adapters (contamination.sources) read
it exactly as they read ImageNet, WebVision, COCO and Flickr30k. Each root it writes holds a
marker file (io.OWNER_MARKER); it refuses to replace or write into a non-empty directory without
one, so a root pointed at real data by mistake is never touched.

Every image is a coloured shape on a background, drawn at 4x and downsampled, plus pixel noise:
- class k of the ImageNet stand-in is a (colour, shape) pair: a learnable signal. Its names
  (1-3 synonyms, like ImageNet's "African elephant, Loxodonta africana") are colour + shape
  words, so class-name prompts differ per synonym;
- the other class datasets show the same classes with a shift: ImageNet-A small shapes in
  clutter and heavy noise, ImageNet-R outline drawings on paper, WebVision gradient
  backgrounds with one training label in six wrong (web labels are noisy);
- COCO and Flickr30k images are a random shape on a named background colour, and their five
  (sometimes six) captions describe colour, shape, size, position and background in varied
  wording.
Everything follows from the seed: each image draws from its own generator keyed by
(seed, stream, index), so the bytes do not depend on the order things are written in.
"""

import io
import os
import re
import zlib
from pathlib import Path

from contamination.config import settings_argument
from contamination.errors import ConfigError
from contamination.io import owned_directory, require_replaceable, write_json
from contamination.sources.imagenet import official_wnids

# name: (RGB, synonyms). Class names and captions use the synonyms.
COLOURS = {
    "red": ((215, 40, 40), ("red", "crimson", "scarlet")),
    "green": ((40, 170, 60), ("green", "emerald", "grass-green")),
    "blue": ((40, 70, 215), ("blue", "cobalt", "azure")),
    "yellow": ((235, 210, 40), ("yellow", "golden", "lemon")),
    "purple": ((150, 50, 180), ("purple", "violet", "plum")),
    "orange": ((240, 140, 30), ("orange", "amber", "tangerine")),
}
# Caption backgrounds: the shape colours plus neutral ones.
BACKGROUNDS = {
    **{name: rgb for name, (rgb, _) in COLOURS.items()},
    "white": (235, 235, 235),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}
SHAPES = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "block", "box"),
    "triangle": ("triangle", "wedge", "pyramid"),
    "cross": ("cross", "plus sign", "pair of crossed bars"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "ring": ("ring", "hoop", "donut"),
}
MAX_CLASSES = len(COLOURS) * len(SHAPES)
CAPTION_TEMPLATES = (
    "a {colour} {shape} on a {background} background",
    "a {size} {colour} {shape} {position}",
    "there is a {colour} {shape} in front of a plain {background} wall",
    "a picture of a {shape} coloured {colour} on {background}",
    "{background} backdrop with a {colour} {shape} {position}",
    "close-up of a {size} {shape} painted {colour}",
    "a simple drawing of one {colour} {shape} over {background}",
)
IMAGENET_R_STYLES = ("art", "cartoon", "sketch", "painting")
# ImageNet-A and -R hold every class but each fourth one, from these (different) offsets.
IMAGENET_A_LEFT_OUT, IMAGENET_R_LEFT_OUT = 3, 0
SUPERSAMPLE = 4
JPEG_QUALITY = 90
MAT_HEADER, MAT_HEADER_SIZE = b"MATLAB 5.0 MAT-file, written by contamination.smoke.synthetic", 116
SPEC_KEYS = ("classes", "train_per_class", "val_per_class", "webvision_per_class", "coco_train_images",
             "coco_test_images", "flickr30k_images", "image_size", "seed", "roots", "karpathy_json")
ROOT_KEYS = ("imagenet", "imagenet_a", "imagenet_r", "webvision", "coco", "flickr30k")


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("synthetic", help="write tiny synthetic datasets in the real layouts")
    parser.add_argument("--spec", required=True, type=settings_argument("synthetic"),
                        help="JSON: config `synthetic` (defaults may be left out) + roots")
    parser.set_defaults(run=run_synthetic)


def run_synthetic(args) -> None:
    write_all(args.spec)


def write_all(spec: dict) -> None:
    """Write every synthetic dataset to its root; each root (one this package wrote, or none yet)
    is replaced whole, so reruns are clean."""
    check_spec(spec)
    for source in ROOT_KEYS:  # all checked before any is written
        require_replaceable(spec["roots"][source])
    classes = synthetic_classes(spec["classes"])
    writers = {
        "imagenet": write_imagenet,
        "imagenet_a": write_imagenet_a,
        "imagenet_r": write_imagenet_r,
        "webvision": write_webvision,
        "coco": write_coco,
        "flickr30k": write_flickr30k,
    }
    for source, write in writers.items():
        root = spec["roots"][source]
        with owned_directory(root) as staging:
            count = write(staging, classes, spec, Stream(spec["seed"], source))
        print(f"{source}: {count} images -> {root}")


def check_spec(spec: dict) -> None:
    for key in SPEC_KEYS:
        if key not in spec:
            raise ConfigError(f"synthetic.{key}: missing from the synthetic spec")
    if spec["classes"] > MAX_CLASSES:
        raise ConfigError(f"synthetic.classes: {spec['classes']} but at most {MAX_CLASSES} distinct "
                          "(colour, shape) classes exist")
    if spec["flickr30k_images"] < 3:
        raise ConfigError(f"synthetic.flickr30k_images: {spec['flickr30k_images']}, need >= 3 (train, val, test)")
    for source in ROOT_KEYS:
        if source not in spec["roots"]:
            raise ConfigError(f"sources.{source}.root: missing from the synthetic spec's roots")
    for source in ("coco", "flickr30k"):
        if source not in spec["karpathy_json"]:
            raise ConfigError(f"sources.{source}.karpathy_json: missing from the synthetic spec")
    roots = {source: os.path.abspath(spec["roots"][source]) for source in ROOT_KEYS}
    for source in ("coco", "flickr30k"):
        if not os.path.abspath(spec["karpathy_json"][source]).startswith(roots[source] + os.sep):
            raise ConfigError(f"sources.{source}.karpathy_json: '{spec['karpathy_json'][source]}' must be inside "
                              f"its synthetic root '{spec['roots'][source]}'")
    for source, root in roots.items():
        for other, other_root in roots.items():
            if other != source and (root == other_root or root.startswith(other_root + os.sep)):
                raise ConfigError(f"sources.{source}.root: '{root}' must not be (inside) sources.{other}.root")


def synthetic_classes(count: int) -> list:
    """``count`` classes: dicts with wnid, colour, shape and names (1-3 synonyms).

    Class k has colour k mod 6 and shape (k + k div 6) mod 6, so the first six classes differ in
    both and no two classes share both.
    """
    colours, shapes = list(COLOURS), list(SHAPES)
    classes = []
    for k, wnid in enumerate(synthetic_wnids(count)):
        colour = colours[k % len(colours)]
        shape = shapes[(k + k // len(colours)) % len(shapes)]
        names = [f"{COLOURS[colour][1][j]} {SHAPES[shape][j]}" for j in range(1 + k % 3)]
        classes.append({"wnid": wnid, "colour": colour, "shape": shape, "names": names})
    return classes


def synthetic_wnids(count: int) -> list:
    """Real wnids in increasing order (so class k has label k): class k is an official ImageNet-A
    class unless k % 4 == IMAGENET_A_LEFT_OUT and an ImageNet-R class unless k % 4 ==
    IMAGENET_R_LEFT_OUT, so the official lists, intersected with these classes as evaluation
    does, are exactly the classes the synthetic ImageNet-A/-R hold."""
    in_a, in_r = set(official_wnids("imagenet_a")), set(official_wnids("imagenet_r"))
    candidates = iter(sorted(in_a | in_r))
    wnids = []
    for k in range(count):
        wanted = (k % 4 != IMAGENET_A_LEFT_OUT, k % 4 != IMAGENET_R_LEFT_OUT)
        wnids.append(next(wnid for wnid in candidates if (wnid in in_a, wnid in in_r) == wanted))
    return wnids


class Stream:
    """Independent random generators per (seed, dataset, part, index)."""

    def __init__(self, seed: int, dataset: str):
        self.seed, self.dataset = seed, zlib.crc32(dataset.encode())

    def rng(self, part: str, *indices: int):
        import numpy as np

        return np.random.default_rng([self.seed, self.dataset, zlib.crc32(part.encode()), *indices])


# ---- drawing -------------------------------------------------------------------------------


def render(rng, size: int, colour, shape: str, style: str, background=None):
    """A PIL image of ``shape`` in RGB ``colour``; ``style`` sets background, scale and noise.

    Returns (image, scale, centre) with scale and centre as fractions of the image size.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    big = size * SUPERSAMPLE
    if style == "photo":  # ImageNet: a filled shape on a plain random background
        scale_range, noise, outline = (0.45, 0.75), 12.0, False
        canvas = Image.new("RGB", (big, big), tuple(int(v) for v in rng.integers(70, 190, 3)))
    elif style == "adversarial":  # ImageNet-A: small shape, clutter, strong noise
        scale_range, noise, outline = (0.25, 0.45), 35.0, False
        canvas = Image.new("RGB", (big, big), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(canvas)
        for _ in range(3):
            draw.line([tuple(int(v) for v in rng.integers(0, big, 2)) for _ in range(2)],
                      fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=SUPERSAMPLE * 2)
    elif style == "rendition":  # ImageNet-R: an outline drawing on paper
        scale_range, noise, outline = (0.5, 0.8), 6.0, True
        canvas = Image.new("RGB", (big, big), (int(rng.integers(215, 256)),) * 3)
    elif style == "web":  # WebVision: vertical gradient between two random colours
        scale_range, noise, outline = (0.3, 0.9), 20.0, False
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0.0, 1.0, big)[:, None, None]
        pixels = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (big, big, 3))
        canvas = Image.fromarray(pixels.astype(np.uint8))
    elif style == "caption":  # COCO, Flickr30k: the background colour the captions name
        scale_range, noise, outline = (0.35, 0.7), 8.0, False
        canvas = Image.new("RGB", (big, big), background)
    else:
        raise ValueError(f"unknown style {style!r}")
    jittered = tuple(int(v) for v in np.clip(np.array(colour) + rng.integers(-20, 21, 3), 0, 255))
    scale = float(rng.uniform(*scale_range))
    radius = scale * big / 2
    centre = rng.uniform(radius, big - radius, 2)
    draw_shape(ImageDraw.Draw(canvas), shape, centre, radius, jittered, outline, width=max(2, big // 12))
    image = canvas.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0.0, noise, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), scale, centre / big


def draw_shape(draw, shape: str, centre, radius: float, colour, outline: bool, width: int) -> None:
    x, y = (float(v) for v in centre)
    r = radius
    box = [x - r, y - r, x + r, y + r]
    paint = {"outline": colour, "width": width} if outline else {"fill": colour}
    if shape == "circle":
        draw.ellipse(box, **paint)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=width if outline else max(width, int(r * 0.4)))
    elif shape == "square":
        draw.rectangle([x - 0.85 * r, y - 0.85 * r, x + 0.85 * r, y + 0.85 * r], **paint)
    else:
        draw.polygon(polygon(shape, x, y, r), **paint)


def polygon(shape: str, x: float, y: float, r: float) -> list:
    if shape == "triangle":
        return [(x, y - r), (x + r, y + 0.8 * r), (x - r, y + 0.8 * r)]
    if shape == "diamond":
        return [(x, y - r), (x + 0.75 * r, y), (x, y + r), (x - 0.75 * r, y)]
    if shape == "cross":
        a = 0.33 * r  # half the arm width
        return [(x - a, y - r), (x + a, y - r), (x + a, y - a), (x + r, y - a), (x + r, y + a), (x + a, y + a),
                (x + a, y + r), (x - a, y + r), (x - a, y + a), (x - r, y + a), (x - r, y - a), (x - a, y - a)]
    raise ValueError(f"unknown shape {shape!r}")


def save_class_image(path, stream: Stream, part: str, index: int, size: int, cls: dict, style: str) -> None:
    image, _, _ = render(stream.rng(part, index), size, COLOURS[cls["colour"]][0], cls["shape"], style)
    save_jpeg(image, path)


def save_jpeg(image, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=JPEG_QUALITY)


# ---- class datasets ------------------------------------------------------------------------


def write_imagenet(root, classes: list, spec: dict, stream: Stream) -> int:
    """LOC_synset_mapping.txt, the devkit (meta.mat, val ground truth), train/<wnid>/, flat val/."""
    size = spec["image_size"]
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{cls['wnid']} {', '.join(cls['names'])}\n" for cls in sorted(classes, key=lambda c: c["wnid"]))
    )
    # ILSVRC2012_IDs are not in wnid order in the real devkit either: a permutation.
    ilsvrc_ids = [int(i) + 1 for i in stream.rng("ilsvrc_ids").permutation(len(classes))]
    write_meta_mat(root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat", classes, ilsvrc_ids)
    for k, cls in enumerate(classes):
        for n in range(spec["train_per_class"]):
            path = root / "train" / cls["wnid"] / f"{cls['wnid']}_{n + 1}.JPEG"
            save_class_image(path, stream, "train", k * spec["train_per_class"] + n, size, cls, "photo")
    # The flat val layout: files in random class order, labels in the devkit's ground truth.
    val_classes = stream.rng("val_order").permutation(
        [k for k in range(len(classes)) for _ in range(spec["val_per_class"])]
    )
    truth = []
    for number, k in enumerate(val_classes, start=1):
        save_class_image(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG", stream, "val", number, size,
                         classes[k], "photo")
        truth.append(f"{ilsvrc_ids[k]}\n")
    (root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(truth))
    return len(classes) * spec["train_per_class"] + len(val_classes)


def write_meta_mat(path, classes: list, ilsvrc_ids: list) -> None:
    """The devkit's meta.mat: a struct array ``synsets`` of the leaf classes and, as in the real
    file, inner WordNet nodes (here one root) that have children and are not classes."""
    import numpy as np
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((len(classes) + 1, 1), dtype=[(field, object) for field in fields])
    for row, (cls, ilsvrc_id) in enumerate(zip(classes, ilsvrc_ids)):
        synsets[row, 0] = (ilsvrc_id, cls["wnid"], ", ".join(cls["names"]), f"a {cls['names'][0]}", 0,
                           np.zeros((1, 0)), 0, 0)
    synsets[len(classes), 0] = (len(classes) + 1, "n98000000", "shape", "a geometric figure", len(classes),
                                np.array([sorted(ilsvrc_ids)], dtype=float), 1, 0)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets})
    # The MAT-5 header is 116 bytes of text that scipy fills with the current time; fix it so
    # the same seed gives the same bytes.
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(MAT_HEADER.ljust(MAT_HEADER_SIZE) + data[MAT_HEADER_SIZE:])


def write_imagenet_a(root, classes: list, spec: dict, stream: Stream) -> int:
    """<root>/<wnid>/*.jpg for a subset of the classes, names with spaces as in ImageNet-A."""
    def file_name(cls, n):
        return f"0.{n:06d}_{cls['names'][0]} _ {cls['names'][0]}.jpg"

    return write_class_subset(root, classes, spec, stream, IMAGENET_A_LEFT_OUT, file_name, "adversarial")


def write_imagenet_r(root, classes: list, spec: dict, stream: Stream) -> int:
    """<root>/<wnid>/<style>_<n>.jpg for another subset; file names repeat across classes, as in ImageNet-R."""
    def file_name(cls, n):
        return f"{IMAGENET_R_STYLES[n % len(IMAGENET_R_STYLES)]}_{n}.jpg"

    return write_class_subset(root, classes, spec, stream, IMAGENET_R_LEFT_OUT, file_name, "rendition")


def write_class_subset(root, classes: list, spec: dict, stream: Stream, left_out: int, file_name, look: str) -> int:
    """``val_per_class`` images of ``look`` in <root>/<wnid>/<file_name(class, n)> for every class
    but each fourth one (from ``left_out``); how many were written."""
    subset = [cls for k, cls in enumerate(classes) if k % 4 != left_out]
    for k, cls in enumerate(subset):
        for n in range(spec["val_per_class"]):
            save_class_image(root / cls["wnid"] / file_name(cls, n), stream, "val", k * spec["val_per_class"] + n,
                             spec["image_size"], cls, look)
    return len(subset) * spec["val_per_class"]


def write_webvision(root, classes: list, spec: dict, stream: Stream) -> int:
    """info/ (synsets.txt, train_filelist_{google,flickr}.txt, val_filelist.txt), google/, flickr/,
    val_images_256/. Two thirds of each class come from the "google" crawl, the rest from "flickr"."""
    size, per_class = spec["image_size"], spec["webvision_per_class"]
    by_wnid = sorted(classes, key=lambda c: c["wnid"])  # WebVision labels follow ImageNet's wnid order
    info = root / "info"
    info.mkdir(parents=True)
    (info / "synsets.txt").write_text("".join(f"{cls['wnid']} {', '.join(cls['names'])}\n" for cls in by_wnid))
    lists = {"google": [], "flickr": []}
    google_count = -(-2 * per_class // 3)
    for label, cls in enumerate(by_wnid):
        for n in range(per_class):
            crawl = "google" if n < google_count else "flickr"
            relative = f"{crawl}/q{label + 1:04d}/{n:06d}.jpg"
            index = label * per_class + n
            rng = stream.rng("noise", index)
            shown = by_wnid[int(rng.integers(len(by_wnid)))] if rng.random() < 1 / 6 else cls
            save_class_image(root / relative, stream, "train", index, size, shown, "web")
            lists[crawl].append(f"{relative} {label}\n")
    for crawl, lines in lists.items():
        (info / f"train_filelist_{crawl}.txt").write_text("".join(lines))
    val_labels = stream.rng("val_order").permutation([k for k in range(len(by_wnid)) for _ in range(spec["val_per_class"])])
    val_lines = []
    for number, label in enumerate(val_labels, start=1):
        name = f"val{number:06d}.jpg"
        save_class_image(root / "val_images_256" / name, stream, "val", number, size, by_wnid[label], "web")
        val_lines.append(f"{name} {label}\n")
    (info / "val_filelist.txt").write_text("".join(val_lines))
    return len(by_wnid) * per_class + len(val_labels)


# ---- caption datasets ----------------------------------------------------------------------


def caption_image(path, rng, size: int, caption_count: int) -> list:
    """Draw a random captioned scene to ``path``; return its captions (raw, as in the JSON)."""
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    shape = list(SHAPES)[int(rng.integers(len(SHAPES)))]
    background = [name for name in BACKGROUNDS if name != colour][int(rng.integers(len(BACKGROUNDS) - 1))]
    image, scale, (x, y) = render(rng, size, COLOURS[colour][0], shape, "caption", BACKGROUNDS[background])
    save_jpeg(image, path)
    position = ("on the left" if x < 0.35 else "on the right" if x > 0.65 else
                "near the top" if y < 0.35 else "near the bottom" if y > 0.65 else "in the middle")
    captions = []
    for template in rng.permutation(len(CAPTION_TEMPLATES))[:caption_count]:
        text = CAPTION_TEMPLATES[template].format(
            colour=rng.choice(COLOURS[colour][1]),
            shape=rng.choice(SHAPES[shape]),
            background=background,
            size="large" if scale > 0.55 else "small",
            position=position,
        )
        text = re.sub(r"\ba (?=[aeiou])", "an ", text)
        # Real raw captions vary in capitals, final full stop and stray whitespace.
        if rng.random() < 0.5:
            text = text[0].upper() + text[1:] + "."
        captions.append(text + (" " if rng.random() < 0.2 else ""))
    return captions


def karpathy_entry(number: int, filename: str, split: str, captions: list, first_sentid: int) -> dict:
    sentences = [
        {"tokens": raw.strip().rstrip(".").lower().split(), "raw": raw, "imgid": number, "sentid": first_sentid + j}
        for j, raw in enumerate(captions)
    ]
    return {"filename": filename, "imgid": number, "split": split, "sentences": sentences,
            "sentids": [sentence["sentid"] for sentence in sentences]}


def write_coco(root, classes: list, spec: dict, stream: Stream) -> int:
    """train2014/, val2014/ and dataset_coco.json with Karpathy's four splits: train images come
    from train2014, restval/val/test from val2014; a quarter of the training images are restval."""
    train_total, test = spec["coco_train_images"], spec["coco_test_images"]
    restval = train_total // 4
    splits = ["train"] * (train_total - restval) + ["restval"] * restval + ["val"] * test + ["test"] * test
    order = stream.rng("order").permutation(len(splits))  # the real JSON mixes the splits too
    images, sentid = [], 1
    for number, position in enumerate(order):
        split, cocoid = splits[position], 9 + 37 * int(position)
        folder = "train2014" if split == "train" else "val2014"
        filename = f"COCO_{folder}_{cocoid:012d}.jpg"
        caption_count = 6 if position % 7 == 3 else 5  # a few COCO images have six captions
        captions = caption_image(root / folder / filename, stream.rng("image", int(position)),
                                 spec["image_size"], caption_count)
        entry = karpathy_entry(number, filename, split, captions, sentid)
        images.append({"filepath": folder, **entry, "cocoid": cocoid})
        sentid += caption_count
    write_karpathy_json(root, spec, "coco", {"images": images, "dataset": "coco"})
    return len(images)


def write_flickr30k(root, classes: list, spec: dict, stream: Stream) -> int:
    """flickr30k-images/<photo id>.jpg and dataset_flickr30k.json (train/val/test, 5 captions each)."""
    total = spec["flickr30k_images"]
    held_out = max(1, total // 8)
    splits = ["train"] * (total - 2 * held_out) + ["val"] * held_out + ["test"] * held_out
    images = []
    for number, split in enumerate(splits):
        filename = f"{1000000000 + 7919 * number}.jpg"
        captions = caption_image(root / "flickr30k-images" / filename, stream.rng("image", number), spec["image_size"], 5)
        images.append(karpathy_entry(number, filename, split, captions, 5 * number))
    write_karpathy_json(root, spec, "flickr30k", {"images": images, "dataset": "flickr30k"})
    return len(images)


def write_karpathy_json(staging, spec: dict, source: str, data: dict) -> None:
    """Into the staged root, where the spec's JSON path lies inside the root (check_spec)."""
    root, json_path = os.path.abspath(spec["roots"][source]), os.path.abspath(spec["karpathy_json"][source])
    write_json(data, Path(staging) / os.path.relpath(json_path, root))
