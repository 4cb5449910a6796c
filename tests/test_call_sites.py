"""Call-site layers (issue 21): a module that runs several times in one forward pass is a
target layer when named by its call, ``name#k``. Everything is compared with a literal
hook-and-mask reference: the whole model rerun with a forward hook that replaces the
module's output at its k-th call only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam import FDCAM
from fdcam.baselines import make_explainer
from fdcam.errors import FdcamError
from fdcam.split import count_hooks, split_model
from tests.literal import literal_fdcam


class SharedActivation(nn.Module):
    """One ReLU module called twice (as EfficientNet-Lite's MBConv blocks call their ReLU6),
    and a non-linear head after its second call (conv, ReLU, pooling, Linear)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 10, 3, padding=1)
        self.act = nn.ReLU()
        self.conv3 = nn.Conv2d(10, 8, 1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.fc(h.mean(dim=(2, 3)))


class SeparateActivations(SharedActivation):
    """The same network with one ReLU module per call: ``act2`` is ``act#2``."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__(classes)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.conv1(x))
        h = self.act2(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.fc(h.mean(dim=(2, 3)))


def shared(seed: int = 0) -> SharedActivation:
    torch.manual_seed(seed)
    return SharedActivation().eval()


def separate(seed: int = 0) -> SeparateActivations:
    torch.manual_seed(seed)
    model = SeparateActivations().eval()
    model.load_state_dict(shared(seed).state_dict())
    return model


# --------------------------------------------------------------- the literal reference


def kth_output(model: nn.Module, module: nn.Module, call: int, x: Tensor) -> Tensor:
    """The module's output at its `call`-th call in ``model(x)``, kept by a forward hook."""
    outputs: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return outputs[call - 1]


def hooked_head(model: nn.Module, module: nn.Module, call: int,
                x: Tensor) -> Callable[[Tensor], Tensor]:
    """``head(A) -> logits`` for A [N, K, h, w]: the whole model rerun on N copies of the
    image x [1, 3, H, W], the module's output replaced by A at its `call`-th call only."""

    def head(a: Tensor) -> Tensor:
        seen = [0]

        def replace(_m: nn.Module, _i: object, out: Tensor) -> Tensor:
            seen[0] += 1
            return a if seen[0] == call else out

        handle = module.register_forward_hook(replace)
        try:
            return model(x.expand(a.shape[0], -1, -1, -1))
        finally:
            handle.remove()

    return head


def check_against_literal(model: nn.Module, layer: str, module: nn.Module, call: int,
                          x: Tensor, c: int, atol: float = 1e-5) -> None:
    """FD-CAM at `layer` (= call `call` of `module`) against `literal_fdcam` with the
    hooked head: activations, groups, s⁻, s⁺, α and the final map."""
    out = FDCAM(model, layer)(x, target=c)
    a = kth_output(model, module, call, x)[0]
    torch.testing.assert_close(out.activations[0], a)
    ref = literal_fdcam(hooked_head(model, module, call, x), a, c, tuple(x.shape[2:]))
    groups = [torch.nonzero(row).flatten().tolist() for row in out.groups[0]]
    assert groups == ref["groups"]
    scale = max(1.0, float(ref["off"].abs().max()), float(ref["on"].abs().max()))
    torch.testing.assert_close(out.switch_off[0], ref["off"], atol=atol * scale, rtol=0)
    torch.testing.assert_close(out.switch_on[0], ref["on"], atol=atol * scale, rtol=0)
    torch.testing.assert_close(out.alpha[0], ref["alpha"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.saliency[0], ref["saliency"], atol=1e-4, rtol=0)


# --------------------------------------------------------------------- FD-CAM, tiny model


@pytest.mark.parametrize("call", [1, 2])
def test_fdcam_at_a_call_of_a_shared_module_matches_the_literal(call: int) -> None:
    model = shared()
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    for c in (0, 3):
        check_against_literal(model, f"act#{call}", model.act, call, x, c)
    assert count_hooks(model) == 0


class DepthwiseBetweenCalls(nn.Module):
    """An MBConv-like block: ReLU6 after the expansion and after a depthwise conv called as
    a function (as EfficientNet-Lite's traced ``Conv2dStaticSamePadding``), then a
    projection, a non-linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 6, 1)
        self.act = nn.ReLU6()
        self.depthwise = nn.Parameter(torch.randn(6, 1, 3, 3))
        self.bn = nn.BatchNorm2d(6)
        self.project = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.expand(x))
        h = self.act(self.bn(torch.conv2d(h, self.depthwise, None, 1, 1, 1, 6)))
        return self.fc(torch.relu(self.project(h)).mean(dim=(2, 3)))


def test_first_call_before_a_depthwise_conv_takes_the_fast_path() -> None:
    torch.manual_seed(0)
    model = DepthwiseBetweenCalls().eval()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(2))
    stages = FDCAM(model, "act#1").split.stages
    assert stages is not None and stages.first is not None and stages.first.kind == "conv"
    for c in range(3):
        check_against_literal(model, "act#1", model.act, 1, x, c)


def test_the_second_call_is_not_the_first() -> None:  # a guard on the test itself
    model = shared()
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    first, second = (FDCAM(model, f"act#{k}")(x, target=0) for k in (1, 2))
    assert first.activations.shape[1] == 6 and second.activations.shape[1] == 10


def test_the_hook_split_cuts_at_the_same_call() -> None:
    """A model torch.fx cannot trace falls back to the hook split, at the named call."""

    class Untraceable(SharedActivation):
        def forward(self, x: Tensor) -> Tensor:
            if float(x.sum()) > 1e9:  # data-dependent control flow: no fx trace
                return x
            return super().forward(x)

    torch.manual_seed(0)
    model = Untraceable().eval()
    model.load_state_dict(shared().state_dict())
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="slow hook split"):
        split = split_model(model, "act#2")
    assert split.kind == "hook" and split.layer_name == "act#2"
    with pytest.warns(UserWarning, match="slow hook split"):
        check_against_literal(model, "act#2", model.act, 2, x, 1)
    with pytest.warns(UserWarning, match="slow hook split"), \
            pytest.raises(FdcamError, match="'act#3' is out of range"):
        FDCAM(model, "act#3")(x, target=0)


def test_plain_name_and_bad_calls_are_one_line_errors() -> None:
    model = shared()
    x = torch.randn(1, 3, 9, 9)
    with pytest.raises(FdcamError) as plain:
        FDCAM(model, "act")
    assert str(plain.value) == ("layer 'act' runs 2 times in one forward pass; name one call: "
                                "act#1, act#2")
    with pytest.raises(FdcamError) as beyond:
        FDCAM(model, "act#3")
    assert str(beyond.value) == ("layer 'act#3' is out of range: 'act' runs 2 times in one "
                                 "forward pass; expected act#1, act#2")
    for bad in ("act#0", "act#", "act#two", "act#-1"):
        with pytest.raises(FdcamError, match=f"layer '{bad}' names call"):
            FDCAM(model, bad)
    with pytest.raises(FdcamError, match="'conv1#2' is out of range: 'conv1' runs 1 time in"):
        FDCAM(model, "conv1#2")
    assert FDCAM(model, "conv1#1")(x, target=0).saliency.shape == (1, 9, 9)
    for method in ("gradcam", "groupcam"):
        with pytest.raises(FdcamError, match="name one call: act#1, act#2"):
            make_explainer(method, model, "act")(x, target=0)
        with pytest.raises(FdcamError, match="'act#3' is out of range"):
            make_explainer(method, model, "act#3")(x, target=0)
    assert count_hooks(model) == 0


def test_no_default_layer_lists_call_sites() -> None:
    with pytest.raises(FdcamError) as error:
        FDCAM(shared())
    assert str(error.value) == ("no default target layer for SharedActivation; pass "
                                "target_layer, for example one of its last layers with a "
                                "[B, K, h, w] output: act#1, conv2, act#2, conv3")


# ---------------------------------------------------------- FD-CAM, EfficientNet-Lite0


def test_fdcam_at_lite0_depthwise_activation_matches_the_literal() -> None:
    """`_blocks.15._swish#2`: block 15's ReLU6 after its depthwise conv + BN (1152 × h × w),
    real weights and a real photo (96 × 96: a 3 × 3 map keeps the literal reruns cheap)."""
    from fdcam.evaluation.photos import offline_photos
    from fdcam.models import load_model

    loaded = load_model("efficientnet-lite0")
    model = loaded.model
    photo = next(p for p in offline_photos() if p.name == "coffee").image
    x = F.interpolate(loaded.preprocess(photo).unsqueeze(0), size=(96, 96), mode="bilinear",
                      antialias=True)
    cam = FDCAM(model, "_blocks.15._swish#2")
    stages = cam.split.stages  # the fast path: the projection conv + BN folded, exact
    assert cam.split.kind == "graph" and stages is not None and stages.first is not None
    assert stages.first.kind == "conv"
    with torch.no_grad():
        c = int(model(x).argmax())
    check_against_literal(model, "_blocks.15._swish#2", model._blocks[15]._swish, 2, x, c,
                          atol=2e-5)


def test_lite0_swish_is_its_second_call() -> None:
    from fdcam.models import efficientnet_lite0

    model = efficientnet_lite0()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain, second = FDCAM(model, "_swish")(x), FDCAM(model, "_swish#2")(x)
    torch.testing.assert_close(plain.saliency, second.saliency, atol=0, rtol=0)
    torch.testing.assert_close(FDCAM(model, "_swish#1").split.body(x),
                               kth_output(model, model._swish, 1, x))
    with pytest.raises(FdcamError, match="'_swish#3' is out of range"):
        FDCAM(model, "_swish#3")


# ------------------------------------------------------------------------------ baselines

LAYER_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "scorecam", "ablationcam",
                 "groupcam")


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_baselines_at_a_call_site_equal_a_network_with_one_module_per_call(method: str) -> None:
    """The same method at ``act#2`` of the shared network and at ``act2`` of its twin with a
    module per call (an ordinary, once-called layer): the same map."""
    model, twin = shared(), separate()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    options = {"batch_size": 4} if method in ("scorecam", "ablationcam", "groupcam") else {}
    out = make_explainer(method, model, "act#2", **options)(x, target=[1, 4])
    ref = make_explainer(method, twin, "act2", **options)(x, target=[1, 4])
    assert out.saliency.shape == (2, 32, 32)
    torch.testing.assert_close(out.saliency, ref.saliency, atol=1e-5, rtol=0)
    assert out.saliency.std() > 0  # not a constant map
    assert count_hooks(model) == 0
    assert model.act is not None and type(model.act) is nn.ReLU  # Ablation-CAM put it back


def test_gradcam_at_a_call_site_equals_its_formula() -> None:
    """Grad-CAM by hand: α = mean ∂f_c/∂A at call 2, ReLU(Σ α A), the library's scaling
    ``(L − min)/(1e-7 + max)`` and OpenCV's bilinear resize."""
    import cv2

    model = shared()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    a = kth_output(model, model.act, 2, x)
    leaf = a.clone().requires_grad_(True)
    hooked_head(model, model.act, 2, x)(leaf)[0, 2].backward()
    alpha = leaf.grad[0].mean((1, 2))
    cam = torch.relu((alpha[:, None, None] * a[0]).sum(0)).numpy()
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    cam = cv2.resize(cam, (32, 32))
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    out = make_explainer("gradcam", model, "act#2")(x, target=2)
    np.testing.assert_allclose(out.saliency[0].numpy(), cam, atol=1e-5)


# -------------------------------------------------------------------------- CLI and compat


def test_compat_takes_a_call_site_name() -> None:
    from fdcam.compat import FDCAMCompat

    model = shared()
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    with FDCAMCompat(model=model, target_layers=["act#2"]) as cam:
        maps = cam(input_tensor=x, targets=[3])
    # Same map up to float32 rounding: the drop-in normalises in its own pass.
    np.testing.assert_allclose(maps, FDCAM(model, "act#2")(x, target=3).saliency.numpy(),
                               rtol=0, atol=1e-6)


def test_cli_explains_a_call_site(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from fdcam.cli import main
    from fdcam.evaluation.photos import offline_photos

    photo = next(p for p in offline_photos() if p.name == "coffee")
    image = tmp_path / "coffee.jpg"
    photo.image.save(image)
    out = tmp_path / "overlay.png"
    assert main(["explain", str(image), "--layer", "_blocks.15._swish#2", "--out",
                 str(out)]) == 0
    assert "fdcam map for class 967" in capsys.readouterr().out
    with Image.open(out) as overlay:
        assert overlay.size == (224, 224)


@pytest.mark.parametrize(("layer", "expected"), [
    ("_blocks.15._swish#3", "layer '_blocks.15._swish#3' is out of range: '_blocks.15._swish' "
                            "runs 2 times in one forward pass; expected _blocks.15._swish#1, "
                            "_blocks.15._swish#2"),
    ("_blocks.15._swish", "layer '_blocks.15._swish' runs 2 times in one forward pass; name "
                          "one call: _blocks.15._swish#1, _blocks.15._swish#2"),
    ("_blocks.99._swish#2", "unknown layer '_blocks.99._swish#2' of efficientnet-lite0"),
])
def test_cli_refuses_a_bad_call_site_before_loading(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        layer: str, expected: str) -> None:
    from PIL import Image

    import fdcam.models
    from fdcam.cli import main

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(fdcam.models, "load_model", never)
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    assert main(["explain", str(image), "--layer", layer, "--out", str(tmp_path / "o.png")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == ""
    assert lines[0].startswith(f"fdcam explain: error: {expected}")


def test_evaluate_records_a_call_site_in_a_folder_named_by_it(tmp_path: Path) -> None:
    """``fdcam evaluate --layer name#2``: rows in ``<layer>/faithfulness.csv`` (``#`` in a
    folder name), the layer in the file's identity."""
    from fdcam.cli import main
    from fdcam.evaluation.photos import offline_photos
    from fdcam.evaluation.results_file import read_results

    photo = tmp_path / "coffee.jpg"
    next(p for p in offline_photos() if p.name == "coffee").image.save(photo)
    out = tmp_path / "_blocks.15._swish#2" / "faithfulness.csv"
    argv = ["evaluate", "--model", "efficientnet-lite0", "--layer", "_blocks.15._swish#2",
            "--images", str(photo), "--methods", "gradcam", "--out", str(out)]
    assert main(argv) == 0
    table = read_results(out)
    assert table["error"].isna().all() and len(table) == 1
    assert table.attrs["fdcam_results"]["layer"] == "_blocks.15._swish#2"
    assert main(argv) == 0  # resumes: the same identity, nothing new
    assert len(read_results(out)) == 1
