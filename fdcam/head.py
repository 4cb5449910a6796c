"""The head after the cut, in the stages that make grouped switching exact and fast (§III-B).

Every head (the part of the network after the target layer) is read as four stages:

    logits = last( middle( first( g(A) ), context ) )

* ``g`` — the longest chain of **channel-wise** operations at the start of the head (ReLU,
  eval-mode BatchNorm, pooling, depthwise convolution, …): output channel k depends on input
  channel k only. For a binary mask m, ``g(A ⊙ m) = Z + m ⊙ (P − Z)`` with ``P = g(A)`` and
  ``Z = g(0)``: masking commutes with g, so g runs once per image, not once per mask.
* ``first`` — an operation **linear** in g's output: a Linear layer on the channel-major
  flattening (VGG16, ResNet, EfficientNet, MobileNet, RegNet) or a convolution (the 1×1
  expansion of an MBConv block). With the per-channel contributions
  ``D_k = first_without_bias(δ_k)``, δ = P − Z, a mask's pre-activation is
  ``first(Z) + Σ_k m_k D_k``: the unmasked one minus the switched-off channels' summed
  contributions, or the empty one plus the switched-on channels'. Grouped masks switch a
  few channels (θ = 5 %), so this sum is sparse.
* ``middle`` — everything else, run on the masks' pre-activations in chunks (with the
  context: values from before the cut that the head reads).
* ``last`` — the final Linear layer when the head ends with one: only the rows of the
  target classes are computed.

Any stage may be empty; with none found the head is evaluated on ``A ⊙ m`` directly (the
generic path), still exact.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from fdcam.graph_cut import is_batch_size

# Modules whose output channel k depends only on input channel k (in eval mode).
CHANNEL_WISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Identity,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d,
    nn.ZeroPad2d, nn.ConstantPad2d,
)

# Channel-wise modules whose backward pass only redistributes each output's gradient over
# input pixels with weights summing to 1 (averaging, max-selection, identity). (AvgPool2d is
# left out: with padding it may average fewer than its pixels.)
GRADIENT_PRESERVING: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d, nn.Identity, nn.Dropout,
    nn.Dropout2d,
)

_CHANNEL_WISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.hardtanh,
    F.mish, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.max_pool2d, F.avg_pool2d, F.dropout,
}
_GRADIENT_PRESERVING_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.max_pool2d,
                                  F.dropout}
_CHANNEL_WISE_METHODS = {"relu", "relu_", "sigmoid", "tanh"}
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Identity)


@dataclass(frozen=True)
class LinearMap:
    """The head's first operation, linear in its input: a Linear layer on the channel-major
    flattening of [N, K, a, b] (K blocks of a·b inputs), or a convolution (groups = 1),
    with an eval-mode BatchNorm2d right after it folded in (``norm``)."""

    kind: Literal["linear", "conv"]
    weight: Tensor  # Linear: [H, K·a·b]; conv: [C_out, K, kh, kw]
    bias: Tensor | None
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    norm: nn.BatchNorm2d | None = None
    _sums: dict[str, tuple[int, int, Tensor]] = field(default_factory=dict, compare=False,
                                                      repr=False)

    def __call__(self, x: Tensor) -> Tensor:
        """[N, K, a, b] -> [N, H] (Linear) or [N, C_out, h', w'] (conv, then ``norm``)."""
        if self.kind == "linear":
            return F.linear(x.flatten(1), self.weight, self.bias)
        weight, bias = self.affine()
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def affine(self) -> tuple[Tensor, Tensor | None]:
        """Weight and bias with ``norm`` folded in (eval mode: running statistics).

        ``BN(W∗x + b) = (γ/σ)·W∗x + (γ/σ)(b − μ) + β`` with σ = sqrt(var + ε).
        """
        norm = self.norm
        if norm is None:
            return self.weight, self.bias
        assert norm.running_var is not None and norm.running_mean is not None
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        bias = -norm.running_mean if self.bias is None else self.bias - norm.running_mean
        bias = bias * scale + (norm.bias if norm.bias is not None else 0.0)
        return self.weight * scale.view(-1, *([1] * (self.weight.dim() - 1))), bias

    def block_sums(self, k: int) -> Tensor:
        """``Σ_j W₁[:, k, j]`` [H, K] of a Linear weight [H, K·m], cached until it changes."""
        weight = self.weight
        key = (weight._version, weight.data_ptr())
        cached = self._sums.get("sums")
        if cached is None or cached[:2] != key or cached[2].device != weight.device:
            with torch.no_grad():
                sums = weight.view(weight.shape[0], k, -1).sum(-1)
            self._sums["sums"] = (*key, sums)
            return sums
        return cached[2]


@dataclass(frozen=True)
class HeadStages:
    """``head(A) = last(middle(first(g(A)), *context))``; see the module docstring.

    ``channel_wise`` is g ([N, K, h, w] -> [N, K, a, b]); ``pooling_only`` says g only
    averages or selects pixels, so ``Σ_ij ∂f/∂A^k_ij = Σ_j ∂f/∂P_kj``; ``middle`` maps the
    first stage's output (or g's, without `first`) and the context to the input of `last`
    (None: the identity); ``last`` is the final Linear layer (None: `middle` gives logits).
    """

    channel_wise: Callable[[Tensor], Tensor]
    pooling_only: bool
    first: LinearMap | None
    middle: Callable[..., Tensor] | None
    last: nn.Linear | None

    def rest(self, h: Tensor, context: tuple[Tensor, ...] = ()) -> Tensor:
        """Logits [N, classes] from the first stage's output h."""
        if self.middle is not None:
            h = self.middle(h, *context)
        return self.last(h) if self.last is not None else h

    def target_scores(self, h: Tensor, targets: Tensor, context: tuple[Tensor, ...] = ()) -> Tensor:
        """Logits of the classes `targets` [C] only, [N, C], from the first stage's output."""
        if self.middle is not None:
            h = self.middle(h, *context)
        if self.last is None:
            return h[:, targets]
        bias = self.last.bias[targets] if self.last.bias is not None else 0.0
        return h @ self.last.weight[targets].T + bias

    @property
    def num_classes(self) -> int | None:
        """Number of classes when the structure tells it (else None)."""
        if self.last is not None:
            return self.last.out_features
        if self.middle is None and self.first is not None and self.first.kind == "linear":
            return self.first.weight.shape[0]
        return None

    @property
    def first_is_classifier(self) -> bool:
        """The first Linear layer gives the logits (ResNet, EfficientNet): only target rows."""
        return self.first is not None and self.first.kind == "linear" and self.middle is None \
            and self.last is None


