"""Memory the device path uses: device buffers, pinned (page-locked) host buffers, mapped host memory for
integrated GPUs, the staging of uploads, device arrays grown on demand, and the accounting of what a part
holds. Every allocation goes through the checked calls of ``simswap_trt.cuda``."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simswap_trt import cuda
from simswap_trt.errors import EngineError


class DeviceBuffer:
    """``nbytes`` of device memory, allocated once and reused; ``ptr`` is the device address."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(cuda.cuda_call("cudaMalloc", cuda.runtime().cudaMalloc(max(nbytes, 1))))

    def upload(self, host: np.ndarray, stream: cuda.Stream, offset: int = 0) -> None:
        """Asynchronous host→device copy to ``ptr + offset``; ``host`` should be pinned (a ``PinnedBuffer``
        view) to overlap, and must not change until the copy has completed."""
        self._check(offset + host.nbytes)
        cudart = cuda.runtime()
        cuda.cuda_call(
            "cudaMemcpyAsync",
            cudart.cudaMemcpyAsync(
                self.ptr + offset,
                host.ctypes.data,
                host.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                stream.handle,
            ),
        )

    def download(self, host: np.ndarray, stream: cuda.Stream, offset: int = 0) -> None:
        """Asynchronous device→host copy from ``ptr + offset`` into ``host`` (pinned for overlap)."""
        self._check(offset + host.nbytes)
        cudart = cuda.runtime()
        cuda.cuda_call(
            "cudaMemcpyAsync",
            cudart.cudaMemcpyAsync(
                host.ctypes.data,
                self.ptr + offset,
                host.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                stream.handle,
            ),
        )

    def download_rows(self, host: np.ndarray, stream: cuda.Stream, offset: int, pitch: int) -> None:
        """Asynchronous copy of a rectangle into the C-contiguous ``host`` [rows, ...]: ``host.shape[0]``
        rows of ``host[0].nbytes`` bytes each, starting at ``ptr + offset``, ``pitch`` bytes apart."""
        rows, width = host.shape[0], host[0].nbytes if host.shape[0] else 0
        self._check(offset + max(rows - 1, 0) * pitch + width)
        cudart = cuda.runtime()
        cuda.cuda_call(
            "cudaMemcpy2DAsync",
            cudart.cudaMemcpy2DAsync(
                host.ctypes.data,
                width,
                self.ptr + offset,
                pitch,
                width,
                rows,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                stream.handle,
            ),
        )

    @classmethod
    def from_array(cls, array: np.ndarray) -> DeviceBuffer:
        """A new device buffer holding a copy of ``array`` (synchronous; for set-up, not the hot path)."""
        array = np.ascontiguousarray(array)
        buffer, stream = cls(array.nbytes), cuda.Stream()
        buffer.upload(array, stream)
        stream.synchronize()
        stream.free()
        return buffer

    def to_array(self, like: np.ndarray) -> np.ndarray:
        """A host copy of the buffer's first ``like.nbytes`` bytes, shaped like ``like`` (synchronous)."""
        out, stream = np.empty_like(like), cuda.Stream()
        self.download(out, stream)
        stream.synchronize()
        stream.free()
        return out

    def _check(self, nbytes: int) -> None:
        if nbytes > self.nbytes:
            raise EngineError(f"copy of {nbytes} bytes does not fit a {self.nbytes}-byte device buffer")

    def free(self) -> None:
        if self.ptr:
            cuda.cuda_call("cudaFree", cuda.runtime().cudaFree(self.ptr))
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory with a numpy view (``array``) of ``shape``/``dtype``, reused across calls.
    Views returned by ``array[:n]`` stay valid only until ``free``."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self.ptr = int(cuda.cuda_call("cudaMallocHost", cuda.runtime().cudaMallocHost(max(nbytes, 1))))
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            cuda.cuda_call("cudaFreeHost", cuda.runtime().cudaFreeHost(self.ptr))
            self.ptr = 0


# -- integrated GPUs (Jetson): mapped pinned host memory instead of staging copies ---------------------------

HOST_MEMORY_MODES = ("auto", "mapped", "staged")


@dataclass(frozen=True)
class MemoryTraits:
    """The device attributes that decide how host data reaches the GPU."""

    integrated: bool  # cudaDevAttrIntegrated: the GPU shares one DRAM with the CPU (Jetson)
    can_map_host_memory: bool  # cudaDevAttrCanMapHostMemory
    compute_capability: tuple[int, int]


def memory_traits(device: int = 0) -> MemoryTraits:
    """``MemoryTraits`` of ``device`` from ``cudaDeviceGetAttribute``."""
    cudart = cuda.runtime()

    def attribute(name: str) -> int:
        value = cudart.cudaDeviceGetAttribute(getattr(cudart.cudaDeviceAttr, name), device)
        return int(cuda.cuda_call("cudaDeviceGetAttribute", value))

    return MemoryTraits(
        integrated=bool(attribute("cudaDevAttrIntegrated")),
        can_map_host_memory=bool(attribute("cudaDevAttrCanMapHostMemory")),
        compute_capability=(
            attribute("cudaDevAttrComputeCapabilityMajor"),
            attribute("cudaDevAttrComputeCapabilityMinor"),
        ),
    )


