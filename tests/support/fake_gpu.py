"""A CPU stand-in for the GPU, to run the runtime's device code (buffers, staging, streams, events, kernel
launches, TensorRT calls) without a GPU, and to check every TensorRT runtime attribute it touches against
the real ``tensorrt_lean`` bindings.

* Memory: device buffers are NumPy arrays whose *real host addresses* are the "device pointers", so the
  host build of the kernels (tests/support/kernel_build.py ``host``) runs on them unchanged, pointer tables included.
  Every access through a device address is bounds-checked against the live allocations, and addresses
  of pinned host memory are refused where device memory is expected.
* Streams execute asynchronously and out of order: work is queued, and runs only when the host waits
  (stream or event synchronize). Then only the work the wait needs runs, and among the streams that may
  run, the most recently enqueued work runs first. So work that is not ordered by an event wait really
  does run before its producer, and a missing ``stream.wait(event)`` or host synchronize fails a test.
* Copies are counted in ``COPIES`` (and what each upload carried, as it ran, in ``UPLOADED``); mapped buffers
  (integrated GPUs) register their host array itself as device memory, so the "GPU" reads and writes it in
  place and copies of its own views are no-ops.
* Kernels: ``launch`` is replaced by a queued call of the host build with the same argument packing
  (the host functions take the face or frame count that the device reads from ``gridDim.z``); launch
  grids must cover the crop and the regions.
* Guard mode (``install_fake_cuda(guard=True)``): device memory lies in pages of its own that the host
  cannot access (PROT_NONE) except while device work or a synchronous copy runs, so a host read or write of
  device memory outside copies crashes the process, as it faults on a discrete GPU.
* Strict where CUDA is: while a thread captures a stream, allocation, synchronization, frees and copies of
  pageable host memory on the capturing stream fail (``cudaErrorStreamCaptureUnsupported``) and invalidate
  the capture; the current device is per thread (a new thread starts on device 0); device and pinned
  allocations are 256-byte aligned; event timing needs two events created with timing whose records ran;
  captured graphs and their executables are live until destroyed.
* TensorRT: ``strict_runtime_module`` builds a fake ``tensorrt`` runtime module whose objects only allow
  attribute names that exist on the corresponding class of the real ``tensorrt_lean`` module. Its
  execution context "runs" the plan as ``outputs = fn(inputs)`` (e.g. ONNX Runtime), queued on the stream
  it is enqueued on, reading and writing the bound device addresses.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import mmap
import threading
from types import SimpleNamespace

import numpy as np

from simswap_trt import cuda
from simswap_trt import kernels as kernels_module
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import MemoryTraits
from simswap_trt.kernels import BLOCK


class FakeGpu:
    """Memory, streams and the out-of-order scheduler of one test."""

    def __init__(self) -> None:
        self.allocations: dict[int, np.ndarray] = {}  # device address -> bytes
        self.pinned: dict[int, np.ndarray] = {}
        self.streams: dict[int, FakeStream] = {}
        self.live: set = set()  # every buffer, stream and event not yet freed
        self.sequence = itertools.count()
        self.executed: list[str] = []
        self.names = ["Fake H100"]  # one per device
        self._thread = threading.local()  # the current device, per thread as in CUDA
        self.capturing: dict[int, FakeStream] = {}  # thread id -> the stream it captures
        self.device_of: dict[int, int] = {}  # device address -> the device it was allocated on
        self.memory = 80 << 30  # bytes of each device
        self.graphs: dict[int, list] = {}  # captured graphs: id -> the work captured
        self.guarded: dict[int, int] = {}  # guard mode: device allocation address -> its page-rounded length
        self._open = 0  # device work (or a synchronous copy) running now: guarded memory is accessible

    # -- guard mode: device memory the host cannot touch ----------------------------------------------------
    def allocate(self, nbytes: int) -> np.ndarray:
        """``nbytes`` of device memory: 256-byte aligned host bytes, or in guard mode pages of their own that
        are inaccessible (PROT_NONE) except while device work or a synchronous copy runs, so that a host read
        or write of device memory outside copies crashes (SIGSEGV) instead of passing."""
        if not hasattr(self, "guard_pages"):
            return aligned_bytes(nbytes)
        length = -(-max(nbytes, 1) // mmap.PAGESIZE) * mmap.PAGESIZE
        pages = mmap.mmap(-1, length)
        memory = np.frombuffer(pages, np.uint8)[: max(nbytes, 1)]
        self.guarded[memory.ctypes.data] = length
        self.guard_pages.append(pages)  # kept mapped: numpy views of it may outlive the allocation
        self._protect(memory.ctypes.data, length, self._open == 0)
        return memory

    def _protect(self, address: int, length: int, closed: bool) -> None:
        prot = 0 if closed else mmap.PROT_READ | mmap.PROT_WRITE  # 0: PROT_NONE
        assert LIBC.mprotect(ctypes.c_void_p(address), ctypes.c_size_t(length), prot) == 0, "mprotect failed"

    def device_access(self, run) -> None:
        """Run ``run`` (device work, a synchronous copy) with device memory accessible."""
        if self._open == 0:
            for address, length in self.guarded.items():
                self._protect(address, length, False)
        self._open += 1
        try:
            run()
        finally:
            self._open -= 1
            if self._open == 0:
                for address, length in self.guarded.items():
                    self._protect(address, length, True)

    def release(self, address: int) -> None:
        """A freed device allocation stops being guarded (its pages become ordinary memory again)."""
        length = self.guarded.pop(address, None)
        if length is not None:
            self._protect(address, length, False)

    # -- memory -------------------------------------------------------------------------------------------
    def view(self, address: int, nbytes: int) -> np.ndarray:
        """The bytes [address, address + nbytes) of one live device allocation."""
        for base, memory in self.allocations.items():
            if base <= address and address + nbytes <= base + memory.size:
                return memory[address - base : address - base + nbytes]
        where = "pinned host memory" if any(b <= address < b + m.size for b, m in self.pinned.items()) else "nothing"
        raise AssertionError(f"device access of {nbytes} bytes at {address:#x} is outside device memory ({where})")

    @property
    def current(self) -> int:
        """The calling thread's current device: 0 until the thread sets another, as in CUDA."""
        return getattr(self._thread, "device", 0)

    @current.setter
    def current(self, device: int) -> None:
        self._thread.device = device

    def refuse_under_capture(self, call: str) -> None:
        """What CUDA refuses while the calling thread captures a stream: the call fails and the capture is
        invalidated (its end then fails too)."""
        stream = self.capturing.get(threading.get_ident())
        if stream is not None:
            stream.capture_invalidated = True
            raise cuda.CudaError(call, "cudaErrorStreamCaptureUnsupported", 900)

    def is_pinned(self, host: np.ndarray) -> bool:
        """Whether ``host`` lies in page-locked (pinned or mapped) host memory."""
        start, end = host.ctypes.data, host.ctypes.data + host.nbytes
        return any(b <= start and end <= b + m.size for b, m in self.pinned.items())

    def copy_check(self, host: np.ndarray, stream) -> None:
        """A copy of pageable host memory cannot be captured: it is synchronous for the host."""
        if stream.capture is not None and not self.is_pinned(host):
            stream.capture_invalidated = True
            raise cuda.CudaError("cudaMemcpyAsync", "cudaErrorStreamCaptureUnsupported", 900)

    # -- devices ------------------------------------------------------------------------------------------
    def set_device(self, device: int) -> None:
        if not 0 <= device < len(self.names):
            raise cuda.CudaError("cudaSetDevice", "cudaErrorInvalidDevice", 101)
        self.current = device

    def device_at(self, address: int) -> int:
        """The device of the live allocation holding ``address``."""
        for base, memory in self.allocations.items():
            if base <= address < base + memory.size:
                return self.device_of[base]
        raise AssertionError(f"{address:#x} is not device memory")

    def check_on(self, stream_handle: int, addresses) -> None:
        """A kernel (or plan) runs on its stream's device, which must be current, on memory of that device."""
        device = self.streams[stream_handle].device
        assert device == self.current, f"launch on a stream of device {device} while device {self.current} is current"
        for address in addresses:
            where = self.device_at(address)
            assert where == device, f"device {device} reads {address:#x}, memory of device {where}"

    # -- scheduling ---------------------------------------------------------------------------------------
    def enqueue(self, handle: int, kind: str, run=None, event=None) -> None:
        stream = self.streams[handle]
        assert stream.alive, "work enqueued on a destroyed stream"
        if stream.capture is not None:  # recorded into a graph instead of running
            stream.capture.append((kind, run))
        else:
            stream.ops.append(Op(next(self.sequence), kind, run, event))

    def run_until(self, done, needed: set) -> None:
        """Execute queued work until ``done()``; only streams in ``needed`` (and those they wait on) run,
        latest-enqueued work first."""
        needed = set(needed)
        while not done():
            runnable, grown = [], len(needed)
            for handle in list(needed):
                stream = self.streams[handle]
                if not stream.ops:
                    continue
                op = stream.ops[0]
                if op.kind == "wait" and not op.event.reached(op.target):
                    needed.add(op.event.pending_on)
                    continue
                runnable.append((op.sequence, stream))
            if not runnable:
                if len(needed) > grown:
                    continue  # a stream we wait on joined: look again
                queued = {h: [op.kind for op in self.streams[h].ops] for h in needed}
                raise AssertionError(f"deadlock: the work waited for can never run: {queued}")
            _, stream = max(runnable, key=lambda item: item[0])
            op = stream.ops.pop(0)
            if op.run is not None:
                self.device_access(op.run)
            self.executed.append(op.kind)


