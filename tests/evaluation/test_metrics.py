"""Insertion/deletion (RISE protocol) and the pointing game, against literal re-derivations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.evaluation.faithfulness import (
    CPU_CURVE_BATCH,
    CUDA_CURVE_BATCH,
    RISE_STEP,
    STEP_FRACTION,
    auc,
    blur,
    curve_batch_size,
    insertion_deletion_curves,
    perturbation_steps,
    rise_kernel,
    saliency_ranks,
)
from fdcam.evaluation.pointing import (
    ClassBoxes,
    PointingRecord,
    pointing_game,
    pointing_hit,
    pointing_record,
    saliency_peak,
)

# ----------------------------------------------------------------------------- toy models

BOX = (10, 14, 20, 24)  # rows 10..13, columns 20..23 of a 32×32 image: 16 pixels


class RegionModel(nn.Module):
    """Class 0's logit counts the box pixels that still hold their original value 1.

    m = mean over the box of relu(x₀ − ½)/½ is 1 for the original box, 0 once every box
    pixel is deleted (0) or blurred (< ½); logits = [8(m − ½), 0]. Every box pixel is worth
    the same and nothing outside the box matters, so changing the box first is optimal.
    """

    def forward(self, x: Tensor) -> Tensor:
        r0, r1, c0, c1 = BOX
        m = torch.relu(x[:, 0, r0:r1, c0:c1] - 0.5).mean(dim=(1, 2)) / 0.5
        logit = 8 * (m - 0.5)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def region_image(seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    # Outside the box in [-1, 0], so the blurred box stays below ½ (its own mass is ≤ 0.19).
    x = -torch.rand(1, 3, 32, 32, generator=g)
    r0, r1, c0, c1 = BOX
    x[:, :, r0:r1, c0:c1] = 1.0
    return x


def box_map() -> Tensor:
    r0, r1, c0, c1 = BOX
    s = torch.zeros(1, 32, 32)
    s[:, r0:r1, c0:c1] = 1.0
    return s


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 5)).eval()


# ---------------------------------------------------------------------- literal references


def scipy_rise_kernel(size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's kernel as its reference builds it: scipy filters a unit impulse (defaults:
    mode 'reflect', truncate 4)."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1
    return torch.from_numpy(gaussian_filter(impulse, sigma))


def slow_blur(x: Tensor, kernel: Tensor | None = None) -> Tensor:
    """Zero-padded per-channel filtering written as loops over pixels and kernel taps."""
    k = (scipy_rise_kernel() if kernel is None else kernel).tolist()
    size = len(k)
    c = size // 2
    out = torch.zeros_like(x)
    batch, channels, height, width = x.shape
    for b in range(batch):
        for ch in range(channels):
            for r in range(height):
                for col in range(width):
                    acc = 0.0
                    for i in range(size):
                        for j in range(size):
                            rr, cc = r + i - c, col + j - c
                            if 0 <= rr < height and 0 <= cc < width:
                                acc += k[i][j] * float(x[b, ch, rr, cc])
                    out[b, ch, r, col] = acc
    return out


def rise_substrate(x: Tensor) -> Tensor:
    """RISE's insertion start: conv2d with the scipy kernel on the diagonal of a [3, 3]
    weight (each channel filtered by itself), padding klen // 2."""
    k = scipy_rise_kernel().to(x.dtype)
    weight = torch.zeros(3, 3, 11, 11, dtype=x.dtype)
    for ch in range(3):
        weight[ch, ch] = k
    return F.conv2d(x, weight, padding=5)


def slow_curves(model: nn.Module, x: Tensor, saliency: Tensor, target: int,
                step: int) -> tuple[list[float], list[float]]:
    """RISE's loop for one image: score, then change the next `step` pixels in order.

    One forward pass per step; insertion starts from `rise_substrate` and copies pixels of
    x into it, deletion starts from x and copies zeros into it."""
    _, height, width = x.shape
    area = height * width
    n_steps = (area + step - 1) // step
    values = saliency.flatten().tolist()
    order = sorted(range(area), key=lambda i: -values[i])  # Python's sort is stable
    curves = []
    for start, finish in ((rise_substrate(x[None])[0], x), (x.clone(), torch.zeros_like(x))):
        start = start.clone()
        scores = []
        for i in range(n_steps + 1):
            with torch.no_grad():
                scores.append(float(torch.softmax(model(start[None]), 1)[0, target]))
            coords = torch.tensor(order[step * i: step * (i + 1)], dtype=torch.long)
            start.view(3, area)[:, coords] = finish.reshape(3, area)[:, coords]
        curves.append(scores)
    return curves[0], curves[1]


