"""TensorRT backend: a bundle's serialized plan on the GPU, with the full ``tensorrt`` or the 44 MB
``tensorrt_lean`` runtime (version-compatible plans only), through the name-based API
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``).

Data path of ``run``: the batch is cut into chunks no larger than the profile maximum; chunks rotate
through ``depth`` slots, each with its own execution context, stream, device buffers and pinned host
buffers, all allocated once at the profile maximum. Chunk k+1 is uploaded and enqueued before chunk k is
downloaded (see ``scheduler.Pipeline``). Optionally each (slot, batch size) is captured as a CUDA graph
after its first run; if capture fails the engine keeps using ``execute_async_v3``.

``submit``/``collect`` expose the same slots across calls (at most ``depth`` tickets in flight), so a video
loop can prepare frame k+1 on the CPU while the GPU works on frame k.

Thread safety: one engine serializes its calls with a lock (the slots are shared). For concurrency,
create one engine per thread; they share nothing but the plan file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from simswap_trt import cuda
from simswap_trt.engines.base import Engine
from simswap_trt.engines.scheduler import Pipeline, chunk_batches
from simswap_trt.errors import BundleError, EngineError
from simswap_trt.plans import PlanEntry, RuntimeInfo, plan_problems, rebuild_command
from simswap_trt.schema import TensorSpec, sha256_of

log = logging.getLogger(__name__)


def import_tensorrt() -> tuple[ModuleType, bool]:
    """The TensorRT Python module and whether it is the lean runtime: ``tensorrt`` if installed, else
    ``tensorrt_lean``."""
    try:
        import tensorrt as trt

        return trt, False
    except ImportError:
        pass
    try:
        import tensorrt_lean as trt

        return trt, True
    except ImportError:
        raise EngineError(
            "TensorRT is not installed: pip install 'simswap-trt[trt-lean]' for the lean runtime (runs "
            "version-compatible plans), or install the full tensorrt package (NVIDIA's index, NGC, JetPack)"
        ) from None


def runtime_info(trt: ModuleType, lean: bool) -> RuntimeInfo:
    device = cuda.device_info()
    return RuntimeInfo(trt.__version__, lean, device.compute_capability, device.name)


def device_pointer(array: Any, spec: TensorSpec, name: str) -> tuple[int, tuple[int, ...]]:
    """Address and shape of a caller-owned GPU array (anything with ``__cuda_array_interface__``: torch,
    CuPy, pycuda, numba), checked against ``spec``: dtype, rank, static dims, C-contiguous."""
    interface = getattr(array, "__cuda_array_interface__", None)
    if interface is None:
        raise EngineError(f"{name}: expected a GPU array with __cuda_array_interface__, got {type(array).__name__}")
    shape = tuple(interface["shape"])
    dtype = np.dtype(interface["typestr"])
    if dtype != np.dtype(spec.dtype):
        raise EngineError(f"{name}: GPU array is {dtype}, the engine wants {spec.dtype}")
    if len(shape) != len(spec.shape) or any(
        isinstance(d, int) and d != s for d, s in zip(spec.shape, shape, strict=True)
    ):
        raise EngineError(f"{name}: GPU array has shape {shape}, the engine wants {spec.shape}")
    strides = interface.get("strides")
    contiguous = tuple(int(np.prod(shape[i + 1 :])) * dtype.itemsize for i in range(len(shape)))
    if strides is not None and tuple(strides) != contiguous:
        raise EngineError(f"{name}: GPU array must be C-contiguous (strides {tuple(strides)})")
    return int(interface["data"][0]), shape


class _Slot:
    """One execution context with its stream, buffers and captured graphs."""

    def __init__(self, engine: Any, inputs, outputs, max_batch: int) -> None:
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda.Stream()
        self.started = cuda.Event()
        self.done = cuda.Event()
        self.device: dict[str, cuda.DeviceBuffer] = {}
        self.host: dict[str, cuda.PinnedBuffer] = {}
        for spec in inputs + outputs:
            shape = (max_batch, *spec.shape[1:])
            self.host[spec.name] = cuda.PinnedBuffer(shape, np.dtype(spec.dtype))
            self.device[spec.name] = cuda.DeviceBuffer(self.host[spec.name].array.nbytes)
            if not self.context.set_tensor_address(spec.name, self.device[spec.name].ptr):
                raise EngineError(f"TensorRT refused the address of tensor {spec.name!r}")
        self.batch = -1
        self.pending = 0  # items enqueued by submit() and not yet collected
        self.graphs: dict[int, Any] = {}
        self.graph_failed: set[int] = set()

    def free(self) -> None:
        for buffer in (*self.device.values(), *self.host.values()):
            buffer.free()
        self.stream.free()
        self.started.free()
        self.done.free()


class TensorRTEngine(Engine):
    """A plan from a bundle on the GPU. Refuses, before deserializing, a plan this machine cannot run or
    whose file does not match the manifest's sha256."""

    def __init__(
        self,
        bundle_root: str | Path,
        entry: PlanEntry,
        onnx_sha256: str | None = None,
        depth: int = 2,
        cuda_graphs: bool = False,
    ) -> None:
        trt, lean = import_tensorrt()
        here = runtime_info(trt, lean)
        problems = plan_problems(entry, here, onnx_sha256)
        if problems:
            raise EngineError(
                f"the {entry.role} TensorRT plan {entry.file} cannot run here:\n  - "
                + "\n  - ".join(problems)
                + f"\nRebuild it on this machine: {rebuild_command(str(bundle_root), entry)}"
            )
        path = Path(bundle_root) / entry.file
        if sha256_of(path) != entry.sha256:
            raise BundleError(f"{path} does not match its manifest sha256; refusing to deserialize a modified plan")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if entry.version_compatible:
            self._runtime.engine_host_code_allowed = True  # trusted: the plan matched the manifest hash
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialize {path} (see the TensorRT log above)")
        self.inputs, self.outputs = self._signature()
        self.max_batch = entry.max_batch
        self.cuda_graphs = cuda_graphs
        self._slots = [_Slot(self._engine, self.inputs, self.outputs, self.max_batch) for _ in range(depth)]
        self._lock = threading.Lock()
        self._tickets = 0  # submitted through submit(); slot = ticket % depth
        self.last_gpu_seconds = 0.0  # event-timed upload + compute + download of the last run, summed over chunks
        self.backend = f"tensorrt{'-lean' if lean else ''} {trt.__version__} [{here.gpu_name}, {entry.precision}]"
        log.info("%s: %s, %d slots, max batch %d", entry.file, self.backend, depth, self.max_batch)

    def _signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        trt, engine = self._trt, self._engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dims = tuple("batch" if d < 0 else int(d) for d in engine.get_tensor_shape(name))
            spec = TensorSpec(name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name, dims)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        return tuple(inputs), tuple(outputs)

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        total = len(next(iter(feeds.values())))
        results = {s.name: np.empty((total, *s.shape[1:]), s.dtype) for s in self.outputs}
        chunks = chunk_batches(total, self.max_batch)

        def submit(slot_index: int, chunk: slice) -> None:
            self._start(self._slots[slot_index], {name: feeds[name][chunk] for name in feeds})

        def collect(slot_index: int, chunk: slice) -> None:
            slot = self._slots[slot_index]
            slot.done.synchronize()
            gpu_ms.append(slot.done.elapsed_ms(slot.started))
            for spec in self.outputs:
                results[spec.name][chunk] = slot.host[spec.name].array[: chunk.stop - chunk.start]
            slot.pending = 0

        gpu_ms: list[float] = []
        with self._lock:
            self._check_idle()
            for _ in Pipeline(len(self._slots), submit, collect).run(chunks):
                pass
        self.last_gpu_seconds = sum(gpu_ms) / 1e3
        return results

    def _start(self, slot: _Slot, feeds: Mapping[str, np.ndarray]) -> None:
        """Stage inputs in the slot's pinned buffers, then upload, execute and download on its stream."""
        n = len(next(iter(feeds.values())))
        slot.started.record(slot.stream)
        for spec in self.inputs:
            staging = slot.host[spec.name].array[:n]
            staging[...] = feeds[spec.name]
            slot.device[spec.name].upload(staging, slot.stream)
        self._enqueue(slot, n)
        for spec in self.outputs:
            slot.device[spec.name].download(slot.host[spec.name].array[:n], slot.stream)
        slot.done.record(slot.stream)
        slot.pending = n

    def _check_idle(self) -> None:
        if any(slot.pending for slot in self._slots):
            raise EngineError("submitted batches are still in flight: collect their tickets first")

    def _submit_impl(self, feeds: Mapping[str, np.ndarray]) -> int:
        n = len(next(iter(feeds.values())))
        if n > self.max_batch:
            raise EngineError(
                f"submit takes at most the profile maximum ({self.max_batch}); run() chunks larger batches"
            )
        with self._lock:
            ticket, slot = self._tickets, self._slots[self._tickets % len(self._slots)]
            if slot.pending:
                raise EngineError(f"all {len(self._slots)} slots are in flight: collect the oldest ticket first")
            self._start(slot, feeds)
            self._tickets += 1
        return ticket

    def _collect_impl(self, ticket: int) -> dict[str, np.ndarray]:
        slot = self._slots[ticket % len(self._slots)]
        if not slot.pending or ticket < self._tickets - len(self._slots):
            raise EngineError(f"ticket {ticket} was already collected")
        slot.done.synchronize()
        outputs = {spec.name: slot.host[spec.name].array[: slot.pending].copy() for spec in self.outputs}
        slot.pending = 0
        return outputs

    def _enqueue(self, slot: _Slot, n: int) -> None:
        if slot.batch != n:
            for spec in self.inputs:
                if not slot.context.set_input_shape(spec.name, (n, *spec.shape[1:])):
                    raise EngineError(f"TensorRT refused shape {(n, *spec.shape[1:])} for {spec.name!r}")
            slot.batch = n
        if self.cuda_graphs and n in slot.graphs:
            cuda.cuda_call("cudaGraphLaunch", cuda.runtime().cudaGraphLaunch(slot.graphs[n], slot.stream.handle))
            return
        if not slot.context.execute_async_v3(slot.stream.handle):
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        if self.cuda_graphs and n not in slot.graph_failed:
            self._capture(slot, n)  # the first run above did any lazy initialisation outside the capture

    def _capture(self, slot: _Slot, n: int) -> None:
        cudart = cuda.runtime()
        handle = slot.stream.handle
        cuda.cuda_call(
            "cudaStreamBeginCapture",
            cudart.cudaStreamBeginCapture(handle, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
        )
        enqueued = slot.context.execute_async_v3(handle)
        graph = cudart.cudaStreamEndCapture(handle)
        if not enqueued or graph[0] != cudart.cudaError_t.cudaSuccess:
            cudart.cudaGetLastError()  # clear the capture error
            slot.graph_failed.add(n)
            log.info("CUDA graph capture failed for batch %d; using execute_async_v3", n)
            return
        slot.graphs[n] = cuda.cuda_call("cudaGraphInstantiate", cudart.cudaGraphInstantiate(graph[1], 0))

    def run_device(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], stream: int) -> None:
        """Run on caller-owned GPU arrays (torch / CuPy / pycuda, via ``__cuda_array_interface__``) on the
        caller's ``stream`` handle, without copies. Batch must not exceed the profile maximum. Returns
        once the work is enqueued; synchronize ``stream`` before reading ``outputs``."""
        specs = {s.name: s for s in self.inputs + self.outputs}
        bound = {name: device_pointer(array, specs[name], name) for name, array in {**inputs, **outputs}.items()}
        if set(bound) != set(specs):
            raise EngineError(f"run_device needs every tensor: {sorted(specs)}; got {sorted(bound)}")
        batch = bound[self.inputs[0].name][1][0]
        if batch > self.max_batch:
            raise EngineError(f"batch {batch} exceeds the plan's profile maximum {self.max_batch}")
        with self._lock:
            slot = self._slots[0]
            for spec in self.inputs:
                slot.context.set_input_shape(spec.name, bound[spec.name][1])
            slot.batch = -1
            for name, (pointer, _) in bound.items():
                slot.context.set_tensor_address(name, pointer)
            ok = slot.context.execute_async_v3(stream)
            for name, buffer in slot.device.items():  # restore the slot's own buffers
                slot.context.set_tensor_address(name, buffer.ptr)
        if not ok:
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    def close(self) -> None:
        for slot in self._slots:
            slot.free()
        self._slots = []
