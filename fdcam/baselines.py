"""The methods FD-CAM is compared with (§IV), behind one interface shared with `FDCAM`.

Every method is an object built as ``Method(model, target_layer=...)`` and called as
``method(x, target=...)`` with ``x: [B, 3, H, W]`` (normalised, on the model's device) and
``target`` as in `fdcam.targets.resolve_targets` (None: each image's top-1 class). It
returns an `Explanation` whose ``saliency`` is [B, H, W] (or [B, C, H, W] for a [B, C]
target) in [0, 1] at input resolution. During a call the model is in eval mode; afterwards
every submodule's train/eval flag and every parameter's ``.grad`` are what they were, and
no hook is left on any module.

Methods (paper reference numbers in brackets):

* through pytorch-grad-cam 1.5.x, called unchanged (`LibraryCAM` subclasses):
  ``gradcam`` [13], ``gradcam++`` [17], ``xgradcam`` [28], ``layercam`` [29],
  ``scorecam`` [14], ``ablationcam`` [23];
* ``groupcam`` [22]: Group-CAM, implemented here from its paper (`GroupCAM`);
* ``ig`` [9]: Integrated Gradients through captum (`IntegratedGradients`);
* ``xrai`` [11]: XRAI through Google PAIR's ``saliency`` package (`XRAI`);
* ``fdcam`` and its ablation variants, provided by `fdcam.cam.FDCAM`.

`make_explainer(name, model)` builds any of `METHODS`; it also accepts a
`fdcam.models.LoadedModel`, whose target layer and normalisation it uses.

EfficientNet-Lite: its activation module ``_swish`` runs twice per forward pass (stem and
head), so a hook on it would see two tensors. The target layer ``"_swish"`` means the head
activation, i.e. the output of ``extract_features``; for that layer the methods run the
model through `EfficientNetLiteClassifier`, a view of the same network whose forward is
``fc(dropout(flatten(avgpool(features(x)))))`` with ``features`` a module computing
``extract_features``. Its logits equal the model's, and the target layer ``features`` runs
exactly once per forward pass.

Example::

    from fdcam.baselines import make_explainer
    from fdcam.models import load_model

    loaded = load_model("efficientnet-lite0")
    explanation = make_explainer("scorecam", loaded, batch_size=64)(x, target=[285, 208])
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam.combine import min_max
from fdcam.errors import FdcamError
from fdcam.explanation import Explanation
from fdcam.split import default_layer, eval_mode, is_efficientnet_lite, resolve_layer
from fdcam.targets import Target, check_images, resolve_targets

Layer = str | nn.Module

#: The methods that `make_explainer` knows: Table I's order, then Fig. 4's IG and XRAI,
#: then FD-CAM and its variants (Tables III, IV).
METHODS: tuple[str, ...] = (
    "gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "layercam", "groupcam",
    "ig", "xrai",
    "fdcam", "fdcam-ng-off", "fdcam-g-off", "fdcam-product", "fdcam-exp", "fdcam-exp-shifted",
)

#: Pixel-attribution methods, shown only qualitatively (Fig. 4): slow, not in Tables I–II.
QUALITATIVE_METHODS: tuple[str, ...] = ("ig", "xrai")

#: Keyword arguments of `fdcam.cam.FDCAM` for each FD-CAM entry of `METHODS` (Tables III, IV).
FDCAM_VARIANTS: dict[str, dict[str, Any]] = {
    "fdcam": {},
    "fdcam-ng-off": {"grouping": False, "switch_on": False},
    "fdcam-g-off": {"switch_on": False},
    "fdcam-product": {"combination": "product"},
    "fdcam-exp": {"combination": "exp"},
    "fdcam-exp-shifted": {"combination": "exp_shifted"},
}


# --------------------------------------------------------------------------------------
# Target layers
# --------------------------------------------------------------------------------------


class EfficientNetLiteFeatures(nn.Module):
    """``extract_features`` of an EfficientNet-Lite as a module: x -> A [B, 1280, h, w]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x)


