"""``python -m simswap_build.cli``: the ``simswap-build`` command."""

import sys

from simswap_build.cli import main

sys.exit(main())
