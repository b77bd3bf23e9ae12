"""The TensorRT backend's logic on a CPU stand-in for the GPU (see fake_gpu), with every TensorRT runtime
attribute it uses checked against the real tensorrt_lean bindings; and the backend choice without a GPU."""

import logging

import numpy as np
import pytest
from support.fake_gpu import fake_cudart, install_fake_cuda
from support.plans import fake_generator
from support.real_gpu import gpu_available

from simswap_trt import FaceSwapper, cuda
from simswap_trt.backends import open_engine
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.engines import tensorrt as trt_engine
from simswap_trt.errors import BundleError, EngineError

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


@pytest.mark.parametrize("total", [1, 4, 5, 6, 17])  # around the profile maximum of 5
def test_batches_are_chunked_staged_and_returned_in_order(plan_bundle, fake_trt, total):
    engine = open_engine(plan_bundle, "generator", "tensorrt")
    assert isinstance(engine, trt_engine.TensorRTEngine)
    assert engine.backend == "tensorrt-lean 11.4.0.106 [Fake H100, fp32]"
    rng = np.random.default_rng(total)
    feeds = {
        "target": rng.random((total, 3, 224, 224), dtype=np.float32),
        "latent": rng.random((total, 512), dtype=np.float32),
    }
    out = engine.run(feeds)["swapped"]
    np.testing.assert_allclose(out, fake_generator(feeds)["swapped"], rtol=1e-6)
    executed = [c[1] for c in fake_trt.calls if c[0] == "execute"]
    assert executed == [min(5, total - i) for i in range(0, total, 5)]
    assert engine.last_gpu_seconds == pytest.approx(len(executed) * 1e-3)  # one event interval per chunk


def test_input_shapes_are_set_only_when_they_change(plan_bundle, fake_trt):
    engine = open_engine(plan_bundle, "generator", "tensorrt")
    feeds = {"target": np.zeros((10, 3, 224, 224), np.float32), "latent": np.zeros((10, 512), np.float32)}
    engine.run(feeds)
    engine.run(feeds)
    shape_calls = [c for c in fake_trt.calls if c[0] == "set_input_shape"]
    assert len(shape_calls) == 4  # two inputs on each of the two slots, then reused
    address_calls = [c for c in fake_trt.calls if c[0] == "set_tensor_address"]
    assert len(address_calls) == 6  # three tensors on each slot's own buffers, bound once


def test_plan_for_another_gpu_is_refused_before_deserializing(plan_bundle, fake_trt, monkeypatch):
    install_fake_cuda(monkeypatch, compute_capability=(8, 6), name="RTX 3090")
    with pytest.raises(EngineError) as info:
        open_engine(plan_bundle, "generator", "tensorrt")
    message = str(info.value)
    assert "built for compute capability 9.0 (Fake H100); RTX 3090 has 8.6" in message
    assert f"rebuild: simswap-build engine {plan_bundle.root} --role generator --precision fp32" in message
    assert not [c for c in fake_trt.calls if c[0] == "deserialize"]


def test_tampered_plan_is_refused_before_deserializing(plan_bundle, fake_trt):
    (plan_bundle.root / plan_bundle.plans[0].file).write_bytes(b"fake serialized plan, modified")
    with pytest.raises(BundleError, match="does not match its manifest sha256; refusing to deserialize"):
        trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0])
    assert not [c for c in fake_trt.calls if c[0] == "deserialize"]


class FakeGpuArray:
    def __init__(self, shape, typestr="<f4", strides=None):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (0xDEAD000, False),
            "strides": strides,
            "version": 3,
        }


