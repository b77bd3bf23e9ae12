"""Where FaceSwapper's stages run. The order of calls is written once, in ``FaceSwapper``; each place that
can run the stages implements the same three steps:

* ``start(images, faces, latent)``: preprocess the given faces (``(image index, frame→crop matrix)``),
  run the generator with ``latent``, paste the swaps back, and return a ticket (possibly while the work is
  still running);
* ``finish(ticket)``: the output images (new arrays) of a started batch, in order;
* ``generate_aligned(crops, latent)``: the generator's float32 [N,3,S,S] output for aligned uint8 BGR crops;
* ``latents(images, faces)``: the ArcFace latent [N,512] of each face's crop;
* ``close()``: release what the place holds (idempotent).

``HostStages`` is the CPU implementation (OpenCV/NumPy around any engine); the device implementation
(fused kernels and TensorRT on device buffers) is ``simswap_trt.device.DeviceStages``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from simswap_trt.preprocess import crops_to_tensor, tensor_to_bgr
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.warp import warp_faces

Faces = Sequence[tuple[int, np.ndarray]]  # (image index, 2x3 frame→crop matrix), in paste order per image


class Stages(Protocol):
    name: str

    def start(self, images: Sequence[np.ndarray], faces: Faces, latent: np.ndarray) -> Any: ...

    def finish(self, ticket: Any) -> list[np.ndarray]: ...

    def generate_aligned(self, crops: np.ndarray, latent: np.ndarray) -> np.ndarray: ...

    def latents(self, images: Sequence[np.ndarray], faces: Faces) -> np.ndarray: ...

    def close(self) -> None: ...


class HostStages:
    """Warp and tensor with OpenCV/NumPy, the generator through ``submit``/``collect`` (any engine, chunked),
    the optional parsing blend, and the CPU paste-back. ``start`` warps and submits the generator's work;
    ``finish`` collects it and pastes back. With an asynchronous engine (OpenVINO) the generator of one batch
    thus runs while the caller pastes back the previous one (``FaceSwapper.swap_stream``)."""

    name = "host (OpenCV/NumPy pre- and post-processing)"

    def __init__(
        self,
        crop_size: int,
        submit: Callable[[np.ndarray, np.ndarray], Any],
        collect: Callable[[Any], np.ndarray],
        identify: Callable[[np.ndarray], np.ndarray],
        blend: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """``submit(targets, latent)`` starts the generator on tensors and ``collect(ticket)`` returns its output;
        ``identify(crops) -> latents`` runs ArcFace."""
        self.crop_size, self._submit, self._collect = crop_size, submit, collect
        self._identify, self._blend = identify, blend

    def start(self, images: Sequence[np.ndarray], faces: Faces, latent: np.ndarray) -> tuple:
        if not faces:
            return images, faces, None, None
        targets = crops_to_tensor(warp_faces(images, faces, self.crop_size), self.crop_size)
        return images, faces, targets, self._submit(targets, latent)

    def finish(self, ticket: tuple) -> list[np.ndarray]:
        images, faces, targets, generating = ticket
        pasted: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in images]
        if faces:
            swapped = self._collect(generating)
            if self._blend is not None:
                swapped = self._blend(swapped, targets)
            crops = tensor_to_bgr(swapped)  # BGR [0, 255], as the official code pastes
            for (i, matrix), crop in zip(faces, crops, strict=True):
                pasted[i].append((crop, matrix))
        return [paste_back(image, mine) for image, mine in zip(images, pasted, strict=True)]

    def generate_aligned(self, crops: np.ndarray, latent: np.ndarray) -> np.ndarray:
        return self._collect(self._submit(crops_to_tensor(crops, self.crop_size), latent))

    def latents(self, images: Sequence[np.ndarray], faces: Faces) -> np.ndarray:
        return self._identify(crops_to_tensor(warp_faces(images, faces, self.crop_size), self.crop_size))

    def close(self) -> None:
        pass
