"""One `Setup` per profile: the models, the images and the methods of each table.

Relative paths given to `setup` are taken from the repository root, whatever the working
directory (papermill runs the notebooks in ``book/`` or ``tests/nbval/``).

Speed: `setup` freezes (``requires_grad=False``) the parameters of the layers before the
target layer's last convolution (`freeze_body`). ∂f/∂A is unchanged — every map is the
same to the bit — but pytorch-grad-cam's methods then back-propagate from the logits to A
only, instead of into the weight gradients of the whole body: 3–5× faster on a CPU.

``dry_run=True`` (paper profile) uses random weights and stand-in datasets to check the
whole pipeline without a GPU.
"""

from __future__ import annotations

import atexit
import dataclasses
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from fdcam.checks import check_device, check_dry_run, check_int, check_optional_int
from fdcam.errors import FdcamError
from fdcam.evaluation.faithfulness import (
    STEP_FRACTION,
)
from fdcam.evaluation.pointing import ClassBoxes
from fdcam.evaluation.runner import ImageSource
from fdcam.models import LoadedModel
from fdcam.paper.names import check_profile, method_label
from fdcam.paper.settings import (
    HEAVY_METHODS,
    RESULTS_ROOT,
    SAMPLE_MODEL,
    SAMPLE_SWISH_HEAVY_IMAGES,
    SAMPLE_SWISH_IMAGES,
    SETTINGS,
    ProfileSettings,
)
from fdcam.paths import base_dir, from_base


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
            where = str(self.results_dir.relative_to(base_dir()))
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
          imagenet_sample: str | Path | None = None, layer: str | None = None,
          model: str | None = None) -> Setup:
    """Validate the parameters of a profile and assemble its models, images and methods.

    offline / smoke: `imagenet_val`, `voc_root`, `voc_checkpoint` are not used. `n_images`
    (≤ 5, the kept package photos) and `n_mosaics` (≤ 120) override the profile's sizes.

    paper: `imagenet_val` is the ILSVRC2012 val folder (the manifest's images, first
    `n_images` if given), `voc_root` the VOC2007 tree (val split, first `n_mosaics` images
    if given), `voc_checkpoint` the fine-tuned VGG16 of `fdcam.paper.finetune` (may be omitted
    for a dry run: a random 20-class head). ``dry_run=True`` loads VGG16 with random
    weights, writes to ``data/results/paper-dry-run/``, feeds both networks 112-px images
    (`DRY_RUN_INPUT_SIZE`), uses coarse curves (`DRY_RUN_STEP_FRACTION`) and runs the
    heavy methods on one image of each run (`DRY_RUN_HEAVY_LIMITS`): the pipeline of the
    paper profile in minutes on a CPU.

    imagenet-sample: the 1,000 photos of EliSchwartz/imagenet-sample-images in
    `imagenet_sample` (default: ``$IMAGENET_SAMPLE`` or data/downloads/imagenet-sample) in a
    seeded order (so that any prefix, e.g. the heavy methods' 250, is a seeded random
    subset), and 250 mosaics of them; `model` (default EfficientNet-Lite0; also
    ``efficientnet-lite2``, the replication) at `layer` (default `SAMPLE_LAYER`); results in
    ``data/results/imagenet-sample/<layer>/`` (another model: ``…/<model>/<layer>/``).

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
    # The disk profiles' builders make a Setup themselves: imported here, not at the top.
    from fdcam.paper.disk_setups import paper_setup, sample_setup

    if profile == "paper":
        made = paper_setup(settings, imagenet_val, voc_root, voc_checkpoint, n_images,
                            n_mosaics, device, dry_run, seed)
    elif profile == "imagenet-sample":
        made = sample_setup(settings, imagenet_sample, layer, n_images, n_mosaics, device,
                             seed, model)
    else:
        made = _offline_setup(profile, settings, n_images, n_mosaics, device, seed)
    made.results_dir = _results_dir(profile, results_dir, dry_run, seed)
    if profile == "imagenet-sample" and results_dir is None:  # one folder per layer
        if made.model.name != SAMPLE_MODEL:
            made.results_dir = made.results_dir / made.model.name
        made.results_dir = made.results_dir / made.model.target_layer
    for kind, limit in heavy.items():
        made.heavy_limits[kind] = _clip(limit, len(made.image_ids(kind)))
    return made


def last_activation_setup(main: Setup, *,
                          imagenet_sample: str | Path | None = None) -> Setup | None:
    """The imagenet-sample profile's second Table I: the first `SAMPLE_SWISH_IMAGES` photos
    of `main`'s seeded order at EfficientNet-Lite0's last activation ``_swish`` (where
    practitioners put CAMs; its head is pooling + Linear), Score-CAM and Ablation-CAM on
    the first `SAMPLE_SWISH_HEAVY_IMAGES`. Results beside `main`'s, in a ``_swish`` folder.
    None for the other profiles, and when `main` already explains ``_swish``."""
    if main.profile != "imagenet-sample" or main.model.target_layer == "_swish":
        return None
    if main.results_dir.name == main.model.target_layer:  # the default: one folder per layer
        results_dir = main.results_dir.parent / "_swish"
    else:
        results_dir = main.results_dir / "_swish"
    n_images = min(SAMPLE_SWISH_IMAGES, len(main.faithfulness_images))
    return setup("imagenet-sample", imagenet_sample=imagenet_sample, layer="_swish",
                 n_images=n_images, device=main.device, seed=main.seed,
                 results_dir=results_dir,
                 heavy_limits={"faithfulness": SAMPLE_SWISH_HEAVY_IMAGES})


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
    # A block's output or a call site inside the block (`_blocks.15._swish#2`).
    block = re.fullmatch(r"_blocks\.(\d+)(\..+)?", loaded.target_layer)
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
    from fdcam.evaluation.photos import mosaics, offline_photos
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
    # In a checkout, relative paths start at the repository root whatever the notebook's
    # working directory; installed, at the working directory (fdcam.paths.from_base).
    return from_base(path)


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
