"""The benchmark harness: its statistics, FLOP count and memory slope against independent references,
and a quick run whose report is internally consistent."""

import json

import pytest
from support.tiny import TINY_ARCFACE, TINY_GENERATOR

from simswap_build.bench.measure import Stats, conv_flops, interleaved, measure, ratio_stats, slope
from simswap_build.convert.architectures import GeneratorConfig, generator_keys
from simswap_build.convert.bundle import random_weights, untrained_bundle
from simswap_build.graphs.export import generator_graph


def test_stats_median_and_spread():
    stats = Stats.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (stats.median, stats.minimum, stats.maximum, stats.runs) == (3.0, 1.0, 5.0, 5)
    assert stats.p10 == pytest.approx(1.4) and stats.p90 == pytest.approx(4.6)


def test_measure_uses_fresh_inputs_and_warms_up():
    seen = []
    measure(seen.append, lambda i: i, repeats=3, warmup=2)
    assert seen == [-1, -2, 0, 1, 2]


def test_interleaved_rotates_the_order_and_shares_each_rounds_input():
    seen = []
    calls = {name: (lambda data, name=name: seen.append((name, data))) for name in "ABC"}
    seconds = interleaved(calls, lambda i: i, repeats=3, warmup=1)
    assert seen == [
        *[(n, -1) for n in "ABC"],
        *[(n, 0) for n in "ABC"],
        *[(n, 1) for n in "BCA"],
        *[(n, 2) for n in "CAB"],
    ]
    assert {name: len(times) for name, times in seconds.items()} == {"A": 3, "B": 3, "C": 3}


def test_ratios_are_taken_round_by_round():
    """A machine that slows down between rounds: B is 2x A in every round, although their pooled medians
    would say otherwise; the per-round ratio says 2x with no spread."""
    a, b = [1.0, 4.0, 9.0], [0.5, 2.0, 4.5]
    stats = ratio_stats(a, b)
    assert (stats.median, stats.p10, stats.p90) == (2.0, 2.0, 2.0)


def test_a_fraction_above_the_ceiling_is_flagged(tmp_path, monkeypatch):
    import itertools
    from types import SimpleNamespace

    from simswap_build.bench import measure as measure_module
    from simswap_build.bench import run as run_module

    ticks = itertools.count()
    monkeypatch.setattr(measure_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks) * 0.25))
    monkeypatch.setattr(run_module, "CEILING_FLOPS", 1.0)  # planted: a ceiling far below the generator
    bundle = untrained_bundle(tmp_path / "b", generator_config=TINY_GENERATOR, arcface_config=TINY_ARCFACE)
    rows, _, warnings = run_module.throughput(bundle, [1], repeats=2, gflop=1.0)
    fraction = next(r for r in rows if r["backend"] == "onnxruntime-cpu-fp32")["fraction_of_ceiling"]["median"]
    assert fraction > 1
    assert any(w.startswith("onnxruntime-cpu-fp32 at batch 1 runs at") and "above 100%" in w for w in warnings)


@pytest.mark.slow
def test_generator_flops_match_the_spec():
    """The model reference counts 48.1 GMAC of convolutions (+ 9.4 M MAC of style GEMMs) per 224 face."""
    config = GeneratorConfig()
    flops = conv_flops(generator_graph(random_weights(generator_keys(config), 0), config, 224))
    assert flops / 2 == pytest.approx(48.1e9 + 9.4e6, rel=0.002)


def test_slope_of_a_known_series():
    assert slope([10, 12, 14, 16]) == pytest.approx(2.0)
    assert slope([7, 7, 7]) == pytest.approx(0.0)


