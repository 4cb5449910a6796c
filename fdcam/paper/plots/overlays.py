"""Figs. 1, 4, 6: saliency overlays on the image and grids of them (methods × images)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from fdcam.errors import FdcamError
from fdcam.evaluation.overlay import SALIENCY_CMAP, blend, cpu_tensor, image_pixels
from fdcam.paper.names import method_label
from fdcam.paper.plots.style import COLUMN_WIDTH_IN, styled

# ---------------------------------------------------------------------------------------
# Conversion at the plotting boundary


def as_vector(values: Tensor | np.ndarray, name: str, length: int | None = None) -> np.ndarray:
    v = cpu_tensor(values, name)
    if v.ndim != 1 or (length is not None and v.shape[0] != length):
        expected = f"[{length}]" if length is not None else "[K]"
        raise FdcamError(f"{name} must have shape {expected}; got {list(v.shape)}")
    return v.numpy()


def image_axes(ax: Axes | None, size: float = 2.0) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(size, size))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


# ---------------------------------------------------------------------------------------
# Figs. 1, 4, 6: overlays and grids


@styled
def overlay(image: Tensor | np.ndarray, saliency: Tensor | np.ndarray, ax: Axes | None = None,
            title: str | None = None, *, alpha: float = 0.5,
            cmap: str = SALIENCY_CMAP) -> Axes:
    """Draw a saliency map over its image (jet colour map) on `ax` (a new figure if None).

    image: [3, H, W] in [0, 1]; saliency: [H, W] in [0, 1]. Returns the axes.
    """
    pixels = blend(image, saliency, alpha=alpha, cmap=cmap)
    ax = image_axes(ax)
    ax.imshow(pixels, vmin=0, vmax=1)
    if title:
        ax.set_title(title)
    return ax


SHORT_LABELS = {"ig": "IG", "ablationcam": "Ablation-\nCAM", "gradcam++": "Grad-\nCAM++"}
"""Column titles of the method grids where the paper's name is too wide for a narrow column
(IG: Integrated Gradients)."""


def _wrap_label(text: str, height: float) -> str:
    """A row label broken at spaces so that each line fits a row `height` inches tall (about
    0.07 inch per character at 8 pt)."""
    import textwrap

    width = max(6, int(height / 0.07))
    return "\n".join(textwrap.fill(line, width) for line in str(text).split("\n"))


@styled
def method_grid(images: Tensor | Sequence[Tensor], saliency: Mapping[str, Tensor], *,
                row_labels: Sequence[str] | None = None, show_input: bool = True,
                size: float = 1.5, alpha: float = 0.5, width: float = COLUMN_WIDTH_IN,
                colorbar: bool = True, per_row: int | None = None) -> Figure:
    """Figs. 1, 4 and 6: one row per image, one column per method (and the input first).

    images: [N, 3, H, W] in [0, 1] (or N tensors [3, H, W]); saliency: method -> [N, H, W].
    For Figs. 1 and 6 (one image, several classes) repeat the image once per class and
    name the classes in `row_labels`. Column titles are the paper's method names
    (`SHORT_LABELS` where a column is narrow). Each cell is `size` inches, less when the
    columns would not fit `width` (the book's column); `colorbar`: the saliency scale under
    the grid. `per_row`: at most this many columns side by side; the rest continue below,
    each block with its own titles (so that cells stay large: 4 per row is 1.5 inches).
    """
    rows = [images[i] for i in range(len(images))]
    if not rows:
        raise FdcamError("method_grid needs at least one image")
    if not saliency:
        raise FdcamError("method_grid needs at least one method's saliency maps")
    for method, maps in saliency.items():
        if len(maps) != len(rows):
            raise FdcamError(f"saliency[{method!r}] has {len(maps)} maps for {len(rows)} "
                             f"images")
    if row_labels is not None and len(row_labels) != len(rows):
        raise FdcamError(f"{len(row_labels)} row labels for {len(rows)} images")
    columns = (["input"] if show_input else []) + list(saliency)
    wide = len(columns) if per_row is None else max(1, min(per_row, len(columns)))
    blocks = -(-len(columns) // wide)
    label_room = 0.3 if row_labels is not None else 0.0
    cell = min(size, (width - label_room) / wide)
    narrow = cell < 1.0
    bar_room = 0.45 if colorbar else 0.0
    fig, grid_axes = plt.subplots(len(rows) * blocks, wide, squeeze=False,
                                  figsize=(cell * wide + label_room,
                                           (cell + 0.35 * (blocks > 1)) * len(rows) * blocks
                                           + 0.35 + bar_room))
    for ax in grid_axes.flat:
        ax.set_visible(False)
    for i, image in enumerate(rows):
        for j, column in enumerate(columns):
            ax = image_axes(grid_axes[(j // wide) * len(rows) + i, j % wide])
            ax.set_visible(True)
            if column == "input":
                ax.imshow(image_pixels(image))
            else:
                ax.imshow(blend(image, saliency[column][i], alpha=alpha), vmin=0, vmax=1)
            if i == 0:
                name = "Input" if column == "input" else method_label(column)
                if narrow:
                    name = SHORT_LABELS.get(column, name)
                # broken to the cell's width: long labels of neighbours would overlap
                ax.set_title(_wrap_label(name, cell * 0.9), fontsize=8)
        if row_labels is not None:
            for block in range(blocks):
                grid_axes[block * len(rows) + i, 0].set_ylabel(
                    _wrap_label(row_labels[i], cell))
    fig.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.2,
                     rect=(0, bar_room / fig.get_figheight(), 1, 1))
    if colorbar:
        bottom = bar_room / fig.get_figheight()
        holder = fig.add_axes((0.3, bottom * 0.62, 0.4, bottom * 0.16))
        mappable = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap=SALIENCY_CMAP)
        bar = fig.colorbar(mappable, cax=holder, orientation="horizontal")
        bar.set_ticks([0, 0.5, 1])
        bar.ax.tick_params(length=2, pad=1)
        holder.set_title("saliency (0: none, 1: the map's maximum)", fontsize=7, pad=2)
    return fig
