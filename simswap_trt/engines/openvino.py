"""OpenVINO backend: the bundle's ONNX graphs on the CPU with OpenVINO's kernels.

OpenVINO reads the ONNX graphs directly. It folds the Q/DQ pairs of the INT8 graph into integer kernels
(VNNI, AMX) and, with the inference precision ``bf16``, runs FP32 graphs in BF16 where the CPU has BF16
instructions (AVX512_BF16 or AMX). ``f32`` is the FP32 result (within 1e-4 of ONNX Runtime).

Compiled models are cached on disk (OpenVINO's model cache), one folder per key: the graph's sha256, the
OpenVINO version and the CPU (model name and feature flags). A folder whose recorded key differs from the
one asked for, or whose blob OpenVINO cannot import, is discarded and rebuilt (logged): a changed graph, an
upgraded OpenVINO or another CPU never gets a stale compiled model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simswap_trt.engines.base import Engine
from simswap_trt.engines.onnxruntime import available_cpus, cpu_flags
from simswap_trt.errors import EngineError
from simswap_trt.schema import TensorSpec, sha256_of

log = logging.getLogger(__name__)

INFERENCE_PRECISIONS = ("f32", "bf16")
# CPU features with BF16 arithmetic; without them OpenVINO would emulate or ignore the bf16 hint
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CACHE_ENV = "SIMSWAP_TRT_CACHE"
KEY_FILE = "key.json"


def import_openvino():
    """The ``openvino`` module, or an ``EngineError`` saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise EngineError("OpenVINO is not installed: pip install 'simswap-trt[openvino]'") from None
    return openvino


@functools.lru_cache(maxsize=1)
def shared_core():
    """The process's one ``openvino.Core``, never released. Every engine compiles through it (their settings go
    to ``compile_model``): OpenVINO's CPU plugin gives a compiling thread an alternate signal stack of its own
    and, when a Core is released, restores the one it replaced, so Cores released out of creation order left
    the thread's signal stack pointing at freed memory, and the next SIGINT or SIGTERM crashed the process."""
    return import_openvino().Core()


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported here."""
    try:
        import_openvino()
    except EngineError:
        return False
    return True


def openvino_line() -> str:
    """OpenVINO's version and what this CPU offers it (for ``simswap-trt doctor``), or how to install it."""
    try:
        ov = import_openvino()
    except EngineError as exc:
        return str(exc)
    bf16 = "bf16 available" if bf16_supported() else f"no bf16 (needs {' or '.join(f.upper() for f in BF16_FLAGS)})"
    return f"{ov.get_version()}, {bf16}, compiled-model cache {cache_root()}"


def bf16_supported(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU computes in BF16 natively (AVX512_BF16 or AMX)."""
    return bool(set(BF16_FLAGS) & (cpu_flags() if flags is None else flags))


def check_bf16(flags: frozenset[str] | None = None) -> None:
    """Raise an ``EngineError`` with what to do instead when this CPU cannot run BF16 natively."""
    if not bf16_supported(flags):
        raise EngineError(
            f"--precision bf16 needs a CPU with {' or '.join(f.upper() for f in BF16_FLAGS)}, which this CPU "
            f"({cpu_model()}) lacks; run --precision fp32 (the default) or int8"
        )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the machine type where there is none)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_root() -> Path:
    """Where compiled models are cached: ``$SIMSWAP_TRT_CACHE/openvino``, else the user's cache folder."""
    base = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "simswap-trt"
    return Path(base) / "openvino"


def cache_key(graph_sha256: str, version: str, precision: str) -> dict[str, str]:
    """What a compiled model depends on: the graph, the OpenVINO version, the CPU and the inference precision."""
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16]
    return {
        "graph_sha256": graph_sha256,
        "openvino": version,
        "cpu": cpu_model(),
        "cpu_flags": flags,
        "precision": precision,
    }


def cache_folder(root: Path, key: Mapping[str, str]) -> Path:
    """The folder of ``key``'s compiled model under ``root``: discards (logged) one recorded for another key."""
    digest = hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:24]
    folder = root / digest
    record = folder / KEY_FILE
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded != dict(key):
        if folder.exists():
            log.warning("OpenVINO cache %s was made for %s, not %s: rebuilding it", folder, recorded, dict(key))
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(dict(key), sort_keys=True) + "\n")
    return folder


