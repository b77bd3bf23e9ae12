"""Shared fixtures: reduced-width random checkpoints in the official formats, and bundles made from them
through the real conversion path. Reduced widths keep the suite fast; full-size models are used where
size is the point (key lists, parity at 224)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from simswap_build.convert.architectures import ArcFaceConfig, GeneratorConfig  # noqa: E402

TINY_GENERATOR = GeneratorConfig(ngf=8, n_blocks=2)
TINY_ARCFACE = ArcFaceConfig(layers=(1, 1, 1, 1), width=16)
KEYS_DIR = Path(__file__).parent / "data" / "keys"


def reference_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """A key list from tests/data/keys (copied from the project's model reference)."""
    out = []
    for line in (KEYS_DIR / f"{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            out.append((key, tuple(int(d) for d in shape.strip("()").split(",") if d.strip())))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """(generator model, arcface model, generator .pth, arcface .tar) at reduced widths, official formats."""
    from official_formats import make_arcface, make_generator, save_arcface_pickled_module, save_generator

    folder = tmp_path_factory.mktemp("checkpoints")
    generator, arcface = make_generator(TINY_GENERATOR, seed=1), make_arcface(TINY_ARCFACE, seed=2)
    return (
        generator,
        arcface,
        save_generator(generator, folder / "latest_net_G.pth"),
        save_arcface_pickled_module(arcface, folder / "arcface_checkpoint.tar"),
    )


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoints, tmp_path_factory):
    """A bundle converted from the tiny checkpoints, 224 px crops."""
    from simswap_build.convert.bundle import convert_checkpoints

    _, _, generator_path, arcface_path = tiny_checkpoints
    return convert_checkpoints(generator_path, arcface_path, tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def astronaut_crop() -> np.ndarray:
    """A real photo: the face region of skimage's public-domain astronaut, 224x224 uint8 BGR."""
    import cv2
    from skimage import data

    face = data.astronaut()[40:220, 130:310, ::-1]
    return np.ascontiguousarray(cv2.resize(face, (224, 224), interpolation=cv2.INTER_AREA))


def _gpu_available() -> bool:
    try:
        from simswap_trt import cuda

        cuda.device_info()
        return True
    except Exception:  # no cuda-python, no driver, no device: all mean "no GPU here"
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where a CUDA device is usable (``pytest -m gpu`` on a GPU machine)."""
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with a working driver")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """The CMake build of the kernels: the host library, and the fatbin where nvcc exists."""
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed")
    folder = tmp_path_factory.mktemp("kernels")
    for step in (
        ["cmake", "-S", str(Path(__file__).parents[1]), "-B", str(folder)],
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


def random_crops(count: int, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
