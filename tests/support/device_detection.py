"""Detection on the device on the CPU stand-in of the GPU: public-domain photos with one to four faces (the
``photos`` fixture, imported by the modules that use it), bundles with CenterFace's detector graph and fake
plans, and the stand-in GPU with a fake TensorRT whose plans run the generator and detector graphs."""

import shutil

import cv2
import numpy as np
import pytest

from simswap_build.graphs.detector import add_detector
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.engines import tensorrt as trt_engine
from support.device_path import register_fake_plans
from support.fake_gpu import install_fake_cuda, strict_runtime_module

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


PLANS = {"generator": b"fake generator plan", "detector": b"fake detector plan", "arcface": b"fake arcface plan"}


@pytest.fixture(scope="module")
def photos():
    """Public-domain photos (scikit-image) with one to four faces, of odd sizes."""
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut()[..., ::-1])
    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    two = np.hstack([camera, cv2.flip(astronaut, 1)])
    four = np.vstack([two, np.hstack([cv2.flip(astronaut, 1), camera])])
    return [astronaut, cv2.resize(two, (777, 389), interpolation=cv2.INTER_AREA), four[:1001, :1023].copy()]


def detector_bundle(bundle, root, roles=("generator", "detector"), max_batch=4):
    """A copy of ``bundle`` with CenterFace's detector graph and (fake) plans for ``roles``."""
    shutil.copytree(bundle.root, root)
    return register_fake_plans(add_detector(root), PLANS, roles, max_batch=max_batch)


def install_device(monkeypatch, host, bundle, **gpu_options):
    """The stand-in GPU (``gpu_options``: see ``install_fake_cuda``), and a fake TensorRT whose plans run the
    bundle's graphs on ONNX Runtime."""
    gpu = install_fake_cuda(monkeypatch, host_lib=host, **gpu_options)
    generator = OnnxRuntimeEngine(bundle.path_of("generator"), threads=2)
    detector = OnnxRuntimeEngine(bundle.path_of("detector"), threads=2)
    size, canvas = bundle.crop_size, bundle.detector_canvas
    io = [("target", "in", (-1, 3, size, size)), ("latent", "in", (-1, 512)), ("swapped", "out", (-1, 3, size, size))]
    maps = [(spec.name, "out", (-1, spec.shape[1], canvas // 4, canvas // 4)) for spec in detector.outputs]
    detector_io = [(detector.inputs[0].name, "in", (-1, 3, canvas, canvas)), *maps]
    module = strict_runtime_module(lean, io, generator.run, plans={PLANS["detector"]: (detector_io, detector.run)})
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    return gpu, module
