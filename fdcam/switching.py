"""Grouped channel switching (§III-B, Eq. 6–8).

For each channel k, the channels of its similarity group G(k) are switched off together
(their activations set to zero) or switched on alone (every other channel set to zero), and
the change of the raw class score f_c is read off:

* switch-off score (Eq. 6): ``s⁻ = f_c(X) − f_c^{k−}(X)``
* switch-on score (Eq. 7):  ``s⁺ = f_c^{k+}(X)``
* switching score (Eq. 8):  ``s = (s⁻ + s⁺) / 2``

All 2K masks of an image are evaluated at once, through the head only (the body ran once),
by `fdcam.staged.masked_class_scores`: exact, each distinct mask once, and fast where the
head's stages allow it (see that module).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fdcam.split import Context, Split
from fdcam.staged import LinearTerms, masked_class_scores


@dataclass(frozen=True)
class SwitchScores:
    """Scores of grouped channel switching for B images and C classes per image.

    ``full``: f_c(X) [B, C] as computed on the switching path; ``off``: s⁻ [B, C, K];
    ``on``: s⁺ [B, C, K] (None when switch-on is disabled); ``score``: s [B, C, K] (Eq. 8,
    or s⁻ alone without switch-on); ``evaluations``: distinct masks evaluated per image [B].
    """

    full: Tensor
    off: Tensor
    on: Tensor | None
    score: Tensor
    evaluations: Tensor


def switch_off_score(full: Tensor, switched_off: Tensor) -> Tensor:
    """Switch-off score (Eq. 6): ``s_c^{k−} = f_c(X) − f_c^{k−}(X)``.

    full: [..., 1] or broadcastable, switched_off: [..., K] -> [..., K]
    """
    return full - switched_off


def switching_score(off: Tensor, on: Tensor | None) -> Tensor:
    """Grouped switching score (Eq. 8): ``s_c^k = (s_c^{k−} + s_c^{k+}) / 2``.

    Without switch-on (Table III's ``off`` variants) the score is s⁻ alone.
    """
    return off if on is None else (off + on) / 2


def switching_masks(groups: Tensor, switch_on: bool = True) -> Tensor:
    """The masks of one batch: row 0 keeps every channel (f_c(X)), then the switch-on masks
    (only G(k) on, if asked for), then the switch-off masks (G(k) off).

    groups: bool [B, K, K] -> masks: bool [B, 1 + 2K, K] (or [B, 1 + K, K])
    """
    b, k, _ = groups.shape
    keep_all = torch.ones(b, 1, k, dtype=torch.bool, device=groups.device)
    parts = [keep_all, groups, ~groups] if switch_on else [keep_all, ~groups]
    return torch.cat(parts, dim=1)


def switch_scores(
    split: Split,
    a: Tensor,
    groups: Tensor,
    targets: Tensor,
    context: Context = (),
    *,
    switch_on: bool = True,
    batch_size: int = 64,
    terms: LinearTerms | None = None,
) -> SwitchScores:
    """Grouped switching scores (Eq. 6–8) for every channel, class and image.

    a: [B, K, h, w] activations; groups: bool [B, K, K]; targets: long [B, C];
    context: what `Split.forward_body` returned besides A. ``batch_size`` bounds the
    number of masks per head call.
    """
    k = a.shape[1]
    masks = switching_masks(groups, switch_on)
    values, evaluations = masked_class_scores(split, a, masks, targets, context,
                                              batch_size=batch_size, terms=terms)
    values = values.transpose(1, 2)  # [B, C, rows]
    full = values[..., 0]
    off_rows = values[..., 1 + k:] if switch_on else values[..., 1:]
    off = switch_off_score(full.unsqueeze(-1), off_rows)
    # Switch-on score (Eq. 7): s_c^{k+} = f_c^{k+}(X), the class score with only G(k) on —
    # the masked head's output itself, no arithmetic.
    on = values[..., 1: 1 + k] if switch_on else None
    return SwitchScores(full, off, on, switching_score(off, on), evaluations)
