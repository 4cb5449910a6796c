"""A classifier split at its target layer (§II): ``body(x) -> A`` and ``head(A) -> logits``.

Every CAM method of the paper looks at the activations ``A = [A^1 … A^K]`` of one target
convolutional layer and asks how the class score ``f_c`` depends on them. Splitting the
network there lets FD-CAM run the expensive body once per image (under ``no_grad``) and
perturb or differentiate only the head. The invariant is ``head(body(x)) == model(x)``.

Explicit splits exist for torchvision VGG (``features.N``), torchvision ResNet
(``layerN``), EfficientNet-Lite (``_swish``: the head activation, i.e. the output of
``extract_features``) and plain ``nn.Sequential`` models (a direct child). Any other
module of any other model works through a hook split: the body runs the model and keeps the
layer's output, the head reruns the model with a hook that replaces the layer's output.

When the head begins with channel-wise modules, a ``Flatten`` and a ``Linear`` layer
(VGG16, ResNet, EfficientNet), the split also describes it as a `LinearHead`, which is what
`fdcam.switching` needs for its exact fast path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError

# Modules whose output channel k depends only on input channel k (in eval mode). A head
# that starts with these, then Flatten, then Linear, has the exact fast path.
_CHANNEL_WISE = (
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Identity,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Sigmoid,
    nn.Tanh, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d,
)

# Channel-wise modules whose backward pass only redistributes each output's gradient over
# input pixels with weights summing to 1 (averaging, max-selection, identity).
_GRADIENT_PRESERVING = (
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d, nn.Identity, nn.Dropout,
    nn.Dropout2d,
)


@dataclass(frozen=True)
class LinearHead:
    """A head of the form ``layers(first(flatten(channel_wise(A))))``.

    ``channel_wise`` maps [N, K, h, w] to [N, K, a, b] channel by channel, ``first`` is a
    Linear layer on the channel-major flattening (K blocks of m = a·b inputs), and
    ``layers`` holds what follows (for VGG16: ReLU, Dropout, Linear, ReLU, Dropout, Linear).
    """

    channel_wise: nn.Sequential
    first: nn.Linear
    layers: nn.Sequential

    @property
    def last(self) -> nn.Linear | None:
        """The final Linear layer when ``layers`` ends with one (only its target rows matter)."""
        if len(self.layers) and isinstance(self.layers[-1], nn.Linear):
            return self.layers[-1]
        return None

    @property
    def sums_gradients(self) -> bool:
        """True when the channel-wise stage is pooling only (VGG16, ResNet, EfficientNet).

        Then the spatial sum of ∂f/∂A^k equals the sum of ∂f/∂P_k over the pooled
        positions, so Grad-CAM's α needs only ``Σ_j W₁[:, k, j]``, not W₁ itself.
        (AvgPool2d is left out: with padding it may average fewer than its pixels.)
        """
        return all(type(m) in _GRADIENT_PRESERVING for m in self.channel_wise)


class Split:
    """``body(x) -> A`` and ``head(A, x) -> logits`` for one model and target layer.

    ``head`` takes the images too: only the hook split needs them (it reruns the model);
    explicit splits ignore them. ``linear_head`` is set when the exact fast path applies.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_name: str,
        body: Callable[[Tensor], Tensor],
        head: Callable[[Tensor, Tensor], Tensor],
        linear_head: LinearHead | None = None,
        *,
        needs_images: bool = False,
    ) -> None:
        self.model = model
        self.layer_name = layer_name
        self._body = body
        self._head = head
        self.linear_head = linear_head
        self.needs_images = needs_images

    def body(self, x: Tensor) -> Tensor:
        """Activations of the target layer, A: [B, K, h, w]."""
        return self._body(x)

    def head(self, a: Tensor, x: Tensor | None = None) -> Tensor:
        """Logits [N, classes] from activations A: [N, K, h, w] (x: [N, 3, H, W] if needed)."""
        if self.needs_images and x is None:
            raise FdcamError(f"the hook split at {self.layer_name!r} needs the images as well")
        # A copy: heads may begin with in-place modules (ReLU(inplace=True)), which must
        # neither overwrite the caller's activations nor a leaf that needs gradients.
        return self._head(a.clone(), x)  # type: ignore[arg-type]


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    """Name and module of the target layer, given as a module or a dotted name.

    An unknown name is reported with the children of its deepest valid prefix
    ("unknown layer 'features.31'; available under 'features': features.0, …").
    """
    if isinstance(layer, str):
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            raise FdcamError(_unknown_layer_message(model, layer)) from None
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise FdcamError(f"target layer {type(layer).__name__} is not a submodule of the model; "
                         f"pass one of its modules or a dotted name")
    raise FdcamError(f"target_layer must be a module or a dotted name; got {type(layer).__name__}")


