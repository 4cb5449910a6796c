"""The paper's numbers next to ours, and the check every notebook makes of its profile.

The paper's Tables I–IV are typed once, tidy, in ``data/paper_tables.csv`` (columns
``table, method, metric, value``). Units are the paper's: insertion, deletion and overall
(= insertion − deletion) are AUCs in [0, 1]; the pointing game (Table II) is an accuracy in
percent.

Usage in a notebook::

    from fdcam.report import check_profile, compare_table, paper_table

    check_profile(profile)            # one-line FdcamError unless offline, paper or smoke
    paper_table("I")                  # method, metric, value — in the paper's row order
    compare_table(ours, "I")          # paper, ours, difference, our 95 % CI, side by side
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from fdcam.errors import FdcamError

PROFILES = ("offline", "imagenet-sample", "paper", "smoke")
"""The values of the papermill parameter ``profile`` (see DESIGN.md, "Profiles")."""

TABLES = ("I", "II", "III", "IV")

METRICS = {
    "insertion": "higher",
    "deletion": "lower",
    "overall": "higher",
    "pointing_game": "higher",
}
"""Each metric of the paper's tables and which direction is better."""

METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "scorecam": "Score-CAM",
    "ablationcam": "Ablation-CAM",
    "layercam": "Layer-CAM",
    "groupcam": "Group-CAM",
    "fdcam": "FD-CAM",
    "fdcam-ng-off": "FD-CAM (ng+off)",
    "fdcam-g-off": "FD-CAM (g+off)",
    "fdcam-product": "FD-CAM (α̂·ŝ)",
    "fdcam-exp": "FD-CAM (α̂·exp ŝ)",
    "fdcam-exp-shifted": "FD-CAM (α̂·exp(ŝ − 0.5))",
    "ig": "Integrated Gradients",
    "xrai": "XRAI",
}
"""How the paper writes each method name; ours are the keys."""

PAPER_TABLES_CSV = Path(__file__).resolve().parent.parent / "data" / "paper_tables.csv"

COMPARE_COLUMNS = ("method", "metric", "paper", "ours", "difference", "ci_low", "ci_high",
                   "paper_in_ci")


def check_profile(profile: str) -> str:
    """Return `profile` if it is one of `PROFILES`; otherwise raise a one-line FdcamError.

    `fdcam.notebooks.check_parameters` and `fdcam.experiments.setup` call it, so a bad
    papermill parameter (``-p profile x``) stops a notebook before any work is done.
    """
    if profile not in PROFILES:
        raise FdcamError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile


def method_label(method: str) -> str:
    """The paper's name of one of our methods ("gradcam++" -> "Grad-CAM++"); else the key."""
    return METHOD_LABELS.get(method, method)


@lru_cache(maxsize=1)
def _paper_tables() -> pd.DataFrame:
    if not PAPER_TABLES_CSV.is_file():
        raise FdcamError(f"the paper's tables are not at {PAPER_TABLES_CSV}; fdcam.report "
                         f"reads data/paper_tables.csv from a source checkout "
                         f"(pip install -e .)")
    frame = pd.read_csv(PAPER_TABLES_CSV, dtype={"table": str, "method": str, "metric": str,
                                                 "value": float})
    return frame


def paper_table(name: str | int) -> pd.DataFrame:
    """The paper's Table `name` ("I" … "IV", or 1 … 4): columns method, metric, value.

    Rows come in the paper's order (methods as listed in the table; for each method,
    insertion, deletion, overall). The frame is a copy: change it freely.
    """
    table = _table_name(name)
    frame = _paper_tables()
    rows = frame[frame["table"] == table].drop(columns="table").reset_index(drop=True)
    return rows.copy()


