"""Source and reference photos: read from paths or taken as arrays, checked, each labelled for errors, and the
largest face of each aligned into a crop (``FaceSwapper.set_source`` / ``set_reference``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simswap_trt.errors import ConfigError, NoFaceError
from simswap_trt.images import read_image
from simswap_trt.swap_types import check_image
from simswap_trt.vision.detect import Detection
from simswap_trt.vision.warp import largest_face_crop

Photos = np.ndarray | str | Path | Sequence[np.ndarray | str | Path]


def read_photos(images: Photos, what: str, names: Sequence[str] | None) -> tuple[list[np.ndarray], list[str]]:
    """The ``what`` (source, reference) photos as checked uint8 BGR arrays, and the label of each in errors:
    its ``names`` entry, its path, or its position."""
    items = [images] if isinstance(images, (np.ndarray, str, Path)) else list(images)
    if not items:
        raise ConfigError(f"no {what} image given: pass at least one photo (an array or a path)")
    if names is not None and len(names) != len(items):
        raise ConfigError(f"{len(names)} names for {len(items)} {what} images")
    labels = [
        f"the {what} photo {names[i] if names is not None else item}"
        if names is not None or isinstance(item, (str, Path))
        else f"{what} image {i}"
        for i, item in enumerate(items)
    ]
    arrays = [read_image(item) if isinstance(item, (str, Path)) else item for item in items]
    for image, label in zip(arrays, labels, strict=True):
        check_image(image, label)
    return arrays, labels


def largest_face_crops(
    images: Sequence[np.ndarray],
    detections: Sequence[Sequence[Detection]],
    labels: Sequence[str],
    alignment: str,
    crop_size: int,
) -> np.ndarray:
    """The aligned crop of the largest detected face of each photo; a ``NoFaceError`` naming a photo without one."""
    crops = []
    for image, faces, label in zip(images, detections, labels, strict=True):
        crop = largest_face_crop(image, faces, alignment, crop_size)
        if crop is None:
            raise NoFaceError(
                f"no face found in {label}: use a photo where the face is clearly visible "
                "(frontal, at least about 60 px wide)"
            )
        crops.append(crop)
    return np.stack(crops)