def slow_pointing(saliency: Tensor, boxes: list[list[float]], tolerance: float) -> bool:
    """TorchRay's test, literally: a boolean mask of the boxes' pixels and a disc of
    accepted pixels around the peak, (r − v)² + (c − u)² < tolerance²; inside for 0."""
    height, width = saliency.shape
    best, peak = -math.inf, (0, 0)
    for r in range(height):
        for c in range(width):
            if float(saliency[r, c]) > best:
                best, peak = float(saliency[r, c]), (r, c)
    v, u = peak
    mask = [[any(x1 <= c <= x2 and y1 <= r <= y2 for x1, y1, x2, y2 in boxes)
             for c in range(width)] for r in range(height)]
    if tolerance == 0:
        return mask[v][u]
    return any(mask[r][c] and (r - v) ** 2 + (c - u) ** 2 < tolerance**2
               for r in range(height) for c in range(width))


# -------------------------------------------------------------------------------- protocol


def test_rise_steps_are_1792_pixels_at_224() -> None:
    assert RISE_STEP == 224 * 8 == 1792
    assert STEP_FRACTION == pytest.approx(1792 / 50176)  # 3.57 %, the paper's "3.6 %"
    assert perturbation_steps(224, 224) == (1792, 28)  # 28 equal steps, 29 points
    # Other sizes keep the fraction: round(H·W/28) pixels, ceil(H·W/step) steps.
    assert perturbation_steps(112, 112) == (448, 28)
    assert perturbation_steps(100, 60) == (214, 29)  # 6000/28 = 214.3; the last step short
    assert perturbation_steps(7, 2) == (1, 14)  # round(14/28) = 0 -> at least 1 pixel
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    x = torch.randn(1, 3, 224, 224)
    curves = insertion_deletion_curves(model, x, torch.rand(1, 224, 224), [2])
    assert curves.insertion.shape == curves.deletion.shape == (1, 29)
    assert curves.changed.tolist() == [1792 * i for i in range(29)]
    assert int(curves.changed[-1]) == 224 * 224
    assert curves.fractions[0] == 0
    assert curves.fractions[-1] == 1


def test_step_is_at_least_one_pixel_and_bad_fractions_are_refused() -> None:
    assert perturbation_steps(2, 3, 0.01) == (1, 6)
    assert perturbation_steps(5, 5, 1.0) == (25, 1)
    assert perturbation_steps(32, 32, 0.01) == (10, 103)
    with pytest.raises(FdcamError, match="step_fraction"):
        perturbation_steps(8, 8, 0.0)


def test_auc_is_the_normalised_trapezoid() -> None:
    # (0 + 1 + 0.5 − 0/2 − 0.5/2) / 2 = 0.625
    assert float(auc(torch.tensor([0.0, 1.0, 0.5]))) == pytest.approx(0.625)
    assert auc(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])).tolist() == [1, 0]
    assert float(auc(torch.tensor([0.0, 1.0]))) == pytest.approx(0.5)
    curve = torch.rand(17, dtype=torch.float64)
    assert float(auc(curve)) == pytest.approx(
        float(torch.trapezoid(curve, torch.linspace(0, 1, 17, dtype=torch.float64))))
    with pytest.raises(FdcamError, match="at least 2 points"):
        auc(torch.tensor([0.3]))


def test_rise_kernel_is_scipys_filtered_impulse() -> None:
    k = rise_kernel(dtype=torch.float64)
    torch.testing.assert_close(k, scipy_rise_kernel(), atol=1e-15, rtol=0)
    # Nearly flat: centre/corner 1.142 (a sampled Gaussian of σ = 5 has e^(50/50) = 2.72).
    assert float(k[5, 5] / k[0, 0]) == pytest.approx(1.142, abs=5e-4)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(k, k.T, atol=1e-17, rtol=0)
    torch.testing.assert_close(k, k.flip(0), atol=1e-17, rtol=0)
    for size, sigma in ((3, 0.5), (5, 1.0), (7, 2.0), (21, 5.0), (11, 10.0)):
        torch.testing.assert_close(rise_kernel(size, sigma, dtype=torch.float64),
                                   scipy_rise_kernel(size, sigma), atol=1e-15, rtol=0)
    with pytest.raises(FdcamError, match="odd"):
        rise_kernel(10)