def compare_table(ours: pd.DataFrame, name: str | int, *,
                  keep_extra: bool = False) -> pd.DataFrame:
    """The paper's Table `name` with our numbers side by side.

    `ours` is tidy: one row per (method, metric) with columns ``method``, ``metric``,
    ``mean`` and, optionally, ``ci_low`` and ``ci_high`` (our 95 % confidence interval);
    other columns are ignored. It may hold more methods or metrics than the table.

    Returns one row per row of the paper's table, in its order, with columns ``method,
    metric, paper, ours, difference`` (ours − paper), ``ci_low, ci_high`` and ``paper_in_ci``
    (whether the paper's value lies in our interval; missing where we have no interval).
    Where we have no number, ``ours`` is NaN. With ``keep_extra=True`` our rows that the
    paper's table does not have are appended, with ``paper`` NaN.
    """
    table = _table_name(name)
    ours = _check_ours(ours, table)
    paper = paper_table(table).rename(columns={"value": "paper"})
    how = "outer" if keep_extra else "left"
    merged = paper.merge(ours, on=["method", "metric"], how=how, sort=False)
    if keep_extra:  # an outer merge sorts the keys: put the paper's rows first, in order
        order = {key: i for i, key in enumerate(zip(paper["method"], paper["metric"],
                                                    strict=True))}
        rank = [order.get(key, len(order)) for key in zip(merged["method"], merged["metric"],
                                                          strict=True)]
        merged = merged.assign(_rank=rank).sort_values("_rank", kind="stable")
        merged = merged.drop(columns="_rank")
    merged = merged.rename(columns={"mean": "ours"})
    merged["difference"] = merged["ours"] - merged["paper"]
    inside = (merged["ci_low"] <= merged["paper"]) & (merged["paper"] <= merged["ci_high"])
    known = merged[["paper", "ci_low", "ci_high"]].notna().all(axis=1)
    merged["paper_in_ci"] = pd.array(
        [bool(v) if k else pd.NA for v, k in zip(inside, known, strict=True)], dtype="boolean")
    return merged[list(COMPARE_COLUMNS)].reset_index(drop=True)


def _table_name(name: str | int) -> str:
    roman = {1: "I", 2: "II", 3: "III", 4: "IV"}
    if isinstance(name, int) and not isinstance(name, bool) and name in roman:
        return roman[name]
    if isinstance(name, str):
        key = name.strip()
        if key.lower().startswith("table"):
            key = key[len("table"):].strip()
        if key.upper() in TABLES:
            return key.upper()
        if key.isdigit() and int(key) in roman:
            return roman[int(key)]
    raise FdcamError(f"unknown paper table {name!r}; expected one of {', '.join(TABLES)}")


def _check_ours(ours: pd.DataFrame, table: str) -> pd.DataFrame:
    if not isinstance(ours, pd.DataFrame):
        raise FdcamError(f"ours must be a pandas DataFrame, not {type(ours).__name__}")
    missing = [c for c in ("method", "metric", "mean") if c not in ours.columns]
    if missing:
        raise FdcamError(f"ours lacks column(s) {', '.join(missing)}; expected method, metric, "
                         f"mean and optionally ci_low, ci_high; got {', '.join(map(str, ours))}")
    frame = ours.copy()
    for column in ("ci_low", "ci_high"):
        if column not in frame.columns:
            frame[column] = float("nan")
    frame = frame[["method", "metric", "mean", "ci_low", "ci_high"]]
    duplicated = frame.duplicated(["method", "metric"], keep=False)
    if duplicated.any():
        pairs = sorted({f"{m}/{k}" for m, k in frame.loc[duplicated, ["method", "metric"]]
                        .itertuples(index=False)})
        raise FdcamError(f"ours has more than one row for {', '.join(pairs)}; expected one row "
                         f"per (method, metric)")
    if table == "II":
        pointing = frame.loc[frame["metric"] == "pointing_game", "mean"].dropna()
        # All zeros is 0 % in either unit (a tiny run where every method misses): allowed.
        if len(pointing) and (pointing.abs() <= 1).all() and (pointing != 0).any():
            raise FdcamError("ours has pointing_game values in [0, 1]; the paper's Table II is "
                             "in percent: multiply by 100")
    return frame.astype({"mean": float, "ci_low": float, "ci_high": float})


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