class EfficientNetLiteClassifier(nn.Module):
    """EfficientNet-Lite seen as ``fc(dropout(flatten(avgpool(features(x)))))``.

    The same modules and parameters as `net` (nothing is copied), and the same logits as
    ``net(x)``; ``features`` is the target layer ``"_swish"`` of the head activation.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = EfficientNetLiteFeatures(net)
        self.avgpool = net._avg_pooling
        self.dropout = net._dropout
        self.fc = net._fc
        # Read once here, never through `self.features`: Ablation-CAM swaps that module for
        # its ablation layer during a call (which has no `net`).
        self.local_pooling = bool(net._global_params.local_pooling)

    def forward(self, x: Tensor) -> Tensor:
        a = self.features(x)
        # `local_pooling` variants average over the flattened map; the same mean.
        pooled = a.flatten(2).mean(-1) if self.local_pooling else self.avgpool(a).flatten(1)
        return self.fc(self.dropout(pooled))


#: The conventional target layer of a known family (`fdcam.split.default_layer`): VGG
#: ``features.<last>`` (the paper's ``features.30`` for VGG16), ResNet ``layer4``,
#: EfficientNet-Lite ``_swish``.
default_target_layer = default_layer


def resolve_target_layer(
    model: nn.Module, target_layer: Layer | None
) -> tuple[str, nn.Module, nn.Module]:
    """``(name, layer, forward_model)``: the layer to hook and the module to run.

    `target_layer` is a submodule of `model` or its dotted name (None: the family's
    default). `forward_model` is `model` itself, except for EfficientNet-Lite's ``_swish``,
    where it is an `EfficientNetLiteClassifier` and `layer` its ``features``.
    """
    name, layer = resolve_layer(model, default_layer(model) if target_layer is None
                                else target_layer)
    if layer is model:
        raise FdcamError("the target layer cannot be the whole model; pick a convolutional "
                         "layer inside it")
    if is_efficientnet_lite(model) and layer is model._swish:
        wrapper = EfficientNetLiteClassifier(model)
        return "_swish", wrapper.features, wrapper
    return name, layer, model


# --------------------------------------------------------------------------------------
# The shared call protocol
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    """`fdcam.split.eval_mode` for the call, and every parameter's ``.grad`` restored after
    (the library methods and IG back-propagate into the parameters)."""
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        with eval_mode(model):
            yield
    finally:
        for p, grad in grads:
            p.grad = grad


def _min_max_maps(maps: Tensor) -> Tensor:
    """`fdcam.combine.min_max` over the last two axes (each map); constant maps -> 0."""
    return min_max(maps.flatten(-2)).view_as(maps)


class Explainer(ABC):
    """Template of a saliency method: checks, eval mode, targets, then one map per class.

    Subclasses implement `_explain_column` (one class per image) and may attach extra
    fields (``alpha``, ``scores``) through `_extras`.
    """

    name: ClassVar[str] = ""
    uses_layer: ClassVar[bool] = True

    def __init__(self, model: nn.Module, target_layer: Layer | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise FdcamError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self._extras: dict[str, list[Tensor]] = {}
        if self.uses_layer:
            self.layer_name, self.layer, self.forward_model = resolve_target_layer(
                model, target_layer)
        else:
            self.layer_name, self.layer, self.forward_model = "", None, model

    def __repr__(self) -> str:
        layer = f"layer={self.layer_name!r}" if self.uses_layer else ""
        return f"{type(self).__name__}({layer})"

    def __call__(self, x: Tensor, target: Target | None = None) -> Explanation:
        """Explain `x` [B, 3, H, W] for `target` (default: each image's top-1 class)."""
        x = check_images(x).detach()
        parameter = next(self.model.parameters(), None)
        if parameter is not None and parameter.device != x.device:
            raise FdcamError(f"x is on {x.device} but the model is on {parameter.device}; "
                             f"move one of them")
        if not torch.isfinite(x).all():
            raise FdcamError("x contains NaN or infinite values; expected finite pixels")
        with _explaining(self.model):
            logits = self._logits(x)
            if target is None:
                target = logits.argmax(dim=1).tolist()
            targets, multi = resolve_targets(target, x.shape[0], logits.shape[1])
            self._extras = {}
            columns = [self._explain_column(x, targets[:, j].to(x.device), logits)
                       for j in range(targets.shape[1])]
        saliency = torch.stack(columns, dim=1)  # [B, C, H, W]
        extras = {key: torch.stack(values, dim=1) for key, values in self._extras.items()}
        if not multi:
            saliency = saliency[:, 0]
            extras = {key: value[:, 0] for key, value in extras.items()}
        return Explanation(saliency=saliency, targets=targets, logits=logits, method=self.name,
                           **extras)

    def _logits(self, x: Tensor) -> Tensor:
        """Raw logits [B, N] under ``no_grad``; also checks that the layer runs exactly once."""
        calls: list[int] = []
        handle = (self.layer.register_forward_hook(lambda *_: calls.append(1))
                  if self.layer is not None else None)
        try:
            with torch.no_grad():
                logits = self.forward_model(x)
        finally:
            if handle is not None:
                handle.remove()
        if handle is not None and len(calls) != 1:
            raise FdcamError(f"target layer {self.layer_name!r} ran {len(calls)} times in one "
                             f"forward pass; pick a layer that runs exactly once")
        _check_logits(logits)
        return logits.detach()

    def _keep(self, key: str, value: Tensor) -> None:
        self._extras.setdefault(key, []).append(value)

    @abstractmethod
    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        """Saliency [B, H, W] in [0, 1] for class ``classes[b]`` of image b."""


def _check_logits(logits: object) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise FdcamError(f"the model must return logits [B, num_classes]; got {shape}")


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FdcamError(f"{name} must be a positive int; got {value!r}")
    return value


# --------------------------------------------------------------------------------------
# pytorch-grad-cam adapters
# --------------------------------------------------------------------------------------


class LibraryCAM(Explainer):
    """A CAM method of pytorch-grad-cam (1.5.x), called unchanged with
    ``ClassifierOutputTarget`` targets (raw logits); only the result is converted.

    The library's post-processing is kept: ``ReLU``, per image ``(L − min)/(1e-7 + max)``,
    ``cv2.resize`` (bilinear) to the input size, then the same scaling once more.
    """

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 progress: bool = False) -> None:
        super().__init__(model, target_layer)
        self.progress = progress  # the library's tqdm bars (Score-/Ablation-CAM)

    @staticmethod
    @abstractmethod
    def _library_class() -> type:
        """The pytorch-grad-cam class."""

    def _make_cam(self) -> Any:
        return self._library_class()(model=self.forward_model, target_layers=[self.layer])

    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = self._make_cam()
        try:
            with self._quiet():
                maps = cam(input_tensor=x,
                           targets=[ClassifierOutputTarget(int(c)) for c in classes])
        finally:
            cam.activations_and_grads.release()
            self._restore_layer(cam)
        return torch.from_numpy(np.ascontiguousarray(maps)).to(x.device)

    def _restore_layer(self, cam: Any) -> None:
        """Nothing to undo, except for Ablation-CAM (see `AblationCAM`)."""

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """Hide the library's progress bars (stderr) unless asked; re-issue its warnings."""
        if self.progress:
            yield
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with contextlib.redirect_stderr(io.StringIO()):
                yield
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class GradCAM(LibraryCAM):
    """Grad-CAM [13] (Selvaraju et al., ICCV 2017): ``L = ReLU(Σ_k α_k A^k)`` with
    ``α_k = (1/Z) Σ_ij ∂f_c/∂A^k_ij`` (Eq. 2)."""

    name = "gradcam"

    @staticmethod
    def _library_class() -> type:
        from pytorch_grad_cam import GradCAM as Library

        return Library


