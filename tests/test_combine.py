"""Eq. 9–10 and the Table IV alternatives."""

from __future__ import annotations

import math

import pytest
import torch

from fdcam import FdcamError
from fdcam.cam import class_activation_map
from fdcam.combine import combine_weights, min_max


def test_min_max_by_hand_and_constant_vectors() -> None:
    assert min_max(torch.tensor([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert min_max(torch.tensor([[5.0, 5.0], [1.0, 3.0]])).tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert min_max(torch.zeros(1, 4)).tolist() == [[0.0] * 4]


def test_combinations_by_hand() -> None:
    alpha = torch.tensor([0.0, 2.0, 1.0])  # α̂ = [0, 1, 0.5]
    scores = torch.tensor([10.0, 30.0, 20.0])  # ŝ = [0, 1, 0.5]
    e = math.exp
    expected = {
        "exp_minus_bias": [0 * e(0) - 0.5, 1 * e(1) - 0.5, 0.5 * e(0.5) - 0.5],
        "exp_shifted": [0.0, e(0.5), 0.5 * e(0.0)],
        "exp": [0.0, e(1), 0.5 * e(0.5)],
        "product": [0.0, 1.0, 0.25],
    }
    for name, values in expected.items():
        got = combine_weights(alpha, scores, name)  # type: ignore[arg-type]
        torch.testing.assert_close(got, torch.tensor(values))
    torch.testing.assert_close(combine_weights(alpha, scores, bias=0.2),
                               torch.tensor(expected["exp"]) - 0.2)


def test_exp_shifted_gives_exactly_the_maps_of_exp() -> None:
    """α̂·e^{ŝ−b} = e^{−b}·α̂·e^ŝ: ReLU and the final min-max remove the constant."""
    a = torch.rand(2, 16, 5, 5)
    alpha, scores = torch.randn(2, 1, 16), torch.randn(2, 1, 16)
    shifted = class_activation_map(a, combine_weights(alpha, scores, "exp_shifted"), (20, 20))
    plain = class_activation_map(a, combine_weights(alpha, scores, "exp"), (20, 20))
    torch.testing.assert_close(shifted, plain)
    differs = class_activation_map(a, combine_weights(alpha, scores, "exp_minus_bias"), (20, 20))
    assert not torch.allclose(differs, plain)


def test_constant_inputs_are_finite() -> None:
    w = combine_weights(torch.ones(3, 8), torch.full((3, 8), 7.0))
    assert torch.isfinite(w).all()
    assert torch.equal(w, torch.full((3, 8), -0.5))


def test_unknown_combination() -> None:
    with pytest.raises(FdcamError, match="unknown combination 'max'; available: exp_minus_bias"):
        combine_weights(torch.ones(2), torch.ones(2), "max")  # type: ignore[arg-type]
