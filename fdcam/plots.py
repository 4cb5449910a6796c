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

# tab10 without its red, which is FD-CAM's alone
_TAB10 = mpl.colormaps["tab10"].colors  # type: ignore[attr-defined]
_PALETTE = [color for i, color in enumerate(_TAB10) if i != 3]
_FDCAM_COLOR = "#d62728"
_OURS_COLOR = "#4c72b0"

STYLE: dict[str, Any] = {
    **sns.axes_style("whitegrid"),
    "axes.prop_cycle": cycler(color=_PALETTE),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "xtick.bottom": True,
    "ytick.left": True,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.alpha": 0.5,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "image.interpolation": "nearest",
}
"""rcParams of every figure here: seaborn's whitegrid, small fonts, no top/right spines."""

SALIENCY_CMAP = "jet"
"""The colour map of saliency overlays: jet, as in the paper's figures (OpenCV's JET)."""

F = TypeVar("F", bound=Callable[..., Any])


def use_style() -> None:
    """Apply `STYLE` to every later figure of this session (a notebook's first cell)."""
    mpl.rcParams.update(STYLE)


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


@_styled
def method_grid(images: Tensor | Sequence[Tensor], saliency: Mapping[str, Tensor], *,
                row_labels: Sequence[str] | None = None, show_input: bool = True,
                size: float = 1.5, alpha: float = 0.5) -> Figure:
    """Figs. 1, 4 and 6: one row per image, one column per method (and the input first).

    images: [N, 3, H, W] in [0, 1] (or N tensors [3, H, W]); saliency: method -> [N, H, W].
    For Figs. 1 and 6 (one image, several classes) repeat the image once per class and
    name the classes in `row_labels`. Column titles are the paper's method names.
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
    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                             figsize=(size * len(columns), size * len(rows)))
    for i, image in enumerate(rows):
        for j, column in enumerate(columns):
            ax = _image_axes(axes[i, j])
            if column == "input":
                ax.imshow(_pixels(image))
            else:
                ax.imshow(blend(image, saliency[column][i], alpha=alpha), vmin=0, vmax=1)
            if i == 0:
                ax.set_title("Input" if column == "input" else method_label(column))
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i])
    fig.tight_layout(pad=0.3)
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
               title: str | None = None) -> Axes:
    """Insertion or deletion curves of several methods, each with its AUC in the legend.

    curves: method -> [n] class probabilities after 0, 1/(n−1), …, 1 of the pixels were
    inserted or deleted (most salient first). kind: "insertion" or "deletion".
    """
    if kind not in ("insertion", "deletion"):
        raise FdcamError(f"unknown curve kind {kind!r}; expected insertion or deletion")
    if not curves:
        raise FdcamError("auc_curves needs at least one curve")
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(2.8, 2.2))
    for method, curve in curves.items():
        y = _vector(curve, f"curves[{method!r}]")
        auc = curve_auc(y)
        width = 2.0 if method == "fdcam" else 1.2
        ax.plot(np.linspace(0, 1, len(y)), y, color=method_color(method), linewidth=width,
                label=f"{method_label(method)} ({auc:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"fraction of pixels {'inserted' if kind == 'insertion' else 'deleted'}")
    ax.set_ylabel("class probability")
    ax.set_title(title or f"{kind.capitalize()} ({'higher' if kind == 'insertion' else 'lower'}"
                          f" AUC is better)")
    ax.legend(title="method (AUC)", loc="best")
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@_styled
def faithfulness_figure(image: Tensor, saliency: Tensor, deletion: Mapping[str, Tensor],
                        insertion: Mapping[str, Tensor], *, title: str | None = None,
                        method: str = "fdcam") -> Figure:
    """One row of Fig. 5: `method`'s map over the image, then deletion and insertion curves.

    image: [3, H, W]; saliency: [H, W] (the map of `method`); deletion / insertion:
    method -> [n] curves as in `auc_curves`.
    """
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.2),
                             gridspec_kw={"width_ratios": [0.8, 1, 1]})
    overlay(image, saliency, ax=axes[0], title=title or method_label(method))
    auc_curves(deletion, "deletion", ax=axes[1], title="Deletion (lower AUC is better)")
    auc_curves(insertion, "insertion", ax=axes[2], title="Insertion (higher AUC is better)")
    fig.tight_layout(pad=0.3)
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
    ax.legend(loc="best")
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
    ax.legend(loc="lower left")
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

    fig = plt.figure(figsize=(11.0, 2.4 if title else 2.1))
    grid = fig.add_gridspec(1, 6, width_ratios=[1, 1, 1.3, 1.3, 1.3, 1], wspace=0.35,
                            left=0.02, right=0.98, bottom=0.2, top=0.74 if title else 0.84)
    ax = _image_axes(fig.add_subplot(grid[0]))
    ax.imshow(pixels)
    ax.set_title("input X")

    cells = grid[1].subgridspec(side, side, wspace=0.05, hspace=0.05)
    maps = _minmax(acts[top])
    for i in range(side * side):
        ax = _image_axes(fig.add_subplot(cells[i // side, i % side]))
        ax.set_anchor("S" if i // side < side / 2 else "N")  # keep the mosaic together
        if i < len(top):
            ax.imshow(maps[i].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.text(0.03, 0.97, str(top[i]), transform=ax.transAxes, va="top", fontsize=5,
                    color="white")
    box = grid[1].get_position(fig)
    fig.text((box.x0 + box.x1) / 2, box.y1 + 0.03, r"activations $A^k$ (top $\omega$)",
             ha="center", va="bottom", fontsize=STYLE["axes.titlesize"])

    _weight_bars(fig.add_subplot(grid[2]), a, r"$\alpha_c^k$ (gradients, Eq. 2)", top,
                 "#1f77b4")
    _weight_bars(fig.add_subplot(grid[3]), s, r"$s_c^k$ (grouped switching, Eq. 8)", top,
                 "#2ca02c")
    _weight_bars(fig.add_subplot(grid[4]), w, r"$\omega_c^k$ (combined, Eq. 10)", top,
                 _FDCAM_COLOR)
    ax = fig.add_subplot(grid[5])
    overlay(image, cam, ax=ax, title="FD-CAM (Eq. 11)")
    if title:
        fig.suptitle(title, y=0.98)
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
    ax.set_title(title or metric.replace("_", " ").capitalize())
    ax.legend(loc="best")
    ax.grid(axis="x", visible=False)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax
