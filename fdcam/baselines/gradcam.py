"""The pytorch-grad-cam family (1.5.x), called unchanged: Grad-CAM, Grad-CAM++, XGrad-CAM,
Layer-CAM, Score-CAM and Ablation-CAM; only the result is converted."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from fdcam.baselines.base import BaseExplainer, Layer
from fdcam.checks import check_positive_int
from fdcam.split import Context, Split, expand_context, split_model

# --------------------------------------------------------------------------------------
# pytorch-grad-cam adapters
# --------------------------------------------------------------------------------------


class LibraryCAM(BaseExplainer):
    """A CAM method of pytorch-grad-cam (1.5.x), called unchanged with
    ``ClassifierOutputTarget`` targets (raw logits); only the result is converted.

    The library's post-processing is kept: ``ReLU``, per image ``(L − min)/(1e-7 + max)``,
    ``cv2.resize`` (bilinear) to the input size, then the same scaling once more.
    """

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 progress: bool = False) -> None:
        super().__init__(model, target_layer)
        self.progress = progress  # the library's tqdm bars (Score-/Ablation-CAM)

    #: The name of the pytorch-grad-cam class (imported when a map is made).
    library_name: ClassVar[str] = ""

    def _library_class(self) -> type:
        import pytorch_grad_cam

        return getattr(pytorch_grad_cam, self.library_name)

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

    library_name = "GradCAM"


class GradCAMPlusPlus(LibraryCAM):
    """Grad-CAM++ [17] (Chattopadhay et al., WACV 2018): ``α_k = Σ_ij a^k_ij
    ReLU(g^k_ij)`` with ``g = ∂f_c/∂A`` and ``a = g² / (2g² + Σ_ab A^k_ab g³)``."""

    name = "gradcam++"

    library_name = "GradCAMPlusPlus"


class XGradCAM(LibraryCAM):
    """XGrad-CAM [28] (Fu et al., BMVC 2020): ``α_k = Σ_ij (A^k_ij / Σ_ab A^k_ab)
    ∂f_c/∂A^k_ij``."""

    name = "xgradcam"

    library_name = "XGradCAM"


class LayerCAM(LibraryCAM):
    """Layer-CAM [29] (Jiang et al., TIP 2021): ``L = ReLU(Σ_k ReLU(∂f_c/∂A^k) ⊙ A^k)``,
    an element-wise weight instead of a channel weight."""

    name = "layercam"

    library_name = "LayerCAM"


class BatchedLibraryCAM(LibraryCAM):
    """A library method that runs many masked or ablated copies: `batch_size` copies per
    forward pass (default: the method's `default_batch_size`)."""

    default_batch_size: ClassVar[int] = 16

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 batch_size: int | None = None, progress: bool = False) -> None:
        super().__init__(model, target_layer, progress=progress)
        self.batch_size = check_positive_int(
            self.default_batch_size if batch_size is None else batch_size, "batch_size")


class ScoreCAM(BatchedLibraryCAM):
    """Score-CAM [14] (Wang et al., CVPRW 2020): ``w_k = softmax_k f_c(X ⊙ H^k)`` with
    ``H^k`` the min-max normalised, upsampled ``A^k`` (align_corners=True) and ``f_c`` the
    raw logit. `batch_size` masked images per forward pass (the library's default: 16).
    """

    name = "scorecam"
    library_name = "ScoreCAM"

    def _make_cam(self) -> Any:
        model = self.forward_model
        if self.batch_forward is not self.forward_model:
            model = _BatchesThrough(model, self.batch_forward)
        cam = self._library_class()(model=model, target_layers=[self.layer])
        cam.batch_size = self.batch_size  # read by the library when present
        return cam

    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        # The library's hooked pass runs with gradients on, its masked batches under
        # no_grad: `_BatchesThrough` tells them apart by that.
        with torch.enable_grad():
            return super()._explain_column(x, classes, logits)


class _BatchesThrough(nn.Module):
    """`model` for the library's hooked forward pass (gradients on), `batch_forward` for
    the batches it runs under ``no_grad`` (Score-CAM's masked copies): same logits."""

    def __init__(self, model: nn.Module, batch_forward: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.batch_forward = batch_forward

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) if torch.is_grad_enabled() else self.batch_forward(x)


