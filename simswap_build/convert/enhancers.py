"""Face restorers ("enhancers") that a bundle can carry as role ``enhancer``, as plain data: each
architecture is a class with its configuration, the ``state_dict`` keys and shapes it implies, the
detection of that configuration from a checkpoint's keys, its alignment template and its licence.

The pipeline around a restorer (composed warp from the generator's crop, batched run, blend, one
paste-back) is the same for every architecture; adding one (GPEN-BFR, CodeFormer) means a new
``Restorer`` subclass here, a torch module in ``simswap_build.models`` and a graph writer, registered in
``RESTORERS``. No torch here, so key lists and detection run on a runtime-only install.

GFPGAN v1.4 ("clean" architecture, TencentARC/GFPGAN, Apache-2.0 code and weights): a U-Net encoder of
the degraded 512 face gives a style code per decoder layer and, at every decoder resolution, a spatial
feature transform (scale and shift) that modulates half of the channels of a StyleGAN2 decoder
(modulated 3x3 convolutions with weight demodulation, fixed noise maps, skip "to RGB" outputs).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from simswap_build.convert.architectures import Shape
from simswap_trt.errors import CheckpointError, ConfigError

Keys = list[tuple[str, Shape]]
SLOPE = 0.2  # LeakyReLU negative slope everywhere in GFPGAN
DEMOD_EPS = 1e-8  # StyleGAN2 weight demodulation


class Restorer(ABC):
    """One face-restoration architecture: what it is called in a bundle, how faces are aligned for it,
    under which licence its official weights come, and which keys its checkpoint holds."""

    architecture: ClassVar[str]
    alignment: ClassVar[str]  # a ``simswap_trt.bundle.ALIGNMENTS`` template, scaled to ``size``
    license: ClassVar[str]
    checkpoint_key: ClassVar[str | None]  # the entry of the checkpoint dict holding the weights

    @property
    @abstractmethod
    def size(self) -> int:
        """Input and output crop size (square)."""

    @abstractmethod
    def keys(self) -> Keys:
        """The exact ``state_dict`` names and shapes."""

    @classmethod
    @abstractmethod
    def detect(cls, shapes: Mapping[str, Shape]) -> Restorer | None:
        """The configuration these keys describe, or None when they are not this architecture."""


def _conv(prefix: str, c_out: int, c_in: int, k: int, bias: bool = True) -> Keys:
    keys: Keys = [(f"{prefix}.weight", (c_out, c_in, k, k))]
    return keys + [(f"{prefix}.bias", (c_out,))] if bias else keys


def _linear(prefix: str, c_out: int, c_in: int) -> Keys:
    return [(f"{prefix}.weight", (c_out, c_in)), (f"{prefix}.bias", (c_out,))]


@dataclass(frozen=True)
class GFPGANv1Clean(Restorer):
    """GFPGAN v1.3/v1.4 (``GFPGANv1Clean`` with ``input_is_latent``, ``different_w`` and ``sft_half``).

    The released model is ``out_size=512, num_style_feat=512, channel_multiplier=2, narrow=1, num_mlp=8``;
    smaller ``narrow``, ``num_style_feat``, ``num_mlp`` and ``out_size`` give the same architecture with
    fewer channels or levels (for tests)."""

    architecture: ClassVar[str] = "gfpgan-v1-clean"
    alignment: ClassVar[str] = "ffhq"
    license: ClassVar[str] = "Apache-2.0 (code and weights: TencentARC/GFPGAN)"
    checkpoint_key: ClassVar[str | None] = "params_ema"

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    narrow: float = 1.0
    num_mlp: int = 8

    def __post_init__(self) -> None:
        if self.out_size < 8 or 2**self.log_size != self.out_size:
            raise ConfigError(f"GFPGAN out_size must be a power of two >= 8, got {self.out_size}")
        if min(min(self.decoder_channels.values()), min(self.unet_channels.values())) < 1:
            raise ConfigError(f"GFPGAN narrow={self.narrow} leaves a level without channels")

    @property
    def size(self) -> int:
        return self.out_size

    @property
    def log_size(self) -> int:
        return int(math.log2(self.out_size))

    @property
    def num_latent(self) -> int:
        """Style vectors the decoder reads: one per modulated layer plus the last to-RGB."""
        return self.log_size * 2 - 2

    @property
    def num_noise(self) -> int:
        return (self.log_size - 2) * 2 + 1

    @staticmethod
    def noise_size(index: int) -> int:
        """Resolution of fixed noise map ``index`` (4, 8, 8, 16, 16, ...)."""
        return 2 ** ((index + 5) // 2)

    def _channels(self, narrow: float) -> dict[int, int]:
        base = {4: 512, 8: 512, 16: 512, 32: 512}
        scaled = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
        out = {r: int(c * narrow) for r, c in base.items()}
        out.update({r: int(c * self.channel_multiplier * narrow) for r, c in scaled.items()})
        return {r: c for r, c in out.items() if r <= self.out_size}

    @property
    def decoder_channels(self) -> dict[int, int]:
        """StyleGAN2 decoder channels per resolution."""
        return self._channels(self.narrow)

    @property
    def unet_channels(self) -> dict[int, int]:
        """U-Net channels per resolution: half the decoder's."""
        return self._channels(self.narrow * 0.5)

    def keys(self) -> Keys:
        unet, dec, feat = self.unet_channels, self.decoder_channels, self.num_style_feat
        levels = [2**i for i in range(3, self.log_size + 1)]  # 8 .. out_size
        keys = _conv("conv_body_first", unet[self.out_size], 3, 1)
        c_in = unet[self.out_size]
        for i, res in enumerate(reversed(levels)):  # down to res/2
            c_out = unet[res // 2]
            keys += _res_block(f"conv_body_down.{i}", c_in, c_out)
            c_in = c_out
        keys += _conv("final_conv", unet[4], c_in, 3)
        c_in = unet[4]
        for i, res in enumerate(levels):
            keys += _res_block(f"conv_body_up.{i}", c_in, unet[res])
            c_in = unet[res]
        for i, res in enumerate(levels):
            keys += _conv(f"toRGB.{i}", 3, unet[res], 1)
        keys += _linear("final_linear", self.num_latent * feat, unet[4] * 16)
        d = "stylegan_decoder"
        for j in range(self.num_mlp):
            keys += _linear(f"{d}.style_mlp.{2 * j + 1}", feat, feat)
        keys += [(f"{d}.constant_input.weight", (1, dec[4], 4, 4))]
        keys += _style_conv(f"{d}.style_conv1", dec[4], dec[4], feat)
        keys += _to_rgb(f"{d}.to_rgb1", dec[4], feat)
        c_in = dec[4]
        for i, res in enumerate(levels):
            keys += _style_conv(f"{d}.style_convs.{2 * i}", c_in, dec[res], feat)
            keys += _style_conv(f"{d}.style_convs.{2 * i + 1}", dec[res], dec[res], feat)
            c_in = dec[res]
        for i, res in enumerate(levels):
            keys += _to_rgb(f"{d}.to_rgbs.{i}", dec[res], feat)
        keys += [
            (f"{d}.noises.noise{k}", (1, 1, self.noise_size(k), self.noise_size(k))) for k in range(self.num_noise)
        ]
        for branch in ("condition_scale", "condition_shift"):
            for i, res in enumerate(levels):
                c = unet[res]
                keys += _conv(f"{branch}.{i}.0", c, c, 3) + _conv(f"{branch}.{i}.2", c, c, 3)
        return keys

    @classmethod
    def detect(cls, shapes: Mapping[str, Shape]) -> GFPGANv1Clean | None:
        needed = ("conv_body_first.weight", "stylegan_decoder.constant_input.weight", "final_linear.weight")
        if not all(k in shapes for k in needed):
            return None
        try:
            downs = _count(shapes, r"conv_body_down\.(\d+)\.")
            mlps = _count(shapes, r"stylegan_decoder\.style_mlp\.(\d+)\.weight", step=2)
            feat = shapes["final_linear.weight"][0] // max(2 * (downs + 2) - 2, 1)  # one style per decoder layer
            narrow = shapes["stylegan_decoder.constant_input.weight"][1] / 512
            multiplier = 2
            if "stylegan_decoder.to_rgbs.3.modulated_conv.weight" in shapes:  # the 64 level exists
                multiplier = round(shapes["stylegan_decoder.to_rgbs.3.modulated_conv.weight"][2] / (256 * narrow))
            return cls(2 ** (downs + 2), feat, max(multiplier, 1), narrow, mlps)
        except (ConfigError, IndexError, ZeroDivisionError) as exc:
            raise CheckpointError(f"GFPGAN-like keys with an impossible configuration: {exc}") from None


def _count(shapes: Mapping[str, Shape], pattern: str, step: int = 1) -> int:
    found = [int(m.group(1)) for k in shapes if (m := re.match(pattern, k))]
    return (max(found) // step + 1) if found else 0


def _res_block(prefix: str, c_in: int, c_out: int) -> Keys:
    return (
        _conv(f"{prefix}.conv1", c_in, c_in, 3)
        + _conv(f"{prefix}.conv2", c_out, c_in, 3)
        + _conv(f"{prefix}.skip", c_out, c_in, 1, bias=False)
    )


def _modulated(prefix: str, c_out: int, c_in: int, k: int, feat: int) -> Keys:
    return [(f"{prefix}.weight", (1, c_out, c_in, k, k))] + _linear(f"{prefix}.modulation", c_in, feat)


def _style_conv(prefix: str, c_in: int, c_out: int, feat: int) -> Keys:
    keys = _modulated(f"{prefix}.modulated_conv", c_out, c_in, 3, feat)
    return keys + [(f"{prefix}.weight", (1,)), (f"{prefix}.bias", (1, c_out, 1, 1))]


def _to_rgb(prefix: str, c_in: int, feat: int) -> Keys:
    return _modulated(f"{prefix}.modulated_conv", 3, c_in, 1, feat) + [(f"{prefix}.bias", (1, 3, 1, 1))]


RESTORERS: tuple[type[Restorer], ...] = (GFPGANv1Clean,)


def detect_restorer(shapes: Mapping[str, Shape]) -> Restorer:
    """The restorer architecture and configuration a state_dict's keys describe."""
    for cls in RESTORERS:
        found = cls.detect(shapes)
        if found is not None:
            return found
    known = ", ".join(cls.architecture for cls in RESTORERS)
    raise CheckpointError(f"not a known face-restorer state_dict ({known}); first keys: {list(shapes)[:5]}")
