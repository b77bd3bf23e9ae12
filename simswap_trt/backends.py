"""Choosing the backend for each model of a bundle: ``onnxruntime``, ``openvino``, ``tensorrt`` or ``auto``.

``auto`` runs a model on TensorRT when the bundle has a plan for it that this machine can run (TensorRT
installed, a CUDA device, matching version / compute capability / graph). Otherwise it runs on the CPU, on
the backend that is faster there for the precision asked for (``CPU_RULE``, measured on the bundle's
generator and written down in docs/cpu.md): OpenVINO for ``int8`` and ``bf16`` when it is installed, ONNX
Runtime for ``fp32`` and ``fp16``. Every choice is logged with its reason. Asking for a backend that cannot
run is an error naming every reason; there is no silent fallback.

Without ``--precision``, the runtime runs the bundle's validated default for the CPU backend chosen
(``default_precision``, set by ``simswap-build validate --set-default``), else FP32.

Precisions: ``fp32``, ``fp16`` and ``int8`` are the bundle's graphs; ``bf16`` is the FP32 graph run by
OpenVINO with BF16 inference precision, on CPUs with AVX512_BF16 or AMX only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from simswap_trt.bundle import Bundle
from simswap_trt.engines import DEFAULT_PROVIDERS, Engine, OnnxRuntimeEngine
from simswap_trt.engines.onnxruntime import INT8_EXACT_FLAGS, int8_kernels_exact
from simswap_trt.engines.openvino import OpenVinoEngine, check_bf16, openvino_available
from simswap_trt.errors import EngineError, SimswapError
from simswap_trt.plans import PlanEntry, plan_problems, rebuild_command
from simswap_trt.schema import sha256_of

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
PRECISION_PREFERENCE = ("int8", "fp16", "fp32")
# --backend auto on the CPU: which backend runs each precision faster, and the measurement behind it (the
# SimSwap-224 generator at batch 1, interleaved, on a 2-core AMD EPYC with AVX-512 VNNI and BF16; docs/cpu.md)
CPU_RULE = {
    "fp32": ("onnxruntime", "OpenVINO f32 runs the generator at 0.95x ONNX Runtime FP32"),
    "fp16": ("onnxruntime", "OpenVINO computes the FP16 graph in FP32, no faster than ONNX Runtime"),
    "int8": ("openvino", "OpenVINO fuses the Q/DQ graph into integer kernels: 2.5x ONNX Runtime FP32, 3.2x its INT8"),
    "bf16": ("openvino", "BF16 runs on OpenVINO only (2.05x ONNX Runtime FP32)"),
}
BACKEND_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}
OPENVINO_INSTALL = "pip install 'simswap-trt[openvino]'"


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


def cpu_backend(precision: str | None, providers: Sequence[str] = DEFAULT_PROVIDERS) -> tuple[str, str]:
    """The CPU backend ``auto`` picks for ``precision`` (``CPU_RULE``), and why."""
    precision = precision or "fp32"
    if tuple(providers) != DEFAULT_PROVIDERS:
        return "onnxruntime", f"--providers {' '.join(providers)} are ONNX Runtime's"
    backend, why = CPU_RULE[precision]
    if backend == "openvino" and not openvino_available():
        return "onnxruntime", f"OpenVINO is not installed ({OPENVINO_INSTALL}); {why}"
    return backend, why


def default_precision(
    bundle: Bundle, backend: str = "auto", providers: Sequence[str] = DEFAULT_PROVIDERS, device: int | None = None
) -> str | None:
    """The precision to run when none is asked for: the bundle's validated default for the CPU backend that
    will run it (``Bundle.default_precision``), else None (FP32 on the CPU, the fastest plan on TensorRT).
    Not applied where TensorRT runs the generator, nor where this CPU or backend cannot run it; logged."""
    if not bundle.default_precision or backend == "tensorrt":
        return None
    if backend == "auto":
        try:
            usable_plan(bundle, "generator", None, device)
            return None  # TensorRT runs it: its plans, not the CPU default
        except EngineError:
            pass
        choices = [b for b in ("openvino", "onnxruntime") if bundle.default_for(b)]
        for candidate in choices:
            precision = bundle.default_for(candidate)
            if cpu_backend(precision, providers)[0] == candidate:
                return _usable_default(bundle, candidate, precision, providers)
        log.info("the bundle's default precision is for %s, which auto does not pick here: fp32", " and ".join(choices))
        return None
    precision = bundle.default_for(backend)
    return None if precision is None else _usable_default(bundle, backend, precision, providers)


def _usable_default(bundle: Bundle, backend: str, precision: str, providers: Sequence[str]) -> str | None:
    """``precision`` when this CPU can run it on ``backend`` (logged with the figures that validated it)."""
    from simswap_trt.engines.openvino import bf16_supported

    gate = bundle.default_precision[backend].get("gate", {})
    figures = ", ".join(f"{k} >= {v}" for k, v in gate.items())
    if precision == "bf16" and not bf16_supported():
        reason = "this CPU has no BF16 instructions"
    elif (
        precision == "int8"
        and backend == "onnxruntime"
        and providers[0] == "CPUExecutionProvider"
        and not int8_kernels_exact()
    ):
        reason = f"ONNX Runtime's INT8 kernels need one of {', '.join(INT8_EXACT_FLAGS)}"
    else:
        log.info(
            "precision %s on %s: the bundle's validated default (%s); --precision fp32 runs FP32",
            precision,
            BACKEND_NAMES[backend],
            figures or "validated",
        )
        return precision
    log.info("the bundle's default precision %s on %s is not used: %s; running fp32", precision, backend, reason)
    return None


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
    if precision not in (None, *PRECISIONS):
        raise EngineError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend == "tensorrt" and precision == "bf16":
        raise EngineError("bf16 runs on OpenVINO on the CPU; TensorRT runs --precision fp32, fp16 or int8")
    if backend in ("auto", "tensorrt") and precision != "bf16":
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
            cpu = BACKEND_NAMES[cpu_backend(precision, providers)[0]]
            log.log(level, "auto: the %s runs on %s because TensorRT cannot run it: %s", role, cpu, exc)
    if backend == "auto":
        backend, why = cpu_backend(precision, providers)
        log.info("auto: the %s runs on %s (%s): %s", role, backend, precision or "fp32", why)
    if backend == "openvino":
        return open_openvino(bundle, role, precision, threads)
    if precision == "bf16":
        raise EngineError(
            f"bf16 runs on OpenVINO only: --backend openvino or auto ({OPENVINO_INSTALL}); ONNX Runtime runs "
            "--precision fp32, fp16 or int8"
        )
    if precision == "int8" and providers[0] == "CPUExecutionProvider" and not int8_kernels_exact():
        raise EngineError(
            f"INT8 on this CPU: ONNX Runtime's INT8 kernels need one of {', '.join(INT8_EXACT_FLAGS)} to compute "
            "the graph exactly (without them they saturate intermediate sums); run --precision fp32 (the default)"
        )
    entry = bundle.model(role, precision or "fp32")
    engine = OnnxRuntimeEngine(bundle.root / entry.file, providers, threads, device=device)
    engine.graph = {"file": entry.file, "sha256": entry.sha256, "precision": entry.precision}
    return engine


def open_openvino(bundle: Bundle, role: str, precision: str | None = None, threads: int | None = None) -> Engine:
    """The ``role`` graph on OpenVINO: ``bf16`` runs the FP32 graph with BF16 inference precision, the others
    their own graph in f32 (the INT8 graph's Q/DQ convolutions as integer kernels)."""
    if precision == "bf16":
        check_bf16()
    graph = "fp32" if precision in (None, "bf16") else precision
    entry = bundle.model(role, graph)
    engine = OpenVinoEngine(
        bundle.root / entry.file, threads, "bf16" if precision == "bf16" else "f32", entry.file, sha256=entry.sha256
    )
    engine.graph = {"file": entry.file, "sha256": entry.sha256, "precision": entry.precision}
    log.info("%s: %s, %s graph", role, engine.backend, graph)
    return engine


def host_engine(
    model: str | Path | bytes,
    backend: str = "onnxruntime",
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    threads: int | None = None,
    name: str | None = None,
    device: int | None = None,
) -> Engine:
    """An FP32 model outside the bundle (a host detector or face parser): on OpenVINO when ``backend`` is
    ``openvino``, else on ONNX Runtime with ``providers`` (``auto``'s rule for FP32)."""
    if backend == "openvino":
        return OpenVinoEngine(model, threads, name=name)
    return OnnxRuntimeEngine(model, providers, threads, name, device=device)


def parser_plan(bundle: Bundle, parser_path: Path, backend: str, device: int | None) -> Engine | None:
    """The bundle's TensorRT plan of the face parser graph at ``parser_path``, when the bundle's parser graph was
    made from the same file and its plan can run here; else None, and the parser runs on ONNX Runtime (logged)."""
    if bundle.parser is None:
        return None
    if bundle.parser.source.get("sha256") != sha256_of(parser_path):
        log.info("the bundle's parser plan is of another model than %s: it runs on ONNX Runtime", parser_path)
        return None
    try:
        return open_engine(bundle, "parser", "tensorrt", device=device)
    except SimswapError as exc:
        log.log(logging.WARNING if backend == "tensorrt" else logging.INFO, "face parser on ONNX Runtime: %s", exc)
        return None
