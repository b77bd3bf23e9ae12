"""The bench's enhancer section: the calls it interleaves, the per-face figure and the round-by-round ratios
(planted times), and a bundle without an enhancer refused before any run."""

from __future__ import annotations

import pytest
from support.enhancer_formats import bundle_with_enhancer, make_gfpgan, save_gfpgan

from simswap_build.bench.enhancer import PEERS, enhancer_comparison, summarize
from simswap_trt.errors import BundleError


def test_ratios_are_taken_round_by_round():
    seconds = {
        "enhancer-stage-onnxruntime": [4.0, 6.0],
        "swap-onnxruntime": [1.0, 2.0],
        "swap+enhance-onnxruntime": [5.0, 4.0],
        PEERS: [10.0, 12.0],
        "swap+enhance-onnxruntime (restorer stubbed)": [2.0, 4.0],
        "peers-onnxruntime (restorer stubbed)": [3.0, 4.0],
    }
    rows = summarize(seconds, 2, {})["rows"]
    assert rows["enhancer-stage-onnxruntime"]["per_face_s"]["median"] == pytest.approx(2.5)
    ours = rows["swap+enhance-onnxruntime"]
    assert ours["speedup_vs_peers"]["median"] == pytest.approx(2.5)  # rounds: 10/5, 12/4
    assert ours["slowdown_vs_swap_only"]["median"] == pytest.approx(3.5)  # rounds: 5/1, 4/2
    assert "speedup_vs_peers" not in rows[PEERS]
    stubbed = rows["swap+enhance-onnxruntime (restorer stubbed)"]  # against the peers' stubbed order
    assert stubbed["speedup_vs_peers"]["median"] == pytest.approx(1.25)  # rounds: 3/2, 4/4


def test_section_runs_every_call_on_a_bundle_with_an_enhancer(tiny_bundle, tmp_path):
    bundle = bundle_with_enhancer(tiny_bundle.root, save_gfpgan(make_gfpgan(seed=3), tmp_path / "g.pth"), tmp_path)
    section = enhancer_comparison(bundle.root, repeats=1, backends=("onnxruntime",), threads=1)
    assert set(section["rows"]) == {
        "enhancer-stage-onnxruntime",
        "swap-onnxruntime",
        "swap+enhance-onnxruntime",
        PEERS,
        "swap+enhance-onnxruntime (restorer stubbed)",
        "peers-onnxruntime (restorer stubbed)",
    }
    assert section["rows"]["swap+enhance-onnxruntime"]["speedup_vs_peers"]["runs"] == 1


def test_bench_with_enhancer_refuses_a_bundle_without_one_at_once(tiny_bundle, tmp_path):
    from simswap_build.bench.run import run

    with pytest.raises(BundleError, match="simswap-build add-enhancer"):
        run(tiny_bundle.root, tmp_path / "out", 1, [1], 2, enhancer=True)
    assert not (tmp_path / "out").exists()
