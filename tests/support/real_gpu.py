"""Whether a real CUDA device is usable here; tests marked ``gpu`` run only where it is."""

import pytest


def gpu_available() -> bool:
    try:
        from simswap_trt import cuda

        cuda.device_info()
        return True
    except Exception:  # no cuda-python, no driver, no device: all mean "no GPU here"
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where a CUDA device is usable (``pytest -m gpu`` on a GPU machine)."""
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with a working driver")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
