"""Results that cannot lie, second round (issue 22): full disks, symlinks, same names with
other pixels, NaN and inf, outputs that would overwrite inputs, and checks before work.
Each case ends in the right table or in one line, with the files left as they were."""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.evaluation.results import ResultsWarning
from fdcam.evaluation.results_file import read_results
from tests.evaluation.test_runner import (  # noqa: F401  (cli is a fixture)
    SIZE,
    cli,
    make_images,
    run,
    tiny_cnn,
)


def key_order(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["image", "method", "target"], kind="stable").reset_index(drop=True)


def clean_read(path: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every line a valid row
        return read_results(path)


class FullDisk:
    """``os.write`` on a disk with `room` bytes left: writes are cut short to what fits (the
    kernel's short write), then fail with ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.real(fd, bytes(data[: self.room]))
        self.room -= written
        return written


# ------------------------------------------------------------------------------ full disks


def test_a_full_disk_during_a_rewrite_leaves_the_file_byte_for_byte(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.csv"
    run(make_images(4), path)
    path.write_bytes(path.read_bytes() + b"img00,energy,1,0.5")  # a torn row: a rewrite
    before = path.read_bytes()
    monkeypatch.setattr(os, "write", FullDisk(room=100))
    with pytest.warns(ResultsWarning), pytest.raises(FdcamError, match="No space left on device"):
        run(make_images(4), path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]  # no temporary file left


def test_a_full_disk_during_an_append_leaves_no_torn_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = tmp_path / "reference.csv"
    run(make_images(6), reference)
    path = tmp_path / "r.csv"
    head = b"".join(reference.read_bytes().splitlines(keepends=True)[:2])
    monkeypatch.setattr(os, "write", FullDisk(room=len(head) + 500))  # a few rows fit
    with pytest.raises(FdcamError, match=r"cannot append to .*No space left on device"):
        run(make_images(6), path)
    monkeypatch.undo()
    written = clean_read(path)  # no torn row: every line is a valid row
    assert 0 < len(written) < 12
    run(make_images(6), path)  # the rest, once there is room
    pd.testing.assert_frame_equal(key_order(clean_read(path)), key_order(read_results(reference)))


def test_a_rewrite_in_a_read_only_folder_is_one_line(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.csv"
    run(make_images(2), path)
    path.write_bytes(path.read_bytes() + b"torn")
    before = path.read_bytes()
    real_open = os.open

    def read_only_folder(name, flags, *args):  # type: ignore[no-untyped-def]
        if str(name).endswith(".tmp"):  # no new file can be made there (tests run as root)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))
        return real_open(name, flags, *args)

    monkeypatch.setattr(os, "open", read_only_folder)
    with pytest.warns(ResultsWarning), pytest.raises(FdcamError,
                                                     match=r"no file can be made in .*denied"):
        run(make_images(2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before


# -------------------------------------------------------------------------------- symlinks


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    target = tmp_path / "store" / "results.csv"
    target.parent.mkdir()
    run(make_images(3), target)
    full = target.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    target.write_bytes(full + b"img00,energy,1,0.")  # torn: the run rewrites the target
    with pytest.warns(ResultsWarning, match="recomputed"):
        run(make_images(3), link)
    assert link.is_symlink() and target.read_bytes() == full
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "elsewhere" / "made.csv")
    run(make_images(3), dangling)
    assert dangling.is_symlink()
    assert (tmp_path / "elsewhere" / "made.csv").read_bytes() == full


# ------------------------------------------------------------ same names, other pixels


def folder_of(folder: Path, seed: int) -> Path:
    folder.mkdir()
    g = np.random.default_rng(seed)
    for name in ("x.png", "y.png"):
        Image.fromarray(g.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_same_names_with_other_pixels_are_recomputed_never_reused(
        tmp_path: Path, cli: Callable[..., int]) -> None:  # noqa: F811
    a, b = folder_of(tmp_path / "a", 1), folder_of(tmp_path / "b", 2)
    out, fresh = tmp_path / "out.csv", tmp_path / "fresh.csv"
    assert cli("--images", str(a), "--methods", "all", "--out", str(out)) == 0
    with pytest.warns(ResultsWarning, match="made from other content"):
        assert cli("--images", str(b), "--methods", "all", "--out", str(out)) == 0
    assert cli("--images", str(b), "--methods", "all", "--out", str(fresh)) == 0
    pd.testing.assert_frame_equal(key_order(clean_read(out)), key_order(clean_read(fresh)))


def test_same_ids_with_other_tensors_are_recomputed(tmp_path: Path) -> None:
    first = make_images(3)
    second = [(image_id, x.flip(-1)) for image_id, x in first]
    path, fresh = tmp_path / "r.csv", tmp_path / "fresh.csv"
    run(first, path)
    with pytest.warns(ResultsWarning, match="made from other content"):
        run(second, path)
    run(second, fresh)
    pd.testing.assert_frame_equal(key_order(clean_read(path)), key_order(clean_read(fresh)))


# ------------------------------------------------------------------ metrics checked on read


def replace_cell(path: Path, column: str, value: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    header = lines[1].rstrip("\n").split(",")
    cells = lines[2].rstrip("\n").split(",")
    cells[header.index(column)] = value
    if column in ("insertion", "deletion"):  # keep overall = insertion - deletion
        try:
            ins = float(cells[header.index("insertion")])
            dele = float(cells[header.index("deletion")])
            cells[header.index("overall")] = repr(ins - dele)
        except ValueError:
            pass
    lines[2] = ",".join(cells) + "\n"
    path.write_text("".join(lines))


@pytest.mark.parametrize(("column", "value", "why"), [
    ("insertion", "nan", "not finite"),
    ("overall", "nan", "not finite"),
    ("insertion", "inf", "not finite"),
    ("deletion", "1e999", "not finite"),
    ("probability", "-7.5", r"outside \[0, 1\]"),
    ("insertion", "1.5", r"outside \[0, 1\]"),
])
def test_an_impossible_metric_is_reported_once_and_recomputed(tmp_path: Path, column: str,
                                                              value: str, why: str) -> None:
    path = tmp_path / "r.csv"
    run(make_images(3), path)
    full = clean_read(path)
    replace_cell(path, column, value)
    with pytest.warns(ResultsWarning, match=why):
        assert len(read_results(path)) == len(full) - 1  # never counted
    with pytest.warns(ResultsWarning, match="they will be recomputed") as caught:
        run(make_images(3), path)
    assert len([w for w in caught if issubclass(w.category, ResultsWarning)]) == 1
    pd.testing.assert_frame_equal(key_order(clean_read(path)), key_order(full))


# ------------------------------------------------------------------------- strict identity


@pytest.mark.parametrize(("edit", "message"), [
    (lambda i: i.pop("weights"), "lacks weights"),
    (lambda i: i.pop("shard"), "lacks shard"),
    (lambda i: i.update(shard=5), r"shard 5; expected \[i, n\]"),
    (lambda i: i.update(shard=[0]), r"shard \[0\]; expected \[i, n\]"),
    (lambda i: i.update(shard=[3, 2]), r"expected \[i, n\] with 0 <= i < n"),
    (lambda i: i.update(step_fraction="0.1"), "step_fraction"),
    (lambda i: i.update(model=7), "model 7"),
    (lambda i: i.update(extra="x"), r"a key this run does not have \(extra\)"),
])
def test_an_incomplete_or_edited_identity_is_one_line_and_untouched(
        tmp_path: Path, edit: Callable[[dict], object], message: str) -> None:
    path = tmp_path / "r.csv"
    run(make_images(2), path)
    lines = path.read_text().splitlines(keepends=True)
    payload = lines[0].split(" ", 2)[2]
    identity = json.loads(payload)
    edit(identity)
    path.write_text(f"# fdcam-results/3 {json.dumps(identity)}\n" + "".join(lines[1:]))
    before = path.read_bytes()
    with pytest.raises(FdcamError, match=message):
        run(make_images(2), path)
    assert path.read_bytes() == before


# ---------------------------------------------------------------------- checks before work


class Wrapped(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.net, self.how = tiny_cnn(), how

    def forward(self, x: Tensor) -> object:
        logits = self.net(x)
        return (logits,) if self.how == "tuple" else {"logits": logits}


@pytest.mark.parametrize(("model", "message"), [
    (lambda: Wrapped("tuple"), "returned tuple; expected a logits tensor"),
    (lambda: Wrapped("dict"), "returned dict; expected a logits tensor"),
    (lambda: tiny_cnn().apply(lambda m: [p.data.fill_(float("nan")) for p in m.parameters()]),
     r"weights of the model hold NaN or inf \(parameter '0.weight'\)"),
    (lambda: nn.Sequential(tiny_cnn(), nn.Flatten(0)), r"returned shape \[5\]"),
])
def test_a_model_that_cannot_give_valid_rows_is_refused_before_the_first_row(
        tmp_path: Path, model: Callable[[], nn.Module], message: str) -> None:
    from fdcam.evaluation.runner import evaluate
    from tests.evaluation.test_runner import FAST, METHODS

    path = tmp_path / "r.csv"
    with pytest.raises(FdcamError, match=message):
        evaluate(make_images(3), METHODS, model(), path, **FAST)
    assert len(read_results(path)) == 0


def test_inf_logits_are_refused(tmp_path: Path) -> None:
    from fdcam.evaluation.runner import evaluate
    from tests.evaluation.test_runner import FAST, METHODS

    model = tiny_cnn()
    with torch.no_grad():
        model[-1].bias.fill_(1e38)
        model[-1].weight.fill_(1e38)  # finite weights, overflowing logits
    with pytest.raises(FdcamError, match="NaN or inf logits"):
        evaluate(make_images(1), METHODS, model, tmp_path / "r.csv", **FAST)


@pytest.mark.parametrize(("layer", "message"), [
    ("2", r"layer '2' gives a 2×2 map|layer '2' gives a 1×1 map"),
    ("4", r"layer '4' must output a tensor \[B, K, h, w\]; got Tensor of shape \(1, 5\)"),
])
def test_a_layer_without_a_map_is_refused_before_the_first_row(tmp_path: Path, layer: str,
                                                               message: str) -> None:
    from fdcam.evaluation.runner import evaluate
    from fdcam.models import LoadedModel
    from tests.evaluation.test_runner import FAST, METHODS

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 5)).eval()
    loaded = LoadedModel("tiny", net, layer, (0.5,) * 3, (0.25,) * 3, list("abcde"),
                         input_size=(SIZE, SIZE))
    path = tmp_path / "r.csv"
    with pytest.raises(FdcamError, match=message):
        evaluate(make_images(2), METHODS, loaded, path, **FAST)
    assert len(read_results(path)) == 0


def test_a_layer_that_runs_twice_is_refused(tmp_path: Path) -> None:
    from fdcam.evaluation.runner import evaluate
    from fdcam.models import LoadedModel
    from tests.evaluation.test_runner import FAST, METHODS

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.act(self.conv(self.act(x))))

    loaded = LoadedModel("twice", Twice().eval(), "act", (0.5,) * 3, (0.25,) * 3,
                         list("abcde"), input_size=(SIZE, SIZE))
    with pytest.raises(FdcamError, match="runs 2 times in one forward pass"):
        evaluate(make_images(2), METHODS, loaded, tmp_path / "r.csv", **FAST)


def test_nan_pixels_are_one_line(tmp_path: Path) -> None:
    from fdcam.evaluation.images import open_rgb

    path = tmp_path / "nan.tiff"
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), "F").save(path)
    with pytest.raises(FdcamError, match="64 of its 64 pixels are NaN or inf"):
        open_rgb(path)
    images = make_images(2)
    images[0][1][0, 0, 0] = float("nan")
    path = tmp_path / "r.csv"
    assert run(images, path) == ["img00"]  # that image's error row, the others scored
    assert read_results(path).set_index("image").loc["img00", "error"].str.contains(
        "NaN or inf pixels").all()


# ------------------------------------------------------------------------------------ boxes


def voc(path: Path, size: tuple[int, int] | None, box: tuple[str, ...]) -> Path:
    size_xml = (f"<size><width>{size[1]}</width><height>{size[0]}</height></size>"
                if size else "")
    path.write_text(f"<annotation>{size_xml}<object><name>cat</name><bndbox>"
                    f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax>"
                    f"<ymax>{box[3]}</ymax></bndbox></object></annotation>")
    return path


@pytest.mark.parametrize(("size", "box", "message"), [
    ((30, 20), ("1", "1", "5", "5"), r"<size> is 20x30 .* but the image is 20x20"),
    ((100000, 100000), ("1", "1", "5", "5"), r"<size> is 100000x100000"),
    ((20, 20), ("-1e999", "1", "1e999", "5"), "not finite"),
    ((20, 20), ("1", "1", "25", "5"), "outside the 20x20 image"),
])
def test_boxes_are_checked_against_their_image(tmp_path: Path, size: tuple[int, int],
                                               box: tuple[str, ...], message: str) -> None:
    from fdcam.evaluation.cli import read_voc_boxes

    path = voc(tmp_path / "x.xml", size, box)
    with pytest.raises(FdcamError, match=message):
        read_voc_boxes(path, ["cat", "dog"], (20, 20))


def test_infinite_boxes_are_refused() -> None:
    from fdcam.evaluation.pointing import ClassBoxes

    with pytest.raises(FdcamError, match="finite coordinates"):
        ClassBoxes(torch.tensor([[-float("inf"), 0.0, float("inf"), 3.0]]))


# ---------------------------------------------------------------------- outputs and inputs


def test_out_inside_the_images_folder_or_an_image_is_refused(
        tmp_path: Path, cli: Callable[..., int]) -> None:  # noqa: F811
    a = folder_of(tmp_path / "a", 1)
    with pytest.raises(FdcamError, match="inside the --images folder"):
        cli("--images", str(a), "--methods", "all", "--out", str(a / "results.csv"))
    with pytest.raises(FdcamError, match="is one of the --images"):
        cli("--images", str(a / "x.png"), "--methods", "all", "--out", str(a / "x.png"))
    assert sorted(p.name for p in a.iterdir()) == ["x.png", "y.png"]


def test_methods_all_with_names_is_one_clear_line(tmp_path: Path,
                                                  cli: Callable[..., int]) -> None:  # noqa: F811
    a = folder_of(tmp_path / "a", 1)
    with pytest.raises(FdcamError, match="'all' stands alone") as caught:
        cli("--images", str(a), "--methods", "all,energy", "--out", str(tmp_path / "o.csv"))
    assert "unknown method" not in str(caught.value)


# ------------------------------------------------------------------------ format 2 upgrade


def test_a_format_2_file_is_refused_until_upgraded_then_resumes_without_recomputing(
        tmp_path: Path) -> None:
    from fdcam.evaluation.runner import upgrade_results

    images = make_images(3)
    path = tmp_path / "r.csv"
    run(images, path)
    full = clean_read(path)
    lines = path.read_text().splitlines(keepends=True)  # the same rows as format 2 wrote them
    old = [lines[0].replace("fdcam-results/3", "fdcam-results/2"),
           lines[1].replace(",content,", ","),
           *(",".join(line.split(",")[:-2]) + ",\n" for line in lines[2:])]
    path.write_text("".join(old))
    before = path.read_bytes()
    with pytest.raises(FdcamError, match=r"format-2 results file.* --upgrade"):
        run(images, path)
    assert path.read_bytes() == before
    assert upgrade_results(path, images) == (6, 6)
    explained: list[str] = []
    run(images, path, on_explained=lambda image, *_: explained.append(image))
    assert explained == []  # every row reused
    pd.testing.assert_frame_equal(clean_read(path), full)
    path.write_bytes(before)
    with pytest.raises(FdcamError, match="not among the images given"):
        upgrade_results(path, images[:2])
    assert path.read_bytes() == before
