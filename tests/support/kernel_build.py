"""Fixtures (a pytest plugin): the CMake build of the kernels and their host build loaded with ctypes."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from support.paths import ROOT


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """The CMake build of the kernels: the host library, and the fatbin where nvcc exists."""
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed")
    folder = tmp_path_factory.mktemp("kernels")
    for step in (
        ["cmake", "-S", str(ROOT), "-B", str(folder)],
        ["cmake", "--build", str(folder), "-j2"],
    ):
        result = subprocess.run(step, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.fixture(scope="session")
def host(build):
    """The host build of the kernels' per-pixel code, loaded with ctypes."""
    lib = ctypes.CDLL(str(build / "libsimswap_kernels_host.so"))
    lib.simswap_preprocess_host.restype = None
    lib.simswap_pasteback_host.restype = None
    return lib
