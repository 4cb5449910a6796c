"""Figs. 1 and 4 (chapter 04): which images they explain, and what they show, in sentences
computed from the maps of the run (never typed by hand, so a rerun cannot leave them stale).

The imagenet-sample profile chooses its images by rules fixed before any map was drawn,
on the model's probabilities alone:

* **Fig. 1** (`two_class_quadrants`, `first_two_class_mosaic`): the first of the profile's
  pointing-game mosaics, in their seeded order, whose most probable quadrant class has a
  softmax probability of at least `FIG1_DOMINANT` (50 %) and whose least probable one less
  than `FIG1_WEAK` (1 %); it is explained for those two classes (the paper's dog 97.12 %
  and cat 0.68 %). With p ≥ 50 % the dominant class is the mosaic's top-1.
* **Fig. 4** (`first_recognised`): the first `FIG4_PHOTOS` (4, as in the paper) photos of
  the profile's faithfulness order whose top-1 class is their label, each explained for it.

The other profiles (offline, paper, smoke) explain the package photos that their notebook
parameters name; `PACKAGE_FIG1_MOSAIC`, `PACKAGE_FIG1_PHOTOS` and `PACKAGE_FIG4_PHOTOS` are
the defaults, picked for their probabilities before any map was looked at.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from fdcam.errors import FdcamError
from fdcam.evaluation.pointing import pointing_hit, saliency_peak
from fdcam.models import LoadedModel
from fdcam.paper.figure_data import image_tensor
from fdcam.paper.names import method_label
from fdcam.paper.settings import SAMPLE_LAYER
from fdcam.paper.setups import Setup

FIG1_DOMINANT = 0.5
"""Fig. 1's rule: the dominant quadrant class has a softmax probability ≥ this."""
FIG1_WEAK = 0.01
"""Fig. 1's rule: the weak (least probable) quadrant class has a probability < this."""
FIG4_PHOTOS = 4
"""Fig. 4's rule: how many photos (the paper shows four)."""

PACKAGE_FIG1_MOSAIC = 8
"""Offline, paper and smoke profiles: Fig. 1's mosaic, an index into ``mosaics(…, seed)``."""
PACKAGE_FIG1_PHOTOS = ("chelsea", "coffee")
"""Fig. 1's two quadrants (package photos), dominant class first."""
PACKAGE_FIG4_PHOTOS = ("camera", "motorcycle_left", "chelsea")
"""Fig. 4's package photos (their classes: data/offline_photos.csv)."""

QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
"""A mosaic's quadrants in reading order, as `fdcam.evaluation.photos.quadrant_boxes`."""

MODEL_LABELS = {"efficientnet-lite0": "EfficientNet-Lite0", "vgg16": "VGG16"}
"""How the book writes the networks' names; others as `LoadedModel.name`."""

PIXEL_METHODS = ("ig", "xrai")
"""Fig. 4's pixel-attribution methods; the others are CAM methods (one map per layer cell)."""


# ------------------------------------------------------------------------------ the rules


def two_class_quadrants(quadrant_probabilities: Sequence[float] | Tensor,
                        dominant: float = FIG1_DOMINANT,
                        weak: float = FIG1_WEAK) -> tuple[int, int] | None:
    """Fig. 1's rule for one mosaic: (most probable quadrant, least probable quadrant) when
    the first's class has p ≥ `dominant` and the second's p < `weak`; else None.

    quadrant_probabilities: [4], the softmax probability of each quadrant's class in reading
    order. Ties go to the first quadrant in reading order.
    """
    p = [float(v) for v in quadrant_probabilities]
    if len(p) < 2:
        raise FdcamError(f"a mosaic needs at least two quadrant probabilities; got {len(p)}")
    top = max(range(len(p)), key=lambda q: (p[q], -q))
    low = min(range(len(p)), key=lambda q: (p[q], q))
    return (top, low) if p[top] >= dominant and p[low] < weak else None


