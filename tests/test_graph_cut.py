"""FD-CAM at any layer of any CNN (fdcam.graph_cut, fdcam.head, the staged fast path) against
a literal hook-and-mask implementation: the whole model rerun with the layer's output
replaced by A ⊙ m, one mask at a time."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import Tensor, nn

from fdcam import FDCAM
from fdcam.models import efficientnet_lite0
from tests.literal import cosine_matrix, groups_of
from tests.models import tiny_skip


def _masked_model_score(model: nn.Module, layer: nn.Module, x: Tensor, mask: Tensor,
                        c: int) -> float:
    """f_c with the layer's output multiplied by the channel mask, by a forward hook."""

    def replace(_m: nn.Module, _i: object, out: Tensor) -> Tensor:
        return out * mask.view(1, -1, 1, 1)

    handle = layer.register_forward_hook(replace)
    try:
        with torch.no_grad():
            return float(model(x)[0, c])
    finally:
        handle.remove()


def _literal_gradient_mean(model: nn.Module, layer: nn.Module, x: Tensor, c: int) -> Tensor:
    """Eq. 2 through the whole model: the spatial mean of ∂f_c/∂A, as ∂f_c/∂E at E = 0 for
    the layer's output replaced by A + E (a new tensor: heads may work in place on A)."""
    kept: list[Tensor] = []

    def shift(_m: nn.Module, _i: object, out: Tensor) -> Tensor:
        kept.append(torch.zeros_like(out, requires_grad=True))
        return out + kept[0]

    handle = layer.register_forward_hook(shift)
    try:
        model(x)[0, c].backward()
    finally:
        handle.remove()
    return kept[0].grad[0].mean((1, 2))


def _check_channels(model: nn.Module, layer_name: str, x: Tensor, c: int,
                    channels: list[int]) -> None:
    """Switch-off, switch-on, groups and α of `channels`, literal versus FDCAM."""
    model.eval()
    layer = model.get_submodule(layer_name)
    out = FDCAM(model, layer_name)(x, target=c)
    a = out.activations[0]
    k = a.shape[0]
    literal_groups = groups_of(a, 0.05)
    f = _masked_model_score(model, layer, x, torch.ones(k), c)
    for ch in channels:
        group = literal_groups[ch]
        assert torch.nonzero(out.groups[0, ch]).flatten().tolist() == group
        off, on = torch.ones(k), torch.zeros(k)
        off[group], on[group] = 0.0, 1.0
        s_off = f - _masked_model_score(model, layer, x, off, c)  # Eq. 6
        s_on = _masked_model_score(model, layer, x, on, c)  # Eq. 7
        scale = max(1.0, abs(f))
        assert abs(float(out.switch_off[0, ch]) - s_off) <= 2e-4 * scale, (ch, "off")
        assert abs(float(out.switch_on[0, ch]) - s_on) <= 2e-4 * scale, (ch, "on")
    alpha = _literal_gradient_mean(model, layer, x, c)
    torch.testing.assert_close(out.alpha[0], alpha, atol=1e-5, rtol=1e-4)


def _some_channels(k: int, seed: int = 0) -> list[int]:
    return torch.randperm(k, generator=torch.Generator().manual_seed(seed))[:6].sort()[0].tolist()


TORCHVISION = [("convnext_tiny", "features.7"), ("densenet121", "features.norm5"),
               ("efficientnet_b0", "features.8"), ("mobilenet_v3_large", "features.16"),
               ("resnet18", "layer4.1.conv1"), ("regnet_y_400mf", "trunk_output")]


@pytest.mark.parametrize(("name", "layer"), TORCHVISION, ids=[n for n, _ in TORCHVISION])
def test_torchvision_models_match_the_literal_hook_and_mask(name: str, layer: str) -> None:
    torch.manual_seed(0)
    model = tvm.get_model(name).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    channels = _some_channels(FDCAM(model, layer).split.body(x).shape[1])
    _check_channels(model, layer, x, 7, channels)


@pytest.mark.parametrize("block", ["_blocks.14", "_blocks.15"])
def test_efficientnet_lite0_inner_blocks_match_the_literal_hook_and_mask(block: str) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")  # [evaluation]; the core job has torch alone
    model = efficientnet_lite0()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    cam = FDCAM(model, block)
    assert cam.split.stages is not None and cam.split.stages.first is not None
    assert cam.split.stages.first.kind == "conv"  # the exact convolution shortcut
    k = cam.split.body(x).shape[1]
    _check_channels(model, block, x, 281, _some_channels(k, 3))


def test_skip_connection_crossing_the_layer_matches_every_channel() -> None:
    model = tiny_skip()
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(4))
    cam = FDCAM(model, "conv2")
    assert cam.split.needs_images and cam.split.kind == "graph"
    _check_channels(model, "conv2", x, 3, list(range(12)))


def test_literal_cosine_is_symmetric() -> None:  # a guard on the literal itself
    a = torch.randn(5, 3, 3)
    m = cosine_matrix(a)
    torch.testing.assert_close(m, m.T)