def describe_head(head: fx.GraphModule) -> HeadStages:
    """Read a head graph ``(a, *context) -> logits`` as `HeadStages` (see the module doc)."""
    head = _inline_sequentials(head)
    nodes = list(head.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    a, context = placeholders[0], tuple(placeholders[1:])
    result = next(n for n in nodes if n.op == "output").args[0]
    if not isinstance(result, fx.Node):
        raise ValueError("the head's output is not a single tensor")
    chain: list[fx.Node] = []  # g: channel-wise nodes after A
    pooling_only = True
    current = a
    while current is not result and (n := _sole_user(current)) is not None \
            and (kind := _channel_wise(head, n, current)):
        chain.append(n)
        pooling_only &= kind == "preserving"
        current = n
    first, spanned = (None, []) if current is result else _first_linear(head, current)
    entry = spanned[-1] if spanned else current
    last = None
    if entry is not result and result.op == "call_module" and isinstance(
            module := head.get_submodule(str(result.target)), nn.Linear) and not result.kwargs \
            and len(result.args) == 1 and isinstance(result.args[0], fx.Node) \
            and _sole_user(result.args[0]) is result:
        last, result = module, result.args[0]
    try:
        g = _subgraph(head, a, current, ()) if chain else _identity
        middle = None if entry is result else _subgraph(head, entry, result, context)
    except ValueError:  # A is read elsewhere too: evaluate the whole head on A ⊙ m
        g, pooling_only, first = _identity, True, None
        middle = None if a is result else _subgraph(head, a, result, context)
    return HeadStages(g, pooling_only, first, middle, last)


def _identity(x: Tensor) -> Tensor:
    return x


def _sole_user(node: fx.Node) -> fx.Node | None:
    """The one node that consumes `node`'s values (reading its shape does not count)."""
    users = [u for u in node.users if not _reads_shape(u)]
    return users[0] if len(users) == 1 else None


def _reads_shape(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target == "size") or (
        node.op == "call_function" and node.target is getattr and node.args[1] == "shape")


def _only_input(node: fx.Node, source: fx.Node) -> bool:
    """`node` reads `source` as its first argument and no other graph value."""
    return bool(node.args) and node.args[0] is source and node.all_input_nodes == [source]


def _channel_wise(head: fx.GraphModule, node: fx.Node, source: fx.Node) -> str | None:
    """'preserving' / 'other' for a channel-wise operation on `source`, None otherwise."""
    if _is_depthwise_conv2d(head, node, source):
        return "other"
    if not _only_input(node, source):
        return None
    if node.op == "call_module":
        module = head.get_submodule(str(node.target))
        if node.kwargs:
            return None
        if isinstance(module, GRADIENT_PRESERVING):
            return "preserving"
        if isinstance(module, CHANNEL_WISE_MODULES):
            return "other"
        if (type(module) is nn.Conv2d and module.groups == module.in_channels
                == module.out_channels and module.padding_mode == "zeros"):
            return "other"  # depthwise
        return None
    if node.op == "call_function" and node.target in _CHANNEL_WISE_FUNCTIONS:
        if node.target is F.dropout and node.kwargs.get("training", True) is not False \
                and not (len(node.args) > 2 and node.args[2] is False):
            return None
        return "preserving" if node.target in _GRADIENT_PRESERVING_FUNCTIONS else "other"
    if node.op == "call_method" and node.target in _CHANNEL_WISE_METHODS:
        return "other"
    return None


def _is_depthwise_conv2d(head: fx.GraphModule, node: fx.Node, source: fx.Node) -> bool:
    """``conv2d(source, W, b, stride, padding, dilation, groups=K)`` called as a function
    with parameters of the model (a traced ``Conv2dStaticSamePadding`` of EfficientNet-Lite):
    W [K, 1, kh, kw], so output channel k reads input channel k only."""
    if node.op != "call_function" or node.target not in (F.conv2d, torch.conv2d) \
            or node.kwargs or len(node.args) != 7 or node.args[0] is not source:
        return False
    weight, bias, padding, groups = node.args[1], node.args[2], node.args[4], node.args[6]
    if not (isinstance(weight, fx.Node) and weight.op == "get_attr") or isinstance(padding, str):
        return False
    if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"):
        return False
    w = _attribute(head, str(weight.target))
    return w.dim() == 4 and w.shape[1] == 1 and groups == w.shape[0] \
        and [n for n in node.all_input_nodes if n.op != "get_attr"] == [source]


def _is_flatten(head: fx.GraphModule, node: fx.Node, source: fx.Node) -> bool:
    """flatten(1) of `source`: torch.flatten, .flatten, nn.Flatten or .view/.reshape(n, -1)."""
    if node.op == "call_module":
        module = head.get_submodule(str(node.target))
        return (isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1
                and node.args == (source,))
    args, kwargs = node.args, node.kwargs
    if not args or args[0] is not source:
        return False
    if (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"):
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    if node.op == "call_method" and node.target in ("view", "reshape") and len(args) == 3:
        rows = args[1]
        return args[2] == -1 and isinstance(rows, fx.Node) and is_batch_size(rows)
    return False


def _first_linear(head: fx.GraphModule, source: fx.Node) -> tuple[LinearMap | None, list[fx.Node]]:
    """The linear operation right after the channel-wise chain, and the nodes it spans."""
    node = _sole_user(source)
    if node is None:
        return None, []
    conv = _conv(head, node, source)
    if conv is not None:
        after = _sole_user(node)  # an eval-mode BatchNorm right after it is folded in
        if after is not None and after.op == "call_module" and after.args == (node,) \
                and not after.kwargs and type(norm := head.get_submodule(str(after.target))) \
                is nn.BatchNorm2d and norm.running_mean is not None:
            return dataclasses.replace(conv, norm=norm), [node, after]
        return conv, [node]
    if not _is_flatten(head, node, source):
        return None, []
    spanned = [node]
    current = node
    while (n := _sole_user(current)) is not None:
        if n.op == "call_module" and isinstance(head.get_submodule(str(n.target)), _DROPOUT) \
                and n.args == (current,) and not n.kwargs:
            spanned.append(n)
            current = n
            continue
        if n.op == "call_module" and isinstance(module := head.get_submodule(str(n.target)),
                                                nn.Linear) and n.args == (current,):
            spanned.append(n)
            return LinearMap("linear", module.weight, module.bias), spanned
        break
    return None, []


def _conv(head: fx.GraphModule, node: fx.Node, source: fx.Node) -> LinearMap | None:
    """A groups = 1 convolution of `source` with zero padding, as a module or F.conv2d."""
    if node.op == "call_module":
        module = head.get_submodule(str(node.target))
        if (type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
                and not isinstance(module.padding, str) and node.args == (source,)
                and not node.kwargs):
            return LinearMap("conv", module.weight, module.bias, tuple(module.stride),
                             tuple(module.padding), tuple(module.dilation))
        return None
    if node.op == "call_function" and node.target in (F.conv2d, torch.conv2d) and \
            not node.kwargs and node.args and node.args[0] is source:
        args = list(node.args) + [None, 1, 0, 1, 1][len(node.args) - 2:]
        _, weight, bias, stride, padding, dilation, groups = args[:7]
        if groups != 1 or not isinstance(weight, fx.Node) or weight.op != "get_attr":
            return None
        if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"):
            return None

        if isinstance(padding, str):
            return None

        def pair(v: object) -> tuple[int, ...]:
            return tuple(v) if isinstance(v, list | tuple) else (int(v), int(v))  # type: ignore[arg-type]

        b = None if bias is None else _attribute(head, str(bias.target))
        return LinearMap("conv", _attribute(head, str(weight.target)), b, pair(stride),
                         pair(padding), pair(dilation))  # type: ignore[arg-type]
    return None


def _attribute(module: nn.Module, target: str) -> Tensor:
    obj: object = module
    for part in target.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, Tensor)
    return obj


def _subgraph(head: fx.GraphModule, entry: fx.Node, result: fx.Node,
              context: tuple[fx.Node, ...]) -> fx.GraphModule:
    """``(entry, *context) -> result``: the nodes of `head` that `result` needs after `entry`.

    Raises ValueError when `result` reads A by another way than through `entry`.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {entry: graph.placeholder("h")}
    for i, node in enumerate(context):
        env[node] = graph.placeholder(f"context_{i}")
    needed, stack = set(), [result]
    while stack:  # the ancestors of `result`, stopping at the subgraph's inputs
        node = stack.pop()
        if node in env or node in needed:
            continue
        if node.op == "placeholder":
            raise ValueError(f"{result.name} reads {node.name} besides {entry.name}")
        needed.add(node)
        stack.extend(node.all_input_nodes)
    for node in head.graph.nodes:  # copied in execution order
        if node in needed:
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[result])
    return fx.GraphModule(head, graph)


def _inline_sequentials(head: fx.GraphModule) -> fx.GraphModule:
    """A copy of `head` with each call of a plain nn.Sequential replaced by calls of its
    children, in order (`head` itself is left as it is)."""
    head = fx.GraphModule(head, copy.deepcopy(head.graph))
    graph = head.graph
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op != "call_module" or node.kwargs or len(node.args) != 1:
                continue
            module = head.get_submodule(str(node.target))
            if type(module) is not nn.Sequential:
                continue
            with graph.inserting_before(node):
                value = node.args[0]
                for child, _ in module.named_children():
                    value = graph.call_module(f"{node.target}.{child}", (value,))
            node.replace_all_uses_with(value)  # type: ignore[arg-type]
            graph.erase_node(node)
            changed = True
    head.recompile()
    return head


def stages_of_modules(modules: list[nn.Module]) -> tuple[fx.GraphModule, HeadStages]:
    """The head graph and its stages for a head given as a chain of modules."""
    head = fx.symbolic_trace(nn.Sequential(*modules))
    return head, describe_head(head)
