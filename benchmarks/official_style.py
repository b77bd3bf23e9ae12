"""The official SimSwap post-processing, written the straightforward way the upstream scripts do it
(full-frame float64, one face at a time). It is the baseline of the benchmarks and the reference the
tests compare the fast paste-back with; it is not a product path."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def paste_back_official(
    frame: np.ndarray, swaps_rgb01: Sequence[np.ndarray], matrices: Sequence[np.ndarray]
) -> np.ndarray:
    """``reverse2wholeimage`` without the parsing mask: ``swaps_rgb01`` are HxWx3 float RGB in [0, 1]."""
    height, width = frame.shape[:2]
    image = np.array(frame, dtype=np.float64)
    for swap, matrix in zip(swaps_rgb01, matrices, strict=True):
        inverse = cv2.invertAffineTransform(matrix)
        target = cv2.warpAffine(swap, inverse, (width, height))
        target = np.array(target, dtype=np.float64)[..., ::-1] * 255
        white = np.full(swap.shape[:2], 255, dtype=np.float64)
        white = cv2.warpAffine(white, inverse, (width, height))
        white[white > 20] = 255
        mask = cv2.erode(white, np.ones((40, 40), np.uint8), iterations=1)
        mask = cv2.GaussianBlur(mask, (41, 41), 0) / 255
        mask = mask[..., None]
        image = mask * target + (1 - mask) * image
    return image.astype(np.uint8)
