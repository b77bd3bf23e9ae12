"""The full benchmark: same as ``simswap-trt bench`` (see simswap_trt/bench/run.py).

python -m benchmarks.run [--bundle B] [--repeats 5] [--batches 1 4 8 16 32 64]
"""

import sys

from simswap_trt.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
