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
``parser`` (step 3 also downloads the target crops and parses them on the host; a blend kernel rewrites
the masked swaps before step 4); ``graphs`` (steps 2 and 4 replayed as one CUDA graph per launch
signature, the masks uploaded before them); mapped staging on integrated GPUs (step 1 copies nothing).
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
from simswap_trt.device.frames import ResidentFrame, ResidentFrames
from simswap_trt.device.tables import PasteBackBatch, crop_to_frame_matrices, frame_tables, pack_pasteback
from simswap_trt.device.workspace import MAX_GRAPHS, MAX_WORKSPACES, DeviceTicket, Staged, Workspace, free_graph
from simswap_trt.engines.base import DeviceEngine
from simswap_trt.engines.scheduler import chunk_batches
from simswap_trt.errors import EngineError
from simswap_trt.kernels import DeviceKernels, parser_input, parser_labels, parsing_blend, pasteback_grid
from simswap_trt.stages import Faces, Stages
from simswap_trt.vision.parsing import PARSING_CLASSES, PARSING_SIZE, mask_from_labels
from simswap_trt.vision.preprocess import stack_crops

log = logging.getLogger(__name__)
GRAPH_GRID_STEP = 64  # pixels: graph mode rounds the paste-back regions' launch extent up to a multiple


