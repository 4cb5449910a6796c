"""fdcam.paper names, paper_tables, report: the paper's tables, side by side, the profile check."""

import math

import pandas as pd
import pytest

from fdcam.errors import FdcamError
from fdcam.paper.names import METHOD_LABELS, METRICS, PROFILES, check_profile, method_label
from fdcam.paper.paper_tables import COMPARE_COLUMNS, compare_table, paper_table
from fdcam.paper.report import (
    bullets,
    claims_markdown,
    paper_layout,
    sample_sizes,
    styled_paired,
    styled_table,
    summary_markdown,
    summary_table,
)
from scripts.readme import README_BEGIN, README_END, update_readme

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
    assert PROFILES == ("offline", "imagenet-sample", "paper", "smoke")
    for profile in PROFILES:
        assert check_profile(profile) == profile
    with pytest.raises(FdcamError) as error:
        check_profile("x")
    assert str(error.value) == ("unknown profile 'x'; expected one of offline, imagenet-sample, "
                                "paper, smoke")


def test_method_label():
    assert method_label("gradcam++") == "Grad-CAM++"
    assert method_label("fdcam") == "FD-CAM"
    assert method_label("something-new") == "something-new"


# ------------------------------------------------------------------ tables for the reader


def _table_1(n: int = 5) -> pd.DataFrame:
    """A table_1-like long table: ours = paper + 0.01·i, interval ± 0.02, n images."""
    paper = paper_table("I")
    rows = []
    for i, (method, metric, value) in enumerate(paper.itertuples(index=False)):
        ours = value + 0.01 * (i % 5)
        rows.append({"method": method, "metric": metric, "mean": ours, "ci_low": ours - 0.02,
                     "ci_high": ours + 0.02})
    table = compare_table(pd.DataFrame(rows), "I")
    return table.assign(label=[method_label(m) for m in table["method"]], n=n)


def test_paper_layout_has_methods_as_rows_and_paper_beside_ours():
    table = _table_1()
    frame = paper_layout(table)
    assert list(frame.index) == [method_label(m) for m in TABLE_I_METHODS]
    assert list(frame.columns[:3]) == [("Insertion ↑", "Paper"), ("Insertion ↑", "Ours"),
                                       ("Insertion ↑", "95 % CI")]
    assert frame.columns[-1] == ("", "n") and set(frame[("", "n")]) == {"5"}
    row = table[(table["method"] == "fdcam") & (table["metric"] == "deletion")].iloc[0]
    assert frame.loc["FD-CAM", ("Deletion ↓", "Paper")] == f"{row['paper']:.3f}"
    assert frame.loc["FD-CAM", ("Deletion ↓", "95 % CI")] == \
        f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def test_styled_table_bolds_the_best_of_each_column_and_dashes_missing():
    table = _table_1()
    table.loc[table["method"] == "layercam", ["ours", "ci_low", "ci_high"]] = float("nan")
    styler = styled_table(table, caption="Table I", name="t1")
    shown = styler.data
    for metric, header in (("insertion", "Insertion ↑"), ("deletion", "Deletion ↓")):
        rows = table[table["metric"] == metric].set_index("method")
        best = rows["paper"].idxmin() if metric == "deletion" else rows["paper"].idxmax()
        column = shown[(header, "Paper")]
        assert column[method_label(best)] == f"<b>{rows.loc[best, 'paper']:.3f}</b>"
        assert sum(v.startswith("<b>") for v in column) == 1
        ours = shown[(header, "Ours")]
        assert sum(v.startswith("<b>") for v in ours) == 1
        assert 'class="fdcam-ci"' in ours["FD-CAM"] and "[" in ours["FD-CAM"]
    assert shown.loc["Layer-CAM", ("Insertion ↑", "Ours")] == "—"
    html = styler.to_html()
    assert "nan" not in html.lower().replace("nan;", "")
    assert "<caption>Table I</caption>" in html
    assert len(shown.columns) == 3 * 2 + 1  # paper and ours per metric, then n


