"""Group-CAM (Zhang et al. 2021), re-derived from its paper: α·A in 32 contiguous channel
chunks, each a mask M_g; score_g = ReLU(p_c(x·M_g + blur(x)·(1 − M_g)) − p_c(blur(x)))."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam.baselines.base import (
    BaseExplainer,
    Layer,
    check_logits,
)
from fdcam.checks import check_positive_int
from fdcam.combine import min_max_maps
from fdcam.errors import FdcamError
from fdcam.explanation import Explanation
from fdcam.split import call_site_problem, is_efficientnet_lite
from fdcam.targets import Target

# --------------------------------------------------------------------------------------
# Group-CAM
# --------------------------------------------------------------------------------------


def gaussian_blur(x: Tensor, kernel_size: int = 51, sigma: float = 50.0) -> Tensor:
    """Gaussian blur of [N, C, H, W] with reflect padding (as torchvision's GaussianBlur).

    Separable kernel ``g_i ∝ exp(−t_i² / 2σ²)``, ``t_i = i − (k − 1)/2``, normalised to sum 1.
    """
    half = kernel_size // 2
    if x.shape[-1] <= half or x.shape[-2] <= half:
        raise FdcamError(f"the image ({x.shape[-2]}×{x.shape[-1]}) is too small for a "
                         f"{kernel_size}×{kernel_size} reflect-padded blur; it needs more than "
                         f"{half} pixels per side")
    t = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - (kernel_size - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    channels = x.shape[1]
    padded = F.pad(x, (half, half, half, half), mode="reflect")
    out = F.conv2d(padded, g.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


#: ``GroupCAM(model, target_layer=GROUPCAM_AUTHORS_LAYER)``: the layer Group-CAM's authors
#: hook (`groupcam_authors_layer`) instead of the target layer shared by every method.
GROUPCAM_AUTHORS_LAYER = "authors"


def groupcam_authors_layer(model: nn.Module) -> str:
    """The layer Group-CAM's reference code explains: the last convolution's ReLU.

    Their README names VGG19 ``features.35`` and ResNet ``layer4.2`` (the ReLU of the last
    conv block, before the last max-pool), so: VGG ``features.<i>`` with i the last
    ``nn.ReLU`` in ``features`` (``features.29`` for VGG16, 14×14), torchvision ResNet
    ``layer4`` (its output is that of its last block, after the block's ReLU), and
    EfficientNet-Lite ``_swish`` (the head activation after the last 1×1 convolution,
    already the shared default). Their insertion/deletion script, however, hooks VGG19
    ``features.36``, the last max-pool: the layer our shared default uses for VGG.
    """
    if is_efficientnet_lite(model):
        return "_swish"
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        relus = [i for i, m in enumerate(features) if isinstance(m, nn.ReLU)]
        if relus:
            return f"features.{relus[-1]}"
    if type(model).__name__ == "ResNet" and isinstance(getattr(model, "layer4", None),
                                                         nn.Module):
        return "layer4"
    raise FdcamError(f"no known Group-CAM reference layer for {type(model).__name__}; "
                     f"expected a VGG (features with ReLUs), a torchvision ResNet or an "
                     f"EfficientNet-Lite, or pass target_layer")


class GroupCAM(BaseExplainer):
    """Group-CAM [22] (Zhang, Rao, Yang 2021, arXiv:2103.13859), implemented from the paper.

    1. Grad-CAM weights ``α_k = mean_ij ∂f_c/∂A^k_ij`` (raw logit f_c).
    2. Split: the K channels of ``α ⊙ A`` in G contiguous chunks (``torch.chunk``
       sizes: ⌈K/G⌉ each, the last one smaller; fewer chunks when K/G is not whole).
    3. Group map ``M'_g = up(ReLU(Σ_{k∈g} α_k A^k))`` (bilinear to H×W), and the mask
       ``M_g = minmax(M'_g)`` (a constant map -> 0).
    4. Score ``s_g = ReLU(p_c(X ⊙ M_g + X̃ ⊙ (1 − M_g)) − p_c(X̃))`` with ``X̃`` the input
       blurred by a 51×51, σ = 50 Gaussian (reflect border) and p the softmax.
    5. ``L = minmax(ReLU(Σ_g s_g M'_g))``.

    The paper also "de-noises" each group map; Group-CAM's reference code has no such
    step, so it is off by default. `denoise_percentile` = θ turns
    it on: values of ``ReLU(Σ_{k∈g} α_k A^k)`` at or below their θ-th percentile -> 0.

    ``Explanation.alpha`` holds α [B, K] and ``Explanation.scores`` the group scores s_g
    [B, G]. The G masked images of all images are evaluated `batch_size` at a time.

    Layer: by default (`target_layer` None) the target layer every method of the
    comparison shares (`fdcam.split.default_layer`: VGG16 ``features.30``, the paper's layer),
    so that Table I compares how the methods weight the same activations rather than
    where they look. ``target_layer="authors"`` (`GROUPCAM_AUTHORS_LAYER`) takes the layer
    of Group-CAM's reference code instead, the last convolution's ReLU
    (`groupcam_authors_layer`: VGG16 ``features.29``), e.g. to compare with their numbers.
    """

    name = "groupcam"

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 groups: int = 32, batch_size: int = 32, blur_kernel: int = 51,
                 blur_sigma: float = 50.0, denoise_percentile: float | None = None) -> None:
        if isinstance(target_layer, str) and target_layer == GROUPCAM_AUTHORS_LAYER:
            if not isinstance(model, nn.Module):
                raise FdcamError(f"model must be a torch.nn.Module; got "
                                 f"{type(model).__name__}")
            target_layer = groupcam_authors_layer(model)
        super().__init__(model, target_layer)
        self.groups = check_positive_int(groups, "groups")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if check_positive_int(blur_kernel, "blur_kernel") % 2 == 0:
            raise FdcamError(f"blur_kernel must be odd; got {blur_kernel}")
        self.blur_kernel = blur_kernel
        if not blur_sigma > 0:
            raise FdcamError(f"blur_sigma must be positive; got {blur_sigma!r}")
        self.blur_sigma = float(blur_sigma)
        if denoise_percentile is not None and not 0 <= denoise_percentile <= 100:
            raise FdcamError(f"denoise_percentile must be in [0, 100] or None; "
                             f"got {denoise_percentile!r}")
        self.denoise_percentile = denoise_percentile
        self._graph: dict[str, Tensor] = {}

    def __call__(self, x: Tensor, target: Target | None = None) -> Explanation:
        try:
            return super().__call__(x, target)
        finally:
            self._graph = {}  # free the activations and their graph

    def _logits(self, x: Tensor) -> Tensor:
        """One forward pass with gradients from a leaf copy of A, so that ``∂f/∂A`` never
        runs through the layers before the target layer (nor their parameters)."""
        held: list[Tensor] = []

        def replace(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor | None:
            if held:
                held.append(output)  # a second call: counted, then refused below
                return None
            leaf = output.detach().requires_grad_(True)
            held.append(leaf)
            return leaf.clone()  # later in-place ops must not touch the leaf

        handle = self.layer.register_forward_hook(replace)
        try:
            with torch.enable_grad():
                logits = self.forward_model(x)
        finally:
            handle.remove()
        if len(held) != 1:
            raise FdcamError(call_site_problem(self.layer_name, None, len(held)) or "")
        check_logits(logits)
        with torch.no_grad():
            blurred = gaussian_blur(x, self.blur_kernel, self.blur_sigma)
            base = torch.softmax(self.forward_model(blurred), dim=1)
        self._graph = {"a": held[0], "logits": logits, "blurred": blurred, "base": base}
        return logits.detach()

    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        a, graph_logits = self._graph["a"], self._graph["logits"]
        blurred, base = self._graph["blurred"], self._graph["base"]
        rows = torch.arange(x.shape[0], device=x.device)

        (grad,) = torch.autograd.grad(graph_logits[rows, classes].sum(), a, retain_graph=True)
        with torch.no_grad():
            alpha = grad.mean(dim=(2, 3))  # [B, K]
            maps = group_maps(alpha, a.detach(), self.groups, self.denoise_percentile)
            up = F.interpolate(maps, size=x.shape[2:], mode="bilinear", align_corners=False)
            masks = min_max_maps(up)  # [B, G, H, W]
            p = self._masked_probabilities(x, blurred, masks, classes)  # [B, G]
            scores = torch.relu(p - base[rows, classes][:, None])
            saliency = min_max_maps(torch.relu((scores[:, :, None, None] * up).sum(dim=1)))
        self._keep("alpha", alpha)
        self._keep("scores", scores)
        return saliency

    def _masked_probabilities(self, x: Tensor, blurred: Tensor, masks: Tensor,
                              classes: Tensor) -> Tensor:
        """``p_c(X ⊙ M_g + X̃ ⊙ (1 − M_g))`` for every (image, group), batched."""
        b, g = masks.shape[:2]
        image = torch.arange(b, device=x.device).repeat_interleave(g)
        flat_masks = masks.reshape(b * g, 1, *masks.shape[2:])
        out = torch.empty(b * g, dtype=x.dtype, device=x.device)
        for start in range(0, b * g, self.batch_size):
            idx = image[start:start + self.batch_size]
            m = flat_masks[start:start + self.batch_size]
            batch = x[idx] * m + blurred[idx] * (1 - m)
            prob = torch.softmax(self.batch_forward(batch), dim=1)
            out[start:start + len(idx)] = prob[torch.arange(len(idx), device=x.device),
                                               classes[idx]]
        return out.view(b, g)


def group_maps(alpha: Tensor, a: Tensor, groups: int,
               denoise_percentile: float | None = None) -> Tensor:
    """Group-CAM's grouped maps ``ReLU(Σ_{k∈g} α_k A^k)``: [B, K], [B, K, h, w] -> [B, G', h, w].

    Channels are split as ``torch.chunk(α ⊙ A, groups, dim=1)``: chunks of ⌈K/groups⌉
    contiguous channels, so G' = ⌈K / ⌈K/groups⌉⌉ ≤ groups.
    """
    b, k = alpha.shape
    size = math.ceil(k / groups)
    n_groups = math.ceil(k / size)
    index = torch.arange(k, device=a.device) // size
    weighted = alpha[:, :, None, None] * a
    summed = weighted.new_zeros(b, n_groups, *a.shape[2:]).index_add_(1, index, weighted)
    maps = torch.relu(summed)
    if denoise_percentile is not None:
        flat = maps.flatten(2)
        q = torch.quantile(flat, denoise_percentile / 100, dim=-1, keepdim=True)
        maps = torch.where(flat > q, flat, 0.0).view_as(maps)
    return maps
