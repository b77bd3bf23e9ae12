"""The benchmark harness: ``simswap-build bench`` (also ``simswap-trt bench``, ``python -m benchmarks.run``).

It measures, in one run and on the same inputs:

* per-stage latency of the whole-image pipeline on a 1920x1080 frame (detection, alignment, preprocessing,
  ArcFace, generator, paste-back) and end to end, per image and per face;
* aligned-crop generator throughput at several batch sizes on every backend available here (the others are
  listed with the reason they were skipped);
* the official-style baseline (PyTorch eager, batch 1, full-frame float64 paste-back) end to end, and our
  speed as a ratio to it;
* the machine's ceiling (measured FLOP/s of the generator's dominant 3x3 convolution on ONNX Runtime)
  and the generator's FLOPs per face, so throughput also reads as a fraction of the limit;
* resident memory over a long run of frames, reported as a slope (KiB per frame; ~0 means flat).

Results: a table on the terminal, JSON and PNG plots under the output folder.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import io
import json
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx

from simswap_build.bench.measure import (
    Stats,
    conv_ceiling_flops_per_second,
    conv_flops,
    generator_feeds,
    machine,
    measure,
    resident_kib,
    slope,
)
from simswap_trt.backends import open_engine, usable_plan
from simswap_trt.bundle import Bundle
from simswap_trt.cli_support import int_at_least, positive_int
from simswap_trt.errors import OutputError, SimswapError
from simswap_trt.files import check_output, write_atomic
from simswap_trt.preprocess import crops_to_tensor, tensor_to_bgr
from simswap_trt.swapper import FaceSwapper
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.warp import warp_faces

FRAME_SIZE = (1080, 1920)
OUTPUTS = ("bench.json", "throughput.png", "stages.png")


@functools.cache
def _astronaut_1080() -> np.ndarray:
    from skimage import data

    return cv2.resize(np.ascontiguousarray(data.astronaut()[..., ::-1]), (1080, 1080))


def test_frame(variant: int) -> np.ndarray:
    """A 1920x1080 frame with one face: the public-domain astronaut at 1080 px on a noise background,
    shifted per ``variant`` so that every timed call gets fresh pixels."""
    rng = np.random.default_rng(variant + 1000)
    frame = rng.integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)
    x = 300 + (variant % 7) * 40
    frame[:, x : x + 1080] = _astronaut_1080()
    return frame


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in (
        "simswap-trt",
        "numpy",
        "onnxruntime",
        "opencv-python-headless",
        "torch",
        "tensorrt",
        "tensorrt_lean_cu13",
        "cuda-bindings",
    ):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def stage_latencies(swapper: FaceSwapper, repeats: int) -> dict[str, Stats]:
    """Each stage of the whole-image pipeline, timed on its own with fresh frames."""
    det = swapper.detector
    frames = {}

    def frame(i: int) -> np.ndarray:
        return frames.setdefault(i, test_frame(i))

    def faces(i: int):
        image = frame(i)
        detection = det.detect(image)[0]
        matrix = alignment_matrix(detection.landmarks, swapper.bundle.alignment, swapper.crop_size)
        crops = crops_to_tensor(warp_faces([image], [(0, matrix)], swapper.crop_size), swapper.crop_size)
        return image, detection, matrix, crops

    prepared = {i: faces(i) for i in range(-1, repeats)}  # -1: the warm-up input
    latent = swapper.source_latent
    swapped = {i: swapper.generate(p[3], latent) for i, p in prepared.items()}
    paste_inputs = {i: (p[0], [(tensor_to_bgr(swapped[i][:1])[0], p[2])]) for i, p in prepared.items()}
    return {
        "detection": measure(lambda image: det.detect(image), frame, repeats),
        "alignment": measure(
            lambda d: alignment_matrix(d.landmarks, swapper.bundle.alignment, swapper.crop_size),
            lambda i: prepared[i][1],
            repeats,
        ),
        "preprocessing": measure(
            lambda p: crops_to_tensor(warp_faces([p[0]], [(0, p[2])], swapper.crop_size), swapper.crop_size),
            lambda i: prepared[i],
            repeats,
        ),
        "arcface": measure(lambda t: swapper.arcface.run({"crop": t}), lambda i: prepared[i][3], repeats),
        "generator": measure(lambda t: swapper.generate(t, latent), lambda i: prepared[i][3], repeats),
        "paste-back": measure(lambda args: paste_back(*args), lambda i: paste_inputs[i], repeats),
        "end-to-end": measure(lambda image: swapper.swap(image), frame, repeats),
    }


def throughput(bundle: Bundle, batches: Sequence[int], repeats: int) -> tuple[list[dict], dict[str, str]]:
    """Generator faces/s at each batch size for every backend that can run here."""
    engines, skipped = {"onnxruntime-cpu-fp32": open_engine(bundle, "generator", "onnxruntime")}, {}
    for precision in ("fp16", "int8"):
        if precision in bundle.variants.get("generator", {}):
            try:  # INT8: ONNX Runtime's integer kernels, only on CPUs where they are exact (VNNI / AMX)
                engines[f"onnxruntime-cpu-{precision}"] = open_engine(
                    bundle, "generator", "onnxruntime", precision=precision
                )
            except SimswapError as exc:
                skipped[f"onnxruntime-cpu-{precision}"] = str(exc)
        else:
            skipped[f"onnxruntime-cpu-{precision}"] = f"the bundle has no {precision} graph (simswap-build precision)"
    for precision in ("fp32", "fp16", "int8"):
        try:
            usable_plan(bundle, "generator", precision)
            engines[f"tensorrt-{precision}"] = open_engine(bundle, "generator", "tensorrt", precision=precision)
        except SimswapError as exc:
            skipped[f"tensorrt-{precision}"] = str(exc).splitlines()[0]
    skipped["cuda-kernels"] = "kernel timings come from 'python -m benchmarks.kernels' on a GPU machine"
    size = bundle.crop_size
    rows = []
    for name, engine in engines.items():
        for batch in batches:

            def make(i: int, batch: int = batch) -> dict[str, np.ndarray]:
                return generator_feeds(i + 10_000, batch, size)

            try:
                stats = measure(engine.run, make, repeats)
            except MemoryError:
                skipped[f"{name}-batch{batch}"] = "out of memory"
                break
            row = {
                "backend": name,
                "engine": engine.backend,
                "batch": batch,
                "stats": stats.to_json(),
                "faces_per_s": batch / stats.median,
            }
            if hasattr(engine, "last_gpu_seconds"):  # TensorRT: CUDA-event time of the last timed run
                row["gpu_event_s"] = engine.last_gpu_seconds
            rows.append(row)
    return rows, skipped


def baseline_end_to_end(swapper: FaceSwapper, repeats: int) -> Stats | str:
    """The official-style pipeline on the same frames, with the same detector, or why it was skipped."""
    try:
        from simswap_build.bench.official_style import OfficialStylePipeline

        pipeline = OfficialStylePipeline.for_bundle(swapper.bundle)
    except ImportError:
        return "needs torch and the builder models: pip install 'simswap-trt[build]'"
    source = test_frame(0)
    detection = swapper.detector.detect(source)[0]
    pipeline.set_source(source, alignment_matrix(detection.landmarks, swapper.bundle.alignment, swapper.crop_size))

    def run(image: np.ndarray) -> np.ndarray:
        matrices = [
            alignment_matrix(d.landmarks, swapper.bundle.alignment, swapper.crop_size)
            for d in swapper.detector.detect(image)
        ]
        return pipeline.swap(image, matrices)

    return measure(run, test_frame, repeats)


def memory_run(swapper: FaceSwapper, frames: int) -> dict:
    """Resident (and, with a GPU, device) memory after each frame of a long run; the slope over the second
    half is the leak rate."""
    from simswap_trt import cuda

    try:
        cuda.memory_used()
        gpu: list[int] | None = []
    except SimswapError:
        gpu = None
    samples = []
    for i in range(frames):
        swapper.swap(test_frame(i))
        samples.append(resident_kib())
        if gpu is not None:
            gpu.append(cuda.memory_used() // 1024)
    steady = samples[len(samples) // 2 :]
    result = {"frames": frames, "rss_kib": samples, "slope_kib_per_frame": slope(steady), "peak_kib": max(samples)}
    if gpu is not None:
        result.update(gpu_used_kib=gpu, gpu_slope_kib_per_frame=slope(gpu[len(gpu) // 2 :]))
    return result


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())


def plot(results: dict, folder: Path) -> list[str]:
    """Throughput vs batch, and the stage breakdown, as PNG files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for backend in sorted({r["backend"] for r in results["throughput"]}):
        rows = [r for r in results["throughput"] if r["backend"] == backend]
        ax.plot([r["batch"] for r in rows], [r["faces_per_s"] for r in rows], marker="o", label=backend)
    ax.set(xlabel="batch", ylabel="faces / s", title="generator throughput (aligned crops)", xscale="log")
    ax.legend()
    fig.tight_layout()
    _save(fig, folder / "throughput.png")
    written.append(str(folder / "throughput.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    stages = {k: v["median"] * 1e3 for k, v in results["stages"].items() if k != "end-to-end"}
    ax.barh(list(stages), list(stages.values()))
    ax.set(xlabel="ms per 1080p frame (1 face)", title="stage breakdown (median)")
    fig.tight_layout()
    _save(fig, folder / "stages.png")
    written.append(str(folder / "stages.png"))
    plt.close("all")
    return written


def run(bundle_path: Path | None, output: Path, repeats: int, batches: Sequence[int], memory_frames: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        if bundle_path is None:
            from simswap_build.convert import untrained_bundle

            bundle_path = untrained_bundle(Path(tmp) / "untrained-224").root
        swapper = FaceSwapper.from_bundle(bundle_path, backend="onnxruntime")
        bundle = swapper.bundle
        source = test_frame(0)
        swapper.set_source(source)
        stages = stage_latencies(swapper, repeats)
        rows, skipped = throughput(bundle, batches, repeats)
        baseline = baseline_end_to_end(swapper, repeats)
        memory = memory_run(swapper, memory_frames)
        gflop = conv_flops(onnx.load(bundle.path_of("generator"))) / 1e9
    ceiling = conv_ceiling_flops_per_second()
    for row in rows:
        row["fraction_of_ceiling"] = row["faces_per_s"] * gflop * 1e9 / ceiling
    faces = 1
    results = {
        "benchmark": "simswap-trt bench",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "versions": _versions(),
        "bundle": {"path": str(bundle_path), "untrained": bundle.untrained, "crop_size": bundle.crop_size},
        "frame": list(FRAME_SIZE),
        "faces_per_frame": faces,
        "stages": {k: v.to_json() for k, v in stages.items()},
        "end_to_end_per_face_s": stages["end-to-end"].median / faces,
        "throughput": rows,
        "skipped": skipped,
        "baseline": baseline.to_json() if isinstance(baseline, Stats) else {"skipped": baseline},
        "speedup_vs_baseline": baseline.median / stages["end-to-end"].median if isinstance(baseline, Stats) else None,
        "ceiling": {"conv_flops_per_s": ceiling, "generator_gflop_per_face": gflop},
        "memory": memory,
    }
    results["plots"] = plot(results, output)
    write_atomic(output / "bench.json", (json.dumps(results, indent=2) + "\n").encode())
    return results


def print_report(results: dict) -> None:
    print(
        f"simswap-trt bench: {results['machine']['cpu_model']}, {results['machine']['cpus']} CPUs, "
        f"{'untrained ' if results['bundle']['untrained'] else ''}{results['bundle']['crop_size']} px bundle"
    )
    print(f"\nstages on a {results['frame'][1]}x{results['frame'][0]} frame, 1 face (ONNX Runtime CPU), ms:")
    print(f"{'stage':<16}{'median':>10}{'p10':>10}{'p90':>10}")
    for name, s in results["stages"].items():
        print(f"{name:<16}{s['median'] * 1e3:>10.1f}{s['p10'] * 1e3:>10.1f}{s['p90'] * 1e3:>10.1f}")
    base = results["baseline"]
    if "median" in base:
        print(
            f"{'official-style':<16}{base['median'] * 1e3:>10.1f}{base['p10'] * 1e3:>10.1f}{base['p90'] * 1e3:>10.1f}"
            f"   -> simswap-trt is {results['speedup_vs_baseline']:.2f}x faster end to end"
        )
    else:
        print(f"official-style baseline skipped: {base['skipped']}")
    ceiling = results["ceiling"]
    print(
        f"\ngenerator throughput (aligned crops); {ceiling['generator_gflop_per_face']:.1f} GFLOP per face, "
        f"measured conv ceiling {ceiling['conv_flops_per_s'] / 1e9:.0f} GFLOP/s:"
    )
    print(f"{'backend':<24}{'batch':>6}{'median ms':>11}{'faces/s':>9}{'of ceiling':>12}")
    for r in results["throughput"]:
        print(
            f"{r['backend']:<24}{r['batch']:>6}{r['stats']['median'] * 1e3:>11.1f}{r['faces_per_s']:>9.2f}"
            f"{r['fraction_of_ceiling']:>11.0%}"
        )
    for name, reason in results["skipped"].items():
        print(f"skipped {name}: {reason}")
    memory = results["memory"]
    print(
        f"\nmemory over {memory['frames']} frames: peak RSS {memory['peak_kib'] / 1024:.0f} MiB, "
        f"slope {memory['slope_kib_per_frame']:+.1f} KiB/frame (second half)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="simswap-trt bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return bench(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="bundle to measure (default: an untrained full-size 224 bundle; speed does not depend on the weights)",
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"), help="folder for JSON and plots")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per measurement, >= 1 (default 5)")
    parser.add_argument(
        "--batches",
        type=positive_int,
        nargs="+",
        default=[1, 4, 8, 16, 32, 64],
        help="generator batch sizes (default: 1 4 8 16 32 64)",
    )
    parser.add_argument(
        "--memory-frames", type=int_at_least(2), default=40, help="frames of the memory run, >= 2 (default 40)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --output")


def bench(args: argparse.Namespace) -> int:
    for name in OUTPUTS:
        if not check_output(args.output / name, overwrite=args.overwrite):
            raise OutputError(
                f"{args.output / name} exists; pass --overwrite to replace it, or choose another --output"
            )
    results = run(args.bundle, args.output, args.repeats, args.batches, args.memory_frames)
    print_report(results)
    print(f"\nwrote {args.output / 'bench.json'}" + "".join(f", {p}" for p in results["plots"]))
    return 0
