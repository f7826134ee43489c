"""Model zoo: the paper's architectures (parameters and FLOPs of the official definitions), registry
behaviour, output shapes, initialisation, channels_last and gradients (CPU).

Shape and FLOP checks of the paper's models run on the meta device (no memory, no compute); each model
computes only two real batch-1 16x16 forwards (contiguous and channels_last), so the file stays fast on a
shared 2-core CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tfkd_search.errors import ConfigError
from tfkd_search.models import MODELS, build_model, count_parameters, model_names

# (parameters, forward FLOPs) for one 3x32x32 image and num_classes=100, of the official Tf-KD definitions:
# yuanli2333/Teacher-free-Knowledge-Distillation at commit 880a74ec5ac1d6641a14a3393df23a16f45b460a,
#   model/resnet.py         ResNet18(num_classes=100), ResNet50(num_classes=100)
#   model/mobilenetv2.py    MobileNetV2(class_num=100)
#   model/shufflenetv2.py   shufflenetv2(class_num=100)
#   model/googlenet.py      googlenet(num_class=100)
#   model/densenet.py       densenet121(num_class=100)
#   model/resnext.py        CifarResNeXt(cardinality=8, depth=29, num_classes=100) (as its main.py builds it)
# Counted on a scratch reconstruction of those files (outside this repository), in eval mode with batch 1,
# as sum(p.numel() for p in model.parameters()) and torch.utils.flop_counter.FlopCounterMode(display=False)
# .get_total_flops() (torch 2.14; it counts 2 FLOPs per multiply-add of convs and matmuls, nothing else).
# The same reconstruction, given our models' weights, gives the same logits (max abs diff <= 2e-4).
OFFICIAL = {
    "resnet18": (11_220_132, 1_110_937_600),
    "resnet50": (23_705_252, 2_596_028_416),
    "mobilenetv2": (2_369_380, 129_894_528),
    "shufflenetv2": (1_360_896, 87_351_040),
    "googlenet": (6_258_500, 3_043_696_640),
    "densenet121": (7_048_548, 1_776_885_760),
    "resnext29_8x64d": (34_518_948, 10_774_716_416),
}
ZOO = sorted(OFFICIAL)
TINY = ["tiny_cnn", "tiny_mlp", "tiny_resnet"]
ALL = ZOO + TINY
# Zoo models whose official definition keeps PyTorch's default initialisation (all but the ResNeXt).
DEFAULT_INIT = [n for n in ZOO if n != "resnext29_8x64d"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _meta_model(name: str, num_classes: int = 100, in_channels: int = 3) -> nn.Module:
    """The model with meta tensors: shapes and FLOPs without memory or compute."""
    with torch.device("meta"):
        return build_model(name, num_classes=num_classes, in_channels=in_channels).eval()


def _meta_input(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def test_registry_lists_every_model() -> None:
    assert model_names() == sorted(ALL)
    assert all(name in MODELS for name in ALL)


@pytest.mark.parametrize("name", ZOO)
def test_parameters_and_flops_equal_the_official_definitions(name: str) -> None:
    model = _meta_model(name)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(_meta_input(1, 3, 32, 32))
    assert out.shape == (1, 100)
    got = (count_parameters(model), counter.get_total_flops())
    assert got == OFFICIAL[name], f"{name}: (params, FLOPs) {got}, official {OFFICIAL[name]}"


def test_count_parameters_trainable_only() -> None:
    model = build_model("tiny_cnn", 10, in_channels=1)
    total = count_parameters(model)
    model.fc.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - model.fc.weight.numel()


@pytest.mark.parametrize("name", ALL)
def test_output_shape_32_and_64(name: str) -> None:
    model = _meta_model(name, num_classes=10) if name in OFFICIAL else build_model(name, 10).eval()
    device = "meta" if name in OFFICIAL else "cpu"
    with torch.no_grad():
        for size in (32, 64):
            out = model(torch.zeros(2, 3, size, size, device=device))
            assert out.shape == (2, 10), (name, size)
            assert out.dtype == torch.float32


@pytest.mark.parametrize("name", ALL)
def test_in_channels_reaches_the_stem(name: str) -> None:
    if name in OFFICIAL:
        model, device = _meta_model(name, num_classes=10, in_channels=1), "meta"
    else:
        model, device = build_model(name, num_classes=10, in_channels=1).eval(), "cpu"
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32, device=device)).shape == (1, 10)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, 32, 32, device=device))


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [8, 16])
def test_tiny_models_on_small_one_channel_inputs(name: str, size: int) -> None:
    model = build_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def _check_default_init(model: nn.Module) -> None:
    """PyTorch's default Conv2d/Linear init: U(-b, b), b = 1/sqrt(fan_in) (kaiming_uniform, a=sqrt(5))."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1.0 / math.sqrt(m.weight[0].numel())
            assert m.weight.abs().max() <= bound * (1 + 1e-6), m
            # not just inside the bound: spread over it (the std of U(-b, b) is b / sqrt(3))
            if m.weight.numel() >= 1000:
                assert m.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), m
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()


