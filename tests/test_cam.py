"""FD-CAM end to end against the literal implementation of Eq. 2, 4–11 (tests/literal.py)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet50, vgg16

from fdcam import FDCAM, FdcamError
from fdcam.cam import class_activation_map, gradcam_weights
from fdcam.split import count_hooks, split_model
from fdcam.staged import linear_terms
from tests.literal import literal_fdcam
from tests.models import tiny_sequential, tiny_skip


def _activations(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    kept: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: kept.append(o.detach().clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return kept[0]


def _hook_head(model: nn.Module, layer: nn.Module, x: Tensor):  # type: ignore[no-untyped-def]
    """The literal head of any model: rerun it with the layer's output replaced by A."""

    def head(a: Tensor) -> Tensor:
        handle = layer.register_forward_hook(lambda _m, _i, _o: a)
        try:
            return model(x.expand(a.shape[0], *x.shape[1:]))
        finally:
            handle.remove()

    return head


def _assert_matches(out, lit, i: int, j: int | None) -> None:  # type: ignore[no-untyped-def]
    def pick(t: Tensor) -> Tensor:
        return t[i] if j is None else t[i, j]

    # The groups of Eq. 5 (or the singletons without grouping), as the literal code lists them.
    ours = [torch.nonzero(row).flatten().tolist() for row in out.groups[i]]
    assert ours == lit["groups"]
    scale = max(1.0, float(lit["score"].abs().max()))
    torch.testing.assert_close(pick(out.scores).float(), lit["score"], atol=2e-4 * scale,
                               rtol=1e-4)
    torch.testing.assert_close(pick(out.alpha).float(), lit["alpha"], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(pick(out.weights).float(), lit["weights"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pick(out.saliency), lit["saliency"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fast", [True, False], ids=["linear-head", "generic"])
@pytest.mark.parametrize(
    "options",
    [{}, {"grouping": False, "switch_on": False}, {"switch_on": False},
     {"combination": "product"}, {"combination": "exp"}, {"combination": "exp_shifted"},
     {"theta": 0.2, "bias": 0.3}],
    ids=["full", "ng-off", "g-off", "product", "exp", "exp-shifted", "theta-bias"],
)
def test_tiny_sequential_matches_literal(fast: bool, options: dict) -> None:
    model = tiny_sequential()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    cam = FDCAM(model, "3", **options)
    assert cam.split.stages is not None and cam.split.stages.first is not None
    if not fast:
        cam.split.stages = None
    targets = [[1, 4], [7, 1]]
    out = cam(x, target=targets)
    assert out.saliency.shape == (2, 2, 16, 16)
    a = _activations(model, model[3], x)
    head = nn.Sequential(*list(model)[4:])
    for i in range(2):
        for j, c in enumerate(targets[i]):
            lit = literal_fdcam(head, a[i], c, (16, 16), **options)
            _assert_matches(out, lit, i, j)
            if options.get("grouping", True):
                ours = [torch.nonzero(r).flatten().tolist() for r in out.groups[i]]
                assert ours == lit["groups"]


def test_head_starting_with_an_in_place_relu() -> None:
    model = tiny_sequential()
    model[3] = nn.ReLU(inplace=True)  # target the conv: the head begins with an in-place ReLU
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    cam = FDCAM(model, "2")
    assert cam.split.stages is not None  # ReLU and pooling are channel-wise
    assert cam.split.stages.first is not None
    out = cam(x, target=[3, 8])
    a = _activations(model, model[2], x)
    assert (a < 0).any()  # the activations FD-CAM saw were not overwritten by the ReLU
    torch.testing.assert_close(out.activations, a)
    head = nn.Sequential(*list(model)[3:])
    for i, c in enumerate([3, 8]):
        lit = literal_fdcam(head, a[i], c, (12, 12))
        _assert_matches(out, lit, i, None)


def test_hook_split_with_skip_connection_matches_literal() -> None:
    model = tiny_skip()
    x = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    cam = FDCAM(model, model.conv2, theta=0.1)
    assert cam.split.needs_images  # the head depends on x through the skip
    out = cam(x, target=[0, 3, 6])
    for i, c in enumerate([0, 3, 6]):
        a = _activations(model, model.conv2, x[i: i + 1])[0]
        lit = literal_fdcam(_hook_head(model, model.conv2, x[i: i + 1]), a, c, (10, 10),
                            theta=0.1)
        _assert_matches(out, lit, i, None)
        assert [torch.nonzero(r).flatten().tolist() for r in out.groups[i]] == lit["groups"]


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False], ids=["linear-head", "generic"])
def test_vgg16_matches_literal(fast: bool) -> None:
    torch.manual_seed(0)
    model = vgg16().eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    cam = FDCAM(model, target_layer=model.features[-1], batch_size=128)
    if not fast:
        cam.split.stages = None
    out = cam(x, target=[[3, 900], [17, 3]])
    a = _activations(model, model.features[-1], x)

    def head(act: Tensor) -> Tensor:  # torchvision's VGG.forward after `features`
        return model.classifier(torch.flatten(model.avgpool(act), 1))

    for i, j in [(0, 0), (0, 1), (1, 0)]:
        c = [[3, 900], [17, 3]][i][j]
        lit = literal_fdcam(head, a[i], c, (224, 224))
        _assert_matches(out, lit, i, j)
        assert [torch.nonzero(r).flatten().tolist() for r in out.groups[i]] == lit["groups"]


@pytest.mark.slow
def test_resnet50_matches_literal() -> None:
    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    cam = FDCAM(model, "layer4")
    assert cam.split.stages is not None and cam.split.stages.first is not None
    out = cam(x, target=[[10, 20], [30, 10]])
    a = _activations(model, model.layer4, x)

    def head(act: Tensor) -> Tensor:  # torchvision's ResNet.forward after layer4
        return model.fc(torch.flatten(model.avgpool(act), 1))

    for i, j in [(0, 1), (1, 0)]:
        c = [[10, 20], [30, 10]][i][j]
        lit = literal_fdcam(head, a[i], c, (64, 64))
        _assert_matches(out, lit, i, j)


def test_single_class_drops_the_class_axis_and_matches_multi() -> None:
    model = tiny_sequential()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    cam = FDCAM(model, "3")
    one = cam(x, target=[2, 5])
    both = cam(x, target=[[2, 9], [5, 9]])
    assert one.saliency.shape == (2, 12, 12)
    assert one.weights.shape == one.alpha.shape == one.scores.shape == (2, 24)
    torch.testing.assert_close(one.saliency, both.saliency[:, 0])
    torch.testing.assert_close(cam(x, target=4).saliency, cam(x, target=[4, 4]).saliency)
    top1 = model(x).argmax(1)
    assert torch.equal(cam(x).targets[:, 0], top1)


def test_saliency_range_and_targets_field() -> None:
    model = tiny_sequential()
    x = torch.randn(3, 3, 16, 16)
    out = cam_out = FDCAM(model, "3")(x, target=[0, 1, 2])
    assert out.saliency.min() >= 0 and out.saliency.max() <= 1
    assert cam_out.targets.tolist() == [[0], [1], [2]]
    assert out.method == "fdcam"


def test_constant_activations_give_finite_zero_maps() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(1), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # every activation is 0 after the ReLU
    out = FDCAM(model, "1")(torch.randn(2, 3, 8, 8), target=1)
    for t in (out.saliency, out.weights, out.alpha, out.scores):
        assert torch.isfinite(t).all()
    assert out.saliency.abs().sum() == 0


def test_constant_alpha_and_scores_are_finite() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(1), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[4].weight.zero_()  # the class score ignores every channel: α = s = 0
    out = FDCAM(model, "1")(torch.rand(1, 3, 8, 8), target=0)
    assert torch.isfinite(out.weights).all()
    assert torch.equal(out.weights, torch.full_like(out.weights, -0.5))
    assert out.saliency.abs().sum() == 0


def test_train_mode_restored_and_no_hooks_left() -> None:
    model = tiny_skip().train()
    model.bn.eval()  # a submodule's own mode is restored too
    cam = FDCAM(model, "conv2")
    out = cam(torch.randn(2, 3, 8, 8), target=1)
    assert model.training and not model.bn.training
    assert count_hooks(model) == 0
    assert out.saliency.shape == (2, 8, 8)


def test_explanation_uses_eval_mode() -> None:
    model = tiny_skip()
    x = torch.randn(2, 3, 8, 8)
    expected = FDCAM(model, "conv2")(x, target=1).saliency
    model.train()
    torch.testing.assert_close(FDCAM(model, "conv2")(x, target=1).saliency, expected)
    assert model.training


@pytest.mark.parametrize(
    ("target", "message"),
    [(10, "target class 10 is out of range; the model has 10 classes"),
     (-1, "target class -1 is out of range"),
     ([1, 2, 3], "target has 3 entries but the batch has 2 images"),
     ([[1], [2], [3]], "target has 3 rows but the batch has 2 images"),
     (1.5, "target must hold integer class indices"),
     ("cat", "target must")],
)
def test_bad_targets(target: object, message: str) -> None:
    cam = FDCAM(tiny_sequential(), "3")
    with pytest.raises(FdcamError, match=message.replace("[", r"\[")) as info:
        cam(torch.randn(2, 3, 8, 8), target=target)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("x", "message"),
    [(torch.randn(3, 8, 8), "x must have 4 dimensions"),
     (torch.randn(1, 0, 8, 8), "x has no channels"),
     (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "x must be a float tensor"),
     ([[0.0]], "x must be a float tensor"),
     (torch.full((1, 3, 8, 8), float("nan")), "x contains NaN")],
)
def test_bad_images(x: object, message: str) -> None:
    with pytest.raises(FdcamError, match=message):
        FDCAM(tiny_sequential(), "3")(x, target=0)  # type: ignore[arg-type]


def test_bad_layer_and_options() -> None:
    model = tiny_sequential()
    with pytest.raises(FdcamError, match=r"unknown layer 'feature.30'; available: 0, 1, 2"):
        FDCAM(model, "feature.30")
    with pytest.raises(FdcamError, match="not a submodule"):
        FDCAM(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(FdcamError, match="theta must be a number in"):
        FDCAM(model, "3", theta=0)
    with pytest.raises(FdcamError, match="theta must be a number in"):
        FDCAM(model, "3", theta=True)  # a bool is not a fraction
    with pytest.raises(FdcamError, match="unknown combination 'sum'; available"):
        FDCAM(model, "3", combination="sum")  # type: ignore[arg-type]


def test_module_called_twice_is_refused() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(FdcamError, match="runs 2 times in one forward pass"):
        FDCAM(Twice().eval(), "conv")(torch.randn(1, 3, 4, 4), target=0)


@pytest.mark.parametrize("by_hand", [False, True], ids=["autograd", "linear-terms"])
def test_gradcam_weights_equal_gradient_mean(by_hand: bool) -> None:
    model = tiny_sequential()
    split = split_model(model, "3")
    x = torch.randn(2, 3, 8, 8)
    a = split.body(x).detach()
    terms = linear_terms(split.stages, a) if by_hand else None
    alpha, logits = gradcam_weights(split, a, torch.tensor([[1, 2], [3, 1]]), terms=terms)
    for i, cs in enumerate([[1, 2], [3, 1]]):
        for j, c in enumerate(cs):
            leaf = a[i: i + 1].clone().requires_grad_(True)
            model[4:](leaf)[0, c].backward()  # the literal head of this Sequential
            torch.testing.assert_close(alpha[i, j], leaf.grad[0].mean((1, 2)))
    torch.testing.assert_close(logits, model(x))


def test_class_activation_map_by_hand() -> None:
    a = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]]])  # K=2, 2x2
    cam = class_activation_map(a, torch.tensor([[[1.0, -1.0]]]), (2, 2))
    # ReLU([[1, 0], [0, -2]]) = [[1, 0], [0, 0]], already in [0, 1]
    assert cam.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]
