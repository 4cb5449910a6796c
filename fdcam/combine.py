"""Combination of gradient- and score-based weights (§III-C, Eq. 9–10, Table IV).

α (Grad-CAM, Eq. 2) and s (grouped switching, Eq. 8) live on different scales, so both are
min-max normalised over the channels of each (image, class) and then combined by ρ:

* ``"exp_minus_bias"`` — Eq. 10, the paper's scheme: ``ρ = α̂ · e^ŝ − b`` (b = 0.5).
* ``"exp_shifted"`` — the label of Table IV's best row: ``ρ = α̂ · e^{ŝ − b}``.
* ``"exp"`` — Table IV: ``ρ = α̂ · e^ŝ``.
* ``"product"`` — Table IV: ``ρ = α̂ · ŝ``.

Note that ``α̂ · e^{ŝ − b} = e^{−b} · α̂ · e^ŝ``: a positive constant factor, which the ReLU
and the final min-max of Eq. 11 remove. ``"exp_shifted"`` therefore gives exactly the maps of
``"exp"``, and only Eq. 10's subtraction can make Table IV's third row differ from its second.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from fdcam.errors import FdcamError

Combination = Literal["exp_minus_bias", "exp_shifted", "exp", "product"]
COMBINATIONS: tuple[Combination, ...] = ("exp_minus_bias", "exp_shifted", "exp", "product")
BIAS = 0.5  # the paper's b


def min_max(values: Tensor, dim: int = -1) -> Tensor:
    """Min-max normalisation to [0, 1] along `dim`: ``(v − min) / (max − min)``.

    A constant vector (max = min) maps to zeros — never NaN.
    """
    low = values.amin(dim=dim, keepdim=True)
    span = values.amax(dim=dim, keepdim=True) - low
    return torch.where(span > 0, (values - low) / torch.where(span > 0, span, 1), 0.0)


def min_max_maps(maps: Tensor) -> Tensor:
    """`min_max` of each map: over the last two axes, [..., H, W] -> [..., H, W] in [0, 1]
    (the CAM's last step, Eq. 11, and the baselines' and figures' normalisation)."""
    return min_max(maps.flatten(-2)).view_as(maps)


def combine_weights(
    alpha: Tensor,
    scores: Tensor,
    combination: Combination = "exp_minus_bias",
    bias: float = BIAS,
) -> Tensor:
    """Weights ω_c^k = ρ(α_c^k, s_c^k) (Eq. 9) with ρ chosen by `combination` (Eq. 10).

    alpha, scores: [..., K] (normalised here over the last axis) -> ω: [..., K]
    """
    check_combination(combination)
    a_hat, s_hat = min_max(alpha), min_max(scores)
    if combination == "exp_minus_bias":
        return a_hat * torch.exp(s_hat) - bias
    if combination == "exp_shifted":
        return a_hat * torch.exp(s_hat - bias)
    if combination == "exp":
        return a_hat * torch.exp(s_hat)
    return a_hat * s_hat


def check_combination(combination: str) -> None:
    if combination not in COMBINATIONS:
        raise FdcamError(f"unknown combination {combination!r}; "
                         f"available: {', '.join(COMBINATIONS)}")
