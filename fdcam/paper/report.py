"""Tables as the reader sees them: laid out as in the paper (methods as rows, metrics as
columns, the paper's value beside ours with our interval, best in bold), rendered as styled
HTML; paired differences; the summary and its bullet lists."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from fdcam.errors import FdcamError
from fdcam.paper.names import METRICS, method_label
from fdcam.paper.numbers import MISSING, format_interval, format_number, rounded

if TYPE_CHECKING:
    from fdcam.paper.setup_types import Setup

# ------------------------------------------------------------------ tables for the reader

METRIC_HEADERS = {
    "insertion": "Insertion ↑",
    "deletion": "Deletion ↓",
    "overall": "Overall ↑",
    "pointing_game": "Pointing game (%) ↑",
    "pointing_game_tol15": "Original game, 15 px, class mean (%) ↑",
}
"""Column headers of the book's tables: the paper's metric names, with which way is better."""

RHO_HTML = {
    "fdcam-product": "α̂ · ŝ",
    "fdcam-exp": "α̂ · e<sup>ŝ</sup>",
    "fdcam-exp-shifted": "α̂ · e<sup>ŝ − 0.5</sup> (label)",
    "fdcam": "α̂ · e<sup>ŝ</sup> − 0.5 (Eq. 10)",
}
"""Table IV's combination ρ of each FD-CAM variant, as HTML (hats and exponents in place)."""

_MISSING = MISSING

# One small stylesheet per table: compact numbers, interval in grey, a rule under the header.
_TABLE_STYLES: list[dict[str, Any]] = [
    {"selector": "", "props": "border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0;"
                             " font-variant-numeric: tabular-nums; line-height: 1.25;"},
    {"selector": "caption", "props": "caption-side: bottom; text-align: left; font-size: 0.9em;"
                                     " color: #555; padding-top: 0.4em;"},
    {"selector": "th, td", "props": "padding: 0.15em 0.4em; white-space: nowrap;"
                                    " border: none;"},
    {"selector": "thead th", "props": "text-align: center; border-bottom: 1px solid #999;"},
    {"selector": "td", "props": "text-align: right;"},
    {"selector": "th.row_heading", "props": "text-align: left; font-weight: normal;"},
    {"selector": "td.col_heading, th.index_name", "props": "text-align: left;"},
    {"selector": ".fdcam-ci", "props": "color: #666; font-size: 0.85em;"},
]


def _metric_direction(metric: str) -> str:
    return METRICS.get(metric.removesuffix("_tol15"), "higher")


def _format(value: Any, decimals: int) -> str:
    return format_number(value, decimals)


def _interval(low: Any, high: Any, decimals: int) -> str:
    return format_interval(low, high, decimals)


def _best(values: pd.Series, metric: str, decimals: int) -> pd.Series:
    """True where `values`, as written with `decimals` places, is best in its column: values
    a reader sees as equal are bold alike; nothing when fewer than two are present."""
    numbers = pd.Series([rounded(v, decimals) for v in pd.to_numeric(values, errors="coerce")],
                        index=values.index)
    if numbers.notna().sum() < 2:
        return pd.Series(False, index=values.index)
    target = numbers.min() if _metric_direction(metric) == "lower" else numbers.max()
    return numbers == target


def paper_layout(table: pd.DataFrame, decimals: int | None = None, *,
                 intervals: bool = True) -> pd.DataFrame:
    """A table builder's long output (`fdcam.paper.tables.table_1` … `table_4`) in the paper's
    layout, as text: one row per method, per metric the paper's value, ours and our 95 %
    interval (``intervals=False``: without it), then ``n``. The data behind `styled_table`;
    missing numbers are "—". `decimals`: 1 for the pointing game (percent), else 3.

    Columns are a two-level index (metric header, "Paper" / "Ours" / "95 % CI"); the index
    is the paper's method name (with the combination ρ for Table IV's variants).
    """
    needed = {"method", "metric", "paper", "ours", "ci_low", "ci_high", "n"}
    if not isinstance(table, pd.DataFrame) or not needed <= set(table.columns):
        got = ", ".join(map(str, getattr(table, "columns", [])))
        raise FdcamError(f"paper_layout needs a table_1 … table_4 result (columns "
                         f"{', '.join(sorted(needed))}); got {got}")
    methods = list(dict.fromkeys(table["method"]))
    metrics = list(dict.fromkeys(table["metric"]))
    columns: dict[tuple[str, str], list[str]] = {}
    for metric in metrics:
        places = decimals if decimals is not None else _decimals(metric)
        rows = table[table["metric"] == metric].set_index("method").reindex(methods)
        header = METRIC_HEADERS.get(metric, metric.replace("_", " "))
        columns[(header, "Paper")] = [_format(v, places) for v in rows["paper"]]
        columns[(header, "Ours")] = [_format(v, places) for v in rows["ours"]]
        if intervals:
            columns[(header, "95 % CI")] = [_interval(lo, hi, places) for lo, hi in
                                            zip(rows["ci_low"], rows["ci_high"], strict=True)]
    counts = table.groupby("method", sort=False)["n"].max().reindex(methods)
    columns[("", "n")] = [_MISSING if pd.isna(v) or int(v) == 0 else str(int(v))
                          for v in counts]
    frame = pd.DataFrame(columns, index=pd.Index(_row_names(methods), name="Method"))
    frame.columns = pd.MultiIndex.from_tuples(list(columns))
    return frame


