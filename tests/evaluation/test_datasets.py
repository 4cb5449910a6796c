"""Data loading: ImageNet val layouts, VOC2007, the paper manifest, offline photos, mosaics.

Datasets are generated stand-in trees of tiny JPEGs in tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdcam.errors import FdcamError
from fdcam.evaluation.imagenet import (
    PAPER_MANIFEST_FILE,
    ImageNetVal,
    imagenet_wnids,
    paper_manifest,
    read_manifest,
)
from fdcam.evaluation.photos import (
    OFFLINE_PHOTOS_FILE,
    mosaics,
    offline_photos,
    predict_photos,
    quadrant_boxes,
    read_offline_photos_csv,
)
from fdcam.evaluation.voc import (
    VOC2007,
    VOC_CLASSES,
    parse_voc_xml,
    voc_class_boxes,
    voc_multi_hot,
)
from fdcam.models import imagenet_categories

# Canonical indices chosen so that a loader numbering only the present classes (0, 1, 2)
# would be caught: tench, tabby, toilet tissue.
PRESENT = {"n01440764": 0, "n02123045": 281, "n15075141": 999}
# Image number -> WordNet id; image 4 shares a class with image 1.
IMAGES = {1: "n02123045", 2: "n01440764", 3: "n15075141", 4: "n02123045"}


def _jpeg(path: Path, value: int = 128, size: tuple[int, int] = (12, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 60)).save(path, "JPEG")


def _val_name(k: int) -> str:
    return f"ILSVRC2012_val_{k:08d}.JPEG"


def _subfolder_tree(root: Path) -> Path:
    for k, wnid in IMAGES.items():
        _jpeg(root / wnid / _val_name(k), 40 * k)
    return root


def _flat_tree(folder: Path, solution_dir: Path | None = None) -> Path:
    for k in IMAGES:
        _jpeg(folder / _val_name(k), 40 * k)
    with ((solution_dir or folder) / "LOC_val_solution.csv").open("w") as file:
        file.write("ImageId,PredictionString\n")
        for k, wnid in IMAGES.items():
            # The Kaggle file lists every box: "wnid x0 y0 x1 y1 wnid x0 ...".
            file.write(f"ILSVRC2012_val_{k:08d},{wnid} 1 2 5 6 {wnid} 0 0 3 3 \n")
    return folder


def _labels(dataset: ImageNetVal) -> dict[str, int]:
    return {name: label for name, (_, label) in zip(dataset.names, dataset.samples, strict=True)}


# ---------------------------------------------------------------------------- ImageNet


def test_wnid_list_is_sorted_and_agrees_with_class_names() -> None:
    from torchvision.datasets.imagenette import Imagenette

    wnids = imagenet_wnids()
    assert len(wnids) == 1000
    assert wnids == sorted(set(wnids))
    categories = imagenet_categories()
    for wnid, names in Imagenette._WNID_TO_CLASS.items():  # ten classes with known names
        assert categories[wnids.index(wnid)] == names[0]
    for wnid, label in PRESENT.items():
        assert wnids.index(wnid) == label


def test_both_imagenet_layouts_give_the_same_canonical_labels(tmp_path: Path) -> None:
    folders = ImageNetVal(_subfolder_tree(tmp_path / "a"))
    flat = ImageNetVal(_flat_tree(tmp_path / "b"))
    expected = {_val_name(k): PRESENT[wnid] for k, wnid in IMAGES.items()}
    assert _labels(folders) == expected
    assert _labels(flat) == expected

    image, label, name = flat[0]
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert (label, name) == (281, _val_name(1))


def test_imagenet_transform_and_manifest_order(tmp_path: Path) -> None:
    root = _flat_tree(tmp_path)
    manifest = tmp_path / "some.txt"
    manifest.write_text(f"# two images, in this order\n{_val_name(3)}\n\n{_val_name(1)}\n")
    dataset = ImageNetVal(root, manifest=manifest, transform=lambda image: image.size)
    assert len(dataset) == 2
    assert [dataset[i] for i in range(2)] == [((12, 8), 999, _val_name(3)),
                                              ((12, 8), 281, _val_name(1))]
    assert ImageNetVal(root, manifest=[_val_name(2)]).names == [_val_name(2)]


def test_kaggle_layout_finds_the_solution_above_and_val_below(tmp_path: Path) -> None:
    val = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    _flat_tree(val, solution_dir=tmp_path)
    assert len(ImageNetVal(val)) == 4
    # The ImageNet root (train/, val/) is accepted for val/.
    assert len(ImageNetVal(val.parent)) == 4


def test_imagenet_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FdcamError, match=r"does not exist") as missing:
        ImageNetVal(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(missing.value)

    other = tmp_path / "other"
    _jpeg(other / "holiday.jpg")
    (other / "notes.txt").write_text("hello")
    with pytest.raises(FdcamError, match=r"holds neither class subfolders"):
        ImageNetVal(other)

    flat = tmp_path / "flat"
    for k in IMAGES:
        _jpeg(flat / _val_name(k))
    with pytest.raises(FdcamError, match=r"without labels.*LOC_val_solution\.csv") as nolabels:
        ImageNetVal(flat)
    assert str(flat) in str(nolabels.value)

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("name,label\nx,1\n")
    with pytest.raises(FdcamError, match=r"not LOC_val_solution\.csv"):
        ImageNetVal(flat, solution=bad_csv)

    unknown = tmp_path / "unknown"
    _jpeg(unknown / "n00000001" / _val_name(1))
    with pytest.raises(FdcamError, match=r"n00000001 is not named by an ImageNet-1k"):
        ImageNetVal(unknown)

    with pytest.raises(FdcamError, match=r"1 of the 2 images in the manifest"):
        ImageNetVal(_subfolder_tree(tmp_path / "ok"), manifest=[_val_name(1), _val_name(9)])

    for error in (missing, nolabels):
        assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------- manifest


def test_paper_manifest_is_reproducible_from_its_seed_and_committed() -> None:
    names = paper_manifest(seed=0, n=2000)
    assert names == paper_manifest(seed=0, n=2000)
    assert names == read_manifest(PAPER_MANIFEST_FILE)
    assert len(set(names)) == 2000
    assert names == sorted(names)
    numbers = [int(name[15:23]) for name in names]
    assert 1 <= min(numbers)
    assert max(numbers) <= 50_000
    assert paper_manifest(seed=1, n=2000) != names
    assert paper_manifest(seed=0, n=10) != names[:10]  # a different draw, not a prefix


# ---------------------------------------------------------------------------- VOC2007

_XML = """<annotation>
  <folder>VOC2007</folder><filename>{id}.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
{objects}</annotation>
"""
_OBJECT = """  <object><name>{name}</name><pose>Left</pose><truncated>0</truncated>
    <difficult>{difficult}</difficult>
    <bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>
    </bndbox></object>
