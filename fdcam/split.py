"""A classifier split at its target layer (§II): ``body(x) -> A`` and ``head(A) -> logits``.

Every CAM method of the paper looks at the activations ``A = [A^1 … A^K]`` of one target
convolutional layer and asks how the class score ``f_c`` depends on them. Splitting the
network there lets FD-CAM run the expensive body once per image (under ``no_grad``) and
perturb or differentiate only the head. The invariant is ``head(body(x)) == model(x)``.

Any model whose forward pass `torch.fx` can trace is cut by `fdcam.graph_cut`: the body
returns A and the *context* (values from before the cut that the head reads, such as a
skip connection), and the head runs the part of the graph after the cut only. The head is
then read in stages (`fdcam.head.HeadStages`) for the exact fast paths of switching.
EfficientNet-Lite's ``_swish`` (its activation module runs twice, in the stem and at the
end) has an explicit split. A model that cannot be traced falls back to a hook split, with
a warning: the body runs the model and keeps the layer's output, the head reruns the whole
model with the output replaced — exact, but every mask costs a full forward pass.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError

if TYPE_CHECKING:
    from fdcam.head import HeadStages

#: Values from before the cut that the head reads, one row per image.
Context = tuple[Tensor, ...]


class Split:
    """``forward_body(x) -> (A, context)`` and ``head(A, context) -> logits`` for one layer.

    ``stages`` describes the head for the fast paths (None: evaluate `head` directly).
    ``needs_images`` is True when the head reads a context (skip connections crossing the
    cut, or the images themselves for a hook split): `head` then needs it or the images.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_name: str,
        body: Callable[[Tensor], tuple[Tensor, Context]],
        head: Callable[..., Tensor],
        stages: HeadStages | None = None,
        *,
        needs_images: bool = False,
        kind: str = "graph",
    ) -> None:
        self.model = model
        self.layer_name = layer_name
        self._body = body
        self._head = head
        self.stages = stages
        self.needs_images = needs_images
        self.kind = kind

    def __repr__(self) -> str:
        return f"Split(layer={self.layer_name!r}, kind={self.kind!r})"

    def body(self, x: Tensor) -> Tensor:
        """Activations of the target layer, A: [B, K, h, w]."""
        return self.forward_body(x)[0]

    def forward_body(self, x: Tensor) -> tuple[Tensor, Context]:
        """A [B, K, h, w] and the context the head needs (one row per image)."""
        a, context = self._body(x)
        if not isinstance(a, Tensor) or a.dim() != 4:
            shape = f" of shape {tuple(a.shape)}" if isinstance(a, Tensor) else ""
            raise FdcamError(f"layer {self.layer_name!r} must output a tensor [B, K, h, w]; "
                             f"got {type(a).__name__}{shape}")
        return a, context

    def head(self, a: Tensor, x: Tensor | None = None, *,
             context: Context | None = None) -> Tensor:
        """Logits [N, classes] from activations A: [N, K, h, w].

        When the head reads a context, pass it (from `forward_body`) or the images x
        [N, 3, H, W], from which it is recomputed.
        """
        if context is None:
            if self.needs_images:
                if x is None:
                    raise FdcamError(f"the head after {self.layer_name!r} reads values from "
                                     f"before the cut; pass the images or the context")
                context = self.forward_body(x)[1]
            else:
                context = ()
        # A copy: heads may begin with in-place modules (ReLU(inplace=True)), which must
        # neither overwrite the caller's activations nor a leaf that needs gradients.
        return self._head(a.clone(), *context)


def expand_context(context: Context, index: int, rows: int) -> Context:
    """Image `index`'s context repeated for `rows` masks (a copy: heads may add in place)."""
    return tuple(v[index: index + 1].expand(rows, *v.shape[1:]).clone() for v in context)


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


#: The conventional target layer of each known family (the paper's for VGG16): the last
#: convolutional stage's output, as pytorch-grad-cam's README suggests.
DEFAULT_LAYERS: dict[str, str] = {
    "VGG": "features.<last>",
    "ResNet": "layer4",  # also ResNeXt and Wide ResNet
    "DenseNet": "features.norm5",
    "MobileNetV2": "features.<last>",
    "MobileNetV3": "features.<last>",
    "EfficientNet": "features.<last>",  # torchvision EfficientNet B0-B7 and V2
    "ConvNeXt": "features.<last>",
    "RegNet": "trunk_output",
    "EfficientNet-Lite": "_swish",
}


