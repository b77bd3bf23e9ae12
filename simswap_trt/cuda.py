"""A thin CUDA layer over cuda-python's runtime bindings (``cuda.bindings.runtime``): device query, streams,
events, device buffers and pinned host buffers. Every call goes through ``cuda_call``, which turns CUDA
error codes into ``CudaError`` with the error's name.

cuda-python (not pycuda): prebuilt wheels for x86_64 and aarch64, the primary context that TensorRT also
uses, and graph capture. Install with ``pip install 'simswap-trt[trt]'`` (cuda-python 13.x needs a CUDA 13
driver; on JetPack 6 / CUDA 12 install cuda-python 12.x).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from simswap_trt.errors import ConfigError, EngineError


class CudaError(EngineError):
    """A CUDA runtime call failed; ``name`` is the CUDA error name (e.g. ``cudaErrorNoDevice``)."""

    def __init__(self, call: str, name: str, code: int) -> None:
        super().__init__(f"{call} failed: {name} ({code})")
        self.name, self.code = name, code


class CudaOutOfMemory(CudaError):
    """The device (or pinned host memory) ran out of memory."""


class KernelLaunchError(EngineError):
    """cuda.core refused a kernel launch (bad configuration, or an earlier fault of the context)."""


def free_all(*steps: Callable[[], Any]) -> None:
    """Run every release step even when some fail (after a sticky device fault every CUDA call fails, but
    host memory, handles and other steps may still be released); then raise the first failure."""
    failures = []
    for step in steps:
        try:
            step()
        except Exception as exc:  # CudaError, or cuda.core's and TensorRT's own types
            failures.append(exc)
    if failures:
        raise failures[0]


def runtime() -> ModuleType:
    """``cuda.bindings.runtime``, or a clear error naming the package to install."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise EngineError(
            "the TensorRT backend needs cuda-python: pip install 'simswap-trt[trt]' "
            "(cuda-python 13.x for CUDA 13 drivers, 12.x on JetPack 6)"
        ) from None
    return cudart


def cuda_call(call: str, result: Any) -> Any:
    """Unpack a cuda-python ``(error, *values)`` result; raise ``CudaError`` unless it succeeded."""
    cudart = runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        error_type = CudaOutOfMemory if err == cudart.cudaError_t.cudaErrorMemoryAllocation else CudaError
        raise error_type(call, name, int(err))
    return values[0] if len(values) == 1 else tuple(values) if values else None


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: tuple[int, int]
    total_memory: int
    driver_version: int
    runtime_version: int

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


