"""How the book writes a number and an interval: one place, so that every page rounds alike.

A value that rounds to zero is written without its sign ("0.000", never "-0.000"), in
tables and prose, except a difference or an interval's end that is not zero: it keeps its
sign to its first significant digit ("-0.0004"), since its side of zero decides a verdict.
Ties are decided on the written value (`rounded`), so that the values a reader sees as
equal are bold alike.
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
    positive values (a difference), and a difference too small for `decimals` places is
    written to its first significant digit ("+0.0003", see `_near_zero`). Otherwise a value
    that rounds to zero is "0.000", unsigned."""
    if _missing(value):
        return MISSING
    shown = rounded(value, decimals)
    if shown == 0:
        return _near_zero(value, decimals) if signed else f"{0.0:.{decimals}f}"
    return f"{shown:+.{decimals}f}" if signed else f"{shown:.{decimals}f}"


#: How many places beyond the usual a number near zero may get to show its sign.
EXTRA_PLACES = 3


def _near_zero(value: Any, decimals: int) -> str:
    """A nonzero `value` that rounds to zero at `decimals` places, to its first significant
    digit (at most `EXTRA_PLACES` more), with its sign: whether an interval's end is below
    or above zero decides a verdict, so the page must not write both as "0.000". Zero, or
    a value still zero at the last place, is "0.000"."""
    for places in range(decimals + 1, decimals + EXTRA_PLACES + 1):
        shown = rounded(value, places)
        if shown != 0:
            return f"{shown:+.{places}f}"
    return f"{0.0:.{decimals}f}"


def format_interval(low: Any, high: Any, decimals: int, *, signed: bool = False) -> str:
    """A 95 % interval as "[low, high]", each end by `format_number`; an end that rounds to
    zero but is not zero keeps its sign and first significant digit ("[-0.015, -0.0004]",
    which excludes zero, beside "[-0.015, 0.000]": zero, or zero to `EXTRA_PLACES` more
    places), and "-0.000" is never written; "+" only where `signed`. "—" where an end is
    missing."""
    if _missing(low) or _missing(high):
        return MISSING

    def end(value: Any) -> str:
        if rounded(value, decimals) == 0:
            near = _near_zero(value, decimals)
            return near if signed or not near.startswith("+") else near[1:]
        return format_number(value, decimals, signed=signed)

    return f"[{end(low)}, {end(high)}]"


def format_difference(mean: Any, low: Any, high: Any, decimals: int = 3) -> str:
    """A paired difference with its interval, as in the prose: "-0.004 [-0.009, +0.001]"."""
    return (f"{format_number(mean, decimals, signed=True)} "
            f"{format_interval(low, high, decimals, signed=True)}")


def format_count_range(counts: Any) -> str:
    """How many images lie behind several numbers (a Series of n): "300", or "100–300"
    where some (the heavy methods', say) rest on fewer."""
    low, high = int(min(counts)), int(max(counts))
    return f"{high}" if low == high else f"{low}–{high}"