def onnx_specs(model: str | Path | bytes) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs an ONNX graph declares (dynamic axes by name, as ONNX Runtime reports them)."""
    import onnx

    try:
        proto = (
            onnx.load_model_from_string(model)
            if isinstance(model, bytes)
            else onnx.load(str(model), load_external_data=False)
        )
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError for unreadable files
        raise EngineError(
            f"OpenVINO cannot load {model if not isinstance(model, bytes) else 'the model'}: {exc}"
        ) from exc
    initializers = {i.name for i in proto.graph.initializer}

    def spec(value) -> TensorSpec:
        elem = value.type.tensor_type.elem_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name
        if not value.type.tensor_type.HasField("shape"):  # no shape declared: OpenVINO's inferred one
            return TensorSpec(value.name, dtype, None)
        shape = tuple(
            d.dim_param or (d.dim_value if d.HasField("dim_value") else "None")
            for d in value.type.tensor_type.shape.dim
        )
        return TensorSpec(value.name, dtype, shape)

    inputs = tuple(spec(v) for v in proto.graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in proto.graph.output)


def _with_static_dims(spec: TensorSpec, port) -> TensorSpec:
    """``spec`` with the sizes OpenVINO's shape inference fixed (as ONNX Runtime reports them); the others
    keep the graph's axis names."""
    dims = port.get_partial_shape()
    if spec.shape is None:
        return TensorSpec(spec.name, spec.dtype, tuple(d.get_length() if d.is_static else "None" for d in dims))
    if len(dims) != len(spec.shape):
        raise EngineError(f"OpenVINO gives {spec.name!r} the shape {dims}, the graph declares {spec.shape}")
    shape = tuple(dim.get_length() if dim.is_static else name for dim, name in zip(dims, spec.shape, strict=True))
    return TensorSpec(spec.name, spec.dtype, shape)


