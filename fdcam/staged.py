"""The staged fast engine behind grouped switching (Eq. 6–8) and Grad-CAM's α (Eq. 2).

`fdcam.switching` asks for ``f_c(A ⊙ m)``, the target-class logits with the activations
masked channel-wise, for all 1 + 2K masks of an image at once (`masked_class_scores`); the
body ran once, so only the head is evaluated. The head is read in stages (`fdcam.head`):
``logits = last(middle(first(g(A))))``.

* Masking commutes with the channel-wise stage g: ``g(A ⊙ m) = Z + m ⊙ δ`` with P = g(A),
  Z = g(0), δ = P − Z, so g runs once per image.
* When the first stage is a Linear layer (VGG16, ResNet, EfficientNet, MobileNet, RegNet),
  ``D_k = W₁[:, block k] · δ_k`` is computed once per image and the first layer's output
  for a mask m is ``W₁·Z + b₁ + Σ_k m_k D_k``, summed over the few channels that differ
  (as for a convolution, below).
* When it is a convolution (an MBConv block's 1×1 expansion, EfficientNet-Lite's
  ``_conv_head``), a mask's pre-activation is ``conv(Z) + T_S`` or ``conv(P) − T_S`` with
  ``T_S = Σ_{k ∈ S} conv_k(δ_k)`` over the shorter of its on- and off-sets S: with groups of
  θ = 5 % of the channels each mask touches few channels, so only their filters are
  gathered (a batched matrix product). G(k)'s switch-on and switch-off masks have the same
  S = G(k), so each T_S is computed once and serves both.
* Only the target rows of the last Linear layer are computed.
* Without stages (a hook split), the head is rerun on ``A ⊙ m`` for every mask, in chunks.

Both paths evaluate each distinct mask once: channels that are identically "off" already
(``P_k = Z_k``, e.g. all-zero activations) cannot change the score, so masks that agree on
the other channels share one evaluation. This is exact, not an approximation.

The same per-batch terms (`linear_terms`) give Grad-CAM's gradients through a Linear first
stage by the chain rule (`staged_gradients`) and the unmasked logits (`staged_logits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fdcam.gradients import class_gradients, vector_jacobian_products
from fdcam.head import HeadStages, LinearMap
from fdcam.split import Context, Split, expand_context

# Upper bound on temporary elements (float32) of one chunk: about 8 MB (EfficientNet-Lite0's
# last blocks on 2 CPU threads: 8 MB chunks 15-30 % faster than 4 or 16 MB, the data
# staying in cache between the sums and the head's first activation).
_CHUNK_ELEMENTS = 2 * 1024 * 1024


def masked_class_scores(
    split: Split,
    a: Tensor,
    masks: Tensor,
    targets: Tensor,
    context: Context = (),
    *,
    batch_size: int = 64,
    terms: LinearTerms | None = None,
) -> tuple[Tensor, Tensor]:
    """Target-class logits with the activations masked channel-wise, ``f_c(A ⊙ m)``.

    a: [B, K, h, w]; masks: bool [B, n, K]; targets: long [B, C]; context: the split's
    context for these images; `terms` may carry `linear_terms` already computed for them
    -> (scores [B, n, C], distinct masks evaluated per image [B])
    """
    with torch.no_grad():
        if split.stages is not None:
            terms = linear_terms(split.stages, a) if terms is None else terms
            return _staged_scores(split.stages, terms, masks, targets.to(a.device), context,
                                  batch_size)
        return _generic_scores(split, a, masks, targets, context, batch_size)


def distinct_masks(masks: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """Masks that differ on the active channels: (one of each [u, K], inverse [n]).

    Inactive channels cannot change a score, so they are switched on in every mask before
    the rows are compared: masks that agree on the active channels become equal, and each
    distinct row returned is a complete mask (inactive channels on).
    """
    key = masks | ~active
    _, first, inverse = _unique_rows(_packed_rows(key))
    return key[first], inverse


def _packed_rows(masks: Tensor) -> Tensor:
    """Bool rows [n, K] as rows of 64-bit words [n, ⌈K/64⌉], one bit per channel.

    A bijection of rows, so equal rows stay equal and distinct ones distinct: the unique
    rows of a mask matrix can be found on 64 times fewer columns. A bool is a byte holding
    0 or 1, so 8 bools read as one int64 hold one bit per byte; OR-ing neighbouring words
    shifted by 1, 2 and 4 bits fills each byte with 8 bools.
    """
    n, k = masks.shape
    words = F.pad(masks, (0, -k % 64)).view(torch.uint8).view(torch.int64)  # [n, K/8]
    for shift in (1, 2, 4):
        pairs = words.view(n, -1, 2)
        words = pairs[..., 0] | (pairs[..., 1] << shift)
    return words


def _unique_rows(rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(unique rows, the index of one occurrence of each, inverse) of a 2-D int64 tensor.

    ``torch.unique(dim=0)`` compares rows one by one (milliseconds for a few thousand masks);
    here each row is first reduced to one 64-bit key, the keys are made unique, and the
    result is accepted only if every row equals the representative of its key — exact
    whatever the keys collide on; on a collision the slow exact path is taken.
    """
    key = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
    for column in rows.unbind(1):
        key = key * 1_000_003 ^ column  # wraps around: a hash, checked below
    _, inverse = torch.unique(key, return_inverse=True)
    first = torch.empty(int(inverse.max()) + 1 if inverse.numel() else 0, dtype=torch.long,
                        device=rows.device)
    first.scatter_(0, inverse, torch.arange(rows.shape[0], device=rows.device))
    if not torch.equal(rows[first][inverse], rows):  # two different rows share a key
        _, inverse = torch.unique(rows, dim=0, return_inverse=True)
        first = torch.empty(int(inverse.max()) + 1, dtype=torch.long, device=rows.device)
        first.scatter_(0, inverse, torch.arange(rows.shape[0], device=rows.device))
    return rows[first], first, inverse


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, n, size)] or [slice(0, 0)]


