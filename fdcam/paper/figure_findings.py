"""What Figs. 1 and 4 (chapter 04) show, in sentences and tables computed from the maps of
the run (never typed by hand, so a rerun cannot leave them stale); which images they explain
is `fdcam.paper.figure_choice`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from fdcam.evaluation.pointing import pointing_hit, saliency_peak
from fdcam.models import LoadedModel
from fdcam.paper.figure_choice import Fig1Image
from fdcam.paper.names import method_label
from fdcam.paper.settings import SAMPLE_LAYER

QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
"""A mosaic's quadrants in reading order, as `fdcam.evaluation.photos.quadrant_boxes`."""

MODEL_LABELS = {"efficientnet-lite0": "EfficientNet-Lite0",
                "efficientnet-lite2": "EfficientNet-Lite2", "vgg16": "VGG16"}
"""How the book writes the networks' names; others as `LoadedModel.name`."""

PIXEL_METHODS = ("ig", "xrai")
"""Fig. 4's pixel-attribution methods; the others are CAM methods (one map per layer cell)."""


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
    # The index's name in the header's corner, not on a header row of its own.
    return pd.DataFrame(columns).set_index("quadrant").rename_axis(index=None,
                                                                   columns="quadrant")


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
         "its quadrant": QUADRANTS[q],
         "peak in": QUADRANTS[peak_quadrant(saliency, fig1.boxes)]
         + (" (blank map)" if is_blank(saliency) else ""),
         "hit": None if is_blank(saliency) else pointing_hit(saliency, fig1.boxes[q:q + 1]),
         "in its quadrant (%)": (None if is_blank(saliency) else
                                 round(100 * box_share(saliency, fig1.boxes[q]), 1))}
        for method, per_class in maps.items()
        for saliency, q in zip(per_class, fig1.quadrants, strict=True)
    ])


#: A map whose values span less than this is blank (`is_blank`).
BLANK_RANGE = 1e-6


def is_blank(saliency: Tensor) -> bool:
    """Whether a map is blank: the same value at every pixel (a CAM whose weighted sum is
    nowhere positive is zero everywhere). Its "peak" is then the first pixel, by the
    protocol's tie order, and says nothing about the image."""
    return float(saliency.max() - saliency.min()) < BLANK_RANGE


def _peak(subjects: Sequence[str]) -> str:
    return "peaks" if len(subjects) == 1 else "peak"


