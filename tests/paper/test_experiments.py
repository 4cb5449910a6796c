"""The experiment layer: setup per profile, bad parameters, runs, and the table builders."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from fdcam import paths
from fdcam.errors import FdcamError
from fdcam.evaluation.results import result_columns
from fdcam.evaluation.results_file import read_results
from fdcam.paper import ablations, figure_data, runs, settings, setups, tables, verdicts
from fdcam.paper.paper_tables import paper_table
from fdcam.paper.setups import Setup

# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return setups.setup("smoke", n_images=1, results_dir=tmp_path_factory.mktemp("smoke"))


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from scripts.standins import write_standins

    return write_standins(tmp_path_factory.mktemp("standins"), n_imagenet=3, n_voc_train=1,
                          n_voc_val=2)


def one_line_error(match: str, **kwargs: object) -> str:
    with pytest.raises(FdcamError, match=match) as caught:
        setups.setup(**kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------- setup


def test_smoke_setup(smoke: Setup) -> None:
    assert smoke.profile == "smoke"
    assert smoke.model is smoke.pointing_model
    assert smoke.model.name == "efficientnet-lite0"
    assert smoke.model.input_size == (112, 112)
    assert [i for i, _ in smoke.faithfulness_images] == ["camera"]
    assert all(x.shape == (3, 112, 112) for _, x in smoke.faithfulness_images)
    assert list(smoke.pointing_images) == ["mosaic00"]
    mosaic = smoke.pointing_images["mosaic00"]
    assert len(mosaic.boxes) == 4  # four photos of four classes
    corners = sorted(tuple(b.boxes[0].tolist()) for b in mosaic.boxes.values())
    assert corners == [(0, 0, 55, 55), (0, 56, 55, 111), (56, 0, 111, 55), (56, 56, 111, 111)]
    assert all(not b.difficult.any() for b in mosaic.boxes.values())
    assert set(smoke.faithfulness_methods) <= set(settings.TABLE_METHODS["I"]) | set(
        settings.TABLE_METHODS["III"]) | set(settings.TABLE_METHODS["IV"])
    assert not set(smoke.faithfulness_methods) & set(settings.HEAVY_METHODS)
    assert smoke.describe().loc["faithfulness images", "value"] == "1"
    assert setups.setup("smoke", n_images=1).describe().loc["results", "value"] == (
        "a temporary folder")


def test_offline_setup_and_heavy_limits() -> None:
    offline = setups.setup("offline", n_mosaics=2, results_dir="data/results/offline-x")
    assert offline.results_dir == paths.REPO_ROOT / "data/results/offline-x"
    assert len(offline.faithfulness_images) == 5
    assert list(offline.pointing_images) == ["mosaic00", "mosaic01"]
    assert offline.model.input_size == (224, 224)
    assert offline.methods == settings.TABLE_METHODS
    assert offline.images_for("scorecam", "faithfulness") == offline.image_ids("faithfulness")
    assert offline.images_for("scorecam", "pointing") == ["mosaic00", "mosaic01"]
    assert setups.setup("offline", n_mosaics=2, heavy_limits={"pointing": 0}).images_for(
        "scorecam", "pointing") == []
    assert offline.images_for("gradcam", "pointing") == ["mosaic00", "mosaic01"]
    default = setups.setup("offline", n_images=2, n_mosaics=3, seed=1,
                                heavy_limits={"pointing": 1})
    assert default.results_dir == settings.RESULTS_ROOT / "offline-seed1"
    assert default.images_for("scorecam", "pointing") == ["mosaic00"]
    # Ablation-CAM is cheap on EfficientNet-Lite0 (head-only passes): never limited offline.
    assert default.images_for("ablationcam", "pointing") == ["mosaic00", "mosaic01", "mosaic02"]
    assert setups.setup("offline", n_images=1).results_dir == (
        settings.RESULTS_ROOT / "offline")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"profile": "full"}, "unknown profile 'full'"),
    ({"profile": "offline", "n_images": 0}, "n_images must be an int >= 1"),
    ({"profile": "offline", "n_images": 6}, "n_images must be between 1 and 5"),
    ({"profile": "offline", "n_images": 2.5}, "n_images"),
    ({"profile": "offline", "n_mosaics": 121}, "n_mosaics must be between 1 and 120"),
    ({"profile": "offline", "device": "gpu"}, "device must be 'cpu' or 'cuda'"),
    ({"profile": "offline", "seed": -1}, "seed must be an int >= 0"),
    ({"profile": "smoke", "dry_run": True}, "dry_run applies to the paper profile only"),
    ({"profile": "offline", "heavy_limits": {"images": 1}}, "heavy_limits has unknown key"),
    ({"profile": "paper"}, "paper profile needs imagenet_val"),
])
def test_bad_parameters_are_one_line_errors(kwargs: dict, match: str) -> None:
    one_line_error(match, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_refused() -> None:
    one_line_error("no CUDA device is available", profile="offline", device="cuda")


def test_paper_profile_parameters_are_checked(tmp_path: Path, standins) -> None:  # type: ignore[no-untyped-def]
    trees = {"imagenet_val": standins.imagenet_val, "voc_root": standins.voc_root}
    missing = tmp_path / "nowhere"
    one_line_error("imagenet_val .*nowhere is not a folder; expected the ILSVRC2012 val",
                   profile="paper", **{**trees, "imagenet_val": missing})
    one_line_error("paper profile needs voc_root", profile="paper",
                   imagenet_val=standins.imagenet_val)
    one_line_error("voc_root .* is not a folder", profile="paper",
                   **{**trees, "voc_root": missing})
    one_line_error("paper profile needs voc_checkpoint: the VGG16 fine-tuned", profile="paper",
                   **trees)
    one_line_error("voc_checkpoint .* is not a file", profile="paper", **trees,
                   voc_checkpoint=missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error("^imagenet_val: .*neither class subfolders", profile="paper",
                   **{**trees, "imagenet_val": empty}, dry_run=True)
    one_line_error("^voc_root: .*is not a VOC2007 tree", profile="paper",
                   **{**trees, "voc_root": empty}, dry_run=True, n_images=2)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    one_line_error("^voc_checkpoint: .*not a readable checkpoint", profile="paper", **trees,
                   voc_checkpoint=garbage, dry_run=True, n_images=2)
    one_line_error("^imagenet_val: 1997 of the 2000 images in the manifest", profile="paper",
                   **trees, dry_run=True)
    one_line_error("^imagenet_val: 1 of the 4 images in the manifest", profile="paper",
                   **trees, n_images=4, dry_run=True)


def test_paper_dry_run_on_stand_in_trees(tmp_path: Path, standins) -> None:  # type: ignore[no-untyped-def]
    paper = setups.setup("paper", imagenet_val=standins.imagenet_val,
                              voc_root=standins.voc_root, n_images=2, dry_run=True,
                              results_dir=tmp_path / "dry")
    assert paper.dry_run and paper.model.name == "vgg16"
    assert paper.pointing_model.categories[0] == "aeroplane"
    assert len(paper.pointing_model.categories) == 20
    assert [i for i, _ in paper.faithfulness_images] == list(standins.imagenet_names[:2])
    x = paper.faithfulness_images[0][1]()  # type: ignore[operator]
    assert x.shape == (3, 112, 112)  # a dry run's images: a quarter of the pixels
    assert list(paper.pointing_images) == list(standins.voc_val_ids)
    for image_id in paper.pointing_images:
        item = paper.pointing_images[image_id]
        assert item.image().shape == (3, 112, 112)  # type: ignore[operator]
        for boxes in item.boxes.values():  # original pixels, with the image's size
            assert boxes.image_size is not None
            height, width = boxes.image_size
            assert boxes.boxes.min() >= 0 and (boxes.boxes[:, 2] < width).all()
            assert (boxes.boxes[:, 3] < height).all()
            assert boxes.difficult is not None and len(boxes.difficult) == len(boxes.boxes)
    # A dry run proves the wiring: heavy methods on one image per run, coarse curves.
    assert paper.heavy_limits == {"faithfulness": 1, "pointing": 1}
    assert paper.images_for("scorecam", "faithfulness") == list(standins.imagenet_names[:1])
    assert paper.images_for("gradcam", "faithfulness") == list(standins.imagenet_names[:2])
    assert paper.step_fraction == settings.DRY_RUN_STEP_FRACTION
    assert setups._results_dir("paper", None, True, 0) == (
        settings.RESULTS_ROOT / "paper-dry-run")
    # The VOC path end to end: a cheap method, every annotated class, no curves.
    first = next(iter(paper.pointing_images))
    paper.pointing_images = {first: paper.pointing_images[first]}
    path = runs.run_pointing(paper, ["gradcam"])
    df = read_results(path)
    assert set(df["target"]) == set(paper.pointing_images[first].boxes)
    assert df["error"].isna().all() and df["hit"].notna().all()
    assert df["insertion"].isna().all()


def test_a_checkpoint_of_another_arch_names_voc_checkpoint(tmp_path: Path, standins) -> None:  # type: ignore[no-untyped-def]
    from fdcam.paper.finetune import finetune_voc

    checkpoint = finetune_voc(standins.voc_root, tmp_path / "run", epochs=1, arch="tiny-cnn",
                              pretrained=False, batch_size=1, image_size=32, max_steps=1)
    one_line_error("^voc_checkpoint: .*not vgg16", profile="paper",
                   imagenet_val=standins.imagenet_val, voc_root=standins.voc_root,
                   voc_checkpoint=checkpoint, n_images=1)


# ------------------------------------------------------------------------------------- runs


def test_runs_resume_keep_figures_and_feed_the_tables(smoke: Setup) -> None:
    path = runs.run_faithfulness(smoke, ["gradcam", "fdcam"])
    assert path == smoke.faithfulness_csv
    first = path.read_bytes()
    assert runs.run_faithfulness(smoke, ["gradcam", "fdcam"]).read_bytes() == first
    df = read_results(path)
    assert len(df) == 2 and df["error"].isna().all()
    panels = figure_data.faithfulness_curves(smoke, n=1, methods=["gradcam"])
    assert [p.image_id for p in panels] == ["camera"]
    panel = panels[0]
    assert set(panel.insertion) == {"gradcam", "fdcam"}
    row = df[(df["image"] == "camera") & (df["method"] == "fdcam")].iloc[0]
    from fdcam.evaluation.faithfulness import auc

    assert float(auc(panel.insertion["fdcam"])) == pytest.approx(row["insertion"], abs=1e-6)
    assert panel.saliency.shape == (112, 112) and panel.pixels.shape == (3, 112, 112)
    assert panel.class_name == "tripod"

    pointing = runs.run_pointing(smoke, ["gradcam", "fdcam"])
    rows = read_results(pointing)
    assert len(rows) == 8 and rows["hit"].notna().all()
    maps = figure_data.discriminability_maps(smoke, methods=["gradcam", "fdcam"])
    assert maps.image_id == "mosaic00" and len(maps.class_names) == 4
    assert maps.maps["fdcam"].shape == (4, 112, 112)
    table = tables.table_2(smoke)
    # every method of the paper's Table II has a row; ours is filled where it was run
    assert set(table.loc[table["ours"].notna(), "method"]) == {"gradcam", "fdcam"}


def test_shards_merge_into_the_unsharded_table(tmp_path: Path) -> None:
    small = setups.setup("smoke", n_mosaics=2, results_dir=tmp_path / "sharded")
    whole = dataclasses.replace(small, results_dir=tmp_path / "whole")
    for i in range(2):
        shard_path = runs.run_pointing(small, ["gradcam"], shard=(i, 2))
        assert shard_path.name == f"pointing.shard{i}of2.csv"
    assert runs.merge_shards(small) == [small.pointing_csv]
    runs.run_pointing(whole, ["gradcam"])
    pd.testing.assert_frame_equal(read_results(small.pointing_csv),
                                  read_results(whole.pointing_csv).sort_values(
                                      ["image", "method", "target"]).reset_index(drop=True))
    with pytest.raises(FdcamError, match="shard i/n needs 0 <= i < n"):
        runs.run_pointing(small, ["gradcam"], shard=(2, 2))
    with pytest.raises(FdcamError, match="unknown method 'nope'"):
        runs.run_faithfulness(small, ["nope"])


def test_combination_check_measures_the_rescaling(smoke: Setup) -> None:
    check = ablations.combination_check(smoke, n=1)
    assert check["max |Δmap| exp-shifted vs exp"].iloc[0] < 1e-5
    assert check["max |Δmap| Eq. 10 vs exp"].iloc[0] > 1e-2


# ------------------------------------------------------------------- tables on a made-up CSV


def made_up_setup(tmp_path: Path) -> Setup:
    """A Setup whose tables read a hand-made CSV; models and images are never touched."""
    ids = ["a", "b", "c"]
    return Setup(profile="offline", model=None, pointing_model=None,  # type: ignore[arg-type]
                 device="cpu", results_dir=tmp_path,
                 faithfulness_images=[(i, torch.zeros(3, 2, 2)) for i in ids],
                 pointing_images={i: None for i in ids},  # type: ignore[misc]
                 methods={"I": ("gradcam", "scorecam", "fdcam"), "II": ("gradcam", "fdcam"),
                          "III": ("fdcam-g-off", "fdcam"),
                          "IV": ("fdcam-exp", "fdcam-exp-shifted", "fdcam")},
                 heavy_limits={"faithfulness": 2, "pointing": None})


def write_faithfulness(setup: Setup, values: dict[tuple[str, str], tuple[float, float]]) -> None:
    lines = [",".join(result_columns(False, content=False))]
    for (image, method), (ins, dele) in values.items():
        lines.append(f"{image},{method},1,0.9,{ins!r},{dele!r},{ins - dele!r},")
    setup.faithfulness_csv.write_text("\n".join(lines) + "\n")


def test_table_1_means_differences_and_subsets(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)
    values = {("a", "gradcam"): (0.5, 0.1), ("b", "gradcam"): (0.7, 0.3),
              ("c", "gradcam"): (0.6, 0.2), ("z", "gradcam"): (0.0, 1.0),  # z: not ours
              ("a", "fdcam"): (0.6, 0.1), ("b", "fdcam"): (0.8, 0.2), ("c", "fdcam"): (0.7, 0.1),
              ("a", "scorecam"): (0.4, 0.1), ("b", "scorecam"): (0.4, 0.1),
              ("c", "scorecam"): (0.9, 0.9)}  # c: beyond the heavy limit of 2
    write_faithfulness(setup, values)
    table = tables.table_1(setup)
    assert list(table.columns) == ["method", "label", "metric", "paper", "ours", "difference",
                                   "ci_low", "ci_high", "paper_in_ci", "n"]
    assert table["method"].tolist() == ["gradcam"] * 3 + ["scorecam"] * 3 + ["fdcam"] * 3
    assert table["metric"].tolist() == ["insertion", "deletion", "overall"] * 3
    cell = table.set_index(["method", "metric"])
    assert cell.loc[("gradcam", "insertion"), "ours"] == pytest.approx(0.6)
    assert cell.loc[("gradcam", "insertion"), "n"] == 3
    assert cell.loc[("scorecam", "deletion"), "ours"] == pytest.approx(0.1)
    assert cell.loc[("scorecam", "deletion"), "n"] == 2
    paper = paper_table("I").set_index(["method", "metric"])["value"]
    assert cell.loc[("fdcam", "overall"), "paper"] == paper[("fdcam", "overall")]
    assert cell.loc[("fdcam", "overall"), "difference"] == pytest.approx(
        0.5666666 - paper[("fdcam", "overall")], abs=1e-6)
    assert cell.loc[("gradcam", "insertion"), "ci_low"] <= 0.6 <= cell.loc[
        ("gradcam", "insertion"), "ci_high"]
    assert cell.loc[("fdcam", "insertion"), "label"] == "FD-CAM"

    paired = tables.paired_vs_fdcam(setup, "I").set_index(["method", "metric"])
    assert paired.loc[("gradcam", "insertion"), "mean_difference"] == pytest.approx(-0.1)
    assert paired.loc[("gradcam", "insertion"), "fdcam_better"]  # −0.1 on every image
    assert paired.loc[("scorecam", "insertion"), "n"] == 2
    wide = tables.side_by_side(table)
    assert wide.loc["FD-CAM", "insertion"] == pytest.approx(0.7)
    assert wide.loc["FD-CAM", "insertion (paper)"] == pytest.approx(0.553)
    assert wide.loc["Score-CAM", "n"] == 2
    text = verdicts.findings(table, tables.paired_vs_fdcam(setup, "I"))
    assert "insertion: best FD-CAM; FD-CAM rank 1 of 3 (paper: 1)" in text
    assert "Grad-CAM insertion: -0.100 [-0.100, -0.100], FD-CAM better" in text
    assert "deletion: best Score-CAM (on 2 of 3);" in text  # a heavy method on fewer images
    assert "not every method on the same images: Score-CAM 2 (the others 3)" in text
    # A method without rows yet is named as such, not listed among those on fewer images.
    none_yet = table.assign(n=table["n"].where(table["method"] != "scorecam", 0))
    text = verdicts.findings(none_yet, None)
    assert "no images yet for Score-CAM: the table and the paired differences leave them out" \
        in text
    assert "not every method on the same images" not in text
    ranks = tables.ranks(table)
    assert ranks.loc["FD-CAM", "insertion ours"] == 1
    assert ranks.loc["Score-CAM", "deletion ours"] == 1  # lowest deletion is best
    assert ranks.loc["FD-CAM", "insertion paper"] == 1


def test_tables_3_and_4(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)
    values = {(i, m): (0.5 + k / 10, 0.1) for i in "abc"
              for k, m in enumerate(("fdcam-g-off", "fdcam-exp", "fdcam-exp-shifted",
                                     "fdcam"))}
    write_faithfulness(setup, values)
    table3 = tables.table_3(setup)
    assert table3["method"].unique().tolist() == ["fdcam-g-off", "fdcam"]
    table4 = tables.table_4(setup)
    assert table4["method"].unique().tolist() == ["fdcam-exp", "fdcam-exp-shifted", "fdcam"]
    assert table4["metric"].tolist() == ["insertion", "deletion", "overall"] * 3
    rows = table4.set_index(["method", "metric"])
    # The label's formula is compared with the paper's third row, like Eq. 10; the row's
    # value is printed once, on Eq. 10's row.
    assert rows.loc[("fdcam", "overall"), "paper"] == pytest.approx(0.4533)
    assert pd.isna(rows.loc[("fdcam-exp-shifted", "overall"), "paper"])
    assert rows.loc[("fdcam-exp-shifted", "overall"), "difference"] == pytest.approx(
        (0.7 - 0.1) - 0.4533)
    assert "Eq. 10" in rows.loc[("fdcam", "overall"), "rho"]
    # Every CI here is a single value, so none holds the paper's; 9 cells show a paper
    # value, and the findings say that 3 more compare with one printed on another row.
    assert "paper's value inside our 95 % CI: 0 of 9 (3 of them compare a row with the " \
        "paper's value printed on another row)" in verdicts.findings(table4, None)
    check = pd.DataFrame([{"image": "a", "max |Δω| (shifted·e^0.5 − exp)": 1e-7,
                           "max |Δmap| exp-shifted vs exp": 1e-6,
                           "max |Δmap| Eq. 10 vs exp": 0.4,
                           "Δinsertion Eq. 10 − exp": 0.1}])
    verdict = ablations.combination_verdict(check, table4)
    assert "label's maps equal a*e^s maps (max |diff| < 1e-05): yes" in verdict
    assert "is Eq. 10 (fdcam)" in verdict


def test_table_2_in_percent_with_the_tol15_variant(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)
    lines = [",".join(result_columns(True, content=False))]
    # gradcam: a hits both classes, b misses class 2 (but within 15 px), c hits class 1.
    hits = {("a", 1): (True, True), ("a", 2): (True, True), ("b", 2): (False, True),
            ("c", 1): (True, True)}
    for (image, target), (hit, tol) in hits.items():
        lines.append(f"{image},gradcam,{target},0.5,,,,{hit},{tol},False,")
        lines.append(f"{image},fdcam,{target},0.5,,,,True,True,False,")
    lines.append("z,fdcam,1,0.5,,,,False,False,False,")  # not an image of the setup
    setup.pointing_csv.write_text("\n".join(lines) + "\n")
    table = tables.table_2(setup).set_index(["method", "metric"])
    assert table.loc[("gradcam", "pointing_game"), "ours"] == pytest.approx(75.0)
    assert table.loc[("gradcam", "pointing_game"), "paper"] == pytest.approx(81.20)
    assert table.loc[("gradcam", "pointing_game"), "n"] == 4
    assert table.loc[("gradcam", "pointing_game_tol15"), "ours"] == pytest.approx(100.0)
    assert math.isnan(table.loc[("gradcam", "pointing_game_tol15"), "paper"])
    assert table.loc[("fdcam", "pointing_game"), "ours"] == pytest.approx(100.0)
    low, high = table.loc[("gradcam", "pointing_game"), ["ci_low", "ci_high"]]
    assert 0 <= low <= 75 <= high <= 100
    paired = tables.paired_vs_fdcam(setup, "II")
    assert paired["metric"].tolist() == ["pointing_game"]
    assert paired["mean_difference"].iloc[0] == pytest.approx(-25.0)


def test_hard_pairs_are_each_images_least_probable_class(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)
    lines = [",".join(result_columns(True, content=False))]
    # a: classes 1 (p 0.6), 2 (p 0.1), 3 (p 0.3) -> 2 is hard; b: one class only -> none;
    # c: classes 1 (0.2), 2 (0.7) -> 1 is hard. FD-CAM hits every hard pair, Grad-CAM none.
    pairs = {("a", 1): 0.6, ("a", 2): 0.1, ("a", 3): 0.3, ("b", 1): 0.9, ("c", 1): 0.2,
             ("c", 2): 0.7}
    hard = {("a", 2), ("c", 1)}
    for (image, target), p in pairs.items():
        for method in ("gradcam", "fdcam"):
            hit = (method == "fdcam") == ((image, target) in hard)
            lines.append(f"{image},{method},{target},{p},,,,{hit},{hit},False,")
    setup.pointing_csv.write_text("\n".join(lines) + "\n")
    rows = runs.pointing_results(setup, "hard")
    assert set(zip(rows["image"], rows["target"], strict=True)) == hard
    assert len(rows) == 4  # two pairs, two methods
    table = tables.table_2(setup, pairs="hard").set_index(["method", "metric"])
    assert table.loc[("fdcam", "pointing_game"), "ours"] == pytest.approx(100.0)
    assert table.loc[("gradcam", "pointing_game"), "ours"] == pytest.approx(0.0)
    assert table.loc[("gradcam", "pointing_game"), "n"] == 2
    assert table["paper"].isna().all() and table["paper_in_ci"].isna().all()  # none for it
    paired = tables.paired_vs_fdcam(setup, "II", pairs="hard")
    assert paired["mean_difference"].iloc[0] == pytest.approx(-100.0)
    assert paired["n"].iloc[0] == 2
    everything = tables.table_2(setup).set_index(["method", "metric"])
    assert everything.loc[("gradcam", "pointing_game"), "n"] == 6
    assert everything.loc[("fdcam", "pointing_game"), "paper"] == pytest.approx(82.4, abs=5)
    verdict = verdicts.claim_verdicts(setup, n_resamples=200, tables=["II hard"],
                                      min_images=1)
    assert verdict["n"].tolist() == [2]
    # Percentage points, written to one decimal as Table II prints them.
    assert verdict["evidence"].tolist() == ["Grad-CAM -100.0 [-100.0, -100.0]"]
    with pytest.raises(FdcamError, match="pairs must be one of all, hard; got 'easy'"):
        runs.pointing_results(setup, "easy")


def test_tables_before_any_run_say_what_to_do(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)
    with pytest.raises(FdcamError, match=r"run runs.run_faithfulness\(setup\) first"):
        tables.table_1(setup)
    with pytest.raises(FdcamError, match=r"run runs.run_pointing\(setup\) first"):
        tables.table_2(setup)
    with pytest.raises(FdcamError, match="unknown table 'V'"):
        runs.table_methods(setup, "V")


def test_freezing_the_body_keeps_the_maps_bit_for_bit(smoke: Setup) -> None:
    from fdcam.baselines import make_explainer
    from fdcam.models import load_model

    assert not next(smoke.model.model.parameters()).requires_grad  # the stem is frozen
    assert smoke.model.model._fc.weight.requires_grad
    fresh = load_model("efficientnet-lite0")
    assert all(p.requires_grad for p in fresh.model.parameters())
    x = smoke.faithfulness_images[0][1][None]  # type: ignore[index]
    for method in ("gradcam", "layercam"):
        frozen = make_explainer(method, smoke.model)(x, target=[872]).saliency
        assert torch.equal(frozen, make_explainer(method, fresh)(x, target=[872]).saliency)


def _sample_folder(root: Path, n: int = 8) -> Path:
    """n tiny photos named like the imagenet-sample repository's (the first n classes)."""
    from PIL import Image

    from fdcam.evaluation.imagenet import imagenet_wnids

    root.mkdir(parents=True)
    for k, wnid in enumerate(imagenet_wnids()[:n]):
        Image.new("RGB", (40, 30), (20 * k, 255 - 20 * k, 90)).save(root / f"{wnid}_c{k}.JPEG")
    return root


