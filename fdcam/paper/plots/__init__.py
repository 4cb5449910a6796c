"""The paper's figures (Figs. 1–6) and the book's method figures, drawn for the column they
appear in: `style` (sizes, fonts, colours, PNG checks), `overlays` (Figs. 1, 4, 6), `curves`
(Fig. 5), `channels` (Figs. 2–3, Eq. 4–11 step by step), `comparisons` (ours against the
paper, the README's teaser).

    from fdcam.paper import plots
    plots.use_style()
    plots.method_grid(images, maps)
"""

from fdcam.paper.plots.channels import (
    channel_grid,
    group_size_bars,
    group_threshold_plot,
    pipeline_figure,
    score_scatter,
    similarity_heatmap,
    similarity_histogram,
)
from fdcam.paper.plots.comparisons import compare_bars, compare_dots, teaser_figure
from fdcam.paper.plots.curves import auc_curves, curve_auc, faithfulness_figure
from fdcam.paper.plots.layers import by_layer_figure
from fdcam.paper.plots.overlays import SHORT_LABELS, blend, method_grid, overlay
from fdcam.paper.plots.style import (
    COLUMN_WIDTH_IN,
    MIN_FONT_PT,
    MIN_GLYPH_PT,
    SALIENCY_CMAP,
    SMALLEST_FONT_KEY,
    STYLE,
    figure_png,
    method_color,
    png_info,
    png_size,
    smallest_font,
    use_style,
)

__all__ = [
    "COLUMN_WIDTH_IN",
    "MIN_FONT_PT",
    "MIN_GLYPH_PT",
    "SALIENCY_CMAP",
    "SHORT_LABELS",
    "SMALLEST_FONT_KEY",
    "STYLE",
    "auc_curves",
    "blend",
    "by_layer_figure",
    "channel_grid",
    "compare_bars",
    "compare_dots",
    "curve_auc",
    "faithfulness_figure",
    "figure_png",
    "group_size_bars",
    "group_threshold_plot",
    "method_color",
    "method_grid",
    "overlay",
    "pipeline_figure",
    "png_info",
    "png_size",
    "score_scatter",
    "similarity_heatmap",
    "similarity_histogram",
    "smallest_font",
    "teaser_figure",
    "use_style",
]
