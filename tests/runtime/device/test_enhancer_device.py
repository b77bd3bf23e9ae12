"""The face enhancer on the device path, on the CPU stand-in of the GPU: the swap goes from the generator's
output into the enhancer plan's input by one kernel launch, is restored, blended and pasted back where it lies,
and the result equals the host path's (simswap_trt.vision.enhance) within one level."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from support.device_path import PLAN_BYTES, install_device, latent, register_fake_plans, scenes
from support.enhancer_formats import bundle_with_enhancer, make_gfpgan, save_gfpgan

from simswap_trt import FaceSwapper
from simswap_trt.bundle import Bundle
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import face_roi

ENHANCER_PLAN = b"fake enhancer plan"


@pytest.fixture(scope="module")
def enhanced_bundle(tiny_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("enhancer")
    checkpoint = save_gfpgan(make_gfpgan(seed=7), folder / "GFPGANv1.4.pth")
    return bundle_with_enhancer(tiny_bundle.root, checkpoint, folder)


def device_bundle(enhanced_bundle, root, max_batch=2):
    """A copy of the enhanced bundle with (fake) plans for the generator and the enhancer."""
    shutil.copytree(enhanced_bundle.root, root)
    plans = {**PLAN_BYTES, "enhancer": ENHANCER_PLAN}
    return register_fake_plans(Bundle.load(root), plans, ("generator", "enhancer"), 1, max_batch)


def install_enhancer_device(monkeypatch, host, bundle):
    """The stand-in GPU and a fake TensorRT whose generator and enhancer plans run the bundle's graphs."""
    enhancer = OnnxRuntimeEngine(bundle.path_of("enhancer"), threads=2)
    size = enhancer.inputs[0].shape[2]
    io = [("face", "in", (-1, 3, size, size)), ("enhanced", "out", (-1, 3, size, size))]
    return install_device(monkeypatch, host, bundle, plans={ENHANCER_PLAN: (io, enhancer.run)})


def swap_all(swapper, batches):
    return [[result.image for result in swapper.swap_faces(images, faces)] for images, faces in batches]


def test_the_enhancer_on_the_device_equals_the_host_path(enhanced_bundle, host, monkeypatch, tmp_path, caplog):
    bundle = device_bundle(enhanced_bundle, tmp_path / "b")
    on_host = FaceSwapper.from_bundle(bundle.root, threads=2, backend="onnxruntime", enhance=True, enhance_blend=0.6)
    gpu, module = install_enhancer_device(monkeypatch, host, bundle)
    with caplog.at_level(logging.INFO, logger="simswap_trt"):
        device = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", enhance=True, enhance_blend=0.6)
    plain = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto")
    assert device.stages.startswith("device") and on_host.stages.startswith("host")
    assert "face enhancer on the device" in caplog.text
    on_host.source_latent = device.source_latent = plain.source_latent = latent()

    batches = scenes(224, bundle.alignment)
    want = swap_all(on_host, batches)
    gpu.executed.clear()
    got, enhancing = swap_all(device, batches), list(gpu.executed)
    gpu.executed.clear()
    unenhanced, plainly = swap_all(plain, batches), list(gpu.executed)
    for got_batch, want_batch, (images, faces) in zip(got, want, batches, strict=True):
        for result, expected, image, detections in zip(got_batch, want_batch, images, faces, strict=True):
            assert np.abs(result.astype(int) - expected).max() <= 1
            regions = np.zeros(image.shape[:2], bool)  # the swaps' regions: nothing changes outside them
            for detection in detections:
                matrix = alignment_matrix(detection.landmarks, bundle.alignment, 224)
                if roi := face_roi(matrix, 224, image.shape):
                    regions[roi[1] : roi[3], roi[0] : roi[2]] = True
            assert not (np.any(result != image, axis=2) & ~regions).any()
    assert np.abs(got[0][0].astype(int) - unenhanced[0][0]).max() > 20  # the restorer really changed the faces
    # two batches: one enhancer-input and one blend launch each, and no more uploads than without the enhancer
    assert enhancing.count("simswap_enhancer_input_kernel") == enhancing.count("simswap_enhance_blend_kernel") == 2
    assert enhancing.count("upload") == plainly.count("upload") and "simswap_enhance_blend_kernel" not in plainly
    assert enhancing.count("simswap_pasteback_kernel") == plainly.count("simswap_pasteback_kernel") == 2
    for swapper in (device, plain, on_host):
        swapper.close()
    assert not gpu.live


def test_an_enhancer_without_a_plan_keeps_the_host_stages(enhanced_bundle, host, monkeypatch, tmp_path, caplog):
    shutil.copytree(enhanced_bundle.root, tmp_path / "b")
    bundle = register_fake_plans(Bundle.load(tmp_path / "b"), PLAN_BYTES, ("generator",))
    install_device(monkeypatch, host, bundle)
    with caplog.at_level(logging.WARNING, logger="simswap_trt"):
        swapper = FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", enhance=True)
    assert swapper.stages.startswith("host")
    assert "the face enhancer runs on onnxruntime[CPUExecutionProvider], not TensorRT" in caplog.text
    with pytest.raises(Exception, match="the device path cannot run: the face enhancer runs on onnxruntime"):
        FaceSwapper.from_bundle(bundle.root, threads=2, backend="auto", enhance=True, device_path=True)
    swapper.close()
