"""Tests for fdcam/baselines.py: library parity, a literal Group-CAM, the call protocol."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torch.nn.functional as F
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur

from fdcam.baselines import (
    BASELINES,
    FDCAM_VARIANTS,
    METHODS,
    QUALITATIVE_METHODS,
    make_explainer,
)
from fdcam.baselines.base import BaseExplainer, EfficientNetLiteClassifier, resolve_target_layer
from fdcam.baselines.groupcam import (
    GROUPCAM_AUTHORS_LAYER,
    GroupCAM,
    gaussian_blur,
    groupcam_authors_layer,
)
from fdcam.errors import FdcamError
from fdcam.models import LoadedModel
from fdcam.split import default_layer

LIBRARY = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "scorecam": pgc.ScoreCAM,
    "ablationcam": pgc.AblationCAM,
}
BASELINE_NAMES = ("gradcam", "gradcam++", "xgradcam", "layercam", "scorecam", "ablationcam",
             "groupcam", "ig", "xrai")
FAST_OPTIONS = {"ig": {"n_steps": 4}, "xrai": {"steps": 3}}


def tiny_cnn(channels: int = 64, inplace: bool = False, seed: int = 0) -> nn.Sequential:
    """3×32×32 -> 5 logits; layer "4" is the target (a ReLU of `channels` × 16 × 16)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, channels, 3, stride=2, padding=1), nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels, 5),
    ).eval()


def images(batch: int = 2, size: int = 32, seed: int = 1) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None).eval()


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def direct_library_call(name: str, model: nn.Module, layer: nn.Module, x: Tensor,
                        classes: list[int]) -> Tensor:
    """pytorch-grad-cam used as its README shows, with its default settings."""
    with LIBRARY[name](model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    return torch.from_numpy(maps)


# --------------------------------------------------------------------------------------
# pytorch-grad-cam adapters: the same maps as the library itself
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LIBRARY))
def test_adapter_matches_library_on_tiny_cnn(name: str) -> None:
    net, x = tiny_cnn(), images()
    explanation = make_explainer(name, net, "4")(x, target=[1, 3])
    expected = direct_library_call(name, net, net[4], x, [1, 3])
    assert explanation.saliency.shape == (2, 32, 32)
    torch.testing.assert_close(explanation.saliency, expected, rtol=0, atol=0)
    assert explanation.method == name
    assert explanation.targets.tolist() == [[1], [3]]


@pytest.mark.parametrize("name", list(LIBRARY))
def test_adapter_matches_library_on_torchvision_model(name: str, mobilenet: nn.Module) -> None:
    # An inverted-residual block of 48 channels (4×4 here) keeps Score-/Ablation-CAM quick.
    x = images(size=64)
    explanation = make_explainer(name, mobilenet, "features.8")(x, target=[7, 420])
    expected = direct_library_call(name, mobilenet, mobilenet.features[8], x, [7, 420])
    assert explanation.saliency.shape == (2, 64, 64)
    torch.testing.assert_close(explanation.saliency, expected, rtol=0, atol=0)


@pytest.mark.slow
def test_adapter_on_random_vgg16_at_the_paper_layer() -> None:
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    vgg.classifier.requires_grad_(False)  # spares the 100M-entry weight gradients
    x = images(size=64)
    explanation = make_explainer("gradcam", vgg)(x, target=[0, 999])  # default: features.30
    expected = direct_library_call("gradcam", vgg, vgg.features[30], x, [0, 999])
    torch.testing.assert_close(explanation.saliency, expected, rtol=0, atol=0)


def test_adapter_class_axis_is_one_library_call_per_column() -> None:
    net, x = tiny_cnn(), images()
    explanation = make_explainer("gradcam++", net, net[4])(x, target=[[0, 2], [4, 1]])
    assert explanation.saliency.shape == (2, 2, 32, 32)
    for j, classes in enumerate(([0, 4], [2, 1])):
        expected = direct_library_call("gradcam++", net, net[4], x, classes)
        torch.testing.assert_close(explanation.saliency[:, j], expected, rtol=0, atol=0)


