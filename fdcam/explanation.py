"""The result of explaining a batch, and the one interface every method offers.

`Explanation` is the dataclass shared by FD-CAM and the baselines; `Explainer` is the
protocol they all satisfy (`fdcam.FDCAM`, every class of `fdcam.baselines`): called with
images and target classes, it returns an `Explanation`. The evaluation
(`fdcam.evaluation.runner.evaluate`) needs nothing more of a method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from fdcam.targets import Target


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


@runtime_checkable
class Explainer(Protocol):
    """A saliency method: ``explainer(x [B, 3, H, W], target) -> Explanation``.

    ``target`` is None (each image's top-1 class), an int, a [B] tensor or sequence (one
    class per image), or a [B, C] tensor or nested sequence (C classes per image); the
    saliency is [B, H, W] in [0, 1], or [B, C, H, W] with a class axis.
    """

    def __call__(self, x: Tensor, target: Target | None = None) -> Explanation: ...
