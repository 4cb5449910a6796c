"""fdcam.paper.numbers: one way to write a number and an interval; ties decided as written."""

import math
import re

import pandas as pd
import pytest

from fdcam.paper.numbers import format_difference, format_interval, format_number, rounded
from fdcam.paper.report import styled_paired, styled_table


@pytest.mark.parametrize(("value", "signed", "expected"), [
    (-0.0004, False, "0.000"), (-0.0004, True, "-0.0004"), (-0.0, False, "0.000"),
    (0.0004, True, "+0.0004"), (0.0126, True, "+0.013"), (-0.0126, True, "-0.013"),
    (0.0, True, "0.000"), (-0.0, True, "0.000"), (1e-9, True, "0.000"),  # zero to 6 places
    (0.5625, False, "0.562"), (float("nan"), False, "—"), (None, True, "—"),
])
def test_format_number_never_writes_a_negative_zero(value, signed, expected):
    assert format_number(value, 3, signed=signed) == expected


def test_format_interval_and_difference():
    # An end that rounds to zero keeps its side of zero: this interval excludes it ...
    assert format_interval(-0.0041, -0.0002, 3) == "[-0.004, -0.0002]"
    assert format_interval(-0.0041, -0.0002, 3, signed=True) == "[-0.004, -0.0002]"
    # ... and this one holds it (an end exactly zero, or zero to three more places).
    assert format_interval(-0.0041, 0.0, 3, signed=True) == "[-0.004, 0.000]"
    assert format_interval(-0.0041, -1e-9, 3) == "[-0.004, 0.000]"
    assert format_interval(-0.04, 0.05, 1) == "[-0.04, 0.1]"
    assert format_interval(0.0004, 0.01, 3) == "[0.0004, 0.010]"  # unsigned: no "+"
    assert format_interval(0.0004, 0.01, 3, signed=True) == "[+0.0004, +0.010]"
    assert format_interval(float("nan"), 1.0, 3) == "—"
    assert format_difference(-0.0004, -0.0091, 0.0012) == "-0.0004 [-0.009, +0.001]"
    assert math.isnan(rounded(None, 3)) and rounded(-0.0001, 3) == 0.0


def _faithfulness(ours: list[float]) -> pd.DataFrame:
    methods = ["gradcam", "xgradcam", "layercam", "fdcam"]
    return pd.DataFrame({"method": methods, "metric": ["insertion"] * 4,
                         "paper": [0.5, 0.5, 0.5, 0.6], "ours": ours,
                         "ci_low": [v - 0.01 for v in ours],
                         "ci_high": [v + 0.01 for v in ours], "n": [10] * 4})


def test_values_written_alike_are_bold_alike():
    # three values that print as 0.563 (one of them a hair larger) are all bold
    shown = styled_table(_faithfulness([0.56301, 0.5630004, 0.5625001, 0.4]),
                         name="t").data[("Insertion ↑", "Ours")]
    assert [v.startswith("<b>0.563</b>") for v in shown] == [True, True, True, False]


def test_tables_write_intervals_without_negative_zero():
    shown = styled_table(_faithfulness([-0.0001, 0.2, 0.3, 0.4]), name="t").data
    assert "[-0.010, 0.010]" in shown.iloc[0][("Insertion ↑", "Ours")]
    paired = pd.DataFrame({"method": ["gradcam"], "label": ["Grad-CAM"],
                           "metric": ["insertion"], "n": [10], "mean_difference": [-0.002],
                           "ci_low": [-0.0041], "ci_high": [-0.0002], "fdcam_better": [True]})
    cell = styled_paired(paired, name="p").data.iloc[0, 0]
    assert cell.startswith("<b>-0.002</b>") and "[-0.004, -0.0002]" in cell
    assert re.search(r"-0\.000(?!\d)", cell) is None  # no negative zero
