"""MobileNetV2 (Sandler et al. 2018), the CIFAR variant of the Tf-KD paper's code
(yuanli2333/Teacher-free-Knowledge-Distillation, model/mobilenetv2.py, from weiaicunzai/pytorch-cifar100).

Layout: 1x1 stem conv (in_channels -> 32, padding 1) + BN + ReLU6, inverted residual stages (t, c, n, s),
a 1x1 conv 320 -> 1280 + BN + ReLU6, adaptive average pooling and a 1x1 conv classifier with bias. As in
the official file, every conv carries a bias, and only three stages down-sample: a 32x32 input gives 34x34
after the padded stem and ends on a 5x5 map (2,369,380 parameters and 0.130 forward GFLOPs for 100
classes, counted with torch.utils.flop_counter).

Kept from the official file on purpose: the 1x1 stem conv with padding 1 (its one-pixel output frame sees
only zero padding, i.e. it is bias + BN + ReLU6 of nothing; it still sets every later map size and so the
FLOPs), stride 1 in the 96- and 160-channel stages, PyTorch's default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MODELS

# (expansion t, output channels c, repeats n, stride of the first repeat s), as in the official file:
# stages 1-7 are LinearBottleNeck(32, 16, 1, 1) and _make_stage(2/3/4/3/3 repeats, stride 2/2/2/1/1),
# then LinearBottleNeck(160, 320, 1, 6).
_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 1),
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
        # Official: Conv2d(3, 32, 1, padding=1), so 32x32 -> 34x34 (see the module docstring).
        self.pre = nn.Sequential(
            nn.Conv2d(in_channels, 32, 1, padding=1),
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        x = self.stages(x)
        x = self.conv1(x)
        x = self.classifier(self.pool(x))
        return torch.flatten(x, 1)


@MODELS.register("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int = 3) -> nn.Module:
    return MobileNetV2(num_classes, in_channels)
