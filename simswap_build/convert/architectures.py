"""Architectures of SimSwap checkpoints as plain data: configs, the state_dict key/shape lists they imply,
and detection of the architecture a checkpoint's keys describe. No torch here, so the ONNX writer and
the untrained-bundle maker run on a runtime-only install.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from simswap_trt.constants import LATENT_SIZE
from simswap_trt.errors import CheckpointError, ConfigError

Layout = Literal["224", "512", "deep"]
Family = Literal["official", "train"]
Shape = tuple[int, ...]

IR_SE_101 = (3, 4, 23, 3)
IR_SE_50 = (3, 4, 6, 3)  # foamliu's resnet50 layering (405 tensors), not insightface's IR-50

GENERATOR_ARCHES = ("224", "512", "train-224", "train-deep")


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a generator checkpoint. Official checkpoints use ``ngf=64, n_blocks=9``.

    ``layout``: ``"224"`` (official 224 / training code without ``--Gdeep``), ``"512"`` (512 beta with
    ``down0``/``up0``), ``"deep"`` (training code with ``--Gdeep True``: ``down4``/``up4``).
    ``family``: ``"official"`` (RGB [0,1] I/O, Tanh) or ``"train"`` (``fs_networks_fix``: ImageNet-normalised
    I/O, no Tanh). The two families have identical keys, so the family is the user's declaration.
    """

    family: Family = "official"
    layout: Layout = "224"
    ngf: int = 64
    n_blocks: int = 9
    latent_size: int = LATENT_SIZE

    def __post_init__(self) -> None:
        if self.name not in GENERATOR_ARCHES:
            raise ConfigError(f"no SimSwap generator has family={self.family!r} with layout={self.layout!r}")

    @classmethod
    def from_name(cls, name: str, **kwargs: int) -> GeneratorConfig:
        """``"224"``, ``"512"``, ``"train-224"`` or ``"train-deep"``."""
        if name not in GENERATOR_ARCHES:
            raise ConfigError(f"unknown generator architecture {name!r}; choose one of {', '.join(GENERATOR_ARCHES)}")
        family, _, layout = name.rpartition("-")
        return cls(family=family or "official", layout=layout, **kwargs)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        """Short architecture name used by the CLI and the bundle manifest."""
        return self.layout if self.family == "official" else f"train-{self.layout}"

    @property
    def crop_size(self) -> int:
        """Aligned crop size the checkpoint was trained for."""
        return 224 if self.layout == "224" else 512

    @property
    def size_multiple(self) -> int:
        """Input height and width must be divisible by this (the encoder's total stride)."""
        return 8 if self.layout == "224" else 16

    @property
    def full_resolution_channels(self) -> int:
        return self.ngf // 2 if self.layout == "512" else self.ngf

    @property
    def down_stages(self) -> list[tuple[str, int, int]]:
        """(name, in channels, out channels) of the stride-2 encoder stages, in order."""
        ngf = self.ngf
        stages = [("down0", ngf // 2, ngf)] if self.layout == "512" else []
        stages += [("down1", ngf, ngf * 2), ("down2", ngf * 2, ngf * 4), ("down3", ngf * 4, ngf * 8)]
        if self.layout == "deep":
            stages.append(("down4", ngf * 8, ngf * 8))
        return stages

    @property
    def up_stages(self) -> list[tuple[str, int, int]]:
        """(name, in channels, out channels) of the upsampling decoder stages, in order."""
        ngf = self.ngf
        stages = [("up4", ngf * 8, ngf * 8)] if self.layout == "deep" else []
        stages += [("up3", ngf * 8, ngf * 4), ("up2", ngf * 4, ngf * 2), ("up1", ngf * 2, ngf)]
        if self.layout == "512":
            stages.append(("up0", ngf, ngf // 2))
        return stages


@dataclass(frozen=True)
class ArcFaceConfig:
    """Depth and width of an IR-SE network. The released model is ``layers=IR_SE_101, width=64``."""

    layers: tuple[int, int, int, int] = IR_SE_101
    width: int = 64
    embedding_size: int = LATENT_SIZE

    @property
    def name(self) -> str:
        depth = {IR_SE_101: "ir_se101", IR_SE_50: "ir_se50"}.get(tuple(self.layers), "ir_se_custom")
        return depth if self.width == 64 else f"{depth}_w{self.width}"

    def stages(self) -> list[tuple[int, int, int, int]]:
        """(stage index 1..4, in channels, out channels, stride) per stage."""
        w = self.width
        planes = (w, w * 2, w * 4, w * 8)
        ins = (w, w, w * 2, w * 4)
        return [(i + 1, ins[i], planes[i], (1, 2, 2, 2)[i]) for i in range(4)]


def _bn(prefix: str, c: int) -> list[tuple[str, Shape]]:
    return [(f"{prefix}.{p}", (c,)) for p in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{prefix}.num_batches_tracked", ())
    ]


def _conv(prefix: str, c_out: int, c_in: int, k: int, bias: bool = True) -> list[tuple[str, Shape]]:
    keys = [(f"{prefix}.weight", (c_out, c_in, k, k))]
    return keys + [(f"{prefix}.bias", (c_out,))] if bias else keys


def generator_keys(config: GeneratorConfig) -> list[tuple[str, Shape]]:
    """The exact ``state_dict`` order, names and shapes of the upstream generator for ``config``."""
    full = config.full_resolution_channels
    keys = _conv("first_layer.1", full, 3, 7) + _bn("first_layer.2", full)
    for name, c_in, c_out in config.down_stages:
        keys += _conv(f"{name}.0", c_out, c_in, 3) + _bn(f"{name}.1", c_out)
    dim = config.ngf * 8
    for i in range(config.n_blocks):
        for conv, style in (("conv1", "style1"), ("conv2", "style2")):
            keys += _conv(f"BottleNeck.{i}.{conv}.1", dim, dim, 3)
            keys += [
                (f"BottleNeck.{i}.{style}.linear.weight", (2 * dim, config.latent_size)),
                (f"BottleNeck.{i}.{style}.linear.bias", (2 * dim,)),
            ]
    for name, c_in, c_out in config.up_stages:
        keys += _conv(f"{name}.1", c_out, c_in, 3) + _bn(f"{name}.2", c_out)
    return keys + _conv("last_layer.1", 3, full, 7)


def arcface_keys(config: ArcFaceConfig) -> list[tuple[str, Shape]]:
    """The exact ``state_dict`` order, names and shapes of the IR-SE network for ``config``."""
    w = config.width
    keys = _conv("conv1", w, 3, 3, bias=False) + _bn("bn1", w) + [("prelu.weight", (1,))]
    for stage, c_in, planes, stride in config.stages():
        for b in range(config.layers[stage - 1]):
            p = f"layer{stage}.{b}"
            inp = c_in if b == 0 else planes
            keys += _bn(f"{p}.bn0", inp) + _conv(f"{p}.conv1", inp, inp, 3, bias=False) + _bn(f"{p}.bn1", inp)
            keys += [(f"{p}.prelu.weight", (1,))]
            keys += _conv(f"{p}.conv2", planes, inp, 3, bias=False) + _bn(f"{p}.bn2", planes)
            if b == 0 and (stride != 1 or inp != planes):
                keys += _conv(f"{p}.downsample.0", planes, inp, 1, bias=False) + _bn(f"{p}.downsample.1", planes)
            r = planes // 16
            keys += [
                (f"{p}.se.fc.0.weight", (r, planes)),
                (f"{p}.se.fc.0.bias", (r,)),
                (f"{p}.se.fc.1.weight", (1,)),
                (f"{p}.se.fc.2.weight", (planes, r)),
                (f"{p}.se.fc.2.bias", (planes,)),
            ]
    keys += _bn("bn2", w * 8)
    keys += [("fc.weight", (config.embedding_size, w * 8 * 7 * 7)), ("fc.bias", (config.embedding_size,))]
    return keys + _bn("bn3", config.embedding_size)


# -- detection --------------------------------------------------------------------------------------------


def looks_like_discriminator(keys: Sequence[str]) -> bool:
    """PatchGAN discriminator keys: ``down1..4``, ``conv1`` and ``conv2`` stages and no ID blocks."""
    names = set(keys)
    return {
        "conv1.0.weight",
        "conv2.0.weight",
        "down4.0.weight",
    } <= names and "BottleNeck.0.conv1.1.weight" not in names


def detect_generator(shapes: Mapping[str, Shape], family: Family = "official") -> GeneratorConfig:
    """Infer the generator architecture from a state_dict's names and shapes.

    Raises ``CheckpointError`` when the keys are not a SimSwap generator at all (a discriminator, an
    ArcFace file, an optimizer state)."""
    names = list(shapes)
    if looks_like_discriminator(names):
        raise CheckpointError(
            "this is a discriminator checkpoint (e.g. latest_net_D1.pth); inference needs the generator "
            "(latest_net_G.pth or 550000_net_G.pth)"
        )
    if "first_layer.1.weight" not in shapes or "BottleNeck.0.conv1.1.weight" not in shapes:
        hint = " (it looks like an ArcFace network: pass it as --arcface)" if "layer1.0.bn0.weight" in shapes else ""
        raise CheckpointError(
            f"not a SimSwap generator state_dict: no first_layer/BottleNeck keys{hint}; first keys: {names[:5]}"
        )
    has_down0, has_down4 = "down0.0.weight" in shapes, "down4.0.weight" in shapes
    if has_down0 and has_down4:
        raise CheckpointError("checkpoint has both down0 (512 beta) and down4 (deep training) keys")
    if has_down4 and family == "official":
        family = "train"  # only the training code's Gdeep generator has down4
    layout: Layout = "512" if has_down0 else "deep" if has_down4 else "224"
    if has_down0 and family == "train":
        raise CheckpointError("512 beta checkpoints (down0/up0 keys) are official-family generators, not train.py ones")
    ngf = shapes["down1.0.weight"][1] if "down1.0.weight" in shapes else shapes["first_layer.1.weight"][0]
    n_blocks = 1 + max(int(m.group(1)) for k in names if (m := re.match(r"BottleNeck\.(\d+)\.", k)))
    latent = shapes["BottleNeck.0.style1.linear.weight"][1]
    return GeneratorConfig(family=family, layout=layout, ngf=ngf, n_blocks=n_blocks, latent_size=latent)


def detect_arcface(shapes: Mapping[str, Shape]) -> ArcFaceConfig:
    """Infer depth and width of an IR-SE ArcFace state_dict."""
    if "conv1.weight" not in shapes or "layer1.0.bn0.weight" not in shapes:
        raise CheckpointError(f"not an IR-SE ArcFace state_dict; first keys: {list(shapes)[:5]}")
    layers = tuple(
        1 + max(int(m.group(1)) for k in shapes if (m := re.match(rf"layer{s}\.(\d+)\.", k))) for s in range(1, 5)
    )
    return ArcFaceConfig(layers=layers, width=shapes["conv1.weight"][0], embedding_size=shapes["fc.weight"][0])  # type: ignore[arg-type]


def compare_keys(expected: Sequence[tuple[str, Shape]], actual: Mapping[str, Shape], what: str) -> None:
    """Strict comparison of a state_dict against the expected key list; only a missing
    ``num_batches_tracked`` is tolerated. Raises ``CheckpointError`` naming every problem."""
    expected_map = dict(expected)
    missing = [k for k in expected_map if k not in actual and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in actual if k not in expected_map]
    misshaped = [
        f"{k}: checkpoint {tuple(actual[k])}, expected {expected_map[k]}"
        for k in expected_map
        if k in actual and tuple(actual[k]) != expected_map[k]
    ]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"{what} does not match the architecture:"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = items[:8] + ([f"... {len(items) - 8} more"] if len(items) > 8 else [])
            lines.append(f"  {len(items)} {label}: " + "; ".join(shown))
    raise CheckpointError("\n".join(lines))
