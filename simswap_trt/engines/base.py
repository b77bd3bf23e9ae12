"""The one interface every inference backend implements: named, typed tensors in and out (``Engine``), and the
one an engine adds to run on device buffers for the device path (``DeviceEngine``)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from simswap_trt import cuda
from simswap_trt.errors import EngineError
from simswap_trt.schema import TensorSpec


class Engine(ABC):
    """Runs one model. ``run`` validates names, dtypes and shapes, then calls the backend's ``_run_impl``.

    Backends set ``inputs``, ``outputs`` and ``backend`` (a short description such as
    ``"onnxruntime[CPUExecutionProvider]"``) in their constructor. ``close()`` (or ``with engine:``)
    releases what the backend holds; a second ``close()`` does nothing.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    backend: str
    last_run_seconds: float = 0.0
    # the bundle file that runs (file, sha256, precision), set by backends.open_engine; for provenance
    graph: Mapping[str, str] | None = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. ``feeds`` maps every input name to an array; returns every output by name."""
        self.check_feeds(feeds)
        start = time.perf_counter()
        results = self._run_impl(feeds)
        self.last_run_seconds = time.perf_counter() - start
        return results

    def submit(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """Start a run and return a ticket for ``collect``. Asynchronous backends (TensorRT, OpenVINO) return once
        the work is enqueued, so the caller can prepare the next batch meanwhile; others run here."""
        self.check_feeds(feeds)
        return self._submit_impl(feeds)

    def collect(self, ticket: Any) -> dict[str, np.ndarray]:
        """The outputs of a ``submit``, waiting for them if needed. Collect tickets in submission order."""
        return self._collect_impl(ticket)

    def close(self) -> None:  # noqa: B027 - backends that hold nothing need no close
        """Release the backend's sessions and buffers. Idempotent; the engine cannot run afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @abstractmethod
    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Backend-specific execution; feeds are already validated."""

    def _submit_impl(self, feeds: Mapping[str, np.ndarray]) -> Any:
        return self._run_impl(feeds)  # synchronous backends: the ticket is the result

    def _collect_impl(self, ticket: Any) -> dict[str, np.ndarray]:
        return ticket

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise ``EngineError`` naming the first input that does not match the engine's signature."""
        expected = {spec.name: spec for spec in self.inputs}
        missing, unknown = set(expected) - set(feeds), set(feeds) - set(expected)
        if missing or unknown:
            raise EngineError(
                f"{self.backend}: inputs do not match; missing {sorted(missing)}, unexpected {sorted(unknown)}. "
                f"Expected: {', '.join(s.describe() for s in self.inputs)}"
            )
        dynamic: dict[str, tuple[str, int]] = {}
        for name, spec in expected.items():
            array = feeds[name]
            if not isinstance(array, np.ndarray) or array.dtype != np.dtype(spec.dtype):
                got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                raise EngineError(f"{self.backend}: input {name!r} must be a {spec.dtype} array, got {got}")
            if array.ndim != len(spec.shape):
                raise EngineError(f"{self.backend}: input {name!r} must have shape {spec.shape}, got {array.shape}")
            for want, got in zip(spec.shape, array.shape, strict=True):
                if isinstance(want, int) and want != got:
                    raise EngineError(f"{self.backend}: input {name!r} must have shape {spec.shape}, got {array.shape}")
                if isinstance(want, str):
                    first = dynamic.setdefault(want, (name, got))
                    if first[1] != got:
                        raise EngineError(
                            f"{self.backend}: axis {want!r} is {first[1]} in {first[0]!r} but {got} in {name!r}"
                        )


@runtime_checkable
class DeviceEngine(Protocol):
    """An engine that runs on device buffers (``TensorRTEngine``): what the device stages and the device
    detector drive. ``inputs``/``outputs`` as ``Engine``'s; ``min_batch``..``max_batch`` the plan's batch
    profile; ``device`` the CUDA device id its buffers and contexts live on (None: the current device).
    ``execute_device`` enqueues one run of ``batch`` items on ``stream``, every input and output bound by name
    to a device address, after the work already on that stream. ``device_context`` makes an execution context
    of the caller's own, enqueued straight on the caller's stream (for a CUDA graph capture; ``memory``: the
    address of activation memory the caller shares among contexts that never run at the same time).
    ``isinstance(engine, DeviceEngine)`` tells whether an engine can run on the device path."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    min_batch: int
    max_batch: int
    device: int | None

    def execute_device(self, addresses: Mapping[str, int], batch: int, stream: cuda.Stream) -> None: ...

    def device_context(self, memory: int | None = None) -> EngineContext: ...


class EngineContext(Protocol):
    """One execution context of a ``DeviceEngine`` that a single caller enqueues on its own stream
    (``DeviceEngine.device_context``): ``enqueue`` as ``execute_device``, ``free`` once its streams are done."""

    def enqueue(self, addresses: Mapping[str, int], batch: int, stream: cuda.Stream) -> None: ...

    def free(self) -> None: ...