def first_two_class_mosaic(quadrant_probabilities: Iterable[Sequence[float] | Tensor],
                           dominant: float = FIG1_DOMINANT,
                           weak: float = FIG1_WEAK) -> tuple[int, tuple[int, int]]:
    """Fig. 1's rule over mosaics in their order: the index of the first that meets
    `two_class_quadrants`, and its (dominant, weak) quadrants. The iterable is read lazily,
    up to that mosaic only; none meeting the rule is a one-line `FdcamError`."""
    count = 0
    for index, probabilities in enumerate(quadrant_probabilities):
        count += 1
        quadrants = two_class_quadrants(probabilities, dominant, weak)
        if quadrants is not None:
            return index, quadrants
    raise FdcamError(f"none of the {count} mosaics has a quadrant class with p >= "
                     f"{dominant:g} and one with p < {weak:g}")


def first_recognised(predictions: Iterable[tuple[int, int]], k: int = FIG4_PHOTOS) -> list[int]:
    """Fig. 4's rule: the indices of the first `k` (top-1, label) pairs whose top-1 is the
    label. Read lazily, up to the k-th such pair; fewer than k is a one-line `FdcamError`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FdcamError(f"k must be an int >= 1; got {k!r}")
    chosen: list[int] = []
    count = 0
    for index, (top1, label) in enumerate(predictions):
        count += 1
        if top1 == label:
            chosen.append(index)
            if len(chosen) == k:
                return chosen
    raise FdcamError(f"only {len(chosen)} of {count} photos have their label as top-1; "
                     f"Fig. 4 needs {k}")


# ---------------------------------------------------------------------------- the images


@dataclass(frozen=True)
class Fig1Image:
    """Fig. 1's image: a 2×2 mosaic and the quadrants explained, dominant class first.

    ``x`` [3, H, W] normalised; ``labels`` the quadrants' classes in reading order;
    ``boxes`` [4, 4] the quadrants (xyxy, corners inclusive); ``names`` the quadrants'
    photos (None: one photo per class, so the class names it); ``probabilities``
    [num_classes] the model's softmax on the mosaic; ``quadrants`` the explained ones;
    ``chosen_by`` a sentence saying how the mosaic was chosen.
    """

    image_id: str
    x: Tensor
    labels: list[int]
    boxes: Tensor
    names: list[str] | None
    probabilities: Tensor
    quadrants: tuple[int, ...]
    chosen_by: str

    @property
    def classes(self) -> list[int]:
        """The explained classes, dominant first."""
        return [self.labels[q] for q in self.quadrants]


@dataclass(frozen=True)
class Fig4Images:
    """Fig. 4's photos: ``x`` [N, 3, H, W] normalised, ``classes`` [N] explained,
    ``probabilities`` [N, num_classes] the model's softmax; ``chosen_by`` a sentence."""

    image_ids: list[str]
    x: Tensor
    classes: list[int]
    probabilities: Tensor
    chosen_by: str


def _softmax(loaded: LoadedModel, x: Tensor) -> Tensor:
    """Softmax [N, num_classes] (on the CPU) of images x [N, 3, H, W]."""
    with torch.no_grad():
        return loaded.model(x).softmax(dim=1).cpu()


def package_fig1(loaded: LoadedModel, mosaic: int | None = None,
                 photos: Sequence[str] | None = None, *, seed: int = 0,
                 device: str = "cpu") -> Fig1Image:
    """Fig. 1 on the package photos: mosaic `mosaic` of ``mosaics(…, seed)`` (None:
    `PACKAGE_FIG1_MOSAIC`), explained for the quadrants of `photos` (None:
    `PACKAGE_FIG1_PHOTOS`), in that order."""
    from fdcam.evaluation.photos import mosaics

    index = PACKAGE_FIG1_MOSAIC if mosaic is None else mosaic
    names = list(PACKAGE_FIG1_PHOTOS if photos is None else photos)
    chosen = mosaics(index + 1, seed=seed)[index]
    missing = [name for name in names if name not in chosen.names]
    if missing:
        raise FdcamError(f"fig1_photos: {missing[0]!r} is not in mosaic {index} "
                         f"({', '.join(chosen.names)})")
    x = loaded.preprocess(chosen.image).to(device)
    how = (f"Mosaic {index} of the package photos (`mosaics(…, seed={seed})`), explained for "
           f"the quadrants of {' and '.join(names)}: the parameters `fig1_mosaic` and "
           f"`fig1_photos`")
    if mosaic is None and photos is None:
        how += (", whose defaults were picked for their probabilities (a dominant and a weak "
                "class) before any map was looked at")
    return Fig1Image(f"mosaic{index:02d}", x, list(chosen.labels), chosen.boxes,
                     list(chosen.names), _softmax(loaded, x[None])[0],
                     tuple(chosen.names.index(name) for name in names), how + ".")