def test_styled_table_bolds_a_best_value_whose_rounding_differs_between_libraries():
    # 100 · 223/252: pandas rounds it to 12 places as ...064, Python as ...063.
    best = 100 * 223 / 252
    table = pd.DataFrame({"method": ["gradcam", "scorecam", "fdcam"],
                          "metric": ["pointing_game_tol15"] * 3, "paper": [float("nan")] * 3,
                          "ours": [60.6, best, 37.5], "ci_low": [59.0, 86.0, 35.0],
                          "ci_high": [62.0, 91.0, 40.0], "n": [1000, 252, 1000]})
    shown = styled_table(table, name="t2").data
    column = shown[("Original game, 15 px, class mean (%) ↑", "Ours")]
    assert [v.startswith("<b>") for v in column] == [False, True, False]
    assert column["Score-CAM"].startswith("<b>88.5</b>")


def test_styled_table_names_table_iv_combinations_in_html():
    ours = pd.DataFrame({"method": ["fdcam-exp", "fdcam"], "metric": ["overall"] * 2,
                         "mean": [0.4, 0.45]})
    table = compare_table(ours, "IV").assign(n=3)
    frame = paper_layout(table)
    assert "ρ = α̂ · e<sup>ŝ</sup> − 0.5 (Eq. 10)" in frame.index


def test_styled_paired_bolds_differences_that_exclude_zero():
    paired = pd.DataFrame({"method": ["gradcam", "scorecam"], "label": ["Grad-CAM", "Score-CAM"],
                           "metric": ["insertion"] * 2, "n": [5, 2],
                           "mean_difference": [-0.05, 0.01], "ci_low": [-0.08, -0.02],
                           "ci_high": [-0.01, 0.03], "fdcam_better": [True, False]})
    styler = styled_paired(paired, name="p")
    assert list(styler.data.index) == ["Grad-CAM", "Score-CAM"]
    column = styler.data[("Insertion ↑", "Δ vs FD-CAM")]
    assert column["Grad-CAM"].startswith("<b>-0.050</b><br>")
    assert column["Score-CAM"].startswith("+0.010<br>")  # signed, as the prose quotes it
    assert "[-0.020, +0.030]" in column["Score-CAM"]
    assert styler.data.loc["Score-CAM", ("", "n")] == "2"


def test_summary_table_and_markdown_put_table_ii_beside_table_i():
    table_2 = compare_table(pd.DataFrame({"method": ["gradcam", "fdcam"],
                                          "metric": ["pointing_game"] * 2,
                                          "mean": [80.0, 90.0]}), "II").assign(n=32)
    styler = summary_table(_table_1(), table_2, caption="c")
    assert ("Pointing game (%) ↑", "Ours") in styler.data.columns
    text = summary_markdown(_table_1(), table_2)
    lines = text.splitlines()
    assert lines[0].startswith("| Method | Insertion ↑ | Deletion ↓ | Overall ↑ | Pointing")
    fdcam = next(line for line in lines if line.startswith("| FD-CAM |"))
    assert "**90.0** (" in fdcam
    # Table I's cells carry our interval: ours [low, high] (paper).
    gradcam = next(line for line in lines if line.startswith("| Grad-CAM |"))
    assert gradcam.split(" | ")[1] == "0.536 [0.516, 0.556] (0.536)"
    assert summary_table(_table_1(), table_2, caption="at `_swish`").caption == (
        "at <code>_swish</code>")
    assert "— (" in next(line for line in lines if line.startswith("| Score-CAM |"))


def test_sample_sizes_name_the_methods_run_on_fewer_images():
    table = pd.DataFrame({"method": ["gradcam", "gradcam", "scorecam", "ablationcam", "fdcam",
                                     "groupcam", "layercam"],
                          "n": [1000, 990, 250, 250, 1000, None, 63]})
    assert sample_sizes(table) == ("1,000 images (Score-CAM, Ablation-CAM on 250; "
                                   "Layer-CAM on 63)")
    assert sample_sizes(table[table["method"].isin(["gradcam", "fdcam"])],
                        "pairs") == "1,000 pairs"
    assert sample_sizes(table[table["method"] == "groupcam"]) == "no images"
    with pytest.raises(FdcamError, match="sample_sizes needs"):
        sample_sizes(pd.DataFrame({"method": ["fdcam"]}))


def test_bullets_turn_findings_into_a_markdown_list():
    text = "insertion: best FD-CAM\npaired differences:\n  Grad-CAM: +0.1, a*e^s\n"
    assert bullets(text) == ("- insertion: best FD-CAM\n- paired differences:\n"
                             "  - Grad-CAM: +0.1, α̂·exp(ŝ)")


