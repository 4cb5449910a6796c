"""Chapter 04's choice of images (`fdcam.paper.figure_choice`) and its computed sentences
(`fdcam.paper.figure_findings`), on tiny synthetic inputs: hand-computed probabilities and
maps, a model that reads its logits from the image, no photos and no real weights."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.evaluation.imagenet import imagenet_wnids
from fdcam.evaluation.photos import quadrant_boxes
from fdcam.evaluation.pointing import ClassBoxes
from fdcam.models import LoadedModel
from fdcam.paper import figure_choice as fc
from fdcam.paper import figure_findings as ff
from fdcam.paper.parameters import check_parameters
from fdcam.paper.setups import PointingImage, Setup

ROOT = Path(__file__).resolve().parent.parent
CLASSES = 1000


# ------------------------------------------------------------------------------ the rules


@pytest.mark.parametrize(("probabilities", "expected"), [
    ([0.1, 0.6, 0.005, 0.2], (1, 2)),
    ([0.5, 0.3, 0.009, 0.191], (0, 2)),  # p = 50 % is dominant (>=)
    ([0.4, 0.3, 0.001, 0.299], None),  # no dominant class
    ([0.6, 0.2, 0.01, 0.19], None),  # the weakest is not below 1 % (<)
    ([0.5, 0.5, 0.001, 0.001], (0, 2)),  # ties: the first quadrant in reading order
])
def test_two_class_quadrants(probabilities: list[float],
                             expected: tuple[int, int] | None) -> None:
    assert fc.two_class_quadrants(probabilities) == expected
    assert fc.two_class_quadrants(torch.tensor(probabilities, dtype=torch.float64)) == expected


def test_the_thresholds_are_arguments() -> None:
    assert fc.two_class_quadrants([0.4, 0.3, 0.04, 0.26], dominant=0.4, weak=0.05) == (0, 2)


def _once(items: list, stop_after: int):  # type: ignore[no-untyped-def]
    """Yield `items`, failing if more than `stop_after` of them are asked for (laziness)."""
    for i, item in enumerate(items):
        assert i < stop_after, "read past the chosen item"
        yield item


def test_first_two_class_mosaic_is_the_first_that_meets_the_rule() -> None:
    mosaics = [[0.4, 0.3, 0.2, 0.1], [0.7, 0.25, 0.045, 0.005], [0.9, 0.05, 0.049, 0.001],
               "never read"]
    assert fc.first_two_class_mosaic(_once(mosaics, 2)) == (1, (0, 3))


def test_no_mosaic_meets_the_rule() -> None:
    with pytest.raises(FdcamError, match=r"none of the 2 mosaics has a quadrant class with p "
                                         r">= 0.5 and one with p < 0.01"):
        fc.first_two_class_mosaic([[0.4, 0.3, 0.2, 0.1], [0.6, 0.2, 0.1, 0.1]])


def test_first_recognised_takes_the_first_k_with_top1_equal_to_label() -> None:
    pairs = [(1, 2), (3, 3), (4, 5), (6, 6), (7, 7), "never read"]
    assert fc.first_recognised(_once(pairs, 4), k=2) == [1, 3]
    assert fc.first_recognised([(0, 0)], k=1) == [0]


def test_too_few_recognised_photos() -> None:
    with pytest.raises(FdcamError, match=r"only 1 of 3 photos have their label as top-1; "
                                         r"Fig. 4 needs 2"):
        fc.first_recognised([(1, 2), (3, 3), (4, 5)], k=2)
    with pytest.raises(FdcamError, match="k must be an int >= 1; got 0"):
        fc.first_recognised([(1, 1)], k=0)


# ---------------------------------------------------------------- the rules on a setup


class _RowLogits(nn.Module):
    """Logits = the first row of the image's first channel: x [N, 3, H, 1000] -> [N, 1000]."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0, 0, :]


