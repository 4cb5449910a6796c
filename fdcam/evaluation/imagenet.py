"""ILSVRC2012 val (the paper's 2,000 seeded images, manifest committed) and the
imagenet-sample photos (one per class, EliSchwartz/imagenet-sample-images) with mosaics."""

from __future__ import annotations

import csv
import os
import random
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from fdcam.errors import FdcamError
from fdcam.evaluation.images import IMAGE_SUFFIXES, open_rgb
from fdcam.evaluation.photos import Mosaic, compose_mosaic, quadrant_boxes
from fdcam.paths import DATA_DIR, PACKAGE_DATA_DIR

# Read by the library itself, so they ship inside the package (an installed wheel has no
# data/); data/imagenet_val_manifest.txt is the book's copy of the manifest, kept equal by a
# test.
IMAGENET_WNIDS_FILE = PACKAGE_DATA_DIR / "imagenet_wnids.txt"
PAPER_MANIFEST_FILE = PACKAGE_DATA_DIR / "imagenet_val_manifest.txt"

IMAGENET_VAL_SIZE = 50_000
PAPER_MANIFEST_SEED = 0
PAPER_MANIFEST_SIZE = 2_000

_WNID = re.compile(r"n\d{8}")
_VAL_NAME = re.compile(r"ILSVRC2012_val_\d{8}\.JPEG")
# How far above a flat val folder LOC_val_solution.csv may sit: the Kaggle download keeps
# it at the top, four levels above ILSVRC/Data/CLS-LOC/val/.
_SOLUTION_SEARCH_DEPTH = 4


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
        canvas, boxes = compose_mosaic([sample.image(i) for i in group], size)
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
    the 50,000 known file names, returned sorted. `PAPER_MANIFEST_FILE` holds
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
                    if file.suffix.lower() in IMAGE_SUFFIXES:
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
