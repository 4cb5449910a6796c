"""fdcam.switching (Eq. 6–8): masks, scores by hand, the linear-head identities that the
method chapter shows, and the count of distinct masks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from fdcam.paper.grouped_switching import grouped_from_single, mask_census
from fdcam.similarity import channel_similarity, similarity_groups
from fdcam.split import split_model
from fdcam.switching import (
    switch_off_score,
    switch_scores,
    switching_masks,
    switching_score,
)
from tests.literal import scores_of_masks
from tests.models import tiny_sequential


def tiny_linear(classes: int = 5, seed: int = 0) -> nn.Sequential:
    """conv-relu | avgpool-flatten-dropout-linear: a head linear in A, like EfficientNet's."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),  # "1": the target layer
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(0.2), nn.Linear(16, classes),
    ).eval()


def _eye(b: int, k: int) -> Tensor:
    return torch.eye(k, dtype=torch.bool).expand(b, k, k)


def _activations(model: nn.Sequential, layer: str, x: Tensor) -> Tensor:
    split = split_model(model, layer)
    with torch.no_grad():
        return split.body(x)


def test_masks_layout_by_hand() -> None:
    groups = torch.tensor([[[True, True, False], [False, True, False], [False, False, False]]])
    masks = switching_masks(groups)
    assert masks.shape == (1, 7, 3)
    assert masks[0].int().tolist() == [
        [1, 1, 1],  # f_c(X)
        [1, 1, 0], [0, 1, 0], [0, 0, 0],  # switch-on: only G(k) on
        [0, 0, 1], [1, 0, 1], [1, 1, 1],  # switch-off: G(k) off; an empty group changes nothing
    ]
    assert switching_masks(groups, switch_on=False)[0].int().tolist() == [
        [1, 1, 1], [0, 0, 1], [1, 0, 1], [1, 1, 1]]


def test_scores_by_hand() -> None:
    full = torch.tensor([[3.0]])
    off_rows = torch.tensor([[1.0, 2.5, 3.0]])
    on_rows = torch.tensor([[2.0, 0.5, -1.0]])
    off = switch_off_score(full, off_rows)
    assert off.tolist() == [[2.0, 0.5, 0.0]]  # Eq. 6
    assert switching_score(off, on_rows).tolist() == [[2.0, 0.5, -0.5]]  # Eq. 8
    assert torch.equal(switching_score(off, None), off)


@pytest.mark.parametrize("fast", [True, False], ids=["linear-head", "generic"])
def test_switch_scores_match_masked_heads(fast: bool) -> None:
    model = tiny_sequential()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    split = split_model(model, "3")
    if not fast:
        split.stages = None
    a = _activations(model, "3", x)
    groups = similarity_groups(channel_similarity(a), 0.2)
    targets = torch.tensor([[2], [5]])
    out = switch_scores(split, a, groups, targets)
    head = nn.Sequential(*list(model)[4:])
    for i in range(2):
        c = int(targets[i, 0])
        k = a.shape[1]
        f = scores_of_masks(head, a[i], [torch.ones(k)], c)[0]
        off = [f - v for v in scores_of_masks(head, a[i], [(~g).float() for g in groups[i]], c)]
        on = scores_of_masks(head, a[i], [g.float() for g in groups[i]], c)
        torch.testing.assert_close(out.off[i, 0], torch.tensor(off), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.on[i, 0], torch.tensor(on), atol=1e-5, rtol=1e-5)


