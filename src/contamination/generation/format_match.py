"""Format-matched controls: a generated dataset re-stored the way a real source stores its images.

Real ImageNet is JPEG at many qualities and sizes; generated images are 512 px PNGs. Classifiers
and detectors can key on compression and size instead of content. A format-matched copy of a
generated dataset (config ``format_control.generated``; the copy of ``sd_imagenet`` is
``sd_imagenet_jpeg``) holds the same images, each stored with the format of one real training
image:

1. ``format-profile`` reads a seeded sample of the real source's training images (config
   ``format_control.profile_images``; all of them if fewer): per image its size, colour mode,
   chroma subsampling and JPEG quality, estimated from its luminance quantisation table
   (estimate_jpeg_quality). Files that are not JPEG are left out and counted.
2. ``format-match`` re-stores one shard of the generated dataset as the same shard of the copy.
   Each image takes the format of the profile row picked by a keyed hash of (seed, copy's name,
   image id): the same pick whatever the shard size, so qualities, subsamplings and sizes follow
   the real distribution jointly. The image is centre-cropped to the picked aspect ratio, resized
   (Lanczos) to the picked size, made greyscale if the real image is, and encoded as JPEG at the
   picked quality and subsampling.

Rows keep the id, prompt and seed of the image they were made from, and gain FORMAT_COLUMNS.

The copies are compared with their originals in the tables of group ``format_control``
(format_control_entries), added to the config when it is validated.
"""

import io
import json
import zipfile

from contamination import config as cfg
from contamination.config import settings_argument
from contamination.errors import DataError
from contamination.experiments.detect import CLASSIFIERS, TEST_ACCURACY
from contamination.generation.generators import CLASSIFY_METRICS, percent
from contamination.generation.prompts import image_seed
from contamination.generation.shards import read_metadata, write_shard
from contamination.io import read_parquet, write_parquet

