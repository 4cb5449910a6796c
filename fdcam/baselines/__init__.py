"""The baselines of the paper's comparison (§IV) behind one registry.

`make_explainer(name, model)` builds any method of `METHODS` (FD-CAM and its variants
included); every explainer satisfies `fdcam.Explainer`: ``explainer(x, target) ->
Explanation``. A new baseline is one file in this folder (a subclass of
`fdcam.baselines.base.BaseExplainer`) and one line in `BASELINES`.

* `fdcam.baselines.gradcam` — the pytorch-grad-cam family (Grad-CAM, Grad-CAM++, XGrad-CAM,
  Layer-CAM, Score-CAM, Ablation-CAM), called unchanged;
* `fdcam.baselines.groupcam` — Group-CAM, re-derived from its paper;
* `fdcam.baselines.attribution` — Integrated Gradients (captum) and XRAI (saliency).

Example::

    from fdcam.baselines import make_explainer
    from fdcam.models import load_model
    loaded = load_model("vgg16")
    explanation = make_explainer("scorecam", loaded.model)(x, target=243)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from fdcam.baselines.attribution import XRAI, IntegratedGradients
from fdcam.baselines.base import BaseExplainer, Layer
from fdcam.baselines.gradcam import (
    AblationCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from fdcam.baselines.groupcam import GroupCAM
from fdcam.errors import FdcamError
from fdcam.explanation import Explanation

#: Pixel-attribution methods, shown only qualitatively (Fig. 4): slow, not in Tables I–II.
QUALITATIVE_METHODS: tuple[str, ...] = ("ig", "xrai")

#: Keyword arguments of `fdcam.cam.FDCAM` for each FD-CAM method (Tables III, IV).
FDCAM_VARIANTS: dict[str, dict[str, Any]] = {
    "fdcam": {},
    "fdcam-ng-off": {"grouping": False, "switch_on": False},
    "fdcam-g-off": {"switch_on": False},
    "fdcam-product": {"combination": "product"},
    "fdcam-exp": {"combination": "exp"},
    "fdcam-exp-shifted": {"combination": "exp_shifted"},
}


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

#: The baselines by name, in Table I's order, then Fig. 4's IG and XRAI.
BASELINES: dict[str, type[BaseExplainer]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, XGradCAM, ScoreCAM, AblationCAM,
                              LayerCAM, GroupCAM, IntegratedGradients, XRAI)
}

#: The methods that `make_explainer` knows: the baselines, then FD-CAM and its variants
#: (Tables III, IV).
METHODS: tuple[str, ...] = (*BASELINES, *FDCAM_VARIANTS)


# Masked or ablated copies per forward pass of the heavy methods and Group-CAM. The maps do
# not depend on it but for float rounding (Score-CAM's AUCs move by up to 2e-4 between
# batch 4 and 16), so the CLI and the experiments use the same sizes. On this 2-core CPU
# small batches are faster (Score-CAM on EfficientNet-Lite0: 20 s per map at 4, 22 s at 16,
# 41 s at 64; Ablation-CAM's ablation layer scans the whole batch once per copy); on a GPU
# large ones are.
CPU_BATCH_SIZES = {"scorecam": 4, "ablationcam": 16, "groupcam": 16}
CUDA_BATCH_SIZE = 128


def batch_options(method: str, device: str | torch.device) -> dict[str, Any]:
    """`make_explainer` options of `method` on `device`: the batch size of the methods that
    run many masked copies (`CPU_BATCH_SIZES`, `CUDA_BATCH_SIZE`); {} for the others."""
    if method not in CPU_BATCH_SIZES:
        return {}
    cuda = torch.device(device).type == "cuda"
    return {"batch_size": CUDA_BATCH_SIZE if cuda else CPU_BATCH_SIZES[method]}


def make_explainer(name: str, model: Any, target_layer: Layer | None = None,
                   **options: Any) -> Callable[..., Explanation]:
    """Build the method `name` (one of `METHODS`) for `model`.

    `model` is an ``nn.Module`` or a `fdcam.models.LoadedModel` (its network, its target
    layer unless `target_layer` is given, and for ``xrai`` its normalisation).
    `target_layer` is a module, a dotted name, or ``name#k``: the k-th call of a module that
    runs several times in one forward pass (`fdcam.baselines.base.CallSiteModel`). `options`
    are the method's keyword arguments (e.g. ``batch_size`` for ``scorecam``); the FD-CAM
    entries build `fdcam.cam.FDCAM` with the variant's arguments (`FDCAM_VARIANTS`).
    The result is called as ``explainer(x, target=...)`` and returns an `Explanation`.
    """
    from fdcam.models import LoadedModel

    if not isinstance(name, str) or name not in METHODS:
        raise FdcamError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    if isinstance(model, LoadedModel):
        if target_layer is None:
            target_layer = model.target_layer
        if name == "xrai":
            options = {"mean": model.mean, "std": model.std, **options}
        model = model.model
    if name in FDCAM_VARIANTS:
        from fdcam.cam import FDCAM

        variant = {**FDCAM_VARIANTS[name], "name": name}
        clash = [k for k in options if k in variant and options[k] != variant[k]]
        if clash:
            raise FdcamError(f"method {name!r} fixes {clash[0]}={variant[clash[0]]!r}; "
                             f"pick another method instead of passing {clash[0]}")
        _check_options(name, FDCAM, options)
        return FDCAM(model, target_layer=target_layer, **{**variant, **options})
    cls = BASELINES[name]
    _check_options(name, cls, options)
    return cls(model, target_layer=target_layer, **options)


def _check_options(name: str, cls: type, options: dict[str, Any]) -> None:
    parameters = inspect.signature(cls).parameters
    accepted = [p for p, v in parameters.items()
                if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "name"]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise FdcamError(f"method {name!r} has no option {unknown[0]!r}; "
                         f"accepted: {', '.join(accepted) or '(none)'}")
