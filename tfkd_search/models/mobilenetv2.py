"""MobileNetV2 (Sandler et al. 2018), the CIFAR-100 variant popularised by weiaicunzai/pytorch-cifar100.

Layout: 1x1 stem conv (in_channels -> 32) + BN + ReLU6, inverted residual stages (t, c, n, s), a 1x1 conv
320 -> 1280 + BN + ReLU6, adaptive average pooling and a 1x1 conv classifier with bias. As in that
variant, every conv carries a bias (which is what gives its parameter count).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MODELS, init_kaiming

# (expansion t, output channels c, repeats n, stride of the first repeat s)
_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class LinearBottleneck(nn.Module):
    """1x1 expand + BN + ReLU6, 3x3 depthwise + BN + ReLU6, 1x1 linear projection + BN; identity residual
    when the stride is 1 and the channel count is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = in_channels * t
        self.use_residual = stride == 1 and in_channels == out_channels
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        return out + x if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        # The reference implementation writes Conv2d(3, 32, 1, padding=1): padding a 1x1 conv only adds a
        # one-pixel frame of outputs that never saw the image (34x34 maps from a 32x32 input). Padding 0
        # keeps the spatial size and the parameter count is the same.
        self.pre = nn.Sequential(
            nn.Conv2d(in_channels, 32, 1, padding=0),
            nn.BatchNorm2d(32),
            nn.ReLU6(inplace=True),
        )
        layers = []
        channels = 32
        for t, c, n, s in _STAGES:
            for i in range(n):
                layers.append(LinearBottleneck(channels, c, s if i == 0 else 1, t))
                channels = c
        self.stages = nn.Sequential(*layers)
        self.conv1 = nn.Sequential(
            nn.Conv2d(channels, 1280, 1),
            nn.BatchNorm2d(1280),
            nn.ReLU6(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(1280, num_classes, 1)
        init_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        x = self.stages(x)
        x = self.conv1(x)
        x = self.classifier(self.pool(x))
        return torch.flatten(x, 1)


@MODELS.register("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int = 3) -> nn.Module:
    return MobileNetV2(num_classes, in_channels)
