"""Plan/manifest mismatches are refused with messages that say why and how to rebuild; tampering is refused."""

import pytest
from support.plans import plan

from simswap_build.tensorrt.builder import register_plan
from simswap_trt.bundle import Bundle
from simswap_trt.errors import BundleError
from simswap_trt.plans import PlanEntry, RuntimeInfo, plan_problems, rebuild_command

H100 = RuntimeInfo("11.4.0.106", lean=False, compute_capability=(9, 0), gpu_name="NVIDIA H100")


def test_matching_plan_runs():
    assert plan_problems(plan(), H100, "a" * 64) == []
    assert plan().max_batch == 32


@pytest.mark.parametrize(
    "entry,here,message",
    [
        (plan(tensorrt_version="11.3.0.1"), H100, "built with TensorRT 11.3.0.1 and only runs on that version"),
        (
            plan(),
            RuntimeInfo("11.4.0.106", True, (9, 0), "H100"),
            "not version-compatible, and TensorRT 11.4.0.106 (lean runtime) runs only version-compatible",
        ),
        (plan(version_compatible=True, tensorrt_version="11.5.0"), H100, "cannot run on TensorRT 11.4.0.106"),
        (
            plan(version_compatible=True, tensorrt_version="11.4.0.106"),
            RuntimeInfo("10.3.0", False, (9, 0), "x"),
            "cannot run on TensorRT 10.3.0",
        ),
        (
            plan(compute_capability=(8, 6), gpu_name="RTX 3090"),
            H100,
            "built for compute capability 8.6 (RTX 3090); NVIDIA H100 has 9.0",
        ),
        (
            plan(hardware_compatibility="ampere_plus"),
            RuntimeInfo("11.4.0.106", False, (7, 5), "T4"),
            "needs compute capability >= 8.0",
        ),
    ],
)
def test_mismatches_are_explained(entry, here, message):
    problems = plan_problems(entry, here, "a" * 64)
    assert len(problems) == 1 and message in problems[0]


def test_compatible_variants_run():
    assert plan_problems(plan(version_compatible=True, tensorrt_version="11.1.0"), H100) == []
    assert plan_problems(plan(version_compatible=True, tensorrt_version="10.8.0"), H100) == []  # 10 VC on 11
    lean = RuntimeInfo("11.4.0.106", True, (8, 9), "L4")
    assert plan_problems(plan(version_compatible=True, hardware_compatibility="ampere_plus"), lean) == []


def test_stale_plan():
    assert "different ONNX graph" in plan_problems(plan(), H100, "b" * 64)[0]
    assert rebuild_command("/b", plan()) == "simswap-build engine /b --role generator --precision fp32"


def test_registered_plan_roundtrips_and_tampering_is_refused(tiny_bundle, tmp_path):
    import shutil

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle.root, root)
    (root / "engines").mkdir()
    (root / "engines" / "generator.fp32.sm_90.plan").write_bytes(b"serialized plan")
    from simswap_trt.schema import sha256_of

    entry = plan(sha256=sha256_of(root / "engines" / "generator.fp32.sm_90.plan"))
    bundle = register_plan(Bundle.load(root), entry)
    assert bundle.plans == (entry,)
    (root / "engines" / "generator.fp32.sm_90.plan").write_bytes(b"serialized plan, modified")
    with pytest.raises(BundleError, match="generator.fp32.sm_90.plan does not match the sha256"):
        Bundle.load(root)


def test_plans_without_the_lean_runtime_are_refused_early_on_it():
    entry = plan(version_compatible=True, lean_runtime_excluded=True)
    assert PlanEntry.from_json(entry.to_json()) == entry
    assert PlanEntry.from_json({k: v for k, v in plan().to_json().items() if k != "lean_runtime_excluded"}) == plan()
    lean = RuntimeInfo("11.4.0.106", lean=True, compute_capability=(9, 0), gpu_name="NVIDIA H100")
    assert plan_problems(entry, lean, "a" * 64) == [
        "the plan was built with --exclude-lean-runtime, so TensorRT 11.4.0.106 (lean runtime) cannot load it; "
        "rebuild without that flag or install the full tensorrt package"
    ]
    assert plan_problems(entry, H100, "a" * 64) == []  # the full runtime loads it
    assert plan_problems(plan(version_compatible=True), lean, "a" * 64) == []
    newer = RuntimeInfo("11.5.0.1", lean=False, compute_capability=(9, 0), gpu_name="NVIDIA H100")
    assert plan_problems(entry, newer, "a" * 64) == [  # no embedded lean runtime: only the version that built it
        "the plan was built with --exclude-lean-runtime, so only the full TensorRT 11.4.0.106 that built it loads "
        "it; this machine has TensorRT 11.5.0.1"
    ]
    assert plan_problems(plan(version_compatible=True), newer, "a" * 64) == []  # with it, a newer 11.x runs it


def test_profile_minimum_is_the_largest_minimum_of_the_inputs():
    profile = {
        "target": ((2, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224)),
        "latent": ((1, 512), (8, 512), (16, 512)),
    }
    assert (plan(profile=profile).min_batch, plan(profile=profile).max_batch) == (2, 16)


def test_auto_prefers_int8_then_fp16_then_fp32_plans(tiny_bundle, monkeypatch):
    """Listed fp32, fp16, int8 in the manifest; each runnable plan's graph hash matches its precision."""
    from dataclasses import replace
    from types import SimpleNamespace

    from simswap_trt import backends
    from simswap_trt.engines import tensorrt

    monkeypatch.setattr(tensorrt, "import_tensorrt", lambda: (SimpleNamespace(__version__="11.4.0.106"), False))
    monkeypatch.setattr(tensorrt, "runtime_info", lambda trt, lean, device=None: H100)
    fp32 = tiny_bundle.models["generator"]
    variants = {p: replace(fp32, precision=p, sha256=p[-2:] * 32) for p in ("fp16", "int8")}
    plans = tuple(
        plan(file=f"engines/generator.{p}.plan", precision=p, onnx_sha256=sha)
        for p, sha in (("fp32", fp32.sha256), ("fp16", "16" * 32), ("int8", "t8" * 32))
    )
    bundle = replace(tiny_bundle, variants={"generator": variants}, plans=plans)
    assert backends.usable_plan(bundle, "generator").precision == "int8"
    assert backends.usable_plan(bundle, "generator", "fp32").precision == "fp32"
    stale_int8 = replace(bundle, plans=(*plans[:2], replace(plans[2], onnx_sha256="0" * 64)))
    assert backends.usable_plan(stale_int8, "generator").precision == "fp16"
    wrong_version = replace(plans[1], tensorrt_version="10.3.0")  # not version-compatible: 10.3.0 only
    other_gpu = replace(plans[2], compute_capability=(8, 6), gpu_name="RTX 3090")
    only_fp32 = replace(bundle, plans=(plans[0], wrong_version, other_gpu))
    assert backends.usable_plan(only_fp32, "generator").precision == "fp32"
