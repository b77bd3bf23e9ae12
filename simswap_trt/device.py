"""The device implementation of FaceSwapper's stages (see ``simswap_trt.stages``): fused kernels and the
generator's TensorRT plan on device buffers.

Per batch of frames, on the streams of one of ``depth`` workspaces (double-buffered):

1. the frames and the preprocessing tables are written into one reused pinned staging buffer and uploaded
   with one asynchronous copy on the upload stream (event ``uploaded``);
2. the compute stream waits for it, then one preprocess launch writes every face straight into the
   generator's input buffer (FP16 when the plan's input is FP16), and the generator runs on it in chunks
   of at most the plan's maximum batch, through ``execute_device`` (no copies between kernels and plan);
3. meanwhile the host computes the border masks (OpenCV, the official steps) and uploads them on the
   upload stream (event ``masks``);
4. the compute stream waits for the masks; one paste-back launch reads the generator's output where it
   lies and blends every face into its frame on the device (event ``computed``);
5. the download stream waits for it and copies back only each frame's union of face regions (event
   ``done``); ``finish`` waits for ``done`` and writes the regions into copies of the input images.

Batch k+1's upload and batch k-1's download overlap batch k's compute. A workspace is reused only once
its previous batch is finished (``finish``), so its pinned buffers are never overwritten while a copy or
the host may still read them; with more batches in flight than workspaces, another one is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simswap_trt import cuda
from simswap_trt.constants import LATENT_SIZE
from simswap_trt.engines.scheduler import chunk_batches
from simswap_trt.errors import EngineError
from simswap_trt.kernels import DeviceKernels, crop_to_frame_matrices, pack_pasteback, parsing_blend
from simswap_trt.preprocess import stack_crops
from simswap_trt.stages import Faces, Stages

log = logging.getLogger(__name__)
ALIGN = 256  # bytes; every table and frame starts on a boundary the kernels can read with any type


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


class Staging:
    """A pinned host buffer and a device buffer of the same size, grown on demand and reused. ``layout``
    places arrays front to back (aligned) and returns their device addresses; ``write`` fills the pinned
    mirror; ``upload`` copies the used part in one asynchronous copy."""

    def __init__(self) -> None:
        self.pinned: cuda.PinnedBuffer | None = None
        self.device: cuda.DeviceBuffer | None = None
        self.used = 0

    def layout(self, sizes: Sequence[int]) -> list[int]:
        offsets, end = [], 0
        for size in sizes:
            offsets.append(_aligned(end))
            end = offsets[-1] + size
        if self.device is None or self.device.nbytes < end:
            self.free()
            capacity = _aligned(max(end, 1) * 5 // 4)  # some headroom: frame sizes vary a little
            self.pinned, self.device = cuda.PinnedBuffer((capacity,), np.uint8), cuda.DeviceBuffer(capacity)
        self.used = end
        return [self.device.ptr + offset for offset in offsets]

    def write(self, address: int, array: np.ndarray) -> None:
        offset = address - self.device.ptr
        self.pinned.array[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)[...] = array

    def upload(self, stream: cuda.Stream) -> None:
        self.device.upload(self.pinned.array[: self.used], stream)

    def free(self) -> None:
        for buffer in (self.pinned, self.device):
            if buffer is not None:
                buffer.free()
        self.pinned = self.device = None


class DeviceArray:
    """A device buffer of at least ``nbytes``, grown on demand (its contents are not kept)."""

    def __init__(self) -> None:
        self.buffer: cuda.DeviceBuffer | None = None

    def reserve(self, nbytes: int) -> int:
        if self.buffer is None or self.buffer.nbytes < nbytes:
            self.free()
            self.buffer = cuda.DeviceBuffer(nbytes)
        return self.buffer.ptr

    def free(self) -> None:
        if self.buffer is not None:
            self.buffer.free()
            self.buffer = None


class Workspace:
    """Everything one batch in flight uses: a compute stream, staging, device buffers and events."""

    def __init__(self) -> None:
        self.compute = cuda.Stream()
        self.inputs, self.masks = Staging(), Staging()  # frames + preprocessing tables; paste-back tables
        self.targets, self.swapped = DeviceArray(), DeviceArray()  # generator input and output
        self.regions: cuda.PinnedBuffer | None = None  # downloaded union regions
        self.uploaded, self.masks_uploaded, self.computed, self.done = (cuda.Event(timing=False) for _ in range(4))
        self.held = False  # by a started batch until it is finished
        self.preprocessed, self.crops_downloaded = cuda.Event(timing=False), cuda.Event(timing=False)
        self.crops: cuda.PinnedBuffer | None = None  # target crops downloaded for a host face parser

    def regions_view(self, nbytes: int) -> np.ndarray:
        if self.regions is None or self.regions.array.nbytes < nbytes:
            if self.regions is not None:
                self.regions.free()
            self.regions = cuda.PinnedBuffer((_aligned(max(nbytes, 1) * 5 // 4),), np.uint8)
        return self.regions.array

    def free(self) -> None:
        self.compute.synchronize()
        self.done.synchronize()
        for owner in (self.inputs, self.masks, self.targets, self.swapped):
            owner.free()
        if self.regions is not None:
            self.regions.free()
            self.regions = None
        for event in (self.uploaded, self.masks_uploaded, self.computed, self.done):
            event.free()
        self.free_parsing()
        self.compute.free()

    def crops_view(self, nbytes: int) -> np.ndarray:
        if self.crops is None or self.crops.array.nbytes < nbytes:
            if self.crops is not None:
                self.crops.free()
            self.crops = cuda.PinnedBuffer((_aligned(max(nbytes, 1)),), np.uint8)
        return self.crops.array[:nbytes]

    def free_parsing(self) -> None:
        for event in (self.preprocessed, self.crops_downloaded):
            event.free()
        if self.crops is not None:
            self.crops.free()
            self.crops = None


@dataclass
class DeviceTicket:
    """A batch started on a workspace: what ``finish`` needs to assemble the output images."""

    images: Sequence[np.ndarray]
    workspace: Workspace
    regions: list[tuple[int, tuple[int, int, int, int], int]]  # (image, union region, offset in regions)


def frames_with_faces(
    images: Sequence[np.ndarray], faces: Faces
) -> tuple[list[int], dict[int, int], list[np.ndarray], np.ndarray]:
    """Only frames with faces are uploaded: their image indices, each one's position among them, the frames
    (contiguous), and each face's frame position."""
    used = sorted({i for i, _ in faces})
    position = {image: k for k, image in enumerate(used)}
    frames = [np.ascontiguousarray(images[i]) for i in used]
    return used, position, frames, np.array([position[i] for i, _ in faces], np.int32)


