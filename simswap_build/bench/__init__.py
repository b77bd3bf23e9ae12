"""Benchmark harness (``simswap-build bench``): stage latency, throughput per backend, the official-style
baseline, the machine's ceiling and a memory check. Needs the ``bench`` extra; the baseline needs ``build``."""