def _generic_scores(split: Split, a: Tensor, masks: Tensor, targets: Tensor,
                    context: Context, batch_size: int) -> tuple[Tensor, Tensor]:
    b, n, _ = masks.shape
    out = torch.empty(b, n, targets.shape[1], dtype=a.dtype, device=a.device)
    evaluations = torch.empty(b, dtype=torch.long)
    active = a.flatten(2).ne(0).any(-1)  # zeroing an all-zero channel changes nothing
    for i in range(b):
        unique, inverse = distinct_masks(masks[i], active[i])
        full = unique.to(a.dtype)
        rows = []
        for part in _chunks(full.shape[0], batch_size):
            m = full[part]
            logits = split.head(a[i] * m[:, :, None, None],
                                context=expand_context(context, i, m.shape[0]))
            rows.append(logits[:, targets[i].to(logits.device)])
        out[i] = torch.cat(rows)[inverse]
        evaluations[i] = unique.shape[0]
    return out, evaluations


@dataclass(frozen=True)
class LinearTerms:
    """What the staged fast path needs once per batch, shared by switching and gradients.

    ``pooled`` P = g(A) [B, K, a, b]; ``zero`` Z = g(0) [1, K, a, b]; ``delta`` P − Z;
    ``active``: channels whose switching can change anything [B, K]; ``base``: the first
    stage's output with every channel off, first(Z), flattened [F] (None without a first
    stage); ``contributions``: D [B, K, H] with ``D_k = W₁[:, block k]·δ_k`` when the first
    stage is a Linear layer followed by more layers (None otherwise).
    """

    pooled: Tensor
    zero: Tensor
    delta: Tensor
    active: Tensor
    base: Tensor | None
    contributions: Tensor | None

    def first_layer(self) -> Tensor:
        """The first Linear layer's output with every channel on, b₁ + W₁·P: [B, H]."""
        if self.contributions is None or self.base is None:
            raise ValueError("no contributions were computed for this head")
        return self.base + self.contributions.sum(dim=1)


