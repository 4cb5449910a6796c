"""PASCAL VOC2007: the one annotation parser and box conversion (`parse_voc_xml`,
`voc_class_boxes`: boxes in the original image's pixels, as TorchRay's pointing game), the
dataset, and the multi-hot labels of the fine-tuning."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from fdcam.errors import FdcamError
from fdcam.evaluation.images import open_rgb

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval", "test")


# ----------------------------------------------------------------------------------------
# Pascal VOC 2007
# ----------------------------------------------------------------------------------------


def parse_voc_xml(path: str | Path, classes: Sequence[str] = VOC_CLASSES) -> dict[str, Any]:
    """One VOC annotation file → ``{"labels", "boxes", "difficult", "size"}``.

    ``labels``: the objects' class names as spelled in `classes` (matched case-insensitively;
    the 20 VOC classes by default, or a model's category names); ``boxes``: a float tensor
    of the XML's ``xmin, ymin, xmax, ymax`` (1-based inclusive pixels, unchanged);
    ``difficult``: a bool tensor (a missing tag means not difficult); ``size``: the image's
    (height, width) from ``<size>``, or None when the file has none. Anything malformed, or
    an object of another class, is an `FdcamError` that names the file.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise FdcamError(f"{path}: malformed XML ({error}); expected a VOC annotation"
                         ) from error
    except OSError as error:
        raise FdcamError(f"cannot read the VOC annotation {path}: {error.strerror or error}"
                         ) from error
    if root.tag != "annotation":
        raise FdcamError(f"{path}: root element is <{root.tag}>; expected <annotation>")
    spelled = {name.lower(): name for name in classes}
    labels, boxes, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name.lower() not in spelled:
            expected = "a VOC class" if classes is VOC_CLASSES else \
                f"one of the model's {len(classes)} category names"
            raise FdcamError(f"{path}: object {k} has class {name!r}; expected {expected}")
        box = obj.find("bndbox")
        try:
            if box is None:
                raise ValueError("no <bndbox>")
            coords = [float(box.findtext(tag) or "nan")
                      for tag in ("xmin", "ymin", "xmax", "ymax")]
            if not all(c == c for c in coords):  # NaN: a coordinate tag is missing
                raise ValueError("missing coordinate")
            if not all(math.isfinite(c) for c in coords):
                raise ValueError(f"coordinates {coords} are not finite")
        except ValueError as error:
            raise FdcamError(f"{path}: object {k} ({name}) has a bad <bndbox> ({error}); "
                             f"expected numeric xmin, ymin, xmax, ymax") from error
        if coords[0] > coords[2] or coords[1] > coords[3]:
            raise FdcamError(f"{path}: object {k} ({name}) has xmin > xmax or ymin > ymax: "
                             f"{coords}")
        labels.append(spelled[name.lower()])
        boxes.append(coords)
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return {
        "labels": labels,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "difficult": torch.tensor(difficult, dtype=torch.bool),
        "size": _voc_size(root, path),
    }


def _voc_size(root: ET.Element, path: Path) -> tuple[int, int] | None:
    """(height, width) of a VOC annotation's ``<size>``, None if absent."""
    if root.find("size") is None:
        return None
    try:
        width = int(float(root.findtext("size/width") or "nan"))
        height = int(float(root.findtext("size/height") or "nan"))
    except (ValueError, OverflowError) as error:
        raise FdcamError(f"{path}: bad <size> ({error}); expected a numeric width and height"
                         ) from error
    if width <= 0 or height <= 0:
        raise FdcamError(f"{path}: <size> is {width}x{height}; expected positive pixels")
    return height, width


def voc_class_boxes(annotation: dict[str, Any], classes: Sequence[str],
                    image_size: tuple[int, int]) -> dict[int, Any]:
    """A parsed VOC annotation as pointing-game boxes: class index -> `ClassBoxes`.

    The one conversion of VOC boxes in fdcam: 1-based inclusive corners minus 1, i.e.
    0-based inclusive pixels *of the original image*, with ``image_size`` (H, W) attached,
    so the map is resized to the original image before its peak is taken — TorchRay's
    pointing game, for every caller (the CLI's ``--boxes`` and Table II alike).
    """
    from fdcam.evaluation.pointing import ClassBoxes

    index = {name: i for i, name in enumerate(classes)}
    out = {}
    for name in dict.fromkeys(annotation["labels"]):
        rows = [k for k, label in enumerate(annotation["labels"]) if label == name]
        out[index[name]] = ClassBoxes(annotation["boxes"][rows].double() - 1.0,
                                      annotation["difficult"][rows], image_size)
    return out


