"""Conformance without a GPU: the builder runs against strict stand-ins of the TensorRT 10.3 and 11.x
Python APIs (tests/data/trt_api, with their documentation sources); the 11.x data agrees with the real
tensorrt_lean wheel; a planted use of an API removed in 11 fails; cuda-python's error paths are clear."""

import subprocess
import sys

import pytest
from support.real_gpu import gpu_available
from support.trt_builder_standin import api, fake_builder_module

from simswap_build.tensorrt import builder as engine_builder
from simswap_build.tensorrt.builder import BuildOptions, build_plan
from simswap_trt import cuda
from simswap_trt.errors import EngineError, SimswapError

GENERATOR_INPUTS = [("target", (-1, 3, 224, 224)), ("latent", (-1, 512))]
FULL_OPTIONS = BuildOptions(
    workspace_mib=1024,
    version_compatible=True,
    exclude_lean_runtime=True,
    hardware_compatibility="ampere_plus",
    progress=True,
)
DLA_OPTIONS = BuildOptions(min_batch=8, opt_batch=8, max_batch=8, dla_core=0, progress=True)


@pytest.mark.parametrize("version,network_flags", [("10.3", 1 << 1), ("11.x", 0)])
@pytest.mark.parametrize(
    "options", [BuildOptions(progress=False), FULL_OPTIONS, DLA_OPTIONS], ids=["defaults", "all-options", "dla"]
)
def test_builder_uses_only_the_api_of_each_version(tmp_path, version, network_flags, options):
    record = []
    trt = fake_builder_module(version, GENERATOR_INPUTS, record)
    cache = tmp_path / "timing.cache"
    plan = build_plan(trt, tmp_path / "g.onnx", options, cache, tmp_path / "build.log")
    assert plan == b"serialized plan"
    assert ("create_network", network_flags) in record
    batches = (8, 8, 8) if options is DLA_OPTIONS else (1, 8, 32)
    assert ("set_shape", "target", *((b, 3, 224, 224) for b in batches)) in record
    assert cache.read_bytes() == b"timing cache"
    assert "[INFO] builder created" in (tmp_path / "build.log").read_text()
    settings = {name: value for name, value, *_ in record}
    if options is FULL_OPTIONS:
        assert {
            ("flag", "VERSION_COMPATIBLE"),
            ("flag", "EXCLUDE_LEAN_RUNTIME"),
            ("pool", "WORKSPACE", 1024 << 20),
        } <= set(record)
        assert settings["IBuilderConfig.hardware_compatibility_level"].name == "AMPERE_PLUS"
    if options is DLA_OPTIONS:
        assert {("flag", "GPU_FALLBACK"), ("IBuilderConfig.DLA_core", 0)} <= set(record)
        assert settings["IBuilderConfig.default_device_type"].name == "DLA"
        assert "IBuilderConfig.progress_monitor" in settings
    # a second build starts from the saved timing cache
    build_plan(trt, tmp_path / "g.onnx", BuildOptions(progress=False), cache, tmp_path / "build.log")
    assert ("timing cache in", b"timing cache") in record


def test_planted_removed_api_fails_on_11_only(tmp_path, monkeypatch):
    configure = engine_builder._configure

    def planted(trt, config, options):
        configure(trt, config, options)
        config.set_flag(trt.BuilderFlag.FP16)  # weak typing: removed in TensorRT 11

    monkeypatch.setattr(engine_builder, "_configure", planted)
    options = BuildOptions(progress=False)
    build_plan(
        fake_builder_module("10.3", GENERATOR_INPUTS, []),
        tmp_path / "g.onnx",
        options,
        tmp_path / "c",
        tmp_path / "log",
    )
    with pytest.raises(AttributeError, match="BuilderFlag.FP16 does not exist in this TensorRT version"):
        build_plan(
            fake_builder_module("11.x", GENERATOR_INPUTS, []),
            tmp_path / "g.onnx",
            options,
            tmp_path / "c",
            tmp_path / "log",
        )


def test_missing_hardware_level_is_a_clear_error(tmp_path):
    trt = fake_builder_module("10.3", GENERATOR_INPUTS, [])
    with pytest.raises(SimswapError, match="has no hardware compatibility level 'same_compute_capability'"):
        build_plan(
            trt,
            tmp_path / "g.onnx",
            BuildOptions(hardware_compatibility="same_compute_capability", progress=False),
            tmp_path / "c",
            tmp_path / "log",
        )


def test_11_data_agrees_with_the_real_lean_bindings():
    lean = pytest.importorskip("tensorrt_lean")
    data = api("11.x")
    for name, members in data["enums"].items():
        owner, _, enum = name.rpartition(".")
        real = getattr(getattr(lean, owner), enum) if owner else getattr(lean, name, None)
        if real is not None:
            assert set(members) == set(real.__members__), name
    against_lean = against_data = 0
    for removed in data["removed_in_11"]:
        owner, member = removed.split(".", 1) if "." in removed else (removed, None)
        if member is None:  # a removed class: neither the real bindings nor the 11.x stand-in may have it
            assert not hasattr(lean, owner) and owner not in data["classes"] and owner not in data["enums"], removed
            against_data += 1
        elif hasattr(lean, owner):  # the lean runtime has the owner: the real bindings must lack the member
            assert not hasattr(getattr(lean, owner), member), removed
            against_lean += 1
        else:  # builder-only classes (the lean runtime has no builder): the 11.x stand-in must lack the member
            listed = data["classes"].get(owner, data["enums"].get(owner, ()))  # absent class: no member either
            assert member not in listed, removed
            against_data += 1
    assert (against_lean, against_data) == (8, 15)  # every entry was compared with something that can differ


def test_runtime_stand_in_rejects_names_tensorrt_lacks():
    """The runtime conformance in test_tensorrt_engine relies on this: unknown names fail."""
    lean = pytest.importorskip("tensorrt_lean")
    from support.fake_gpu import strict_runtime_module

    runtime = strict_runtime_module(lean, [], lambda inputs: {}).Runtime(None)
    engine = runtime.deserialize_cuda_engine(b"")
    with pytest.raises(AttributeError, match="ICudaEngine has no attribute 'get_binding_index'"):
        engine.get_binding_index("target")  # removed in TensorRT 10


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU error path")
def test_cuda_without_a_gpu_names_the_error():
    pytest.importorskip("cuda.bindings")
    with pytest.raises(cuda.CudaError) as info:
        cuda.device_info()
    assert info.value.name in ("cudaErrorInsufficientDriver", "cudaErrorNoDevice")
    assert str(info.value).startswith(f"cudaGetDeviceCount failed: {info.value.name}")
    assert isinstance(info.value, EngineError)


def test_missing_cuda_python_is_explained():
    code = (
        "import sys; sys.modules['cuda.bindings'] = None; from simswap_trt import cuda\n"
        "try:\n    cuda.device_info()\nexcept Exception as e:\n    print(type(e).__name__, e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.startswith("EngineError the TensorRT backend needs cuda-python: pip install 'simswap-trt[trt]'")
