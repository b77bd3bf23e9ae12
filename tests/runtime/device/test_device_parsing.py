"""The parsing-mask blend on the device path: the face parser runs on its TensorRT plan when the bundle has
one for it (input and labels kernels on the device), else on the host on the target crops downloaded from the
device; the blend (host build of the kernels here) rewrites the generator output before the paste-back.
Reference: the host path with the same parser (OpenCV/NumPy, ONNX Runtime)."""

import ctypes
import logging
import shutil

import numpy as np
import pytest
from support.device_path import PLAN_BYTES, install_device, latent, plan_bundle, scenes
from support.parser_standin import fake_parser

from benchmarks.gpu_check.standins import content_parser
from simswap_trt import FaceSwapper
from simswap_trt.bundle import Bundle
from simswap_trt.constants import IMAGENET_MEAN, IMAGENET_STD
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.schema import sha256_of
from simswap_trt.swapper import FrameBatch
from simswap_trt.vision.parsing import FaceParser

pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


def host_swaps(bundle, parser, batches):
    """The host stages' swaps of ``batches`` with ``parser`` (the reference for the device path)."""
    host_swapper = FaceSwapper(
        bundle,
        OnnxRuntimeEngine(bundle.path_of("generator"), threads=2),
        OnnxRuntimeEngine(bundle.path_of("arcface")),
        parser=parser,
    )
    host_swapper.source_latent = latent()
    return [host_swapper.swap_faces(images, faces) for images, faces in batches]


def swap_both_ways(bundle, parser, monkeypatch, host, batches):
    expected = host_swaps(bundle, parser, batches)
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


def parser_bundle(tiny_bundle, tmp_path, parser_file):
    """A bundle with the parser graph of ``parser_file`` and (fake) plans for the generator and the parser."""
    from simswap_build.graphs.parser import add_parser

    shutil.copytree(tiny_bundle.root, tmp_path / "with-parser")
    add_parser(tmp_path / "with-parser", parser_file)
    return plan_bundle(Bundle.load(tmp_path / "with-parser"), tmp_path / "b", roles=("generator", "parser"))


def test_the_parser_plan_runs_on_the_device(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    parser_file = content_parser(tmp_path / "parser.onnx")
    bundle = parser_bundle(tiny_bundle, tmp_path, parser_file)
    assert bundle.parser.source["sha256"] == sha256_of(parser_file)
    parser = FaceParser(parser_file, threads=2)
    batches = scenes(224, bundle.alignment)
    expected = host_swaps(bundle, parser, batches)
    parser_io = [("input", "in", (-1, 3, 512, 512)), ("logits", "out", (-1, 19, 512, 512))]
    plan = OnnxRuntimeEngine(bundle.path_of("parser"), threads=2).run  # the plan "runs" the bundle's graph
    gpu, module = install_device(monkeypatch, host, bundle, plans={PLAN_BYTES["parser"]: (parser_io, plan)})
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        device = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", parser=parser)
    assert "face parser: tensorrt" in caplog.text and "on the device (input and labels kernels" in caplog.text
    device.source_latent = latent()
    got = list(device.swap_stream(FrameBatch(images, faces) for images, faces in batches))
    for want_batch, got_batch in zip(expected, got, strict=True):
        for want, result in zip(want_batch, got_batch, strict=True):
            assert np.abs(result.image.astype(int) - want.image).max() <= 1
    parser_runs = [c[1] for c in module.calls if c[0] == "execute" and c[2] == ("input", "logits")]
    assert parser_runs == [3, 2, 2]  # 5 faces (at most 3 per plan run), then 2
    for kernel in ("simswap_parser_input_kernel", "simswap_parser_labels_kernel", "simswap_parsing_blend_kernel"):
        assert gpu.executed.count(kernel) == 2
    device.close()
    assert not gpu.live


def test_a_parser_of_another_file_runs_on_the_host(tiny_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = parser_bundle(tiny_bundle, tmp_path, content_parser(tmp_path / "parser.onnx"))
    other = FaceParser(fake_parser(tmp_path / "other.onnx", (128, 128, 384, 384)), threads=1)
    gpu, module = install_device(monkeypatch, host, bundle)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        with FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", parser=other) as device:
            device.source_latent = latent()
            device.swap_faces(*scenes(224, bundle.alignment)[1])
    assert "parser plan is of another model" in caplog.text and "on the host, on the target crops" in caplog.text
    assert not [c for c in module.calls if c[0] == "execute" and c[2] == ("input", "logits")]
    assert gpu.executed.count("simswap_parsing_blend_kernel") == 1 and not gpu.live


@pytest.mark.parametrize("half", [False, True])
def test_parser_input_and_labels_kernel_math(host, half):
    """The host build of the parser kernels against NumPy: FaceParser's nearest resize and normalisation,
    bit for bit, and argmax (first of equal logits)."""
    rng = np.random.default_rng(3)
    size, count = 224, 2
    targets = rng.random((count, 3, size, size), dtype=np.float32)
    stored = targets.astype(np.float16) if half else targets
    out = np.empty((count, 3, 512, 512), np.float32)
    host.simswap_parser_input_host.restype = None
    host.simswap_parser_input_host(
        ctypes.c_void_p(stored.ctypes.data), ctypes.c_int(half), ctypes.c_int(count), ctypes.c_int(size),
        ctypes.c_void_p(out.ctypes.data),
    )  # fmt: skip
    index = np.arange(512) * size // 512
    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    for face in range(count):
        expected = (stored[face].astype(np.float32)[:, index][:, :, index] - mean) / std
        np.testing.assert_array_equal(out[face], expected)
    logits = rng.integers(-3, 4, (count, 19, 512, 512)).astype(np.float32)  # many ties
    labels = np.empty((count, 512, 512), np.uint8)
    host.simswap_parser_labels_host.restype = None
    host.simswap_parser_labels_host(
        ctypes.c_void_p(logits.ctypes.data), ctypes.c_int(count), ctypes.c_void_p(labels.ctypes.data)
    )
    np.testing.assert_array_equal(labels, logits.argmax(axis=1))