def test_claims_markdown_one_row_per_claim_one_column_per_metric():
    verdicts = pd.DataFrame([
        {"claim": "A", "metric": "insertion", "verdict": "confirmed", "n": 9,
         "evidence": "Grad-CAM -0.010 [-0.020, -0.001]"},
        {"claim": "A", "metric": "deletion", "verdict": "undecided", "n": 9, "evidence": "x"},
        {"claim": "B", "metric": "pointing_game", "verdict": "no data", "n": 0,
         "evidence": ""},
    ])
    lines = claims_markdown(verdicts).splitlines()
    assert lines[0] == "| claim | Insertion ↑ | Deletion ↓ | Pointing game (%) ↑ |"
    assert lines[2] == ("| A | **confirmed**<br>Grad-CAM -0.010 [-0.020, -0.001]<br>n = 9 | "
                        "**undecided**<br>x<br>n = 9 |  |")
    assert lines[3] == "| B |  |  | **no data**<br>n = 0 |"
    with pytest.raises(FdcamError, match="claims_markdown needs a claim_verdicts result"):
        claims_markdown(pd.DataFrame({"claim": ["A"]}))
    quoted = verdicts.assign(paper=["“A holds” (§IV)", "“A holds” (§IV)", ""])
    lines = claims_markdown(quoted).splitlines()
    assert lines[2].startswith("| A<br>*“A holds” (§IV)* | **confirmed**")
    assert lines[3].startswith("| B |  |")


