"""GoogLeNet / Inception v1 (Szegedy et al. 2015), CIFAR variant of the Tf-KD paper's code
(yuanli2333/Teacher-free-Knowledge-Distillation, model/googlenet.py, from weiaicunzai/pytorch-cifar100).

Stem: one 3x3 conv (in_channels -> 192, with bias, padding 1) + BN + ReLU. Inception blocks a3..b5 with
the standard channel plan and 3x3/stride-2 max-pools after b3 and e4 (so a3/b3 see the full 32x32 input).
Every branch conv has BN + ReLU; the "5x5" branch is two stacked 3x3 convs. Adaptive average pooling,
Dropout2d(0.4) and a linear 1024 -> num_classes classifier: 6,258,500 parameters and 3.044 forward GFLOPs
at 32x32 for 100 classes. PyTorch's default initialisation, as in the official file.

Official quirk, kept: the BN after the first 3x3 conv of the "5x5" branch is written
``nn.BatchNorm2d(n5x5, n5x5)``, whose second positional argument is ``eps``; so that BN normalises by
sqrt(var + n5x5) (eps 32 to 128 instead of 1e-5), which damps its output when the batch variance is small
against n5x5. It has no parameters or FLOPs of its own, but it changes the function the paper's GoogLeNet
computed and trained, so it is reproduced here (``OFFICIAL_5X5_BN_EPS``).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MODELS

# True: the first BN of the "5x5" branch has eps = n5x5, as the official nn.BatchNorm2d(n5x5, n5x5) does.
OFFICIAL_5X5_BN_EPS = True


def _conv_bn_relu(cin: int, cout: int, kernel: int, eps: float = 1e-5) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2),
        nn.BatchNorm2d(cout, eps=eps),
        nn.ReLU(inplace=True),
    ]


class Inception(nn.Module):
    def __init__(
        self,
        cin: int,
        n1x1: int,
        n3x3_reduce: int,
        n3x3: int,
        n5x5_reduce: int,
        n5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.b1 = nn.Sequential(*_conv_bn_relu(cin, n1x1, 1))
        self.b2 = nn.Sequential(*_conv_bn_relu(cin, n3x3_reduce, 1), *_conv_bn_relu(n3x3_reduce, n3x3, 3))
        self.b3 = nn.Sequential(
            *_conv_bn_relu(cin, n5x5_reduce, 1),
            *_conv_bn_relu(n5x5_reduce, n5x5, 3, eps=float(n5x5) if OFFICIAL_5X5_BN_EPS else 1e-5),
            *_conv_bn_relu(n5x5, n5x5, 3),
        )
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn_relu(cin, pool_proj, 1))
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.prelayer = nn.Sequential(*_conv_bn_relu(in_channels, 192, 3))
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.a3 = Inception(192, 64, 96, 128, 16, 32, 32)
        self.b3 = Inception(256, 128, 128, 192, 32, 96, 64)
        self.a4 = Inception(480, 192, 96, 208, 16, 48, 64)
        self.b4 = Inception(512, 160, 112, 224, 24, 64, 64)
        self.c4 = Inception(512, 128, 128, 256, 24, 64, 64)
        self.d4 = Inception(512, 112, 144, 288, 32, 64, 64)
        self.e4 = Inception(528, 256, 160, 320, 32, 128, 128)
        self.a5 = Inception(832, 256, 160, 320, 32, 128, 128)
        self.b5 = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout2d(p=0.4)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelayer(x)
        x = self.maxpool(self.b3(self.a3(x)))
        x = self.maxpool(self.e4(self.d4(self.c4(self.b4(self.a4(x))))))
        x = self.b5(self.a5(x))
        x = self.dropout(self.avgpool(x))
        return self.linear(torch.flatten(x, 1))


@MODELS.register("googlenet")
def googlenet(num_classes: int, in_channels: int = 3) -> nn.Module:
    return GoogLeNet(num_classes, in_channels)
