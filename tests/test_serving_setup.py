"""What ``serve`` prepares before PyTriton starts: the interpreter's LIBDIR first on LD_LIBRARY_PATH (for the
Python backend stub), and a refusal under NumPy 2 instead of empty answers. No server needed."""

import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from simswap_trt.errors import SimswapError
from simswap_trt.serving import stub_environment

LIBDIR = sysconfig.get_config_var("LIBDIR")
SHARED = (Path(LIBDIR) / (sysconfig.get_config_var("INSTSONAME") or "-")).is_file()


@pytest.fixture
def numpy1(monkeypatch):
    monkeypatch.setattr(np, "__version__", "1.26.4")


@pytest.mark.skipif(not SHARED, reason="this Python has no shared libpython")
def test_libdir_goes_first_and_only_once(numpy1, monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/other:/usr/lib")
    stub_environment()
    assert os.environ["LD_LIBRARY_PATH"] == f"{LIBDIR}:/opt/other:/usr/lib"
    stub_environment()
    assert os.environ["LD_LIBRARY_PATH"].split(":").count(LIBDIR) == 1
    monkeypatch.delenv("LD_LIBRARY_PATH")
    stub_environment()
    assert os.environ["LD_LIBRARY_PATH"] == LIBDIR


def test_numpy2_is_refused_with_the_remedy(monkeypatch):
    monkeypatch.setattr(np, "__version__", "2.4.6")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/lib")
    with pytest.raises(SimswapError, match=r"NumPy 2\.4\.6: .*empty tensors.*simswap-trt\[serve\]"):
        stub_environment()
    assert os.environ["LD_LIBRARY_PATH"] == "/usr/lib"
