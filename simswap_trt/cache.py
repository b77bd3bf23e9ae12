"""Where the tools keep what they can recompute (calibration crops, the demo's untrained bundle): a cache
folder of the user's, never an input folder or a bundle.

``SIMSWAP_TRT_CACHE`` names it; otherwise ``$XDG_CACHE_HOME/simswap-trt``, else ``~/.cache/simswap-trt``.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SIMSWAP_TRT_CACHE"


def cache_folder(*parts: str) -> Path:
    """The cache folder (or a sub-folder of it); not created here."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "simswap-trt"
    return root.joinpath(*parts)
