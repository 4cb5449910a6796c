"""Figures of the paper (Figs. 1–6): saliency overlays, method grids, insertion/deletion curves,
the channel groups of Fig. 3, the pipeline of Fig. 2, and the method chapters' diagnostics of
Eq. 4–8 (similarity heat-map and histogram, group thresholds and sizes, score scatter plots).

Every function takes torch tensors (numpy arrays are accepted too) and converts them to
numpy only here, at the plotting boundary. All figures share one small, PNG-friendly style
(`STYLE`, applied around each call; `use_style()` applies it to a whole notebook) and one
colour per method (`method_color`). Shapes:

* image pixels ``[3, H, W]`` in [0, 1] (``LoadedModel.to_pixels`` undoes the normalisation);
* a saliency map ``[H, W]`` in [0, 1] at the image's resolution (``Explanation.saliency``);
* activations ``[K, h, w]``; per-channel weights ``[K]``.

Example::

    from fdcam.plots import overlay, method_grid
    overlay(pixels, explanation.saliency[0], title="FD-CAM")
    method_grid(pixels_batch, {"gradcam": maps_a, "fdcam": maps_b}, row_labels=["dog", "cat"])
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from fdcam.errors import FdcamError
from fdcam.report import METHOD_LABELS, method_label
from fdcam.report import METRICS as METRICS_DIRECTION

# tab10 without its red, which is FD-CAM's alone
_TAB10 = mpl.colormaps["tab10"].colors  # type: ignore[attr-defined]
_PALETTE = [color for i, color in enumerate(_TAB10) if i != 3]
_FDCAM_COLOR = "#d62728"
_OURS_COLOR = "#4c72b0"

COLUMN_WIDTH_IN = 6.6
"""The width of a code cell's output in the book, in figure inches: 660 CSS px at the 100 px
per inch of `STYLE`'s ``figure.dpi`` (sphinx-book-theme 1.3 in a 1280 px window, measured in
headless Chromium). A figure this wide or narrower is shown at its own size, so a font of p
points is p·100/72 CSS px on screen; a wider one is scaled down to the column, its text
with it (tests/test_book_html.py)."""

MIN_FONT_PT = 7.0
"""The smallest font of any figure here: 7 pt is 9.7 CSS px at 100 px per inch, legible at
100 % zoom (tests/test_plots.py checks every figure; tests/test_book_html.py the built book)."""

STYLE: dict[str, Any] = {
    **sns.axes_style("whitegrid"),
    "axes.prop_cycle": cycler(color=_PALETTE),
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "xtick.bottom": True,
    "ytick.left": True,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.alpha": 0.5,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "image.interpolation": "nearest",
}
"""rcParams of every figure here: seaborn's whitegrid, fonts of 7–9 pt drawn at 100 px per
inch (so 9.7–12.5 CSS px when a figure fits the column), no top/right spines."""

SALIENCY_CMAP = "jet"
"""The colour map of saliency overlays: jet, as in the paper's figures (OpenCV's JET)."""

F = TypeVar("F", bound=Callable[..., Any])


def use_style() -> None:
    """Apply `STYLE` to every later figure of this session (a notebook's first cell), and
    show figures in a notebook as `figure_png` does: sharp on high-density screens, at
    `STYLE`'s size, with their smallest font recorded (see `figure_png`)."""
    mpl.rcParams.update(STYLE)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook tools
        return
    shell = get_ipython()
    if shell is None:
        return
    # The inline backend registers its own PNG formatter when it activates, at the first
    # figure of a session: activate it now so that ours, registered after, is the one used.
    plt.close(plt.figure())
    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


SMALLEST_FONT_KEY = "fdcam-smallest-font-pt"
"""The PNG text chunk in which `figure_png` records a figure's smallest font (points)."""


def smallest_font(fig: Figure) -> float:
    """The smallest font size (points) among the visible, non-empty texts of `fig` (titles,
    labels, tick labels, legends, annotations), after drawing it; `MIN_FONT_PT` if it has
    no text."""
    from matplotlib.text import Text

    fig.canvas.draw()
    sizes = [float(t.get_fontsize()) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and _shown(t)]
    return min(sizes, default=MIN_FONT_PT)


def _shown(text: Any) -> bool:
    """Whether `text` is drawn: its axes (if any) is visible and it lies in the figure."""
    axes = text.axes
    if axes is not None and not axes.get_visible():
        return False
    return bool(text.get_window_extent().width > 0)


def figure_png(fig: Figure) -> tuple[bytes, dict[str, int]]:
    """A notebook's image of `fig`: a PNG at twice ``fig.dpi`` (sharp on high-density
    screens) with display metadata of half its pixel size, so that it shows at ``fig.dpi``
    CSS px per inch; the PNG records its dpi (pHYs) and the figure's smallest font
    (`SMALLEST_FONT_KEY`), from which tests/test_book_html.py computes the text size on
    screen."""
    smallest = smallest_font(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=2 * fig.dpi, bbox_inches="tight",
                metadata={SMALLEST_FONT_KEY: f"{smallest:.2f}"})
    data = buffer.getvalue()
    width, height = png_size(data)
    return data, {"width": width // 2, "height": height // 2}


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels of a PNG (its IHDR chunk)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise FdcamError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def png_info(data: bytes) -> dict[str, Any]:
    """A PNG's size, dpi (pHYs, pixels per metre -> per inch; None if absent) and text
    chunks (tEXt, zTXt, iTXt uncompressed): ``{"width", "height", "dpi", "text"}``."""
    width, height = png_size(data)
    dpi = None
    text: dict[str, str] = {}
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"pHYs" and len(body) == 9 and body[8] == 1:
            dpi = struct.unpack(">I", body[:4])[0] * 0.0254
        elif kind == b"tEXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            text[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            text[key.decode("latin-1")] = zlib.decompress(value[1:]).decode("latin-1")
        elif kind == b"iTXt" and b"\0" in body:
            key, rest = body.split(b"\0", 1)
            if rest[0] == 0:  # uncompressed
                value = rest[2:].split(b"\0", 2)[-1]
                text[key.decode("latin-1")] = value.decode("utf-8")
        elif kind == b"IEND":
            break
        position += 12 + length
    return {"width": width, "height": height, "dpi": dpi, "text": text}


def _styled(function: F) -> F:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plt.rc_context(STYLE):
            result = function(*args, **kwargs)
            # IPython's inline backend is activated by the first figure of a session and then
            # turns interactive mode on; rc_context would switch it off again on exit, and the
            # notebook would stop showing figures. Interactive mode is not a style: keep it.
            interactive = mpl.is_interactive()
        mpl.interactive(interactive)
        return result

    return wrapper  # type: ignore[return-value]


def method_color(method: str) -> str | tuple[float, float, float]:
    """One colour per method, the same in every figure; FD-CAM variants are red."""
    if method == "fdcam":
        return _FDCAM_COLOR
    baselines = [m for m in METHOD_LABELS if not m.startswith("fdcam")]
    variants = [m for m in METHOD_LABELS if m.startswith("fdcam-")]
    if method in baselines:
        return _PALETTE[baselines.index(method) % len(_PALETTE)]
    if method in variants:  # shades between red and grey, distinct from the baselines
        return mpl.colormaps["Reds"](0.45 + 0.12 * variants.index(method))[:3]
    return _PALETTE[(sum(map(ord, method)) + len(baselines)) % len(_PALETTE)]


# ---------------------------------------------------------------------------------------
# Conversion at the plotting boundary


def _tensor(value: Tensor | np.ndarray, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise FdcamError(f"{name} must be a torch tensor, not {type(value).__name__}")
    return value.detach().to("cpu", torch.float32)


def _pixels(image: Tensor | np.ndarray, name: str = "image") -> np.ndarray:
    """[3, H, W] in [0, 1] -> numpy [H, W, 3]."""
    x = _tensor(image, name)
    if x.ndim != 3 or x.shape[0] != 3:
        raise FdcamError(f"{name} must have shape [3, H, W]; got {list(x.shape)}")
    low, high = float(x.min()), float(x.max())
    if low < -1e-4 or high > 1 + 1e-4:
        raise FdcamError(f"{name} pixels must lie in [0, 1]; got [{low:.3g}, {high:.3g}] "
                         f"(undo the normalisation with LoadedModel.to_pixels)")
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def _saliency(saliency: Tensor | np.ndarray, size: tuple[int, int] | None,
              name: str = "saliency") -> np.ndarray:
    """[H, W] in [0, 1] (at `size` when given) -> numpy [H, W]."""
    s = _tensor(saliency, name)
    if s.ndim != 2:
        raise FdcamError(f"{name} must have shape [H, W]; got {list(s.shape)}")
    if size is not None and tuple(s.shape) != tuple(size):
        raise FdcamError(f"{name} is {list(s.shape)} but the image is {list(size)}; "
                         f"saliency maps are at the input's resolution")
    if not torch.isfinite(s).all():
        raise FdcamError(f"{name} has NaN or infinite values")
    low, high = float(s.min()), float(s.max())
    if low < -1e-4 or high > 1 + 1e-4:
        raise FdcamError(f"{name} must lie in [0, 1]; got [{low:.3g}, {high:.3g}]")
    return s.clamp(0, 1).numpy()


def _vector(values: Tensor | np.ndarray, name: str, length: int | None = None) -> np.ndarray:
    v = _tensor(values, name)
    if v.ndim != 1 or (length is not None and v.shape[0] != length):
        expected = f"[{length}]" if length is not None else "[K]"
        raise FdcamError(f"{name} must have shape {expected}; got {list(v.shape)}")
    return v.numpy()


def _minmax(x: Tensor) -> Tensor:
    """Min-max over the last two axes; a constant map becomes zeros."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    span = x.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (x - low) / span.clamp_min(1e-12), torch.zeros_like(x))


def blend(image: Tensor | np.ndarray, saliency: Tensor | np.ndarray, *, alpha: float = 0.5,
          cmap: str = SALIENCY_CMAP) -> np.ndarray:
    """The overlay's pixels: (1 − alpha)·image + alpha·cmap(saliency), numpy [H, W, 3].

    The same blend as pytorch-grad-cam's ``show_cam_on_image``, on a fixed [0, 1] scale so
    that maps of different methods are comparable.
    """
    if not 0 <= alpha <= 1:
        raise FdcamError(f"alpha must lie in [0, 1]; got {alpha}")
    pixels = _pixels(image)
    heat = mpl.colormaps[cmap](_saliency(saliency, pixels.shape[:2]))[..., :3]
    return (1 - alpha) * pixels + alpha * heat


def _image_axes(ax: Axes | None, size: float = 2.0) -> Axes:
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


@_styled
def overlay(image: Tensor | np.ndarray, saliency: Tensor | np.ndarray, ax: Axes | None = None,
            title: str | None = None, *, alpha: float = 0.5,
            cmap: str = SALIENCY_CMAP) -> Axes:
    """Draw a saliency map over its image (jet colour map) on `ax` (a new figure if None).

    image: [3, H, W] in [0, 1]; saliency: [H, W] in [0, 1]. Returns the axes.
    """
    pixels = blend(image, saliency, alpha=alpha, cmap=cmap)
    ax = _image_axes(ax)
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


@_styled
def method_grid(images: Tensor | Sequence[Tensor], saliency: Mapping[str, Tensor], *,
                row_labels: Sequence[str] | None = None, show_input: bool = True,
                size: float = 1.5, alpha: float = 0.5, width: float = COLUMN_WIDTH_IN,
                colorbar: bool = True) -> Figure:
    """Figs. 1, 4 and 6: one row per image, one column per method (and the input first).

    images: [N, 3, H, W] in [0, 1] (or N tensors [3, H, W]); saliency: method -> [N, H, W].
    For Figs. 1 and 6 (one image, several classes) repeat the image once per class and
    name the classes in `row_labels`. Column titles are the paper's method names
    (`SHORT_LABELS` where a column is narrow). Each cell is `size` inches, less when the
    columns would not fit `width` (the book's column); `colorbar`: the saliency scale under
    the grid.
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
    label_room = 0.3 if row_labels is not None else 0.0
    cell = min(size, (width - label_room) / len(columns))
    narrow = cell < 1.0
    bar_room = 0.45 if colorbar else 0.0
    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                             figsize=(cell * len(columns) + label_room,
                                      cell * len(rows) + 0.35 + bar_room))
    for i, image in enumerate(rows):
        for j, column in enumerate(columns):
            ax = _image_axes(axes[i, j])
            if column == "input":
                ax.imshow(_pixels(image))
            else:
                ax.imshow(blend(image, saliency[column][i], alpha=alpha), vmin=0, vmax=1)
            if i == 0:
                name = "Input" if column == "input" else method_label(column)
                if narrow:
                    name = SHORT_LABELS.get(column, name)
                ax.set_title(name)
        if row_labels is not None:
            axes[i, 0].set_ylabel(_wrap_label(row_labels[i], cell))
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


# ---------------------------------------------------------------------------------------
# Fig. 5: insertion and deletion curves


def curve_auc(curve: Tensor | np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions of [0, 1] (trapezoid rule).

    Equals RISE's (Σs − s₀/2 − sₙ/2)/(n − 1), as used by `fdcam.metrics`.
    """
    y = _vector(curve, "curve")
    if len(y) < 2:
        raise FdcamError(f"a curve needs at least 2 points; got {len(y)}")
    return float(np.trapezoid(y, np.linspace(0, 1, len(y))))


@_styled
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
        y = _vector(curve, f"curves[{method!r}]")
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


@_styled
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
    columns = 1 + len(order)
    cell = min(0.95, width / columns)
    narrow = cell < 1.0
    head = 0.35 if title else 0.0
    height = head + cell + 0.35 + 0.45 + 2.2
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(2, 1, height_ratios=[cell + 0.35, 2.2], hspace=0.45 / 2.2,
                            left=0.08, right=0.97, bottom=0.45 / height,
                            top=1 - (head + 0.25) / height)
    top = grid[0].subgridspec(1, columns, wspace=0.05)
    ax = _image_axes(fig.add_subplot(top[0]))
    ax.imshow(_pixels(image))
    ax.set_title("Input")
    for j, name in enumerate(order, start=1):
        label = method_label(name)
        if narrow:
            label = SHORT_LABELS.get(name, label)
        overlay(image, maps[name], ax=fig.add_subplot(top[j]), title=label)
    bottom = grid[1].subgridspec(1, 3, width_ratios=[1, 1, 0.95], wspace=0.35)
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


# ---------------------------------------------------------------------------------------
# Fig. 3: a channel and its most similar channels


@_styled
def channel_grid(activations: Tensor, channels: Sequence[int], similarity: Tensor, *,
                 n_similar: int = 2, image: Tensor | None = None, size: float = 1.4,
                 alpha: float = 0.6) -> Figure:
    """Fig. 3: each column is a channel (top row) and its `n_similar` most similar channels.

    activations: [K, h, w]; similarity: [K, K] cosine similarities (Eq. 4, from
    `fdcam.similarity`); channels: the channels to show. Each map is min-max normalised;
    with `image` ([3, H, W]) maps are upsampled bilinearly and drawn over it, otherwise
    shown at their own resolution.
    """
    acts = _tensor(activations, "activations")
    if acts.ndim != 3:
        raise FdcamError(f"activations must have shape [K, h, w]; got {list(acts.shape)}")
    k_total = acts.shape[0]
    sim = _tensor(similarity, "similarity")
    if tuple(sim.shape) != (k_total, k_total):
        raise FdcamError(f"similarity must have shape [{k_total}, {k_total}]; "
                         f"got {list(sim.shape)}")
    channels = [int(c) for c in channels]
    if not channels:
        raise FdcamError("channel_grid needs at least one channel")
    bad = [c for c in channels if not 0 <= c < k_total]
    if bad:
        raise FdcamError(f"channel(s) {bad} out of range; the layer has {k_total} channels")
    if not 0 <= n_similar < k_total:
        raise FdcamError(f"n_similar must lie in [0, {k_total - 1}]; got {n_similar}")
    maps = _minmax(acts)
    if image is not None:
        height, width = _pixels(image).shape[:2]
        maps = torch.nn.functional.interpolate(maps[None], size=(height, width),
                                               mode="bilinear", align_corners=False)[0]
    fig, axes = plt.subplots(1 + n_similar, len(channels), squeeze=False,
                             figsize=(size * len(channels), size * (1 + n_similar)))
    for j, k in enumerate(channels):
        row = sim[k].clone()
        row[k] = -torch.inf  # the channel itself is the top row
        similar = torch.argsort(row, descending=True, stable=True)[:n_similar].tolist()
        for i, channel in enumerate([k, *similar]):
            ax = _image_axes(axes[i, j])
            shown = maps[channel].clamp(0, 1)
            if image is not None:
                ax.imshow(blend(image, shown, alpha=alpha), vmin=0, vmax=1)
            else:
                ax.imshow(shown.numpy(), cmap=SALIENCY_CMAP, vmin=0, vmax=1)
            cosine = float(sim[k, channel])
            ax.set_title(f"channel {channel}" if i == 0 else f"{channel}: cos {cosine:.2f}")
    fig.tight_layout(pad=0.3)
    return fig


# ---------------------------------------------------------------------------------------
# Eq. 4–8: the similarity matrix, the groups and the switching scores


def _square(similarity: Tensor | np.ndarray, name: str = "similarity") -> Tensor:
    sim = _tensor(similarity, name)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise FdcamError(f"{name} must have shape [K, K]; got {list(sim.shape)}")
    return sim


def _channel_list(channels: Sequence[int] | Tensor, k_total: int) -> list[int]:
    channels = [int(c) for c in channels]
    bad = [c for c in channels if not 0 <= c < k_total]
    if bad:
        raise FdcamError(f"channel(s) {bad[:5]} out of range; the layer has {k_total} channels")
    return channels


def _cluster_order(block: Tensor) -> np.ndarray:
    """Leaf order of average-linkage clustering on the distance 1 − cos (display only)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = (1.0 - block.double()).clamp_min(0).numpy()
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    return leaves_list(linkage(squareform(distance, checks=False), method="average"))


@_styled
def similarity_heatmap(similarity: Tensor | np.ndarray, channels: Sequence[int] | Tensor, *,
                       cluster: bool = True, ax: Axes | None = None,
                       title: str | None = None) -> Axes:
    """The cosine-similarity matrix M (Eq. 4) restricted to `channels`, as a heat-map.

    similarity: [K, K]. With ``cluster`` the channels are reordered by average-linkage
    hierarchical clustering on 1 − cos, so that groups of similar channels show as bright
    blocks on the diagonal (the order is for display only; Eq. 5 does not cluster).
    """
    sim = _square(similarity)
    channels = _channel_list(channels, sim.shape[0])
    if len(channels) < 2:
        raise FdcamError(f"similarity_heatmap needs at least 2 channels; got {len(channels)}")
    block = sim[channels][:, channels]
    if cluster:
        order = _cluster_order(block)
        block = block[order][:, order]
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 2.7))
    low = min(0.0, float(block.min()))
    image = ax.imshow(block.numpy(), cmap="viridis", vmin=low, vmax=1.0)
    ax.grid(False)
    order_name = "clustered order" if cluster else "given order"
    ax.set_xlabel(f"channel l ({len(channels)} channels, {order_name})")
    ax.set_ylabel(f"channel k ({order_name})")
    ax.set_title(title or "Cosine similarity $\\cos(A^k, A^l)$")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@_styled
def similarity_histogram(similarity: Tensor | np.ndarray, *,
                         channels: Sequence[int] | Tensor | None = None,
                         thresholds: Tensor | np.ndarray | None = None, bins: int = 50,
                         log: bool = True, ax: Axes | None = None,
                         title: str | None = None) -> Axes:
    """Distribution of the similarities between distinct channels (k ≠ l, each pair once).

    similarity: [K, K]; `channels` restricts the pairs (e.g. to channels that are not
    identically zero); `thresholds` τ_θ^k (Eq. 5) of the same channels are drawn as a
    second distribution, to show where each row is cut. ``log``: a logarithmic density axis
    (after a ReLU, half the pairs or more may be exactly 0).
    """
    sim = _square(similarity)
    channels = (list(range(sim.shape[0])) if channels is None
                else _channel_list(channels, sim.shape[0]))
    if len(channels) < 2:
        raise FdcamError(f"similarity_histogram needs at least 2 channels; got {len(channels)}")
    block = sim[channels][:, channels]
    upper = torch.triu(torch.ones_like(block, dtype=torch.bool), diagonal=1)
    pairs = block[upper].numpy()
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 2.4))
    edges = np.linspace(min(0.0, float(pairs.min())), 1.0, bins + 1)
    ax.hist(pairs, bins=edges, density=True, color="#7f7f7f", alpha=0.7,
            label=f"pairs k ≠ l ({len(pairs):,})")
    if thresholds is not None:
        tau = _vector(thresholds, "thresholds")
        if len(tau) != len(channels):
            tau = _vector(thresholds, "thresholds", sim.shape[0])[channels]
        ax.hist(tau, bins=edges, density=True, histtype="step", linewidth=1.4,
                color=_FDCAM_COLOR, label=r"thresholds $\tau_\theta^k$")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density (log scale)" if log else "density")
    ax.set_title(title or "Similarities between channels")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, borderaxespad=0)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@_styled
