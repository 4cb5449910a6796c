"""Figs. 1 and 4 (chapter 04): which images they explain, and the images themselves
(`fdcam.paper.figure_findings` writes what they show).

The imagenet-sample profile chooses its images by rules fixed before any map was drawn,
on the model's probabilities alone:

* **Fig. 1** (`two_class_quadrants`, `first_two_class_mosaic`): the first of the profile's
  pointing-game mosaics, in their seeded order, whose most probable quadrant class has a
  softmax probability of at least `FIG1_DOMINANT` (50 %) and whose least probable one less
  than `FIG1_WEAK` (1 %); it is explained for those two classes (the paper's dog 97.12 %
  and cat 0.68 %). With p ≥ 50 % the dominant class is the mosaic's top-1.
* **Fig. 4** (`first_recognised`): the first `FIG4_PHOTOS` (4, as in the paper) photos of
  the profile's faithfulness order whose top-1 class is their label, each explained for it.

The other profiles (offline, paper, smoke) explain the package photos that their notebook
parameters name; `PACKAGE_FIG1_MOSAIC`, `PACKAGE_FIG1_PHOTOS` and `PACKAGE_FIG4_PHOTOS` are
the defaults, picked for their probabilities before any map was looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from fdcam.errors import FdcamError
from fdcam.models import LoadedModel
from fdcam.paper.figure_data import image_tensor
from fdcam.paper.setups import Setup

FIG1_DOMINANT = 0.5
"""Fig. 1's rule: the dominant quadrant class has a softmax probability ≥ this."""
FIG1_WEAK = 0.01
"""Fig. 1's rule: the weak (least probable) quadrant class has a probability < this."""
FIG4_PHOTOS = 4
"""Fig. 4's rule: how many photos (the paper shows four)."""

PACKAGE_FIG1_MOSAIC = 8
"""Offline, paper and smoke profiles: Fig. 1's mosaic, an index into ``mosaics(…, seed)``."""
PACKAGE_FIG1_PHOTOS = ("chelsea", "coffee")
"""Fig. 1's two quadrants (package photos), dominant class first."""
PACKAGE_FIG4_PHOTOS = ("camera", "motorcycle_left", "chelsea")
"""Fig. 4's package photos (their classes: data/offline_photos.csv)."""

# ------------------------------------------------------------------------------ the rules


def two_class_quadrants(quadrant_probabilities: Sequence[float] | Tensor,
                        dominant: float = FIG1_DOMINANT,
                        weak: float = FIG1_WEAK) -> tuple[int, int] | None:
    """Fig. 1's rule for one mosaic: (most probable quadrant, least probable quadrant) when
    the first's class has p ≥ `dominant` and the second's p < `weak`; else None.

    quadrant_probabilities: [4], the softmax probability of each quadrant's class in reading
    order. Ties go to the first quadrant in reading order.
    """
    p = [float(v) for v in quadrant_probabilities]
    if len(p) < 2:
        raise FdcamError(f"a mosaic needs at least two quadrant probabilities; got {len(p)}")
    top = max(range(len(p)), key=lambda q: (p[q], -q))
    low = min(range(len(p)), key=lambda q: (p[q], q))
    return (top, low) if p[top] >= dominant and p[low] < weak else None


def first_two_class_mosaic(quadrant_probabilities: Iterable[Sequence[float] | Tensor],
                           dominant: float = FIG1_DOMINANT,
                           weak: float = FIG1_WEAK) -> tuple[int, tuple[int, int]]:
    """Fig. 1's rule over mosaics in their order: the index of the first that meets
    `two_class_quadrants`, and its (dominant, weak) quadrants. The iterable is read lazily,
    up to that mosaic only; none meeting the rule is a one-line `FdcamError`."""
    count = 0
    for index, probabilities in enumerate(quadrant_probabilities):
        count += 1
        quadrants = two_class_quadrants(probabilities, dominant, weak)
        if quadrants is not None:
            return index, quadrants
    raise FdcamError(f"none of the {count} mosaics has a quadrant class with p >= "
                     f"{dominant:g} and one with p < {weak:g}")


