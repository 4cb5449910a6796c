"""Stand-in datasets with the exact directory structures of ILSVRC2012 val and VOC2007.

The paper profile reads two datasets that cannot ship with the repository. The dry run of
``make reproduce`` and the tests need trees that *look* like them to every loader —
`fdcam.evaluation.imagenet.ImageNetVal`, `fdcam.evaluation.voc.VOC2007`, torchvision-style
paths, the fine-tuning and the evaluation — while holding a handful of images. This module
writes them:

* `write_imagenet_val`: ILSVRC2012 val in either layout that `ImageNetVal` understands,
  always with ``LOC_val_solution.csv`` (``ImageId,PredictionString`` with boxes, as in the
  Kaggle download) and ``LOC_synset_mapping.txt``:

  - ``layout="flat"`` (Kaggle): ``root/LOC_val_solution.csv``,
    ``root/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_XXXXXXXX.JPEG``;
  - ``layout="folders"`` (``valprep.sh``): ``root/val/n01440764/ILSVRC2012_val_….JPEG``,
    the CSV beside ``val/``.

  File names are the first images of the paper's manifest, so the paper profile's
  manifest-based selection finds them; labels are seeded WordNet ids.
* `write_voc2007`: ``root/VOCdevkit/VOC2007/{JPEGImages, Annotations,
  ImageSets/Main}`` with ``train.txt``, ``val.txt``, ``trainval.txt`` and the per-class
  ``{class}_{split}.txt`` files (1 / −1, and 0 where only ``difficult`` objects are);
  annotations in the VOC XML schema (size, segmented, objects with pose, truncated,
  difficult and 1-based inclusive boxes), with multi-object and multi-class images and
  ``difficult`` flags, including a class present only as difficult objects.

Images are JPEGs of the datasets' typical sizes (500×375, 375×500, 500×333, …): crops of
the photos that ship inside installed packages (``content="photos"``, the default) or
seeded noise (``content="noise"``). Everything is deterministic in `seed`.

`write_standins` makes both under one folder, once: a stamp file records the settings, a
second call with the same settings returns at once, and a folder it did not write is never
overwritten.

Example::

    from scripts.standins import write_standins
    trees = write_standins("data/cache/standins", n_imagenet=3, n_voc_train=4, n_voc_val=2)
    ImageNetVal(trees.imagenet_val), VOC2007(trees.voc_root, "val")
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from fdcam.checks import check_choice
from fdcam.errors import FdcamError
from fdcam.evaluation.imagenet import PAPER_MANIFEST_FILE, imagenet_wnids, read_manifest
from fdcam.evaluation.photos import PHOTO_SOURCES, load_package_photo
from fdcam.evaluation.voc import VOC_CLASSES

Layout = Literal["flat", "folders"]
Content = Literal["photos", "noise"]

LAYOUTS: tuple[str, ...] = ("flat", "folders")
CONTENTS: tuple[str, ...] = ("photos", "noise")

# (width, height): the commonest sizes of ILSVRC2012 val and VOC2007 images.
IMAGENET_SIZES: tuple[tuple[int, int], ...] = (
    (500, 375), (500, 333), (375, 500), (500, 400), (333, 500), (500, 500), (400, 300))
VOC_SIZES: tuple[tuple[int, int], ...] = (
    (500, 375), (500, 333), (375, 500), (353, 500), (500, 366), (500, 332))

STAMP_NAME = "standins.json"
_STAMP_FORMAT = "fdcam-standins/1"
_POSES = ("Unspecified", "Left", "Right", "Frontal", "Rear")


@dataclass(frozen=True)
class StandIns:
    """Where `write_standins` put the trees: pass these as IMAGENET_VAL and VOC_ROOT."""

    imagenet_val: Path  # the folder of val images (or of class subfolders)
    voc_root: Path  # the VOCdevkit folder
    imagenet_names: tuple[str, ...]  # the image file names, in manifest order
    voc_train_ids: tuple[str, ...]
    voc_val_ids: tuple[str, ...]


# ----------------------------------------------------------------------------- images


@lru_cache(maxsize=1)
def _photos() -> tuple[Image.Image, ...]:
    return tuple(load_package_photo(source).convert("RGB") for source in PHOTO_SOURCES)


def canvas(rng: random.Random, size: tuple[int, int], content: Content) -> Image.Image:
    """An RGB image of `size` (W, H): a random crop of a package photo, or seeded noise."""
    width, height = size
    if content == "noise":
        pixels = np.random.default_rng(rng.getrandbits(32)).integers(
            0, 256, size=(height, width, 3), dtype=np.uint8)
        return Image.fromarray(pixels, "RGB")
    photo = rng.choice(_photos())
    # Scale so the photo covers the canvas, then crop a random window of the canvas's size.
    scale = max(width / photo.width, height / photo.height) * rng.uniform(1.0, 1.5)
    scaled = photo.resize((max(width, round(photo.width * scale)),
                           max(height, round(photo.height * scale))),
                          Image.Resampling.BILINEAR)
    x0 = rng.randint(0, scaled.width - width)
    y0 = rng.randint(0, scaled.height - height)
    return scaled.crop((x0, y0, x0 + width, y0 + height))


def _save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=90)


def _check_count(value: int, name: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise FdcamError(f"{name} must be an int >= {minimum}; got {value!r}")


# ----------------------------------------------------------------------------- ImageNet


def write_imagenet_val(root: str | Path, n_images: int = 3, *, layout: Layout = "flat",
                       names: Sequence[str] | None = None, seed: int = 0,
                       content: Content = "photos") -> Path:
    """Write an ILSVRC2012 val tree of `n_images` JPEGs under `root`; return the val folder.

    `names` defaults to the first `n_images` of the paper's manifest. Labels are seeded
    WordNet ids; the first two images share one, so a class holds several images.
    ``LOC_val_solution.csv`` (with one or two boxes per image) and
    ``LOC_synset_mapping.txt`` are written at `root` in both layouts (module docstring).
    """
    check_choice(layout, "layout", LAYOUTS)
    check_choice(content, "content", CONTENTS)
    _check_count(n_images, "n_images")
    chosen = list(names) if names is not None else read_manifest(PAPER_MANIFEST_FILE)[:n_images]
    if len(chosen) != n_images:
        raise FdcamError(f"{len(chosen)} image names for n_images={n_images}; "
                         f"expected as many names as images")
    root = Path(root)
    rng = random.Random(seed)
    wnids = imagenet_wnids()
    labels = [rng.choice(wnids) for _ in chosen]
    if len(labels) > 1:
        labels[1] = labels[0]
    val = (root / "ILSVRC" / "Data" / "CLS-LOC" / "val") if layout == "flat" else root / "val"
    rows = []
    for name, wnid in zip(chosen, labels, strict=True):
        size = rng.choice(IMAGENET_SIZES)
        folder = val if layout == "flat" else val / wnid
        _save_jpeg(canvas(rng, size, content), folder / name)
        boxes = []
        for _ in range(rng.choice((1, 1, 2))):
            x0, y0 = rng.randrange(size[0] // 2), rng.randrange(size[1] // 2)
            x1 = rng.randrange(x0 + 10, size[0])
            y1 = rng.randrange(y0 + 10, size[1])
            boxes.append(f"{wnid} {x0} {y0} {x1} {y1}")
        rows.append((Path(name).stem, " ".join(boxes) + " "))
    val.mkdir(parents=True, exist_ok=True)
    with (root / "LOC_val_solution.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["ImageId", "PredictionString"])
        writer.writerows(sorted(rows))
    from fdcam.models import imagenet_categories

    mapping = "".join(f"{w} {c}\n" for w, c in zip(wnids, imagenet_categories(), strict=True))
    (root / "LOC_synset_mapping.txt").write_text(mapping)
    return val


# ----------------------------------------------------------------------------- VOC2007


@dataclass(frozen=True)
class _VocObject:
    name: str
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax: 1-based, inclusive
    difficult: bool
    truncated: bool
    pose: str


def _voc_objects(rng: random.Random, size: tuple[int, int], index: int) -> list[_VocObject]:
    """One to four objects. Every image whose index ≡ 0 (mod 3) has two classes and two
    objects of the first; index ≡ 1 (mod 4) adds a class present only as a difficult
    object; the rest are random, with a 1-in-8 chance of a difficult object."""
    width, height = size
    first, second, third = rng.sample(VOC_CLASSES, 3)
    plan = [(first, False)]
    if index % 3 == 0:
        plan += [(first, False), (second, False)]
    if index % 4 == 1:
        plan.append((third, True))
    if len(plan) == 1 and rng.random() < 0.5:
        plan.append((second, rng.random() < 0.125))
    objects = []
    for name, difficult in plan:
        w = rng.randint(max(8, width // 6), width // 2)
        h = rng.randint(max(8, height // 6), height // 2)
        x0 = rng.randint(1, width - w + 1)
        y0 = rng.randint(1, height - h + 1)
        box = (x0, y0, x0 + w - 1, y0 + h - 1)
        truncated = box[0] == 1 or box[1] == 1 or box[2] == width or box[3] == height
        objects.append(_VocObject(name, box, difficult, truncated, rng.choice(_POSES)))
    return objects


def _voc_xml(image_id: str, size: tuple[int, int], objects: Sequence[_VocObject]) -> str:
    parts = [
        "<annotation>",
        "\t<folder>VOC2007</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>The VOC2007 Database</database>",
        "\t\t<annotation>PASCAL VOC2007</annotation>",
        "\t\t<image>fdcam stand-in</image>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{size[0]}</width>",
        f"\t\t<height>{size[1]}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj.box
        parts += [
            "\t<object>",
            f"\t\t<name>{escape(obj.name)}</name>",
            f"\t\t<pose>{obj.pose}</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{xmin}</xmin>",
            f"\t\t\t<ymin>{ymin}</ymin>",
            f"\t\t\t<xmax>{xmax}</xmax>",
            f"\t\t\t<ymax>{ymax}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def write_voc2007(root: str | Path, *, n_train: int = 4, n_val: int = 2, seed: int = 0,
                  content: Content = "photos") -> Path:
    """Write a VOC2007 tree under `root` (``root/VOCdevkit/VOC2007``); return VOCdevkit.

    Image ids are six digits, as VOC's; train takes the first `n_train`, val the next
    `n_val` (both splits follow the multi-object plan of `_voc_objects`). Each object's box
    is filled with a crop of another picture, so the objects are visible in the image.
    """
    check_choice(content, "content", CONTENTS)
    _check_count(n_train, "n_train")
    _check_count(n_val, "n_val")
    devkit = Path(root) / "VOCdevkit"
    year = devkit / "VOC2007"
    main = year / "ImageSets" / "Main"
    for sub in ("Annotations", "JPEGImages"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    main.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ids = [f"{2 * k + 5:06d}" for k in range(n_train + n_val)]  # 000005, 000007, …
    splits = {"train": ids[:n_train], "val": ids[n_train:]}
    presence: dict[str, dict[str, int]] = {}  # id -> class -> 1 (easy) / 0 (difficult only)
    for index, image_id in enumerate(ids):
        size = rng.choice(VOC_SIZES)
        image = canvas(rng, size, content)
        objects = _voc_objects(rng, size, index)
        for obj in objects:
            xmin, ymin, xmax, ymax = obj.box
            patch = canvas(rng, (xmax - xmin + 1, ymax - ymin + 1), content)
            image.paste(patch, (xmin - 1, ymin - 1))
            flag = presence.setdefault(image_id, {}).get(obj.name, 0)
            presence[image_id][obj.name] = max(flag, int(not obj.difficult))
        _save_jpeg(image, year / "JPEGImages" / f"{image_id}.jpg")
        (year / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, size, objects))
    splits["trainval"] = ids
    for split, members in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in members))
        for name in VOC_CLASSES:
            lines = []
            for image_id in members:
                flag = presence[image_id].get(name)
                lines.append(f"{image_id} {-1 if flag is None else flag:2d}\n")
            (main / f"{name}_{split}.txt").write_text("".join(lines))
    return devkit


# ----------------------------------------------------------------------------- both


def write_standins(root: str | Path, *, n_imagenet: int = 3, n_voc_train: int = 4,
                   n_voc_val: int = 2, layout: Layout = "flat", seed: int = 0,
                   content: Content = "photos") -> StandIns:
    """Both trees under `root` (``imagenet/`` and ``voc/``), written once.

    A stamp ``root/standins.json`` records the settings and whether the trees are complete:
    the same settings again return at once; other settings, or an interrupted write, make
    the trees anew. A non-empty `root` without the stamp is not ours and stays untouched
    (an `FdcamError`).
    """
    check_choice(layout, "layout", LAYOUTS)
    root = Path(root)
    settings = {"format": _STAMP_FORMAT, "n_imagenet": n_imagenet, "n_voc_train": n_voc_train,
                "n_voc_val": n_voc_val, "layout": layout, "seed": seed, "content": content}
    stamp = root / STAMP_NAME
    if stamp.is_file():
        try:
            saved = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            saved = {}
        if saved == {"settings": settings, "complete": True}:
            return read_standins(root)
        for sub in ("imagenet", "voc"):
            shutil.rmtree(root / sub, ignore_errors=True)
    elif root.exists() and any(root.iterdir()):
        raise FdcamError(f"{root} is not empty and has no {STAMP_NAME}; stand-in trees are "
                         f"written only into an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"settings": settings, "complete": False}) + "\n")
    write_imagenet_val(root / "imagenet", n_imagenet, layout=layout, seed=seed,
                       content=content)
    write_voc2007(root / "voc", n_train=n_voc_train, n_val=n_voc_val, seed=seed,
                  content=content)
    stamp.write_text(json.dumps({"settings": settings, "complete": True}) + "\n")
    return read_standins(root)


def read_standins(root: str | Path) -> StandIns:
    """The trees `write_standins` completed under `root` (an `FdcamError` if it did not)."""
    root = Path(root)
    try:
        saved = json.loads((root / STAMP_NAME).read_text())
        settings = saved["settings"]
        layout, n_imagenet = settings["layout"], settings["n_imagenet"]
        complete = saved["complete"] is True
    except (OSError, ValueError, KeyError, TypeError):
        complete = False
    if not complete:
        raise FdcamError(f"no complete stand-in trees in {root}; write them with "
                         f"write_standins (the dry run's step standins)")
    imagenet = root / "imagenet"
    val = imagenet / "ILSVRC" / "Data" / "CLS-LOC" / "val" if layout == "flat" else imagenet / "val"
    devkit = root / "voc" / "VOCdevkit"
    main = devkit / "VOC2007" / "ImageSets" / "Main"
    return StandIns(val, devkit, tuple(read_manifest(PAPER_MANIFEST_FILE)[:n_imagenet]),
                    tuple((main / "train.txt").read_text().split()),
                    tuple((main / "val.txt").read_text().split()))