def test_blur_equals_literal_zero_padded_rise_filter() -> None:
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(blur(x), slow_blur(x))
    torch.testing.assert_close(blur(x), rise_substrate(x))


def test_curve_batch_size_defaults() -> None:
    assert curve_batch_size("cpu") == CPU_CURVE_BATCH == 4
    assert curve_batch_size(torch.device("cuda", 0)) == CUDA_CURVE_BATCH


def test_ties_are_ranked_by_pixel_index() -> None:
    flat = saliency_ranks(torch.zeros(1, 4, 5))
    assert flat.tolist() == [list(range(20))]
    s = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    # order: the ones at 0, 2, 4, then the zeros at 1, 3, 5
    assert saliency_ranks(s).tolist() == [[0, 3, 1, 4, 2, 5]]
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 3, (3, 16, 16), generator=g).float()  # heavy ties
    ranks = saliency_ranks(s)
    for b in range(3):
        values = s[b].flatten().tolist()
        order = sorted(range(256), key=lambda i: -values[i])
        assert [order.index(p) for p in range(256)] == ranks[b].tolist()
    assert torch.equal(ranks, saliency_ranks(s.clone()))


def test_curves_equal_the_literal_rise_loop_under_ties() -> None:
    model = tiny_cnn()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 12, 14, generator=g)
    saliency = torch.randint(0, 4, (2, 12, 14), generator=g).float()
    target = torch.tensor([1, 3])
    curves = insertion_deletion_curves(model, x, saliency, target, step_fraction=0.05,
                                       batch_size=7)
    assert curves.insertion.shape == (2, 22)  # step 8, ceil(168 / 8) = 21 steps
    for b in range(2):
        ins, dele = slow_curves(model, x[b], saliency[b], int(target[b]), 8)
        torch.testing.assert_close(curves.insertion[b], torch.tensor(ins), atol=1e-6, rtol=0)
        torch.testing.assert_close(curves.deletion[b], torch.tensor(dele), atol=1e-6, rtol=0)
    torch.testing.assert_close(curves.insertion_auc, auc(curves.insertion))
    torch.testing.assert_close(curves.overall, curves.insertion_auc - curves.deletion_auc)


@pytest.mark.parametrize(("height", "width", "step", "n_points"),
                         [(224, 224, 1792, 29), (100, 60, 214, 30)])
def test_protocol_equals_rises_loop_literally(height: int, width: int, step: int,
                                              n_points: int) -> None:
    """RISE's `CausalMetric` ported as a loop: 1,792 pixels per step at 224×224 (the same
    fraction at 100×60, last step short), one forward pass per step, both games."""
    model = tiny_cnn(seed=2)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, height, width, generator=g)
    # One smooth map and one with heavy ties (a ReLU'd map: most pixels 0).
    saliency = torch.stack([torch.rand(height, width, generator=g),
                            torch.relu(torch.randn(height, width, generator=g) - 1)])
    target = torch.tensor([1, 4])
    assert perturbation_steps(height, width) == (step, n_points - 1)
    curves = insertion_deletion_curves(model, x, saliency, target, batch_size=5)
    assert curves.insertion.shape == curves.deletion.shape == (2, n_points)
    for b in range(2):
        ins, dele = slow_curves(model, x[b], saliency[b], int(target[b]), step)
        torch.testing.assert_close(curves.insertion[b], torch.tensor(ins), atol=1e-6, rtol=0)
        torch.testing.assert_close(curves.deletion[b], torch.tensor(dele), atol=1e-6, rtol=0)
        # AUC as RISE's `auc`: (Σ s − s₀/2 − sₙ/2)/(n − 1) on the literal scores.
        literal_auc = (sum(ins) - ins[0] / 2 - ins[-1] / 2) / (len(ins) - 1)
        assert float(curves.insertion_auc[b]) == pytest.approx(literal_auc, abs=1e-6)


