"""The parsing-mask blend on the device path: the face parser runs on the host on the target crops downloaded
from the device, and the blend (host build of the kernel here) rewrites the generator output before the
paste-back. Reference: the host path with the same parser (OpenCV/NumPy, ONNX Runtime)."""

import ctypes
import logging

import numpy as np
import pytest
from test_device_path import install_device, latent, plan_bundle, scenes
from test_pipeline import fake_parser

from benchmarks.gpu_check import content_parser
from simswap_trt import FaceSwapper
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.vision.parsing import FaceParser

pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


def swap_both_ways(bundle, parser, monkeypatch, host, batches):
    host_swapper = FaceSwapper(
        bundle,
        OnnxRuntimeEngine(bundle.path_of("generator"), threads=2),
        OnnxRuntimeEngine(bundle.path_of("arcface")),
        parser=parser,
    )
    host_swapper.source_latent = latent()
    expected = [host_swapper.swap_faces(images, faces) for images, faces in batches]
    gpu, _ = install_device(monkeypatch, host, bundle)
    with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", parser=parser) as device:
        assert device.stages.startswith("device")
        device.source_latent = latent()
        got = [device.swap_faces(images, faces) for images, faces in batches]
    assert not gpu.live
    return expected, got, gpu


def test_device_path_with_a_parser_equals_the_host_path(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    parser = FaceParser(content_parser(tmp_path / "parser.onnx"), threads=2)
    batches = scenes(224, bundle.alignment)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        expected, got, gpu = swap_both_ways(bundle, parser, monkeypatch, host, batches)
    assert "face parser: onnxruntime" in caplog.text and "blend runs on the device" in caplog.text
    assert "pre- and post-processing run on the host" not in caplog.text
    for want_batch, got_batch in zip(expected, got, strict=True):
        for want, result in zip(want_batch, got_batch, strict=True):
            assert np.abs(result.image.astype(int) - want.image).max() <= 1
    assert gpu.executed.count("simswap_parsing_blend_kernel") == 2  # once per batch
    # the blend changed the swaps: the host path without a parser differs
    plain = FaceSwapper(
        bundle, OnnxRuntimeEngine(bundle.path_of("generator"), threads=2), OnnxRuntimeEngine(bundle.path_of("arcface"))
    )
    plain.source_latent = latent()
    unblended = plain.swap_faces(*batches[0])[0].image
    assert np.abs(got[0][0].image.astype(int) - unblended).max() > 20


def test_faces_without_a_parsing_mask_are_pasted_unblended(tiny_bundle, host, monkeypatch, tmp_path):
    bundle = plan_bundle(tiny_bundle, tmp_path / "b")
    nothing = FaceParser(fake_parser(tmp_path / "none.onnx", (0, 0, 2, 2)), threads=1)  # below the minimum mask
    batches = scenes(224, bundle.alignment)[:1]
    expected, got, gpu = swap_both_ways(bundle, nothing, monkeypatch, host, batches)
    for want, result in zip(expected[0], got[0], strict=True):
        assert np.abs(result.image.astype(int) - want.image).max() <= 1
    assert "simswap_parsing_blend_kernel" not in gpu.executed


def half(values):
    return values.astype(np.float16)


@pytest.mark.parametrize("half_in,half_out", [(False, False), (True, False), (False, True), (True, True)])
def test_parsing_blend_kernel_math(host, half_in, half_out):
    """The host build of the kernel against NumPy: float32 bit for bit as the host path's expression; the
    float16 buffers read and written with IEEE round to nearest even (NumPy's float16)."""
    rng = np.random.default_rng(7)
    size, count = 20, 3
    swapped = rng.random((count, 3, size, size), dtype=np.float32)
    targets = rng.random((count, 3, size, size), dtype=np.float32)
    masks = rng.random((2, size, size), dtype=np.float32)
    masks[0, :5] = 0.0
    masks[1, -5:] = 1.0
    faces = np.array([2, 0], np.int32)  # face 1 has no mask
    out = half(swapped) if half_out else swapped.copy()
    tgt = half(targets) if half_in else targets
    host.simswap_parsing_blend_host.restype = None
    host.simswap_parsing_blend_host(
        ctypes.c_void_p(out.ctypes.data), ctypes.c_int(half_out), ctypes.c_void_p(tgt.ctypes.data),
        ctypes.c_int(half_in), ctypes.c_void_p(masks.ctypes.data), ctypes.c_void_p(faces.ctypes.data),
        ctypes.c_int(2), ctypes.c_int(size),
    )  # fmt: skip
    s = (half(swapped) if half_out else swapped).astype(np.float32)
    t = tgt.astype(np.float32)
    expected = s.copy()
    for k, face in enumerate(faces):
        expected[face] = s[face] * masks[k] + t[face] * (np.float32(1) - masks[k])
    if half_out:
        expected = half(expected)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[1], half(swapped[1]) if half_out else swapped[1])  # untouched
