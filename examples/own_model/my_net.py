"""A model of your own, for the example in README.md ("Your own model and data").

tfkd-search calls `small_cnn(num_classes=C, **the other keys of the model mapping)` where the space says
`model: {_target_: "my_net:small_cnn", ...}`; every trial imports this file (`--code-dir examples/own_model`).
"""

from __future__ import annotations

from torch import nn


def small_cnn(num_classes: int, width: int = 16, in_channels: int = 1, drop_rate: float = 0.0) -> nn.Module:
    """Three conv blocks (`width`, 2x and 4x `width` channels, the first two halving the image) and a
    linear head on the globally pooled features."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(in_channels, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate),
        nn.Linear(4 * width, num_classes))
