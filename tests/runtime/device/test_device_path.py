"""The device path of FaceSwapper end to end on the CPU stand-in of the GPU (tests/support/fake_gpu.py): the real
runtime code (DeviceStages, TensorRTEngine, the cuda layer's calls, kernel argument packing) with the
kernels' math from the host build, ONNX Runtime behind a TensorRT-shaped engine, and streams that run out
of order unless events order them. The host path (OpenCV/NumPy, ONNX Runtime) is the reference."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from support.device_path import face, install_device, latent, plan_bundle, scenes
from support.fake_gpu import FakeStream

from simswap_build.convert.architectures import GeneratorConfig
from simswap_trt import FaceSwapper, cuda
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.device.stages import DeviceStages
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.engines import tensorrt as trt_engine
from simswap_trt.errors import EngineError
from simswap_trt.swapper import FrameBatch
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.warp import warp_faces

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


@pytest.fixture(scope="module")
def bundle_512(tmp_path_factory):
    from support.tiny import TINY_ARCFACE

    from simswap_build.convert.bundle import untrained_bundle

    config = GeneratorConfig.from_name("512", ngf=8, n_blocks=1)
    return untrained_bundle(tmp_path_factory.mktemp("b512") / "b", "512", generator_config=config,
                            arcface_config=TINY_ARCFACE)  # fmt: skip


@pytest.mark.parametrize("size", [224, 512])
def test_device_path_equals_the_host_path(size, tiny_bundle, bundle_512, host, monkeypatch, tmp_path, caplog):
    bundle = plan_bundle(tiny_bundle if size == 224 else bundle_512, tmp_path / "b", max_batch=3)
    host_swapper = FaceSwapper(
        bundle, OnnxRuntimeEngine(bundle.path_of("generator"), threads=2), OnnxRuntimeEngine(bundle.path_of("arcface"))
    )
    gpu, module = install_device(monkeypatch, host, bundle)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        device = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto")
    assert "stages: device (fused CUDA kernels" in caplog.text and device.stages.startswith("device")
    host_swapper.source_latent = device.source_latent = latent()

    batches = scenes(size, bundle.alignment)
    expected = [host_swapper.swap_faces(images, faces) for images, faces in batches]
    got = list(device.swap_stream(FrameBatch(images, faces) for images, faces in batches))
    for want_batch, got_batch, (images, _) in zip(expected, got, batches, strict=True):
        for want, result, image in zip(want_batch, got_batch, images, strict=True):
            assert np.abs(result.image.astype(int) - want.image).max() <= 1
            assert [f.swapped for f in result.faces] == [f.swapped for f in want.faces]
            assert result.image is not image
    assert np.abs(got[0][0].image.astype(int) - batches[0][0][0]).max() > 50  # faces were really swapped
    assert np.array_equal(got[0][2].image, batches[0][0][2])  # the frame without faces is unchanged
    # 7 faces in 2 batches, at most 3 per plan call: 3 + 2 (first batch's 5) and 2
    assert [c[1] for c in module.calls if c[0] == "execute"] == [3, 2, 2]
    assert gpu.executed.count("simswap_preprocess_kernel") == gpu.executed.count("simswap_pasteback_kernel") == 2
    device.close()
    assert not gpu.live  # every buffer, stream and event was released


def test_a_missing_event_wait_fails(tiny_bundle, host, monkeypatch, tmp_path):
    """The stand-in runs unordered work out of order: without the waits the output is garbage."""
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    install_device(monkeypatch, host, bundle)
    (images, faces), _ = scenes(224, bundle.alignment)
    results = {}
    for ordered in (True, False):
        if not ordered:
            monkeypatch.setattr(FakeStream, "wait", lambda self, event: None)
        swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto")
        swapper.source_latent = latent()
        results[ordered] = swapper.swap_faces(images, faces)[0].image
        swapper.generator.close()  # unordered, its queued runs would read buffers the stages free first
        swapper.close()
    assert np.abs(results[True].astype(int) - results[False]).max() > 50


def test_stages_are_chosen_by_the_generator_backend(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime") as swapper:
        assert swapper.stages.startswith("host")
    install_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", device_path=False) as swapper:
        assert swapper.stages.startswith("host")
    with pytest.raises(Exception, match="the device path cannot run: the generator runs on onnxruntime"):
        FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime", device_path=True)


def test_close_releases_everything_and_is_idempotent(tiny_bundle, host, monkeypatch, tmp_path):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    gpu, _ = install_device(monkeypatch, host, bundle)
    mine = SimpleNamespace(engine=OnnxRuntimeEngine(bundle.path_of("arcface")))  # a detector the caller owns
    swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", detector=mine)
    swapper.source_latent = latent()
    (images, faces), _ = scenes(224, bundle.alignment)
    in_flight = swapper.start_batch(images, faces)  # closing waits for work still in flight
    assert gpu.live
    swapper.close()
    assert not gpu.live
    assert not any(s.ops for s in gpu.streams.values())  # the queued work ran before the memory was freed
    swapper.close()
    with pytest.raises(EngineError, match="closed"):
        swapper.generator.run(
            {"target": np.zeros((1, 3, 224, 224), np.float32), "latent": np.zeros((1, 512), np.float32)}
        )
    with pytest.raises(EngineError, match="closed"):
        swapper.arcface.run({"crop": np.zeros((1, 3, 224, 224), np.float32)})
    assert mine.engine.run({"crop": np.zeros((1, 3, 224, 224), np.float32)})["latent"].shape == (1, 512)
    assert in_flight.chosen


def test_chunks_below_the_profile_minimum_are_padded(tiny_bundle, host, monkeypatch, tmp_path):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b", min_batch=2, max_batch=4)
    _, module = install_device(monkeypatch, host, bundle, batch_range=(2, 4))
    reference = OnnxRuntimeEngine(bundle.path_of("generator"), threads=2)
    rng = np.random.default_rng(0)
    feeds = {"target": rng.random((5, 3, 224, 224), dtype=np.float32), "latent": np.tile(latent(), (5, 1))}
    with trt_engine.TensorRTEngine(bundle.root, bundle.plans[0]) as engine:
        out = engine.run(feeds)["swapped"]
        np.testing.assert_allclose(out, reference.run(feeds)["swapped"], atol=1e-5)
        assert [c[1] for c in module.calls if c[0] == "execute"] == [4, 2]  # 4 + 1 padded to 2
        with pytest.raises(EngineError, match=r"batch 1 is outside the plan's profile 2..4 \(pad it up"):
            engine.execute_device({"target": 1, "latent": 2, "swapped": 3}, 1, cuda.Stream())
        engine._slots[0].context.batch = -1
        with pytest.raises(EngineError, match="TensorRT refused shape"):
            engine._slots[0].context.set_batch(7)
        # the device path pads too: one face, a profile minimum of 2
        swapper = FaceSwapper(bundle, engine, OnnxRuntimeEngine(bundle.path_of("arcface")))
        swapper.source_latent = latent()
        image = scenes(224, bundle.alignment)[1][0][0]
        one_face = swapper.swap_faces([image], [[face((150, 100), 140, 0, 224, bundle.alignment)]])[0]
        assert one_face.faces[0].swapped and np.abs(one_face.image.astype(int) - image).max() > 50
        assert [c[1] for c in module.calls if c[0] == "execute"][-1] == 2


def test_run_device_checks_every_batch_and_orders_itself_on_the_callers_stream(
    tiny_bundle, host, monkeypatch, tmp_path
):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b", max_batch=4)
    gpu, _ = install_device(monkeypatch, host, bundle)
    reference = OnnxRuntimeEngine(bundle.path_of("generator"), threads=2)
    rng = np.random.default_rng(1)
    feeds = {"target": rng.random((3, 3, 224, 224), dtype=np.float32), "latent": np.tile(latent(), (3, 1))}

    class Array:  # a caller-owned GPU array on the stand-in
        def __init__(self, shape):
            self.buffer = cuda_memory.DeviceBuffer(int(np.prod(shape)) * 4)
            self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "data": (self.buffer.ptr, False)}

    with trt_engine.TensorRTEngine(bundle.root, bundle.plans[0]) as engine:
        caller = cuda.Stream()
        arrays = {name: Array(value.shape) for name, value in feeds.items()}
        out = Array((3, 3, 224, 224))
        with pytest.raises(EngineError, match="every array must hold the same batch"):
            engine.run_device(arrays, {"swapped": Array((2, 3, 224, 224))}, caller.handle)
        pinned = {name: cuda_memory.PinnedBuffer(value.shape, np.float32) for name, value in feeds.items()}
        for name, value in feeds.items():  # the producer: uploads on the caller's stream
            pinned[name].array[...] = value
            arrays[name].buffer.upload(pinned[name].array, caller)
        engine.run_device(arrays, {"swapped": out}, caller.handle)
        result = cuda_memory.PinnedBuffer((3, 3, 224, 224), np.float32)
        out.buffer.download(result.array, caller)  # the consumer, on the caller's stream
        caller.synchronize()
        np.testing.assert_allclose(result.array, reference.run(feeds)["swapped"], atol=1e-5)
    assert gpu.executed.index("execute") > max(i for i, kind in enumerate(gpu.executed) if kind == "upload")


def test_dla_plans_run_on_their_core(tiny_bundle, host, monkeypatch, tmp_path):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b", dla_core=1)
    _, module = install_device(monkeypatch, host, bundle)
    module.Runtime.num_DLA_cores = 2  # an Orin
    with trt_engine.TensorRTEngine(bundle.root, bundle.plans[0]):
        pass
    assert ("DLA_core", 1) in module.calls
    assert module.calls.index(("DLA_core", 1)) < next(i for i, c in enumerate(module.calls) if c[0] == "deserialize")


def test_device_stages_refuse_a_non_float_generator():
    class Spec:
        def __init__(self, name, dtype):
            self.name, self.dtype = name, dtype

        def describe(self):
            return f"{self.name}: {self.dtype}"

    class Generator:
        inputs, outputs = (Spec("target", "uint8"), Spec("latent", "float32")), (Spec("swapped", "float32"),)

    with pytest.raises(EngineError, match="needs float32/float16 images and a float32 latent, got target: uint8"):
        DeviceStages(Generator(), 224, kernels=object())


def test_aligned_crops_on_the_device_equal_the_host_path(tiny_bundle, host, monkeypatch, tmp_path):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b", min_batch=1, max_batch=2)
    crops = np.random.default_rng(5).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime") as host_swapper:
        expected = host_swapper.swap_aligned(crops, latent())
    gpu, module = install_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as swapper:
        assert swapper.stages.startswith("device")
        np.testing.assert_array_equal(swapper.swap_aligned(crops, latent()), expected)  # same input tensor
        assert [c[1] for c in module.calls if c[0] == "execute"] == [2, 1]
        with pytest.raises(Exception, match=r"latents must be \[512\] or \[3, 512\]"):
            swapper.swap_aligned(crops, np.zeros(7, np.float32))
    assert gpu.executed.count("simswap_preprocess_kernel") == 1


def test_more_batches_in_flight_than_workspaces(tiny_bundle, host, monkeypatch, tmp_path):
    """Each batch in flight keeps its workspace (its downloaded regions) until it is finished."""
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    host_swapper = FaceSwapper(
        bundle, OnnxRuntimeEngine(bundle.path_of("generator"), threads=2), OnnxRuntimeEngine(bundle.path_of("arcface"))
    )
    host_swapper.source_latent = latent()
    install_device(monkeypatch, host, bundle)
    first, second = scenes(224, bundle.alignment)
    batches = [first, second, (second[0][::-1], second[1][::-1]), first]
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as swapper:
        swapper.source_latent = latent()
        got = list(swapper.swap_stream((FrameBatch(i, f) for i, f in batches), depth=3))
    for (images, faces), results in zip(batches, got, strict=True):
        for want, result in zip(host_swapper.swap_faces(images, faces), results, strict=True):
            assert np.abs(result.image.astype(int) - want.image).max() <= 1


def test_reference_selection_with_arcface_on_the_device(tiny_bundle, host, monkeypatch, tmp_path):
    """With an ArcFace plan, the faces are preprocessed straight into its input on the device."""
    bundle = plan_bundle(tiny_bundle, tmp_path / "b", roles=("generator", "arcface"))
    (images, faces), _ = scenes(224, bundle.alignment)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime") as host_swapper:
        matrix = alignment_matrix(faces[1][1].landmarks, bundle.alignment, 224)
        reference = host_swapper.identity(warp_faces(images, [(1, matrix)], 224))  # the second frame's 2nd face
        host_swapper.source_latent, host_swapper.reference_latent = latent(), reference
        expected = host_swapper.similarities(images, faces)
        ranked = np.sort(np.concatenate(expected))
        threshold = float(ranked[3] + ranked[4]) / 2  # the reference face only (an untrained ArcFace finds
        assert ranked[4] - ranked[3] > 1e-3  # every face alike: all similarities are near 1)
        want = host_swapper.swap_faces(images, faces, "reference", threshold)
    gpu, module = install_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="tensorrt") as swapper:
        assert swapper.arcface.backend.startswith("tensorrt") and swapper.stages.startswith("device")
        swapper.source_latent, swapper.reference_latent = latent(), reference
        for got, exp in zip(swapper.similarities(images, faces), expected, strict=True):
            np.testing.assert_allclose(got, exp, atol=1e-5)  # crops equal but for rare one-level pixels
        results = swapper.swap_faces(images, faces, "reference", threshold)
    for result, w in zip(results, want, strict=True):
        assert [f.swapped for f in result.faces] == [f.swapped for f in w.faces]
        assert np.abs(result.image.astype(int) - w.image).max() <= 1
    arcface_runs = [c for c in module.calls if c[0] == "execute" and c[2] == ("crop", "latent")]
    assert [c[1] for c in arcface_runs] == [3, 2, 3, 2]  # 5 faces, at most 3 per call; twice
    assert gpu.executed.count("simswap_preprocess_kernel") == 3  # twice for ArcFace, once for the generator
