"""The two evaluation protocols of §IV: insertion/deletion AUC and the pointing game.

Faithfulness (§IV-B) follows the RISE protocol (Petsiuk et al., 2018) as its reference
code runs it. Pixels are ranked by descending saliency (a stable sort, so ties keep
pixel-index order) and changed ``step`` at a time: 224·8 = 1,792 pixels at 224×224
(3.57 % of the image, the paper's "3.6 %"), the same fraction 1792/50176 = 1/28 at other
sizes. The score after each step is the softmax probability of the target class:

* deletion starts from the image and sets pixels to 0 (in normalised space);
* insertion starts from the image convolved with RISE's kernel (`rise_kernel`: a unit
  impulse on an 11×11 grid filtered by a Gaussian of σ = 5 with a reflecting border,
  centre/corner ratio 1.142 — nearly flat) per channel with zero padding, and restores the
  original pixels.

A curve has ``n_steps + 1`` points, ``n_steps = ceil(H·W / step)`` (224×224: 28 steps of
1,792 pixels, 29 points), and its area is the trapezoid rule on [0, 1] with equally spaced
points, ``AUC = (Σ s − s₀/2 − sₙ/2) / (n − 1)``. Higher insertion and lower deletion are
better; ``overall = insertion − deletion``.

Discriminability (§IV-C, Eq. 12) is the pointing game (Zhang et al., 2016): the maximum
of the map is a hit when it lies inside a box of the class. `pointing_game` reports the
paper's ``Acc = Hits / (Hits + Misses)`` over all (image, class) pairs, and the original
game as TorchRay's benchmark scores it (``*_tol15``: strictly within 15 pixels of a box of
the class, classes whose boxes are all VOC-``difficult`` skipped, accuracy per class then
averaged) — at the boxes' resolution, which is the image's original resolution only when
the boxes are given at it (`ClassBoxes.image_size`); see `pointing_record`.

Example::

    curves = insertion_deletion_curves(model, x, explanation.saliency, target)
    curves.insertion_auc, curves.deletion_auc, curves.overall   # each [B]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.models import LoadedModel
from fdcam.split import eval_mode
from fdcam.targets import check_images

RISE_STEP = 224 * 8  # pixels per step at 224×224 in RISE's reference (`CausalMetric`)
RISE_AREA = 224 * 224
STEP_FRACTION = RISE_STEP / RISE_AREA  # 1/28 = 3.57 %, which §IV-B rounds to "3.6%"
BLUR_KERNEL_SIZE = 11  # RISE's insertion substrate: klen = 11 …
BLUR_SIGMA = 5.0  # … nsig = 5, through scipy.ndimage.gaussian_filter
BLUR_TRUNCATE = 4.0  # scipy.ndimage's default: the 1-D filter's radius is ⌊4σ + ½⌋ = 20
POINTING_TOLERANCE = 15  # pixels, the original pointing game (Zhang et al.; TorchRay)
CPU_CURVE_BATCH = 4  # perturbed images per forward pass on a CPU (measured, see below)
CUDA_CURVE_BATCH = 64

Classifier = nn.Module | LoadedModel | Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- insertion/deletion


@dataclass(frozen=True)
class InsertionDeletion:
    """Insertion and deletion curves of a batch, and their areas.

    ``insertion``, ``deletion``: [B, n_points], the target-class probability after
    ``changed[i]`` pixels were inserted/deleted. ``changed``: [n_points] pixel counts,
    0 … H·W. ``insertion_auc``, ``deletion_auc``, ``overall``: [B].
    """

    insertion: Tensor
    deletion: Tensor
    changed: Tensor
    insertion_auc: Tensor
    deletion_auc: Tensor

    @property
    def overall(self) -> Tensor:
        """The paper's overall score (Table I): insertion AUC − deletion AUC, [B]."""
        return self.insertion_auc - self.deletion_auc

    @property
    def fractions(self) -> Tensor:
        """Fraction of the image changed at each point, [n_points] in [0, 1] (a plot's x)."""
        return self.changed.double() / self.changed[-1].double()


