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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simswap_trt.bundle import Bundle, contract
from simswap_trt.constants import LATENT_SIZE
from simswap_trt.cuda.memory import SwapperMemory
from simswap_trt.engines import DEFAULT_PROVIDERS, DeviceEngine, Engine
from simswap_trt.engines.scheduler import in_flight
from simswap_trt.errors import BundleError, ConfigError, InputError, SimswapError
from simswap_trt.photos import Photos, largest_face_crops, read_photos
from simswap_trt.selection import DEFAULT_MATCH_THRESHOLD, check_select, select_faces
from simswap_trt.stages import HostStages, Residency, ResidentDetector, Stages
from simswap_trt.swap_types import (
    FaceInfo,
    FrameBatch,
    InFlight,
    SwapperOptions,
    SwapResult,
    check_image,
    check_resident,
)
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.detect import CenterFace, Detection, FaceDetector
from simswap_trt.vision.enhance import FaceEnhancer
from simswap_trt.vision.parsing import FaceParser
from simswap_trt.vision.preprocess import Crops, crops_to_tensor, tensor_to_crops

if TYPE_CHECKING:
    from simswap_trt.device.detect import DeviceDetector

log = logging.getLogger(__name__)
# the types FaceSwapper takes and gives, importable from here as from the package
__all__ = ["FaceInfo", "FaceSwapper", "FrameBatch", "InFlight", "SwapResult", "SwapperOptions", "check_image"]

