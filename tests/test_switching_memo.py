"""FD-CAM's variants sharing one image's switching (`fdcam.switching_memo`): the same maps as
each variant alone, the work done once, and never reused for another input or model state."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import Tensor

import fdcam.cam
from fdcam import FDCAM
from fdcam.baselines import FDCAM_VARIANTS, make_explainer
from fdcam.switching_memo import SwitchingMemo
from tests.models import tiny_sequential

VARIANTS = ("fdcam", "fdcam-ng-off", "fdcam-g-off", "fdcam-product", "fdcam-exp")


def _inputs(seed: int = 1) -> Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _count_switching(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Patch FD-CAM's switching to record each call's switch_on."""
    calls: list[bool] = []
    real = fdcam.cam.switch_scores

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs["switch_on"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fdcam.cam, "switch_scores", counted)
    return calls


def test_variants_sharing_a_memo_make_the_maps_each_makes_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, target = tiny_sequential(), _inputs(), [[1, 4], [7, 1]]
    alone = {name: make_explainer(name, model, target_layer="3")(x, target)
             for name in VARIANTS}
    calls = _count_switching(monkeypatch)
    memo = SwitchingMemo()
    shared = {}
    for name in VARIANTS:
        cam = make_explainer(name, model, target_layer="3")
        cam.memo = memo
        shared[name] = cam(x.clone(), target)  # a copy, as the runner passes each method
    # Switching ran for the full variant and for ng-off; product and exp reused the full
    # one, g-off its switch-off half.
    assert calls == [True, False]
    assert (memo.hits, memo.misses) == (3, 2)
    for name in VARIANTS:
        a, b = alone[name], shared[name]
        torch.testing.assert_close(b.scores, a.scores, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b.weights, a.weights, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b.saliency, a.saliency, rtol=1e-6, atol=1e-6)
        assert torch.equal(b.groups, a.groups)
        assert (b.switch_on is None) == (not FDCAM_VARIANTS[name].get("switch_on", True))


def test_a_memo_is_not_reused_for_another_input_targets_model_or_weights(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = tiny_sequential(), _inputs()
    calls = _count_switching(monkeypatch)
    memo = SwitchingMemo()

    def explain(model: torch.nn.Module, x: Tensor, target: list[int],
                combination: str = "exp_minus_bias") -> Tensor:
        cam = FDCAM(model, "3", combination=combination)  # type: ignore[arg-type]
        cam.memo = memo
        return cam(x, target).saliency

    first = explain(model, x, [1, 2])
    explain(model, x, [1, 2], "product")
    assert len(calls) == 1
    nudged = x.clone()
    nudged[1, 0, 5, 5] += 1e-3
    explain(model, nudged, [1, 2])  # one value differs
    explain(model, x, [1, 3])  # another target
    explain(tiny_sequential(), x, [1, 3])  # another model object, the same weights
    assert len(calls) == 4
    other = tiny_sequential()
    with torch.no_grad():
        other[2].weight[0] += 0.5  # the weights change in place
    before = explain(other, x, [1, 2])
    assert len(calls) == 5 and not torch.allclose(before, first)
    again = explain(other, x, [1, 2])
    assert len(calls) == 5
    torch.testing.assert_close(again, before, rtol=0, atol=0)
    with torch.no_grad():
        other[2].weight[0] -= 0.5
    torch.testing.assert_close(explain(other, x, [1, 2]), first, rtol=1e-6, atol=1e-6)
    assert len(calls) == 6


def test_evaluate_shares_switching_between_variants_with_the_same_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fdcam.evaluation.results_file import read_results
    from fdcam.evaluation.runner import evaluate

    model = tiny_sequential()
    pictures = [(f"img{i}", _inputs(10 + i)[0]) for i in range(2)]
    methods = {name: functools.partial(make_explainer, name, target_layer="3")
               for name in ("fdcam", "fdcam-g-off", "fdcam-product")}
    calls = _count_switching(monkeypatch)
    tables = {}
    for share in (False, True):
        calls.clear()
        path = tmp_path / f"{share}.csv"
        evaluate(pictures, methods, model, path, share_switching=share, batch_size=4)
        assert len(calls) == (2 if share else 6)  # per image: once, or once per variant
        tables[share] = read_results(path).set_index(["image", "method"]).sort_index()
    metrics = ["probability", "insertion", "deletion", "overall"]
    gap = (tables[True][metrics] - tables[False][metrics]).abs().to_numpy().max()
    assert gap <= 1e-6


def test_what_a_memo_hands_out_is_a_copy_and_a_replaced_weight_is_seen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = tiny_sequential(), _inputs()
    calls = _count_switching(monkeypatch)
    memo = SwitchingMemo()
    cams = [FDCAM(model, "3"), FDCAM(model, "3", combination="product")]
    for cam in cams:
        cam.memo = memo
    first = cams[0](x, [1, 2])
    kept = first.scores.clone()
    first.scores.zero_()  # a caller changing its explanation in place
    second = cams[1](x, [1, 2])
    assert len(calls) == 1 and torch.equal(second.scores, kept)
    with torch.no_grad():  # the same values in a new tensor: not the weights the memo saw
        model[2].weight = torch.nn.Parameter(model[2].weight.detach().clone())
    cams[1](x, [1, 2])
    assert len(calls) == 2


def test_evaluate_takes_its_memo_off_the_explainers_it_built(tmp_path: Path) -> None:
    from fdcam.evaluation.runner import evaluate

    model = tiny_sequential()
    shared = FDCAM(model, "3")
    evaluate([("img0", _inputs(3)[0])], {"fdcam": lambda _model: shared}, model,
             tmp_path / "rows.csv", batch_size=4)
    assert shared.memo is None
