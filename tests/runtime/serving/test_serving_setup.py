"""What ``serve`` prepares before PyTriton starts: the interpreter's LIBDIR first on LD_LIBRARY_PATH (for the
Python backend stub), a refusal under NumPy 2 instead of empty answers, and a one-line refusal of a port in
use. No server needed."""

import os
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from simswap_trt.errors import SimswapError
from simswap_trt.serving import ServeConfig, check_ports, stub_environment

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


@pytest.fixture
def busy_port():
    """A port another process (here: this one) listens on, on loopback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_use_or_given_twice_is_refused(busy_port):
    free = free_port()
    with pytest.raises(SimswapError, match=rf"^--grpc-port {busy_port}: cannot listen on 127\.0\.0\.1:{busy_port} "):
        check_ports(ServeConfig(http_port=free, grpc_port=busy_port, metrics_port=0))
    with pytest.raises(SimswapError, match=rf"^--metrics-port {busy_port}: cannot listen"):
        check_ports(ServeConfig(http_port=free, grpc_port=free + 1, metrics_port=busy_port))
    check_ports(ServeConfig(http_port=free, grpc_port=free + 1, metrics_port=0))  # metrics off: not checked
    with pytest.raises(SimswapError, match=rf"--http-port and --grpc-port are both {free}"):
        check_ports(ServeConfig(http_port=free, grpc_port=free, metrics_port=0))


def test_serve_on_a_port_in_use_exits_at_once_with_one_line(busy_port, tmp_path):
    """Before the engines load or Triton starts (which would log its failure and keep waiting)."""
    command = [sys.executable, "-m", "simswap_trt.cli", "serve", "--bundle", str(tmp_path), "--metrics-port", "0"]
    command += ["--http-port", str(busy_port), "--grpc-port", str(free_port())]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and time.monotonic() - started < 60
    assert done.stderr.strip() == (
        f"error: --http-port {busy_port}: cannot listen on 127.0.0.1:{busy_port} (Address already in use); stop "
        "what uses the port or choose another with --http-port"
    )