class GradCAMPlusPlus(LibraryCAM):
    """Grad-CAM++ [17] (Chattopadhay et al., WACV 2018): ``α_k = Σ_ij a^k_ij
    ReLU(g^k_ij)`` with ``g = ∂f_c/∂A`` and ``a = g² / (2g² + Σ_ab A^k_ab g³)``."""

    name = "gradcam++"

    @staticmethod
    def _library_class() -> type:
        from pytorch_grad_cam import GradCAMPlusPlus as Library

        return Library


class XGradCAM(LibraryCAM):
    """XGrad-CAM [28] (Fu et al., BMVC 2020): ``α_k = Σ_ij (A^k_ij / Σ_ab A^k_ab)
    ∂f_c/∂A^k_ij``."""

    name = "xgradcam"

    @staticmethod
    def _library_class() -> type:
        from pytorch_grad_cam import XGradCAM as Library

        return Library


class LayerCAM(LibraryCAM):
    """Layer-CAM [29] (Jiang et al., TIP 2021): ``L = ReLU(Σ_k ReLU(∂f_c/∂A^k) ⊙ A^k)``,
    an element-wise weight instead of a channel weight."""

    name = "layercam"

    @staticmethod
    def _library_class() -> type:
        from pytorch_grad_cam import LayerCAM as Library

        return Library


