"""The result of explaining a batch: one dataclass shared by FD-CAM and the baselines."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Explanation:
    """Saliency maps and, for CAM methods, the weights that made them.

    Shapes: without a class axis ``saliency`` is [B, H, W] and weights are [B, K]; when C
    classes per image were asked for, [B, C, H, W] and [B, C, K]. Saliency is at input
    resolution, in [0, 1]. ``targets`` is always [B, C] (C = 1 without a class axis).
    Fields that a method does not compute are None.
    """

    saliency: Tensor
    targets: Tensor
    weights: Tensor | None = None  # ω, Eq. 9–10 (or the method's own CAM weights)
    alpha: Tensor | None = None  # Grad-CAM weights α, Eq. 2
    scores: Tensor | None = None  # grouped switching scores s, Eq. 8
    logits: Tensor | None = None  # [B, num_classes], the model's raw output
    method: str = ""
