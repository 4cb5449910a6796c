"""The verdict by layer (`fdcam.paper.by_layer`): FD-CAM minus each rival per layer, with the
layers outside the premise A ≥ 0 shaded."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fdcam.errors import FdcamError
from fdcam.paper.names import METRICS
from fdcam.paper.plots.style import COLUMN_WIDTH_IN, method_color, styled


def _wrapped(layer: str, width: int = 12) -> str:
    """A layer's name broken after its dots into lines of at most `width` characters where a
    dot allows it (``_blocks.15._swish#2`` → ``_blocks.15.`` / ``_swish#2``), so that
    neighbouring tick labels do not run into each other."""
    parts = layer.split(".")
    pieces = [part + "." for part in parts[:-1]] + parts[-1:]
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


@styled
def by_layer_figure(frame: pd.DataFrame, *, width: float = COLUMN_WIDTH_IN) -> Figure:
    """One column per layer (the frame's order, input to output), one dot per rival: FD-CAM
    minus the rival with its 95 % interval; above 0, FD-CAM is ahead (for deletion, behind).
    Layers with negative activations (outside the premise) are shaded grey; under each
    layer's name (broken after a dot when long), its share of negatives and whether its
    head is linear.

    frame: a `fdcam.paper.by_layer.by_layer` result (one metric).
    """
    needed = {"layer", "method", "label", "metric", "fdcam_minus_rival", "ci_low", "ci_high",
              "share_negative", "head_linear"}
    if not needed <= set(frame.columns) or frame.empty:
        raise FdcamError("by_layer_figure needs a non-empty by_layer result (columns "
                         f"{', '.join(sorted(needed))})")
    layers = list(dict.fromkeys(frame["layer"]))
    methods = list(dict.fromkeys(frame["method"]))
    metric = str(frame["metric"].iloc[0])
    fig, ax = plt.subplots(figsize=(width, 3.3))
    x = np.arange(len(layers))
    offsets = np.linspace(-0.3, 0.3, len(methods)) if len(methods) > 1 else np.zeros(1)
    for i, layer in enumerate(layers):
        share = frame.loc[frame["layer"] == layer, "share_negative"].iloc[0]
        if share == share and share > 0:
            ax.axvspan(i - 0.5, i + 0.5, color="#e6e6e6", zorder=0, linewidth=0)
    for offset, method in zip(offsets, methods, strict=True):
        rows = frame[frame["method"] == method].set_index("layer").reindex(layers)
        value = rows["fdcam_minus_rival"].to_numpy(float)
        low = value - rows["ci_low"].to_numpy(float)
        high = rows["ci_high"].to_numpy(float) - value
        ax.errorbar(x + offset, value, yerr=[np.nan_to_num(low), np.nan_to_num(high)], fmt="o",
                    markersize=3.5, elinewidth=1, capsize=1.5, color=method_color(method),
                    label=str(rows["label"].dropna().iloc[0]))
    ax.axhline(0, color="black", linewidth=0.8)
    ticks = []
    for layer in layers:
        first = frame[frame["layer"] == layer].iloc[0]
        share = first["share_negative"]
        head = {True: "linear head", False: "non-linear head"}.get(first["head_linear"], "")
        share_text = f"{share:.0%} neg." if share == share else ""
        ticks.append("\n".join(part for part in (_wrapped(layer), share_text, head) if part))
    ax.set_xticks(x, ticks)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    direction = "lower is better" if METRICS.get(metric) == "lower" else "higher is better"
    ax.set_ylabel(f"FD-CAM − rival, {metric}\n({direction})")
    ax.grid(axis="x", visible=False)
    ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(5))
    handles = ax.get_legend_handles_labels()[0]
    handles.append(mpl.patches.Patch(color="#e6e6e6", label="outside the premise (A has < 0)"))
    fig.legend(handles=handles, loc="upper center", ncol=min(4, len(handles)),
               bbox_to_anchor=(0.5, 1.0), borderaxespad=0.2)
    rows_of_legend = -(-len(handles) // 4)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.09 * rows_of_legend))
    return fig
