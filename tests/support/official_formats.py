"""Random-weight checkpoints written in the official SimSwap on-disk formats.

The ArcFace writers pickle whole modules whose classes live under ``models.arcface_models`` (current
file) or ``models`` (pre-2023 training dict), exactly as upstream files do. The fake ``models`` package
exists only while writing, so loading must succeed without it.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import types
from pathlib import Path

import torch
from torch import nn

from simswap_build.models import Generator, GeneratorConfig, ResNet
from simswap_build.models.arcface import IRBlock, SEBlock


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics so folding errors would show; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_((torch.rand(c, generator=g) - 0.5) * 0.4)
        if isinstance(m, nn.PReLU):
            m.weight.data.fill_(0.1 + 0.4 * torch.rand(1, generator=g).item())
    return model.eval()


def make_generator(config: GeneratorConfig, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return randomize_batchnorm(Generator(config), seed)


def make_arcface(config, seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    return randomize_batchnorm(ResNet(config), seed)


def save_generator(model: Generator, path: Path, legacy: bool = False) -> Path:
    """``torch.save(netG.state_dict())`` as upstream training does; ``legacy`` = pre-1.6 format."""
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    return path


@contextlib.contextmanager
def _upstream_classes(module_name: str):
    """Temporarily expose ResNet/IRBlock/SEBlock (and ArcMarginModel) as ``module_name.*``."""
    created = {}
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            created[name] = sys.modules[name] = types.ModuleType(name)
    target = sys.modules[module_name]

    class ArcMarginModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(10, 512))

    originals = {}
    for cls in (ResNet, IRBlock, SEBlock, ArcMarginModel):
        originals[cls] = (cls.__module__, cls.__qualname__)
        cls.__module__ = module_name
        cls.__qualname__ = cls.__name__
        setattr(target, cls.__name__, cls)
    try:
        yield ArcMarginModel
    finally:
        for cls, (mod, qual) in originals.items():
            cls.__module__, cls.__qualname__ = mod, qual
        for name in created:
            del sys.modules[name]


def _as_upstream(model: ResNet) -> ResNet:
    """A copy without the attributes upstream's class does not have."""
    model = copy.deepcopy(model)
    del model.config
    return model


def save_arcface_pickled_module(model: ResNet, path: Path) -> Path:
    """The current ``arcface_checkpoint.tar``: the whole ResNet pickled, torch zip format."""
    with _upstream_classes("models.arcface_models"):
        torch.save(_as_upstream(model), path)
    return path


def save_arcface_training_dict(model: ResNet, path: Path) -> Path:
    """The pre-2023 file: legacy-format training dict with a DataParallel, margin head and SGD."""
    with _upstream_classes("models") as ArcMarginModel:
        model = _as_upstream(model)
        wrapped = nn.DataParallel(model)
        metric_fc = ArcMarginModel()
        optimizer = torch.optim.SGD(list(model.parameters()) + list(metric_fc.parameters()), lr=0.1, momentum=0.9)
        checkpoint = {
            "epoch": 3,
            "epochs_since_improvement": 0,
            "acc": 0.99,
            "model": wrapped,
            "metric_fc": metric_fc,
            "optimizer": optimizer,
        }
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return path
