"""The networks a run trains or uses: a new or fine-tuned official-format generator, the frozen ArcFace
from a converted official checkpoint, and float32 islands for mixed precision."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from safetensors.numpy import load_file
from torch import nn

from simswap_build.convert import checkpoints
from simswap_build.convert.architectures import GeneratorConfig, arcface_keys, compare_keys, detect_arcface
from simswap_build.models import Generator, ResNet
from simswap_build.models.generator import ApplyStyle, InstanceNorm
from simswap_trt.bundle import Bundle
from simswap_trt.errors import CheckpointError
from simswap_trt.schema import sha256_of

log = logging.getLogger(__name__)


def _load_state(model: nn.Module, weights: dict, what: str) -> None:
    """Strict load of numpy weights already validated by ``simswap_build.convert.checkpoints`` (a missing
    ``num_batches_tracked`` is the only tolerated gap)."""
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"{what}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def new_generator(arch: str = "224", ngf: int = 64, n_blocks: int = 9, seed: int = 0) -> Generator:
    """A freshly initialised official-family generator (``"224"`` or ``"512"``), PyTorch's default init."""
    if arch not in ("224", "512"):
        raise ValueError(f"training makes official 224 or 512 generators, not {arch!r}")
    torch.manual_seed(seed)
    return Generator(GeneratorConfig.from_name(arch, ngf=ngf, n_blocks=n_blocks))


def load_generator(path: str | Path) -> Generator:
    """A generator to fine-tune, from an official ``latest_net_G.pth`` / ``550000_net_G.pth`` (or one this
    trainer wrote); loaded as strictly as the converter loads it."""
    loaded = checkpoints.load_generator(path)
    if loaded.config.family != "official":
        raise CheckpointError(
            f"{path} is a training-code (--Gdeep) generator; fine-tuning takes official-format 224 or 512 generators"
        )
    generator = Generator(loaded.config)
    _load_state(generator, loaded.weights, str(path))
    return generator


def load_arcface(path: str | Path) -> ResNet:
    """The frozen identity network (eval mode, no gradients to its weights) from ``arcface_checkpoint.tar``
    (either official format) or from a converted bundle folder that kept its weights."""
    path = Path(path)
    if path.is_dir():
        config, weights = _bundle_arcface(path)
    else:
        loaded = checkpoints.load_arcface(path)
        config, weights = loaded.config, loaded.weights
    arcface = ResNet(config)
    _load_state(arcface, weights, str(path))
    return freeze(arcface)


def _bundle_arcface(folder: Path):
    """ArcFace config and weights from a bundle's ``weights/arcface.safetensors`` (hash checked)."""
    bundle = Bundle.load(folder)
    kept = bundle.models["arcface"].source.get("weights")
    if not kept:
        raise CheckpointError(f"{folder} was converted with --no-weights: pass arcface_checkpoint.tar instead")
    file = bundle.root / kept["file"]
    if sha256_of(file) != kept["sha256"]:
        raise CheckpointError(f"{file} does not match the sha256 in {folder}'s manifest")
    # num_batches_tracked (unused by inference) may come back as shape (1,); the strict check tolerates its absence
    weights = {k: v for k, v in load_file(file).items() if not k.endswith("num_batches_tracked")}
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    config = detect_arcface(shapes)
    compare_keys(arcface_keys(config), shapes, f"{file} (as ArcFace {config.name})")
    return config, weights


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def keep_float32(model: nn.Module) -> nn.Module:
    """Run every normalisation and identity-style module in float32 under autocast (half-precision
    instance norms make SimSwap training diverge to NaN). Changes no weights or keys."""

    def float32(forward):
        @functools.wraps(forward)
        def wrapped(*args):
            device = next(a for a in args if torch.is_tensor(a)).device.type
            with torch.autocast(device, enabled=False):
                return forward(*(a.float() if torch.is_tensor(a) else a for a in args))

        return wrapped

    for module in model.modules():
        if isinstance(module, (InstanceNorm, ApplyStyle, nn.modules.batchnorm._BatchNorm)):
            module.forward = float32(module.forward)
    return model
