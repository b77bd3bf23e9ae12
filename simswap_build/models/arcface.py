"""PyTorch reference ArcFace (IR-SE ResNet) with the layout of SimSwap's ``arcface_checkpoint.tar``.

Input is exactly 112x112 (the head flattens a 7x7 map); the output is a 512-d embedding that is *not*
L2-normalised. ``ArcFaceConfig(layers=IR_SE_101)`` is the released network, ``IR_SE_50`` the lighter depth.
"""

from __future__ import annotations

import torch
from torch import nn

from simswap_build.convert.architectures import ArcFaceConfig
from simswap_trt.constants import ARCFACE_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD


class SEBlock(nn.Module):
    """Squeeze-and-excitation with reduction 16 and a PReLU between the two linears."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.PReLU(),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)


class IRBlock(nn.Module):
    """Improved-residual block; the single PReLU module is applied twice, as upstream."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, inplanes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.se = SEBlock(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.se(self.bn2(self.conv2(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + residual)


class ResNet(nn.Module):
    """IR-SE ResNet: 3x3 stem without padding, 2x2 max-pool, four stages, BN-dropout-FC-BN head."""

    def __init__(self, config: ArcFaceConfig = ArcFaceConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = nn.Conv2d(3, w, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        for stage, c_in, planes, stride in config.stages():
            downsample = None
            if stride != 1 or c_in != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(c_in, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )
            blocks = [IRBlock(c_in, planes, stride, downsample)]
            blocks += [IRBlock(planes, planes) for _ in range(1, config.layers[stage - 1])]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.bn2 = nn.BatchNorm2d(w * 8)
        self.dropout = nn.Dropout()
        self.fc = nn.Linear(w * 8 * 7 * 7, config.embedding_size)
        self.bn3 = nn.BatchNorm1d(config.embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x))
        return self.bn3(self.fc(x.flatten(1)))


def identity_latent(model: ResNet, crop_rgb01: torch.Tensor) -> torch.Tensor:
    """The official source path: ImageNet-normalise the aligned crop, nearest-resize to 112 (index
    ``floor(i * S / 112)``), run ArcFace, L2-normalise (``F.normalize`` eps 1e-12)."""
    mean = torch.tensor(IMAGENET_MEAN, device=crop_rgb01.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=crop_rgb01.device).view(1, 3, 1, 1)
    x = nn.functional.interpolate((crop_rgb01 - mean) / std, size=(ARCFACE_INPUT_SIZE, ARCFACE_INPUT_SIZE))
    return nn.functional.normalize(model(x), p=2, dim=1)