def host_memory_strategy(traits: MemoryTraits, requested: str = "auto") -> str:
    """``"mapped"`` or ``"staged"`` for engine I/O buffers.

    ``auto`` maps on integrated GPUs with I/O coherency (Xavier, sm_72, and later; every JetPack 6 module): the
    CPU and GPU share one DRAM, so a staging copy would only copy DRAM to DRAM, while the GPU can read the
    CPU-cached pinned pages directly. Discrete GPUs stay staged (pinned host buffer, device buffer,
    asynchronous copies): mapped memory would be read over PCIe by every kernel. Older integrated GPUs (TX2,
    Nano) read mapped memory uncached, so they stay staged too."""
    if requested not in HOST_MEMORY_MODES:
        raise EngineError(f"host memory must be one of {', '.join(HOST_MEMORY_MODES)}, got {requested!r}")
    if requested == "mapped" and not traits.can_map_host_memory:
        raise EngineError("host memory 'mapped' was requested, but this device cannot map host memory")
    if requested != "auto":
        return requested
    coherent = traits.compute_capability >= (7, 2)
    return "mapped" if traits.integrated and traits.can_map_host_memory and coherent else "staged"


class MappedBuffer:
    """Page-locked host memory mapped into the device's address space (``cudaHostAllocMapped``): ``array`` is
    the host view and ``ptr`` the device address of the same bytes. It serves as both the host and the device
    buffer of an engine slot: ``upload``/``download`` of a view of its own ``array`` copy nothing."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        cudart = cuda.runtime()
        self.host_ptr = int(
            cuda.cuda_call("cudaHostAlloc", cudart.cudaHostAlloc(max(self.nbytes, 1), cudart.cudaHostAllocMapped))
        )
        self.ptr = int(cuda.cuda_call("cudaHostGetDevicePointer", cudart.cudaHostGetDevicePointer(self.host_ptr, 0)))
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.host_ptr)
        self.array = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def _own(self, host: np.ndarray) -> bool:
        return self.host_ptr <= host.ctypes.data < self.host_ptr + max(self.nbytes, 1)

    def _copy(self, dst: int, src: int, nbytes: int, stream: cuda.Stream) -> None:
        if nbytes > self.nbytes:
            raise EngineError(f"copy of {nbytes} bytes does not fit a {self.nbytes}-byte mapped buffer")
        cudart = cuda.runtime()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDefault
        cuda.cuda_call("cudaMemcpyAsync", cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream.handle))

    def upload(self, host: np.ndarray, stream: cuda.Stream) -> None:
        """Nothing to do for a view of ``array``; another host array is copied in, ordered on ``stream``."""
        if not self._own(host):
            self._copy(self.ptr, host.ctypes.data, host.nbytes, stream)

    def download(self, host: np.ndarray, stream: cuda.Stream) -> None:
        """Nothing to do for a view of ``array`` (read it after the stream's work); else copied out on ``stream``."""
        if not self._own(host):
            self._copy(host.ctypes.data, self.ptr, host.nbytes, stream)

    def download_rows(self, host: np.ndarray, stream: cuda.Stream, offset: int, pitch: int) -> None:
        """``DeviceBuffer.download_rows`` out of the mapped bytes (a copy within the shared DRAM, ordered on
        ``stream``), so that the buffer may be reused while ``host`` is read."""
        rows, width = host.shape[0], host[0].nbytes if host.shape[0] else 0
        if offset + max(rows - 1, 0) * pitch + width > self.nbytes:
            raise EngineError(f"copy of {rows} rows does not fit a {self.nbytes}-byte mapped buffer")
        cudart = cuda.runtime()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDefault
        source = self.ptr + offset
        call = cudart.cudaMemcpy2DAsync(host.ctypes.data, width, source, pitch, width, rows, kind, stream.handle)
        cuda.cuda_call("cudaMemcpy2DAsync", call)

    def free(self) -> None:
        if self.host_ptr:
            self.array = None
            cuda.cuda_call("cudaFreeHost", cuda.runtime().cudaFreeHost(self.host_ptr))
            self.host_ptr = self.ptr = 0


def io_buffers(shape: tuple[int, ...], dtype: np.dtype, strategy: str) -> tuple[Any, Any]:
    """(host buffer with ``array``, device buffer with ``ptr``/``upload``/``download``) for one engine tensor:
    one ``MappedBuffer`` in both roles when ``strategy`` is ``"mapped"``, else a ``PinnedBuffer`` and a
    ``DeviceBuffer`` of the same size."""
    if strategy == "mapped":
        buffer = MappedBuffer(shape, dtype)
        return buffer, buffer
    host = PinnedBuffer(shape, dtype)
    return host, DeviceBuffer(host.array.nbytes)


ALIGN = 256  # bytes; every table and frame starts on a boundary the kernels can read with any type


def aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


@dataclass(frozen=True)
class MemoryUse:
    """Bytes of device memory and of page-locked (pinned or mapped) host memory that one part holds. Mapped
    memory, which the GPU reads in place (integrated GPUs), counts once, as pinned."""

    device: int = 0
    pinned: int = 0

    def __add__(self, other: MemoryUse) -> MemoryUse:
        return MemoryUse(self.device + other.device, self.pinned + other.pinned)


@dataclass(frozen=True)
class SwapperMemory:
    """What a ``FaceSwapper`` holds on the device and in pinned host memory, per part (the engines with
    their execution contexts' activation memory, the device stages' workspaces and resident frames)."""

    parts: Mapping[str, MemoryUse] = field(default_factory=dict)

    @property
    def device(self) -> int:
        return sum(use.device for use in self.parts.values())

    @property
    def pinned(self) -> int:
        return sum(use.pinned for use in self.parts.values())

    def lines(self) -> list[str]:
        """One line per part and the total, in MiB."""
        rows = [*self.parts.items(), ("total", MemoryUse(self.device, self.pinned))]
        mib = 2**20
        return [f"{name:<14}device {u.device / mib:8.1f} MiB, pinned {u.pinned / mib:8.1f} MiB" for name, u in rows]


def buffers_use(*buffers) -> MemoryUse:
    """What live buffers hold: pinned and mapped buffers (``array``) as pinned host memory, device buffers
    (``nbytes``) as device memory; a buffer listed twice (mapped: both host and device side) counts once."""
    device = pinned = 0
    for buffer in {id(b): b for b in buffers if b is not None}.values():
        if hasattr(buffer, "array"):
            pinned += buffer.array.nbytes if buffer.array is not None else 0
        elif buffer.ptr:
            device += buffer.nbytes
    return MemoryUse(device, pinned)


class Staging:
    """A pinned host buffer and a device buffer of the same size, grown on demand and reused. ``layout``
    places arrays front to back (aligned) and returns their device addresses; ``write`` fills the pinned
    mirror; ``upload`` copies the used part in one asynchronous copy. With ``host_memory="mapped"``
    (integrated GPUs, see ``host_memory_strategy``) one mapped pinned buffer is both: the kernels read
    what the host wrote, and ``upload`` copies nothing."""

    def __init__(self, host_memory: str = "staged") -> None:
        self.pinned: PinnedBuffer | None = None
        self.device: DeviceBuffer | None = None
        self.used = 0
        self.host_memory = host_memory

    def layout(self, sizes: Sequence[int]) -> list[int]:
        offsets, end = [], 0
        for size in sizes:
            offsets.append(aligned(end))
            end = offsets[-1] + size
        if self.device is None or self.device.nbytes < end:
            self.free()
            capacity = aligned(max(end, 1) * 5 // 4)  # some headroom: frame sizes vary a little
            self.pinned, self.device = io_buffers((capacity,), np.uint8, self.host_memory)
        self.used = end
        return [self.device.ptr + offset for offset in offsets]

    def write(self, address: int, array: np.ndarray) -> None:
        offset = address - self.device.ptr
        self.pinned.array[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)[...] = array

    def upload(self, stream: cuda.Stream) -> None:
        self.device.upload(self.pinned.array[: self.used], stream)

    def memory(self) -> MemoryUse:
        return buffers_use(self.pinned, self.device)

    def free(self) -> None:
        for buffer in (self.pinned, self.device):
            if buffer is not None:
                buffer.free()
        self.pinned = self.device = None


class PinnedArray:
    """A pinned host buffer of at least ``nbytes``, grown on demand (its contents are not kept); with
    ``headroom`` a new buffer gets a quarter more room, for sizes that vary a little from call to call."""

    def __init__(self, headroom: bool = False) -> None:
        self.buffer: PinnedBuffer | None = None
        self.headroom = headroom

    def reserve(self, nbytes: int) -> np.ndarray:
        """The first ``nbytes`` of the buffer as uint8 (a view, valid until the buffer grows or is freed)."""
        if self.buffer is None or self.buffer.array.nbytes < nbytes:
            self.free()
            capacity = max(nbytes, 1) * 5 // 4 if self.headroom else max(nbytes, 1)
            self.buffer = PinnedBuffer((aligned(capacity),), np.uint8)
        return self.buffer.array[:nbytes]

    def memory(self) -> MemoryUse:
        return buffers_use(self.buffer)

    def free(self) -> None:
        if self.buffer is not None:
            self.buffer.free()
            self.buffer = None


class DeviceArray:
    """A device buffer of at least ``nbytes``, grown on demand (its contents are not kept)."""

    def __init__(self) -> None:
        self.buffer: DeviceBuffer | None = None

    def reserve(self, nbytes: int) -> int:
        if self.buffer is None or self.buffer.nbytes < nbytes:
            self.free()
            self.buffer = DeviceBuffer(nbytes)
        return self.buffer.ptr

    def memory(self) -> MemoryUse:
        return buffers_use(self.buffer)

    def free(self) -> None:
        if self.buffer is not None:
            self.buffer.free()
            self.buffer = None
