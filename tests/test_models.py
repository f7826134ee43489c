"""Model zoo: registry behaviour, parameter counts, output shapes, channels_last and gradients (CPU)."""

from __future__ import annotations

import pytest
import torch

from tfkd_search.errors import ConfigError
from tfkd_search.models import MODELS, build_model, count_parameters, model_names

# Parameter counts for num_classes=100, in_channels=3 (the CIFAR-100 reference implementations).
EXPECTED_PARAMS = {
    "resnet18": 11_220_132,
    "resnet50": 23_705_252,
    "mobilenetv2": 2_369_380,
    "shufflenetv2": 1_360_896,
    "googlenet": 6_258_500,
    "densenet121": 7_048_548,
    "resnext29_8x64d": 34_518_948,
}
TINY = ["tiny_cnn", "tiny_mlp", "tiny_resnet"]
ALL = sorted(EXPECTED_PARAMS) + TINY


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_registry_lists_every_model() -> None:
    assert model_names() == sorted(ALL)
    assert all(name in MODELS for name in ALL)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_count(name: str) -> None:
    n = count_parameters(build_model(name, num_classes=100))
    expected = EXPECTED_PARAMS[name]
    assert abs(n - expected) <= 0.02 * expected, f"{name}: {n:,} parameters, expected ~{expected:,}"


def test_count_parameters_trainable_only() -> None:
    model = build_model("tiny_cnn", 10, in_channels=1)
    total = count_parameters(model)
    model.fc.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - model.fc.weight.numel()


@pytest.mark.parametrize("name", ALL)
def test_output_shape_32_and_64(name: str) -> None:
    model = build_model(name, num_classes=10).eval()
    with torch.no_grad():
        for size in (32, 64):
            out = model(torch.randn(2, 3, size, size))
            assert out.shape == (2, 10), (name, size)
            assert out.dtype == torch.float32
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_in_channels_reaches_the_stem(name: str) -> None:
    model = build_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [8, 16])
def test_tiny_models_on_small_one_channel_inputs(name: str, size: int) -> None:
    model = build_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", ALL)
def test_channels_last(name: str) -> None:
    model = build_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_backward_gives_finite_grads(name: str) -> None:
    model = build_model(name, num_classes=10, in_channels=1).train()
    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unknown_name_suggests_and_lists() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("resnet19", num_classes=10)
    message = str(info.value)
    assert "Did you mean 'resnet18'" in message
    for name in ALL:
        assert name in message


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.0, True])
def test_bad_num_classes_rejected(num_classes: object) -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("tiny_cnn", num_classes=num_classes)  # type: ignore[arg-type]


@pytest.mark.parametrize("in_channels", [0, -1, 3.0])
def test_bad_in_channels_rejected(in_channels: object) -> None:
    with pytest.raises(ConfigError, match="in_channels"):
        build_model("tiny_cnn", num_classes=10, in_channels=in_channels)  # type: ignore[arg-type]


def test_models_stay_on_cpu() -> None:
    for name in TINY:
        model = build_model(name, num_classes=10)
        assert {p.device.type for p in model.parameters()} == {"cpu"}
