"""Resumable evaluation: resume, failures, shards, summaries and the CLI, on a tiny CNN."""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import fdcam
from fdcam.errors import FdcamError
from fdcam.evaluation import cli as evaluation_cli
from fdcam.evaluation import results
from fdcam.evaluation.cli import add_evaluate_parser, read_voc_boxes
from fdcam.evaluation.pointing import ClassBoxes
from fdcam.evaluation.results import result_columns
from fdcam.evaluation.results_file import merge_results, read_results
from fdcam.evaluation.runner import evaluate
from fdcam.evaluation.statistics import paired_differences, summarize
from fdcam.explanation import Explanation
from fdcam.models import LoadedModel

SIZE = 16
FAST = {"step_fraction": 0.1, "batch_size": 64}  # 26 px per step, 11 points per curve
BAD_MARK = 42.0  # an image whose first value is this makes the "fragile" explainer raise


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 5)).eval()


def make_images(n: int = 6) -> list[tuple[str, Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(f"img{i:02d}", torch.randn(3, SIZE, SIZE, generator=g)) for i in range(n)]


def energy(x: Tensor, target: Tensor) -> Explanation:
    """A deterministic fake explainer: saliency from the image and the class."""
    s = x.abs().mean(1) * (1 + target.view(-1, 1, 1))
    return Explanation(saliency=s, targets=target[:, None], method="energy")


def corner(x: Tensor, target: Tensor) -> Explanation:
    """Peaks at pixel (row 2, column 3) for every image."""
    s = torch.zeros(x.shape[0], x.shape[2], x.shape[3])
    s[:, 2, 3] = 1.0
    return Explanation(saliency=s, targets=target[:, None], method="corner")


def fragile(x: Tensor, target: Tensor) -> Explanation:
    if float(x[0, 0, 0, 0]) == BAD_MARK:
        raise RuntimeError("explainer broke on this image\nsecond line")
    return energy(x, target)


def factories(**explainers: Callable[[Tensor, Tensor], Explanation]) -> dict:
    return {name: (lambda model, e=e: e) for name, e in explainers.items()}


METHODS = factories(energy=energy, corner=corner)


def run(images, path: Path, methods=METHODS, **kwargs) -> list[str]:  # type: ignore[no-untyped-def]
    return evaluate(images, methods, tiny_cnn(), path, **{**FAST, **kwargs})


# ----------------------------------------------------------------------------------- basics


def test_one_row_per_image_method_target(tmp_path: Path) -> None:
    images = make_images(3)
    assert run(images, tmp_path / "r.csv") == []
    df = read_results(tmp_path / "r.csv")
    assert list(df.columns) == result_columns(pointing=False)
    assert len(df) == 6
    assert not df.duplicated(["image", "method", "target"]).any()
    model = tiny_cnn()
    for image_id, x in images:
        top1 = int(model(x[None]).argmax())
        assert set(df.loc[df["image"] == image_id, "target"]) == {top1}
    assert df["error"].isna().all()
    np.testing.assert_allclose(df["overall"], df["insertion"] - df["deletion"])
    assert ((df["probability"] > 0) & (df["probability"] < 1)).all()


def test_a_map_style_dataset_of_pairs_is_accepted(tmp_path: Path) -> None:
    class Pairs(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.items = make_images(3)

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, index: int) -> tuple[str, Tensor]:
            return self.items[index]  # IndexError past the end ends the iteration

    run(Pairs(), tmp_path / "a.csv")
    run(make_images(3), tmp_path / "b.csv")
    pd.testing.assert_frame_equal(read_results(tmp_path / "a.csv"),
                                  read_results(tmp_path / "b.csv"))


def test_explicit_targets_give_several_rows(tmp_path: Path) -> None:
    images = make_images(2)
    run(images, tmp_path / "r.csv", targets={"img00": [1, 3, 1]})
    df = read_results(tmp_path / "r.csv")
    assert sorted(df.loc[df["image"] == "img00", "target"].tolist()) == [1, 1, 3, 3]
    assert (df["image"] == "img01").sum() == 2  # top-1, one row per method


def test_rows_match_the_metrics_directly(tmp_path: Path) -> None:
    from fdcam.evaluation.faithfulness import insertion_deletion_curves

    images = make_images(1)
    run(images, tmp_path / "r.csv", methods=factories(energy=energy), targets=2)
    row = read_results(tmp_path / "r.csv").iloc[0]
    x = images[0][1][None]
    target = torch.tensor([2])
    curves = insertion_deletion_curves(tiny_cnn(), x, energy(x, target).saliency, target,
                                       **FAST)
    assert row["insertion"] == pytest.approx(float(curves.insertion_auc[0]), abs=1e-6)
    assert row["deletion"] == pytest.approx(float(curves.deletion_auc[0]), abs=1e-6)


# ------------------------------------------------------------------------------------ resume


class InterruptOn:
    """Wraps an explainer and raises KeyboardInterrupt on the n-th call (like Ctrl-C)."""

    def __init__(self, explainer: Callable[[Tensor, Tensor], Explanation], n: int) -> None:
        self.explainer, self.n, self.calls = explainer, n, 0

    def __call__(self, x: Tensor, target: Tensor) -> Explanation:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.explainer(x, target)


def test_interrupted_run_resumes_to_the_same_table(tmp_path: Path) -> None:
    images = make_images(5)
    run(images, tmp_path / "full.csv")
    full = read_results(tmp_path / "full.csv")

    resumed = tmp_path / "resumed.csv"
    boom = InterruptOn(corner, 4)  # dies on img03's "corner"
    with pytest.raises(KeyboardInterrupt):
        run(images, resumed, methods={"energy": lambda m: energy, "corner": lambda m: boom})
    assert len(read_results(resumed)) == 7  # img00..img02 both methods + img03 energy

    counter = InterruptOn(corner, 0)  # counts calls, never interrupts
    run(images, resumed, methods={"energy": lambda m: energy, "corner": lambda m: counter})
    assert counter.calls == 2  # only img03 and img04 were left for "corner"
    pd.testing.assert_frame_equal(read_results(resumed), full)

    run(images, resumed)  # a third run finds nothing to do
    pd.testing.assert_frame_equal(read_results(resumed), full)


def test_half_written_last_row_is_redone(tmp_path: Path) -> None:
    images = make_images(2)
    path = tmp_path / "r.csv"
    run(images, path)
    full = read_results(path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:15])  # killed mid-write
    with pytest.warns(results.ResultsWarning, match=r"line 6: incomplete"):
        run(images, path)
    pd.testing.assert_frame_equal(read_results(path), full)


