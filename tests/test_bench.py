"""The benchmark harness: its statistics, FLOP count and memory slope against independent references,
and a quick run whose report is internally consistent."""

import json

import numpy as np
import pytest
from conftest import TINY_ARCFACE, TINY_GENERATOR

from simswap_build.architectures import GeneratorConfig, generator_keys
from simswap_build.bench.measure import Stats, conv_flops, measure, slope
from simswap_build.convert import random_weights, untrained_bundle
from simswap_build.onnx_graphs import generator_graph


def test_stats_median_and_spread():
    stats = Stats.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (stats.median, stats.minimum, stats.maximum, stats.runs) == (3.0, 1.0, 5.0, 5)
    assert stats.p10 == pytest.approx(1.4) and stats.p90 == pytest.approx(4.6)


def test_measure_uses_fresh_inputs_and_warms_up():
    seen = []
    measure(seen.append, lambda i: i, repeats=3, warmup=2)
    assert seen == [-1, -2, 0, 1, 2]


@pytest.mark.slow
def test_generator_flops_match_the_spec():
    """The model reference counts 48.1 GMAC of convolutions (+ 9.4 M MAC of style GEMMs) per 224 face."""
    config = GeneratorConfig()
    flops = conv_flops(generator_graph(random_weights(generator_keys(config), 0), config, 224))
    assert flops / 2 == pytest.approx(48.1e9 + 9.4e6, rel=0.002)


def test_slope_of_a_known_series():
    assert slope([10, 12, 14, 16]) == pytest.approx(2.0)
    assert slope([7, 7, 7]) == pytest.approx(0.0)


def test_quick_run_report_is_consistent(tmp_path):
    from simswap_build.bench.run import run

    bundle = untrained_bundle(tmp_path / "b", generator_config=TINY_GENERATOR, arcface_config=TINY_ARCFACE)
    results = run(bundle.root, tmp_path / "out", repeats=2, batches=[1, 2], memory_frames=3)
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved["stages"].keys() == {
        "detection",
        "alignment",
        "preprocessing",
        "arcface",
        "generator",
        "paste-back",
        "end-to-end",
    }
    assert saved["end_to_end_per_face_s"] == saved["stages"]["end-to-end"]["median"] / saved["faces_per_frame"]
    assert saved["speedup_vs_baseline"] == pytest.approx(
        saved["baseline"]["median"] / saved["stages"]["end-to-end"]["median"]
    )
    rows = {(r["backend"], r["batch"]): r for r in saved["throughput"]}
    assert set(rows) == {("onnxruntime-cpu-fp32", 1), ("onnxruntime-cpu-fp32", 2)}
    for (_, batch), row in rows.items():
        assert row["faces_per_s"] == pytest.approx(batch / row["stats"]["median"])
    assert {"tensorrt-fp32", "onnxruntime-cpu-int8", "cuda-kernels"} <= saved["skipped"].keys()
    assert len(saved["memory"]["rss_kib"]) == 3 and all(v > 0 for v in saved["memory"]["rss_kib"])
    for path in results["plots"]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    ceiling = saved["ceiling"]["conv_flops_per_s"]
    assert np.isfinite(ceiling) and ceiling > 1e8
    for row in saved["throughput"]:
        assert row["fraction_of_ceiling"] == pytest.approx(
            row["faces_per_s"] * saved["ceiling"]["generator_gflop_per_face"] * 1e9 / ceiling
        )
