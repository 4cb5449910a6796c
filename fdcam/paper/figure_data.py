"""The maps and curves behind Fig. 5 and Fig. 6, cached per setup so that a re-executed
notebook draws the same figure without explaining the images again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from fdcam.checks import check_int
from fdcam.errors import FdcamError
from fdcam.evaluation.faithfulness import (
    insertion_deletion_curves,
)
from fdcam.evaluation.runner import ImageSource
from fdcam.paper.figure_cache import load_figure
from fdcam.paper.runs import check_methods, method_options
from fdcam.paper.setups import Setup


def image_tensor(source: ImageSource) -> Tensor:
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
    chosen = check_methods(methods, setup.methods["I"], "faithfulness")
    if "fdcam" not in chosen:
        chosen.append("fdcam")
    panels = []
    for image_id, source in setup.faithfulness_images[:n]:
        x = image_tensor(source).to(setup.device)
        insertion: dict[str, Tensor] = {}
        deletion: dict[str, Tensor] = {}
        saliency: dict[str, Tensor] = {}
        target = None
        for method in chosen:
            if image_id not in setup.images_for(method, "faithfulness"):
                continue
            record = load_figure(setup, "faithfulness", method, image_id)
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
    chosen = check_methods(methods, setup.pointing_methods, "pointing")
    item = setup.pointing_images[image_id]
    classes = sorted(item.boxes)
    x = image_tensor(item.image).to(setup.device)
    maps: dict[str, Tensor] = {}
    for method in chosen:
        if image_id not in setup.images_for(method, "pointing"):
            continue
        record = load_figure(setup, "pointing", method, image_id)
        if record is not None and list(record["targets"]) == classes:
            maps[method] = record["saliency"]
            continue
        from fdcam.baselines import make_explainer

        explainer = make_explainer(method, setup.pointing_model, **method_options(method, setup))
        explanation = explainer(x[None].repeat(len(classes), 1, 1, 1), target=classes)
        maps[method] = explanation.saliency.detach().cpu()
    names = [setup.pointing_model.categories[c] for c in classes]
    return ClassMaps(image_id, setup.pointing_model.to_pixels(x).cpu(), classes, names, maps)