def linear_terms(stages: HeadStages, a: Tensor) -> LinearTerms:
    """Per-batch terms of the staged fast path (see the module docstring). a: [B, K, h, w]."""
    with torch.no_grad():
        k = a.shape[1]
        pooled = stages.channel_wise(a.clone())  # clone: in-place modules
        zero = stages.channel_wise(torch.zeros_like(a[:1]))
        delta = pooled - zero
        first = stages.first
        base = contributions = None
        if first is not None:
            if first.kind == "linear" and not zero.any():  # skip a pass over W₁: base = b₁
                base = first.bias.clone() if first.bias is not None else \
                    first.weight.new_zeros(first.weight.shape[0])
            else:
                base = first(zero).flatten()
            if first.kind == "linear" and not stages.first_is_classifier:
                weight = first.weight.view(first.weight.shape[0], k, -1)  # W₁ as [H, K, m]
                contributions = _contributions(weight, delta.flatten(2))
        return LinearTerms(pooled, zero, delta, delta.flatten(2).ne(0).any(-1), base,
                           contributions)


def _staged_scores(stages: HeadStages, terms: LinearTerms, masks: Tensor, targets: Tensor,
                   context: Context, batch_size: int) -> tuple[Tensor, Tensor]:
    b, n, k = masks.shape
    first = stages.first
    dtype = terms.delta.dtype
    out = torch.empty(b, n, targets.shape[1], dtype=dtype, device=terms.delta.device)
    evaluations = torch.empty(b, dtype=torch.long)
    for i in range(b):
        unique, inverse = distinct_masks(masks[i], terms.active[i])
        evaluations[i] = unique.shape[0]
        m = unique
        t = targets[i]
        if first is not None and stages.first_is_classifier:
            # The first Linear is the classifier: only its target rows, for all masks at once.
            weight = first.weight[t].view(t.shape[0], k, -1)
            d = _contributions(weight, terms.delta[i: i + 1].flatten(2))[0]  # [K, C]
            scores = terms.base[t] + m.to(dtype) @ d  # type: ignore[index]
            out[i] = scores[inverse]
            continue
        if first is not None:
            # Each channel set S gives two rows, first(Z) + T_S and first(P) − T_S; the
            # unmasked row comes with the all-off one (S = ∅): one spare row per image.
            m, rows_of_masks = _channel_sets(m, terms.active[i])
            inverse = rows_of_masks[inverse]
        if first is not None and first.kind == "linear":
            assert terms.contributions is not None and terms.base is not None
            inputs = _paired_sums(m, terms.contributions[i], terms.base)  # [2v, H]
            size = batch_size * 64  # rows of a hidden layer are small
        elif first is not None:
            conv_outputs = _ConvOutputs(first, terms.pooled[i], terms.delta[i], terms.base)
            size = max(1, min(batch_size, _CHUNK_ELEMENTS // 4 // conv_outputs.size) // 2)
        else:
            size = max(1, min(batch_size, _CHUNK_ELEMENTS // 4 // terms.delta[i].numel()))
        rows = []
        for part in _chunks(m.shape[0], size):
            if first is not None and first.kind == "linear":
                h = inputs[part]
            elif first is not None:
                zero_side, full_side = conv_outputs.both_sides(m[part])
                scores = [stages.target_scores(side, t, expand_context(context, i, side.shape[0]))
                          for side in (zero_side, full_side)]
                rows.append(torch.stack(scores, dim=1).flatten(0, 1))  # set-major, then side
                continue
            else:
                h = terms.zero + m[part, :, None, None].to(dtype) * terms.delta[i]
            rows.append(stages.target_scores(h, t, expand_context(context, i, h.shape[0])))
        out[i] = torch.cat(rows)[inverse]
    return out, evaluations


def _paired_sums(sets: Tensor, d: Tensor, base: Tensor) -> Tensor:
    """The first Linear layer's outputs for both masks of each channel set S, from the
    contributions of S's channels only: rows 2j and 2j + 1 are ``base + T_S`` and
    ``full − T_S`` with ``T_S = Σ_{k ∈ S} D_k`` and full = base + Σ_k D_k.

    sets: bool [v, K]; d: [K, H]; base: [H] -> [2v, H]
    """
    counts = sets.sum(1)
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
    sums = F.embedding_bag(sets.nonzero()[:, 1], d, offsets, mode="sum")  # T_S: [v, H]
    out = torch.empty(sets.shape[0], 2, d.shape[1], dtype=d.dtype, device=d.device)
    torch.add(base, sums, out=out[:, 0])
    torch.sub(base + d.sum(0), sums, out=out[:, 1])
    return out.view(-1, d.shape[1])


def _sums_from_zero(masks: Tensor, active: Tensor) -> Tensor:
    """Which side each mask's shorter sum starts from: True when at most half of its active
    channels are on (``Z + Σ_on``), False otherwise (``P − Σ_off``). Inactive channels
    contribute nothing, so they are not counted. masks: bool [n, K]; active: bool [K]."""
    return (masks & active).sum(1) * 2 <= active.sum()


def _channel_sets(masks: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """The channel sets S whose sums T_S the masks need, and where each mask's row is.

    A mask is ``Z + T_S`` with S its active channels that are on, or ``P − T_S`` with S
    those that are off, whichever S is smaller (`_sums_from_zero`). Returns the distinct
    sets [v, K] and, per mask, its row in the 2v rows ``(Z + T_S, P − T_S)`` of the sets
    (`_paired_sums`, `_ConvOutputs.both_sides`): ``2·set + side``. masks: bool [u, K];
    active: bool [K].
    """
    use_on = _sums_from_zero(masks, active)
    chosen = torch.where(use_on[:, None], masks, ~masks) & active
    _, first, set_of = _unique_rows(_packed_rows(chosen))
    return chosen[first], 2 * set_of + (~use_on).long()


class _ConvOutputs:
    """A convolution's output for channel masks of one image, from the channels that differ.

    ``conv(Z + m ⊙ δ) = conv(Z) + Σ_{k: m_k=1} conv_k(δ_k) = conv(P) − Σ_{k: m_k=0} conv_k(δ_k)``
    with conv_k channel k's filters alone (no bias): for a channel set S,
    ``T_S = Σ_{k ∈ S} conv_k(δ_k)`` is one batched product of S's filters with their
    unfolded inputs, and gives both ``conv(Z) + T_S`` and ``conv(P) − T_S``.
    pooled P, delta δ: [K, a, b]; base = conv(Z) flattened.
    """

    def __init__(self, conv: LinearMap, pooled: Tensor, delta: Tensor, base: Tensor | None):
        assert base is not None
        full = conv(pooled.unsqueeze(0))
        self.shape = full.shape[1:]
        self.size = full[0].numel()
        weight, _ = conv.affine()  # [C_out, K, kh, kw]
        k, c_out, r = delta.shape[0], weight.shape[0], weight.shape[2] * weight.shape[3]
        self.k, self.c_out, self.r = k, c_out, r
        columns = F.unfold(delta.unsqueeze(0), weight.shape[2:], conv.dilation,  # type: ignore[arg-type]
                           conv.padding, conv.stride)[0].view(k, r, -1)  # [K, r, L]
        # A zero channel at index K pads every set's list of channels to the same length.
        self.columns = torch.cat([columns, columns.new_zeros(1, *columns.shape[1:])])
        self.filters = torch.cat([weight.reshape(c_out, k, r).permute(1, 2, 0),
                                  weight.new_zeros(1, r, c_out)])  # [K + 1, r, C_out]
        self.zero_side = base.view(c_out, -1)  # conv(Z): [C_out, L]
        self.both_ends = (full + base.view_as(full)).view(c_out, -1)  # conv(P) + conv(Z)
        # Reused by every call: a fresh chunk-sized tensor per call costs the allocator's
        # page faults, measured 20 % of FD-CAM's time at EfficientNet-Lite0's _blocks.15.
        self._out = torch.empty(0)

    def both_sides(self, sets: Tensor) -> tuple[Tensor, Tensor]:
        """sets: bool [n, K] -> ``conv(Z) + T_S`` and ``conv(P) − T_S``, each
        [n, C_out, h', w']; both live in a buffer that the next call overwrites."""
        s = max(1, int(sets.sum(1).max()))
        order = sets.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :s]
        index = torch.where(sets.gather(1, order), order, self.k)  # [n, s]
        n = index.shape[0]
        # [n, C_out, s·r] as a transposed view: the gather is the only copy of the filters.
        w = self.filters[index].view(n, s * self.r, self.c_out).transpose(1, 2)
        x = self.columns[index].view(n, s * self.r, -1)
        if self._out.dim() != 4 or self._out.shape[1] < n:
            self._out = x.new_empty(2, n, self.c_out, x.shape[-1])
        # conv(Z) + T_S, then conv(P) − T_S = (conv(P) + conv(Z)) − (conv(Z) + T_S): T_S itself
        # is never stored. [i, :n] of the buffer is contiguous.
        zero_side = torch.baddbmm(self.zero_side, w, x, out=self._out[0, :n])
        full_side = torch.sub(self.both_ends, zero_side, out=self._out[1, :n])
        return zero_side.view(n, *self.shape), full_side.view(n, *self.shape)


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



def staged_logits(stages: HeadStages, terms: LinearTerms, context: Context) -> Tensor | None:
    """The unmasked logits [B, classes] from the first Linear layer's known output
    ``b₁ + W₁·Z + Σ_k D_k``, or None when `terms` carry no contributions."""
    if terms.contributions is None:
        return None
    with torch.no_grad():
        return stages.rest(terms.first_layer(), context)


def staged_gradients(stages: HeadStages, terms: LinearTerms, a: Tensor, targets: Tensor,
                     context: Context) -> tuple[Tensor, Tensor] | None:
    """Grad-CAM's α (Eq. 2) through a first Linear stage, by the chain rule: (α [B, C, K],
    logits [B, classes]), or None when `terms` carry no contributions.

    The first layer's output h₁ = b₁ + W₁·Z + Σ_k D_k is already known, so autograd runs
    through the later layers only (∂f/∂h₁), then ∂f/∂P = (∂f/∂h₁)ᵀ W₁, then ∂f/∂A through the
    channel-wise stage. When that stage only pools, the spatial sum of ∂f/∂A^k is
    ``Σ_h (∂f/∂h₁)_h Σ_j W₁[h, k, j]``: no pass over W₁ at all. a: [B, K, h, w]; targets:
    long [B, C].
    """
    first = stages.first
    if first is None or terms.contributions is None:
        return None
    with torch.enable_grad():
        hidden = terms.first_layer().detach().requires_grad_(True)  # h₁: [B, H]
        logits = stages.rest(hidden.clone(), context)  # clone: VGG's ReLU works in place
        dh = class_gradients(logits, hidden, targets.to(logits.device))  # [C, B, H]
        if stages.pooling_only:
            spatial = a.shape[-2] * a.shape[-1]
            alpha = (dh.detach() @ first.block_sums(a.shape[1])) / spatial
            return alpha.transpose(0, 1), logits.detach()
        leaf = a.detach().requires_grad_(True)
        pooled = stages.channel_wise(leaf.clone())
        dp = (dh @ first.weight).view(dh.shape[0], *pooled.shape)
        grads = vector_jacobian_products(pooled, leaf, dp)
    return grads.mean(dim=(-2, -1)).transpose(0, 1), logits.detach()