def test_update_readme_rewrites_only_its_block(tmp_path):
    import base64

    import nbformat

    notebook = nbformat.v4.new_notebook()
    outputs = []
    for name, data, prefix in [
            ("teaser", {"image/png": base64.b64encode(b"\x89PNG fake").decode()}, ""),
            ("teaser_caption", {"text/markdown": "One image."}, "application/papermill.record/"),
            ("conclusion", {"text/markdown": "Tested; held."}, "application/papermill.record/"),
            ("summary_markdown", {"text/markdown": "| a |\n|--|"}, "application/papermill.record/"),
            ("summary_profile", {"text/markdown": "Offline."}, "application/papermill.record/")]:
        outputs.append(nbformat.v4.new_output(
            "display_data", data={prefix + k: v for k, v in data.items()},
            metadata={"scrapbook": {"name": name, "mime_prefix": prefix}}))
    notebook.cells = [nbformat.v4.new_code_cell("glue()", outputs=outputs)]
    path = tmp_path / "08_summary.ipynb"
    nbformat.write(notebook, path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\nold\n{README_END}\n## API\n")
    teaser = tmp_path / "teaser.png"
    assert update_readme(readme, path, teaser) is True
    text = readme.read_text()
    assert text.startswith("# x\n") and text.endswith(f"{README_END}\n## API\n")
    assert "| a |" in text and "*One image.*" in text and "\nold\n" not in text
    assert text.index("Tested; held.") < text.index("*One image.*")
    assert teaser.read_bytes() == b"\x89PNG fake"
    assert update_readme(readme, path, teaser) is False  # idempotent


def test_committed_readme_matches_the_committed_summary_notebook():
    from scripts.readme import README, SUMMARY_NOTEBOOK, readme_block

    if not SUMMARY_NOTEBOOK.is_file():
        pytest.skip("book/08_summary.ipynb is not executed yet")
    assert readme_block() in README.read_text(encoding="utf-8"), "run make readme"


def test_conclusion_names_model_layer_and_what_held():
    from fdcam.paper.verdicts import CLAIMS, conclusion

    table_1, table_2, grouping = CLAIMS[0].claim, CLAIMS[1].claim, CLAIMS[3].claim
    verdicts = pd.DataFrame([
        (table_1, "insertion", "refuted", 250, "Group-CAM +0.012 [+0.004, +0.020]"),
        (table_1, "deletion", "undecided", 250, "Grad-CAM −0.001 [−0.003, +0.001]"),
        (table_1, "overall", "refuted", 250, "Group-CAM +0.010 [+0.002, +0.018]"),
        (table_2, "pointing game", "too few images", 12, "Grad-CAM +1.0 [−4.0, +6.0]"),
        (grouping, "insertion", "confirmed", 250, "ng+off −0.020 [−0.030, −0.010]"),
        (grouping, "deletion", "confirmed", 250, "ng+off +0.010 [+0.005, +0.015]"),
    ], columns=["claim", "metric", "verdict", "n", "evidence"])
    text = conclusion(verdicts, model="EfficientNet-Lite0", layer="_blocks.15._swish#2",
                      images="250 photos", more=["By layer: …", ""])
    assert text == (
        "This run tested 3 claims of the paper on EfficientNet-Lite0 at `_blocks.15._swish#2`, "
        "with 250 photos. On EfficientNet-Lite0 at `_blocks.15._swish#2`, confirmed on every "
        "metric: grouping improves FD-CAM (Table III); refuted: "
        "FD-CAM best in insertion and overall, second in deletion (Table I), in insertion and "
        "overall (insertion: deciding rival Group-CAM +0.012 [+0.004, +0.020], n = 250). Not "
        "decided on EfficientNet-Lite0 at `_blocks.15._swish#2` (an interval that "
        "contains zero, or too few images): FD-CAM the best at the pointing game (Table II)."
        "\n\nBy layer: …")
    # A claim of one metric names it itself; a single refuting metric needs no "metric:".
    pointing = verdicts.iloc[[0, 1, 3]].assign(verdict="refuted",
                                               metric=["insertion", "deletion", "pointing_game"])
    pointing.loc[pointing.index[1], "verdict"] = "undecided"
    assert "refuted: FD-CAM best in insertion and overall, second in deletion (Table I), in " \
           "insertion (deciding rival Group-CAM +0.012 [+0.004, +0.020], n = 250); FD-CAM the " \
           "best at the pointing game (Table II): deciding rival Grad-CAM +1.0 [−4.0, +6.0], " \
           "n = 12." in conclusion(pointing, model="m", layer="l", images="")
    nothing = conclusion(verdicts[verdicts["claim"] == table_2], model="m", layer="l",
                         images="2 photos")
    assert "On m at `l`, no claim was confirmed on every metric." in nothing
    unrun = verdicts.assign(verdict="no data")
    assert conclusion(unrun, model="m", layer="l", images="0 photos").endswith(
        "No rows yet: FD-CAM best in insertion and overall, second in deletion (Table I); "
        "FD-CAM the best at the pointing game (Table II); grouping improves FD-CAM "
        "(Table III).")
    with pytest.raises(FdcamError, match=r"^conclusion needs a claim_verdicts result"):
        conclusion(pd.DataFrame({"claim": []}), model="m", layer="l", images="")


def test_cross_check_sentence_says_where_setups_agree():
    from fdcam.paper.verdicts import cross_check_sentence

    frame = pd.DataFrame([
        ("A at `x`", "insertion", "refuted", 250, ""),
        ("B at `y`", "insertion", "refuted", 100, ""),
        ("A at `x`", "overall", "confirmed", 250, ""),
        ("B at `y`", "overall", "undecided", 100, ""),
    ], columns=["claim", "metric", "verdict", "n", "evidence"])
    assert cross_check_sentence(frame) == (
        "Against A at `x`: B at `y` differs in overall (undecided, not confirmed).")
    same = frame.assign(verdict="refuted")
    three = pd.concat([same, same[same["claim"] == "B at `y`"].assign(claim="C at `z`")])
    assert cross_check_sentence(three) == (
        "Against A at `x`: B at `y`, C at `z` reach the same verdict in every metric.")
    assert cross_check_sentence(frame[frame["claim"] == "A at `x`"]) == "Only A at `x` has rows."
    partial = frame[~((frame["claim"] == "B at `y`") & (frame["metric"] == "overall"))]
    assert cross_check_sentence(partial) == (
        "Against A at `x`: B at `y` differs in overall (no rows).")
    assert cross_check_sentence(frame.iloc[:0]) == "No cross-check has rows yet."


def test_planned_note_says_when_the_rows_are_still_growing():
    from types import SimpleNamespace

    from fdcam.paper.report import planned_note

    setup = SimpleNamespace(faithfulness_images=[("i", None)] * 1000)
    assert planned_note(setup, _table_1(n=69)) == (
        ", of the 1,000 images planned (the run is still adding rows)")
    assert planned_note(setup, _table_1(n=1000)) == ""
