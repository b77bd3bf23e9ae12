"""Fidelity of a bundle's reduced-precision graphs against its FP32 graphs, on held-out faces.

For each precision: PSNR and max abs error of the generator's outputs (RGB in [0, 1]), cosine between
the ArcFace latents, and the identity cosine of the swapped faces (the FP32 ArcFace latent of the output
against the source identity), next to the same for the FP32 swap, and the identity cosine between each
reduced-precision swap and the FP32 swap. All numbers are computed here from the engines' outputs, as
means and as per-face minima. Goals (on the worst face): FP16 >= 45 dB; INT8 the goals the recipe
recorded (default >= 35 dB with ArcFace cosine >= 0.98).

On CPUs, ONNX Runtime runs the FP16 graph with its FP16 kernels (FP16 tensors, FP32 accumulation inside
the kernels), which is what TensorRT's FP16 path does as well. The INT8 graph runs with graph
optimizations off, so each Q/DQ pair rounds and clips exactly as written (fake quantization, TensorRT's
definition of the graph): ONNX Runtime's fused S8S8 integer kernels on CPUs without VNNI saturate
intermediate sums and would measure that CPU quirk instead of the graph.

Where OpenVINO is installed the report adds the CPU backend's own rows, since its kernels round differently:
``int8/openvino`` (the INT8 graph on OpenVINO's integer kernels, with the INT8 goals) and, on CPUs with
AVX512_BF16 or AMX, ``bf16/openvino`` (the FP32 graphs in BF16) with the BF16 goals: >= 45 dB and ArcFace
cosine >= 0.999 on the worst face. ``--precision bf16`` is meant for bundles that meet them.

A bundle with a face restorer (role ``enhancer``) gets its own rows, on the held-out faces aligned to the
enhancer's template at its size: its FP16 graph (``fp16``) and, with OpenVINO on a BF16 CPU, its FP32 graph
in BF16 (``bf16/openvino``), each against its FP32 graph: PSNR (mean and worst face) and max abs error of the
restored faces, goal >= 45 dB on the worst face (the goal ``simswap-build precision`` checked when it wrote
the FP16 graph). INT8 is not offered for the enhancer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simswap_build.precision.goals import ENHANCER_FP16_GOAL_DB, Goals
from simswap_trt.backends import open_engine, open_openvino
from simswap_trt.bundle import Bundle
from simswap_trt.engines import Engine, OnnxRuntimeEngine
from simswap_trt.errors import EngineError
from simswap_trt.vision.preprocess import crops_to_tensor

FP16_GOALS = {"psnr_min_db": 45.0}
BF16_GOALS = {"psnr_min_db": 45.0, "arcface_cosine_min": 0.999}


def _default_goals(precision: str) -> dict[str, float]:
    if precision == "fp16":
        return dict(FP16_GOALS)
    if precision == "bf16":
        return dict(BF16_GOALS)
    return {"psnr_min_db": Goals().psnr_db, "arcface_cosine_min": Goals().cosine} if precision == "int8" else {}


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB for signals in [0, 1]."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def psnr_per_face(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """PSNR (dB) of each item of a batch, for signals in [0, 1]."""
    diff = reference.astype(np.float64) - test.astype(np.float64)
    mse = np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1.0 / mse)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _goals(bundle: Bundle, precision: str) -> dict[str, float]:
    """The goals recorded by the INT8 recipe (``simswap-build precision --goal-*``), else the defaults."""
    goals = _default_goals(precision)
    recorded = bundle.variants.get("generator", {}).get(precision)
    if precision == "int8" and recorded is not None and "goals" in recorded.source:
        goals = {
            "psnr_min_db": recorded.source["goals"]["psnr_db"],
            "arcface_cosine_min": recorded.source["goals"]["cosine"],
        }
    return goals


def enhancer_size(bundle: Bundle) -> int:
    """The side of the enhancer's square input crops."""
    return int(bundle.require_enhancer().inputs[0].shape[2])


