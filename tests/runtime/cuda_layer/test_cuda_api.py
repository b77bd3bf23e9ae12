"""Every CUDA runtime and cuda.core name the runtime, the device path and the GPU benchmarks use exists in
the installed cuda-python (cuda.bindings 13.x, cuda.core), so a misspelt or removed call fails here, not
on the first GPU run."""

import re

import pytest
from support.paths import ROOT

cudart = pytest.importorskip("cuda.bindings.runtime")
core = pytest.importorskip("cuda.core")

SOURCES = [*sorted((ROOT / "simswap_trt").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]


def test_every_cuda_runtime_name_exists():
    used = set()
    for path in SOURCES:
        text = path.read_text()
        used |= set(re.findall(r"\bcudart\.(\w+(?:\.\w+)?)", text))
        used |= set(re.findall(r"\bruntime\(\)\.(\w+(?:\.\w+)?)", text))
    assert {"cudaMemcpy2DAsync", "cudaStreamWaitEvent", "cudaEventCreateWithFlags", "cudaGraphExecDestroy"} <= {
        name.split(".")[0] for name in used
    }
    missing = []
    for name in sorted(used):
        owner = cudart
        for part in name.split("."):
            if not hasattr(owner, part):
                missing.append(name)
                break
            owner = getattr(owner, part)
    assert missing == []


def test_every_cuda_core_name_exists_and_takes_our_arguments():
    from simswap_trt.kernels import BLOCK, SOURCE_DIR

    imported = set()
    for path in SOURCES:
        for names in re.findall(r"from cuda\.core import ([\w, ]+)", path.read_text()):
            imported |= {n.strip().split(" as ")[0] for n in names.split(",")}
    assert {"Stream", "LaunchConfig", "EventOptions", "ObjectCode", "Program", "ProgramOptions"} <= imported
    assert [name for name in sorted(imported) if not hasattr(core, name)] == []
    assert callable(core.Stream.from_handle) and callable(core.ObjectCode.from_fatbin)
    assert core.EventOptions(timing_enabled=True).timing_enabled  # cuda.core events do not time by default
    core.ProgramOptions(arch="sm_90", include_path=[str(SOURCE_DIR)], fma=False)
    config = core.LaunchConfig(grid=(14, 14, 64), block=BLOCK)
    assert tuple(config.grid) == (14, 14, 64) and tuple(config.block) == BLOCK
