"""`simswap-trt doctor` about the GPU, with faked driver and runtime versions: a machine without a driver says
plainly that the CPU path works (not a driver error, no plan-building advice), a Jetson driver older than
cuda-bindings' runtime names the cuda-compat package and library path, a desktop driver of an older major
names the driver or cuda-python to install, and whether the fused kernels load."""

import pytest
from support.fake_gpu import install_fake_cuda

from simswap_trt import cli, cuda, doctor
from simswap_trt import kernels as kernels_module
from simswap_trt.errors import EngineError


def no_device(monkeypatch, driver, runtime):
    monkeypatch.setattr(cuda, "device_count", lambda: 0)
    monkeypatch.setattr(cuda, "driver_versions", lambda: (driver, runtime))
    monkeypatch.setattr("simswap_trt.jetson.doctor_lines", lambda: [])


def test_without_a_driver_doctor_says_the_cpu_path_works(tiny_bundle, monkeypatch, capsys):
    no_device(monkeypatch, 0, 13000)
    assert cli.main(["doctor", str(tiny_bundle.root)]) == 0
    out = capsys.readouterr().out
    assert "GPU           none (no NVIDIA driver on this machine); the CPU path works: ONNX Runtime on the CPU" in out
    assert "runs the bundle's fp32 graphs" in out
    for role in ("generator", "arcface"):
        assert f"  {role:<11} auto -> ONNX Runtime on the CPU, fp32 graph" in out
    assert "cudaError" not in out and "simswap-build engine" not in out and "TensorRT plan for" not in out


@pytest.mark.parametrize(
    "driver, runtime, tegra, expected",
    [
        (12060, 12090, True, "sudo apt install cuda-compat-12-9 && export LD_LIBRARY_PATH=/usr/local/cuda-12.9/compat"),
        (12060, 12060, True, None),
        (12080, 13000, False, "install a driver for CUDA 13 (CUDA 13 needs r580 or later), or cuda-python 12.x"),
        (12020, 12090, False, None),  # minor version compatibility on desktop and server drivers
    ],
)
def test_a_driver_older_than_the_runtime_is_found(driver, runtime, tegra, expected):
    problem = cuda.driver_problem(driver, runtime, tegra)
    assert (problem is None) if expected is None else (expected in problem)


def test_doctor_on_a_jetson_without_cuda_compat_says_what_to_install(monkeypatch, capsys):
    no_device(monkeypatch, 12060, 12090)
    lines = doctor.gpu_lines(tegra=True).lines
    assert lines[0].startswith("GPU           NOT USABLE: the Jetson's CUDA driver serves CUDA 12.6, older than the")
    assert "cuda-compat-12-9" in lines[0] and "until then the CPU path works" in lines[1]
    assert not doctor.gpu_lines(tegra=True).usable


def test_doctor_says_loudly_when_the_kernels_cannot_load(monkeypatch):
    install_fake_cuda(monkeypatch)

    def unusable(device=None):
        raise EngineError("the CUDA kernels are not usable (compiling simswap_kernels.cu with NVRTC): no libnvrtc")

    monkeypatch.setattr(kernels_module, "load_device_kernels", unusable)
    report = doctor.gpu_lines()
    assert report.usable and report.lines[0].startswith("GPU 0         Fake H100 (sm_90, 80 GiB)")
    assert report.lines[-1].startswith("kernels       NOT USABLE, the device path falls back to the host stages:")
    assert "no libnvrtc" in report.lines[-1]
    monkeypatch.setattr(kernels_module, "load_device_kernels", lambda device=None: {})
    assert doctor.gpu_lines().lines[-1].startswith("kernels       loaded")