def _decimals(metric: str) -> int:
    return 1 if metric.startswith("pointing_game") else 3


def _row_names(methods: Sequence[str]) -> list[str]:
    with_rho = any(m in RHO_HTML and m != "fdcam" for m in methods)
    names = []
    for method in methods:
        if with_rho and method in RHO_HTML:
            names.append(f"ρ = {RHO_HTML[method]}")
        else:
            names.append(method_label(method))
    return names


def styled_table(table: pd.DataFrame, *, caption: str | None = None,
                 decimals: int | None = None, name: str = "table",
                 intervals: bool = True) -> Any:
    """The book's form of a table builder's output: `paper_layout` as styled HTML.

    Methods are rows (Table IV's by their combination ρ); per metric the paper's value and
    ours, with our 95 % interval in small grey type under ours (two columns per metric, so
    that four metrics fit the book's column). The best value of each "Paper" and "Ours"
    column is bold (higher is better, except deletion); ``n`` is the number of images
    (pairs for the pointing game) behind our numbers. `caption` is printed under the
    table; `name` makes the HTML ids stable across runs. Returns a pandas ``Styler`` (a
    notebook cell shows it as HTML).
    """
    frame = paper_layout(table, decimals, intervals=intervals)
    methods = list(dict.fromkeys(table["method"]))
    metrics = list(dict.fromkeys(table["metric"]))
    shown: dict[tuple[str, str], list[str]] = {}
    for metric in metrics:
        header = METRIC_HEADERS.get(metric, metric.replace("_", " "))
        rows = table[table["metric"] == metric].set_index("method").reindex(methods)
        places = decimals if decimals is not None else _decimals(metric)
        paper_best = _best(rows["paper"], metric, places).to_numpy()
        ours_best = _best(rows["ours"], metric, places).to_numpy()
        paper = frame[(header, "Paper")].tolist()
        ours = frame[(header, "Ours")].tolist()
        ci = frame[(header, "95 % CI")].tolist() if intervals else [""] * len(ours)
        shown[(header, "Paper")] = [_bold(v, b) for v, b in zip(paper, paper_best,
                                                                 strict=True)]
        label = "Ours"
        shown[(header, label)] = [_bold(v, b) + _small(c) for v, b, c in
                                  zip(ours, ours_best, ci, strict=True)]
    shown[("", "n")] = frame[("", "n")].tolist()
    display = pd.DataFrame(shown, index=frame.index)
    display.columns = pd.MultiIndex.from_tuples(list(shown))
    return _style(display, caption, name)


def _bold(value: str, best: bool) -> str:
    return f"<b>{value}</b>" if best and value != _MISSING else value


def _small(interval: str) -> str:
    if not interval or interval == _MISSING:
        return ""
    return f'<br><span class="fdcam-ci">{interval}</span>'


def _style(frame: pd.DataFrame, caption: str | None, name: str) -> Any:
    # The row labels are the methods; their index name would be a header row of its own.
    return _decorate(frame.style, caption, name).hide(axis="index", names=True)


def _decorate(styler: Any, caption: str | None, name: str) -> Any:
    """The book's table look (`_TABLE_STYLES`), a stable id from `name`, and the caption."""
    styler.set_uuid(re.sub(r"[^A-Za-z0-9_-]", "-", name))
    styler.set_table_styles(_TABLE_STYLES)
    if caption:
        # A caption is HTML: a Markdown code span (a layer's name) becomes <code>.
        styler.set_caption(re.sub(r"`([^`]+)`", r"<code>\1</code>", caption))
    return styler


