"""What ``simswap-trt doctor`` says about the GPU: every usable device, or plainly why none is and what runs
instead (the CPU path), a driver older than the CUDA runtime with what to install, whether the fused
kernels load, and the memory a swapper on a bundle's plans holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simswap_trt import cuda
from simswap_trt.errors import SimswapError

CPU_PATH = "the CPU path works: ONNX Runtime on the CPU (CPUExecutionProvider) runs the bundle's fp32 graphs"


@dataclass(frozen=True)
class GpuReport:
    lines: list[str]
    usable: bool  # a CUDA device can be used


def gpu_lines(tegra: bool | None = None) -> GpuReport:
    """Doctor's GPU lines. ``tegra``: whether this is a Jetson (default: found from its L4T release)."""
    try:
        count = cuda.device_count()
        lines = [device_line(index, cuda.device_info(index)) for index in range(count)]
    except SimswapError as exc:  # cuda-python missing, or a device that does not answer
        return GpuReport([f"GPU           none usable ({exc}); {CPU_PATH}"], False)
    if lines:
        return GpuReport(lines + kernel_lines(), True)
    return GpuReport(no_device_lines(tegra), False)


def device_line(index: int, device: cuda.DeviceInfo) -> str:
    driver, runtime = cuda.cuda_version_text(device.driver_version), cuda.cuda_version_text(device.runtime_version)
    memory = device.total_memory / 2**30
    name = f"GPU {index}"
    return f"{name:<14}{device.name} ({device.sm}, {memory:.0f} GiB), driver CUDA {driver}, runtime CUDA {runtime}"


def no_device_lines(tegra: bool | None) -> list[str]:
    """Why no device is usable: no driver (a CPU machine: the CPU path), a driver older than the runtime (what
    to install), or no device under this driver."""
    driver, runtime = cuda.driver_versions()
    if tegra is None:
        from simswap_trt.jetson import jetson_info

        tegra = jetson_info() is not None
    problem = cuda.driver_problem(driver, runtime, tegra)
    if driver == 0:
        return [f"GPU           none (no NVIDIA driver on this machine); {CPU_PATH}"]
    if problem is not None:
        return [f"GPU           NOT USABLE: {problem}", f"              until then {CPU_PATH}"]
    serves = cuda.cuda_version_text(driver)
    return [f"GPU           none visible to the driver (CUDA {serves}; CUDA_VISIBLE_DEVICES?); {CPU_PATH}"]


def kernel_lines() -> list[str]:
    """Whether the fused CUDA kernels load (the fatbin, or NVRTC), loudly with the fix when they do not."""
    from simswap_trt.kernels import load_device_kernels

    try:
        load_device_kernels()
    except SimswapError as exc:
        return [f"kernels       NOT USABLE, the device path falls back to the host stages: {exc}"]
    return ["kernels       loaded (fused preprocess, paste-back and detector-input kernels)"]


def memory_lines(bundle: str | Path) -> list[str]:
    """The device and pinned memory a swapper on ``bundle``'s TensorRT plans holds once loaded, per part
    (``FaceSwapper.memory``); its buffers then grow with the batches it serves (docs/device-path.md)."""
    from simswap_trt.swapper import FaceSwapper

    try:
        with FaceSwapper.from_bundle(bundle, backend="tensorrt") as swapper:
            report = swapper.memory()
    except SimswapError as exc:
        return [f"  memory      not measured: {exc}"]
    head = "  memory      a swapper once loaded (buffers grow with the batch: docs/device-path.md):"
    return [head, *(f"    {line}" for line in report.lines())]
