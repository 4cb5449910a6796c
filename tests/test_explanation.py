"""fdcam.explanation: one interface, `Explainer`, that FD-CAM and every baseline satisfy —
``explainer(x, target=None) -> Explanation`` — so the evaluation needs nothing more."""

from __future__ import annotations

import inspect

import pytest
import torch

from fdcam import FDCAM, Explainer, Explanation
from fdcam.baselines import METHODS, make_explainer
from tests.baselines.test_baselines import FAST_OPTIONS, images, tiny_cnn


def _check_interface(explainer: object) -> None:
    assert isinstance(explainer, Explainer)
    parameters = list(inspect.signature(explainer).parameters.values())  # type: ignore[arg-type]
    assert [p.name for p in parameters[:2]] == ["x", "target"]
    assert parameters[1].default is None  # target: each image's top-1 class by default


def test_fdcam_is_an_explainer() -> None:
    explainer = FDCAM(tiny_cnn(), "4")
    _check_interface(explainer)
    out = explainer(images())
    assert isinstance(out, Explanation) and out.saliency.shape == (2, 32, 32)


@pytest.mark.parametrize("name", METHODS)
def test_every_registered_method_is_an_explainer(name: str) -> None:
    explainer = make_explainer(name, tiny_cnn(), "4", **FAST_OPTIONS.get(name, {}))
    _check_interface(explainer)
    out = explainer(images(), target=torch.tensor([0, 3]))
    assert isinstance(out, Explanation)
    assert out.saliency.shape == (2, 32, 32)
    assert out.targets.tolist() == [[0], [3]]


def test_a_plain_function_is_an_explainer_too() -> None:
    def constant(x: torch.Tensor, target: object = None) -> Explanation:
        return Explanation(saliency=torch.zeros(x.shape[0], *x.shape[2:]),
                           targets=torch.zeros(x.shape[0], 1, dtype=torch.long))

    _check_interface(constant)