def perturbation_steps(height: int, width: int,
                       step_fraction: float = STEP_FRACTION) -> tuple[int, int]:
    """Pixels changed per step and the number of steps for an H×W image.

    step = max(1, round(step_fraction·H·W)), n_steps = ceil(H·W / step); a curve has
    n_steps + 1 points. The default fraction is RISE's 1792/50176 = 1/28: (1792, 28) at
    224×224. The product is exact (the fraction as a ratio of small integers), so a size
    whose share is a whole number of pixels gets exactly that many.
    """
    if not 0 < step_fraction <= 1:
        raise FdcamError(f"step_fraction must be in (0, 1]; got {step_fraction!r}")
    if height < 1 or width < 1:
        raise FdcamError(f"image size must be positive; got {height}x{width}")
    area = height * width
    # 1/28 as a float times 50176 is not exactly 1792.0; the nearest simple ratio is.
    fraction = Fraction(step_fraction).limit_denominator(1_000_000)
    step = max(1, round(fraction * area))
    return step, math.ceil(area / step)


def auc(curve: Tensor) -> Tensor:
    """Area under curves sampled uniformly on [0, 1], by the trapezoid rule.

    AUC = (Σᵢ sᵢ − s₀/2 − sₙ₋₁/2) / (n − 1) over the last axis: curve [..., n] -> [...].
    As in RISE the points count as equally spaced even when the last step is shorter.
    """
    if curve.dim() == 0 or curve.shape[-1] < 2:
        raise FdcamError(f"a curve needs at least 2 points on its last axis; "
                         f"got shape {tuple(curve.shape)}")
    n = curve.shape[-1]
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / (n - 1)


