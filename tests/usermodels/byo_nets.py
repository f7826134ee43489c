"""Small user models for the bring-your-own-model tests: named by `_target_: byo_nets:<name>` with
`--code-dir tests/usermodels` (or copied into the current folder). Each bad one breaks one rule."""

from __future__ import annotations

import torch
from torch import nn


class Net(nn.Module):
    """conv(width) + BN + ReLU, adaptive pooling to 2x2, dropout, linear: any image size from 4x4."""

    def __init__(self, num_classes: int, width: int = 8, in_channels: int = 1,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.pool(self.features(x)), 1)))


def build(num_classes: int, width: int = 8, in_channels: int = 1, drop_rate: float = 0.0) -> nn.Module:
    return Net(num_classes, width, in_channels, drop_rate)


class _Tuple(Net):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        z = super().forward(x)
        return z, z


class _Dict(Net):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"logits": super().forward(x)}


class _Syncs(Net):
    """A data-dependent branch decided on the host (`.item()`): CUDA graphs cannot capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = super().forward(x)
        return z * 2 if z.mean().item() > 1e9 else z


def tuple_out(num_classes: int) -> nn.Module:
    return _Tuple(num_classes)


def dict_out(num_classes: int) -> nn.Module:
    return _Dict(num_classes)


def wrong_classes(num_classes: int) -> nn.Module:
    return Net(num_classes + 1)


def raises(num_classes: int, width: int = 8) -> nn.Module:
    raise ValueError(f"width must be even, got {width}")


def not_a_module(num_classes: int) -> object:
    return [Net(num_classes)]


def syncs(num_classes: int, in_channels: int = 1) -> nn.Module:
    return _Syncs(num_classes, in_channels=in_channels)