def sample_fig1(setup: Setup, dominant: float = FIG1_DOMINANT,
                weak: float = FIG1_WEAK) -> Fig1Image:
    """Fig. 1 by the rule (`first_two_class_mosaic`) on `setup`'s pointing-game mosaics, in
    their seeded order, with its pointing model."""
    model, ids = setup.pointing_model, setup.image_ids("pointing")

    def image(image_id: str) -> Tensor:
        return image_tensor(setup.pointing_images[image_id].image).to(setup.device)

    def quadrant_probabilities() -> Iterable[Tensor]:
        for image_id in ids:
            labels = list(setup.pointing_images[image_id].boxes)
            yield _softmax(model, image(image_id)[None])[0][labels]

    index, quadrants = first_two_class_mosaic(quadrant_probabilities(), dominant, weak)
    image_id = ids[index]
    x = image(image_id)
    item = setup.pointing_images[image_id]  # one box per quadrant, in reading order
    labels = list(item.boxes)
    boxes = torch.cat([item.boxes[label].boxes for label in labels]).float()
    how = (f"`{image_id}`, the first of the profile's {len(ids):,} pointing-game mosaics in "
           f"their seeded order whose most probable quadrant class has p ≥ {100 * dominant:g} % "
           f"and whose least probable one p < {100 * weak:g} % (the rule above; "
           f"{index} mosaic{'s' if index != 1 else ''} before it did not meet it), explained "
           f"for those two classes.")
    return Fig1Image(image_id, x, labels, boxes, None, _softmax(model, x[None])[0], quadrants,
                     how)


def package_fig4(loaded: LoadedModel, photos: Sequence[str] | None = None, *,
                 device: str = "cpu") -> Fig4Images:
    """Fig. 4 on the package photos `photos` (None: `PACKAGE_FIG4_PHOTOS`), each explained
    for the class EfficientNet-Lite0 recognises in it (data/offline_photos.csv)."""
    from fdcam.evaluation.photos import offline_photos

    names = list(PACKAGE_FIG4_PHOTOS if photos is None else photos)
    by_name = {photo.name: photo for photo in offline_photos()}
    chosen = [by_name[name] for name in names]
    x = torch.stack([loaded.preprocess(photo.image) for photo in chosen]).to(device)
    how = (f"The package photos {', '.join(names)} (the parameter `fig4_photos`), each "
           f"explained for the class EfficientNet-Lite0 recognises in it (its top-1, recorded "
           f"in `data/offline_photos.csv`).")
    return Fig4Images(names, x, [photo.label for photo in chosen], _softmax(loaded, x), how)


def sample_label(image_id: str) -> int:
    """The ImageNet class of an imagenet-sample photo from its name (``n01440764_tench``:
    the WordNet id's index in `imagenet_wnids`)."""
    from fdcam.evaluation.imagenet import imagenet_wnids

    wnid = image_id.split("_", 1)[0]
    wnids = imagenet_wnids()
    if wnid not in wnids:
        raise FdcamError(f"{image_id!r} does not start with an ImageNet-1k WordNet id; "
                         f"expected names like n01440764_tench")
    return wnids.index(wnid)


def sample_fig4(setup: Setup, k: int = FIG4_PHOTOS) -> Fig4Images:
    """Fig. 4 by the rule (`first_recognised`) on `setup`'s faithfulness photos, in their
    seeded order, each explained for its label (= its top-1) with the setup's model."""
    images = setup.faithfulness_images

    def image(index: int) -> Tensor:
        return image_tensor(images[index][1]).to(setup.device)

    def predictions() -> Iterable[tuple[int, int]]:
        for index, (image_id, _) in enumerate(images):
            top1 = int(_softmax(setup.model, image(index)[None])[0].argmax())
            yield top1, sample_label(image_id)

    chosen = first_recognised(predictions(), k)
    x = torch.stack([image(i) for i in chosen])
    ids = [images[i][0] for i in chosen]
    skipped = chosen[-1] + 1 - k
    how = (f"The photos {', '.join(f'`{i}`' for i in ids)}: the first {k} of the profile's "
           f"{len(images):,} photos in their seeded order whose top-1 class is their label "
           f"(the rule above; {skipped} photo{'s' if skipped != 1 else ''} before them "
           f"{'were' if skipped != 1 else 'was'} skipped), each explained for that class.")
    return Fig4Images(ids, x, [sample_label(i) for i in ids], _softmax(setup.model, x), how)


