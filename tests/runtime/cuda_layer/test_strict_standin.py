"""The CPU stand-in of the GPU refuses what CUDA and TensorRT refuse (each rule with a planted violation),
and the runtime's error paths on it: a failed graph instantiation falls back to eager runs, a context
TensorRT cannot create, a launch error, a failure in the middle of a batch, a sticky fault at close."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from support import fake_gpu
from support.fake_gpu import CudaErrors, fake_cudart, install_fake_cuda, strict_runtime_module
from support.paths import ROOT
from support.plans import IO, fake_generator

from simswap_trt import cuda
from simswap_trt import kernels as kernels_module
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import MemoryUse
from simswap_trt.engines import tensorrt as trt_engine
from simswap_trt.errors import EngineError

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


@pytest.fixture()
def gpu(monkeypatch):
    gpu = install_fake_cuda(monkeypatch, devices=2)
    cudart = fake_cudart(gpu.executed)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    return gpu


def capture(stream, enqueue):
    with pytest.raises(cuda.GraphCaptureError, match="cudaErrorStreamCaptureUnsupported") as failure:
        cuda.Graph.capture(stream, enqueue)
    return str(failure.value)


@pytest.mark.parametrize(
    "call, planted",
    [
        ("cudaMalloc", lambda stream: cuda_memory.DeviceBuffer(64)),
        ("cudaMallocHost", lambda stream: cuda_memory.PinnedBuffer((4,), np.float32)),
        ("cudaStreamSynchronize", lambda stream: stream.synchronize()),
        ("cudaEventSynchronize", lambda stream: OWNED[1].synchronize()),
        ("cudaMemcpyAsync", lambda stream: OWNED[0].upload(np.zeros(4, np.float32), stream)),  # pageable
    ],
)
def test_what_a_capture_refuses_fails_the_capture_and_the_stream_stays_usable(gpu, call, planted):
    stream = cuda.Stream()
    OWNED[:] = [cuda_memory.DeviceBuffer(64), cuda.Event()]
    assert call in capture(stream, lambda: planted(stream))
    assert not gpu.capturing and stream.capture is None
    assert not any(kind == "graph" for kind, *_ in [k for k in gpu.live if isinstance(k, tuple)])
    pinned = cuda_memory.PinnedBuffer((4,), np.float32)  # a copy of pinned memory is captured
    graph = cuda.Graph.capture(stream, lambda: OWNED[0].upload(pinned.array, stream))
    graph.launch(stream)
    stream.synchronize()
    graph.free()
    for owner in (pinned, *OWNED, stream):
        owner.free()
    assert not gpu.live


OWNED: list = []  # a device buffer and an event made before the capture


def test_the_current_device_is_per_thread(gpu):
    """A worker thread that never activated the device its stream lives on cannot launch on it."""
    cuda.set_device(1)
    stream = cuda.Stream()
    outcomes = {}

    def worker(activate):
        if activate:
            cuda.activate(1)
        try:
            gpu.check_on(stream.handle, [])
            outcomes[activate] = "ok"
        except AssertionError as exc:
            outcomes[activate] = str(exc)

    for activate in (False, True):
        thread = threading.Thread(target=worker, args=(activate,))
        thread.start()
        thread.join()
    assert outcomes == {False: "launch on a stream of device 1 while device 0 is current", True: "ok"}
    stream.free()


def test_timing_needs_timing_events_whose_records_ran(gpu):
    stream = cuda.Stream()
    start, end, untimed = cuda.Event(), cuda.Event(), cuda.Event(timing=False)
    with pytest.raises(cuda.CudaError, match="cudaErrorInvalidResourceHandle"):
        end.elapsed_ms(start)  # never recorded
    for event in (start, end, untimed):
        event.record(stream)
    with pytest.raises(cuda.CudaError, match="cudaErrorNotReady"):
        end.elapsed_ms(start)  # recorded, not yet run
    end.synchronize()
    assert end.elapsed_ms(start) == 1.0
    with pytest.raises(cuda.CudaError, match="cudaErrorInvalidResourceHandle"):
        untimed.elapsed_ms(start)
    for owner in (start, end, untimed, stream):
        owner.free()


def context(gpu, io=IO, fn=fake_generator, **options):
    module = strict_runtime_module(lean, io, fn, **options)
    return module, module.Runtime(None).deserialize_cuda_engine(b"plan").create_execution_context()


def test_tensor_addresses_must_be_256_byte_aligned_device_memory(gpu):
    _, ctx = context(gpu)
    buffer, pinned = cuda_memory.DeviceBuffer(1024), cuda_memory.PinnedBuffer((256,), np.float32)
    assert buffer.ptr % 256 == 0 and pinned.array.ctypes.data % 256 == 0  # as cudaMalloc/cudaMallocHost give
    assert ctx.set_tensor_address("target", buffer.ptr)
    assert not ctx.set_tensor_address("target", buffer.ptr + 4)
    with pytest.raises(AssertionError, match="is not device memory"):
        ctx.set_tensor_address("target", pinned.array.ctypes.data)
    buffer.free()
    pinned.free()


def test_the_engine_reports_an_address_tensorrt_refuses(gpu, plan_bundle, monkeypatch):  # noqa: F811
    module = strict_runtime_module(lean, IO, fake_generator)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1) as engine:
        buffers = {s.name: cuda_memory.DeviceBuffer(4 << 20) for s in engine.inputs + engine.outputs}
        addresses = {name: b.ptr for name, b in buffers.items()} | {"latent": buffers["latent"].ptr + 8}
        stream = cuda.Stream()
        with pytest.raises(EngineError, match="TensorRT refused the address of tensor 'latent'"):
            engine.execute_device(addresses, 1, stream)
        stream.free()
        for buffer in buffers.values():
            buffer.free()


def bound_context(gpu):
    """A stand-in context with device buffers bound to every tensor and batch-1 shapes set."""
    _, ctx = context(gpu)
    buffers = [cuda_memory.DeviceBuffer(4 << 20) for _ in IO]
    for (name, *_), buffer in zip(IO, buffers, strict=True):
        ctx.set_tensor_address(name, buffer.ptr)
    ctx.set_input_shape("target", (1, 3, 224, 224))
    ctx.set_input_shape("latent", (1, 512))
    return ctx, buffers


def test_a_context_may_not_run_on_two_streams_at_once(gpu):
    ctx, buffers = bound_context(gpu)
    first, second = cuda.Stream(), cuda.Stream()
    ctx.execute_async_v3(first.handle)
    with pytest.raises(AssertionError, match="enqueued on two streams at once"):
        ctx.execute_async_v3(second.handle)
    first.synchronize()
    ctx.execute_async_v3(second.handle)  # once the first run is done, another stream may take it
    for owner in (first, second, *buffers):
        owner.free()


def test_a_graph_may_not_replay_after_its_context_changed(gpu):
    ctx, buffers = bound_context(gpu)
    stream = cuda.Stream()
    graph = cuda.Graph.capture(stream, lambda: ctx.execute_async_v3(stream.handle))
    graph.launch(stream)
    stream.synchronize()  # unchanged: replays
    ctx.set_input_shape("target", (2, 3, 224, 224))
    graph.launch(stream)
    with pytest.raises(AssertionError, match="replayed after its execution context's shapes or addresses changed"):
        stream.synchronize()
    graph.free()


def test_fp16_io_plans_read_and_write_half_floats(gpu, plan_bundle, monkeypatch):  # noqa: F811
    io = [("target", "in", (-1, 3, 224, 224), "float16"), ("latent", "in", (-1, 512))]
    io += [("swapped", "out", (-1, 3, 224, 224), "float16")]
    module = strict_runtime_module(lean, io, fake_generator)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    rng = np.random.default_rng(0)
    feeds = {"target": rng.random((2, 3, 224, 224)).astype(np.float16), "latent": rng.random((2, 512), np.float32)}
    with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1) as engine:
        assert [s.dtype for s in engine.inputs + engine.outputs] == ["float16", "float32", "float16"]
        got = engine.run(feeds)["swapped"]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, fake_generator(feeds)["swapped"].astype(np.float16))


def test_a_context_tensorrt_cannot_create_fails_the_engine_and_frees_the_slots_made(
    gpu,
    plan_bundle,  # noqa: F811
    monkeypatch,
):
    module = strict_runtime_module(lean, IO, fake_generator, contexts=1)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    with pytest.raises(EngineError, match="could not create an execution context"):
        trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=2)
    assert not gpu.live  # slot 0's stream, events and buffers were freed


def test_graphs_fall_back_to_eager_runs_when_tensorrt_has_no_context_or_instantiate_fails(
    gpu,
    plan_bundle,  # noqa: F811
    monkeypatch,
):
    feeds = {"target": np.ones((2, 3, 224, 224), np.float32), "latent": np.ones((2, 512), np.float32)}
    for contexts, cudart in ((1, fake_cudart([])), (None, fake_cudart([], CudaErrors.cudaErrorInvalidValue))):
        monkeypatch.setattr(cuda, "runtime", lambda cudart=cudart: cudart)
        module = strict_runtime_module(lean, IO, fake_generator, contexts=contexts)
        monkeypatch.setattr(trt_engine, "import_tensorrt", lambda module=module: (module, True))
        with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1, cuda_graphs=True) as engine:
            for _ in range(2):
                np.testing.assert_allclose(engine.run(feeds)["swapped"], fake_generator(feeds)["swapped"], rtol=1e-6)
            assert engine._slots[0].graphs.failed == {2} and not engine._slots[0].graphs
        assert not gpu.live  # no graph, executable or context left behind


def test_a_kernel_launch_error_is_a_typed_error(monkeypatch):
    import cuda.core as core

    def refuses(*args):
        raise RuntimeError("CUDA_ERROR_INVALID_VALUE: invalid argument")

    monkeypatch.setattr(core, "launch", refuses)
    monkeypatch.setattr(core, "Stream", SimpleNamespace(from_handle=lambda handle: handle))
    monkeypatch.setattr(core, "LaunchConfig", lambda **config: config)
    with pytest.raises(cuda.KernelLaunchError, match=r"grid \(1, 2, 3\) failed: CUDA_ERROR_INVALID_VALUE"):
        kernels_module.launch(0, "kernel", (1, 2, 3), [])


def test_close_after_a_sticky_fault_frees_what_it_can(gpu, plan_bundle, monkeypatch):  # noqa: F811
    module = strict_runtime_module(lean, IO, fake_generator)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    engine = trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=2)

    def faulted(self):
        raise cuda.CudaError("cudaStreamSynchronize", "cudaErrorIllegalAddress", 700)

    monkeypatch.setattr(fake_gpu.FakeStream, "synchronize", faulted)
    with pytest.raises(cuda.CudaError, match="cudaErrorIllegalAddress"):
        engine.close()
    left = {type(owner).__name__ for owner in gpu.live}
    assert left == {"FakeStream"}  # the buffers and events are freed; only the faulted streams remain
    assert engine._slots == []


def test_a_failed_batch_releases_its_workspace(tiny_bundle, host, monkeypatch, tmp_path):
    """An error in the middle of a batch (here the generator's enqueue) leaves no workspace held: later
    batches reuse the two workspaces instead of making a new one each time."""
    from support.device_path import install_device, latent, scenes
    from support.device_path import plan_bundle as device_plan_bundle

    from simswap_trt import FaceSwapper

    bundle = device_plan_bundle(tiny_bundle, tmp_path / "b")
    gpu, _ = install_device(monkeypatch, host, bundle)
    (images, faces), _ = scenes(224, bundle.alignment)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as swapper:
        swapper.source_latent = latent()
        stages = swapper._stages
        real, planted = stages.generator.execute_device, [True]

        def fails_once(*args):
            if planted.pop() if planted else False:
                raise EngineError("TensorRT execute_async_v3 failed (planted)")
            return real(*args)

        monkeypatch.setattr(stages.generator, "execute_device", fails_once)
        with pytest.raises(EngineError, match="planted"):
            swapper.swap_faces(images, faces)
        assert not any(ws.held for ws in stages.workspaces)
        for _ in range(3):
            swapper.swap_faces(images, faces)
        assert len(stages.workspaces) == 2
    assert not gpu.live


def test_collect_after_close_says_the_engine_is_closed(gpu, plan_bundle, monkeypatch):  # noqa: F811
    module = strict_runtime_module(lean, IO, fake_generator)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    engine = trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=2)
    ticket = engine.submit({"target": np.ones((1, 3, 224, 224), np.float32), "latent": np.ones((1, 512), np.float32)})
    engine.close()
    with pytest.raises(EngineError, match="the engine is closed"):  # not a division by zero
        engine.collect(ticket)


def test_an_engine_made_without_a_device_keeps_the_current_one_for_every_thread(gpu, plan_bundle, monkeypatch):  # noqa: F811
    """``device=None`` is the device current when the engine was made: a worker thread (whose current device
    is 0) runs it on that device, and its plan was checked against that device."""
    module = strict_runtime_module(lean, IO, fake_generator)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    cuda.set_device(1)
    feeds = {"target": np.ones((1, 3, 224, 224), np.float32), "latent": np.ones((1, 512), np.float32)}
    with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1) as engine:
        assert engine.device == 1
        outputs = []
        thread = threading.Thread(target=lambda: outputs.append(engine.run(feeds)["swapped"]))
        thread.start()
        thread.join()
        np.testing.assert_allclose(outputs[0], fake_generator(feeds)["swapped"], rtol=1e-6)


def test_execute_device_allocates_no_io_buffers_and_run_allocates_them_once(gpu, plan_bundle, monkeypatch):  # noqa: F811
    """The device path binds its own buffers: an engine used only through ``execute_device`` holds none of
    its own I/O buffers; ``run`` allocates a slot's at the profile maximum (5) when it uses the slot, once, and
    ``memory`` reports them."""
    module = strict_runtime_module(lean, IO, fake_generator)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=2) as engine:
        sizes = {"target": 3 * 224 * 224 * 4, "latent": 512 * 4, "swapped": 3 * 224 * 224 * 4}
        buffers = {name: cuda_memory.DeviceBuffer(nbytes) for name, nbytes in sizes.items()}
        stream = cuda.Stream()
        before = len(gpu.allocations)
        for _ in range(3):
            engine.execute_device({name: b.ptr for name, b in buffers.items()}, 1, stream)
        stream.synchronize()
        assert len(gpu.allocations) == before and engine.memory() == MemoryUse(0, 0)
        feeds = {"target": np.ones((2, 3, 224, 224), np.float32), "latent": np.ones((2, 512), np.float32)}
        engine.run(feeds)
        engine.run(feeds)
        per_slot = 5 * sum(sizes.values())
        assert engine.memory() == MemoryUse(per_slot, per_slot)  # one chunk: only slot 0, once
        for owner in (*buffers.values(), stream):
            owner.free()
    assert not gpu.live


def test_the_standin_refuses_a_dla_core_the_device_lacks():
    """Planted: TensorRT cannot load a plan on a DLA core the device does not have (none on a discrete GPU)."""
    module = strict_runtime_module(lean, IO, fake_generator, dla_cores=2)
    runtime = module.Runtime(module.Logger(module.Logger.WARNING))
    runtime.DLA_core = 1
    assert runtime.deserialize_cuda_engine(b"plan") is not None
    runtime.DLA_core = 2
    assert runtime.deserialize_cuda_engine(b"plan") is None


@pytest.mark.parametrize("cores", [0, 2])
def test_an_engine_refuses_a_dla_plan_for_a_core_the_device_lacks(gpu, plan_bundle, monkeypatch, cores):  # noqa: F811
    from dataclasses import replace

    module = strict_runtime_module(lean, IO, fake_generator, dla_cores=cores)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    entry = replace(plan_bundle.plans[0], dla_core=2)
    with pytest.raises(EngineError, match=f"runs on DLA core 2, and this device has {cores} DLA core.*simswap-build"):
        trt_engine.TensorRTEngine(plan_bundle.root, entry)
    assert not [call for call in module.calls if call[0] in ("deserialize", "DLA_core")]  # refused before
    entry = replace(plan_bundle.plans[0], dla_core=1)
    if cores:
        with trt_engine.TensorRTEngine(plan_bundle.root, entry):
            assert ("DLA_core", 1) in module.calls


GUARDED_READ = """
import ctypes
import numpy as np
import pytest
from support.fake_gpu import install_fake_cuda
from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory

install_fake_cuda(pytest.MonkeyPatch(), guard=True)
buffer, stream = cuda_memory.DeviceBuffer.from_array(np.arange(64, dtype=np.uint8)), cuda.Stream()
pinned = cuda_memory.PinnedBuffer((64,), np.uint8)
buffer.download(pinned.array, stream)
stream.synchronize()
assert (pinned.array == np.arange(64)).all() and (buffer.to_array(pinned.array) == np.arange(64)).all()
print("copies work", flush=True)
ctypes.string_at(buffer.ptr, 16)  # planted: the host reads device memory without a copy
print("the host read device memory", flush=True)
"""


def test_guarded_device_memory_is_readable_only_through_copies():
    """Planted: with ``guard``, a host read of device memory outside a copy crashes (SIGSEGV), as it
    faults on a discrete GPU; copies and device work still reach it."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    result = subprocess.run([sys.executable, "-c", GUARDED_READ], capture_output=True, text=True, env=env, timeout=120)
    assert "copies work" in result.stdout, result.stderr
    assert "the host read device memory" not in result.stdout
    assert result.returncode == -signal.SIGSEGV


def test_the_device_path_never_touches_device_memory_from_the_host(tiny_bundle, host, monkeypatch, tmp_path):
    """The whole device path (upload, kernels, plans, paste-back, region download) on guarded device memory:
    it reaches device memory only through copies and device work (a host access would crash the test)."""
    from support import device_path

    from simswap_trt import FaceSwapper

    bundle = device_path.plan_bundle(tiny_bundle, tmp_path / "b", roles=("generator", "arcface"))
    gpu, _ = device_path.install_device(monkeypatch, host, bundle, guard=True)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as swapper:
        assert swapper.stages.startswith("device")
        swapper.source_latent = device_path.latent()
        images, faces = device_path.scenes(224, bundle.alignment)[0]
        results = swapper.swap_faces(images, faces)
    assert len(gpu.guard_pages) == 4  # guarded: frames and tables, paste-back tables, generator input, output
    assert np.abs(results[0].image.astype(int) - images[0]).max() > 0
