"""Reading and writing image files: clear errors for unreadable input, atomic writes for output."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from simswap_trt.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Read any common image file as uint8 BGR HxWx3 (grey is expanded, alpha dropped, 16-bit scaled)."""
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path} is not a readable image (corrupt, truncated or an unsupported format)")
    return image


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Encode by the file's suffix and write atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise InputError(f"cannot encode an image as {path.suffix!r} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encoded.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
