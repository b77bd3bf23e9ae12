"""Paste swapped crops back into their frame with the official border mask, fast.

Official semantics (per face, in order): warp the swapped crop and a white crop back with the inverse
transform (bilinear, black border); set mask values > 20 to 255; erode with a 40x40 kernel; Gaussian blur
41x41 (sigma 0 → 6.5); blend ``mask·face + (1 - mask)·frame``; truncate to uint8 at the end.

Speed: all of that happens only inside each face's region of interest: the bounding box of the warped
crop, grown by ``MARGIN`` pixels (erosion reach 20 + blur reach 20) so that OpenCV's border handling at
the ROI edge sees the same zeros the full frame has. Outside the ROI the official mask is exactly 0, so
the frame is untouched. Work is float32 on ROI-sized buffers, blended in place; no full-frame float passes.

The mask is built on a smaller box inside the ROI, exactly (``mask_box``): the warped crop is non-zero
only inside B, the box of its corners grown by one crop pixel (the bilinear reach, in frame pixels), so
the erosion is non-zero only inside B shrunk by the erosion's reach, and the blur, which reaches 20
pixels, is non-zero only inside B. The face is warped and blended only on B grown by one pixel (the paint
box): outside it the mask is 0 and the blend gives the frame back unchanged. For a face whose paint box
lies inside the frame, the mask is built on the paint box too: its outer ring is zero, so the erosion
there equals the frame's, and the blur's constant zero border is what the frame holds around it. For a
face at the frame's edge it is built on B grown by ``BOX_GROWTH`` pixels (every window of a pixel of B
lies inside it): the blur's reflected border reads the zeros the ROI has, or the frame's own reflection
at the frame's edge. Either way the mask has the same values as over the whole ROI, and is 0 elsewhere.

Memory: every float buffer (mask, filter scratch, face, weights, blended region) is one of each thread's
buffers, reused from call to call and grown to the largest face seen; a call allocates only its output
frame, so it causes no page faults once warm.
"""

from __future__ import annotations

import math
import threading
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


class _Workspace(threading.local):
    """Float32 buffers each thread reuses from call to call, grown when a larger face needs more."""

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A contiguous float32 array of ``shape`` on this thread's buffer ``name`` (its old values)."""
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self.buffers[name] = np.empty(size, np.float32)
        return buffer[:size].reshape(shape)


_WORKSPACE = _Workspace()
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in frame pixels, end exclusive


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
    uint8; all have the same square size. Faces whose paint boxes overlap are blended on one shared float
    buffer and truncated once, as the official full-frame composite is. ``footprints``: per face, the crop
    whose border mask places it when that is not the pasted crop itself (an enhanced face, pasted at the
    enhancer's resolution within its swap's region); None or absent: the pasted crop's own."""
    out = frame.copy()
    footprints = footprints or [None] * len(faces)
    placed = []  # (crop, matrix, (mask matrix, mask size), mask box, paint box, blur border)
    for (crop, matrix), footprint in zip(faces, footprints, strict=True):
        mask_matrix, mask_size = footprint or (matrix, crop.shape[0])
        if roi := face_roi(mask_matrix, mask_size, frame.shape):
            placed.append((crop, matrix, (mask_matrix, mask_size), *_boxes(mask_matrix, mask_size, roi)))
    for indices in _overlapping_groups([p[4] for p in placed]):
        group = [placed[i] for i in indices]
        x0, y0 = min(p[4][0] for p in group), min(p[4][1] for p in group)
        x1, y1 = max(p[4][2] for p in group), max(p[4][3] for p in group)
        region = _WORKSPACE.take("region", (y1 - y0, x1 - x0, 3))
        np.copyto(region, out[y0:y1, x0:x1])
        for crop, matrix, (mask_matrix, mask_size), box, paint, border in group:
            mask = _official_mask(mask_matrix, mask_size, box, border)
            px0, py0, px1, py1 = paint
            mask = mask[py0 - box[1] : py1 - box[1], px0 - box[0] : px1 - box[0]]
            _blend(region[py0 - y0 : py1 - y0, px0 - x0 : px1 - x0], crop, matrix, paint, mask)
        np.copyto(out[y0:y1, x0:x1], region, casting="unsafe")  # truncation to uint8, as upstream
    return out


