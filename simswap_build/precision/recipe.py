"""Precision recipes: FP16 and INT8 (Q/DQ) variants of a bundle's FP32 graphs, written as ONNX so that
TensorRT 10.3 and 11.x (strongly typed) take the precision from the graph, and so that ONNX Runtime can
check it on a CPU.

* FP16 (onnxconverter-common's float16 converter): convolutions, their weights and the activations
  between them in FP16; the instance norms, the identity-injection (style) arithmetic, the input
  normalisation and the latent's L2 normalisation stay FP32 behind Cast nodes (eps 1e-8 is 0 in FP16 and
  the mean of squares can overflow). Graph inputs and outputs stay FP32, so every precision has one
  contract.
* INT8 (``simswap_build.precision.qdq``): symmetric per-tensor INT8 activations and per-channel INT8 weights with
  zero points 0, around convolutions only; everything else FP32. Driven by accuracy goals measured on a
  **check split**: the faces are split by content hash, calibration (activation histograms) sees only
  the calibration part, and per model (generator, ArcFace):

  1. each range method (max, percentile, entropy, MSE) sets every activation's range, and each all-INT8
     graph is scored on the check split; the search uses max ranges (no value calibration saw is
     clipped: ranges fitted tighter clip unseen faces' larger activations, which a check split drawn
     like the calibration faces does not reveal), and the clipping methods only when max cannot meet
     the goal within the budget (the best of them at the budget);
  2. every convolution is scored alone in INT8 (the rest FP32) on calibration faces: its sensitivity;
  3. the most sensitive convolutions are put back to FP32, fewest first (doubling, then bisection),
     until a candidate is accepted: the lower tolerance bound of the check faces' per-face scores
     (generator PSNR, ArcFace cosine vs FP32; ``simswap_build.precision.tolerance``: at least ``coverage`` of all
     faces above it, with ``confidence``) and the worst check face both reach the goal, on every CPU
     backend that can run the graph (ONNX Runtime with Q/DQ as written and, where it is installed,
     OpenVINO's integer kernels, which round differently); the report keeps each backend's figures. A small check
     split widens the bound, so it asks for more fallbacks by itself. Beyond the budget the recipe stops
     with a report (``PrecisionGoalError``).

  The check split is ``CHECK_FRACTION`` of the distinct faces, at least ``MIN_CHECK``, with at least
  ``MIN_CALIBRATION`` left for calibration; fewer faces are refused.

  ArcFace computes the source identity once per swap, so unless INT8 clears its goal by the bound within
  the budget the INT8 recipe keeps it in FP16 (``arcface="auto"``); the report states what reference
  selection, which runs it once per target face, costs per face.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from simswap_build.precision import tolerance
from simswap_build.precision.qdq import (
    activation_histograms,
    activation_ranges,
    qdq_graph,
    quantizable_convs,
    run_batched,
    session,
)
from simswap_build.precision.ranges import METHODS
from simswap_trt.bundle import Bundle
from simswap_trt.cache import cache_folder
from simswap_trt.errors import BuildError, ConfigError, InputError, OutputError
from simswap_trt.files import write_atomic_with
from simswap_trt.images import list_images, read_image

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
ARCFACE_POLICIES = ("auto", "int8", "fp16")
SENSITIVITY_FACES = 4  # calibration faces each single-layer trial runs on (as photographed)
# Each face of both parts also as photographed differently: calibration sees these variants of its faces,
# and a check face scores the worst of its variants
VARIANTS = (
    "as is",
    "mirrored",
    "darker (x0.8 - 16)",
    "brighter (x1.2 + 16)",
    "turned 6 deg, 6 % larger",
    "turned -6 deg, 6 % smaller",
)
CLIP_FREE = "max"  # the range method the automatic choice tries first
CHECK_FRACTION = 0.4  # share of the distinct faces held out as the check split ...
MIN_CHECK = 6  # ... but at least this many (the tolerance bound of fewer faces is very wide)
MIN_CALIBRATION = 4  # faces left for the activation histograms


class PrecisionGoalError(BuildError):
    """The INT8 recipe cannot meet its goals on the check split within the FP32 budget; ``report`` has the
    figures."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Goals:
    """INT8 accuracy goals per face (the one definition of their defaults): the check split's lower
    tolerance bound (``coverage`` of faces, with ``confidence``) and its worst face must reach them."""

    psnr_db: float = 35.0  # generator output vs FP32, per face
    cosine: float = 0.98  # ArcFace latent vs FP32, per face
    coverage: float = tolerance.COVERAGE
    confidence: float = tolerance.CONFIDENCE

    def goal(self, role: str) -> float:
        return self.psnr_db if role == "generator" else self.cosine

    def bound(self, role: str, scores: np.ndarray) -> float:
        """The lower tolerance bound of per-face ``scores`` (``simswap_build.precision.tolerance``)."""
        return tolerance.lower_bound(role, scores, self.coverage, self.confidence)


