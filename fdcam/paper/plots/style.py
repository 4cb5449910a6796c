"""The figures' style: one column width, legible fonts, the method colours, and PNG helpers
that the tests of the built book use to check figure sizes and font sizes."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import matplotlib as mpl
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib import cycler
from matplotlib.figure import Figure

from fdcam.errors import FdcamError
from fdcam.evaluation.overlay import SALIENCY_CMAP  # noqa: F401  (the figures' colour map)
from fdcam.paper.names import METHOD_LABELS

# tab10 without its red, which is FD-CAM's alone
_TAB10 = mpl.colormaps["tab10"].colors  # type: ignore[attr-defined]
_PALETTE = [color for i, color in enumerate(_TAB10) if i != 3]
FDCAM_COLOR = "#d62728"
OURS_COLOR = "#4c72b0"

COLUMN_WIDTH_IN = 6.6
"""The width of a code cell's output in the book, in figure inches: 660 CSS px at the 100 px
per inch of `STYLE`'s ``figure.dpi`` (sphinx-book-theme 1.3 in a 1280 px window, measured in
headless Chromium). A figure this wide or narrower is shown at its own size, so a font of p
points is p·100/72 CSS px on screen; a wider one is scaled down to the column, its text
with it (tests/test_book_html.py)."""

MIN_GLYPH_PT = 6.5
"""The smallest glyph any figure here may draw, mathtext scripts included: 6.5 pt is 9.0 CSS
px at 100 px per inch (tests/test_plots.py checks every figure, tests/test_book_html.py the
built book). Scripts are drawn at 70 % of their text, so a label with scripts needs 9.3 pt."""

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
    # Titles and axis labels carry mathtext, whose scripts are drawn at 70 %: 9.5 pt keeps a
    # script at 6.65 pt, 9.2 CSS px (tests/test_book_html.py).
    "axes.titlesize": 9.5,
    "axes.labelsize": 9.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "xtick.bottom": True,
    "ytick.left": True,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 10,
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


SMALLEST_FONT_KEY = "fdcam-smallest-glyph-pt"
"""The PNG text chunk in which `figure_png` records a figure's smallest glyph (points),
mathtext super- and subscripts included."""


def plain_log_ticks(axis: Any) -> None:
    """Label a log-scale `axis` (``ax.yaxis``) in plain numbers ("0.01", "1", "100"), not
    matplotlib's ``$10^{-2}$``, whose 7-pt tick labels would draw exponents at 4.9 pt, under
    `MIN_GLYPH_PT`; minor ticks stay unlabelled."""
    from matplotlib import ticker

    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def smallest_font(fig: Figure) -> float:
    """The smallest glyph size (points) among the visible, non-empty texts of `fig` (titles,
    labels, tick labels, legends, annotations), after drawing it: a text's font size, or for
    mathtext (``$…$``) the size of its smallest glyph as laid out, super- and subscripts
    included (matplotlib shrinks each script level to 70 %); `MIN_FONT_PT` if it has no
    text."""
    from matplotlib.text import Text

    fig.canvas.draw()
    sizes = [_smallest_glyph(t) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and _shown(t)]
    return min(sizes, default=MIN_FONT_PT)


def _smallest_glyph(text: Any) -> float:
    """The smallest glyph of one matplotlib ``Text`` in points (its mathtext laid out)."""
    from matplotlib.mathtext import MathTextParser

    size = float(text.get_fontsize())
    string, is_math = text._preprocess_math(text.get_text())
    if not is_math:
        return size
    parsed = MathTextParser("path").parse(string, 72, text.get_fontproperties())
    return min((float(glyph[1]) for glyph in parsed.glyphs), default=size)


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


def styled(function: F) -> F:
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
        return FDCAM_COLOR
    baselines = [m for m in METHOD_LABELS if not m.startswith("fdcam")]
    variants = [m for m in METHOD_LABELS if m.startswith("fdcam-")]
    if method in baselines:
        return _PALETTE[baselines.index(method) % len(_PALETTE)]
    if method in variants:  # shades between red and grey, distinct from the baselines
        return mpl.colormaps["Reds"](0.45 + 0.12 * variants.index(method))[:3]
    return _PALETTE[(sum(map(ord, method)) + len(baselines)) % len(_PALETTE)]
