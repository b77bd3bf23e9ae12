"""The benchmark harness: ``simswap-build bench`` (also ``simswap-trt bench``, ``python -m benchmarks.run``).

It measures, in one run and on the same inputs:

* per-stage latency of the whole-image pipeline on a 1920x1080 frame (detection, alignment, preprocessing,
  ArcFace, generator, paste-back) and end to end, per image and per face;
* aligned-crop generator throughput at several batch sizes on every backend and precision available here
  (ONNX Runtime FP32/FP16/INT8, OpenVINO f32/bf16/INT8, TensorRT; the others are listed with the reason they
  were skipped), each as a speed-up over ONNX Runtime FP32;
* end to end, the whole-image pipeline on each CPU backend and precision and the official-style baseline
  (PyTorch eager, batch 1, full-frame float64 paste-back), as speed-ups over ONNX Runtime FP32 and over the
  baseline;
* the machine's ceiling (measured FLOP/s of the generator's dominant 3x3 convolution on ONNX Runtime FP32)
  and the generator's FLOPs per face, so FP32 throughput also reads as a fraction of the limit (a fraction
  above 100% is flagged: the figures do not hold).

Every compared set is timed interleaved (A B C, B C A, ... on the same fresh input each round, the ceiling
convolution among the generator runs), and every ratio is taken round by round and reported as a median with
its 10th-90th percentile spread: a shared or throttling machine changes speed between runs, not within a round.
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

from simswap_build.bench.enhancer import enhancer_comparison, print_enhancer_report
from simswap_build.bench.measure import (
    CEILING_FLOPS,
    Stats,
    ceiling_conv,
    conv_flops,
    generator_feeds,
    interleaved,
    machine,
    measure,
    ratio_stats,
    resident_kib,
    slope,
)
from simswap_build.bench.official_style import OfficialStylePipeline
from simswap_build.convert.bundle import untrained_bundle
from simswap_trt import cuda
from simswap_trt.backends import open_engine, usable_plan
from simswap_trt.bundle import Bundle
from simswap_trt.cli.support import int_at_least, positive_int
from simswap_trt.engines import Engine
from simswap_trt.engines.openvino import OpenVinoEngine
from simswap_trt.errors import OutputError, SimswapError
from simswap_trt.files import check_output, write_atomic
from simswap_trt.swapper import FaceSwapper
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back
from simswap_trt.vision.preprocess import crops_to_tensor, tensor_to_bgr
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
        "openvino",
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


REFERENCE = "onnxruntime-cpu-fp32"  # what every speed-up is relative to
CEILING = "conv-ceiling"
# the CPU configurations of the end-to-end comparison: (backend, precision)
END_TO_END = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))


def generator_engines(bundle: Bundle) -> tuple[dict[str, Engine], dict[str, str]]:
    """The generator on every backend and precision that can run here, and why the others cannot."""
    engines, skipped = {REFERENCE: open_engine(bundle, "generator", "onnxruntime")}, {}

    def add(name: str, make) -> None:
        try:
            engines[name] = make()
        except SimswapError as exc:
            skipped[name] = str(exc).splitlines()[0]

    for precision in ("fp16", "int8"):  # INT8: ONNX Runtime's integer kernels, only where exact (VNNI / AMX)
        add(
            f"onnxruntime-cpu-{precision}",
            lambda p=precision: open_engine(bundle, "generator", "onnxruntime", precision=p),
        )
    for precision in ("fp32", "bf16", "int8"):
        add(f"openvino-{precision}", lambda p=precision: open_engine(bundle, "generator", "openvino", precision=p))
    add(  # the INT8 graph with BF16 for what stays in floating point
        "openvino-int8-bf16",
        lambda: OpenVinoEngine(bundle.root / bundle.model("generator", "int8").file, precision="bf16"),
    )
    for precision in ("fp32", "fp16", "int8"):
        add(f"tensorrt-{precision}", lambda p=precision: _tensorrt(bundle, p))
    skipped["cuda-kernels"] = "kernel timings come from 'python -m benchmarks.kernels' on a GPU machine"
    return engines, skipped


def _tensorrt(bundle: Bundle, precision: str) -> Engine:
    usable_plan(bundle, "generator", precision)
    return open_engine(bundle, "generator", "tensorrt", precision=precision)


def throughput(bundle: Bundle, batches: Sequence[int], repeats: int, gflop: float) -> tuple[list[dict], dict, list]:
    """Generator faces/s at each batch size for every backend that can run here, interleaved with each other
    and with the ceiling convolution; speed-ups over ONNX Runtime FP32 and FP32 fractions of the ceiling,
    round by round. Also returns the skipped backends and warnings (fractions above 100%)."""
    engines, skipped = generator_engines(bundle)
    conv = ceiling_conv()
    size = bundle.crop_size
    rows, warnings = [], []
    for batch in batches:

        def make(i: int, batch: int = batch) -> dict[str, np.ndarray]:
            return generator_feeds(i + 10_000, batch, size)

        calls = {name: engine.run for name, engine in engines.items()}
        try:
            seconds = interleaved({**calls, CEILING: conv}, make, repeats)
        except MemoryError:
            skipped[f"batch{batch}"] = "out of memory"
            break
        for name, engine in engines.items():
            stats = Stats.of(seconds[name])
            row = {
                "backend": name,
                "engine": engine.backend,
                "batch": batch,
                "stats": stats.to_json(),
                "faces_per_s": batch / stats.median,
                "speedup_vs_onnxruntime_fp32": ratio_stats(seconds[REFERENCE], seconds[name]).to_json(),
                "fraction_of_ceiling": None,
            }
            if name.endswith("fp32"):  # the ceiling is an FP32 convolution
                per_round = [c / g for c, g in zip(seconds[CEILING], seconds[name], strict=True)]
                fraction = Stats.of([r * batch * gflop * 1e9 / CEILING_FLOPS for r in per_round])
                row["fraction_of_ceiling"] = fraction.to_json()
                if fraction.median > 1:
                    warnings.append(
                        f"{name} at batch {batch} runs at {fraction.median:.0%} of the measured FP32 convolution "
                        "ceiling: above 100%, so the ceiling or the FLOP count does not hold for this machine"
                    )
            if hasattr(engine, "last_gpu_seconds"):  # TensorRT: CUDA-event time of the last timed run
                row["gpu_event_s"] = engine.last_gpu_seconds
            rows.append(row)
        ceiling = Stats.of([CEILING_FLOPS / t for t in seconds[CEILING]])
        rows.append({"backend": CEILING, "batch": batch, "flops_per_s": ceiling.to_json()})
    return rows, skipped, warnings


def end_to_end(bundle: Bundle, source: np.ndarray, repeats: int) -> tuple[dict, dict]:
    """The whole-image pipeline on each CPU configuration (``END_TO_END``) and the official-style baseline,
    interleaved on the same frames; speed-ups over ONNX Runtime FP32 and over the baseline, round by round.
    Also returns why configurations were skipped."""
    calls, skipped, swappers = {}, {}, []
    for backend, precision in END_TO_END:
        name = f"{backend}-{precision}"
        try:
            swapper = FaceSwapper.from_bundle(bundle.root, backend=backend, precision=precision)
        except SimswapError as exc:
            skipped[name] = str(exc).splitlines()[0]
            continue
        swappers.append(swapper)
        swapper.set_source(source)
        calls[name] = swapper.swap
    baseline = baseline_pipeline(swappers[0], source)
    if isinstance(baseline, str):
        skipped["official-style"] = baseline
    else:
        calls["official-style"] = baseline
    seconds = interleaved(calls, test_frame, repeats)
    for swapper in swappers:
        swapper.close()
    reference = seconds["onnxruntime-fp32"]
    rows = {}
    for name, times in seconds.items():
        row = {
            "stats": Stats.of(times).to_json(),
            "speedup_vs_onnxruntime_fp32": ratio_stats(reference, times).to_json(),
        }
        if "official-style" in seconds:
            row["speedup_vs_official_style"] = ratio_stats(seconds["official-style"], times).to_json()
        rows[name] = row
    return rows, skipped


def baseline_pipeline(swapper: FaceSwapper, source: np.ndarray):
    """The official-style pipeline as a call on a frame, with the same detector, or why it cannot run."""
    try:
        pipeline = OfficialStylePipeline.for_bundle(swapper.bundle)
    except ImportError:
        return "needs torch and the builder models: pip install 'simswap-trt[build]'"
    detection = swapper.detector.detect(source)[0]
    pipeline.set_source(source, alignment_matrix(detection.landmarks, swapper.bundle.alignment, swapper.crop_size))

    def run(image: np.ndarray) -> np.ndarray:
        matrices = [
            alignment_matrix(d.landmarks, swapper.bundle.alignment, swapper.crop_size)
            for d in swapper.detector.detect(image)
        ]
        return pipeline.swap(image, matrices)

    return run


def memory_run(swapper: FaceSwapper, frames: int) -> dict:
    """Resident (and, with a GPU, device) memory after each frame of a long run; the slope over the second
    half is the leak rate."""
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
    held = swapper.memory()  # what the swapper's engines and device stages hold (nothing on the CPU path)
    if held.parts:
        parts = {name: {"device": use.device, "pinned": use.pinned} for name, use in held.parts.items()}
        result["swapper"] = {"device": held.device, "pinned": held.pinned, "parts": parts, "lines": held.lines()}
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
    for backend in sorted({r["backend"] for r in results["throughput"] if "faces_per_s" in r}):
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


def run(
    bundle_path: Path | None,
    output: Path,
    repeats: int,
    batches: Sequence[int],
    memory_frames: int,
    backend: str = "onnxruntime",
    precision: str | None = None,
    enhancer: bool = False,
) -> dict:
    """Measure everything (module docstring); the stage breakdown and the memory run on ``backend`` in
    ``precision``; with ``enhancer``, the face enhancer's section too (``simswap_build.bench.enhancer``).
    Writes bench.json and the plots into ``output`` and returns the results."""
    if enhancer and bundle_path is not None:  # before the long runs: a bundle without one is refused at once
        Bundle.load(bundle_path).require_enhancer()
    results = _measure(bundle_path, repeats, batches, memory_frames, backend, precision)
    if enhancer:
        results["enhancer"] = enhancer_comparison(bundle_path, repeats)
    results["plots"] = plot(results, output)
    write_atomic(output / "bench.json", (json.dumps(results, indent=2) + "\n").encode())
    return results


def _measure(
    bundle_path: Path | None,
    repeats: int,
    batches: Sequence[int],
    memory_frames: int,
    backend: str,
    precision: str | None,
) -> dict:
    """The results of everything but the enhancer's section, on ``bundle_path`` (None: an untrained one)."""
    with tempfile.TemporaryDirectory() as tmp:
        if bundle_path is None:
            bundle_path = untrained_bundle(Path(tmp) / "untrained-224").root
        swapper = FaceSwapper.from_bundle(bundle_path, backend=backend, precision=precision)
        bundle = swapper.bundle
        source = test_frame(0)
        swapper.set_source(source)
        stages = stage_latencies(swapper, repeats)
        gflop = conv_flops(onnx.load(bundle.path_of("generator"))) / 1e9
        rows, skipped, warnings = throughput(bundle, batches, repeats, gflop)
        pipelines, skipped_pipelines = end_to_end(bundle, source, repeats)
        memory = memory_run(swapper, memory_frames)
        swapper.close()
    ceilings = [r["flops_per_s"]["median"] for r in rows if r["backend"] == CEILING]
    faces = 1
    baseline = pipelines.get("official-style")
    return {
        "benchmark": "simswap-trt bench",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "versions": _versions(),
        "bundle": {"path": str(bundle_path), "untrained": bundle.untrained, "crop_size": bundle.crop_size},
        "frame": list(FRAME_SIZE),
        "faces_per_frame": faces,
        "stages_backend": swapper.generator.backend,
        "stages": {k: v.to_json() for k, v in stages.items()},
        "end_to_end_per_face_s": stages["end-to-end"].median / faces,
        "end_to_end": pipelines,
        "throughput": rows,
        "skipped": {**skipped, **skipped_pipelines},
        "baseline": baseline["stats"] if baseline else {"skipped": skipped_pipelines["official-style"]},
        "speedup_vs_baseline": pipelines["onnxruntime-fp32"]["speedup_vs_official_style"]["median"]
        if baseline
        else None,
        "ceiling": {"conv_flops_per_s": float(np.median(ceilings)), "generator_gflop_per_face": gflop},
        "warnings": warnings,
        "memory": memory,
    }