METRICS = {"generator": "psnr_min_db", "arcface": "cosine_min"}


def fp32_islands(model: onnx.ModelProto) -> list[str]:
    """Nodes kept in FP32 by the FP16 recipe (names from the graph writer). Enhancer graphs have none."""
    if {p.key: p.value for p in model.metadata_props}.get("simswap_trt.role") == "enhancer":
        return []
    keep = ("InstanceNormalization",)
    markers = (".style", "normalize.", "denormalize.", "l2norm.", "subsample.")
    return [n.name for n in model.graph.node if n.op_type in keep or any(m in n.name for m in markers)]


def fp16_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP16 variant of an FP32 graph written by ``onnx_graphs`` (FP32 I/O, FP32 islands)."""
    from onnxconverter_common import float16

    with warnings.catch_warnings(record=True) as clamped:  # one warning per weight below FP16's range
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=fp32_islands(model))
    if clamped:
        log.info("FP16: %d weights of magnitude < 1e-7 were set to +-1e-7 by the converter", len(clamped))
    onnx.checker.check_model(converted)
    return converted


ENHANCER_FP16_GOAL_DB = 45.0
ENHANCER_CHECK_FACES = 2


def enhancer_fp16(model: onnx.ModelProto, alignment: str, license: str) -> tuple[onnx.ModelProto, dict]:
    """The FP16 enhancer graph and its manifest source: checked against the FP32 graph on seeded random
    faces (the hardest input: every pixel independent), each at least ``ENHANCER_FP16_GOAL_DB`` PSNR, else
    ``PrecisionGoalError``. INT8 is not offered for the enhancer."""
    from simswap_build.precision.fidelity import psnr_per_face

    graph = fp16_graph(model)
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    faces = np.random.default_rng(0).random((ENHANCER_CHECK_FACES, 3, size, size), dtype=np.float32)
    reference = session(model).run(None, {"face": faces})[0]
    psnr = psnr_per_face(reference, session(graph).run(None, {"face": faces})[0])
    report = {"psnr_min_db": float(psnr.min()), "goal_db": ENHANCER_FP16_GOAL_DB, "check": "seeded uniform noise"}
    if psnr.min() < ENHANCER_FP16_GOAL_DB:
        raise PrecisionGoalError(
            f"FP16 enhancer: {psnr.min():.1f} dB against FP32, the goal is {ENHANCER_FP16_GOAL_DB} dB", report
        )
    log.info("FP16 enhancer: %.1f dB against FP32", psnr.min())
    return graph, {"alignment": alignment, "license": license, "fp16_check": report}


# -- calibration ----------------------------------------------------------------------------------------


def calibration_crops(
    folder: Path, alignment: str, crop_size: int, limit: int = 64, cache_dir: Path | None = None
) -> np.ndarray:
    """Aligned uint8 BGR crops of the largest face in each image of ``folder`` (sorted by name), detected
    and aligned by the runtime's own pipeline. Deterministic for the same files; cached by their content in
    ``cache_dir`` (default: the user's cache folder, ``simswap_trt.cache``), never in ``folder``."""
    from tqdm import tqdm

    from simswap_trt.vision.detect import CenterFace
    from simswap_trt.vision.warp import largest_face_crop

    files = calibration_files(folder, limit)
    digest = hashlib.sha256(f"{alignment}:{crop_size}".encode())
    for path in files:
        digest.update(path.read_bytes())
    cache = Path(cache_dir or cache_folder("calibration")) / f"crops-{digest.hexdigest()[:16]}.npz"
    if cache.is_file():
        log.info("calibration crops from cache %s", cache)
        return np.load(cache)["crops"]
    detector = CenterFace()
    crops = []
    for path in tqdm(files, desc="calibration faces", unit="image"):
        try:
            image = read_image(path)
        except InputError as exc:
            log.warning("calibration: skipping %s", exc)
            continue
        faces = detector.detect(image)
        if not faces:
            log.warning("calibration: no face in %s", path.name)
            continue
        crops.append(largest_face_crop(image, faces, alignment, crop_size))
    if not crops:
        raise InputError(f"no usable face in the {len(files)} calibration image(s) of {folder}")
    stacked = np.stack(crops)
    try:
        write_atomic_with(cache, lambda f: np.savez_compressed(f, crops=stacked))
    except OutputError as exc:  # a cache that cannot be written costs time on the next run, nothing else
        log.warning("calibration crops not cached: %s", exc)
    return stacked


def calibration_files(folder: Path, limit: int = 64) -> list[Path]:
    """The images of ``folder`` calibration reads (sorted by name, at most ``limit``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"calibration folder not found: {folder}")
    files = list_images(folder)[:limit]
    if not files:
        raise InputError(f"no images in the calibration folder {folder}")
    return files


# -- check split ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceSplit:
    """Calibration and check faces, disjoint by content (sha256 of the aligned crop's pixels)."""

    calibration: np.ndarray
    check: np.ndarray
    calibration_sha256: tuple[str, ...]
    check_sha256: tuple[str, ...]
    fraction: float = CHECK_FRACTION
    min_check: int = MIN_CHECK

    def to_json(self) -> dict:
        return {
            "rule": (
                "unique aligned crops ranked by sha256 of their pixels; the lowest ranks are the check split: "
                f"{self.fraction:g} of them, at least {self.min_check}, at least {MIN_CALIBRATION} left for calibration"
            ),
            "calibration_faces": len(self.calibration),
            "check_faces": len(self.check),
            "calibration_sha256": list(self.calibration_sha256),
            "check_sha256": list(self.check_sha256),
        }


def face_sha256(crop: np.ndarray) -> str:
    """Content hash of an aligned crop (its shape and pixels)."""
    crop = np.ascontiguousarray(crop)
    return hashlib.sha256(str(crop.shape).encode() + crop.tobytes()).hexdigest()


def face_variants(crops: np.ndarray) -> np.ndarray:
    """Each aligned crop in the ``VARIANTS`` (consecutive: face i's variants at ``i * len(VARIANTS)``...)."""
    import cv2

    size = crops.shape[1]
    out = []
    for crop in crops:
        lit = crop.astype(np.float32)
        out += [crop, crop[:, ::-1]]
        for gain, offset in ((0.8, -16), (1.2, 16)):
            out.append(np.clip(np.rint(lit * gain + offset), 0, 255).astype(np.uint8))
        for angle, scale in ((6, 1.06), (-6, 0.94)):
            matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
            out.append(cv2.warpAffine(crop, matrix, (size, size), borderMode=cv2.BORDER_REFLECT))
    return np.stack([np.ascontiguousarray(c) for c in out])


def check_count(faces: int, fraction: float = CHECK_FRACTION, min_check: int = MIN_CHECK) -> int:
    """How many of ``faces`` distinct faces the check split takes: ``max(min_check, round(fraction * faces))``.
    Raises ``InputError`` when fewer than ``MIN_CALIBRATION`` would be left for calibration."""
    if not 0 < fraction < 1:
        raise InputError(f"the check fraction must be between 0 and 1, got {fraction}")
    n_check = max(min_check, round(fraction * faces))
    if faces - n_check < MIN_CALIBRATION:
        raise InputError(
            f"INT8 needs at least {n_check + MIN_CALIBRATION} distinct faces ({n_check} for the check split, "
            f"{MIN_CALIBRATION} for calibration); the calibration folder gave {faces}: add photos (a dozen or more "
            "of different people, like your footage)"
        )
    return n_check


def split_faces(crops: np.ndarray, check_fraction: float = CHECK_FRACTION, min_check: int = MIN_CHECK) -> FaceSplit:
    """Split ``crops`` by content hash: duplicates are dropped, the unique crops are ranked by their hash
    and the first ``check_count(n)`` form the check split, which calibration never sees. Independent of
    file names and order."""
    unique: dict[str, int] = {}
    for i, crop in enumerate(crops):
        unique.setdefault(face_sha256(crop), i)
    if len(unique) < len(crops):
        log.warning("calibration: %d duplicate face(s) dropped", len(crops) - len(unique))
    ranked = sorted(unique)
    n_check = check_count(len(ranked), check_fraction, min_check)
    check, calibration = ranked[:n_check], ranked[n_check:]
    return FaceSplit(
        calibration=np.stack([crops[unique[h]] for h in calibration]),
        check=np.stack([crops[unique[h]] for h in check]),
        calibration_sha256=tuple(calibration),
        check_sha256=tuple(check),
        fraction=check_fraction,
        min_check=min_check,
    )


# -- INT8 search ------------------------------------------------------------------------------------------


def per_face_scores(role: str, reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Generator: PSNR (dB) of each face's output; ArcFace: cosine of each face's latent (both vs FP32)."""
    from simswap_build.precision.fidelity import cosines, psnr_per_face

    return psnr_per_face(reference, output) if role == "generator" else cosines(reference, output)


def scoring_backends() -> tuple[str, ...]:
    """The CPU backends a candidate graph is checked on: ONNX Runtime (Q/DQ as written), and OpenVINO (its
    integer kernels round differently) where it is installed."""
    from simswap_trt.engines.openvino import openvino_available

    return ("onnxruntime", "openvino") if openvino_available() else ("onnxruntime",)


def run_on(backend: str, graph: onnx.ModelProto, feeds: Mapping[str, np.ndarray], batch: int = 4) -> np.ndarray:
    """The first output of ``graph`` on ``feeds`` (in chunks of ``batch``) on ``backend``: ONNX Runtime with
    every node as written, or OpenVINO's CPU plugin in f32 (the runtime's INT8 path; no compiled-model cache)."""
    if backend == "onnxruntime":
        return run_batched(session(graph), feeds, batch=batch)[0]
    from simswap_trt.engines.openvino import OpenVinoEngine

    engine = OpenVinoEngine(graph.SerializeToString(), name=f"{graph.graph.name or 'candidate'}", cache=False)
    output = graph.graph.output[0].name
    count = len(next(iter(feeds.values())))
    try:
        chunks = [engine.run({k: v[i : i + batch] for k, v in feeds.items()})[output] for i in range(0, count, batch)]
    finally:
        engine.close()
    return np.concatenate(chunks)


def _scores(
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


def _subset(feeds: Mapping[str, np.ndarray], count: int, variants: int = 1) -> dict[str, np.ndarray]:
    """The first ``count`` faces as photographed (the first of each face's ``variants``)."""
    return {k: v[::variants][:count] for k, v in feeds.items()}


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


def _bound_report(role: str, goals: Goals, faces: int) -> dict:
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
    from tqdm import tqdm

    if method != "auto" and method not in METHODS:
        raise ConfigError(f"unknown range method {method!r}; choose auto or one of {', '.join(METHODS)}")
    convs = quantizable_convs(model)
    budget = (len(convs) + 1) // 2 if budget is None else min(budget, len(convs))
    goal = goals.goal(role)
    backends = tuple(backends or scoring_backends())
    histograms = activation_histograms(model, convs.values(), calibration)
    reference = run_batched(session(model), check)[0]
    methods = METHODS if method == "auto" else (method,)
    ranges = {m: activation_ranges(histograms, m) for m in methods}
    trails: dict[str, dict[int, Trial]] = {
        m: {
            0: Trial.of(
                role, _scores(role, qdq_graph(model, ranges[m], convs), check, reference, variants, backends), goals
            )
        }
        for m in tqdm(methods, desc=f"INT8 {role} range methods", unit="method", leave=False)
    }
    # clip-free ranges first: a range fitted to the calibration faces clips the larger activations of unseen
    # faces, which a check split drawn like the calibration faces does not show
    best = CLIP_FREE if method == "auto" else method
    log.info("INT8 %s: range methods on the check split %s; searching with %s", role, trails, best)

    sensitivity: dict[str, float] = {}
    if not trails[best][0].meets(goal) and budget > 0:  # fallbacks needed: rank the convolutions
        probe = _subset(calibration, SENSITIVITY_FACES, variants)
        probe_reference = run_batched(session(model), probe)[0]
        sensitivity = {
            name: float(
                _scores(role, qdq_graph(model, ranges[best], [name]), probe, probe_reference)["onnxruntime"].min()
            )
            for name in tqdm(convs, desc=f"INT8 {role} sensitivity", unit="conv", leave=False)
        }
    order = sorted(convs, key=lambda name: sensitivity.get(name, 0.0))  # worst alone first; ties: graph order

    searching = tqdm(desc=f"INT8 {role} FP32 fallback search", unit="trial", leave=False)

    def trial(method: str, kept: int) -> Trial:
        if kept not in trails[method]:
            searching.update()
            graph = qdq_graph(model, ranges[method], [c for c in convs if c not in order[:kept]])
            trails[method][kept] = Trial.of(role, _scores(role, graph, check, reference, variants, backends), goals)
            log.info("INT8 %s, %s ranges: %d FP32 convolution(s) -> %s", role, method, kept, trails[method][kept])
        return trails[method][kept]

    def fewest(method: str, high: int | None) -> int | None:
        """The fewest FP32 fallbacks that meet the goal: 0, 1, 3, 7, ... up to the budget (unless ``high``
        is known to meet), then bisection. None if the budget does not."""
        low, kept = -1, 0
        while high is None:
            if trial(method, kept).meets(goal):
                high = kept
            elif kept >= budget:
                return None
            else:
                low, kept = kept, min(budget, 2 * kept + 1)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if trial(method, middle).meets(goal) else (middle, high)
        return high

    with searching:
        kept = fewest(best, None)
        if kept is None and len(methods) > 1:  # the clipping methods, best at the budget first
            rival = max((m for m in methods if m != best), key=lambda m: trial(m, budget).score)
            log.info("INT8 %s: %s ranges cannot meet the goal; trying %s ranges", role, best, rival)
            if trial(rival, budget).meets(goal):
                best, kept = rival, fewest(rival, budget)
    report = {
        "metric": METRICS[role],
        "goal": goal,
        "bound": _bound_report(role, goals, len(reference) // variants),
        "backends": list(backends),
        "convolutions": len(convs),
        "budget": budget,
        "method": best,
        "method_scores": {m: trails[m][0].score for m in methods},
        "sensitivity": {name: sensitivity[name] for name in order if name in sensitivity},
        "trail": {str(k): asdict(v) for k, v in sorted(trails[best].items())},
        "trails": {m: {str(k): v.score for k, v in sorted(t.items())} for m, t in trails.items()},
        "met": kept is not None,
    }
    if kept is None:
        closest = max((t for ts in trails.values() for t in ts.values()), key=lambda t: t.score)
        report["best"] = asdict(closest)
        raise PrecisionGoalError(
            f"INT8 {role}: with up to {budget} of {len(convs)} convolutions in FP32 the check split reaches at best "
            f"a lower bound of {closest.bound:.4g} (worst face {closest.worst:.4g}) for {METRICS[role]}; the goal is "
            f"{goal} for {goals.coverage:.0%} of faces with {goals.confidence:.0%} confidence. Add calibration photos "
            "like your footage, raise the budget, or use FP16",
            report,
        )
    fp32_layers = order[:kept]
    report.update(fp32_layers=fp32_layers, check=asdict(trails[best][kept]))
    graph = qdq_graph(model, ranges[best], [c for c in convs if c not in fp32_layers])
    onnx.checker.check_model(graph)  # once, on the graph kept (the search builds many)
    graph.metadata_props.add(key="simswap_trt.range_method", value=best)
    return graph, report


# -- bundle integration -------------------------------------------------------------------------------------


def feeds_for(bundle_root: Path, *groups: np.ndarray, variants: bool = False) -> list[dict[str, dict[str, np.ndarray]]]:
    """The model inputs for each group of aligned crops, ``{role: feeds}``: ArcFace reads the crops, the
    generator the crops with each one's FP32 ArcFace latent shifted by one within its group (target i gets
    identity i+1, a real swap pairing). With ``variants``, every crop in its ``VARIANTS`` (consecutive),
    each swapped with the identity of the next face as photographed. The FP32 ArcFace is opened once."""
    from simswap_trt.backends import open_engine
    from simswap_trt.vision.preprocess import crops_to_tensor

    arcface = open_engine(Bundle.load(bundle_root), "arcface", "onnxruntime")
    copies = len(VARIANTS) if variants else 1
    feeds = []
    for crops in groups:
        latents = arcface.run({"crop": crops_to_tensor(crops, crops.shape[1])})["latent"]
        tensor = crops_to_tensor(face_variants(crops) if variants else crops, crops.shape[1])
        latents = np.repeat(np.roll(latents, -1, axis=0), copies, axis=0)
        feeds.append({"arcface": {"crop": tensor}, "generator": {"target": tensor, "latent": latents}})
    return feeds


def ms_per_face(model: Path | bytes, crops: np.ndarray, precision: str, repeats: int = 5) -> float:
    """Median ONNX Runtime CPU time (ms) of one ArcFace call on one face, run as the runtime runs it (INT8
    with integer kernels only on CPUs where they are exact, else Q/DQ as written)."""
    from simswap_trt.engines import OnnxRuntimeEngine
    from simswap_trt.engines.onnxruntime import int8_kernels_exact
    from simswap_trt.vision.preprocess import crops_to_tensor

    engine = OnnxRuntimeEngine(model, optimize=precision != "int8" or int8_kernels_exact())
    feed = {"crop": crops_to_tensor(crops[:1], crops.shape[1])}
    engine.run(feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.run(feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


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
        result = Trial.of("arcface", _scores("arcface", graph, check, reference, variants, backends), goals)
        faces = len(reference) // variants
        report.update(
            graph="fp16",
            metric=METRICS["arcface"],
            goal=goals.cosine,
            bound=_bound_report("arcface", goals, faces),
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


def add_precisions(
    bundle_root: str | Path,
    calibration_folder: Path | None,
    precisions: Sequence[str] = PRECISIONS,
    goals: Goals = Goals(),
    budgets: Mapping[str, int | None] | None = None,
    arcface: str = "auto",
    method: str = "auto",
    check_fraction: float = CHECK_FRACTION,
) -> dict:
    """Write the FP16 / INT8 variants of both graphs (and the FP16 enhancer, when the bundle has one; INT8 is
    not offered for it) into the bundle and register them in its manifest,
    with the INT8 recipe's goals, split, range methods, FP32 fallbacks and check-split figures. Returns
    that INT8 report (empty without INT8). What can be known early (an untrained bundle, too few photos) is
    refused before any work; the FP16 graphs are written before the INT8 recipe starts and kept when it
    fails; no INT8 graph is written when a goal cannot be met (``PrecisionGoalError``)."""
    from simswap_build.tensorrt.builder import register_variants

    bundle = Bundle.load(bundle_root)
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise ConfigError(f"unknown precision(s) {sorted(unknown)}; choose from {', '.join(PRECISIONS)}")
    if arcface not in ARCFACE_POLICIES:
        raise ConfigError(f"unknown ArcFace policy {arcface!r}; choose from {', '.join(ARCFACE_POLICIES)}")
    if "int8" in precisions:
        check_int8_inputs(bundle, calibration_folder, check_fraction)
    budgets = budgets or {}
    graphs, report, sources = {}, {}, {}
    fp32 = {role: onnx.load(bundle.path_of(role)) for role in ("generator", "arcface")}
    fp16 = {}
    if "fp16" in precisions:  # written now: kept whatever the INT8 recipe then does
        fp16 = {(role, "fp16"): fp16_graph(model) for role, model in fp32.items()}
        bundle = register_variants(bundle, fp16)
        log.info("wrote the FP16 graphs into %s", bundle.root)
        if bundle.enhancer is not None:  # its own goal: a refusal keeps the FP16 graphs written above
            enhancer = bundle.enhancer
            graph, source = enhancer_fp16(
                onnx.load(bundle.path_of("enhancer")), enhancer.source["alignment"], enhancer.source["license"]
            )
            bundle = register_variants(bundle, {("enhancer", "fp16"): graph}, {("enhancer", "fp16"): source})
    if "int8" in precisions:
        crops = calibration_crops(calibration_folder, bundle.alignment, bundle.crop_size)
        split = split_faces(crops, check_fraction)
        report = {"split": split.to_json(), "goals": asdict(goals), "folder": str(calibration_folder)}
        report["split"]["variants"] = {
            "each face": list(VARIANTS),
            "calibration": "histograms over every variant of the calibration faces",
            "check": "a check face scores the worst of its variants",
        }
        calibration, check = feeds_for(bundle.root, split.calibration, split.check, variants=True)
        backends = scoring_backends()
        log.info("INT8: every candidate is checked on %s", " and ".join(backends))
        started = time.perf_counter()
        graphs["generator", "int8"], report["generator"] = int8_search(
            fp32["generator"],
            "generator",
            calibration["generator"],
            check["generator"],
            goals,
            budgets.get("generator"),
            method,
            len(VARIANTS),
            backends,
        )
        report["generator"]["seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        graphs["arcface", "int8"], report["arcface"] = arcface_for_int8(
            fp32["arcface"],
            calibration["arcface"],
            check["arcface"],
            goals,
            budgets.get("arcface"),
            arcface,
            method,
            fp16.get(("arcface", "fp16")),
            len(VARIANTS),
            backends,
        )
        report["arcface"]["seconds"] = time.perf_counter() - started
        chosen = report["arcface"]["graph"]
        report["arcface"]["ms_per_face"] = {
            "fp32": ms_per_face(bundle.path_of("arcface"), split.check, "fp32"),
            chosen: ms_per_face(graphs["arcface", "int8"].SerializeToString(), split.check, chosen),
        }
        for role in ("generator", "arcface"):
            recipe = {k: v for k, v in report[role].items() if k != "sensitivity"}
            sources[role, "int8"] = {"calibration": report["split"], "goals": report["goals"], "recipe": recipe}
        register_variants(bundle, graphs, sources)
    return report


def check_int8_inputs(bundle: Bundle, calibration_folder: Path | None, check_fraction: float = CHECK_FRACTION) -> None:
    """What the INT8 recipe can know before its long phases: a bundle whose activations mean something (a
    trained one, or untrained with BatchNorm statistics re-estimated on faces) and enough photos for the
    check split and calibration. ``InputError`` naming what to change otherwise."""
    if bundle.untrained and not all(
        "batchnorm_reestimated_on_faces" in bundle.models[role].source for role in ("generator", "arcface")
    ):
        raise InputError(
            f"{bundle.root} has untrained random weights: INT8 calibration and its fidelity goals need a trained "
            "model (convert the official checkpoints, docs/weights.md); FP16 works on any bundle: --precisions fp16"
        )
    if calibration_folder is None:
        raise InputError("INT8 needs calibration images: pass --images FOLDER (photos with faces)")
    check_count(len(calibration_files(calibration_folder)), check_fraction)
