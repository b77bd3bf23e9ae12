"""PyTorch GFPGAN v1 "clean" generator with the released ``params_ema`` state_dict layout.

Written from the GFPGAN paper (Wang et al., CVPR 2021) and StyleGAN2 (Karras et al., CVPR 2020):

* U-Net encoder: 1x1 conv, then residual blocks that halve the resolution down to 4x4 (3x3 conv,
  bilinear resize, 3x3 conv, plus a resized 1x1 skip; LeakyReLU 0.2); a linear layer turns the 4x4
  features into one style vector per decoder layer.
* U-Net decoder: residual blocks that double the resolution (adding the encoder's features of the same
  size); at each level two small conv branches give the SFT scale and shift.
* StyleGAN2 decoder: a learned 4x4 constant; per level a modulated 3x3 conv after a 2x bilinear
  upsample and a modulated 3x3 conv, each followed by ``sqrt(2)`` gain, fixed noise ``w·noise``, bias and
  LeakyReLU 0.2; after the first conv of a level, half of the channels become ``x·scale + shift``; a
  modulated 1x1 "to RGB" (no demodulation) adds to the upsampled RGB skip.

Modulated convolution: ``w'[o,i,k] = w[o,i,k]·s[i]`` with ``s = A(style)``, demodulated
``w''[o,i,k] = w'[o,i,k] / sqrt(Σ_{i,k} w'[o,i,k]² + 1e-8)``, computed here as a grouped convolution with
per-sample weights. Inference uses the stored noise maps (deterministic), not fresh noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from simswap_build.convert.enhancers import DEMOD_EPS, SLOPE, GFPGANv1Clean


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, factor: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), SLOPE)
        y = F.leaky_relu(self.conv2(_resize(y, self.factor)), SLOPE)
        return y + self.skip(_resize(x, self.factor))


class ModulatedConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, feat: int, demodulate: bool, upsample: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, c_out, c_in, k, k) / (c_in * k * k) ** 0.5)
        self.modulation = nn.Linear(feat, c_in)
        self.demodulate, self.upsample = demodulate, upsample

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, c_in = x.shape[:2]
        weight = self.weight * self.modulation(style).view(b, 1, c_in, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum((2, 3, 4), keepdim=True) + DEMOD_EPS)
        if self.upsample:
            x = _resize(x, 2)
        c_out, k = weight.shape[1], weight.shape[-1]
        h, w = x.shape[2:]
        out = F.conv2d(x.reshape(1, b * c_in, h, w), weight.reshape(b * c_out, c_in, k, k), padding=k // 2, groups=b)
        return out.view(b, c_out, h, w)


class StyleConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, feat: int, upsample: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(c_in, c_out, 3, feat, demodulate=True, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, c_out, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * 2**0.5
        return F.leaky_relu(out + self.weight * noise + self.bias, SLOPE)


class ToRGB(nn.Module):
    def __init__(self, c_in: int, feat: int) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(c_in, 3, 1, feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        return out if skip is None else out + _resize(skip, 2)


class ConstantInput(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))


class StyleDecoder(nn.Module):
    """StyleGAN2 synthesis network with SFT on half of the channels after each level's first conv. Its
    mapping MLP (``style_mlp``) is part of the checkpoint but unused: GFPGAN feeds latents directly."""

    def __init__(self, config: GFPGANv1Clean) -> None:
        super().__init__()
        feat, dec = config.num_style_feat, config.decoder_channels
        mlp: list[nn.Module] = [nn.Identity()]  # index 0 is the parameter-free style normalisation
        for _ in range(config.num_mlp):
            mlp += [nn.Linear(feat, feat), nn.LeakyReLU(SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)
        self.constant_input = ConstantInput(dec[4])
        self.style_conv1 = StyleConv(dec[4], dec[4], feat, upsample=False)
        self.to_rgb1 = ToRGB(dec[4], feat)
        self.style_convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        c_in = dec[4]
        for i in range(3, config.log_size + 1):
            c_out = dec[2**i]
            self.style_convs += [StyleConv(c_in, c_out, feat, True), StyleConv(c_out, c_out, feat, False)]
            self.to_rgbs.append(ToRGB(c_out, feat))
            c_in = c_out
        self.noises = nn.Module()
        for k in range(config.num_noise):
            size = config.noise_size(k)
            self.noises.register_buffer(f"noise{k}", torch.randn(1, 1, size, size))

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        noise = [getattr(self.noises, f"noise{k}") for k in range(len(self.style_convs) + 1)]
        out = self.constant_input.weight.repeat(latent.shape[0], 1, 1, 1)
        out = self.style_conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1], None)
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            same, sft = out.split(out.shape[1] // 2, dim=1)
            out = torch.cat([same, sft * conditions[2 * level] + conditions[2 * level + 1]], dim=1)
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


def _sft_branch(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(SLOPE), nn.Conv2d(channels, channels, 3, 1, 1)
    )


class GFPGAN(nn.Module):
    """The GFPGAN v1 clean generator. ``forward`` maps RGB in [-1, 1] to RGB (about [-1, 1]);
    ``forward_rgb01`` is the product contract (RGB [0, 1] in, clamped RGB [0, 1] out)."""

    def __init__(self, config: GFPGANv1Clean = GFPGANv1Clean()) -> None:
        super().__init__()
        self.config = config
        unet = config.unet_channels
        levels = [2**i for i in range(3, config.log_size + 1)]
        self.conv_body_first = nn.Conv2d(3, unet[config.out_size], 1)
        self.conv_body_down = nn.ModuleList(ResBlock(unet[r], unet[r // 2], 0.5) for r in reversed(levels))
        self.final_conv = nn.Conv2d(unet[4], unet[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(ResBlock(unet[r // 2], unet[r], 2) for r in levels)
        self.toRGB = nn.ModuleList(nn.Conv2d(unet[r], 3, 1) for r in levels)  # auxiliary outputs, unused
        self.final_linear = nn.Linear(unet[4] * 16, config.num_latent * config.num_style_feat)
        self.stylegan_decoder = StyleDecoder(config)
        self.condition_scale = nn.ModuleList(_sft_branch(unet[r]) for r in levels)
        self.condition_shift = nn.ModuleList(_sft_branch(unet[r]) for r in levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.leaky_relu(self.conv_body_first(x), SLOPE)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), SLOPE)
        latent = self.final_linear(feat.flatten(1)).view(x.shape[0], -1, self.config.num_style_feat)
        conditions = []
        blocks = zip(skips, self.conv_body_up, self.condition_scale, self.condition_shift, strict=True)
        for skip, block, scale, shift in blocks:
            feat = block(feat + skip)
            conditions += [scale(feat), shift(feat)]
        return self.stylegan_decoder(latent, conditions)

    def forward_rgb01(self, face: torch.Tensor) -> torch.Tensor:
        return ((self.forward(face * 2 - 1).clamp(-1, 1) + 1) / 2).clamp(0, 1)
