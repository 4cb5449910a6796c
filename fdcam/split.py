"""A classifier split at its target layer (§II): ``body(x) -> A`` and ``head(A) -> logits``.

Every CAM method of the paper looks at the activations ``A = [A^1 … A^K]`` of one target
convolutional layer and asks how the class score ``f_c`` depends on them. Splitting the
network there lets FD-CAM run the expensive body once per image (under ``no_grad``) and
perturb or differentiate only the head. The invariant is ``head(body(x)) == model(x)``.

Any model whose forward pass `torch.fx` can trace is cut by `fdcam.graph_cut`: the body
returns A and the *context* (values from before the cut that the head reads, such as a
skip connection), and the head runs the part of the graph after the cut only. The head is
then read in stages (`fdcam.head.HeadStages`) for the exact fast paths of switching.
A module that runs several times in one forward pass is named by its call: ``name#k`` is
the k-th call (1-based) of the module ``name`` (`CallSite`); the cut is made at that call
only. EfficientNet-Lite's ``_swish`` (its activation module runs twice, in the stem and at
the end) keeps its plain name for the head call, ``_swish`` = ``_swish#2``, with an explicit
split. A model that cannot be traced falls back to a hook split, with
a warning: the body runs the model and keeps the layer's output, the head reruns the whole
model with the output replaced — exact, but every mask costs a full forward pass.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, fx, nn

from fdcam.call_sites import CALL_MARK, CallSite, call_site_problem, parse_layer_name
from fdcam.errors import FdcamError
from fdcam.graph_cut import CutError, check_context, cut_graph
from fdcam.head import HeadStages, describe_head, stages_of_modules
from fdcam.model_state import eval_mode

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

    @property
    def head_graph(self) -> fx.GraphModule | None:
        """The head as a torch.fx graph ``(a, *context) -> logits`` (None for a hook split)."""
        return self._head if isinstance(self._head, fx.GraphModule) else None

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


def resolve_call_site(model: nn.Module, layer: str | nn.Module | None) -> CallSite:
    """The target layer given as a module, a dotted name or a call site ``name#k``.

    An unknown name is reported with the children of its deepest valid prefix
    ("unknown layer 'features.31'; available under 'features': features.0, …"). Whether
    the call exists is checked where the model runs (`call_site_problem`).
    """
    if isinstance(layer, str):
        name, call = parse_layer_name(layer)
        try:
            return CallSite(name, model.get_submodule(name), call)
        except AttributeError:
            raise FdcamError(_unknown_layer_message(model, name)) from None
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return CallSite(name, module)
        raise FdcamError(f"target layer {type(layer).__name__} is not a submodule of the model; "
                         f"pass one of its modules or a dotted name")
    raise FdcamError(f"target_layer must be a module or a dotted name; got {type(layer).__name__}")


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    """Label (``name`` or ``name#k``) and module of the target layer (`resolve_call_site`)."""
    site = resolve_call_site(model, layer)
    return site.label, site.module


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
    """The last `count` layers whose output is [1, K, h, w] on a blank 224×224 image, a
    module that runs several times named by its call (``name#k``)."""
    outputs: list[tuple[str, int]] = []  # (module name, call number), in execution order
    runs: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if name:
            def keep(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
                runs[name] = runs.get(name, 0) + 1
                if isinstance(out, Tensor) and out.dim() == 4:
                    outputs.append((name, runs[name]))
            handles.append(module.register_forward_hook(keep))
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, 3, size, size))
    except Exception:  # a model for other inputs: list what ran
        pass
    finally:
        for handle in handles:
            handle.remove()
    return [name if runs[name] == 1 else f"{name}{CALL_MARK}{call}"
            for name, call in outputs[-count:]]


def split_model(model: nn.Module, layer: str | nn.Module | None = None) -> Split:
    """Split `model` at `layer` (default: the family's conventional target layer): a module,
    a dotted name, or a call site ``name#k`` of a module that runs several times."""
    site = resolve_call_site(model, default_layer(model) if layer is None else layer)
    name, module = site.name, site.module
    if module is model:
        raise FdcamError("the target layer cannot be the whole model; pick a convolutional "
                         "layer inside it")
    if is_efficientnet_lite_head_activation(model, site):
        return _split_efficientnet_lite(model, site.label)
    try:
        cut = cut_graph(model, name, site.call)
    except CutError as error:
        warnings.warn(f"FD-CAM at {site.label!r} of {type(model).__name__} uses the slow hook "
                      f"split ({error}): every channel mask reruns the whole model, about 2K "
                      f"forward passes per image for a layer of K channels", stacklevel=2)
        return _split_hook(model, site)
    try:
        stages = describe_head(cut.head)
    except ValueError:
        stages = None

    def body(x: Tensor) -> tuple[Tensor, Context]:
        a, *context = cut.body(x)
        problem = check_context(tuple(context), x.shape[0])
        if problem is None:
            return a, tuple(context)
        warnings.warn(f"FD-CAM at {site.label!r} of {type(model).__name__} falls back to the "
                      f"slow hook split ({problem}): every channel mask reruns the whole model",
                      stacklevel=3)
        hook = _split_hook(model, site)
        split._body, split._head, split.stages = hook._body, hook._head, None
        split.needs_images, split.kind = True, "hook"
        return hook._body(x)

    split = Split(model, site.label, body, cut.head, stages,
                  needs_images=bool(cut.context_names))
    return split


def is_efficientnet_lite_head_activation(model: nn.Module, site: CallSite) -> bool:
    """EfficientNet-Lite's ``_swish`` at its head call (``_swish`` or ``_swish#2``): the
    output of ``extract_features``. (The stem call ``_swish#1`` is an ordinary call site.)"""
    return is_efficientnet_lite(model) and site.module is getattr(model, "_swish", None) \
        and site.call in (None, 2)


def _split_efficientnet_lite(model: nn.Module, label: str = "_swish") -> Split:
    # `_swish` runs twice (stem and head); its head call is what extract_features returns.
    head, stages = stages_of_modules(
        [model._avg_pooling, nn.Flatten(1), model._dropout, model._fc])  # type: ignore[list-item]
    return Split(model, label, lambda x: (model.extract_features(x), ()), head, stages,
                 kind="explicit")


def _split_hook(model: nn.Module, site: CallSite) -> Split:
    """Hook split: the output of the module's call `site.call` (its only call when None)
    is kept, then replaced at that call only."""
    name, module, call = site.name, site.module, site.call

    def body(x: Tensor) -> tuple[Tensor, Context]:
        calls: list[object] = []

        def keep(_m: nn.Module, _inputs: object, output: object) -> None:
            calls.append(output)

        handle = module.register_forward_hook(keep)
        try:
            model(x)
        finally:
            handle.remove()
        problem = call_site_problem(name, call, len(calls))
        if problem is not None:
            raise FdcamError(problem)
        return calls[(call or 1) - 1], (x,)  # type: ignore[return-value]

    def head(a: Tensor, x: Tensor) -> Tensor:
        seen = [0]

        def replace(_m: nn.Module, _inputs: object, output: object) -> object:
            seen[0] += 1
            return a if seen[0] == (call or 1) else None

        handle = module.register_forward_hook(replace)
        try:
            return model(x)
        finally:
            handle.remove()

    return Split(model, site.label, body, head, None, needs_images=True, kind="hook")


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


def count_hooks(model: nn.Module) -> int:
    """Number of forward/backward hooks on the model's modules (0 after every explanation)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def no_grad_body(split: Split, x: Tensor) -> Tensor:
    """The body under ``no_grad``: FD-CAM never back-propagates through it."""
    with torch.no_grad():
        return split.body(x)