def _voc_year_dir(root: Path) -> Path | None:
    for candidate in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if all((candidate / sub).is_dir()
               for sub in ("Annotations", "ImageSets", "JPEGImages")):
            return candidate
    return None


def _download_voc(root: Path, split: str) -> None:
    from torchvision.datasets import VOCDetection

    # torchvision creates <base>/VOCdevkit/VOC2007: find <base> from what the user gave.
    base = {"VOCdevkit": root.parent, "VOC2007": root.parent.parent}.get(root.name, root)
    base.mkdir(parents=True, exist_ok=True)
    try:
        VOCDetection(str(base), year="2007", image_set=split, download=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise FdcamError(f"could not download VOC2007 {split} into {base}: {error}") from error


class VOC2007(Dataset):
    """Pascal VOC 2007 images with their object classes and boxes (the pointing game set).

    `root` is ``VOCdevkit/`` or ``VOCdevkit/VOC2007`` (or the folder holding
    ``VOCdevkit/``); the split's ids come from ``ImageSets/Main/{split}.txt``. Items are
    ``(image, target)``: an RGB PIL image (or ``transform(image)``) and
    ``{"labels": list[str], "boxes": float [N, 4], "difficult": bool [N]}`` as
    `parse_voc_xml` returns it. ``ids[i]`` is item i's image id.

    ``download=True`` fetches the split through ``torchvision.datasets.VOCDetection``
    when it is not there yet (``test`` is a separate archive).
    """

    def __init__(self, root: str | Path, split: str = "val", download: bool = False,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        if split not in VOC_SPLITS:
            raise FdcamError(f"unknown VOC2007 split {split!r}; expected one of "
                             f"{', '.join(VOC_SPLITS)}")
        root = Path(root)
        year_dir = _voc_year_dir(root) if root.is_dir() else None
        if year_dir is None and download:
            _download_voc(root, split)
            year_dir = _voc_year_dir(root) if root.is_dir() else None
        if not root.is_dir():
            raise FdcamError(f"VOC2007 folder {root} does not exist; expected VOCdevkit/ or "
                             f"VOCdevkit/VOC2007 (or pass download=True)")
        if year_dir is None:
            raise FdcamError(f"{root} is not a VOC2007 tree; expected VOCdevkit/VOC2007 with "
                             f"Annotations/, ImageSets/Main/ and JPEGImages/")
        split_file = year_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise FdcamError(f"{split_file} is missing; expected the image ids of the "
                             f"{split!r} split")
        self.root = year_dir
        self.split = split
        self.transform = transform
        self.ids: list[str] = split_file.read_text().split()

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, i: int) -> dict[str, Any]:
        """The parsed annotation of item i without loading its image."""
        return parse_voc_xml(self.root / "Annotations" / f"{self.ids[i]}.xml")

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        target = self.annotation(i)
        image = open_rgb(self.root / "JPEGImages" / f"{self.ids[i]}.jpg")
        return (self.transform(image) if self.transform else image), target


def voc_multi_hot(labels: Sequence[str], difficult: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Image-level VOC classification targets from an annotation.

    Returns ``(present, ignore)``, two [20] tensors (float, bool): a class is present when
    any of its objects is; it is ignored when all of its objects are ``difficult``, which
    the VOC classification protocol leaves out of the average precision.
    """
    present = torch.zeros(len(VOC_CLASSES))
    easy = torch.zeros(len(VOC_CLASSES), dtype=torch.bool)
    flags = difficult.tolist() if difficult is not None else [False] * len(labels)
    for name, hard in zip(labels, flags, strict=True):
        k = VOC_CLASSES.index(name)
        present[k] = 1.0
        easy[k] |= not hard
    return present, present.bool() & ~easy
