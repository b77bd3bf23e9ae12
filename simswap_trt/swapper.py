"""``FaceSwapper``: the public entry point.

It loads a bundle, computes a source identity once, and swaps faces in whole images (detect → align →
warp → generator → paste back) or in already aligned crops. ``swap_batch`` gathers the selected faces of
all its images into batched generator calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simswap_trt.bundle import Bundle, contract
from simswap_trt.constants import LATENT_SIZE
from simswap_trt.engines import DEFAULT_PROVIDERS, Engine
from simswap_trt.errors import BundleError, ConfigError, InputError, NoFaceError
from simswap_trt.preprocess import Crops, crops_to_tensor, tensor_to_bgr, tensor_to_crops
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.detect import CenterFace, Detection, FaceDetector
from simswap_trt.vision.parsing import FaceParser
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.warp import largest_face_crop, warp_faces

log = logging.getLogger(__name__)

UNTRAINED_WARNING = "this bundle has UNTRAINED random weights: its outputs are not face swaps"
SELECT_MODES = ("all", "largest", "reference")
# Cosine similarity between L2-normalised ArcFace latents above which a target face counts as the
# reference person (select="reference"). Same-person pairs of aligned crops typically score well above
# it, different people below; tune it for your footage.
DEFAULT_MATCH_THRESHOLD = 0.5


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


class FaceSwapper:
    """Swap one source identity onto faces in images or aligned crops.

    Images are uint8 BGR (as OpenCV reads them). The detector defaults to CenterFace, created on first
    use. Thread safety: ``swap``/``swap_batch``/``identity`` may run from several threads once the source
    (and reference) identity is set; ``set_source`` and ``set_reference`` change shared state.
    """

    def __init__(
        self,
        bundle: Bundle,
        generator: Engine,
        arcface: Engine,
        detector: FaceDetector | None = None,
        parser: FaceParser | None = None,
        max_batch: int = 16,
    ) -> None:
        for role, engine in (("generator", generator), ("arcface", arcface)):
            if (engine.inputs, engine.outputs) != contract(role, bundle.crop_size):
                raise BundleError(
                    f"{bundle.root}: the {role} engine's signature "
                    f"{[s.describe() for s in engine.inputs + engine.outputs]} does not match the bundle contract"
                )
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        self.bundle = bundle
        self.generator = generator
        self.arcface = arcface
        self.parser = parser
        self.max_batch = max_batch
        self.source_latent: np.ndarray | None = None
        self.reference_latent: np.ndarray | None = None
        self._detector = detector
        if bundle.untrained:
            log.warning(UNTRAINED_WARNING)

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int | None = None,
        max_batch: int = 16,
        detector: FaceDetector | None = None,
        parser: FaceParser | None = None,
        backend: str = "auto",
    ) -> FaceSwapper:
        """Load a bundle. ``backend``: ``"auto"`` (TensorRT where the bundle has a plan this machine can
        run, else ONNX Runtime; logged), ``"onnxruntime"`` (with ``providers``, CPU by default) or
        ``"tensorrt"`` (an error if it cannot run)."""
        from simswap_trt.backends import open_engine

        bundle = Bundle.load(path)
        generator = open_engine(bundle, "generator", backend, providers, threads)
        arcface = open_engine(bundle, "arcface", backend, providers, threads)
        return cls(bundle, generator, arcface, detector, parser, max_batch)

    @property
    def crop_size(self) -> int:
        return self.bundle.crop_size

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = CenterFace()
        return self._detector

    # -- identities ---------------------------------------------------------------------------------------

    def identity(self, crops: Crops) -> np.ndarray:
        """The identity latent [512] of one or more aligned crops: each crop's L2-normalised ArcFace
        embedding, averaged over the crops, and L2-normalised again."""
        mean = self._latents(crops_to_tensor(crops, self.crop_size)).mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def set_source_crops(self, crops: Crops) -> np.ndarray:
        """Use the identity of aligned crops as the source; returns the latent."""
        self.source_latent = self.identity(crops)
        return self.source_latent

    def set_source(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Use the identity of the largest face in each image (several images are averaged)."""
        self.source_latent = self.identity(self._largest_face_crops(images, "source"))
        return self.source_latent

    def set_reference(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The person to replace when swapping with ``select="reference"``: the largest face of each image."""
        self.reference_latent = self.identity(self._largest_face_crops(images, "reference"))
        return self.reference_latent

    def _largest_face_crops(self, images: np.ndarray | Sequence[np.ndarray], what: str) -> np.ndarray:
        images = [images] if isinstance(images, np.ndarray) else list(images)
        for i, image in enumerate(images):
            check_image(image, f"{what} image {i}")
        crops = []
        for i, (image, detections) in enumerate(zip(images, self.detector.detect_batch(images), strict=True)):
            crop = largest_face_crop(image, detections, self.bundle.alignment, self.crop_size)
            if crop is None:
                raise NoFaceError(f"no face found in {what} image {i}")
            crops.append(crop)
        return np.stack(crops)

    def _latents(self, tensor: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                self.arcface.run({"crop": tensor[i : i + self.max_batch]})["latent"]
                for i in range(0, len(tensor), self.max_batch)
            ]
        )

    # -- swapping -----------------------------------------------------------------------------------------

    def generate(self, targets: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Run the generator on float32 [N,3,S,S] targets with [512] (shared) or [N,512] latents, in
        chunks of at most ``max_batch``; returns float32 [N,3,S,S] RGB in [0,1]."""
        latents = np.asarray(latents, np.float32)
        if latents.shape == (LATENT_SIZE,):
            latents = np.broadcast_to(latents, (len(targets), LATENT_SIZE))
        if latents.shape != (len(targets), LATENT_SIZE):
            raise InputError(f"latents must be [{LATENT_SIZE}] or [{len(targets)}, {LATENT_SIZE}], got {latents.shape}")
        out = np.empty_like(targets)
        for i in range(0, len(targets), self.max_batch):
            feeds = {
                "target": targets[i : i + self.max_batch],
                "latent": np.ascontiguousarray(latents[i : i + self.max_batch]),
            }
            out[i : i + self.max_batch] = self.generator.run(feeds)["swapped"]
        return out

    def _require_source(self, latent: np.ndarray | None) -> np.ndarray:
        if latent is not None:
            return latent
        if self.source_latent is None:
            raise InputError("no source identity: call set_source(images) or set_source_crops(crops) first")
        return self.source_latent

    def swap_aligned(self, crops: Crops, latent: np.ndarray | None = None) -> np.ndarray:
        """Swap the source identity (or ``latent``) onto aligned BGR crops; returns uint8 [N,S,S,3] BGR."""
        latent = self._require_source(latent)
        return tensor_to_crops(self.generate(crops_to_tensor(crops, self.crop_size), latent))

    def swap(self, image: np.ndarray, select: str = "all", threshold: float = DEFAULT_MATCH_THRESHOLD) -> SwapResult:
        """Swap the source identity onto the selected faces of one image. See ``swap_batch``."""
        return self.swap_batch([image], select, threshold)[0]

    def swap_batch(
        self, images: Sequence[np.ndarray], select: str = "all", threshold: float = DEFAULT_MATCH_THRESHOLD
    ) -> list[SwapResult]:
        """Swap the source identity onto faces in several images with batched detector and generator calls.

        ``select``: ``"all"`` faces, the ``"largest"`` face of each image, or faces whose cosine similarity to
        the ``set_reference`` identity is at least ``threshold`` (``"reference"``). Images without a
        selected face come back unchanged (as copies), with their faces reported as not swapped.
        """
        return self.swap_faces(images, self.detect(images), select, threshold)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """The faces of each image (one batched detector call), in score order."""
        for i, image in enumerate(images):
            check_image(image, f"image {i}")
        return self.detector.detect_batch(images)

    def swap_faces(
        self,
        images: Sequence[np.ndarray],
        faces: Sequence[Sequence[Detection]],
        select: str | Sequence[Sequence[bool]] = "all",
        threshold: float = DEFAULT_MATCH_THRESHOLD,
    ) -> list[SwapResult]:
        """Swap the source identity onto given faces of several images (e.g. tracked, smoothed landmarks).

        ``faces[i]`` are the faces of ``images[i]``. ``select`` is a mode as in ``swap_batch``, or one
        sequence of booleans per image saying which of its faces to swap (decided by the caller).
        """
        explicit = not isinstance(select, str)
        if not explicit and select not in SELECT_MODES:
            raise InputError(f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
        if select == "reference" and self.reference_latent is None:
            raise InputError('select="reference" needs a reference identity: call set_reference(images) first')
        if len(faces) != len(images):
            raise InputError(f"faces must hold one list per image: {len(faces)} lists for {len(images)} images")
        if explicit and [len(m) for m in select] != [len(f) for f in faces]:
            raise InputError("select must hold one boolean per face of each image")
        source = self._require_source(None)
        for i, image in enumerate(images):
            check_image(image, f"image {i}")

        flat = [
            (i, d, alignment_matrix(d.landmarks, self.bundle.alignment, self.crop_size))
            for i, per_image in enumerate(faces)
            for d in per_image
        ]
        crops = warp_faces(images, [(i, m) for i, _, m in flat], self.crop_size)
        size = self.crop_size
        targets = crops_to_tensor(crops, size) if flat else np.empty((0, 3, size, size), np.float32)
        if explicit:
            chosen = np.flatnonzero([bool(b) for mask in select for b in mask]).astype(np.int64)
            similarity: dict[int, float] = {}
        else:
            chosen, similarity = self._select(flat, targets, select, threshold)

        swapped = self.generate(targets[chosen], source) if chosen.size else targets[:0]
        if self.parser is not None and chosen.size:
            swapped = self.parser.blend(swapped, targets[chosen])
        pasted = {int(f): crop for f, crop in zip(chosen, tensor_to_bgr(swapped), strict=True)}

        results = []
        for i, image in enumerate(images):
            mine = [f for f, face in enumerate(flat) if face[0] == i]
            out = paste_back(image, [(pasted[f], flat[f][2]) for f in mine if f in pasted])
            info = tuple(self._info(flat[f][1], flat[f][2], f in pasted, similarity.get(f)) for f in mine)
            results.append(SwapResult(out, info))
        return results

    def similarities(self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Detection]]) -> list[np.ndarray]:
        """Cosine similarity of each given face to the ``set_reference`` identity: one float32 array per image."""
        if self.reference_latent is None:
            raise InputError("similarities need a reference identity: call set_reference(images) first")
        flat = [
            (i, alignment_matrix(d.landmarks, self.bundle.alignment, self.crop_size))
            for i, per_image in enumerate(faces)
            for d in per_image
        ]
        if not flat:
            return [np.empty(0, np.float32) for _ in images]
        cosine = self._latents(crops_to_tensor(warp_faces(images, flat, self.crop_size), self.crop_size))
        cosine = (cosine @ self.reference_latent).astype(np.float32)
        return list(np.split(cosine, np.cumsum([len(f) for f in faces])[:-1]))

    def _select(self, faces, targets, select, threshold) -> tuple[np.ndarray, dict[int, float]]:
        """Indices (into ``faces``) to swap, in detection order, and each face's similarity if computed."""
        if select == "all":
            return np.arange(len(faces)), {}
        if select == "largest":
            best: dict[int, int] = {}
            for f, (i, detection, _) in enumerate(faces):
                if i not in best or detection.area > faces[best[i]][1].area:
                    best[i] = f
            return np.array(sorted(best.values()), dtype=np.int64), {}
        if not faces:
            return np.empty(0, np.int64), {}
        cosine = self._latents(targets) @ self.reference_latent
        return np.flatnonzero(cosine >= threshold), {f: float(c) for f, c in enumerate(cosine)}

    @staticmethod
    def _info(detection: Detection, matrix: np.ndarray, swapped: bool, similarity: float | None) -> FaceInfo:
        return FaceInfo(detection.box, detection.score, detection.landmarks, matrix, swapped, similarity)