def group_threshold_plot(row: Tensor | np.ndarray, theta: float, *, channel: int | None = None,
                         top: int = 100, ax: Axes | None = None,
                         title: str | None = None) -> Axes:
    """Eq. 5 for one channel: its row of M sorted high to low, the threshold τ_θ^k (the
    (1 − θ) quantile, linear interpolation) and the members of G(A^k) (strictly above τ).

    row: [K], the similarities of channel k with every channel; the `top` highest are drawn.
    """
    from fdcam.similarity import group_thresholds

    values = _tensor(row, "row").double()
    if values.ndim != 1 or values.shape[0] < 2:
        raise FdcamError(f"row must have shape [K] with K >= 2; got {list(values.shape)}")
    k_total = values.shape[0]
    tau = float(group_thresholds(values[None], theta)[0])
    ordered = torch.sort(values, descending=True).values.numpy()
    shown = ordered[: min(top, k_total)]
    rank = np.arange(1, len(shown) + 1)
    member = shown > tau
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 2.4))
    ax.plot(rank[member], shown[member], "o", markersize=2.2, color=_FDCAM_COLOR,
            label=f"in the group ({int((values > tau).sum())})")
    ax.plot(rank[~member], shown[~member], "o", markersize=2.2, color="#7f7f7f",
            label="not in the group")
    ax.axhline(tau, color="black", linewidth=0.8, linestyle="--",
               label=rf"$\tau_\theta^k$ = {tau:.3f}")
    # The (1 − θ) quantile sits at ascending position (1 − θ)(K − 1): rank θ(K − 1) + 1.
    ax.axvline(theta * (k_total - 1) + 1, color="black", linewidth=0.6, linestyle=":",
               label=rf"rank $\theta(K-1)+1$ = {theta * (k_total - 1) + 1:.2f}")
    ax.set_xlabel("rank in the row (1 = most similar)")
    ax.set_ylabel(r"$\cos(A^k, A^l)$")
    name = f"channel {channel}" if channel is not None else "one channel"
    ax.set_title(title or f"Eq. 5 for {name} (θ = {theta:g}, K = {k_total})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@_styled
def group_size_bars(sizes: Tensor | np.ndarray, *, ax: Axes | None = None,
                    title: str | None = None, log: bool = True) -> Axes:
    """How many channels have a group of each size |G(A^k)| (Eq. 5). sizes: [K] ints."""
    values = _vector(sizes, "sizes")
    if len(values) == 0 or (values < 0).any() or not np.allclose(values, np.round(values)):
        raise FdcamError("sizes must be non-negative integers, one per channel")
    counts = np.bincount(np.round(values).astype(int))
    present = np.flatnonzero(counts)
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 2.2))
    ax.bar(present, counts[present], width=0.8, color=_OURS_COLOR)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(r"group size $|G(A^k)|$")
    ax.set_ylabel("channels")
    ax.set_title(title or "Group sizes")
    ax.grid(axis="x", visible=False)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@_styled