def _ratio(stats: dict | None) -> str:
    """A speed-up as median [p10-p90]."""
    return f"{stats['median']:.2f}x [{stats['p10']:.2f}-{stats['p90']:.2f}]" if stats else "-"


def print_report(results: dict) -> None:
    machine_info = results["machine"]
    print(
        f"simswap-trt bench: {machine_info['cpu_model']}, {machine_info['cpus']} CPUs, "
        f"{'untrained ' if results['bundle']['untrained'] else ''}{results['bundle']['crop_size']} px bundle"
    )
    isa = [
        f
        for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
        if f in machine_info["cpu_flags"].split()
    ]
    print(f"CPU features: {', '.join(isa) or 'none of AVX2/AVX-512/AMX'}")
    print(f"\nstages on a {results['frame'][1]}x{results['frame'][0]} frame, 1 face ({results['stages_backend']}), ms:")
    print(f"{'stage':<16}{'median':>10}{'p10':>10}{'p90':>10}")
    for name, s in results["stages"].items():
        print(f"{name:<16}{s['median'] * 1e3:>10.1f}{s['p10'] * 1e3:>10.1f}{s['p90'] * 1e3:>10.1f}")
    print("\nend to end, interleaved; speed-ups per round: median [p10-p90]")
    print(f"{'pipeline':<20}{'median ms':>10}{'vs ORT FP32':>24}{'vs official-style':>24}")
    for name, r in results["end_to_end"].items():
        print(
            f"{name:<20}{r['stats']['median'] * 1e3:>10.1f}{_ratio(r['speedup_vs_onnxruntime_fp32']):>24}"
            f"{_ratio(r.get('speedup_vs_official_style')):>24}"
        )
    ceiling = results["ceiling"]
    print(
        f"\ngenerator throughput (aligned crops), interleaved with the ceiling convolution; "
        f"{ceiling['generator_gflop_per_face']:.1f} GFLOP per face, FP32 conv ceiling "
        f"{ceiling['conv_flops_per_s'] / 1e9:.0f} GFLOP/s (median):"
    )
    print(f"{'backend':<24}{'batch':>6}{'median ms':>11}{'faces/s':>9}{'vs ORT FP32':>24}{'of ceiling':>22}")
    for r in results["throughput"]:
        if r["backend"] == CEILING:
            continue
        fraction = r["fraction_of_ceiling"]
        share = f"{fraction['median']:.0%} [{fraction['p10']:.0%}-{fraction['p90']:.0%}]" if fraction else "-"
        print(
            f"{r['backend']:<24}{r['batch']:>6}{r['stats']['median'] * 1e3:>11.1f}{r['faces_per_s']:>9.2f}"
            f"{_ratio(r['speedup_vs_onnxruntime_fp32']):>24}{share:>22}"
        )
    for warning in results["warnings"]:
        print(f"WARNING: {warning}")
    for name, reason in results["skipped"].items():
        print(f"skipped {name}: {reason}")
    if "enhancer" in results:
        print_enhancer_report(results["enhancer"])
    memory = results["memory"]
    print(
        f"\nmemory over {memory['frames']} frames: peak RSS {memory['peak_kib'] / 1024:.0f} MiB, "
        f"slope {memory['slope_kib_per_frame']:+.1f} KiB/frame (second half)"
    )
    if "swapper" in memory:
        print("device and pinned memory the swapper holds:", *memory["swapper"]["lines"], sep="\n  ")


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
    parser.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino", "auto"),
        default="onnxruntime",
        help="backend of the stage breakdown and the memory run (default: onnxruntime); the throughput and "
        "end-to-end comparisons always cover every CPU backend and precision available",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8", "bf16"),
        default=None,
        help="precision of the stage breakdown and the memory run (default: fp32)",
    )
    parser.add_argument(
        "--enhancer",
        action="store_true",
        help="also time the face enhancer: the restorer per face, the swap with and without it on each CPU "
        "backend, and the peers' second detect-warp-enhance-paste pass per face, interleaved on the same 1080p "
        "frames (the bundle's enhancer, or a random-weight GFPGAN v1.4 added to the untrained bundle; needs "
        "torch then). Slow on a CPU: seconds per face",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --output")


def bench(args: argparse.Namespace) -> int:
    for name in OUTPUTS:
        if not check_output(args.output / name, overwrite=args.overwrite):
            raise OutputError(
                f"{args.output / name} exists; pass --overwrite to replace it, or choose another --output"
            )
    results = run(
        args.bundle,
        args.output,
        args.repeats,
        args.batches,
        args.memory_frames,
        args.backend,
        args.precision,
        args.enhancer,
    )
    print_report(results)
    print(f"\nwrote {args.output / 'bench.json'}" + "".join(f", {p}" for p in results["plots"]))
    return 0