class ScoreCAM(LibraryCAM):
    """Score-CAM [14] (Wang et al., CVPRW 2020): ``w_k = softmax_k f_c(X ⊙ H^k)`` with
    ``H^k`` the min-max normalised, upsampled ``A^k`` (align_corners=True) and ``f_c`` the
    raw logit. `batch_size` masked images per forward pass (the library's default: 16).
    """

    name = "scorecam"

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 batch_size: int = 16, progress: bool = False) -> None:
        super().__init__(model, target_layer, progress=progress)
        self.batch_size = _check_positive_int(batch_size, "batch_size")

    @staticmethod
    def _library_class() -> type:
        from pytorch_grad_cam import ScoreCAM as Library

        return Library

    def _make_cam(self) -> Any:
        cam = super()._make_cam()
        cam.batch_size = self.batch_size  # read by the library when present
        return cam


class AblationCAM(LibraryCAM):
    """Ablation-CAM [23] (Desai & Ramaswamy, WACV 2020): ``w_k = (y_c − y_c^k) / y_c`` with
    ``y_c^k`` the logit when channel k of the layer is set to 0 (or to ``min − 1e7`` when
    the layer's minimum is not 0). `batch_size` ablated copies per pass (default 32).

    The library swaps the target layer for an ablation layer during the call; if the call
    fails half-way, the original layer is put back here.
    """

    name = "ablationcam"

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 batch_size: int = 32, progress: bool = False) -> None:
        super().__init__(model, target_layer, progress=progress)
        self.batch_size = _check_positive_int(batch_size, "batch_size")

    @staticmethod
    def _library_class() -> type:
        from pytorch_grad_cam import AblationCAM as Library

        return Library

    def _make_cam(self) -> Any:
        from pytorch_grad_cam import AblationCAM as Library
        from pytorch_grad_cam.ablation_layer import AblationLayer

        class KeywordAblationLayer(AblationLayer):
            """The library's layer, callable like the layer it replaces: EfficientNet-Lite
            calls its blocks as ``block(x, drop_connect_rate=r)``. The ablation layer
            returns the cached activations with channels ablated, whatever its input."""

            def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
                return super().__call__(x)

        # A fresh ablation layer: the library's default argument is one shared instance.
        return Library(model=self.forward_model, target_layers=[self.layer],
                       ablation_layer=KeywordAblationLayer(), batch_size=self.batch_size)

    def _restore_layer(self, cam: Any) -> None:
        from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

        if any(m is cam.ablation_layer for m in self.forward_model.modules()):
            replace_layer_recursive(self.forward_model, cam.ablation_layer, self.layer)


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