def styled_paired(paired: pd.DataFrame, *, caption: str | None = None,
                  decimals: int | None = None, name: str = "paired") -> Any:
    """`fdcam.paper.tables.paired_vs_fdcam` as styled HTML: one row per method, per metric
    the mean difference (method − FD-CAM on the same images) with its paired 95 % interval
    in small type under it; bold where the interval excludes zero in FD-CAM's favour."""
    needed = {"method", "metric", "n", "mean_difference", "ci_low", "ci_high", "fdcam_better"}
    if not isinstance(paired, pd.DataFrame) or not needed <= set(paired.columns):
        raise FdcamError("styled_paired needs a paired_vs_fdcam result (columns "
                         f"{', '.join(sorted(needed))})")
    methods = [m for m in dict.fromkeys(paired["method"]) if m != "fdcam"]
    metrics = list(dict.fromkeys(paired["metric"]))
    columns: dict[tuple[str, str], list[str]] = {}
    for metric in metrics:
        places = decimals if decimals is not None else _decimals(metric)
        rows = paired[paired["metric"] == metric].set_index("method").reindex(methods)
        header = METRIC_HEADERS.get(metric, metric.replace("_", " "))
        if metric == "pointing_game":
            header = "Pointing game (points) ↑"
        better = rows["fdcam_better"].fillna(False).astype(bool).tolist()
        # signed, as the findings and verdicts quote them ("+0.051 [+0.043, +0.060]")
        differences = [format_number(v, places, signed=True) for v in rows["mean_difference"]]
        intervals = [format_interval(lo, hi, places, signed=True) for lo, hi in
                     zip(rows["ci_low"], rows["ci_high"], strict=True)]
        columns[(header, "Δ vs FD-CAM")] = [
            _bold(d, b) + _small(i) for d, b, i in zip(differences, better, intervals,
                                                        strict=True)]
    counts = paired.groupby("method", sort=False)["n"].max().reindex(methods)
    columns[("", "n")] = [_MISSING if pd.isna(v) else str(int(v)) for v in counts]
    frame = pd.DataFrame(columns, index=pd.Index(_row_names(methods), name="Method"))
    frame.columns = pd.MultiIndex.from_tuples(list(columns))
    return _style(frame, caption, name)


def styled_by_layer(frame: pd.DataFrame, *, caption: str | None = None,
                    name: str = "by-layer") -> Any:
    """`fdcam.paper.by_layer.by_layer` as styled HTML: one row per rival, one column per
    layer (its share of negative activations, its head and n in the header), each cell
    FD-CAM minus the rival with its paired 95 % interval under it — bold where the interval
    excludes zero in FD-CAM's favour, italic where it does in the rival's; a rival run on
    fewer images than the layer's n says on how many."""
    needed = {"layer", "share_negative", "head_linear", "method", "n", "fdcam_minus_rival",
              "ci_low", "ci_high", "verdict", "metric"}
    if not isinstance(frame, pd.DataFrame) or not needed <= set(frame.columns):
        raise FdcamError("styled_by_layer needs a by_layer result (columns "
                         f"{', '.join(sorted(needed))})")
    from fdcam.paper.by_layer import premise_words

    methods = list(dict.fromkeys(frame["method"]))
    columns: dict[str, list[str]] = {}
    for layer, rows in frame.groupby("layer", sort=False):
        negatives, _, head = premise_words(rows)
        most = int(rows["n"].max())
        # A call site's name on two lines ("_blocks.14" / "._swish#1"), so that six layers
        # fit the text column.
        block, dot, call = str(layer).partition("._")
        label = f"<code>{block}</code>" + (f"<br><code>._{call}</code>" if dot else "")
        header = f"{label}<br>{negatives}<br>{head}<br>n = {most}"
        rows = rows.set_index("method").reindex(methods)
        cells = []
        for item in rows.itertuples():
            if pd.isna(item.fdcam_minus_rival):
                cells.append(_MISSING)
                continue
            places = _decimals(str(item.metric))
            value = format_number(item.fdcam_minus_rival, places, signed=True)
            value = {"FD-CAM better": f"<b>{value}</b>",
                     "rival better": f"<i>{value}</i>"}.get(str(item.verdict), value)
            fewer = f"<br>n = {int(item.n)}" if int(item.n) < most else ""
            cells.append(value + _small(format_interval(item.ci_low, item.ci_high, places,
                                                        signed=True) + fewer))
        columns[header] = cells
    shown = pd.DataFrame(columns, index=pd.Index(_row_names(methods), name="rival"))
    return _style(shown, caption, name)


#: The layer survey's columns as two-line headers of short words (so that the table fits
#: the column): *median r* is the median correlation between the maps with and without the
#: idea, *moved* the share of photos on which it moves some pixel by more than 0.05.
SURVEY_HEADERS = {"share negative": "share<br>negative", "linear head": "linear<br>head",
                  "switch-on: median correlation": "switch-on<br>median r",
                  "switch-on: share changed": "switch-on<br>moved",
                  "grouping: median correlation": "grouping<br>median r",
                  "grouping: share changed": "grouping<br>moved",
                  "rule": "meets<br>the rule"}


