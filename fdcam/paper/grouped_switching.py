"""What chapter 02 (grouped switching) shows beside Eq. 6–8: the grouped score of a head
that is linear in A as a sum of single-channel scores, and the count of distinct masks.

Used by the book only; FD-CAM itself never calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fdcam.staged import distinct_masks
from fdcam.switching import switching_masks


def grouped_from_single(groups: Tensor, single_off: Tensor) -> Tensor:
    """Eq. 6 for a head that is linear in A: the grouped score is a sum of single scores.

    When ``f_c(A ⊙ m) = f_c(0) + Σ_l m_l C_l`` (EfficientNet-Lite0's pooling + dropout +
    Linear head; not VGG16's, whose hidden ReLUs break the sum), switching a group off
    removes exactly the single-channel switch-off scores of its members:
    ``s⁻(G(k)) = Σ_{l ∈ G(k)} s⁻({l})``. A feature shared by many near-duplicate channels
    is split among them by single-channel ablation, and gathered again by the group.

    groups: bool [B, K, K]; single_off: s⁻ with G(k) = {k}, [B, K] or [B, C, K]
    -> the grouped s⁻ that a linear head gives, same shape as `single_off`.
    """
    g = groups.to(single_off.dtype)
    if single_off.ndim == 2:
        return (g @ single_off.unsqueeze(-1)).squeeze(-1)
    return single_off @ g.transpose(1, 2)


@dataclass(frozen=True)
class MaskCensus:
    """How many of the 1 + 2K masks of `switching_masks` differ, per image [B].

    ``nominal``: 1 + 2K (1 + K without switch-on); ``zero_channels``: channels whose
    activations are identically zero (switching them changes nothing, so their masks equal
    the full mask or the all-off mask); ``distinct_groups``: distinct groups of the other
    channels, compared on those channels; ``evaluations``: distinct masks, i.e. the head
    evaluations `switch_scores` makes.
    """

    nominal: Tensor
    zero_channels: Tensor
    distinct_groups: Tensor
    evaluations: Tensor


def mask_census(a: Tensor, groups: Tensor, switch_on: bool = True) -> MaskCensus:
    """Count the distinct channel masks behind Eq. 6–8, and why there are fewer than 1 + 2K.

    Two masks give the same scores when they agree on every channel that is not
    identically zero (zeroing a zero channel changes nothing), so `switch_scores` evaluates
    each such class of masks once. a: [B, K, h, w]; groups: bool [B, K, K].
    """
    b, k = a.shape[:2]
    masks = switching_masks(groups, switch_on)
    active = a.flatten(2).ne(0).any(-1)
    distinct_groups, evaluations = [], []
    for i in range(b):
        on = groups[i][active[i]][:, active[i]]
        distinct_groups.append(torch.unique(on, dim=0).shape[0] if on.numel() else 0)
        evaluations.append(distinct_masks(masks[i], active[i])[0].shape[0])
    return MaskCensus(
        nominal=torch.full((b,), masks.shape[1], dtype=torch.long),
        zero_channels=(k - active.sum(-1)).cpu(),
        distinct_groups=torch.tensor(distinct_groups, dtype=torch.long),
        evaluations=torch.tensor(evaluations, dtype=torch.long),
    )
