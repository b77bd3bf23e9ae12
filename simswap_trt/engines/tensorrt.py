"""TensorRT backend: a bundle's serialized plan on the GPU, with the full ``tensorrt`` or the 44 MB
``tensorrt_lean`` runtime (version-compatible plans only), through the name-based API
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``).

Data path of ``run``: the batch is cut into chunks no larger than the profile maximum; chunks rotate
through ``depth`` slots, each with its own execution context, stream, device buffers and pinned host
buffers (the buffers allocated at the profile maximum when ``run``/``submit`` first use the slot). Chunk
k+1 is uploaded and enqueued before chunk k is downloaded (see ``scheduler.Pipeline``). Optionally each
(slot, batch size) is captured as a CUDA graph on an execution context of its own (at most
``MAX_SLOT_GRAPHS`` per slot, least recently used dropped, see ``cuda.GraphCache``), after one run on that
context (TensorRT ties a graph to its context's shapes and addresses, so no other run changes them); if
capture fails the engine keeps using ``execute_async_v3`` on the slot's context. Every context, a slot's,
a graph's or a caller's, is a ``DeviceContext``: the one place where shapes and addresses are set (only
where they changed) and the plan is executed. ``memory()`` reports what the engine holds.

``submit``/``collect`` expose the same slots across calls (at most ``depth`` tickets in flight), so a video
loop can prepare frame k+1 on the CPU while the GPU works on frame k. ``execute_device`` runs on device
buffers the caller owns (the fused device path binds its own batch buffers), ordered after the caller's
stream by an event and before the caller's later work by another; ``run_device`` does the same for torch /
CuPy arrays. Chunks below the profile minimum are padded up to it. ``close()`` (or ``with``) waits for
the streams and frees every buffer, context and captured graph.

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
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import MemoryUse, buffers_use, host_memory_strategy, io_buffers
from simswap_trt.engines.base import Engine
from simswap_trt.engines.scheduler import Pipeline, chunk_batches
from simswap_trt.errors import BundleError, EngineError
from simswap_trt.plans import PlanEntry, RuntimeInfo, plan_problems, rebuild_command
from simswap_trt.schema import TensorSpec, sha256_of

log = logging.getLogger(__name__)
MAX_SLOT_GRAPHS = 4  # captured graphs (batch sizes) per slot, each with its own context; least recently used dropped


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


def runtime_info(trt: ModuleType, lean: bool, device: int | None = None) -> RuntimeInfo:
    """What decides whether a plan runs here: the TensorRT version and ``device`` (default: the current one)."""
    info = cuda.device_info() if device is None else cuda.check_device(device)
    return RuntimeInfo(trt.__version__, lean, info.compute_capability, info.name)


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
    """One execution context (a ``DeviceContext``) with its stream, captured graphs and, once ``run``/``submit``
    first use it, its own I/O buffers at the profile maximum (``execute_device`` runs on the caller's buffers
    and never allocates them)."""

    def __init__(self, engine: TensorRTEngine, max_batch: int, host_memory: str = "staged") -> None:
        self.context: DeviceContext | None = DeviceContext(engine)
        self.device: dict[str, cuda_memory.DeviceBuffer] = {}
        self.host: dict[str, cuda_memory.PinnedBuffer] = {}
        self.graphs = cuda.GraphCache(MAX_SLOT_GRAPHS)  # batch -> graph on the own buffers, with its context
        self.stream = self.started = self.done = self.ready = None
        self.own: dict[str, int] = {}  # the addresses of the slot's own buffers, once allocated
        self.pending = 0  # items enqueued by submit() and not yet collected
        specs = engine.inputs + engine.outputs
        self._io = [(spec.name, (max_batch, *spec.shape[1:]), np.dtype(spec.dtype)) for spec in specs]
        self._host_memory = host_memory
        try:
            self.stream = cuda.Stream()
            self.started, self.done = cuda.Event(), cuda.Event()
            self.ready = cuda.Event(timing=False)  # recorded on a caller's stream by execute_device
        except BaseException:
            self.free()  # what was made so far
            raise

    def allocate(self) -> None:
        """The slot's own I/O buffers at the profile maximum (once)."""
        if self.own:
            return
        for name, shape, dtype in self._io:
            # staged: pinned host + device buffer; mapped (integrated GPUs): one buffer in both roles
            self.host[name], self.device[name] = io_buffers(shape, dtype, self._host_memory)
        self.own = {name: buffer.ptr for name, buffer in self.device.items()}

    def held(self) -> MemoryUse:
        """What the slot's own buffers hold (one mapped buffer counts once, as pinned host memory the GPU
        reads in place)."""
        return buffers_use(*self.host.values(), *self.device.values())

    def free(self) -> None:
        """Wait for the slot's stream, then free what it holds; after a device fault, as much as can be."""
        steps = [self.stream.synchronize] if self.stream is not None else []  # nothing may still use it
        steps += [self.graphs.free]
        steps += [buffer.free for buffer in (*self.device.values(), *self.host.values())]
        steps += [owner.free for owner in (self.started, self.done, self.ready, self.stream) if owner is not None]
        steps += [self.context.free] if self.context is not None else []
        self.context = None
        cuda.free_all(*steps)


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
        host_memory: str = "auto",
        device: int | None = None,
    ) -> None:
        """``device``: the CUDA device id the plan, its contexts and buffers live on (default: the calling
        thread's current device); every call of the engine makes it current first."""
        trt, lean = import_tensorrt()
        self.device = cuda.bound_device(device)  # None: the current device, kept for every thread's calls
        here = runtime_info(trt, lean, self.device)  # plans are checked against that device, not GPU 0
        cuda.activate(self.device)
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
        if entry.dla_core is not None:
            self._use_dla_core(bundle_root, entry)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialize {path} (see the TensorRT log above)")
        self.inputs, self.outputs = self._signature()
        self.max_batch, self.min_batch = entry.max_batch, entry.min_batch
        self.cuda_graphs = cuda_graphs
        traits = cuda_memory.memory_traits(self.device)
        self.host_memory = host_memory_strategy(traits, host_memory)  # "mapped" or "staged"
        self._contexts: list[DeviceContext] = []  # every live one: the slots', graphs', device_context()'s
        self._slots: list[_Slot] = []
        try:
            while len(self._slots) < depth:
                self._slots.append(_Slot(self, self.max_batch, self.host_memory))
        except BaseException:
            cuda.free_all(*[slot.free for slot in self._slots])  # the slots made before the failure
            raise
        self._lock = threading.Lock()
        self._tickets = 0  # submitted through submit(); slot = ticket % depth
        self._device_calls = 0  # execute_device calls; slot = call % depth
        self.last_gpu_seconds = 0.0  # event-timed upload + compute + download of the last run, summed over chunks
        on = here.gpu_name if device is None else f"{here.gpu_name}, device {device}"
        self.backend = f"tensorrt{'-lean' if lean else ''} {trt.__version__} [{on}, {entry.precision}]"
        log.info("%s: %s, %d slots, max batch %d", entry.file, self.backend, depth, self.max_batch)
        log.info("%s: %s host memory for inputs and outputs", entry.file, self.host_memory)

    def _use_dla_core(self, bundle_root: str | Path, entry: PlanEntry) -> None:
        """Run the plan's DLA layers on its DLA core (Jetson), or refuse a core this device does not have."""
        cores = int(self._runtime.num_DLA_cores)
        if not entry.dla_core < cores:
            raise EngineError(
                f"the {entry.role} plan {entry.file} runs on DLA core {entry.dla_core}, and this device has "
                f"{cores} DLA core(s): rebuild it with another --dla-core or without one: "
                f"{rebuild_command(str(bundle_root), entry)}"
            )
        self._runtime.DLA_core = entry.dla_core

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
            cuda.activate(self.device)
            self._check_idle()
            for _ in Pipeline(len(self._slots), submit, collect).run(chunks):
                pass
        self.last_gpu_seconds = sum(gpu_ms) / 1e3
        return results

    def _start(self, slot: _Slot, feeds: Mapping[str, np.ndarray]) -> None:
        """Stage inputs in the slot's pinned buffers, then upload, execute and download on its stream. A
        chunk below the profile minimum is padded with zeros up to it (the padding's outputs are dropped)."""
        n = len(next(iter(feeds.values())))
        padded = max(n, self.min_batch)
        slot.allocate()
        slot.started.record(slot.stream)
        for spec in self.inputs:
            staging = slot.host[spec.name].array[:padded]
            staging[:n] = feeds[spec.name]
            staging[n:] = 0
            slot.device[spec.name].upload(staging, slot.stream)
        self._enqueue(slot, slot.own, padded)
        for spec in self.outputs:
            slot.device[spec.name].download(slot.host[spec.name].array[:n], slot.stream)
        slot.done.record(slot.stream)
        slot.pending = n

    def _check_idle(self) -> None:
        if not self._slots:
            raise EngineError("the engine is closed")
        if any(slot.pending for slot in self._slots):
            raise EngineError("submitted batches are still in flight: collect their tickets first")
        for slot in self._slots:
            slot.done.synchronize()  # an execute_device run may still use the slot's context

    def _submit_impl(self, feeds: Mapping[str, np.ndarray]) -> int:
        n = len(next(iter(feeds.values())))
        if n > self.max_batch:
            raise EngineError(
                f"submit takes at most the profile maximum ({self.max_batch}); run() chunks larger batches"
            )
        with self._lock:
            cuda.activate(self.device)
            if not self._slots:
                raise EngineError("the engine is closed")
            ticket, slot = self._tickets, self._slots[self._tickets % len(self._slots)]
            if slot.pending:
                raise EngineError(f"all {len(self._slots)} slots are in flight: collect the oldest ticket first")
            slot.done.synchronize()  # an execute_device run may still use the slot's context
            self._start(slot, feeds)
            self._tickets += 1
        return ticket

    def _collect_impl(self, ticket: int) -> dict[str, np.ndarray]:
        with self._lock:  # a concurrent close() empties the slots
            cuda.activate(self.device)
            if not self._slots:
                raise EngineError("the engine is closed")
            slot = self._slots[ticket % len(self._slots)]
            if not slot.pending or ticket < self._tickets - len(self._slots):
                raise EngineError(f"ticket {ticket} was already collected")
            slot.done.synchronize()
            outputs = {spec.name: slot.host[spec.name].array[: slot.pending].copy() for spec in self.outputs}
            slot.pending = 0
            return outputs

    def _enqueue(self, slot: _Slot, addresses: Mapping[str, int], n: int) -> None:
        """One run of batch ``n`` on ``addresses`` on the slot's stream: on the slot's own buffers with
        ``cuda_graphs``, the graph of batch ``n`` (captured on a context of its own at its first run, see
        ``cuda.GraphCache``); else on the slot's context."""
        context, stream = slot.context, slot.stream
        if not (self.cuda_graphs and addresses == slot.own):  # a graph replays the addresses it was captured with
            context.enqueue(addresses, n, stream)
            return
        slot.graphs.run(
            n,
            stream,
            owners=lambda: [DeviceContext(self)],
            enqueue=lambda owners: owners[0].enqueue(addresses, n, stream),
            eager=lambda: context.enqueue(addresses, n, stream),
            what=f"batch {n}",
        )

    def execute_device(self, addresses: Mapping[str, int], batch: int, stream: cuda.Stream) -> None:
        """Enqueue one run on device memory the caller owns: ``addresses`` maps every tensor name to a device
        address holding (inputs) or receiving (outputs) ``batch`` items. The run starts after the work
        already enqueued on ``stream`` and the work enqueued on ``stream`` afterwards starts after the run
        (events), so producers and consumers on ``stream`` need no synchronization. ``batch`` must lie in the
        plan's profile (``min_batch``..``max_batch``): allocate room for the padding. Returns once enqueued."""
        names = {s.name for s in self.inputs + self.outputs}
        if set(addresses) != names:
            raise EngineError(f"execute_device needs every tensor: {sorted(names)}; got {sorted(addresses)}")
        if not self.min_batch <= batch <= self.max_batch:
            raise EngineError(
                f"batch {batch} is outside the plan's profile {self.min_batch}..{self.max_batch}"
                + (" (pad it up to the minimum)" if batch < self.min_batch else " (cut it into chunks)")
            )
        with self._lock:
            cuda.activate(self.device)
            if not self._slots:
                raise EngineError("the engine is closed")
            slot = self._slots[self._device_calls % len(self._slots)]
            if slot.pending:
                raise EngineError("submitted batches are still in flight: collect their tickets first")
            slot.done.synchronize()  # the slot's previous run finished: its context may be changed again
            slot.ready.record(stream)
            slot.stream.wait(slot.ready)
            slot.started.record(slot.stream)
            self._enqueue(slot, addresses, batch)
            slot.done.record(slot.stream)
            stream.wait(slot.done)
            self._device_calls += 1

    def run_device(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], stream: int) -> None:
        """Run on caller-owned GPU arrays (torch / CuPy / pycuda, via ``__cuda_array_interface__``) ordered on
        the caller's ``stream`` handle, without copies (see ``execute_device``). Every array must hold the
        same batch. Synchronize ``stream`` before reading ``outputs`` on the host."""
        specs = {s.name: s for s in self.inputs + self.outputs}
        unknown = (set(inputs) | set(outputs)) - set(specs)
        if unknown:
            raise EngineError(f"run_device: unknown tensors {sorted(unknown)}; the engine has {sorted(specs)}")
        bound = {name: device_pointer(array, specs[name], name) for name, array in {**inputs, **outputs}.items()}
        batches = {name: shape[0] for name, (_, shape) in bound.items()}
        if len(set(batches.values())) > 1:
            raise EngineError(f"run_device: every array must hold the same batch, got {batches}")
        batch = next(iter(batches.values()), 0)
        self.execute_device({name: pointer for name, (pointer, _) in bound.items()}, batch, cuda.Stream.wrap(stream))

    def close(self) -> None:
        """Wait for this engine's streams, then free its buffers, graphs and contexts. Idempotent."""
        with self._lock:
            cuda.activate(self.device)
            slots, self._slots = self._slots, []
            contexts, self._engine = list(self._contexts), None
            cuda.free_all(*[slot.free for slot in slots], *[context.free for context in contexts])

    def contexts(self) -> int:
        """Live execution contexts with activation memory of their own: the slots', the graphs' and every
        other ``DeviceContext`` not given the caller's memory."""
        with self._lock:
            return sum(context.own_memory for context in self._contexts)

    def activation_bytes(self) -> int:
        """Device memory TensorRT allocates for each execution context (the plan's activations, at the profile
        maximum): ``device_memory_size_v2``; 0 once closed."""
        return int(self._engine.device_memory_size_v2) if self._engine is not None else 0

    def memory(self) -> MemoryUse:
        """Device and pinned host memory the engine holds: its slots' own I/O buffers (allocated by the first
        ``run``/``submit`` of each slot) and every live execution context's activation memory."""
        with self._lock:
            buffers = sum((slot.held() for slot in self._slots), MemoryUse())
        return buffers + MemoryUse(self.contexts() * self.activation_bytes(), 0)

    def device_context(self, memory: int | None = None) -> DeviceContext:
        """An execution context of the caller's own, enqueued straight on the caller's stream (no slot, no
        events): for a sequence of kernels and plan runs captured as one CUDA graph. Freed by its ``free()``
        or by ``close()`` at the latest. Each costs the plan's activation memory (``activation_bytes``),
        unless ``memory``: the address of device memory of at least that size which the caller owns and
        shares among contexts that never run at the same time (e.g. all enqueued on one stream)."""
        with self._lock:
            if self._engine is None:
                raise EngineError("the engine is closed")
            cuda.activate(self.device)
            return DeviceContext(self, memory)