def _unknown_layer_message(model: nn.Module, name: str) -> str:
    """Name the deepest valid prefix of `name` and list its children, on one line."""
    parts = name.split(".")
    parent, prefix = model, ""
    for depth in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:depth])
        with contextlib.suppress(AttributeError):
            parent, prefix = model.get_submodule(candidate), candidate
            break
    names = [f"{prefix}.{child}" if prefix else child for child, _ in parent.named_children()]
    where = f" under {prefix!r}" if prefix else ""
    return f"unknown layer {name!r}; available{where}: {_abbreviate(names) or '(none)'}"


def default_layer(model: nn.Module) -> str:
    """The conventional target layer of the known families (the paper's for VGG16)."""
    from torchvision.models import VGG, ResNet

    if isinstance(model, VGG):
        return f"features.{len(model.features) - 1}"
    if isinstance(model, ResNet):
        return "layer4"
    if is_efficientnet_lite(model):
        return "_swish"
    raise FdcamError(f"no default target layer for {type(model).__name__}; pass target_layer "
                     f"(a module or a dotted name such as 'features.30')")


def split_model(model: nn.Module, layer: str | nn.Module | None = None) -> Split:
    """Split `model` at `layer` (default: the family's conventional target layer)."""
    from torchvision.models import VGG, ResNet

    name, module = resolve_layer(model, default_layer(model) if layer is None else layer)
    if isinstance(model, VGG) and name.startswith("features.") and name.count(".") == 1:
        return _split_vgg(model, name)
    if isinstance(model, ResNet) and name in ("layer1", "layer2", "layer3", "layer4"):
        return _split_resnet(model, name)
    if is_efficientnet_lite(model) and name == "_swish":
        return _split_efficientnet_lite(model)
    if isinstance(model, nn.Sequential) and "." not in name:
        return _split_sequential(model, name)
    return _split_hook(model, name, module)


def _split_chain(model: nn.Module, name: str, body: Sequence[nn.Module],
                 head: Sequence[nn.Module]) -> Split:
    body_seq = nn.Sequential(*body)
    head_seq = nn.Sequential(*head)
    return Split(model, name, body_seq, lambda a, _x: head_seq(a), linear_head(head))


def _split_vgg(model: nn.Module, name: str) -> Split:
    index = int(name.split(".")[1])
    features = list(model.features)  # type: ignore[arg-type]
    head = [*features[index + 1:], model.avgpool, nn.Flatten(1), *model.classifier]  # type: ignore[misc]
    return _split_chain(model, name, features[: index + 1], head)


def _split_resnet(model: nn.Module, name: str) -> Split:
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    n = int(name[-1])
    body = [model.conv1, model.bn1, model.relu, model.maxpool, *stages[:n]]
    head = [*stages[n:], model.avgpool, nn.Flatten(1), model.fc]
    return _split_chain(model, name, body, head)  # type: ignore[arg-type]