def device_info(device: int = 0) -> DeviceInfo:
    """Properties of ``device``; raises ``CudaError`` without a GPU or driver."""
    cudart = runtime()
    count = cuda_call("cudaGetDeviceCount", cudart.cudaGetDeviceCount())
    if count <= device:
        raise CudaError("cudaGetDeviceCount", "cudaErrorNoDevice", 100)
    props = cuda_call("cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(device))
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(
        name=name,
        compute_capability=(props.major, props.minor),
        total_memory=int(props.totalGlobalMem),
        driver_version=cuda_call("cudaDriverGetVersion", cudart.cudaDriverGetVersion()),
        runtime_version=cuda_call("cudaRuntimeGetVersion", cudart.cudaRuntimeGetVersion()),
    )


def cuda_version_text(version: int) -> str:
    """``"12.6"`` for CUDA's ``12060``."""
    return f"{version // 1000}.{version % 1000 // 10}"


def driver_versions() -> tuple[int, int]:
    """(driver, runtime) CUDA versions (``12060`` is 12.6); the driver's is 0 without an NVIDIA driver. Both
    answer where no device is usable, e.g. when the driver is too old for the runtime."""
    cudart = runtime()
    driver = cuda_call("cudaDriverGetVersion", cudart.cudaDriverGetVersion())
    return int(driver), int(cuda_call("cudaRuntimeGetVersion", cudart.cudaRuntimeGetVersion()))


def driver_problem(driver: int, runtime_version: int, tegra: bool) -> str | None:
    """Why the CUDA runtime of cuda-bindings cannot use this driver and what to install, or None. Desktop and
    server drivers serve newer runtimes of their major version (minor version compatibility); Jetson's (Tegra)
    serve only their own minor version unless the ``cuda-compat`` package of the runtime's version is on the
    library path."""
    if driver == 0:
        return "no NVIDIA driver here"
    have, need = cuda_version_text(driver), cuda_version_text(runtime_version)
    major, minor = runtime_version // 1000, runtime_version % 1000 // 10
    if tegra and driver < runtime_version:
        return (
            f"the Jetson's CUDA driver serves CUDA {have}, older than the CUDA {need} runtime in cuda-bindings: "
            f"sudo apt install cuda-compat-{major}-{minor} && "
            f"export LD_LIBRARY_PATH=/usr/local/cuda-{major}.{minor}/compat:$LD_LIBRARY_PATH (see docs/jetson.md)"
        )
    if not tegra and driver // 1000 < major:
        return (
            f"the NVIDIA driver serves CUDA {have}, older than the CUDA {need} runtime in cuda-bindings: install a "
            f"driver for CUDA {major} (CUDA 13 needs r580 or later), or cuda-python {driver // 1000}.x "
            f"(pip install 'cuda-python>={driver // 1000}.8,<{driver // 1000 + 1}')"
        )
    return None


def memory_used(device: int = 0) -> int:
    """Bytes of device memory in use (all processes), from ``cudaMemGetInfo``."""
    free, total = cuda_call("cudaMemGetInfo", runtime().cudaMemGetInfo())
    return int(total) - int(free)


class Stream:
    """A non-blocking CUDA stream; ``handle`` is the integer TensorRT's ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        cudart = runtime()
        self._stream = cuda_call(
            "cudaStreamCreateWithFlags", cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking)
        )
        self._owned = True

    @classmethod
    def wrap(cls, handle: int) -> Stream:
        """A caller-owned stream (e.g. ``torch.cuda.current_stream().cuda_stream``); never destroyed here."""
        stream = cls.__new__(cls)
        stream._stream, stream._owned = handle, False
        return stream

    @property
    def handle(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        cuda_call("cudaStreamSynchronize", runtime().cudaStreamSynchronize(self._stream))

    def wait(self, event: Event) -> None:
        """Work enqueued on this stream after this call starts only once ``event``'s last record completed."""
        cuda_call("cudaStreamWaitEvent", runtime().cudaStreamWaitEvent(self._stream, event._event, 0))

    def free(self) -> None:
        """Wait for the stream's work, then destroy it. A second call does nothing."""
        if self._stream is not None:
            self.synchronize()
            if self._owned:
                cuda_call("cudaStreamDestroy", runtime().cudaStreamDestroy(self._stream))
            self._stream = None


class Event:
    """A CUDA event for ordering work across streams and, with ``timing``, for timing it."""

    def __init__(self, timing: bool = True) -> None:
        cudart = runtime()
        flags = cudart.cudaEventDefault if timing else cudart.cudaEventDisableTiming
        self._event = cuda_call("cudaEventCreateWithFlags", cudart.cudaEventCreateWithFlags(flags))

    def record(self, stream: Stream) -> None:
        cuda_call("cudaEventRecord", runtime().cudaEventRecord(self._event, stream.handle))

    def synchronize(self) -> None:
        cuda_call("cudaEventSynchronize", runtime().cudaEventSynchronize(self._event))

    def elapsed_ms(self, start: Event) -> float:
        return cuda_call("cudaEventElapsedTime", runtime().cudaEventElapsedTime(start._event, self._event))

    def free(self) -> None:
        if self._event is not None:
            cuda_call("cudaEventDestroy", runtime().cudaEventDestroy(self._event))
            self._event = None


class DeviceBuffer:
    """``nbytes`` of device memory, allocated once and reused; ``ptr`` is the device address."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(cuda_call("cudaMalloc", runtime().cudaMalloc(max(nbytes, 1))))

    def upload(self, host: np.ndarray, stream: Stream, offset: int = 0) -> None:
        """Asynchronous host→device copy to ``ptr + offset``; ``host`` should be pinned (a ``PinnedBuffer``
        view) to overlap, and must not change until the copy has completed."""
        self._check(offset + host.nbytes)
        cudart = runtime()
        cuda_call(
            "cudaMemcpyAsync",
            cudart.cudaMemcpyAsync(
                self.ptr + offset,
                host.ctypes.data,
                host.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                stream.handle,
            ),
        )

    def download(self, host: np.ndarray, stream: Stream, offset: int = 0) -> None:
        """Asynchronous device→host copy from ``ptr + offset`` into ``host`` (pinned for overlap)."""
        self._check(offset + host.nbytes)
        cudart = runtime()
        cuda_call(
            "cudaMemcpyAsync",
            cudart.cudaMemcpyAsync(
                host.ctypes.data,
                self.ptr + offset,
                host.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                stream.handle,
            ),
        )

    def download_rows(self, host: np.ndarray, stream: Stream, offset: int, pitch: int) -> None:
        """Asynchronous copy of a rectangle into the C-contiguous ``host`` [rows, ...]: ``host.shape[0]``
        rows of ``host[0].nbytes`` bytes each, starting at ``ptr + offset``, ``pitch`` bytes apart."""
        rows, width = host.shape[0], host[0].nbytes if host.shape[0] else 0
        self._check(offset + max(rows - 1, 0) * pitch + width)
        cudart = runtime()
        cuda_call(
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
        buffer, stream = cls(array.nbytes), Stream()
        buffer.upload(array, stream)
        stream.synchronize()
        stream.free()
        return buffer

    def to_array(self, like: np.ndarray) -> np.ndarray:
        """A host copy of the buffer's first ``like.nbytes`` bytes, shaped like ``like`` (synchronous)."""
        out, stream = np.empty_like(like), Stream()
        self.download(out, stream)
        stream.synchronize()
        stream.free()
        return out

    def _check(self, nbytes: int) -> None:
        if nbytes > self.nbytes:
            raise EngineError(f"copy of {nbytes} bytes does not fit a {self.nbytes}-byte device buffer")

    def free(self) -> None:
        if self.ptr:
            cuda_call("cudaFree", runtime().cudaFree(self.ptr))
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory with a numpy view (``array``) of ``shape``/``dtype``, reused across calls.
    Views returned by ``array[:n]`` stay valid only until ``free``."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self.ptr = int(cuda_call("cudaMallocHost", runtime().cudaMallocHost(max(nbytes, 1))))
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            cuda_call("cudaFreeHost", runtime().cudaFreeHost(self.ptr))
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
    cudart = runtime()

    def attribute(name: str) -> int:
        value = cudart.cudaDeviceGetAttribute(getattr(cudart.cudaDeviceAttr, name), device)
        return int(cuda_call("cudaDeviceGetAttribute", value))

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
        cudart = runtime()
        self.host_ptr = int(
            cuda_call("cudaHostAlloc", cudart.cudaHostAlloc(max(self.nbytes, 1), cudart.cudaHostAllocMapped))
        )
        self.ptr = int(cuda_call("cudaHostGetDevicePointer", cudart.cudaHostGetDevicePointer(self.host_ptr, 0)))
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.host_ptr)
        self.array = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def _own(self, host: np.ndarray) -> bool:
        return self.host_ptr <= host.ctypes.data < self.host_ptr + max(self.nbytes, 1)

    def _copy(self, dst: int, src: int, nbytes: int, stream: Stream) -> None:
        if nbytes > self.nbytes:
            raise EngineError(f"copy of {nbytes} bytes does not fit a {self.nbytes}-byte mapped buffer")
        cudart = runtime()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDefault
        cuda_call("cudaMemcpyAsync", cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream.handle))

    def upload(self, host: np.ndarray, stream: Stream) -> None:
        """Nothing to do for a view of ``array``; another host array is copied in, ordered on ``stream``."""
        if not self._own(host):
            self._copy(self.ptr, host.ctypes.data, host.nbytes, stream)

    def download(self, host: np.ndarray, stream: Stream) -> None:
        """Nothing to do for a view of ``array`` (read it after the stream's work); else copied out on ``stream``."""
        if not self._own(host):
            self._copy(host.ctypes.data, self.ptr, host.nbytes, stream)

    def download_rows(self, host: np.ndarray, stream: Stream, offset: int, pitch: int) -> None:
        """``DeviceBuffer.download_rows`` out of the mapped bytes (a copy within the shared DRAM, ordered on
        ``stream``), so that the buffer may be reused while ``host`` is read."""
        rows, width = host.shape[0], host[0].nbytes if host.shape[0] else 0
        if offset + max(rows - 1, 0) * pitch + width > self.nbytes:
            raise EngineError(f"copy of {rows} rows does not fit a {self.nbytes}-byte mapped buffer")
        cudart = runtime()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDefault
        source = self.ptr + offset
        call = cudart.cudaMemcpy2DAsync(host.ctypes.data, width, source, pitch, width, rows, kind, stream.handle)
        cuda_call("cudaMemcpy2DAsync", call)

    def free(self) -> None:
        if self.host_ptr:
            self.array = None
            cuda_call("cudaFreeHost", runtime().cudaFreeHost(self.host_ptr))
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