class DeviceContext:
    """One TensorRT execution context bound to the batch and tensor addresses it last ran with: ``enqueue``
    sets the batch shape and the addresses only where they changed, then executes on a stream. Every run of
    the engine goes through one: its slots', the CUDA graphs' (a graph is captured around ``enqueue``) and
    those of ``TensorRTEngine.device_context``. A CUDA graph captured with it is tied to its shapes and
    addresses: give each graph a context of its own and do not enqueue that context with other shapes or
    addresses. ``memory``: the address of activation memory the caller owns (else TensorRT allocates the
    context's own)."""

    def __init__(self, engine: TensorRTEngine, memory: int | None = None) -> None:
        self._engine = engine
        self.own_memory = memory is None
        if memory is None:
            self.context = engine._engine.create_execution_context()
        else:
            strategy = engine._trt.ExecutionContextAllocationStrategy.USER_MANAGED
            self.context = engine._engine.create_execution_context(strategy)
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        if memory is not None:
            self.context.set_device_memory(memory, engine.activation_bytes())
        self.batch = -1
        self.addresses: dict[str, int] = {}
        engine._contexts.append(self)  # freed by the engine's close() at the latest

    def enqueue(self, addresses: Mapping[str, int], batch: int, stream: cuda.Stream) -> None:
        """Enqueue one run on device ``addresses`` (every tensor, ``batch`` items, within the profile) on
        ``stream``; shapes and addresses are set only where they changed."""
        engine = self._engine
        if self.context is None:
            raise EngineError("the engine is closed")
        if set(addresses) != {s.name for s in engine.inputs + engine.outputs}:
            raise EngineError(f"enqueue needs every tensor of the plan; got {sorted(addresses)}")
        if not engine.min_batch <= batch <= engine.max_batch:
            raise EngineError(f"batch {batch} is outside the plan's profile {engine.min_batch}..{engine.max_batch}")
        self.set_batch(batch)
        self.bind(addresses)
        if not self.context.execute_async_v3(stream.handle):
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    def set_batch(self, batch: int) -> None:
        """Every input's batch set to ``batch``, unless it already is."""
        if batch == self.batch:
            return
        self.batch = -1  # unknown until every input accepted the new shape
        for spec in self._engine.inputs:
            if not self.context.set_input_shape(spec.name, (batch, *spec.shape[1:])):
                raise EngineError(f"TensorRT refused shape {(batch, *spec.shape[1:])} for {spec.name!r}")
        self.batch = batch

    def bind(self, addresses: Mapping[str, int]) -> None:
        """The tensors' addresses set where they changed."""
        for name, address in addresses.items():
            if self.addresses.get(name) != address:
                if not self.context.set_tensor_address(name, address):
                    raise EngineError(f"TensorRT refused the address of tensor {name!r}")
                self.addresses[name] = address

    def free(self) -> None:
        """Release the context (after the streams it was enqueued on are done). A second call does nothing."""
        self.context = None
        if self in self._engine._contexts:
            self._engine._contexts.remove(self)