def aligned_bytes(nbytes: int, alignment: int = 256) -> np.ndarray:
    """``nbytes`` zeroed bytes starting at a multiple of ``alignment`` (as cudaMalloc and cudaMallocHost give)."""
    raw = np.zeros(max(nbytes, 1) + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + max(nbytes, 1)]


LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class Op:
    def __init__(self, sequence, kind, run, event):
        self.sequence, self.kind, self.run, self.event = sequence, kind, run, event
        self.target = event.recorded if event is not None else 0


GPU = FakeGpu()
COPIES: list[tuple[str, int]] = []  # ("upload" | "download", bytes) of every host<->device copy enqueued
UPLOADED: list[bytes] = []  # the bytes of every upload, when it ran


class FakeStream:
    handles = itertools.count(1)

    def __init__(self):
        self.handle, self.ops, self.alive, self.capture = next(self.handles), [], True, None
        self.capture_invalidated = False
        self.device = GPU.current
        GPU.streams[self.handle] = self
        GPU.live.add(self)

    @classmethod
    def wrap(cls, handle):
        return GPU.streams[handle]

    def synchronize(self):
        GPU.refuse_under_capture("cudaStreamSynchronize")
        GPU.run_until(lambda: not self.ops, {self.handle})

    def wait(self, event):
        GPU.enqueue(self.handle, "wait", event=event)

    def free(self):
        if self.alive:
            self.synchronize()
            self.alive = False
            GPU.live.discard(self)


