"""Stand-in datasets: the exact ILSVRC2012 val and VOC2007 structures, parsed by every loader."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from fdcam.errors import FdcamError
from fdcam.evaluation.cli import read_voc_boxes
from fdcam.evaluation.imagenet import (
    PAPER_MANIFEST_FILE,
    ImageNetVal,
    imagenet_wnids,
    read_manifest,
)
from fdcam.evaluation.voc import VOC2007, VOC_CLASSES
from scripts.standins import (
    IMAGENET_SIZES,
    STAMP_NAME,
    VOC_SIZES,
    StandIns,
    read_standins,
    write_imagenet_val,
    write_standins,
    write_voc2007,
)


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> StandIns:
    return write_standins(tmp_path_factory.mktemp("standins"), n_imagenet=4, n_voc_train=5,
                          n_voc_val=4)


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ ImageNet


@pytest.mark.parametrize("layout", ["flat", "folders"])
def test_imagenet_tree_parses_in_both_layouts(tmp_path: Path, layout: str) -> None:
    val = write_imagenet_val(tmp_path, 3, layout=layout, content="noise")
    names = read_manifest(PAPER_MANIFEST_FILE)[:3]
    # The paper profile's selection: the manifest's first images, in its order.
    dataset = ImageNetVal(val, manifest=names)
    assert dataset.names == names
    assert sorted(ImageNetVal(val).names) == names
    # The folder above val/ is accepted too (…/CLS-LOC or the root holding val/).
    assert sorted(ImageNetVal(val.parent).names) == names
    # Both layouts carry the Kaggle label file with boxes, and the synset mapping.
    with (tmp_path / "LOC_val_solution.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [r["ImageId"] + ".JPEG" for r in rows] == names
    wnids = imagenet_wnids()
    for row, (_, label) in zip(rows, dataset.samples, strict=True):
        tokens = row["PredictionString"].split()
        assert len(tokens) % 5 == 0 and wnids[label] == tokens[0]
    mapping = (tmp_path / "LOC_synset_mapping.txt").read_text().splitlines()
    assert len(mapping) == 1000 and mapping[0].startswith("n01440764 ")
    for path, _ in dataset.samples:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size in IMAGENET_SIZES
    if layout == "folders":
        assert {p.parent.name for p, _ in dataset.samples} <= set(wnids)
    else:
        assert val.parts[-4:] == ("ILSVRC", "Data", "CLS-LOC", "val")


def test_two_images_share_a_class(tmp_path: Path) -> None:
    val = write_imagenet_val(tmp_path, 3, layout="folders", content="noise")
    dataset = ImageNetVal(val, manifest=read_manifest(PAPER_MANIFEST_FILE)[:3])
    labels = [label for _, label in dataset.samples]
    assert labels[0] == labels[1]


# ------------------------------------------------------------------------------ VOC2007


def test_voc_tree_parses_with_every_loader(trees: StandIns) -> None:
    from torchvision.datasets import VOCDetection

    train, val = VOC2007(trees.voc_root, "train"), VOC2007(trees.voc_root, "val")
    assert tuple(train.ids) == trees.voc_train_ids and tuple(val.ids) == trees.voc_val_ids
    assert len(VOC2007(trees.voc_root, "trainval")) == 9
    assert VOC2007(trees.voc_root / "VOC2007", "val").ids == val.ids
    assert all(len(i) == 6 and i.isdigit() for i in train.ids + val.ids)
    # torchvision reads the same tree (its folder above VOCdevkit/).
    tv = VOCDetection(str(trees.voc_root.parent), year="2007", image_set="val")
    assert len(tv) == len(val)
    image, target = tv[0]
    assert int(target["annotation"]["size"]["width"]) == image.size[0]
    for i in range(len(val)):
        image, target = val[i]
        assert image.size in VOC_SIZES
        boxes = target["boxes"]
        assert (boxes[:, 0] >= 1).all() and (boxes[:, 2] <= image.size[0]).all()
        assert (boxes[:, 1] >= 1).all() and (boxes[:, 3] <= image.size[1]).all()
        # The evaluation's own XML reader agrees on the classes and the image's size.
        xml = val.root / "Annotations" / f"{val.ids[i]}.xml"
        by_class = read_voc_boxes(xml, VOC_CLASSES)
        assert {VOC_CLASSES[c] for c in by_class} == set(target["labels"])
        assert all(b.image_size == (image.size[1], image.size[0]) for b in by_class.values())


def test_voc_has_multi_object_multi_class_and_difficult_images(trees: StandIns) -> None:
    annotations = [VOC2007(trees.voc_root, "trainval").annotation(i) for i in range(9)]
    labels = [a["labels"] for a in annotations]
    assert any(len(set(names)) >= 2 for names in labels)  # several classes
    assert any(len(names) > len(set(names)) for names in labels)  # several objects of one
    assert any(bool(a["difficult"].any()) for a in annotations)
    # A class present only as difficult objects (the pointing game's skip case).
    assert any(all(bool(a["difficult"][k]) for k, n in enumerate(a["labels"]) if n == name)
               for a in annotations for name in set(a["labels"]))


def test_voc_per_class_files_agree_with_the_annotations(trees: StandIns) -> None:
    main = trees.voc_root / "VOC2007" / "ImageSets" / "Main"
    voc = VOC2007(trees.voc_root, "val")
    for name in VOC_CLASSES:
        lines = (main / f"{name}_val.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == voc.ids
        for i, line in enumerate(lines):
            a = voc.annotation(i)
            flags = [bool(d) for n, d in zip(a["labels"], a["difficult"], strict=True)
                     if n == name]
            expected = -1 if not flags else (0 if all(flags) else 1)
            assert int(line.split()[1]) == expected


def test_voc_xml_has_the_full_schema(trees: StandIns) -> None:
    import xml.etree.ElementTree as ET

    year = trees.voc_root / "VOC2007"
    root = ET.parse(year / "Annotations" / f"{trees.voc_val_ids[0]}.xml").getroot()
    assert root.findtext("folder") == "VOC2007"
    assert root.findtext("filename") == f"{trees.voc_val_ids[0]}.jpg"
    assert root.findtext("size/depth") == "3" and root.findtext("segmented") == "0"
    for obj in root.iter("object"):
        for tag in ("name", "pose", "truncated", "difficult", "bndbox/xmin", "bndbox/ymax"):
            assert obj.findtext(tag) is not None


# ------------------------------------------------------------------------------ both


def test_standins_are_deterministic_and_written_once(tmp_path: Path) -> None:
    first = write_standins(tmp_path / "a", n_imagenet=2, n_voc_train=1, n_voc_val=1,
                           content="noise")
    again = write_standins(tmp_path / "b", n_imagenet=2, n_voc_train=1, n_voc_val=1,
                           content="noise")
    assert _digest(tmp_path / "a" / "imagenet") == _digest(tmp_path / "b" / "imagenet")
    assert _digest(tmp_path / "a" / "voc") == _digest(tmp_path / "b" / "voc")
    assert first.imagenet_names == again.imagenet_names
    stamp = (tmp_path / "a" / STAMP_NAME).stat().st_mtime_ns
    assert write_standins(tmp_path / "a", n_imagenet=2, n_voc_train=1, n_voc_val=1,
                          content="noise") == first
    assert (tmp_path / "a" / STAMP_NAME).stat().st_mtime_ns == stamp  # nothing rewritten
    other = write_standins(tmp_path / "a", n_imagenet=2, n_voc_train=1, n_voc_val=1,
                           content="noise", seed=1)
    assert _digest(tmp_path / "a" / "voc") != _digest(tmp_path / "b" / "voc")
    assert other.voc_val_ids == first.voc_val_ids


def test_an_interrupted_write_is_redone(tmp_path: Path) -> None:
    trees = write_standins(tmp_path, n_imagenet=1, n_voc_train=1, n_voc_val=1, content="noise")
    stamp = tmp_path / STAMP_NAME
    stamp.write_text(stamp.read_text().replace('"complete": true', '"complete": false'))
    (trees.voc_root / "VOC2007" / "ImageSets" / "Main" / "val.txt").unlink()
    write_standins(tmp_path, n_imagenet=1, n_voc_train=1, n_voc_val=1, content="noise")
    assert len(VOC2007(trees.voc_root, "val")) == 1


def test_reading_trees_that_were_never_completed_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(FdcamError, match="no complete stand-in trees") as caught:
        read_standins(tmp_path)
    assert "\n" not in str(caught.value)
    trees = write_standins(tmp_path, n_imagenet=1, n_voc_train=1, n_voc_val=1, content="noise")
    assert read_standins(tmp_path) == trees


def test_a_foreign_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FdcamError, match=r"not empty and has no standins\.json") as caught:
        write_standins(tmp_path)
    assert "\n" not in str(caught.value)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: write_imagenet_val(p, 2, layout="kaggle"), "unknown layout 'kaggle'"),
    (lambda p: write_imagenet_val(p, 0), "n_images must be an int >= 1"),
    (lambda p: write_imagenet_val(p, 2, names=["a.JPEG"]), "1 image names for n_images=2"),
    (lambda p: write_voc2007(p, n_val=0), "n_val must be an int >= 1"),
    (lambda p: write_voc2007(p, content="pixels"), "unknown content 'pixels'"),
])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, call: Callable[[Path], object],
                                           message: str) -> None:
    with pytest.raises(FdcamError, match=message) as caught:
        call(tmp_path)
    assert "\n" not in str(caught.value)
