"""The device path on the CPU stand-in of the GPU (support/fake_gpu.py): bundles with fake registered plans,
the stand-in GPU with a fake TensorRT whose plans run the bundle's graphs on ONNX Runtime, and scenes of
frames with faces of known geometry."""

import shutil

import numpy as np
import pytest

from benchmarks.gpu_check.scenes import face_landmarks, smooth_frame
from simswap_build.tensorrt.builder import register_plan
from simswap_trt.bundle import Bundle, sha256_of
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.engines import tensorrt as trt_engine
from simswap_trt.plans import PlanEntry
from simswap_trt.vision.detect import Detection
from support.fake_gpu import install_fake_cuda, strict_runtime_module

lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")


def plan_bundle(bundle, root, min_batch=1, max_batch=3, dla_core=None, roles=("generator",)):
    """A copy of ``bundle`` with (fake) registered plans for ``roles``, with the given profile."""
    shutil.copytree(bundle.root, root)
    return register_fake_plans(Bundle.load(root), PLAN_BYTES, roles, min_batch, max_batch, dla_core)


def register_fake_plans(bundle, plan_bytes, roles, min_batch=1, max_batch=3, dla_core=None):
    """``bundle`` with a plan file of ``plan_bytes[role]`` registered for each of ``roles`` (profile batch
    min_batch..max_batch), as the builder registers real plans."""
    (bundle.root / "engines").mkdir(exist_ok=True)
    for role in roles:
        plan_file = bundle.root / "engines" / f"{role}.plan"
        plan_file.write_bytes(plan_bytes[role])
        model = bundle.models[role]
        profile = {
            spec.name: tuple((b, *spec.shape[1:]) for b in (min_batch, max_batch, max_batch)) for spec in model.inputs
        }
        entry = PlanEntry(
            role=role,
            file=f"engines/{role}.plan",
            sha256=sha256_of(plan_file),
            onnx_sha256=model.sha256,
            precision="fp32",
            tensorrt_version="11.4.0.106",
            version_compatible=True,
            hardware_compatibility="none",
            gpu_name="Fake H100",
            compute_capability=(9, 0),
            profile=profile,
            inputs=model.inputs,
            outputs=model.outputs,
            dla_core=dla_core,
        )
        bundle = register_plan(bundle, entry)
    return bundle


PLAN_BYTES = {"generator": b"fake serialized plan", "arcface": b"fake arcface plan", "parser": b"fake parser plan"}


def install_device(monkeypatch, host, bundle, batch_range=(1, 1 << 30), plans=None, **gpu_options):
    """The stand-in GPU (``gpu_options``: see ``install_fake_cuda``), and a fake TensorRT whose plans run the
    bundle's graphs on ONNX Runtime."""
    gpu = install_fake_cuda(monkeypatch, host_lib=host, **gpu_options)
    generator = OnnxRuntimeEngine(bundle.path_of("generator"), threads=2)
    arcface = OnnxRuntimeEngine(bundle.path_of("arcface"), threads=2)
    size = bundle.crop_size
    io = [("target", "in", (-1, 3, size, size)), ("latent", "in", (-1, 512)), ("swapped", "out", (-1, 3, size, size))]
    arcface_io = [("crop", "in", (-1, 3, size, size)), ("latent", "out", (-1, 512))]
    plans = {PLAN_BYTES["arcface"]: (arcface_io, arcface.run), **(plans or {})}
    module = strict_runtime_module(lean, io, generator.run, batch_range=batch_range, plans=plans)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    return gpu, module


def face(center, size, angle, crop, alignment):
    """A detection whose landmarks are the alignment template, scaled, rotated and moved to ``center``."""
    landmarks = face_landmarks(center, size, angle, crop, alignment)
    box = np.r_[landmarks.min(0) - size / 4, landmarks.max(0) + size / 4].astype(np.float32)
    return Detection(box, 0.9, landmarks)


def scenes(crop, alignment, seed=0):
    """Two batches of frames of odd sizes: several faces, faces at and beyond the border, a face fully
    outside between two inside, a frame without faces."""
    rng = np.random.default_rng(seed)

    def frame(h, w):  # smooth content, so that interpolation differences stay small, plus some noise
        return smooth_frame(rng, h, w)

    first = [frame(301, 433), frame(257, 389), frame(120, 170)]
    first_faces = [
        [face((100, 120), 120, 0, crop, alignment), face((5000, 90), 120, 0, crop, alignment)]
        + [face((330, 160), 100, 12, crop, alignment)],
        [face((12, 20), 110, 90, crop, alignment), face((300, 250), 90, -30, crop, alignment)],
        [],
    ]
    second = [frame(211, 307)]
    second_faces = [[face((150, 100), 140, 180, crop, alignment), face((170, 120), 100, 5, crop, alignment)]]
    return [(first, first_faces), (second, second_faces)]


def latent(seed=3):
    v = np.random.default_rng(seed).normal(size=512).astype(np.float32)
    return v / np.linalg.norm(v)