def test_convolutional_head_with_mostly_zero_channels_matches_masked_heads() -> None:
    """A head that starts with a 1×1 convolution (as after an MBConv block), at a layer where
    8 of 12 channels are identically zero: the sums leave those channels out, and each
    channel set's sum serves both the mask that switches it on and the one that switches it
    off; every score still equals the literally masked head's."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(),  # "1": the target layer
        nn.Conv2d(12, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 4),
    ).eval()
    with torch.no_grad():
        model[0].weight[4:] = 0.0
        model[0].bias[4:] = -1.0  # ReLU(-1) = 0: channels 4..11 are inactive
        model[3].running_mean.uniform_(-0.5, 0.5)
        model[3].running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(4))
    split = split_model(model, "1")
    assert split.stages is not None and split.stages.first is not None
    assert split.stages.first.kind == "conv"
    a = _activations(model, "1", x)
    assert not a[:, 4:].any() and a[:, :4].flatten(2).ne(0).any(-1).all()
    groups = similarity_groups(channel_similarity(a), 0.2)
    targets = torch.tensor([[1, 3], [0, 2]])
    out = switch_scores(split, a, groups, targets)
    head = nn.Sequential(*list(model)[2:])
    for i in range(2):
        for j in range(2):
            c = int(targets[i, j])
            f = scores_of_masks(head, a[i], [torch.ones(12)], c)[0]
            off = [f - v for v in scores_of_masks(head, a[i], [(~g).float() for g in groups[i]],
                                                  c)]
            on = scores_of_masks(head, a[i], [g.float() for g in groups[i]], c)
            torch.testing.assert_close(out.off[i, j], torch.tensor(off), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.on[i, j], torch.tensor(on), atol=1e-5, rtol=1e-5)


def test_unique_rows_is_exact_even_when_row_keys_collide() -> None:
    from fdcam.staged import _unique_rows

    rows = torch.randint(0, 4, (300, 3), generator=torch.Generator().manual_seed(0))
    unique, first, inverse = _unique_rows(rows)
    assert torch.equal(unique[inverse], rows) and torch.equal(rows[first], unique)
    assert unique.shape[0] == torch.unique(rows, dim=0).shape[0]
    # (0, 1000003) and (1, 0) share their 64-bit key: the exact path must tell them apart.
    colliding = torch.tensor([[0, 1_000_003], [1, 0], [0, 1_000_003]])
    unique, first, inverse = _unique_rows(colliding)
    assert unique.shape[0] == 2 and torch.equal(unique[inverse], colliding)
    assert inverse[0] == inverse[2] != inverse[1]


def test_linear_head_grouped_score_is_the_sum_of_single_scores() -> None:
    model = tiny_linear()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    split = split_model(model, "1")
    assert split.stages is not None and split.stages.first_is_classifier
    a = _activations(model, "1", x)
    groups = similarity_groups(channel_similarity(a), 0.25)
    targets = torch.tensor([[0, 3], [4, 1]])
    single = switch_scores(split, a, _eye(2, a.shape[1]), targets)
    grouped = switch_scores(split, a, groups, targets)
    torch.testing.assert_close(grouped_from_single(groups, single.off), grouped.off,
                               atol=1e-5, rtol=1e-5)
    # ... and switch-on is switch-off shifted by the score with every channel off, f_c(0):
    bias = model[-1].bias[targets]  # [B, C]; the pooled zero map contributes nothing
    torch.testing.assert_close(grouped.on - grouped.off, bias.unsqueeze(-1).expand_as(grouped.on),
                               atol=1e-5, rtol=1e-5)
    # One class at a time ([B, K] scores) gives the same.
    torch.testing.assert_close(grouped_from_single(groups, single.off[:, 0]), grouped.off[:, 0],
                               atol=1e-5, rtol=1e-5)


def test_grouped_from_single_by_hand() -> None:
    groups = torch.tensor([[[True, True, False], [False, True, False], [False, False, False]]])
    single = torch.tensor([[1.0, 2.0, 4.0]])
    assert grouped_from_single(groups, single).tolist() == [[3.0, 2.0, 0.0]]


def test_nonlinear_head_is_not_additive() -> None:
    # VGG-like heads (Linear-ReLU-Linear) do not split a group's score into its members'.
    model = tiny_sequential()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    split = split_model(model, "3")
    a = _activations(model, "3", x)
    groups = similarity_groups(channel_similarity(a), 0.2)
    targets = torch.tensor([[2]])
    single = switch_scores(split, a, _eye(1, a.shape[1]), targets)
    grouped = switch_scores(split, a, groups, targets)
    gap = (grouped_from_single(groups, single.off) - grouped.off).abs().max()
    assert gap > 1e-3


def test_mask_census_by_hand() -> None:
    # channels 0 and 1 identical, 2 different, 3 zero
    a = torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]).view(1, 4, 2, 2)
    groups = torch.tensor([[[True, True, False, False], [True, True, False, False],
                            [False, False, True, False], [False, False, False, False]]])
    census = mask_census(a, groups)
    assert census.nominal.tolist() == [9]
    assert census.zero_channels.tolist() == [1]
    assert census.distinct_groups.tolist() == [2]  # {0, 1} twice, {2}
    # On the non-zero channels: all on; {0,1}, {2} on; none on (the zero channel's switch-on);
    # switching {0, 1} off leaves {2} on, the same mask as switching {2} on alone.
    assert census.evaluations.tolist() == [4]
    without_on = mask_census(a, groups, switch_on=False)
    assert without_on.nominal.tolist() == [5]
    assert without_on.evaluations.tolist() == [3]


def _distinct_masks_by_hand(a: Tensor, groups: Tensor) -> list[int]:
    """Per image, the number of different masks among the 1 + 2K of Eq. 6–8 once every
    all-zero channel is read as on (zeroing it changes nothing), counted with a set."""
    counts = []
    for image, image_groups in zip(a, groups, strict=True):
        active = [bool(channel.ne(0).any()) for channel in image]
        rows = [row.tolist() for row in image_groups]
        masks = [[True] * len(active)] + rows + [[not on for on in row] for row in rows]
        counts.append(len({tuple(on or not live for on, live in zip(mask, active, strict=True))
                           for mask in masks}))
    return counts


@pytest.mark.parametrize("fast", [True, False], ids=["linear-head", "generic"])
def test_mask_census_counts_what_switch_scores_evaluates(fast: bool) -> None:
    model = tiny_linear(seed=1)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    split = split_model(model, "1")
    if not fast:
        split.stages = None
    a = _activations(model, "1", x)
    a[0, :5] = 0  # zero channels
    a[1, 7] = a[1, 6]  # an exact twin
    groups = similarity_groups(channel_similarity(a), 0.2)
    out = switch_scores(split, a, groups, torch.tensor([[0], [1], [2]]))
    census = mask_census(a, groups)
    expected = _distinct_masks_by_hand(a, groups)
    assert out.evaluations.tolist() == expected
    assert census.evaluations.tolist() == expected
    assert census.zero_channels[0] >= 5
    assert (census.evaluations <= 2 * census.distinct_groups + 2).all()


def test_mask_census_with_every_channel_zero() -> None:
    a = torch.zeros(1, 4, 3, 3)
    groups = similarity_groups(channel_similarity(a))
    census = mask_census(a, groups)
    assert census.zero_channels.tolist() == [4]
    assert census.distinct_groups.tolist() == [0]
    assert census.evaluations.tolist() == [1]
