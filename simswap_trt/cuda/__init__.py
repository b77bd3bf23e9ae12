"""A thin CUDA layer over cuda-python's runtime bindings (``cuda.bindings.runtime``): device query and
choice, streams, events and graphs; the memory (device, pinned and mapped buffers) is in ``cuda.memory``.
Every call goes through ``cuda_call``, which turns CUDA error codes into ``CudaError`` with the error's name.

cuda-python (not pycuda): prebuilt wheels for x86_64 and aarch64, the primary context that TensorRT also
uses, and graph capture. Install with ``pip install 'simswap-trt[trt]'`` (cuda-python 13.x needs a CUDA 13
driver; on JetPack 6 / CUDA 12 install cuda-python 12.x).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from simswap_trt.errors import ConfigError, EngineError

log = logging.getLogger(__name__)


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


class GraphCache(Mapping[Any, tuple[Graph, Sequence[Any]]]):
    """Captured graphs by launch signature (``key``), each with what it owns (anything with ``free()``: the
    execution contexts it was captured on), at most ``limit``: the least recently used one is freed first.
    ``run`` replays a signature's graph, or captures one, or runs the work eagerly where no graph can be
    had (a signature whose capture failed keeps running eagerly, without a second try). Maps each key to
    (graph, owners)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._graphs: OrderedDict[Any, tuple[Graph, Sequence[Any]]] = OrderedDict()
        self.failed: set = set()

    def __getitem__(self, key: Any) -> tuple[Graph, Sequence[Any]]:
        return self._graphs[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._graphs)

    def __len__(self) -> int:
        return len(self._graphs)

    def run(
        self,
        key: Any,
        stream: Stream,
        owners: Callable[[], Sequence[Any]],
        enqueue: Callable[[Sequence[Any]], None],
        eager: Callable[[], None],
        what: str,
    ) -> None:
        """The work of ``key`` on ``stream``: its graph replayed; else, for a new key, ``enqueue(owners())``
        once eagerly on new owners (lazy set-up stays outside the capture), then captured with them; else
        (``owners()`` raised ``EngineError``, or the capture failed: logged with ``what``) ``eager()``."""
        if key in self._graphs:
            self._graphs.move_to_end(key)
            self._graphs[key][0].launch(stream)
            return
        made = None
        if key not in self.failed:
            try:
                made = owners()
            except EngineError as exc:
                log.warning("no CUDA graph for %s: %s", what, exc)
        if made is None:
            self.failed.add(key)
            eager()
            return
        enqueue(made)
        try:
            graph = Graph.capture(stream, lambda: enqueue(made))
        except GraphCaptureError as exc:
            self.failed.add(key)
            stream.synchronize()  # the eager run above still uses the owners
            free_all(*[owner.free for owner in made])
            log.info("%s; %s runs without a graph", exc, what)
            return
        self._graphs[key] = graph, made
        if len(self._graphs) > self.limit:
            stream.synchronize()  # the least recently used one may still be replaying
            self._free(*self._graphs.popitem(last=False)[1])

    @staticmethod
    def _free(graph: Graph, owners: Sequence[Any]) -> None:
        free_all(graph.free, *[owner.free for owner in owners])

    def free(self) -> None:
        """Destroy every graph and what it owns (once the streams that replay them are done)."""
        graphs, self._graphs = list(self._graphs.values()), OrderedDict()
        free_all(*[lambda entry=entry: self._free(*entry) for entry in graphs])
