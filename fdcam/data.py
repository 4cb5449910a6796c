"""The images of the paper's evaluation (§IV) and their offline stand-ins.

Three sources, one per profile (see DESIGN.md):

* ``offline`` — `offline_photos()`: real photos that ship inside installed packages
  (scikit-image, matplotlib, scikit-learn), kept only where EfficientNet-Lite0 recognises
  their object; `mosaics()`: deterministic 2×2 mosaics of them whose quadrants are
  ground-truth boxes, the offline discriminability set ("grid pointing game").
* ``paper`` — `ImageNetVal`: ILSVRC2012 val (the paper's 2,000 images are the committed
  manifest `data/imagenet_val_manifest.txt`, made by `paper_manifest()`); `VOC2007`: the
  Pascal VOC 2007 detection split with boxes, for the pointing game (Table II).
* ``imagenet-sample`` — `ImageNetSample`: the 1,000 photos of the public repository
  EliSchwartz/imagenet-sample-images (one per ImageNet-1k class, never committed:
  ``make data-imagenet-sample`` or ``IMAGENET_SAMPLE=DIR``); `imagenet_sample_mosaics`:
  250 seeded 2×2 mosaics of them, every photo used once.

Box conventions (both are ``[x0, y0, x1, y1]`` float tensors, x = column, y = row):

* `VOC2007` keeps the XML's numbers unchanged: **1-based, inclusive** pixel indices
  (the top-left pixel of an image is (1, 1); ``xmax`` is the last column inside).
* `mosaics()` uses **0-based, inclusive** pixel indices: pixel (x, y) of the mosaic lies in a
  box when ``x0 <= x <= x1`` and ``y0 <= y <= y1``, the convention of
  `fdcam.metrics.pointing_hit`. `voc_class_boxes` maps VOC boxes to it in the original
  image's pixels (the only conversion of VOC boxes; the pointing game then resizes the map
  to the original image, as TorchRay does).

Labels are canonical ImageNet-1k indices everywhere: the position of the class's WordNet
id in the sorted list of the 1000 ids (`imagenet_wnids()`), which is also the order of
`fdcam.models.imagenet_categories()` and of every torchvision ImageNet model's outputs.
`data/imagenet_wnids.txt` was taken from ``timm/data/_info/imagenet_synsets.txt`` in the
timm 1.0.29 wheel (Apache-2.0) found on this machine; `tests/test_data.py` checks it is
sorted, has 1000 distinct ids and agrees with torchvision's Imagenette class names.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from fdcam.errors import FdcamError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""The repository's committed data folder (the package is installed editable)."""

IMAGENET_WNIDS_FILE = DATA_DIR / "imagenet_wnids.txt"
PAPER_MANIFEST_FILE = DATA_DIR / "imagenet_val_manifest.txt"
OFFLINE_PHOTOS_FILE = DATA_DIR / "offline_photos.csv"

IMAGENET_VAL_SIZE = 50_000
PAPER_MANIFEST_SEED = 0
PAPER_MANIFEST_SIZE = 2_000

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval", "test")

_WNID = re.compile(r"n\d{8}")
_VAL_NAME = re.compile(r"ILSVRC2012_val_\d{8}\.JPEG")
_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
# How far above a flat val folder LOC_val_solution.csv may sit: the Kaggle download keeps
# it at the top, four levels above ILSVRC/Data/CLS-LOC/val/.
_SOLUTION_SEARCH_DEPTH = 4


# ----------------------------------------------------------------------------------------
# Offline photos and mosaics
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoSource:
    """Where a package photo lives and whether we keep it (our judgement, with the reason)."""

    name: str
    package: str  # the distribution that ships the file
    resource: str  # the file, relative to the importable package `module`
    module: str
    loader: str  # the public call that returns the same pixels
    keep: bool
    note: str


