"""The paper's numbers (``data/paper_tables.csv``) and a comparison table: the paper's
value, ours, and the difference side by side."""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from fdcam.errors import FdcamError
from fdcam.paper.names import TABLES
from fdcam.paths import DATA_DIR

PAPER_TABLES_CSV = DATA_DIR / "paper_tables.csv"

COMPARE_COLUMNS = ("method", "metric", "paper", "ours", "difference", "ci_low", "ci_high",
                   "paper_in_ci")


@lru_cache(maxsize=1)
def _paper_tables() -> pd.DataFrame:
    if not PAPER_TABLES_CSV.is_file():
        raise FdcamError(f"the paper's tables are not at {PAPER_TABLES_CSV}; fdcam.paper "
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
