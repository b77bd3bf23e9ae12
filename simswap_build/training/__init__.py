"""Training and fine-tuning SimSwap generators (needs torch: ``pip install 'simswap-trt[train]'``).

The paper's recipe by default (``TrainConfig.recipe("paper")``), the first released code's pix2pixHD
recipe as an option; the generator is written in the official on-disk format, so ``simswap-build
convert`` takes ``RUN/latest_net_G.pth`` as is. Names are imported on first use, so that the command
line's help (which reads the torch-free ``config`` and ``data`` modules) works without torch.
"""

from __future__ import annotations

import importlib

_MODULES = {
    "RECIPES": "config",
    "TrainConfig": "config",
    "FaceSet": "data",
    "PairSampler": "data",
    "prepare_faces": "data",
    "RunSpec": "run",
    "run_training": "run",
    "Trainer": "trainer",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