def _blend(view: np.ndarray, crop: np.ndarray, matrix: np.ndarray, paint: Box, mask: np.ndarray) -> None:
    """``view = mask·face + (1 - mask)·view`` in place, in the official order of operations (so the final
    truncation to uint8 rounds as upstream and as the paste-back kernel), on flat three-channel buffers."""
    height, width = view.shape[:2]
    weights = cv2.merge((mask, mask, mask), dst=_WORKSPACE.take("weights", (height, width, 3)))
    face = _WORKSPACE.take("face", (height, width, 3))
    crop = np.ascontiguousarray(crop, np.float32)
    face = cv2.warpAffine(crop, _roi_inverse(matrix, paint), (width, height), dst=face)
    np.multiply(face, weights, out=face)
    np.subtract(1, weights, out=weights)
    np.multiply(view, weights, out=view)
    np.add(view, face, out=view)


def _roi_inverse(matrix: np.ndarray, roi: Box) -> np.ndarray:
    """The crop→frame matrix expressed in the ROI's coordinates."""
    inverse = invert_affine(matrix)
    inverse[:, 2] -= roi[:2]
    return inverse


def border_mask(matrix: np.ndarray, size: int, roi: Box) -> np.ndarray:
    """The official border mask of a ``size`` crop placed by ``matrix``, over ``roi``: float32 [h, w] in
    [0, 1]. It depends only on the geometry, so the GPU path computes it while the generator runs."""
    x0, y0, x1, y1 = roi
    (bx0, by0, bx1, by1), inner = mask_box(matrix, size, roi)
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    mask[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] = inner
    return mask


def mask_box(matrix: np.ndarray, size: int, roi: Box) -> tuple[Box, np.ndarray]:
    """The frame box (inside ``roi``) outside which the official border mask is 0, and the mask over it
    (float32 in [0, 1], a new array): the same values as over the whole ROI (see the module docstring)."""
    box, _, border = _boxes(matrix, size, roi)
    return box, _official_mask(matrix, size, box, border).copy()


def _boxes(matrix: np.ndarray, size: int, roi: Box) -> tuple[Box, Box, int]:
    """The mask box, the paint box and the blur's border type for a face (see the module docstring)."""
    inverse = invert_affine(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    reach = int(np.ceil(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))) + 1  # one crop pixel, in frame pixels
    bx0, by0 = np.floor(corners.min(axis=0)).astype(int) - reach
    bx1, by1 = np.ceil(corners.max(axis=0)).astype(int) + reach + 1
    x0, y0, x1, y1 = roi

    def grown(by: int) -> Box:
        return max(bx0 - by, x0), max(by0 - by, y0), min(bx1 + by, x1), min(by1 + by, y1)

    paint = grown(1)
    if paint == (bx0 - 1, by0 - 1, bx1 + 1, by1 + 1):  # inside the frame: zeros all around
        return paint, paint, cv2.BORDER_CONSTANT
    return grown(BOX_GROWTH), paint, cv2.BORDER_REFLECT_101


def _official_mask(matrix: np.ndarray, size: int, box: Box, border: int) -> np.ndarray:
    """The official mask over ``box`` (the mask box), on this thread's mask buffer (valid until the next
    call): the white crop warped, values > 20 set to 255, eroded, blurred, scaled to [0, 1]."""
    shape = (box[3] - box[1], box[2] - box[0])
    mask, scratch = _WORKSPACE.take("mask", shape), _WORKSPACE.take("scratch", shape)
    white = _WHITE.get(size)
    if white is None:
        white = _WHITE.setdefault(size, np.full((size, size), 255, np.float32))
    mask = cv2.warpAffine(white, _roi_inverse(matrix, box), shape[::-1], dst=mask)
    scratch = cv2.threshold(mask, MASK_THRESHOLD, 255, cv2.THRESH_BINARY, dst=scratch)[1]
    np.maximum(mask, scratch, out=mask)  # mask[mask > 20] = 255, the other values kept
    scratch = cv2.erode(mask, _ERODE_KERNEL, dst=scratch)
    mask = cv2.GaussianBlur(scratch, (BLUR_SIZE, BLUR_SIZE), 0, dst=mask, borderType=border)
    mask *= np.float32(1 / 255)
    return mask


def _overlapping_groups(rois: list[Box]) -> list[list[int]]:
    """Indices of ROIs grouped so that no ROI overlaps one of another group; paste order kept in a group."""
    groups: list[list[int]] = []
    for i, roi in enumerate(rois):
        touching = [g for g in groups if any(_overlap(roi, rois[j]) for j in g)]
        groups = [g for g in groups if g not in touching] + [sorted([i, *(j for g in touching for j in g)])]
    return groups


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