UNTRAINED_WARNING = "this bundle has UNTRAINED random weights: its outputs are not face swaps"


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
        owned: Sequence[Engine] = (),
        detector_options: Mapping[str, Any] | None = None,
        device_detector: bool = False,
    ) -> None:
        """``device``: the CUDA device id the device path (buffers, streams, kernels) runs on, the same as the
        TensorRT engines' (``from_bundle`` opens them there); an id that does not exist is a
        ``DeviceNotFoundError`` naming the available ones. Default: the current device. ``cuda_graphs``: on
        the device path, replay each batch's whole sequence (preprocess, generator, paste-back) as a CUDA
        graph captured per batch size (not with a parser). ``parser_engine``: a TensorRT plan of ``parser``'s
        graph (``from_bundle`` opens the bundle's when it was made from the same file): the device path then
        parses on the device. ``enhance``: a ``FaceEnhancer`` that restores each swapped face before the
        paste-back (``from_bundle(..., enhance=True)`` opens the bundle's); off by default. ``owned``: engines
        the swapper closes on ``close()`` (the caller's otherwise). ``detector_options``: the keyword arguments
        of the default ``CenterFace``, made on first use when no ``detector`` is given. ``device_detector``:
        with no ``detector``, detect with the bundle's detector plan on the device when the stages are the
        device stages (``open_device_detector``, with ``detector_options``' providers and threads; the swapper
        closes it), else with the default detector."""
        self._check_engines(bundle, generator, arcface, max_batch)
        self.bundle, self.generator, self.arcface = bundle, generator, arcface
        self.parser, self.parser_engine = parser, parser_engine
        self.enhance_model = enhance  # kept at blend 0 too, for with_enhance_blend
        self.enhancer = enhance if enhance is not None and enhance.active else None
        self.max_batch = max_batch
        self.source_latent: np.ndarray | None = None
        self.reference_latent: np.ndarray | None = None
        self._detector = detector
        self._detector_options = dict(detector_options or {})  # providers and threads of the default detector
        self._owned: list[Engine | DeviceDetector] = list(owned)  # closed by close()
        self.device = self._check_device(device)
        self.cuda_graphs = cuda_graphs
        if bundle.untrained:
            log.warning(UNTRAINED_WARNING)
        self._stages = self._choose_stages(device_path)
        log.info("stages: %s", self._stages.name)
        if device_detector and detector is None:
            self._open_device_detector()

    @staticmethod
    def _check_engines(bundle: Bundle, generator: Engine, arcface: Engine, max_batch: int) -> None:
        for role, engine in (("generator", generator), ("arcface", arcface)):
            if (engine.inputs, engine.outputs) != contract(role, bundle.crop_size):
                raise BundleError(
                    f"{bundle.root}: the {role} engine's signature "
                    f"{[s.describe() for s in engine.inputs + engine.outputs]} does not match the bundle contract"
                )
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")

    def _open_device_detector(self) -> None:
        """The bundle's detector plan on the device stages' device, owned by the swapper (none: the default
        detector); the stages are closed if it fails."""
        from simswap_trt.device.detect import open_device_detector

        options = self._detector_options
        providers, threads = options.get("providers", DEFAULT_PROVIDERS), options.get("threads")
        try:
            self._detector = open_device_detector(self.bundle, self._stages, providers, threads)
        except BaseException:
            self._stages.close()
            raise
        if self._detector is not None:
            self._owned.append(self._detector)

    def _choose_stages(self, device_path: bool | None) -> Stages:
        """The device path when the generator runs on TensorRT (``device_path=None``) or when asked
        (``True``: an error if it cannot run); else the host path."""
        host = self._host_stages(self.enhancer)
        on_tensorrt = isinstance(self.generator, DeviceEngine)
        if device_path is False or (device_path is None and not on_tensorrt):
            return host
        reason = None
        if not on_tensorrt:
            reason = f"the generator runs on {self.generator.backend}, not TensorRT"
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
                    enhancer=self.enhancer,
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
        host stages (the device path enhances with the blend its swapper was made with)."""
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
            if isinstance(engine, DeviceEngine) and engine.device not in (None, device):
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
        """Release what this swapper opened: the device path's buffers, the default or device detector, and the
        engines given as ``owned`` (``from_bundle``'s). Other engines, detectors and parsers passed in stay the
        caller's. Idempotent; use ``with FaceSwapper.from_bundle(...) as swapper:`` to close on exit."""
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
        from simswap_trt.backends import default_precision

        o = dataclasses.replace(options or SwapperOptions(), **settings)
        bundle = Bundle.load(path)
        precision = o.precision or default_precision(bundle, o.backend, o.providers, o.device)
        if o.enhance:
            bundle.require_enhancer()
        if o.device is not None:  # a bad id is refused before any engine loads
            from simswap_trt import cuda

            cuda.check_device(o.device)
        engines: list[Engine] = []
        try:
            parser_engine, enhancer = cls._open_engines(bundle, o, precision, parser, engines)
            detector_options = {"providers": o.providers, "threads": o.threads, "device": o.device}
            if o.backend == "openvino":
                detector_options = {"threads": o.threads, "backend": o.backend}
            return cls(
                bundle,
                engines[0],
                engines[1],
                detector=detector,
                parser=parser,
                max_batch=o.max_batch,
                device_path=o.device_path,
                device=o.device,
                cuda_graphs=o.cuda_graphs,
                parser_engine=parser_engine,
                enhance=enhancer,
                owned=engines,
                detector_options=detector_options,
                device_detector=o.backend in ("auto", "tensorrt"),  # the bundle's detector plan, on the device path
            )
        except BaseException:
            for engine in engines:
                engine.close()
            raise

    @classmethod
    def _open_engines(
        cls, bundle: Bundle, o: SwapperOptions, precision: str | None, parser: FaceParser | None, engines: list
    ) -> tuple[Engine | None, FaceEnhancer | None]:
        """Open the generator, ArcFace, the parser's plan (on the device path) and the enhancer (with
        ``o.enhance``), appending each engine to ``engines`` as it opens, for the caller to close on failure.
        Returns the parser's plan and the enhancer."""
        from simswap_trt.backends import open_engine, parser_plan

        for role in ("generator", "arcface"):
            engines.append(open_engine(bundle, role, o.backend, o.providers, o.threads, precision, device=o.device))
        on_gpu = o.backend in ("auto", "tensorrt")
        parser_engine = parser_plan(bundle, parser.path, o.backend, o.device) if on_gpu and parser else None
        engines += [parser_engine] if parser_engine is not None else []
        enhancer = None
        if o.enhance:
            enhancer = FaceEnhancer.from_bundle(
                bundle, o.enhance_blend, o.backend, o.providers, o.threads, o.max_batch, o.device, precision
            )
            engines.append(enhancer.engine)
        return parser_engine, enhancer

    @property
    def crop_size(self) -> int:
        return self.bundle.crop_size

    @property
    def detector(self) -> FaceDetector | DeviceDetector:
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
        arrays, labels = read_photos(images, what, names)
        detections = self.detector.detect_batch(arrays)
        return largest_face_crops(arrays, detections, labels, self.bundle.alignment, self.crop_size)

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
        batch = self.detect_frames(images)
        return self.swap_faces(images, batch.faces, select, threshold, resident=batch.resident)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """The faces of each image (one batched detector call), in score order. See ``detect_frames`` to keep
        frames that detection uploaded to the device for their swap."""
        return self.detect_frames(images).faces

    def detect_frames(self, images: Sequence[np.ndarray]) -> FrameBatch:
        """The images with the faces of each (``detect``) as a ``FrameBatch`` for ``swap_stream``. With
        detection on the device (a ``ResidentDetector``) the batch also carries each frame's copy on the device
        (``resident``): its swap (``swap_stream``, or ``swap_faces``/``start_batch`` given ``resident=``)
        reads the frame there instead of uploading it again. A copy stands for the frame as it was detected:
        swap the very pixels that were detected."""
        for i, image in enumerate(images):
            check_image(image, f"image {i}")
        detector = self.detector
        if isinstance(detector, ResidentDetector):
            faces, resident = detector.detect_resident(images)
            return FrameBatch(images, faces, resident=resident)
        return FrameBatch(images, detector.detect_batch(images))

    def swap_faces(
        self,
        images: Sequence[np.ndarray],
        faces: Sequence[Sequence[Detection]],
        select: str | Sequence[Sequence[bool]] = "all",
        threshold: float = DEFAULT_MATCH_THRESHOLD,
        resident: Residency | None = None,
    ) -> list[SwapResult]:
        """Swap the source identity onto given faces of several images (e.g. tracked, smoothed landmarks).

        ``faces[i]`` are the faces of ``images[i]``. ``select`` is a mode as in ``swap_batch``, or one
        sequence of booleans per image saying which of its faces to swap (decided by the caller).
        ``resident``: the images' copies on the device from ``detect_frames`` (see ``FrameBatch``).
        """
        return self.finish_batch(self.start_batch(images, faces, select, threshold, resident))

    def start_batch(
        self,
        images: Sequence[np.ndarray],
        faces: Sequence[Sequence[Detection]],
        select: str | Sequence[Sequence[bool]] = "all",
        threshold: float = DEFAULT_MATCH_THRESHOLD,
        resident: Residency | None = None,
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
        check_resident(images, resident)

        flat = tuple(
            (i, d, alignment_matrix(d.landmarks, self.bundle.alignment, self.crop_size))
            for i, per_image in enumerate(faces)
            for d in per_image
        )
        if explicit:
            chosen = np.flatnonzero([bool(b) for mask in select for b in mask]).astype(np.int64)
            similarity: dict[int, float] = {}
        else:
            chosen, similarity = self._select(images, flat, select, threshold, resident)
        selected = [(flat[f][0], flat[f][2]) for f in chosen]
        if self.enhancer is None:
            ticket = self._stages.start(images, selected, source, resident)
        else:
            enhance = [self.enhancer.matrix(flat[f][1].landmarks) for f in chosen]
            ticket = self._stages.start(images, selected, source, resident, enhance=enhance)
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
        return self.start_batch(batch.images, batch.faces, batch.select, batch.threshold, batch.resident)

    def similarities(
        self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Detection]], resident: Residency | None = None
    ) -> list[np.ndarray]:
        """Cosine similarity of each given face to the ``set_reference`` identity: one float32 array per image.
        ``resident``: the images' copies on the device from ``detect_frames`` (read, not used up)."""
        check_resident(images, resident)
        if self.reference_latent is None:
            raise InputError("similarities need a reference identity: call set_reference(images) first")
        flat = [
            (i, alignment_matrix(d.landmarks, self.bundle.alignment, self.crop_size))
            for i, per_image in enumerate(faces)
            for d in per_image
        ]
        if not flat:
            return [np.empty(0, np.float32) for _ in images]
        cosine = (self._stages.latents(images, flat, resident) @ self.reference_latent).astype(np.float32)
        return list(np.split(cosine, np.cumsum([len(f) for f in faces])[:-1]))

    def _select(self, images, faces, select, threshold, resident) -> tuple[np.ndarray, dict[int, float]]:
        """Indices (into ``faces``) to swap, in detection order, and each face's similarity if computed."""
        similarity = self._reference_similarities(images, faces, threshold, resident) if select == "reference" else {}
        by_image: dict[int, list[int]] = {}
        for f, (i, _, _) in enumerate(faces):
            by_image.setdefault(i, []).append(f)
        chosen = []
        for members in by_image.values():
            areas = [faces[f][1].area for f in members]
            picks = select_faces(select, areas, [similarity.get(f) for f in members], threshold)
            chosen += [f for f, pick in zip(members, picks, strict=True) if pick]
        return np.array(sorted(chosen), dtype=np.int64), similarity

    def _reference_similarities(self, images, faces, threshold: float, resident) -> dict[int, float]:
        """Each face's (index into ``faces``) cosine similarity to the reference identity, logged per image."""
        if not faces:
            return {}
        cosine = self._stages.latents(images, [(i, m) for i, _, m in faces], resident) @ self.reference_latent
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