class OpenVinoEngine(Engine):
    """An ONNX model (a file path or serialized bytes) on OpenVINO's CPU plugin.

    ``precision``: the inference precision, ``"f32"`` (default; the FP32 result) or ``"bf16"`` (refused on CPUs
    without AVX512_BF16 or AMX). It applies to the parts of the graph OpenVINO runs in floating point: the
    INT8 graph's Q/DQ convolutions run as integer kernels either way. ``threads``: OpenVINO's inference
    threads (default: the CPUs available to this process). ``submit`` starts asynchronous infer requests, one per
    sample of a batch (a single input shape, prepared once), and returns at once, so the caller prepares the
    next batch meanwhile; idle requests are reused. ``cache``: the folder of the compiled-model cache
    (default ``cache_root()``; ``False``: no cache). ``sha256``: the graph's hash when the caller knows it
    already (the bundle manifest), else it is computed.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        threads: int | None = None,
        precision: str = "f32",
        name: str | None = None,
        cache: Path | bool = True,
        sha256: str | None = None,
    ):
        ov = import_openvino()
        if precision not in INFERENCE_PRECISIONS:
            raise EngineError(
                f"unknown OpenVINO inference precision {precision!r}; choose {' or '.join(INFERENCE_PRECISIONS)}"
            )
        if precision == "bf16":
            check_bf16()
        name = name or (Path(model).name if not isinstance(model, bytes) else "model")
        self.inputs, self.outputs = onnx_specs(model)
        self.precision = precision
        self.threads = threads or available_cpus()
        self._core = shared_core()
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.cache_dir: Path | None = None
        if cache is not False:
            digest = sha256 or (
                hashlib.sha256(model).hexdigest() if isinstance(model, bytes) else sha256_of(Path(model))
            )
            key = cache_key(digest, ov.get_version(), precision)
            self.cache_dir = cache_folder(cache_root() if cache is True else Path(cache), key)
        self._compiled = self._compile(model, config, name)
        ports = self._ports_of(self._compiled.outputs, self.outputs)
        inputs = self._ports_of(self._compiled.inputs, self.inputs)
        self.inputs = tuple(_with_static_dims(s, p) for s, p in zip(self.inputs, inputs, strict=True))
        self.outputs = tuple(_with_static_dims(s, p) for s, p in zip(self.outputs, ports, strict=True))
        self._ports = [(spec.name, port) for spec, port in zip(self.outputs, ports, strict=True)]
        self.backend = f"openvino[CPU,{precision}]"
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        log.info("%s: %s, %d threads, cache %s", name, self.backend, self.threads, self.cache_dir or "off")

    def _compile(self, model: str | Path | bytes, config: dict, name: str):
        source = model if isinstance(model, bytes) else str(model)
        try:
            graph = self._core.read_model(source)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable or unsupported graphs
            raise EngineError(f"OpenVINO cannot read {name}: {exc}") from exc
        if self.cache_dir is None:
            return self._compile_graph(graph, config, name)
        try:
            return self._compile_graph(graph, {**config, "CACHE_DIR": str(self.cache_dir)}, name)
        except EngineError as exc:  # an unreadable cached blob: rebuild it once
            log.warning("OpenVINO cache %s failed (%s): rebuilding it", self.cache_dir, exc)
            key = json.loads((self.cache_dir / KEY_FILE).read_text())
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir = cache_folder(self.cache_dir.parent, key)
            return self._compile_graph(graph, {**config, "CACHE_DIR": str(self.cache_dir)}, name)

    def _compile_graph(self, graph, config: dict, name: str):
        try:
            return self._core.compile_model(graph, "CPU", config)
        except Exception as exc:  # OpenVINO's own exception types
            raise EngineError(f"OpenVINO cannot compile {name}: {exc}") from exc

    @staticmethod
    def _ports_of(ports, specs: tuple[TensorSpec, ...]) -> list:
        """The compiled model's ports of ``specs``, by name."""
        by_name = {port.get_any_name(): port for port in ports}
        missing = [spec.name for spec in specs if spec.name not in by_name]
        if missing:
            raise EngineError(f"OpenVINO's compiled model has no tensors {missing}; it has {sorted(by_name)}")
        return [by_name[spec.name] for spec in specs]

    def close(self) -> None:
        with self._lock:
            self._idle.clear()
            self._compiled = None

    def _request(self):
        with self._lock:
            if self._compiled is None:
                raise EngineError(f"{self.backend}: the engine is closed")
            return self._idle.pop() if self._idle else self._compiled.create_infer_request()

    def _release(self, request) -> None:
        with self._lock:
            if self._compiled is not None:
                self._idle.append(request)

    def _outputs(self, request) -> dict[str, np.ndarray]:
        return {name: np.array(request.get_tensor(port).data, copy=True) for name, port in self._ports}

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._collect_impl(self._submit_impl(feeds))

    def _samples(self, feeds: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """``feeds`` as one-sample batches when every input has a dynamic batch axis, else as it is.

        OpenVINO's CPU plugin prepares its kernels for each new input shape the first time it sees it (seconds
        for the full-size generator): batches of changing size (a video's faces per batch) would pay it again
        and again. One-sample requests keep a single shape, prepared once.
        """
        sizes = {len(array) for array in feeds.values()}
        batched = all(spec.shape and isinstance(spec.shape[0], str) for spec in self.inputs)
        if not batched or len(sizes) != 1 or sizes == {1}:
            return [dict(feeds)]
        return [{name: array[i : i + 1] for name, array in feeds.items()} for i in range(sizes.pop())]

    def _submit_impl(self, feeds: Mapping[str, np.ndarray]) -> Any:
        return [self._start(sample) for sample in self._samples(feeds)]

    def _start(self, feeds: Mapping[str, np.ndarray]) -> Any:
        request = self._request()
        try:
            request.start_async({name: np.ascontiguousarray(array) for name, array in feeds.items()})
        except Exception as exc:  # OpenVINO's exception types
            self._release(request)
            raise EngineError(f"{self.backend}: inference failed: {exc}") from exc
        return request

    def _collect_impl(self, ticket: Any) -> dict[str, np.ndarray]:
        results, error = [], None
        for request in ticket:  # every request is waited for and released, even after one failed
            try:
                results.append(self._finish(request))
            except EngineError as exc:
                error = error or exc
        if error is not None:
            raise error
        if len(results) == 1:
            return results[0]
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def _finish(self, request) -> dict[str, np.ndarray]:
        try:
            request.wait()
            return self._outputs(request)
        except Exception as exc:  # OpenVINO's exception types
            raise EngineError(f"{self.backend}: inference failed: {exc}") from exc
        finally:
            self._release(request)
