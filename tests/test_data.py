"""ManifestDataset: loose files and shard members alike, in the main process and in workers."""

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from contamination.data import ManifestDataset, index_rows, load_image
from contamination.errors import DataError
from contamination.formats import shard_uri
from contamination.generation.shards import write_shard

COLORS = {"file_a": (255, 0, 0), "file_b": (0, 255, 0), "gen_a": (0, 0, 255), "gen_b": (255, 255, 0)}
GRAY_OF_GREEN = (150, 150, 150)  # file_b is stored grayscale: green is luma 150 in every channel


def png(color, mode="RGB"):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def manifest(tmp_path):
    """Two loose files (one grayscale) and two members of one shard, with labels and captions."""
    (tmp_path / "file_a.png").write_bytes(png(COLORS["file_a"]))
    (tmp_path / "file_b.png").write_bytes(png(COLORS["file_b"], mode="L"))
    shard = tmp_path / "shard-00000.zip"
    members = [("gen_a.png", png(COLORS["gen_a"])), ("gen_b.png", png(COLORS["gen_b"]))]
    write_shard(shard, members, pd.DataFrame({"id": ["gen_a", "gen_b"], "member": ["gen_a.png", "gen_b.png"]}))
    return pd.DataFrame({
        "id": ["real/file_a", "real/file_b", "gen/gen_a", "gen/gen_b"],
        "uri": [str(tmp_path / "file_a.png"), str(tmp_path / "file_b.png"),
                shard_uri(shard, "gen_a.png"), shard_uri(shard, "gen_b.png")],
        "label": [3, 1, 3, 0],
        "caption": ["a red square", "a green square", "a blue square", "a yellow square"],
        "origin": ["real", "real", "gen", "gen"],
    })


def to_array(image):
    return np.asarray(image, dtype=np.uint8)


def test_load_image_reads_files_and_shard_members_as_rgb(manifest):
    file_image = load_image(manifest["uri"][0])
    member_image = load_image(manifest["uri"][2])
    assert file_image.mode == member_image.mode == "RGB" and file_image.size == (8, 6)
    assert tuple(to_array(file_image)[0, 0]) == COLORS["file_a"]
    assert tuple(to_array(member_image)[0, 0]) == COLORS["gen_a"]
    gray_image = load_image(manifest["uri"][1])
    assert gray_image.mode == "RGB" and tuple(to_array(gray_image)[0, 0]) == GRAY_OF_GREEN


def test_load_image_names_the_item_it_cannot_read(manifest, tmp_path):
    with pytest.raises(DataError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"))
    with pytest.raises(DataError, match="nothere.png"):
        load_image(shard_uri(tmp_path / "shard-00000.zip", "nothere.png"))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png is not a readable image"):
        load_image(str(tmp_path / "broken.png"))


def test_dataset_gives_images_with_labels_or_captions(manifest, tmp_path):
    path = tmp_path / "mixture.parquet"
    manifest.to_parquet(path)
    labelled = ManifestDataset(path, transform=to_array)
    assert len(labelled) == 4
    image, label = labelled[2]
    assert image.shape == (6, 8, 3) and tuple(image[0, 0]) == COLORS["gen_a"] and label == 3
    captioned = ManifestDataset(manifest, target="caption")
    image, caption = captioned[1]
    assert image.mode == "RGB" and caption == "a green square"
    assert [captioned[i][1] for i in range(4)] == manifest["caption"].tolist()


def test_dataset_refuses_targets_the_manifest_lacks(manifest):
    with pytest.raises(DataError, match="without a class label"):
        ManifestDataset(manifest.assign(label=-1))
    with pytest.raises(DataError, match="without a caption"):
        ManifestDataset(manifest.assign(caption=""), target="caption")
    with pytest.raises(DataError, match="lacks the columns origin"):
        ManifestDataset(manifest.drop(columns="origin"))
    with pytest.raises(ValueError, match="target"):
        ManifestDataset(manifest, target="wnid")


def to_tensor(image):
    import torch

    return torch.from_numpy(to_array(image).copy()).permute(2, 0, 1)


def test_index_rows_are_one_split_of_an_index_as_a_manifest_numbered_from_0(tmp_path):
    index = tmp_path / "imagenet.parquet"
    pd.DataFrame({"id": ["a", "b", "c"], "path": ["/x/a.png", "/x/b.png", "/x/c.png"], "label": [0, 1, 2],
                  "wnid": ["n0", "n1", "n2"], "caption": "", "image_id": ["a", "b", "c"],
                  "split": ["train", "val", "val"]}).to_parquet(index)
    rows = index_rows(index, "val")
    assert rows.to_dict("list") == {"id": ["b", "c"], "uri": ["/x/b.png", "/x/c.png"], "label": [1, 2],
                                    "caption": ["", ""], "origin": ["imagenet", "imagenet"]}
    assert rows.index.tolist() == [0, 1]
    with pytest.raises(DataError, match=re.escape(f"index {index} has no 'test' rows")):
        index_rows(index, "test")


def test_dataset_works_in_dataloader_workers(manifest):
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    dataset = ManifestDataset(manifest, transform=to_tensor)
    dataset[2]  # a shard opened in the parent must not be shared with the forked workers
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    images, labels = zip(*loader)
    images, labels = torch.cat(images), torch.cat(labels)
    assert images.shape == (4, 3, 6, 8)
    assert labels.tolist() == [3, 1, 3, 0]
    expected = [COLORS["file_a"], GRAY_OF_GREEN, COLORS["gen_a"], COLORS["gen_b"]]
    assert [tuple(image[:, 0, 0].tolist()) for image in images] == expected


def test_jpeg_draft_applies_to_jpegs_only(tmp_path):
    image = Image.fromarray(np.full((40, 60, 3), 90, dtype=np.uint8))
    image.save(tmp_path / "photo.jpg")
    image.save(tmp_path / "photo.png")
    seen = []

    def draft(jpeg):
        seen.append(jpeg.format)
        jpeg.draft("RGB", (15, 10))
        return jpeg

    assert load_image(str(tmp_path / "photo.jpg"), draft).size == (15, 10)
    assert load_image(str(tmp_path / "photo.png"), draft).size == (60, 40)
    assert seen == ["JPEG"]


# ---- high bit depth -------------------------------------------------------------------------

MID_GREY_16 = 0x8080  # 32896: mid-grey in 16 bits, 128 in 8 bits


def write_png16(path, values):
    """A 16-bit PNG written from a uint16 array with numpy and zlib (grey for (H, W), RGB for
    (H, W, 3)): Pillow can write 16-bit grey but not 16-bit RGB."""
    import struct
    import zlib

    height, width = values.shape[:2]
    color_type = 0 if values.ndim == 2 else 2
    scanlines = b"".join(b"\x00" + values[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines))
                           + chunk(b"IEND", b""))
    return path


