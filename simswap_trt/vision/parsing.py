"""Optional face-parsing mask, as the official ``--use_mask`` path: a BiSeNet-style parser labels the
*target* crop; skin, brows, eyes, glasses, nose and lips (classes 1-6, 10, 12, 13) plus the inner mouth
(11) form a mask that is softened (``soft_erosion``) and used to blend the swap with the target crop in
crop space, before paste-back. Ears, neck, hair and hat keep the target's pixels.

The parser is supplied by the user as ONNX: input float32 [N,3,512,512] ImageNet-normalised RGB, first
output [N,19,512,512] class logits (face-parsing.PyTorch class order).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from simswap_trt.backends import host_engine
from simswap_trt.constants import IMAGENET_MEAN, IMAGENET_STD, PARSING_SIZE
from simswap_trt.engines import DEFAULT_PROVIDERS
from simswap_trt.errors import EngineError

FACE_CLASSES = (1, 2, 3, 4, 5, 6, 10, 12, 13)
MOUTH_CLASS = 11
MIN_MASK_SUM = 5000  # in 0/255 units over both channels, as upstream; below it the plain swap is used


def soft_erosion(mask: np.ndarray, kernel_size: int = 17, threshold: float = 0.9, iterations: int = 7) -> np.ndarray:
    """Upstream ``SoftErosion``: repeated ``min(x, conv(x))`` with a normalised cone kernel (zero padding),
    one final convolution, then values >= ``threshold`` set to 1 and the rest rescaled to their maximum."""
    r = kernel_size // 2
    y, x = np.mgrid[:kernel_size, :kernel_size]
    distance = np.sqrt((x - r) ** 2 + (y - r) ** 2)
    kernel = (distance.max() - distance).astype(np.float32)
    kernel /= kernel.sum()
    out = mask.astype(np.float32)
    for _ in range(iterations - 1):
        out = np.minimum(out, cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_CONSTANT))
    # OpenCV filters large kernels through the DFT: clip its +-1e-16 round-off around exact zeros
    out = np.clip(cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_CONSTANT), 0.0, None)
    solid = out >= threshold
    out[solid] = 1.0
    if (~solid).any() and out[~solid].max() > 0:
        out[~solid] /= out[~solid].max()
    return out


def mask_from_labels(labels: np.ndarray, size: int) -> np.ndarray | None:
    """The soft [size, size] mask of a [512, 512] class map (face classes plus the inner mouth, resized and
    softened as upstream), or None where (almost) no face was found."""
    two_channel = np.stack([np.isin(labels, FACE_CLASSES), labels == MOUTH_CLASS], axis=-1) * 255.0
    if two_channel.sum() < MIN_MASK_SUM:
        return None
    resized = cv2.resize(two_channel, (size, size)) / 255.0
    return soft_erosion(resized[..., 0] + resized[..., 1])


class FaceParser:
    """Runs a user-supplied face-parsing ONNX model and blends swaps with their target crops."""

    def __init__(
        self,
        model_path: str | Path,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int | None = None,
        device: int | None = None,
        backend: str = "onnxruntime",
    ):
        """``device``: the CUDA device of ONNX Runtime's CUDA and TensorRT providers. ``backend``: ``onnxruntime``
        or ``openvino``."""
        path = Path(model_path)
        if not path.is_file():
            raise EngineError(f"face-parsing model not found: {path}")
        self.path = path
        self.engine = host_engine(path, backend, providers, threads, device=device)
        self._input = self.engine.inputs[0].name

    def masks(self, targets: np.ndarray) -> list[np.ndarray | None]:
        """Soft [S,S] masks for float32 [N,3,S,S] RGB [0,1] target crops; None where the parser finds
        (almost) no face."""
        size = targets.shape[-1]
        index = np.arange(PARSING_SIZE) * size // PARSING_SIZE  # F.interpolate 'nearest' to 512
        mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
        std = np.array(IMAGENET_STD, np.float32)[:, None, None]
        out = []
        for target in targets:
            blob = ((target[:, index][:, :, index] - mean) / std)[None]
            logits = self.engine.run({self._input: np.ascontiguousarray(blob)})[self.engine.outputs[0].name]
            out.append(mask_from_labels(logits[0].argmax(0), size))
        return out

    def blend(self, swapped: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``swap·m + target·(1 - m)`` per crop, in crop space (crops where no mask was found stay swapped)."""
        out = swapped.copy()
        for i, mask in enumerate(self.masks(targets)):
            if mask is not None:
                out[i] = swapped[i] * mask + targets[i] * (1 - mask)
        return out
