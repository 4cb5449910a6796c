"""`fdcam explain`: an overlay and the top-5 for a real photo; one-line errors otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fdcam.cli import main
from fdcam.data import offline_photos


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
        "fdcam explain: error: target class 1000 is out of range; the model has 1000 classes "
        "(0..999)")
