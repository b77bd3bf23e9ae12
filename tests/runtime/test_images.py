"""Image files: every common variant reads as uint8 BGR, bad files give clear errors before any large
allocation, outputs are atomic and tagged as synthetic."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from simswap_trt.errors import InputError
from simswap_trt.images import read_image, write_image
from simswap_trt.provenance import DIGITAL_SOURCE_TYPE


@pytest.mark.parametrize(
    "name,pixels",
    [
        ("grey.png", np.full((20, 30), 77, np.uint8)),
        ("deep.png", np.full((20, 30, 3), 40000, np.uint16)),
        ("alpha.png", np.dstack([np.full((20, 30, 3), 99, np.uint8), np.zeros((20, 30), np.uint8)])),
    ],
)
def test_variants_read_as_8bit_bgr(tmp_path, name, pixels):
    cv2.imwrite(str(tmp_path / name), pixels)
    image = read_image(tmp_path / name)
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
    expected = {"grey.png": 77, "deep.png": 40000 >> 8, "alpha.png": 99}[name]
    assert np.all(image == expected)


def test_truncated_and_missing_files(tmp_path):
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((64, 64, 3), np.uint8))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png is not a readable image"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(InputError, match="text.jpg is not a readable image"):
        read_image(tmp_path / "text.jpg")
    with pytest.raises(InputError, match="image not found"):
        read_image(tmp_path / "absent.png")


def png_header_only(path, width, height):
    """A PNG that declares ``width`` x ``height`` but holds a few bytes of pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_huge_images_are_refused_from_their_header(tmp_path):
    """12000x12000 (432 MB decoded) and 40000x40000 headers are refused without decoding anything."""
    with pytest.raises(
        InputError, match=r"12000x12000 \(144,000,000 pixels\), over the --max-pixels limit of 100,000,000"
    ):
        read_image(png_header_only(tmp_path / "big.png", 12000, 12000))
    with pytest.raises(InputError, match="refused as a decompression bomb"):
        read_image(png_header_only(tmp_path / "bomb.png", 40000, 40000))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_synthetic_label_is_readable(tmp_path, suffix):
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    write_image(tmp_path / f"out{suffix}", image, synthetic=True)
    with Image.open(tmp_path / f"out{suffix}") as tagged:
        assert DIGITAL_SOURCE_TYPE in str(tagged.info["xmp"])
    decoded = read_image(tmp_path / f"out{suffix}")
    assert decoded.shape == image.shape
    if suffix == ".png":
        np.testing.assert_array_equal(decoded, image)  # the label does not disturb the pixels


def test_an_unencodable_image_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="cannot encode"):
        write_image(tmp_path / "b.nope", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
