"""ONNX Runtime's pool threads sleeping between operators (the runtime's default) vs spinning, on the CPU image
pipeline: swappers on the same untrained bundle, one mode at a time in alternating blocks, timed on the same
photo (``swap`` of one image and ``swap_batch`` of four), ratio of medians sleep / spin (below 1: sleeping is
faster).

    python -m benchmarks.ort_spinning [--blocks 4] [--repeats 3] [--sizes 64x9 16x3]

Sizes are generator widths x residual blocks: 64x9 is the full-size model, 16x3 a reduced one whose
operators are short, where spinning could matter most. Writes benchmarks/results/ort_spinning.json with the
CPU model and flags and the load average before and after.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from skimage import data

from simswap_build.bench.measure import machine
from simswap_build.convert.architectures import GeneratorConfig
from simswap_build.convert.bundle import untrained_bundle
from simswap_trt.engines import onnxruntime as ort_engine
from simswap_trt.swapper import FaceSwapper

MODES = {"sleep": False, "spin": True}


def swapper(bundle: Path, spinning: bool, source: np.ndarray) -> FaceSwapper:
    """A swapper whose every ONNX Runtime session (detector, ArcFace, generator) has ``spinning``."""
    plain = ort_engine.OnnxRuntimeEngine.__init__
    ort_engine.OnnxRuntimeEngine.__init__ = functools.partialmethod(plain, spinning=spinning)
    try:
        result = FaceSwapper.from_bundle(bundle)
    finally:
        ort_engine.OnnxRuntimeEngine.__init__ = plain
    result.set_source(source)
    return result


def measure(bundle: Path, blocks: int, repeats: int) -> dict:
    """Only one swapper lives at a time (a spinning pool keeps spinning after its own runs and would slow the
    other's), and the modes alternate in blocks so that drifts of the machine hit both."""
    photo = np.ascontiguousarray(data.astronaut()[..., ::-1])
    calls = {"swap": lambda s: s.swap(photo), "swap_batch_4": lambda s: s.swap_batch([photo] * 4)}
    seconds = {call: {mode: [] for mode in MODES} for call in calls}
    for block in range(blocks):
        for mode in list(MODES)[:: 1 if block % 2 == 0 else -1]:
            with swapper(bundle, MODES[mode], photo) as s:
                s.swap(photo)  # warm-up
                for _ in range(repeats):
                    for call, run in calls.items():
                        start = time.perf_counter()
                        run(s)
                        seconds[call][mode].append(time.perf_counter() - start)
    medians = {call: {mode: statistics.median(t) for mode, t in times.items()} for call, times in seconds.items()}
    return {
        call: {"median_ms": {m: v * 1000 for m, v in ms.items()}, "sleep_over_spin": ms["sleep"] / ms["spin"]}
        for call, ms in medians.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per mode (default: 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per block (default: 3)")
    parser.add_argument("--sizes", nargs="+", default=["64x9", "16x3"], help="NGFxBLOCKS (default: 64x9 16x3)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "ort_spinning.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            ngf, blocks = map(int, size.split("x"))
            bundle = Path(folder) / size
            untrained_bundle(bundle, generator_config=GeneratorConfig(ngf=ngf, n_blocks=blocks))
            rows.append({"generator": size, **measure(bundle, args.blocks, args.repeats)})
    load_after = os.getloadavg()
    print(f"{'generator':>10}{'call':>14}{'sleep ms':>10}{'spin ms':>10}{'sleep/spin':>12}")
    for row in rows:
        for call in ("swap", "swap_batch_4"):
            ms = row[call]["median_ms"]
            print(
                f"{row['generator']:>10}{call:>14}{ms['sleep']:>10.1f}{ms['spin']:>10.1f}{row[call]['sleep_over_spin']:>12.3f}"
            )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    result = {
        "benchmark": "ort_spinning",
        "blocks": args.blocks,
        "repeats": args.repeats,
        "machine": machine(),
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "onnxruntime": onnxruntime.__version__,
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