# -- device choice: which GPU an engine, its buffers, streams and kernels live on ---------------------------


def device_count() -> int:
    """The number of CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applies); 0 without a driver."""
    cudart = runtime()
    try:
        return int(cuda_call("cudaGetDeviceCount", cudart.cudaGetDeviceCount()))
    except CudaError:  # no driver or no device
        return 0


def set_device(device: int) -> None:
    """Make ``device`` the calling thread's current device (its primary context, which TensorRT and cuda.core
    use too): allocations, streams, events and launches that follow go to it."""
    cuda_call("cudaSetDevice", runtime().cudaSetDevice(device))


def check_device(device: int) -> DeviceInfo:
    """``device_info`` of ``device``, or a ``DeviceNotFoundError`` naming the devices this process can use."""
    count = device_count()
    if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device < count:
        available = ", ".join(f"{d} ({device_info(d).name})" for d in range(count)) or "none"
        raise DeviceNotFoundError(
            f"there is no CUDA device {device!r}; available devices: {available}. Pick one of them (ids count "
            "the devices CUDA_VISIBLE_DEVICES leaves visible, from 0)"
        )
    return device_info(device)


def current_device() -> int:
    """The calling thread's current CUDA device (``cudaGetDevice``)."""
    return int(cuda_call("cudaGetDevice", runtime().cudaGetDevice()))


