"""Batched warping of faces into aligned crops (OpenCV ``warpAffine`` convention: pixel centres at
integer coordinates, ``dst(x, y) = src(M⁻¹·(x, y))``, bilinear with 1/32-pixel fixed-point weights,
constant black border). This CPU path is the reference for the GPU preprocessing kernel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from simswap_trt.vision.align import alignment_matrix

if TYPE_CHECKING:
    from simswap_trt.vision.detect import Detection


def warp_faces(frames: Sequence[np.ndarray], faces: Sequence[tuple[int, np.ndarray]], crop_size: int) -> np.ndarray:
    """Warp each ``(frame index, 2x3 frame→crop matrix)`` face into one uint8 [N, S, S, 3] batch."""
    crops = np.empty((len(faces), crop_size, crop_size, 3), np.uint8)
    for i, (frame_index, matrix) in enumerate(faces):
        cv2.warpAffine(
            frames[frame_index],
            matrix,
            (crop_size, crop_size),
            dst=crops[i],
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return crops


def largest_face_crop(
    image: np.ndarray, faces: Sequence[Detection], alignment: str, crop_size: int
) -> np.ndarray | None:
    """The aligned uint8 [S, S, 3] crop of the largest of ``faces`` (by box area) in ``image``; None if
    there are none."""
    if not faces:
        return None
    largest = max(faces, key=lambda d: d.area)
    return warp_faces([image], [(0, alignment_matrix(largest.landmarks, alignment, crop_size))], crop_size)[0]
