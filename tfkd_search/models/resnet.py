"""CIFAR-style ResNets (He et al. 2016): a 3x3 stem conv without max-pool, four stages, adaptive pooling.

``resnet18`` (BasicBlock [2, 2, 2, 2]) and ``resnet50`` (Bottleneck [3, 4, 6, 3]) are the Tf-KD paper's
ResNet18/ResNet50 (yuanli2333/Teacher-free-Knowledge-Distillation, model/resnet.py, from
kuangliu/pytorch-cifar), with PyTorch's default initialisation as there. The official forward ends in
``F.avg_pool2d(out, 4)``, which equals the adaptive pooling here on 32x32 inputs (4x4 final maps); adaptive
pooling also runs 64x64 inputs. ``tiny_resnet`` (BasicBlock [1, 1], widths 16 and 32; not a paper model)
shares the implementation and keeps Kaiming initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import MODELS, init_kaiming


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv3x3(in_channels -> widths[0]) + BN + ReLU, then one stage per entry of ``num_blocks``;
    the first stage keeps the resolution, every later one halves it. PyTorch's default initialisation
    unless ``kaiming_init`` (see ``common.init_kaiming``)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        kaiming_init: bool = False,
    ) -> None:
        super().__init__()
        if len(widths) != len(num_blocks):
            raise ValueError("widths and num_blocks must have the same length")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        stages = []
        for i, (planes, n) in enumerate(zip(widths, num_blocks)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(block(in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        if kaiming_init:
            init_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


@MODELS.register("resnet18")
def resnet18(num_classes: int, in_channels: int = 3) -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


@MODELS.register("resnet50")
def resnet50(num_classes: int, in_channels: int = 3) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels)


@MODELS.register("tiny_resnet")
def tiny_resnet(num_classes: int, in_channels: int = 3) -> nn.Module:
    return ResNet(BasicBlock, [1, 1], num_classes, in_channels, widths=(16, 32), kaiming_init=True)
