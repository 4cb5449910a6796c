"""Ours against the paper: bars and dot plots with intervals, and the README's teaser."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from fdcam.errors import FdcamError
from fdcam.paper.names import METRICS as METRICS_DIRECTION
from fdcam.paper.names import method_label
from fdcam.paper.plots.overlays import cpu_tensor, method_grid
from fdcam.paper.plots.style import (
    COLUMN_WIDTH_IN,
    FDCAM_COLOR,
    OURS_COLOR,
    method_color,
    styled,
)

# ---------------------------------------------------------------------------------------
# Tables: the paper's value next to ours


@styled
def compare_bars(table: pd.DataFrame, metric: str, ax: Axes | None = None,
                 title: str | None = None) -> Axes:
    """Bars of the paper's value and ours (with our 95 % CI) for one metric.

    table: the output of `fdcam.paper.paper_tables.compare_table` (columns method, metric,
    paper, ours, ci_low, ci_high).
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
           color=OURS_COLOR, label="ours (95 % CI)")
    ax.set_xticks(x, [method_label(m) for m in rows["method"]], rotation=45, ha="right")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or metric.replace("_", " ").capitalize(), pad=16)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, borderaxespad=0.2)
    ax.grid(axis="x", visible=False)
    if created:
        ax.figure.tight_layout(pad=0.3)
    return ax


@styled
def compare_dots(table: pd.DataFrame, metrics: Sequence[str] | None = None, *,
                 width: float = COLUMN_WIDTH_IN, title: str | None = None) -> Figure:
    """Each method's value per metric: ours as a dot with its 95 % interval, the paper's as
    a grey diamond; one panel per metric, methods as rows (the table's order), FD-CAM red.

    table: a `fdcam.paper.tables.table_1` … `table_4` result (or `compare_table`'s, with a
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
        colors = [method_color(m) if m == "fdcam" else OURS_COLOR for m in methods]
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
               mpl.lines.Line2D([], [], marker="o", color=OURS_COLOR, markersize=4,
                                label="ours, 95 % CI"),
               mpl.lines.Line2D([], [], marker="o", color=FDCAM_COLOR, markersize=4,
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
    rows = cpu_tensor(image, "image")[None].repeat(len(class_names), 1, 1, 1)
    return method_grid(rows, maps, row_labels=[f"class: {name}" for name in class_names],
                       size=size)
