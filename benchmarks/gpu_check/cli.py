"""The GPU check's command line: which parts run, in which order, and what they need."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from simswap_trt import cuda
from simswap_trt import kernels as kernels_module
from simswap_trt.errors import SimswapError

from . import kernel_checks, standins, swapper_checks
from .report import Part, Report, Skipped, write_results

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "gpu-check.json"
SOURCES = ("fatbin", "nvrtc")  # where the device kernels come from
PART_NAMES = (
    "build-kernels",
    *[f"load-kernels-{source}" for source in SOURCES],
    *[f"kernels-{source}-{size}" for source in SOURCES for size in (224, 512)],
    "cuda-layer",
    "device-path-224",
    "device-path-512",
    "frame-stream",
    "enhancer",
    "kernel-throughput",
    *[f"letterbox-{source}" for source in SOURCES],
    "letterbox-throughput",
    "device-detection",
    "devices",
    "parsing-blend",
    "graphs",
    "frames-uploaded-once",
    "gpu-tests-tensorrt",
)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def part_name(text: str) -> str:
    if text not in PART_NAMES:
        raise argparse.ArgumentTypeError(f"no part named {text!r}; the parts are: {', '.join(PART_NAMES)}")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from . import __doc__ as description

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--faces", type=positive, default=64, help="faces per batch for kernel throughput (64)")
    parser.add_argument("--stream-batches", type=positive, default=8, help="batches in the frame-stream loop (8)")
    parser.add_argument("--repeats", type=positive, default=20, help="timed repeats per kernel (20)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    parser.add_argument(
        "--build", type=Path, help="CMake build folder of the kernels, built incrementally (default: a scratch one)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        type=part_name,
        metavar="PART",
        help="run only these parts (and the kernel build and loads they need), merging their outcomes into "
        "--output; the check prints this command for the parts that failed",
    )
    return parser.parse_args(argv)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name, module in (
        ("cuda-bindings", "cuda.bindings"),
        ("cuda-core", "cuda.core"),
        ("torch", "torch"),
        ("cupy", "cupy"),
        ("tensorrt", "tensorrt"),
    ):
        try:
            found[name] = __import__(module, fromlist=["__version__"]).__version__
        except Exception:  # not installed, or broken: recorded as absent
            found[name] = None
    nvcc = shutil.which("nvcc")
    if nvcc:
        found["nvcc"] = (
            subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().split("\n")[-1]
        )
    return found


def usable_gpu() -> tuple[cuda.DeviceInfo | None, str]:
    """The GPU's properties, or None and why the check cannot run."""
    try:
        return cuda.device_info(), ""
    except SimswapError as exc:
        return None, f"no usable CUDA device: {exc}"


def on_torch(check):
    """``check`` with a torch stand-in plan: skipped, saying why, where torch cannot run on the GPU."""

    def run():
        missing = standins.torch_cuda_missing()
        if missing:
            raise Skipped(missing)
        return check()

    return run


class Kernels:
    """The kernel build and the loaded kernels, shared by the parts that follow their setup parts."""

    def __init__(self, build: Path) -> None:
        self.build, self.loaded, self.host = build, {}, None

    def compile(self) -> dict:
        details = kernel_checks.build_kernels(self.build)
        self.host = kernel_checks.host_library(self.build)
        return details

    def load(self, source: str) -> dict:
        fatbin = self.build / "simswap_kernels.fatbin"
        if source == "fatbin" and not fatbin.is_file():
            raise Skipped("no fatbin was built (nvcc or cmake missing): the kernels come from NVRTC only")
        # a missing file means: compile with NVRTC
        os.environ["SIMSWAP_KERNELS_FATBIN"] = str(fatbin if source == "fatbin" else self.build / "none.fatbin")
        self.loaded[source] = kernels_module.load_device_kernels()
        return {}

    def of(self, source: str | None = None):
        """The kernels from ``source`` (or the first loaded), or ``Skipped`` naming the load that failed."""
        kernels = self.loaded.get(source) if source else next(iter(self.loaded.values()), None)
        if kernels is None:
            raise Skipped(f"no kernels from {source or 'any source'}: see load-kernels-{source or 'nvrtc'}")
        return kernels


