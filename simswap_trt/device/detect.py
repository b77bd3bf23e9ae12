"""Face detection on the device: the detector's input made by a kernel, the detector's TensorRT plan on device
buffers, only the detector's outputs back to the host.

Per chunk of frames (at most the plan's maximum batch):

1. the frames and the letterbox tables are written into the pinned staging buffer of a slot of ``frames``
   (``ResidentFrames``: the swap stages' own when detection runs for a ``FaceSwapper``) and uploaded with one
   asynchronous copy on the upload stream (the slot's event ``uploaded``);
2. the compute stream waits for it; one ``simswap_letterbox_kernel`` launch resizes every frame onto the
   detector canvas, pads and normalises it (the detector's ``normalisation``), writing NCHW straight into
   the plan's input buffer (FP16 when the plan's input is FP16); the plan runs on it through
   ``execute_device`` (event ``computed``);
3. the download stream waits for it and copies the detector's outputs (heatmaps or score maps: small next to
   the frames) into pinned memory (event ``done``); the host decodes them with the detector's own ``decode``
   (the same code as the host path: thresholds, NMS, mapping back to the image).

Once the letterbox kernel has read them, the frames are kept on the device: ``detect_resident`` returns each
frame's copy (``ResidentFrame``) with its detections, and a swap given it (``DeviceStages``) reads the frame
there instead of uploading it again.

``detect_regions`` searches regions of one frame as the host detector does (``RegionPlan``: the same windows
of the letterboxed canvas, cut on the host): the windows go up through a staging buffer of the detector's own,
not a slot of ``frames``, so a region search never evicts a frame that a swap is still to read; the letterbox
kernel places them unscaled on the canvas. The frame itself is not uploaded: its swap uploads it, once.

The canvas differs from the host detector's (OpenCV's resize) by at most one level on about one pixel in
eight (see ``simswap_kernels.cuh``), so boxes and landmarks agree with the host detector's to a fraction of
a pixel and scores to about 1e-3, not bit for bit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from simswap_trt import cuda
from simswap_trt.bundle import Bundle
from simswap_trt.cuda.memory import DeviceArray, MemoryUse, PinnedArray, Staging, aligned
from simswap_trt.device.frames import ResidentFrame, ResidentFrames
from simswap_trt.device.stages import DeviceStages
from simswap_trt.device.tables import frame_tables, letterbox_tables
from simswap_trt.engines.base import DeviceEngine
from simswap_trt.engines.scheduler import chunk_batches
from simswap_trt.errors import EngineError, SimswapError
from simswap_trt.kernels import DeviceKernels, LetterboxTables
from simswap_trt.stages import Stages
from simswap_trt.vision.detect import CenterFace, Detection, EngineDetector, RegionPlan, Scrfd

log = logging.getLogger(__name__)
HOST_DETECTORS = {"centerface": CenterFace, "scrfd": Scrfd}


class DeviceDetector:
    """``decoder``'s detection (a CenterFace or SCRFD of the same canvas: its thresholds and ``decode``) with
    its input made on the device and its model run by ``engine`` (a TensorRT plan of the detector graph). It
    has the interface of ``FaceDetector`` (``detect``, ``detect_batch``), searches regions
    (``detect_regions``: a ``RegionDetector``) and leaves the frames on the device for their swap
    (``detect_resident``: a ``ResidentDetector``). ``device``: the CUDA device id of its buffers, streams and
    launches (made current by every entry point); ``frames``: where the frames go up and stay for the swap
    (the swap stages' ``frames``, which they close), else a ``ResidentFrames`` of its own, with
    ``host_memory`` ``"staged"`` or ``"mapped"`` (see ``Staging``)."""

    name = "device (letterbox kernel, detector on TensorRT device buffers)"

    def __init__(
        self,
        decoder: EngineDetector,
        engine: DeviceEngine,
        kernels: DeviceKernels,
        device: int | None = None,
        host_memory: str = "staged",
        frames: ResidentFrames | None = None,
    ) -> None:
        spec = engine.inputs[0]
        canvas = decoder.input_size
        if len(engine.inputs) != 1 or tuple(spec.shape[1:]) != (3, canvas, canvas):
            raise EngineError(f"the detector plan's input {spec.describe()} is not [batch, 3, {canvas}, {canvas}]")
        if spec.dtype not in ("float32", "float16"):
            raise EngineError(f"the detector plan's input must be float32 or float16, got {spec.dtype}")
        if any(not all(isinstance(d, int) for d in out.shape[1:]) for out in engine.outputs):
            described = ", ".join(out.describe() for out in engine.outputs)
            raise EngineError(f"the detector plan's outputs must be fixed but for the batch, got {described}")
        self.device = device = cuda.bound_device(device)  # None: the current one, kept for every thread's calls
        self.decoder, self.engine, self.kernels = decoder, engine, kernels
        cuda.activate(device)
        self.input_size, self.normalisation = canvas, decoder.normalisation
        self.input_dtype = np.dtype(spec.dtype)
        self.upload_stream, self.compute, self.download_stream = cuda.Stream(), cuda.Stream(), cuda.Stream()
        self.computed, self.done = cuda.Event(timing=False), cuda.Event(timing=False)
        self._own_frames = frames is None  # else the swap stages' (closed by them)
        self.frames = ResidentFrames(host_memory, capacity=1) if frames is None else frames
        self.windows = Staging(self.frames.host_memory)  # region searches' uploads: no slot of ``frames``
        self.windows_uploaded = cuda.Event(timing=False)
        self.canvas, self.outputs = DeviceArray(), DeviceArray()
        self.results = PinnedArray()  # the detector's outputs, downloaded
        self._closed = False
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[list[Detection]]:
        return self.detect_resident(images, batch_size)[0]

    def detect_resident(
        self, images: Sequence[np.ndarray], batch_size: int = 8
    ) -> tuple[list[list[Detection]], list[ResidentFrame]]:
        """``detect_batch``'s detections, and each frame's copy on the device, for its swap
        (``FaceSwapper.start_batch(..., resident=)``). A copy stands for the frame as it was detected."""
        results: list[list[Detection]] = []
        copies: list[ResidentFrame] = []
        with self._lock:
            self._activate()
            for chunk in chunk_batches(len(images), min(batch_size, self.engine.max_batch)):
                found, kept = self._detect(images[chunk])
                results += found
                copies += kept
        return results, copies

    def detect_regions(self, image: np.ndarray, regions: Sequence[np.ndarray]) -> list[Detection]:
        """The faces inside ``regions`` of ``image`` as ``EngineDetector.detect_regions`` finds them (the same
        windows of the letterboxed canvas, ``RegionPlan``): the windows go up through the detector's own
        staging buffer and the letterbox kernel places each one unscaled on the canvas. The image is not
        uploaded (its swap uploads it)."""
        plan = RegionPlan.of(image, regions, self.input_size)
        if plan is None:
            return []
        windows = list(plan.canvas)
        size = plan.canvas.shape[1:3]  # (height, width)
        found: list[list[Detection]] = []
        with self._lock:
            self._activate()
            for chunk in chunk_batches(len(windows), self.engine.max_batch):
                part = windows[chunk]
                unscaled = {"resized": np.array([size[::-1]] * len(part), np.int32)}
                unscaled["scales"] = np.ones((len(part), 2), np.float32)
                self.done.synchronize()  # the previous chunk's work no longer reads the windows' buffer
                _, tables = self._upload(self.windows, self.windows_uploaded, part, unscaled)
                outputs = self._run(self.windows_uploaded, tables, len(part))
                found += self.decoder.decode(outputs, np.ones(len(part)), [size] * len(part))
        return plan.merge(found, self.decoder.nms_iou)

    def _activate(self) -> None:
        if self._closed:
            raise EngineError("the device detector is closed")
        cuda.activate(self.device)

    def _detect(self, images: Sequence[np.ndarray]) -> tuple[list[list[Detection]], list[ResidentFrame]]:
        frames = [np.ascontiguousarray(image) for image in images]
        sizing = letterbox_tables(frames, self.input_size)
        self.done.synchronize()  # the previous chunk's work no longer uses the canvas and output buffers
        slot = self.frames.acquire()
        try:
            addresses, tables = self._upload(slot.staging, slot.uploaded, frames, sizing)  # a slot kept on the device
            outputs = self._run(slot.uploaded, tables, len(frames))
        except BaseException:
            self.frames.keep(slot)  # nothing kept
            raise
        copies = self.frames.keep(slot, frames, addresses)  # the letterbox kernel has read them
        resized = sizing["resized"]  # (width, height) of each frame on the canvas
        scales = np.array([int(h) / f.shape[0] for f, (_, h) in zip(frames, resized, strict=True)])
        return self.decoder.decode(outputs, scales, [f.shape for f in frames]), copies

    def _upload(
        self, staging: Staging, uploaded: cuda.Event, frames: list[np.ndarray], sizing: dict[str, np.ndarray]
    ) -> tuple[list[int], LetterboxTables]:
        """Step 1: the ``frames`` (contiguous) and their letterbox tables (the frame tables and ``sizing``'s
        ``resized`` and ``scales``, as ``letterbox_tables`` plans them) in one upload into ``staging`` on the
        upload stream, then ``uploaded``. Returns the device addresses of the frames and of the tables."""
        tables = {**frame_tables(frames), "resized": sizing["resized"], "scales": sizing["scales"]}  # frames: below
        addresses = staging.layout([f.nbytes for f in frames] + [t.nbytes for t in tables.values()])
        tables["frames"][:] = addresses[: len(frames)]
        for address, array in zip(addresses, frames + list(tables.values()), strict=True):
            staging.write(address, array)
        staging.upload(self.upload_stream)
        uploaded.record(self.upload_stream)
        placed = LetterboxTables(**dict(zip(tables, addresses[len(frames) :], strict=True)))
        return addresses[: len(frames)], placed

    def _run(self, uploaded: cuda.Event, tables: LetterboxTables, count: int) -> list[np.ndarray]:
        """Steps 2 and 3 for ``count`` frames once ``uploaded``, from the letterbox tables at ``tables``;
        returns the detector's outputs (float32 copies, synchronous)."""
        canvas, engine = self.input_size, self.engine
        # 2. letterbox into the plan's input, then the plan
        batch = max(count, engine.min_batch)  # room for padding up to the profile minimum
        image_bytes = 3 * canvas * canvas * self.input_dtype.itemsize
        input_address = self.canvas.reserve(batch * image_bytes)
        shapes = [(out.name, (batch, *out.shape[1:]), np.dtype(out.dtype)) for out in engine.outputs]
        offsets, end = [], 0
        for _, shape, dtype in shapes:
            offsets.append(aligned(end))
            end = offsets[-1] + int(np.prod(shape)) * dtype.itemsize
        output_address = self.outputs.reserve(end)
        self.compute.wait(uploaded)
        half = self.input_dtype == np.float16
        self.kernels.detector_input(self.compute.handle, tables, count, canvas, self.normalisation, half, input_address)
        bindings = {engine.inputs[0].name: input_address}
        bindings.update({name: output_address + offset for (name, _, _), offset in zip(shapes, offsets, strict=True)})
        engine.execute_device(bindings, batch, self.compute)
        self.computed.record(self.compute)

        # 3. the outputs back, then the host decoder
        self.download_stream.wait(self.computed)
        results, outputs = self.results.reserve(end), []
        for (_, shape, dtype), offset in zip(shapes, offsets, strict=True):
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host = results[offset : offset + nbytes].view(dtype).reshape(shape)
            self.outputs.buffer.download(host, self.download_stream, offset)
            outputs.append(host)
        self.done.record(self.download_stream)
        self.done.synchronize()
        return [out[:count].astype(np.float32) for out in outputs]  # copies: the buffer is reused

    def memory(self) -> MemoryUse:
        """What the detector holds: its plan (``TensorRTEngine.memory``), its canvas, output, result and
        region-window buffers, and its own resident frames (not the swap stages', which they report)."""
        with self._lock:
            use = self.canvas.memory() + self.outputs.memory() + self.results.memory() + self.windows.memory()
            use += self.frames.memory() if self._own_frames else MemoryUse()
        engine = getattr(self.engine, "memory", None)
        return use + engine() if engine is not None else use

    def close(self) -> None:
        """Wait for the streams, then free every buffer, event and stream, and close the detector plan and the
        decoder's engine. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        cuda.activate(self.device)
        self.engine.close()  # first: its runs read and write the buffers freed below
        for stream in (self.upload_stream, self.compute, self.download_stream):
            stream.synchronize()
        if self._own_frames:
            self.frames.close()
        for owner in (self.canvas, self.outputs, self.windows, self.results):
            owner.free()
        for event in (self.computed, self.done, self.windows_uploaded):
            event.free()
        for stream in (self.upload_stream, self.compute, self.download_stream):
            stream.free()
        self.decoder.engine.close()


def open_device_detector(
    bundle: Bundle, stages: Stages, providers: Sequence[str], threads: int | None
) -> DeviceDetector | None:
    """The device detector of ``bundle`` on the device of ``stages`` when they are the device stages and the
    bundle has a detector plan this machine can run, else None (detection then runs on the host). The
    choice is logged."""
    where = "detection: host (ONNX Runtime)"
    if not isinstance(stages, DeviceStages):
        log.info("%s: the swap runs on the host", where)
        return None
    device = stages.device
    if bundle.detector is None:
        log.info(
            "%s: the bundle has no detector graph; 'simswap-build engine %s' adds it and its plan", where, bundle.root
        )
        return None
    from simswap_trt.backends import open_engine

    try:
        engine = open_engine(bundle, "detector", "tensorrt", providers, threads, device=device)
    except SimswapError as exc:
        log.warning("%s: the detector plan cannot run: %s", where, exc)
        return None
    try:
        cls = HOST_DETECTORS[bundle.detector.architecture]
        decoder = cls(
            bundle.path_of("detector"), bundle.detector_canvas, providers=providers, threads=threads, device=device
        )
        detector = DeviceDetector(decoder, engine, stages.kernels, device, frames=stages.frames)
    except SimswapError as exc:
        engine.close()
        log.warning("%s: %s", where, exc)
        return None
    log.info("detection: %s", detector.name)
    return detector
