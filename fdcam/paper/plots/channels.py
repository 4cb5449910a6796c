"""Figs. 2–3 and the method chapters: channels, their similarity (Eq. 4), groups (Eq. 5),
switching scores (Eq. 6–8) and the weight pipeline (Eq. 9–11)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from fdcam.combine import min_max_maps
from fdcam.errors import FdcamError
from fdcam.paper.plots.overlays import (
    as_vector,
    blend,
    cpu_tensor,
    image_axes,
    image_pixels,
    overlay,
)
from fdcam.paper.plots.style import (
    COLUMN_WIDTH_IN,
    FDCAM_COLOR,
    MIN_FONT_PT,
    OURS_COLOR,
    SALIENCY_CMAP,
    STYLE,
    plain_log_ticks,
    styled,
)

# ---------------------------------------------------------------------------------------
# Fig. 3: a channel and its most similar channels


@styled
def channel_grid(activations: Tensor, channels: Sequence[int], similarity: Tensor, *,
                 n_similar: int = 2, image: Tensor | None = None, size: float = 1.4,
                 alpha: float = 0.6) -> Figure:
    """Fig. 3: each column is a channel (top row) and its `n_similar` most similar channels.

    activations: [K, h, w]; similarity: [K, K] cosine similarities (Eq. 4, from
    `fdcam.similarity`); channels: the channels to show. Each map is min-max normalised;
    with `image` ([3, H, W]) maps are upsampled bilinearly and drawn over it, otherwise
    shown at their own resolution.
    """
    acts = cpu_tensor(activations, "activations")
    if acts.ndim != 3:
        raise FdcamError(f"activations must have shape [K, h, w]; got {list(acts.shape)}")
    k_total = acts.shape[0]
    sim = cpu_tensor(similarity, "similarity")
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
    maps = min_max_maps(acts)
    if image is not None:
        height, width = image_pixels(image).shape[:2]
        maps = torch.nn.functional.interpolate(maps[None], size=(height, width),
                                               mode="bilinear", align_corners=False)[0]
    fig, axes = plt.subplots(1 + n_similar, len(channels), squeeze=False,
                             figsize=(size * len(channels), size * (1 + n_similar)))
    for j, k in enumerate(channels):
        row = sim[k].clone()
        row[k] = -torch.inf  # the channel itself is the top row
        similar = torch.argsort(row, descending=True, stable=True)[:n_similar].tolist()
        for i, channel in enumerate([k, *similar]):
            ax = image_axes(axes[i, j])
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
    sim = cpu_tensor(similarity, name)
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


@styled
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


@styled
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
        tau = as_vector(thresholds, "thresholds")
        if len(tau) != len(channels):
            tau = as_vector(thresholds, "thresholds", sim.shape[0])[channels]
        ax.hist(tau, bins=edges, density=True, histtype="step", linewidth=1.4,
                color=FDCAM_COLOR, label="thresholds τ, one per channel")
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density (log scale)" if log else "density")
    ax.set_title(title or "Similarities between channels")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, borderaxespad=0)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@styled
def group_threshold_plot(row: Tensor | np.ndarray, theta: float, *, channel: int | None = None,
                         top: int = 100, ax: Axes | None = None,
                         title: str | None = None) -> Axes:
    """Eq. 5 for one channel: its row of M sorted high to low, the threshold τ_θ^k (the
    (1 − θ) quantile, linear interpolation) and the members of G(A^k) (strictly above τ).

    row: [K], the similarities of channel k with every channel; the `top` highest are drawn.
    """
    from fdcam.similarity import group_thresholds

    values = cpu_tensor(row, "row").double()
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
    ax.plot(rank[member], shown[member], "o", markersize=2.2, color=FDCAM_COLOR,
            label=f"in the group ({int((values > tau).sum())})")
    ax.plot(rank[~member], shown[~member], "o", markersize=2.2, color="#7f7f7f",
            label="not in the group")
    ax.axhline(tau, color="black", linewidth=0.8, linestyle="--",
               label=f"threshold τ = {tau:.3f}")
    # The (1 − θ) quantile sits at ascending position (1 − θ)(K − 1): rank θ(K − 1) + 1.
    ax.axvline(theta * (k_total - 1) + 1, color="black", linewidth=0.6, linestyle=":",
               label=f"rank θ(K − 1) + 1 = {theta * (k_total - 1) + 1:.2f}")
    ax.set_xlabel("rank in the row (1 = most similar)")
    ax.set_ylabel(r"$\cos(A^k, A^l)$")
    name = f"channel {channel}" if channel is not None else "one channel"
    ax.set_title(title or f"Eq. 5 for {name} (θ = {theta:g}, K = {k_total})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@styled
def group_size_bars(sizes: Tensor | np.ndarray, *, ax: Axes | None = None,
                    title: str | None = None, log: bool = True) -> Axes:
    """How many channels have a group of each size |G(A^k)| (Eq. 5). sizes: [K] ints."""
    values = as_vector(sizes, "sizes")
    if len(values) == 0 or (values < 0).any() or not np.allclose(values, np.round(values)):
        raise FdcamError("sizes must be non-negative integers, one per channel")
    counts = np.bincount(np.round(values).astype(int))
    present = np.flatnonzero(counts)
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 2.2))
    ax.bar(present, counts[present], width=0.8, color=OURS_COLOR)
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    ax.set_xlabel(r"group size $|G(A^k)|$")
    ax.set_ylabel("channels")
    ax.set_title(title or "Group sizes")
    ax.grid(axis="x", visible=False)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@styled
def score_scatter(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *, xlabel: str, ylabel: str,
                  color: Tensor | np.ndarray | None = None, color_label: str | None = None,
                  identity: bool = False, ax: Axes | None = None, title: str | None = None,
                  cmap: str = "viridis", center: float | None = None) -> Axes:
    """One point per channel: two per-channel quantities (e.g. s⁻ and s⁺, Eq. 6–7), optionally
    coloured by a third (e.g. the closest twin's similarity), with the line y = x.

    ``center``: the colour value at the middle of `cmap` (e.g. 0 for signed weights with a
    diverging map), when the colours lie on both sides of it.
    """
    xs = as_vector(x, "x")
    ys = as_vector(y, "y", len(xs))
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2 if color is not None else 2.7, 2.5))
    if color is not None:
        cs = as_vector(color, "color", len(xs))
        order = np.argsort(cs, kind="stable")  # high values drawn last, on top
        norm = None
        if center is not None and cs.min() < center < cs.max():
            norm = mpl.colors.TwoSlopeNorm(vcenter=center, vmin=cs.min(), vmax=cs.max())
        points = ax.scatter(xs[order], ys[order], c=cs[order], s=5, cmap=cmap, norm=norm,
                            linewidths=0)
        ax.figure.colorbar(points, ax=ax, fraction=0.05, pad=0.03, label=color_label)
    else:
        ax.scatter(xs, ys, s=5, color=OURS_COLOR, linewidths=0)
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


@styled
def pipeline_figure(image: Tensor, activations: Tensor, alpha: Tensor, scores: Tensor,
                    weights: Tensor, cam: Tensor, *, n_channels: int = 4,
                    title: str | None = None) -> Figure:
    """Fig. 2: input → activations → α (Eq. 2) and s (Eq. 8) → ω (Eq. 10) → FD-CAM (Eq. 11).

    image: [3, H, W] in [0, 1]; activations: [K, h, w]; alpha, scores, weights: [K];
    cam: [H, W] in [0, 1]. The activation panel shows the `n_channels` channels of
    largest ω, marked with dots in the bar plots.
    """
    acts = cpu_tensor(activations, "activations")
    if acts.ndim != 3:
        raise FdcamError(f"activations must have shape [K, h, w]; got {list(acts.shape)}")
    k_total = acts.shape[0]
    a = as_vector(alpha, "alpha", k_total)
    s = as_vector(scores, "scores", k_total)
    w = as_vector(weights, "weights", k_total)
    pixels = image_pixels(image)
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
    ax = image_axes(fig.add_subplot(grid[0, 0]))
    ax.imshow(pixels)
    ax.set_title("input X")

    cells = grid[0, 1].subgridspec(side, side, wspace=0.05, hspace=0.05)
    maps = min_max_maps(acts[top])
    for i in range(side * side):
        ax = image_axes(fig.add_subplot(cells[i // side, i % side]))
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
                 FDCAM_COLOR)
    ax = fig.add_subplot(grid[0, 2])
    overlay(image, cam, ax=ax, title="FD-CAM (Eq. 11)")
    if title:
        fig.suptitle(title, y=1 - 0.08 / height)
    return fig