def test_batch_size_does_not_change_the_curves() -> None:
    model = tiny_cnn()
    x = torch.randn(3, 3, 10, 10)
    s = torch.rand(3, 10, 10)
    a = insertion_deletion_curves(model, x, s, 2, step_fraction=0.1, batch_size=1)
    b = insertion_deletion_curves(model, x, s, 2, step_fraction=0.1, batch_size=1000)
    c = insertion_deletion_curves(model, x, s, 2, step_fraction=0.1)  # the CPU default
    for other in (b, c):
        torch.testing.assert_close(a.insertion, other.insertion, atol=1e-6, rtol=0)
        torch.testing.assert_close(a.deletion, other.deletion, atol=1e-6, rtol=0)
    with pytest.raises(FdcamError, match="batch_size"):
        insertion_deletion_curves(model, x, s, 2, batch_size=0)


def test_region_map_is_best_reverse_worst_random_between() -> None:
    model = RegionModel()
    x = region_image()
    best = insertion_deletion_curves(model, x, box_map(), 0, step_fraction=0.01)
    worst = insertion_deletion_curves(model, x, 1 - box_map(), 0, step_fraction=0.01)
    step = 10  # round(0.01 · 1024)
    counts = torch.clamp(torch.arange(104) * step, max=1024)
    assert torch.equal(best.changed, counts)

    def prob(m: Tensor) -> Tensor:
        return torch.sigmoid(8 * (m - 0.5))

    box_first = counts.clamp(max=16) / 16  # box pixels changed, box first
    box_last = (counts - (1024 - 16)).clamp(min=0) / 16  # box pixels changed, box last
    # Analytic optimum and pessimum: every box pixel counts the same.
    torch.testing.assert_close(best.insertion[0], prob(box_first), atol=1e-6, rtol=0)
    torch.testing.assert_close(best.deletion[0], prob(1 - box_first), atol=1e-6, rtol=0)
    torch.testing.assert_close(worst.insertion[0], prob(box_last), atol=1e-6, rtol=0)
    torch.testing.assert_close(worst.deletion[0], prob(1 - box_last), atol=1e-6, rtol=0)

    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        rand = insertion_deletion_curves(model, x, torch.rand(1, 32, 32, generator=g), 0,
                                         step_fraction=0.01)
        # Pointwise: no order can change more box pixels than box-first, or fewer than last.
        assert (best.insertion >= rand.insertion - 1e-6).all()
        assert (rand.insertion >= worst.insertion - 1e-6).all()
        assert (best.deletion <= rand.deletion + 1e-6).all()
        assert (rand.deletion <= worst.deletion + 1e-6).all()
        assert best.insertion_auc > rand.insertion_auc > worst.insertion_auc
        assert best.deletion_auc < rand.deletion_auc < worst.deletion_auc
        assert best.overall > rand.overall > worst.overall


def test_model_mode_is_restored_and_inputs_checked() -> None:
    model = nn.Sequential(nn.Dropout(0.5), tiny_cnn()).train()
    x = torch.randn(1, 3, 8, 8)
    a = insertion_deletion_curves(model, x, torch.rand(1, 8, 8), 0, step_fraction=0.2)
    b = insertion_deletion_curves(model, x, torch.rand(1, 8, 8), 0, step_fraction=0.2)
    assert model.training  # restored
    assert torch.equal(a.deletion[:, 0], b.deletion[:, 0])  # dropout was off inside
    with pytest.raises(FdcamError, match=r"saliency must have shape \[B, H, W\]"):
        insertion_deletion_curves(model, x, torch.rand(1, 7, 8), 0)
    with pytest.raises(FdcamError, match="NaN"):
        insertion_deletion_curves(model, x, torch.full((1, 8, 8), math.nan), 0)
    with pytest.raises(FdcamError, match="out of range"):
        insertion_deletion_curves(model, x, torch.rand(1, 8, 8), 9, step_fraction=0.5)
    with pytest.raises(FdcamError, match="one class per image"):
        insertion_deletion_curves(model, x, torch.rand(1, 8, 8), [0, 1])
    with pytest.raises(FdcamError, match="3 colour channels"):
        insertion_deletion_curves(model, x[:, :1], torch.rand(1, 8, 8), 0)


# --------------------------------------------------------------------------- pointing game


def peaked_map(row: int, col: int, size: int = 10) -> Tensor:
    s = torch.rand(size, size, generator=torch.Generator().manual_seed(0)) * 0.5
    s[row, col] = 1.0
    return s


