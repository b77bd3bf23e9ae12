"""The full benchmark: same as ``simswap-trt bench`` and ``simswap-build bench`` (see simswap_build/bench/run.py).

python -m benchmarks.run [--bundle B] [--repeats 5] [--batches 1 4 8 16 32 64]
"""

import sys

from simswap_build.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