def join_words(words: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
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
    blank = [{m for m, per_class in maps.items() if is_blank(per_class[j])}
             for j in range(len(fig1.quadrants))]
    for j, q in enumerate(fig1.quadrants):
        name = categories[fig1.labels[q]]
        p = 100 * float(fig1.probabilities[fig1.labels[q]])
        shown = {m: hit for m, hit in hits[j].items() if m not in blank[j]}
        inside = [method_label(m) for m, hit in shown.items() if hit]
        elsewhere: dict[str, list[str]] = {}  # quadrant -> the methods that peak there
        for m, hit in shown.items():
            if not hit:
                quadrant = QUADRANTS[peak_quadrant(maps[m][j], fig1.boxes)]
                elsewhere.setdefault(quadrant, []).append(method_label(m))
        if not shown:
            where = "no map peaks anywhere"
        elif not elsewhere:
            where = ("the map peaks" if len(inside) == 1 else
                     "both maps peak" if len(inside) == 2 else f"all {len(inside)} maps peak")
            where += " inside its quadrant"
        else:
            others = ", ".join(f"{join_words(ms)} {_peak(ms)} in the {quadrant} quadrant"
                               for quadrant, ms in elsewhere.items())
            where = (f"{join_words(inside)} {_peak(inside)} inside its quadrant, {others}" if inside
                     else f"no map peaks inside its quadrant: {others}")
        empty = [method_label(m) for m in maps if m in blank[j]]
        if empty:
            whose = "'s map is" if len(empty) == 1 else "'s maps are"
            where += f" ({join_words(empty)}{whose} blank: zero at every pixel)"
        shares = {m: box_share(per_class[j], fig1.boxes[q]) for m, per_class in maps.items()
                  if m not in blank[j]}
        confined = (f"; the map most confined to the quadrant is {method_label(m)}'s "
                    f"({100 * shares[m]:.0f} % of it inside)"
                    if (m := max(shares, key=lambda k: shares[k], default=None)) else "")
        sentences.append(f"For **{name}** ({p:.2f} %, {QUADRANTS[q]} quadrant), {where}"
                         f"{confined}.")
    trio = ("gradcam", "scorecam", "fdcam")
    if set(trio) <= set(maps) and len(fig1.quadrants) > 1 and blank[-1] & set(trio):
        # A blank map neither follows the weak class nor stays on the dominant one.
        empty = [method_label(m) for m in trio if m in blank[-1]]
        whose = "'s map is" if len(empty) == 1 else "'s maps are"
        sentences.append(f"The paper's contrast (Grad-CAM and FD-CAM move to the weak class's "
                         f"object, Score-CAM does not) cannot be read here: {join_words(empty)}"
                         f"{whose} blank for the weak class.")
    elif set(trio) <= set(maps) and len(fig1.quadrants) > 1:
        weak_hits = hits[-1]  # the weak class is explained last
        paper = weak_hits["gradcam"] and weak_hits["fdcam"] and not weak_hits["scorecam"]
        follow = [method_label(m) for m in ("gradcam", "scorecam", "fdcam") if weak_hits[m]]
        stay = [method_label(m) for m in ("gradcam", "scorecam", "fdcam") if not weak_hits[m]]
        detail = (f"for the weak class, {join_words(follow) if follow else 'no method'} "
                  f"{'peak' if len(follow) > 1 else 'peaks'} in its quadrant"
                  + (f" and {join_words(stay)} {'does' if len(stay) == 1 else 'do'} not"
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
    blank = {m: [is_blank(s) for s in maps[m]] for m in cam}
    cells = {m: [peak_cell(s, grid) for s in maps[m]] for m in cam}
    text = ""
    empty = [(m, sum(blank[m])) for m in cam if any(blank[m])]
    if empty:
        text = ("Blank maps, zero at every pixel (the CAM's weighted sum is nowhere positive), "
                "whose peaks say nothing and are left out below: "
                + ", ".join(f"{method_label(m)} on {k} of {n} photo{'s' if n != 1 else ''}"
                            for m, k in empty) + ". ")
    agree, comparable, strays = 0, 0, []
    for i, photo in enumerate(photos):
        drawn = [m for m in cam if not blank[m][i]]
        peaks = [cells[m][i] for m in drawn]
        comparable += len(peaks) > 1  # a photo with fewer than two maps drawn: no peaks to
        if len(peaks) > 1 and max(max(abs(r1 - r2), abs(c1 - c2))  # compare
                                  for r1, c1 in peaks for r2, c2 in peaks) <= 1:
            agree += 1
        elif "fdcam" in drawn:
            r0, c0 = cells["fdcam"][i]
            far = [method_label(m) for m in drawn
                   if max(abs(cells[m][i][0] - r0), abs(cells[m][i][1] - c0)) > 1]
            if far:
                strays.append(f"{join_words(far)} on {photo}")
    of = n if comparable == n else comparable
    count = (f"all {of}" if agree == of and of > 1 else f"none of the {of}" if agree == 0
             else f"{agree} of {of}")
    text += "" if comparable == 0 else (f"The peaks of the {len(cam)} CAM methods "
             f"({join_words([method_label(m) for m in cam])}) fall in the same or a neighbouring "
             f"cell of a {grid[0]} × {grid[1]} grid (the target layer's resolution) on {count} "
             f"photo{'s' if of != 1 else ''}"
             + (" with two maps or more drawn" if comparable < n else "") + ".")
    text = text.strip()
    if strays:
        text += (" Methods whose peak lies more than one cell from FD-CAM's: "
                 + "; ".join(strays) + ".")
    others = [m for m in cam if m != "fdcam"]
    if "fdcam" in maps and others:
        mean = {}
        for m in others:  # a blank map has no correlation (NaN): left out
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