def _image(probabilities: dict[int, float], height: int = 2) -> Tensor:
    """An image [3, height, 1000] whose logits give exactly these softmax probabilities
    (the other classes: probability 0 in float32)."""
    x = torch.full((3, height, CLASSES), -1e4)
    for label, p in probabilities.items():
        x[0, 0, label] = math.log(p)
    return x


def _loaded() -> LoadedModel:
    return LoadedModel("row-logits", _RowLogits(), "", (0.0,) * 3, (1.0,) * 3,
                       [f"class{c}" for c in range(CLASSES)], (2, CLASSES))


def _setup(faithfulness: list[tuple[str, Tensor]],
           mosaics: list[tuple[list[int], list[float]]]) -> Setup:
    boxes = quadrant_boxes((2, CLASSES))
    pointing = {
        f"mosaic{i:03d}": PointingImage(
            _image(dict(zip(labels, p, strict=True))),
            {label: ClassBoxes(boxes[q:q + 1]) for q, label in enumerate(labels)})
        for i, (labels, p) in enumerate(mosaics)}
    loaded = _loaded()
    return Setup("imagenet-sample", loaded, loaded, "cpu", Path(), list(faithfulness), pointing,
                 {}, {})


def test_sample_fig1_applies_the_rule_to_the_setups_mosaics() -> None:
    setup = _setup([], [([10, 11, 12, 13], [0.4, 0.3, 0.2, 0.1]),
                        ([20, 21, 22, 23], [0.045, 0.7, 0.005, 0.25]),
                        ([30, 31, 32, 33], [0.9, 0.05, 0.049, 0.001])])
    fig1 = fc.sample_fig1(setup)
    assert fig1.image_id == "mosaic001"
    assert fig1.quadrants == (1, 2) and fig1.classes == [21, 22]
    assert fig1.labels == [20, 21, 22, 23] and fig1.names is None
    assert torch.equal(fig1.boxes, quadrant_boxes((2, CLASSES)))
    assert float(fig1.probabilities[21]) == pytest.approx(0.7)
    assert "`mosaic001`, the first of the profile's 3 pointing-game mosaics" in fig1.chosen_by
    assert "p ≥ 50 %" in fig1.chosen_by and "p < 1 %" in fig1.chosen_by
    assert "1 mosaic before it did not meet it" in fig1.chosen_by
    table = ff.quadrant_table(fig1, setup.model.categories)
    assert list(table.columns) == ["class", "probability (%)"]  # one photo per class
    assert table["probability (%)"].tolist() == [4.5, 70.0, 0.5, 25.0]


def test_sample_fig4_applies_the_rule_to_the_setups_photos() -> None:
    wnids = imagenet_wnids()
    photos = [(f"{wnids[label]}_photo{label}", _image({top1: 1.0}))
              for label, top1 in [(5, 7), (2, 2), (9, 9), (3, 3)]]
    fig4 = fc.sample_fig4(_setup(photos, []), k=2)
    assert fig4.image_ids == [f"{wnids[2]}_photo2", f"{wnids[9]}_photo9"]
    assert fig4.classes == [2, 9]
    assert fig4.x.shape == (2, 3, 2, CLASSES)
    assert fig4.probabilities.argmax(dim=1).tolist() == [2, 9]
    assert "the first 2 of the profile's 4 photos" in fig4.chosen_by
    assert "1 photo before them was skipped" in fig4.chosen_by


def test_sample_label_reads_the_wordnet_id() -> None:
    assert fc.sample_label("n01440764_tench") == 0
    with pytest.raises(FdcamError, match="does not start with an ImageNet-1k WordNet id"):
        fc.sample_label("tench")


# ---------------------------------------------------------------------- maps and sentences


def test_peaks_and_shares() -> None:
    saliency = torch.zeros(8, 8)
    saliency[1, 6] = 3.0  # top right
    saliency[6, 1] = 1.0  # bottom left
    boxes = quadrant_boxes(8)
    assert ff.peak_quadrant(saliency, boxes) == 1
    assert ff.box_share(saliency, boxes[1]) == pytest.approx(0.75)
    assert ff.box_share(saliency, boxes[2]) == pytest.approx(0.25)
    assert ff.box_share(torch.zeros(8, 8), boxes[0]) == 0.0
    assert ff.peak_cell(saliency, (4, 4)) == (0, 3)
    assert ff.peak_cell(saliency, (2, 2)) == (0, 1)