def _split_efficientnet_lite(model: nn.Module) -> Split:
    # `_swish` runs twice (stem and head); its head call is what extract_features returns.
    head = [model._avg_pooling, nn.Flatten(1), model._dropout, model._fc]
    head_seq = nn.Sequential(*head)  # type: ignore[arg-type]
    return Split(model, "_swish", model.extract_features, lambda a, _x: head_seq(a),
                 linear_head(head))  # type: ignore[arg-type]


def _split_sequential(model: nn.Sequential, name: str) -> Split:
    children = list(model.named_children())
    index = next(i for i, (child, _) in enumerate(children) if child == name)
    modules = [module for _, module in children]
    return _split_chain(model, name, modules[: index + 1], modules[index + 1:])


def linear_head(head: Sequence[nn.Module]) -> LinearHead | None:
    """Describe `head` as a `LinearHead` if it is channel-wise ops, Flatten(1), Linear, …"""
    modules = list(_flatten_sequentials(head))
    i = 0
    while i < len(modules) and isinstance(modules[i], _CHANNEL_WISE):
        i += 1
    if i >= len(modules):
        return None
    flatten = modules[i]
    if not (isinstance(flatten, nn.Flatten) and flatten.start_dim == 1 and flatten.end_dim == -1):
        return None
    j = i + 1  # eval-mode identities may sit between Flatten and Linear (EfficientNet's dropout)
    while j < len(modules) and isinstance(modules[j], nn.Dropout | nn.Identity):
        j += 1
    if j >= len(modules) or not isinstance(modules[j], nn.Linear):
        return None
    return LinearHead(nn.Sequential(*modules[:i]), modules[j], nn.Sequential(*modules[j + 1:]))


def _flatten_sequentials(modules: Sequence[nn.Module]) -> Iterator[nn.Module]:
    for module in modules:
        if type(module) is nn.Sequential:
            yield from _flatten_sequentials(list(module))
        else:
            yield module


class _Stop(Exception):
    """Raised by the body hook to skip the rest of the forward pass."""


def _split_hook(model: nn.Module, name: str, module: nn.Module) -> Split:
    """Hook split: works for any module that runs exactly once per forward pass."""

    def body(x: Tensor) -> Tensor:
        calls: list[Tensor] = []

        def keep(_m: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, Tensor) or output.dim() != 4:
                raise FdcamError(f"layer {name!r} must output a tensor [B, K, h, w]; got "
                                 f"{type(output).__name__}"
                                 + (f" of shape {tuple(output.shape)}"
                                    if isinstance(output, Tensor) else ""))
            calls.append(output)

        handle = module.register_forward_hook(keep)
        try:
            model(x)
        finally:
            handle.remove()
        if len(calls) != 1:
            raise FdcamError(f"layer {name!r} runs {len(calls)} times in one forward pass; "
                             f"choose a module that runs exactly once")
        return calls[0]

    def head(a: Tensor, x: Tensor) -> Tensor:
        def replace(_m: nn.Module, _inputs: object, _output: object) -> Tensor:
            return a

        handle = module.register_forward_hook(replace)
        try:
            return model(x)
        finally:
            handle.remove()

    return Split(model, name, body, head, None, needs_images=True)


def is_efficientnet_lite(model: nn.Module) -> bool:
    """True for an ``efficientnet_lite_pytorch`` EfficientNet (False if it is not installed)."""
    with contextlib.suppress(ImportError):
        from efficientnet_lite_pytorch import EfficientNet

        return isinstance(model, EfficientNet)
    return False


def _abbreviate(names: list[str], limit: int = 40) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", … ({len(names) - limit} more)"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run in eval mode and restore every submodule's own train/eval flag afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def count_hooks(model: nn.Module) -> int:
    """Number of forward/backward hooks on the model's modules (0 after every explanation)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def no_grad_body(split: Split, x: Tensor) -> Tensor:
    """The body under ``no_grad``: FD-CAM never back-propagates through it."""
    with torch.no_grad():
        return split.body(x)
