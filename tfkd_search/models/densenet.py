"""DenseNet-BC (Huang et al. 2017), CIFAR variant of the Tf-KD paper's code
(yuanli2333/Teacher-free-Knowledge-Distillation, model/densenet.py): 3x3 stem conv to 2k channels, no
max-pool.

Dense layers are BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), their output concatenated after their input;
transitions are BN-conv1x1 (compression 0.5, no ReLU, as in the official file and the DenseNet paper's
"batch normalization layer and an 1x1 convolutional layer followed by a 2x2 average pooling layer")
followed by 2x2 average pooling; a final BN-ReLU, adaptive average pooling and a linear classifier.
PyTorch's default initialisation, as in the official file. densenet121: 7,048,548 parameters and 1.777
forward GFLOPs at 32x32 for 100 classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import MODELS


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(self.bn(x)), 2)


class DenseNet(nn.Module):
    def __init__(
        self,
        blocks: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        growth: int = 32,
        reduction: float = 0.5,
    ) -> None:
        super().__init__()
        channels = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        features: list[nn.Module] = []
        for i, n in enumerate(blocks):
            for _ in range(n):
                features.append(DenseLayer(channels, growth))
                channels += growth
            if i < len(blocks) - 1:
                out = int(math.floor(channels * reduction))
                features.append(Transition(channels, out))
                channels = out
        self.features = nn.Sequential(*features)
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.conv1(x))
        x = F.relu(self.bn(x))
        return self.linear(torch.flatten(self.pool(x), 1))


@MODELS.register("densenet121")
def densenet121(num_classes: int, in_channels: int = 3) -> nn.Module:
    return DenseNet([6, 12, 24, 16], num_classes, in_channels, growth=32)