def _point_map(row: int, col: int, size: int = 8) -> Tensor:
    saliency = torch.zeros(size, size)
    saliency[row, col] = 1.0
    saliency[row // 2, col // 2] += 0.1  # a second, lower bump: shares below 100 %
    return saliency


def _fig1(probabilities: dict[int, float]) -> fc.Fig1Image:
    p = torch.zeros(CLASSES)
    for label, value in probabilities.items():
        p[label] = value
    return fc.Fig1Image("m", torch.zeros(3, 8, 8), [10, 11, 12, 13], quadrant_boxes(8),
                        ["a", "b", "c", "d"], p, (0, 3), "by hand, in a test")


def test_fig1_finding_names_the_methods_and_the_papers_contrast() -> None:
    fig1 = _fig1({10: 0.9712, 13: 0.0068})
    dominant, weak = _point_map(1, 1), _point_map(6, 6)  # top left, bottom right
    maps = {"gradcam": torch.stack([dominant, weak]),
            "scorecam": torch.stack([dominant, dominant]),  # stays on the dominant object
            "fdcam": torch.stack([dominant, weak])}
    categories = [f"class{c}" for c in range(CLASSES)]
    text = ff.fig1_finding(fig1, maps, categories)
    assert "For **class10** (97.12 %, top left quadrant), all 3 maps peak inside its " \
           "quadrant" in text
    assert "For **class13** (0.68 %, bottom right quadrant), Grad-CAM and FD-CAM peak inside " \
           "its quadrant, Score-CAM peaks in the top left quadrant; the map most confined to " \
           "the quadrant is" in text
    assert text.endswith("As in the paper's Fig. 1, for the weak class, Grad-CAM and FD-CAM "
                         "peak in its quadrant and Score-CAM does not.")
    table = ff.peak_table(fig1, maps, categories)
    assert table["hit"].tolist() == [True, True, True, False, True, True]
    assert table["peak in"].tolist()[3] == "top left"

    maps["scorecam"] = maps["gradcam"]
    assert "The paper's contrast (Grad-CAM and FD-CAM move to the weak class's object, " \
           "Score-CAM does not) does not appear here: for the weak class, Grad-CAM, Score-CAM " \
           "and FD-CAM peak in its quadrant." in ff.fig1_finding(fig1, maps, categories)


def test_fig1_finding_without_score_cam_has_no_contrast() -> None:
    fig1 = _fig1({10: 0.5, 13: 0.001})
    maps = {m: torch.stack([_point_map(1, 1), _point_map(6, 6)]) for m in ("gradcam", "fdcam")}
    text = ff.fig1_finding(fig1, maps, [f"class{c}" for c in range(CLASSES)])
    assert "both maps peak inside its quadrant" in text and "paper" not in text
    maps["fdcam"] = torch.stack([_point_map(1, 1), _point_map(1, 6)])  # weak: top right
    maps["gradcam"] = torch.stack([_point_map(1, 1), _point_map(6, 1)])  # weak: bottom left
    assert "no map peaks inside its quadrant: Grad-CAM peaks in the bottom left quadrant, " \
           "FD-CAM peaks in the top right quadrant;" in ff.fig1_finding(
               fig1, maps, [f"class{c}" for c in range(CLASSES)])


def test_fig4_finding_counts_agreeing_peaks_and_ranks_correlations() -> None:
    a = torch.stack([_point_map(1, 1, 14), _point_map(9, 9, 14)])
    same_cell = torch.stack([_point_map(0, 0, 14), _point_map(9, 9, 14)])
    maps = {"ig": torch.rand(2, 14, 14), "gradcam": a, "gradcam++": same_cell,
            # Score-CAM: a neighbouring cell on the first photo, far on the second.
            "scorecam": torch.stack([_point_map(3, 3, 14), _point_map(1, 1, 14)]),
            "fdcam": a}
    text = ff.fig4_finding(maps, ["goldfish", "tench"], (7, 7))
    assert text.startswith("The peaks of the 4 CAM methods (Grad-CAM, Grad-CAM++, Score-CAM "
                           "and FD-CAM) fall in the same or a neighbouring cell of a 7 × 7 "
                           "grid (the target layer's resolution) on 1 of 2 photos. Methods "
                           "whose peak lies more than one cell from FD-CAM's: Score-CAM on "
                           "tench.")
    assert "FD-CAM's maps are closest to Grad-CAM's (mean Pearson correlation 1.00 over " \
           "the photos) and farthest from Score-CAM's" in text
    assert ff.fig4_finding({"ig": a, "fdcam": a}, ["goldfish", "tench"]) == ""


def test_blank_maps_are_named_and_left_out_of_the_peaks() -> None:
    blank = torch.zeros(2, 14, 14)
    a = torch.stack([_point_map(1, 1, 14), _point_map(9, 9, 14)])
    far = torch.stack([_point_map(12, 12, 14), _point_map(9, 9, 14)])
    maps = {"gradcam": blank.clone(), "xgradcam": torch.stack([blank[0], a[1]]),
            "scorecam": far, "fdcam": a}
    text = ff.fig4_finding(maps, ["goldfish", "tench"], (7, 7))
    assert text.startswith("Blank maps, zero at every pixel (the CAM's weighted sum is nowhere "
                           "positive), whose peaks say nothing and are left out below: "
                           "Grad-CAM on 2 of 2 photos, XGrad-CAM on 1 of 2 photos. ")
    # tench: XGrad-CAM, Score-CAM and FD-CAM agree (Grad-CAM's blank map at (0, 0) is not
    # counted); goldfish: Score-CAM is far from FD-CAM.
    assert "on 1 of 2 photos. Methods whose peak lies more than one cell from FD-CAM's: " \
           "Score-CAM on goldfish." in text
    assert " Grad-CAM's" not in text.split("left out below")[1].split(". ", 1)[1]
    few = ff.fig4_finding({"gradcam": torch.stack([blank[0], a[1]]), "scorecam": far,
                           "fdcam": a}, ["goldfish", "tench"], (7, 7))
    assert "on 1 of 2 photos." in few  # both photos have two maps or more
    one = ff.fig4_finding({"gradcam": blank.clone(), "xgradcam": torch.stack([blank[0], a[1]]),
                           "fdcam": a}, ["goldfish", "tench"], (7, 7))
    # goldfish has FD-CAM's map only: the peaks are compared on tench alone.
    assert "on 1 of 1 photo with two maps or more drawn." in one
    assert "on none of the 2 photos." in ff.fig4_finding(
        {"scorecam": far, "fdcam": torch.stack([a[0], _point_map(0, 0, 14)])},
        ["goldfish", "tench"], (7, 7))

    fig1 = _fig1({10: 0.9712, 13: 0.0068})
    dominant, weak = _point_map(1, 1), _point_map(6, 6)
    maps = {"gradcam": torch.stack([dominant, torch.zeros(8, 8)]),
            "scorecam": torch.stack([dominant, dominant]), "fdcam": torch.stack([dominant, weak])}
    categories = [f"class{c}" for c in range(CLASSES)]
    text = ff.fig1_finding(fig1, maps, categories)
    assert "For **class13** (0.68 %, bottom right quadrant), FD-CAM peaks inside its quadrant, " \
           "Score-CAM peaks in the top left quadrant (Grad-CAM's map is blank: zero at every " \
           "pixel); the map most confined" in text
    # A blank map neither follows the weak class nor stays on the dominant one.
    assert text.endswith("cannot be read here: Grad-CAM's map is blank for the weak class.")
    table = ff.peak_table(fig1, maps, categories)
    assert table["peak in"].tolist()[1] == "top left (blank map)"
    assert table["hit"].tolist()[1] is None  # its "peak" is the first pixel: no hit or miss
    assert table["in its quadrant (%)"].isna().tolist() == [False, True, False, False, False,
                                                            False]


# ------------------------------------------------------------------------------- the head


def _tiny(pool: nn.Module, layer: str) -> LoadedModel:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    return LoadedModel("tiny", model, layer, (0.0,) * 3, (1.0,) * 3,
                       [f"c{i}" for i in range(5)], (8, 8))


def test_pooling_linear_head() -> None:
    assert ff.pooling_linear_head(_tiny(nn.AdaptiveAvgPool2d(1), "1"))
    assert not ff.pooling_linear_head(_tiny(nn.AdaptiveAvgPool2d(1), "0"))  # ReLU first
    assert not ff.pooling_linear_head(_tiny(nn.AdaptiveMaxPool2d(1), "1"))  # not an average
    assert "so these identities hold" in ff.head_statement(_tiny(nn.AdaptiveAvgPool2d(1), "1"))
    assert "do not hold" in ff.head_statement(_tiny(nn.AdaptiveMaxPool2d(1), "1"))


def test_run_statement_names_the_layer_and_its_shape() -> None:
    loaded = _tiny(nn.AdaptiveAvgPool2d(1), "1")
    assert ff.activation_shape(loaded) == (4, 8, 8)
    assert ff.model_at_layer(loaded) == "tiny at `1`"
    assert ff.run_statement("offline", loaded) == (
        "**This page** was built with the `offline` profile: tiny, target layer `1` "
        "(4 × 8 × 8); the images are photos that ship inside installed Python packages.")


# ------------------------------------------------------------------- parameters and prose


def test_imagenet_sample_refuses_package_photo_parameters() -> None:
    assert check_parameters(profile="imagenet-sample", fig1_mosaic=None, fig1_photos=None,
                            fig4_photos=None)["fig4_photos"] is None
    assert check_parameters(profile="offline", fig1_mosaic=8,
                            fig1_photos=["chelsea", "coffee"])["fig1_mosaic"] == 8
    with pytest.raises(FdcamError, match=r"^fig4_photos chooses package photos; the "
                                         r"imagenet-sample profile chooses Figs. 1 and 4 by "
                                         r"the rule of fdcam.paper.figure_choice"):
        check_parameters(profile="imagenet-sample", fig4_photos=["camera"])
    with pytest.raises(FdcamError, match="fig1_mosaic must be an int >= 0"):
        check_parameters(fig1_mosaic=-1)


def test_the_chapter_states_the_rule_the_module_applies() -> None:
    notebook = json.loads((ROOT / "notebooks" / "04_qualitative.ipynb").read_text())
    prose = " ".join(" ".join("".join(cell["source"]).split())  # one space between words
                     for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    words = {3: "three", 4: "four", 5: "five"}
    assert f"at least {100 * fc.FIG1_DOMINANT:g} %" in prose
    assert f"less than {100 * fc.FIG1_WEAK:g} %" in prose
    assert f"the first {words[fc.FIG4_PHOTOS]} photos" in prose


def test_recognised_counts_photos_whose_top1_is_their_class() -> None:
    import pandas as pd

    # tench (class 0) recognised, once per photo however many methods; goldfish (class 1)
    # explained as class 5: not recognised.
    rows = pd.DataFrame({"image": ["n01440764_tench", "n01440764_tench", "n01443537_goldfish"],
                         "method": ["fdcam", "gradcam", "fdcam"], "target": [0, 0, 5]})
    assert fc.recognised(rows) == (1, 2)
    assert fc.recognised(rows.iloc[:0]) == (0, 0)


def test_recognised_leaves_out_images_that_failed() -> None:
    import pandas as pd

    rows = pd.DataFrame({"image": ["n01440764_tench", "n01443537_goldfish"],
                         "method": ["fdcam", "fdcam"], "target": [0, pd.NA],
                         "error": [None, "OSError: truncated"]})
    assert fc.recognised(rows) == (1, 1)