def test_imagenet_sample_profile(tmp_path: Path) -> None:
    folder = _sample_folder(tmp_path / "photos")
    made = setups.setup("imagenet-sample", imagenet_sample=folder, n_mosaics=2,
                             results_dir=tmp_path / "results")
    assert made.model.target_layer == settings.SAMPLE_LAYER == "_blocks.15._swish#2"
    assert len(made.faithfulness_images) == 8 and list(made.pointing_images) == [
        "mosaic000", "mosaic001"]
    ids = made.image_ids("faithfulness")
    assert sorted(ids) == sorted(p.stem for p in folder.iterdir()) and ids != sorted(ids)
    mosaic = made.pointing_images["mosaic001"]
    assert len(mosaic.boxes) == 4  # four classes, one quadrant each
    assert mosaic.image().shape == (3, 224, 224)  # type: ignore[operator]
    # Only the target call site's block and what follows it keep gradients (freeze_body).
    grads = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("_blocks") else "")
             for n, p in made.model.model.named_parameters() if p.requires_grad}
    assert grads == {"_blocks.15", "_conv_head", "_bn1", "_fc"}
    assert not made.run_missing  # its rows come from make evaluate-imagenet-sample
    swish = setups.setup("imagenet-sample", imagenet_sample=folder, layer="_swish",
                              n_images=2, n_mosaics=1)
    assert swish.results_dir.name == "_swish" and len(swish.faithfulness_images) == 2
    with pytest.raises(FdcamError, match="imagenet_sample: the imagenet-sample photos are not"):
        setups.setup("imagenet-sample", imagenet_sample=tmp_path / "missing")
    with pytest.raises(FdcamError, match=r"unknown layer '_blocks\.99'"):
        setups.setup("imagenet-sample", imagenet_sample=folder, layer="_blocks.99")