def first_recognised(predictions: Iterable[tuple[int, int]], k: int = FIG4_PHOTOS) -> list[int]:
    """Fig. 4's rule: the indices of the first `k` (top-1, label) pairs whose top-1 is the
    label. Read lazily, up to the k-th such pair; fewer than k is a one-line `FdcamError`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FdcamError(f"k must be an int >= 1; got {k!r}")
    chosen: list[int] = []
    count = 0
    for index, (top1, label) in enumerate(predictions):
        count += 1
        if top1 == label:
            chosen.append(index)
            if len(chosen) == k:
                return chosen
    raise FdcamError(f"only {len(chosen)} of {count} photos have their label as top-1; "
                     f"Fig. 4 needs {k}")


# ---------------------------------------------------------------------------- the images


@dataclass(frozen=True)
class Fig1Image:
    """Fig. 1's image: a 2×2 mosaic and the quadrants explained, dominant class first.

    ``x`` [3, H, W] normalised; ``labels`` the quadrants' classes in reading order;
    ``boxes`` [4, 4] the quadrants (xyxy, corners inclusive); ``names`` the quadrants'
    photos (None: one photo per class, so the class names it); ``probabilities``
    [num_classes] the model's softmax on the mosaic; ``quadrants`` the explained ones;
    ``chosen_by`` a sentence saying how the mosaic was chosen.
    """

    image_id: str
    x: Tensor
    labels: list[int]
    boxes: Tensor
    names: list[str] | None
    probabilities: Tensor
    quadrants: tuple[int, ...]
    chosen_by: str

    @property
    def classes(self) -> list[int]:
        """The explained classes, dominant first."""
        return [self.labels[q] for q in self.quadrants]


@dataclass(frozen=True)
class Fig4Images:
    """Fig. 4's photos: ``x`` [N, 3, H, W] normalised, ``classes`` [N] explained,
    ``probabilities`` [N, num_classes] the model's softmax; ``chosen_by`` a sentence."""

    image_ids: list[str]
    x: Tensor
    classes: list[int]
    probabilities: Tensor
    chosen_by: str


def _softmax(loaded: LoadedModel, x: Tensor) -> Tensor:
    """Softmax [N, num_classes] (on the CPU) of images x [N, 3, H, W]."""
    with torch.no_grad():
        return loaded.model(x).softmax(dim=1).cpu()


def package_fig1(loaded: LoadedModel, mosaic: int | None = None,
                 photos: Sequence[str] | None = None, *, seed: int = 0,
                 device: str = "cpu") -> Fig1Image:
    """Fig. 1 on the package photos: mosaic `mosaic` of ``mosaics(…, seed)`` (None:
    `PACKAGE_FIG1_MOSAIC`), explained for the quadrants of `photos` (None:
    `PACKAGE_FIG1_PHOTOS`), in that order."""
    from fdcam.evaluation.photos import mosaics

    index = PACKAGE_FIG1_MOSAIC if mosaic is None else mosaic
    names = list(PACKAGE_FIG1_PHOTOS if photos is None else photos)
    chosen = mosaics(index + 1, seed=seed)[index]
    missing = [name for name in names if name not in chosen.names]
    if missing:
        raise FdcamError(f"fig1_photos: {missing[0]!r} is not in mosaic {index} "
                         f"({', '.join(chosen.names)})")
    x = loaded.preprocess(chosen.image).to(device)
    how = (f"Mosaic {index} of the package photos (`mosaics(…, seed={seed})`), explained for "
           f"the quadrants of {' and '.join(names)}: the parameters `fig1_mosaic` and "
           f"`fig1_photos`")
    if mosaic is None and photos is None:
        how += (", whose defaults were picked for their probabilities (a dominant and a weak "
                "class) before any map was looked at")
    return Fig1Image(f"mosaic{index:02d}", x, list(chosen.labels), chosen.boxes,
                     list(chosen.names), _softmax(loaded, x[None])[0],
                     tuple(chosen.names.index(name) for name in names), how + ".")


