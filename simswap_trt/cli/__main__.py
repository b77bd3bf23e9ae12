"""``python -m simswap_trt.cli``."""

import sys

from simswap_trt.cli import main

if __name__ == "__main__":
    sys.exit(main())
