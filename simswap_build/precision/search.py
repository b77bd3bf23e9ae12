"""The INT8 search (steps in ``simswap_build.precision.recipe``'s docstring): range methods scored on the check
split, the convolutions ranked by sensitivity, and the fewest FP32 fallbacks that meet the goal; ArcFace's
choice between INT8 and FP16."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from tqdm import tqdm

from simswap_build.precision import tolerance
from simswap_build.precision.fp16 import fp16_graph
from simswap_build.precision.goals import METRICS, Goals, PrecisionGoalError
from simswap_build.precision.qdq import (
    activation_histograms,
    activation_ranges,
    qdq_graph,
    quantizable_convs,
    run_batched,
    session,
)
from simswap_build.precision.ranges import METHODS
from simswap_build.precision.scoring import Trial, check_scores, scoring_backends
from simswap_trt.errors import ConfigError

log = logging.getLogger(__name__)

SENSITIVITY_FACES = 4  # calibration faces each single-layer trial runs on (as photographed)
CLIP_FREE = "max"  # the range method the automatic choice tries first


@dataclass
class _Candidates:
    """The INT8 candidates of one model: all convolutions but the ``kept`` most sensitive (``order``) quantized
    with one method's ranges, each scored once on the check split (``trails[method][kept]``)."""

    model: onnx.ModelProto
    role: str
    convs: Mapping[str, str]
    ranges: Mapping[str, Mapping[str, float]]  # per range method
    check: Mapping[str, np.ndarray]
    reference: np.ndarray  # the FP32 outputs of ``check``
    goals: Goals
    variants: int
    backends: tuple[str, ...]
    budget: int
    order: list[str] = field(default_factory=list)
    trails: dict[str, dict[int, Trial]] = field(default_factory=dict)
    progress: tqdm | None = None

    @property
    def goal(self) -> float:
        return self.goals.goal(self.role)

    def graph(self, method: str, kept: int) -> onnx.ModelProto:
        return qdq_graph(self.model, self.ranges[method], [c for c in self.convs if c not in self.order[:kept]])

    def measure(self, method: str, kept: int) -> Trial:
        graph = self.graph(method, kept)
        scores = check_scores(self.role, graph, self.check, self.reference, self.variants, self.backends)
        return Trial.of(self.role, scores, self.goals)

    def score_methods(self) -> None:
        """Every range method's all-INT8 graph on the check split."""
        methods = tqdm(self.ranges, desc=f"INT8 {self.role} range methods", unit="method", leave=False)
        self.trails = {m: {0: self.measure(m, 0)} for m in methods}

    def trial(self, method: str, kept: int) -> Trial:
        if kept not in self.trails[method]:
            if self.progress is not None:
                self.progress.update()
            trial = self.trails[method][kept] = self.measure(method, kept)
            log.info("INT8 %s, %s ranges: %d FP32 convolution(s) -> %s", self.role, method, kept, trial)
        return self.trails[method][kept]

    def fewest(self, method: str, high: int | None) -> int | None:
        """The fewest FP32 fallbacks that meet the goal: 0, 1, 3, 7, ... up to the budget (unless ``high``
        is known to meet), then bisection. None if the budget does not."""
        low, kept = -1, 0
        while high is None:
            if self.trial(method, kept).meets(self.goal):
                high = kept
            elif kept >= self.budget:
                return None
            else:
                low, kept = kept, min(self.budget, 2 * kept + 1)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if self.trial(method, middle).meets(self.goal) else (middle, high)
        return high

    def choose(self, best: str) -> tuple[str, int | None]:
        """The range method and fewest fallbacks: ``best``'s, else the clipping method best at the budget."""
        with tqdm(desc=f"INT8 {self.role} FP32 fallback search", unit="trial", leave=False) as self.progress:
            kept = self.fewest(best, None)
            if kept is None and len(self.ranges) > 1:  # the clipping methods, best at the budget first
                rival = max((m for m in self.ranges if m != best), key=lambda m: self.trial(m, self.budget).score)
                log.info("INT8 %s: %s ranges cannot meet the goal; trying %s ranges", self.role, best, rival)
                if self.trial(rival, self.budget).meets(self.goal):
                    best, kept = rival, self.fewest(rival, self.budget)
        return best, kept