# The judgement is made on EfficientNet-Lite0's top-1 under `LoadedModel.preprocess` (a
# plain 224×224 resize, no crop, as in the paper); `data/offline_photos.csv` records it.
PHOTO_SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource("camera", "scikit-image", "camera.png", "skimage.data",
                "skimage.data.camera()", True, "a photographer behind a camera on a tripod"),
    PhotoSource("coffee", "scikit-image", "coffee.png", "skimage.data",
                "skimage.data.coffee()", True, "a cup of espresso"),
    PhotoSource("chelsea", "scikit-image", "chelsea.png", "skimage.data",
                "skimage.data.chelsea()", True,
                "a tabby cat; the three cat classes share the mass, Egyptian cat wins"),
    PhotoSource("motorcycle_left", "scikit-image", "motorcycle_left.png", "skimage.data",
                "skimage.data.stereo_motorcycle()[0]", True,
                "a motorcycle; ImageNet's nearest classes are moped and motor scooter"),
    PhotoSource("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                "matplotlib", "matplotlib.cbook.get_sample_data('grace_hopper.jpg')", True,
                "a portrait in US Navy uniform: military uniform is right"),
    PhotoSource("rocket", "scikit-image", "rocket.jpg", "skimage.data",
                "skimage.data.rocket()", False,
                "the launch towers win (drilling platform); missile is second"),
    PhotoSource("china", "scikit-learn", "images/china.jpg", "sklearn.datasets",
                "sklearn.datasets.load_sample_image('china.jpg')", False,
                "a pagoda seen as a bell cote at low probability; palace is not top-1"),
    PhotoSource("flower", "scikit-learn", "images/flower.jpg", "sklearn.datasets",
                "sklearn.datasets.load_sample_image('flower.jpg')", False,
                "a dahlia (no ImageNet class): daisy at low probability"),
    PhotoSource("astronaut", "scikit-image", "astronaut.png", "skimage.data",
                "skimage.data.astronaut()", False,
                "a portrait in a space suit: bobsled is wrong"),
)


@dataclass(frozen=True)
class Photo:
    """A package photo with the ImageNet class EfficientNet-Lite0 recognises in it."""

    name: str
    image: Image.Image
    label: int  # canonical ImageNet-1k index
    label_name: str
    probability: float  # EfficientNet-Lite0's recorded top-1 softmax probability


class Mosaic(NamedTuple):
    """A 2×2 mosaic of four photos; quadrant i is the ground-truth box of ``labels[i]``.

    Quadrants are in reading order: top-left, top-right, bottom-left, bottom-right.
    ``boxes`` [4, 4] are 0-based inclusive pixel indices ``x0, y0, x1, y1``.
    """

    image: Image.Image
    labels: list[int]
    boxes: Tensor
    names: list[str]


def load_package_photo(source: PhotoSource) -> Image.Image:
    """Open a photo from its installed package (no network: only files inside the wheel)."""
    path = Path(str(resources.files(source.module).joinpath(source.resource)))
    if not path.is_file():
        raise FdcamError(f"photo {source.name!r} is missing at {path}; expected the file that "
                         f"{source.package} ships (reinstall the pinned {source.package})")
    with Image.open(path) as image:
        image.load()
        return image


def offline_photos(path: str | Path = OFFLINE_PHOTOS_FILE) -> list[Photo]:
    """The kept package photos with their recorded EfficientNet-Lite0 top-1 classes.

    Reads `data/offline_photos.csv` (written by `write_offline_photos_csv`), loads each
    photo marked ``kept`` from its installed package and returns them in file order.
    """
    sources = {s.name: s for s in PHOTO_SOURCES}
    photos = []
    for row in read_offline_photos_csv(path):
        if row["kept"] != "yes":
            continue
        source = sources.get(row["name"])
        if source is None:
            raise FdcamError(f"{path}: unknown photo {row['name']!r}; "
                             f"expected one of {', '.join(sources)}")
        photos.append(Photo(row["name"], load_package_photo(source), int(row["label"]),
                            row["class_name"], float(row["probability"])))
    return photos