class AblationCAM(BatchedLibraryCAM):
    """Ablation-CAM [23] (Desai & Ramaswamy, WACV 2020): ``w_k = (y_c − y_c^k) / y_c`` with
    ``y_c^k`` the logit when channel k of the layer is set to 0 (or to ``min − 1e7`` when
    the layer's minimum is not 0). `batch_size` ablated copies per pass (default 32).

    The library swaps the target layer for an ablation layer during the call; if the call
    fails half-way, the original layer is put back here. The library runs the whole model
    once per batch of ablated copies, although its ablation layer discards what reaches it:
    where the model splits at the layer (`fdcam.split.split_model`), it is given the model
    as ``head(site(body(x)))`` instead (`BodyOnceClassifier`), so that the body runs once
    per image and each copy costs only the head. The ablated activations reach the same
    head either way, so the maps are the library's.
    """

    name = "ablationcam"
    library_name = "AblationCAM"
    default_batch_size = 32

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 batch_size: int | None = None, progress: bool = False) -> None:
        super().__init__(model, target_layer, batch_size=batch_size, progress=progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a hook split would save nothing: not used
            split = split_model(model, self.layer_name)
        if split.kind != "hook":
            self.forward_model = BodyOnceClassifier(split)
            self.layer = self.forward_model.site

    def _make_cam(self) -> Any:
        from pytorch_grad_cam.ablation_layer import AblationLayer

        class KeywordAblationLayer(AblationLayer):
            """The library's layer, callable like the layer it replaces: EfficientNet-Lite
            calls its blocks as ``block(x, drop_connect_rate=r)``. The ablation layer
            returns the cached activations with channels ablated, whatever its input."""

            def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
                return super().__call__(x)

        # A fresh ablation layer: the library's default argument is one shared instance.
        return self._library_class()(model=self.forward_model, target_layers=[self.layer],
                                     ablation_layer=KeywordAblationLayer(),
                                     batch_size=self.batch_size)

    def _restore_layer(self, cam: Any) -> None:
        from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

        if any(m is cam.ablation_layer for m in self.forward_model.modules()):
            replace_layer_recursive(self.forward_model, cam.ablation_layer, self.layer)
        if isinstance(self.forward_model, BodyOnceClassifier):
            self.forward_model.forget()


class BodyOnceClassifier(nn.Module):
    """A split model as ``head(site(body(x)))``, with the body's output kept for the images
    of the last call: a batch whose rows are all one of those images (Ablation-CAM's copies
    of one image) reuses it instead of running the body again.

    ``site`` is an identity module on the target layer's activations A [N, K, h, w], for a
    library to hook or replace. The same logits as the model (the invariant of
    `fdcam.split.Split`); the model's parameters are this module's (nothing is copied).
    """

    def __init__(self, split: Split) -> None:
        super().__init__()
        self.net = split.model
        self.site: nn.Module = nn.Identity()
        self.split = split
        self.kept: tuple[Tensor, Tensor, Context] | None = None

    def forward(self, x: Tensor) -> Tensor:
        a, context = self.body(x)
        return self.split.head(self.site(a), context=context)

    def body(self, x: Tensor) -> tuple[Tensor, Context]:
        """A and the head's context for `x`, from the kept ones where every row of `x` is one
        kept image."""
        kept = self.kept
        if kept is not None and x.shape[1:] == kept[0].shape[1:] and bool((x == x[:1]).all()):
            same = (kept[0] == x[:1]).flatten(1).all(dim=1).nonzero()
            if len(same):
                i, rows = int(same[0]), x.shape[0]
                a = kept[1][i: i + 1].expand(rows, *kept[1].shape[1:])
                return a, expand_context(kept[2], i, rows)
        a, context = self.split.forward_body(x)
        self.kept = (x.detach(), a.detach(), tuple(v.detach() for v in context))
        return a, context

    def forget(self) -> None:
        """Drop the kept images and activations."""
        self.kept = None
