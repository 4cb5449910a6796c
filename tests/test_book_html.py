"""What a reader of the built book sees (and must not see).

The scans run on ``_build/html`` and are skipped when it does not exist: build first with
``make book``; ``make check-book`` runs this file (CI does, after the
build). One unit test of the notebook runner's preparation runs always.

What is checked, page by page (every ``*.html`` of the book, the theme's own pages aside):

* no plumbing: no ``NBVAL_CHECK_OUTPUT`` anywhere; no ``check_parameters`` in a notebook
  cell; no cell tagged ``parameters`` or ``injected-parameters`` (papermill's cell, which
  starts "# Parameters");
* no unrendered Markdown table: no ``|:--|`` rule left in the text (code aside);
* no unrendered math: once MathJax's inputs (Sphinx's ``span.math`` / ``div.math``),
  scripts, styles and code are set aside, no ``$…$`` or ``$$`` is left in the text;
* no machine path (``/work/``, ``/root/``, ``/home/``, ``/tmp/``, ``file://``) in a page or in
  the notebooks offered for download (``_sources/``);
* every figure's text, mathtext super- and subscripts included, is at least 9 CSS px on
  screen at 100 % zoom. Method, per ``<img>`` of
  a notebook output (a PNG in ``_images/``):

  - the PNG's pixel width ``w_png`` and resolution ``dpi`` (its pHYs chunk), and the smallest
    glyph of the figure in points, ``font_pt`` (the tEXt chunk ``fdcam-smallest-glyph-pt``
    that `fdcam.paper.plots.figure_png` writes: the minimum over every visible text of the
    figure, tick labels, legends and mathtext scripts included, after drawing);
  - its displayed width: the ``width`` attribute (CSS px; `figure_png` sets it to half the
    PNG's pixels), no wider than the column, ``COLUMN_PX`` = 660 CSS px (a code cell's
    output in sphinx-book-theme 1.3 at a 1280 px window, measured in headless Chromium;
    ``img { max-width: 100% }`` scales wider images down);
  - the text's height on screen: ``font_pt / 72 * dpi * displayed / w_png`` CSS px (a point
    is 1/72 inch; the PNG has ``dpi`` pixels per inch; the browser scales the PNG's pixels by
    ``displayed / w_png``). With `fdcam.paper.plots`'s 100 px per inch and 7 pt fonts this is
    9.7 px for any figure up to the column's width.
* no table wider than the column (``COLUMN_PX``). A table cannot be narrower than its
  min-content width: per column the longest unbreakable run of characters in any of its
  cells, at ``CHAR_PX`` CSS px per character, plus ``CELL_PADDING_PX``; the sum over the
  columns must fit the column. A table inside a collapsed ``<details>`` (a cell tagged
  ``hide-output``, opened on request) is a diagnostic the reader asks for and is not checked;
* no pandas index column: no table whose row headers (``<th>`` in ``<tbody>``) are the
  integers 0, 1, 2, … (a DataFrame shown with its default index), and no header row that
  holds only the index's name (an empty row under the column titles);
* no code cell on a page unless it is a chapter's deliberate example: a cell whose input is
  rendered (not removed, not collapsed behind "Show code cell source" by ``hide-input``)
  carries the tag ``example``;
* no table ends past the text column when headless Chromium lays the page out at 1280 px
  (measured by a script added to a copy of the page; skipped without Chromium);
* the summary sentences agree with the tables they cite: every number in a paragraph or
  list item of the results page and chapter 08 that quotes a paired difference with its
  interval, "−0.004 [−0.009, +0.001]", appears in a table of the book (the chapter's paired
  table it cites, or the page's own).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import nbformat
import pytest

from fdcam.paper.plots import SMALLEST_FONT_KEY, png_info
from scripts.notebooks import prepare_for_book

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
COLUMN_PX = 660
MIN_TEXT_PX = 9.0
CHAR_PX = 7.0  # a digit of the tables' 0.85 em type at 16 px is 0.55 em, 7.5 px; bold 8
CELL_PADDING_PX = 12.0
EXAMPLE_TAG = "tag_example"
MACHINE_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|file://)")

needs_build = pytest.mark.skipif(not (HTML / "index.html").is_file(),
                                 reason="no built book in _build/html (make book)")


def _pages() -> list[Path]:
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    return sorted(p for p in HTML.rglob("*.html")
                  if p.name not in skip and "_static" not in p.parts
                  and "_sources" not in p.parts and not p.name.startswith(".measure-"))


def _soup(page: Path):
    bs4 = pytest.importorskip("bs4")
    return bs4.BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")


# ------------------------------------------------------------------- the runner's part


def test_prepare_for_book_hides_parameters_and_strips_machine_paths(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell('profile = "offline"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('# Parameters\nprofile = "smoke"\n',
                                  metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("1 + 1", metadata={"tags": ["nbval-check-output"]}),
    ]
    notebook.metadata["papermill"] = {
        "input_path": str(ROOT / "notebooks" / "05_faithfulness.ipynb"),
        "output_path": "/tmp/fdcam-papermill-x/05_faithfulness.ipynb",
        "parameters": {"profile": "smoke", "results_dir": str(ROOT / "data" / "results"),
                       "voc_root": str(Path.home() / "VOCdevkit"), "n_images": 3},
        "environment_variables": {"HOME": "/root"},
    }
    path = tmp_path / "05_faithfulness.ipynb"
    nbformat.write(notebook, path)
    prepare_for_book(path, ROOT / "book" / "05_faithfulness.ipynb")
    done = nbformat.read(path, as_version=4)
    assert [c.metadata["tags"] for c in done.cells] == [
        ["parameters", "remove-cell"], ["injected-parameters", "remove-cell"],
        ["nbval-check-output"]]
    record = done.metadata["papermill"]
    assert record["input_path"] == "notebooks/05_faithfulness.ipynb"
    assert record["output_path"] == "book/05_faithfulness.ipynb"
    assert record["parameters"] == {"profile": "smoke", "results_dir": "data/results",
                                    "voc_root": "~/VOCdevkit", "n_images": 3}
    assert "environment_variables" not in record
    prepare_for_book(path)  # idempotent
    assert nbformat.read(path, as_version=4).cells[0].metadata["tags"] == [
        "parameters", "remove-cell"]


def test_committed_notebooks_carry_no_machine_path():
    for folder in ("book", "tests/nbval"):
        for notebook in sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb")):
            record = json.loads(notebook.read_text(encoding="utf-8"))["metadata"].get(
                "papermill", {})
            found = MACHINE_PATH.search(json.dumps(record))
            assert not found, f"{notebook.relative_to(ROOT)}: papermill metadata names " \
                              f"{found.group(0)!r}"


# ------------------------------------------------------------------------- the pages


@needs_build
def test_no_plumbing_on_any_page():
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(HTML)
        assert "NBVAL_CHECK_OUTPUT" not in text, name
        soup = _soup(page)
        for cell in soup.select("div.cell"):
            classes = cell.get("class", [])
            assert "tag_parameters" not in classes, f"{name}: the parameters cell is shown"
            assert "tag_injected-parameters" not in classes, f"{name}: papermill's cell"
            shown = cell.get_text()
            assert "check_parameters" not in shown, f"{name}: check_parameters is shown"
            assert not shown.lstrip().startswith("# Parameters"), f"{name}: papermill's cell"


@needs_build
def test_no_unrendered_math_on_any_page():
    dollars = re.compile(r"\$\$|\$[^$\n]{1,200}\$")
    for page in _pages():
        soup = _soup(page)
        for node in soup.select("script, style, pre, code, .math, div.highlight, "
                                "div.cell_input, .output.text_plain, .output.stream"):
            node.decompose()
        main = soup.select_one("main") or soup
        found = dollars.search(html.unescape(main.get_text(" ")))
        assert not found, f"{page.relative_to(HTML)}: raw math {found.group(0)[:60]!r}"


@needs_build
def test_no_unrendered_markdown_table_on_any_page():
    # A Markdown table that a cell displays and the renderer does not parse (myst-nb's
    # CommonMark mode has no tables) reaches the reader as pipes and a |:--|:--| rule.
    rule = re.compile(r"\|\s*:?[-–—]+:?\s*\|")
    for page in _pages():
        soup = _soup(page)
        for node in soup.select("script, style, pre, code, div.highlight, div.cell_input"):
            node.decompose()
        main = soup.select_one("main") or soup
        found = rule.search(html.unescape(main.get_text(" ")))
        assert not found, f"{page.relative_to(HTML)}: a raw Markdown table ({found.group(0)!r})"


@needs_build
def test_math_is_served_by_local_mathjax_3():
    page = HTML / "book" / "02_grouped_switching.html"
    soup = _soup(page)
    sources = [s.get("src", "") for s in soup.select("script")]
    mathjax = [s for s in sources if "mathjax" in s.lower()]
    assert mathjax and all("://" not in s for s in mathjax), mathjax
    assert any(s.split("?")[0].endswith("_static/mathjax/tex-chtml.js") for s in mathjax), \
        mathjax
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file()
    # Eqs. 6-8 are display math now, not text between dollars.
    displays = [d.get_text() for d in soup.select("div.math")]
    assert any("(6)" in d for d in displays) and any("(8)" in d for d in displays)


@needs_build
def test_no_machine_path_in_pages_or_downloads():
    for page in _pages():
        found = MACHINE_PATH.search(page.read_text(encoding="utf-8"))
        assert not found, f"{page.relative_to(HTML)}: {found.group(0)!r}"
    for notebook in sorted((HTML / "_sources").rglob("*.ipynb")):
        found = MACHINE_PATH.search(notebook.read_text(encoding="utf-8"))
        assert not found, f"{notebook.relative_to(HTML)}: {found.group(0)!r}"


def _css_width(img) -> float | None:
    width = img.get("width")
    if width and re.fullmatch(r"\d+(\.\d+)?(px)?", width):
        return float(width.removesuffix("px"))
    style = re.search(r"width:\s*(\d+(?:\.\d+)?)px", img.get("style", ""))
    return float(style.group(1)) if style else None


def figure_text_px(png: bytes, css_width: float | None, column: float = COLUMN_PX) -> float:
    """The smallest text of a figure on screen in CSS px (see the module's docstring)."""
    info = png_info(png)
    font_pt = float(info["text"][SMALLEST_FONT_KEY])
    displayed = min(css_width if css_width is not None else info["width"], column)
    return font_pt / 72 * info["dpi"] * displayed / info["width"]


def test_figure_text_px_method():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fdcam.paper import plots

    with plt.rc_context(plots.STYLE):
        fig, ax = plt.subplots(figsize=(9.0, 2.0))  # wider than the column: scaled down
        ax.set_title("t")
        data, metadata = plots.figure_png(fig)
    px = figure_text_px(data, metadata["width"])
    assert px == pytest.approx(7 / 72 * 100 * COLUMN_PX / metadata["width"], rel=0.01)
    assert px < MIN_TEXT_PX  # 9 inches of 7 pt text do not fit the column legibly
    plt.close(fig)


@needs_build
def test_every_figure_has_text_of_at_least_9_px():
    checked = 0
    for page in _pages():
        soup = _soup(page)
        for img in soup.select("main img"):
            src = img.get("src", "")
            if "_images/" not in src or not src.endswith(".png"):
                continue
            png = (page.parent / src).resolve().read_bytes()
            info = png_info(png)
            name = f"{page.relative_to(HTML)}: {Path(src).name}"
            assert SMALLEST_FONT_KEY in info["text"], \
                f"{name}: its smallest glyph (scripts included) is not recorded: not drawn " \
                f"by fdcam.paper.plots.figure_png"
            assert info["dpi"], f"{name}: no resolution recorded"
            px = figure_text_px(png, _css_width(img))
            assert px >= MIN_TEXT_PX, f"{name}: smallest text {px:.1f} CSS px on screen"
            checked += 1
    assert checked >= 10, f"only {checked} figures found in the book"


def test_smallest_font_counts_mathtext_scripts():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fdcam.paper.plots import smallest_font

    fig, ax = plt.subplots()
    ax.tick_params(labelsize=9)
    ax.set_xlabel(r"$s_c^{k-}$", fontsize=8)
    assert smallest_font(fig) == pytest.approx(8 * 0.7)  # matplotlib's script shrink
    ax.set_xlabel("plain", fontsize=8)
    assert smallest_font(fig) == pytest.approx(8)
    plt.close(fig)


def _tables(soup):
    main = soup.select_one("main") or soup
    return [t for t in main.select("table") if not t.find_parent(class_="math")]


def table_min_width_px(table) -> float:
    """The min-content width of an HTML table as the module's docstring estimates it."""
    widths: dict[int, int] = {}
    for row in table.select("tr"):
        column = 0
        for cell in row.find_all(["td", "th"], recursive=False):
            span = int(cell.get("colspan", 1) or 1)
            words = cell.get_text(" ").split()
            longest = max((len(w) for w in words), default=0)
            if span == 1:
                widths[column] = max(widths.get(column, 0), longest)
            column += span
    return sum(chars * CHAR_PX + CELL_PADDING_PX for chars in widths.values())


def test_table_min_width_rule():
    bs4 = pytest.importorskip("bs4")
    narrow = bs4.BeautifulSoup("<table><tr><th>Method</th><td>0.563<br>[0.5, 0.6]</td>"
                               "</tr></table>", "html.parser").table
    assert table_min_width_px(narrow) == pytest.approx(6 * CHAR_PX + 5 * CHAR_PX + 24)
    cells = "".join("<td>2.384e-07</td>" for _ in range(12))
    wide = bs4.BeautifulSoup(f"<table><tr>{cells}</tr></table>", "html.parser").table
    assert table_min_width_px(wide) > COLUMN_PX


@needs_build
def test_no_table_wider_than_the_column():
    for page in _pages():
        for i, table in enumerate(_tables(_soup(page))):
            if table.find_parent("details") is not None:
                continue
            width = table_min_width_px(table)
            assert width <= COLUMN_PX, (f"{page.relative_to(HTML)}: table {i + 1} needs "
                                        f"{width:.0f} CSS px, the column has {COLUMN_PX}")


def is_pandas_index(table) -> bool:
    """Whether `table`'s row headers are 0, 1, 2, … (a DataFrame's default index)."""
    heads = [row.find("th", recursive=False) for row in table.select("tbody > tr")]
    if len(heads) < 2 or any(h is None for h in heads):
        return False
    texts = [h.get_text().strip() for h in heads]
    return all(t.isdigit() for t in texts) and [int(t) for t in texts] == list(
        range(int(texts[0]), int(texts[0]) + len(texts)))


@needs_build
def test_no_pandas_index_column():
    for page in _pages():
        for i, table in enumerate(_tables(_soup(page))):
            assert not is_pandas_index(table), \
                f"{page.relative_to(HTML)}: table {i + 1} shows a pandas index (0, 1, 2, …)"


def has_index_name_row(table) -> bool:
    """Whether `table`'s header has a row of its own for the index's name (pandas writes
    ``<th class="index_name">Method</th>`` followed by blank cells): a header row that says
    nothing but a name the row labels already make plain."""
    for row in table.select("thead > tr"):
        cells = row.find_all(["th", "td"], recursive=False)
        texts = [c.get_text().strip() for c in cells]
        if len(cells) > 1 and texts[0] and not any(texts[1:]):
            return True
    return False


def test_index_name_row_rule():
    bs4 = pytest.importorskip("bs4")
    named = bs4.BeautifulSoup(
        "<table><thead><tr><th></th><th>Ours</th></tr><tr><th>Method</th><th></th></tr>"
        "</thead><tbody><tr><th>FD-CAM</th><td>1</td></tr></tbody></table>",
        "html.parser").table
    assert has_index_name_row(named)
    plain = bs4.BeautifulSoup(
        "<table><thead><tr><th></th><th>Ours</th></tr></thead>"
        "<tbody><tr><th>FD-CAM</th><td>1</td></tr></tbody></table>", "html.parser").table
    assert not has_index_name_row(plain)


@needs_build
def test_no_index_name_row():
    for page in _pages():
        for i, table in enumerate(_tables(_soup(page))):
            assert not has_index_name_row(table), (
                f"{page.relative_to(HTML)}: table {i + 1} has a header row holding only the "
                f"index's name")


@needs_build
def test_every_rendered_code_cell_is_a_deliberate_example():
    for page in _pages():
        for cell in _soup(page).select("div.cell"):
            source = cell.select_one("div.cell_input")
            if source is None or source.find_parent("details") is not None:
                continue  # removed, or collapsed behind "Show code cell source"
            assert EXAMPLE_TAG in cell.get("class", []), (
                f"{page.relative_to(HTML)}: code shown that is not tagged `example`: "
                f"{source.get_text(' ').split(chr(10))[0].strip()[:70]!r}")


DIFFERENCE = re.compile(r"[+−-]?\d+\.\d+ \[[+−-]?\d+\.\d+, [+−-]?\d+\.\d+\]")


@needs_build
def test_summary_sentences_quote_numbers_of_their_tables():
    checked = 0
    tables = " ".join(t.get_text(" ") for page in _pages() for t in _tables(_soup(page)))
    for name in ("results.html", "book/08_summary.html"):
        page = HTML / name
        if not page.is_file():
            continue
        soup = _soup(page)
        main = soup.select_one("main") or soup
        for node in main.select("p, li"):
            if node.find_parent("table") is not None:
                continue
            for quoted in DIFFERENCE.findall(node.get_text(" ")):
                assert quoted in tables, f"{name}: {quoted!r} is in no table of the book"
                checked += 1
    assert checked >= 0


# ---------------------------------------------------------- measured in a real browser

#: A page that only sends the reader on (the root index.html): nothing to lay out.
_REDIRECT = re.compile(r'<meta http-equiv="refresh"', re.I)
#: The measured copies' names (next to the page, for its relative links), left out of
#: `_pages` should a killed run leave one behind.
_COPY_PREFIX = ".measure-"
#: Where the browser's measurements are written into the page, for --dump-dom to carry out.
_MEASURE_ID = "fdcam-measured-widths"
_MEASURE_JS = """
<script>
window.addEventListener("load", () => {
  const found = [];
  document.querySelectorAll("main table").forEach((table, i) => {
    if (table.closest(".math") || table.closest("details:not([open])")) { return; }
    const box = table.closest("article") || table.parentElement;
    const column = box.getBoundingClientRect();
    const rect = table.getBoundingClientRect();
    found.push([i + 1, Math.round(rect.width), Math.round(column.width),
                Math.round(rect.right - column.right)]);
  });
  const out = document.createElement("pre");
  out.id = "MEASURE_ID";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>
""".replace("MEASURE_ID", _MEASURE_ID)


def measured_table_overflow(page: Path, browser: str, window: str = "1280,2400"
                            ) -> list[tuple[int, int, int, int]]:
    """(table number, width, column width, px past the column's right edge) of each table of
    `page` as headless Chromium lays it out at `window`: a copy of the page with a script
    that measures on load, read back with --dump-dom."""
    import subprocess
    import tempfile

    text = page.read_text(encoding="utf-8").replace("</body>", _MEASURE_JS + "</body>", 1)
    with tempfile.NamedTemporaryFile("w", prefix=_COPY_PREFIX, suffix=".html",
                                     dir=page.parent, delete=False, encoding="utf-8") as copy:
        copy.write(text)
    try:
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--window-size={window}",
             "--virtual-time-budget=5000", "--dump-dom", Path(copy.name).as_uri()],
            capture_output=True, text=True, timeout=120, check=False).stdout
    finally:
        Path(copy.name).unlink()
    match = re.search(rf'<pre id="{_MEASURE_ID}"[^>]*>(.*?)</pre>', dom, re.S)
    assert match, f"{page.name}: the browser wrote no measurements"
    return [tuple(row) for row in json.loads(html.unescape(match.group(1)))]


@needs_build
def test_no_table_runs_past_the_column_in_a_browser():
    """The min-content estimate above misses tables the browser lays out wider (headers it
    will not wrap): here Chromium lays out every page at 1280 px and each table must end
    inside the text column. Skipped without Chromium."""
    import shutil

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium to lay the pages out")
    wide = [f"{page.relative_to(HTML)}: table {number} is {width} px wide and ends {past} px "
            f"past the {column} px column"
            for page in _pages() if not _REDIRECT.search(page.read_text(encoding="utf-8"))
            for number, width, column, past in measured_table_overflow(page, browser)
            if past > 1]
    assert not wide, "; ".join(wide)