def test_caller_owned_gpu_arrays_are_validated():
    spec = trt_engine.TensorSpec("target", "float32", ("batch", 3, 224, 224))
    assert trt_engine.device_pointer(FakeGpuArray((2, 3, 224, 224)), spec, "target") == (0xDEAD000, (2, 3, 224, 224))
    with pytest.raises(EngineError, match="GPU array is float16, the engine wants float32"):
        trt_engine.device_pointer(FakeGpuArray((2, 3, 224, 224), "<f2"), spec, "target")
    with pytest.raises(EngineError, match="must be C-contiguous"):
        trt_engine.device_pointer(FakeGpuArray((2, 3, 224, 224), strides=(4, 8, 16, 32)), spec, "target")
    with pytest.raises(EngineError, match="expected a GPU array with __cuda_array_interface__, got ndarray"):
        trt_engine.device_pointer(np.zeros((2, 3, 224, 224), np.float32), spec, "target")


@pytest.mark.skipif(gpu_available(), reason="checks the situation of a machine without a usable GPU")
def test_without_a_gpu_tensorrt_is_an_error_and_auto_says_why(plan_bundle, caplog):
    """The real situation of this machine: tensorrt_lean and cuda-python installed, no driver or GPU."""
    with pytest.raises(EngineError, match="no usable CUDA device for TensorRT: cudaGetDeviceCount failed"):
        open_engine(plan_bundle, "generator", "tensorrt")
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        engine = open_engine(plan_bundle, "generator", "auto")
    assert isinstance(engine, OnnxRuntimeEngine)
    assert (
        "auto: the generator runs on ONNX Runtime because TensorRT cannot run it: no usable CUDA device" in caplog.text
    )
    assert any(r.levelno == logging.WARNING for r in caplog.records)  # a plan exists, so this deserves a warning


def test_auto_without_plans_is_onnxruntime_and_says_so(tiny_bundle, caplog):
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        swapper = FaceSwapper.from_bundle(tiny_bundle.root, backend="auto")
    assert swapper.generator.backend.startswith("onnxruntime")
    assert "the bundle has no TensorRT plan for the generator" in caplog.text
    with pytest.raises(EngineError, match="the bundle has no TensorRT plan for the generator"):
        FaceSwapper.from_bundle(tiny_bundle.root, backend="tensorrt")


def test_submit_and_collect_across_calls(plan_bundle, fake_trt):
    engine = open_engine(plan_bundle, "generator", "tensorrt")
    rng = np.random.default_rng(7)
    batches = [
        {"target": rng.random((n, 3, 224, 224), dtype=np.float32), "latent": rng.random((n, 512), dtype=np.float32)}
        for n in (3, 5, 2)
    ]
    first, second = engine.submit(batches[0]), engine.submit(batches[1])
    with pytest.raises(EngineError, match="all 2 slots are in flight: collect the oldest ticket first"):
        engine.submit(batches[2])
    with pytest.raises(EngineError, match="still in flight"):
        engine.run(batches[2])
    np.testing.assert_allclose(engine.collect(first)["swapped"], fake_generator(batches[0])["swapped"], rtol=1e-6)
    third = engine.submit(batches[2])
    np.testing.assert_allclose(engine.collect(second)["swapped"], fake_generator(batches[1])["swapped"], rtol=1e-6)
    np.testing.assert_allclose(engine.collect(third)["swapped"], fake_generator(batches[2])["swapped"], rtol=1e-6)
    with pytest.raises(EngineError, match="ticket 0 was already collected"):
        engine.collect(first)
    with pytest.raises(EngineError, match="at most the profile maximum"):
        engine.submit({k: np.concatenate([v, v]) for k, v in batches[1].items()})
    engine.run(batches[0])  # all collected: run may use the slots again


def test_synchronous_backends_offer_the_same_submit_collect(tiny_bundle):
    engine = OnnxRuntimeEngine(tiny_bundle.path_of("arcface"), threads=1)
    crops = np.zeros((2, 3, 224, 224), np.float32)
    np.testing.assert_array_equal(
        engine.collect(engine.submit({"crop": crops}))["latent"], engine.run({"crop": crops})["latent"]
    )


