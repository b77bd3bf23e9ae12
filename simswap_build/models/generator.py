"""PyTorch reference generators with the official SimSwap state_dict layout.

Three layouts exist (see ``GeneratorConfig``):

* ``"224"``  – ``fs_networks.Generator_Adain_Upsample`` (official 224 model, also the training code's
  ``Gdeep=False`` generator);
* ``"512"``  – ``fs_networks_512`` "beta" (extra ``down0``/``up0``, ``ngf/2`` channels at full resolution);
* ``"deep"`` – the training code's ``Gdeep=True`` generator (extra ``down4``/``up4``).

and two I/O families (``GeneratorConfig.family``):

* ``"official"`` – input RGB in [0, 1], Tanh then ``(x + 1) / 2`` inside ``forward``;
* ``"train"``    – ``fs_networks_fix``: no Tanh, ImageNet-normalised input and output.

``forward`` is the upstream network. ``forward_rgb01`` is the product's contract for every variant
(RGB [0, 1] in and out), which the exported ONNX graph reproduces.
"""

from __future__ import annotations

import torch
from torch import nn

from simswap_build.convert.architectures import GeneratorConfig
from simswap_trt.constants import IMAGENET_MEAN, IMAGENET_STD, INSTANCE_NORM_EPS


class InstanceNorm(nn.Module):
    """Upstream's parameter-free instance norm: biased variance, eps 1e-8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - torch.mean(x, (2, 3), keepdim=True)
        return x * torch.rsqrt(torch.mean(x * x, (2, 3), keepdim=True) + INSTANCE_NORM_EPS)


class ApplyStyle(nn.Module):
    """Identity injection: ``x * (scale + 1) + shift`` with ``[scale, shift] = linear(latent)``."""

    def __init__(self, latent_size: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(latent_size, channels * 2)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        style = self.linear(latent).view(-1, 2, x.size(1), 1, 1)
        return x * (style[:, 0] + 1.0) + style[:, 1]


class ResnetBlockAdain(nn.Module):
    """Residual block with two identity-modulated 3x3 convolutions and no activation after the add."""

    def __init__(self, dim: int, latent_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm())
        self.style1 = ApplyStyle(latent_size, dim)
        self.act1 = nn.ReLU(True)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm())
        self.style2 = ApplyStyle(latent_size, dim)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.style1(self.conv1(x), latent))
        return x + self.style2(self.conv2(y), latent)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(True))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(True),
    )


class Generator(nn.Module):
    """SimSwap generator: encoder, ``n_blocks`` ID-injection blocks, decoder. Not a U-Net."""

    def __init__(self, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.config = config
        full, dim = config.full_resolution_channels, config.ngf * 8
        self.first_layer = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, full, 7), nn.BatchNorm2d(full), nn.ReLU(True)
        )
        for name, c_in, c_out in config.down_stages:
            setattr(self, name, _down(c_in, c_out))
        self.BottleNeck = nn.Sequential(*[ResnetBlockAdain(dim, config.latent_size) for _ in range(config.n_blocks)])
        for name, c_in, c_out in config.up_stages:
            setattr(self, name, _up(c_in, c_out))
        last = [nn.ReflectionPad2d(3), nn.Conv2d(full, 3, 7)]
        if config.family == "official":
            last.append(nn.Tanh())
        self.last_layer = nn.Sequential(*last)
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The upstream network: official family maps [0,1] → [0,1]; train family works in ImageNet space."""
        x = self.first_layer(x)
        for name, _, _ in self.config.down_stages:
            x = getattr(self, name)(x)
        for block in self.BottleNeck:
            x = block(x, latent)
        for name, _, _ in self.config.up_stages:
            x = getattr(self, name)(x)
        x = self.last_layer(x)
        return (x + 1) / 2 if self.config.family == "official" else x

    def forward_rgb01(self, target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The product contract: RGB [0,1] target and L2-normalised latent in, RGB [0,1] out."""
        if self.config.family == "official":
            return self.forward(target, latent)
        out = self.forward((target - self._mean) / self._std, latent)
        return torch.clamp(out * self._std + self._mean, 0.0, 1.0)