def read_offline_photos_csv(path: str | Path = OFFLINE_PHOTOS_FILE) -> list[dict[str, str]]:
    """The rows of `data/offline_photos.csv` as dicts (all candidates, kept or not)."""
    path = Path(path)
    columns = {"name", "package", "loader", "label", "class_name", "probability", "kept"}
    try:
        with path.open(newline="") as file:
            rows = list(csv.DictReader(file))
            header = set(rows[0]) if rows else set()
    except OSError as error:
        raise FdcamError(f"cannot read the offline photo list {path}: "
                         f"{error.strerror or error}") from error
    if not columns <= header:
        raise FdcamError(f"{path} is not an offline photo list; expected the columns "
                         f"{', '.join(sorted(columns))}")
    return rows


def predict_photos(model: Any = None) -> list[dict[str, str]]:
    """Run EfficientNet-Lite0 (or `model`, a `LoadedModel`) on every candidate photo.

    Returns one row per `PHOTO_SOURCES` entry with the top-1 class and its probability
    (rounded to 3 decimals), plus our keep/skip judgement: the content of the CSV.
    """
    from fdcam.models import load_model

    loaded = model if model is not None else load_model("efficientnet-lite0")
    x = torch.stack([loaded.preprocess(load_package_photo(s)) for s in PHOTO_SOURCES])
    with torch.no_grad():  # one batch: the model is in eval mode, so rows are independent
        probabilities, labels = loaded.model(x).softmax(-1).max(-1)
    return [{
        "name": source.name, "package": source.package, "loader": source.loader,
        "label": str(int(label)), "class_name": loaded.categories[int(label)],
        "probability": f"{float(probability):.3f}",
        "kept": "yes" if source.keep else "no", "note": source.note,
    } for source, probability, label in zip(PHOTO_SOURCES, probabilities, labels, strict=True)]