def _check_resnext_init(model: nn.Module) -> None:
    """Official model/resnext.py: kaiming_normal fan_out convs, fan_in classifier, zero classifier bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 1000:
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            assert m.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1), m
    fc = model.classifier
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2.0 / fc.in_features), rel=0.1)
    assert not fc.bias.any()


@pytest.mark.parametrize("name", ALL)
def test_initialisation_and_channels_last_forward(name: str) -> None:
    model = build_model(name, num_classes=10).eval()
    if name in DEFAULT_INIT:
        _check_default_init(model)
    elif name == "resnext29_8x64d":
        _check_resnext_init(model)
    x = torch.randn(1, 3, 16, 16)  # a quarter of the 32x32 compute; every model still ends on >= 1x1 maps
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (1, 10) and torch.isfinite(ref).all()
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)


def test_mobilenetv2_keeps_the_official_resolution() -> None:
    """Official: padded 1x1 stem (32 -> 34) and three stride-2 stages, so the last map is 5x5, not 2x2."""
    model = _meta_model("mobilenetv2")
    sizes = []
    model.conv1.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:])))
    model(_meta_input(1, 3, 32, 32))
    assert sizes == [(5, 5)]


def test_googlenet_keeps_the_official_batchnorm_eps_quirk() -> None:
    """Official model/googlenet.py writes nn.BatchNorm2d(n5x5, n5x5): eps = n5x5 after the first 3x3 of b3."""
    model = _meta_model("googlenet")
    blocks = [m for m in model.modules() if type(m).__name__ == "Inception"]
    assert len(blocks) == 9
    for block in blocks:
        bns = [m for m in block.b3 if isinstance(m, nn.BatchNorm2d)]
        assert [bn.eps for bn in bns] == [1e-5, float(bns[1].num_features), 1e-5]
    others = [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.eps >= 1]
    assert len(others) == 9


def test_densenet_transition_is_bn_conv_pool() -> None:
    """Official model/densenet.py: the transition has no ReLU, so a negative BN output reaches the conv."""
    model = build_model("densenet121", num_classes=10).eval()
    trans = [m for m in model.modules() if type(m).__name__ == "Transition"]
    assert len(trans) == 3
    t = trans[0]
    with torch.no_grad():
        t.bn.bias.fill_(-5.0)  # BN output about -5 everywhere: a ReLU would make the conv output 0
        out = t(torch.randn(1, t.bn.num_features, 4, 4))
    assert out.abs().amax() > 1e-3


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


def test_the_torch_free_name_list_is_the_zoo():
    """Config validation reads `registry.MODEL_NAMES` (no torch import); it must be the zoo exactly."""
    from tfkd_search.registry import MODEL_NAMES

    assert sorted(MODEL_NAMES) == model_names()
    with pytest.raises(ValueError, match="MODEL_NAMES"):
        MODELS.register("not_listed")
