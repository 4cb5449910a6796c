"""Eq. 4–5 on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from fdcam import FdcamError
from fdcam.paper.similar_channels import closest_similarity, representative_channels
from fdcam.similarity import channel_similarity, group_thresholds, similarity_groups
from tests.literal import cosine_matrix


def _channels(*rows: list[float]) -> torch.Tensor:
    """Channels given as flat rows of 4 values -> A: [1, K, 2, 2]."""
    return torch.tensor(rows, dtype=torch.float32).view(1, len(rows), 2, 2)


def test_cosine_by_hand_with_a_scaled_copy_and_a_zero_channel() -> None:
    a = _channels([1, 0, 0, 0], [2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0])
    m = channel_similarity(a)[0]
    r = 1 / math.sqrt(2)
    expected = torch.tensor([
        [1, 1, 0, 0, r],
        [1, 1, 0, 0, r],
        [0, 0, 1, 0, r],
        [0, 0, 0, 0, 0],  # a zero channel is similar to nothing, itself included
        [r, r, r, 0, 1],
    ], dtype=torch.float64)
    torch.testing.assert_close(m, expected, atol=2.0**-36, rtol=0)
    assert m[0, 1] == m[0, 0] == 1.0  # a scaled copy ties exactly with the channel itself
    assert m.dtype == torch.float64


def test_cosine_of_opposite_channels_is_minus_one() -> None:
    m = channel_similarity(_channels([1, -2, 0, 3], [-1, 2, 0, -3]))[0]
    assert m[0, 1] == -1.0


def test_similarity_matches_the_literal_loop() -> None:
    a = torch.rand(2, 30, 3, 3)
    a[0, 4] = 0
    for i in range(2):
        torch.testing.assert_close(channel_similarity(a)[i], cosine_matrix(a[i]), atol=0, rtol=0)


def test_threshold_is_torch_quantile_linear() -> None:
    m = channel_similarity(torch.randn(3, 37, 4, 4))
    for theta in (0.05, 0.1, 0.5, 1.0):
        expected = torch.quantile(m, 1 - theta, dim=-1)
        assert torch.equal(group_thresholds(m, theta), expected)


def test_threshold_by_hand() -> None:
    row = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    # p = (1 − θ)(K − 1): θ = 0.25 -> p = 3, τ = 3; θ = 0.1 -> p = 3.6, τ = 3 + 0.6·(4 − 3)
    assert group_thresholds(row, 0.25).item() == 3.0
    assert group_thresholds(row, 0.1).item() == pytest.approx(3.6, abs=1e-12)
    assert similarity_groups(row, 0.1).tolist() == [[False, False, False, False, True]]


def test_groups_by_hand_with_identical_channels_and_ties() -> None:
    # channels 0 and 1 identical, 2 orthogonal to them, 3 zero
    a = _channels([1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0])
    m = channel_similarity(a)
    # θ = 0.5: row 0 sorted [0, 0, 1, 1], p = 1.5 -> τ = 0.5: the two twins form the group
    groups = similarity_groups(m, 0.5)[0]
    assert groups.tolist() == [
        [True, True, False, False],
        [True, True, False, False],
        [False, False, True, False],  # row 2 sorted [0, 0, 0, 1]: τ = 0 -> only itself
        [False, False, False, False],  # the zero channel's group is empty
    ]
    # θ = 0.05: p = 2.85 -> τ = lerp(1, 1) = 1 and nothing is strictly above it
    assert similarity_groups(m, 0.05)[0, 0].tolist() == [False, False, False, False]


def test_paper_theta_keeps_about_five_percent() -> None:
    m = channel_similarity(torch.rand(1, 512, 7, 7))
    sizes = similarity_groups(m, 0.05).sum(-1)
    # p = 0.95 · 511 = 485.45: 26 values lie above τ (ties aside)
    assert sizes.min() >= 25
    assert sizes.max() <= 26


@pytest.mark.parametrize("theta", [0, -0.1, 1.5, "5%", True])
def test_bad_theta(theta: object) -> None:
    with pytest.raises(FdcamError, match=r"theta must be a number in \(0, 1\]; got"):
        group_thresholds(torch.zeros(1, 3, 3), theta)  # type: ignore[arg-type]


def test_closest_similarity_by_hand() -> None:
    a = _channels([1, 0, 0, 0], [2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0])
    r = 1 / math.sqrt(2)
    closest = closest_similarity(channel_similarity(a))[0]
    torch.testing.assert_close(closest, torch.tensor([1, 1, r, 0, r], dtype=torch.float64),
                               atol=2.0**-36, rtol=0)
    assert closest_similarity(torch.ones(1, 1)).tolist() == [0.0]


def test_representative_channels_skip_each_others_groups() -> None:
    # 0 and 1 are twins (1 the strongest), 2 is a different feature, 3 is zero
    a = _channels([1, 0, 0, 0], [3, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0])
    groups = similarity_groups(channel_similarity(a), 0.5)[0]
    assert representative_channels(a[0], groups, n=3) == [1, 2]  # 0 is in 1's group; 3 is zero
    assert representative_channels(a[0], groups, n=1) == [1]
    with pytest.raises(FdcamError, match="expected a: \\[K, h, w\\]"):
        representative_channels(a, groups)
    with pytest.raises(FdcamError, match="n must be a positive int"):
        representative_channels(a[0], groups, n=0)
