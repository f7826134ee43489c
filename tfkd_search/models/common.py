"""The model registry and small helpers shared by the architecture files.

Every registered entry is a builder ``fn(num_classes: int, in_channels: int) -> nn.Module`` whose module
maps a float batch ``(N, in_channels, H, W)`` to logits ``(N, num_classes)``. All models end in adaptive
average pooling, so they accept any input size their down-sampling allows (32x32 and 64x64 for the CIFAR
architectures, down to 8x8 for the tiny ones).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import MODEL_NAMES, Registry

ModelBuilder = Callable[[int, int], nn.Module]


class ModelRegistry(Registry[ModelBuilder]):
    """The zoo: only names listed in `registry.MODEL_NAMES` (which config validation reads)."""

    def register(self, name: str) -> Callable[[ModelBuilder], ModelBuilder]:
        if name not in MODEL_NAMES:
            raise ValueError(f"model {name!r} is not listed in tfkd_search.registry.MODEL_NAMES; add it "
                             f"there so configs can name it")
        return super().register(name)


MODELS: ModelRegistry = ModelRegistry("model")


def init_kaiming(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, ReLU) conv weights, zero conv biases, BatchNorm weight 1 / bias 0.

    Linear layers keep PyTorch's default initialisation. Returns ``model`` for chaining. Used by the
    ResNeXt (whose official Tf-KD definition initialises this way) and by ``tiny_resnet``; the other paper
    models keep PyTorch's default initialisation, as the official definitions do.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
