"""CUDA graphs over a batch's whole device sequence (preprocess launch, generator runs, paste-back launch) on
the CPU stand-in: the stand-in's graph capture records the work enqueued on the stream and a launch enqueues
it again, so a replay computes with the captured kernel arguments and plan bindings on the memory as it is
then. Reference: the same swapper without graphs, and the host path."""

import logging

import numpy as np
import pytest
from support import fake_gpu
from support.device_path import install_device, latent, plan_bundle, scenes
from support.fake_gpu import fake_cudart
from support.parser_standin import fake_parser

from simswap_trt import FaceSwapper, cuda
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.vision.parsing import FaceParser

pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


def graph_device(monkeypatch, host, bundle):
    gpu, module = install_device(monkeypatch, host, bundle)
    cudart = fake_cudart(module.calls)
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    return gpu, module


def run(swapper, module, batches):
    """Swap each batch; returns the results and, per batch, whether it captured, replayed or ran eagerly."""
    results, kinds = [], []
    for images, faces in batches:
        before = len(module.calls)
        results.append(swapper.swap_faces(images, faces))
        new = [c[0] for c in module.calls[before:]]
        kinds.append("capture" if "end capture" in new else "replay" if "graph launch" in new else "eager")
    return results, kinds


def test_replays_equal_the_eager_sequence_and_a_new_batch_size_captures_a_new_graph(
    tiny_bundle, host, monkeypatch, tmp_path
):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")  # at most 3 faces per plan run
    a, b = scenes(224, bundle.alignment)  # 5 faces (chunks 3 + 2) and 2 faces (one chunk of 2)
    batches = [a, a, b, b, a, a]
    host_swapper = FaceSwapper(
        bundle, OnnxRuntimeEngine(bundle.path_of("generator"), threads=2), OnnxRuntimeEngine(bundle.path_of("arcface"))
    )
    host_swapper.source_latent = latent()
    gpu, module = graph_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as eager:
        eager.source_latent = latent()
        expected, kinds = run(eager, module, batches)
    assert kinds == ["eager"] * 6
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", cuda_graphs=True) as graphed:
        graphed.source_latent = latent()
        got, kinds = run(graphed, module, batches)
        # a new batch size captures its graph on contexts of its own; a size seen before replays at once
        assert kinds == ["capture", "replay", "capture", "replay", "replay", "replay"]
        assert len(graphed._stages.workspaces[0].graphs) == 2
    for want_batch, got_batch, (images, faces) in zip(expected, got, batches, strict=True):
        for want, result, reference in zip(want_batch, got_batch, host_swapper.swap_faces(images, faces), strict=True):
            np.testing.assert_array_equal(result.image, want.image)
            assert np.abs(result.image.astype(int) - reference.image).max() <= 1
    assert np.abs(got[1][0].image.astype(int) - a[0][0]).max() > 50  # the replays really swapped
    destroyed = [c for c in module.calls if c[0] == "cudaGraphExecDestroy"]
    assert len(destroyed) == 2 and not gpu.live  # close() destroyed both graphs and freed everything


def test_a_replay_reads_the_new_frames(tiny_bundle, host, monkeypatch, tmp_path):
    """Same geometry, other pixels: the replayed graph reads the tables and frames uploaded for this batch."""
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    (images, faces), _ = scenes(224, bundle.alignment)
    brighter = [np.clip(i.astype(int) + 40, 0, 255).astype(np.uint8) for i in images]
    _, module = graph_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as eager:
        eager.source_latent = latent()
        want = eager.swap_faces(brighter, faces)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", cuda_graphs=True) as graphed:
        graphed.source_latent = latent()
        got, kinds = run(graphed, module, [(images, faces), (brighter, faces)])
    assert kinds == ["capture", "replay"]
    for w, g in zip(want, got[1], strict=True):
        np.testing.assert_array_equal(g.image, w.image)


