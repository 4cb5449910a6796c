"""What every baseline shares: the target layer, eval mode, target classes, one map per
class in [0, 1] (`BaseExplainer`), EfficientNet-Lite0 as a module the libraries can hook,
and one call of a module that runs several times as a module of its own (`CallSiteModel`)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.explanation import Explanation
from fdcam.split import (
    CallSite,
    call_site_problem,
    default_layer,
    eval_mode,
    is_efficientnet_lite_head_activation,
    resolve_call_site,
)
from fdcam.targets import Target, check_model_input, resolve_targets

Layer = str | nn.Module


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


class CallSiteModel(nn.Module):
    """`net` with one call of one of its modules routed through ``self.site``, so that a
    library that hooks (or replaces) a module sees that call, and only that one.

    The module ``net.<name>`` runs several times in one forward pass; on its call number
    `call` (1-based) its output y becomes ``self.site(y)``, an identity module by default.
    pytorch-grad-cam hooks ``site`` for the activations and gradients of that call;
    Ablation-CAM replaces ``site`` by its ablation layer, which is then called instead.
    Same parameters as `net` (nothing is copied), same logits as ``net(x)``.
    """

    def __init__(self, net: nn.Module, name: str, call: int) -> None:
        super().__init__()
        self.net = net
        self.site: nn.Module = nn.Identity()
        self.layer_name = name
        self.call = call

    def forward(self, x: Tensor) -> Tensor:
        seen = [0]

        def route(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor | None:
            seen[0] += 1
            return self.site(output) if seen[0] == self.call else None

        handle = self.net.get_submodule(self.layer_name).register_forward_hook(route)
        try:
            logits = self.net(x)
        finally:
            handle.remove()
        problem = call_site_problem(self.layer_name, self.call, seen[0])
        if problem is not None:
            raise FdcamError(problem)
        return logits


def resolve_target_layer(
    model: nn.Module, target_layer: Layer | None
) -> tuple[str, nn.Module, nn.Module]:
    """``(name, layer, forward_model)``: the layer to hook and the module to run.

    `target_layer` is a submodule of `model`, its dotted name, or a call site ``name#k``
    (None: the family's default). `forward_model` is `model` itself, except for a call site,
    where it is a `CallSiteModel` and `layer` its ``site``, and for EfficientNet-Lite's
    ``_swish`` (= ``_swish#2``), where it is an `EfficientNetLiteClassifier` and `layer` its
    ``features``. `name` is the layer's label (``name`` or ``name#k``).
    """
    site: CallSite = resolve_call_site(model, default_layer(model) if target_layer is None
                                       else target_layer)
    if site.module is model:
        raise FdcamError("the target layer cannot be the whole model; pick a convolutional "
                         "layer inside it")
    if is_efficientnet_lite_head_activation(model, site):
        wrapper = EfficientNetLiteClassifier(model)
        return site.label, wrapper.features, wrapper
    if site.call is not None:
        routed = CallSiteModel(model, site.name, site.call)
        return site.label, routed.site, routed
    return site.name, site.module, model


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


class BaseExplainer(ABC):
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
        #: The forward pass for batches of perturbed images under ``no_grad`` (Group-CAM's
        #: masked images, Score-CAM's masked copies): ``images -> logits``, the same
        #: function as the model. `fdcam.evaluation` puts a compiled copy here.
        self.batch_forward: Callable[[Tensor], Tensor] = self.forward_model

    def __repr__(self) -> str:
        layer = f"layer={self.layer_name!r}" if self.uses_layer else ""
        return f"{type(self).__name__}({layer})"

    def __call__(self, x: Tensor, target: Target | None = None) -> Explanation:
        """Explain `x` [B, 3, H, W] for `target` (default: each image's top-1 class)."""
        x = check_model_input(self.model, x, channels=3).detach()
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
            raise FdcamError(call_site_problem(self.layer_name, None, len(calls)) or "")
        check_logits(logits)
        return logits.detach()

    def _keep(self, key: str, value: Tensor) -> None:
        self._extras.setdefault(key, []).append(value)

    @abstractmethod
    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        """Saliency [B, H, W] in [0, 1] for class ``classes[b]`` of image b."""


def check_logits(logits: object) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise FdcamError(f"the model must return logits [B, num_classes]; got {shape}")


