"""How a candidate graph is scored against FP32: per-face scores on each CPU backend that can run it, and a
``Trial`` that stands for the backend scoring lowest (its lower tolerance bound, worst face and mean)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from simswap_build.precision.fidelity import cosines, psnr_per_face
from simswap_build.precision.goals import Goals
from simswap_build.precision.qdq import run_batched, session
from simswap_trt.engines.openvino import OpenVinoEngine, openvino_available


def per_face_scores(role: str, reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Generator: PSNR (dB) of each face's output; ArcFace: cosine of each face's latent (both vs FP32)."""
    return psnr_per_face(reference, output) if role == "generator" else cosines(reference, output)


def scoring_backends() -> tuple[str, ...]:
    """The CPU backends a candidate graph is checked on: ONNX Runtime (Q/DQ as written), and OpenVINO (its
    integer kernels round differently) where it is installed."""
    return ("onnxruntime", "openvino") if openvino_available() else ("onnxruntime",)


def run_on(backend: str, graph: onnx.ModelProto, feeds: Mapping[str, np.ndarray], batch: int = 4) -> np.ndarray:
    """The first output of ``graph`` on ``feeds`` (in chunks of ``batch``) on ``backend``: ONNX Runtime with
    every node as written, or OpenVINO's CPU plugin in f32 (the runtime's INT8 path; no compiled-model cache)."""
    if backend == "onnxruntime":
        return run_batched(session(graph), feeds, batch=batch)[0]
    engine = OpenVinoEngine(graph.SerializeToString(), name=f"{graph.graph.name or 'candidate'}", cache=False)
    output = graph.graph.output[0].name
    count = len(next(iter(feeds.values())))
    try:
        chunks = [engine.run({k: v[i : i + batch] for k, v in feeds.items()})[output] for i in range(0, count, batch)]
    finally:
        engine.close()
    return np.concatenate(chunks)


def check_scores(
    role: str,
    graph: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    reference: np.ndarray,
    variants: int = 1,
    backends: Sequence[str] = ("onnxruntime",),
) -> dict[str, np.ndarray]:
    """Per-face scores on each of ``backends``; with ``variants`` consecutive samples per face, each face's
    worst."""
    return {
        backend: worst_variant(per_face_scores(role, reference, run_on(backend, graph, feeds)), variants)
        for backend in backends
    }


def worst_variant(scores: np.ndarray, variants: int) -> np.ndarray:
    """Each face's worst score, from ``variants`` consecutive scores per face."""
    return scores.reshape(-1, variants).min(axis=1)


@dataclass(frozen=True)
class Trial:
    """One candidate graph on the check split: its lower tolerance bound, worst face and mean on the backend
    where it scores lowest, and each backend's own figures."""

    bound: float
    worst: float
    mean: float
    backends: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, role: str, scores: Mapping[str, np.ndarray], goals: Goals) -> Trial:
        """The trial of per-face ``scores`` on each backend; it stands for the backend that scores lowest."""
        figures = {
            backend: {"bound": goals.bound(role, s), "worst": float(s.min()), "mean": float(s.mean())}
            for backend, s in scores.items()
        }
        limiting = min(figures.values(), key=lambda f: min(f["bound"], f["worst"]))
        return cls(limiting["bound"], limiting["worst"], limiting["mean"], figures)

    @property
    def score(self) -> float:
        """What a candidate is ranked and accepted on: the bound, or the worst face where that is lower."""
        return min(self.bound, self.worst)

    def meets(self, goal: float) -> bool:
        return self.score >= goal
