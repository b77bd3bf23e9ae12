"""Fidelity of a bundle's reduced-precision graphs against its FP32 graphs, on held-out faces.

For each precision: PSNR and max abs error of the generator's outputs (RGB in [0, 1]), cosine between
the ArcFace latents, and the identity cosine of the swapped faces (the FP32 ArcFace latent of the output
against the source identity), next to the same for the FP32 swap. All numbers are computed here from the
engines' outputs. Goals: FP16 >= 45 dB; INT8 >= 35 dB with ArcFace cosine >= 0.98.

On CPUs, ONNX Runtime runs the FP16 graph with its FP16 kernels (FP16 tensors, FP32 accumulation inside
the kernels), which is what TensorRT's FP16 path does as well. The INT8 graph runs with graph
optimizations off, so each Q/DQ pair rounds and clips exactly as written (fake quantization, TensorRT's
definition of the graph): ONNX Runtime's fused S8S8 integer kernels on CPUs without VNNI saturate
intermediate sums and would measure that CPU quirk instead of the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simswap_trt.backends import open_engine
from simswap_trt.bundle import Bundle
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.preprocess import crops_to_tensor

GOALS = {"fp16": {"psnr_db": 45.0}, "int8": {"psnr_db": 35.0, "arcface_cosine_min": 0.98}}


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB for signals in [0, 1]."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def fidelity_report(bundle_root: str | Path, crops: np.ndarray) -> dict:
    """Compare every precision variant of the bundle with its FP32 graphs on aligned ``crops``."""
    bundle = Bundle.load(bundle_root)
    targets = crops_to_tensor(crops, bundle.crop_size)
    reference_arc = open_engine(bundle, "arcface", "onnxruntime")
    reference_gen = open_engine(bundle, "generator", "onnxruntime")
    reference_latents = reference_arc.run({"crop": targets})["latent"]
    sources = np.roll(reference_latents, -1, axis=0)  # swap identity i+1 onto target i
    reference_out = reference_gen.run({"target": targets, "latent": sources})["swapped"]
    reference_identity = _cosines(reference_arc.run({"crop": reference_out})["latent"], sources)

    precisions = sorted({p for by in bundle.variants.values() for p in by})
    rows = {}
    for precision in precisions:
        gen, arc = (
            OnnxRuntimeEngine(bundle.path_of(role, precision), optimize=precision != "int8")
            for role in ("generator", "arcface")
        )
        out = gen.run({"target": targets, "latent": sources})["swapped"]
        arc_cos = _cosines(arc.run({"crop": targets})["latent"], reference_latents)
        identity = _cosines(reference_arc.run({"crop": out})["latent"], sources)
        row = {
            "psnr_db": psnr(reference_out, out),
            "max_abs_error": float(np.abs(reference_out - out).max()),
            "arcface_cosine_mean": float(arc_cos.mean()),
            "arcface_cosine_min": float(arc_cos.min()),
            "identity_cosine_mean": float(identity.mean()),
            "identity_cosine_mean_fp32": float(reference_identity.mean()),
        }
        goals = GOALS.get(precision, {})
        row["goals"] = goals
        row["meets_goals"] = all(row[k] >= v for k, v in goals.items())
        rows[precision] = row
    return {"bundle": str(bundle.root), "untrained": bundle.untrained, "faces": len(crops), "precisions": rows}


def print_report(report: dict) -> None:
    print(f"fidelity vs FP32 on {report['faces']} held-out faces ({report['bundle']})")
    print(
        f"{'precision':<10}{'PSNR dB':>9}{'max abs':>9}{'ArcFace cos':>13}{'min':>7}{'identity':>10}"
        f"{'(fp32)':>8}  goals"
    )
    for precision, r in report["precisions"].items():
        goals = ", ".join(f"{k} >= {v}" for k, v in r["goals"].items()) or "-"
        verdict = "met" if r["meets_goals"] else "NOT met"
        print(
            f"{precision:<10}{r['psnr_db']:>9.2f}{r['max_abs_error']:>9.4f}{r['arcface_cosine_mean']:>13.5f}"
            f"{r['arcface_cosine_min']:>7.4f}{r['identity_cosine_mean']:>10.4f}{r['identity_cosine_mean_fp32']:>8.4f}"
            f"  {goals}: {verdict}"
        )
