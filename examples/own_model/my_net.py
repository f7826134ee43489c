"""A model of your own, for the example in README.md ("Your own model and data").

tfkd-search calls `small_cnn(num_classes=C, **the other keys of the model mapping)` where the space says
`model: {_target_: "my_net:small_cnn", ...}`; every trial imports this file (`--code-dir examples/own_model`).
"""

from __future__ import annotations

from torch import nn


def small_cnn(num_classes: int, width: int = 16, in_channels: int = 1, drop_rate: float = 0.0) -> nn.Module:
    """Two conv blocks and a linear head; `width` channels in the first block, twice that in the second."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(2 * width, num_classes))
