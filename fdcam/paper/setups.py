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
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from fdcam.checks import check_device, check_dry_run, check_int, check_optional_int
from fdcam.errors import FdcamError
from fdcam.evaluation.pointing import ClassBoxes
from fdcam.paper.disk_setups import paper_setup, sample_setup
from fdcam.paper.names import check_profile
from fdcam.paper.settings import (
    RESULTS_ROOT,
    SAMPLE_MODEL,
    SAMPLE_REPLICATION_HEAVY_IMAGES,
    SAMPLE_REPLICATION_IMAGES,
    SAMPLE_REPLICATION_MODEL,
    SAMPLE_SWISH_HEAVY_IMAGES,
    SAMPLE_SWISH_IMAGES,
    SETTINGS,
    ProfileSettings,
)
from fdcam.paper.setup_types import PointingImage, Setup, clip_limit, freeze_body
from fdcam.paths import from_base

# ------------------------------------------------------------------------------------ setup


def setup(profile: str, *, imagenet_val: str | Path | None = None,
          voc_root: str | Path | None = None, voc_checkpoint: str | Path | None = None,
          n_images: int | None = None, n_mosaics: int | None = None, device: str = "cpu",
          results_dir: str | Path | None = None, dry_run: bool = False,
          seed: int = 0, heavy_limits: Mapping[str, int | None] | None = None,
          imagenet_sample: str | Path | None = None, layer: str | None = None,
          model: str | None = None, run_missing: bool | None = None) -> Setup:
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
    Its rows are computed by ``make evaluate-imagenet-sample`` (`scripts.sample_evaluation`,
    CPU-hours, resumable); the notebooks only read them (`run_missing`).

    `run_missing` (``Setup.run_missing``): whether `fdcam.paper.runs` computes the rows the
    results files lack; default True, False for imagenet-sample.

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
        made = paper_setup(settings, imagenet_val, voc_root, voc_checkpoint, n_images,
                            n_mosaics, device, dry_run, seed)
    elif profile == "imagenet-sample":
        made = sample_setup(settings, imagenet_sample, layer, n_images, n_mosaics, device,
                             seed, model)
    else:
        made = _offline_setup(profile, settings, n_images, n_mosaics, device, seed)
    made.results_dir = _results_dir(profile, results_dir, dry_run, seed)
    made.run_missing = (profile != "imagenet-sample") if run_missing is None else bool(
        run_missing)
    if profile == "imagenet-sample" and results_dir is None:  # one folder per layer
        if made.model.name != SAMPLE_MODEL:
            made.results_dir = made.results_dir / made.model.name
        made.results_dir = made.results_dir / made.model.target_layer
    for kind, limit in heavy.items():
        made.heavy_limits[kind] = clip_limit(limit, len(made.image_ids(kind)))
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
    results_dir = _beside(main) / "_swish"
    n_images = min(SAMPLE_SWISH_IMAGES, len(main.faithfulness_images))
    return setup("imagenet-sample", imagenet_sample=imagenet_sample, layer="_swish",
                 n_images=n_images, device=main.device, seed=main.seed,
                 results_dir=results_dir,
                 heavy_limits={"faithfulness": SAMPLE_SWISH_HEAVY_IMAGES})


def _beside(main: Setup) -> Path:
    """The folder in which another layer's (or network's) results sit next to `main`'s: the
    parent of `main`'s layer folder (the default, one folder per layer), else `main`'s."""
    if main.results_dir.name == main.model.target_layer:
        return main.results_dir.parent
    return main.results_dir


def replication_layer() -> str | None:
    """The layer of `SAMPLE_REPLICATION_MODEL` that the premise rule chooses from its
    committed survey (`REPLICATION_SURVEY_CSV`); None while the survey is missing,
    unfinished (layers surveyed on different numbers of photos) or malformed, or chooses
    no layer."""
    from fdcam.paper.layer_survey import REPLICATION_SURVEY_CSV, committed_survey

    try:
        summary, layer = committed_survey(REPLICATION_SURVEY_CSV)
    except (FdcamError, ValueError, KeyError, OSError):  # missing, half-written, malformed
        return None
    return layer if summary["photos"].eq(summary["photos"].max()).all() else None


def replication_setup(main: Setup, *, imagenet_sample: str | Path | None = None,
                      required: bool = False, with_rows: bool = False) -> Setup | None:
    """The imagenet-sample profile's replication on a second network: Table I with
    `SAMPLE_REPLICATION_MODEL` (EfficientNet-Lite2) at the layer that the premise rule
    chooses from its own committed survey (`REPLICATION_SURVEY_CSV`), on the first
    `SAMPLE_REPLICATION_HEAVY_IMAGES`); results in ``<model>/<layer>`` beside `main`'s
    layer folder. None for the other profiles, while the survey is unfinished or chooses no
    layer (`required`: a one-line error instead), and with `with_rows` while the results
    folder has no Table I rows (nothing is loaded then)."""
    from fdcam.paper.layer_survey import REPLICATION_SURVEY_CSV

    if main.profile != "imagenet-sample":
        return None
    layer = replication_layer()
    if layer is None:
        if required:
            raise FdcamError(f"the replication needs the finished {SAMPLE_REPLICATION_MODEL} "
                             f"survey in {REPLICATION_SURVEY_CSV} (python -m "
                             f"fdcam.paper.layer_survey --model {SAMPLE_REPLICATION_MODEL} "
                             f"--out …; it resumes) and a layer its rule chooses")
        return None
    results_dir = _beside(main) / SAMPLE_REPLICATION_MODEL / layer
    if with_rows and not (results_dir / "faithfulness.csv").exists():
        return None
    return setup("imagenet-sample", imagenet_sample=imagenet_sample,
                 device=main.device, seed=main.seed, model=SAMPLE_REPLICATION_MODEL,
                 layer=layer, results_dir=results_dir,
                 n_images=min(SAMPLE_REPLICATION_IMAGES, len(main.faithfulness_images)),
                 heavy_limits={"faithfulness": SAMPLE_REPLICATION_HEAVY_IMAGES})


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
    heavy = {"faithfulness": clip_limit(settings.heavy_images, n_images),
             "pointing": clip_limit(settings.heavy_pointing, n_pointing)}
    note = (f"{n_images} package photos; {n_pointing} 2×2 mosaic(s) of them (seed {seed})")
    return Setup(profile, model, model, device, Path(), faithfulness, pointing,
                 dict(settings.methods), heavy, settings.step_fraction,
                 figure_images=settings.figure_images, seed=seed, data_note=note,
                 heavy_methods=settings.heavy)


def _results_dir(profile: str, results_dir: str | Path | None, dry_run: bool,
                 seed: int) -> Path:
    if results_dir is not None:
        path = from_base(results_dir)
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
