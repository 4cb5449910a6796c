"""Channel similarity and similarity groups (§III-A, Eq. 4–5).

Channels of one layer often carry near-copies of the same feature (paper Fig. 3); switching
one of them off barely moves the class score because its twins stay on. FD-CAM therefore
perturbs each channel together with its *similarity group*.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fdcam.checks import check_fraction

THETA = 0.05  # the paper's θ = 5 %: the top 5 % most similar channels form a group

# Similarities are rounded to multiples of 2^-36 (≈ 1.5e-11). Channels often tie exactly in
# similarity (duplicated or one-pixel channels, common after ReLU and max-pooling), and a
# tie at τ must not be decided by the last bit of a float64 matrix product, whose rounding
# depends on where a channel sits in the matrix. 1.5e-11 is far below what float32
# activations can resolve, so no real difference between similarities is lost.
SIMILARITY_RESOLUTION = 2.0**-36
_ROUNDING_OFFSET = 1.5 * 2.0**16  # float64's spacing in [2^16, 2^17) is 2^-36


def channel_similarity(a: Tensor) -> Tensor:
    """Cosine-similarity matrix M of the channels (Eq. 4).

    ``M[b, k, l] = cos(A^k, A^l) = v^k · v^l / (‖v^k‖ ‖v^l‖)`` with ``v^k`` the flattened
    channel ``A^k``. A channel that is identically zero has similarity 0 with every channel,
    itself included (the formula is 0/0 there; 0 says "similar to nothing").

    A: [B, K, h, w] -> M: [B, K, K], float64 (so that near-ties between channels are decided
    by the data, not by float32 rounding), clamped to [-1, 1] and rounded to multiples of
    `SIMILARITY_RESOLUTION` so that equal similarities compare equal.
    """
    v = a.flatten(2).to(torch.float64)
    norm = v.norm(dim=-1, keepdim=True)
    unit = torch.where(norm > 0, v / norm.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    cos = (unit @ unit.transpose(1, 2)).clamp_(-1.0, 1.0)
    # round(cos / 2^-36) · 2^-36 in two in-place passes: every cos + 1.5·2^16 lies in
    # [2^16, 2^17), where float64's spacing is exactly 2^-36, so the addition itself rounds
    # to the grid (to nearest, ties to even, as torch.round) and the subtraction is exact.
    return cos.add_(_ROUNDING_OFFSET).sub_(_ROUNDING_OFFSET)


def group_thresholds(similarity: Tensor, theta: float = THETA) -> Tensor:
    """Per-channel thresholds τ_θ^k of Eq. 5: the (1 − θ) quantile of row k of M.

    Linear interpolation between order statistics, exactly as ``torch.quantile`` (which
    cannot take more than 16 M elements, hence this version): with sorted row ``v`` and
    ``p = (1 − θ)(K − 1)``, ``τ = lerp(v[⌊p⌋], v[⌊p⌋ + 1], p − ⌊p⌋)``. Both order
    statistics lie in the top θ·K + 1 of the row, so a partial sort (top-k) suffices.

    similarity: [..., K, K] -> τ: [..., K]
    """
    check_fraction(theta, "theta")
    k = similarity.shape[-1]
    position = torch.tensor((1.0 - theta) * (k - 1), dtype=similarity.dtype)
    lower = int(position.floor())
    upper = min(lower + 1, k - 1)
    top = similarity.topk(k - lower, dim=-1).values  # descending: v[K-1], …, v[lower]
    weight = (position - lower).to(similarity.device)
    return torch.lerp(top[..., k - 1 - lower], top[..., k - 1 - upper], weight)


def similarity_groups(similarity: Tensor, theta: float = THETA) -> Tensor:
    """Similarity groups (Eq. 5): ``G(A^k) = {A^l : cos(A^k, A^l) > τ_θ^k}``.

    similarity: [..., K, K] -> groups: bool [..., K, K], ``groups[..., k, l]`` is True when
    channel l belongs to channel k's group. A zero channel's group is empty (its row of M is
    all 0 and nothing exceeds 0); the strict ">" also leaves out ties at the threshold.
    """
    return similarity > group_thresholds(similarity, theta).unsqueeze(-1)
