"""FD-CAM with pytorch-grad-cam's interface: a drop-in where a ``pytorch_grad_cam`` method is.

Usage, as in pytorch-grad-cam's README with the class swapped::

    from fdcam.compat import FDCAMCompat as GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        grayscale_cam = cam(input_tensor=x, targets=[ClassifierOutputTarget(281)])  # [B, H, W]

*Compatible, not identical.* The maps are FD-CAM's (Eq. 11): ReLU, bilinear upsampling in
torch, then min-max to [0, 1] — pytorch-grad-cam scales by ``(x − min) / (1e-7 + max)`` and
resizes with OpenCV, so values differ in the last digits and where the map is constant.
With several target layers, each layer's map is computed and the maps are averaged and
scaled again, as pytorch-grad-cam does. Targets must name classes: objects with a
``.category`` (``ClassifierOutputTarget``, ``ClassifierOutputSoftmaxTarget``) or ints;
FD-CAM's scores are class logits, so other target functions are refused. The model's
train/eval mode is restored after each call (pytorch-grad-cam leaves it in eval mode).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fdcam.cam import FDCAM
from fdcam.errors import FdcamError
from fdcam.targets import category_of


class FDCAMCompat:
    """FD-CAM behind pytorch-grad-cam's ``BaseCAM`` call signature.

    Args:
        model: a CNN classifier returning raw logits.
        target_layers: a list of modules of `model` (pytorch-grad-cam's convention), or of
            layer names: a dotted name, or ``name#k`` for the k-th call of a module that
            runs several times in one forward pass (a module cannot say which call).
        reshape_transform: must be None (FD-CAM needs activations [B, K, h, w]).
        **options: FD-CAM's own options (`fdcam.FDCAM`: theta, bias, combination, …).
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module | str],
                 reshape_transform: Callable[..., Tensor] | None = None,
                 compute_input_gradient: bool = False, uses_gradients: bool = True,
                 tta_transforms: object = None, detach: bool = True, **options: Any) -> None:
        if reshape_transform is not None:
            raise FdcamError("reshape_transform is not supported: FD-CAM needs a layer whose "
                             "output is [B, K, h, w] (a CNN layer)")
        if isinstance(target_layers, nn.Module | str) or not len(target_layers):
            raise FdcamError("target_layers must be a non-empty list of modules of the model, "
                             "as in pytorch-grad-cam")
        self.model = model
        self.target_layers = list(target_layers)
        self.explainers = [FDCAM(model, layer, **options) for layer in self.target_layers]
        self.outputs: Tensor | None = None
        del compute_input_gradient, uses_gradients, tta_transforms, detach  # accepted, unused

    def __call__(self, input_tensor: Tensor, targets: Sequence[object] | None = None,
                 aug_smooth: bool = False, eigen_smooth: bool = False) -> Any:
        """Maps as a numpy float32 array [B, H, W] in [0, 1], one per image."""
        if aug_smooth or eigen_smooth:
            raise FdcamError("aug_smooth and eigen_smooth are pytorch-grad-cam options that "
                             "FD-CAM does not have; call with both False")
        target = None if targets is None else [category_of(t) for t in targets]
        maps = []
        for explainer in self.explainers:
            out = explainer(input_tensor, target=target)
            self.outputs = out.logits
            maps.append(out.saliency)
        saliency = maps[0] if len(maps) == 1 else _rescale(torch.stack(maps, 1).mean(1))
        return saliency.detach().cpu().float().numpy()

    def __enter__(self) -> FDCAMCompat:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None  # FD-CAM leaves no hooks behind: nothing to release


def _rescale(maps: Tensor) -> Tensor:
    """Per image: min-max to [0, 1] (a constant map becomes 0)."""
    flat = maps.flatten(1)
    low = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - low
    return torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), 0.0).view_as(maps)