def _sensitivity(
    model: onnx.ModelProto,
    role: str,
    convs: Mapping[str, str],
    ranges: Mapping[str, float],
    calibration: Mapping[str, np.ndarray],
    variants: int,
) -> dict[str, float]:
    """Each convolution alone in INT8 (the rest FP32), scored on a few calibration faces (ONNX Runtime)."""
    probe = {k: v[::variants][:SENSITIVITY_FACES] for k, v in calibration.items()}  # the faces as photographed
    probe_reference = run_batched(session(model), probe)[0]
    return {
        name: float(check_scores(role, qdq_graph(model, ranges, [name]), probe, probe_reference)["onnxruntime"].min())
        for name in tqdm(convs, desc=f"INT8 {role} sensitivity", unit="conv", leave=False)
    }


def bound_report(role: str, goals: Goals, faces: int) -> dict:
    """How the lower tolerance bound of ``faces`` check faces is taken (for the report)."""
    return {
        "method": tolerance.METHODS[role],
        "coverage": goals.coverage,
        "confidence": goals.confidence,
        "k": tolerance.tolerance_factor(faces, goals.coverage, goals.confidence),
        "check_faces": faces,
    }


def int8_search(
    model: onnx.ModelProto,
    role: str,
    calibration: Mapping[str, np.ndarray],
    check: Mapping[str, np.ndarray],
    goals: Goals = Goals(),
    budget: int | None = None,
    method: str = "auto",
    variants: int = 1,
    backends: Sequence[str] | None = None,
) -> tuple[onnx.ModelProto, dict]:
    """The INT8 graph of ``model`` whose ``check`` faces' lower tolerance bound and worst face meet
    ``goals`` with the fewest FP32 convolutions (calibrated on the ``calibration`` feeds only), and its
    report. ``budget``: the most convolutions left in FP32 (default: half of them). ``variants``: the feeds
    hold that many consecutive samples per face (``face_variants``), and a check face scores its worst.
    ``backends``: the CPU backends every candidate must meet the goals on (default ``scoring_backends()``);
    the sensitivity ranking runs on ONNX Runtime. Raises ``PrecisionGoalError`` when the budget is not
    enough."""
    if method != "auto" and method not in METHODS:
        raise ConfigError(f"unknown range method {method!r}; choose auto or one of {', '.join(METHODS)}")
    convs = quantizable_convs(model)
    histograms = activation_histograms(model, convs.values(), calibration)
    search = _Candidates(
        model,
        role,
        convs,
        {m: activation_ranges(histograms, m) for m in (METHODS if method == "auto" else (method,))},
        check,
        run_batched(session(model), check)[0],
        goals,
        variants,
        tuple(backends or scoring_backends()),
        (len(convs) + 1) // 2 if budget is None else min(budget, len(convs)),
    )
    search.score_methods()
    # clip-free ranges first: a range fitted to the calibration faces clips the larger activations of unseen
    # faces, which a check split drawn like the calibration faces does not show
    best = CLIP_FREE if method == "auto" else method
    log.info("INT8 %s: range methods on the check split %s; searching with %s", role, search.trails, best)
    sensitivity: dict[str, float] = {}
    if not search.trails[best][0].meets(search.goal) and search.budget > 0:  # fallbacks needed: rank them
        sensitivity = _sensitivity(model, role, convs, search.ranges[best], calibration, variants)
    search.order = sorted(convs, key=lambda name: sensitivity.get(name, 0.0))  # worst alone first; ties: graph order
    best, kept = search.choose(best)
    report = _search_report(search, best, kept, sensitivity)
    if kept is None:
        raise _goal_error(search, report)
    report.update(fp32_layers=search.order[:kept], check=asdict(search.trails[best][kept]))
    graph = search.graph(best, kept)
    onnx.checker.check_model(graph)  # once, on the graph kept (the search builds many)
    graph.metadata_props.add(key="simswap_trt.range_method", value=best)
    return graph, report


