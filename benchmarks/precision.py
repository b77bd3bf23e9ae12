"""Precision recipes measured on CPU, on faces the recipe was calibrated on and on faces it never saw:
PSNR / cosine minima of FP16 and INT8 against FP32, and ONNX Runtime's INT8 kernels against FP32 (speed)
and against the Q/DQ graph as written (exactness), with the CPU's flags.

    python -m benchmarks.precision [--bundle B] [--workdir DIR] [--repeats 3]

The model is full size, with random weights whose BatchNorm statistics are re-estimated on real aligned
faces (activations like a trained model's), unless --bundle gives real weights. Three groups of people,
none shared: BatchNorm statistics come from LFW faces 0-31 and 8 augmented public-domain photos;
`simswap-build precision` calibrates (and holds out its check split) on LFW faces 32-43 plus 4 augmented
photos; the held-out faces are LFW faces 60-75 and 8 other augmentations. Writes
benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from simswap_build.bench.measure import generator_feeds, machine, measure
from simswap_build.bench.photos import face_photo_set, people_photo_set
from simswap_build.convert.bundle import reestimated_bundle
from simswap_build.precision.calibration import calibration_crops
from simswap_build.precision.fidelity import fidelity_report, print_report, psnr_per_face
from simswap_build.precision.recipe import add_precisions, feeds_for
from simswap_trt.bundle import Bundle
from simswap_trt.engines import OnnxRuntimeEngine
from simswap_trt.engines.onnxruntime import INT8_EXACT_FLAGS, cpu_flags, int8_kernels_exact
from simswap_trt.files import write_atomic


def cpu_int8(bundle: Bundle, crops: np.ndarray, batches: list[int], repeats: int) -> dict:
    """ONNX Runtime's optimized INT8 run (integer kernels where it fuses them) vs the Q/DQ graph as written
    and vs FP32 (generator, per face), and generator faces/s for FP32 and optimized INT8."""
    (feeds,) = feeds_for(bundle.root, crops)
    feeds = feeds["generator"]
    fp32 = OnnxRuntimeEngine(bundle.path_of("generator"))
    fused = OnnxRuntimeEngine(bundle.path_of("generator", "int8"))
    written = OnnxRuntimeEngine(bundle.path_of("generator", "int8"), optimize=False)
    reference, kernels, graph = (e.run(feeds)["swapped"] for e in (fp32, fused, written))
    out = {
        "exact_flags_present": int8_kernels_exact(),
        "kernels_vs_as_written_psnr_min_db": float(psnr_per_face(graph, kernels).min()),
        "kernels_vs_fp32_psnr_min_db": float(psnr_per_face(reference, kernels).min()),
        "as_written_vs_fp32_psnr_min_db": float(psnr_per_face(reference, graph).min()),
        "faces_per_s": {},
    }
    size = bundle.crop_size
    for name, engine in (("fp32", fp32), ("int8", fused)):
        for batch in batches:

            def make(i: int, batch: int = batch) -> dict[str, np.ndarray]:
                return generator_feeds(i + 77, batch, size)

            out["faces_per_s"].setdefault(name, {})[str(batch)] = batch / measure(engine.run, make, repeats).median
    out["int8_over_fp32"] = {
        b: out["faces_per_s"]["int8"][b] / out["faces_per_s"]["fp32"][b] for b in map(str, batches)
    }
    return out


def main() -> None:
    args = _parser().parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.workdir or Path(scratch)
        groups = _photo_sets(tmp)
        args.bundle = args.bundle or _reestimated(tmp)
        recipe = add_precisions(args.bundle, groups["calibration"])
        bundle = Bundle.load(args.bundle)
        crops = {name: calibration_crops(folder, bundle.alignment, bundle.crop_size) for name, folder in groups.items()}
        fidelity = {}
        for name, faces in crops.items():
            print(f"\n{name}:")
            fidelity[name] = fidelity_report(bundle.root, faces)
            print_report(fidelity[name])
        cpu = cpu_int8(bundle, crops["held-out people"][:8], args.batches, args.repeats)
    flags = sorted(cpu_flags() & {"avx2", "avx512f", *INT8_EXACT_FLAGS})
    _print_cpu_int8(cpu, flags)
    for role in ("generator", "arcface"):
        recipe[role].pop("sensitivity", None)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        args.output,
        json.dumps(
            {
                "benchmark": "precision",
                "date": time.strftime("%Y-%m-%d"),
                "machine": {**machine(), "int8_relevant_flags": flags},
                "model": "bundle" if not bundle.untrained else "random weights, BatchNorm re-estimated on faces",
                "recipe": recipe,
                "fidelity": fidelity,
                "cpu_int8": cpu,
                "seconds": time.perf_counter() - started,
            },
            indent=2,
            default=float,
        ).encode()
        + b"\n",
    )
    print(f"wrote {args.output}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="measure this bundle (default: re-estimated)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep photos and the re-estimated bundle here between runs"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "precision.json")
    return parser


def _photo_sets(tmp: Path) -> dict[str, Path]:
    """Write the photo sets into ``tmp``; the folders whose faces the report measures, by name (the recipe
    calibrates on "calibration")."""
    people_photo_set(tmp / "calibration", 32, 12)
    face_photo_set(tmp / "calibration", 4, seed=0)
    people_photo_set(tmp / "held-out-people", 60, 16)
    face_photo_set(tmp / "held-out-photos", 8, seed=1)
    return {
        "calibration": tmp / "calibration",
        "held-out people": tmp / "held-out-people",
        "held-out photos": tmp / "held-out-photos",
    }


def _reestimated(tmp: Path) -> Path:
    """The bundle re-estimated on faces by an earlier run with this --workdir, else a new one."""
    if (tmp / "bundle" / "manifest.json").is_file():
        return tmp / "bundle"
    people_photo_set(tmp / "statistics", 0, 32)
    face_photo_set(tmp / "statistics", 8, seed=2)
    statistics = calibration_crops(tmp / "statistics", "multipose", 224)
    return reestimated_bundle(tmp / "bundle", statistics).root


def _print_cpu_int8(cpu: dict, flags: list[str]) -> None:
    print(f"\nCPU flags: {', '.join(flags)}; ONNX Runtime INT8 kernels exact here: {cpu['exact_flags_present']}")
    print(
        f"  INT8 optimized run vs Q/DQ as written: {cpu['kernels_vs_as_written_psnr_min_db']:.2f} dB (worst face); "
        f"vs FP32 {cpu['kernels_vs_fp32_psnr_min_db']:.2f} dB (as written: {cpu['as_written_vs_fp32_psnr_min_db']:.2f})"
    )
    for batch, ratio in cpu["int8_over_fp32"].items():
        print(
            f"  generator batch {batch}: fp32 {cpu['faces_per_s']['fp32'][batch]:.2f} faces/s, "
            f"int8 {cpu['faces_per_s']['int8'][batch]:.2f} -> {ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