def test_table_with_other_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    run(make_images(1), path)
    with pytest.raises(FdcamError, match="columns"):
        run(make_images(1), path, boxes={})


# ---------------------------------------------------------------------------------- failures


def failing_images() -> list[tuple[str, object]]:
    images: list[tuple[str, object]] = list(make_images(3))
    marked = torch.randn(3, SIZE, SIZE)
    marked[0, 0, 0] = BAD_MARK

    def unreadable() -> Tensor:
        raise OSError("cannot identify image file 'broken.jpg'")

    images.insert(1, ("broken", unreadable))
    images.insert(2, ("gray", torch.randn(1, SIZE, SIZE)))
    images.insert(4, ("marked", marked))
    return images


def test_failures_are_recorded_and_the_run_continues(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    methods = factories(fragile=fragile, corner=corner)
    failed = run(failing_images(), path, methods=methods)
    assert failed == ["broken", "gray", "marked"]
    df = read_results(path)
    ok = df[df["error"].isna()]
    assert sorted(set(ok["image"])) == ["img00", "img01", "img02", "marked"]
    errors = df[df["error"].notna()].set_index(["image", "method"])["error"]
    assert "OSError: cannot identify" in errors[("broken", "fragile")]
    assert "3 colour channels" in errors[("gray", "corner")]
    assert errors[("marked", "fragile")] == ("RuntimeError: explainer broke on this image "
                                             "second line")
    assert ("marked", "corner") not in errors.index  # the other method still ran
    assert df.loc[df["image"] == "broken", "target"].isna().all()  # failed before a class
    assert df.loc[df["image"] == "marked", "target"].notna().all()

    # A rerun neither repeats nor forgets the failures ...
    assert run(failing_images(), path, methods=methods) == failed
    pd.testing.assert_frame_equal(read_results(path), df)
    # ... unless asked to retry them.
    assert run(failing_images(), path, methods=methods, retry_failed=True) == failed
    again = read_results(path)
    assert len(again) == len(df)
    assert not again.duplicated(["image", "method", "target"]).any()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FdcamError, match="shard"):
        run(make_images(1), tmp_path / "r.csv", shard=(2, 2))
    with pytest.raises(FdcamError, match="methods is empty"):
        run(make_images(1), tmp_path / "r.csv", methods={})
    with pytest.raises(FdcamError, match="appears twice"):
        run([*make_images(1), *make_images(1)], tmp_path / "r.csv")
    with pytest.raises(FdcamError, match="pairs"):
        run([torch.zeros(3, 4, 4)], tmp_path / "r.csv")