def test_cuda_graphs_each_own_a_context_and_are_destroyed_on_close(plan_bundle, fake_trt, monkeypatch):
    cudart = fake_cudart(fake_trt.calls)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    engine = trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1, cuda_graphs=True)
    rng = np.random.default_rng(3)
    for n in (2, 2, 3, 2, 2):
        feeds = {"target": rng.random((n, 3, 224, 224), dtype=np.float32), "latent": rng.random((n, 512), np.float32)}
        np.testing.assert_allclose(engine.run(feeds)["swapped"], fake_generator(feeds)["swapped"], rtol=1e-6)
    steps = [c[0] for c in fake_trt.calls if c[0] in ("execute", "end capture", "graph launch")]
    # batch 2: run on its own context, capture; replay; batch 3 likewise; batch 2 again: its context was
    # never changed, so it replays at once (the stand-in refuses a replay after its context changed)
    assert steps == ["execute", "execute", "end capture", "graph launch", "execute", "execute", "end capture"] + [
        "graph launch",
        "graph launch",
    ]
    engine.close()
    engine.close()  # idempotent
    destroyed = [c for c in fake_trt.calls if c[0] in ("cudaGraphExecDestroy", "cudaGraphDestroy")]
    assert sorted(destroyed) == [("cudaGraphDestroy", 1), ("cudaGraphDestroy", 2)] + [
        ("cudaGraphExecDestroy", 1),
        ("cudaGraphExecDestroy", 2),
    ]


def test_a_failed_capture_leaves_the_stream_usable(plan_bundle, fake_trt, monkeypatch):
    cudart = fake_cudart(fake_trt.calls)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1, cuda_graphs=True) as engine:
        context = engine._slots[0].context.context
        execute = type(context).execute_async_v3

        def refuses_under_capture(self, handle):
            if fake_trt.calls[-1][0] == "execute":  # the second enqueue in a row is the capture
                raise RuntimeError("operation not permitted when stream is capturing")
            return execute(self, handle)

        monkeypatch.setattr(type(context), "execute_async_v3", refuses_under_capture)
        feeds = {"target": np.ones((2, 3, 224, 224), np.float32), "latent": np.ones((2, 512), np.float32)}
        for _ in range(2):
            np.testing.assert_allclose(engine.run(feeds)["swapped"], fake_generator(feeds)["swapped"], rtol=1e-6)
        assert [c[0] for c in fake_trt.calls].count("end capture") == 1  # tried once, then plain enqueues
        assert 2 in engine._slots[0].graphs.failed


def test_alternating_batch_sizes_replay_their_own_graphs_bit_for_bit(plan_bundle, fake_trt, monkeypatch):
    """Batches of 1, 3, 2, 3, 1: every size replays the graph captured on its own context, equal to the
    eager engine's output bit for bit; no context is changed after a graph was captured on it."""
    cudart = fake_cudart(fake_trt.calls)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    rng = np.random.default_rng(4)
    sizes = (1, 3, 2, 3, 1, 2)
    batches = [
        {"target": rng.random((n, 3, 224, 224), dtype=np.float32), "latent": rng.random((n, 512), np.float32)}
        for n in sizes
    ]
    with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1) as eager:
        expected = [eager.run(feeds)["swapped"] for feeds in batches]
    before = len(fake_trt.calls)
    with trt_engine.TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], depth=1, cuda_graphs=True) as graphed:
        got = [graphed.run(feeds)["swapped"] for feeds in batches]
        assert sorted(graphed._slots[0].graphs) == [1, 2, 3]
        contexts = {id(context) for _, owned in graphed._slots[0].graphs.values() for context in owned}
        assert len(contexts) == 3  # one context per graph
    steps = [c[0] for c in fake_trt.calls[before:] if c[0] in ("end capture", "graph launch")]
    assert steps == ["end capture"] * 3 + ["graph launch"] * 3
    for want, have in zip(expected, got, strict=True):
        assert np.array_equal(want, have)
