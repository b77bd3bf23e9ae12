"""Where FaceSwapper's stages run. The order of calls is written once, in ``FaceSwapper``; each place that
can run the stages implements the same three steps:

* ``start(images, faces, latent, resident=None)``: preprocess the given faces (``(image index, frame→crop
  matrix)``), run the generator with ``latent``, paste the swaps back, and return a ticket (possibly while
  the work is still running); ``HostStages.start`` also takes ``enhance``, the faces' frame→enhancer-crop
  matrices, to restore the swaps with its ``FaceEnhancer`` before the paste-back;
* ``finish(ticket)``: the output images (new arrays) of a started batch, in order;
* ``generate_aligned(crops, latent)``: the generator's float32 [N,3,S,S] output for aligned uint8 BGR crops;
* ``latents(images, faces, resident=None)``: the ArcFace latent [N,512] of each face's crop;
* ``close()``: release what the place holds (idempotent).

``resident``: one ``Resident`` (or None) per image, the frames' copies that device detection left on the
device (``ResidentDetector``); the device stages read a frame there instead of uploading it, the host stages
read the images themselves.

``HostStages`` is the CPU implementation (OpenCV/NumPy around any engine); the device implementation
(fused kernels and TensorRT on device buffers) is ``simswap_trt.device.stages.DeviceStages``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from simswap_trt.vision.detect import Detection
from simswap_trt.vision.enhance import FaceEnhancer
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import crops_to_tensor, tensor_to_bgr
from simswap_trt.vision.warp import warp_faces

Faces = Sequence[tuple[int, np.ndarray]]  # (image index, 2x3 frame→crop matrix), in paste order per image


class Resident(Protocol):
    """A frame's pixels that device detection left on the device (``simswap_trt.device.frames.ResidentFrame``),
    handed to the swap together with that frame; ``shape`` is the frame's."""

    @property
    def shape(self) -> tuple[int, ...]: ...


Residency = Sequence[Resident | None]  # one per image of a batch: its frame's copy on the device, or None


@runtime_checkable
class ResidentDetector(Protocol):
    """A detector that leaves the frames it searched on the device for their swap
    (``simswap_trt.device.detect.DeviceDetector``): ``detect_resident`` returns ``detect_batch``'s detections
    and each frame's copy on the device, which ``FaceSwapper.start_batch(..., resident=)`` takes."""

    def detect_resident(
        self, images: Sequence[np.ndarray], batch_size: int = 8
    ) -> tuple[list[list[Detection]], list[Resident]]: ...


class Stages(Protocol):
    name: str

    def start(
        self, images: Sequence[np.ndarray], faces: Faces, latent: np.ndarray, resident: Residency | None = None
    ) -> Any: ...

    def finish(self, ticket: Any) -> list[np.ndarray]: ...

    def generate_aligned(self, crops: np.ndarray, latent: np.ndarray) -> np.ndarray: ...

    def latents(self, images: Sequence[np.ndarray], faces: Faces, resident: Residency | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


class HostStages:
    """Warp and tensor with OpenCV/NumPy, the generator through ``submit``/``collect`` (any engine, chunked),
    the optional parsing blend, the optional face enhancer, and the CPU paste-back. ``start`` warps and
    submits the generator's work; ``finish`` collects it, enhances and pastes back. With an asynchronous
    engine (OpenVINO) the generator of one batch thus runs while the caller pastes back the previous one
    (``FaceSwapper.swap_stream``)."""

    name = "host (OpenCV/NumPy pre- and post-processing)"

    def __init__(
        self,
        crop_size: int,
        submit: Callable[[np.ndarray, np.ndarray], Any],
        collect: Callable[[Any], np.ndarray],
        identify: Callable[[np.ndarray], np.ndarray],
        blend: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        enhancer: FaceEnhancer | None = None,
    ) -> None:
        """``submit(targets, latent)`` starts the generator on tensors and ``collect(ticket)`` returns its output;
        ``identify(crops) -> latents`` runs ArcFace; ``enhancer`` restores the swapped faces when ``start`` is
        given their enhancer matrices."""
        self.crop_size, self._submit, self._collect = crop_size, submit, collect
        self._identify, self._blend, self.enhancer = identify, blend, enhancer

    def start(
        self,
        images: Sequence[np.ndarray],
        faces: Faces,
        latent: np.ndarray,
        resident: Residency | None = None,
        enhance: Sequence[np.ndarray] | None = None,
    ) -> tuple:
        """``enhance``: each face's affine map into the enhancer's crop (``FaceEnhancer.matrix``). ``resident``
        is not used: the host reads the images themselves."""
        if not faces:
            return images, faces, None, None, enhance
        targets = crops_to_tensor(warp_faces(images, faces, self.crop_size), self.crop_size)
        return images, faces, targets, self._submit(targets, latent), enhance

    def finish(self, ticket: tuple) -> list[np.ndarray]:
        images, faces, targets, generating, enhance = ticket
        pasted: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in images]
        footprints: list[list[tuple[np.ndarray, int] | None]] = [[] for _ in images]
        if faces:
            swapped = self._collect(generating)
            if self._blend is not None:
                swapped = self._blend(swapped, targets)
            if enhance is not None and self.enhancer is not None:
                crops = self.enhancer.enhance(images, faces, enhance, swapped)
                placements = [(m, (g, self.crop_size)) for (_, g), m in zip(faces, enhance, strict=True)]
            else:
                crops = tensor_to_bgr(swapped)  # BGR [0, 255], as the official code pastes
                placements = [(g, None) for _, g in faces]
            for (i, _), crop, (matrix, footprint) in zip(faces, crops, placements, strict=True):
                pasted[i].append((crop, matrix))
                footprints[i].append(footprint)
        return [paste_back(*args) for args in zip(images, pasted, footprints, strict=True)]

    def generate_aligned(self, crops: np.ndarray, latent: np.ndarray) -> np.ndarray:
        return self._collect(self._submit(crops_to_tensor(crops, self.crop_size), latent))

    def latents(self, images: Sequence[np.ndarray], faces: Faces, resident: Residency | None = None) -> np.ndarray:
        return self._identify(crops_to_tensor(warp_faces(images, faces, self.crop_size), self.crop_size))

    def close(self) -> None:
        pass
