"""How the book writes a number and an interval: one place, so that every page rounds alike.

A value that rounds to zero is written without its sign ("0.000", never "-0.000"), in
tables, intervals and prose; ties are decided on the written value (`rounded`), so that the
values a reader sees as equal are bold alike.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

MISSING = "—"
"""What a table shows where there is no number."""


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def rounded(value: Any, decimals: int) -> float:
    """`value` as it is written with `decimals` places (NaN where missing); -0.0 is 0.0."""
    if _missing(value):
        return math.nan
    return float(f"{float(value):.{decimals}f}") + 0.0


def format_number(value: Any, decimals: int, *, signed: bool = False) -> str:
    """`value` with `decimals` places; "—" where missing. ``signed``: a leading "+" on
    positive values (a difference). A value that rounds to zero is "0.000", unsigned."""
    if _missing(value):
        return MISSING
    shown = rounded(value, decimals)
    if shown == 0:
        return f"{0.0:.{decimals}f}"
    return f"{shown:+.{decimals}f}" if signed else f"{shown:.{decimals}f}"


def format_interval(low: Any, high: Any, decimals: int, *, signed: bool = False) -> str:
    """A 95 % interval as "[low, high]", each end by `format_number` (so "[-0.004, 0.000]",
    never "[-0.004, -0.000]"); "—" where an end is missing."""
    if _missing(low) or _missing(high):
        return MISSING
    return (f"[{format_number(low, decimals, signed=signed)}, "
            f"{format_number(high, decimals, signed=signed)}]")


def format_difference(mean: Any, low: Any, high: Any, decimals: int = 3) -> str:
    """A paired difference with its interval, as in the prose: "-0.004 [-0.009, +0.001]"."""
    return (f"{format_number(mean, decimals, signed=True)} "
            f"{format_interval(low, high, decimals, signed=True)}")
