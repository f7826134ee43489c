"""Model zoo: CIFAR-style architectures plus tiny models for tests and CPU runs.

``build_model(name, num_classes, in_channels)`` returns an ``nn.Module`` mapping a float batch
``(N, in_channels, H, W)`` to logits ``(N, num_classes)``. Every model ends in adaptive average pooling, so
the CIFAR architectures run on 32x32 and 64x64 inputs and the tiny ones also on 8x8 and 16x16 inputs.
No model moves itself to a device; the caller does.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from . import densenet, googlenet, mobilenetv2, resnet, resnext, shufflenetv2, tiny  # noqa: F401 (registers)
from .common import MODELS, ModelBuilder

__all__ = ["MODELS", "ModelBuilder", "build_model", "count_parameters", "model_names"]


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the registered model ``name``; unknown names raise ConfigError with a hint and the list."""
    builder = MODELS.get(name)
    _check_int(num_classes, "num_classes", 2)
    _check_int(in_channels, "in_channels", 1)
    return builder(num_classes, in_channels)


def model_names() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all of them, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