def test_pointing_hits_and_misses() -> None:
    s = peaked_map(3, 5)  # peak at x = 5, y = 3
    assert pointing_hit(s, [[4, 2, 6, 4]])
    assert pointing_hit(s, [[5, 3, 8, 8]])  # corner is inside: boxes are inclusive
    assert not pointing_hit(s, [[6, 0, 9, 9]])
    assert not pointing_hit(s, [[6, 0, 9, 9]], tolerance=1)  # d = 1: strict, TorchRay's <
    assert pointing_hit(s, [[6, 0, 9, 9]], tolerance=1.01)
    # Euclidean distance: dx = 2, dy = 3 -> √13 ≈ 3.61
    assert not pointing_hit(s, [[7, 6, 9, 9]], tolerance=3.5)
    assert pointing_hit(s, [[7, 6, 9, 9]], tolerance=3.7)
    assert not pointing_hit(s, torch.zeros(0, 4))


def test_pointing_two_boxes_of_one_class() -> None:
    s = peaked_map(3, 5)
    far, near = [0, 7, 2, 9], [4, 2, 6, 4]
    assert pointing_hit(s, [far, near])
    assert pointing_hit(s, [near, far])
    assert not pointing_hit(s, [far, [8, 8, 9, 9]])
    assert pointing_hit(s, [far, [8, 8, 9, 9]], tolerance=15)


def test_peak_ties_go_to_the_first_in_row_major_order() -> None:
    s = torch.zeros(4, 4)
    s[2, 1] = s[1, 3] = 1.0
    assert saliency_peak(s) == (1, 3)
    assert saliency_peak(torch.zeros(3, 3)) == (0, 0)


def test_pointing_equals_literal_loops() -> None:
    g = torch.Generator().manual_seed(5)
    for _ in range(50):
        s = torch.randint(0, 5, (12, 15), generator=g).float()
        n = int(torch.randint(1, 4, (1,), generator=g))
        corners = torch.randint(0, 15, (n, 4), generator=g).float()
        boxes = torch.stack([torch.minimum(corners[:, 0], corners[:, 2]),
                             torch.minimum(corners[:, 1], corners[:, 3]).clamp(max=11),
                             torch.maximum(corners[:, 0], corners[:, 2]),
                             torch.maximum(corners[:, 1], corners[:, 3]).clamp(max=11)], 1)
        for tol in (0, 1, 1.5, 4, 5):
            assert pointing_hit(s, boxes, tol) == slow_pointing(s, boxes.tolist(), tol)


def test_bad_boxes_are_refused() -> None:
    with pytest.raises(FdcamError, match=r"\[N, 4\]"):
        pointing_hit(torch.rand(4, 4), [[1, 2, 3]])
    with pytest.raises(FdcamError, match="x1 <= x2"):
        pointing_hit(torch.rand(4, 4), [[3, 0, 1, 2]])
    with pytest.raises(FdcamError, match="one per box"):
        ClassBoxes(torch.tensor([[0, 0, 1, 1]]), torch.tensor([True, False]))


def test_tolerance_is_strict_at_exactly_15_pixels() -> None:
    """Hand-computed: the peak at (row 20, col 20) of a 64×64 map; one-pixel boxes."""
    s = torch.zeros(64, 64)
    s[20, 20] = 1.0

    def hit(x: int, y: int) -> bool:
        return pointing_record(s, torch.tensor([[x, y, x, y]])).hit_tol15

    assert not hit(35, 20)  # 15 px to the right: 15² < 15² is false
    assert hit(34, 20)  # 14 px
    assert not hit(29, 32)  # (9, 12): 81 + 144 = 225, exactly 15
    assert hit(30, 30)  # (10, 10): 200 < 225
    assert not hit(31, 31)  # (11, 11): 242
    assert not hit(20, 5)  # 15 px up
    # A box that spans the peak's row: the distance is to its nearest pixel.
    assert pointing_record(s, torch.tensor([[34, 0, 40, 63]])).hit_tol15
    assert not pointing_record(s, torch.tensor([[35, 0, 40, 63]])).hit_tol15