# ---------------------------------------------------------------------- what the run shows


def activation_shape(loaded: LoadedModel) -> tuple[int, int, int]:
    """(K, h, w) of the target layer's activations A for an input of the model's size."""
    from fdcam.split import split_model

    split = split_model(loaded.model, loaded.target_layer)
    device = next(loaded.model.parameters()).device
    with torch.no_grad():
        a = split.body(torch.zeros(1, 3, *loaded.input_size, device=device))
    k, h, w = a.shape[1:]
    return int(k), int(h), int(w)


def pooling_linear_head(loaded: LoadedModel) -> bool:
    """Is the head after the target layer global average pooling and one linear layer?

    Read from the head's stages (`fdcam.head`: channel-wise pooling only, then a Linear
    layer that gives the logits), and checked: the logits do not change when A is replaced
    by its channel means (true for average pooling, not for max pooling).
    """
    from fdcam.split import split_model

    split = split_model(loaded.model, loaded.target_layer)
    stages = split.stages
    if stages is None or not (stages.first_is_classifier and stages.pooling_only):
        return False
    device = next(loaded.model.parameters()).device
    with torch.no_grad():  # A's shape, from the split already made
        shape = split.body(torch.zeros(1, 3, *loaded.input_size, device=device)).shape
    # A local generator: the notebook's seeded global random state stays as it was.
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(*shape, generator=generator).to(device)
    with torch.no_grad():
        logits = split.head(a)
        means = split.head(a.mean(dim=(2, 3), keepdim=True).expand_as(a))
    return bool(torch.allclose(logits, means, rtol=1e-4, atol=1e-4))


def model_at_layer(loaded: LoadedModel) -> str:
    """"EfficientNet-Lite0 at `_swish`": the network as the book names it and its layer."""
    return f"{MODEL_LABELS.get(loaded.name, loaded.name)} at `{loaded.target_layer}`"


def run_statement(profile: str, loaded: LoadedModel, *, dry_run: bool = False) -> str:
    """One sentence: the profile, network and target layer that built the page."""
    k, h, w = activation_shape(loaded)
    layer = f"target layer `{loaded.target_layer}` ({k} × {h} × {w})"
    if profile == "imagenet-sample":
        if loaded.target_layer == SAMPLE_LAYER:
            layer += ", the profile's main layer (Tables I–IV in chapters 05–07)"
        images = ("its own photos: pointing-game mosaics (Fig. 1) and faithfulness photos "
                  "(Fig. 4), chosen by the rule below")
    else:
        images = "photos that ship inside installed Python packages"
    weights = " with random weights (dry run)" if dry_run else ""
    name = MODEL_LABELS.get(loaded.name, loaded.name)
    return (f"**This page** was built with the `{profile}` profile: {name}{weights}, "
            f"{layer}; the images are {images}.")


def head_statement(loaded: LoadedModel) -> str:
    """Whether the identities of a pooling + linear head hold in this run, in one sentence."""
    if pooling_linear_head(loaded):
        return (f"In this run the head after `{loaded.target_layer}` is global average "
                f"pooling and one linear layer, so these identities hold.")
    return (f"In this run the head after `{loaded.target_layer}` is more than global average "
            f"pooling and one linear layer, so these identities do not hold.")


def quadrant_table(fig1: Fig1Image, categories: Sequence[str]) -> pd.DataFrame:
    """Each quadrant's photo (when named), class and softmax probability (%)."""
    columns: dict[str, list[object]] = {"quadrant": list(QUADRANTS[:len(fig1.labels)])}
    if fig1.names is not None:
        columns["photo"] = list(fig1.names)
    columns["class"] = [categories[c] for c in fig1.labels]
    columns["probability (%)"] = [round(100 * float(fig1.probabilities[c]), 2)
                                  for c in fig1.labels]
    return pd.DataFrame(columns).set_index("quadrant")


