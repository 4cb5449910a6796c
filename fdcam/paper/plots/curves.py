"""Fig. 5: insertion and deletion curves with their AUCs."""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from fdcam.errors import FdcamError
from fdcam.paper.names import method_label
from fdcam.paper.plots.overlays import as_vector, image_axes, image_pixels, overlay
from fdcam.paper.plots.style import COLUMN_WIDTH_IN, STYLE, method_color, styled

# ---------------------------------------------------------------------------------------
# Fig. 5: insertion and deletion curves


def curve_auc(curve: Tensor | np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions of [0, 1] (trapezoid rule).

    Equals RISE's (Σs − s₀/2 − sₙ/2)/(n − 1), as used by `fdcam.evaluation.faithfulness`.
    """
    y = as_vector(curve, "curve")
    if len(y) < 2:
        raise FdcamError(f"a curve needs at least 2 points; got {len(y)}")
    return float(np.trapezoid(y, np.linspace(0, 1, len(y))))


@styled
def auc_curves(curves: Mapping[str, Tensor], kind: str, ax: Axes | None = None,
               title: str | None = None, *, legend: bool = True) -> Axes:
    """Insertion or deletion curves of several methods, each with its AUC in the legend.

    curves: method -> [n] class probabilities after 0, 1/(n−1), …, 1 of the pixels were
    inserted or deleted (most salient first). kind: "insertion" or "deletion". The legend
    (``legend=False``: none) sits to the right of the axes, outside the curves.
    """
    if kind not in ("insertion", "deletion"):
        raise FdcamError(f"unknown curve kind {kind!r}; expected insertion or deletion")
    if not curves:
        raise FdcamError("auc_curves needs at least one curve")
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 2.4))
    for method, curve in curves.items():
        y = as_vector(curve, f"curves[{method!r}]")
        auc = curve_auc(y)
        width = 2.0 if method == "fdcam" else 1.0
        ax.plot(np.linspace(0, 1, len(y)), y, color=method_color(method), linewidth=width,
                label=f"{method_label(method)} ({auc:.3f})", zorder=3 if method == "fdcam" else 2)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"fraction of pixels {'inserted' if kind == 'insertion' else 'deleted'}")
    ax.set_ylabel("class probability")
    ax.set_title(title or f"{kind.capitalize()} ({'higher' if kind == 'insertion' else 'lower'}"
                          f" AUC is better)")
    if legend:
        ax.legend(title="method (AUC)", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


THUMBNAILS_PER_ROW = 4
"""Fig. 5's maps per row: four fit the column at 1.5 inches (150 CSS px) each."""


@styled
def faithfulness_figure(image: Tensor, saliency: Tensor | Mapping[str, Tensor],
                        deletion: Mapping[str, Tensor], insertion: Mapping[str, Tensor], *,
                        title: str | None = None, method: str = "fdcam",
                        width: float = COLUMN_WIDTH_IN) -> Figure:
    """One image of Fig. 5: the image and every method's map (top row), then the deletion
    and insertion curves of all methods, and a legend beside them with each method's
    deletion / insertion AUC.

    image: [3, H, W]; saliency: method -> [H, W] maps (the paper shows every method's), or
    one [H, W] map of `method`; deletion / insertion: method -> [n] curves as in
    `auc_curves`. `title` names the image above the figure.
    """
    maps = dict(saliency) if isinstance(saliency, Mapping) else {method: saliency}
    if not maps:
        raise FdcamError("faithfulness_figure needs at least one map")
    order = [m for m in deletion if m in maps] + [m for m in maps if m not in deletion]
    # The maps in rows of at most THUMBNAILS_PER_ROW, so that each is at least 1.5 inches
    # (150 CSS px) wide on the page.
    columns = min(THUMBNAILS_PER_ROW, 1 + len(order))
    map_rows = math.ceil((1 + len(order)) / columns)
    cell = min(1.6, 0.97 * width / columns)
    head = 0.35 if title else 0.0
    maps_height = map_rows * (cell + 0.35)
    height = head + 0.25 + maps_height + 0.45 + 2.2 + 0.45
    fig = plt.figure(figsize=(width, height))
    maps_top = 1 - (head + 0.25) / height
    maps_bottom = maps_top - maps_height / height
    top = fig.add_gridspec(map_rows, columns, left=0.01, right=0.99, top=maps_top,
                           bottom=maps_bottom, wspace=0.03, hspace=0.35 / cell)
    grid = fig.add_gridspec(1, 1, left=0.08, right=0.97, bottom=0.45 / height,
                            top=maps_bottom - 0.45 / height)
    ax = image_axes(fig.add_subplot(top[0, 0]))
    ax.imshow(image_pixels(image))
    ax.set_title("Input")
    for j, name in enumerate(order, start=1):
        overlay(image, maps[name], ax=fig.add_subplot(top[j // columns, j % columns]),
                title=method_label(name))
    bottom = grid[0].subgridspec(1, 3, width_ratios=[1, 1, 0.95], wspace=0.35)
    deletion_ax = fig.add_subplot(bottom[0])
    insertion_ax = fig.add_subplot(bottom[1])
    auc_curves(deletion, "deletion", ax=deletion_ax, title="Deletion (lower is better)",
               legend=False)
    auc_curves(insertion, "insertion", ax=insertion_ax, title="Insertion (higher is better)",
               legend=False)
    insertion_ax.set_ylabel("")
    key = fig.add_subplot(bottom[2])
    key.axis("off")
    handles = []
    for name in deletion:
        width_ = 2.0 if name == "fdcam" else 1.2
        auc_del = curve_auc(deletion[name])
        auc_ins = curve_auc(insertion[name]) if name in insertion else float("nan")
        handles.append(mpl.lines.Line2D([], [], color=method_color(name), linewidth=width_,
                                        label=f"{method_label(name)}  "
                                              f"{auc_del:.3f} / {auc_ins:.3f}"))
    key.legend(handles=handles, loc="center left", borderaxespad=0, handlelength=1.5,
               title="AUC: deletion / insertion", alignment="left")
    if title:
        fig.suptitle(title, x=0.01, y=1 - 0.05 / height, ha="left", va="top",
                     fontsize=STYLE["figure.titlesize"], fontweight="bold")
    return fig
