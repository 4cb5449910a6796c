"""The split invariant head(body(x)) == model(x), default layers, the head's stages, and the
graph cut's context (values from before the cut that the head reads)."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import Tensor, nn

from fdcam import FdcamError
from fdcam.head import stages_of_modules
from fdcam.models import efficientnet_lite0
from fdcam.split import count_hooks, default_layer, eval_mode, split_model
from tests.models import tiny_sequential, tiny_skip


def _check_invariant(model: nn.Module, layer: str | None, x: Tensor) -> None:
    split = split_model(model, layer)
    with torch.no_grad():
        a, context = split.forward_body(x)
        expected = model(x)
        torch.testing.assert_close(split.head(a, context=context), expected, atol=1e-5,
                                   rtol=1e-5)
        torch.testing.assert_close(split.head(a, x), expected, atol=1e-5, rtol=1e-5)
        if split.stages is not None:  # the stages compose to the same head (BN folded in
            pooled = split.stages.channel_wise(a.clone())  # the first stage rounds differently)
            first = pooled if split.stages.first is None else split.stages.first(pooled)
            torch.testing.assert_close(split.stages.rest(first, context), expected,
                                       atol=1e-4, rtol=1e-4)
    assert count_hooks(model) == 0


@pytest.mark.slow
def test_vgg16_split() -> None:
    torch.manual_seed(0)
    model = tvm.vgg16().eval()
    x = torch.randn(2, 3, 224, 224)
    _check_invariant(model, None, x)  # features.30, the paper's layer
    _check_invariant(model, "features.28", x)  # a conv: the head starts with ReLU, pools
    _check_invariant(model, "features.26", x)  # the head holds a conv
    split = split_model(model)
    assert split.layer_name == "features.30"
    stages = split.stages
    assert stages is not None and stages.first is not None and stages.first.kind == "linear"
    assert stages.first.weight is model.classifier[0].weight
    assert stages.last is model.classifier[6]
    assert stages.pooling_only
    relu_first = split_model(model, "features.28").stages
    assert relu_first is not None and relu_first.first is not None  # ReLU, max-pool: channel-wise
    assert not relu_first.pooling_only
    conv_first = split_model(model, "features.26").stages
    assert conv_first is not None and conv_first.first is not None
    assert conv_first.first.kind == "conv"  # ReLU, then features.28: a convolution


@pytest.mark.slow
def test_resnet50_split() -> None:
    torch.manual_seed(0)
    model = tvm.resnet50().eval()
    x = torch.randn(2, 3, 64, 64)
    _check_invariant(model, "layer4", x)
    _check_invariant(model, "layer3", x)
    _check_invariant(model, "layer4.1", x)  # a block: nothing crosses the cut
    _check_invariant(model, "layer4.1.conv1", x)  # inside a block: the identity crosses it
    assert split_model(model, "layer4").stages.first_is_classifier  # type: ignore[union-attr]
    assert not split_model(model, "layer4.1").needs_images
    assert split_model(model, "layer4.1.conv1").needs_images


# One small input per family; ConvNeXt and RegNet need at least 32 pixels.
FAMILIES = {
    "convnext_tiny": "features.7", "densenet121": "features.norm5",
    "efficientnet_b0": "features.8", "mobilenet_v2": "features.18",
    "mobilenet_v3_large": "features.16", "regnet_y_400mf": "trunk_output",
    "resnext50_32x4d": "layer4", "wide_resnet50_2": "layer4", "vgg11": "features.20",
    "efficientnet_v2_s": "features.7",
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_default_layers_of_torchvision_families(name: str) -> None:
    torch.manual_seed(0)
    model = tvm.get_model(name).eval()
    assert default_layer(model) == FAMILIES[name]
    _check_invariant(model, None, torch.randn(2, 3, 64, 64))
    stages = split_model(model).stages
    assert stages is not None  # every family's default head has a fast path


def test_efficientnet_lite0_split() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")  # [evaluation]; the core job has torch alone
    model = efficientnet_lite0()
    assert default_layer(model) == "_swish"
    x = torch.randn(1, 3, 224, 224)
    split = split_model(model)
    with torch.no_grad():
        a = split.body(x)
        assert a.shape == (1, 1280, 7, 7)
        torch.testing.assert_close(split.head(a), model(x))
    assert split.stages is not None and split.stages.pooling_only
    for block in ("_blocks.10", "_blocks.14", "_blocks.15"):
        _check_invariant(model, block, x)
        stages = split_model(model, block).stages
        # An MBConv block starts with a 1x1 expansion (15: the 1x1 head convolution).
        assert stages is not None and stages.first is not None and stages.first.kind == "conv"


def test_sequential_and_skip_splits() -> None:
    x = torch.randn(2, 3, 10, 10)
    _check_invariant(tiny_sequential(), "3", x)
    _check_invariant(tiny_sequential(), "1", x)
    _check_invariant(tiny_skip(), "conv2", x)
    split = split_model(tiny_skip(), "conv2")
    assert split.needs_images and split.kind == "graph"  # relu(conv1(x)) crosses the cut
    with pytest.raises(FdcamError, match="reads values from before the cut"):
        split.head(torch.zeros(1, 12, 10, 10))


class FlattenBySize(nn.Module):
    """Reads the batch size before the cut and uses it after: x.view(n, -1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(0)
        return self.fc(self.pool(self.conv(x)).view(n, -1))


def test_batch_size_read_before_the_cut() -> None:
    torch.manual_seed(0)
    model = FlattenBySize().eval()
    split = split_model(model, "conv")
    assert not split.needs_images  # the batch size is read from the head's own input
    assert split.stages is not None and split.stages.first is not None
    x = torch.randn(1, 3, 8, 8)
    _check_invariant(model, "conv", x)
    with torch.no_grad():
        a = split.body(x)
        many = split.head(a.expand(3, -1, -1, -1))  # three masks of one image
    torch.testing.assert_close(many, model(x).expand(3, -1))


class DataDependent(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:
            x = -x
        return self.fc(self.conv(x).mean((2, 3)))


def test_untraceable_model_falls_back_to_the_hook_split() -> None:
    model = DataDependent().eval()
    with pytest.warns(UserWarning, match="slow hook split .*torch.fx cannot trace"):
        split = split_model(model, "conv")
    assert split.kind == "hook" and split.stages is None
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        a, context = split.forward_body(x)
        torch.testing.assert_close(split.head(a, context=context), model(x))


def test_stages_of_module_chains() -> None:
    pool = nn.AdaptiveAvgPool2d(2)

    def first_kind(*modules: nn.Module) -> str | None:
        stages = stages_of_modules(list(modules))[1]
        return None if stages.first is None else stages.first.kind

    assert first_kind(pool, nn.Flatten(1), nn.Linear(8, 3)) == "linear"
    assert first_kind(nn.ReLU(), pool, nn.Flatten(), nn.Linear(8, 3)) == "linear"
    assert first_kind(nn.Conv2d(2, 2, 1), pool, nn.Flatten(1), nn.Linear(8, 3)) == "conv"
    assert first_kind(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(1), nn.Linear(8, 3)) == "linear"
    assert first_kind(pool, nn.Flatten(2), nn.Linear(4, 3)) is None  # not channel-major
    assert first_kind(pool, nn.Flatten(1), nn.Dropout(), nn.Linear(8, 3)) == "linear"
    assert first_kind(nn.Conv2d(2, 2, 3, padding="same"), nn.Flatten(1)) is None
    relu = stages_of_modules([nn.ReLU(), pool, nn.Flatten(1), nn.Linear(8, 3)])[1]
    assert not relu.pooling_only  # ReLU's gradient is not a redistribution
    assert relu.first_is_classifier


def test_default_layer_unknown_model_lists_candidates() -> None:
    with pytest.raises(FdcamError, match=r"no default target layer for TinySkip; .*conv1, "
                                         r"conv2, bn"):
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