def write_offline_photos_csv(path: str | Path = OFFLINE_PHOTOS_FILE, model: Any = None) -> Path:
    """Regenerate `data/offline_photos.csv` from the model's predictions (`predict_photos`)."""
    rows = predict_photos(model)
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def quadrant_boxes(size: int | tuple[int, int] = 224) -> Tensor:
    """The four quadrants of a mosaic of `size` (H, W) as 0-based inclusive boxes [4, 4].

    Reading order (TL, TR, BL, BR). With an odd side the right/bottom quadrants are one
    pixel wider, so the four boxes tile the image exactly, without overlap.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if height < 2 or width < 2:
        raise FdcamError(f"mosaic size must be at least 2×2 pixels; got {height}×{width}")
    h, w = height // 2, width // 2
    return torch.tensor([
        [0, 0, w - 1, h - 1],
        [w, 0, width - 1, h - 1],
        [0, h, w - 1, height - 1],
        [w, h, width - 1, height - 1],
    ], dtype=torch.float32)


def mosaics(n: int, size: int | tuple[int, int] = 224, seed: int = 0,
            photos: Sequence[Photo] | None = None) -> list[Mosaic]:
    """`n` distinct 2×2 mosaics of four photos of four different classes, reproducible by seed.

    Each photo is resized (bilinear, aspect ratio not kept, like the models' preprocessing)
    to fill one quadrant exactly; `Mosaic.boxes` are those quadrants. Mosaics are drawn
    without repetition from every ordered choice of four photos with distinct labels
    (5 photos give 120), shuffled by ``random.Random(seed)``, which is stable across
    Python versions and platforms.
    """
    photos = list(photos) if photos is not None else offline_photos()
    if n < 0:
        raise FdcamError(f"number of mosaics must be >= 0; got {n}")
    arrangements = [p for p in itertools.permutations(range(len(photos)), 4)
                    if len({photos[i].label for i in p}) == 4]
    if n > len(arrangements):
        raise FdcamError(f"asked for {n} mosaics; {len(photos)} photos allow only "
                         f"{len(arrangements)} distinct ones of four different classes")
    random.Random(seed).shuffle(arrangements)
    quadrant_boxes(size)  # checks the size, even for n = 0
    rgb = [photo.image.convert("RGB") for photo in photos]
    items = []
    for arrangement in arrangements[:n]:
        canvas, boxes = _compose_mosaic([rgb[i] for i in arrangement], size)
        items.append(Mosaic(canvas, [photos[i].label for i in arrangement], boxes,
                            [photos[i].name for i in arrangement]))
    return items


def _compose_mosaic(images: Sequence[Image.Image],
                    size: int | tuple[int, int]) -> tuple[Image.Image, Tensor]:
    """Four images pasted in reading order into the quadrants of a mosaic of `size`, each
    resized (bilinear, aspect ratio not kept) to fill its quadrant: (canvas, boxes [4, 4])."""
    boxes = quadrant_boxes(size)
    height, width = (size, size) if isinstance(size, int) else size
    canvas = Image.new("RGB", (width, height))
    for (x0, y0, x1, y1), image in zip(boxes.long().tolist(), images, strict=True):
        tile = image.convert("RGB").resize((x1 - x0 + 1, y1 - y0 + 1),
                                           Image.Resampling.BILINEAR)
        canvas.paste(tile, (x0, y0))
    return canvas, boxes


# ----------------------------------------------------------------------------------------
# The imagenet-sample photos (EliSchwartz/imagenet-sample-images)
# ----------------------------------------------------------------------------------------

IMAGENET_SAMPLE_URL = "https://github.com/EliSchwartz/imagenet-sample-images"
IMAGENET_SAMPLE_DIR = DATA_DIR / "downloads" / "imagenet-sample"
"""Where ``make data-imagenet-sample`` clones the repository (git-ignored)."""
IMAGENET_SAMPLE_ENV = "IMAGENET_SAMPLE"
IMAGENET_SAMPLE_MOSAICS = 250  # 1,000 photos, four per mosaic, each used once

_SAMPLE_NAME = re.compile(r"(n\d{8})_.+\.jpe?g", re.IGNORECASE)
_GET_SAMPLE = (f"run `make data-imagenet-sample` (a shallow git clone of {IMAGENET_SAMPLE_URL}) "
               f"or set {IMAGENET_SAMPLE_ENV}=DIR to a folder of its photos")


def imagenet_sample_dir(root: str | Path | None = None) -> Path:
    """The folder of the imagenet-sample photos: `root`, else ``$IMAGENET_SAMPLE``, else
    `IMAGENET_SAMPLE_DIR` (where ``make data-imagenet-sample`` clones them)."""
    if root is None:
        root = os.environ.get(IMAGENET_SAMPLE_ENV) or IMAGENET_SAMPLE_DIR
    return Path(root).expanduser()


class ImageNetSample(Dataset):
    """One photo per ImageNet-1k class: the repository EliSchwartz/imagenet-sample-images.

    Files ``<wnid>_<name>.JPEG`` directly in the folder (e.g. ``n01440764_tench.JPEG``);
    the WordNet id gives the canonical label, its index in `imagenet_wnids()`. Other files
    (README.md, gallery.md) are ignored. Items are ``(image, label, name)``: an RGB PIL
    image (through `open_rgb`) or ``transform(image)``, the label, and the file's stem; in
    file-name order, which for the full set is label order. The repository does not say
    which ILSVRC split its photos come from.

    A missing folder, or one without such files, is a one-line `FdcamError` that says how
    to get the photos.

    >>> sample = ImageNetSample()  # doctest: +SKIP  ($IMAGENET_SAMPLE or data/downloads/)
    """

    def __init__(self, root: str | Path | None = None,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        folder = imagenet_sample_dir(root)
        if not folder.is_dir():
            raise FdcamError(f"the imagenet-sample photos are not at {folder}: {_GET_SAMPLE}")
        index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
        samples: list[tuple[Path, int]] = []
        for file in sorted(folder.iterdir()):
            match = _SAMPLE_NAME.fullmatch(file.name)
            if match is None or not file.is_file():
                continue
            if match.group(1) not in index:
                raise FdcamError(f"{file.name} in {folder} is named by {match.group(1)}, not an "
                                 f"ImageNet-1k WordNet id; expected names like "
                                 f"n01440764_tench.JPEG")
            samples.append((file, index[match.group(1)]))
        if not samples:
            raise FdcamError(f"{folder} holds no photo named like n01440764_tench.JPEG: "
                             f"{_GET_SAMPLE}")
        self.root = folder
        self.transform = transform
        self.samples = samples
        self.names: list[str] = [path.stem for path, _ in samples]
        self.labels: list[int] = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int, str]:
        image = self.image(i)
        return (self.transform(image) if self.transform else image), self.labels[i], \
            self.names[i]

    def image(self, i: int) -> Image.Image:
        """Photo `i` as an RGB PIL image."""
        return open_rgb(self.samples[i][0])


def imagenet_sample_groups(n_photos: int, seed: int = 0) -> list[tuple[int, ...]]:
    """A seeded permutation of the photo indices 0 … n_photos − 1 cut into groups of four.

    ``random.Random(seed).shuffle`` (stable across Python versions and platforms), then
    consecutive fours: ⌊n_photos / 4⌋ groups, every photo in exactly one (a remainder of
    n_photos mod 4 photos is left out). 1,000 photos: 250 groups.
    """
    if isinstance(n_photos, bool) or not isinstance(n_photos, int) or n_photos < 0:
        raise FdcamError(f"n_photos must be an int >= 0; got {n_photos!r}")
    order = list(range(n_photos))
    random.Random(seed).shuffle(order)
    return [tuple(order[i:i + 4]) for i in range(0, n_photos - n_photos % 4, 4)]


def imagenet_sample_mosaics(sample: ImageNetSample, n: int | None = None,
                            size: int | tuple[int, int] = 224, seed: int = 0) -> list[Mosaic]:
    """2×2 mosaics of the imagenet-sample photos, four distinct classes each, seeded.

    Mosaic g shows the photos of `imagenet_sample_groups` (len(sample), seed)[g] in reading
    order (TL, TR, BL, BR), each resized to fill its quadrant as in `mosaics`; its boxes
    are `quadrant_boxes` (size), exact. With the 1,000 photos: 250 mosaics
    (`IMAGENET_SAMPLE_MOSAICS`), every photo used once. `n`: the first n only (None: all).
    """
    groups = imagenet_sample_groups(len(sample), seed)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(groups):
            raise FdcamError(f"n must be between 0 and {len(groups)} (the {len(sample)} photos "
                             f"make {len(groups)} mosaics); got {n!r}")
        groups = groups[:n]
    quadrant_boxes(size)  # checks the size, even for n = 0
    items = []
    for group in groups:
        labels = [sample.labels[i] for i in group]
        names = [sample.names[i] for i in group]
        if len(set(labels)) != 4:
            raise FdcamError(f"mosaic of {', '.join(names)} repeats a class; expected one "
                             f"photo per ImageNet class in {sample.root}")
        canvas, boxes = _compose_mosaic([sample.image(i) for i in group], size)
        items.append(Mosaic(canvas, labels, boxes, names))
    return items


# ----------------------------------------------------------------------------------------
# ILSVRC2012 validation
# ----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _read_wnids(path: Path) -> tuple[str, ...]:
    try:
        wnids = tuple(path.read_text().split())
    except OSError as error:
        raise FdcamError(f"cannot read the ImageNet WordNet id list {path}: "
                         f"{error.strerror or error}; expected 1000 sorted ids") from error
    if len(wnids) != 1000 or list(wnids) != sorted(set(wnids)) or not all(
            _WNID.fullmatch(w) for w in wnids):
        raise FdcamError(f"{path} is not the ImageNet-1k WordNet id list; expected 1000 "
                         f"distinct sorted ids like n01440764")
    return wnids


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids, sorted: index = canonical class label."""
    return list(_read_wnids(IMAGENET_WNIDS_FILE))


def imagenet_val_name(number: int) -> str:
    """File name of ILSVRC2012 validation image `number` (1 … 50,000)."""
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def paper_manifest(seed: int = PAPER_MANIFEST_SEED, n: int = PAPER_MANIFEST_SIZE) -> list[str]:
    """The paper's "2,000 images randomly selected" from ILSVRC val, as a seeded sample.

    The authors did not publish their selection; ours is ``random.Random(seed).sample`` of
    the 50,000 known file names, returned sorted. `data/imagenet_val_manifest.txt` holds
    the default (seed 0, n 2000).
    """
    if not 0 <= n <= IMAGENET_VAL_SIZE:
        raise FdcamError(f"manifest size must be in 0…{IMAGENET_VAL_SIZE}; got {n}")
    numbers = random.Random(seed).sample(range(1, IMAGENET_VAL_SIZE + 1), n)
    return [imagenet_val_name(k) for k in sorted(numbers)]


def write_manifest(names: Sequence[str], path: str | Path, comment: str = "") -> Path:
    """Write file names one per line; `comment` lines go first, prefixed by ``#``."""
    path = Path(path)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(header + "".join(f"{name}\n" for name in names))
    return path


def read_manifest(path: str | Path) -> list[str]:
    """File names from a manifest: one per line; blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise FdcamError(f"cannot read the manifest {path}: {error.strerror or error}; "
                         f"expected a text file of image file names") from error
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _find_upwards(start: Path, name: str, depth: int) -> Path | None:
    for folder in [start, *start.parents][: depth + 1]:
        if (folder / name).is_file():
            return folder / name
    return None


def read_val_solution(path: str | Path) -> dict[str, str]:
    """``LOC_val_solution.csv`` → {image id (no extension): WordNet id of its first box}."""
    path = Path(path)
    try:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
                raise FdcamError(f"{path} is not LOC_val_solution.csv; expected the columns "
                                 f"ImageId,PredictionString")
            labels = {}
            for line, row in enumerate(reader, start=2):
                tokens = (row["PredictionString"] or "").split()
                if not tokens or not _WNID.fullmatch(tokens[0]):
                    raise FdcamError(f"{path}:{line}: PredictionString must start with a "
                                     f"WordNet id like n01440764; got {tokens[:1]}")
                labels[row["ImageId"]] = tokens[0]
    except OSError as error:
        raise FdcamError(f"cannot read {path}: {error.strerror or error}") from error
    return labels


class ImageNetVal(Dataset):
    """ILSVRC2012 validation images with canonical ImageNet-1k labels.

    Two layouts are understood (`root` may also be a folder holding ``val/``):

    * class subfolders named by WordNet id: ``root/n01440764/ILSVRC2012_val_00000293.JPEG``
      (torchvision's `ImageNet` and the PyTorch examples' ``valprep.sh``);
    * a flat folder of ``ILSVRC2012_val_XXXXXXXX.JPEG`` with ``LOC_val_solution.csv``
      (the Kaggle download) in it or up to four folders above, or passed as `solution`.

    Items are ``(image, label, file_name)``: an RGB PIL image, or ``transform(image)``
    (e.g. ``LoadedModel.preprocess``); the label is the canonical index (sorted WordNet
    ids) whichever classes are present. `manifest` (a path or a list of names) restricts
    and orders the items; every name in it must exist.

    >>> val = ImageNetVal("/data/imagenet/val", manifest=PAPER_MANIFEST_FILE)  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, manifest: str | Path | Sequence[str] | None = None,
                 transform: Callable[[Image.Image], Any] | None = None,
                 solution: str | Path | None = None) -> None:
        self.root = _imagenet_root(Path(root))
        self.transform = transform
        index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
        found = self._scan(self.root, index, solution)
        if manifest is not None:
            names = (read_manifest(manifest) if isinstance(manifest, str | Path)
                     else list(manifest))
            missing = [name for name in names if name not in found]
            if missing:
                raise FdcamError(f"{len(missing)} of the {len(names)} images in the manifest "
                                 f"are not in {self.root} (first: {missing[0]}); expected "
                                 f"all of them")
            found = {name: found[name] for name in names}
        self.samples: list[tuple[Path, int]] = list(found.values())
        self.names: list[str] = list(found)

    @staticmethod
    def _scan(root: Path, index: dict[str, int],
              solution: str | Path | None) -> dict[str, tuple[Path, int]]:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and _WNID.fullmatch(p.name))
        if folders:
            found = {}
            for folder in folders:
                if folder.name not in index:
                    raise FdcamError(f"{folder} is not named by an ImageNet-1k WordNet id; "
                                     f"expected one of the 1000 classes")
                for file in sorted(folder.iterdir()):
                    if file.suffix.lower() in _IMAGE_SUFFIXES:
                        found[file.name] = (file, index[folder.name])
            return found
        files = sorted(p for p in root.iterdir() if _VAL_NAME.fullmatch(p.name))
        if not files:
            raise FdcamError(f"{root} holds neither class subfolders (n01440764/…) nor "
                             f"ILSVRC2012_val_*.JPEG files; expected the ILSVRC2012 val set")
        csv_path = (Path(solution) if solution is not None
                    else _find_upwards(root, "LOC_val_solution.csv", _SOLUTION_SEARCH_DEPTH))
        if csv_path is None:
            raise FdcamError(f"{root} is a flat ILSVRC2012 val folder without labels; expected "
                             f"LOC_val_solution.csv in it or above it, or pass solution=")
        labels = read_val_solution(csv_path)
        found = {}
        for file in files:
            wnid = labels.get(file.stem)
            if wnid is None:
                raise FdcamError(f"{csv_path} has no label for {file.name}; expected a row "
                                 f"for every image in {root}")
            if wnid not in index:
                raise FdcamError(f"{csv_path}: {wnid} (for {file.name}) is not an "
                                 f"ImageNet-1k WordNet id")
            found[file.name] = (file, index[wnid])
        return found

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int, str]:
        path, label = self.samples[i]
        image = open_rgb(path)
        return (self.transform(image) if self.transform else image), label, path.name


