"""ONNX Runtime backend: the embedded default, on the CPU unless the caller asks for other providers."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from simswap_trt.engines.base import Engine
from simswap_trt.errors import EngineError
from simswap_trt.schema import TensorSpec

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")  # placed on a GPU by option device_id
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}


def available_cpus() -> int:
    """CPUs this process may run on (not the machine's total: containers and CI restrict affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def provider_options(providers: Sequence[str], device: int | None) -> list[dict[str, int]]:
    """ONNX Runtime's options for each provider: CUDA device ``device`` for the CUDA and TensorRT providers."""
    return [{"device_id": device} if device is not None and p in CUDA_PROVIDERS else {} for p in providers]


class OnnxRuntimeEngine(Engine):
    """An ONNX model (a file path or serialized bytes) on ONNX Runtime.

    ``providers`` are used exactly as given, in order; if ONNX Runtime does not activate every one of them
    the constructor raises instead of silently running on a slower provider. ``threads`` sets the
    intra-op pool size (default: the CPUs available to this process). ``optimize=False`` turns graph
    optimizations off, so that Q/DQ nodes run as written instead of being fused into integer kernels.
    ``device``: the CUDA device id of the CUDA and TensorRT execution providers (default: ONNX Runtime's, 0).
    ``spinning=True`` lets the pool's threads busy-wait for the next operator instead of sleeping: that
    can shave latency off small models on otherwise idle cores, but the spinning threads take cores away
    from whatever runs next to the session (decoding, encoding, another session), so it is off by default.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int | None = None,
        name: str | None = None,
        optimize: bool = True,
        device: int | None = None,
        spinning: bool = False,
    ):
        import onnxruntime as ort

        name = name or (Path(model).name if not isinstance(model, bytes) else "model")
        source = model if isinstance(model, bytes) else str(model)
        available = ort.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise EngineError(f"ONNX Runtime has no {unknown} in this installation; available: {available}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cpus()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if not optimize:  # run every node as written (e.g. Q/DQ as fake quantization, no integer-kernel fusion)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self._session = ort.InferenceSession(
                source, options, providers=list(providers), provider_options=provider_options(providers, device)
            )
        except Exception as exc:  # ORT raises its own exception types for unreadable or invalid models
            raise EngineError(f"ONNX Runtime cannot load {name}: {exc}") from exc
        active = self._session.get_providers()
        if list(providers) != active[: len(providers)]:
            raise EngineError(f"ONNX Runtime activated {active} for {name}, not the requested {list(providers)}")
        self.backend = f"onnxruntime[{','.join(active)}]"
        self.inputs = tuple(self._spec(v) for v in self._session.get_inputs())
        self.outputs = tuple(self._spec(v) for v in self._session.get_outputs())
        log.info("%s: %s, %d threads", name, self.backend, options.intra_op_num_threads)
        if any(provider_options(providers, device)):
            log.info("%s: %s on CUDA device %d", name, ", ".join(p for p in providers if p in CUDA_PROVIDERS), device)

    @staticmethod
    def _spec(value) -> TensorSpec:
        if value.type not in _ORT_TYPES:
            raise EngineError(f"tensor {value.name!r} has unsupported type {value.type}")
        shape = tuple(d if isinstance(d, int) else str(d) for d in value.shape)
        return TensorSpec(value.name, _ORT_TYPES[value.type], shape)

    def close(self) -> None:
        self._session = None

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise EngineError(f"{self.backend}: the engine is closed")
        names = [spec.name for spec in self.outputs]
        return dict(zip(names, self._session.run(names, dict(feeds)), strict=True))


# CPU features with which ONNX Runtime's INT8 convolutions accumulate u8 x s8 products in 32 bits (VNNI,
# AMX). Without them its AVX2 path sums pairs of products in saturating 16-bit lanes: not the graph's result.
INT8_EXACT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def int8_kernels_exact(flags: frozenset[str] | None = None) -> bool:
    """Whether ONNX Runtime's fused INT8 kernels compute the Q/DQ graph exactly on this CPU."""
    return bool(set(INT8_EXACT_FLAGS) & (cpu_flags() if flags is None else flags))
