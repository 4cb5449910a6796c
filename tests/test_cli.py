"""`fdcam explain`: an overlay and the top-5 for a real photo; one-line errors otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fdcam.cli import main
from fdcam.evaluation.photos import offline_photos


def test_explain_writes_overlay_and_top5(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photo = next(p for p in offline_photos() if p.name == "coffee")
    image = tmp_path / "coffee.jpg"
    photo.image.save(image)
    out = tmp_path / "out" / "overlay.png"
    assert main(["explain", str(image), "--model", "efficientnet-lite0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("1.  967 espresso")
    assert len([line for line in printed if line[:2] in {"1.", "2.", "3.", "4.", "5."}]) == 5
    with Image.open(out) as overlay:
        assert overlay.size == (224, 224)
        assert overlay.mode == "RGB"


@pytest.mark.parametrize("kind", ["missing", "corrupt", "text"])
def test_explain_bad_image_is_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.png"
    if kind == "corrupt":
        Image.new("RGB", (64, 64)).save(path)
        path.write_bytes(path.read_bytes()[:40])  # truncated PNG
    elif kind == "text":
        path.write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "fdcam", "explain", str(path), "--out",
                             str(tmp_path / "o.png")], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fdcam explain: error: cannot read the image")


def test_explain_bad_target_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "gray.png"
    Image.new("L", (50, 40), 128).save(image)  # grayscale is converted, not refused
    code = main(["explain", str(image), "--target", "1000", "--out", str(tmp_path / "o.png")])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "fdcam explain: error: --target 1000 is not a class of efficientnet-lite0; expected 0 "
        "to 999")


# ------------------------------------------------ issues 12 and 13: checks before the model


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path


def explain_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run ``fdcam explain``; it must fail with exit 2 and exactly one line on stderr."""
    assert main(["explain", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: no top-5 before the error
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(("argv", "expected"), [
    (["--device", "bogus"], "device must be 'cpu' or 'cuda' (or 'cuda:N'); got 'bogus'"),
    (["--model", "resnet5"], "unknown model 'resnet5'; expected efficientnet-lite0, "
                             "efficientnet-lite2 or a torchvision classification model"),
    (["--layer", "features.99"], "unknown layer 'features.99' of efficientnet-lite0; expected a "
                                 "dotted module name such as"),
    (["--model", "vgg16", "--target", "-1"], "--target -1 is not a class of vgg16; expected 0 "
                                             "to 999"),
    (["--method", "nope"], "unknown method 'nope'; available: gradcam"),
    (["--weights", "missing.pth"], "weights file missing.pth does not exist"),
])
def test_explain_checks_arguments_before_loading(
        photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        argv: list[str], expected: str) -> None:
    import fdcam.models

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(fdcam.models, "load_model", never)
    line = explain_error(capsys, str(photo), *argv, "--out", str(tmp_path / "o.png"))
    assert line.startswith(f"fdcam explain: error: {expected}")


def test_explain_cuda_without_a_gpu_is_one_line(photo: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = explain_error(capsys, str(photo), "--device", "cuda", "--out",
                         str(tmp_path / "o.png"))
    assert line == ("fdcam explain: error: device 'cuda' was asked for but no CUDA device is "
                    "available; use device='cpu'")


def test_explain_out_under_a_file_or_a_folder(photo: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("x")
    line = explain_error(capsys, str(photo), "--out", str(tmp_path / "file" / "o.png"))
    assert line == (f"fdcam explain: error: cannot write {tmp_path}/file/o.png: "
                    f"{tmp_path}/file is a file, not a folder")
    line = explain_error(capsys, str(photo), "--out", str(tmp_path))
    assert line.startswith(f"fdcam explain: error: --out {tmp_path} is a folder; expected a "
                           f"file name")


def test_explain_a_decompression_bomb_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 × the limit
    line = explain_error(capsys, str(path), "--out", str(tmp_path / "o.png"))
    assert line == (f"fdcam explain: error: cannot read the image {path}: Image size (10000 "
                    f"pixels) exceeds limit of 2000 pixels (PIL's guard against decompression "
                    f"bombs; raise PIL.Image.MAX_IMAGE_PIXELS if it is a real photo)")


def test_explain_any_torchvision_model_with_a_state_dict_file(photo: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import torch
    import torchvision

    monkeypatch.setenv("FDCAM_OFFLINE", "1")
    torch.manual_seed(0)
    weights = tmp_path / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    out = tmp_path / "overlay.png"
    assert main(["explain", str(photo), "--model", "resnet18", "--weights", str(weights),
                 "--target", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 6
    assert printed[-1] == f"fdcam map for class 3 (tiger shark) -> {out}"
    with Image.open(out) as overlay:
        assert overlay.size == (224, 224)
    junk = tmp_path / "junk.pth"
    torch.save({"fc.bias": torch.zeros(3)}, junk)
    line = explain_error(capsys, str(photo), "--model", "resnet18", "--weights", str(junk),
                         "--out", str(out))
    assert line.startswith(f"fdcam explain: error: weights file {junk} does not fit resnet18: "
                           f"121 missing keys (conv1.weight")


# ------------------------------------------------------- issue 22: outputs, NaN, layers


def test_explain_never_writes_over_its_image_or_a_non_png(photo: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import fdcam.models

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(fdcam.models, "load_model", never)
    before = photo.read_bytes()
    line = explain_error(capsys, str(photo), "--out", str(photo))
    assert line.startswith(f"fdcam explain: error: --out {photo} is the input image")
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    line = explain_error(capsys, str(photo), "--out", str(link))
    assert line.startswith(f"fdcam explain: error: --out {link} is the input image")
    results = tmp_path / "results.csv"
    results.write_text("# fdcam-results/3 {}\nimage,method\n")
    line = explain_error(capsys, str(photo), "--out", str(results))
    assert line.startswith(f"fdcam explain: error: --out {results} exists and is not a PNG")
    assert photo.read_bytes() == before and results.read_text().startswith("# fdcam")


def test_explain_writes_a_symlinks_target(photo: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "store" / "overlay.png"
    target.parent.mkdir()
    Image.new("RGB", (4, 4)).save(target)
    link = tmp_path / "overlay.png"
    link.symlink_to(target)
    assert main(["explain", str(photo), "--out", str(link)]) == 0
    assert link.is_symlink()
    with Image.open(target) as overlay:
        assert overlay.size == (224, 224)


@pytest.mark.parametrize(("case", "expected"), [
    ("nan weights", "the weights of resnet18 hold NaN or inf (parameter 'conv1.weight')"),
    ("avgpool", "layer 'avgpool' gives a 1×1 map; expected at least 2×2"),
    ("fc", "layer 'fc' must output a tensor [B, K, h, w]"),
    ("folder", "weights file {folder} is a folder; expected a state dict"),
])
def test_explain_refuses_what_cannot_give_a_map(photo: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch, case: str,
                                                expected: str) -> None:
    import torch
    import torchvision

    monkeypatch.setenv("FDCAM_OFFLINE", "1")
    torch.manual_seed(0)
    network = torchvision.models.resnet18()
    if case == "nan weights":
        with torch.no_grad():
            network.conv1.weight.fill_(float("nan"))
    weights = tmp_path / "resnet18.pth"
    torch.save(network.state_dict(), weights)
    argv = ["--model", "resnet18", "--weights", str(weights if case != "folder" else tmp_path)]
    if case in ("avgpool", "fc"):
        argv += ["--layer", case]
    out = tmp_path / "o.png"
    line = explain_error(capsys, str(photo), *argv, "--out", str(out))
    assert line.startswith(f"fdcam explain: error: {expected.format(folder=tmp_path)}")
    assert not out.exists()
