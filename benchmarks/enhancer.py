"""Face enhancement cost, recorded: ``simswap-build bench --enhancer``'s section alone
(``simswap_build.bench.enhancer``): the restorer per face, the swap with and without the enhancer on each
CPU backend, and the peers' second pass, interleaved on the same 1080p frames with per-round ratios.
Full-size GFPGAN v1.4 architecture with random weights and the full-size SimSwap 224 generator (untrained
bundle; speed does not depend on the weights).

    python -m benchmarks.enhancer [--repeats 3] [--threads N] [--output benchmarks/results/enhancer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from simswap_build.bench.enhancer import enhancer_comparison, print_enhancer_report
from simswap_build.bench.measure import machine
from simswap_trt.files import write_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["onnxruntime", "openvino"],
        help="backend or backend-precision (openvino-bf16)",
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "enhancer.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    section = enhancer_comparison(None, args.repeats, args.backends, args.threads)
    result = {
        "benchmark": "python -m benchmarks.enhancer",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "note": "shared machine: other jobs ran alongside; compare only ratios taken within a round",
        "repeats": args.repeats,
        "threads": args.threads,
        **section,
    }
    print_enhancer_report(section)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.output, (json.dumps(result, indent=2) + "\n").encode())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
