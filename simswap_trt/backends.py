"""Choosing the backend for each model of a bundle: ``onnxruntime``, ``tensorrt`` or ``auto``.

``auto`` runs a model on TensorRT when the bundle has a plan for it that this machine can run (TensorRT
installed, a CUDA device, matching version / compute capability / graph), else on ONNX Runtime, and logs
which and why. Asking for ``tensorrt`` when it cannot run is an error naming every reason; there is no
silent fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from simswap_trt.bundle import Bundle
from simswap_trt.engines import DEFAULT_PROVIDERS, Engine, OnnxRuntimeEngine
from simswap_trt.engines.onnxruntime import INT8_EXACT_FLAGS, int8_kernels_exact
from simswap_trt.errors import EngineError
from simswap_trt.plans import PlanEntry, plan_problems, rebuild_command

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")
PRECISION_PREFERENCE = ("int8", "fp16", "fp32")


def usable_plan(bundle: Bundle, role: str, precision: str | None = None, device: int | None = None) -> PlanEntry:
    """The best plan for ``role`` that can run here, on CUDA ``device`` (default: the current one), in
    ``precision`` or the fastest available; or an ``EngineError`` that says why none can."""
    from simswap_trt.engines.tensorrt import import_tensorrt, runtime_info

    plans = [p for p in bundle.plans if p.role == role and precision in (None, p.precision)]
    wanted = f"{precision} " if precision else ""
    if not plans:
        raise EngineError(
            f"the bundle has no {wanted}TensorRT plan for the {role}; build one with "
            f"'simswap-build engine {bundle.root} --role {role}'"
        )
    trt, lean = import_tensorrt()
    try:
        here = runtime_info(trt, lean, device)
    except EngineError as exc:
        raise EngineError(f"no usable CUDA device for TensorRT: {exc}") from None
    reasons = []
    for plan in sorted(
        plans,
        key=lambda p: (
            PRECISION_PREFERENCE.index(p.precision)
            if p.precision in PRECISION_PREFERENCE
            else len(PRECISION_PREFERENCE)
        ),
    ):
        problems = plan_problems(plan, here, bundle.model(role, plan.precision).sha256)
        if not problems:
            return plan
        reasons.append(f"{plan.file}: {'; '.join(problems)} (rebuild: {rebuild_command(str(bundle.root), plan)})")
    raise EngineError(f"no {wanted}TensorRT plan for the {role} can run here:\n  " + "\n  ".join(reasons))


def open_engine(
    bundle: Bundle,
    role: str,
    backend: str = "auto",
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    threads: int | None = None,
    precision: str | None = None,
    cuda_graphs: bool = False,
    device: int | None = None,
) -> Engine:
    """The engine for ``role`` on the requested backend (see the module docstring); TensorRT engines, and ONNX
    Runtime's CUDA and TensorRT providers, on CUDA ``device`` (default: the current one, or ONNX Runtime's)."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "onnxruntime":
        try:
            plan = usable_plan(bundle, role, precision, device)
            from simswap_trt.engines.tensorrt import TensorRTEngine

            engine = TensorRTEngine(
                bundle.root, plan, bundle.model(role, plan.precision).sha256, cuda_graphs=cuda_graphs, device=device
            )
            log.info("%s: %s (%s)", role, engine.backend, "requested" if backend == "tensorrt" else "auto")
            engine.graph = {"file": plan.file, "sha256": plan.sha256, "precision": plan.precision}
            return engine
        except EngineError as exc:
            if backend == "tensorrt":
                raise
            level = logging.WARNING if any(p.role == role for p in bundle.plans) else logging.INFO
            log.log(level, "auto: the %s runs on ONNX Runtime because TensorRT cannot run it: %s", role, exc)
    if precision == "int8" and providers[0] == "CPUExecutionProvider" and not int8_kernels_exact():
        raise EngineError(
            f"INT8 on this CPU: ONNX Runtime's INT8 kernels need one of {', '.join(INT8_EXACT_FLAGS)} to compute "
            "the graph exactly (without them they saturate intermediate sums); run --precision fp32 (the default)"
        )
    entry = bundle.model(role, precision or "fp32")
    engine = OnnxRuntimeEngine(bundle.root / entry.file, providers, threads, device=device)
    engine.graph = {"file": entry.file, "sha256": entry.sha256, "precision": entry.precision}
    return engine
