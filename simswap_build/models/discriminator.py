"""The paper's two-scale PatchGAN discriminator (``netD1``/``netD2``): trained by ``simswap_build.training``
and recognised (and refused) by the converter; inference never runs it. Hinge outputs: no sigmoid."""

from __future__ import annotations

import torch
from torch import nn


def _stage(c_in: int, c_out: int, stride: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2, True))
    return nn.Sequential(*layers)


class PatchDiscriminator(nn.Module):
    """One scale: four stride-2 stages, a stride-1 stage and a 1-channel logit conv; returns all 6 maps.
    ``ndf`` is the first stage's width (64 in the paper; smaller for experiments)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64) -> None:
        super().__init__()
        self.down1 = _stage(input_nc, ndf, 2, norm=False)
        self.down2 = _stage(ndf, ndf * 2, 2, norm=True)
        self.down3 = _stage(ndf * 2, ndf * 4, 2, norm=True)
        self.down4 = _stage(ndf * 4, ndf * 8, 2, norm=True)
        self.conv1 = _stage(ndf * 8, ndf * 8, 1, norm=True)
        self.conv2 = nn.Sequential(nn.Conv2d(ndf * 8, 1, 4, stride=1, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in (self.down1, self.down2, self.down3, self.down4, self.conv1, self.conv2):
            x = stage(x)
            outputs.append(x)
        return outputs


class MultiscaleDiscriminator(nn.Module):
    """``netD1`` sees the image, ``netD2`` the image average-pooled by 2 (3x3, padding 1, no pad counting)."""

    def __init__(self, ndf: int = 64) -> None:
        super().__init__()
        self.netD1 = PatchDiscriminator(ndf=ndf)
        self.netD2 = PatchDiscriminator(ndf=ndf)
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.netD1(x), self.netD2(self.downsample(x))
