"""FD-CAM with pytorch-grad-cam's interface: a drop-in where a ``pytorch_grad_cam`` method is.

Usage, as in pytorch-grad-cam's README with the class swapped::

    from fdcam.compat import FDCAMCompat as GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        grayscale_cam = cam(input_tensor=x, targets=[ClassifierOutputTarget(281)],
                            aug_smooth=True, eigen_smooth=True)   # [B, H, W]

*Compatible, not identical.* The maps are FD-CAM's (Eq. 11): ReLU, bilinear upsampling in
torch, then min-max to [0, 1] — pytorch-grad-cam scales by ``(x − min) / (1e-7 + max)`` and
resizes with OpenCV, so values differ in the last digits and where the map is constant.

pytorch-grad-cam's ``BaseCAM`` call surface, and what it does here:

- ``__call__(input_tensor, targets=None, aug_smooth=False, eigen_smooth=False)``: works.
  ``targets``: None (each image's top-1 class), objects with a ``.category``
  (``ClassifierOutputTarget``, ``ClassifierOutputSoftmaxTarget``) or ints, one per image;
  other target functions (``RawScoresOutputTarget``, segmentation targets) are refused:
  FD-CAM's scores are class logits. A list whose length is not the batch is refused, where
  pytorch-grad-cam silently truncates to the shorter.
- ``eigen_smooth``: the first principal component of the weighted activations ω_k A^k, as
  pytorch-grad-cam's ``get_2d_projection`` (NaN set to 0, channels centred over the pixels,
  SVD, projection on the first right-singular vector), with FD-CAM's ω. An SVD's sign is
  arbitrary (pytorch-grad-cam keeps LAPACK's); here the component is turned to agree with
  the plain map Σ_k ω_k A^k (non-negative covariance), so a map never comes out inverted.
- ``aug_smooth``: the mean of the maps over the test-time augmentations, each map computed
  by FD-CAM on the augmented images and mapped back. Default, as pytorch-grad-cam's
  ``tta_transforms``: horizontal flip (off, on) × pixel values multiplied by 0.9, 1, 1.1 —
  six maps; ``tta_transforms`` may be any iterable of objects with ``augment_image`` and
  ``deaugment_mask`` (a ``ttach.Compose``). Each map is in [0, 1]; the mean is not rescaled.
- several ``target_layers``: each layer's map, then their mean min-max scaled again.
- ``forward``, ``forward_augmentation_smoothing``, ``compute_cam_per_layer``,
  ``aggregate_multi_layers``, ``get_target_width_height``, ``get_cam_weights`` (FD-CAM's ω
  [B, K]) and ``get_cam_image`` (Σ_k ω_k A^k or its principal component, [B, h, w]) work
  with the same arguments; the activations and gradients they receive are ignored, since
  FD-CAM computes its own. ``outputs``: the model's logits of the last call; ``device``:
  the model's; the input is moved there, as pytorch-grad-cam does.
- any number of input channels (a one-channel model works); 2-D images only: a 5-D
  (3-D convolution) input is refused.
- ``reshape_transform`` (vision transformers) and ``detach=False`` (maps that keep the
  graph) are refused; ``compute_input_gradient`` and ``uses_gradients`` are accepted and
  unused. ``activations_and_grads`` does not exist: FD-CAM registers no hooks.
- ``with`` blocks work; leaving one releases nothing (there is nothing to release) and,
  unlike pytorch-grad-cam, does not swallow an ``IndexError``.
- The model's train/eval mode is restored after each call (pytorch-grad-cam leaves the
  model in eval mode from the constructor on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam.cam import FDCAM, FDCAMExplanation
from fdcam.combine import min_max_maps
from fdcam.errors import FdcamError
from fdcam.targets import category_of, check_images

# pytorch-grad-cam's default test-time augmentation: ttach's HorizontalFlip × Multiply.
FLIPS = (False, True)
FACTORS = (0.9, 1.0, 1.1)


class _FlipMultiply:
    """One default augmentation: multiply the pixels by `factor`, then maybe flip left-right;
    a map goes back by the flip alone (multiplying moves no pixel)."""

    def __init__(self, flip: bool, factor: float) -> None:
        self.flip = flip
        self.factor = factor

    def augment_image(self, x: Tensor) -> Tensor:
        x = x * self.factor if self.factor != 1.0 else x
        return x.flip(3) if self.flip else x

    def deaugment_mask(self, mask: Tensor) -> Tensor:
        return mask.flip(3) if self.flip else mask


def principal_component(weighted: Tensor) -> Tensor:
    """eigen_smooth: each image's weighted activations projected on their first principal
    component, turned to agree with the plain map.

    With M [hw, K] the pixels × channels of ω_k A^k (NaN → 0) and M̄ = M − mean over pixels,
    ``M̄ = U S Vᵀ`` and the projection is ``p = M̄ v₁`` (v₁: the first row of Vᵀ); its sign is
    chosen so that ``Σ_ij p_ij · Σ_k ω_k A^k_ij ≥ 0``. weighted: [B, K, h, w] -> [B, h, w]
    """
    b, _, h, w = weighted.shape
    weighted = torch.where(torch.isnan(weighted), 0.0, weighted)
    m = weighted.flatten(2).transpose(1, 2)  # [B, hw, K]
    m = m - m.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    projection = (m @ vh[:, 0, :, None])[..., 0]  # [B, hw]
    plain = weighted.sum(1).flatten(1)
    sign = torch.where((projection * plain).sum(1, keepdim=True) < 0, -1.0, 1.0)
    return (projection * sign).view(b, h, w)


class FDCAMCompat:
    """FD-CAM behind pytorch-grad-cam's ``BaseCAM`` call surface (see the module docstring).

    Args:
        model: a CNN classifier returning raw logits.
        target_layers: a list of modules of `model` (pytorch-grad-cam's convention), or of
            layer names: a dotted name, or ``name#k`` for the k-th call of a module that
            runs several times in one forward pass (a module cannot say which call).
        reshape_transform: must be None (FD-CAM needs activations [B, K, h, w]).
        tta_transforms: the augmentations of ``aug_smooth`` (default: flip × 0.9, 1, 1.1).
        detach: must be True.
        **options: FD-CAM's own options (`fdcam.FDCAM`: theta, bias, combination, …).
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module | str],
                 reshape_transform: Callable[..., Tensor] | None = None,
                 compute_input_gradient: bool = False, uses_gradients: bool = True,
                 tta_transforms: Iterable[Any] | None = None, detach: bool = True,
                 **options: Any) -> None:
        if reshape_transform is not None:
            raise FdcamError("reshape_transform is not supported: FD-CAM needs a layer whose "
                             "output is [B, K, h, w] (a CNN layer)")
        if not detach:
            raise FdcamError("detach=False is not supported: FD-CAM's maps are not "
                             "differentiable with respect to the input; use detach=True")
        if isinstance(target_layers, nn.Module | str) or not len(target_layers):
            raise FdcamError("target_layers must be a non-empty list of modules of the model, "
                             "as in pytorch-grad-cam")
        self.model = model
        self.target_layers = list(target_layers)
        try:
            self.explainers = [FDCAM(model, layer, **options) for layer in self.target_layers]
        except TypeError as error:
            raise FdcamError(f"unknown option for FD-CAM ({error}); its options are theta, "
                             f"bias, combination, grouping, switch_on, batch_size") from None
        parameter = next(model.parameters(), None)
        self.device = torch.device("cpu") if parameter is None else parameter.device
        self.compute_input_gradient = compute_input_gradient
        self.uses_gradients = uses_gradients
        self.tta_transforms = tta_transforms
        self.detach = detach
        self.outputs: Tensor | None = None

    def __call__(self, input_tensor: Tensor, targets: Sequence[object] | None = None,
                 aug_smooth: bool = False, eigen_smooth: bool = False) -> np.ndarray:
        """Maps as a numpy float32 array [B, H, W] in [0, 1], one per image."""
        if aug_smooth:
            return self.forward_augmentation_smoothing(input_tensor, targets, eigen_smooth)
        return self.forward(input_tensor, targets, eigen_smooth)

    def forward(self, input_tensor: Tensor, targets: Sequence[object] | None,
                eigen_smooth: bool = False) -> np.ndarray:
        """The maps of all target layers, averaged: numpy float32 [B, H, W] in [0, 1]."""
        x = self._images(input_tensor)
        return self.aggregate_multi_layers(self.compute_cam_per_layer(x, targets, eigen_smooth))

    def forward_augmentation_smoothing(self, input_tensor: Tensor,
                                       targets: Sequence[object] | None,
                                       eigen_smooth: bool = False) -> np.ndarray:
        """aug_smooth: ``(1/T) Σ_t deaugment_t(map(augment_t(x)))`` over the T augmentations,
        numpy float32 [B, H, W]."""
        x = self._images(input_tensor)
        maps = []
        for transform in self._augmentations():
            augmented = transform.augment_image(x)
            cam = torch.from_numpy(self.forward(augmented, targets, eigen_smooth))
            maps.append(transform.deaugment_mask(cam[:, None])[:, 0])
        return torch.stack(maps).float().mean(0).numpy()

    def compute_cam_per_layer(self, input_tensor: Tensor, targets: Sequence[object] | None,
                              eigen_smooth: bool) -> list[np.ndarray]:
        """One map per target layer: ReLU, bilinear upsampling, min-max; each [B, 1, H, W]."""
        x = self._images(input_tensor)
        size = (x.shape[2], x.shape[3])
        maps = []
        for explainer in self.explainers:
            out = self._explain(explainer, x, targets)
            cam = self._cam(out, eigen_smooth)
            cam = F.interpolate(torch.relu(cam)[:, None], size=size, mode="bilinear",
                                align_corners=False)
            maps.append(min_max_maps(cam).detach().cpu().float().numpy())
        return maps

    def aggregate_multi_layers(self, cam_per_target_layer: Sequence[np.ndarray]) -> np.ndarray:
        """Several layers' maps [B, 1, H, W] -> their mean, min-max scaled again [B, H, W]."""
        maps = torch.from_numpy(np.concatenate(cam_per_target_layer, axis=1))
        if maps.shape[1] == 1:
            return maps[:, 0].numpy()
        return min_max_maps(maps.clamp_min(0).mean(1)).numpy()

    def get_target_width_height(self, input_tensor: Tensor) -> tuple[int, int]:
        """(W, H) of the images, pytorch-grad-cam's order."""
        x = self._images(input_tensor)
        return x.shape[3], x.shape[2]

    def get_cam_weights(self, input_tensor: Tensor, target_layer: nn.Module,
                        targets: Sequence[object] | None, activations: object = None,
                        grads: object = None) -> np.ndarray:
        """FD-CAM's weights ω (Eq. 9–10) at `target_layer`: numpy [B, K]."""
        out = self._explain(self._explainer(target_layer), self._images(input_tensor), targets)
        return out.weights.detach().cpu().numpy()

    def get_cam_image(self, input_tensor: Tensor, target_layer: nn.Module,
                      targets: Sequence[object] | None, activations: object = None,
                      grads: object = None, eigen_smooth: bool = False) -> np.ndarray:
        """Σ_k ω_k A^k (or its principal component) at `target_layer`, before the ReLU:
        numpy [B, h, w]."""
        out = self._explain(self._explainer(target_layer), self._images(input_tensor), targets)
        return self._cam(out, eigen_smooth).detach().cpu().numpy()

    def __enter__(self) -> FDCAMCompat:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None  # FD-CAM leaves no hooks behind: nothing to release

    def _images(self, input_tensor: Tensor) -> Tensor:
        x = check_images(input_tensor, name="input_tensor")
        return x.to(self.device)

    def _explainer(self, target_layer: nn.Module) -> FDCAM:
        for layer, explainer in zip(self.target_layers, self.explainers, strict=True):
            if layer is target_layer:
                return explainer
        raise FdcamError("target_layer is not one of this CAM's target_layers")

    def _explain(self, explainer: FDCAM, x: Tensor,
                 targets: Sequence[object] | None) -> FDCAMExplanation:
        target = None if targets is None else [category_of(t) for t in targets]
        out = explainer(x, target=target)  # type: ignore[arg-type]
        self.outputs = out.logits
        return out

    def _cam(self, out: FDCAMExplanation, eigen_smooth: bool) -> Tensor:
        """[B, h, w] before the ReLU: Σ_k ω_k A^k, or its first principal component."""
        a = out.activations
        assert a is not None  # FD-CAM always returns its activations
        weighted = out.weights.to(a.dtype)[:, :, None, None] * a
        return principal_component(weighted) if eigen_smooth else weighted.sum(1)

    def _augmentations(self) -> list[Any]:
        if self.tta_transforms is None:
            return [_FlipMultiply(flip, factor) for flip in FLIPS for factor in FACTORS]
        transforms = list(self.tta_transforms)
        if not transforms or not all(hasattr(t, "augment_image") and
                                     hasattr(t, "deaugment_mask") for t in transforms):
            raise FdcamError("tta_transforms must yield objects with augment_image and "
                             "deaugment_mask (a ttach.Compose)")
        return transforms