class DeviceStages:
    """Pre-processing, generator and paste-back on the device, around a TensorRT generator engine (anything
    with ``execute_device``, ``inputs``/``outputs``, ``min_batch`` and ``max_batch``)."""

    name = "device (fused CUDA kernels, generator on TensorRT device buffers)"

    def __init__(
        self,
        generator,
        crop_size: int,
        kernels: DeviceKernels | None = None,
        depth: int = 2,
        arcface=None,
        host: Stages | None = None,
        device: int | None = None,
        parser=None,
    ) -> None:
        """``arcface``: the ArcFace engine; on TensorRT (``execute_device``) its input is preprocessed on the
        device too, else ``host`` (the host stages) computes the latents. ``device``: the CUDA device id of the
        buffers, streams and kernels (default: the current device), made current by every entry point. ``parser``:
        a ``FaceParser``; its masks blend each swap with its target crop on the device (see ``_parse``)."""
        self.device = device
        cuda.activate(device)
        specs = {spec.name: spec for spec in generator.inputs + generator.outputs}
        self.generator, self.crop_size, self.arcface, self.host = generator, crop_size, arcface, host
        self.parser = parser
        if parser is not None:
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
        self.kernels = kernels if kernels is not None else DeviceKernels(device=device)
        self.upload_stream, self.download_stream = cuda.Stream(), cuda.Stream()
        self.workspaces = [Workspace() for _ in range(depth)]  # more are made when more batches are in flight
        self._closed = False
        self._lock = threading.RLock()  # calls from several threads enqueue one batch at a time

    def _workspace(self) -> Workspace:
        """A workspace no unfinished batch holds (a new one when every one is held), once its last batch's
        device work is done, so that its buffers may be reused."""
        if self._closed:
            raise EngineError("the device stages are closed")
        ws = next((w for w in self.workspaces if not w.held), None)
        if ws is None:
            ws = Workspace()
            self.workspaces.append(ws)
        ws.done.synchronize()
        ws.held = True
        return ws

    def _upload(
        self, ws: Workspace, frames: list[np.ndarray], frame_of_face: np.ndarray, inverse: np.ndarray, extra
    ) -> tuple[list[int], list[int]]:
        """Step 1: ``frames``, the preprocessing tables (face k is ``frames[frame_of_face[k]]`` through
        crop→frame matrix ``inverse[k]``) and ``extra`` in one upload. Returns the device addresses of the
        frames and of the tables (frame addresses, pitches, widths, heights, frame of face, inverse, extra)."""
        tables = [
            np.zeros(len(frames), np.uint64),  # frame addresses, filled below
            np.array([f.strides[0] for f in frames], np.int32),
            np.array([f.shape[1] for f in frames], np.int32),
            np.array([f.shape[0] for f in frames], np.int32),
            frame_of_face.astype(np.int32),
            inverse,
            extra,
        ]
        addresses = ws.inputs.layout([f.nbytes for f in frames] + [t.nbytes for t in tables])
        frame_addresses, table_addresses = addresses[: len(frames)], addresses[len(frames) :]
        tables[0][:] = frame_addresses
        for address, array in zip(addresses, frames + tables, strict=True):
            ws.inputs.write(address, array)
        ws.inputs.upload(self.upload_stream)
        ws.uploaded.record(self.upload_stream)
        return frame_addresses, table_addresses

    def _generate(
        self, ws: Workspace, frames: list[np.ndarray], frame_of_face: np.ndarray, inverse: np.ndarray, latent
    ) -> tuple[list[int], list[int], int]:
        """Steps 1 and 2: upload, preprocess every face into the generator's input, run the generator.
        Returns the frames' and the tables' device addresses and the generator output's address."""
        count, size = len(frame_of_face), self.crop_size
        face_bytes = 3 * size * size
        chunks = chunk_batches(count, self.generator.max_batch)
        capacity = max(count, chunks[-1].start + self.generator.min_batch)  # room for padding the last chunk
        latents = np.zeros((capacity, LATENT_SIZE), np.float32)
        latents[:count] = latent  # one shared [512] latent, or one per face
        frame_addresses, table_addresses = self._upload(ws, frames, frame_of_face, inverse, latents)
        targets = ws.targets.reserve(capacity * face_bytes * self.target_dtype.itemsize)
        swapped = ws.swapped.reserve(capacity * face_bytes * self.output_dtype.itemsize)
        ws.compute.wait(ws.uploaded)
        half_in = self.target_dtype == np.float16
        self.kernels.preprocess(ws.compute.handle, *table_addresses[:6], count, size, half_in, targets)
        ws.preprocessed.record(ws.compute)
        for chunk in chunks:
            self.generator.execute_device(
                {
                    "target": targets + chunk.start * face_bytes * self.target_dtype.itemsize,
                    "latent": table_addresses[6] + chunk.start * LATENT_SIZE * 4,
                    "swapped": swapped + chunk.start * face_bytes * self.output_dtype.itemsize,
                },
                max(chunk.stop - chunk.start, self.generator.min_batch),
                ws.compute,
            )
        return frame_addresses, table_addresses, swapped

    def _latents(self, images: Sequence[np.ndarray], faces: Faces) -> np.ndarray:
        """ArcFace latents of the faces: preprocessed straight into the ArcFace plan's input when ArcFace runs
        on TensorRT, else by the host stages (synchronous)."""
        if not hasattr(self.arcface, "execute_device"):
            return self.host.latents(images, faces)
        if not faces:
            return np.empty((0, LATENT_SIZE), np.float32)
        ws = self._workspace()
        _, _, frames, frame_of_face = frames_with_faces(images, faces)
        inverse = crop_to_frame_matrices([m for _, m in faces])
        _, tables = self._upload(ws, frames, frame_of_face, inverse, inverse[:0])
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

    def _generate_aligned(self, crops: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Aligned uint8 BGR crops [N,S,S,3] through the generator on the device (each crop is its own frame,
        sampled at its pixel centres: exactly ``crops_to_tensor``); returns the generator output as float32
        [N,3,S,S] (synchronous)."""
        ws = self._workspace()
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

    def _start(self, images: Sequence[np.ndarray], faces: Faces, latent: np.ndarray) -> DeviceTicket:
        ws = self._workspace()
        if not faces:
            return DeviceTicket(images, ws, [])
        used, position, frames, frame_of_face = frames_with_faces(images, faces)
        size, face_bytes = self.crop_size, 3 * self.crop_size * self.crop_size
        frame_addresses, tables, swapped = self._generate(
            ws, frames, frame_of_face, crop_to_frame_matrices([m for _, m in faces]), latent
        )
        frames_table, pitches = tables[:2]
        parsing = self._parse(ws, len(faces)) if self.parser is not None else []  # the host parser, meanwhile

        # 3. border masks on the host while the device works, then their upload
        per_frame = [[m for i, m in faces if i == image] for image in used]
        order = [f for image in used for f, (i, _) in enumerate(faces) if i == image]  # faces grouped by frame
        batch = pack_pasteback([f.shape for f in frames], per_frame, size)
        crop_table = np.array(
            [swapped + f * face_bytes * self.output_dtype.itemsize for f in order], np.uint64
        ).reshape(-1)
        pasteback_tables = [
            batch.union_rois,
            batch.face_begin,
            crop_table,
            batch.forward,
            batch.rois,
            batch.masks,
            batch.mask_offsets,
            *parsing,
        ]
        mask_addresses = ws.masks.layout([t.nbytes for t in pasteback_tables])
        for address, array in zip(mask_addresses, pasteback_tables, strict=True):
            ws.masks.write(address, array)
        ws.masks.upload(self.upload_stream)
        ws.masks_uploaded.record(self.upload_stream)

        # 4. paste-back on the device
        ws.compute.wait(ws.masks_uploaded)
        union, begin, crops, forward, rois, masks, offsets = mask_addresses[:7]
        if parsing:
            half_in, half_out = self.target_dtype == np.float16, self.output_dtype == np.float16
            parsing_blend(
                self.kernels, ws.compute.handle, swapped, half_out, ws.targets.buffer.ptr, half_in,
                *mask_addresses[7:], len(parsing[1]), size,
            )  # fmt: skip
        self.kernels.pasteback(
            ws.compute.handle,
            frames_table,
            pitches,
            batch.union_rois,
            union,
            begin,
            crops,
            size,
            self.output_dtype == np.float16,
            forward,
            rois,
            masks,
            offsets,
        )
        ws.computed.record(ws.compute)

        # 5. download only the changed regions
        self.download_stream.wait(ws.computed)
        regions, total = [], 0
        for k, (x0, y0, x1, y1) in enumerate(batch.union_rois.tolist()):
            if x1 > x0 and y1 > y0:
                regions.append((used[k], (x0, y0, x1, y1), total))
                total += (y1 - y0) * (x1 - x0) * 3
        view = ws.regions_view(total)
        for image, (x0, y0, x1, y1), offset in regions:
            frame = frames[position[image]]
            host = view[offset : offset + (y1 - y0) * (x1 - x0) * 3].reshape(y1 - y0, (x1 - x0) * 3)
            start = frame_addresses[position[image]] - ws.inputs.device.ptr + y0 * frame.strides[0] + x0 * 3
            ws.inputs.device.download_rows(host, self.download_stream, start, frame.strides[0])
        ws.done.record(self.download_stream)
        if batch.outside:
            log.info("%d face(s) lie outside their image: nothing to paste", len(batch.outside))
        return DeviceTicket(images, ws, regions)

    def _parse(self, ws: Workspace, count: int) -> list[np.ndarray]:
        """The face parser's masks of the batch's target crops: the preprocessed generator input is downloaded
        (while the generator runs) and parsed on the host. Returns [masks float32 [M,S,S], faces int32 [M]]
        for the M faces with a mask, or [] when no face has one (their swaps are pasted unblended)."""
        size = self.crop_size
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

    def start(self, images: Sequence[np.ndarray], faces: Faces, latent: np.ndarray) -> DeviceTicket:
        """Steps 1 to 5 for a batch of frames, enqueued; ``finish`` waits for them."""
        with self._lock:
            cuda.activate(self.device)
            return self._start(images, faces, latent)

    def latents(self, images: Sequence[np.ndarray], faces: Faces) -> np.ndarray:
        with self._lock:
            cuda.activate(self.device)
            return self._latents(images, faces)

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
        self.upload_stream.synchronize()  # copies may still read or write the workspaces' buffers
        self.download_stream.synchronize()
        for ws in self.workspaces:
            ws.free()
        self.workspaces = []
        self.upload_stream.free()
        self.download_stream.free()
