"""The device implementation of FaceSwapper's stages (see ``simswap_trt.stages``): fused kernels and the
generator's TensorRT plan on device buffers.

Per batch of frames, on the streams of one of ``depth`` workspaces (double-buffered):

1. the frames and the preprocessing tables are written into one reused pinned staging buffer and uploaded
   with one asynchronous copy on the upload stream (event ``uploaded``). Frames that device detection
   uploaded (``self.frames``: ``ResidentFrames``; the batch's ``resident`` copies) are not uploaded again:
   the kernels read them where detection put them, and ``uploaded`` follows their upload;
2. the compute stream waits for it, then one preprocess launch writes every face straight into the
   generator's input buffer (FP16 when the plan's input is FP16), and the generator runs on it in chunks
   of at most the plan's maximum batch, through ``execute_device`` (no copies between kernels and plan);
3. meanwhile the host computes the border masks (OpenCV, the official steps) and uploads them on the
   upload stream (event ``masks``);
4. the compute stream waits for the masks; one paste-back launch reads the generator's output where it
   lies and blends every face into its frame on the device (event ``computed``);
5. the download stream waits for it and copies back only each frame's union of face regions (event
   ``done``; and each resident frame's slot ``released``, after which detection may upload into it again);
   ``finish`` waits for ``done`` and writes the regions into copies of the input images.

Batch k+1's upload and batch k-1's download overlap batch k's compute. A workspace is reused only once
its previous batch is finished (``finish``), so its pinned buffers are never overwritten while a copy or
the host may still read them; with more batches in flight than workspaces, another one is made.

Options: ``device`` (the CUDA device everything lives on, made current at every entry point); a face
``parser`` (step 3 makes the parsing masks, ``device.parse``; a blend kernel rewrites
the masked swaps before step 4); an ``enhancer`` (restores the swaps before step 4, ``device.enhance``);
``graphs`` (steps 2 and 4 as one CUDA graph per launch signature); mapped staging on integrated GPUs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from simswap_trt import cuda
from simswap_trt.constants import LATENT_SIZE
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import MemoryUse, host_memory_strategy
from simswap_trt.device.chunks import Chunks
from simswap_trt.device.enhance import DeviceEnhancer
from simswap_trt.device.frames import ResidentFrame, ResidentFrames
from simswap_trt.device.parse import DeviceParsing
from simswap_trt.device.tables import (
    PasteBackBatch,
    crop_to_frame_matrices,
    enhancer_matrices,
    frames_with_faces,
    pack_pasteback,
    pasteback_tables,
    preprocess_tables,
)
from simswap_trt.device.workspace import MAX_WORKSPACES, DeviceTicket, Staged, Workspace
from simswap_trt.engines.base import DeviceEngine
from simswap_trt.errors import EngineError
from simswap_trt.kernels import (
    DeviceKernels,
    EnhancerTables,
    ParsingTables,
    PasteBackTables,
    PreprocessTables,
    pasteback_grid,
)
from simswap_trt.stages import Faces, Stages
from simswap_trt.vision.enhance import FaceEnhancer
from simswap_trt.vision.preprocess import stack_crops

log = logging.getLogger(__name__)
GRAPH_GRID_STEP = 64  # pixels: graph mode rounds the paste-back regions' launch extent up to a multiple


class DeviceStages:
    """Pre-processing, generator and paste-back on the device, around a TensorRT generator engine (a
    ``DeviceEngine``)."""

    name = "device (fused CUDA kernels, generator on TensorRT device buffers)"

    def __init__(
        self,
        generator: DeviceEngine,
        crop_size: int,
        kernels: DeviceKernels | None = None,
        depth: int = 2,
        arcface=None,
        host: Stages | None = None,
        device: int | None = None,
        parser=None,
        graphs: bool = False,
        host_memory: str = "auto",
        parser_engine=None,
        enhancer: FaceEnhancer | None = None,
    ) -> None:
        """``arcface``: the ArcFace engine; on TensorRT (``execute_device``) its input is preprocessed on the
        device too, else ``host`` (the host stages) computes the latents. ``device``: the CUDA device id of the
        buffers, streams and kernels (default: the current device), made current by every entry point. ``parser``:
        a ``FaceParser``; its masks blend each swap with its target crop on the device (see ``_parse``). ``graphs``:
        replay each batch's whole sequence (preprocess, generator, paste-back) as one CUDA graph (see
        ``_run_graphed``); not with a parser, whose host round trip sits in the middle of the sequence.
        ``host_memory``: how frames and tables reach the device (``host_memory_strategy``: ``"auto"``
        maps pinned host memory on integrated GPUs, so nothing is uploaded; copies elsewhere).
        ``parser_engine``: the parser's TensorRT plan (``execute_device``), to parse on the device.
        ``enhancer``: a ``FaceEnhancer`` on a TensorRT plan, run on the device between the generator and the
        paste-back (``simswap_trt.device.enhance``) for the batches ``start`` gives enhancer matrices."""
        specs = {spec.name: spec for spec in generator.inputs + generator.outputs}
        self.generator, self.crop_size, self.arcface, self.host = generator, crop_size, arcface, host
        self.parser = parser
        self.enhancer = DeviceEnhancer(enhancer) if enhancer is not None else None
        self.graphs = graphs and parser is None and enhancer is None
        if graphs:
            off = "off (face parser)" if parser is not None else "off (face enhancer)"
            log.info("CUDA graphs of the whole per-batch sequence: %s", "on" if self.graphs else off)
        if self.enhancer is not None:
            log.info("%s", self.enhancer.name)
        self.parser_engine = parser_engine if parser is not None else None
        self.target_dtype, self.output_dtype = np.dtype(specs["target"].dtype), np.dtype(specs["swapped"].dtype)
        floats = (np.float32, np.float16)
        if self.target_dtype not in floats or self.output_dtype not in floats or specs["latent"].dtype != "float32":
            described = ", ".join(spec.describe() for spec in specs.values())
            raise EngineError(f"the device path needs float32/float16 images and a float32 latent, got {described}")
        self.device = device = cuda.bound_device(device)  # None: the current one, kept for every thread's calls
        cuda.activate(device)
        self.kernels = kernels if kernels is not None else DeviceKernels(device=device)
        self.host_memory = host_memory_strategy(cuda_memory.memory_traits(device), host_memory)
        log.info("device stages: %s host memory for frames and tables", self.host_memory)
        self.upload_stream, self.download_stream = cuda.Stream(), cuda.Stream()
        self.parsing = DeviceParsing(parser, self.parser_engine, self.kernels, crop_size, self.target_dtype)
        self.parse_stream = self.parsing.stream
        # more workspaces are made when more batches are in flight
        self.depth = depth
        self.workspaces = [Workspace(self.host_memory) for _ in range(depth)]
        self._uses = 0  # batches that took a workspace
        self.frames = ResidentFrames(self.host_memory)  # frames device detection uploaded (DeviceDetector)
        self._closed = False
        self._lock = threading.RLock()  # calls from several threads enqueue one batch at a time

    def _workspace(self) -> Workspace:
        """A workspace no unfinished batch holds (the most recently used one, or a new one when every one is
        held, up to ``MAX_WORKSPACES``), once its last batch's device work is done, so that its buffers may be
        reused. Idle workspaces beyond ``depth`` (made for a burst of batches in flight) are freed, least
        recently used first, with their buffers, graphs and contexts: memory stays bounded."""
        if self._closed:
            raise EngineError("the device stages are closed")
        idle = [w for w in self.workspaces if not w.held]
        if idle:
            ws = max(idle, key=lambda w: w.used)  # the first of the most recently used
            idle = sorted((w for w in idle if w is not ws), key=lambda w: w.used)
        elif len(self.workspaces) >= MAX_WORKSPACES:
            raise EngineError(
                f"{MAX_WORKSPACES} batches are in flight on the device stages (the most they hold): finish one first"
            )
        else:
            ws = Workspace(self.host_memory)
            self.workspaces.append(ws)
        for surplus in idle[: max(0, len(self.workspaces) - self.depth)]:
            self.workspaces.remove(surplus)
            surplus.free()
        ws.done.synchronize()
        ws.held = True  # only once nothing above failed: a failure leaves no workspace held
        self._uses += 1
        ws.used = self._uses
        return ws

    def memory(self) -> MemoryUse:
        """Device and pinned host memory that the device stages allocated: the workspaces and the resident
        frames (the engines report their own)."""
        with self._lock:
            return sum((ws.memory() for ws in self.workspaces), self.frames.memory())

    @contextmanager
    def _held(self) -> Iterator[Workspace]:
        """A workspace (``_workspace``) for one call; if the call fails, the workspace is released once its
        streams' work is done (as far as a device fault lets them finish), so that it is not held forever."""
        ws = self._workspace()
        try:
            yield ws
        except BaseException:
            try:
                cuda.free_all(ws.compute.synchronize, self.upload_stream.synchronize, self.download_stream.synchronize)
            except Exception as exc:  # a device fault: the original error is what the caller needs
                log.warning("waiting for the streams of a failed batch: %s", exc)
            ws.held = False
            raise

    def _upload(
        self,
        ws: Workspace,
        frames: list[np.ndarray],
        frame_of_face: np.ndarray,
        inverse: np.ndarray,
        extra,
        resident: Sequence[ResidentFrame | None],
    ) -> tuple[list[int], PreprocessTables, int, list[cuda_memory.DeviceBuffer]]:
        """Step 1: the ``frames`` (contiguous) not already on the device (``resident``: each frame's device copy
        from detection, or None), the preprocessing tables (face k is ``frames[frame_of_face[k]]`` through
        crop→frame matrix ``inverse[k]``) and ``extra`` in one upload; event ``uploaded`` also follows the
        uploads of the resident frames. Returns the device addresses of the frames, of the preprocessing
        tables and of ``extra``, and each frame's buffer."""
        fresh = [f for f, r in zip(frames, resident, strict=True) if r is None]
        tables = {**preprocess_tables(frames, frame_of_face, inverse), "extra": extra}  # frames filled below
        addresses = ws.inputs.layout([f.nbytes for f in fresh] + [t.nbytes for t in tables.values()])
        uploaded, placed = iter(addresses[: len(fresh)]), dict(zip(tables, addresses[len(fresh) :], strict=True))
        frame_addresses = [next(uploaded) if r is None else r.address for r in resident]
        tables["frames"][:] = frame_addresses
        for address, array in zip(addresses, fresh + list(tables.values()), strict=True):
            ws.inputs.write(address, array)
        ws.inputs.upload(self.upload_stream)
        for slot in {id(r.slot): r.slot for r in resident if r is not None}.values():
            self.upload_stream.wait(slot.uploaded)  # the frames detection uploaded
        ws.uploaded.record(self.upload_stream)
        buffers = [ws.inputs.device if r is None else r.buffer for r in resident]
        extra_address = placed.pop("extra")
        return frame_addresses, PreprocessTables(**placed), extra_address, buffers

    def _stage(
        self,
        ws: Workspace,
        frames: list[np.ndarray],
        frame_of_face: np.ndarray,
        inverse: np.ndarray,
        latent,
        resident: Sequence[ResidentFrame | None],
    ) -> Staged:
        """Step 1 (upload) and the generator's input and output buffers, with room for padding the last chunk
        up to the plan's minimum batch."""
        count, face_bytes = len(frame_of_face), 3 * self.crop_size * self.crop_size
        chunks = Chunks.of(self.generator, count)
        latents = np.zeros((chunks.capacity, LATENT_SIZE), np.float32)
        latents[:count] = latent  # one shared [512] latent, or one per face
        uploaded = self._upload(ws, frames, frame_of_face, inverse, latents, resident)
        frame_addresses, tables, latent_address, buffers = uploaded
        targets = ws.targets.reserve(chunks.capacity * face_bytes * self.target_dtype.itemsize)
        swapped = ws.swapped.reserve(chunks.capacity * face_bytes * self.output_dtype.itemsize)
        return Staged(frame_addresses, buffers, tables, latent_address, targets, swapped, chunks)

    def _enqueue_generate(self, ws: Workspace, staged: Staged, contexts: Sequence | None = None) -> None:
        """Step 2 on the compute stream: one preprocess launch into the generator's input, then the generator
        in chunks: through ``execute_device`` (event-ordered engine slots), or with ``contexts`` (one per
        chunk, see ``TensorRTEngine.device_context``) straight on the compute stream, as a graph capture
        needs."""
        face_bytes = 3 * self.crop_size * self.crop_size
        half_in = self.target_dtype == np.float16
        self.kernels.preprocess(ws.compute.handle, staged.tables, staged.count, self.crop_size, half_in, staged.targets)
        if contexts is None:
            ws.preprocessed.record(ws.compute)  # a host face parser downloads the crops from here
        tensors = {
            "target": (staged.targets, face_bytes * self.target_dtype.itemsize),
            "latent": (staged.latents, LATENT_SIZE * 4),
            "swapped": (staged.swapped, face_bytes * self.output_dtype.itemsize),
        }
        staged.chunks.enqueue(self.generator, tensors, ws.compute, contexts)

    def _generate(
        self, ws: Workspace, frames: list[np.ndarray], frame_of_face: np.ndarray, inverse: np.ndarray, latent
    ) -> Staged:
        """Steps 1 and 2: upload, preprocess every face into the generator's input, run the generator."""
        staged = self._stage(ws, frames, frame_of_face, inverse, latent, [None] * len(frames))
        ws.compute.wait(ws.uploaded)
        self._enqueue_generate(ws, staged)
        return staged

    def _latents(
        self, images: Sequence[np.ndarray], faces: Faces, copies: Sequence[ResidentFrame | None]
    ) -> np.ndarray:
        """ArcFace latents of the faces: preprocessed straight into the ArcFace plan's input when ArcFace runs
        on TensorRT, else by the host stages (synchronous)."""
        if not isinstance(self.arcface, DeviceEngine):
            return self.host.latents(images, faces)
        if not faces:
            return np.empty((0, LATENT_SIZE), np.float32)
        with self._held() as ws:
            used, frames, frame_of_face = frames_with_faces(images, faces)
            inverse = crop_to_frame_matrices([m for _, m in faces])
            resident = self.frames.take([copies[i] for i in used], consume=False)  # read only
            try:
                _, tables, _, _ = self._upload(ws, frames, frame_of_face, inverse, inverse[:0], resident)
                crop_dtype = np.dtype(self.arcface.inputs[0].dtype)
                count, crop_bytes = len(faces), 3 * self.crop_size * self.crop_size * crop_dtype.itemsize
                chunks = Chunks.of(self.arcface, count)
                crops = ws.targets.reserve(chunks.capacity * crop_bytes)
                latents = ws.swapped.reserve(chunks.capacity * LATENT_SIZE * 4)
                ws.compute.wait(ws.uploaded)
                half = crop_dtype == np.float16
                self.kernels.preprocess(ws.compute.handle, tables, count, self.crop_size, half, crops)
                tensors = {"crop": (crops, crop_bytes), "latent": (latents, LATENT_SIZE * 4)}
                chunks.enqueue(self.arcface, tensors, ws.compute)
                return self._download_output(ws, (count, LATENT_SIZE), np.dtype(np.float32)).copy()
            finally:
                self.frames.release(resident, self.download_stream)

    def _generate_aligned(self, crops: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Aligned uint8 BGR crops [N,S,S,3] through the generator on the device (each crop is its own frame,
        sampled at its pixel centres: exactly ``crops_to_tensor``); returns the generator output as float32
        [N,3,S,S] (synchronous)."""
        with self._held() as ws:
            frames = list(stack_crops(crops, self.crop_size))
            identity = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (len(frames), 1))
            self._generate(ws, frames, np.arange(len(frames)), identity, latent)
            shape = (len(frames), 3, self.crop_size, self.crop_size)
            return self._download_output(ws, shape, self.output_dtype).astype(np.float32)

    def _download_output(self, ws: Workspace, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Wait for the workspace's compute, download the start of its output buffer as ``shape`` of ``dtype``
        into its pinned region buffer and release the workspace (synchronous; the view is reused later)."""
        ws.computed.record(ws.compute)
        self.download_stream.wait(ws.computed)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        host = ws.regions.reserve(nbytes).view(dtype).reshape(shape)
        ws.swapped.buffer.download(host, self.download_stream)
        ws.done.record(self.download_stream)
        ws.done.synchronize()
        ws.held = False
        return host

    def _start(
        self,
        images: Sequence[np.ndarray],
        faces: Faces,
        latent: np.ndarray,
        copies: Sequence[ResidentFrame | None],
        enhance: Sequence[np.ndarray] | None = None,
    ) -> DeviceTicket:
        with self._held() as ws:
            if not faces:
                return DeviceTicket(images, ws, [])
            used, frames, frame_of_face = frames_with_faces(images, faces)
            resident = self.frames.take([copies[i] for i in used], consume=True)  # the paste-back writes into them
            try:
                staged = self._stage(
                    ws, frames, frame_of_face, crop_to_frame_matrices([m for _, m in faces]), latent, resident
                )
                if self.graphs:  # the masks first, then the whole sequence in one graph (see _run_graphed)
                    batch, paste, _, _ = self._upload_pasteback(ws, used, faces, frames, staged, [])
                    self._run_graphed(ws, staged, batch, paste)
                else:
                    ws.compute.wait(ws.uploaded)
                    self._enqueue_generate(ws, staged)
                    # the host parser, meanwhile
                    parsing = self.parsing.masks(ws, len(faces), self.download_stream)
                    enhance = enhance if self.enhancer is not None else None
                    batch, paste, blend, enhancing = self._upload_pasteback(
                        ws, used, faces, frames, staged, parsing, enhance
                    )
                    ws.compute.wait(ws.masks_uploaded)
                    self._enqueue_pasteback(ws, staged, batch, paste, blend, enhancing=enhancing)
                ws.computed.record(ws.compute)
                regions = self._download_regions(ws, staged, batch.union_rois, used, frames)
            finally:
                self.frames.release(resident, self.download_stream)  # after the downloads from them
            if batch.outside:
                log.info("%d face(s) lie outside their image: nothing to paste", len(batch.outside))
            return DeviceTicket(images, ws, regions)

    def _download_regions(
        self, ws: Workspace, staged: Staged, union_rois: np.ndarray, used: list[int], frames: list[np.ndarray]
    ) -> list[tuple[int, tuple[int, int, int, int], int]]:
        """Step 5: once the compute is done, only each frame's union of face regions comes back, from wherever
        the frame lies on the device, into the workspace's pinned region buffer (event ``done``). Returns
        (image, region, offset in the buffer) of each non-empty region."""
        self.download_stream.wait(ws.computed)
        regions, total = [], 0
        for k, (x0, y0, x1, y1) in enumerate(union_rois.tolist()):
            if x1 > x0 and y1 > y0:
                regions.append((k, (x0, y0, x1, y1), total))
                total += (y1 - y0) * (x1 - x0) * 3
        view = ws.regions.reserve(total)
        for k, (x0, y0, x1, y1), offset in regions:
            pitch, buffer = frames[k].strides[0], staged.buffers[k]
            host = view[offset : offset + (y1 - y0) * (x1 - x0) * 3].reshape(y1 - y0, (x1 - x0) * 3)
            start = staged.frames[k] - buffer.ptr + y0 * pitch + x0 * 3
            buffer.download_rows(host, self.download_stream, start, pitch)
        ws.done.record(self.download_stream)
        return [(used[k], region, offset) for k, region, offset in regions]

    def _upload_pasteback(
        self,
        ws: Workspace,
        used: list[int],
        faces: Faces,
        frames: list[np.ndarray],
        staged: Staged,
        parsing,
        enhance: Sequence[np.ndarray] | None = None,
    ) -> tuple[PasteBackBatch, PasteBackTables, ParsingTables, EnhancerTables | None]:
        """Step 3: the border masks on the host (while the device works), then the upload of the paste-back
        tables, of the ``parsing`` masks and, with ``enhance`` (each face's frame→enhancer-crop matrix), of the
        enhancer's matrices (event ``masks_uploaded``). Enhanced faces are pasted from the enhancer's output,
        read through their enhancer matrices within their swap's region and mask. Returns the batch and the
        device addresses of the kernels' tables."""
        per_frame = [[m for i, m in faces if i == image] for image in used]
        order = [f for image in used for f, (i, _) in enumerate(faces) if i == image]  # faces grouped by frame
        if enhance is None:
            base, item, sampled = staged.swapped, 3 * self.crop_size**2 * self.output_dtype.itemsize, None
        else:
            base, item = self.enhancer.reserve(ws, len(faces))[1], self.enhancer.output_bytes()
            sampled = [[enhance[f] for f, (i, _) in enumerate(faces) if i == image] for image in used]
        batch = pack_pasteback([f.shape for f in frames], per_frame, self.crop_size, sampled)
        tables = pasteback_tables(batch, np.array([base + f * item for f in order], np.uint64).reshape(-1))
        if enhance is not None:  # first: the masks' size changes with every batch
            tables = {**enhancer_matrices([m for _, m in faces], enhance), **tables}
        if parsing:  # last: their size changes too
            tables.update(parsing_masks=parsing[0], parsing_faces=parsing[1])
        addresses = ws.masks.layout([t.nbytes for t in tables.values()])
        for address, array in zip(addresses, tables.values(), strict=True):
            ws.masks.write(address, array)
        ws.masks.upload(self.upload_stream)
        ws.masks_uploaded.record(self.upload_stream)
        placed = dict(zip(tables, addresses, strict=True))
        count = len(parsing[1]) if parsing else 0
        blend = ParsingTables(placed.pop("parsing_masks", 0), placed.pop("parsing_faces", 0), count)
        enhancing = None
        if enhance is not None:
            t = staged.tables
            inverse, to_swap = placed.pop("enhancer_inverse"), placed.pop("to_swap")
            enhancing = EnhancerTables(t.frames, t.pitches, t.widths, t.heights, t.frame_of_face, inverse, to_swap)
        paste = PasteBackTables(frames=staged.tables.frames, pitches=staged.tables.pitches, **placed)
        return batch, paste, blend, enhancing

    def _enqueue_pasteback(
        self,
        ws: Workspace,
        staged: Staged,
        batch: PasteBackBatch,
        paste: PasteBackTables,
        blend: ParsingTables | None = None,
        grid_rois: np.ndarray | None = None,
        enhancing: EnhancerTables | None = None,
    ) -> None:
        """Step 4 on the compute stream: the parsing-mask blend (``blend``, with a parser), the face enhancer
        (``enhancing``: its tables, see ``simswap_trt.device.enhance``), then one paste-back launch that reads
        the generator's (or the enhancer's) output where it lies. ``grid_rois``: regions for the launch grid
        only."""
        size, half_out = self.crop_size, self.output_dtype == np.float16
        if blend is not None:
            half_in = self.target_dtype == np.float16
            swapped, targets = staged.swapped, staged.targets
            self.kernels.parsing_blend(ws.compute.handle, blend, size, swapped, half_out, targets, half_in)
        if enhancing is not None:
            self.enhancer.enqueue(self.kernels, ws, enhancing, staged.count, (staged.swapped, size, half_out))
            size, half_out = self.enhancer.size, self.enhancer.half_out
        regions = batch.union_rois if grid_rois is None else grid_rois
        self.kernels.pasteback(ws.compute.handle, paste, regions, size, half_out)

    def _run_graphed(self, ws: Workspace, staged: Staged, batch: PasteBackBatch, paste: PasteBackTables) -> None:
        """Steps 2 and 4 as one CUDA graph per launch signature (the batch size, addresses and grids), on
        the compute stream once both uploads are done. Each graph owns the generator contexts it was
        captured on (one per chunk, enqueued on the compute stream), and nothing changes them afterwards:
        TensorRT ties a captured graph to its context's shapes and addresses. A new signature runs once
        eagerly on fresh contexts (TensorRT's lazy set-up stays outside the capture), then is captured
        with them; later batches of the signature replay it (``cuda.GraphCache``). A capture failure is
        logged and the signature keeps running eagerly, on the workspace's eager contexts. The paste-back
        grid is rounded up (``GRAPH_GRID_STEP``) so that batches of a video whose faces move a little share
        one graph."""
        ws.compute.wait(ws.uploaded)
        ws.compute.wait(ws.masks_uploaded)
        grid_rois = batch.union_rois.copy()
        extent = grid_rois[:, 2:] - grid_rois[:, :2]
        grid_rois[:, 2:] = grid_rois[:, :2] + -(-extent // GRAPH_GRID_STEP) * GRAPH_GRID_STEP
        chunks = staged.chunks
        key = (chunks.count, chunks.batches, staged.tables, staged.latents, staged.targets, staged.swapped, paste)
        key += (pasteback_grid(grid_rois),)

        def sequence(contexts: Sequence) -> None:
            self._enqueue_generate(ws, staged, contexts)
            self._enqueue_pasteback(ws, staged, batch, paste, None, grid_rois)

        def eager() -> None:
            while len(ws.contexts) < len(chunks.batches):
                ws.contexts.append(self._device_context(ws))
            sequence(ws.contexts)

        def contexts() -> list:
            return self._graph_contexts(ws, len(chunks.batches))

        ws.graphs.run(key, ws.compute, contexts, sequence, eager, f"batches of {chunks.count} faces")

    def _device_context(self, ws: Workspace):
        """A generator context for the workspace's graphs and eager graph-mode runs. On TensorRT they share
        the workspace's activation memory: they all run one after another on its compute stream."""
        if not hasattr(self.generator, "activation_bytes"):
            return self.generator.device_context()
        return self.generator.device_context(ws.activation.reserve(max(self.generator.activation_bytes(), 1)))

    def _graph_contexts(self, ws: Workspace, count: int) -> list:
        """``count`` new generator contexts for one graph; if TensorRT cannot create them (out of device
        memory), those made are freed and its ``EngineError`` raised (the signature then runs without a graph)."""
        contexts: list = []
        try:
            while len(contexts) < count:
                contexts.append(self._device_context(ws))
        except EngineError:
            cuda.free_all(*[context.free for context in contexts])
            raise
        return contexts

    def start(
        self,
        images: Sequence[np.ndarray],
        faces: Faces,
        latent: np.ndarray,
        resident: Sequence[ResidentFrame | None] | None = None,
        enhance: Sequence[np.ndarray] | None = None,
    ) -> DeviceTicket:
        """Steps 1 to 5 for a batch of frames, enqueued; ``finish`` waits for them. ``resident``: each image's
        copy on the device from detection (or None), read there instead of uploading the image. ``enhance``:
        each face's frame→enhancer-crop matrix (``FaceEnhancer.matrix``), to restore the swaps on the device
        before the paste-back (with an ``enhancer``)."""
        with self._lock:
            cuda.activate(self.device)
            return self._start(images, faces, latent, resident or [None] * len(images), enhance)

    def latents(
        self, images: Sequence[np.ndarray], faces: Faces, resident: Sequence[ResidentFrame | None] | None = None
    ) -> np.ndarray:
        with self._lock:
            cuda.activate(self.device)
            return self._latents(images, faces, resident or [None] * len(images))

    def generate_aligned(self, crops: np.ndarray, latent: np.ndarray) -> np.ndarray:
        with self._lock:
            cuda.activate(self.device)
            return self._generate_aligned(crops, latent)

    def finish(self, ticket: DeviceTicket) -> list[np.ndarray]:
        cuda.activate(self.device)
        ws = ticket.workspace
        ws.done.synchronize()
        outputs = [image.copy() for image in ticket.images]
        for image, (x0, y0, x1, y1), offset in ticket.regions:
            region = ws.regions.buffer.array[offset : offset + (y1 - y0) * (x1 - x0) * 3]
            outputs[image][y0:y1, x0:x1] = region.reshape(y1 - y0, x1 - x0, 3)
        ws.held = False
        return outputs

    def close(self) -> None:
        """Wait for the streams, then free every buffer, event and stream. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        cuda.activate(self.device)
        streams = [s for s in (self.upload_stream, self.download_stream, self.parse_stream) if s is not None]
        workspaces, self.workspaces = self.workspaces, []
        cuda.free_all(
            *[stream.synchronize for stream in streams],  # copies may still read or write the workspaces' buffers
            *[ws.free for ws in workspaces],
            self.frames.close,
            *[stream.free for stream in streams],
        )
