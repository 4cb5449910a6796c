"""Blank maps: the protocol's AUCs of a map that says nothing, and finding them in rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fdcam.errors import FdcamError
from fdcam.evaluation.faithfulness import insertion_deletion_curves
from fdcam.evaluation.results import result_columns
from fdcam.evaluation.results_file import read_results
from fdcam.models import LoadedModel
from fdcam.paper import blank_maps, report
from fdcam.paper.figure_data import image_tensor
from fdcam.paper.setups import Setup
from tests.models import tiny_sequential


def tiny_setup(folder: Path, layer: str = "3") -> Setup:
    model = LoadedModel("tiny", tiny_sequential(), layer, (0.0,) * 3, (1.0,) * 3,
                        [f"c{i}" for i in range(10)], (12, 12))
    torch.manual_seed(1)
    images = [(f"i{k}", torch.rand(3, 12, 12)) for k in range(3)]
    return Setup(profile="offline", model=model, pointing_model=model, device="cpu",
                 results_dir=folder, faithfulness_images=images, pointing_images={},
                 methods={"I": ("gradcam", "fdcam"), "II": (), "III": (), "IV": ()},
                 heavy_limits={"faithfulness": None, "pointing": None}, step_fraction=0.1)


def test_blank_rows_are_the_curves_of_a_zero_map_in_row_major_order(tmp_path: Path) -> None:
    setup = tiny_setup(tmp_path / "3")  # a folder named by the layer: the file goes beside it
    path = blank_maps.run_blank_maps(setup, engine="eager")
    assert path == tmp_path / "blank_map.csv"
    rows = read_results(path).set_index("image")
    assert list(rows.index) == ["i0", "i1", "i2"] and set(rows["method"]) == {"blank"}
    assert rows["error"].isna().all()
    network = setup.model.model
    for image_id, x in setup.faithfulness_images:
        target = int(network(x[None]).argmax())
        # The literal: pixels inserted / deleted top row first, left to right.
        ranks = torch.arange(144.0).view(1, 12, 12)
        literal = insertion_deletion_curves(network, x[None], -ranks, target, step_fraction=0.1)
        assert rows.loc[image_id, "target"] == target
        assert abs(rows.loc[image_id, "insertion"] - literal.insertion_auc.item()) < 1e-7
        assert abs(rows.loc[image_id, "deletion"] - literal.deletion_auc.item()) < 1e-7
    # Another layer of the same network shares the file (a blank map has no layer).
    other = tiny_setup(tmp_path / "1", layer="1")
    assert blank_maps.run_blank_maps(other, ["i0"], engine="eager") == path
    assert len(read_results(path)) == 3


def test_counts_find_the_rows_equal_to_the_blank_map(tmp_path: Path) -> None:
    setup = tiny_setup(tmp_path)  # a folder not named by the layer: the file goes inside
    assert blank_maps.blank_map_counts(setup).empty  # no rows of either kind yet
    assert blank_maps.without_blank_maps(setup).empty
    assert blank_maps.blank_map_table(blank_maps.blank_map_counts(setup),
                                      blank_maps.without_blank_maps(setup)).empty
    header = ",".join(result_columns(False, content=False))
    blank = {"i0": (0.30, 0.20), "i1": (0.40, 0.10), "i2": (0.25, 0.15)}
    (tmp_path / "blank_map.csv").write_text(header + "\n" + "".join(
        f"{i},blank,1,0.9,{a!r},{b!r},{a - b!r},\n" for i, (a, b) in blank.items()))
    rows = {("i0", "gradcam"): blank["i0"], ("i1", "gradcam"): blank["i1"],
            ("i2", "gradcam"): (0.6, 0.1),
            ("i0", "fdcam"): (0.30, 0.21),  # insertion equal, deletion not: a real map
            ("i1", "fdcam"): (0.5, 0.1), ("i2", "fdcam"): (0.25 + 5e-7, 0.15),
            ("i3", "fdcam"): (0.3, 0.2)}  # i3 has no blank row: not counted
    setup.faithfulness_csv.write_text(header + "\n" + "".join(
        f"{i},{m},1,0.9,{a!r},{b!r},{a - b!r},\n" for (i, m), (a, b) in rows.items()))
    table = blank_maps.blank_map_counts(setup).set_index("method")
    assert list(table.index) == ["gradcam", "fdcam"]
    assert list(table["n"]) == [3, 3] and list(table["blank"]) == [2, 1]
    assert table.loc["gradcam", "share"] == 2 / 3
    assert table.loc["gradcam", "label"] == "Grad-CAM"
    only = blank_maps.blank_map_counts(setup, ["fdcam"])
    assert list(only["method"]) == ["fdcam"]
    sentence = blank_maps.blank_map_sentence(table.reset_index(), "On tiny at `3`")
    assert sentence.startswith("On tiny at `3`, the map is blank — zero at every pixel — for "
                               "Grad-CAM on 2 of 3 photos (67%) and FD-CAM on 1 of 3 photos "
                               "(33%). ")
    none = table.reset_index().assign(blank=0, share=0.0)
    assert blank_maps.blank_map_sentence(none, "Here") == (
        "Here, no method's map was blank on any of the 3 photos.")
    assert "not been computed" not in blank_maps.blank_map_sentence(none, "Here")
    assert blank_maps.blank_map_sentence(none.iloc[:0], "Here").endswith("computed yet.")


def test_a_setup_that_reads_rows_computes_none(tmp_path: Path) -> None:
    setup = tiny_setup(tmp_path)
    setup.run_missing = False
    assert not blank_maps.run_blank_maps(setup, engine="eager").exists()


def test_without_blank_maps_pairs_only_the_images_where_neither_map_is_blank(
        tmp_path: Path) -> None:
    setup = tiny_setup(tmp_path)
    setup.faithfulness_images = [(f"p{k:02d}", torch.zeros(3, 12, 12)) for k in range(30)]
    header = ",".join(result_columns(False, content=False))
    blank_lines, rows = [], []
    for k in range(30):
        image = f"p{k:02d}"
        blank_lines.append(f"{image},blank,1,0.9,0.3,0.2,{0.3 - 0.2!r},")
        # Grad-CAM blank on the first 20 photos (FD-CAM far ahead there), 0.02 behind
        # FD-CAM's overall on the other 10 (± 0.001 per photo).
        fd = (0.6, 0.1)
        gc = (0.3, 0.2) if k < 20 else (0.6 - 0.02 + (0.001 if k % 2 else -0.001), 0.1)
        rows.append(f"{image},fdcam,1,0.9,{fd[0]!r},{fd[1]!r},{fd[0] - fd[1]!r},")
        rows.append(f"{image},gradcam,1,0.9,{gc[0]!r},{gc[1]!r},{gc[0] - gc[1]!r},")
    (tmp_path / "blank_map.csv").write_text(header + "\n" + "\n".join(blank_lines) + "\n")
    setup.faithfulness_csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    counts = blank_maps.blank_map_counts(setup).set_index("method")
    assert counts.loc["gradcam", "blank"] == 20 and counts.loc["fdcam", "blank"] == 0
    table = blank_maps.without_blank_maps(setup)
    assert list(table["method"]) == ["gradcam"]  # FD-CAM has no blank map: not a rival row
    row = table.iloc[0]
    assert row["n"] == 10 and abs(row["fdcam_minus_rival"] - 0.02) < 1e-9
    assert row["ci_low"] > 0 and row["verdict"] == "too few images"  # 10 < 20 photos
    shown = blank_maps.blank_map_table(counts.reset_index(), table)
    assert list(shown.columns) == ["method", "photos", "blank maps", "share",
                                   "FD-CAM − it, overall, without blank maps"]
    shown = shown.set_index("method")
    last = "FD-CAM − it, overall, without blank maps"
    assert shown.loc["Grad-CAM", last].startswith("+0.020 [")
    assert shown.loc["Grad-CAM", last].endswith(", n = 10")
    assert shown.loc["FD-CAM", last] == "—" and shown.loc["Grad-CAM", "share"] == "67%"
    assert blank_maps.without_blank_sentence(table).startswith(
        "In overall AUC on the photos where neither map is blank, too few photos are left to "
        "decide against Grad-CAM (+0.020 [")
    assert blank_maps.without_blank_sentence(table.iloc[:0]) == ""
    # The pages' paragraph: both sentences, naming the network and layer.
    from fdcam.paper.figure_findings import model_at_layer

    summary = blank_maps.blank_map_summary(setup)
    assert summary.startswith(f"On {model_at_layer(setup.model)}, the map is blank — zero at "
                              f"every pixel — for Grad-CAM on 20 of 30 photos (67%). ")
    assert summary.endswith(blank_maps.without_blank_sentence(table))


def test_the_page_tells_no_photo_left_from_no_blank_map() -> None:
    import pandas as pd

    counts = pd.DataFrame({"method": ["gradcam", "fdcam"], "label": ["Grad-CAM", "FD-CAM"],
                           "n": [300, 300], "blank": [300, 1], "share": [1.0, 1 / 300]})
    shown = blank_maps.blank_map_table(counts, pd.DataFrame(columns=["method"]))
    assert list(shown.iloc[:, 4]) == ["no photo left", "no photo left"]
    assert list(shown["share"]) == ["100%", "<1%"]
    none = counts.assign(blank=[0, 0], share=[0.0, 0.0])
    assert list(blank_maps.blank_map_table(none, pd.DataFrame(columns=["method"])).iloc[:, 4]) \
        == ["—", "—"]


def test_the_pointing_game_records_blank_maps_as_it_makes_them(tmp_path: Path) -> None:
    from fdcam.paper import runs, setups

    small = setups.setup("smoke", n_mosaics=1, results_dir=tmp_path / "run")
    runs.run_pointing(small, ["gradcam"])
    rows = runs.pointing_results(small)
    flags = blank_maps.pointing_blank_rows(small)
    # One flag per pointing row, each the literal check of its map: zero everywhere.
    assert len(flags) == len(rows) > 0
    mosaic = next(iter(small.pointing_images))
    x = image_tensor(small.pointing_images[mosaic].image)[None]
    from fdcam.baselines import make_explainer

    explainer = make_explainer("gradcam", small.pointing_model)
    for target, blank in zip(flags["target"], flags["blank"], strict=True):
        saliency = explainer(x, target=[int(target)]).saliency
        assert blank == bool((saliency == 0).all())
    # A flag lost (rows made before the keeper, or a kill) is made again, the same.
    before = flags.sort_values("target")["blank"].tolist()
    blank_maps.pointing_blank_csv(small).unlink()
    blank_maps.run_pointing_blank_maps(small)
    again = blank_maps.pointing_blank_rows(small).sort_values("target")["blank"].tolist()
    assert again == before
    small.run_missing = False  # a setup that reads rows makes none
    blank_maps.pointing_blank_csv(small).unlink()
    blank_maps.run_pointing_blank_maps(small)
    assert not blank_maps.pointing_blank_csv(small).exists()


def test_pointing_blank_counts_and_the_game_without_them(tmp_path: Path) -> None:
    setup = tiny_setup(tmp_path)
    setup.pointing_images = {f"m{k:02d}": None for k in range(30)}  # type: ignore[misc]
    setup.methods = {**setup.methods, "II": ("gradcam", "fdcam")}
    header = ",".join(result_columns(True, content=False))
    lines, flags = [header], []
    for k in range(30):
        image = f"m{k:02d}"
        # FD-CAM hits every pair; Grad-CAM's map is blank on the first 10 (a miss each)
        # and hits the others but the six with k % 3 == 0.
        lines.append(f"{image},fdcam,1,0.5,,,,True,True,False,")
        hit = k >= 10 and k % 3 != 0
        lines.append(f"{image},gradcam,1,0.5,,,,{hit},{hit},False,")
        flags += [(image, "fdcam", 1, False), (image, "gradcam", 1, k < 10)]
    setup.pointing_csv.write_text("\n".join(lines) + "\n")
    blank_maps._append_flags(blank_maps.pointing_blank_csv(setup), flags)
    counts = blank_maps.pointing_blank_counts(setup).set_index("method")
    assert counts.loc["gradcam", ["n", "blank"]].tolist() == [30, 10]
    assert counts.loc["gradcam", "hit_rate"] == pytest.approx(100 * 14 / 20)
    assert counts.loc["fdcam", "blank"] == 0
    without = blank_maps.pointing_without_blank(setup)
    assert without["method"].tolist() == ["gradcam"]
    assert without["n"].iloc[0] == 20
    assert without["fdcam_minus_rival"].iloc[0] == pytest.approx(100 * 6 / 20)
    sentence = blank_maps.pointing_blank_sentence(counts.reset_index(), without, "On t")
    assert sentence.startswith("On t, the pointing map is blank — zero at every pixel — for "
                               "Grad-CAM on 10 of 30 pairs (33%). A blank map's maximum is")
    assert "FD-CAM minus each, in points, on the pairs where neither map is blank: Grad-CAM " \
           "+30.0 [" in sentence
    assert blank_maps.pointing_blank_sentence(counts.iloc[:0], without.iloc[:0], "On t") == (
        "On t, no pointing map has been checked for blankness yet.")
    shown = blank_maps.pointing_blank_table(counts.reset_index()).set_index("method")
    assert shown.loc["Grad-CAM"].tolist() == [30, 10, "33%", "70.0"]
    assert shown.loc["FD-CAM"].tolist() == [30, 0, "0%", "100.0"]
    html = report.styled_blank_maps(shown.reset_index(), name="p b").to_html()
    assert 'id="T_p-b"' in html and "blank<br>maps" in html and ">70.0<" in html
    assert "#T_p-b td.col0 {\n  text-align: left;" in html  # the method column
    with pytest.raises(FdcamError, match="styled_blank_maps needs"):
        report.styled_blank_maps(counts)  # the method is the index here, not a column


def test_pointing_flags_survive_a_cut_line_an_empty_file_and_two_headers(
        tmp_path: Path) -> None:
    setup = tiny_setup(tmp_path)
    keeper = blank_maps.PointingBlankKeeper(setup)
    path = blank_maps.pointing_blank_csv(setup)
    path.write_bytes(b"")  # a kill between creating the file and writing to it
    maps = torch.zeros(2, 4, 4)
    maps[1, 2, 3] = 0.7  # class 5's map is blank, class 6's is not
    keeper("m,1", "gradcam", [5, 6], maps)  # an id with a comma is quoted
    flags = blank_maps._read_flags(setup)
    assert flags.values.tolist() == [["m,1", "gradcam", 5, True], ["m,1", "gradcam", 6, False]]
    with path.open("ab") as handle:  # a second writer's header, then a line cut by a kill
        handle.write(b"image,method,target,blank\nm2,fdcam,3,Tr")
    keeper("m2", "fdcam", [4], torch.ones(1, 4, 4))
    flags = blank_maps._read_flags(setup)
    # The cut row is skipped (its map is checked again), the next one is whole.
    assert flags.values.tolist() == [["m,1", "gradcam", 5, True],
                                     ["m,1", "gradcam", 6, False], ["m2", "fdcam", 4, False]]