class FakeEvent:
    def __init__(self, timing=True):
        self.recorded = self.completed = 0  # records enqueued / executed
        self.pending_on = None  # stream of the latest record
        self.timing = timing
        GPU.live.add(self)

    def reached(self, target):
        return self.completed >= target

    def record(self, stream):
        self.recorded += 1
        self.pending_on, number = stream.handle, self.recorded
        GPU.enqueue(stream.handle, "record", run=lambda: setattr(self, "completed", number))

    def synchronize(self):
        GPU.refuse_under_capture("cudaEventSynchronize")
        target = self.recorded
        GPU.run_until(lambda: self.completed >= target, {self.pending_on} if self.pending_on else set())

    def elapsed_ms(self, start):
        """1.0, where CUDA can time: both events created with timing, both records executed."""
        if not (self.timing and start.timing) or not (self.recorded and start.recorded):
            raise cuda.CudaError("cudaEventElapsedTime", "cudaErrorInvalidResourceHandle", 400)
        if self.completed < self.recorded or start.completed < start.recorded:
            raise cuda.CudaError("cudaEventElapsedTime", "cudaErrorNotReady", 600)
        return 1.0

    def free(self):
        GPU.live.discard(self)


class FakeDeviceBuffer:
    def __init__(self, nbytes):
        GPU.refuse_under_capture("cudaMalloc")
        if nbytes > GPU.memory:  # as cudaMalloc refuses more than the device has
            raise cuda.CudaOutOfMemory("cudaMalloc", "cudaErrorMemoryAllocation", 2)
        self.nbytes = nbytes
        memory = GPU.allocate(nbytes)
        self.ptr = memory.ctypes.data
        GPU.allocations[self.ptr] = memory
        GPU.device_of[self.ptr] = self.device = GPU.current
        GPU.live.add(self)

    def upload(self, host, stream, offset=0):
        assert offset + host.nbytes <= self.nbytes
        GPU.copy_check(host, stream)
        COPIES.append(("upload", host.nbytes))
        ptr = self.ptr

        def copy():  # reads the host memory when it executes, as a DMA does
            data = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
            GPU.view(ptr + offset, host.nbytes)[:] = data
            UPLOADED.append(data.tobytes())

        GPU.enqueue(stream.handle, "upload", copy)

    def download(self, host, stream, offset=0):
        assert offset + host.nbytes <= self.nbytes
        GPU.copy_check(host, stream)
        COPIES.append(("download", host.nbytes))
        ptr = self.ptr

        def copy():
            host.reshape(-1).view(np.uint8)[:] = GPU.view(ptr + offset, host.nbytes)

        GPU.enqueue(stream.handle, "download", copy)

    def download_rows(self, host, stream, offset, pitch):
        GPU.copy_check(host, stream)
        COPIES.append(("download", host.nbytes))
        ptr, rows, width = self.ptr, host.shape[0], host[0].nbytes if host.shape[0] else 0

        def copy():
            flat = host.reshape(rows, -1).view(np.uint8)
            for r in range(rows):
                flat[r] = GPU.view(ptr + offset + r * pitch, width)

        GPU.enqueue(stream.handle, "download", copy)

    @classmethod
    def from_array(cls, array):  # a synchronous copy
        array = np.ascontiguousarray(array)
        buffer = cls(array.nbytes)

        def copy():
            GPU.view(buffer.ptr, array.nbytes)[:] = array.reshape(-1).view(np.uint8)

        GPU.device_access(copy)
        return buffer

    def to_array(self, like):  # a synchronous copy
        out = np.empty_like(like)

        def copy():
            out.reshape(-1).view(np.uint8)[:] = GPU.view(self.ptr, like.nbytes)

        GPU.device_access(copy)
        return out

    def free(self):
        if self.ptr:
            GPU.refuse_under_capture("cudaFree")
            GPU.release(self.ptr)
            GPU.allocations.pop(self.ptr)
            GPU.live.discard(self)
            self.ptr = 0