def sample_fig1(setup: Setup, dominant: float = FIG1_DOMINANT,
                weak: float = FIG1_WEAK) -> Fig1Image:
    """Fig. 1 by the rule (`first_two_class_mosaic`) on `setup`'s pointing-game mosaics, in
    their seeded order, with its pointing model."""
    model, ids = setup.pointing_model, setup.image_ids("pointing")

    def image(image_id: str) -> Tensor:
        return image_tensor(setup.pointing_images[image_id].image).to(setup.device)

    def quadrant_probabilities() -> Iterable[Tensor]:
        for image_id in ids:
            labels = list(setup.pointing_images[image_id].boxes)
            yield _softmax(model, image(image_id)[None])[0][labels]

    index, quadrants = first_two_class_mosaic(quadrant_probabilities(), dominant, weak)
    image_id = ids[index]
    x = image(image_id)
    item = setup.pointing_images[image_id]  # one box per quadrant, in reading order
    labels = list(item.boxes)
    boxes = torch.cat([item.boxes[label].boxes for label in labels]).float()
    how = (f"`{image_id}`, the first of the profile's {len(ids):,} pointing-game mosaics in "
           f"their seeded order whose most probable quadrant class has p ≥ {100 * dominant:g} % "
           f"and whose least probable one p < {100 * weak:g} % (the rule above; "
           f"{index} mosaic{'s' if index != 1 else ''} before it did not meet it), explained "
           f"for those two classes.")
    return Fig1Image(image_id, x, labels, boxes, None, _softmax(model, x[None])[0], quadrants,
                     how)


def package_fig4(loaded: LoadedModel, photos: Sequence[str] | None = None, *,
                 device: str = "cpu") -> Fig4Images:
    """Fig. 4 on the package photos `photos` (None: `PACKAGE_FIG4_PHOTOS`), each explained
    for the class EfficientNet-Lite0 recognises in it (data/offline_photos.csv)."""
    from fdcam.evaluation.photos import offline_photos

    names = list(PACKAGE_FIG4_PHOTOS if photos is None else photos)
    by_name = {photo.name: photo for photo in offline_photos()}
    chosen = [by_name[name] for name in names]
    x = torch.stack([loaded.preprocess(photo.image) for photo in chosen]).to(device)
    how = (f"The package photos {', '.join(names)} (the parameter `fig4_photos`), each "
           f"explained for the class EfficientNet-Lite0 recognises in it (its top-1, recorded "
           f"in `data/offline_photos.csv`).")
    return Fig4Images(names, x, [photo.label for photo in chosen], _softmax(loaded, x), how)


def sample_label(image_id: str) -> int:
    """The ImageNet class of an imagenet-sample photo from its name (``n01440764_tench``:
    the WordNet id's index in `imagenet_wnids`)."""
    from fdcam.evaluation.imagenet import imagenet_wnids

    wnid = image_id.split("_", 1)[0]
    wnids = imagenet_wnids()
    if wnid not in wnids:
        raise FdcamError(f"{image_id!r} does not start with an ImageNet-1k WordNet id; "
                         f"expected names like n01440764_tench")
    return wnids.index(wnid)


def sample_fig4(setup: Setup, k: int = FIG4_PHOTOS) -> Fig4Images:
    """Fig. 4 by the rule (`first_recognised`) on `setup`'s faithfulness photos, in their
    seeded order, each explained for its label (= its top-1) with the setup's model."""
    images = setup.faithfulness_images

    def image(index: int) -> Tensor:
        return image_tensor(images[index][1]).to(setup.device)

    def predictions() -> Iterable[tuple[int, int]]:
        for index, (image_id, _) in enumerate(images):
            top1 = int(_softmax(setup.model, image(index)[None])[0].argmax())
            yield top1, sample_label(image_id)

    chosen = first_recognised(predictions(), k)
    x = torch.stack([image(i) for i in chosen])
    ids = [images[i][0] for i in chosen]
    skipped = chosen[-1] + 1 - k
    how = (f"The photos {', '.join(f'`{i}`' for i in ids)}: the first {k} of the profile's "
           f"{len(images):,} photos in their seeded order whose top-1 class is their label "
           f"(the rule above; {skipped} photo{'s' if skipped != 1 else ''} before them "
           f"{'were' if skipped != 1 else 'was'} skipped), each explained for that class.")
    return Fig4Images(ids, x, [sample_label(i) for i in ids], _softmax(setup.model, x), how)


def recognised(rows: pd.DataFrame) -> tuple[int, int]:
    """How many imagenet-sample photos the model recognises: of the photos in `rows`
    (results rows with ``image`` and ``target``, the explained top-1 class), those whose
    top-1 class is the photo's own (`sample_label`), and how many photos there are."""
    if "error" in rows.columns:  # an image that failed has no class to compare
        rows = rows[rows["error"].isna()]
    first = rows.drop_duplicates("image")
    hits = sum(int(target) == sample_label(str(image))
               for image, target in zip(first["image"], first["target"], strict=True))
    return hits, len(first)