"""
VOC_OBJECTS = {
    "000005": [("dog", 0, (1, 2, 20, 30)), ("person", 1, (15, 5, 40, 28)),
               ("dog", 0, (22, 10, 39, 25))],
    "000007": [("cat", 0, (3, 4, 10, 12))],
}


def _voc_tree(devkit: Path, split: str = "val") -> Path:
    year = devkit / "VOC2007"
    for image_id, objects in VOC_OBJECTS.items():
        _jpeg(year / "JPEGImages" / f"{image_id}.jpg", size=(40, 30))
        body = "".join(_OBJECT.format(name=n, difficult=d, box=b) for n, d, b in objects)
        path = year / "Annotations" / f"{image_id}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_XML.format(id=image_id, objects=body))
    main = year / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in VOC_OBJECTS))
    return devkit


def test_voc_tree_parses_to_the_stated_structure(tmp_path: Path) -> None:
    devkit = _voc_tree(tmp_path / "VOCdevkit")
    for root in (devkit, devkit / "VOC2007", tmp_path):
        dataset = VOC2007(root, split="val")
        assert dataset.ids == ["000005", "000007"]
    image, target = dataset[0]
    assert isinstance(image, Image.Image)
    assert (image.mode, image.size) == ("RGB", (40, 30))
    assert set(target) == {"labels", "boxes", "difficult", "size"}
    assert target["size"] == (30, 40)
    assert target["labels"] == ["dog", "person", "dog"]
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[1, 2, 20, 30], [15, 5, 40, 28], [22, 10, 39, 25]]
    assert target["difficult"].dtype == torch.bool
    assert target["difficult"].tolist() == [False, True, False]
    assert dataset[1][1]["labels"] == ["cat"]
    assert dataset[1][1]["boxes"].shape == (1, 4)

    present, ignore = voc_multi_hot(target["labels"], target["difficult"])
    assert present.nonzero().flatten().tolist() == [VOC_CLASSES.index("dog"),
                                                     VOC_CLASSES.index("person")]
    # person appears only as difficult: left out of its AP, as the VOC protocol does.
    assert ignore.nonzero().flatten().tolist() == [VOC_CLASSES.index("person")]


def test_voc_image_without_objects_has_empty_tensors(tmp_path: Path) -> None:
    path = tmp_path / "empty.xml"
    path.write_text(_XML.format(id="x", objects=""))
    target = parse_voc_xml(path)
    assert target["labels"] == []
    assert target["boxes"].shape == (0, 4)
    assert target["difficult"].shape == (0,)


def test_voc_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FdcamError, match=r"does not exist"):
        VOC2007(tmp_path / "nowhere")
    other = tmp_path / "other"
    _jpeg(other / "photo.jpg")
    with pytest.raises(FdcamError, match=r"is not a VOC2007 tree"):
        VOC2007(other)
    devkit = _voc_tree(tmp_path / "VOCdevkit", split="val")
    with pytest.raises(FdcamError, match=r"train\.txt is missing"):
        VOC2007(devkit, split="train")
    with pytest.raises(FdcamError, match=r"unknown VOC2007 split 'validation'"):
        VOC2007(devkit, split="validation")

    cases = {
        "syntax.xml": ("<annotation><object><name>dog</name></annotation>", "malformed XML"),
        "root.xml": ("<html></html>", "expected <annotation>"),
        "class.xml": (_XML.format(id="x", objects=_OBJECT.format(
            name="unicorn", difficult=0, box=(1, 1, 2, 2))), "class 'unicorn'"),
        "nobox.xml": ("<annotation><object><name>dog</name></object></annotation>",
                      "bad <bndbox>"),
        "text.xml": (_XML.format(id="x", objects=_OBJECT.format(
            name="dog", difficult=0, box=(1, "a", 2, 2))), "bad <bndbox>"),
        "order.xml": (_XML.format(id="x", objects=_OBJECT.format(
            name="dog", difficult=0, box=(5, 1, 2, 2))), "xmin > xmax"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(FdcamError, match=message) as error:
            parse_voc_xml(path)
        assert str(path) in str(error.value)
        assert "\n" not in str(error.value)

    # Through the dataset too: a malformed file in the tree names that file.
    broken = devkit / "VOC2007" / "Annotations" / "000007.xml"
    broken.write_text("<annotation>")
    with pytest.raises(FdcamError, match=r"000007\.xml: malformed XML"):
        VOC2007(devkit)[1]


# ---------------------------------------------------------------------------- offline


@pytest.fixture(scope="module")
def photos() -> list:
    return offline_photos()


def test_offline_photos_come_from_their_packages(photos: list) -> None:
    from matplotlib import cbook
    from skimage import data as skdata

    assert [p.name for p in photos] == ["camera", "coffee", "chelsea", "motorcycle_left",
                                        "grace_hopper"]
    assert len({p.label for p in photos}) == len(photos)  # four distinct classes are needed
    by_name = {p.name: np.asarray(p.image) for p in photos}
    np.testing.assert_array_equal(by_name["chelsea"], skdata.chelsea())
    np.testing.assert_array_equal(by_name["motorcycle_left"], skdata.stereo_motorcycle()[0])
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        np.testing.assert_array_equal(by_name["grace_hopper"], np.asarray(image))


@pytest.mark.slow
def test_recorded_photo_classes_match_the_models_top1() -> None:
    # Catches a changed model, weights or preprocessing: every candidate, kept or not.
    recorded = read_offline_photos_csv(OFFLINE_PHOTOS_FILE)
    predicted = predict_photos()
    assert [r["name"] for r in predicted] == [r["name"] for r in recorded]
    for now, then in zip(predicted, recorded, strict=True):
        assert (now["name"], now["label"], now["class_name"]) == (
            then["name"], then["label"], then["class_name"])
        assert abs(float(now["probability"]) - float(then["probability"])) <= 0.01


def test_offline_photo_csv_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "photos.csv"
    with bad.open("w", newline="") as file:
        csv.writer(file).writerows([["name", "label"], ["camera", "872"]])
    with pytest.raises(FdcamError, match=r"is not an offline photo list"):
        offline_photos(bad)
    with pytest.raises(FdcamError, match=r"cannot read the offline photo list"):
        offline_photos(tmp_path / "missing.csv")


@pytest.mark.parametrize("size", [224, (225, 223)])
def test_mosaic_boxes_cover_exactly_their_quadrants(photos: list, size) -> None:
    height, width = (size, size) if isinstance(size, int) else size
    items = mosaics(3, size=size, seed=3, photos=photos)
    by_label = {p.label: p for p in photos}
    for item in items:
        assert item.image.size == (width, height)
        assert len(set(item.labels)) == 4
        assert item.boxes.shape == (4, 4)
        assert item.boxes.dtype == torch.float32
        # Every pixel lies in exactly one box (0-based inclusive) ...
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        inside = torch.stack([(xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
                              for x0, y0, x1, y1 in item.boxes.tolist()])
        assert bool((inside.sum(0) == 1).all())
        # ... and each box holds exactly its photo, resized to the box.
        pixels = np.asarray(item.image)
        for (x0, y0, x1, y1), label in zip(item.boxes.long().tolist(), item.labels, strict=True):
            tile = by_label[label].image.convert("RGB").resize(
                (x1 - x0 + 1, y1 - y0 + 1), Image.Resampling.BILINEAR)
            np.testing.assert_array_equal(pixels[y0:y1 + 1, x0:x1 + 1], np.asarray(tile))
    assert quadrant_boxes(size).tolist() == items[0].boxes.tolist()


def test_mosaics_are_reproducible_and_distinct(photos: list) -> None:
    first = mosaics(120, size=32, seed=0, photos=photos)
    again = mosaics(120, size=32, seed=0, photos=photos)
    assert [m.labels for m in first] == [m.labels for m in again]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image))
               for a, b in zip(first[:5], again[:5], strict=True))
    assert len({tuple(m.labels) for m in first}) == 120  # 5 photos: every ordered choice
    assert [m.labels for m in mosaics(5, size=32, seed=1, photos=photos)] != [
        m.labels for m in first[:5]]
    with pytest.raises(FdcamError, match=r"allow only 120 distinct"):
        mosaics(121, photos=photos)


def test_voc_download_goes_through_torchvision(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    def fake_voc_detection(root: str, year: str, image_set: str, download: bool) -> None:
        calls.append((Path(root), year, image_set, download))
        _voc_tree(Path(root) / "VOCdevkit", split=image_set)

    monkeypatch.setattr(torchvision.datasets, "VOCDetection", fake_voc_detection)
    dataset = VOC2007(tmp_path / "VOCdevkit", split="val", download=True)
    assert calls == [(tmp_path, "2007", "val", True)]
    assert len(dataset) == 2
    VOC2007(tmp_path / "VOCdevkit", split="val", download=True)  # already there
    assert len(calls) == 1

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "VOCDetection", offline)
    with pytest.raises(FdcamError, match=r"could not download VOC2007 val into .*: no network"):
        VOC2007(tmp_path / "elsewhere", download=True)


def test_one_voc_box_conversion_for_the_cli_and_table_ii(tmp_path: Path) -> None:
    # The box (10, 20, 200, 300) of a 500x375 image: the CLI's reader and Table II's
    # conversion both keep it in the original image's 0-based pixels with its size, where
    # the pointing game is scored (TorchRay).
    from fdcam.evaluation.cli import read_voc_boxes

    path = tmp_path / "a.xml"
    xml = _XML.format(id="a", objects=_OBJECT.format(name="dog", difficult=0,
                                                     box=(10, 20, 200, 300)))
    path.write_text(xml.replace("<width>40</width><height>30</height>",
                                "<width>500</width><height>375</height>"))
    annotation = parse_voc_xml(path)
    assert annotation["size"] == (375, 500)
    table_ii = voc_class_boxes(annotation, VOC_CLASSES, (375, 500))
    cli = read_voc_boxes(path, VOC_CLASSES)
    dog = VOC_CLASSES.index("dog")
    for boxes in (table_ii, cli):
        assert boxes[dog].boxes.tolist() == [[9.0, 19.0, 199.0, 299.0]]
        assert boxes[dog].image_size == (375, 500)
