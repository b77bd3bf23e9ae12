"""Paste swapped crops back into their frame with the official border mask, fast.

Official semantics (per face, in order): warp the swapped crop and a white crop back with the inverse
transform (bilinear, black border); set mask values > 20 to 255; erode with a 40x40 kernel; Gaussian blur
41x41 (sigma 0 → 6.5); blend ``mask·face + (1 - mask)·frame``; truncate to uint8 at the end.

Speed: all of that happens only inside each face's region of interest: the bounding box of the warped
crop, grown by ``MARGIN`` pixels (erosion reach 20 + blur reach 20) so that OpenCV's border handling at
the ROI edge sees the same zeros the full frame has. Outside the ROI the official mask is exactly 0, so
the frame is untouched. Work is float32 on ROI-sized buffers, blended in place; no full-frame float passes.

The mask is built on a smaller box inside the ROI, exactly (``mask_box``): the warped crop is non-zero
only inside the box of its corners (B, one pixel more for the bilinear reach), so the erosion is non-zero
only inside B shrunk by the erosion's reach, and the blur, which reaches 20 pixels, is non-zero only
inside B. The threshold, erosion and blur therefore run on B grown by ``BOX_GROWTH`` pixels (every window
of a pixel of B lies inside it; the pixels it adds are zeros, so the blur's reflected border there reads
the zeros the ROI has), and the mask is 0 elsewhere: the same values as over the whole ROI. The face is
warped and blended on that box only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from simswap_trt.vision.align import invert_affine

MASK_THRESHOLD = 20
ERODE_SIZE = 40
BLUR_SIZE = 41
MARGIN = ERODE_SIZE // 2 + BLUR_SIZE // 2 + 1
BOX_GROWTH = max(ERODE_SIZE // 2, BLUR_SIZE // 2) + 1  # the mask box: the crop's box grown by this
_ERODE_KERNEL = np.ones((ERODE_SIZE, ERODE_SIZE), np.uint8)
_WHITE: dict[int, np.ndarray] = {}  # the white crop of each size, made once


def face_roi(matrix: np.ndarray, crop_size: int, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the frame region a crop can influence, or None if it lies outside the frame."""
    corners = np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]], np.float64)
    inverse = invert_affine(matrix)
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    h, w = frame_shape[:2]
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - MARGIN
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + MARGIN
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


Footprint = tuple[np.ndarray, int]  # (frame→crop matrix, crop size) whose border mask places a face


def paste_back(
    frame: np.ndarray,
    faces: Sequence[tuple[np.ndarray, np.ndarray]],
    footprints: Sequence[Footprint | None] | None = None,
) -> np.ndarray:
    """Composite ``(swapped crop, frame→crop matrix)`` pairs into a copy of ``frame`` (uint8 BGR).

    Crops are BGR, float32 in [0, 255] (the generator output ×255, as the official code warps it) or
    uint8; all have the same square size. Faces whose mask boxes overlap are blended on one shared float
    buffer and truncated once, as the official full-frame composite is. ``footprints``: per face, the crop
    whose border mask places it when that is not the pasted crop itself (an enhanced face, pasted at the
    enhancer's resolution within its swap's region); None or absent: the pasted crop's own."""
    out = frame.copy()
    footprints = footprints or [None] * len(faces)
    placed = []  # (crop, matrix, mask box, mask): outside its box a face leaves the frame as it is
    for (crop, matrix), footprint in zip(faces, footprints, strict=True):
        mask_matrix, mask_size = footprint or (matrix, crop.shape[0])
        if roi := face_roi(mask_matrix, mask_size, frame.shape):
            placed.append((crop, matrix, *mask_box(mask_matrix, mask_size, roi)))
    for indices in _overlapping_groups([p[2] for p in placed]):
        group = [placed[i] for i in indices]
        x0, y0 = min(b[0] for _, _, b, _ in group), min(b[1] for _, _, b, _ in group)
        x1, y1 = max(b[2] for _, _, b, _ in group), max(b[3] for _, _, b, _ in group)
        region = out[y0:y1, x0:x1].astype(np.float32)
        for crop, matrix, (fx0, fy0, fx1, fy1), mask in group:
            face = _warp(crop, matrix, (fx0, fy0, fx1, fy1))
            view = region[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
            face *= mask[..., None]  # mask·face + (1 - mask)·view, in place (no box-sized temporaries) and in
            np.subtract(1, mask, out=mask)  # the official order of operations, so the truncation to uint8
            view *= mask[..., None]  # rounds as upstream and as the paste-back kernel
            view += face
        np.copyto(out[y0:y1, x0:x1], region, casting="unsafe")  # truncation to uint8, as upstream
    return out


def _roi_inverse(matrix: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
    """The crop→frame matrix expressed in the ROI's coordinates."""
    inverse = invert_affine(matrix)
    inverse[:, 2] -= roi[:2]
    return inverse


def border_mask(matrix: np.ndarray, size: int, roi: tuple[int, int, int, int]) -> np.ndarray:
    """The official border mask of a ``size`` crop placed by ``matrix``, over ``roi``: float32 [h, w] in
    [0, 1]. It depends only on the geometry, so the GPU path computes it while the generator runs."""
    x0, y0, x1, y1 = roi
    (bx0, by0, bx1, by1), inner = mask_box(matrix, size, roi)
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    mask[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] = inner
    return mask


def mask_box(
    matrix: np.ndarray, size: int, roi: tuple[int, int, int, int]
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The frame box (inside ``roi``) outside which the official border mask is 0, and the mask over it
    (float32 in [0, 1]): the same values as over the whole ROI (see the module docstring)."""
    x0, y0, x1, y1 = roi
    inverse = invert_affine(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    bx0, by0 = np.floor(corners.min(axis=0)).astype(int) - 1 - BOX_GROWTH
    bx1, by1 = np.ceil(corners.max(axis=0)).astype(int) + 2 + BOX_GROWTH
    box = (max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1))
    white = _WHITE.get(size)
    if white is None:
        white = _WHITE.setdefault(size, np.full((size, size), 255, np.float32))
    mask = cv2.warpAffine(white, _roi_inverse(matrix, box), (box[2] - box[0], box[3] - box[1]))
    mask[mask > MASK_THRESHOLD] = 255
    mask = cv2.GaussianBlur(cv2.erode(mask, _ERODE_KERNEL), (BLUR_SIZE, BLUR_SIZE), 0)
    mask *= np.float32(1 / 255)
    return box, mask


def _warp(crop: np.ndarray, matrix: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The crop warped into ``box``'s frame coordinates (float32)."""
    x0, y0, x1, y1 = box
    return cv2.warpAffine(crop.astype(np.float32, copy=False), _roi_inverse(matrix, box), (x1 - x0, y1 - y0))


def _overlapping_groups(rois: list[tuple[int, int, int, int]]) -> list[list[int]]:
    """Indices of ROIs grouped so that no ROI overlaps one of another group; paste order kept in a group."""
    groups: list[list[int]] = []
    for i, roi in enumerate(rois):
        touching = [g for g in groups if any(_overlap(roi, rois[j]) for j in g)]
        groups = [g for g in groups if g not in touching] + [sorted([i, *(j for g in touching for j in g)])]
    return groups


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
