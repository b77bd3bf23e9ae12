"""A CPU stand-in for the GPU, to run the TensorRT backend's own logic (buffers, staging, shapes, chunking,
ordering) without a GPU, and to check every TensorRT runtime attribute it touches against the real
``tensorrt_lean`` bindings.

* ``FakeCuda`` replaces ``simswap_trt.cuda``'s device, stream, event and buffer types with host memory:
  "device pointers" are keys into a registry of numpy arrays, copies are ``np.copyto`` (counted in ``COPIES``);
  mapped buffers register a view of their host array, so the "GPU" reads and writes it in place.
* ``strict_runtime_module`` builds a fake ``tensorrt`` runtime module whose objects only allow attribute
  names that exist on the corresponding class of the real ``tensorrt_lean`` module; a name TensorRT does
  not have raises ``AttributeError``. Its execution context "runs" the plan as ``outputs = fn(inputs)``.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np

from simswap_trt import cuda

DEVICE_MEMORY: dict[int, np.ndarray] = {}
COPIES: list[tuple[str, int]] = []  # ("upload" | "download", bytes) of every host<->device copy
_addresses = itertools.count(0x1000, 0x1000)


class FakeDeviceBuffer:
    def __init__(self, nbytes):
        self.nbytes = nbytes
        self.ptr = next(_addresses)
        DEVICE_MEMORY[self.ptr] = np.zeros(max(nbytes, 1), np.uint8)

    def upload(self, host, stream):
        COPIES.append(("upload", host.nbytes))
        DEVICE_MEMORY[self.ptr][: host.nbytes] = np.frombuffer(np.ascontiguousarray(host).tobytes(), np.uint8)

    def download(self, host, stream):
        COPIES.append(("download", host.nbytes))
        host[...] = np.frombuffer(DEVICE_MEMORY[self.ptr][: host.nbytes].tobytes(), host.dtype).reshape(host.shape)

    def free(self):
        DEVICE_MEMORY.pop(self.ptr, None)


class FakePinnedBuffer:
    def __init__(self, shape, dtype):
        self.array = np.zeros(shape, dtype)

    def free(self):
        self.array = None


class FakeMappedBuffer:
    """Mapped pinned host memory: the "device" address reaches the very bytes of ``array`` (zero copy)."""

    def __init__(self, shape, dtype):
        self.array = np.zeros(shape, dtype)
        self.nbytes = self.array.nbytes
        self.ptr = next(_addresses)
        DEVICE_MEMORY[self.ptr] = self.array.reshape(-1).view(np.uint8)  # a view, not a copy

    def upload(self, host, stream):
        if not np.shares_memory(host, self.array):
            FakeDeviceBuffer.upload(self, host, stream)

    def download(self, host, stream):
        if not np.shares_memory(host, self.array):
            FakeDeviceBuffer.download(self, host, stream)

    def free(self):
        DEVICE_MEMORY.pop(self.ptr, None)
        self.array = None


class FakeStream:
    handles = itertools.count(1)

    def __init__(self):
        self.handle = next(self.handles)

    def synchronize(self):
        pass

    def free(self):
        pass


class FakeEvent:
    def record(self, stream):
        pass

    def elapsed_ms(self, start):
        return 1.0

    def synchronize(self):
        pass

    def free(self):
        pass


def install_fake_cuda(monkeypatch, compute_capability=(9, 0), name="Fake H100", integrated=False):
    info = cuda.DeviceInfo(name, compute_capability, 80 << 30, 13000, 13000)
    monkeypatch.setattr(cuda, "device_info", lambda device=0: info)
    traits = cuda.MemoryTraits(integrated, True, compute_capability)
    monkeypatch.setattr(cuda, "memory_traits", lambda device=0: traits)
    COPIES.clear()
    for attribute, fake in (
        ("DeviceBuffer", FakeDeviceBuffer),
        ("PinnedBuffer", FakePinnedBuffer),
        ("Stream", FakeStream),
        ("Event", FakeEvent),
        ("MappedBuffer", FakeMappedBuffer),
    ):
        monkeypatch.setattr(cuda, attribute, fake)


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


def strict_runtime_module(lean, io, fn, version="11.4.0.106", calls=None):
    """A fake runtime module. ``io``: [(name, mode 'in'/'out', shape with -1 batch)], all float32;
    ``fn(inputs dict) -> outputs dict`` is what executing the plan computes."""
    calls = calls if calls is not None else []

    class Context(_Strict):
        _real = lean.IExecutionContext

        def __init__(self):
            self._addresses, self._shapes = {}, {}

        def set_tensor_address(self, name, ptr):
            self._addresses[name] = ptr
            return True

        def set_input_shape(self, name, shape):
            self._shapes[name] = tuple(shape)
            calls.append(("set_input_shape", name, tuple(shape)))
            return True

        def execute_async_v3(self, stream_handle):
            n = next(iter(self._shapes.values()))[0]
            inputs = {}
            for name, mode, shape in io:
                if mode == "in":
                    count = int(np.prod((n, *shape[1:])))
                    data = DEVICE_MEMORY[self._addresses[name]][: count * 4]
                    inputs[name] = np.frombuffer(data.tobytes(), np.float32).reshape((n, *shape[1:]))
            for name, value in fn(inputs).items():
                raw = np.ascontiguousarray(value, np.float32).tobytes()
                DEVICE_MEMORY[self._addresses[name]][: len(raw)] = np.frombuffer(raw, np.uint8)
            calls.append(("execute", n))
            return True

    class Engine(_Strict):
        _real = lean.ICudaEngine
        num_io_tensors = len(io)

        def get_tensor_name(self, i):
            return io[i][0]

        def get_tensor_shape(self, name):
            return next(s for n, _, s in io if n == name)

        def get_tensor_dtype(self, name):
            return lean.DataType.FLOAT

        def get_tensor_mode(self, name):
            mode = next(m for n, m, _ in io if n == name)
            return lean.TensorIOMode.INPUT if mode == "in" else lean.TensorIOMode.OUTPUT

        def create_execution_context(self):
            return Context()

    class Runtime(_Strict):
        _real = lean.Runtime

        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            calls.append(("deserialize", len(data)))
            return Engine()

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
        nptype=lean.nptype,
        calls=calls,
    )
