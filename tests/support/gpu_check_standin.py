"""The GPU check (benchmarks/gpu_check) on the CPU stand-in of the GPU: its torch and CUDA-kernel stand-in
plans replaced by the same functions queued as NumPy work on the stand-in's streams and memory."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from benchmarks.gpu_check import standins
from simswap_trt import cuda
from support.fake_gpu import fake_cudart, install_fake_cuda


def view(gpu, address: int, shape: tuple[int, ...]) -> np.ndarray:
    """float32 device memory of the stand-in at ``address``, as an array of ``shape``."""
    return gpu.view(address, int(np.prod(shape)) * 4).view(np.float32).reshape(shape)


def enqueue_generator(gpu, addresses: dict, batch: int, crop_size: int, stream) -> None:
    """The stand-in generator's work on ``batch`` crops as NumPy queued on ``stream`` of the stand-in GPU."""
    image = (batch, 3, crop_size, crop_size)

    def run():
        target, latent = view(gpu, addresses["target"], image), view(gpu, addresses["latent"], (batch, 512))
        view(gpu, addresses["swapped"], image)[...] = standins.standin_numpy(target, latent)

    gpu.enqueue(stream.handle, "execute", run)


def enqueue_detector(gpu, engine, addresses: dict, batch: int, stream) -> None:
    """The stand-in detector plan's work on ``batch`` canvases, queued on ``stream`` of the stand-in GPU."""

    def run():
        blob = view(gpu, addresses["input.1"], (batch, 3, engine.canvas, engine.canvas))
        for spec, value in zip(engine.outputs, standins.detector_standin_numpy(blob), strict=True):
            view(gpu, addresses[spec.name], value.shape)[...] = value

    gpu.enqueue(stream.handle, "execute", run)


def enqueue_enhancer(gpu, addresses: dict, batch: int, size: int, stream) -> None:
    """The stand-in face enhancer's work on ``batch`` crops as NumPy queued on ``stream`` of the stand-in GPU."""
    image = (batch, 3, size, size)

    def run():
        view(gpu, addresses["enhanced"], image)[...] = standins.enhancer_standin_numpy(
            view(gpu, addresses["face"], image)
        )

    gpu.enqueue(stream.handle, "execute", run)


def plans_on(gpu, monkeypatch) -> None:
    """The check's stand-in plans (torch and the NVRTC kernel) as queued NumPy work on ``gpu``."""

    def generator(self, addresses, batch, stream):
        enqueue_generator(gpu, addresses, batch, self.crop_size, stream)
        self.calls += 1

    def detector(self, addresses, batch, stream):
        enqueue_detector(gpu, self, addresses, batch, stream)
        self.calls += 1

    def enhancer(self, addresses, batch, stream):
        enqueue_enhancer(gpu, addresses, batch, self.size, stream)
        self.calls += 1

    def kernel(self, addresses, batch, stream):
        enqueue_generator(gpu, addresses, batch, self.crop_size, stream)

    monkeypatch.setattr(standins.StandinEngine, "execute_device", generator)
    monkeypatch.setattr(standins.StandinDetectorEngine, "execute_device", detector)
    monkeypatch.setattr(standins.StandinEnhancerEngine, "execute_device", enhancer)
    monkeypatch.setattr(standins.KernelStandinEngine, "launch", kernel)
    monkeypatch.setattr(standins, "standin_kernel", lambda device=None: "standin_generator")
    monkeypatch.setattr(standins, "torch_cuda_missing", lambda: None)


def install(build: Path, monkeypatch: pytest.MonkeyPatch | None = None, devices: int = 2):
    """The stand-in GPU (``devices`` of them, kernels from the host build in ``build``) with the check's
    plans on it, undone with ``monkeypatch`` (without: for the whole process, as the documented command
    runs on it in the tests)."""
    monkeypatch = monkeypatch or pytest.MonkeyPatch()
    host = ctypes.CDLL(str(build / "libsimswap_kernels_host.so"))
    gpu = install_fake_cuda(monkeypatch, host_lib=host, devices=devices)
    cudart = fake_cudart([])
    monkeypatch.setattr(cuda, "runtime", lambda: cudart)
    plans_on(gpu, monkeypatch)
    return gpu