def test_scorecam_batch_size_option_gives_the_same_map() -> None:
    net, x = tiny_cnn(channels=40), images()
    small = make_explainer("scorecam", net, "4", batch_size=3)(x, target=2)
    default = make_explainer("scorecam", net, "4")(x, target=2)
    torch.testing.assert_close(small.saliency, default.saliency)


def test_ablationcam_runs_the_body_once_per_image() -> None:
    """The library runs the whole model for every batch of ablated copies; here the layers
    before the target run once per image (and once for the logits), the maps unchanged
    (`test_adapter_matches_library_on_tiny_cnn` compares them with the library's)."""
    net, x = tiny_cnn(channels=40), images(batch=2)
    calls: list[int] = []
    handle = net[0].register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    try:
        make_explainer("ablationcam", net, "4", batch_size=4)(x, target=[1, 3])
        # the explainer's logits, the library's forward, its scores: batches of the 2 images
        assert calls == [2, 2, 2]
        calls.clear()
        direct_library_call("ablationcam", net, net[4], x, [1, 3])
        # the library alone: also a body pass per batch of 32 copies of each image
        assert calls == [2, 2, 32, 8, 32, 8]
    finally:
        handle.remove()


def test_ablationcam_puts_the_layer_back_when_the_call_fails() -> None:
    class Refuse(nn.Module):
        def forward(self, a: Tensor) -> Tensor:
            if a.shape[0] > 1:
                raise RuntimeError("ablated batch refused")
            return a

    net = tiny_cnn()
    net.insert(5, Refuse())
    layer = net[4]
    with pytest.raises(RuntimeError, match="refused"):
        make_explainer("ablationcam", net, "4", batch_size=4)(images(batch=1), target=0)
    assert net[4] is layer
    assert hook_count(net) == 0


def test_default_target_is_each_images_top1_class() -> None:
    net, x = tiny_cnn(), images(batch=3)
    explanation = make_explainer("gradcam", net, "4")(x)
    with torch.no_grad():
        top1 = net(x).argmax(1)
    assert explanation.targets[:, 0].tolist() == top1.tolist()
    torch.testing.assert_close(explanation.logits, net(x).detach())


# --------------------------------------------------------------------------------------
# Group-CAM against a literal, slow re-derivation
# --------------------------------------------------------------------------------------


def literal_group_cam(model: nn.Module, layer: nn.Module, x: Tensor, c: int,
                      groups: int = 32, percentile: float | None = None) -> Tensor:
    """One image [1, 3, H, W], one class, written out as the method describes it."""
    h, w = x.shape[2:]
    kept: dict[str, Tensor] = {}

    def keep(_m: nn.Module, _i: object, out: Tensor) -> None:
        out.retain_grad()
        kept["a"] = out

    handle = layer.register_forward_hook(keep)
    logits = model(x)
    handle.remove()
    (grad,) = torch.autograd.grad(logits[0, c], kept["a"])
    a = kept["a"].detach()
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    blurred = tv_gaussian_blur(x, [51, 51], [50.0, 50.0])
    with torch.no_grad():
        base = torch.softmax(model(blurred), dim=1)[0, c]
        total = torch.zeros(1, 1, h, w)
        for chunk in torch.chunk(alpha * a, groups, dim=1):
            m = F.relu(chunk.sum(dim=1, keepdim=True))
            if percentile is not None:
                threshold = float(np.percentile(m.numpy(), percentile))
                m = torch.where(m > threshold, m, torch.zeros_like(m))
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
            if m.max() == m.min():
                continue  # a constant mask scores 0
            mask = (m - m.min()) / (m.max() - m.min())
            p = torch.softmax(model(x * mask + blurred * (1 - mask)), dim=1)[0, c]
            total += F.relu(p - base) * m
        total = F.relu(total)
        if total.max() == total.min():
            return torch.zeros(h, w)
        return ((total - total.min()) / (total.max() - total.min()))[0, 0]