class GroupCAM(Explainer):
    """Group-CAM [22] (Zhang, Rao, Yang 2021, arXiv:2103.13859), implemented from the paper.

    1. Grad-CAM weights ``α_k = mean_ij ∂f_c/∂A^k_ij`` (raw logit f_c).
    2. Split: the K channels of ``α ⊙ A`` in G contiguous chunks (``torch.chunk``
       sizes: ⌈K/G⌉ each, the last one smaller; fewer chunks when K/G is not whole).
    3. Group map ``M'_g = up(ReLU(Σ_{k∈g} α_k A^k))`` (bilinear to H×W), and the mask
       ``M_g = minmax(M'_g)`` (a constant map -> 0).
    4. Score ``s_g = ReLU(p_c(X ⊙ M_g + X̃ ⊙ (1 − M_g)) − p_c(X̃))`` with ``X̃`` the input
       blurred by a 51×51, σ = 50 Gaussian (reflect border) and p the softmax.
    5. ``L = minmax(ReLU(Σ_g s_g M'_g))``.

    The paper also "de-noises" each group map; the reference behaviour recorded in
    DESIGN.md has no such step, so it is off by default. `denoise_percentile` = θ turns
    it on: values of ``ReLU(Σ_{k∈g} α_k A^k)`` at or below their θ-th percentile -> 0.

    ``Explanation.alpha`` holds α [B, K] and ``Explanation.scores`` the group scores s_g
    [B, G]. The G masked images of all images are evaluated `batch_size` at a time.

    Layer: by default (`target_layer` None) the target layer every method of the
    comparison shares (`default_target_layer`: VGG16 ``features.30``, the paper's layer),
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
        self.groups = _check_positive_int(groups, "groups")
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        if _check_positive_int(blur_kernel, "blur_kernel") % 2 == 0:
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
            raise FdcamError(f"target layer {self.layer_name!r} ran {len(held)} times in one "
                             f"forward pass; pick a layer that runs exactly once")
        _check_logits(logits)
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
            masks = _min_max_maps(up)  # [B, G, H, W]
            p = self._masked_probabilities(x, blurred, masks, classes)  # [B, G]
            scores = torch.relu(p - base[rows, classes][:, None])
            saliency = _min_max_maps(torch.relu((scores[:, :, None, None] * up).sum(dim=1)))
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
            prob = torch.softmax(self.forward_model(batch), dim=1)
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


# --------------------------------------------------------------------------------------
# Integrated Gradients and XRAI (pixel attributions; Fig. 4 only)
# --------------------------------------------------------------------------------------


def _attribution_to_saliency(attribution: Tensor, clip_percentile: float | None) -> Tensor:
    """[B, H, W] attribution -> [0, 1]: optional clipping at the upper percentile, min-max."""
    if clip_percentile is not None:
        flat = attribution.flatten(1)
        top = torch.quantile(flat, clip_percentile / 100, dim=1)
        attribution = torch.minimum(attribution, top[:, None, None])
    return _min_max_maps(attribution)


def _check_percentile(value: float | None, name: str) -> float | None:
    if value is not None and not 0 < value <= 100:
        raise FdcamError(f"{name} must be in (0, 100] or None; got {value!r}")
    return value


class IntegratedGradients(Explainer):
    """Integrated Gradients [9] (Sundararajan et al., ICML 2017), through captum:

    ``IG_i(x) = (x_i − x'_i) ∫_0^1 ∂f_c(x' + t (x − x'))/∂x_i dt`` with the baseline
    ``x' = 0`` in normalised space, f_c the raw logit, `n_steps` Gauss–Legendre points
    (captum's default rule) and `internal_batch_size` points per pass.

    `target_layer` is accepted for a uniform interface and ignored.
    Saliency: ``Σ_colour |IG|`` per pixel (the PAIR/XRAI convention; the magnitude of
    attribution regardless of sign), optionally clipped at its `clip_percentile`-th
    percentile per image (the PAIR visualisation uses 99), then min-max to [0, 1].
    """

    name = "ig"
    uses_layer = False

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 n_steps: int = 50, internal_batch_size: int = 16,
                 clip_percentile: float | None = None) -> None:
        super().__init__(model, target_layer)
        self.n_steps = _check_positive_int(n_steps, "n_steps")
        self.internal_batch_size = _check_positive_int(internal_batch_size,
                                                       "internal_batch_size")
        self.clip_percentile = _check_percentile(clip_percentile, "clip_percentile")

    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        with warnings.catch_warnings():
            # captum imports tqdm.auto, which warns in a notebook kernel without ipywidgets
            # ("IProgress not found"); no captum progress bar is ever shown here.
            warnings.filterwarnings("ignore", message="IProgress not found")
            from captum.attr import IntegratedGradients as CaptumIG

        ig = CaptumIG(self.forward_model)
        attribution = ig.attribute(x, baselines=torch.zeros_like(x), target=classes,
                                   n_steps=self.n_steps,
                                   internal_batch_size=self.internal_batch_size)
        return _attribution_to_saliency(attribution.detach().abs().sum(dim=1),
                                        self.clip_percentile)


class XRAI(Explainer):
    """XRAI [11] (Kapishnikov et al., ICCV 2019), through ``saliency.core.XRAI`` (Google PAIR).

    XRAI over-segments the image (Felzenszwalb at six scales, dilated masks) and grows a
    region ranking greedily by attribution density ``mean_{R \\ S} IG``, where IG (raw logit,
    `steps` points, averaged over a black and a white baseline, channel max) comes from
    the same package. Each pixel's value is the density of the region that added it.

    Baselines: black and white pixels ``(0 − mean)/std`` and ``(1 − mean)/std`` when the
    model's normalisation `mean`, `std` is given (`make_explainer` passes it for a
    `LoadedModel`), else the package default: constant images at the min and max of x.
    The map is min-max normalised to [0, 1]. Runs one image and class at a time (slow).
    `target_layer` is accepted for a uniform interface and ignored.
    """

    name = "xrai"
    uses_layer = False

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 steps: int = 100, batch_size: int = 16, algorithm: str = "full",
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(model, target_layer)
        self.steps = _check_positive_int(steps, "steps")
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        if algorithm not in ("full", "fast"):
            raise FdcamError(f"algorithm must be 'full' or 'fast'; got {algorithm!r}")
        self.algorithm = algorithm
        if (mean is None) != (std is None):
            raise FdcamError("give both mean and std (the model's normalisation) or neither")
        if mean is not None and std is not None:
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise FdcamError(f"mean and std must be 3 numbers each, std > 0; "
                                 f"got {tuple(mean)}, {tuple(std)}")
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)

    def _call_model(self, device: torch.device) -> Callable[..., dict[str, np.ndarray]]:
        import saliency.core as saliency

        def call_model(images: np.ndarray, call_model_args: dict[str, int] | None = None,
                       expected_keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
            c = (call_model_args or {})["class"]
            batch = torch.from_numpy(np.asarray(images, dtype=np.float32)).to(device)
            batch = batch.permute(0, 3, 1, 2).requires_grad_(True)  # NHWC -> NCHW
            with torch.enable_grad():
                out = self.forward_model(batch)
                (grad,) = torch.autograd.grad(out[:, c].sum(), batch)
            return {saliency.INPUT_OUTPUT_GRADIENTS:
                    grad.permute(0, 2, 3, 1).cpu().numpy()}

        return call_model

    def _baselines(self, image: np.ndarray) -> list[np.ndarray] | None:
        if self.mean is None or self.std is None:
            return None
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        return [np.broadcast_to((value - mean) / std, image.shape).astype(image.dtype)
                for value in (0.0, 1.0)]

    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        import saliency.core as saliency

        xrai = saliency.XRAI()
        parameters = saliency.XRAIParameters(steps=self.steps, algorithm=self.algorithm)
        call_model = self._call_model(x.device)
        maps = []
        for image, c in zip(x, classes.tolist(), strict=True):
            value = image.permute(1, 2, 0).cpu().numpy().astype(np.float32)  # HWC
            attribution = xrai.GetMask(value, call_model, call_model_args={"class": c},
                                       baselines=self._baselines(value),
                                       batch_size=self.batch_size,
                                       extra_parameters=parameters)
            a = torch.as_tensor(np.asarray(attribution, dtype=np.float32), device=x.device)
            finite = torch.isfinite(a)
            low = a[finite].min() if finite.any() else a.new_zeros(())
            maps.append(torch.where(finite, a, low))
        return _min_max_maps(torch.stack(maps))


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

BASELINES: dict[str, type[Explainer]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, XGradCAM, ScoreCAM, AblationCAM,
                              LayerCAM, GroupCAM, IntegratedGradients, XRAI)
}


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
    layer unless `target_layer` is given, and for ``xrai`` its normalisation). `options`
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