def frames_with_faces(images: Sequence[np.ndarray], faces: Faces) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    """Only frames with faces are used: their image indices, the frames (contiguous), and each face's frame
    position among them."""
    used = sorted({i for i, _ in faces})
    position = {image: k for k, image in enumerate(used)}
    frames = [np.ascontiguousarray(images[i]) for i in used]
    return used, frames, np.array([position[i] for i, _ in faces], np.int32)


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
    ) -> None:
        """``arcface``: the ArcFace engine; on TensorRT (``execute_device``) its input is preprocessed on the
        device too, else ``host`` (the host stages) computes the latents. ``device``: the CUDA device id of the
        buffers, streams and kernels (default: the current device), made current by every entry point. ``parser``:
        a ``FaceParser``; its masks blend each swap with its target crop on the device (see ``_parse``). ``graphs``:
        replay each batch's whole sequence (preprocess, generator, paste-back) as one CUDA graph (see
        ``_run_graphed``); not with a parser, whose host round trip sits in the middle of the sequence.
        ``host_memory``: how frames and tables reach the device (``host_memory_strategy``: ``"auto"``
        maps pinned host memory on integrated GPUs, so nothing is uploaded; copies elsewhere).
        ``parser_engine``: the parser's TensorRT plan (``execute_device``), to parse on the device."""
        specs = {spec.name: spec for spec in generator.inputs + generator.outputs}
        self.generator, self.crop_size, self.arcface, self.host = generator, crop_size, arcface, host
        self.parser = parser
        self.graphs = graphs and parser is None
        if graphs:
            log.info("CUDA graphs of the whole per-batch sequence: %s", "on" if self.graphs else "off (face parser)")
        self.parser_engine = parser_engine if parser is not None else None
        if self.parser_engine is not None:
            log.info(
                "face parser: %s on the device (input and labels kernels, only the labels come back); the "
                "parsing-mask blend runs on the device",
                parser_engine.backend,
            )
        elif parser is not None:
            log.info(
                "face parser: %s on the host, on the target crops downloaded from the device; the parsing-mask "
                "blend runs on the device",
                parser.engine.backend,
            )
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
        self.parse_stream = cuda.Stream() if self.parser_engine is not None else None
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
    ) -> tuple[list[int], list[int], list[cuda_memory.DeviceBuffer]]:
        """Step 1: the ``frames`` (contiguous) not already on the device (``resident``: each frame's device copy
        from detection, or None), the preprocessing tables (face k is ``frames[frame_of_face[k]]`` through
        crop→frame matrix ``inverse[k]``) and ``extra`` in one upload; event ``uploaded`` also follows the
        uploads of the resident frames. Returns the device addresses of the frames and of the tables (frame
        addresses, pitches, widths, heights, frame of face, inverse, extra), and each frame's buffer."""
        fresh = [f for f, r in zip(frames, resident, strict=True) if r is None]
        tables = frame_tables(frames) + [frame_of_face.astype(np.int32), inverse, extra]  # addresses filled below
        addresses = ws.inputs.layout([f.nbytes for f in fresh] + [t.nbytes for t in tables])
        uploaded, table_addresses = iter(addresses[: len(fresh)]), addresses[len(fresh) :]
        frame_addresses = [next(uploaded) if r is None else r.address for r in resident]
        tables[0][:] = frame_addresses
        for address, array in zip(addresses, fresh + tables, strict=True):
            ws.inputs.write(address, array)
        ws.inputs.upload(self.upload_stream)
        for slot in {id(r.slot): r.slot for r in resident if r is not None}.values():
            self.upload_stream.wait(slot.uploaded)  # the frames detection uploaded
        ws.uploaded.record(self.upload_stream)
        buffers = [ws.inputs.device if r is None else r.buffer for r in resident]
        return frame_addresses, table_addresses, buffers

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
        chunks = chunk_batches(count, self.generator.max_batch)
        capacity = max(count, chunks[-1].start + self.generator.min_batch)
        latents = np.zeros((capacity, LATENT_SIZE), np.float32)
        latents[:count] = latent  # one shared [512] latent, or one per face
        frame_addresses, table_addresses, buffers = self._upload(ws, frames, frame_of_face, inverse, latents, resident)
        targets = ws.targets.reserve(capacity * face_bytes * self.target_dtype.itemsize)
        swapped = ws.swapped.reserve(capacity * face_bytes * self.output_dtype.itemsize)
        return Staged(frame_addresses, buffers, table_addresses, targets, swapped, count, chunks)

    def _enqueue_generate(self, ws: Workspace, staged: Staged, contexts: Sequence | None = None) -> None:
        """Step 2 on the compute stream: one preprocess launch into the generator's input, then the generator
        in chunks: through ``execute_device`` (event-ordered engine slots), or with ``contexts`` (one per
        chunk, see ``TensorRTEngine.device_context``) straight on the compute stream, as a graph capture
        needs."""
        face_bytes = 3 * self.crop_size * self.crop_size
        half_in = self.target_dtype == np.float16
        tables = staged.tables
        self.kernels.preprocess(ws.compute.handle, *tables[:6], staged.count, self.crop_size, half_in, staged.targets)
        if contexts is None:
            ws.preprocessed.record(ws.compute)  # a host face parser downloads the crops from here
        for k, chunk in enumerate(staged.chunks):
            addresses = {
                "target": staged.targets + chunk.start * face_bytes * self.target_dtype.itemsize,
                "latent": tables[6] + chunk.start * LATENT_SIZE * 4,
                "swapped": staged.swapped + chunk.start * face_bytes * self.output_dtype.itemsize,
            }
            batch = max(chunk.stop - chunk.start, self.generator.min_batch)
            if contexts is None:
                self.generator.execute_device(addresses, batch, ws.compute)
            else:
                contexts[k].enqueue(addresses, batch, ws.compute)

    def _generate(
        self, ws: Workspace, frames: list[np.ndarray], frame_of_face: np.ndarray, inverse: np.ndarray, latent
    ) -> tuple[list[int], list[int], int]:
        """Steps 1 and 2: upload, preprocess every face into the generator's input, run the generator.
        Returns the frames' and the tables' device addresses and the generator output's address."""
        staged = self._stage(ws, frames, frame_of_face, inverse, latent, [None] * len(frames))
        ws.compute.wait(ws.uploaded)
        self._enqueue_generate(ws, staged)
        return staged.frames, staged.tables, staged.swapped

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
                _, tables, _ = self._upload(ws, frames, frame_of_face, inverse, inverse[:0], resident)
                crop_dtype = np.dtype(self.arcface.inputs[0].dtype)
                count, size, arcface = len(faces), self.crop_size, self.arcface
                chunks = chunk_batches(count, arcface.max_batch)
                capacity = max(count, chunks[-1].start + arcface.min_batch)
                crops = ws.targets.reserve(capacity * 3 * size * size * crop_dtype.itemsize)
                latents = ws.swapped.reserve(capacity * LATENT_SIZE * 4)
                ws.compute.wait(ws.uploaded)
                self.kernels.preprocess(ws.compute.handle, *tables[:6], count, size, crop_dtype == np.float16, crops)
                for chunk in chunks:
                    arcface.execute_device(
                        {
                            "crop": crops + chunk.start * 3 * size * size * crop_dtype.itemsize,
                            "latent": latents + chunk.start * LATENT_SIZE * 4,
                        },
                        max(chunk.stop - chunk.start, arcface.min_batch),
                        ws.compute,
                    )
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
            _, _, swapped = self._generate(ws, frames, np.arange(len(frames)), identity, latent)
            shape = (len(frames), 3, self.crop_size, self.crop_size)
            return self._download_output(ws, shape, self.output_dtype).astype(np.float32)

    def _download_output(self, ws: Workspace, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Wait for the workspace's compute, download the start of its output buffer as ``shape`` of ``dtype``
        into its pinned region buffer and release the workspace (synchronous; the view is reused later)."""
        ws.computed.record(ws.compute)
        self.download_stream.wait(ws.computed)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        host = ws.regions_view(nbytes)[:nbytes].view(dtype).reshape(shape)
        ws.swapped.buffer.download(host, self.download_stream)
        ws.done.record(self.download_stream)
        ws.done.synchronize()
        ws.held = False
        return host

    def _start(
        self, images: Sequence[np.ndarray], faces: Faces, latent: np.ndarray, copies: Sequence[ResidentFrame | None]
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
                    batch, mask_addresses = self._upload_pasteback(ws, used, faces, frames, staged.swapped, [])
                    self._run_graphed(ws, staged, batch, mask_addresses)
                else:
                    ws.compute.wait(ws.uploaded)
                    self._enqueue_generate(ws, staged)
                    # the host parser, meanwhile
                    parsing = self._parse(ws, len(faces)) if self.parser is not None else []
                    batch, mask_addresses = self._upload_pasteback(ws, used, faces, frames, staged.swapped, parsing)
                    ws.compute.wait(ws.masks_uploaded)
                    self._enqueue_pasteback(ws, staged, batch, mask_addresses, parsing)
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
        view = ws.regions_view(total)
        for k, (x0, y0, x1, y1), offset in regions:
            pitch, buffer = frames[k].strides[0], staged.buffers[k]
            host = view[offset : offset + (y1 - y0) * (x1 - x0) * 3].reshape(y1 - y0, (x1 - x0) * 3)
            start = staged.frames[k] - buffer.ptr + y0 * pitch + x0 * 3
            buffer.download_rows(host, self.download_stream, start, pitch)
        ws.done.record(self.download_stream)
        return [(used[k], region, offset) for k, region, offset in regions]

    def _upload_pasteback(
        self, ws: Workspace, used: list[int], faces: Faces, frames: list[np.ndarray], swapped: int, parsing
    ) -> tuple[PasteBackBatch, list[int]]:
        """Step 3: the border masks on the host (while the device works), then the paste-back tables'
        upload (event ``masks_uploaded``). Returns the batch and the tables' device addresses."""
        face_bytes = 3 * self.crop_size * self.crop_size
        per_frame = [[m for i, m in faces if i == image] for image in used]
        order = [f for image in used for f, (i, _) in enumerate(faces) if i == image]  # faces grouped by frame
        batch = pack_pasteback([f.shape for f in frames], per_frame, self.crop_size)
        crop_table = np.array(
            [swapped + f * face_bytes * self.output_dtype.itemsize for f in order], np.uint64
        ).reshape(-1)
        # the masks, whose size changes with every batch, last: the other tables keep their addresses (graphs)
        pasteback_tables = [
            batch.union_rois,
            batch.face_begin,
            crop_table,
            batch.forward,
            batch.rois,
            batch.mask_offsets,
            batch.masks,
            *parsing,
        ]
        mask_addresses = ws.masks.layout([t.nbytes for t in pasteback_tables])
        for address, array in zip(mask_addresses, pasteback_tables, strict=True):
            ws.masks.write(address, array)
        ws.masks.upload(self.upload_stream)
        ws.masks_uploaded.record(self.upload_stream)
        return batch, mask_addresses

    def _enqueue_pasteback(
        self, ws: Workspace, staged: Staged, batch: PasteBackBatch, mask_addresses: list[int], parsing, grid_rois=None
    ) -> None:
        """Step 4 on the compute stream: the parsing-mask blend (with a parser), then one paste-back launch
        that reads the generator's output where it lies. ``grid_rois``: regions for the launch grid only."""
        union, begin, crops, forward, rois, offsets, masks = mask_addresses[:7]
        half_out = self.output_dtype == np.float16
        if parsing:
            half_in = self.target_dtype == np.float16
            parsing_blend(
                self.kernels, ws.compute.handle, staged.swapped, half_out, staged.targets, half_in,
                *mask_addresses[7:], len(parsing[1]), self.crop_size,
            )  # fmt: skip
        self.kernels.pasteback(
            ws.compute.handle,
            *staged.tables[:2],  # frames, pitches
            batch.union_rois if grid_rois is None else grid_rois,
            union,
            begin,
            crops,
            self.crop_size,
            half_out,
            forward,
            rois,
            masks,
            offsets,
        )

    def _run_graphed(self, ws: Workspace, staged: Staged, batch: PasteBackBatch, mask_addresses: list[int]) -> None:
        """Steps 2 and 4 as one CUDA graph per launch signature (the batch size, addresses and grids), on
        the compute stream once both uploads are done. Each graph owns the generator contexts it was
        captured on (one per chunk, enqueued on the compute stream), and nothing changes them afterwards:
        TensorRT ties a captured graph to its context's shapes and addresses. A new signature runs once
        eagerly on fresh contexts (TensorRT's lazy set-up stays outside the capture), then is captured
        with them; later batches of the signature replay it. A capture failure is logged and the signature
        keeps running eagerly, on the workspace's eager contexts. The paste-back grid is rounded up
        (``GRAPH_GRID_STEP``) so that batches of a video whose faces move a little share one graph."""
        ws.compute.wait(ws.uploaded)
        ws.compute.wait(ws.masks_uploaded)
        grid_rois = batch.union_rois.copy()
        extent = grid_rois[:, 2:] - grid_rois[:, :2]
        grid_rois[:, 2:] = grid_rois[:, :2] + -(-extent // GRAPH_GRID_STEP) * GRAPH_GRID_STEP
        batches = tuple(max(c.stop - c.start, self.generator.min_batch) for c in staged.chunks)
        key = (staged.count, batches, tuple(staged.tables), staged.targets, staged.swapped, tuple(mask_addresses))
        key += (pasteback_grid(grid_rois),)

        def sequence(contexts: Sequence) -> None:
            self._enqueue_generate(ws, staged, contexts)
            self._enqueue_pasteback(ws, staged, batch, mask_addresses, [], grid_rois)

        if key in ws.graphs:
            ws.graphs.move_to_end(key)
            ws.graphs[key][0].launch(ws.compute)
            return
        contexts = None if key in ws.graph_failed else self._graph_contexts(ws, len(staged.chunks))
        if contexts is None:
            ws.graph_failed.add(key)
            while len(ws.contexts) < len(staged.chunks):
                ws.contexts.append(self._device_context(ws))
            sequence(ws.contexts)
            return
        sequence(contexts)
        try:
            ws.graphs[key] = cuda.Graph.capture(ws.compute, lambda: sequence(contexts)), contexts
        except cuda.GraphCaptureError as exc:
            ws.graph_failed.add(key)
            ws.compute.synchronize()  # the eager run above still uses the contexts
            for context in contexts:
                context.free()
            log.info("%s; batches of %d faces run without a graph", exc, staged.count)
            return
        if len(ws.graphs) > MAX_GRAPHS:  # the least recently used one, with its contexts
            ws.compute.synchronize()
            free_graph(*ws.graphs.popitem(last=False)[1])

    def _device_context(self, ws: Workspace):
        """A generator context for the workspace's graphs and eager graph-mode runs. On TensorRT they share
        the workspace's activation memory: they all run one after another on its compute stream."""
        if not hasattr(self.generator, "activation_bytes"):
            return self.generator.device_context()
        return self.generator.device_context(ws.activation.reserve(max(self.generator.activation_bytes(), 1)))

    def _graph_contexts(self, ws: Workspace, count: int) -> list | None:
        """``count`` new generator contexts for one graph, or None (those made freed) when TensorRT cannot
        create them (out of device memory): the signature then runs without a graph."""
        contexts: list = []
        try:
            while len(contexts) < count:
                contexts.append(self._device_context(ws))
        except EngineError as exc:
            for context in contexts:
                context.free()
            log.warning("no CUDA graph: %s", exc)
            return None
        return contexts

    def _parse(self, ws: Workspace, count: int) -> list[np.ndarray]:
        """The face parser's masks of the batch's target crops: the preprocessed generator input is downloaded
        (while the generator runs) and parsed on the host. Returns [masks float32 [M,S,S], faces int32 [M]]
        for the M faces with a mask, or [] when no face has one (their swaps are pasted unblended)."""
        size = self.crop_size
        if self.parser_engine is not None:
            masks = [mask_from_labels(labels, size) for labels in self._parse_on_device(ws, count)]
        else:
            shape = (count, 3, size, size)
            nbytes = int(np.prod(shape)) * self.target_dtype.itemsize
            crops = ws.crops_view(nbytes).view(self.target_dtype).reshape(shape)
            self.download_stream.wait(ws.preprocessed)
            ws.targets.buffer.download(crops, self.download_stream)
            ws.crops_downloaded.record(self.download_stream)
            ws.crops_downloaded.synchronize()
            masks = self.parser.masks(crops.astype(np.float32))
        masked = [k for k, mask in enumerate(masks) if mask is not None]
        if not masked:
            return []
        return [np.stack([masks[k] for k in masked]).astype(np.float32), np.array(masked, np.int32)]

    def _parse_on_device(self, ws: Workspace, count: int) -> np.ndarray:
        """The face parser's class maps uint8 [count, 512, 512] of the batch's target crops, on the parse
        stream (beside the generator on the compute stream): one launch makes the parser's input from the
        generator's input, the parser's plan runs in chunks, one launch reduces its logits to labels, and only
        the labels come back (synchronous)."""
        engine, plane = self.parser_engine, PARSING_SIZE * PARSING_SIZE
        chunks = chunk_batches(count, engine.max_batch)
        capacity = max(count, chunks[-1].start + engine.min_batch)
        inputs = ws.parser_inputs.reserve(capacity * 3 * plane * 4)
        logits = ws.parser_logits.reserve(capacity * PARSING_CLASSES * plane * 4)
        labels = ws.parser_labels.reserve(count * plane)
        stream = self.parse_stream
        stream.wait(ws.preprocessed)
        half = self.target_dtype == np.float16
        parser_input(self.kernels, stream.handle, ws.targets.buffer.ptr, half, count, self.crop_size, inputs)
        for chunk in chunks:
            addresses = {
                engine.inputs[0].name: inputs + chunk.start * 3 * plane * 4,
                engine.outputs[0].name: logits + chunk.start * PARSING_CLASSES * plane * 4,
            }
            engine.execute_device(addresses, max(chunk.stop - chunk.start, engine.min_batch), stream)
        parser_labels(self.kernels, stream.handle, logits, count, labels)
        host = ws.crops_view(count * plane).reshape(count, PARSING_SIZE, PARSING_SIZE)
        ws.parser_labels.buffer.download(host, stream)
        ws.crops_downloaded.record(stream)
        ws.crops_downloaded.synchronize()
        return host

    def start(
        self,
        images: Sequence[np.ndarray],
        faces: Faces,
        latent: np.ndarray,
        resident: Sequence[ResidentFrame | None] | None = None,
    ) -> DeviceTicket:
        """Steps 1 to 5 for a batch of frames, enqueued; ``finish`` waits for them. ``resident``: each image's
        copy on the device from detection (or None), read there instead of uploading the image."""
        with self._lock:
            cuda.activate(self.device)
            return self._start(images, faces, latent, resident or [None] * len(images))

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
            region = ws.regions.array[offset : offset + (y1 - y0) * (x1 - x0) * 3]
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