@pytest.mark.parametrize(("channels", "percentile"), [(64, None), (40, None), (64, 70.0)])
def test_groupcam_matches_literal_implementation(channels: int, percentile: float | None) -> None:
    net, x = tiny_cnn(channels=channels), images()
    explainer = make_explainer("groupcam", net, "4", batch_size=7,
                               denoise_percentile=percentile)
    explanation = explainer(x, target=[[1, 4], [2, 0]])
    assert explanation.saliency.shape == (2, 2, 32, 32)
    groups = 32 if channels == 64 else 20  # torch.chunk: 40 channels -> 20 chunks of 2
    assert explanation.scores is not None
    assert explanation.scores.shape == (2, 2, groups)
    assert explanation.alpha is not None
    assert explanation.alpha.shape == (2, 2, channels)
    for b, classes in enumerate(([1, 4], [2, 0])):
        for j, c in enumerate(classes):
            expected = literal_group_cam(net, net[4], x[b:b + 1], c, percentile=percentile)
            torch.testing.assert_close(explanation.saliency[b, j], expected,
                                       atol=2e-5, rtol=1e-4)


def test_groupcam_is_unaffected_by_an_inplace_op_after_the_layer() -> None:
    x = images()
    plain = tiny_cnn(inplace=False)
    inplace = tiny_cnn(inplace=True)
    # Target the convolution, whose output the next (in-place) ReLU overwrites.
    ours = GroupCAM(inplace, "3")(x, target=[0, 1])
    reference = GroupCAM(plain, "3")(x, target=[0, 1])
    torch.testing.assert_close(ours.saliency, reference.saliency)


def test_gaussian_blur_matches_torchvision() -> None:
    x = images(size=40)
    torch.testing.assert_close(gaussian_blur(x, 51, 50.0),
                               tv_gaussian_blur(x, [51, 51], [50.0, 50.0]))


def test_groupcam_rejects_an_image_too_small_for_the_blur() -> None:
    with pytest.raises(FdcamError, match="too small"):
        GroupCAM(tiny_cnn(), "4")(images(size=20), target=0)


def test_groupcam_constant_maps_give_zeros_not_nan() -> None:
    net = tiny_cnn()
    nn.init.zeros_(net[8].weight)  # every logit is the bias: no gradient, no score
    explanation = GroupCAM(net, "4")(images(), target=0)
    assert torch.equal(explanation.saliency, torch.zeros(2, 32, 32))


# --------------------------------------------------------------------------------------
# Integrated Gradients and XRAI
# --------------------------------------------------------------------------------------


def test_ig_is_captum_abs_sum_min_max() -> None:
    from captum.attr import IntegratedGradients

    net, x = tiny_cnn(), images()
    explanation = make_explainer("ig", net, n_steps=8)(x, target=[3, 1])
    assert explanation.saliency.shape == (2, 32, 32)
    attribution = IntegratedGradients(net).attribute(
        x, baselines=torch.zeros_like(x), target=torch.tensor([3, 1]), n_steps=8)
    magnitude = attribution.abs().sum(1)
    low = magnitude.amin((1, 2), keepdim=True)
    expected = (magnitude - low) / (magnitude.amax((1, 2), keepdim=True) - low)
    torch.testing.assert_close(explanation.saliency, expected.detach())


def test_ig_clip_percentile_and_class_axis() -> None:
    net, x = tiny_cnn(), images()
    explanation = make_explainer("ig", net, n_steps=4, clip_percentile=99.0)(
        x, target=[[0, 1], [2, 3]])
    s = explanation.saliency
    assert s.shape == (2, 2, 32, 32)
    assert s.min() >= 0
    assert s.max() <= 1
    assert (s == 1).flatten(2).sum(-1).min() >= 2  # the top 1 % is clipped to 1


def test_xrai_returns_maps_in_unit_range() -> None:
    net, x = tiny_cnn(), images()
    explanation = make_explainer("xrai", net, steps=5, batch_size=5)(x, target=[1, 2])
    s = explanation.saliency
    assert s.shape == (2, 32, 32)
    assert torch.isfinite(s).all()
    assert s.min() == 0
    assert s.max() == 1


def test_xrai_black_and_white_baselines_from_a_loaded_model() -> None:
    net = tiny_cnn()
    loaded = LoadedModel("tiny", net, "4", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), ["c"] * 5)
    explainer = make_explainer("xrai", loaded, steps=3)
    assert explainer.mean == (0.5, 0.4, 0.3)
    assert explainer.std == (0.2, 0.25, 0.3)
    image = np.zeros((32, 32, 3), dtype=np.float32)
    black, white = explainer._baselines(image)
    np.testing.assert_allclose(black[0, 0], [-2.5, -1.6, -1.0], rtol=1e-6)
    np.testing.assert_allclose(white[0, 0], [2.5, 2.4, 2 + 1 / 3], rtol=1e-6)
    explanation = explainer(images(batch=1), target=[[0, 4]])
    assert explanation.saliency.shape == (1, 2, 32, 32)


