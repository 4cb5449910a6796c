"""fdcam.report: the paper's tables, the side-by-side comparison, the profile check."""

import math

import pandas as pd
import pytest

from fdcam.errors import FdcamError
from fdcam.report import (
    COMPARE_COLUMNS,
    METHOD_LABELS,
    METRICS,
    PROFILES,
    check_profile,
    compare_table,
    method_label,
    paper_table,
)

TABLE_I_METHODS = ["gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "layercam",
                   "groupcam", "fdcam"]


def test_paper_tables_csv_is_tidy_and_complete():
    frame = pd.read_csv("data/paper_tables.csv")
    assert list(frame.columns) == ["table", "method", "metric", "value"]
    assert not frame.duplicated(["table", "method", "metric"]).any()
    assert set(frame["metric"]) <= set(METRICS)
    assert set(frame["method"]) <= set(METHOD_LABELS)
    assert frame["value"].notna().all()
    assert frame.groupby("table").size().to_dict() == {"I": 24, "II": 7, "III": 9, "IV": 9}


def test_table_i_is_the_papers():
    table = paper_table("I")
    assert list(table.columns) == ["method", "metric", "value"]
    assert list(table["method"].drop_duplicates()) == TABLE_I_METHODS
    wide = table.pivot(index="method", columns="metric", values="value")
    assert wide.loc["fdcam", "insertion"] == 0.5534
    assert wide.loc["groupcam", "deletion"] == 0.0921
    assert wide.loc["gradcam", "overall"] == 0.4240


@pytest.mark.parametrize("name", ["I", "III", "IV"])
def test_overall_is_insertion_minus_deletion(name):
    # A typing check: the paper's overall column is exactly insertion − deletion.
    wide = paper_table(name).pivot(index="method", columns="metric", values="value")
    assert ((wide["insertion"] - wide["deletion"] - wide["overall"]).abs() < 5e-5).all()


def test_full_fdcam_row_is_the_same_in_tables_i_iii_iv():
    rows = [paper_table(t).query("method == 'fdcam'")["value"].tolist() for t in ("I", "III",
                                                                                   "IV")]
    assert rows[0] == rows[1] == rows[2] == [0.5534, 0.1001, 0.4533]


def test_table_ii_is_percent_in_paper_order():
    table = paper_table(2)
    assert table["method"].tolist() == ["gradcam", "gradcam++", "xgradcam", "layercam",
                                        "scorecam", "ablationcam", "fdcam"]
    assert set(table["metric"]) == {"pointing_game"}
    assert table["value"].tolist() == [81.20, 81.91, 80.72, 81.77, 78.46, 58.19, 83.70]


def test_ablation_tables_methods():
    assert paper_table("Table III")["method"].unique().tolist() == [
        "fdcam-ng-off", "fdcam-g-off", "fdcam"]
    assert paper_table("iv")["method"].unique().tolist() == ["fdcam-product", "fdcam-exp",
                                                             "fdcam"]


def test_paper_table_returns_a_copy():
    table = paper_table("I")
    table.loc[0, "value"] = 99.0
    assert paper_table("I").loc[0, "value"] == 0.5357


@pytest.mark.parametrize("bad", ["V", 0, 5, "", True])
def test_unknown_table_names_the_choices(bad):
    with pytest.raises(FdcamError, match=r"unknown paper table .*; expected one of I, II, III, IV"):
        paper_table(bad)


def _ours_table_i() -> pd.DataFrame:
    return pd.DataFrame({
        "method": ["fdcam", "fdcam", "gradcam", "fdcam-ng-off"],
        "metric": ["insertion", "deletion", "insertion", "insertion"],
        "mean": [0.56, 0.0901, 0.50, 0.52],
        "ci_low": [0.54, 0.085, 0.49, 0.51],
        "ci_high": [0.58, 0.095, 0.51, 0.53],
        "n": [2000, 2000, 2000, 2000],
    })


def test_compare_table_side_by_side():
    result = compare_table(_ours_table_i(), "I")
    assert tuple(result.columns) == COMPARE_COLUMNS
    assert len(result) == 24  # exactly the paper's rows, in its order
    assert result[["method", "metric"]].equals(paper_table("I")[["method", "metric"]])
    row = result.set_index(["method", "metric"]).loc[("fdcam", "insertion")]
    assert row["paper"] == 0.5534
    assert row["ours"] == 0.56
    assert math.isclose(row["difference"], 0.56 - 0.5534)
    assert bool(row["paper_in_ci"]) is True
    deletion = result.set_index(["method", "metric"]).loc[("fdcam", "deletion")]
    assert bool(deletion["paper_in_ci"]) is False  # 0.1001 is above [0.085, 0.095]
    missing = result.set_index(["method", "metric"]).loc[("scorecam", "overall")]
    assert math.isnan(missing["ours"])
    assert math.isnan(missing["difference"])
    assert missing["paper_in_ci"] is pd.NA


def test_compare_table_keep_extra_appends_our_other_rows():
    result = compare_table(_ours_table_i(), "I", keep_extra=True)
    assert len(result) == 25
    assert result[["method", "metric"]].iloc[:24].equals(paper_table("I")[["method", "metric"]])
    extra = result.iloc[24]
    assert (extra["method"], extra["metric"]) == ("fdcam-ng-off", "insertion")
    assert math.isnan(extra["paper"])


def test_compare_table_without_ci():
    ours = pd.DataFrame({"method": ["fdcam"], "metric": ["pointing_game"], "mean": [80.0]})
    result = compare_table(ours, "II").set_index("method")
    assert result.loc["fdcam", "difference"] == pytest.approx(-3.7)
    assert math.isnan(result.loc["fdcam", "ci_low"])
    assert result.loc["fdcam", "paper_in_ci"] is pd.NA


def test_compare_table_rejects_fractions_for_the_pointing_game():
    ours = pd.DataFrame({"method": ["fdcam"], "metric": ["pointing_game"], "mean": [0.83]})
    with pytest.raises(FdcamError, match="in percent"):
        compare_table(ours, "II")


def test_compare_table_validates_ours():
    with pytest.raises(FdcamError, match=r"lacks column.*mean"):
        compare_table(pd.DataFrame({"method": ["fdcam"], "metric": ["insertion"],
                                    "value": [0.5]}), "I")
    twice = pd.DataFrame({"method": ["fdcam", "fdcam"], "metric": ["insertion"] * 2,
                          "mean": [0.5, 0.6]})
    with pytest.raises(FdcamError, match="more than one row for fdcam/insertion"):
        compare_table(twice, "I")
    with pytest.raises(FdcamError, match="DataFrame"):
        compare_table({"method": "fdcam"}, "I")


def test_check_profile():
    assert PROFILES == ("offline", "paper", "smoke")
    for profile in PROFILES:
        assert check_profile(profile) == profile
    with pytest.raises(FdcamError) as error:
        check_profile("x")
    assert str(error.value) == "unknown profile 'x'; expected one of offline, paper, smoke"


def test_method_label():
    assert method_label("gradcam++") == "Grad-CAM++"
    assert method_label("fdcam") == "FD-CAM"
    assert method_label("something-new") == "something-new"