def test_identical_maps_are_evaluated_once(tmp_path: Path) -> None:
    from fdcam.baselines import make_explainer

    folder = _sample_folder(tmp_path / "photos", 4)
    made = setups.setup("imagenet-sample", imagenet_sample=folder, n_images=1,
                        n_mosaics=1, results_dir=tmp_path / "results", layer="_swish",
                        run_missing=True)
    path = runs.run_faithfulness(made, ["fdcam-exp-shifted"])
    assert read_results(path)["method"].tolist() == ["fdcam-exp"]  # one evaluation
    shown = runs.faithfulness_results(made)
    assert set(shown["method"]) == {"fdcam-exp", "fdcam-exp-shifted"}
    # ... because the maps are equal: ω differs by the positive factor e^-0.5.
    x = made.faithfulness_images[0][1]()[None]  # type: ignore[operator]
    maps = [make_explainer(m, made.model)(x, target=[3]).saliency
            for m in ("fdcam-exp", "fdcam-exp-shifted")]
    torch.testing.assert_close(maps[0], maps[1])


def test_claim_verdicts_by_hand(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)
    setup.heavy_limits["faithfulness"] = None
    # FD-CAM beats Grad-CAM by 0.1 in insertion on every image (confirmed unless a rival
    # wins); Score-CAM deletes better on every image (refutes the deletion claim); overall
    # differences change sign between images (undecided).
    values = {("a", "gradcam"): (0.5, 0.2), ("b", "gradcam"): (0.6, 0.1),
              ("c", "gradcam"): (0.7, 0.4),
              ("a", "scorecam"): (0.4, 0.0), ("b", "scorecam"): (0.5, 0.0),
              ("c", "scorecam"): (0.6, 0.1),
              ("a", "fdcam"): (0.6, 0.2), ("b", "fdcam"): (0.7, 0.3), ("c", "fdcam"): (0.8, 0.2),
              ("a", "fdcam-g-off"): (0.6, 0.2), ("b", "fdcam-g-off"): (0.7, 0.3),
              ("c", "fdcam-g-off"): (0.8, 0.2)}
    write_faithfulness(setup, values)
    verdict_table = verdicts.claim_verdicts(setup, n_resamples=200, min_images=1).set_index(
        ["claim", "metric"])
    table_1 = verdicts.CLAIMS[0].claim
    assert verdict_table.loc[(table_1, "insertion"), "verdict"] == "confirmed"
    assert verdict_table.loc[(table_1, "deletion"), "verdict"] == "refuted"
    assert verdict_table.loc[(table_1, "deletion"), "evidence"].startswith("Score-CAM -0.200 [")
    assert verdict_table.loc[(table_1, "overall"), "verdict"] == "undecided"
    assert verdict_table.loc[(table_1, "overall"), "paper"].startswith("“It can be observed")
    claims = {c.rivals[0] if c.rivals else c.table: c.claim for c in verdicts.CLAIMS}
    switch_on = claims["fdcam-g-off"]  # full vs g+off: identical rows, a zero difference
    assert verdict_table.loc[(switch_on, "overall"), "verdict"] == "undecided"
    # Against FD-CAM itself the evidence names the rival only (rival − FD-CAM) ...
    assert verdict_table.loc[(switch_on, "overall"), "evidence"] == (
        "FD-CAM (g+off) 0.000 [0.000, 0.000]")
    grouping = claims["fdcam-ng-off"]  # no ng+off rows yet
    assert verdict_table.loc[(grouping, "insertion"), "verdict"] == "no data"
    # ... and both sides where the claimed method is another (grouping: g+off over ng+off).
    setup.methods["III"] = ("fdcam-ng-off", "fdcam-g-off", "fdcam")
    write_faithfulness(setup, {**values, ("a", "fdcam-ng-off"): (0.5, 0.2),
                               ("b", "fdcam-ng-off"): (0.6, 0.3),
                               ("c", "fdcam-ng-off"): (0.7, 0.2)})
    regrouped = verdicts.claim_verdicts(setup, n_resamples=200, min_images=1,
                                        tables=["III"]).set_index(["claim", "metric"])
    assert regrouped.loc[(grouping, "insertion"), "evidence"] == (
        "FD-CAM (ng+off) − FD-CAM (g+off) -0.100 [-0.100, -0.100]")
    only = verdicts.claim_verdicts(setup, n_resamples=200, tables=["I"])
    assert set(only["claim"]) == {table_1}
    assert set(only["verdict"]) == {"too few images"}  # 3 images < MIN_IMAGES
    with pytest.raises(FdcamError, match="unknown table"):
        verdicts.claim_verdicts(setup, tables=["V"])


