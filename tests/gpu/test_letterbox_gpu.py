"""GPU suite for the detector-input kernel (``pytest -m gpu``): ``simswap_letterbox_kernel`` loaded from the
CMake fatbin and compiled with NVRTC gives the same values as its host build, bit for bit."""

import numpy as np
import pytest
from support.kernel_host import NORMALISATIONS, SHAPES, run_host

from benchmarks.gpu_check.kernel_checks import letterbox_on_device
from simswap_trt.kernels import load_device_kernels

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("source", ["fatbin", "nvrtc"])
@pytest.mark.parametrize("kind", ["centerface", "scrfd"])
def test_device_letterbox_equals_the_host_build(build, host, monkeypatch, source, kind):
    monkeypatch.setenv(
        "SIMSWAP_KERNELS_FATBIN", str(build / "simswap_kernels.fatbin") if source == "fatbin" else "/none"
    )
    kernels = load_device_kernels()
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SHAPES]
    for dtype in (np.float32, np.float16):
        got, _ = letterbox_on_device(kernels, frames, 96, NORMALISATIONS[kind], dtype == np.float16)
        np.testing.assert_array_equal(got, run_host(host, frames, 96, NORMALISATIONS[kind], dtype))