# --------------------------------------------------------------------------------------
# The call protocol: modes, gradients and hooks are left as they were
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_mode_gradients_and_hooks_are_restored(name: str) -> None:
    net = tiny_cnn(channels=16)
    net.train()
    net[1].eval()  # a mixed state must come back as it was
    modes = [m.training for m in net.modules()]
    marker = torch.ones_like(net[0].weight)
    net[0].weight.grad = marker
    explanation = make_explainer(name, net, "4", **FAST_OPTIONS.get(name, {}))(
        images(batch=2), target=[0, 3])
    assert [m.training for m in net.modules()] == modes
    assert net[0].weight.grad is marker
    assert all(p.grad is None for p in net.parameters() if p is not net[0].weight)
    assert hook_count(net) == 0
    assert not nn.modules.module._global_forward_hooks
    assert not nn.modules.module._global_backward_hooks
    s = explanation.saliency
    assert s.shape == (2, 32, 32)
    assert torch.isfinite(s).all()
    assert s.min() >= 0
    assert s.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_baselines_run_on_cuda(name: str) -> None:
    net = tiny_cnn().cuda()
    explanation = make_explainer(name, net, "4", **FAST_OPTIONS.get(name, {}))(
        images().cuda(), target=[[0, 1], [2, 3]])
    assert explanation.saliency.device.type == "cuda"
    assert explanation.saliency.shape == (2, 2, 32, 32)
    assert torch.isfinite(explanation.saliency).all()


def test_every_baseline_is_an_explainer() -> None:
    for name in BASELINE_NAMES:
        explainer = make_explainer(name, tiny_cnn(), "4")
        assert isinstance(explainer, BaseExplainer)
        assert explainer.name == name


# --------------------------------------------------------------------------------------
# Registry and errors
# --------------------------------------------------------------------------------------


def test_registry_holds_every_method_once() -> None:
    assert len(set(METHODS)) == len(METHODS)
    assert METHODS == (*BASELINES, *FDCAM_VARIANTS)
    assert set(QUALITATIVE_METHODS) <= set(BASELINES)
    assert set(BASELINE_NAMES) == set(BASELINES)


def test_unknown_method_lists_the_methods() -> None:
    with pytest.raises(FdcamError, match="unknown method 'grad-cam'") as info:
        make_explainer("grad-cam", tiny_cnn(), "4")
    message = str(info.value)
    assert "\n" not in message
    assert all(name in message for name in METHODS)


def test_unknown_option_lists_the_accepted_ones() -> None:
    with pytest.raises(FdcamError, match=r"no option 'batchsize'; accepted: .*batch_size"):
        make_explainer("scorecam", tiny_cnn(), "4", batchsize=8)
    with pytest.raises(FdcamError, match="no option 'batch_size'"):
        make_explainer("gradcam", tiny_cnn(), "4", batch_size=8)


def test_unknown_layer_lists_the_names_nearby(mobilenet: nn.Module) -> None:
    nearby = ", ".join(f"features.{i}" for i in range(13))
    with pytest.raises(FdcamError, match=re.escape(
            f"unknown layer 'features.13'; available under 'features': {nearby}")):
        make_explainer("gradcam", mobilenet, "features.13")
    with pytest.raises(FdcamError, match=re.escape(
            "unknown layer 'feature.12'; available: features, avgpool, classifier")):
        make_explainer("gradcam", mobilenet, "feature.12")


def test_bad_target_layers_are_refused() -> None:
    net = tiny_cnn()
    with pytest.raises(FdcamError, match="not a submodule"):
        make_explainer("gradcam", net, nn.ReLU())
    with pytest.raises(FdcamError, match="module or a dotted name"):
        make_explainer("gradcam", net, 4)
    with pytest.raises(FdcamError, match="no default target layer for Sequential"):
        make_explainer("groupcam", net)
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(3, 4, 3), shared, nn.Conv2d(4, 4, 3), shared,
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for name in ("gradcam", "groupcam"):
        with pytest.raises(FdcamError, match="runs 2 times in one forward pass; name one call: "
                                              "1#1, 1#2"):
            make_explainer(name, twice, "1")(images(), target=0)
        assert hook_count(twice) == 0


