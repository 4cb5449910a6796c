"""The offline profile's data: real photos that ship inside installed packages
(scikit-image, matplotlib, scikit-learn) and seeded 2×2 mosaics of them whose quadrants are
the pointing game's boxes."""

from __future__ import annotations

import csv
import itertools
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch import Tensor

from fdcam.errors import FdcamError
from fdcam.paths import DATA_DIR, PACKAGE_DATA_DIR, in_checkout

# Read by the library (`fdcam compare --example-photos`, the offline profile), so it ships
# inside the package; data/offline_photos.csv is the book's copy of it, kept equal by a test.
OFFLINE_PHOTOS_FILE = PACKAGE_DATA_DIR / "offline_photos.csv"
BOOK_OFFLINE_PHOTOS_FILE = DATA_DIR / "offline_photos.csv"


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

    Reads `OFFLINE_PHOTOS_FILE` (written by `write_offline_photos_csv`), loads each
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
    """The rows of `OFFLINE_PHOTOS_FILE` as dicts (all candidates, kept or not)."""
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
    """Regenerate `OFFLINE_PHOTOS_FILE` from the model's predictions (`predict_photos`).

    In a source checkout the default also refreshes the book's copy,
    ``data/offline_photos.csv``, so that the two stay equal.
    """
    rows = predict_photos(model)
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if path == OFFLINE_PHOTOS_FILE and in_checkout():
        shutil.copyfile(path, BOOK_OFFLINE_PHOTOS_FILE)
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
        canvas, boxes = compose_mosaic([rgb[i] for i in arrangement], size)
        items.append(Mosaic(canvas, [photos[i].label for i in arrangement], boxes,
                            [photos[i].name for i in arrangement]))
    return items


def compose_mosaic(images: Sequence[Image.Image],
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
