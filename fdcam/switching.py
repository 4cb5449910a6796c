"""Grouped channel switching (§III-B, Eq. 6–8).

For each channel k, the channels of its similarity group G(k) are switched off together
(their activations set to zero) or switched on alone (every other channel set to zero), and
the change of the raw class score f_c is read off:

* switch-off score (Eq. 6): ``s⁻ = f_c(X) − f_c^{k−}(X)``
* switch-on score (Eq. 7):  ``s⁺ = f_c^{k+}(X)``
* switching score (Eq. 8):  ``s = (s⁻ + s⁺) / 2``

All 2K masks of an image are evaluated at once. Two paths give the same numbers:

* the *linear-head fast path* (heads that begin with channel-wise modules, Flatten and a
  Linear layer: VGG16, ResNet, EfficientNet). Masking happens before the channel-wise
  modules, so channel k enters the first Linear layer either as ``P_k = g(A_k)`` (on) or as
  ``Z_k = g(0)`` (off). With ``D_k = W₁[:, block k] · (P_k − Z_k)`` computed once per image,
  the first layer's output for a mask m is ``b₁ + W₁·Z + Σ_k m_k D_k`` — one matrix product
  for all masks — and only the target rows of the last Linear layer are computed.
* the *generic path*: the head rerun on ``A ⊙ m`` for every mask, in chunks.

Both paths evaluate each distinct mask once: channels that are identically "off" already
(``P_k = Z_k``, e.g. all-zero activations) cannot change the score, so masks that agree on
the other channels share one evaluation. This is exact, not an approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fdcam.split import LinearHead, Split

# Upper bound on temporary elements (float32) of one chunk: about 16 MB.
_CHUNK_ELEMENTS = 4 * 1024 * 1024


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


def switch_on_score(switched_on: Tensor) -> Tensor:
    """Switch-on score (Eq. 7): ``s_c^{k+} = f_c^{k+}(X)``, the score with only G(k) on."""
    return switched_on


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
    x: Tensor | None = None,
    *,
    switch_on: bool = True,
    batch_size: int = 64,
    terms: LinearTerms | None = None,
) -> SwitchScores:
    """Grouped switching scores (Eq. 6–8) for every channel, class and image.

    a: [B, K, h, w] activations; groups: bool [B, K, K]; targets: long [B, C];
    x: [B, 3, H, W], only for hook splits. ``batch_size`` bounds the generic path's chunks.
    """
    k = a.shape[1]
    masks = switching_masks(groups, switch_on)
    values, evaluations = masked_class_scores(split, a, masks, targets, x,
                                              batch_size=batch_size, terms=terms)
    values = values.transpose(1, 2)  # [B, C, rows]
    full = values[..., 0]
    off_rows = values[..., 1 + k:] if switch_on else values[..., 1:]
    off = switch_off_score(full.unsqueeze(-1), off_rows)
    on = switch_on_score(values[..., 1: 1 + k]) if switch_on else None
    return SwitchScores(full, off, on, switching_score(off, on), evaluations)


def masked_class_scores(
    split: Split,
    a: Tensor,
    masks: Tensor,
    targets: Tensor,
    x: Tensor | None = None,
    *,
    batch_size: int = 64,
    terms: LinearTerms | None = None,
) -> tuple[Tensor, Tensor]:
    """Target-class logits with the activations masked channel-wise, ``f_c(A ⊙ m)``.

    a: [B, K, h, w]; masks: bool [B, n, K]; targets: long [B, C]; `terms` may carry the
    linear-head terms already computed for this batch
    -> (scores [B, n, C], distinct masks evaluated per image [B])
    """
    with torch.no_grad():
        if split.linear_head is not None:
            return _linear_head_scores(split.linear_head, a, masks, targets, terms)
        return _generic_scores(split, a, masks, targets, x, batch_size)


def _distinct(masks: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct masks on the active channels: (unique rows [u, K_active], inverse [n])."""
    key = masks[:, active]
    if key.shape[1] == 0:  # nothing is active: every mask gives the same score
        return key[:1], torch.zeros(masks.shape[0], dtype=torch.long, device=masks.device)
    return torch.unique(key, dim=0, return_inverse=True)


def _generic_scores(split: Split, a: Tensor, masks: Tensor, targets: Tensor,
                    x: Tensor | None, batch_size: int) -> tuple[Tensor, Tensor]:
    b, n, k = masks.shape
    out = torch.empty(b, n, targets.shape[1], dtype=a.dtype, device=a.device)
    evaluations = torch.empty(b, dtype=torch.long)
    active = a.flatten(2).ne(0).any(-1)  # zeroing an all-zero channel changes nothing
    for i in range(b):
        unique, inverse = _distinct(masks[i], active[i])
        full = torch.ones(unique.shape[0], k, dtype=a.dtype, device=a.device)
        full[:, active[i]] = unique.to(a.dtype)
        rows = []
        for start in range(0, full.shape[0], batch_size):
            m = full[start: start + batch_size]
            masked = a[i] * m[:, :, None, None]
            images = None if x is None else x[i: i + 1].expand(m.shape[0], *x.shape[1:])
            logits = split.head(masked, images)
            rows.append(logits[:, targets[i].to(logits.device)])
        out[i] = torch.cat(rows)[inverse]
        evaluations[i] = unique.shape[0]
    return out, evaluations