# ------------------------------------------------------------------------------------ shards


def test_sharded_and_merged_equals_unsharded(tmp_path: Path) -> None:
    images = failing_images() + make_images(7)[3:]
    methods = factories(fragile=fragile, corner=corner)
    run(images, tmp_path / "all.csv", methods=methods)
    shards = [tmp_path / f"part{i}.csv" for i in range(3)]
    failed = []
    for i, path in enumerate(shards):
        failed += run(images, path, methods=methods, shard=(i, 3))
    parts = [set(read_results(p)["image"]) for p in shards]
    assert not (parts[0] & parts[1])
    assert not (parts[1] & parts[2])
    assert sorted(failed) == ["broken", "gray", "marked"]
    merged = merge_results(shards)
    pd.testing.assert_frame_equal(merged, merge_results([tmp_path / "all.csv"]))
    # merging a shard twice, or with the full run, changes nothing
    pd.testing.assert_frame_equal(merge_results([*shards, shards[0], tmp_path / "all.csv"]),
                                  merged)


# --------------------------------------------------------------------------- pointing game


def test_boxes_add_pointing_columns_and_choose_targets(tmp_path: Path) -> None:
    images = make_images(3)
    boxes = {
        "img00": {1: ClassBoxes(torch.tensor([[3, 2, 5, 6]])),  # around (x 3, y 2): hit
                  4: torch.tensor([[10, 10, 12, 12]])},  # 12 px away: tolerance hit only
        "img01": {2: ClassBoxes(torch.tensor([[0, 0, 3, 2]]), torch.tensor([True]))},
    }
    run(images, tmp_path / "r.csv", methods=factories(corner=corner), boxes=boxes)
    df = read_results(tmp_path / "r.csv").set_index(["image", "target"])
    assert list(df.columns[-5:]) == ["hit", "hit_tol15", "difficult", "content", "error"]
    assert df.loc[("img00", 1), ["hit", "hit_tol15"]].tolist() == [True, True]
    assert df.loc[("img00", 4), ["hit", "hit_tol15"]].tolist() == [False, True]
    difficult = df.loc[("img01", 2)]
    assert bool(difficult["hit"])
    assert difficult["difficult"]
    assert pd.isna(difficult["hit_tol15"])
    img02 = df.loc["img02"]  # no boxes: the top-1 class, empty pointing cells
    assert len(img02) == 1
    assert img02["hit"].isna().all()


# -------------------------------------------------------------------------------- summaries


def hand_table() -> pd.DataFrame:
    return pd.DataFrame({
        "image": ["i1", "i2", "i3", "i1", "i2", "i3", "i1"],
        "method": ["fdcam", "fdcam", "fdcam", "gradcam", "gradcam", "gradcam", "gradcam"],
        "target": pd.array([0, 0, 0, 0, 0, 0, 5], dtype="Int64"),
        "insertion": [0.5, 0.7, 0.6, 0.4, 0.4, np.nan, 0.9],
        "deletion": [0.1, 0.1, 0.1, 0.2, 0.2, np.nan, 0.2],
        "overall": [0.4, 0.6, 0.5, 0.2, 0.2, np.nan, 0.7],
        "error": [None, None, None, None, None, "boom", None],
    })