def test_quick_run_report_from_a_known_clock(tmp_path, monkeypatch):
    """Every timed call takes exactly 0.25 s on a fake clock, so each reported figure has a value
    computed by hand: 1 face per frame -> 0.25 s per face; the baseline is as fast (ratio 1); batch b ->
    4b faces/s; the ceiling conv (8x512x28x28, 512 3x3 filters) is 29.595 GFLOP per call -> 118.38 GFLOP/s."""
    import itertools
    from types import SimpleNamespace

    from simswap_build.bench import measure as measure_module
    from simswap_build.bench.run import run

    ticks = itertools.count()
    monkeypatch.setattr(measure_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks) * 0.25))
    bundle = untrained_bundle(tmp_path / "b", generator_config=TINY_GENERATOR, arcface_config=TINY_ARCFACE)
    results = run(bundle.root, tmp_path / "out", repeats=2, batches=[1, 2], memory_frames=3)
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["stages"].keys() == {
        "detection",
        "alignment",
        "preprocessing",
        "arcface",
        "generator",
        "paste-back",
        "end-to-end",
    }
    for stats in [*saved["stages"].values(), saved["baseline"]]:
        assert (stats["median"], stats["p10"], stats["p90"], stats["runs"]) == (0.25, 0.25, 0.25, 2)
    assert saved["end_to_end_per_face_s"] == 0.25
    assert saved["speedup_vs_baseline"] == 1.0
    assert saved["ceiling"]["conv_flops_per_s"] == pytest.approx(118.380036096e9)
    assert {"onnxruntime-fp32", "official-style"} <= saved["end_to_end"].keys()
    for row in saved["end_to_end"].values():
        assert row["speedup_vs_onnxruntime_fp32"]["median"] == row["speedup_vs_official_style"]["median"] == 1.0
    rows = {(r["backend"], r["batch"]): r for r in saved["throughput"]}
    assert {("onnxruntime-cpu-fp32", 1), ("onnxruntime-cpu-fp32", 2), ("conv-ceiling", 1), ("conv-ceiling", 2)} <= set(
        rows
    )
    gflop = saved["ceiling"]["generator_gflop_per_face"]
    assert 0 < gflop < 96.2  # the tiny generator, far below the full-size 96.2 GFLOP
    for (name, batch), row in rows.items():
        if name == "conv-ceiling":
            assert row["flops_per_s"]["median"] == pytest.approx(118.380036096e9)
            continue
        assert row["faces_per_s"] == 4.0 * batch and row["speedup_vs_onnxruntime_fp32"]["median"] == 1.0
        if name.endswith("fp32"):
            assert row["fraction_of_ceiling"]["median"] == pytest.approx(4.0 * batch * gflop / 118.380036096)
        else:
            assert row["fraction_of_ceiling"] is None  # the ceiling is FP32
    assert saved["warnings"] == []
    assert {"tensorrt-fp32", "onnxruntime-cpu-int8", "cuda-kernels"} <= saved["skipped"].keys()
    assert len(saved["memory"]["rss_kib"]) == 3 and all(v > 0 for v in saved["memory"]["rss_kib"])
    for path in results["plots"]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bench_commands_refuse_to_replace_results_without_overwrite(tmp_path, capsys):
    """'simswap-trt bench' hands over to 'simswap-build bench'; existing results stop both before measuring."""
    import subprocess
    import sys

    (tmp_path / "bench.json").write_text("{}")
    for argv in (["-m", "simswap_trt.cli", "bench"], ["-m", "simswap_build.cli", "bench"]):
        result = subprocess.run(
            [sys.executable, *argv, "--output", str(tmp_path), "--repeats", "1"], capture_output=True, text=True
        )
        assert result.returncode == 1
        assert (
            result.stderr
            == f"error: {tmp_path / 'bench.json'} exists; pass --overwrite to replace it, or choose another --output\n"
        )
    assert (tmp_path / "bench.json").read_text() == "{}"
    help_text = subprocess.run(
        [sys.executable, "-m", "simswap_trt.cli", "bench", "--help"], capture_output=True, text=True
    )
    assert help_text.returncode == 0 and "--memory-frames" in help_text.stdout and "--overwrite" in help_text.stdout


def test_machine_names_the_cpu_model_and_flags_from_proc_cpuinfo():
    import re
    from pathlib import Path

    from simswap_build.bench.measure import machine

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    text = cpuinfo.read_text()
    described = machine()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    if model:
        assert described["cpu_model"] == model.group(1).strip()
    if flags:
        assert described["cpu_flags"].split() == flags.group(1).split()
    assert described["cpus"] >= 1