def test_table_1_deletion_is_claimed_second_after_group_cam(tmp_path: Path) -> None:
    """The paper puts Group-CAM first in deletion and FD-CAM second: a Group-CAM that deletes
    better refutes nothing; any other baseline that does, refutes."""
    setup = made_up_setup(tmp_path)
    setup.heavy_limits["faithfulness"] = None
    values = {(image, "fdcam"): (0.6, 0.20 + k / 10) for k, image in enumerate("abc")}
    values |= {(image, "groupcam"): (0.5, 0.10 + k / 10) for k, image in enumerate("abc")}
    values |= {(image, "gradcam"): (0.5, 0.30 + k / 10) for k, image in enumerate("abc")}
    write_faithfulness(setup, values)
    row = verdicts.claim_verdicts(setup, n_resamples=200, tables=["I"], min_images=1).set_index(
        "metric").loc["deletion"]
    assert row["verdict"] == "confirmed"
    assert row["evidence"] == "Grad-CAM +0.100 [+0.100, +0.100]"
    values |= {(image, "gradcam"): (0.5, 0.15 + k / 10) for k, image in enumerate("abc")}
    write_faithfulness(setup, values)
    row = verdicts.claim_verdicts(setup, n_resamples=200, tables=["I"], min_images=1).set_index(
        "metric").loc["deletion"]
    assert row["verdict"] == "refuted" and row["evidence"].startswith("Grad-CAM -0.050")


