"""Engine I/O through mapped pinned host memory vs staged copies: the same TensorRT plan, the same inputs, in the
same run. Each mode times ``engine.run`` (host arrays in and out, as FaceSwapper calls it) and the table gives
the ratio of medians mapped / staged; the outputs of the two modes must be identical.

    python -m benchmarks.host_memory --bundle B [--role generator] [--batches 1 8] [--repeats 20] [--overwrite]

On an integrated GPU (Jetson) mapped memory saves the DRAM-to-DRAM staging copies; on a discrete GPU every
kernel would read it over PCIe, which is why engines choose it only on integrated GPUs. Writes
benchmarks/results/host_memory.json (GPU, memory kind, CPU model and flags, versions). Without a GPU or a plan
this machine can run it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simswap_build.bench.measure import machine
from simswap_trt import cuda
from simswap_trt.backends import usable_plan
from simswap_trt.bundle import Bundle
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import host_memory_strategy
from simswap_trt.errors import SimswapError
from simswap_trt.files import check_output, write_atomic

MODES = ("staged", "mapped")


def _timed(function, repeats: int) -> list[float]:
    function()  # warm-up: lazy initialisation and shape changes stay out of the timings
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not check_output(args.output, overwrite=args.overwrite):
        print(f"{args.output} exists; pass --overwrite to replace it")
        return 1
    try:
        from simswap_trt.engines.tensorrt import TensorRTEngine

        device, traits = cuda.device_info(), cuda_memory.memory_traits()
        bundle = Bundle.load(args.bundle)
        plan = usable_plan(bundle, args.role)
        sha = bundle.model(args.role, plan.precision).sha256
        engines = {mode: TensorRTEngine(bundle.root, plan, sha, host_memory=mode) for mode in MODES}
    except SimswapError as exc:
        print(f"skipped: {exc}")
        return 2
    rng = np.random.default_rng(0)
    rows = [_row(engines, batch, rng, args.repeats) for batch in args.batches]
    for engine in engines.values():
        engine.close()

    kind, auto = "integrated" if traits.integrated else "discrete", host_memory_strategy(traits)
    print(f"{plan.file} on {device.name} ({kind}; engines choose {auto}), {args.repeats} runs")
    print(f"{'batch':>6}{'staged ms':>12}{'mapped ms':>12}{'mapped/staged':>15}{'max diff':>10}")
    for row in rows:
        print(
            f"{row['batch']:>6}{row['staged_median_ms']:>12.3f}{row['mapped_median_ms']:>12.3f}"
            f"{row['mapped_over_staged']:>15.2f}{row['max_abs_difference']:>10.2g}"
        )
    results = {
        "benchmark": "host_memory",
        "plan": plan.file,
        "precision": plan.precision,
        "repeats": args.repeats,
        "gpu": {
            "name": device.name,
            "compute_capability": list(device.compute_capability),
            "integrated": traits.integrated,
        },
        "auto_strategy": auto,
        "machine": machine(),
        "versions": {"tensorrt": plan.tensorrt_version, "python": platform.python_version(), "numpy": np.__version__},
        "results": rows,
    }
    write_atomic(args.output, (json.dumps(results, indent=2) + "\n").encode())
    print(f"wrote {args.output}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="bundle with a TensorRT plan for --role")
    parser.add_argument("--role", choices=("generator", "arcface"), default="generator")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "host_memory.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    return parser


def _row(engines: dict, batch: int, rng: np.random.Generator, repeats: int) -> dict:
    """One batch of random inputs through each mode's engine: median times and the outputs' largest difference."""
    feeds = {spec.name: rng.random((batch, *spec.shape[1:])).astype(spec.dtype) for spec in engines["staged"].inputs}
    outputs = {mode: engines[mode].run(feeds) for mode in MODES}
    difference = max(float(np.abs(outputs["mapped"][k] - outputs["staged"][k]).max()) for k in outputs["staged"])
    medians = {}
    for mode in MODES:
        times = _timed(lambda engine=engines[mode], feeds=feeds: engine.run(feeds), repeats)
        medians[mode] = 1e3 * statistics.median(times)
    return {
        "batch": batch,
        "staged_median_ms": medians["staged"],
        "mapped_median_ms": medians["mapped"],
        "mapped_over_staged": medians["mapped"] / medians["staged"],
        "max_abs_difference": difference,
    }


if __name__ == "__main__":
    sys.exit(main())