_MISSING = "—"

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
    return _MISSING if value is None or pd.isna(value) else f"{float(value):.{decimals}f}"


def _interval(low: Any, high: Any, decimals: int) -> str:
    if pd.isna(low) or pd.isna(high):
        return _MISSING
    return f"{float(low):.{decimals}f}–{float(high):.{decimals}f}"


def _best(values: pd.Series, metric: str) -> pd.Series:
    """True where `values` is best in its column (ties all bold); nothing when all missing."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() < 2:
        return pd.Series(False, index=values.index)
    target = numbers.min() if _metric_direction(metric) == "lower" else numbers.max()
    return numbers.round(12) == round(float(target), 12)


def paper_layout(table: pd.DataFrame, decimals: int | None = None, *,
                 intervals: bool = True) -> pd.DataFrame:
    """A table builder's long output (`fdcam.experiments.table_1` … `table_4`) in the paper's
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
        paper_best = _best(rows["paper"], metric).to_numpy()
        ours_best = _best(rows["ours"], metric).to_numpy()
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
    styler = frame.style
    styler.set_uuid(re.sub(r"[^A-Za-z0-9_-]", "-", name))
    styler.set_table_styles(_TABLE_STYLES)
    if caption:
        styler.set_caption(caption)
    return styler


def styled_paired(paired: pd.DataFrame, *, caption: str | None = None,
                  decimals: int | None = None, name: str = "paired") -> Any:
    """`fdcam.experiments.paired_vs_fdcam` as styled HTML: one row per method, per metric
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
        differences = [_format(v, places) for v in rows["mean_difference"]]
        intervals = [_interval(lo, hi, places) for lo, hi in
                     zip(rows["ci_low"], rows["ci_high"], strict=True)]
        columns[(header, "Δ vs FD-CAM")] = [
            _bold(d, b) + _small(i) for d, b, i in zip(differences, better, intervals,
                                                        strict=True)]
    counts = paired.groupby("method", sort=False)["n"].max().reindex(methods)
    columns[("", "n")] = [_MISSING if pd.isna(v) else str(int(v)) for v in counts]
    frame = pd.DataFrame(columns, index=pd.Index(_row_names(methods), name="Method"))
    frame.columns = pd.MultiIndex.from_tuples(list(columns))
    return _style(frame, caption, name)


def summary_table(table_1: pd.DataFrame, table_2: pd.DataFrame, *,
                  caption: str | None = None, name: str = "summary") -> Any:
    """The landing page's table: Table I's three AUCs and Table II's pointing game (Eq. 12),
    the paper's value beside ours for every method of either table, best in bold; no
    intervals (the chapters have them). Inputs: `table_1(setup)`, `table_2(setup)`."""
    pointing = table_2[table_2["metric"] == "pointing_game"]
    both = pd.concat([table_1, pointing], ignore_index=True)
    order = list(dict.fromkeys([*table_1["method"], *pointing["method"]]))
    both = both.assign(_o=both["method"].map({m: i for i, m in enumerate(order)}))
    both = both.sort_values("_o", kind="stable").drop(columns="_o")
    styler = styled_table(both, caption=caption, name=name, intervals=False)
    # n differs in kind between the two tables (images, (image, class) pairs): the
    # caption says it instead.
    return styler.hide([("", "n")], axis="columns")


_ASCII_FORMULAS = {"a*e^s": "α̂·exp(ŝ)", "a*s": "α̂·ŝ"}


def bullets(text: str) -> str:
    """Plain-text findings (one per line, as `fdcam.experiments.findings` and
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
    README's summary): one row per method, each cell "ours (paper)", our best per column
    bold, "—" where there is no number; inputs as in `summary_table`."""
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
        best[metric] = _best(rows["ours"], metric)
    for i, method in enumerate(methods):
        cells = [method_label(method)]
        for metric in metrics:
            rows = both[both["metric"] == metric].set_index("method").reindex(methods)
            places = _decimals(metric)
            ours = _format(rows["ours"].iloc[i], places)
            if bool(best[metric].iloc[i]):
                ours = f"**{ours}**"
            cells.append(f"{ours} ({_format(rows['paper'].iloc[i], places)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------ the README's summary block

SUMMARY_NOTEBOOK = PAPER_TABLES_CSV.parent.parent / "book" / "08_summary.ipynb"
README = PAPER_TABLES_CSV.parent.parent / "README.md"
TEASER_PNG = PAPER_TABLES_CSV.parent.parent / "book" / "teaser.png"
README_BEGIN = "<!-- summary:begin (generated by `make readme` from book/08_summary.ipynb) -->"
README_END = "<!-- summary:end -->"


def glued(notebook: str | Path) -> dict[str, dict[str, Any]]:
    """An executed notebook's glued values (myst-nb ``glue``): name -> MIME bundle, the
    ``application/papermill.record/`` prefix of values glued with ``display=False`` removed."""
    import nbformat

    path = Path(notebook)
    if not path.is_file():
        raise FdcamError(f"no executed notebook at {path}; run make notebooks (or make book)")
    values: dict[str, dict[str, Any]] = {}
    for cell in nbformat.read(str(path), as_version=4).cells:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if not record:
                continue
            prefix = record.get("mime_prefix", "")
            values[record["name"]] = {key.removeprefix(prefix): value
                                      for key, value in output.get("data", {}).items()}
    return values


def readme_block(notebook: str | Path = SUMMARY_NOTEBOOK) -> str:
    """The README's summary, between `README_BEGIN` and `README_END`: the teaser image, the
    run it comes from and the Table I/II summary, all from the executed summary notebook."""
    values = glued(notebook)
    missing = [k for k in ("summary_markdown", "summary_profile", "teaser_caption")
               if k not in values]
    if missing:
        raise FdcamError(f"{notebook} has no glued {', '.join(missing)}; re-execute it")
    caption = values["teaser_caption"]["text/markdown"]
    return "\n".join([
        README_BEGIN,
        "",
        f"![Grad-CAM and FD-CAM explaining two classes of one image]"
        f"({TEASER_PNG.relative_to(README.parent).as_posix()})",
        "",
        f"*{caption.strip()}*",
        "",
        values["summary_markdown"]["text/markdown"].strip(),
        "",
        f"*Each cell: ours (the paper's); our best per column in bold. "
        f"{values['summary_profile']['text/markdown'].strip()}*",
        "",
        README_END,
    ])


def update_readme(readme: str | Path = README, notebook: str | Path = SUMMARY_NOTEBOOK,
                  teaser: str | Path = TEASER_PNG) -> bool:
    """Rewrite the README's summary block (`readme_block`) and the teaser PNG from the
    executed summary notebook; returns whether anything changed. The README must hold the
    two marker lines already."""
    import base64

    readme, teaser = Path(readme), Path(teaser)
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise FdcamError(f"{readme} lacks the summary markers {README_BEGIN!r} … "
                         f"{README_END!r}")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    updated = head + readme_block(notebook) + tail
    png = base64.b64decode(glued(notebook)["teaser"]["image/png"])
    changed = updated != text or not teaser.is_file() or teaser.read_bytes() != png
    if changed:
        readme.write_text(updated, encoding="utf-8")
        teaser.write_bytes(png)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fdcam.report readme``: `update_readme` (``make readme``)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["readme"]:
        print("usage: python -m fdcam.report readme", file=sys.stderr)
        return 2
    try:
        changed = update_readme()
    except FdcamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"README.md and {TEASER_PNG.name}: {'updated' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
