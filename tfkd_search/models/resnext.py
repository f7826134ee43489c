"""ResNeXt (Xie et al. 2017), CIFAR variant of the Tf-KD paper's code
(yuanli2333/Teacher-free-Knowledge-Distillation, model/resnext.py, after prlz77's CifarResNeXt; the paper's
ResNeXt29 is ``CifarResNeXt(cardinality=8, depth=29, num_classes=...)`` with widen_factor 4).

3x3 stem conv (in_channels -> 64) + BN + ReLU; three stages of (depth - 2) // 9 bottlenecks with output
widths 64 * widen_factor * (1, 2, 4); the first bottleneck of stages two and three has stride 2. Each
bottleneck: 1x1 reduce to D = cardinality * int(base_width * out / (widen_factor * 64)) channels, grouped
3x3 conv, 1x1 expand, all without bias and followed by BN; a 1x1 conv + BN shortcut where the channel
count changes. Adaptive average pooling (the official ``F.avg_pool2d(x, 8, 1)`` on the 8x8 final map of a
32x32 input) and a linear classifier. D equals the official ``cardinality * out // widen_factor`` for
base_width 64. resnext29_8x64d: 34,518,948 parameters and 10.775 forward GFLOPs at 32x32 for 100 classes.

Initialisation as in the official file (the only zoo model there that does not keep PyTorch's default):
Kaiming-normal fan_out conv weights, BN weight 1 / bias 0, Kaiming-normal (fan_in) classifier weight and
zero classifier bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MODELS, init_kaiming


class ResNeXtBottleneck(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        cardinality: int,
        base_width: int,
        widen_factor: int,
    ) -> None:
        super().__init__()
        width_ratio = out_channels / (widen_factor * 64.0)
        d = cardinality * int(base_width * width_ratio)
        self.conv_reduce = nn.Conv2d(in_channels, d, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(d)
        self.conv_conv = nn.Conv2d(d, d, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.conv_expand = nn.Conv2d(d, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        if in_channels != out_channels or stride != 1:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + self.shortcut(x))


class CifarResNeXt(nn.Module):
    def __init__(
        self,
        cardinality: int,
        depth: int,
        num_classes: int,
        base_width: int,
        widen_factor: int = 4,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError("ResNeXt depth must be 9n + 2")
        block_depth = (depth - 2) // 9
        widths = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        self.conv_1_3x3 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(widths[0])
        stages = []
        for i in range(3):
            blocks = []
            for j in range(block_depth):
                cin = widths[i] if j == 0 else widths[i + 1]
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(
                    ResNeXtBottleneck(cin, widths[i + 1], stride, cardinality, base_width, widen_factor)
                )
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[3], num_classes)
        init_kaiming(self)
        nn.init.kaiming_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stages(x)
        return self.classifier(torch.flatten(self.pool(x), 1))


@MODELS.register("resnext29_8x64d")
def resnext29_8x64d(num_classes: int, in_channels: int = 3) -> nn.Module:
    return CifarResNeXt(8, 29, num_classes, base_width=64, widen_factor=4, in_channels=in_channels)
