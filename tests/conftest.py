"""The test tree: tests/runtime mirrors simswap_trt, tests/build simswap_build, tests/benchmarks the
benchmarks, tests/gpu holds the tests that need a real GPU; what they share lives in tests/support (test
modules never import one another). The fixture modules of tests/support are loaded here as plugins."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests/support as the package ``support``

pytest_plugins = [
    "support.bundles",
    "support.kernel_build",
    "support.plans",
    "support.real_gpu",
]
