"""Model zoo: CIFAR-style architectures plus tiny models for tests and CPU runs.

``build_model(model, num_classes, in_channels)`` returns an ``nn.Module`` mapping a float batch
``(N, in_channels, H, W)`` to logits ``(N, num_classes)``. `model` is a zoo name or any other model
reference of a config (`tfkd_search.modelref`: torchvision/timm shorthands, `_target_` mappings; built
by `tfkd_search.models.user`). Every model ends in adaptive average pooling, so
the CIFAR architectures run on 32x32 and 64x64 inputs and the tiny ones also on 8x8 and 16x16 inputs.
No model moves itself to a device; the caller does.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from ..modelref import parse_model_ref
from . import densenet, googlenet, mobilenetv2, resnet, resnext, shufflenetv2, tiny  # noqa: F401 (registers)
from .common import MODELS, ModelBuilder

__all__ = ["MODELS", "ModelBuilder", "build_model", "count_parameters", "model_names"]


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def build_model(model: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build a zoo model by name, or the model another reference names; unknown zoo names raise
    ConfigError with a hint and the list."""
    _check_int(num_classes, "num_classes", 2)
    _check_int(in_channels, "in_channels", 1)
    if isinstance(model, str) and model in MODELS:  # the zoo: no parsing on its path
        return MODELS.get(model)(num_classes, in_channels)
    try:
        ref = parse_model_ref(model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if ref.is_zoo:
        return MODELS.get(ref.name)(num_classes, in_channels)
    from .user import build_reference

    return build_reference(ref, num_classes, in_channels)


def model_names() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all of them, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