def _reflect_index(index: Tensor, n: int) -> Tensor:
    """Half-sample symmetric extension of 0 … n−1 (scipy's 'reflect': d c b a | a b c d |
    d c b a), for any integer index: period 2n, and i ↦ 2n − 1 − i on the mirrored half."""
    m = torch.remainder(index, 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def rise_kernel(size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA, *,
                truncate: float = BLUR_TRUNCATE, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """RISE's insertion kernel, [size, size]: a unit impulse at the centre of a size×size
    grid filtered by a Gaussian of σ with a reflecting border.

    This is ``scipy.ndimage.gaussian_filter(impulse, sigma)`` with its defaults (mode
    'reflect', truncate 4), written in torch: the filter is separable, k = r rᵀ, with the
    1-D response to the impulse at c = ⌊size/2⌋

        r_i = Σ_{t=−R}^{R} w_t · [reflect(i + t) = c],   w_t = exp(−t²/2σ²) / Σ_u exp(−u²/2σ²),

    R = ⌊truncate·σ + ½⌋ (20 for σ = 5) and reflect the half-sample symmetric extension.
    Because R exceeds the grid, most of the Gaussian folds back onto it: the kernel is
    nearly flat, centre/corner = 1.142 for the defaults (a sampled Gaussian has 2.72), and
    Σ k = 1 (reflection keeps the mass).
    """
    if size < 1 or size % 2 == 0:
        raise FdcamError(f"blur kernel size must be a positive odd number; got {size}")
    if not sigma > 0:
        raise FdcamError(f"blur sigma must be positive; got {sigma!r}")
    if not truncate > 0:
        raise FdcamError(f"blur truncate must be positive; got {truncate!r}")
    radius = int(truncate * sigma + 0.5)  # scipy's rule
    taps = torch.arange(-radius, radius + 1)
    w = torch.exp(-(taps.double() ** 2) / (2 * sigma**2))
    w = w / w.sum()
    source = _reflect_index(torch.arange(size)[:, None] + taps[None, :], size)  # [size, taps]
    r = (w[None, :] * (source == size // 2)).sum(dim=1)
    return torch.outer(r, r).to(dtype=dtype, device=device)


def blur(x: Tensor, size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """Insertion's starting image: each channel convolved with `rise_kernel`, [B, C, H, W].

    Depthwise convolution with zero padding (size // 2) in normalised space, so the border
    darkens towards the dataset mean exactly as in RISE's reference.
    """
    channels = x.shape[1]
    k = rise_kernel(size, sigma, dtype=x.dtype, device=x.device)
    weight = k.expand(channels, 1, size, size)
    return F.conv2d(x, weight, padding=size // 2, groups=channels)


def saliency_ranks(saliency: Tensor) -> Tensor:
    """Rank of every pixel in descending saliency: [B, H, W] -> [B, H·W], 0 = most salient.

    The sort is stable, so pixels of equal saliency are ranked by their row-major index;
    ReLU'd maps full of zeros therefore give reproducible curves on every device.
    """
    flat = saliency.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    ranks.scatter_(1, order, positions)  # ranks[b, order[b, r]] = r
    return ranks


def curve_batch_size(device: torch.device | str) -> int:
    """Default number of perturbed images per forward pass of the curves on `device`.

    On a CPU small batches are faster per image: EfficientNet-Lite0 on this project's
    2-core machine took 20–30 ms/image at batch 2–4 and 55–100 ms/image at batch 32
    (its activations no longer fit the caches), so `CPU_CURVE_BATCH` = 4; on a GPU a
    batch fills the device: `CUDA_CURVE_BATCH` = 64.
    """
    return CUDA_CURVE_BATCH if torch.device(device).type == "cuda" else CPU_CURVE_BATCH


def insertion_deletion_curves(
    model: Classifier,
    x: Tensor,
    saliency: Tensor,
    target: int | Sequence[int] | Tensor,
    *,
    step_fraction: float = STEP_FRACTION,
    batch_size: int | None = None,
) -> InsertionDeletion:
    """Insertion and deletion curves (RISE protocol, §IV-B) of a batch of saliency maps.

    x: normalised images [B, 3, H, W]; saliency: [B, H, W] (or [B, 1, H, W]); target: one
    class per image, [B] (or one int for all). Point i of a curve changes the
    n_i = min(i·step, H·W) highest-ranked pixels (`saliency_ranks`, `perturbation_steps`):

        deletion_i  = p_c(x ⊙ (1 − M_i))
        insertion_i = p_c(x ⊙ M_i + blur(x) ⊙ (1 − M_i)),   M_i = [rank < n_i]

    with p_c the softmax probability of the target class. This equals RISE's loop, which
    replaces the next `step` pixels in place and scores after each step, point for point.
    Both curves of all images are one list of 2·B·(n_steps + 1) perturbed images, evaluated
    `batch_size` at a time (None: `curve_batch_size` for x's device); each batch is built by
    one gather from the stacked (start, finish) images through the rank map, under
    `torch.no_grad` on x's device. An `nn.Module` is put in eval mode and restored after.
    """
    check_images(x)
    batch, channels, height, width = x.shape
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        saliency = saliency.squeeze(1)
    if tuple(saliency.shape) != (batch, height, width):
        raise FdcamError(f"saliency must have shape [B, H, W] = {[batch, height, width]} "
                         f"to match x; got {list(saliency.shape)}")
    if not torch.isfinite(saliency).all():
        raise FdcamError("saliency contains NaN or infinite values; expected finite maps")
    if batch_size is None:
        batch_size = curve_batch_size(x.device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FdcamError(f"batch_size must be a positive int or None; got {batch_size!r}")
    targets = _target_vector(target, batch).to(x.device)
    step, n_steps = perturbation_steps(height, width, step_fraction)
    n_points = n_steps + 1
    area = height * width
    changed = (torch.arange(n_points, device=x.device) * step).clamp_(max=area)

    network = model.model if isinstance(model, LoadedModel) else model
    # Dropout/batch-norm in train mode would make the curves random: eval mode, restored.
    mode = eval_mode(network) if isinstance(network, nn.Module) else contextlib.nullcontext()
    with mode, torch.no_grad():
        ranks = saliency_ranks(saliency.to(x.device)).view(batch, 1, height, width)
        # Per image, [deletion start, deletion finish, insertion start, insertion finish]:
        # a pixel of a perturbed image comes from "finish" once its rank is < n_i.
        ends = torch.stack([x, torch.zeros_like(x), blur(x), x], dim=1)
        ends = ends.reshape(batch * 4, channels, height, width)
        per_image = 2 * n_points  # deletion points, then insertion points
        total = batch * per_image
        probabilities = torch.empty(total, device=x.device)
        for start in range(0, total, batch_size):
            q = torch.arange(start, min(start + batch_size, total), device=x.device)
            image, rest = q // per_image, q % per_image
            kind, point = rest // n_points, rest % n_points  # kind 0 deletion, 1 insertion
            finished = ranks[image] < changed[point].view(-1, 1, 1, 1)  # [n, 1, H, W]
            source = (4 * image + 2 * kind).view(-1, 1, 1, 1) + finished
            perturbed = ends.gather(0, source.expand(-1, channels, -1, -1))
            probabilities[q] = _probability(network, perturbed, targets[image])
    probabilities = probabilities.view(batch, 2, n_points)
    deletion, insertion = probabilities[:, 0], probabilities[:, 1]
    return InsertionDeletion(insertion, deletion, changed, auc(insertion), auc(deletion))


def _target_vector(target: int | Sequence[int] | Tensor, batch: int) -> Tensor:
    if isinstance(target, bool):
        raise FdcamError(f"target must be a class index, not {target!r}")
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long)
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise FdcamError(f"target must hold integer class indices; got dtype {t.dtype}")
    if t.dim() == 2 and t.shape[1] == 1:
        t = t.squeeze(1)
    if t.dim() == 0:
        t = t.expand(batch)
    if tuple(t.shape) != (batch,):
        raise FdcamError(f"target must be one class per image, shape [{batch}]; "
                         f"got shape {list(t.shape)}")
    return t.long()


def _probability(network: Callable[[Tensor], Tensor], images: Tensor, cls: Tensor) -> Tensor:
    logits = network(images)
    if logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        raise FdcamError(f"model must return logits [N, classes]; got {list(logits.shape)}")
    if int(cls.max()) >= logits.shape[1] or int(cls.min()) < 0:
        raise FdcamError(f"target class {int(cls.max())} is out of range; the model has "
                         f"{logits.shape[1]} classes")
    # Softmax in float32 at least: half-precision probabilities near 1 lose the curve's tail.
    probs = torch.softmax(logits.float(), dim=1)
    return probs.gather(1, cls[:, None]).squeeze(1)


# ------------------------------------------------------------------------------- pointing game


def saliency_peak(saliency: Tensor) -> tuple[int, int]:
    """(row, column) of the map's maximum; ties go to the first in row-major order."""
    if saliency.dim() != 2:
        raise FdcamError(f"saliency must be one map [H, W]; got shape {list(saliency.shape)}")
    # torch.argmax returns the first maximal index, which makes the tie rule explicit.
    index = int(saliency.flatten().argmax())
    return divmod(index, saliency.shape[1])


def pointing_hit(saliency: Tensor, boxes: Tensor | Sequence[Sequence[float]],
                 tolerance: float = 0) -> bool:
    """Pointing-game hit: is the map's maximum inside, or within `tolerance` pixels of, a box?

    saliency: [H, W]; boxes: [N, 4] as (x1, y1, x2, y2) in the map's 0-based pixel
    coordinates (x = column, y = row), both corners inclusive: a box is the set of pixels
    (c, r) with x1 ≤ c ≤ x2, y1 ≤ r ≤ y2 inside the map (TorchRay's boolean mask). With
    the peak p, d = min over those pixels q of ‖p − q‖₂, computed as
    ‖(max(⌈x1⌉ − c, 0, c − ⌊x2⌋), max(⌈y1⌉ − r, 0, r − ⌊y2⌋))‖₂ after clipping to the map.

    * tolerance 0 (the paper's Eq. 12): a hit when d = 0, the peak inside a box;
    * tolerance > 0 (the original game as TorchRay's `PointingGame.evaluate` scores it):
      a hit when d < tolerance, strictly — a box pixel exactly 15 px away is a miss.

    No boxes (or none with a pixel inside the map): a miss.
    """
    if tolerance < 0:
        raise FdcamError(f"tolerance must be >= 0 pixels; got {tolerance}")
    row, col = saliency_peak(saliency)
    b = _check_boxes(boxes)
    height, width = saliency.shape
    x1 = torch.ceil(b[:, 0]).clamp(min=0)
    y1 = torch.ceil(b[:, 1]).clamp(min=0)
    x2 = torch.floor(b[:, 2]).clamp(max=width - 1)
    y2 = torch.floor(b[:, 3]).clamp(max=height - 1)
    present = (x1 <= x2) & (y1 <= y2)
    dx = torch.clamp(torch.maximum(x1 - col, col - x2), min=0)
    dy = torch.clamp(torch.maximum(y1 - row, row - y2), min=0)
    squared = dx**2 + dy**2
    close = squared == 0 if tolerance == 0 else squared < tolerance**2
    return bool((close & present).any())


def _check_boxes(boxes: Tensor | Sequence[Sequence[float]]) -> Tensor:
    b = torch.as_tensor(boxes, dtype=torch.float64).cpu()
    if b.numel() == 0:
        return b.reshape(0, 4)
    if b.dim() != 2 or b.shape[1] != 4:
        raise FdcamError(f"boxes must be [N, 4] as (x1, y1, x2, y2); got shape {list(b.shape)}")
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise FdcamError("boxes must have x1 <= x2 and y1 <= y2 (xyxy, corners inclusive)")
    return b


@dataclass(frozen=True)
class ClassBoxes:
    """The boxes of one class in one image: [N, 4] xyxy pixels and VOC `difficult` flags [N].

    ``image_size``: (H, W) of the image the boxes are measured in, when that is not the
    map's own resolution — for the original pointing game, the image's original size, with
    the boxes in its 0-based inclusive pixels (VOC's corners minus 1). None: the boxes are
    in the map's pixels.
    """

    boxes: Tensor
    difficult: Tensor | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        boxes = _check_boxes(self.boxes)
        object.__setattr__(self, "boxes", boxes)
        flags = (torch.zeros(boxes.shape[0], dtype=torch.bool) if self.difficult is None
                 else torch.as_tensor(self.difficult, dtype=torch.bool).flatten().cpu())
        if flags.shape[0] != boxes.shape[0]:
            raise FdcamError(f"difficult flags must be one per box: {boxes.shape[0]} boxes, "
                             f"{flags.shape[0]} flags")
        object.__setattr__(self, "difficult", flags)
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
                raise FdcamError(f"image_size must be (height, width) in pixels, two positive "
                                 f"ints; got {self.image_size!r}")
            object.__setattr__(self, "image_size", size)

    @property
    def all_difficult(self) -> bool:
        """True when every box is difficult: the original pointing game skips the class."""
        assert self.difficult is not None
        return bool(self.difficult.all())


@dataclass(frozen=True)
class PointingRecord:
    """One (image, class) pair of the pointing game; `pointing_record` makes one from a map.

    ``hit``: the paper's test (the peak inside a box of the class). ``hit_tol15``: the
    original test as TorchRay scores it (strictly within 15 px of a box of the class,
    difficult boxes included); None when the class is skipped because all its boxes are
    difficult (then ``difficult`` is True).
    """

    image: str
    target: int
    hit: bool
    hit_tol15: bool | None
    difficult: bool = False
    method: str = ""


def pointing_record(saliency: Tensor, boxes: ClassBoxes | Tensor, *, image: str = "",
                    target: int = -1, method: str = "",
                    tolerance: float = POINTING_TOLERANCE) -> PointingRecord:
    """Score one map [H, W] against the boxes of its class under both pointing-game tests.

    When ``boxes.image_size`` differs from the map's size the map is first resized to it
    (bilinear, align_corners=False: TorchRay's ``resize=image_size``), so the peak and the
    tolerance are in the image's own pixels. TorchRay's `PointingGameBenchmark` (read for
    its semantics): the class mask is the union of *all* its boxes, difficult ones
    included; a class whose boxes are all difficult is skipped (``hit_tol15`` None);
    a hit when a mask pixel lies at distance² < 15² from the peak.

    The result is TorchRay's test exactly when the boxes are at the image's original
    resolution: always for our mosaics (composed at the model's input size, so the mosaic
    is the original image), and for VOC only when its boxes come with ``image_size``;
    boxes mapped to the model's input (e.g. `fdcam.evaluate.read_voc_boxes`) give our
    variant, 15 *input* pixels, about 15·W₀/224 original ones.
    """
    cls_boxes = boxes if isinstance(boxes, ClassBoxes) else ClassBoxes(boxes)
    assert cls_boxes.difficult is not None
    if saliency.dim() != 2:
        raise FdcamError(f"saliency must be one map [H, W]; got shape {list(saliency.shape)}")
    size = cls_boxes.image_size
    if size is not None and size != tuple(saliency.shape):
        saliency = F.interpolate(saliency[None, None].float(), size=size, mode="bilinear",
                                 align_corners=False)[0, 0]
    hit = pointing_hit(saliency, cls_boxes.boxes, 0)
    if cls_boxes.all_difficult:
        return PointingRecord(image, target, hit, None, True, method)
    return PointingRecord(image, target, hit,
                          pointing_hit(saliency, cls_boxes.boxes, tolerance), False, method)


def pointing_game(records: pd.DataFrame | Iterable[PointingRecord], *,
                  num_classes: int | None = None) -> pd.DataFrame:
    """Both pointing-game accuracies, one row per method.

    Input: `PointingRecord`s or a table with columns ``target``, ``hit``, ``hit_tol15``
    (optional ``method``, ``difficult``, ``error``) such as `fdcam.evaluate` writes; rows
    without a ``hit`` (no box of that class, or a failed image) are ignored. Output columns:

    * ``accuracy`` — the paper's Eq. 12, Hits / (Hits + Misses) over all (image, class)
      pairs at tolerance 0; with ``hits`` and ``pairs``;
    * ``accuracy_tol15`` — the original pointing game: per class c, acc_c = hits_c / pairs_c
      at 15 px with difficult-only classes skipped, then the mean over classes; with
      ``pairs_tol15`` and ``classes``. `num_classes` None: the mean over the classes that
      have pairs; an int K: TorchRay's mean over all K classes, a class without pairs
      counting 0 (its hits / max(1, hits + misses)) — the same on VOC2007, where every
      class has pairs.
    """
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, int) or num_classes < 1):
        raise FdcamError(f"num_classes must be a positive int or None; got {num_classes!r}")
    df = (records.copy() if isinstance(records, pd.DataFrame)
          else pd.DataFrame([asdict(r) for r in records]))
    missing = {"target", "hit", "hit_tol15"} - set(df.columns)
    if missing:
        raise FdcamError(f"pointing-game records need columns target, hit, hit_tol15; "
                         f"missing {', '.join(sorted(missing))}")
    if "method" not in df.columns:
        df["method"] = ""
    if "error" in df.columns:
        df = df[df["error"].isna()]
    df = df[df["hit"].notna()]
    rows = []
    for method, group in df.groupby("method", sort=True):
        hits = group["hit"].astype(bool)
        tol = group[group["hit_tol15"].notna()]
        per_class = tol["hit_tol15"].astype(bool).groupby(tol["target"]).mean()
        if num_classes is not None:
            outside = [int(c) for c in per_class.index if not 0 <= int(c) < num_classes]
            if outside:
                raise FdcamError(f"target {outside[0]} is not a class of {num_classes}; "
                                 f"expected 0 … {num_classes - 1}")
            accuracy_tol15 = float(per_class.sum()) / num_classes
        else:
            accuracy_tol15 = float(per_class.mean()) if len(per_class) else math.nan
        rows.append({
            "method": method,
            "accuracy": float(hits.mean()),
            "hits": int(hits.sum()),
            "pairs": len(group),
            "accuracy_tol15": accuracy_tol15,
            "pairs_tol15": len(tol),
            "classes": len(per_class),
        })
    columns = ["method", "accuracy", "hits", "pairs", "accuracy_tol15", "pairs_tol15",
               "classes"]
    return pd.DataFrame(rows, columns=columns)