def styled_survey(summary: pd.DataFrame, *, caption: str | None = None,
                  name: str = "survey") -> Any:
    """`fdcam.paper.layer_survey.committed_survey`'s summary as styled HTML: per layer the
    share of negative activations, whether the head is linear, each idea's median
    correlation and share of photos moved, and whether the layer meets the premise rule's
    conditions (`meets_premise_rule`; the rule takes the last of those)."""
    from fdcam.paper.layer_survey import meets_premise_rule

    shown = summary.drop(columns=["photos", "channels"], errors="ignore").assign(
        rule=meets_premise_rule(summary))
    shown = shown.rename(columns=SURVEY_HEADERS).rename_axis(index=None, columns="layer")
    shares = [SURVEY_HEADERS[c] for c in ("share negative", "switch-on: share changed",
                                          "grouping: share changed")]
    flags = [SURVEY_HEADERS[c] for c in ("linear head", "rule")]
    return _decorate(shown.style.format(precision=2).format("{:.0%}", subset=shares)
                     .format(lambda v: "yes" if v else "no", subset=flags), caption, name)


#: The blank-map tables' long column names as short two-line headers (so that the tables
#: fit the text column).
BLANK_HEADERS = {"blank maps": "blank<br>maps",
                 "FD-CAM − it, overall, without blank maps":
                     "FD-CAM − it, overall AUC,<br>without blank maps",
                 "accuracy (%) without its blank maps": "accuracy (%)<br>without blank maps"}


def styled_blank_maps(table: pd.DataFrame, *, caption: str | None = None,
                      name: str = "blank-maps") -> Any:
    """`fdcam.paper.blank_maps.blank_map_table` or `pointing_blank_table` as styled HTML in
    the book's table look: one row per method, short two-line headers, no index."""
    if not isinstance(table, pd.DataFrame) or "method" not in table.columns:
        raise FdcamError("styled_blank_maps needs a blank_map_table or pointing_blank_table "
                         "result (a method column)")
    shown = table.rename(columns=BLANK_HEADERS)
    styler = _decorate(shown.style, caption, name).hide(axis="index")
    # The method names read as row labels, left aligned like the other tables' labels (a
    # table style: it outranks the numbers' right alignment, which a cell property would not).
    column = f"col{list(shown.columns).index('method')}"
    return styler.set_table_styles([{"selector": f"td.{column}", "props": "text-align: left;"}],
                                   overwrite=False)


def summary_table(table_1: pd.DataFrame, table_2: pd.DataFrame, *,
                  caption: str | None = None, name: str = "summary") -> Any:
    """The landing page's table: Table I's three AUCs and Table II's pointing game (Eq. 12),
    the paper's value beside ours for every method of either table, best in bold, our 95 %
    interval under each of our values. Inputs: `table_1(setup)`, `table_2(setup)`."""
    pointing = table_2[table_2["metric"] == "pointing_game"]
    both = pd.concat([table_1, pointing], ignore_index=True)
    order = list(dict.fromkeys([*table_1["method"], *pointing["method"]]))
    both = both.assign(_o=both["method"].map({m: i for i, m in enumerate(order)}))
    both = both.sort_values("_o", kind="stable").drop(columns="_o")
    styler = styled_table(both, caption=caption, name=name)
    # n differs in kind between the two tables (images, (image, class) pairs): the
    # caption says it instead.
    return styler.hide([("", "n")], axis="columns")


def sample_sizes(table: pd.DataFrame, unit: str = "images") -> str:
    """How many images (or pairs, `unit`) a table's numbers rest on, for a caption that
    stands in for its hidden n column: the largest n, then the methods run on fewer, e.g.
    "1,000 images (Score-CAM, Ablation-CAM on 250)" — the rule of `verdicts.findings`. A
    method's n is its largest over the metrics; methods without numbers are left out."""
    if "n" not in table.columns or "method" not in table.columns:
        raise FdcamError("sample_sizes needs a table with method and n columns")
    per_method = table.groupby("method", sort=False)["n"].max().dropna()
    per_method = per_method[per_method > 0].astype(int)
    if per_method.empty:
        return f"no {unit}"
    full = int(per_method.max())
    fewer = per_method[per_method < full]
    parts = [", ".join(method_label(m) for m in fewer.index[fewer == n]) + f" on {n:,}"
             for n in dict.fromkeys(fewer)]
    return f"{full:,} {unit}" + (f" ({'; '.join(parts)})" if parts else "")