def test_summarize_means_and_bootstrap_intervals() -> None:
    summary = summarize(hand_table(), n_resamples=500, seed=3)
    assert summary.columns.tolist() == ["method", "metric", "n", "mean", "ci_low", "ci_high"]
    fd = summary.set_index(["method", "metric"]).loc["fdcam"]
    assert fd.loc["insertion", "mean"] == pytest.approx(0.6)
    assert 0.5 <= fd.loc["insertion", "ci_low"] < 0.6 < fd.loc["insertion", "ci_high"] <= 0.7
    assert fd.loc["deletion", ["mean", "ci_low", "ci_high"]].tolist() == pytest.approx([0.1] * 3)
    gc = summary.set_index(["method", "metric"]).loc["gradcam"]
    assert gc.loc["insertion", "n"] == 3  # the error row is left out
    assert gc.loc["insertion", "mean"] == pytest.approx((0.4 + 0.4 + 0.9) / 3)
    pd.testing.assert_frame_equal(summary, summarize(hand_table(), n_resamples=500, seed=3))


def test_bootstrap_equals_a_literal_loop_over_resamples() -> None:
    df = hand_table()
    got = summarize(df, metrics=["insertion"], n_resamples=300, seed=7)
    rows = df[(df["method"] == "gradcam") & df["error"].isna()]
    images = sorted(set(rows["image"]))  # i1 holds two targets, resampled together
    rng = np.random.default_rng(7)
    picks = rng.integers(0, len(images), size=(300, len(images)))
    means = []
    for pick in picks:
        values = [v for i in pick for v in rows.loc[rows["image"] == images[i], "insertion"]]
        means.append(sum(values) / len(values))
    low, high = np.quantile(means, [0.025, 0.975])
    row = got.set_index("method").loc["gradcam"]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))


def test_paired_differences_against_the_reference() -> None:
    diff = paired_differences(hand_table(), "fdcam", n_resamples=500)
    row = diff.set_index(["method", "metric"]).loc[("gradcam", "insertion")]
    # pairs (i1, 0) and (i2, 0): 0.4 − 0.5 and 0.4 − 0.7; (i3) failed, (i1, 5) unpaired
    assert row["n"] == 2
    assert row["reference"] == "fdcam"
    assert row["mean_difference"] == pytest.approx(-0.2)
    eps = 1e-12
    assert -0.3 - eps <= row["ci_low"] <= -0.2 <= row["ci_high"] <= -0.1 + eps
    assert set(diff["method"]) == {"gradcam"}
    with pytest.raises(FdcamError, match="methods: fdcam, gradcam"):
        paired_differences(hand_table(), "scorecam")
    with pytest.raises(FdcamError, match="no column 'auc'"):
        summarize(hand_table(), metrics=["auc"])


# --------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    loaded = LoadedModel("tiny", tiny_cnn(), "0", (0.5,) * 3, (0.25,) * 3,
                         ["cat", "dog", "person", "car", "tree"], input_size=(SIZE, SIZE))
    monkeypatch.setattr(evaluation_cli, "load_model", lambda name, **options: loaded)
    fake = types.ModuleType("fdcam.baselines")
    fake.METHODS = ("energy", "corner")  # type: ignore[attr-defined]
    fake.make_explainer = lambda name, model: {"energy": energy,  # type: ignore[attr-defined]
                                               "corner": corner}[name]
    fake.batch_options = lambda name, device: {}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fdcam.baselines", fake)
    monkeypatch.setattr(fdcam, "baselines", fake, raising=False)

    def main(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="fdcam")
        add_evaluate_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["evaluate", "--model", "vgg16", *argv])
        return args.func(args)

    return main


