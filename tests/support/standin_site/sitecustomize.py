"""Put on PYTHONPATH (with tests/ and the repository root) together with ``SIMSWAP_STANDIN_GPU=<CMake build
folder>``: every Python process started so runs on the CPU stand-in of the GPU (tests/support/fake_gpu.py), so that
``python -m benchmarks.gpu_check`` is tested exactly as it is documented."""

import os
from pathlib import Path

if os.environ.get("SIMSWAP_STANDIN_GPU"):
    from support.gpu_check_standin import install

    install(Path(os.environ["SIMSWAP_STANDIN_GPU"]))
