"""Discriminability (§IV-C): the pointing game. The maximum of the map at image resolution
is a hit when it falls inside a box of the class: the paper's Hits/(Hits+Misses) over all
(image, class) pairs, and the original game's 15-pixel tolerance, per-class mean."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from fdcam.errors import FdcamError

POINTING_TOLERANCE = 15  # pixels, the original pointing game (Zhang et al.; TorchRay)


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
    if not bool(torch.isfinite(b).all()):
        raise FdcamError("boxes must have finite coordinates; got NaN or inf")
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
    boxes mapped to the model's input (e.g. `fdcam.evaluation.cli.read_voc_boxes`) give our
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
    (optional ``method``, ``difficult``, ``error``) such as `evaluate` writes; rows
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
