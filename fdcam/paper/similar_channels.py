"""What chapter 01 (channel similarity) shows beside Eq. 4–5: each channel's closest twin,
and channels with different features for the paper's Fig. 3.

Used by the book only; FD-CAM itself never calls them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fdcam.checks import check_positive_int
from fdcam.errors import FdcamError


def closest_similarity(similarity: Tensor) -> Tensor:
    """Each channel's highest similarity with *another* channel: its closest twin.

    similarity: [..., K, K] (Eq. 4) -> [..., K]. A value near 1 says that the layer holds a
    near-copy of the channel, so switching the channel off alone hides little (§III-A).
    A zero channel's closest similarity is 0.
    """
    k = similarity.shape[-1]
    if k < 2:
        return torch.zeros(similarity.shape[:-1], dtype=similarity.dtype,
                           device=similarity.device)
    itself = torch.eye(k, dtype=torch.bool, device=similarity.device)
    return similarity.masked_fill(itself, -torch.inf).amax(dim=-1)


def representative_channels(a: Tensor, groups: Tensor, n: int = 3) -> list[int]:
    """n channels that show n different features, for the paper's Fig. 3.

    Channels are taken in order of decreasing activation mass ``Σ_ij A_ij^k``; a channel is
    skipped when it lies in the group of a channel already chosen, or one of those lies in
    its group. a: [K, h, w]; groups: bool [K, K] (Eq. 5) -> up to n channel indices (fewer
    when the layer has fewer active channels with pairwise separate groups).
    """
    if a.ndim != 3 or groups.shape != (a.shape[0], a.shape[0]):
        raise FdcamError(f"expected a: [K, h, w] and groups: [K, K]; got {list(a.shape)} and "
                         f"{list(groups.shape)}")
    check_positive_int(n, "n")
    mass = a.flatten(1).sum(dim=1)
    chosen: list[int] = []
    for k in torch.argsort(mass, descending=True, stable=True).tolist():
        if len(chosen) == n or mass[k] <= 0:
            break
        if not any(bool(groups[c, k]) or bool(groups[k, c]) for c in chosen):
            chosen.append(k)
    return chosen