# The IJG (libjpeg) base luminance table, JPEG standard Annex K.1, in row-major order as Pillow's
# ``Image.quantization`` gives tables. libjpeg scales it by the quality (ijg_table).
IJG_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
PROFILE_COLUMNS = ["id", "width", "height", "mode", "subsampling", "quality", "quality_error"]
# What a format-matched row adds to its source row (the stored image's format and where it came from).
FORMAT_COLUMNS = ["jpeg_quality", "jpeg_subsampling", "stored_width", "stored_height", "stored_mode", "profile_id"]
SUBSAMPLING_NAMES = {-1: "none (greyscale)", 0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
SPEC_KEYS = ["real_source"]  # of config format_control, in a format-match job's spec
GROUP = "format_control"  # the named target of the comparison tables
MATCHED_LABEL = "(JPEG-matched)"  # how rows on copies are labelled


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("format-profile", help="JPEG quality, subsampling and size of a sample of real images")
    parser.add_argument("--index", required=True, help="the real source's index (its 'train' split is read)")
    parser.add_argument("--source", required=True, help="the real source's name")
    parser.add_argument("--images", required=True, type=int, help="images to read (config format_control.profile_images)")
    parser.add_argument("--seed", required=True, type=int, help="the run's seed")
    parser.add_argument("--out", required=True, help="the profile (Parquet)")
    parser.set_defaults(run=run_format_profile)

    parser = subparsers.add_parser("format-match", help="re-store one generated shard in a real source's formats")
    parser.add_argument("--spec", required=True, type=settings_argument("format_control", SPEC_KEYS),
                        help="JSON: config format_control's real_source, the copy's name, the dataset it is "
                             "made `from`, and the run's seed")
    parser.add_argument("--shard", required=True, help="the shard of the generated dataset it re-stores")
    parser.add_argument("--profile", required=True, help="the real source's profile (format-profile)")
    parser.add_argument("--out", required=True, help="the same shard of the format-matched dataset")
    parser.set_defaults(run=run_format_match)


# ---- the quality of a JPEG ------------------------------------------------------------------


def ijg_table(quality: int) -> list:
    """The luminance table libjpeg writes at ``quality`` (jpeg_set_quality, baseline: entries 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(max((base * scale + 50) // 100, 1), 255) for base in IJG_LUMINANCE]


def estimate_jpeg_quality(luminance_table) -> tuple:
    """(quality 1..100, mean absolute difference per entry): the IJG quality whose scaled table is
    closest to ``luminance_table`` (64 entries, row-major). The difference is 0 for a table libjpeg
    wrote; tables of other encoders (cameras, Photoshop) get their nearest IJG quality. Ties go to
    the higher quality."""
    table = list(luminance_table)
    if len(table) != 64:
        raise ValueError(f"a JPEG quantisation table has 64 entries, not {len(table)}")
    error, negative_quality = min(
        (sum(abs(a - b) for a, b in zip(ijg_table(quality), table)), -quality) for quality in range(1, 101)
    )
    return -negative_quality, error / 64


# ---- the profile of a real source -----------------------------------------------------------


def run_format_profile(args) -> None:
    import numpy as np

    profile, skipped = build_profile(read_parquet(args.index), args.source, args.images, args.seed, args.index)
    write_parquet(profile, args.out)
    quartiles = np.percentile(profile["quality"], [0, 25, 50, 75, 100]).round(1).tolist()
    exact = int((profile["quality_error"] == 0).sum())
    print(f"{args.source}: {len(profile)} JPEGs profiled ({skipped} other files left out); quality min/quartiles/max "
          f"{quartiles}; {exact} with libjpeg's own tables; written to {args.out}")


def build_profile(index, source: str, count: int, seed: int, index_path):
    """The format of ``count`` training images of ``source`` (all if fewer): those with the
    smallest keyed hash of (seed, source, image id), by id. Returns (profile, files left out)."""
    import pandas as pd

    train = index[index["split"] == "train"].drop_duplicates("image_id")
    if train.empty:
        raise DataError(f"{index_path}: '{source}' has no training images to profile")
    keys = [image_seed(seed, f"{source}:format_profile", item_id) for item_id in train["image_id"]]
    chosen = train.assign(key=keys).nsmallest(count, "key").sort_values("image_id")
    rows, skipped = [], 0
    for item_id, path in zip(chosen["image_id"], chosen["path"]):
        row = jpeg_format(path)
        if row is None:
            skipped += 1
        else:
            rows.append((str(item_id), *row))
    if not rows:
        raise DataError(f"{index_path}: none of the {len(chosen)} profiled training images of '{source}' is a JPEG, "
                        "so there is no JPEG format to match")
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS), skipped


def jpeg_format(path):
    """(width, height, mode, subsampling, quality, quality error) of a JPEG file, read from its
    headers alone; None if the file is not a JPEG."""
    from PIL import Image, JpegImagePlugin, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                return None
            quality, error = estimate_jpeg_quality(image.quantization[0])
            mode = "L" if image.mode == "L" else "RGB"
            subsampling = JpegImagePlugin.get_sampling(image) if mode == "RGB" else -1
            return image.width, image.height, mode, subsampling, quality, error
    except (OSError, UnidentifiedImageError, KeyError, ValueError) as error:
        raise DataError(f"{path}: cannot read its JPEG headers ({error})") from error


# ---- re-storing a shard ---------------------------------------------------------------------


def run_format_match(args) -> None:
    spec, profile = args.spec, read_parquet(args.profile)
    try:
        metadata = read_metadata(args.shard)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(f"{args.shard}: not a readable generation shard ({error})") from error
    picks = profile.iloc[[profile_row(spec, item_id, len(profile)) for item_id in metadata["id"]]].reset_index(drop=True)
    members = [f"{item_id}.jpg" for item_id in metadata["id"]]
    frame = metadata.assign(member=members, image_format="jpeg", jpeg_quality=picks["quality"].to_numpy(),
                            jpeg_subsampling=picks["subsampling"].to_numpy(), stored_width=picks["width"].to_numpy(),
                            stored_height=picks["height"].to_numpy(), stored_mode=picks["mode"].to_numpy(),
                            profile_id=picks["id"].to_numpy())
    with zipfile.ZipFile(args.shard) as archive:
        images = ((member, restored(decoded(archive.read(source_member)), pick))
                  for source_member, member, pick in zip(metadata["member"], members, picks.itertuples(index=False)))
        write_shard(args.out, images, frame)
    print(f"{len(frame)} images of {args.shard} re-stored as {spec['real_source']} JPEGs in {args.out}: qualities "
          f"{int(frame['jpeg_quality'].min())}-{int(frame['jpeg_quality'].max())}, "
          f"{json.dumps(frame['jpeg_subsampling'].map(SUBSAMPLING_NAMES).value_counts().to_dict())}")


def profile_row(spec: dict, item_id: str, rows: int) -> int:
    """The profile row whose format image ``item_id`` of the copy takes."""
    return image_seed(spec["seed"], spec["name"], item_id) % rows


def decoded(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def restored(image, pick) -> bytes:
    """``image`` (PIL, RGB) as JPEG in the format ``pick`` (a profile row: width, height, mode,
    subsampling, quality): centre-cropped to its aspect ratio, resized, converted, encoded."""
    from PIL import Image

    width, height = int(pick.width), int(pick.height)
    if image.width * height > width * image.height:  # wider than the target: crop the sides
        crop = (image.height * width + height // 2) // height
        left = (image.width - crop) // 2
        image = image.crop((left, 0, left + crop, image.height))
    else:
        crop = (image.width * height + width // 2) // width
        top = (image.height - crop) // 2
        image = image.crop((0, top, image.width, top + crop))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    options = {"quality": int(pick.quality)}
    if pick.mode == "L":
        image = image.convert("L")
    else:
        options["subsampling"] = int(pick.subsampling)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


# ---- the comparison: mixtures and tables with and without matching ----------------------------
# Config lists are replaced, not extended, by an overlay; the mapping `format_control` names the
# datasets to re-store and adds the mixtures and tables that compare them (as generator_comparison
# does for generators) when the config is validated.


def format_control_entries(config: dict) -> dict:
    """{"mixtures", "tables"}: what config ``format_control`` adds.

    Per class dataset re-stored: IN/<label>-n% (JPEG-matched) mixtures at ``fractions`` and the
    copy's subset mixture, each after its original (the config's own mixtures at the same
    fractions, where it has them) in table ``format_control_classify`` (the classifier's top-1 on
    ImageNet val, -A and -R, after all of ImageNet); per dataset re-stored, its row and its copy's
    in ``format_control_detection`` (section 6.1's detectors)."""
    settings = config["format_control"]
    mixtures, classify_rows, detect_rows = [], everything_of(config, "imagenet"), []
    real = config["detection"]["real_source"]
    real = (everything_of(config, real) or [{"dataset": real}])[0]["dataset"]
    for copy, origin in cfg.format_matched(config).items():
        origin_rows = everything_of(config, origin)
        name = origin_rows[0]["dataset"] if origin_rows else origin
        detect_rows += [{"dataset": f"{real} vs {name}", "mixture": origin},
                        {"dataset": f"{real} vs {name} {MATCHED_LABEL}", "mixture": copy}]
        if cfg.dataset_target(config, origin) != "label":
            continue
        for fraction in settings["fractions"]:
            baseline = replacing(config, origin, fraction)
            label = baseline[0]["dataset"] if baseline else f"IN/{origin}-{percent(fraction)}%"
            mixture = {"name": f"in_{copy}_{percent(fraction)}", "label": f"{label} {MATCHED_LABEL}", "kind": "replace",
                       "base": "imagenet", "by": copy, "fraction": fraction, "match": "label"}
            mixtures.append(mixture)
            classify_rows += [*baseline, {"dataset": mixture["label"], "mixture": mixture["name"]}]
        subset = {"name": copy, "label": f"{name} {MATCHED_LABEL}", "kind": "subset", "base": copy, "fraction": 1.0}
        mixtures.append(subset)
        classify_rows += [*origin_rows, {"dataset": subset["label"], "mixture": subset["name"]}]
    tables = [{"name": f"{GROUP}_detection", "group": GROUP, "reported_table": GROUP, "experiment": "detect",
               "models": list(CLASSIFIERS), "metrics": [TEST_ACCURACY], "rows": detect_rows}]
    if mixtures:
        tables.insert(0, {"name": f"{GROUP}_classify", "group": GROUP, "reported_table": GROUP,
                          "experiment": "classify", "models": [settings["classifier"]], "metrics": CLASSIFY_METRICS,
                          "rows": classify_rows})
    return {"mixtures": mixtures, "tables": tables}


def everything_of(config: dict, dataset: str) -> list:
    """The table row of the config's first mixture holding all of ``dataset``, if it has one."""
    return [{"dataset": mixture.get("label", mixture["name"]), "mixture": mixture["name"]}
            for mixture in config["mixtures"]
            if mixture["kind"] == "subset" and mixture["base"] == dataset and mixture["fraction"] == 1.0][:1]


def replacing(config: dict, dataset: str, fraction: float) -> list:
    """The table row of the config's first mixture replacing ``fraction`` of ImageNet by ``dataset``."""
    return [{"dataset": mixture.get("label", mixture["name"]), "mixture": mixture["name"]}
            for mixture in config["mixtures"]
            if mixture["kind"] == "replace" and mixture["base"] == "imagenet" and mixture.get("by") == dataset
            and mixture["fraction"] == fraction and mixture["match"] == "label"][:1]


def expand_format_control(config: dict) -> bool:
    """Add the entries of ``format_control`` (format_control_entries) to the config's lists, in
    place (config.add_entries). Returns whether anything was added."""
    if not config["format_control"]["generated"]:
        return False
    return cfg.add_entries(config, format_control_entries(config), "format_control")
