"""Plan entries; fixtures (a pytest plugin): ``plan_bundle``, a bundle with a (fake) generator plan, and
``fake_trt``, the stand-in GPU with a strict TensorRT runtime whose plan computes ``fake_generator``."""

import shutil

import pytest

from simswap_build.tensorrt.builder import register_plan
from simswap_trt.bundle import Bundle
from simswap_trt.engines import TensorSpec
from simswap_trt.engines import tensorrt as trt_engine
from simswap_trt.plans import PlanEntry
from simswap_trt.schema import sha256_of
from support.fake_gpu import install_fake_cuda, strict_runtime_module


def plan(**changes):
    base = dict(
        role="generator",
        file="engines/generator.fp32.sm_90.plan",
        sha256="0" * 64,
        onnx_sha256="a" * 64,
        precision="fp32",
        tensorrt_version="11.4.0.106",
        version_compatible=False,
        hardware_compatibility="none",
        gpu_name="NVIDIA H100",
        compute_capability=(9, 0),
        profile={
            "target": ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224)),
            "latent": ((1, 512), (8, 512), (32, 512)),
        },
        inputs=(
            TensorSpec("target", "float32", ("batch", 3, 224, 224)),
            TensorSpec("latent", "float32", ("batch", 512)),
        ),
        outputs=(TensorSpec("swapped", "float32", ("batch", 3, 224, 224)),),
    )
    return PlanEntry(**{**base, **changes})


IO = [("target", "in", (-1, 3, 224, 224)), ("latent", "in", (-1, 512)), ("swapped", "out", (-1, 3, 224, 224))]


def fake_generator(inputs):
    """What the fake plan computes: something that mixes both inputs per item."""
    shift = inputs["latent"].mean(axis=1)[:, None, None, None]
    return {"swapped": inputs["target"] * 0.5 + shift}


@pytest.fixture()
def plan_bundle(tiny_bundle, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.root, root)
    bundle = Bundle.load(root)
    (root / "engines").mkdir()
    plan_file = root / "engines" / "generator.fp32.sm_90.plan"
    plan_file.write_bytes(b"fake serialized plan")
    model = bundle.models["generator"]
    entry = PlanEntry(
        role="generator",
        file="engines/generator.fp32.sm_90.plan",
        sha256=sha256_of(plan_file),
        onnx_sha256=model.sha256,
        precision="fp32",
        tensorrt_version="11.4.0.106",
        version_compatible=True,
        hardware_compatibility="none",
        gpu_name="Fake H100",
        compute_capability=(9, 0),
        profile={
            "target": ((1, 3, 224, 224), (4, 3, 224, 224), (5, 3, 224, 224)),
            "latent": ((1, 512), (4, 512), (5, 512)),
        },
        inputs=model.inputs,
        outputs=model.outputs,
    )
    return register_plan(bundle, entry)


@pytest.fixture()
def fake_trt(monkeypatch):
    """The stand-in GPU and a strict fake TensorRT runtime whose plan computes ``fake_generator``."""
    lean = pytest.importorskip("tensorrt_lean", reason="the tests install tensorrt-lean-cu13 (dev extra)")
    install_fake_cuda(monkeypatch)
    module = strict_runtime_module(lean, IO, fake_generator)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (module, True))
    return module
