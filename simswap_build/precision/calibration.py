"""Calibration faces: the largest face of each photo in a folder, detected and aligned by the runtime's own
pipeline, cached by the photos' content in the user's cache folder (never in the folder itself)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simswap_trt.cache import cache_folder
from simswap_trt.errors import InputError, OutputError
from simswap_trt.files import write_atomic_with
from simswap_trt.images import list_images, read_image
from simswap_trt.vision.detect import CenterFace
from simswap_trt.vision.warp import largest_face_crop

log = logging.getLogger(__name__)


def calibration_crops(
    folder: Path, alignment: str, crop_size: int, limit: int = 64, cache_dir: Path | None = None
) -> np.ndarray:
    """Aligned uint8 BGR crops of the largest face in each image of ``folder`` (sorted by name), detected
    and aligned by the runtime's own pipeline. Deterministic for the same files; cached by their content in
    ``cache_dir`` (default: the user's cache folder, ``simswap_trt.cache``), never in ``folder``."""
    files = calibration_files(folder, limit)
    digest = hashlib.sha256(f"{alignment}:{crop_size}".encode())
    for path in files:
        digest.update(path.read_bytes())
    cache = Path(cache_dir or cache_folder("calibration")) / f"crops-{digest.hexdigest()[:16]}.npz"
    if cache.is_file():
        log.info("calibration crops from cache %s", cache)
        return np.load(cache)["crops"]
    crops = _detect_crops(files, alignment, crop_size)
    if not crops:
        raise InputError(f"no usable face in the {len(files)} calibration image(s) of {folder}")
    stacked = np.stack(crops)
    try:
        write_atomic_with(cache, lambda f: np.savez_compressed(f, crops=stacked))
    except OutputError as exc:  # a cache that cannot be written costs time on the next run, nothing else
        log.warning("calibration crops not cached: %s", exc)
    return stacked


def _detect_crops(files: list[Path], alignment: str, crop_size: int) -> list[np.ndarray]:
    """The largest face's crop of each readable image that has a face (the others are logged and skipped)."""
    detector = CenterFace()
    crops = []
    for path in tqdm(files, desc="calibration faces", unit="image"):
        try:
            image = read_image(path)
        except InputError as exc:
            log.warning("calibration: skipping %s", exc)
            continue
        faces = detector.detect(image)
        if not faces:
            log.warning("calibration: no face in %s", path.name)
            continue
        crops.append(largest_face_crop(image, faces, alignment, crop_size))
    return crops


def calibration_files(folder: Path, limit: int = 64) -> list[Path]:
    """The images of ``folder`` calibration reads (sorted by name, at most ``limit``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"calibration folder not found: {folder}")
    files = list_images(folder)[:limit]
    if not files:
        raise InputError(f"no images in the calibration folder {folder}")
    return files
