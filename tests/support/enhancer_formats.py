"""Random-weight GFPGAN checkpoints in the released file format (``{"params_ema": state_dict}``) and a
bundle with a reduced-size enhancer, made through the real conversion path."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from simswap_build.convert.enhancers import GFPGANv1Clean
from simswap_build.models.gfpgan import GFPGAN

# 64 px crops, 1/32 of the channels, 32-dim styles, 2 mapping layers: the whole architecture, fast
TINY_GFPGAN = GFPGANv1Clean(out_size=64, num_style_feat=32, channel_multiplier=2, narrow=1 / 32, num_mlp=2)


def make_gfpgan(config: GFPGANv1Clean = TINY_GFPGAN, seed: int = 0) -> GFPGAN:
    """A GFPGAN with random weights, including the parts a fresh module leaves at zero (noise strengths
    and biases), so that every term of the architecture contributes."""
    torch.manual_seed(seed)
    model = GFPGAN(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or param.numel() == 1:
                param.normal_(0.0, 0.1)
    return model


def save_gfpgan(model: GFPGAN, path: Path, key: str = "params_ema") -> Path:
    torch.save({key: model.state_dict()}, path)
    return path


def bundle_with_enhancer(bundle_root: Path, checkpoint: Path, folder: Path):
    """A copy of ``bundle_root`` in ``folder`` with the enhancer added by ``add_enhancer``."""
    from simswap_build.convert.bundle import add_enhancer

    copy = folder / "with-enhancer"
    shutil.copytree(bundle_root, copy)
    return add_enhancer(copy, checkpoint)