def peak_quadrant(saliency: Tensor, boxes: Tensor) -> int:
    """The quadrant (index into `boxes` [4, 4]) holding the map's maximum, saliency [H, W]."""
    return next(q for q in range(len(boxes)) if pointing_hit(saliency, boxes[q:q + 1]))


def box_share(saliency: Tensor, box: Tensor | Sequence[float]) -> float:
    """The share of the map's total inside `box` (xyxy, corners inclusive), saliency
    [H, W] ≥ 0; 0 for an all-zero map."""
    x1, y1, x2, y2 = (int(v) for v in torch.as_tensor(box).tolist())
    total = float(saliency.sum())
    return float(saliency[y1:y2 + 1, x1:x2 + 1].sum()) / total if total > 0 else 0.0


def peak_table(fig1: Fig1Image, maps: Mapping[str, Tensor],
               categories: Sequence[str]) -> pd.DataFrame:
    """Per method and explained class: its quadrant, the quadrant of the map's peak, whether
    that is a pointing-game hit, and the share of the map inside the class's quadrant (%).
    maps: method -> [n_classes, H, W] in the order of ``fig1.classes``."""
    return pd.DataFrame([
        {"method": method_label(method), "class": categories[fig1.labels[q]],
         "its quadrant": QUADRANTS[q], "peak in": QUADRANTS[peak_quadrant(saliency, fig1.boxes)],
         "hit": pointing_hit(saliency, fig1.boxes[q:q + 1]),
         "in its quadrant (%)": round(100 * box_share(saliency, fig1.boxes[q]), 1)}
        for method, per_class in maps.items()
        for saliency, q in zip(per_class, fig1.quadrants, strict=True)
    ])


def _peak(subjects: Sequence[str]) -> str:
    return "peaks" if len(subjects) == 1 else "peak"


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def fig1_finding(fig1: Fig1Image, maps: Mapping[str, Tensor],
                 categories: Sequence[str]) -> str:
    """What Fig. 1 shows, from its maps: for each class, which methods put their peak in the
    class's quadrant and which map is most confined to it; whether the paper's contrast
    (Grad-CAM and FD-CAM follow the weak class, Score-CAM does not) appears.
    maps: method -> [n_classes, H, W] in the order of ``fig1.classes``."""
    sentences = []
    hits = [{m: pointing_hit(per_class[j], fig1.boxes[q:q + 1]) for m, per_class in maps.items()}
            for j, q in enumerate(fig1.quadrants)]
    for j, q in enumerate(fig1.quadrants):
        name = categories[fig1.labels[q]]
        p = 100 * float(fig1.probabilities[fig1.labels[q]])
        inside = [method_label(m) for m, hit in hits[j].items() if hit]
        elsewhere: dict[str, list[str]] = {}  # quadrant -> the methods that peak there
        for m, hit in hits[j].items():
            if not hit:
                quadrant = QUADRANTS[peak_quadrant(maps[m][j], fig1.boxes)]
                elsewhere.setdefault(quadrant, []).append(method_label(m))
        if not elsewhere:
            where = ("the map peaks" if len(inside) == 1 else
                     "both maps peak" if len(inside) == 2 else f"all {len(inside)} maps peak")
            where += " inside its quadrant"
        else:
            others = ", ".join(f"{_join(ms)} {_peak(ms)} in the {quadrant} quadrant"
                               for quadrant, ms in elsewhere.items())
            where = (f"{_join(inside)} {_peak(inside)} inside its quadrant, {others}" if inside
                     else f"no map peaks inside its quadrant: {others}")
        shares = {m: box_share(per_class[j], fig1.boxes[q]) for m, per_class in maps.items()}
        confined = max(shares, key=lambda m: shares[m])
        sentences.append(
            f"For **{name}** ({p:.2f} %, {QUADRANTS[q]} quadrant), {where}; the map most "
            f"confined to the quadrant is {method_label(confined)}'s "
            f"({100 * shares[confined]:.0f} % of it inside).")
    if {"gradcam", "scorecam", "fdcam"} <= set(maps) and len(fig1.quadrants) > 1:
        weak_hits = hits[-1]  # the weak class is explained last
        paper = weak_hits["gradcam"] and weak_hits["fdcam"] and not weak_hits["scorecam"]
        follow = [method_label(m) for m in ("gradcam", "scorecam", "fdcam") if weak_hits[m]]
        stay = [method_label(m) for m in ("gradcam", "scorecam", "fdcam") if not weak_hits[m]]
        detail = (f"for the weak class, {_join(follow) if follow else 'no method'} "
                  f"{'peak' if len(follow) > 1 else 'peaks'} in its quadrant"
                  + (f" and {_join(stay)} {'does' if len(stay) == 1 else 'do'} not"
                     if stay and follow else ""))
        sentences.append(
            ("As in the paper's Fig. 1, " if paper else
             "The paper's contrast (Grad-CAM and FD-CAM move to the weak class's object, "
             "Score-CAM does not) does not appear here: ") + detail + ".")
    return " ".join(sentences)


