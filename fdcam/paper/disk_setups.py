"""The setups of the two profiles that read data sets from disk: ``imagenet-sample`` (the
1,000 photos of one per class, EliSchwartz/imagenet-sample-images, and seeded mosaics of
them) and ``paper`` (ILSVRC2012 val by the committed manifest; VOC2007 val with the VGG16
fine-tuned on VOC2007 train). Images are read when a run needs them, not when the setup is
made."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from fdcam.errors import FdcamError
from fdcam.evaluation.pointing import ClassBoxes
from fdcam.evaluation.runner import ImageSource
from fdcam.models import LoadedModel
from fdcam.paper.settings import (
    DRY_RUN_HEAVY_LIMITS,
    DRY_RUN_INPUT_SIZE,
    DRY_RUN_STEP_FRACTION,
    SAMPLE_LAYER,
    SAMPLE_MODEL,
    ProfileSettings,
)
from fdcam.paper.setup_types import PointingImage, Setup, clip_limit, freeze_body
from fdcam.paths import from_base


def sample_setup(settings: ProfileSettings, folder: str | Path | None, layer: str | None,
                  n_images: int | None, n_mosaics: int | None, device: str,
                  seed: int, model_name: str | None = None) -> Setup:
    import random

    from fdcam.evaluation.imagenet import (
        IMAGENET_SAMPLE_MOSAICS,
        ImageNetSample,
        imagenet_sample_groups,
    )
    from fdcam.models import load_model
    from fdcam.split import resolve_layer

    try:
        sample = ImageNetSample(None if folder is None else from_base(folder))
    except FdcamError as error:
        raise FdcamError(f"imagenet_sample: {error}") from None
    loaded = load_model(SAMPLE_MODEL if model_name is None else model_name, device=device)
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
    heavy = {"faithfulness": clip_limit(settings.heavy_images, n_images),
             "pointing": clip_limit(settings.heavy_pointing, n_pointing)}
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
        from fdcam.evaluation.imagenet import imagenet_sample_groups

        self.sample, self.model, self.seed = sample, model, seed
        self.groups = imagenet_sample_groups(len(sample), seed)[:n]
        self.ids = [f"mosaic{i:03d}" for i in range(n)]

    def __getitem__(self, image_id: str) -> PointingImage:
        from fdcam.evaluation.photos import quadrant_boxes

        group = self.groups[self.ids.index(image_id)]
        labels = [self.sample.labels[i] for i in group]
        boxes = quadrant_boxes(self.model.input_size)
        return PointingImage(
            functools.partial(self._image, image_id),
            {label: ClassBoxes(boxes[q:q + 1]) for q, label in enumerate(labels)})

    def _image(self, image_id: str) -> Tensor:
        from fdcam.evaluation.photos import compose_mosaic

        group = self.groups[self.ids.index(image_id)]
        canvas, _ = compose_mosaic([self.sample.image(i) for i in group],
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
                               "VOC2007 by `python -m fdcam.paper.finetune` (vgg16_voc2007.pt or "
                               "checkpoint.pt)", folder=False)
    return imagenet_path, voc_path, checkpoint


def paper_setup(settings: ProfileSettings, imagenet_val: str | Path | None,
                 voc_root: str | Path | None, voc_checkpoint: str | Path | None,
                 n_images: int | None, n_voc: int | None, device: str, dry_run: bool,
                 seed: int) -> Setup:
    from fdcam.evaluation.imagenet import PAPER_MANIFEST_FILE, ImageNetVal, read_manifest
    from fdcam.evaluation.voc import VOC2007
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
    if dry_run:
        model = dataclasses.replace(model, input_size=DRY_RUN_INPUT_SIZE)
        pointing_model = dataclasses.replace(pointing_model, input_size=DRY_RUN_INPUT_SIZE)
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
    from fdcam.evaluation.voc import VOC_CLASSES
    from fdcam.models import IMAGENET_MEAN, IMAGENET_STD
    from fdcam.paper.finetune import build_voc_model, voc_loaded_model

    if checkpoint is None:  # dry run without a checkpoint: a random 20-class VGG16
        network = build_voc_model("vgg16", pretrained=False).to(device).eval()
        return LoadedModel("vgg16-voc2007 (random)", network, "features.30", IMAGENET_MEAN,
                           IMAGENET_STD, list(VOC_CLASSES))
    try:
        return voc_loaded_model(checkpoint, device)
    except FdcamError as error:
        raise FdcamError(f"voc_checkpoint: {error}") from None


def _imagenet_image(val: Any, index: int, model: LoadedModel) -> Tensor:
    from fdcam.evaluation.images import open_rgb

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
        from fdcam.evaluation.voc import VOC_CLASSES, voc_class_boxes

        i = self.index[image_id]
        path = self.voc.root / "JPEGImages" / f"{image_id}.jpg"
        annotation = self.voc.annotation(i)
        with Image.open(path) as header:  # reads the size only
            width, height = header.size
        by_class = voc_class_boxes(annotation, VOC_CLASSES, (height, width))
        return PointingImage(functools.partial(_voc_image, path, self.model), by_class)


def _voc_image(path: Path, model: LoadedModel) -> Tensor:
    from fdcam.evaluation.images import open_rgb

    return model.preprocess(open_rgb(path))


def _existing(value: str | Path | None, name: str, expected: str, *, folder: bool) -> Path:
    """A given path (from the repository root) that is a folder, or a file."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise FdcamError(f"the paper profile needs {name}: {expected}")
    path = from_base(value)
    if not (path.is_dir() if folder else path.is_file()):
        raise FdcamError(f"{name} {path} is not a {'folder' if folder else 'file'}; "
                         f"expected {expected}")
    return path
