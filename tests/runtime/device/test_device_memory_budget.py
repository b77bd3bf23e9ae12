"""The device path's memory budget on the CPU stand-in (which counts every allocation): what the swapper
reports equals what it allocated, the 224 and 512 generators at batch 8 stay within the budget that
docs/device-path.md states, workspaces and captured graphs are bounded, and graph contexts share their
workspace's activation memory."""

import numpy as np
import pytest
from support.fake_gpu import fake_cudart, strict_runtime_module
from support.paths import ROOT
from support.plans import IO, fake_generator

from benchmarks import memory as budget
from simswap_trt import cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import MemoryUse, Staging, SwapperMemory
from simswap_trt.device.workspace import MAX_WORKSPACES
from simswap_trt.engines import tensorrt as trt_engine
from simswap_trt.errors import EngineError

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")
MIB = 2**20
# the runtime's own buffers at batch 8 (1080p frames, 2 batches in flight), as docs/device-path.md states them;
# every execution context adds its plan's activation memory (2 per plan, 4 for the generator with graphs)
BUDGET = {224: MemoryUse(60 * MIB, 48 * MIB), 512: MemoryUse(140 * MIB, 48 * MIB)}


@pytest.fixture()
def graph_runtime(monkeypatch):
    cudart = fake_cudart([])
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    return cudart


@pytest.mark.parametrize("crop_size", [224, 512])
@pytest.mark.parametrize("graphs", [False, True])
def test_the_report_is_what_was_allocated_and_fits_the_budget(crop_size, graphs, monkeypatch, graph_runtime):
    row = budget.measure(monkeypatch, crop_size, graphs)
    assert row["standin_live"] == {"device": row["device_bytes"], "pinned": row["pinned_bytes"]}
    assert row["device_bytes"] <= BUDGET[crop_size].device and row["pinned_bytes"] <= BUDGET[crop_size].pinned
    assert row["device_bytes"] > 0.8 * BUDGET[crop_size].device  # the budget is the figure, not a loose bound
    assert row["activation_blocks"] == {"generator": 4 if graphs else 2, "arcface": 2}


def test_a_buffer_left_out_of_the_report_is_caught(monkeypatch, graph_runtime):
    """Planted: staging buffers missing from the report make it differ from the stand-in's count."""
    monkeypatch.setattr(Staging, "memory", lambda self: MemoryUse())
    row = budget.measure(monkeypatch, 224, False)
    assert row["standin_live"]["pinned"] > row["pinned_bytes"]


def test_the_documented_figures_are_the_commands(monkeypatch, graph_runtime):
    """docs/device-path.md gives the figures of benchmarks/results/memory.json, which the stand-in reproduces."""
    import json

    rows = json.loads((ROOT / "benchmarks/results/memory.json").read_text())["rows"]
    docs = (ROOT / "docs/device-path.md").read_text()
    for row in rows:
        for figure in (row["device_bytes"], row["pinned_bytes"]):
            assert f"{figure / MIB:.1f} MiB" in docs
    row = budget.measure(monkeypatch, 512, False)
    assert (row["device_bytes"], row["pinned_bytes"]) == (rows[2]["device_bytes"], rows[2]["pinned_bytes"])


def test_idle_workspaces_beyond_depth_are_freed_and_batches_in_flight_are_capped(monkeypatch, graph_runtime):
    with budget.device_stages(monkeypatch, 224, graphs=True, activation=4096) as device:
        stages = device.stages
        budget.swap(stages, 224, 3, in_flight=4)  # a burst: 4 workspaces
        assert len(stages.workspaces) == 4
        burst = stages.memory()
        budget.swap(stages, 224, 3, in_flight=1)  # the next batch frees the idle ones beyond depth 2
        assert len(stages.workspaces) == 2 and stages.memory().device < burst.device
        # the stand-in allocates the shared activation blocks; TensorRT those of contexts with their own
        contexts = device.generator.contexts() + device.arcface.contexts()
        reported = stages.memory() + device.generator.memory() + device.arcface.memory()
        assert reported == MemoryUse(**budget.live_bytes(device.gpu)) + MemoryUse(contexts * 4096, 0)
        frames, faces = budget.scene(224, 2)
        latent = np.ones(512, np.float32)
        tickets = [stages.start(frames, faces, latent) for _ in range(MAX_WORKSPACES)]
        with pytest.raises(EngineError, match=f"{MAX_WORKSPACES} batches are in flight"):
            stages.start(frames, faces, latent)
        for ticket in tickets:
            stages.finish(ticket)
    assert not device.gpu.live


def test_graph_contexts_share_their_workspace_activation_memory(monkeypatch, graph_runtime):
    """With graphs for 8 batch sizes, each workspace holds one activation block, not one per graph."""
    with budget.device_stages(monkeypatch, 224, graphs=True, activation=1 << 20) as device:
        for faces in range(1, 9):
            budget.swap(device.stages, 224, faces, in_flight=1)
        ws = device.stages.workspaces[0]
        assert len(ws.graphs) == 8 and ws.activation.buffer.nbytes == 1 << 20
        contexts = [context for _, owned in ws.graphs.values() for context in owned]
        assert not any(context.own_memory for context in contexts)
        assert device.generator.contexts() == 2  # only the slots' own
        assert device.generator.memory() == MemoryUse(2 << 20, 0)