def default_layer(model: nn.Module) -> str:
    """The conventional target layer of the known families (`DEFAULT_LAYERS`)."""
    family = "EfficientNet-Lite" if is_efficientnet_lite(model) else type(model).__name__
    layer = DEFAULT_LAYERS.get(family)
    if layer is None:
        raise FdcamError(f"no default target layer for {type(model).__name__}; pass "
                         f"target_layer, for example one of its last layers with a [B, K, h, w] "
                         f"output: {', '.join(_last_4d_layers(model)) or '(none found)'}")
    if layer.endswith("<last>"):
        layer = f"features.{len(model.features) - 1}"  # type: ignore[arg-type]
    return layer


def _last_4d_layers(model: nn.Module, count: int = 4, size: int = 224) -> list[str]:
    """The last `count` modules whose output is [1, K, h, w] on a blank 224×224 image."""
    outputs: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if name:
            def keep(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
                if isinstance(out, Tensor) and out.dim() == 4 and name not in outputs:
                    outputs.append(name)
            handles.append(module.register_forward_hook(keep))
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, 3, size, size))
    except Exception:  # a model for other inputs: list what ran
        pass
    finally:
        for handle in handles:
            handle.remove()
    return outputs[-count:]


def split_model(model: nn.Module, layer: str | nn.Module | None = None) -> Split:
    """Split `model` at `layer` (default: the family's conventional target layer)."""
    from fdcam.graph_cut import CutError, check_context, cut_graph
    from fdcam.head import describe_head

    name, module = resolve_layer(model, default_layer(model) if layer is None else layer)
    if module is model:
        raise FdcamError("the target layer cannot be the whole model; pick a convolutional "
                         "layer inside it")
    if is_efficientnet_lite(model) and name == "_swish":
        return _split_efficientnet_lite(model)
    try:
        cut = cut_graph(model, name)
    except CutError as error:
        warnings.warn(f"FD-CAM at {name!r} of {type(model).__name__} uses the slow hook split "
                      f"({error}): every channel mask reruns the whole model, about 2K forward "
                      f"passes per image for a layer of K channels", stacklevel=2)
        return _split_hook(model, name, module)
    try:
        stages = describe_head(cut.head)
    except ValueError:
        stages = None

    def body(x: Tensor) -> tuple[Tensor, Context]:
        a, *context = cut.body(x)
        problem = check_context(tuple(context), x.shape[0])
        if problem is None:
            return a, tuple(context)
        warnings.warn(f"FD-CAM at {name!r} of {type(model).__name__} falls back to the slow "
                      f"hook split ({problem}): every channel mask reruns the whole model",
                      stacklevel=3)
        hook = _split_hook(model, name, module)
        split._body, split._head, split.stages = hook._body, hook._head, None
        split.needs_images, split.kind = True, "hook"
        return hook._body(x)

    split = Split(model, name, body, cut.head, stages, needs_images=bool(cut.context_names))
    return split


def _split_efficientnet_lite(model: nn.Module) -> Split:
    # `_swish` runs twice (stem and head); its head call is what extract_features returns.
    from fdcam.head import stages_of_modules

    head, stages = stages_of_modules(
        [model._avg_pooling, nn.Flatten(1), model._dropout, model._fc])  # type: ignore[list-item]
    return Split(model, "_swish", lambda x: (model.extract_features(x), ()), head, stages,
                 kind="explicit")


def _split_hook(model: nn.Module, name: str, module: nn.Module) -> Split:
    """Hook split: works for any module that runs exactly once per forward pass."""

    def body(x: Tensor) -> tuple[Tensor, Context]:
        calls: list[object] = []

        def keep(_m: nn.Module, _inputs: object, output: object) -> None:
            calls.append(output)

        handle = module.register_forward_hook(keep)
        try:
            model(x)
        finally:
            handle.remove()
        if len(calls) != 1:
            raise FdcamError(f"layer {name!r} runs {len(calls)} times in one forward pass; "
                             f"choose a module that runs exactly once")
        return calls[0], (x,)  # type: ignore[return-value]

    def head(a: Tensor, x: Tensor) -> Tensor:
        def replace(_m: nn.Module, _inputs: object, _output: object) -> Tensor:
            return a

        handle = module.register_forward_hook(replace)
        try:
            return model(x)
        finally:
            handle.remove()

    return Split(model, name, body, head, None, needs_images=True, kind="hook")


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
