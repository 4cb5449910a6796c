"""Class activation maps and FD-CAM itself (Eq. 1, 2, 11).

Usage::

    from fdcam import FDCAM
    cam = FDCAM(model, target_layer=model.features[-1])   # or "features.30"
    out = cam(x, target=243)          # x: [B, C, H, W], normalised as the model expects
    out.saliency                       # [B, H, W] in [0, 1]

`FDCAM` follows the data flow of the paper's Fig. 2: the body runs once without gradients;
α (Eq. 2) comes from gradients through the head only; similarity groups (Eq. 4–5) and
grouped switching (Eq. 6–8) give s; ρ (Eq. 9–10) combines them into ω; Eq. 11 makes the map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam.checks import check_fraction, check_positive_int
from fdcam.combine import BIAS, Combination, check_combination, combine_weights, min_max_maps
from fdcam.explanation import Explanation
from fdcam.gradients import class_gradients
from fdcam.similarity import THETA, channel_similarity, similarity_groups
from fdcam.split import Context, Split, eval_mode, split_model
from fdcam.staged import LinearTerms, linear_terms, staged_gradients, staged_logits
from fdcam.switching import switch_scores
from fdcam.switching_memo import SwitchingMemo
from fdcam.targets import Target, check_model_input, resolve_targets


@dataclass(frozen=True)
class FDCAMExplanation(Explanation):
    """An `Explanation` plus FD-CAM's intermediate results (for the book's figures).

    ``switch_off`` s⁻ and ``switch_on`` s⁺ have the shape of ``scores``; ``groups`` is bool
    [B, K, K] (row k: channel k's group); ``activations`` is A [B, K, h, w];
    ``evaluations`` counts the distinct channel masks evaluated per image [B].
    """

    switch_off: Tensor | None = None
    switch_on: Tensor | None = None
    groups: Tensor | None = None
    activations: Tensor | None = None
    evaluations: Tensor | None = None


def gradcam_weights(split: Split, a: Tensor, targets: Tensor, context: Context = (),
                    terms: LinearTerms | None = None) -> tuple[Tensor, Tensor]:
    """Grad-CAM weights (Eq. 2): ``α_c^k = (1 / hw) Σ_ij ∂f_c(X) / ∂A_ij^k``.

    Gradients flow through the head only (A is a leaf), for all C classes of each image in
    one batched backward pass. a: [B, K, h, w], targets: long [B, C], context: the split's
    context for these images -> (α [B, C, K], logits [B, classes]). With the engine's
    per-batch `terms`, a head whose first stage is a Linear layer takes the chain rule by
    hand (`fdcam.staged.staged_gradients`): the same α.
    """
    if split.stages is not None and terms is not None:
        staged = staged_gradients(split.stages, terms, a, targets, context)
        if staged is not None:
            return staged
    with torch.enable_grad():
        leaf = a.detach().requires_grad_(True)
        logits = split.head(leaf, context=context)
        grads = class_gradients(logits, leaf, targets.to(logits.device))
    return grads.mean(dim=(-2, -1)).transpose(0, 1), logits.detach()


def class_activation_map(a: Tensor, weights: Tensor, size: tuple[int, int]) -> Tensor:
    """CAM (Eq. 1 with Φ = ReLU, i.e. Eq. 11): ``L^c = ReLU(Σ_k ω_c^k A^k)``, upsampled.

    The map is upsampled bilinearly to `size` and min-max normalised to [0, 1] per
    (image, class); an all-zero map stays zero. a: [B, K, h, w], weights: [B, C, K]
    -> [B, C, H, W]
    """
    maps = torch.relu(torch.einsum("bck,bkhw->bchw", weights.to(a.dtype), a))
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return min_max_maps(maps)


class FDCAM:
    """FD-CAM (Li et al., ICPR 2022): ``L^c = ReLU(Σ_k ρ(α_c^k, s_c^k) A^k)`` (Eq. 11).

    Args:
        model: a CNN classifier returning raw logits.
        target_layer: a module of `model`, its dotted name, or ``name#k`` for the k-th
            call (1-based) of a module that runs several times in one forward pass
            (EfficientNet-Lite's ``_blocks.15._swish#2``: block 15's ReLU6 after its
            depthwise conv); default: the family's conventional layer (VGG16
            ``features.30``, ResNet ``layer4``, EfficientNet-Lite ``_swish``).
        theta: fraction of most similar channels in a group (Eq. 5), 0.05 in the paper.
        bias: b of Eq. 10, 0.5 in the paper.
        combination: ρ, see `fdcam.combine` (Eq. 10 ``"exp_minus_bias"`` by default).
        grouping: False makes each group the channel itself (Table III's ``ng``).
        switch_on: False keeps only the switch-off score (Table III's ``off``).
        batch_size: masks per head call on the generic (non-linear-head) path.

    ``memo`` (attribute, default None): a `fdcam.switching_memo.SwitchingMemo` shared with
    other variants, so that the switching of an input they all explain is computed once.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: str | nn.Module | None = None,
        *,
        theta: float = THETA,
        bias: float = BIAS,
        combination: Combination = "exp_minus_bias",
        grouping: bool = True,
        switch_on: bool = True,
        batch_size: int = 64,
        name: str = "fdcam",
    ) -> None:
        check_fraction(theta, "theta")
        check_combination(combination)
        check_positive_int(batch_size, "batch_size")
        self.model = model
        self.split = split_model(model, target_layer)
        self.theta = theta
        self.bias = bias
        self.combination: Combination = combination
        self.grouping = grouping
        self.switch_on = switch_on
        self.batch_size = batch_size
        self.name = name
        self.memo: SwitchingMemo | None = None

    def __repr__(self) -> str:
        return (f"FDCAM(layer={self.split.layer_name!r}, theta={self.theta}, bias={self.bias}, "
                f"combination={self.combination!r}, grouping={self.grouping}, "
                f"switch_on={self.switch_on})")

    def __call__(self, x: Tensor, target: Target | None = None) -> FDCAMExplanation:
        """Explain `x` [B, C, H, W] (any C) for `target` (default: each image's top-1 class)."""
        x = check_model_input(self.model, x)
        with eval_mode(self.model):
            return self._explain(x, target)

    def _explain(self, x: Tensor, target: Target | None) -> FDCAMExplanation:
        split = self.split
        with torch.no_grad():  # FD-CAM never back-propagates through the body
            a, context = split.forward_body(x)
        # Per-batch terms of the staged fast path, shared by Eq. 2 and Eq. 6–8.
        terms = None if split.stages is None else linear_terms(split.stages, a)
        if target is None:
            target = _top1(split, a, context, terms)
        num_classes = _num_classes(split, a, context)
        targets, multi = resolve_targets(target, x.shape[0], num_classes)

        alpha, logits = gradcam_weights(split, a, targets, context, terms)  # [B, C, K]
        setting = (split.layer_name, self.theta if self.grouping else None, self.switch_on,
                   self.batch_size)
        shared = None if self.memo is None else self.memo.lookup(self.model, x, targets,
                                                                 setting)
        if shared is not None:
            groups, switching = shared
        else:
            if self.grouping:
                groups = similarity_groups(channel_similarity(a), self.theta)
            else:
                eye = torch.eye(a.shape[1], dtype=torch.bool, device=a.device)
                groups = eye.expand(a.shape[0], -1, -1)
            switching = switch_scores(split, a, groups, targets, context,
                                      switch_on=self.switch_on, batch_size=self.batch_size,
                                      terms=terms)
            if self.memo is not None:
                self.memo.store(self.model, x, targets, setting, groups, switching)
        weights = combine_weights(alpha, switching.score.to(alpha.dtype), self.combination,
                                  self.bias)
        saliency = class_activation_map(a, weights, (x.shape[2], x.shape[3]))

        def squeeze(t: Tensor | None) -> Tensor | None:
            return t if (t is None or multi) else t[:, 0]

        return FDCAMExplanation(
            saliency=squeeze(saliency),  # type: ignore[arg-type]
            targets=targets,
            weights=squeeze(weights),
            alpha=squeeze(alpha),
            scores=squeeze(switching.score),
            logits=logits,
            method=self.name,
            switch_off=squeeze(switching.off),
            switch_on=squeeze(switching.on),
            groups=groups,
            activations=a,
            evaluations=switching.evaluations,
        )


def _top1(split: Split, a: Tensor, context: Context, terms: LinearTerms | None) -> list[int]:
    """Each image's top-1 class, from the engine's terms when they give the logits."""
    logits = None
    if split.stages is not None and terms is not None:
        logits = staged_logits(split.stages, terms, context)
    if logits is None:
        with torch.no_grad():
            logits = split.head(a, context=context)
    return logits.argmax(dim=1).tolist()


def _num_classes(split: Split, a: Tensor, context: Context) -> int:
    """Number of classes, from the head's structure or its output on one image."""
    known = None if split.stages is None else split.stages.num_classes
    if known is not None:
        return known
    with torch.no_grad():
        return split.head(a[:1], context=tuple(v[:1] for v in context)).shape[1]