@pytest.fixture
def high_bit_depth(tmp_path):
    """Mid-grey 16-bit grey PNG (Pillow: I;16), 16-bit RGB PNG, and a 32-bit integer TIFF (mode I)."""
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.full((6, 8), MID_GREY_16, dtype=np.uint16)).save(grey)
    rgb = write_png16(tmp_path / "rgb16.png", np.full((6, 8, 3), [MID_GREY_16, 1000, 0xFFFF], dtype=np.uint16))
    integer = tmp_path / "grey32.tif"
    Image.fromarray(np.full((6, 8), MID_GREY_16, dtype=np.int32)).save(integer)
    assert [Image.open(path).mode for path in (grey, rgb, integer)] == ["I;16", "RGB", "I"]
    return {"grey": grey, "rgb": rgb, "integer": integer}


def test_sixteen_bit_images_decode_to_their_eight_bit_colours_not_white(high_bit_depth):
    for name in ("grey", "integer"):
        image = load_image(str(high_bit_depth[name]))
        assert image.mode == "RGB" and np.all(to_array(image) == 128), name
    assert tuple(to_array(load_image(str(high_bit_depth["rgb"])))[0, 0]) == (128, 3, 255)


def test_every_decoder_scales_sixteen_bit_grey(high_bit_depth):
    from contamination.metrics.features import downsample
    from contamination.reporting.report import thumbnail
    from contamination.sources.verify import image_error

    grey = high_bit_depth["grey"]
    assert image_error(str(grey)) is None
    with Image.open(grey) as image:
        assert np.all(downsample(image, 4) == 128)
    with Image.open(io.BytesIO(thumbnail(grey.read_bytes(), 4))) as small:
        assert np.abs(to_array(small).astype(int) - 128).max() <= 2  # JPEG


def test_images_without_an_eight_bit_scale_are_refused_naming_the_file(tmp_path):
    from contamination.sources.verify import image_error

    floats = tmp_path / "float.tif"
    Image.fromarray(np.full((6, 8), 0.5, dtype=np.float32)).save(floats)
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.full((6, 8), 70000, dtype=np.int32)).save(wide)
    for path in (floats, wide):
        with pytest.raises(DataError, match=f"{path.name} is not a readable image.*8-bit scale"):
            load_image(str(path))
        assert "8-bit scale" in image_error(str(path))


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_every_sixteen_bit_grey_byte_order_keeps_its_high_byte(mode):
    from contamination.data import to_rgb8

    values = np.array([[0, 255, 256, 0x8080, 0xFFFF]], dtype=np.uint16)
    image = Image.frombytes(mode, (5, 1), values.astype(">u2" if mode == "I;16B" else "=u2").tobytes())
    assert to_array(to_rgb8(image))[0, :, 0].tolist() == [0, 0, 1, 128, 255]


def test_eight_bit_modes_decode_as_before(tmp_path):
    """Only high-bit-depth images changed: alpha is dropped (not composited), and palettes with
    a transparent index and CMYK convert as Pillow's convert("RGB") always did."""
    from contamination.data import to_rgb8

    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 8, 4), dtype=np.uint8)
    grey = np.repeat(pixels[..., :1], 3, axis=2)
    assert np.array_equal(to_array(to_rgb8(Image.fromarray(pixels, "RGBA"))), pixels[..., :3])
    assert np.array_equal(to_array(to_rgb8(Image.fromarray(pixels[..., :2], "LA"))), grey)
    bits = pixels[..., 0] > 127
    assert np.array_equal(to_array(to_rgb8(Image.fromarray(bits))), np.repeat(bits[..., None] * 255, 3, axis=2))
    Image.fromarray(pixels[..., :3]).quantize(8).save(tmp_path / "transparent.png", transparency=3)
    for image in (Image.fromarray(pixels, "CMYK"), Image.open(tmp_path / "transparent.png")):
        assert image.mode in ("CMYK", "P")
        assert np.array_equal(to_array(to_rgb8(image)), to_array(image.convert("RGB"))), image.mode
