"""The imagenet-sample photos (EliSchwartz/imagenet-sample-images) and their mosaics.

The photos themselves are never needed: a fake folder of a few generated JPEGs with valid
names stands in for them in tmp_path.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdcam.errors import FdcamError
from fdcam.evaluation.imagenet import (
    IMAGENET_SAMPLE_DIR,
    IMAGENET_SAMPLE_MOSAICS,
    ImageNetSample,
    imagenet_sample_dir,
    imagenet_sample_groups,
    imagenet_sample_mosaics,
    imagenet_wnids,
)
from fdcam.evaluation.photos import quadrant_boxes
from fdcam.paths import DATA_DIR

REPO = DATA_DIR.parent

# (file name, canonical label, colour): eight classes, written out of label order.
PHOTOS = [
    ("n15075141_toilet_tissue.JPEG", 999, (250, 250, 240)),
    ("n01440764_tench.JPEG", 0, (200, 30, 30)),
    ("n02123045_tabby.JPEG", 281, (30, 200, 30)),
    ("n01443537_goldfish.JPEG", 1, (30, 30, 200)),
    ("n02012849_crane.JPEG", 134, (200, 200, 30)),
    ("n03126707_crane.JPEG", 517, (30, 200, 200)),
    ("n04591713_wine_bottle.JPEG", 907, (200, 30, 200)),
    ("n07920052_espresso.JPEG", 967, (120, 120, 120)),
]


def write_sample(folder: Path, photos: list[tuple[str, int, tuple[int, int, int]]] = PHOTOS,
                 ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, _, colour) in enumerate(photos):
        size = (40 + 8 * i, 30 + 4 * i)  # different sizes and aspect ratios
        Image.new("RGB", size, colour).save(folder / name, quality=95)
    (folder / "README.md").write_text("# imagenet-sample-images\n")
    (folder / "gallery.md").write_text("![](n01440764_tench.JPEG)\n")
    return folder


def test_canonical_labels_come_from_the_wordnet_ids() -> None:
    wnids = imagenet_wnids()
    for name, label, _ in PHOTOS:
        assert wnids[label] == name[:9]


def test_sample_folder_loads_with_canonical_labels(tmp_path: Path) -> None:
    sample = ImageNetSample(write_sample(tmp_path / "photos"))
    assert len(sample) == 8  # README.md and gallery.md are not photos
    assert sample.names == sorted(name[:-5] for name, _, _ in PHOTOS)
    by_name = {name[:-5]: label for name, label, _ in PHOTOS}
    assert sample.labels == [by_name[n] for n in sample.names]
    image, label, name = sample[0]
    assert (label, name) == (0, "n01440764_tench")
    assert image.mode == "RGB"
    with_transform = ImageNetSample(tmp_path / "photos", transform=lambda im: im.size)
    assert with_transform[0][0] == image.size


def test_missing_or_empty_folder_says_how_to_get_the_photos(tmp_path: Path) -> None:
    for folder in (tmp_path / "absent", write_sample(tmp_path / "empty", [])):
        with pytest.raises(FdcamError) as error:
            ImageNetSample(folder)
        message = str(error.value)
        assert "\n" not in message
        assert "make data-imagenet-sample" in message and "IMAGENET_SAMPLE=DIR" in message
        assert str(folder) in message


def test_a_name_that_is_not_an_imagenet_class_is_refused(tmp_path: Path) -> None:
    folder = write_sample(tmp_path / "photos", [("n99999999_nothing.JPEG", -1, (0, 0, 0))])
    with pytest.raises(FdcamError, match="n99999999, not an ImageNet-1k WordNet id"):
        ImageNetSample(folder)


def test_folder_comes_from_the_argument_the_environment_or_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGENET_SAMPLE", raising=False)
    assert imagenet_sample_dir() == IMAGENET_SAMPLE_DIR == DATA_DIR / "downloads" / \
        "imagenet-sample"
    folder = write_sample(tmp_path / "elsewhere")
    monkeypatch.setenv("IMAGENET_SAMPLE", str(folder))
    assert imagenet_sample_dir() == folder
    assert len(ImageNetSample()) == 8
    assert imagenet_sample_dir(tmp_path / "given") == tmp_path / "given"


def test_groups_use_every_photo_once() -> None:
    groups = imagenet_sample_groups(1000, seed=0)
    assert len(groups) == IMAGENET_SAMPLE_MOSAICS == 250
    assert all(len(g) == 4 for g in groups)
    assert sorted(i for g in groups for i in g) == list(range(1000))
    assert groups == imagenet_sample_groups(1000, seed=0)  # seeded
    assert groups != imagenet_sample_groups(1000, seed=1)
    assert groups[:5] != [tuple(range(4 * k, 4 * k + 4)) for k in range(5)]  # shuffled
    ten = imagenet_sample_groups(10, seed=3)  # two mosaics; two photos left out
    assert len(ten) == 2 and len({i for g in ten for i in g}) == 8
    with pytest.raises(FdcamError, match="n_photos"):
        imagenet_sample_groups(-1)


def test_mosaics_of_the_sample_have_exact_quadrants(tmp_path: Path) -> None:
    sample = ImageNetSample(write_sample(tmp_path / "photos"))
    made = imagenet_sample_mosaics(sample, size=64, seed=0)
    assert len(made) == 2
    groups = imagenet_sample_groups(8, seed=0)
    colours = {name[:-5]: colour for name, _, colour in PHOTOS}
    used = []
    for mosaic, group in zip(made, groups, strict=True):
        assert mosaic.names == [sample.names[i] for i in group]
        assert mosaic.labels == [sample.labels[i] for i in group]
        assert len(set(mosaic.labels)) == 4
        assert torch.equal(mosaic.boxes, quadrant_boxes(64))
        assert mosaic.image.size == (64, 64)
        pixels = np.asarray(mosaic.image).astype(int)
        for (x0, y0, x1, y1), name in zip(mosaic.boxes.long().tolist(), mosaic.names,
                                          strict=True):
            quadrant = pixels[y0:y1 + 1, x0:x1 + 1]
            # Each quadrant is one photo, a flat colour (JPEG: within a few levels).
            assert np.abs(quadrant - np.array(colours[name])).max() <= 6
        used += mosaic.names
    assert sorted(used) == sorted(sample.names)  # every photo exactly once
    again = imagenet_sample_mosaics(sample, n=1, size=64, seed=0)
    assert again[0].names == made[0].names
    assert np.array_equal(np.asarray(again[0].image), np.asarray(made[0].image))
    with pytest.raises(FdcamError, match="between 0 and 2"):
        imagenet_sample_mosaics(sample, n=3)


def test_mosaics_refuse_a_repeated_class(tmp_path: Path) -> None:
    twins = [(f"n01440764_tench{i}.JPEG", 0, (10 * i, 0, 0)) for i in range(4)]
    sample = ImageNetSample(write_sample(tmp_path / "photos", twins))
    with pytest.raises(FdcamError, match="repeats a class"):
        imagenet_sample_mosaics(sample)


def test_downloads_are_ignored_and_the_make_target_clones_shallowly(tmp_path: Path) -> None:
    assert "data/downloads/" in (REPO / ".gitignore").read_text().split()
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    target = tmp_path / "clone"
    plan = subprocess.run(["make", "-n", "--no-print-directory", "data-imagenet-sample",
                           f"IMAGENET_SAMPLE={target}"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout
    assert ("git clone --depth 1 https://github.com/EliSchwartz/imagenet-sample-images"
            in plan)
    assert str(target) in plan
