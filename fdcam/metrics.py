"""The two evaluation protocols of §IV: insertion/deletion AUC and the pointing game.

Faithfulness (§IV-B) follows the RISE protocol (Petsiuk et al., 2018). Pixels are ranked
by descending saliency (a stable sort, so ties keep pixel-index order) and changed
``step = max(1, round(0.036·H·W))`` at a time; the score after each step is the softmax
probability of the target class:

* deletion starts from the image and sets pixels to 0 (in normalised space);
* insertion starts from a blurred copy (11×11 Gaussian, σ = 5, zero padding) and restores
  the original pixels.

A curve has ``n_steps + 1`` points, ``n_steps = ceil(H·W / step)`` (224×224: step 1806,
28 steps, 29 points), and its area is the trapezoid rule on [0, 1],
``AUC = (Σ s − s₀/2 − sₙ/2) / (n − 1)``. Higher insertion and lower deletion are better;
``overall = insertion − deletion``.

Discriminability (§IV-C, Eq. 12) is the pointing game (Zhang et al., 2016): the maximum
of the map is a hit when it lies inside (or, in the original protocol, within 15 pixels
of) a box of the class. `pointing_game` reports both the paper's
``Acc = Hits / (Hits + Misses)`` over all (image, class) pairs and the original per-class
mean with 15-pixel tolerance and VOC ``difficult`` objects skipped.

Example::

    curves = insertion_deletion_curves(model, x, explanation.saliency, target)
    curves.insertion_auc, curves.deletion_auc, curves.overall   # each [B]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.models import LoadedModel
from fdcam.split import eval_mode
from fdcam.targets import check_images

STEP_FRACTION = 0.036  # §IV-B: "a rate of 3.6% of the original image's area at each step"
BLUR_KERNEL_SIZE = 11  # RISE's insertion baseline
BLUR_SIGMA = 5.0
POINTING_TOLERANCE = 15  # pixels, the original pointing game (Zhang et al.)

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
    n_steps + 1 points. For 224×224 at 3.6 %: (1806, 28).
    """
    if not 0 < step_fraction <= 1:
        raise FdcamError(f"step_fraction must be in (0, 1]; got {step_fraction!r}")
    if height < 1 or width < 1:
        raise FdcamError(f"image size must be positive; got {height}x{width}")
    area = height * width
    step = max(1, round(step_fraction * area))
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