def score_scatter(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *, xlabel: str, ylabel: str,
                  color: Tensor | np.ndarray | None = None, color_label: str | None = None,
                  identity: bool = False, ax: Axes | None = None, title: str | None = None,
                  cmap: str = "viridis", center: float | None = None) -> Axes:
    """One point per channel: two per-channel quantities (e.g. s⁻ and s⁺, Eq. 6–7), optionally
    coloured by a third (e.g. the closest twin's similarity), with the line y = x.

    ``center``: the colour value at the middle of `cmap` (e.g. 0 for signed weights with a
    diverging map), when the colours lie on both sides of it.
    """
    xs = _vector(x, "x")
    ys = _vector(y, "y", len(xs))
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2 if color is not None else 2.7, 2.5))
    if color is not None:
        cs = _vector(color, "color", len(xs))
        order = np.argsort(cs, kind="stable")  # high values drawn last, on top
        norm = None
        if center is not None and cs.min() < center < cs.max():
            norm = mpl.colors.TwoSlopeNorm(vcenter=center, vmin=cs.min(), vmax=cs.max())
        points = ax.scatter(xs[order], ys[order], c=cs[order], s=5, cmap=cmap, norm=norm,
                            linewidths=0)
        ax.figure.colorbar(points, ax=ax, fraction=0.05, pad=0.03, label=color_label)
    else:
        ax.scatter(xs, ys, s=5, color=_OURS_COLOR, linewidths=0)
    if identity:
        low = float(min(xs.min(), ys.min()))
        high = float(max(xs.max(), ys.max()))
        ax.plot([low, high], [low, high], color="black", linewidth=0.6, linestyle="--",
                label="y = x")
        ax.legend(loc="upper left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


# ---------------------------------------------------------------------------------------
# Fig. 2: the pipeline


def _weight_bars(ax: Axes, values: np.ndarray, title: str, highlight: Sequence[int],
                 color: str) -> None:
    k = np.arange(len(values))
    ax.vlines(k, 0, values, color=color, linewidth=0.6)
    if len(highlight):
        ax.plot(highlight, values[list(highlight)], "o", color="black", markersize=2.5)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_xlabel("channel k")
    ax.set_title(title)


@_styled
def pipeline_figure(image: Tensor, activations: Tensor, alpha: Tensor, scores: Tensor,
                    weights: Tensor, cam: Tensor, *, n_channels: int = 4,
                    title: str | None = None) -> Figure:
    """Fig. 2: input → activations → α (Eq. 2) and s (Eq. 8) → ω (Eq. 10) → FD-CAM (Eq. 11).

    image: [3, H, W] in [0, 1]; activations: [K, h, w]; alpha, scores, weights: [K];
    cam: [H, W] in [0, 1]. The activation panel shows the `n_channels` channels of
    largest ω, marked with dots in the bar plots.
    """
    acts = _tensor(activations, "activations")
    if acts.ndim != 3:
        raise FdcamError(f"activations must have shape [K, h, w]; got {list(acts.shape)}")
    k_total = acts.shape[0]
    a = _vector(alpha, "alpha", k_total)
    s = _vector(scores, "scores", k_total)
    w = _vector(weights, "weights", k_total)
    pixels = _pixels(image)
    if not 1 <= n_channels <= k_total:
        raise FdcamError(f"n_channels must lie in [1, {k_total}]; got {n_channels}")
    top = torch.argsort(torch.from_numpy(w), descending=True, stable=True)[:n_channels].tolist()
    side = int(np.ceil(np.sqrt(n_channels)))

    # Two rows for the book's column: the images (input, activations, map), then the
    # three per-channel weights that lead from one to the other.
    height = 4.5 if title else 4.2
    fig = plt.figure(figsize=(COLUMN_WIDTH_IN, height))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1], wspace=0.35, hspace=0.45,
                            left=0.08, right=0.98, bottom=0.1,
                            top=1 - (0.55 if title else 0.3) / height)
    ax = _image_axes(fig.add_subplot(grid[0, 0]))
    ax.imshow(pixels)
    ax.set_title("input X")

    cells = grid[0, 1].subgridspec(side, side, wspace=0.05, hspace=0.05)
    maps = _minmax(acts[top])
    for i in range(side * side):
        ax = _image_axes(fig.add_subplot(cells[i // side, i % side]))
        ax.set_anchor("S" if i // side < side / 2 else "N")  # keep the mosaic together
        if i < len(top):
            ax.imshow(maps[i].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.text(0.04, 0.96, str(top[i]), transform=ax.transAxes, va="top",
                    fontsize=MIN_FONT_PT, color="white")
    box = grid[0, 1].get_position(fig)
    fig.text((box.x0 + box.x1) / 2, box.y1 + 0.03, r"activations $A^k$ (top $\omega$)",
             ha="center", va="bottom", fontsize=STYLE["axes.titlesize"])

    _weight_bars(fig.add_subplot(grid[1, 0]), a, r"$\alpha_c^k$ (gradients, Eq. 2)", top,
                 "#1f77b4")
    _weight_bars(fig.add_subplot(grid[1, 1]), s, r"$s_c^k$ (switching, Eq. 8)", top,
                 "#2ca02c")
    _weight_bars(fig.add_subplot(grid[1, 2]), w, r"$\omega_c^k$ (combined, Eq. 10)", top,
                 _FDCAM_COLOR)
    ax = fig.add_subplot(grid[0, 2])
    overlay(image, cam, ax=ax, title="FD-CAM (Eq. 11)")
    if title:
        fig.suptitle(title, y=1 - 0.08 / height)
    return fig


# ---------------------------------------------------------------------------------------
# Tables: the paper's value next to ours


@_styled
def compare_bars(table: pd.DataFrame, metric: str, ax: Axes | None = None,
                 title: str | None = None) -> Axes:
    """Bars of the paper's value and ours (with our 95 % CI) for one metric.

    table: the output of `fdcam.report.compare_table` (columns method, metric, paper, ours,
    ci_low, ci_high).
    """
    needed = {"method", "metric", "paper", "ours", "ci_low", "ci_high"}
    if not needed <= set(table.columns):
        raise FdcamError(f"compare_bars needs the columns of compare_table; missing "
                         f"{', '.join(sorted(needed - set(table.columns)))}")
    rows = table[table["metric"] == metric]
    if rows.empty:
        known = ", ".join(dict.fromkeys(table["metric"]))
        raise FdcamError(f"no rows for metric {metric!r}; the table has {known}")
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * len(rows) + 1.2, 2.4))
    x = np.arange(len(rows))
    ours = rows["ours"].to_numpy(float)
    low = np.nan_to_num(ours - rows["ci_low"].to_numpy(float))
    high = np.nan_to_num(rows["ci_high"].to_numpy(float) - ours)
    ax.bar(x - 0.2, rows["paper"].to_numpy(float), width=0.4, color="#bbbbbb", label="paper")
    ax.bar(x + 0.2, ours, width=0.4, yerr=np.vstack([low, high]), capsize=2,
           color=_OURS_COLOR, label="ours (95 % CI)")
    ax.set_xticks(x, [method_label(m) for m in rows["method"]], rotation=45, ha="right")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or metric.replace("_", " ").capitalize(), pad=16)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, borderaxespad=0.2)
    ax.grid(axis="x", visible=False)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@_styled
def compare_dots(table: pd.DataFrame, metrics: Sequence[str] | None = None, *,
                 width: float = COLUMN_WIDTH_IN, title: str | None = None) -> Figure:
    """Each method's value per metric: ours as a dot with its 95 % interval, the paper's as
    a grey diamond; one panel per metric, methods as rows (the table's order), FD-CAM red.

    table: a `fdcam.experiments.table_1` … `table_4` result (or `compare_table`'s, with a
    ``label`` column optional). Methods we did not run show the paper's value only. The
    legend sits above the panels.
    """
    needed = {"method", "metric", "paper", "ours", "ci_low", "ci_high"}
    if not needed <= set(table.columns):
        raise FdcamError(f"compare_dots needs the columns of a table builder; missing "
                         f"{', '.join(sorted(needed - set(table.columns)))}")
    chosen = list(dict.fromkeys(table["metric"])) if metrics is None else list(metrics)
    unknown = [m for m in chosen if m not in set(table["metric"])]
    if not chosen or unknown:
        raise FdcamError(f"no rows for metric {(unknown or [''])[0]!r}; the table has "
                         f"{', '.join(dict.fromkeys(table['metric']))}")
    methods = list(dict.fromkeys(table["method"]))
    labels = [method_label(m) for m in methods]
    height = 0.8 + 0.22 * len(methods)
    panel = min(2.6, (width - 1.3) / len(chosen))
    fig, axes = plt.subplots(1, len(chosen), squeeze=False, sharey=True,
                             figsize=(1.3 + panel * len(chosen), height))
    y = np.arange(len(methods))
    for ax, metric in zip(axes[0], chosen, strict=True):
        rows = table[table["metric"] == metric].set_index("method").reindex(methods)
        ours = rows["ours"].to_numpy(float)
        low = ours - rows["ci_low"].to_numpy(float)
        high = rows["ci_high"].to_numpy(float) - ours
        colors = [method_color(m) if m == "fdcam" else _OURS_COLOR for m in methods]
        ax.scatter(rows["paper"].to_numpy(float), y, marker="D", s=16, color="#999999",
                   label="paper", zorder=2)
        for i in range(len(methods)):
            if np.isnan(ours[i]):
                continue
            ax.errorbar(ours[i], y[i], xerr=[[np.nan_to_num(low[i])], [np.nan_to_num(high[i])]],
                        fmt="o", markersize=3.5, color=colors[i], elinewidth=1, capsize=1.5,
                        zorder=3, label="ours (95 % CI)" if i == 0 else None)
        direction = METRICS_DIRECTION.get(metric.removesuffix("_tol15"), "higher")
        arrow = "↓" if direction == "lower" else "↑"
        ax.set_title(f"{metric.replace('_', ' ').capitalize()} {arrow}")
        ax.grid(axis="y", visible=False)
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(4))
    axes[0, 0].set_yticks(y, labels)
    handles = [mpl.lines.Line2D([], [], marker="D", linestyle="none", color="#999999",
                                markersize=4, label="paper"),
               mpl.lines.Line2D([], [], marker="o", color=_OURS_COLOR, markersize=4,
                                label="ours, 95 % CI"),
               mpl.lines.Line2D([], [], marker="o", color=_FDCAM_COLOR, markersize=4,
                                label="ours, FD-CAM")]
    fig.legend(handles=handles, loc="upper right", ncol=3, borderaxespad=0.2,
               bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title, x=0.01, ha="left", y=1.0, va="top")
    fig.tight_layout(pad=0.3, w_pad=1.2, rect=(0, 0, 1, 1 - 0.32 / height))
    return fig


def teaser_figure(image: Tensor, maps: Mapping[str, Tensor], class_names: Sequence[str], *,
                  size: float = 2.0) -> Figure:
    """The landing page's figure: one image explained for several classes (rows) by a few
    methods (columns, e.g. Grad-CAM and FD-CAM), with the saliency colour bar.

    image: [3, H, W]; maps: method -> [n_classes, H, W] in the order of `class_names`.
    """
    if not maps:
        raise FdcamError("teaser_figure needs at least one method's maps")
    rows = _tensor(image, "image")[None].repeat(len(class_names), 1, 1, 1)
    return method_grid(rows, maps, row_labels=[f"class: {name}" for name in class_names],
                       size=size)