def enhancer_rows(
    bundle: Bundle, crops: np.ndarray, backends: tuple[str, ...] = ("onnxruntime", "openvino")
) -> tuple[dict, dict]:
    """The enhancer's rows (module docstring) on ``crops``, uint8 BGR aligned to its template at its size,
    and why rows were skipped."""
    faces = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), np.float32) * np.float32(1 / 255)
    reference = OnnxRuntimeEngine(bundle.path_of("enhancer")).run({"face": faces})["enhanced"]
    goals = {"psnr_min_db": ENHANCER_FP16_GOAL_DB}

    def row(engine: Engine) -> dict:
        out = engine.run({"face": faces})["enhanced"]
        face_psnr = psnr_per_face(reference, out)
        result = {
            "backend": engine.backend,
            "psnr_db": psnr(reference, out),
            "psnr_min_db": float(face_psnr.min()),
            "max_abs_error": float(np.abs(reference - out).max()),
            "per_face": {"psnr_db": face_psnr.tolist()},
            "goals": goals,
        }
        result["meets_goals"] = result["psnr_min_db"] >= goals["psnr_min_db"]
        return result

    rows, skipped = {}, {}
    if "onnxruntime" in backends and "fp16" in bundle.variants.get("enhancer", {}):
        rows["fp16"] = row(OnnxRuntimeEngine(bundle.path_of("enhancer", "fp16")))
    if "openvino" in backends:
        try:
            rows["bf16/openvino"] = row(open_openvino(bundle, "enhancer", "bf16"))
        except EngineError as exc:  # OpenVINO not installed, or no BF16 on this CPU
            skipped["enhancer bf16/openvino"] = str(exc)
    return rows, skipped


@dataclass(frozen=True)
class _Reference:
    """The FP32 swap every row is compared with: identity i+1 swapped onto target i, on ONNX Runtime."""

    targets: np.ndarray
    sources: np.ndarray  # the FP32 latents, rolled by one
    latents: np.ndarray  # the FP32 latents of the targets
    swapped: np.ndarray
    swap_identity: np.ndarray  # the FP32 latents of the FP32 swaps
    arcface: Engine

    @classmethod
    def of(cls, bundle: Bundle, crops: np.ndarray) -> _Reference:
        targets = crops_to_tensor(crops, bundle.crop_size)
        arcface = open_engine(bundle, "arcface", "onnxruntime")
        latents = arcface.run({"crop": targets})["latent"]
        sources = np.roll(latents, -1, axis=0)  # swap identity i+1 onto target i
        generator = open_engine(bundle, "generator", "onnxruntime")
        swapped = generator.run({"target": targets, "latent": sources})["swapped"]
        swap_identity = arcface.run({"crop": swapped})["latent"]
        return cls(targets, sources, latents, swapped, swap_identity, arcface)

    def row(self, gen: Engine, arc: Engine, goals: dict[str, float]) -> dict:
        """The figures of one precision's generator and ArcFace, and whether they meet ``goals``."""
        out = gen.run({"target": self.targets, "latent": self.sources})["swapped"]
        face_psnr = psnr_per_face(self.swapped, out)
        arc_cos = cosines(arc.run({"crop": self.targets})["latent"], self.latents)
        swap_identity = self.arcface.run({"crop": out})["latent"]
        identity = cosines(swap_identity, self.sources)
        versus_fp32 = cosines(swap_identity, self.swap_identity)
        result = {
            "backend": gen.backend,
            "psnr_db": psnr(self.swapped, out),
            "psnr_min_db": float(face_psnr.min()),
            "max_abs_error": float(np.abs(self.swapped - out).max()),
            "arcface_cosine_mean": float(arc_cos.mean()),
            "arcface_cosine_min": float(arc_cos.min()),
            "identity_cosine_mean": float(identity.mean()),
            "identity_cosine_min": float(identity.min()),
            "identity_cosine_mean_fp32": float(cosines(self.swap_identity, self.sources).mean()),
            "swap_identity_vs_fp32_mean": float(versus_fp32.mean()),
            "swap_identity_vs_fp32_min": float(versus_fp32.min()),
            "per_face": {"psnr_db": face_psnr.tolist(), "arcface_cosine": arc_cos.tolist()},
        }
        result["goals"] = goals
        result["meets_goals"] = all(result[k] >= v for k, v in goals.items())
        return result


