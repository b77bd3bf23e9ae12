"""Paste-back speed: the fast ROI implementation vs the official full-frame float64 method, on a
1920x1080 frame with one face, in the same run. Prints a table and writes JSON to benchmarks/results/.

    python -m benchmarks.pasteback [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from simswap_build.bench.measure import machine
from simswap_build.bench.official_style import paste_back_official
from simswap_trt.files import write_atomic
from simswap_trt.vision.align import alignment_matrix
from simswap_trt.vision.pasteback import paste_back

FRAME = (1080, 1920)
# a ~230 px wide face, slightly rotated: a typical close-up in 1080p footage
LANDMARKS = np.array([[900, 500], [1000, 508], [948, 562], [905, 612], [993, 618]], float)


def _time(function, repeats: int) -> list[float]:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "pasteback.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8)
    matrix = alignment_matrix(LANDMARKS, "multipose", 224)
    swap = rng.random((224, 224, 3), dtype=np.float32)
    crop = np.ascontiguousarray(swap[..., ::-1] * 255)

    official = _time(lambda: paste_back_official(frame, [swap], [matrix]), args.repeats)
    fast = _time(lambda: paste_back(frame, [(crop, matrix)]), args.repeats)
    diff = np.abs(paste_back(frame, [(crop, matrix)]).astype(int) - paste_back_official(frame, [swap], [matrix]))

    rows = {
        name: {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t), "max_ms": 1e3 * max(t)}
        for name, t in (("official full-frame float64", official), ("simswap-trt ROI", fast))
    }
    speedup = statistics.median(official) / statistics.median(fast)
    print(f"paste-back, {FRAME[1]}x{FRAME[0]} frame, 1 face, {args.repeats} runs, {cv2.getNumThreads()} OpenCV threads")
    print(f"{'implementation':<30}{'median ms':>12}{'min ms':>10}{'max ms':>10}")
    for name, row in rows.items():
        print(f"{name:<30}{row['median_ms']:>12.2f}{row['min_ms']:>10.2f}{row['max_ms']:>10.2f}")
    print(f"speed-up (median ratio): {speedup:.1f}x; max abs difference {diff.max()} level(s)")

    write_atomic(
        args.output,
        json.dumps(
            {
                "benchmark": "pasteback",
                "frame": list(FRAME),
                "faces": 1,
                "repeats": args.repeats,
                "machine": machine(),
                "versions": {"numpy": np.__version__, "opencv": cv2.__version__, "python": platform.python_version()},
                "results": rows,
                "speedup_median": speedup,
                "max_abs_difference": int(diff.max()),
            },
            indent=2,
        ).encode()
        + b"\n",
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
