"""Aligned-crop throughput of a bundle's generator on every backend available here, in one run.

    python -m benchmarks.engines [--bundle B] [--batches 1 8 32] [--repeats 5]

Without --bundle an untrained full-size 224 bundle is made in a temporary folder (speed does not depend on
the weights). ONNX Runtime on the CPU always runs; TensorRT runs for each plan in the bundle that this
machine can run, and is listed as skipped with the reason otherwise. Prints a table and writes JSON to
benchmarks/results/engines.json; speeds are also given as ratios to ONNX Runtime at batch 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from simswap_trt.backends import open_engine, usable_plan
from simswap_trt.bundle import Bundle
from simswap_trt.engines.onnxruntime import available_cpus
from simswap_trt.errors import SimswapError


def _time_batches(engine, batch: int, repeats: int) -> list[float]:
    rng = np.random.default_rng(batch)
    latent = rng.normal(size=(batch, 512)).astype(np.float32)
    feeds = {
        "target": rng.random((batch, 3, 224, 224), dtype=np.float32),
        "latent": latent / np.linalg.norm(latent, axis=1, keepdims=True),
    }
    engine.run(feeds)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.run(feeds)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle is None:
            from simswap_build.convert import untrained_bundle

            args.bundle = untrained_bundle(Path(tmp) / "bundle").root
        bundle = Bundle.load(args.bundle)
        backends, skipped = {"onnxruntime-cpu": open_engine(bundle, "generator", "onnxruntime")}, {}
        try:
            plan = usable_plan(bundle, "generator")
            backends[f"tensorrt-{plan.precision}"] = open_engine(bundle, "generator", "tensorrt")
        except SimswapError as exc:
            skipped["tensorrt"] = str(exc)
        rows = []
        for name, engine in backends.items():
            for batch in args.batches:
                seconds = _time_batches(engine, batch, args.repeats)
                median = statistics.median(seconds)
                rows.append(
                    {
                        "backend": name,
                        "engine": engine.backend,
                        "batch": batch,
                        "median_s": median,
                        "min_s": min(seconds),
                        "max_s": max(seconds),
                        "faces_per_s": batch / median,
                    }
                )
    baseline = next(
        r["faces_per_s"] for r in rows if r["backend"] == "onnxruntime-cpu" and r["batch"] == min(args.batches)
    )
    print(f"generator 224, {args.repeats} runs per row, medians; {available_cpus()} CPUs")
    print(f"{'backend':<18}{'batch':>6}{'median ms':>12}{'faces/s':>10}{'vs ORT b' + str(min(args.batches)):>12}")
    for r in rows:
        r["ratio_to_baseline"] = r["faces_per_s"] / baseline
        print(
            f"{r['backend']:<18}{r['batch']:>6}{1e3 * r['median_s']:>12.1f}{r['faces_per_s']:>10.2f}"
            f"{r['ratio_to_baseline']:>11.2f}x"
        )
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    output = args.output or Path(__file__).parent / "results" / "engines.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "benchmark": "engines",
                "bundle": str(bundle.root),
                "untrained": bundle.untrained,
                "machine": {"platform": platform.platform(), "cpus": available_cpus()},
                "rows": rows,
                "skipped": skipped,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
