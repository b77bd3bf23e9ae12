"""Alignment exactly as the official pipeline: a least-squares similarity transform (Umeyama) from the
5 landmarks to a template, and OpenCV ``warpAffine`` conventions for everything that uses it.

* ``multipose`` (224 models): the five insightface multi-pose 112-px templates scaled by ``S/112``; the
  template with the smallest summed landmark distance after the fit wins.
* ``ffhq`` (512 models): the FFHQ template scaled by ``S/512``.

Landmark order everywhere: image-left eye, image-right eye, nose tip, image-left and image-right mouth
corners.
"""

from __future__ import annotations

import numpy as np

from simswap_trt.errors import ConfigError

MULTIPOSE_TEMPLATES_112 = np.array(
    [
        [[51.642, 50.115], [57.617, 49.990], [35.740, 69.007], [51.157, 89.050], [57.025, 89.702]],  # left profile
        [[45.031, 50.118], [65.568, 50.872], [39.677, 68.111], [45.177, 86.190], [64.246, 86.758]],  # left
        [[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]],  # frontal
        [[46.845, 50.872], [67.382, 50.118], [72.737, 68.111], [48.167, 86.758], [67.236, 86.190]],  # right
        [[54.796, 49.990], [60.771, 50.115], [76.673, 69.007], [55.388, 89.702], [61.257, 89.050]],  # right profile
    ]
)
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) minimising squared distances from
    ``src`` points [P,2] to ``dst`` points: Umeyama's (1991) least-squares fit without reflection, which
    in the plane has the closed form ``q = α·p`` over centred points as complex numbers, with
    ``α = Σ q·conj(p) / Σ |p|²`` (scale |α|, rotation arg α). ``dst`` may hold several point sets
    [..., P, 2]: one fit per set, [..., 2, 3], computed together."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=-2)
    p = (src[:, 0] - src_mean[0]) + 1j * (src[:, 1] - src_mean[1])
    q = (dst[..., 0] - dst_mean[..., None, 0]) + 1j * (dst[..., 1] - dst_mean[..., None, 1])
    alpha = (q @ p.conj()) / (p.real @ p.real + p.imag @ p.imag)
    matrix = np.empty((*dst.shape[:-2], 2, 3))
    matrix[..., 0, 0], matrix[..., 0, 1] = alpha.real, -alpha.imag
    matrix[..., 1, 0], matrix[..., 1, 1] = alpha.imag, alpha.real
    matrix[..., 2] = dst_mean - matrix[..., :2] @ src_mean
    return matrix


def templates(alignment: str, crop_size: int) -> np.ndarray:
    """Candidate templates [K,5,2] in crop pixels for ``alignment`` at ``crop_size``."""
    if alignment == "multipose":
        return MULTIPOSE_TEMPLATES_112 * (crop_size / 112.0)
    if alignment == "ffhq":
        return FFHQ_TEMPLATE_512[None] * (crop_size / 512.0)
    raise ConfigError(f"unknown alignment {alignment!r}; choose multipose or ffhq")


def alignment_matrix(landmarks: np.ndarray, alignment: str, crop_size: int) -> np.ndarray:
    """The 2x3 frame→crop matrix for one face's [5,2] landmarks (best template by summed L2 error; the
    first of equal ones). All templates are fitted in one batched computation."""
    candidates = templates(alignment, crop_size)
    landmarks = np.asarray(landmarks, np.float64)
    matrices = estimate_similarity(landmarks, candidates)
    mapped = landmarks @ np.swapaxes(matrices[:, :, :2], 1, 2) + matrices[:, None, :, 2]
    errors = np.linalg.norm(mapped - candidates, axis=2).sum(axis=1)
    return matrices[int(np.argmin(errors))]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The analytic inverse of a 2x3 affine matrix (what ``cv2.invertAffineTransform`` returns)."""
    (a, b, tx), (c, d, ty) = np.asarray(matrix, np.float64).tolist()
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return np.array([[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)]])