def plan(args: argparse.Namespace, folder: Path) -> list[Part]:
    """Every part, in the order it runs (the names of ``PART_NAMES``)."""
    k = Kernels(args.build or folder / "build")
    swaps = swapper_checks
    parts = [Part("build-kernels", k.compile, setup=True)]
    parts += [Part(f"load-kernels-{source}", lambda s=source: k.load(s), setup=True) for source in SOURCES]
    parts += [
        Part(f"kernels-{source}-{size}", lambda s=source, n=size: kernel_checks.check_kernels(k.of(s), k.host, n))
        for source in SOURCES
        for size in (224, 512)
    ]
    parts.append(Part("cuda-layer", kernel_checks.check_cuda_layer))
    parts += [
        Part(f"device-path-{size}", on_torch(lambda n=size: swaps.check_device_path(folder, n))) for size in (224, 512)
    ]
    parts += [
        Part("frame-stream", on_torch(lambda: swaps.check_frame_stream(folder, args.stream_batches))),
        Part("enhancer", on_torch(lambda: swaps.check_enhancer(folder, args.stream_batches))),
        Part("kernel-throughput", lambda: kernel_checks.check_throughput(k.of(), args.faces, args.repeats)),
    ]
    parts += [
        Part(f"letterbox-{source}", lambda s=source: kernel_checks.check_letterbox(k.of(s), k.host))
        for source in SOURCES
    ]
    parts += [
        Part("letterbox-throughput", lambda: kernel_checks.check_letterbox_throughput(k.of(), args.repeats)),
        Part("device-detection", on_torch(lambda: swaps.check_device_detection(k.of()))),
        Part("devices", lambda: swaps.check_devices(folder)),
        Part("parsing-blend", lambda: swaps.check_parsing_blend(k.of(), k.host, folder)),
        Part("graphs", lambda: swaps.check_graphs(folder, args.stream_batches)),
        Part("frames-uploaded-once", on_torch(lambda: swaps.check_resident_frames(folder, args.stream_batches))),
        Part("gpu-tests-tensorrt", gpu_tests),
    ]
    return parts


def gpu_tests() -> dict:
    """``pytest -m gpu`` over tests/gpu, where TensorRT is installed."""
    if not versions()["tensorrt"]:
        raise Skipped("TensorRT is not installed: the -m gpu tests need it (the other parts do not)")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "gpu")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    if result.returncode:
        raise AssertionError(result.stdout[-2000:])
    return {"summary": result.stdout.strip().splitlines()[-1]}


def rerun_command(argv: list[str], failed: list[str]) -> str:
    """The command that reruns only ``failed`` with the same other arguments."""
    kept, in_only = [], False
    for arg in argv:
        in_only = arg == "--only" or (in_only and not arg.startswith("--"))
        if not in_only:
            kept.append(arg)
    return shlex.join(["python", "-m", "benchmarks.gpu_check", *kept, "--only", *failed])


def main(argv: list[str] | None = None) -> int:
    """Run the parts; 0 when none failed, 1 when one did, 2 (nothing run) without a usable GPU."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    info, reason = usable_gpu()
    if info is None:
        print(f"skipped: {reason}")
        return 2
    print(f"{info.name} ({info.sm}), driver {info.driver_version}, runtime {info.runtime_version}", flush=True)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="simswap-gpu-check-") as scratch:
        for part in plan(args, Path(scratch)):
            if not args.only or part.setup or part.name in args.only:
                report.run(part)
    result = {
        "benchmark": "gpu-check",
        "device": info.name,
        "compute_capability": list(info.compute_capability),
        "driver_version": info.driver_version,
        "runtime_version": info.runtime_version,
        "versions": versions(),
        "ok": not report.failed,
        "checks": report.checks,
    }
    write_results(args.output, result, merge=bool(args.only))
    print(f"\n{report.table()}\n")
    print(f"{'SOME PARTS FAILED' if report.failed else 'no part failed'}; results in {args.output}")
    if report.failed:
        print(f"rerun the failed parts with:\n  {rerun_command(argv, report.failed)}")
    return 1 if report.failed else 0