class FakePinnedBuffer:
    def __init__(self, shape, dtype):
        GPU.refuse_under_capture("cudaMallocHost")
        dtype = np.dtype(dtype)
        memory = aligned_bytes(int(np.prod(shape)) * dtype.itemsize)
        self.array = memory[: int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
        GPU.pinned[memory.ctypes.data] = memory
        GPU.live.add(self)

    def free(self):
        if self.array is not None:
            GPU.refuse_under_capture("cudaFreeHost")
            GPU.pinned.pop(self.array.ctypes.data)
            GPU.live.discard(self)
            self.array = None


class FakeMappedBuffer:
    """Mapped pinned host memory: the "device" address is that of ``array`` itself (zero copy)."""

    def __init__(self, shape, dtype):
        GPU.refuse_under_capture("cudaHostAlloc")
        dtype = np.dtype(dtype)
        memory = aligned_bytes(int(np.prod(shape)) * dtype.itemsize)
        self.array = memory[: int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
        self.nbytes = self.array.nbytes
        self.ptr = memory.ctypes.data
        GPU.allocations[self.ptr] = memory  # the host array's own bytes
        GPU.pinned[self.ptr] = memory
        GPU.device_of[self.ptr] = self.device = GPU.current
        GPU.live.add(self)

    def upload(self, host, stream, offset=0):
        if not np.shares_memory(host, self.array):
            FakeDeviceBuffer.upload(self, host, stream, offset)

    def download(self, host, stream, offset=0):
        if not np.shares_memory(host, self.array):
            FakeDeviceBuffer.download(self, host, stream, offset)

    def download_rows(self, host, stream, offset, pitch):
        FakeDeviceBuffer.download_rows(self, host, stream, offset, pitch)

    def free(self):
        if self.array is not None:
            GPU.refuse_under_capture("cudaFreeHost")
            GPU.allocations.pop(self.ptr)
            GPU.pinned.pop(self.ptr)
            GPU.live.discard(self)
            self.array = None


def fake_launch(host_lib):
    """``simswap_trt.kernels.launch`` on the stand-in: the host build, queued on the stream."""

    def launch(stream, kernel, grid, args):
        if kernel == "simswap_letterbox_kernel":
            return fake_letterbox_launch(host_lib, stream, grid, args)
        values = [int(a) for a in args]
        if kernel == "simswap_parsing_blend_kernel":
            return launch_parsing_blend(host_lib, stream, grid, values)
        if kernel in ("simswap_parser_input_kernel", "simswap_parser_labels_kernel"):
            return launch_parser_kernel(host_lib, stream, kernel, grid, values)
        if kernel == "simswap_enhancer_input_kernel":
            return launch_enhancer_input(host_lib, stream, grid, args)
        if kernel == "simswap_enhance_blend_kernel":
            return launch_enhance_blend(host_lib, stream, grid, args)
        if kernel == "simswap_preprocess_kernel":
            size = values[6]
            assert grid[0] * BLOCK[0] >= size and grid[1] * BLOCK[1] >= size, f"grid {grid} misses crop {size}"
            GPU.check_on(stream, values[:6] + values[8:])  # device memory of the stream's device
            function, count_at, types = host_lib.simswap_preprocess_host, 6, "pppppp" + "ii" + "p"
        else:
            GPU.check_on(stream, values[:5] + values[7:])
            function, count_at, types = host_lib.simswap_pasteback_host, 2, "ppppp" + "ii" + "pppp"
        converted = [ctypes.c_void_p(v) if t == "p" else ctypes.c_int(v) for v, t in zip(values, types, strict=True)]
        converted.insert(count_at, ctypes.c_int(grid[2]))

        def run():
            if kernel == "simswap_pasteback_kernel":  # the regions the kernel reads when it runs
                union = GPU.view(values[2], grid[2] * 16).view(np.int32).reshape(-1, 4)
                extent = union[:, 2:] - union[:, :2]
                assert (grid[0] * BLOCK[0] >= extent[:, 0]).all() and (grid[1] * BLOCK[1] >= extent[:, 1]).all()
            function(*converted)

        GPU.enqueue(stream, kernel, run)

    return launch


def fake_letterbox_launch(host_lib, stream, grid, args):
    """The letterbox kernel on the stand-in: the grid must cover the canvas, one layer per frame; every
    table and the output are memory of the stream's device, which must be current."""
    frames, pitches, widths, heights, resized, scales, canvas, swap_rb, mean, scale, half, out = args
    assert grid[0] * BLOCK[0] >= int(canvas) and grid[1] * BLOCK[1] >= int(canvas), f"grid {grid} misses {canvas}"
    GPU.check_on(stream, [int(a) for a in (frames, pitches, widths, heights, resized, scales, out)])
    pointers = [ctypes.c_void_p(int(a)) for a in (frames, pitches, widths, heights, resized, scales)]
    converted = [
        *pointers,
        ctypes.c_int(grid[2]),
        ctypes.c_int(int(canvas)),
        ctypes.c_int(int(swap_rb)),
        ctypes.c_float(float(mean)),
        ctypes.c_float(float(scale)),
        ctypes.c_int(int(half)),
        ctypes.c_void_p(int(out)),
    ]
    host_lib.simswap_letterbox_host.restype = None
    GPU.enqueue(stream, "simswap_letterbox_kernel", lambda: host_lib.simswap_letterbox_host(*converted))


def launch_parsing_blend(host_lib, stream, grid, values):
    """The parsing-blend kernel on the stand-in: the host build over the ``grid[2]`` masked faces."""
    size = values[6]
    assert grid[0] * BLOCK[0] >= size and grid[1] * BLOCK[1] >= size, f"grid {grid} misses crop {size}"
    GPU.check_on(stream, [values[0], values[2], values[4], values[5]])
    types = "pipipp" + "i"
    converted = [ctypes.c_void_p(v) if t == "p" else ctypes.c_int(v) for v, t in zip(values, types, strict=True)]
    converted.insert(6, ctypes.c_int(grid[2]))
    GPU.enqueue(stream, "simswap_parsing_blend_kernel", lambda: host_lib.simswap_parsing_blend_host(*converted))


def launch_parser_kernel(host_lib, stream, kernel, grid, values):
    """The face parser's input and labels kernels on the stand-in: the host build over ``grid[2]`` faces."""
    assert grid[0] * BLOCK[0] >= 512 and grid[1] * BLOCK[1] >= 512, f"grid {grid} misses the 512 parser map"
    if kernel == "simswap_parser_input_kernel":  # targets, half, size, out
        GPU.check_on(stream, [values[0], values[3]])
        function = host_lib.simswap_parser_input_host
        converted = [ctypes.c_void_p(values[0]), ctypes.c_int(values[1]), ctypes.c_int(grid[2])]
        converted += [ctypes.c_int(values[2]), ctypes.c_void_p(values[3])]
    else:  # logits, labels
        GPU.check_on(stream, values)
        function = host_lib.simswap_parser_labels_host
        converted = [ctypes.c_void_p(values[0]), ctypes.c_int(grid[2]), ctypes.c_void_p(values[1])]
    GPU.enqueue(stream, kernel, lambda: function(*converted))


def launch_enhancer_input(host_lib, stream, grid, args):
    """The enhancer-input kernel on the stand-in: the grid must cover the enhancer crop, one layer per face;
    every table, the generator output and the output are memory of the stream's device."""
    *tables, swapped, half_in, swap_size, size, half_out, out = (a.item() for a in args)
    assert grid[0] * BLOCK[0] >= size and grid[1] * BLOCK[1] >= size, f"grid {grid} misses crop {size}"
    GPU.check_on(stream, [*tables, swapped, out])
    converted = [ctypes.c_void_p(t) for t in tables] + [ctypes.c_void_p(swapped), ctypes.c_int(half_in)]
    converted += [ctypes.c_int(swap_size), ctypes.c_int(grid[2]), ctypes.c_int(size), ctypes.c_int(half_out)]
    converted += [ctypes.c_void_p(out)]
    host_lib.simswap_enhancer_input_host.restype = None
    GPU.enqueue(stream, "simswap_enhancer_input_kernel", lambda: host_lib.simswap_enhancer_input_host(*converted))


def launch_enhance_blend(host_lib, stream, grid, args):
    """The enhancer blend on the stand-in: the one-dimensional grid must cover every value."""
    enhanced, half_out, inputs, half_in, blend, count = (a.item() for a in args)
    assert grid[0] * BLOCK[0] * BLOCK[1] >= count and grid[1:] == (1, 1), f"grid {grid} misses {count} values"
    GPU.check_on(stream, [enhanced, inputs])
    converted = [ctypes.c_void_p(enhanced), ctypes.c_int(half_out), ctypes.c_void_p(inputs), ctypes.c_int(half_in)]
    converted += [ctypes.c_float(blend), ctypes.c_longlong(count)]
    host_lib.simswap_enhance_blend_host.restype = None
    GPU.enqueue(stream, "simswap_enhance_blend_kernel", lambda: host_lib.simswap_enhance_blend_host(*converted))


CudaErrors = enum.IntEnum(
    "cudaError_t",
    {
        "cudaSuccess": 0,
        "cudaErrorInvalidValue": 1,
        "cudaErrorMemoryAllocation": 2,
        "cudaErrorStreamCaptureUnsupported": 900,
        "cudaErrorStreamCaptureInvalidated": 901,
    },
)


def fake_cudart(calls, instantiate_error=None):
    """The ``cuda.bindings.runtime`` calls of graph capture and replay, on the stand-in: a captured graph
    is the list of work enqueued during the capture, replayed by ``cudaGraphLaunch``. A capture that a
    refused call invalidated ends with ``cudaErrorStreamCaptureInvalidated``; ``instantiate_error`` (a
    ``CudaErrors`` member) makes every ``cudaGraphInstantiate`` fail with it. Graphs and executables are
    in ``GPU.live`` until destroyed."""
    success = CudaErrors.cudaSuccess

    def begin_capture(handle, mode):
        stream = GPU.streams[handle]
        stream.capture, stream.capture_invalidated = [], False
        GPU.capturing[threading.get_ident()] = stream
        return (success,)

    def end_capture(handle):
        stream = GPU.streams[handle]
        GPU.capturing.pop(threading.get_ident(), None)
        work, stream.capture = stream.capture, None
        calls.append(("end capture", handle))
        if stream.capture_invalidated:
            return CudaErrors.cudaErrorStreamCaptureInvalidated, None
        graph = len(GPU.graphs) + 1
        GPU.graphs[graph] = work
        GPU.live.add(("graph", graph))
        return success, graph

    def instantiate(graph, flags):
        if instantiate_error is not None:
            return instantiate_error, None
        GPU.live.add(("executable", graph))
        return success, graph

    def launch(executable, handle):
        assert ("executable", executable) in GPU.live, f"launch of executable {executable}, not live"
        calls.append(("graph launch", executable))
        for kind, run in GPU.graphs[executable]:
            GPU.enqueue(handle, kind, run)
        return (success,)

    def destroy(name, kind):
        def call(handle):
            assert (kind, handle) in GPU.live, f"{name} of {kind} {handle}, not live"
            GPU.live.discard((kind, handle))
            calls.append((name, handle))
            return (success,)

        return call

    return SimpleNamespace(
        cudaError_t=CudaErrors,
        cudaGetErrorName=lambda error: (success, CudaErrors(error).name.encode()),
        cudaStreamCaptureMode=SimpleNamespace(cudaStreamCaptureModeThreadLocal=0),
        cudaStreamBeginCapture=begin_capture,
        cudaStreamEndCapture=end_capture,
        cudaGraphInstantiate=instantiate,
        cudaGraphLaunch=launch,
        cudaGraphExecDestroy=destroy("cudaGraphExecDestroy", "executable"),
        cudaGraphDestroy=destroy("cudaGraphDestroy", "graph"),
        cudaGetLastError=lambda: (success,),
    )


def install_fake_cuda(
    monkeypatch,
    compute_capability=(9, 0),
    name="Fake H100",
    host_lib=None,
    integrated=False,
    devices=1,
    guard=False,
):
    """Replace ``simswap_trt.cuda``'s types (and, with ``host_lib``, the kernels) by the stand-in, on
    ``devices`` discrete or ``integrated`` GPUs of one model; returns the fresh ``FakeGpu``. ``guard``:
    device memory is inaccessible to the host outside device work and copies (see ``FakeGpu.allocate``)."""
    global GPU
    GPU = FakeGpu()
    if guard:
        GPU.guard_pages = []
    GPU.names = [name] * devices
    COPIES.clear()
    UPLOADED.clear()
    info = cuda.DeviceInfo(name, compute_capability, 80 << 30, 13000, 13000)

    def device_info(device=0):
        if not 0 <= device < devices:
            raise cuda.CudaError("cudaGetDeviceProperties", "cudaErrorInvalidDevice", 101)
        return info

    monkeypatch.setattr(cuda, "device_info", device_info)
    monkeypatch.setattr(cuda, "device_count", lambda: devices)
    monkeypatch.setattr(cuda, "set_device", lambda device: GPU.set_device(device))
    monkeypatch.setattr(cuda, "current_device", lambda: GPU.current)
    traits = MemoryTraits(integrated, True, compute_capability)
    monkeypatch.setattr(cuda_memory, "memory_traits", lambda device=0: traits)
    for module, attribute, fake in (
        (cuda_memory, "DeviceBuffer", FakeDeviceBuffer),
        (cuda_memory, "PinnedBuffer", FakePinnedBuffer),
        (cuda_memory, "MappedBuffer", FakeMappedBuffer),
        (cuda, "Stream", FakeStream),
        (cuda, "Event", FakeEvent),
    ):
        monkeypatch.setattr(module, attribute, fake)
    if host_lib is not None:
        names = {name: name for name in kernels_module.KERNEL_NAMES}
        GPU.kernel_devices = []  # the device each load of the kernels was for

        def load_device_kernels(device=None):
            GPU.kernel_devices.append(GPU.current if device is None else device)
            return names

        monkeypatch.setattr(kernels_module, "load_device_kernels", load_device_kernels)
        monkeypatch.setattr(kernels_module, "launch", fake_launch(host_lib))
    return GPU


class _Strict:
    """Allows only public attributes that the real TensorRT class ``_real`` has."""

    _real: type = object

    def __getattribute__(self, name):
        real = object.__getattribute__(self, "_real")
        if not name.startswith("_") and not hasattr(real, name):
            raise AttributeError(f"tensorrt_lean.{real.__name__} has no attribute {name!r}")
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        real = object.__getattribute__(self, "_real")
        if not name.startswith("_") and not hasattr(real, name):
            raise AttributeError(f"tensorrt_lean.{real.__name__} has no attribute {name!r}")
        object.__setattr__(self, name, value)


def strict_runtime_module(
    lean,
    io,
    fn,
    version="11.4.0.106",
    calls=None,
    batch_range=(1, 1 << 30),
    plans=None,
    contexts=None,
    activation=0,
    dla_cores=0,
):
    """A fake runtime module. ``io``: [(name, mode 'in'/'out', shape with -1 batch[, dtype])], float32
    unless a dtype ("float16") is given; ``fn(inputs dict) -> outputs dict`` is what executing the plan
    computes. ``plans`` maps serialized plan bytes to their own ``(io, fn)`` (several models); others get
    ``io`` and ``fn``. ``set_input_shape`` returns False for batches outside ``batch_range`` (the plan's
    profile), as TensorRT does; ``contexts``: how many execution contexts can be created before
    ``create_execution_context`` returns None (out of memory), unlimited by default; ``activation``: the
    plan's ``device_memory_size_v2`` (bytes each context holds for its activations); ``dla_cores``: the
    runtime's ``num_DLA_cores`` (none on a discrete GPU).

    Strict where TensorRT is: ``set_tensor_address`` returns False for an address that is not 256-byte
    aligned and refuses host memory; a context may not be enqueued on a second stream while a run on
    another is unfinished, nor may two contexts sharing ``USER_MANAGED`` activation memory; a graph captured
    with a context replays only while none of the context's shapes and addresses changed since the capture;
    a ``DLA_core`` the runtime does not have makes deserialization fail."""
    calls = calls if calls is not None else []
    plans = plans or {}
    left = [contexts if contexts is not None else 1 << 62]
    sharing: dict[int, list] = {}  # activation memory address -> [stream handle, done] of its latest run

    def dtype_of(entry):
        return np.dtype(entry[3] if len(entry) > 3 else "float32")

    class Context(_Strict):
        _real = lean.IExecutionContext

        def __init__(self, io, fn, user_managed=False):
            self._addresses, self._shapes, self._io, self._fn = {}, {}, io, fn
            self._generation = 0  # counts changes of shapes and addresses
            self._running: list = []  # [stream handle, done] of the latest eager run
            self._user_managed, self._memory = user_managed, None  # activation memory the caller gives

        def set_device_memory(self, memory, size):
            assert self._user_managed, "set_device_memory on a context that allocated its own memory"
            assert memory % 256 == 0 and size >= activation, f"activation memory {memory:#x} of {size} bytes"
            GPU.view(memory, max(size, 1))  # live device memory of that size
            self._memory = memory

        def set_tensor_address(self, name, ptr):
            calls.append(("set_tensor_address", name))
            if ptr % 256:
                return False  # TensorRT logs "address is not aligned" and refuses it
            GPU.device_at(ptr)  # device memory, not host memory
            if self._addresses.get(name) != ptr:
                self._addresses[name] = ptr
                self._generation += 1
            return True

        def set_input_shape(self, name, shape):
            calls.append(("set_input_shape", name, tuple(shape)))
            if not batch_range[0] <= shape[0] <= batch_range[1]:
                return False
            if self._shapes.get(name) != tuple(shape):
                self._shapes[name] = tuple(shape)
                self._generation += 1
            return True

        def execute_async_v3(self, stream_handle):
            n = next(iter(self._shapes.values()))[0]
            addresses, io, fn = dict(self._addresses), self._io, self._fn  # TensorRT reads bindings at enqueue
            GPU.check_on(stream_handle, addresses.values())
            captured = GPU.streams[stream_handle].capture is not None
            assert not self._user_managed or self._memory is not None, "a USER_MANAGED context has no memory"
            if not captured:
                if self._running and not self._running[1] and self._running[0] != stream_handle:
                    raise AssertionError("an execution context was enqueued on two streams at once")
                self._running = running = [stream_handle, False]
            if self._memory is not None and not captured:  # contexts sharing activation memory never run at once
                other = sharing.get(self._memory)
                if other is not None and not other[1] and other[0] != stream_handle:
                    raise AssertionError("two contexts sharing activation memory run on two streams at once")
                sharing[self._memory] = running = [stream_handle, False]
            generation = self._generation

            def execute():
                if captured:
                    assert self._generation == generation, (
                        "a graph was replayed after its execution context's shapes or addresses changed"
                    )
                inputs = {}
                for entry in io:
                    name, mode, shape = entry[:3]
                    if mode == "in":
                        count, dtype = int(np.prod((n, *shape[1:]))), dtype_of(entry)
                        data = GPU.view(addresses[name], count * dtype.itemsize)
                        inputs[name] = data.view(dtype).reshape((n, *shape[1:])).copy()
                dtypes = {entry[0]: dtype_of(entry) for entry in io}
                for name, value in fn(inputs).items():
                    raw = np.ascontiguousarray(value, dtypes[name]).reshape(-1).view(np.uint8)
                    GPU.view(addresses[name], raw.size)[:] = raw
                if not captured:
                    running[1] = True

            GPU.enqueue(stream_handle, "execute", execute)
            calls.append(("execute", n, tuple(entry[0] for entry in io)))
            return True

    class Engine(_Strict):
        _real = lean.ICudaEngine

        def __init__(self, io, fn):
            self._io, self._fn = io, fn

        @property
        def device_memory_size_v2(self):
            return activation

        @property
        def num_io_tensors(self):
            return len(self._io)

        def get_tensor_name(self, i):
            return self._io[i][0]

        def get_tensor_shape(self, name):
            return next(entry[2] for entry in self._io if entry[0] == name)

        def get_tensor_dtype(self, name):
            dtype = next(dtype_of(entry) for entry in self._io if entry[0] == name)
            return lean.DataType.HALF if dtype == np.float16 else lean.DataType.FLOAT

        def get_tensor_mode(self, name):
            mode = next(entry[1] for entry in self._io if entry[0] == name)
            return lean.TensorIOMode.INPUT if mode == "in" else lean.TensorIOMode.OUTPUT

        def create_execution_context(self, strategy=lean.ExecutionContextAllocationStrategy.STATIC):
            if left[0] <= 0:
                return None  # what TensorRT returns when it cannot allocate the context
            left[0] -= 1
            return Context(self._io, self._fn, strategy == lean.ExecutionContextAllocationStrategy.USER_MANAGED)

    class Runtime(_Strict):
        _real = lean.Runtime

        num_DLA_cores = dla_cores

        def __init__(self, logger):
            self.engine_host_code_allowed = False
            self._bad_core = False

        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "DLA_core":
                calls.append(("DLA_core", value))
                # TensorRT logs an error for a core the device does not have; the plan then fails to load
                object.__setattr__(self, "_bad_core", not 0 <= value < self.num_DLA_cores)

        def deserialize_cuda_engine(self, data):
            calls.append(("deserialize", len(data)))
            if self._bad_core:
                return None
            return Engine(*plans.get(bytes(data), (io, fn)))

    class Logger(_Strict):
        _real = lean.Logger
        WARNING = lean.Logger.WARNING

        def __init__(self, severity):
            pass

    return SimpleNamespace(
        __version__=version,
        __name__="tensorrt",
        Runtime=Runtime,
        Logger=Logger,
        TensorIOMode=lean.TensorIOMode,
        ExecutionContextAllocationStrategy=lean.ExecutionContextAllocationStrategy,
        nptype=lean.nptype,
        calls=calls,
    )