def _imagenet_root(root: Path) -> Path:
    if not root.is_dir():
        raise FdcamError(f"ImageNet val folder {root} does not exist; expected ILSVRC2012 val "
                         f"images in class subfolders or a flat folder")
    # A user may point at the ImageNet root (train/, val/) instead of val/ itself.
    has_images = any(_WNID.fullmatch(p.name) or _VAL_NAME.fullmatch(p.name)
                     for p in root.iterdir())
    if not has_images and (root / "val").is_dir():
        return root / "val"
    return root


def open_rgb(path: Path) -> Image.Image:
    """Open an image file as RGB, upright and with its full tonal range.

    A few ImageNet JPEGs are CMYK or grayscale; a phone photo stores its orientation in
    EXIF (applied here, as a viewer does); 16-bit grayscale (PIL modes ``I;16``, ``I``) is
    scaled to 8 bits (v / 257) instead of being clipped to white; float images (``F``) in
    [0, 1] are scaled by 255. An unreadable file, or one larger than PIL's
    decompression-bomb limit, is a one-line `FdcamError`.
    """
    from PIL import ImageOps

    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright if upright is not None else image)
    except Image.DecompressionBombError as error:
        size = str(error.args[0]).split(" could be")[0].rstrip(", ")
        raise FdcamError(f"cannot read the image {path}: {size} (PIL's guard against "
                         f"decompression bombs; raise PIL.Image.MAX_IMAGE_PIXELS if it is "
                         f"a real photo)") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise FdcamError(f"cannot read the image {path}: {error}; expected a JPEG or PNG"
                         ) from error


def _to_rgb(image: Image.Image) -> Image.Image:
    """PIL's convert("RGB") clips 16-bit and 32-bit grayscale at 255: scale them first."""
    import numpy as np

    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        # 16-bit data (I;16, and PNG's 16-bit gray opened as I) spans 0..65535.
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0
        gray = np.clip(np.round(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    return image.convert("RGB")


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
    except ValueError as error:
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
    from fdcam.metrics import ClassBoxes

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