def test_a_verdict_shows_the_rival_that_decides_it(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)  # Score-CAM, a heavy method, on the first 2 images only
    # Insertion: Grad-CAM beats FD-CAM by 0.05 on every image (refutes); Score-CAM by 0.1 on
    # average, but its differences (+0.5, -0.3) change sign, so its interval holds 0. n is
    # that of the comparison shown: Grad-CAM's 3 images, not Score-CAM's 2.
    values = {("a", "fdcam"): (0.3, 0.2), ("b", "fdcam"): (0.5, 0.2), ("c", "fdcam"): (0.4, 0.2),
              ("a", "gradcam"): (0.35, 0.2), ("b", "gradcam"): (0.55, 0.2),
              ("c", "gradcam"): (0.45, 0.2),
              ("a", "scorecam"): (0.8, 0.2), ("b", "scorecam"): (0.2, 0.2),
              ("c", "scorecam"): (0.8, 0.2)}
    write_faithfulness(setup, values)
    table = verdicts.claim_verdicts(setup, n_resamples=200, tables=["I"], min_images=1)
    row = table.set_index("metric").loc["insertion"]
    assert row["verdict"] == "refuted"
    assert row["evidence"] == "Grad-CAM +0.050 [+0.050, +0.050]"
    assert row["n"] == 3
    # Asking for 3 images, Score-CAM's 2 are too few: it is the comparison shown, with its n.
    few = verdicts.claim_verdicts(setup, n_resamples=200, tables=["I"], min_images=3)
    row = few.set_index("metric").loc["insertion"]
    assert row["verdict"] == "too few images"
    assert row["evidence"].startswith("Score-CAM +0.100 [") and row["n"] == 2