def _search_report(search: _Candidates, best: str, kept: int | None, sensitivity: Mapping[str, float]) -> dict:
    trails = search.trails
    return {
        "metric": METRICS[search.role],
        "goal": search.goal,
        "bound": bound_report(search.role, search.goals, len(search.reference) // search.variants),
        "backends": list(search.backends),
        "convolutions": len(search.convs),
        "budget": search.budget,
        "method": best,
        "method_scores": {m: trails[m][0].score for m in search.ranges},
        "sensitivity": {name: sensitivity[name] for name in search.order if name in sensitivity},
        "trail": {str(k): asdict(v) for k, v in sorted(trails[best].items())},
        "trails": {m: {str(k): v.score for k, v in sorted(t.items())} for m, t in trails.items()},
        "met": kept is not None,
    }


def _goal_error(search: _Candidates, report: dict) -> PrecisionGoalError:
    """The budget is not enough: the closest candidate goes into the report and the message."""
    closest = max((t for ts in search.trails.values() for t in ts.values()), key=lambda t: t.score)
    report["best"] = asdict(closest)
    goals, metric = search.goals, METRICS[search.role]
    return PrecisionGoalError(
        f"INT8 {search.role}: with up to {search.budget} of {len(search.convs)} convolutions in FP32 the check split "
        f"reaches at best a lower bound of {closest.bound:.4g} (worst face {closest.worst:.4g}) for {metric}; the "
        f"goal is {search.goal} for {goals.coverage:.0%} of faces with {goals.confidence:.0%} confidence. Add "
        "calibration photos like your footage, raise the budget, or use FP16",
        report,
    )


def arcface_for_int8(
    fp32: onnx.ModelProto,
    calibration: Mapping[str, np.ndarray],
    check: Mapping[str, np.ndarray],
    goals: Goals,
    budget: int | None,
    policy: str,
    method: str,
    fp16: onnx.ModelProto | None = None,
    variants: int = 1,
    backends: Sequence[str] | None = None,
) -> tuple[onnx.ModelProto, dict]:
    """ArcFace in the INT8 recipe: INT8 when it holds the goal within the budget, else (``auto``) FP16
    (``fp16``, when the caller has already converted it). ``calibration`` and ``check``: ArcFace feeds
    with ``variants`` samples per face; ``backends``: where each candidate must meet the goal."""
    backends = tuple(backends or scoring_backends())
    report: dict = {}
    if policy != "fp16":
        try:
            graph, report = int8_search(fp32, "arcface", calibration, check, goals, budget, method, variants, backends)
            report["graph"] = "int8"
        except PrecisionGoalError as exc:
            if policy == "int8":
                raise
            report = {**exc.report, "graph": "fp16", "why": str(exc)}
    if policy == "fp16" or report["graph"] == "fp16":
        graph = fp16 or fp16_graph(fp32)
        reference = run_batched(session(fp32), check)[0]
        result = Trial.of("arcface", check_scores("arcface", graph, check, reference, variants, backends), goals)
        faces = len(reference) // variants
        report.update(
            graph="fp16",
            metric=METRICS["arcface"],
            goal=goals.cosine,
            bound=bound_report("arcface", goals, faces),
            backends=list(backends),
        )
        report.update(check=asdict(result))
        report.setdefault("why", "requested (--arcface fp16)")
        if not result.meets(goals.cosine):
            raise PrecisionGoalError(
                f"INT8 recipe: even FP16 ArcFace reaches only a cosine bound of {result.bound:.4f} (worst face "
                f"{result.worst:.4f}) on the check split; the goal is {goals.cosine}",
                report,
            )
    return graph, report