@dataclass(frozen=True)
class LinearTerms:
    """What a `LinearHead` needs once per batch, shared by switching and gradients.

    ``delta``: P − Z [B, K, m] (channel on minus channel off, after the channel-wise
    modules); ``active``: channels whose switching can change anything [B, K];
    ``base``: b₁ + W₁·Z, the first layer's output with every channel off [H];
    ``contributions``: D [B, K, H] with ``D_k = W₁[:, block k]·δ_k`` (None when the first
    Linear layer is the classifier: then only target rows are ever computed).
    """

    delta: Tensor
    active: Tensor
    base: Tensor
    contributions: Tensor | None

    def first_layer(self) -> Tensor:
        """The first Linear layer's output with every channel on, b₁ + W₁·P: [B, H]."""
        if self.contributions is None:
            raise ValueError("no contributions were computed for this head")
        return self.base + self.contributions.sum(dim=1)


def linear_terms(head: LinearHead, a: Tensor) -> LinearTerms:
    """Per-batch terms of the fast path (see the module docstring). a: [B, K, h, w]."""
    with torch.no_grad():
        first = head.first
        k = a.shape[1]
        pooled = head.channel_wise(a.clone()).flatten(2)  # P: [B, K, m]; clone: in-place ops
        zero = head.channel_wise(torch.zeros_like(a[:1])).flatten(2)  # Z = g(0): [1, K, m]
        delta = pooled - zero
        bias = first.bias if first.bias is not None else first.weight.new_zeros(first.out_features)
        # b₁ + W₁·Z; the product is skipped when Z = 0 (pooling), saving a pass over W₁.
        base = bias + first.weight @ zero.flatten() if zero.any() else bias.clone()
        contributions = None
        if len(head.layers):
            weight = first.weight.view(first.out_features, k, -1)  # W₁ as [H, K, m]
            contributions = _contributions(weight, delta)
        return LinearTerms(delta, delta.ne(0).any(-1), base, contributions)


def _linear_head_scores(head: LinearHead, a: Tensor, masks: Tensor,
                        targets: Tensor, terms: LinearTerms | None) -> tuple[Tensor, Tensor]:
    b, n, k = masks.shape
    terms = linear_terms(head, a) if terms is None else terms
    delta, active, base = terms.delta, terms.active, terms.base
    targets = targets.to(a.device)
    uniques, inverses = zip(*(_distinct(masks[i], active[i]) for i in range(b)), strict=True)
    evaluations = torch.tensor([u.shape[0] for u in uniques])

    if terms.contributions is None:  # the first Linear is the classifier: only target rows
        weight = head.first.weight.view(head.first.out_features, k, -1)
        rows = []
        for i in range(b):
            t = targets[i]
            d = _contributions(weight[t][:, active[i]], delta[i: i + 1, active[i]])[0]  # [Ka, C]
            rows.append((base[t] + uniques[i].to(a.dtype) @ d)[inverses[i]])
        return torch.stack(rows), evaluations

    # First layer for all distinct masks of all images, then the class-independent layers
    # once, then only the target rows of the last Linear layer.
    d = terms.contributions
    hidden = torch.cat([base + uniques[i].to(a.dtype) @ d[i, active[i]] for i in range(b)])
    last = head.last
    middle = head.layers[:-1] if last is not None else head.layers
    hidden = torch.cat([middle(chunk) for chunk in _row_chunks(hidden)])
    out = torch.empty(b, n, targets.shape[1], dtype=a.dtype, device=a.device)
    start = 0
    for i in range(b):
        h = hidden[start: start + uniques[i].shape[0]]
        start += uniques[i].shape[0]
        t = targets[i]
        if last is not None:
            lb = last.bias[t] if last.bias is not None else 0.0
            scores = h @ last.weight[t].T + lb
        else:
            scores = h[:, t]
        out[i] = scores[inverses[i]]
    return out, evaluations


def _contributions(weight: Tensor, delta: Tensor) -> Tensor:
    """``D[b, k, h] = Σ_j W[h, k, j] · δ[b, k, j]`` in chunks of output units.

    weight: [H, K, m], delta: [B, K, m] -> [B, K, H]. A plain einsum would copy the (for
    VGG16, 411 MB) weight into a batched layout; chunks of rows keep memory small.
    """
    h_out, k, m = weight.shape
    b = delta.shape[0]
    out = torch.empty(b, k, h_out, dtype=delta.dtype, device=delta.device)
    rows = max(1, _CHUNK_ELEMENTS // max(1, b * k * m))
    for start in range(0, h_out, rows):
        w = weight[start: start + rows]  # [r, K, m]
        block = (w.unsqueeze(0) * delta.unsqueeze(1)).sum(-1)  # [B, r, K]
        out[:, :, start: start + rows] = block.transpose(1, 2)
    return out


def _row_chunks(rows: Tensor, size: int = 8192) -> list[Tensor]:
    return list(rows.split(size)) if rows.shape[0] else [rows]


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
        evaluations.append(_distinct(masks[i], active[i])[0].shape[0])
    return MaskCensus(
        nominal=torch.full((b,), masks.shape[1], dtype=torch.long),
        zero_channels=(k - active.sum(-1)).cpu(),
        distinct_groups=torch.tensor(distinct_groups, dtype=torch.long),
        evaluations=torch.tensor(evaluations, dtype=torch.long),
    )
