"""The split invariant head(body(x)) == model(x) and the linear-head description."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet50, vgg16

from fdcam import FdcamError
from fdcam.models import efficientnet_lite0
from fdcam.split import count_hooks, default_layer, eval_mode, linear_head, split_model
from tests.models import tiny_sequential, tiny_skip


def _check_invariant(model: nn.Module, layer: str | None, x: torch.Tensor) -> None:
    split = split_model(model, layer)
    with torch.no_grad():
        a = split.body(x)
        torch.testing.assert_close(split.head(a, x), model(x), atol=1e-5, rtol=1e-5)
    assert count_hooks(model) == 0


@pytest.mark.slow
def test_vgg16_split() -> None:
    torch.manual_seed(0)
    model = vgg16().eval()
    x = torch.randn(2, 3, 224, 224)
    _check_invariant(model, None, x)  # features.30, the paper's layer
    _check_invariant(model, "features.28", x)  # a conv: the head starts with ReLU, pools
    _check_invariant(model, "features.26", x)  # the head holds a conv
    split = split_model(model)
    assert split.layer_name == "features.30"
    assert split.linear_head is not None
    assert split.linear_head.first is model.classifier[0]
    assert split.linear_head.last is model.classifier[6]
    relu_first = split_model(model, "features.28").linear_head
    assert relu_first is not None  # ReLU and max-pooling are channel-wise
    assert not relu_first.sums_gradients
    assert split_model(model, "features.26").linear_head is None  # a conv in the head


@pytest.mark.slow
def test_resnet50_split() -> None:
    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.randn(2, 3, 64, 64)
    _check_invariant(model, "layer4", x)
    _check_invariant(model, "layer3", x)
    _check_invariant(model, "layer4.1", x)  # a block: the hook split
    assert split_model(model, "layer4").linear_head is not None
    assert split_model(model, "layer3").linear_head is None
    assert split_model(model, "layer4.1").needs_images


def test_efficientnet_lite0_split() -> None:
    model = efficientnet_lite0()
    assert default_layer(model) == "_swish"
    x = torch.randn(1, 3, 224, 224)
    split = split_model(model)
    with torch.no_grad():
        a = split.body(x)
        assert a.shape == (1, 1280, 7, 7)
        torch.testing.assert_close(split.head(a), model(x))
    head = split.linear_head
    assert head is not None
    assert head.sums_gradients
    _check_invariant(model, "_blocks.10", x)  # any block through the hook split


def test_sequential_and_hook_splits() -> None:
    x = torch.randn(2, 3, 10, 10)
    _check_invariant(tiny_sequential(), "3", x)
    _check_invariant(tiny_sequential(), "1", x)
    _check_invariant(tiny_skip(), "conv2", x)
    assert split_model(tiny_skip(), "conv2").needs_images


def test_linear_head_detection() -> None:
    pool = nn.AdaptiveAvgPool2d(2)
    assert linear_head([pool, nn.Flatten(1), nn.Linear(8, 3)]) is not None
    assert linear_head([nn.ReLU(), pool, nn.Flatten(), nn.Linear(8, 3)]) is not None
    assert linear_head([nn.Conv2d(2, 2, 1), pool, nn.Flatten(1), nn.Linear(8, 3)]) is None
    assert linear_head([pool, nn.Flatten(2), nn.Linear(4, 3)]) is None  # not channel-major
    assert linear_head([pool, nn.Flatten(1)]) is None
    assert linear_head([pool, nn.Flatten(1), nn.Dropout(), nn.Linear(8, 3)]) is not None
    head = linear_head([nn.ReLU(), pool, nn.Flatten(1), nn.Linear(8, 3)])
    assert head is not None
    assert not head.sums_gradients  # ReLU's gradient is not a redistribution


def test_default_layer_unknown_model() -> None:
    with pytest.raises(FdcamError, match="no default target layer for TinySkip"):
        split_model(tiny_skip())


def test_eval_mode_restores_each_module() -> None:
    model = tiny_skip().train()
    model.bn.eval()
    with eval_mode(model):
        assert not model.training
        assert not model.conv1.training
    assert model.training
    assert not model.bn.training
    assert model.conv1.training