def test_a_failed_capture_leaves_the_stream_usable(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    a, _ = scenes(224, bundle.alignment)
    _, module = graph_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as eager:
        eager.source_latent = latent()
        expected = eager.swap_faces(*a)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", cuda_graphs=True) as graphed:
        graphed.source_latent = latent()
        context = graphed._stages.generator.device_context()
        execute = type(context.context).execute_async_v3

        def refuses_under_capture(self, handle):
            if fake_gpu.GPU.streams[handle].capture is not None:
                raise RuntimeError("operation not permitted when stream is capturing")
            return execute(self, handle)

        monkeypatch.setattr(type(context.context), "execute_async_v3", refuses_under_capture)
        with caplog.at_level(logging.INFO, logger="simswap_trt"):
            got, kinds = run(graphed, module, [a, a, a])
        assert not graphed._stages.workspaces[0].graphs
    assert "CUDA graph capture failed: RuntimeError: operation not permitted" in caplog.text
    ended = [c[0] for c in module.calls if c[0] in ("end capture", "graph launch")]
    assert kinds[1:] == ["eager", "eager"] and ended == ["end capture"]  # ended, never retried nor replayed
    for results in got:
        for want, result in zip(expected, results, strict=True):
            np.testing.assert_array_equal(result.image, want.image)


def test_no_graphs_with_a_host_parser(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    parser = FaceParser(fake_parser(tmp_path / "parser.onnx", (128, 128, 384, 384)), threads=1)
    _, module = graph_device(monkeypatch, host, bundle)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", parser=parser, cuda_graphs=True)
    assert "CUDA graphs of the whole per-batch sequence: off (face parser)" in caplog.text
    swapper.source_latent = latent()
    _, kinds = run(swapper, module, [scenes(224, bundle.alignment)[0]] * 2)
    assert kinds == ["eager", "eager"]
    swapper.close()


@pytest.mark.parametrize("failing", ["cudaStreamBeginCapture", "cudaGraphInstantiate"])
def test_capture_errors_are_graph_capture_errors_and_the_stream_stays_usable(failing, monkeypatch):
    """What makes a failed capture fall back to the eager sequence instead of failing the swap."""
    gpu = fake_gpu.install_fake_cuda(monkeypatch)
    calls = []
    cudart = fake_cudart(calls)
    refused = 900  # cudaErrorStreamCaptureUnsupported
    cudart.cudaGetErrorName = lambda error: (cudart.cudaError_t.cudaSuccess, b"cudaErrorStreamCaptureUnsupported")
    monkeypatch.setattr(cudart, failing, lambda *args: (refused, None))
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    stream, done = cuda.Stream(), []
    with pytest.raises(cuda.GraphCaptureError, match="capture failed: .*cudaErrorStreamCaptureUnsupported"):
        cuda.Graph.capture(stream, lambda: fake_gpu.GPU.enqueue(stream.handle, "work", lambda: done.append(1)))
    assert stream.capture is None  # not left capturing
    destroyed = [c[0] for c in calls if c[0] == "cudaGraphDestroy"]
    assert destroyed == (["cudaGraphDestroy"] if failing == "cudaGraphInstantiate" else [])  # a graph made, freed
    fake_gpu.GPU.enqueue(stream.handle, "work", lambda: done.append(2))
    stream.synchronize()
    assert done == [2]  # the captured work never ran; later work runs
    stream.free()
    assert not gpu.live


def test_alternating_face_counts_replay_their_own_graphs_bit_for_bit(tiny_bundle, host, monkeypatch, tmp_path):
    """1, 3, 2, 3, 1 faces per batch (as in a video whose face count changes): each count is captured once
    on generator contexts of its own and replayed later, equal to the eager sequence bit for bit; the
    stand-in refuses a replay whose context changed after the capture."""
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    (images, faces), _ = scenes(224, bundle.alignment)
    # the first batch of 3 sizes the staging buffers, so that the later batches keep their addresses
    batches = [(images, [faces[0][:count]] + [[] for _ in images[1:]]) for count in (3, 1, 3, 2, 3, 1)]
    gpu, module = graph_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto") as eager:
        eager.source_latent = latent()
        expected, _ = run(eager, module, batches)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", cuda_graphs=True) as graphed:
        graphed.source_latent = latent()
        got, kinds = run(graphed, module, batches)
        graphs = graphed._stages.workspaces[0].graphs
        owned = [id(context) for _, contexts in graphs.values() for context in contexts]
        assert len(set(owned)) == len(owned) == len(graphs)  # one context per graph (one chunk each)
    assert kinds == ["capture", "capture", "replay", "capture", "replay", "replay"]
    for want_batch, got_batch in zip(expected, got, strict=True):
        for want, result in zip(want_batch, got_batch, strict=True):
            np.testing.assert_array_equal(result.image, want.image)
    assert not gpu.live
