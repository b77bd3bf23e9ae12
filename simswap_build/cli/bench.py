"""``simswap-build bench``: stages, backends and the official-style baseline (JSON + plots)."""

from __future__ import annotations

from simswap_build.bench import run as harness

NAME = "bench"
HELP = "benchmark stages, backends and the official-style baseline (JSON + plots)"
DESCRIPTION = (
    "Measure stage latency, generator throughput per backend and batch, the official-style "
    "baseline, the machine's ceiling and memory over a long run. Needs 'simswap-trt[bench]'; the "
    "baseline also 'simswap-trt[build]'. 'simswap-trt bench' runs this command."
)

add_arguments = harness.add_arguments  # the harness's own options (python -m benchmarks.run takes them too)
run = harness.bench