def image_folder(folder: Path) -> Path:
    folder.mkdir()
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(g.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / "b.png")
    Image.fromarray(g.integers(0, 255, (9, 30, 4), dtype=np.uint8), "RGBA").save(
        folder / "c.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden").write_text("skipped")
    return folder


def test_cli_runs_records_failures_and_summarises(tmp_path: Path,
                                                  cli: Callable[..., int],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = image_folder(tmp_path / "images")
    out = tmp_path / "out.csv"
    assert cli("--images", str(folder), "--methods", "all", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "insertion" in captured.out
    assert "energy" in captured.out
    assert "2 image(s) failed" in captured.out
    assert "broken.jpg:" in captured.out
    assert "notes.txt:" in captured.out
    assert "Traceback" not in captured.out + captured.err
    df = read_results(out)
    assert sorted(set(df.loc[df["error"].isna(), "image"])) == ["a.png", "b.png", "c.png"]
    assert cli("--images", str(folder), "--methods", "energy,corner", "--out", str(out),
               "--limit", "2", "--shard", "1/2") == 0
    pd.testing.assert_frame_equal(read_results(out), df)  # resumed: nothing new


def test_cli_refuses_unknown_methods(tmp_path: Path, cli: Callable[..., int]) -> None:
    folder = image_folder(tmp_path / "images")
    with pytest.raises(FdcamError, match="unknown method 'scorecam'; available: energy, corner"):
        cli("--images", str(folder), "--methods", "energy,scorecam", "--out", "x.csv")
    with pytest.raises(FdcamError, match="does not exist"):
        cli("--images", str(tmp_path / "nope"), "--methods", "energy", "--out", "x.csv")


def test_cli_argument_errors(cli: Callable[..., int]) -> None:
    with pytest.raises(SystemExit):
        cli("--images", "x", "--methods", "energy", "--out", "x.csv", "--shard", "2/2")
    with pytest.raises(SystemExit):
        cli("--images", "x", "--methods", "energy", "--out", "x.csv", "--limit", "0")


VOC_XML = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
<object><name>Dog</name><difficult>0</difficult>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>{xmax}</xmax><ymax>10</ymax></bndbox></object>
<object><name>dog</name><difficult>1</difficult>
<bndbox><xmin>21</xmin><ymin>11</ymin><xmax>24</xmax><ymax>20</ymax></bndbox></object>
</annotation>"""


def test_voc_boxes_stay_in_original_pixels(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(VOC_XML.format(w=24, h=20, xmax=12))
    boxes = read_voc_boxes(path, ["cat", "dog"])  # names matched case-insensitively
    assert list(boxes) == [1]
    assert boxes[1].boxes.tolist() == [[0, 0, 11, 9], [20, 10, 23, 19]]  # corners minus 1
    assert boxes[1].image_size == (20, 24)  # the pointing game resizes the map to it
    assert boxes[1].difficult is not None
    assert boxes[1].difficult.tolist() == [False, True]
    with pytest.raises(FdcamError, match="expected one of the model's 1 category names"):
        read_voc_boxes(path, ["cat"])


def test_cli_with_boxes_and_malformed_xml(tmp_path: Path, cli: Callable[..., int],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = image_folder(tmp_path / "images")
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "a.xml").write_text(VOC_XML.format(w=24, h=20, xmax=12))
    out = tmp_path / "out.csv"
    assert cli("--images", str(folder), "--methods", "corner", "--out", str(out),
               "--boxes", str(boxes)) == 0
    df = read_results(out)
    row = df[df["image"] == "a.png"]
    assert row["target"].tolist() == [1]
    assert row["hit"].tolist() == [True]
    assert "pointing game" in capsys.readouterr().out
    (boxes / "b.xml").write_text("<annotation><size><width>4</width></size>")
    with pytest.raises(FdcamError, match=r"b\.xml: malformed XML .*expected a VOC annotation"):
        cli("--images", str(folder), "--methods", "corner", "--out", str(out),
            "--boxes", str(boxes))


# ------------------------------------------------------------- curves=False and on_explained


def test_without_curves_only_probability_and_pointing_are_filled(tmp_path: Path) -> None:
    images = make_images(2)
    boxes = {image_id: {1: torch.tensor([[0.0, 0.0, 7.0, 7.0]])} for image_id, _ in images}
    run(images, tmp_path / "p.csv", boxes=boxes, curves=False)
    df = read_results(tmp_path / "p.csv")
    assert len(df) == 4 and df["error"].isna().all()
    assert df[["insertion", "deletion", "overall"]].isna().all().all()
    assert df["hit"].notna().all()
    model = tiny_cnn()
    for image_id, x in images:
        with torch.no_grad():
            expected = float(torch.softmax(model(x[None]), dim=1)[0, 1])
        got = df.loc[df["image"] == image_id, "probability"]
        assert got.tolist() == pytest.approx([expected] * 2, abs=1e-6)


def test_on_explained_sees_maps_and_curves_of_successful_rows(tmp_path: Path) -> None:
    images = make_images(2)
    targets = {image_id: [0, 3] for image_id, _ in images}
    seen: list[tuple[str, str, list[int], tuple[int, ...], bool]] = []

    def keep(image_id, method, classes, saliency, curves):  # type: ignore[no-untyped-def]
        seen.append((image_id, method, classes, tuple(saliency.shape), curves is not None))

    run(images, tmp_path / "r.csv", methods=factories(energy=energy), targets=targets,
        on_explained=keep)
    assert seen == [(i, "energy", [0, 3], (2, SIZE, SIZE), True) for i, _ in images]
    seen.clear()
    run(images, tmp_path / "r.csv", methods=factories(energy=energy), targets=targets,
        on_explained=keep)
    assert seen == []  # resumed: nothing recomputed


# ----------------------------------------------------------- issue 12: the CLI's one lines


def test_cli_refuses_a_foreign_out_file_untouched(tmp_path: Path, cli: Callable[..., int]) -> None:
    folder = image_folder(tmp_path / "images")
    for name, content in (("notes.txt", b"first line\nlast line of my notes\n"),
                          ("photo.jpg", (folder / "a.png").read_bytes())):
        out = tmp_path / name
        out.write_bytes(content)
        with pytest.raises(FdcamError, match=f"{name} is not an fdcam results file"):
            cli("--images", str(folder), "--methods", "energy", "--out", str(out))
        assert out.read_bytes() == content


@pytest.mark.parametrize(("argv", "message"), [
    (["--device", "bogus"], "device must be 'cpu' or 'cuda'"),
    (["--weights", "missing.pth"], "weights file missing.pth does not exist"),
])
def test_cli_device_and_weights_are_one_line(tmp_path: Path, cli: Callable[..., int],
                                             argv: list[str], message: str) -> None:
    folder = image_folder(tmp_path / "images")
    with pytest.raises(FdcamError, match=message):
        cli("--images", str(folder), "--methods", "energy", "--out", str(tmp_path / "o.csv"),
            *argv)


def test_cli_takes_image_files_and_a_layer(tmp_path: Path, cli: Callable[..., int],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = image_folder(tmp_path / "images")
    out = tmp_path / "out.csv"
    from fdcam import preflight

    layers: list[str] = []  # the tiny stand-in has no features.28: the check only records
    monkeypatch.setattr(preflight, "check_layer_map", lambda n, layer, x: layers.append(layer))
    assert cli("--images", str(folder / "b.png"), str(folder / "a.png"), "--methods", "energy",
               "--layer", "features.28", "--out", str(out)) == 0
    assert layers == ["features.28"]  # checked once, before the first image
    df = read_results(out)
    assert df["image"].tolist() == ["b.png", "a.png"]  # the files named, in that order
    assert df.attrs["fdcam_results"]["layer"] == "features.28"  # recorded in the identity
    with pytest.raises(FdcamError, match=r"unknown layer 'features\.99' of vgg16"):
        cli("--images", str(folder), "--methods", "energy", "--layer", "features.99",
            "--out", str(tmp_path / "x.csv"))
