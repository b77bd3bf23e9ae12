"""Reading and writing image files: clear errors and bounded memory for input, atomic and labelled output."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from simswap_trt.errors import InputError
from simswap_trt.files import write_atomic
from simswap_trt.provenance.metadata import tag_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Decoded as 8-bit BGR, 100 MP is 300 MB, and the pipeline holds a few copies of a frame.
MAX_PIXELS = 100_000_000


def image_size(source: Path | BinaryIO, name: str | None = None) -> tuple[int, int]:
    """(width, height) of an image file (or file-like object) from its header, without decoding the pixels.
    Animated and multi-page images are refused. ``name`` says which input failed (default: the path)."""
    from PIL import Image, UnidentifiedImageError

    name = name or str(source)
    try:
        with warnings.catch_warnings():  # our own limit applies (max_pixels)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                frames = getattr(image, "n_frames", 1)
                size = image.size
    except FileNotFoundError:
        raise InputError(f"image not found: {name}") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name} is refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:  # its message only repeats the source (for bytes: an object's address)
        raise InputError(f"{name} is not a readable image (not an image format Pillow knows)") from None
    except OSError as exc:
        raise InputError(f"{name} is not a readable image: {exc}") from exc
    if frames > 1:
        raise InputError(
            f"{name} has {frames} frames (animated or multi-page); only still images are swapped: extract its frames "
            "(e.g. ffmpeg -i in.gif frames/%04d.png) and pass the folder as --target"
        )
    return size


def _check_pixels(name: str | Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputError(
            f"{name} is {width}x{height} ({width * height:,} pixels), over the --max-pixels limit of {max_pixels:,}; "
            "downscale it or raise the limit"
        )


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 BGR HxWx3: grey is expanded to 3 channels, alpha is dropped (not
    composited), 16-bit is scaled to 8-bit. Files over ``max_pixels`` are refused before decoding."""
    path = Path(path)
    _check_pixels(path, image_size(path), max_pixels)
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path} is not a readable image (corrupt, truncated or an unsupported format)")
    return image


def write_image(
    path: str | Path, image: np.ndarray, synthetic: bool = True, finish: Callable[[bytes], bytes] | None = None
) -> None:
    """Encode by the file's suffix and write atomically (temporary file in the same folder, then rename).
    ``synthetic`` (default on, as the command line does) labels JPEG, PNG, WebP and TIFF files as AI-generated (XMP
    metadata; ``False`` for images that are not, such as a photo copied unchanged); ``finish`` takes the
    encoded bytes and returns what is written (e.g. ``Provenance.sign_image``): if it raises, nothing is."""
    path = Path(path)
    data = encode_image(image, path.suffix or ".png", synthetic, str(path))
    write_atomic(path, finish(data) if finish is not None else data)


def list_images(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files (or files of other ``suffixes``) directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes (e.g. from a request or an object store) as ``read_image`` reads files:
    the size is checked from the header before decoding; ``name`` says which input failed."""
    import io

    _check_pixels(name, image_size(io.BytesIO(data), name), max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{name} is not a readable image (corrupt, truncated or an unsupported format)")
    return image


def encode_image(image: np.ndarray, suffix: str = ".png", synthetic: bool = False, name: str = "image") -> bytes:
    """Encode a uint8 BGR image by format suffix (``.png``, ``.jpg``...); ``synthetic`` labels JPEG, PNG,
    WebP and TIFF as AI-generated with the IPTC digital source type in XMP (``simswap_trt.provenance.metadata``;
    other formats carry no label: logged). ``name`` says what is encoded, for messages."""
    try:
        ok, encoded = cv2.imencode(suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"cannot encode an image as {suffix!r} for {name}")
    data = encoded.tobytes()
    if synthetic:
        tagged = tag_image(data, suffix, image.shape[1], image.shape[0])
        if tagged is None:
            log.warning("%s: %s files carry no synthetic-content label; use .jpg, .png, .webp or .tif", name, suffix)
        data = tagged or data
    return data
