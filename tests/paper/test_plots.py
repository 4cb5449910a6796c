"""fdcam.paper.plots: every helper renders to an Agg figure, quickly, and checks its inputs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from fdcam.errors import FdcamError
from fdcam.paper import plots
from fdcam.paper.paper_tables import compare_table

H = W = 32
K = 12


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def saliency() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return (ys * xs).clamp(0, 1)


def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    assert pixels.size > 0
    return pixels


def test_blend_is_the_weighted_sum(image, saliency):
    assert np.allclose(plots.blend(image, saliency, alpha=0.0), image.permute(1, 2, 0).numpy())
    heat = matplotlib.colormaps["jet"](saliency.numpy())[..., :3]
    assert np.allclose(plots.blend(image, saliency, alpha=1.0), heat)


def test_overlay_draws_one_image_with_title(image, saliency):
    ax = plots.overlay(image, saliency, title="FD-CAM")
    assert ax.get_title() == "FD-CAM"
    assert len(ax.images) == 1
    assert ax.images[0].get_array().shape == (H, W, 3)
    _render(ax.figure)


def test_overlay_on_given_axes_and_numpy_input(image, saliency):
    _fig, ax = plt.subplots()
    assert plots.overlay(image.numpy(), saliency.numpy(), ax=ax) is ax


@pytest.mark.parametrize(
    ("image_shape", "saliency_shape", "message"),
    [
        ((H, W, 3), (H, W), r"image must have shape \[3, H, W\]"),
        ((3, H, W), (1, H, W), r"saliency must have shape \[H, W\]"),
        ((3, H, W), (H // 2, W), "at the input's resolution"),
    ],
)
def test_overlay_rejects_bad_shapes(image_shape, saliency_shape, message):
    with pytest.raises(FdcamError, match=message):
        plots.overlay(torch.rand(image_shape), torch.rand(saliency_shape))


def test_overlay_rejects_normalised_pixels_and_unscaled_maps(image, saliency):
    with pytest.raises(FdcamError, match="to_pixels"):
        plots.overlay(image * 4 - 2, saliency)
    with pytest.raises(FdcamError, match=r"must lie in \[0, 1\]"):
        plots.overlay(image, saliency * 3)
    with pytest.raises(FdcamError, match="NaN"):
        plots.overlay(image, torch.full((H, W), float("nan")))


def test_method_grid_rows_and_columns(image, saliency):
    images = torch.stack([image, image.flip(-1)])
    maps = {"gradcam": torch.stack([saliency, saliency.T]),
            "fdcam": torch.stack([saliency.T, saliency])}
    fig = plots.method_grid(images, maps, row_labels=["dog", "cat"])
    axes = np.array(fig.axes[:6]).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["Input", "Grad-CAM", "FD-CAM"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["dog", "cat"]
    assert len(fig.axes) == 7 and "saliency" in fig.axes[6].get_title()  # the colour bar
    _render(fig)


def test_method_grid_fits_the_column(image, saliency):
    methods = ["ig", "xrai", "gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam",
               "fdcam"]
    fig = plots.method_grid(torch.stack([image] * 3), {m: torch.stack([saliency] * 3)
                                                       for m in methods},
                            row_labels=["a", "b", "c"], size=1.6)
    assert fig.get_figwidth() <= plots.COLUMN_WIDTH_IN + 1e-9
    assert fig.axes[1].get_title() == "IG"  # narrow columns take the short names
    _check_legible(fig)


def test_method_grid_checks_counts(image, saliency):
    with pytest.raises(FdcamError, match="has 1 maps for 2 images"):
        plots.method_grid(torch.stack([image, image]), {"gradcam": saliency[None]})
    with pytest.raises(FdcamError, match="1 row labels for 2 images"):
        plots.method_grid([image, image], {"gradcam": torch.stack([saliency] * 2)},
                          row_labels=["dog"])


def test_curve_auc_is_rise_trapezoid():
    curve = torch.tensor([0.1, 0.4, 0.9, 0.7, 0.8])
    n = len(curve)
    rise = (curve.sum() - curve[0] / 2 - curve[-1] / 2) / (n - 1)
    assert plots.curve_auc(curve) == pytest.approx(float(rise))
    with pytest.raises(FdcamError, match="at least 2 points"):
        plots.curve_auc(torch.tensor([0.5]))


def test_auc_curves_legend_has_auc():
    curves = {"gradcam": torch.linspace(1, 0, 29) ** 2, "fdcam": torch.linspace(1, 0, 29) ** 4}
    ax = plots.auc_curves(curves, "deletion")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"Grad-CAM ({plots.curve_auc(curves['gradcam']):.3f})",
                      f"FD-CAM ({plots.curve_auc(curves['fdcam']):.3f})"]
    assert "deleted" in ax.get_xlabel()
    assert len(ax.lines) == 2
    _render(ax.figure)
    with pytest.raises(FdcamError, match="unknown curve kind 'ins'"):
        plots.auc_curves(curves, "ins")


def test_faithfulness_figure(image, saliency):
    deletion = {"gradcam": torch.linspace(0.9, 0.0, 11), "fdcam": torch.linspace(0.9, 0, 11) ** 2}
    insertion = {"gradcam": torch.linspace(0.1, 0.9, 11), "fdcam": torch.linspace(0.1, 0.9, 11)
                 ** 0.5}
    fig = plots.faithfulness_figure(image, saliency, deletion, insertion, title="canoe")
    assert fig._suptitle.get_text() == "canoe"
    assert [ax.get_title() for ax in fig.axes[:2]] == ["Input", "FD-CAM"]
    _render(fig)
    # Every method's map, as in the paper; the legend beside the curves, not on them.
    maps = {"gradcam": saliency, "fdcam": saliency.T}
    fig = plots.faithfulness_figure(image, maps, deletion, insertion)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["Input", "Grad-CAM", "FD-CAM"]
    curves = [ax for ax in fig.axes if ax.lines]
    assert len(curves) == 2 and all(ax.get_legend() is None for ax in curves)
    key = fig.axes[-1].get_legend()
    assert [t.get_text().split("  ")[0] for t in key.get_texts()] == ["Grad-CAM", "FD-CAM"]
    _check_legible(fig)


def test_channel_grid_picks_most_similar(image):
    acts = torch.rand(K, 7, 7, generator=torch.Generator().manual_seed(1))
    flat = torch.nn.functional.normalize(acts.flatten(1), dim=1)
    similarity = flat @ flat.T
    fig = plots.channel_grid(acts, [0, 5], similarity, n_similar=2, image=image)
    axes = np.array(fig.axes).reshape(3, 2)
    assert axes[0, 0].get_title() == "channel 0"
    row = similarity[0].clone()
    row[0] = -1
    best = int(row.argmax())
    assert axes[1, 0].get_title() == f"{best}: cos {float(similarity[0, best]):.2f}"
    assert axes[1, 0].images[0].get_array().shape == (H, W, 3)  # upsampled over the image
    _render(fig)
    # Without an image, maps keep their own resolution.
    fig = plots.channel_grid(acts, [3], similarity, n_similar=1)
    assert fig.axes[0].images[0].get_array().shape == (7, 7)


def test_channel_grid_checks_inputs():
    acts = torch.rand(K, 7, 7)
    with pytest.raises(FdcamError, match=r"channel\(s\) \[12\] out of range"):
        plots.channel_grid(acts, [12], torch.eye(K))
    with pytest.raises(FdcamError, match=r"similarity must have shape \[12, 12\]"):
        plots.channel_grid(acts, [0], torch.eye(K + 1))


def test_channel_grid_constant_channel_is_zero_not_nan():
    acts = torch.ones(3, 4, 4)
    fig = plots.channel_grid(acts, [0], torch.eye(3), n_similar=1)
    assert np.isfinite(np.asarray(fig.axes[0].images[0].get_array())).all()


def test_pipeline_figure(image, saliency):
    gen = torch.Generator().manual_seed(2)
    acts = torch.rand(K, 7, 7, generator=gen)
    alpha, scores = torch.randn(K, generator=gen), torch.randn(K, generator=gen)
    weights = torch.randn(K, generator=gen)
    fig = plots.pipeline_figure(image, acts, alpha, scores, weights, saliency, n_channels=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "input X"
    assert titles[-1] == "FD-CAM (Eq. 11)"
    assert sum("Eq. 2" in t for t in titles) == 1
    assert sum("Eq. 8" in t for t in titles) == 1
    assert sum("Eq. 10" in t for t in titles) == 1
    assert len(fig.axes) == 1 + 4 + 3 + 1
    _check_legible(fig)
    with pytest.raises(FdcamError, match=r"scores must have shape \[12\]"):
        plots.pipeline_figure(image, acts, alpha, scores[:3], weights, saliency)


def test_compare_bars_from_compare_table():
    ours = pd.DataFrame({"method": ["gradcam", "fdcam"], "metric": ["insertion"] * 2,
                         "mean": [0.52, 0.56], "ci_low": [0.50, 0.54], "ci_high": [0.54, 0.58]})
    table = compare_table(ours, "I")
    ax = plots.compare_bars(table, "insertion")
    assert len(ax.patches) == 2 * 8  # paper and ours for the 8 methods of Table I
    assert ax.get_xticklabels()[-1].get_text() == "FD-CAM"
    _render(ax.figure)
    with pytest.raises(FdcamError, match="no rows for metric 'pointing_game'"):
        plots.compare_bars(table, "pointing_game")


def test_compare_dots_from_a_table():
    ours = pd.DataFrame({"method": ["gradcam", "fdcam"] * 2,
                         "metric": ["insertion"] * 2 + ["deletion"] * 2,
                         "mean": [0.52, 0.56, 0.12, 0.10], "ci_low": [0.5, 0.54, 0.1, 0.08],
                         "ci_high": [0.54, 0.58, 0.14, 0.12]})
    table = compare_table(ours, "I")
    table = table[table["metric"] != "overall"]
    fig = plots.compare_dots(table)
    assert [ax.get_title() for ax in fig.axes] == ["Insertion ↑", "Deletion ↓"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "Grad-CAM" and labels[-1] == "FD-CAM" and len(labels) == 8
    assert fig.legends, "the legend sits above the panels, outside the data"
    _check_legible(fig)
    with pytest.raises(FdcamError, match="no rows for metric 'overall'"):
        plots.compare_dots(table, ["overall"])


def test_teaser_figure(image, saliency):
    maps = {"gradcam": torch.stack([saliency, saliency.T]),
            "fdcam": torch.stack([saliency.T, saliency])}
    fig = plots.teaser_figure(image, maps, ["cat", "dog"])
    assert [ax.get_title() for ax in fig.axes[:3]] == ["Input", "Grad-CAM", "FD-CAM"]
    assert fig.axes[3].get_ylabel() == "class: dog"
    _check_legible(fig)


def test_figure_png_records_dpi_and_smallest_font(image, saliency):
    fig = plots.method_grid(image[None], {"fdcam": saliency[None]})
    data, metadata = plots.figure_png(fig)
    info = plots.png_info(data)
    assert info["width"] == 2 * metadata["width"] and info["height"] == 2 * metadata["height"]
    assert info["dpi"] == pytest.approx(2 * fig.dpi, rel=1e-3)
    assert float(info["text"][plots.SMALLEST_FONT_KEY]) == pytest.approx(plots.MIN_FONT_PT)
    fig.axes[0].set_title("tiny", fontsize=4)
    assert plots.smallest_font(fig) == 4


def _check_legible(fig) -> None:
    """Every glyph at least MIN_GLYPH_PT and the figure no wider than the column (after the
    tight bounding box): on screen, at least 9.7 CSS px."""
    assert plots.smallest_font(fig) >= plots.MIN_GLYPH_PT
    _, metadata = plots.figure_png(fig)
    assert metadata["width"] <= 100 * plots.COLUMN_WIDTH_IN + 15


def test_method_colors_are_stable_and_distinct():
    baselines = ["gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "layercam",
                 "groupcam"]
    colors = [plots.method_color(m) for m in [*baselines, "fdcam"]]
    assert len({str(c) for c in colors}) == len(colors)
    assert plots.method_color("gradcam") == plots.method_color("gradcam")


def test_style_is_scoped(image, saliency):
    before = matplotlib.rcParams["font.size"]
    plots.overlay(image, saliency)
    assert matplotlib.rcParams["font.size"] == before


def _cosines(acts: torch.Tensor) -> torch.Tensor:
    flat = torch.nn.functional.normalize(acts.flatten(1), dim=1)
    return flat @ flat.T


def test_similarity_heatmap_clusters_twins_together():
    gen = torch.Generator().manual_seed(4)
    base = torch.rand(3, 7, 7, generator=gen)
    # channels 0, 2, 4 are copies of one feature; 1, 3, 5 of another
    acts = torch.stack([base[0], base[1], base[0] * 2, base[1] + 0.01, base[0] * 0.5, base[1]])
    similarity = _cosines(acts)
    ax = plots.similarity_heatmap(similarity, range(6))
    shown = ax.images[0].get_array()
    assert shown.shape == (6, 6)
    assert np.allclose(shown, shown.T)
    assert np.allclose(np.sort(shown.ravel()), np.sort(similarity.numpy().ravel()))
    # clustered: the first three rows are one feature, so the top-left block is all ~1
    assert shown[:3, :3].min() > 0.99 and shown[3:, 3:].min() > 0.99
    assert "clustered" in ax.get_xlabel()
    plain = plots.similarity_heatmap(similarity, [0, 1, 2], cluster=False)
    assert np.allclose(plain.images[0].get_array(), similarity[:3, :3].numpy())
    _render(ax.figure)
    with pytest.raises(FdcamError, match="at least 2 channels"):
        plots.similarity_heatmap(similarity, [0])
    with pytest.raises(FdcamError, match=r"out of range"):
        plots.similarity_heatmap(similarity, [0, 6])


def test_similarity_histogram_counts_each_pair_once():
    similarity = _cosines(torch.rand(K, 5, 5, generator=torch.Generator().manual_seed(5)))
    ax = plots.similarity_histogram(similarity, thresholds=similarity.mean(1))
    bars = ax.patches
    assert len(bars) > 0
    assert ax.get_xlabel() == "cosine similarity"
    assert f"({K * (K - 1) // 2:,})" in ax.get_legend().get_texts()[0].get_text()
    # thresholds of a subset of channels may be given for the whole layer
    ax = plots.similarity_histogram(similarity, channels=[0, 1, 2], thresholds=similarity.mean(1))
    assert "(3)" in ax.get_legend().get_texts()[0].get_text()
    _render(ax.figure)
    _check_legible(ax.figure)  # the log axis's ticks in plain numbers, no 4.9-pt exponents


def test_group_threshold_plot_marks_the_group():
    row = torch.linspace(0, 1, 41)  # K = 41, θ = 0.1: p = 36, τ = row[36] = 0.9
    ax = plots.group_threshold_plot(row, 0.1, channel=7, top=41)
    member, other = ax.lines[0], ax.lines[1]
    assert len(member.get_xdata()) == 4  # 0.925, 0.95, 0.975, 1 are above τ = 0.9
    assert len(other.get_xdata()) == 37
    assert "channel 7" in ax.get_title()
    assert any("0.900" in t.get_text() for t in ax.get_legend().get_texts())
    _render(ax.figure)


def test_group_size_bars_and_checks():
    ax = plots.group_size_bars(torch.tensor([0, 0, 3, 3, 3, 2]))
    heights = sorted(int(p.get_height()) for p in ax.patches)
    assert heights == [1, 2, 3]
    _render(ax.figure)
    _check_legible(ax.figure)
    with pytest.raises(FdcamError, match="non-negative integers"):
        plots.group_size_bars(torch.tensor([1.5, 2.0]))


def test_score_scatter_with_colour_and_identity():
    x = torch.linspace(0, 1, K)
    ax = plots.score_scatter(x, x ** 2, xlabel="s⁻", ylabel="s⁺", color=x, color_label="cos",
                             identity=True, title="t")
    assert ax.get_xlabel() == "s⁻" and ax.get_title() == "t"
    assert len(ax.figure.axes) == 2  # the colour bar
    _render(ax.figure)
    with pytest.raises(FdcamError, match=r"y must have shape \[12\]"):
        plots.score_scatter(x, x[:3], xlabel="a", ylabel="b")
    # a diverging colour map centred on 0 for signed values
    ax = plots.score_scatter(x, x, xlabel="a", ylabel="b", color=x - 0.25, cmap="coolwarm",
                             center=0.0)
    norm = ax.collections[0].norm
    assert float(norm(0.0)) == pytest.approx(0.5)


def test_styled_keeps_interactive_mode_switched_on_during_the_call():
    # The inline backend of a notebook switches interactive mode on when the first figure of
    # the session is made; the style's rc_context must not switch it off again.
    @plots.style.styled
    def first_figure():
        matplotlib.interactive(True)

    was = matplotlib.is_interactive()
    try:
        matplotlib.interactive(False)
        first_figure()
        assert matplotlib.is_interactive()
    finally:
        matplotlib.interactive(was)


def test_method_grid_wraps_columns_so_thumbnails_stay_150_px(image, saliency):
    maps = {m: saliency[None] for m in ("gradcam", "scorecam", "groupcam", "layercam",
                                        "xgradcam", "fdcam")}
    fig = plots.method_grid(image[None], maps, size=1.6, per_row=4)
    fig.canvas.draw()
    shown = [ax for ax in fig.axes[:-1] if ax.get_visible()]  # the colour bar aside
    assert len(shown) == 7 and len(fig.axes[:-1]) == 8  # input + 6 maps in 2 rows of 4
    assert min(ax.get_window_extent().width for ax in shown) >= 150
    _check_legible(fig)
    plt.close(fig)


def test_faithfulness_figure_thumbnails_are_150_px(image, saliency):
    methods = ("gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "layercam",
               "groupcam", "fdcam")
    curve = torch.linspace(1, 0, 29)
    fig = plots.faithfulness_figure(image, {m: saliency for m in methods},
                                    {m: curve for m in methods}, {m: curve for m in methods})
    fig.canvas.draw()
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 9
    assert min(ax.get_window_extent().width for ax in images) >= 150
    plt.close(fig)
