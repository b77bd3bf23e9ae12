"""The 'trt' extras name what the code imports: cuda-core without the old ``.experimental`` namespace (the
code imports from ``cuda.core``), and NVRTC of the same CUDA major version as cuda-python, so that a clean
install compiles the fused kernels where no fatbin is shipped."""

import re

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from support.paths import ROOT

EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def requirements(extra):
    return {canonicalize_name(r.name): r for r in map(Requirement, EXTRAS[extra])}


def test_the_code_imports_cuda_core_without_experimental():
    sources = "".join(path.read_text() for path in (ROOT / "simswap_trt").rglob("*.py"))
    assert "from cuda.core import" in sources and "cuda.core.experimental" not in sources


@pytest.mark.parametrize(
    "extra, major, nvrtc", [("trt", 13, "nvidia-cuda-nvrtc"), ("trt-cu12", 12, "nvidia-cuda-nvrtc-cu12")]
)
def test_trt_extras_name_cuda_core_1_and_nvrtc_of_cuda_pythons_major(extra, major, nvrtc):
    named = requirements(extra)
    core = named["cuda-core"].specifier
    assert "1.0.0" in core and "0.4.0" not in core  # 0.x: the kernels' top-level cuda.core names are missing
    python, compiler = named["cuda-python"].specifier, named[nvrtc].specifier
    assert all(f"{major}.{minor}.0" in python for minor in (8, 9)) and f"{major + 1}.0.0" not in python
    assert f"{major}.9.0" in compiler and f"{major + 1}.0.0" not in compiler and f"{major - 1}.9.0" not in compiler


def test_the_jetson_extra_stays_on_cuda_12():
    named = requirements("jetson")
    assert "12.9.10" in named["cuda-python"].specifier and "13.0.0" not in named["cuda-python"].specifier
    assert not re.search(r"simswap-trt\[trt\]", " ".join(EXTRAS["jetson"]))  # [trt] is CUDA 13
