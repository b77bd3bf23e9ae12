"""Precision recipes measured on CPU: fidelity of FP16 / INT8 vs FP32, and INT8 vs FP32 speed on ONNX
Runtime, on a full-size model whose activations look like a trained one (random weights, BatchNorm
statistics re-estimated on real face crops: data-dependent initialisation). With --bundle, the same
measurement runs on that bundle's weights.

    python -m benchmarks.precision [--bundle B] [--calibration 16] [--held-out 8] [--repeats 3]

Calibration and held-out photos are different augmentations (framing, rotation, flip, lighting) of the
public-domain astronaut and CC0 camera photos. Writes benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from simswap_build.bench.measure import machine, measure
from simswap_build.bench.photos import face_photo_set
from simswap_build.convert import reestimated_bundle
from simswap_build.fidelity import fidelity_report, print_report
from simswap_build.precision import add_precisions, calibration_crops
from simswap_trt.backends import open_engine
from simswap_trt.bundle import Bundle
from simswap_trt.engines.onnxruntime import available_cpus
from simswap_trt.files import write_atomic


def speed(bundle: Bundle, precision: str, batch: int, repeats: int) -> float:
    """Generator faces/s on ONNX Runtime CPU (median of ``repeats`` fresh-input runs)."""
    engine = open_engine(bundle, "generator", "onnxruntime", precision=precision)
    size = bundle.crop_size

    def make(i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(i + 77)
        latent = rng.normal(size=(batch, 512)).astype(np.float32)
        return {
            "target": rng.random((batch, 3, size, size), dtype=np.float32),
            "latent": latent / np.linalg.norm(latent, axis=1, keepdims=True),
        }

    return batch / measure(engine.run, make, repeats).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "precision.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        face_photo_set(tmp / "calibration", args.calibration, seed=0)
        face_photo_set(tmp / "held-out", args.held_out, seed=1)
        if args.bundle is None:
            crops = calibration_crops(tmp / "calibration", "multipose", 224)
            args.bundle = reestimated_bundle(tmp / "bundle", crops).root
        sensitivity = add_precisions(args.bundle, tmp / "calibration")
        bundle = Bundle.load(args.bundle)
        report = fidelity_report(bundle.root, calibration_crops(tmp / "held-out", bundle.alignment, bundle.crop_size))
        print_report(report)
        speeds = {p: {b: speed(bundle, p, b, args.repeats) for b in args.batches} for p in ("fp32", "int8")}
    print(f"\ngenerator on ONNX Runtime CPU ({available_cpus()} CPUs), faces/s (median of {args.repeats}):")
    for batch in args.batches:
        ratio = speeds["int8"][batch] / speeds["fp32"][batch]
        print(f"  batch {batch:>2}: fp32 {speeds['fp32'][batch]:.2f}, int8 {speeds['int8'][batch]:.2f} -> {ratio:.2f}x")
    write_atomic(
        args.output,
        json.dumps(
            {
                "benchmark": "precision",
                "machine": machine(),
                "model": "bundle"
                if report["untrained"] is False
                else "random weights, BatchNorm re-estimated on faces",
                "fidelity": report,
                "int8_sensitivity": sensitivity,
                "speed_faces_per_s": {p: {str(b): v for b, v in s.items()} for p, s in speeds.items()},
                "int8_speedup": {str(b): speeds["int8"][b] / speeds["fp32"][b] for b in args.batches},
                "note": "the INT8 graph is the TensorRT-shaped symmetric Q/DQ graph, run as is by ONNX Runtime",
            },
            indent=2,
            default=float,
        ).encode()
        + b"\n",
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
