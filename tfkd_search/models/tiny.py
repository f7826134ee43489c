"""Tiny models for tests and CPU runs; they accept inputs as small as 8x8 (e.g. sklearn's digits).

``tiny_resnet`` lives in ``resnet.py`` (it shares the ResNet code path).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MODELS


class TinyCNN(nn.Module):
    """conv3x3(16) + BN + ReLU, conv3x3(32, stride 2) + BN + ReLU, adaptive average pool to a
    ``grid`` x ``grid`` map, linear.

    The 2x2 grid keeps a little spatial layout, which digits need: on sklearn's 8x8 digits (pixels / 16,
    SGD lr 0.1 momentum 0.9, batch 128) it passes 0.9 validation accuracy within 2-3 epochs, where a
    global (1x1) pool needs 4-8 epochs and wobbles around 0.9."""

    def __init__(self, num_classes: int, in_channels: int = 3, grid: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc = nn.Linear(32 * grid * grid, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class TinyMLP(nn.Module):
    """Adaptive average pool to a 4x4 grid, flatten, one hidden layer of 64 with ReLU, linear."""

    def __init__(self, num_classes: int, in_channels: int = 3, grid: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.mlp = nn.Sequential(
            nn.Linear(in_channels * grid * grid, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.flatten(self.pool(x), 1))


@MODELS.register("tiny_cnn")
def tiny_cnn(num_classes: int, in_channels: int = 3) -> nn.Module:
    return TinyCNN(num_classes, in_channels)


@MODELS.register("tiny_mlp")
def tiny_mlp(num_classes: int, in_channels: int = 3) -> nn.Module:
    return TinyMLP(num_classes, in_channels)