def test_bad_inputs_are_one_line_errors() -> None:
    explainer = make_explainer("gradcam", tiny_cnn(), "4")
    with pytest.raises(FdcamError, match="out of range"):
        explainer(images(), target=5)
    with pytest.raises(FdcamError, match="3 colour channels"):
        explainer(torch.zeros(1, 1, 32, 32), target=0)
    with pytest.raises(FdcamError, match="NaN"):
        explainer(torch.full((1, 3, 32, 32), float("nan")), target=0)
    with pytest.raises(FdcamError, match="batch_size must be a positive int"):
        make_explainer("groupcam", tiny_cnn(), "4", batch_size=0)


def test_default_target_layers() -> None:
    with torch.device("meta"):
        resnet, vgg = torchvision.models.resnet18(), torchvision.models.vgg11()
    assert default_layer(resnet) == "layer4"
    assert default_layer(vgg) == "features.20"


class TinyVGG(nn.Module):
    """VGG's layout in miniature: features (conv, ReLU, conv, ReLU, max-pool) + classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(16, 5))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def test_groupcam_authors_layer_is_the_last_conv_relu() -> None:
    with torch.device("meta"):
        vgg16, vgg19 = torchvision.models.vgg16(), torchvision.models.vgg19()
        resnet50 = torchvision.models.resnet50()
    assert groupcam_authors_layer(vgg16) == "features.29"  # the ReLU before pool5
    assert groupcam_authors_layer(vgg19) == "features.35"  # their README's VGG19 layer
    assert groupcam_authors_layer(resnet50) == "layer4"  # = layer4.2's output
    assert default_layer(vgg16) == "features.30"  # the shared default: pool5
    with pytest.raises(FdcamError, match="no known Group-CAM reference layer for Sequential"):
        groupcam_authors_layer(tiny_cnn())


def test_groupcam_layer_option() -> None:
    net, x = TinyVGG().eval(), images()
    default = GroupCAM(net, "features.4")  # as every method: the last max-pool
    authors = GroupCAM(net, target_layer=GROUPCAM_AUTHORS_LAYER)
    assert (default.layer_name, authors.layer_name) == ("features.4", "features.3")
    torch.testing.assert_close(authors(x, target=[1, 2]).saliency,
                               GroupCAM(net, "features.3")(x, target=[1, 2]).saliency)
    loaded = LoadedModel("tiny-vgg", net, "features.4", (0.5,) * 3, (0.5,) * 3, ["c"] * 5)
    assert make_explainer("groupcam", loaded).layer_name == "features.4"
    assert make_explainer("groupcam", loaded, "authors").layer_name == "features.3"


def test_loaded_model_supplies_network_and_layer() -> None:
    net = tiny_cnn()
    loaded = LoadedModel("tiny", net, "4", (0.5,) * 3, (0.5,) * 3, ["c"] * 5)
    explainer = make_explainer("gradcam", loaded)
    assert explainer.model is net
    assert explainer.layer is net[4]


def test_fdcam_entries_build_the_variants() -> None:
    cam = pytest.importorskip("fdcam.cam")
    net, x = tiny_cnn(), images()
    for name, variant in FDCAM_VARIANTS.items():
        explainer = make_explainer(name, net, "4")
        assert isinstance(explainer, cam.FDCAM)
        for key, value in variant.items():
            assert getattr(explainer, key) == value
    explanation = make_explainer("fdcam-g-off", net, "4")(x, target=[0, 1])
    assert explanation.saliency.shape == (2, 32, 32)
    with pytest.raises(FdcamError, match="fixes combination='product'"):
        make_explainer("fdcam-product", net, "4", combination="exp")


# --------------------------------------------------------------------------------------
# EfficientNet-Lite: the target layer "_swish" is the head activation
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite() -> LoadedModel:
    pytest.importorskip("efficientnet_lite_pytorch")
    from fdcam.models import load_model

    return load_model("efficientnet-lite0")


def test_efficientnet_lite_view_has_the_same_logits(lite: LoadedModel) -> None:
    name, layer, forward_model = resolve_target_layer(lite.model, "_swish")
    assert name == "_swish"
    assert isinstance(forward_model, EfficientNetLiteClassifier)
    assert layer is forward_model.features
    x = images(size=64)
    with torch.no_grad():
        torch.testing.assert_close(forward_model(x), lite.model(x), rtol=0, atol=0)
    assert resolve_target_layer(lite.model, lite.model._swish)[2] is not lite.model


@pytest.mark.slow
def test_efficientnet_lite_gradcam_is_the_head_activation_map(lite: LoadedModel) -> None:
    x = images(size=64)
    explanation = make_explainer("gradcam", lite)(x, target=[285, 2])
    # Grad-CAM written out on extract_features, with pytorch-grad-cam's post-processing.
    model = lite.model
    a = model.extract_features(x).detach().requires_grad_(True)
    logits = model._fc(model._dropout(model._avg_pooling(a).flatten(1)))
    (grad,) = torch.autograd.grad(logits[0, 285] + logits[1, 2], a)
    cam = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1)).detach().numpy()
    expected = []
    for m in cam:
        m = m - m.min()
        m = cv2.resize(np.float32(m / (1e-7 + m.max())), (64, 64))
        m = m - m.min()
        expected.append(m / (1e-7 + m.max()))
    torch.testing.assert_close(explanation.saliency, torch.from_numpy(np.stack(expected)),
                               atol=1e-5, rtol=1e-4)
    assert hook_count(model) == 0


def test_efficientnet_lite_view_survives_a_swapped_features_module(lite: LoadedModel) -> None:
    # Ablation-CAM replaces the target layer (`features`) by its ablation layer, a module
    # without `net`; the view's forward must not read anything through `features`.
    view = EfficientNetLiteClassifier(lite.model)
    a = torch.randn(2, 1280, 2, 2, generator=torch.Generator().manual_seed(3))

    class Fixed(nn.Module):
        def forward(self, _x: Tensor) -> Tensor:
            return a

    view.features = Fixed()
    model = lite.model
    with torch.no_grad():
        expected = model._fc(model._dropout(model._avg_pooling(a).flatten(1)))
        torch.testing.assert_close(view(images(size=64)), expected, rtol=0, atol=0)


def test_efficientnet_lite_ablationcam_matches_the_library(lite: LoadedModel) -> None:
    """Regression: Ablation-CAM on EfficientNet-Lite raised AttributeError ('_local_pooling')."""
    model = lite.model
    swish = model._swish

    class Features(nn.Module):  # written out here, independently of fdcam's view
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: Tensor) -> Tensor:
            return self.net.extract_features(x)

    class View(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = Features()
            self.fc = model._fc

        def forward(self, x: Tensor) -> Tensor:
            pooled = model._avg_pooling(self.features(x)).flatten(1)
            return self.fc(model._dropout(pooled))

    x = images(batch=1, size=64)
    explanation = make_explainer("ablationcam", lite, batch_size=64)(x, target=[[285, 2]])
    view = View().eval()
    expected = []
    for c in (285, 2):
        with pgc.AblationCAM(model=view, target_layers=[view.features], batch_size=64) as cam:
            expected.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(c)]))
    assert explanation.saliency.shape == (1, 2, 64, 64)
    torch.testing.assert_close(explanation.saliency,
                               torch.from_numpy(np.stack(expected, axis=1)), rtol=0, atol=0)
    assert model._swish is swish
    assert not any(type(m).__name__ == "AblationLayer" for m in model.modules())
    assert hook_count(model) == 0


def test_ablationcam_at_a_block_called_with_keywords(lite: LoadedModel) -> None:
    """Regression: EfficientNet-Lite calls its blocks as block(x, drop_connect_rate=r), which
    the library's ablation layer did not accept (TypeError on every image at _blocks.14)."""
    x = images(batch=1, size=64)
    out = make_explainer("ablationcam", lite, "_blocks.14", batch_size=64)(x, target=[1])
    assert out.saliency.shape == (1, 64, 64) and torch.isfinite(out.saliency).all()
    assert lite.model._blocks[14].__class__.__name__ == "MBConvBlock"  # put back after