def bound_device(device: int | None) -> int:
    """The device an object made now is bound to: ``device``, or for None the calling thread's current one.
    CUDA keeps the current device per thread, so an object used from other threads (a video's detect thread,
    Triton handlers, Ray actors) must remember it and ``activate`` it at every entry point."""
    return current_device() if device is None else device


def activate(device: int | None) -> None:
    """``set_device(device)``, unless ``device`` is None (the thread's current device is then used as it is).
    CUDA keeps the current device per thread, so every entry point of an object bound to a device calls this."""
    if device is not None:
        set_device(device)


class DeviceNotFoundError(ConfigError):
    """A CUDA device id that does not exist here was asked for."""


# -- CUDA graphs of a longer sequence (kernels and TensorRT enqueues) -----------------------------------------


class GraphCaptureError(EngineError):
    """Stream capture of a sequence failed (e.g. a call that cannot be captured); the stream is usable."""


class Graph:
    """The work a callable enqueues on a stream, captured once as a CUDA graph and replayed with one launch.
    The replay uses the kernel arguments and addresses of the capture (the memory they point to may change)."""

    def __init__(self, graph: Any, executable: Any) -> None:
        self._graph, self._executable = graph, executable

    @classmethod
    def capture(cls, stream: Stream, enqueue: Callable[[], Any]) -> Graph:
        """Capture ``enqueue()`` on ``stream`` (nothing runs); ``GraphCaptureError`` if it cannot be captured.
        The capture is always ended, so the stream stays usable whatever happened."""
        cudart = runtime()
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            cuda_call("cudaStreamBeginCapture", cudart.cudaStreamBeginCapture(stream.handle, mode))
        except CudaError as exc:
            cudart.cudaGetLastError()
            raise GraphCaptureError(f"CUDA graph capture failed: {exc}") from None
        failure = None
        try:
            enqueue()
        except Exception as exc:  # TensorRT and cuda.core raise their own types
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            error, graph = cudart.cudaStreamEndCapture(stream.handle)
        if failure is None and error != cudart.cudaError_t.cudaSuccess:
            failure = f"cudaStreamEndCapture: {error}"
        if failure is not None:
            cudart.cudaGetLastError()  # clear the capture error
            if error == cudart.cudaError_t.cudaSuccess:
                cudart.cudaGraphDestroy(graph)
            raise GraphCaptureError(f"CUDA graph capture failed: {failure}")
        try:
            return cls(graph, cuda_call("cudaGraphInstantiate", cudart.cudaGraphInstantiate(graph, 0)))
        except CudaError as exc:
            cudart.cudaGraphDestroy(graph)
            raise GraphCaptureError(f"CUDA graph capture failed: {exc}") from None

    def launch(self, stream: Stream) -> None:
        cuda_call("cudaGraphLaunch", runtime().cudaGraphLaunch(self._executable, stream.handle))

    def free(self) -> None:
        """Destroy the executable and the graph (after the streams that replay it are synchronized)."""
        if self._executable is not None:
            cudart = runtime()
            cuda_call("cudaGraphExecDestroy", cudart.cudaGraphExecDestroy(self._executable))
            cuda_call("cudaGraphDestroy", cudart.cudaGraphDestroy(self._graph))
            self._graph = self._executable = None