def gaussian_kernel(size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA, *,
                    dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """Normalised 2-D Gaussian, [size, size]: k(i, j) ∝ exp(−((i−c)² + (j−c)²) / 2σ²).

    c = (size − 1)/2 and Σ k = 1. (RISE builds its kernel by filtering a unit impulse with
    scipy, whose reflecting border makes it slightly flatter; we sample the Gaussian.)
    """
    if size < 1 or size % 2 == 0:
        raise FdcamError(f"blur kernel size must be a positive odd number; got {size}")
    if sigma <= 0:
        raise FdcamError(f"blur sigma must be positive; got {sigma}")
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    k = torch.outer(g, g)  # separable: exp(−(a²+b²)/2σ²) = exp(−a²/2σ²)·exp(−b²/2σ²)
    return (k / k.sum()).to(dtype=dtype, device=device)


def blur(x: Tensor, size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """Insertion's starting image: each channel convolved with `gaussian_kernel`, [B, C, H, W].

    Depthwise convolution with zero padding in normalised space, so the border darkens
    towards the dataset mean exactly as in RISE's reference.
    """
    channels = x.shape[1]
    k = gaussian_kernel(size, sigma, dtype=x.dtype, device=x.device)
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


def insertion_deletion_curves(
    model: Classifier,
    x: Tensor,
    saliency: Tensor,
    target: int | Sequence[int] | Tensor,
    *,
    step_fraction: float = STEP_FRACTION,
    batch_size: int = 32,
) -> InsertionDeletion:
    """Insertion and deletion curves (RISE protocol, §IV-B) of a batch of saliency maps.

    x: normalised images [B, 3, H, W]; saliency: [B, H, W] (or [B, 1, H, W]); target: one
    class per image, [B] (or one int for all). Point i of a curve changes the
    min(i·step, H·W) highest-ranked pixels (`saliency_ranks`):

        deletion_i  = p_c(x ⊙ (1 − M_i))
        insertion_i = p_c(x ⊙ M_i + blur(x) ⊙ (1 − M_i))

    with M_i the mask of those pixels and p_c the softmax probability of the target class.
    The perturbed images are built from the ranks with masks, `batch_size` at a time, under
    `torch.no_grad` on x's device; an `nn.Module` is put in eval mode and restored after.
    """
    check_images(x)
    batch, _, height, width = x.shape
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        saliency = saliency.squeeze(1)
    if tuple(saliency.shape) != (batch, height, width):
        raise FdcamError(f"saliency must have shape [B, H, W] = {[batch, height, width]} "
                         f"to match x; got {list(saliency.shape)}")
    if not torch.isfinite(saliency).all():
        raise FdcamError("saliency contains NaN or infinite values; expected finite maps")
    if batch_size < 1:
        raise FdcamError(f"batch_size must be a positive int; got {batch_size}")
    targets = _target_vector(target, batch).to(x.device)
    step, n_steps = perturbation_steps(height, width, step_fraction)
    n_points = n_steps + 1
    area = height * width
    changed = (torch.arange(n_points, device=x.device) * step).clamp_(max=area)

    network = model.model if isinstance(model, LoadedModel) else model
    # Dropout/batch-norm in train mode would make the curves random: eval mode, restored.
    mode = eval_mode(network) if isinstance(network, nn.Module) else contextlib.nullcontext()
    with mode, torch.no_grad():
        ranks = saliency_ranks(saliency.to(x.device))
        blurred = blur(x)
        insertion = torch.empty(batch * n_points, device=x.device)
        deletion = torch.empty(batch * n_points, device=x.device)
        for start in range(0, batch * n_points, batch_size):
            # One flat index per (image, point): batches may straddle images.
            q = torch.arange(start, min(start + batch_size, batch * n_points), device=x.device)
            image, point = q // n_points, q % n_points
            mask = (ranks[image] < changed[point, None]).view(-1, 1, height, width)
            originals = x[image]
            cls = targets[image]
            deleted = originals.masked_fill(mask, 0.0)
            inserted = torch.where(mask, originals, blurred[image])
            deletion[q] = _probability(network, deleted, cls)
            insertion[q] = _probability(network, inserted, cls)
    insertion = insertion.view(batch, n_points)
    deletion = deletion.view(batch, n_points)
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
    """Pointing-game hit: is the map's maximum within `tolerance` pixels of a box?

    saliency: [H, W]; boxes: [N, 4] as (x1, y1, x2, y2) in the map's 0-based pixel
    coordinates (x = column, y = row), both corners inclusive. With the peak at (x, y),
    d = ‖(max(x1 − x, 0, x − x2), max(y1 − y, 0, y − y2))‖₂ is its Euclidean distance to a
    box; a hit when d ≤ tolerance for any box (tolerance 0: inside, borders included).
    No boxes: a miss.
    """
    if tolerance < 0:
        raise FdcamError(f"tolerance must be >= 0 pixels; got {tolerance}")
    row, col = saliency_peak(saliency)
    b = _check_boxes(boxes)
    if b.shape[0] == 0:
        return False
    dx = torch.clamp(torch.maximum(b[:, 0] - col, col - b[:, 2]), min=0)
    dy = torch.clamp(torch.maximum(b[:, 1] - row, row - b[:, 3]), min=0)
    return bool((torch.hypot(dx, dy) <= tolerance).any())


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
    """The boxes of one class in one image: [N, 4] xyxy pixels and VOC `difficult` flags [N]."""

    boxes: Tensor
    difficult: Tensor | None = None

    def __post_init__(self) -> None:
        boxes = _check_boxes(self.boxes)
        object.__setattr__(self, "boxes", boxes)
        flags = (torch.zeros(boxes.shape[0], dtype=torch.bool) if self.difficult is None
                 else torch.as_tensor(self.difficult, dtype=torch.bool).flatten().cpu())
        if flags.shape[0] != boxes.shape[0]:
            raise FdcamError(f"difficult flags must be one per box: {boxes.shape[0]} boxes, "
                             f"{flags.shape[0]} flags")
        object.__setattr__(self, "difficult", flags)

    @property
    def all_difficult(self) -> bool:
        """True when every box is difficult: the original pointing game skips the class."""
        assert self.difficult is not None
        return bool(self.difficult.all())


@dataclass(frozen=True)
class PointingRecord:
    """One (image, class) pair of the pointing game; `pointing_record` makes one from a map.

    ``hit``: the paper's test (tolerance 0, every box of the class). ``hit_tol15``: the
    original test (15 px, non-difficult boxes only); None when the class is skipped because
    all its boxes are difficult (then ``difficult`` is True).
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
    """Score one map against the boxes of its class under both pointing-game variants."""
    cls_boxes = boxes if isinstance(boxes, ClassBoxes) else ClassBoxes(boxes)
    assert cls_boxes.difficult is not None
    hit = pointing_hit(saliency, cls_boxes.boxes, 0)
    if cls_boxes.all_difficult:
        return PointingRecord(image, target, hit, None, True, method)
    easy = cls_boxes.boxes[~cls_boxes.difficult]
    return PointingRecord(image, target, hit, pointing_hit(saliency, easy, tolerance), False,
                          method)


def pointing_game(records: pd.DataFrame | Iterable[PointingRecord]) -> pd.DataFrame:
    """Both pointing-game accuracies, one row per method.

    Input: `PointingRecord`s or a table with columns ``target``, ``hit``, ``hit_tol15``
    (optional ``method``, ``difficult``, ``error``) such as `fdcam.evaluate` writes; rows
    without a ``hit`` (no box of that class, or a failed image) are ignored. Output columns:

    * ``accuracy`` — the paper's Eq. 12, Hits / (Hits + Misses) over all (image, class)
      pairs at tolerance 0; with ``hits`` and ``pairs``;
    * ``accuracy_tol15`` — the original pointing game: per class, hits / pairs at 15 px with
      difficult-only classes skipped, then the mean over classes; with ``pairs_tol15`` and
      ``classes``.
    """
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
        rows.append({
            "method": method,
            "accuracy": float(hits.mean()),
            "hits": int(hits.sum()),
            "pairs": len(group),
            "accuracy_tol15": float(per_class.mean()) if len(per_class) else math.nan,
            "pairs_tol15": len(tol),
            "classes": len(per_class),
        })
    columns = ["method", "accuracy", "hits", "pairs", "accuracy_tol15", "pairs_tol15",
               "classes"]
    return pd.DataFrame(rows, columns=columns)
