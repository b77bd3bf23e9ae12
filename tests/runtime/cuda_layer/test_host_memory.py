"""Engine I/O memory on integrated GPUs (Jetson): the strategy follows the device attributes (mapped pinned
host memory on integrated GPUs with I/O coherency, staged copies elsewhere), the attributes are read from
cuda-python, and the mapped path gives the same results as the staged one on the CPU stand-in, without a
single host<->device copy."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from support import fake_gpu
from support.fake_gpu import install_fake_cuda
from support.plans import fake_generator  # the plan_bundle and fake_trt fixtures: support/plans.py

from simswap_trt import cuda
from simswap_trt.backends import open_engine
from simswap_trt.cuda import memory as cuda_memory
from simswap_trt.cuda.memory import MemoryTraits, host_memory_strategy
from simswap_trt.errors import EngineError

ORIN = MemoryTraits(integrated=True, can_map_host_memory=True, compute_capability=(8, 7))
H100 = MemoryTraits(integrated=False, can_map_host_memory=True, compute_capability=(9, 0))
TX2 = MemoryTraits(integrated=True, can_map_host_memory=True, compute_capability=(6, 2))


@pytest.mark.parametrize(
    "traits,requested,expected",
    [
        (ORIN, "auto", "mapped"),  # shared DRAM, I/O coherent: zero copy
        (H100, "auto", "staged"),  # discrete: copies over PCIe once, kernels read device memory
        (TX2, "auto", "staged"),  # integrated but not I/O coherent: mapped memory is uncached for the GPU
        (MemoryTraits(True, False, (8, 7)), "auto", "staged"),  # cannot map
        (ORIN, "staged", "staged"),
        (H100, "mapped", "mapped"),
    ],
)
def test_strategy_follows_the_device_attributes(traits, requested, expected):
    assert host_memory_strategy(traits, requested) == expected


def test_impossible_or_unknown_requests_are_errors():
    with pytest.raises(EngineError, match="this device cannot map host memory"):
        host_memory_strategy(MemoryTraits(True, False, (8, 7)), "mapped")
    with pytest.raises(EngineError, match="host memory must be one of auto, mapped, staged, got 'zero-copy'"):
        host_memory_strategy(ORIN, "zero-copy")


@pytest.mark.parametrize("integrated", [0, 1])
def test_traits_come_from_cuda_device_attributes(monkeypatch, integrated):
    """Read through cuda-python's cudaDeviceGetAttribute; attribute names are the real bindings' enum."""
    real = pytest.importorskip("cuda.bindings.runtime")
    attr = real.cudaDeviceAttr
    values = {
        attr.cudaDevAttrIntegrated: integrated,
        attr.cudaDevAttrCanMapHostMemory: 1,
        attr.cudaDevAttrComputeCapabilityMajor: 8,
        attr.cudaDevAttrComputeCapabilityMinor: 7,
    }
    calls = []

    def get_attribute(attribute, device):
        calls.append((attribute, device))
        return real.cudaError_t.cudaSuccess, values[attribute]

    fake = SimpleNamespace(cudaDeviceAttr=attr, cudaError_t=real.cudaError_t, cudaDeviceGetAttribute=get_attribute)
    monkeypatch.setattr(cuda, "runtime", lambda: fake)
    traits = cuda_memory.memory_traits(1)
    assert traits == MemoryTraits(bool(integrated), True, (8, 7))
    assert {device for _, device in calls} == {1}
    assert host_memory_strategy(traits) == ("mapped" if integrated else "staged")


@pytest.fixture()
def feeds():
    rng = np.random.default_rng(11)
    return {
        "target": rng.random((7, 3, 224, 224), dtype=np.float32),  # 7: chunks of 5 and 2 through both slots
        "latent": rng.random((7, 512), dtype=np.float32),
    }


def _run(plan_bundle, monkeypatch, feeds, integrated):
    """run() and a submit/collect round on the stand-in; returns the engine, both results and the copies made."""
    install_fake_cuda(monkeypatch, name="Fake GPU", integrated=integrated)
    engine = open_engine(plan_bundle, "generator", "tensorrt")
    out = engine.run(feeds)["swapped"]
    collected = engine.collect(engine.submit({k: v[:3] for k, v in feeds.items()}))["swapped"]
    return engine, out, collected, list(fake_gpu.COPIES)


def test_mapped_path_gives_the_staged_results_without_copies(plan_bundle, fake_trt, monkeypatch, feeds):
    staged, staged_out, staged_collected, staged_copies = _run(plan_bundle, monkeypatch, feeds, integrated=False)
    mapped, mapped_out, mapped_collected, mapped_copies = _run(plan_bundle, monkeypatch, feeds, integrated=True)
    assert (staged.host_memory, mapped.host_memory) == ("staged", "mapped")
    reference = fake_generator(feeds)["swapped"]
    np.testing.assert_allclose(mapped_out, reference, rtol=1e-6)
    np.testing.assert_array_equal(mapped_out, staged_out)
    np.testing.assert_array_equal(mapped_collected, staged_collected)
    np.testing.assert_allclose(mapped_collected, reference[:3], rtol=1e-6)
    # staged: two uploads and one download per chunk (5, 2, then 3 items); mapped: none at all
    assert [kind for kind, _ in staged_copies] == ["upload", "upload", "download"] * 3
    assert mapped_copies == []
    for slot in mapped._slots:  # one buffer in both roles, its device address bound to the context
        assert all(slot.host[name] is slot.device[name] for name in slot.host)
        assert slot.context.context._addresses == {name: buffer.ptr for name, buffer in slot.device.items()}


def test_host_memory_can_be_forced(plan_bundle, fake_trt, monkeypatch, feeds):
    from simswap_trt.engines.tensorrt import TensorRTEngine

    install_fake_cuda(monkeypatch, name="Fake GPU", integrated=True)
    engine = TensorRTEngine(plan_bundle.root, plan_bundle.plans[0], host_memory="staged")
    assert engine.host_memory == "staged"
    np.testing.assert_allclose(engine.run(feeds)["swapped"], fake_generator(feeds)["swapped"], rtol=1e-6)
    assert len(fake_gpu.COPIES) == 6


def test_benchmark_compares_both_modes_on_one_plan(plan_bundle, fake_trt, monkeypatch, tmp_path, capsys):
    """The harness of benchmarks/host_memory.py on the stand-in (its timings mean nothing here)."""
    from benchmarks import host_memory

    install_fake_cuda(monkeypatch, name="Fake GPU", integrated=True)
    output = tmp_path / "host_memory.json"
    argv = ["--bundle", str(plan_bundle.root), "--batches", "2", "7", "--repeats", "2", "--output", str(output)]
    assert host_memory.main(argv) == 0
    results = json.loads(output.read_text())
    assert [row["batch"] for row in results["results"]] == [2, 7]
    assert all(row["max_abs_difference"] == 0.0 for row in results["results"])  # mapped gives the staged outputs
    assert results["auto_strategy"] == "mapped" and results["gpu"]["integrated"] is True
    assert results["machine"]["cpu_model"]  # CPU model and flags recorded with the figures
    assert "mapped/staged" in capsys.readouterr().out
    assert host_memory.main(argv) == 1  # results are replaced only with --overwrite
    assert host_memory.main([*argv, "--overwrite"]) == 0
