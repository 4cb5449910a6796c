"""Reading image files (issue 12): EXIF orientation, 16-bit grayscale, bombs, in one place
(`fdcam.evaluation.images.open_rgb`, used by ``fdcam explain`` and ``fdcam evaluate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdcam.errors import FdcamError
from fdcam.evaluation.images import open_rgb


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, as the sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view", a phone held upright
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = open_rgb(path)
    assert image.size == (20, 40)  # upright: taller than wide
    top, bottom = np.asarray(image)[2, 10], np.asarray(image)[37, 10]
    assert top[0] > 200 and top[1] < 50  # the red half is now on top
    assert bottom[0] < 50


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (257 * 128, 128), (65535, 255)])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path, value: int,
                                                expected: int) -> None:
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((8, 6), value, dtype=np.uint16)).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    image = open_rgb(path)
    assert image.mode == "RGB" and image.size == (6, 8)
    assert np.asarray(image).min() == np.asarray(image).max() == expected


def test_a_16_bit_gradient_keeps_its_range(tmp_path: Path) -> None:
    path = tmp_path / "ramp16.png"
    ramp = np.linspace(0, 65535, 256).astype(np.uint16)[None].repeat(4, 0)
    Image.fromarray(ramp).save(path)
    row = np.asarray(open_rgb(path))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row.astype(int)) >= 0).all()
    assert len(set(row.tolist())) == 256  # before: all but the first few were 255


def test_a_decompression_bomb_is_one_line(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (60, 60)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(FdcamError, match=r"^cannot read the image .*big\.png: Image size "
                                         r"\(3600 pixels\) exceeds limit of 2000 pixels "
                                         r"\(PIL's guard against decompression bombs"):
        open_rgb(path)