def test_two_contexts_sharing_activation_memory_may_not_run_at_once(monkeypatch, graph_runtime):
    """Planted: the stand-in refuses two contexts that share activation memory on two streams at once."""
    with budget.device_stages(monkeypatch, 224, graphs=False, activation=4096) as device:
        generator = device.generator
        shared = cuda_memory.DeviceBuffer(4096)
        first, second = generator.device_context(shared.ptr), generator.device_context(shared.ptr)
        size = 3 * 224 * 224 * 4
        buffers = {
            name: cuda_memory.DeviceBuffer(n) for name, n in (("target", size), ("latent", 2048), ("swapped", size))
        }
        addresses = {name: b.ptr for name, b in buffers.items()}
        streams = cuda.Stream(), cuda.Stream()
        first.enqueue(addresses, 1, streams[0])
        with pytest.raises(AssertionError, match="sharing activation memory"):
            second.enqueue(addresses, 1, streams[1])
        streams[0].synchronize()
        second.enqueue(addresses, 1, streams[1])  # once the first run is done
        streams[1].synchronize()
        for owner in (*buffers.values(), shared, *streams):
            owner.free()
        for context in (first, second):
            context.free()


def test_engine_graphs_per_slot_are_bounded(gpu_engine):
    """The engine's own graphs (run with cuda_graphs): at most MAX_SLOT_GRAPHS per slot, each with its
    context; the least recently used one is destroyed with its context."""
    engine, cudart_calls = gpu_engine
    for n in (1, 2, 3, 4, 5, 1):
        engine.run({"target": np.ones((n, 3, 224, 224), np.float32), "latent": np.ones((n, 512), np.float32)})
    graphs = [len(slot.graphs) for slot in engine._slots]
    assert max(graphs) == trt_engine.MAX_SLOT_GRAPHS
    assert engine.contexts() == len(engine._slots) + sum(graphs)
    assert any(call[0] == "cudaGraphExecDestroy" for call in cudart_calls)


@pytest.fixture()
def gpu_engine(monkeypatch, plan_bundle):  # noqa: F811
    from support.fake_gpu import install_fake_cuda

    gpu = install_fake_cuda(monkeypatch)
    cudart = fake_cudart(gpu.executed)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    module = strict_runtime_module(lean, IO, fake_generator)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1, cuda_graphs=True) as engine:
        yield engine, gpu.executed
    assert not gpu.live


def test_swapper_memory_sums_its_parts():
    report = SwapperMemory({"generator": MemoryUse(3, 0), "device stages": MemoryUse(5, 7)})
    assert (report.device, report.pinned) == (8, 7)
    assert report.lines()[-1].startswith("total") and len(report.lines()) == 3


def test_doctor_reports_what_a_swapper_on_the_bundle_holds(tiny_bundle, tmp_path, monkeypatch, capsys):
    """`doctor B` with a usable GPU and plans: the swapper's memory per part, TensorRT's activation blocks
    included (2 contexts per plan, 1 MiB each on this stand-in)."""
    from support import device_path
    from support.fake_gpu import install_fake_cuda

    from simswap_trt import cli

    bundle = device_path.plan_bundle(tiny_bundle, tmp_path / "b", roles=("generator", "arcface"))
    install_fake_cuda(monkeypatch)
    monkeypatch.setattr("simswap_trt.jetson.doctor_lines", lambda: [])
    size = bundle.crop_size
    io = [("target", "in", (-1, 3, size, size)), ("latent", "in", (-1, 512)), ("swapped", "out", (-1, 3, size, size))]
    arcface_io = [("crop", "in", (-1, 3, size, size)), ("latent", "out", (-1, 512))]
    plans = {device_path.PLAN_BYTES["arcface"]: (arcface_io, None)}
    module = strict_runtime_module(lean, io, None, plans=plans, activation=1 << 20)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    assert cli.main(["doctor", str(bundle.root)]) == 0
    out = capsys.readouterr().out
    assert "memory      a swapper once loaded" in out
    assert "generator     device      2.0 MiB" in out and "arcface       device      2.0 MiB" in out


def test_bench_reports_what_the_swapper_holds(monkeypatch):
    """`simswap-trt bench`'s memory run records the swapper's report where it holds device or pinned memory."""
    from simswap_build.bench import run as bench_run

    def no_gpu():
        raise EngineError("no GPU")

    class Swapper:
        def __init__(self, parts):
            self.parts = parts

        def swap(self, frame):
            return frame

        def memory(self):
            return SwapperMemory(self.parts)

    monkeypatch.setattr(cuda, "memory_used", no_gpu)
    held = bench_run.memory_run(Swapper({"generator": MemoryUse(4 * MIB, MIB)}), 2)
    assert held["swapper"]["device"] == 4 * MIB and held["swapper"]["parts"]["generator"]["pinned"] == MIB
    assert "swapper" not in bench_run.memory_run(Swapper({}), 2)  # the CPU path holds none