def test_differing_images(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)
    write_faithfulness(setup, {("a", "fdcam"): (0.6, 0.2), ("a", "fdcam-g-off"): (0.6, 0.2),
                               ("b", "fdcam"): (0.7, 0.3), ("b", "fdcam-g-off"): (0.7, 0.31),
                               ("c", "fdcam"): (0.8, 0.2)})
    assert ablations.differing_images(setup) == (1, 2)  # b differs; c has no g+off row


def test_wall_time_sums_each_stage_over_its_runs(tmp_path: Path) -> None:
    setup = made_up_setup(tmp_path)
    assert runs.wall_time(setup).empty and runs.elapsed_hours(setup) == 0
    (tmp_path / "wall_time.csv").write_text(
        "stage,started_utc,seconds,finished,threads,device,cpus\n"
        "1,2026-01-01T00:00:00Z,3600,False,1,cpu,2\n"
        "1,2026-01-02T00:00:00Z,1800,True,2,cpu,2\n"
        "3,2026-01-02T01:00:00Z,720,False,1,cuda,16\n")
    table = runs.wall_time(setup).set_index("stage")
    assert runs.elapsed_hours(setup) == pytest.approx(1.7)  # 1 h + 0.5 h + 0.2 h, apart
    assert list(table["what"]) == ["", ""]  # a log from before stages named their subject
    assert table.loc[1, "hours"] == pytest.approx(1.5)
    assert table.loc[1, "runs"] == 2
    assert bool(table.loc[1, "finished"]) and not bool(table.loc[3, "finished"])
    assert table.loc[1, "threads"] == "1, 2"
    assert table.loc[3, "device"] == "cuda"
    with (tmp_path / "wall_time.csv").open() as handle:  # one stage at two layers: two lines
        lines = handle.read().splitlines()
    (tmp_path / "wall_time.csv").write_text("\n".join(
        [lines[0] + ",subject", lines[1] + ",m at a", lines[2] + ",m at b"]) + "\n")
    table = runs.wall_time(setup)
    assert list(zip(table["stage"], table["what"], table["hours"], strict=True)) == [
        (1, "m at a", 1.0), (1, "m at b", 0.5)]
    # Runs that log their paused seconds beside lines that did not: the known pauses sum.
    (tmp_path / "wall_time.csv").write_text("\n".join(
        [lines[0] + ",subject,paused", lines[1] + ",m at a,1800", lines[2] + ",m at a",
         lines[3] + ",m at b,0"]) + "\n")
    table = runs.wall_time(setup).set_index("stage")
    assert list(table["paused_hours"]) == [0.5, 0.0]
    # The first run, paused for half an hour, ends at 01:30; the others as before, from
    # 00:00 to 00:30 and 01:00 to 01:12 on the second day: 1.5 + 0.5 + 0.2 hours.
    assert runs.elapsed_hours(setup) == pytest.approx(2.2)
    assert runs.wall_time(setup).pipe(lambda t: t)["paused_hours"].notna().all()
    (tmp_path / "wall_time.csv").write_text("\n".join(
        [lines[0] + ",subject,paused", lines[1] + ",m at a,"]) + "\n")
    assert runs.wall_time(setup)["paused_hours"].isna().all()  # unknown, not 0
    assert list(table["hours"]) == [1.5, 0.2]


