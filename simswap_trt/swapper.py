"""``FaceSwapper``: the public entry point.

It loads a bundle, computes a source identity once, and swaps faces in whole images (detect → align →
warp → generator → paste back) or in already aligned crops. ``swap_batch`` gathers the selected faces of
all its images into batched generator calls.

The order of the stages is written once, here. Where they run is a ``Stages`` object: on the host
(``HostStages``: OpenCV/NumPy around any engine), or on the device when the generator runs on TensorRT
(``DeviceStages``: fused kernels and the plan on device buffers, frames uploaded once per batch, only the
changed regions downloaded). The choice is logged. ``start_batch``/``finish_batch`` and ``swap_stream``
keep batches of frames in flight (``engines.scheduler``), so the device works on one batch while the host
prepares the next. Which faces are swapped is ``selection.select_faces``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simswap_trt.bundle import Bundle, contract
from simswap_trt.constants import LATENT_SIZE
from simswap_trt.cuda.memory import SwapperMemory
from simswap_trt.engines import DEFAULT_PROVIDERS, Engine
from simswap_trt.engines.scheduler import in_flight
from simswap_trt.errors import BundleError, ConfigError, InputError, NoFaceError, SimswapError
from simswap_trt.selection import DEFAULT_MATCH_THRESHOLD, check_select, select_faces
from simswap_trt.stages import HostStages, Stages
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.detect import CenterFace, Detection, FaceDetector
from simswap_trt.vision.enhance import DEFAULT_ENHANCE_BLEND, FaceEnhancer
from simswap_trt.vision.parsing import FaceParser
from simswap_trt.vision.preprocess import Crops, crops_to_tensor, tensor_to_crops
from simswap_trt.vision.warp import largest_face_crop

Photos = np.ndarray | str | Path | Sequence[np.ndarray | str | Path]

log = logging.getLogger(__name__)

UNTRAINED_WARNING = "this bundle has UNTRAINED random weights: its outputs are not face swaps"


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
    """Frames and their faces, as ``swap_faces`` takes them: a unit of work for ``swap_stream``."""

    images: Sequence[np.ndarray]
    faces: Sequence[Sequence[Detection]]
    select: str | Sequence[Sequence[bool]] = "all"
    threshold: float = DEFAULT_MATCH_THRESHOLD


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
        device_path: bool | None = None,
        device: int | None = None,
        cuda_graphs: bool = False,
        parser_engine: Engine | None = None,
        enhance: FaceEnhancer | None = None,
    ) -> None:
        """``device``: the CUDA device id the device path (buffers, streams, kernels) runs on, the same as the
        TensorRT engines' (``from_bundle`` opens them there); an id that does not exist is a
        ``DeviceNotFoundError`` naming the available ones. Default: the current device. ``cuda_graphs``: on
        the device path, replay each batch's whole sequence (preprocess, generator, paste-back) as a CUDA
        graph captured per batch size (not with a parser). ``parser_engine``: a TensorRT plan of ``parser``'s
        graph (``from_bundle`` opens the bundle's when it was made from the same file): the device path then
        parses on the device. ``enhance``: a ``FaceEnhancer`` that restores each swapped face before the
        paste-back (``from_bundle(..., enhance=True)`` opens the bundle's); off by default."""
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
        self.parser_engine = parser_engine
        self.enhance_model = enhance  # kept at blend 0 too, for with_enhance_blend
        self.enhancer = enhance if enhance is not None and enhance.active else None
        self.max_batch = max_batch
        self.source_latent: np.ndarray | None = None
        self.reference_latent: np.ndarray | None = None
        self._detector = detector
        self._detector_options: dict[str, Any] = {}  # providers and threads of the default detector
        self._owned: list[Engine] = []  # engines this swapper opened, closed by close()
        self.device = self._check_device(device)
        self.cuda_graphs = cuda_graphs
        if bundle.untrained:
            log.warning(UNTRAINED_WARNING)
        self._stages = self._choose_stages(device_path)
        log.info("stages: %s", self._stages.name)

    def _choose_stages(self, device_path: bool | None) -> Stages:
        """The device path when the generator runs on TensorRT (``device_path=None``) or when asked
        (``True``: an error if it cannot run); else the host path."""
        host = self._host_stages(self.enhancer)
        on_tensorrt = hasattr(self.generator, "execute_device")
        if device_path is False or (device_path is None and not on_tensorrt):
            return host
        reason = None
        if not on_tensorrt:
            reason = f"the generator runs on {self.generator.backend}, not TensorRT"
        elif self.enhancer is not None:
            reason = "face enhancement runs on the host stages only"
        if reason is None:
            from simswap_trt.device.stages import DeviceStages

            try:
                return DeviceStages(
                    self.generator,
                    self.crop_size,
                    arcface=self.arcface,
                    host=host,
                    device=self.device,
                    parser=self.parser,
                    graphs=self.cuda_graphs,
                    parser_engine=self.parser_engine,
                )
            except SimswapError as exc:
                reason = str(exc)
        if device_path:
            raise ConfigError(f"the device path cannot run: {reason}; use device_path=None or False")
        log.warning("the generator runs on TensorRT but pre- and post-processing run on the host: %s", reason)
        return host

    def with_enhance_blend(self, blend: float) -> FaceSwapper:
        """A shallow copy (sharing the engines) that enhances with ``blend`` (0–1; 0: no enhancement) instead
        of this swapper's; a ``ConfigError`` when this swapper was made without an enhancer. The copy runs the
        host stages when it enhances (the device path does not enhance)."""
        if self.enhance_model is None:
            raise ConfigError("this swapper has no face enhancer (FaceSwapper.from_bundle(..., enhance=True))")
        if blend == (self.enhancer.blend if self.enhancer is not None else 0.0):
            return self
        enhancer = copy.copy(self.enhance_model)
        enhancer.blend = FaceEnhancer.check_blend(blend)
        return self.with_restorer(enhancer if enhancer.active else None)

    def with_restorer(self, enhancer: FaceEnhancer | None) -> FaceSwapper:
        """A shallow copy (sharing the engines) that enhances with ``enhancer`` (None: not at all) on the host
        stages."""
        variant = copy.copy(self)
        variant.enhancer = enhancer
        variant._stages = self._host_stages(enhancer)
        return variant

    def _host_stages(self, enhancer: FaceEnhancer | None = None) -> HostStages:
        blend = self.parser.blend if self.parser else None
        return HostStages(
            self.crop_size, self._submit_generator, self._collect_generator, self._latents, blend, enhancer
        )

    def _check_device(self, device: int | None) -> int | None:
        """``device`` after checking that it exists and that the engines bound to a device use the same one."""
        if device is None:
            return None
        from simswap_trt import cuda

        info = cuda.check_device(device)
        for role, engine in (("generator", self.generator), ("arcface", self.arcface)):
            if getattr(engine, "device", None) not in (None, device):
                raise ConfigError(f"the {role} engine runs on CUDA device {engine.device}, the swapper on {device}")
        log.info("CUDA device %d: %s (%s)", device, info.name, info.sm)
        return device

    @property
    def stages(self) -> str:
        """Where pre-processing, generator and paste-back run (host or device), in words."""
        return self._stages.name

    @property
    def on_device(self) -> bool:
        """Whether the stages run on the device: ``start_batch`` then returns while the device works, so
        callers gain from keeping batches in flight (``swap_stream``)."""
        return not isinstance(self._stages, HostStages)

    @property
    def stream_depth(self) -> int:
        """Batches worth keeping in flight: 2 on the device (it swaps one while the next is uploaded and the
        previous one downloaded), 1 on the host (starting a batch does all of its work)."""
        return 2 if self.on_device else 1

    def memory(self) -> SwapperMemory:
        """Device and pinned host memory this swapper holds now, per part: each TensorRT engine (its I/O
        buffers and its execution contexts' activation memory), the device detector, and the device stages'
        workspaces and resident frames. Host-only parts (ONNX Runtime, OpenVINO, the host stages) hold none
        and are left out. Buffers grow on first use: measure after a representative batch."""
        parts = {"generator": self.generator, "arcface": self.arcface, "parser": self.parser_engine}
        parts |= {"detector": self._detector, "device stages": self._stages}
        reports = {name: part.memory() for name, part in parts.items() if hasattr(part, "memory")}
        return SwapperMemory({name: use for name, use in reports.items() if use.device or use.pinned})

    def close(self) -> None:
        """Release what this swapper opened: the device path's buffers, the engines ``from_bundle`` loaded and
        the default detector. Engines, detectors and parsers passed in stay the caller's. Idempotent; use
        ``with FaceSwapper.from_bundle(...) as swapper:`` to close on exit."""
        self._stages.close()
        for engine in self._owned:
            engine.close()

    def __enter__(self) -> FaceSwapper:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        options: SwapperOptions | None = None,
        *,
        detector: FaceDetector | None = None,
        parser: FaceParser | None = None,
        **settings: Any,
    ) -> FaceSwapper:
        """Load a bundle, opened as ``options`` says (``SwapperOptions``), with ``settings`` (its fields by
        keyword: ``from_bundle(path, backend="tensorrt", device=1)``) replacing options' values. ``detector``
        and ``parser`` stay the caller's (default: CenterFace, or the bundle's detector plan on the device
        path; no parser)."""
        from simswap_trt.backends import default_precision, open_engine

        o = dataclasses.replace(options or SwapperOptions(), **settings)
        providers, threads, max_batch = o.providers, o.threads, o.max_batch
        backend, precision, device = o.backend, o.precision, o.device
        bundle = Bundle.load(path)
        precision = precision or default_precision(bundle, backend, providers, device)
        if o.enhance:
            bundle.require_enhancer()
        if device is not None:  # a bad id is refused before any engine loads
            from simswap_trt import cuda

            cuda.check_device(device)
        engines = [open_engine(bundle, "generator", backend, providers, threads, precision, device=device)]
        try:
            engines.append(open_engine(bundle, "arcface", backend, providers, threads, precision, device=device))
            on_gpu = backend in ("auto", "tensorrt")
            parser_engine = cls._parser_plan(bundle, parser, backend, device) if on_gpu else None
            engines += [parser_engine] if parser_engine is not None else []
            enhancer = None
            if o.enhance:
                enhancer = FaceEnhancer.from_bundle(
                    bundle, o.enhance_blend, backend, providers, threads, max_batch, device=device, precision=precision
                )
                engines.append(enhancer.engine)
            swapper = cls(
                bundle,
                *engines[:2],
                detector,
                parser,
                max_batch,
                o.device_path,
                device,
                o.cuda_graphs,
                parser_engine,
                enhancer,
            )
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        swapper._owned += engines
        swapper._detector_options = {"providers": providers, "threads": threads, "device": device}
        if backend == "openvino":
            swapper._detector_options = {"threads": threads, "backend": backend}
        if detector is None and on_gpu:  # the bundle's detector plan, on the device path
            from simswap_trt.device.detect import open_device_detector

            swapper._detector = open_device_detector(bundle, swapper._stages, providers, threads)
            if swapper._detector is not None:
                swapper._owned.append(swapper._detector)
        return swapper

    @staticmethod
    def _parser_plan(bundle: Bundle, parser: FaceParser | None, backend: str, device: int | None) -> Engine | None:
        """The bundle's TensorRT plan of ``parser``'s graph, when the bundle's parser graph was made from the
        same file and its plan can run here; else None, and the parser runs on ONNX Runtime (logged)."""
        if parser is None or bundle.parser is None:
            return None
        from simswap_trt.backends import open_engine
        from simswap_trt.schema import sha256_of

        if bundle.parser.source.get("sha256") != sha256_of(parser.path):
            log.info("the bundle's parser plan is of another model than %s: it runs on ONNX Runtime", parser.path)
            return None
        try:
            return open_engine(bundle, "parser", "tensorrt", device=device)
        except SimswapError as exc:
            log.log(logging.WARNING if backend == "tensorrt" else logging.INFO, "face parser on ONNX Runtime: %s", exc)
            return None

    @property
    def crop_size(self) -> int:
        return self.bundle.crop_size

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = CenterFace(**self._detector_options)
            self._owned.append(self._detector.engine)
        return self._detector

    # -- identities ---------------------------------------------------------------------------------------

    def identity(self, crops: Crops) -> np.ndarray:
        """The identity latent [512] of one or more aligned crops: each crop's L2-normalised ArcFace
        embedding, averaged over the crops, and L2-normalised again."""
        if len(crops) == 0:
            raise ConfigError("no face crops given: an identity needs at least one aligned crop")
        mean = self._latents(crops_to_tensor(crops, self.crop_size)).mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def set_source_crops(self, crops: Crops) -> np.ndarray:
        """Use the identity of aligned crops as the source; returns the latent."""
        self.source_latent = self.identity(crops)
        return self.source_latent

    def set_source(self, images: Photos, names: Sequence[str] | None = None) -> np.ndarray:
        """Use the identity of the largest face in each image (several images are averaged); returns the
        latent. ``images``: arrays (uint8 BGR) or paths of photos, one or a list; ``names`` labels the
        arrays in errors (paths name themselves). A photo without a face is a ``NoFaceError`` naming it;
        no photo at all a ``ValueError``."""
        self.source_latent = self.identity(self._largest_face_crops(images, "source", names))
        return self.source_latent

    def set_reference(self, images: Photos, names: Sequence[str] | None = None) -> np.ndarray:
        """The person to replace when swapping with ``select="reference"``: the largest face of each image
        (arrays or paths, as ``set_source`` takes)."""
        self.reference_latent = self.identity(self._largest_face_crops(images, "reference", names))
        return self.reference_latent

    def _largest_face_crops(self, images: Photos, what: str, names: Sequence[str] | None) -> np.ndarray:
        from simswap_trt.images import read_image

        items = [images] if isinstance(images, (np.ndarray, str, Path)) else list(images)
        if not items:
            raise ConfigError(f"no {what} image given: pass at least one photo (an array or a path)")
        if names is not None and len(names) != len(items):
            raise ConfigError(f"{len(names)} names for {len(items)} {what} images")
        labels = [
            f"the {what} photo {names[i] if names is not None else item}"
            if names is not None or isinstance(item, (str, Path))
            else f"{what} image {i}"
            for i, item in enumerate(items)
        ]
        arrays = [read_image(item) if isinstance(item, (str, Path)) else item for item in items]
        for image, label in zip(arrays, labels, strict=True):
            check_image(image, label)
        crops = []
        for image, detections, label in zip(arrays, self.detector.detect_batch(arrays), labels, strict=True):
            crop = largest_face_crop(image, detections, self.bundle.alignment, self.crop_size)
            if crop is None:
                raise NoFaceError(
                    f"no face found in {label}: use a photo where the face is clearly visible "
                    "(frontal, at least about 60 px wide)"
                )
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
        return self._collect_generator(self._submit_generator(targets, latents))

    def _submit_generator(self, targets: np.ndarray, latents: np.ndarray) -> list:
        """Start ``generate``'s chunks on the engine (all at once where it is asynchronous); the tickets."""
        latents = np.broadcast_to(self._check_latents(latents, len(targets)), (len(targets), LATENT_SIZE))
        tickets = []
        for i in range(0, len(targets), self.max_batch):
            feeds = {
                "target": targets[i : i + self.max_batch],
                "latent": np.ascontiguousarray(latents[i : i + self.max_batch]),
            }
            tickets.append(self.generator.submit(feeds))
        return tickets

    def _collect_generator(self, tickets: list) -> np.ndarray:
        """The output of ``_submit_generator``'s chunks, in order, as one float32 [N,3,S,S] array."""
        if not tickets:
            return np.empty((0, 3, self.crop_size, self.crop_size), np.float32)
        return np.concatenate([self.generator.collect(ticket)["swapped"] for ticket in tickets])

    @staticmethod
    def _check_latents(latents: np.ndarray, count: int) -> np.ndarray:
        latents = np.asarray(latents, np.float32)
        if latents.shape not in ((LATENT_SIZE,), (count, LATENT_SIZE)):
            raise InputError(f"latents must be [{LATENT_SIZE}] or [{count}, {LATENT_SIZE}], got {latents.shape}")
        return latents

    def _require_source(self, latent: np.ndarray | None) -> np.ndarray:
        if latent is not None:
            return latent
        if self.source_latent is None:
            raise InputError("no source identity: call set_source(images) or set_source_crops(crops) first")
        return self.source_latent

    def swap_aligned(self, crops: Crops, latent: np.ndarray | None = None) -> np.ndarray:
        """Swap the source identity (or ``latent``) onto aligned BGR crops; returns uint8 [N,S,S,3] BGR."""
        count = 1 if isinstance(crops, np.ndarray) and crops.ndim == 3 else len(crops)
        latent = self._check_latents(self._require_source(latent), count)
        return tensor_to_crops(self._stages.generate_aligned(crops, latent))

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
        """The faces of each image (one batched detector call), in score order. With detection on the device the
        frames stay there for a swap of the same arrays (``swap_faces``, ``start_batch``, ``swap_stream``), which
        then does not upload them again: do not change them in place in between (pass a new array instead)."""
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
        return self.finish_batch(self.start_batch(images, faces, select, threshold))

    def start_batch(
        self,
        images: Sequence[np.ndarray],
        faces: Sequence[Sequence[Detection]],
        select: str | Sequence[Sequence[bool]] = "all",
        threshold: float = DEFAULT_MATCH_THRESHOLD,
    ) -> InFlight:
        """``swap_faces`` in two halves: start the work (on the device path it returns while the device
        works) and ``finish_batch`` it later. The images must not change until then."""
        explicit = not isinstance(select, str)
        if not explicit:
            check_select(select)
        if select == "reference" and self.reference_latent is None:
            raise InputError('select="reference" needs a reference identity: call set_reference(images) first')
        if len(faces) != len(images):
            raise InputError(f"faces must hold one list per image: {len(faces)} lists for {len(images)} images")
        if explicit and [len(m) for m in select] != [len(f) for f in faces]:
            raise InputError("select must hold one boolean per face of each image")
        source = self._require_source(None)
        for i, image in enumerate(images):
            check_image(image, f"image {i}")

        flat = tuple(
            (i, d, alignment_matrix(d.landmarks, self.bundle.alignment, self.crop_size))
            for i, per_image in enumerate(faces)
            for d in per_image
        )
        if explicit:
            chosen = np.flatnonzero([bool(b) for mask in select for b in mask]).astype(np.int64)
            similarity: dict[int, float] = {}
        else:
            chosen, similarity = self._select(images, flat, select, threshold)
        selected = [(flat[f][0], flat[f][2]) for f in chosen]
        if self.enhancer is None:
            ticket = self._stages.start(images, selected, source)
        else:
            enhance = [self.enhancer.matrix(flat[f][1].landmarks) for f in chosen]
            ticket = self._stages.start(images, selected, source, enhance=enhance)
        return InFlight(ticket, flat, frozenset(int(f) for f in chosen), similarity)

    def finish_batch(self, batch: InFlight) -> list[SwapResult]:
        """The results of a ``start_batch`` (waiting for the device if needed)."""
        outputs = self._stages.finish(batch.ticket)
        results = []
        for i, out in enumerate(outputs):
            info = tuple(
                self._info(d, m, f in batch.chosen, batch.similarity.get(f))
                for f, (image, d, m) in enumerate(batch.faces)
                if image == i
            )
            results.append(SwapResult(out, info))
        return results

    def swap_stream(self, batches: Iterable[FrameBatch], depth: int = 2) -> Iterator[list[SwapResult]]:
        """``swap_faces`` over a stream of batches, in order, with up to ``depth`` batches in flight: batch
        k+1 is started (uploaded, enqueued) before batch k is finished."""
        if depth < 1:
            raise InputError("depth must be at least 1")
        yield from in_flight(batches, self._start_frames, self.finish_batch, depth)

    def _start_frames(self, batch: FrameBatch) -> InFlight:
        return self.start_batch(batch.images, batch.faces, batch.select, batch.threshold)

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
        cosine = (self._stages.latents(images, flat) @ self.reference_latent).astype(np.float32)
        return list(np.split(cosine, np.cumsum([len(f) for f in faces])[:-1]))

    def _select(self, images, faces, select, threshold) -> tuple[np.ndarray, dict[int, float]]:
        """Indices (into ``faces``) to swap, in detection order, and each face's similarity if computed."""
        similarity = self._reference_similarities(images, faces, threshold) if select == "reference" else {}
        by_image: dict[int, list[int]] = {}
        for f, (i, _, _) in enumerate(faces):
            by_image.setdefault(i, []).append(f)
        chosen = []
        for members in by_image.values():
            areas = [faces[f][1].area for f in members]
            picks = select_faces(select, areas, [similarity.get(f) for f in members], threshold)
            chosen += [f for f, pick in zip(members, picks, strict=True) if pick]
        return np.array(sorted(chosen), dtype=np.int64), similarity

    def _reference_similarities(self, images, faces, threshold: float) -> dict[int, float]:
        """Each face's (index into ``faces``) cosine similarity to the reference identity, logged per image."""
        if not faces:
            return {}
        cosine = self._stages.latents(images, [(i, m) for i, _, m in faces]) @ self.reference_latent
        for i in sorted({i for i, _, _ in faces}):
            log.info(
                "image %d: similarity to the reference per face: %s (threshold %.3f)",
                i,
                ", ".join(f"{c:.3f}" for (j, _, _), c in zip(faces, cosine, strict=True) if j == i),
                threshold,
            )
        return {f: float(c) for f, c in enumerate(cosine)}

    @staticmethod
    def _info(detection: Detection, matrix: np.ndarray, swapped: bool, similarity: float | None) -> FaceInfo:
        return FaceInfo(detection.box, detection.score, detection.landmarks, matrix, swapped, similarity)