def peak_cell(saliency: Tensor, grid: tuple[int, int] = (7, 7)) -> tuple[int, int]:
    """(row, column) of the map's maximum in a `grid` of equal cells; saliency [H, W]."""
    row, col = saliency_peak(saliency)
    return row * grid[0] // saliency.shape[0], col * grid[1] // saliency.shape[1]


def _correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two maps; NaN when either is constant."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    norm = float(a.norm() * b.norm())
    return float(a @ b) / norm if norm > 0 else math.nan


def fig4_finding(maps: Mapping[str, Tensor], photos: Sequence[str],
                 grid: tuple[int, int] = (7, 7)) -> str:
    """What Fig. 4 shows about the CAM methods, from its maps: on how many photos their
    peaks fall in the same or a neighbouring cell of a `grid` (the target layer's
    resolution), which methods stray from FD-CAM's peak, and whose map is closest to
    FD-CAM's (mean Pearson correlation over the photos) and whose farthest.
    maps: method -> [N, H, W]; photos: N names; ``ig`` and ``xrai`` are left out (their
    peaks are single pixels among many equal maxima)."""
    cam = [m for m in maps if m not in PIXEL_METHODS]
    if len(cam) < 2:
        return ""
    n = len(photos)
    cells = {m: [peak_cell(s, grid) for s in maps[m]] for m in cam}
    agree, strays = 0, []
    for i, photo in enumerate(photos):
        peaks = [cells[m][i] for m in cam]
        if max(max(abs(r1 - r2), abs(c1 - c2)) for r1, c1 in peaks for r2, c2 in peaks) <= 1:
            agree += 1
        elif "fdcam" in cells:
            r0, c0 = cells["fdcam"][i]
            far = [method_label(m) for m in cam
                   if max(abs(cells[m][i][0] - r0), abs(cells[m][i][1] - c0)) > 1]
            if far:
                strays.append(f"{_join(far)} on {photo}")
    count = f"all {n}" if agree == n and n > 1 else f"{agree} of {n}"
    text = (f"The peaks of the {len(cam)} CAM methods ({_join([method_label(m) for m in cam])}) "
            f"fall in the same or a neighbouring cell of a {grid[0]} × {grid[1]} grid (the "
            f"target layer's resolution) on {count} photo{'s' if n != 1 else ''}.")
    if strays:
        text += (" Methods whose peak lies more than one cell from FD-CAM's: "
                 + "; ".join(strays) + ".")
    others = [m for m in cam if m != "fdcam"]
    if "fdcam" in maps and others:
        mean = {}
        for m in others:
            values = [_correlation(maps["fdcam"][i], maps[m][i]) for i in range(n)]
            values = [v for v in values if not math.isnan(v)]
            if values:
                mean[m] = sum(values) / len(values)
        if mean:
            close = max(mean, key=lambda m: mean[m])
            far = min(mean, key=lambda m: mean[m])
            text += (f" FD-CAM's maps are closest to {method_label(close)}'s (mean Pearson "
                     f"correlation {mean[close]:.2f} over the photos)")
            text += (f" and farthest from {method_label(far)}'s ({mean[far]:.2f})."
                     if far != close else ".")
    return text
