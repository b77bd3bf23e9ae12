"""What ``FaceSwapper`` takes and gives: the options ``from_bundle`` opens a bundle with, a batch of frames
with their faces (``FrameBatch``), a started batch (``InFlight``), the result of a swap (``SwapResult`` with a
``FaceInfo`` per face), and the checks of its inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simswap_trt.engines import DEFAULT_PROVIDERS
from simswap_trt.errors import InputError
from simswap_trt.selection import DEFAULT_MATCH_THRESHOLD
from simswap_trt.stages import Residency
from simswap_trt.vision.detect import Detection
from simswap_trt.vision.enhance import DEFAULT_ENHANCE_BLEND


@dataclass(frozen=True)
class SwapperOptions:
    """How ``FaceSwapper.from_bundle`` opens a bundle.

    ``backend``: ``"auto"`` (TensorRT where the bundle has a plan this machine can run, else the faster CPU
    backend for ``precision``; logged), ``"onnxruntime"`` (with ``providers``, CPU by default),
    ``"openvino"`` (every model, the host detector and parser too, on OpenVINO) or ``"tensorrt"`` (an error
    if it cannot run). ``threads``: CPU threads of ONNX Runtime and OpenVINO (None: all). ``max_batch``:
    faces per generator call. ``device_path``: see ``FaceSwapper``. ``precision``: ``"fp32"``, ``"fp16"`` or
    ``"int8"`` graphs, or ``"bf16"`` (the FP32 graphs on OpenVINO in BF16, on CPUs with AVX512_BF16 or AMX)
    (default: the bundle's validated CPU default where it has one, else FP32 on the CPU; the fastest plan
    on TensorRT). ``device``: the CUDA device id for the TensorRT engines, the device path and ONNX
    Runtime's CUDA and TensorRT providers (when ``providers`` asks for them); ``cuda_graphs``: see
    ``FaceSwapper``. ``enhance``: restore every swapped face with the bundle's ``enhancer`` (a
    ``BundleError`` naming ``simswap-build add-enhancer`` when it has none), blended with the swap by
    ``enhance_blend`` (0–1)."""

    providers: Sequence[str] = DEFAULT_PROVIDERS
    threads: int | None = None
    max_batch: int = 16
    backend: str = "auto"
    device_path: bool | None = None
    precision: str | None = None
    device: int | None = None
    cuda_graphs: bool = False
    enhance: bool = False
    enhance_blend: float = DEFAULT_ENHANCE_BLEND


@dataclass(frozen=True)
class FaceInfo:
    """One detected face of a target image and what happened to it."""

    box: np.ndarray  # [x1, y1, x2, y2] image pixels
    score: float  # detector confidence
    landmarks: np.ndarray  # [5, 2] ArcFace order
    matrix: np.ndarray  # 2x3 image → aligned-crop transform
    swapped: bool
    similarity: float | None = None  # cosine to the reference identity, when select="reference"


@dataclass(frozen=True)
class SwapResult:
    """The output image (a new array) and every detected face, in detection (score) order."""

    image: np.ndarray
    faces: tuple[FaceInfo, ...]

    @property
    def swapped_count(self) -> int:
        return sum(face.swapped for face in self.faces)


@dataclass(frozen=True)
class FrameBatch:
    """Frames and their faces, as ``swap_faces`` takes them: a unit of work for ``swap_stream``.
    ``resident``: each frame's copy that device detection left on the device (``FaceSwapper.detect_frames``),
    which the swap reads instead of uploading the frame again; None: every frame is uploaded."""

    images: Sequence[np.ndarray]
    faces: Sequence[Sequence[Detection]]
    select: str | Sequence[Sequence[bool]] = "all"
    threshold: float = DEFAULT_MATCH_THRESHOLD
    resident: Residency | None = None


@dataclass(frozen=True)
class InFlight:
    """A started batch (``FaceSwapper.start_batch``): finish it with ``finish_batch``, in start order."""

    ticket: Any
    faces: tuple[tuple[int, Detection, np.ndarray], ...]  # (image index, detection, matrix) of every face
    chosen: frozenset[int]
    similarity: dict[int, float]


def check_image(image: np.ndarray, what: str = "image") -> None:
    """Images are uint8 BGR HxWx3 arrays (what ``cv2.imread`` / ``simswap_trt.images.read_image`` return)."""
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.size == 0
    ):
        got = f"{image.dtype}{list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(
            f"{what} must be a uint8 BGR array of shape [H, W, 3] with H, W >= 1, got {got}; "
            "read files with simswap_trt.images.read_image, which converts grey, RGBA and 16-bit"
        )


def check_resident(images: Sequence[np.ndarray], resident: Residency | None) -> None:
    """``resident`` holds one device copy (or None) per image, each of its own image's shape."""
    if resident is None:
        return
    if len(resident) != len(images):
        raise InputError(f"resident must hold one entry per image: {len(resident)} for {len(images)} images")
    for i, (image, on_device) in enumerate(zip(images, resident, strict=True)):
        if on_device is not None and tuple(on_device.shape) != image.shape:
            raise InputError(
                f"resident[{i}] is the device copy of a {list(on_device.shape)} frame, not of image {i} "
                f"{list(image.shape)}: pass each frame's copy from detect_frames with that frame"
            )
