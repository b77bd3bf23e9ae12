"""Precision recipes: FP16 and INT8 (Q/DQ) variants of a bundle's FP32 graphs, written as ONNX so that
TensorRT 10.3 and 11.x (strongly typed) take the precision from the graph, and so that ONNX Runtime can
check it on a CPU.

* FP16 (``simswap_build.precision.fp16``): convolutions, their weights and the activations between them
  in FP16; instance norms, the identity-injection (style) arithmetic and the normalisations stay FP32.
  Graph inputs and outputs stay FP32, so every precision has one contract.
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

  Calibration faces come from ``simswap_build.precision.calibration``, the split from
  ``simswap_build.precision.split``, the search from ``simswap_build.precision.search`` (scoring:
  ``simswap_build.precision.scoring``; goals: ``simswap_build.precision.goals``).
  The check split is ``CHECK_FRACTION`` of the distinct faces, at least ``MIN_CHECK``, with at least
  ``MIN_CALIBRATION`` left for calibration; fewer faces are refused.

  ArcFace computes the source identity once per swap, so unless INT8 clears its goal by the bound within
  the budget the INT8 recipe keeps it in FP16 (``arcface="auto"``); the report states what reference
  selection, which runs it once per target face, costs per face.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from simswap_build.precision.calibration import calibration_crops, calibration_files
from simswap_build.precision.fp16 import enhancer_fp16, fp16_graph
from simswap_build.precision.goals import Goals
from simswap_build.precision.scoring import scoring_backends
from simswap_build.precision.search import arcface_for_int8, int8_search
from simswap_build.precision.split import CHECK_FRACTION, VARIANTS, check_count, face_variants, split_faces
from simswap_build.tensorrt.builder import register_variants
from simswap_trt.backends import open_engine
from simswap_trt.bundle import Bundle
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.engines.onnxruntime import int8_kernels_exact
from simswap_trt.errors import ConfigError, InputError
from simswap_trt.vision.preprocess import crops_to_tensor

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
ARCFACE_POLICIES = ("auto", "int8", "fp16")


def feeds_for(bundle_root: Path, *groups: np.ndarray, variants: bool = False) -> list[dict[str, dict[str, np.ndarray]]]:
    """The model inputs for each group of aligned crops, ``{role: feeds}``: ArcFace reads the crops, the
    generator the crops with each one's FP32 ArcFace latent shifted by one within its group (target i gets
    identity i+1, a real swap pairing). With ``variants``, every crop in its ``VARIANTS`` (consecutive),
    each swapped with the identity of the next face as photographed. The FP32 ArcFace is opened once."""
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
    engine = OnnxRuntimeEngine(model, optimize=precision != "int8" or int8_kernels_exact())
    feed = {"crop": crops_to_tensor(crops[:1], crops.shape[1])}
    engine.run(feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.run(feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


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
    bundle = Bundle.load(bundle_root)
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise ConfigError(f"unknown precision(s) {sorted(unknown)}; choose from {', '.join(PRECISIONS)}")
    if arcface not in ARCFACE_POLICIES:
        raise ConfigError(f"unknown ArcFace policy {arcface!r}; choose from {', '.join(ARCFACE_POLICIES)}")
    if "int8" in precisions:
        check_int8_inputs(bundle, calibration_folder, check_fraction)
    fp32 = {role: onnx.load(bundle.path_of(role)) for role in ("generator", "arcface")}
    fp16 = {}
    if "fp16" in precisions:  # written now: kept whatever the INT8 recipe then does
        bundle, fp16 = _write_fp16(bundle, fp32)
    if "int8" not in precisions:
        return {}
    crops = calibration_crops(calibration_folder, bundle.alignment, bundle.crop_size)
    split = split_faces(crops, check_fraction)
    report = {"split": split.to_json(), "goals": asdict(goals), "folder": str(calibration_folder)}
    report["split"]["variants"] = {
        "each face": list(VARIANTS),
        "calibration": "histograms over every variant of the calibration faces",
        "check": "a check face scores the worst of its variants",
    }
    calibration, check = feeds_for(bundle.root, split.calibration, split.check, variants=True)
    recipe = _Int8Recipe(calibration, check, goals, budgets or {}, method, scoring_backends())
    log.info("INT8: every candidate is checked on %s", " and ".join(recipe.backends))
    graphs = {
        ("generator", "int8"): recipe.generator(fp32["generator"], report),
        ("arcface", "int8"): recipe.arcface(fp32["arcface"], fp16.get(("arcface", "fp16")), arcface, report),
    }
    chosen = report["arcface"]["graph"]
    report["arcface"]["ms_per_face"] = {
        "fp32": ms_per_face(bundle.path_of("arcface"), split.check, "fp32"),
        chosen: ms_per_face(graphs["arcface", "int8"].SerializeToString(), split.check, chosen),
    }
    register_variants(bundle, graphs, _int8_sources(report))
    return report


def _write_fp16(bundle: Bundle, fp32: Mapping[str, onnx.ModelProto]) -> tuple[Bundle, dict]:
    """Write and register the FP16 graphs (then the enhancer's, against its own goal: a refusal keeps the
    others); the bundle as registered and the generator's and ArcFace's FP16 graphs."""
    fp16 = {(role, "fp16"): fp16_graph(model) for role, model in fp32.items()}
    bundle = register_variants(bundle, fp16)
    log.info("wrote the FP16 graphs into %s", bundle.root)
    if bundle.enhancer is not None:
        enhancer = bundle.enhancer
        graph, source = enhancer_fp16(
            onnx.load(bundle.path_of("enhancer")), enhancer.source["alignment"], enhancer.source["license"]
        )
        bundle = register_variants(bundle, {("enhancer", "fp16"): graph}, {("enhancer", "fp16"): source})
    return bundle, fp16


@dataclass(frozen=True)
class _Int8Recipe:
    """The INT8 search of each role on the split's feeds (every face in its ``VARIANTS``), timed into the report."""

    calibration: Mapping[str, Mapping[str, np.ndarray]]  # per role
    check: Mapping[str, Mapping[str, np.ndarray]]
    goals: Goals
    budgets: Mapping[str, int | None]
    method: str
    backends: tuple[str, ...]

    def generator(self, fp32: onnx.ModelProto, report: dict) -> onnx.ModelProto:
        started = time.perf_counter()
        graph, report["generator"] = int8_search(
            fp32,
            "generator",
            self.calibration["generator"],
            self.check["generator"],
            self.goals,
            self.budgets.get("generator"),
            self.method,
            len(VARIANTS),
            self.backends,
        )
        report["generator"]["seconds"] = time.perf_counter() - started
        return graph

    def arcface(
        self, fp32: onnx.ModelProto, fp16: onnx.ModelProto | None, policy: str, report: dict
    ) -> onnx.ModelProto:
        started = time.perf_counter()
        graph, report["arcface"] = arcface_for_int8(
            fp32,
            self.calibration["arcface"],
            self.check["arcface"],
            self.goals,
            self.budgets.get("arcface"),
            policy,
            self.method,
            fp16,
            len(VARIANTS),
            self.backends,
        )
        report["arcface"]["seconds"] = time.perf_counter() - started
        return graph


def _int8_sources(report: dict) -> dict[tuple[str, str], dict]:
    """What each INT8 manifest entry records: the split, the goals and its recipe (without the sensitivities)."""
    sources = {}
    for role in ("generator", "arcface"):
        recipe = {k: v for k, v in report[role].items() if k != "sensitivity"}
        sources[role, "int8"] = {"calibration": report["split"], "goals": report["goals"], "recipe": recipe}
    return sources


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
