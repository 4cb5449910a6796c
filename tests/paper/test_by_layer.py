"""The verdict by layer, on hand-made rows at two layers."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from fdcam.evaluation.results import result_columns
from fdcam.paper import by_layer as by_layer_module
from fdcam.paper.by_layer import by_layer, premise_note, verdict_by_layer
from fdcam.paper.setups import Setup

IMAGES = [f"i{k:02d}" for k in range(24)]


def rows_at(folder: Path, values: dict[str, tuple[float, float]], spread: float) -> Setup:
    """A Setup over `IMAGES` whose faithfulness.csv holds `values` (method -> insertion,
    deletion) on every image, each image shifted by ± `spread` alike for all methods."""
    folder.mkdir()
    made = Setup(profile="offline", model=None, pointing_model=None,  # type: ignore[arg-type]
                 device="cpu", results_dir=folder,
                 faithfulness_images=[(i, torch.zeros(3, 2, 2)) for i in IMAGES],
                 pointing_images={}, methods={"I": (*values,), "II": (), "III": (), "IV": ()},
                 heavy_limits={"faithfulness": None, "pointing": None})
    lines = [",".join(result_columns(False, content=False))]
    for k, image in enumerate(IMAGES):
        shift = spread * (1 if k % 2 else -1)
        for method, (ins, dele) in values.items():
            ins_k = ins + shift + (0.01 * (k % 3) if method == "gradcam++" else 0.0)
            lines.append(f"{image},{method},1,0.9,{ins_k!r},{dele!r},{ins_k - dele!r},")
    made.faithfulness_csv.write_text("\n".join(lines) + "\n")
    return made


def test_by_layer_signs_verdicts_and_premise_columns(tmp_path: Path) -> None:
    # Block output: Grad-CAM ahead of FD-CAM by 0.1 overall on every image. Activation:
    # FD-CAM ahead of Grad-CAM by 0.05; Grad-CAM++ ties on average (±0.01 per image).
    block = rows_at(tmp_path / "block", {"fdcam": (0.5, 0.2), "gradcam": (0.6, 0.2)}, 0.02)
    act = rows_at(tmp_path / "act", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2),
                                     "gradcam++": (0.54, 0.2)}, 0.02)
    survey = pd.DataFrame({"share negative": [0.49, 0.0], "linear head": [False, False]},
                          index=pd.Index(["_blocks.14", "_blocks.15._swish#2"], name="layer"))
    frame = by_layer({"_blocks.14": block, "_blocks.15._swish#2": act}, survey)
    assert list(frame["layer"]) == ["_blocks.14", "_blocks.15._swish#2", "_blocks.15._swish#2"]
    first = frame.iloc[0]
    assert first["method"] == "gradcam" and first["n"] == len(IMAGES)
    assert first["fdcam_minus_rival"] == pytest.approx(-0.1)
    assert first["ci_low"] == pytest.approx(-0.1) and first["ci_high"] == pytest.approx(-0.1)
    assert first["verdict"] == "rival better" and first["share_negative"] == 0.49
    by_method = frame.iloc[1:].set_index("method")
    assert by_method.loc["gradcam", "fdcam_minus_rival"] == pytest.approx(0.05)
    assert by_method.loc["gradcam", "verdict"] == "FD-CAM better"
    # Grad-CAM++ minus FD-CAM per image: -0.01, 0, +0.01 (k % 3): its interval holds 0.
    assert by_method.loc["gradcam++", "verdict"] == "undecided"
    assert by_method.loc["gradcam++", "ci_low"] < 0 < by_method.loc["gradcam++", "ci_high"]
    assert by_method.loc["gradcam", "share_negative"] == 0.0
    note = premise_note(frame)
    assert note.startswith("`_blocks.14` (49% negative, outside the premise, a non-linear head;"
                           " n = 24): FD-CAM ahead of 0 and behind 1 of 1 rivals; ")
    assert "`_blocks.15._swish#2` (0% negative, inside the premise (A ≥ 0)" in note
    # Deletion: lower is better, so FD-CAM minus a rival that deletes worse is negative.
    deletion = by_layer({"act": rows_at(tmp_path / "d", {"fdcam": (0.5, 0.1),
                                                         "gradcam": (0.5, 0.3)}, 0.0)},
                        survey, metric="deletion")
    assert deletion["fdcam_minus_rival"].iloc[0] == pytest.approx(-0.2)
    assert deletion["verdict"].iloc[0] == "FD-CAM better"
    assert math.isnan(deletion["share_negative"].iloc[0])  # "act" is not in the survey


def test_by_layer_figure_is_legible_and_refuses_other_frames(tmp_path: Path) -> None:
    from fdcam.errors import FdcamError
    from fdcam.paper import plots

    block = rows_at(tmp_path / "block", {"fdcam": (0.5, 0.2), "gradcam": (0.6, 0.2)}, 0.02)
    act = rows_at(tmp_path / "act", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2)}, 0.02)
    survey = pd.DataFrame({"share negative": [0.49, 0.0], "linear head": [False, False]},
                          index=pd.Index(["_blocks.14", "_blocks.15._swish#2"], name="layer"))
    frame = by_layer({"_blocks.14": block, "_blocks.15._swish#2": act}, survey)
    fig = plots.by_layer_figure(frame)
    texts = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert texts == ["_blocks.14\n49% neg.\nnon-linear head",
                     "_blocks.15.\n_swish#2\n0% neg.\nnon-linear head"]
    assert plots.smallest_font(fig) >= plots.MIN_FONT_PT
    with pytest.raises(FdcamError, match="by_layer_figure needs"):
        plots.by_layer_figure(frame.iloc[:0])


def test_by_layer_figure_tick_labels_do_not_touch_at_six_call_sites(tmp_path: Path) -> None:
    from fdcam.paper import plots

    layers = ["_blocks.14._swish#1", "_blocks.14._swish#2", "_blocks.14", "_blocks.15._swish#1",
              "_blocks.15._swish#2", "_swish"]
    setups = {layer: rows_at(tmp_path / f"l{k}", {"fdcam": (0.5, 0.2), "gradcam": (0.6, 0.2)},
                             0.02) for k, layer in enumerate(layers)}
    survey = pd.DataFrame({"share negative": [0.0, 0.0, 0.49, 0.0, 0.0, 0.0],
                           "linear head": [False] * 5 + [True]},
                          index=pd.Index(layers, name="layer"))
    fig = plots.by_layer_figure(by_layer(setups, survey))
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].get_xticklabels()]
    assert len(boxes) == 6
    for left, right in itertools.pairwise(boxes):
        assert left.x1 < right.x0, "neighbouring layer names run into each other"


def test_cross_checks_decide_table_i_at_each_setup(tmp_path: Path) -> None:
    from fdcam.paper.verdicts import cross_check_sentence, cross_checks

    # FD-CAM ahead of Grad-CAM by 0.05 in insertion at one setup, behind by 0.1 at the other.
    ahead = rows_at(tmp_path / "ahead", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2)}, 0.02)
    behind = rows_at(tmp_path / "behind", {"fdcam": (0.5, 0.2), "gradcam": (0.6, 0.2)}, 0.02)
    frame = cross_checks({"A at `x`": ahead, "B at `y`": behind}, n_resamples=200)
    insertion = frame[frame["metric"] == "insertion"].set_index("claim")
    assert insertion["verdict"].to_dict() == {"A at `x`": "confirmed", "B at `y`": "refuted"}
    assert set(insertion["n"]) == {len(IMAGES)}
    assert "paper" not in frame.columns
    assert cross_check_sentence(frame).startswith(
        "Against A at `x`: B at `y` differs in insertion (refuted, not confirmed)")


def test_replication_setup_needs_the_finished_survey(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from fdcam.errors import FdcamError
    from fdcam.paper import layer_survey
    from fdcam.paper.setups import replication_setup

    offline = rows_at(tmp_path / "main", {"fdcam": (0.5, 0.2)}, 0.0)
    assert replication_setup(offline) is None  # another profile: no replication
    sample = dataclasses.replace(offline, profile="imagenet-sample")
    monkeypatch.setattr(layer_survey, "REPLICATION_SURVEY_CSV", tmp_path / "none.csv")
    assert replication_setup(sample) is None
    with pytest.raises(FdcamError, match=r"^the replication needs the finished "
                                         r"efficientnet-lite2 survey in .*none\.csv"):
        replication_setup(sample, required=True)


def test_verdict_by_layer_needs_the_sample_profile_and_two_layers_with_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = rows_at(tmp_path / "block", {"fdcam": (0.5, 0.2), "gradcam": (0.6, 0.2)}, 0.02)
    act = rows_at(tmp_path / "act", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2)}, 0.02)
    survey = pd.DataFrame({"share negative": [0.49, 0.0, 0.0], "linear head": [False] * 3},
                          index=pd.Index(["_blocks.14", "_blocks.15._swish#2", "_swish"],
                                         name="layer"))
    assert verdict_by_layer(act, survey=survey) is None  # a profile with one layer
    act.profile = "imagenet-sample"
    asked: list[list[str]] = []

    def with_rows(main: Setup, layers: list[str]) -> dict[str, Setup]:
        asked.append(list(layers))
        return {"_blocks.14": block, "_blocks.15._swish#2": act}

    monkeypatch.setattr(by_layer_module, "layer_setups", with_rows)
    frame = verdict_by_layer(act, survey=survey)
    assert asked == [["_blocks.14", "_blocks.15._swish#2", "_swish"]]  # every surveyed layer
    assert frame is not None and list(frame["layer"].unique()) == ["_blocks.14",
                                                                   "_blocks.15._swish#2"]
    monkeypatch.setattr(by_layer_module, "layer_setups", lambda main, layers: {"a": act})
    assert verdict_by_layer(act, survey=survey) is None  # rows at one layer only


def test_premise_note_names_the_rivals_blank_maps(tmp_path: Path) -> None:
    act = rows_at(tmp_path / "act", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2),
                                     "gradcam++": (0.54, 0.2)}, 0.02)
    header = ",".join(result_columns(False, content=False))
    # Grad-CAM's rows equal the blank map's on every photo: 100 % blank; Grad-CAM++ never.
    (tmp_path / "act" / "blank_map.csv").write_text(header + "\n" + "".join(
        f"{image},blank,1,0.9,{(a := 0.5 + (0.02 if k % 2 else -0.02))!r},0.2,{a - 0.2!r},\n"
        for k, image in enumerate(IMAGES)))
    survey = pd.DataFrame({"share negative": [0.0], "linear head": [False]},
                          index=pd.Index(["act"], name="layer"))
    frame = by_layer({"act": act}, survey)
    assert frame.set_index("method")["blank_share"].to_dict() == {"gradcam": 1.0,
                                                                   "gradcam++": 0.0}
    assert premise_note(frame).endswith("rivals; blank maps: Grad-CAM 100%.")
    assert frame["fdcam_blank_share"].eq(0.0).all()


def test_summary_line_and_table_show_each_layer_and_rival(tmp_path: Path) -> None:
    from fdcam.errors import FdcamError
    from fdcam.paper.by_layer import summary_line
    from fdcam.paper.report import styled_by_layer

    block = rows_at(tmp_path / "block", {"fdcam": (0.5, 0.2), "gradcam": (0.6, 0.2)}, 0.02)
    act = rows_at(tmp_path / "act", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2),
                                     "gradcam++": (0.54, 0.2)}, 0.02)
    survey = pd.DataFrame({"share negative": [0.49, 0.0], "linear head": [False, True]},
                          index=pd.Index(["_blocks.14", "_swish"], name="layer"))
    frame = by_layer({"_blocks.14": block, "_swish": act}, survey)
    assert summary_line(frame, "M") == (
        "How the verdict moves with the layer (M, FD-CAM's overall AUC against each rival of "
        "Table I by its paired 95 % interval): at `_blocks.14` (49% negative, outside the "
        "premise, non-linear head; n = 24), ahead of 0 and behind 1 of 1 rivals; at `_swish` "
        "(0% negative, inside the premise (A ≥ 0), linear head; n = 24), ahead of 1 and "
        "behind 0 of 2 rivals.")
    assert summary_line(frame.iloc[:0], "M") == ""
    fewer = frame.copy()
    fewer.loc[fewer.index[-1], "n"] = 10  # a heavy rival on fewer photos: the range
    assert "(A ≥ 0), linear head; n = 10–24)" in summary_line(fewer, "M")
    assert "a linear head; n = 10–24)" in premise_note(fewer)
    html = styled_by_layer(frame, caption="by layer").to_html()
    # One column per layer, its premise in the header; Grad-CAM ahead of FD-CAM at the
    # block output (italic), behind at `_swish` (bold); Grad-CAM++ has no rows at the first.
    assert "<code>_blocks.14</code><br>49% negative<br>non-linear head<br>n = 24" in html
    assert "<i>-0.100</i>" in html and "<b>+0.050</b>" in html
    assert html.count("—") == 1
    # A call site's name on two lines; a rival on fewer photos says how many.
    renamed = frame.assign(layer=frame["layer"].replace("_swish", "_blocks.15._swish#2"))
    renamed.loc[renamed.index[-1], "n"] = 10
    html = styled_by_layer(renamed).to_html()
    assert "<code>_blocks.15</code><br><code>._swish#2</code><br>0% negative" in html
    assert "<br>n = 10</span>" in html
    from fdcam.paper.by_layer import inside_premise

    assert inside_premise(frame).tolist() == [False, False, False]  # negatives; linear head
    assert inside_premise(frame.assign(head_linear=False)).tolist() == [False, True, True]
    with pytest.raises(FdcamError, match=r"^styled_by_layer needs a by_layer result"):
        styled_by_layer(frame.drop(columns="verdict"))


def test_replication_compares_each_rival_and_counts_only_decided_pairs(tmp_path: Path) -> None:
    from fdcam.paper.verdicts import replication, replication_sentence

    # Grad-CAM: FD-CAM ahead in insertion on both (agree); Grad-CAM++: ahead on the first,
    # a tie (undecided) on the second; XGrad-CAM has rows on the first only.
    first = rows_at(tmp_path / "a", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2),
                                     "gradcam++": (0.45, 0.2), "xgradcam": (0.5, 0.2)}, 0.02)
    second = rows_at(tmp_path / "b", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2),
                                      "gradcam++": (0.54, 0.2)}, 0.02)
    frame = replication(first, second)
    insertion = frame[frame["metric"] == "insertion"].set_index("method")
    assert insertion.loc["gradcam", ["first", "second"]].tolist() == ["FD-CAM better"] * 2
    assert insertion.loc["gradcam++", ["first", "second"]].tolist() == ["FD-CAM better",
                                                                        "undecided"]
    assert insertion.loc["xgradcam", "second"] == "no rows"
    text = replication_sentence(frame, "L0 at `x`", "L2 at `y`")
    # Deletion is tied everywhere (undecided on both); overall follows insertion.
    assert text == (
        "Rival by rival, L2 at `y` agrees with L0 at `x` on 4 of the 6 comparisons of FD-CAM "
        "with a rival in one metric that both ran on enough images (2 with FD-CAM better on "
        "both, 2 "
        "undecided on both); they differ on Grad-CAM++ insertion (FD-CAM better on L0, "
        "undecided on L2), Grad-CAM++ overall (FD-CAM better on L0, undecided on L2); "
        "XGrad-CAM has no rows on L2 yet.")
    assert replication_sentence(frame.iloc[:0], "a", "b") == (
        "No rival has rows on both a and b yet.")
    none = frame.assign(second="too few images")
    assert replication_sentence(none, "L0 at `x`", "L2 at `y`").startswith(
        "Rival by rival, L0 at `x` and L2 at `y` have no comparison of FD-CAM with a rival that "
        "both ran on enough images yet; Grad-CAM, Grad-CAM++ and XGrad-CAM have too few "
        "images on L2 yet.")


def test_replication_line_says_both_verdicts_per_metric(tmp_path: Path) -> None:
    from fdcam.paper.verdicts import cross_checks, replication, replication_line

    first = rows_at(tmp_path / "a", {"fdcam": (0.55, 0.2), "gradcam": (0.5, 0.2)}, 0.02)
    second = rows_at(tmp_path / "b", {"fdcam": (0.5, 0.2), "gradcam": (0.6, 0.2)}, 0.02)
    checks = cross_checks({"L0 at `x`": first, "L2 at `y`": second}, n_resamples=200)
    line = replication_line(checks, replication(first, second), "L0 at `x`", "L2 at `y`")
    # Deletion ties (undecided) on both; Grad-CAM ahead in insertion and overall on L2.
    assert line.startswith(
        "On a second network, L2 at `y` (n = 24), Table I's claim is refuted in insertion and "
        "overall, undecided in deletion; on L0 at `x`, confirmed in insertion and overall, "
        "undecided in deletion. Rival by rival, L2 at `y` agrees with L0 at `x` on 1 of the 3 ")
    assert replication_line(checks.iloc[:3], replication(first, second), "L0 at `x`",
                            "L2 at `y`").startswith(
        "On a second network, L2 at `y`, Table I's claim is without rows yet;")
    # A deciding rival on fewer images (a heavy method's prefix) widens n to a range.
    fewer = checks.assign(n=[24, 24, 24, 10, 24, 24])
    assert replication_line(fewer, replication(first, second), "L0 at `x`",
                            "L2 at `y`").startswith("On a second network, L2 at `y` (n = 10–24),")
