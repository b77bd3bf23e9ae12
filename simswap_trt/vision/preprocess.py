"""Conversions between images (uint8 BGR, HxWx3, as OpenCV reads them) and the graphs' tensors
(float32 NCHW RGB in [0,1])."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from simswap_trt.errors import InputError

Crops = np.ndarray | Sequence[np.ndarray]


def stack_crops(crops: Crops, crop_size: int) -> np.ndarray:
    """Aligned BGR uint8 crops (a list of SxSx3 arrays or one N x S x S x 3 array) as one checked uint8
    [N,S,S,3] array."""
    if isinstance(crops, np.ndarray) and crops.ndim == 3:
        crops = crops[None]
    if len(crops) == 0:
        raise InputError("no crops given")
    for i, crop in enumerate(crops):
        crop = np.asarray(crop)
        if crop.dtype != np.uint8 or crop.shape != (crop_size, crop_size, 3):
            raise InputError(
                f"crop {i} is {crop.dtype}{list(crop.shape)}; aligned crops must be uint8 BGR of shape "
                f"[{crop_size}, {crop_size}, 3] for this bundle"
            )
    return np.asarray(crops) if isinstance(crops, np.ndarray) else np.stack(crops)


def crops_to_tensor(crops: Crops, crop_size: int) -> np.ndarray:
    """Stack aligned BGR uint8 crops (see ``stack_crops``) into float32 [N,3,S,S] RGB in [0,1], written once
    into a single contiguous buffer."""
    crops = stack_crops(crops, crop_size)
    out = np.empty((len(crops), 3, crop_size, crop_size), np.float32)
    np.multiply(crops[..., ::-1].transpose(0, 3, 1, 2), np.float32(1 / 255), out=out)
    return out


def tensor_to_bgr(tensor: np.ndarray) -> np.ndarray:
    """float32 [N,3,S,S] RGB in [0,1] → float32 [N,S,S,3] BGR in [0,255], neither rounded nor clipped (for
    blending, which rounds once at the end), C-contiguous: each crop is ready for OpenCV without a copy."""
    tensor = np.asarray(tensor, np.float32)
    out = np.empty((tensor.shape[0], *tensor.shape[2:], 3), np.float32)
    for planes, crop in zip(tensor, out, strict=True):
        cv2.merge(tuple(planes[::-1]), dst=crop)  # interleaved once, channels reversed
    return np.multiply(out, np.float32(255), out=out)


def tensor_to_crops(tensor: np.ndarray) -> np.ndarray:
    """float32 [N,3,S,S] RGB in [0,1] → uint8 [N,S,S,3] BGR, rounded to nearest and saturated."""
    return np.ascontiguousarray(np.rint(np.clip(tensor_to_bgr(tensor), 0.0, 255.0)).astype(np.uint8))