def fidelity_report(
    bundle_root: str | Path,
    crops: np.ndarray,
    backends: tuple[str, ...] = ("onnxruntime", "openvino"),
    enhancer_crops: np.ndarray | None = None,
) -> dict:
    """Compare every precision variant of the bundle with its FP32 graphs on aligned ``crops``: means and
    per-face minima. The swap identity (ArcFace FP32 latent of each output) is compared with the source
    identity and with the FP32 swap's identity. ``backends``: whose rows to report (the reference is always
    ONNX Runtime FP32). ``enhancer_crops``: the same faces aligned for the bundle's enhancer
    (``enhancer_size``), whose rows then go under ``enhancer``."""
    bundle = Bundle.load(bundle_root)
    rows, skipped = _precision_rows(bundle, _Reference.of(bundle, crops), backends)
    report = {
        "bundle": str(bundle.root),
        "untrained": bundle.untrained,
        "faces": len(crops),
        "precisions": rows,
        "skipped": skipped,
    }
    if enhancer_crops is not None:
        report["enhancer"], enhancer_skipped = enhancer_rows(bundle, enhancer_crops, backends)
        skipped.update(enhancer_skipped)
    return report


def _precision_rows(bundle: Bundle, reference: _Reference, backends: tuple[str, ...]) -> tuple[dict, dict]:
    """ONNX Runtime's row of each precision the bundle has, OpenVINO's INT8 and BF16 rows; and why rows
    were skipped."""
    precisions = sorted({p for by in bundle.variants.values() for p in by})
    rows = {}
    for precision in precisions if "onnxruntime" in backends else ():
        gen, arc = (
            OnnxRuntimeEngine(bundle.path_of(role, precision), optimize=precision != "int8")
            for role in ("generator", "arcface")
        )
        rows[precision] = reference.row(gen, arc, _goals(bundle, precision))
    skipped = {}
    for precision in ("int8", "bf16") if "openvino" in backends else ():
        if precision == "int8" and "int8" not in precisions:
            continue
        try:
            gen, arc = (open_openvino(bundle, role, precision) for role in ("generator", "arcface"))
        except EngineError as exc:  # OpenVINO not installed, or no BF16 on this CPU
            skipped[f"{precision}/openvino"] = str(exc)
            continue
        rows[f"{precision}/openvino"] = reference.row(gen, arc, _goals(bundle, precision))
    return rows, skipped


def meets_goals(report: dict) -> bool:
    """Whether every row of the report, the enhancer's too, meets its goals."""
    rows = [*report["precisions"].values(), *report.get("enhancer", {}).values()]
    return all(r["meets_goals"] for r in rows)


def print_report(report: dict) -> None:
    print(f"fidelity vs FP32 on {report['faces']} held-out faces ({report['bundle']}); min = worst face")
    print(
        f"{'precision':<15}{'PSNR dB':>9}{'min':>7}{'max abs':>9}{'ArcFace cos':>13}{'min':>8}"
        f"{'identity':>10}{'(fp32)':>8}{'swap vs fp32':>14}{'min':>8}  goals"
    )
    for precision, r in report["precisions"].items():
        goals = ", ".join(f"{k} >= {v}" for k, v in r["goals"].items()) or "-"
        verdict = "met" if r["meets_goals"] else "NOT met"
        print(
            f"{precision:<15}{r['psnr_db']:>9.2f}{r['psnr_min_db']:>7.2f}{r['max_abs_error']:>9.4f}"
            f"{r['arcface_cosine_mean']:>13.5f}{r['arcface_cosine_min']:>8.4f}{r['identity_cosine_mean']:>10.4f}"
            f"{r['identity_cosine_mean_fp32']:>8.4f}{r['swap_identity_vs_fp32_mean']:>14.5f}"
            f"{r['swap_identity_vs_fp32_min']:>8.4f}  {goals}: {verdict}"
        )
    if report.get("enhancer"):
        print("enhancer vs its FP32 graph, the same faces in its own crops:")
        print(f"{'precision':<15}{'PSNR dB':>9}{'min':>7}{'max abs':>9}  goals")
        for precision, r in report["enhancer"].items():
            goals = ", ".join(f"{k} >= {v}" for k, v in r["goals"].items())
            verdict = "met" if r["meets_goals"] else "NOT met"
            print(
                f"{precision:<15}{r['psnr_db']:>9.2f}{r['psnr_min_db']:>7.2f}{r['max_abs_error']:>9.4f}  "
                f"{goals}: {verdict}"
            )
    for name, reason in report.get("skipped", {}).items():
        print(f"{name}: skipped, {reason}")