def planned_note(setup: Setup, table_1: pd.DataFrame) -> str:
    """", of the 1,000 images planned (the run is still adding rows)" where Table I rests on
    fewer images than `setup` plans for it, else "": for a sentence that gives the run's n
    while its rows are still growing."""
    planned = len(setup.faithfulness_images)
    done = int(table_1["n"].max()) if len(table_1) and table_1["n"].notna().any() else 0
    if done >= planned:
        return ""
    return f", of the {planned:,} images planned (the run is still adding rows)"


_ASCII_FORMULAS = {"a*e^s": "α̂·exp(ŝ)", "a*s": "α̂·ŝ"}


def bullets(text: str) -> str:
    """Plain-text findings (one per line, as `fdcam.paper.verdicts.findings` and
    `combination_verdict` print them for nbval) as a Markdown list for the page; their ASCII
    formulas ("a*e^s") written as the paper writes them."""
    out = []
    for line in str(text).splitlines():
        if not line.strip():
            continue
        for ascii_form, shown in _ASCII_FORMULAS.items():
            line = line.replace(ascii_form, shown)
        nested = line.startswith((" ", "\t")) and bool(out)  # a detail of the line above
        out.append(("  - " if nested else "- ") + line.strip().lstrip("-• ").strip())
    return "\n".join(out)


def summary_markdown(table_1: pd.DataFrame, table_2: pd.DataFrame) -> str:
    """Table I's AUCs and Table II's pointing game as a GitHub-flavoured Markdown table (the
    README's summary): one row per method, each cell "ours [95 % interval] (paper)", our
    best per column bold, "—" where there is no number; inputs as in `summary_table`."""
    pointing = table_2[table_2["metric"] == "pointing_game"]
    both = pd.concat([table_1, pointing], ignore_index=True)
    methods = list(dict.fromkeys([*table_1["method"], *pointing["method"]]))
    metrics = list(dict.fromkeys(both["metric"]))
    header = ["Method", *(METRIC_HEADERS.get(m, m) for m in metrics)]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":--", *(["--:"] * len(metrics))]) + "|"]
    best = {}
    for metric in metrics:
        rows = both[both["metric"] == metric].set_index("method").reindex(methods)
        best[metric] = _best(rows["ours"], metric, _decimals(metric))
    for i, method in enumerate(methods):
        cells = [method_label(method)]
        for metric in metrics:
            rows = both[both["metric"] == metric].set_index("method").reindex(methods)
            places = _decimals(metric)
            ours = _format(rows["ours"].iloc[i], places)
            if bool(best[metric].iloc[i]):
                ours = f"**{ours}**"
            interval = _interval(rows["ci_low"].iloc[i], rows["ci_high"].iloc[i], places)
            if interval != _MISSING:
                ours += f" {interval}"
            cells.append(f"{ours} ({_format(rows['paper'].iloc[i], places)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_markdown(verdicts: pd.DataFrame, first: str = "claim") -> str:
    """`fdcam.paper.verdicts.claim_verdicts` as a Markdown table for a page: one row per
    claim (under it, in italics, the paper's sentence that makes it, where the result has a
    ``paper`` column), one column per metric, each cell the verdict in bold with the deciding
    rival's paired difference and 95 % interval under it, and n (the images or pairs behind
    that difference). `first` heads the first column (e.g. "network and layer" for
    `fdcam.paper.verdicts.cross_checks`, whose ``claim`` column names setups)."""
    needed = {"claim", "metric", "verdict", "n", "evidence"}
    if not needed <= set(verdicts.columns):
        raise FdcamError("claims_markdown needs a claim_verdicts result (columns "
                         f"{', '.join(sorted(needed))})")
    metrics = list(dict.fromkeys(verdicts["metric"]))
    lines = [f"| {first} | " + " | ".join(METRIC_HEADERS.get(m, m) for m in metrics) + " |",
             "|:--|" + "|".join([":--"] * len(metrics)) + "|"]
    for claim, rows in verdicts.groupby("claim", sort=False):
        by_metric = rows.set_index("metric")
        cells = []
        for metric in metrics:
            if metric not in by_metric.index:
                cells.append("")
                continue
            row = by_metric.loc[metric]
            detail = f"<br>{row['evidence']}" if row["evidence"] else ""
            cells.append(f"**{row['verdict']}**{detail}<br>n = {int(row['n'])}")
        paper = rows["paper"].iloc[0] if "paper" in rows else ""
        quote = f"<br>*{paper}*" if paper else ""
        lines.append(f"| {claim}{quote} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
