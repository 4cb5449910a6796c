"""Grouped switching done once for FD-CAM's variants of one image (Tables III and IV).

The ablations explain every image with five FD-CAM variants. Three of them (``fdcam``,
``fdcam-product``, ``fdcam-exp``) differ only in ρ (Eq. 9–10), so they need the same
similarity groups and switching scores s (Eq. 4–8); ``fdcam-g-off`` needs s⁻ alone, which
is the same set of switch-off masks. The switching is nearly all of FD-CAM's cost (the head
evaluated on one masked copy of A per distinct mask), so the evaluation runner gives every
FD-CAM explainer it builds one `SwitchingMemo`: the first variant computes the switching of
an image, the others reuse it.

A memo holds the work of one input only, and reuses it only when everything it depends on
is the same: the input and targets (compared by value), the model object and its weights
(the same tensors, at the same memory, not changed in place since: each parameter's and
buffer's identity, data pointer and version counter), the layer, θ, grouping and the head's
batch size. Anything else computes afresh. What it hands out are copies, so a caller that
changes an explanation's tensors cannot change another variant's.

A variant served from the memo gets the scores the first variant computed: the same values
it would compute alone, up to float rounding where the alone run would batch the head's
masks differently (``fdcam-g-off`` alone evaluates 1 + K masks, not 1 + 2K). Its
``evaluations`` is then the count of that shared computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fdcam.switching import SwitchScores


@dataclass(frozen=True, eq=False)
class _Input:
    model: nn.Module
    versions: tuple[tuple[int, int, int], ...]
    x: Tensor
    targets: Tensor

    def same(self, other: _Input) -> bool:
        return (self.model is other.model and self.versions == other.versions
                and self.x.shape == other.x.shape and self.x.dtype == other.x.dtype
                and self.x.device == other.x.device and torch.equal(self.x, other.x)
                and torch.equal(self.targets, other.targets))


#: What the switching of one input depends on besides the input: layer name, θ (None without
#: grouping), whether switch-on masks were evaluated, the head's batch size.
Setting = tuple[str, float | None, bool, int]


class SwitchingMemo:
    """The similarity groups and switching scores of the last input, by setting."""

    def __init__(self) -> None:
        self._input: _Input | None = None
        self._work: dict[Setting, tuple[Tensor, SwitchScores]] = {}
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"SwitchingMemo(hits={self.hits}, misses={self.misses})"

    @staticmethod
    def _versions(model: nn.Module) -> tuple[tuple[int, int, int], ...]:
        return tuple((id(t), t.data_ptr(), t._version)
                     for t in (*model.parameters(), *model.buffers()))

    def lookup(self, model: nn.Module, x: Tensor, targets: Tensor,
               setting: Setting) -> tuple[Tensor, SwitchScores] | None:
        """(groups, scores) for this input and setting, or None. Without switch-on, the
        scores of the same setting with switch-on serve: their s⁻ is this setting's s (the
        same masks), and ``evaluations`` stays the count of that shared computation."""
        probe = _Input(model, self._versions(model), x, targets)
        if self._input is None or not self._input.same(probe):
            self.misses += 1
            return None
        layer, theta, switch_on, batch_size = setting
        found = self._work.get(setting)
        if found is None and not switch_on:
            full = self._work.get((layer, theta, True, batch_size))
            if full is not None:
                groups, s = full
                found = groups, SwitchScores(s.full, s.off, None, s.off, s.evaluations)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        return _copy(*found)

    def store(self, model: nn.Module, x: Tensor, targets: Tensor, setting: Setting,
              groups: Tensor, scores: SwitchScores) -> None:
        """Keep `scores` for this input; the work of any other input is dropped."""
        probe = _Input(model, self._versions(model), x.detach().clone(), targets.clone())
        if self._input is None or not self._input.same(probe):
            self._input, self._work = probe, {}
        self._work[setting] = _copy(groups, scores)


def _copy(groups: Tensor, scores: SwitchScores) -> tuple[Tensor, SwitchScores]:
    def clone(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.clone()

    return groups.clone(), SwitchScores(scores.full.clone(), scores.off.clone(),
                                        clone(scores.on), scores.score.clone(),
                                        scores.evaluations.clone())
