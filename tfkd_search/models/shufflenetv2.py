"""ShuffleNetV2 1x (Ma et al. 2018), CIFAR variant of the Tf-KD paper's code
(yuanli2333/Teacher-free-Knowledge-Distillation, model/shufflenetv2.py, from weiaicunzai/pytorch-cifar100).

3x3 stem conv (in_channels -> 24) + BN (no ReLU, no max-pool); three stages of shuffle units with 116, 232
and 464 output channels, each a stride-2 down-sampling unit followed by 3, 7 and 3 stride-1 units; a
1x1 conv 464 -> 1024 + BN + ReLU, adaptive average pooling and a linear classifier. Convs carry biases
and keep PyTorch's default initialisation, as in the official file: 1,360,896 parameters and 0.087 forward
GFLOPs at 32x32 for 100 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MODELS


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.reshape(n, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1 (same channels): split the channels in half, transform one half, concatenate, shuffle.
    Otherwise both branches see the whole input and each produces half of ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError("out_channels must be even")
        self.split = stride == 1 and in_channels == out_channels
        half = out_channels // 2
        if self.split:
            c = in_channels // 2
            self.shortcut: nn.Module = nn.Identity()
            self.residual = nn.Sequential(
                nn.Conv2d(c, c, 1),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, stride=1, padding=1, groups=c),
                nn.BatchNorm2d(c),
                nn.Conv2d(c, c, 1),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            )
        else:
            c = in_channels
            self.residual = nn.Sequential(
                nn.Conv2d(c, c, 1),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c),
                nn.BatchNorm2d(c),
                nn.Conv2d(c, half, 1),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
            self.shortcut = nn.Sequential(
                nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c),
                nn.BatchNorm2d(c),
                nn.Conv2d(c, half, 1),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            shortcut, residual = x.chunk(2, dim=1)
        else:
            shortcut = residual = x
        out = torch.cat([self.shortcut(shortcut), self.residual(residual)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        stage_channels: tuple[int, int, int] = (116, 232, 464),
        repeats: tuple[int, int, int] = (3, 7, 3),
        last_channels: int = 1024,
    ) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(in_channels, 24, 3, padding=1), nn.BatchNorm2d(24))
        stages = []
        channels = 24
        for out, n in zip(stage_channels, repeats):
            units = [ShuffleUnit(channels, out, 2)]
            units += [ShuffleUnit(out, out, 1) for _ in range(n)]
            stages.append(nn.Sequential(*units))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.conv5 = nn.Sequential(
            nn.Conv2d(channels, last_channels, 1),
            nn.BatchNorm2d(last_channels),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        x = self.stages(x)
        x = self.conv5(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


@MODELS.register("shufflenetv2")
def shufflenetv2(num_classes: int, in_channels: int = 3) -> nn.Module:
    return ShuffleNetV2(num_classes, in_channels)
