"""Face enhancement between the swap and the paste-back, with the bundle's ``enhancer`` graph (GFPGAN v1.4).

For each swapped face, with ``G`` the frame→generator-crop matrix and ``E`` the frame→enhancer-crop matrix
(the face's landmarks fitted to the enhancer's template, FFHQ at E px):

1. the generator's output goes straight into the enhancer's crop through the composed map ``E·G⁻¹`` (one
   bilinear warp, no second detection); where the enhancer's crop reaches beyond the generator's, the frame
   itself fills it (warped by ``E``), so the restorer sees the swapped face in its surroundings, as if
   pasted;
2. all faces of all frames of a batch go through the restorer together, in chunks of ``max_batch``;
3. ``blend·enhanced + (1 − blend)·swap`` (``blend`` 0–1, default 0.8) is pasted back once, at the
   enhancer's resolution, with the border mask of the generator's crop: exactly the pixels the plain swap
   changes change. ``blend`` 0 skips the restorer and leaves the swap bit-exact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from simswap_trt.bundle import Bundle
from simswap_trt.engines import DEFAULT_PROVIDERS, Engine
from simswap_trt.errors import BundleError, ConfigError
from simswap_trt.vision.align import alignment_matrix, invert_affine
from simswap_trt.vision.preprocess import tensor_to_bgr
from simswap_trt.vision.warp import warp_faces

log = logging.getLogger(__name__)

DEFAULT_ENHANCE_BLEND = 0.8  # the share of the restored face, as the usual face-enhancer default of 80 %
INPUT, OUTPUT = "face", "enhanced"


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``outer ∘ inner`` (apply ``inner`` first)."""
    return outer[:, :2] @ inner + np.hstack([np.zeros((2, 2)), outer[:, 2:]])


def to_enhancer_crops(
    images: Sequence[np.ndarray],
    faces: Sequence[tuple[int, np.ndarray]],
    enhancer_matrices: Sequence[np.ndarray],
    swapped: np.ndarray,
    size: int,
) -> np.ndarray:
    """float32 [N,3,E,E] RGB in [0,1]: each face's swap (``swapped``: the generator's [N,3,S,S] output, placed
    by ``faces``' frame→crop matrices) warped into its enhancer crop by the composed map, the frame around it."""
    crop_size = swapped.shape[-1]
    ones = np.ones((crop_size, crop_size), np.float32)
    frames = warp_faces(images, [(i, m) for (i, _), m in zip(faces, enhancer_matrices, strict=True)], size)
    out = np.empty((len(faces), 3, size, size), np.float32)
    for f, ((_, matrix), enhancer_matrix) in enumerate(zip(faces, enhancer_matrices, strict=True)):
        composed = compose_affine(enhancer_matrix, invert_affine(matrix))
        face = cv2.warpAffine(np.ascontiguousarray(swapped[f].transpose(1, 2, 0)), composed, (size, size))
        cover = cv2.warpAffine(ones, composed, (size, size))[..., None]
        around = frames[f][..., ::-1].astype(np.float32) * np.float32(1 / 255)
        out[f] = (face + (1 - cover) * around).transpose(2, 0, 1)
    return out


def enhancer_precision(bundle: Bundle, precision: str | None) -> str | None:
    """The enhancer graph a pipeline run at ``precision`` uses (None: FP32): its FP16 graph for ``fp16`` when the
    bundle has one, the FP32 graph otherwise; ``int8`` is not offered for the enhancer, so it runs the FP16 graph
    (or FP32); ``bf16`` stays (OpenVINO runs the FP32 graph in BF16). Each substitution is logged."""
    if precision not in ("fp16", "int8"):
        return precision
    graph = "fp16" if "fp16" in bundle.variants.get("enhancer", {}) else None
    if precision == "int8":
        log.warning("enhancer: INT8 is not offered for the face restorer; it runs its %s graph", graph or "fp32")
    elif graph is None:
        log.warning(
            "enhancer: %s has no FP16 enhancer graph ('simswap-build precision %s' makes one); it runs its FP32 graph",
            bundle.root,
            bundle.root,
        )
    return graph


class FaceEnhancer:
    """Runs a bundle's face restorer on swapped faces and blends it with the swap (see the module doc)."""

    def __init__(self, engine: Engine, alignment: str, blend: float = DEFAULT_ENHANCE_BLEND, max_batch: int = 16):
        """``engine``: the ``enhancer`` graph (``face`` → ``enhanced``, [N,3,E,E] RGB [0,1]); ``alignment``: the
        template its crops use; ``blend``: share of the restored face, 0–1."""
        if [s.name for s in engine.inputs] != [INPUT] or [s.name for s in engine.outputs] != [OUTPUT]:
            raise BundleError(f"the enhancer engine must map {INPUT!r} to {OUTPUT!r}")
        self.engine, self.alignment, self.blend, self.max_batch = engine, alignment, self.check_blend(blend), max_batch
        self.size = int(engine.inputs[0].shape[2])

    @staticmethod
    def check_blend(blend: float) -> float:
        """``blend`` as a float, or a ``ConfigError`` when it is not a number between 0 and 1."""
        if not 0.0 <= blend <= 1.0:  # NaN fails too
            raise ConfigError(f"enhance blend must be between 0 and 1, got {blend}")
        return float(blend)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        blend: float = DEFAULT_ENHANCE_BLEND,
        backend: str = "auto",
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int | None = None,
        max_batch: int = 16,
        device: int | None = None,
        precision: str | None = None,
    ) -> FaceEnhancer:
        """The bundle's enhancer (a ``BundleError`` naming ``simswap-build add-enhancer`` when it has none), its
        graph for the pipeline's ``precision`` as ``enhancer_precision`` chooses."""
        from simswap_trt.backends import open_engine

        entry = bundle.require_enhancer()
        graph = enhancer_precision(bundle, precision)
        engine = open_engine(bundle, "enhancer", backend, providers, threads, graph, device=device)
        return cls(engine, entry.source["alignment"], blend, max_batch)

    @property
    def active(self) -> bool:
        """False for ``blend`` 0: the restorer is skipped and swaps stay exactly as without it."""
        return self.blend > 0

    def matrix(self, landmarks: np.ndarray) -> np.ndarray:
        """The 2x3 frame→enhancer-crop matrix of a face's [5,2] landmarks."""
        return alignment_matrix(landmarks, self.alignment, self.size)

    def run(self, faces: np.ndarray) -> np.ndarray:
        """The restorer on float32 [N,3,E,E] RGB [0,1] faces, in chunks of ``max_batch``."""
        out = np.empty_like(faces)
        for i in range(0, len(faces), self.max_batch):
            out[i : i + self.max_batch] = self.engine.run({INPUT: faces[i : i + self.max_batch]})[OUTPUT]
        return out

    def enhance(
        self,
        images: Sequence[np.ndarray],
        faces: Sequence[tuple[int, np.ndarray]],
        enhancer_matrices: Sequence[np.ndarray],
        swapped: np.ndarray,
    ) -> np.ndarray:
        """BGR float [N,E,E,3] in [0,255] (as paste-back takes crops): the blend of each swapped face with its
        restored version, in the enhancer's crop (placed by ``enhancer_matrices``)."""
        inputs = to_enhancer_crops(images, faces, enhancer_matrices, swapped, self.size)
        blended = self.blend * self.run(inputs) + (1 - self.blend) * inputs
        return tensor_to_bgr(blended)

    def close(self) -> None:
        self.engine.close()