def test_a_setup_that_does_not_run_missing_rows_only_reads_them(tmp_path: Path) -> None:
    """The imagenet-sample notebooks read the rows `make evaluate-imagenet-sample` made:
    a table over partial rows says its n, and nothing is computed on the way."""
    setup = made_up_setup(tmp_path)
    setup.run_missing = False
    write_faithfulness(setup, {("a", "gradcam"): (0.5, 0.1), ("a", "fdcam"): (0.6, 0.1)})
    before = setup.faithfulness_csv.read_text()
    assert runs.run_faithfulness(setup, ["gradcam", "fdcam"]) == setup.faithfulness_csv
    assert setup.faithfulness_csv.read_text() == before  # model None: nothing was run
    table = tables.table_1(setup)
    assert set(table.loc[table["method"].isin(["gradcam", "fdcam"]), "n"]) == {1}
    assert setups.setup("smoke", n_images=1, n_mosaics=1).run_missing
    assert not setups.setup("smoke", n_images=1, n_mosaics=1, run_missing=False).run_missing


def test_describe_says_how_far_rows_made_elsewhere_have_got(tmp_path: Path) -> None:
    from fdcam.models import LoadedModel
    from tests.models import tiny_sequential

    model = LoadedModel("tiny", tiny_sequential(), "3", (0.0,) * 3, (1.0,) * 3,
                        [f"c{i}" for i in range(10)], (12, 12))
    made = Setup(profile="imagenet-sample", model=model, pointing_model=model, device="cpu",
                 results_dir=tmp_path,
                 faithfulness_images=[(i, torch.zeros(3, 12, 12)) for i in "abcd"],
                 pointing_images={}, methods={"I": ("gradcam", "scorecam", "fdcam"),
                                              "II": (), "III": (),
                                              "IV": ("fdcam-exp-shifted",)},
                 heavy_limits={"faithfulness": 2, "pointing": None})
    assert "faithfulness rows so far" not in made.describe().index  # it runs its own rows
    made.run_missing = False
    write_faithfulness(made, {("a", "gradcam"): (0.5, 0.1), ("b", "gradcam"): (0.5, 0.1),
                              ("c", "gradcam"): (0.5, 0.1), ("a", "fdcam"): (0.5, 0.1),
                              ("b", "fdcam"): (0.5, 0.1), ("a", "fdcam-exp"): (0.5, 0.1),
                              ("b", "fdcam-exp"): (0.5, 0.1), ("a", "scorecam"): (0.5, 0.1)})
    shown = made.describe()["value"]
    # The least of the light methods (FD-CAM and fdcam-exp-shifted's source: 2 images).
    assert shown["faithfulness rows so far"] == ("light methods on 2 of 4 images, heavy on 1 of "
                                                 "2 images (the run is still growing them)")
    assert "pointing rows so far" not in shown  # no pointing images planned
    made.heavy_methods = ()  # no heavy methods: nothing said about them
    assert made.describe()["value"]["faithfulness rows so far"] == (
        "light methods on 1 of 4 images (the run is still growing them)")  # Score-CAM: 1