def test_pointing_record_keeps_difficult_boxes_unless_all_are_difficult() -> None:
    s = peaked_map(3, 5)
    hard_hit = ClassBoxes(torch.tensor([[4, 2, 6, 4], [0, 30, 1, 31]]),
                          torch.tensor([True, False]))
    record = pointing_record(s, hard_hit, image="a", target=7)
    # TorchRay's mask is every box of the class, the difficult one included.
    assert record == PointingRecord("a", 7, True, True, False)
    only_hard = ClassBoxes(torch.tensor([[4, 2, 6, 4]]), torch.tensor([True]))
    assert pointing_record(s, only_hard).hit_tol15 is None  # TorchRay skips the class
    assert pointing_record(s, only_hard).difficult
    assert pointing_record(s, only_hard).hit  # the paper's test still counts it
    near = pointing_record(peaked_map(3, 5, size=32), torch.tensor([[15, 3, 20, 4]]))
    assert (near.hit, near.hit_tol15) == (False, True)  # 10 px to the right
    # A box outside the map has no pixel in TorchRay's mask: never a hit.
    assert not pointing_record(s, torch.tensor([[15, 3, 20, 4]])).hit_tol15


def test_pointing_record_at_the_images_original_resolution() -> None:
    """A 4×4 map of a 40×80 image: the map is resized (bilinear, align_corners=False) to
    40×80 and the tolerance counts the image's pixels."""
    s = torch.zeros(4, 4)
    s[1, 3] = 1.0
    big = F.interpolate(s[None, None], size=(40, 80), mode="bilinear",
                        align_corners=False)[0, 0]
    row, col = saliency_peak(big)
    # Rows 14 and 15 sample the map at 0.95 and 1.05 (weight 0.95 on row 1 each; the first
    # wins); columns from 70 on sample at >= 3.025, clamped to the last column: weight 1.
    assert (row, col) == (14, 70)
    box = torch.tensor([[col - 15, row, col - 15, row]])  # 15 px left of the peak
    assert not pointing_record(s, ClassBoxes(box, image_size=(40, 80))).hit_tol15
    box = torch.tensor([[col - 14, row, col - 14, row]])
    assert pointing_record(s, ClassBoxes(box, image_size=(40, 80))).hit_tol15
    # The same box read in the map's own pixels is far outside the 4×4 map: a miss.
    assert not pointing_record(s, ClassBoxes(box)).hit_tol15
    with pytest.raises(FdcamError, match="image_size"):
        ClassBoxes(box, image_size=(40, 0))


def test_pointing_game_summary_gives_both_variants() -> None:
    records = [
        PointingRecord("i1", 0, True, True, method="A"),
        PointingRecord("i1", 1, False, True, method="A"),
        PointingRecord("i2", 0, False, False, method="A"),
        PointingRecord("i3", 1, True, None, difficult=True, method="A"),
        PointingRecord("i1", 0, True, True, method="B"),
    ]
    table = pointing_game(records)
    a = table.set_index("method").loc["A"]
    assert a["accuracy"] == pytest.approx(2 / 4)  # Hits / (Hits + Misses), Eq. 12
    assert (a["hits"], a["pairs"]) == (2, 4)
    # class 0: 1/2, class 1: 1/1 (i3 skipped: only difficult boxes) -> mean 0.75
    assert a["accuracy_tol15"] == pytest.approx(0.75)
    assert (a["pairs_tol15"], a["classes"]) == (3, 2)
    assert table["method"].tolist() == ["A", "B"]
    df = pd.DataFrame({"image": ["x", "y", "z"], "target": [0, 0, 1],
                       "hit": pd.array([True, pd.NA, False], dtype="boolean"),
                       "hit_tol15": pd.array([True, pd.NA, True], dtype="boolean"),
                       "error": [None, None, "boom"]})
    row = pointing_game(df).iloc[0]
    assert (row["method"], row["accuracy"], row["pairs"], row["classes"]) == ("", 1.0, 1, 1)
    with pytest.raises(FdcamError, match="hit_tol15"):
        pointing_game(pd.DataFrame({"target": [1], "hit": [True]}))


def test_pointing_game_mean_over_all_classes_as_torchray() -> None:
    records = [PointingRecord("i1", 0, True, True), PointingRecord("i2", 0, False, False),
               PointingRecord("i1", 2, True, True)]
    # Classes 0: 1/2, 1: no pairs (counts 0, as hits / max(1, pairs)), 2: 1/1 -> 1.5 / 3.
    row = pointing_game(records, num_classes=3).iloc[0]
    assert row["accuracy_tol15"] == pytest.approx(0.5)
    assert pointing_game(records).iloc[0]["accuracy_tol15"] == pytest.approx(0.75)
    with pytest.raises(FdcamError, match="not a class of 2"):
        pointing_game(records, num_classes=2)
