"""Any CNN cut at its target layer (§II): the model's graph split into body and head.

`torch.fx` traces the model with the target layer as one opaque call. Every node of the
graph then falls into one of three sets:

* the **head**: nodes that depend on the target layer's output A (and the graph's output);
  when the target module runs several times, A is the output of one of its calls (the k-th
  node that calls it, for the layer ``name#k``), and its other calls are ordinary nodes;
* the **body**: nodes that depend on the input image but not on A;
* **constants**: nodes that depend on neither (parameters read with ``get_attr``).

The body runs once per image and returns A together with the *context*: every body value
that a head node reads (a skip connection crossing the cut, a DenseNet feature list). The
head is a graph of its own, ``head(A, *context) -> logits``, so the masks of grouped
switching run through the part of the network after the cut only. Constants are copied
into the head. One idiom is rewritten: a batch size read in the body (``x.size(0)``, as in
``x.view(x.size(0), -1)``) is read from the head's own input instead, so that a head batch
of n masks is reshaped with n rows, not with the body's batch size.

Only the path to the target layer is traced through; every other module is called as it
is, which keeps the trace robust. The modules of the head are then traced through (down to
torch.nn's own layers) so that `fdcam.head` can see the head's first operations; when that
second trace fails, the head's modules stay opaque and the result is the same, only slower.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from fdcam.call_sites import call_site_problem
from fdcam.errors import FdcamError
from fdcam.model_state import eval_mode


@dataclass(frozen=True)
class GraphCut:
    """``body(x) -> (A, *context)`` and ``head(A, *context) -> logits`` as graph modules."""

    body: fx.GraphModule
    head: fx.GraphModule
    context_names: tuple[str, ...]


class CutError(Exception):
    """The model cannot be cut at this layer by tracing (the reason is the message)."""


class _CutTracer(fx.Tracer):
    """Traces through the target's ancestors (and, optionally, the head's modules) only."""

    def __init__(self, target: str, open_modules: frozenset[str] = frozenset()) -> None:
        super().__init__()
        parts = target.split(".")
        self.target = target
        self.ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
        self.open_modules = open_modules

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname == self.target:
            return True
        if qualname in self.ancestors:
            return False
        if any(qualname == o or qualname.startswith(o + ".") for o in self.open_modules):
            return super().is_leaf_module(m, qualname)  # torch.nn's own layers stay calls
        return True


def cut_graph(model: nn.Module, name: str, call: int | None = None) -> GraphCut:
    """Cut `model` at the module called `name`, at its call number `call` (1-based; None:
    its only call); raises `CutError` when it cannot be done by tracing, `FdcamError` when
    the call does not exist."""
    graph, target = _trace(model, name, call)
    head_modules = frozenset(
        str(n.target) for n in _head_nodes(graph, target) if n.op == "call_module")
    if head_modules:
        try:  # a finer trace, so that the head's first convolution or Linear is visible
            graph, target = _trace(model, name, call, head_modules)
        except CutError:
            pass
    return _partition(model, graph, target, name)


def _trace(model: nn.Module, name: str, call: int | None,
           open_modules: frozenset[str] = frozenset()) -> tuple[fx.Graph, fx.Node]:
    """The graph and its node of the target call: the `call`-th node that calls `name`."""
    tracer = _CutTracer(name, open_modules)
    try:
        with eval_mode(model):  # `self.training` is read at trace time: trace the eval graph
            graph = tracer.trace(model)
    except Exception as error:  # fx raises many kinds (TraceError, TypeError, …)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CutError(f"torch.fx cannot trace {type(model).__name__}: "
                       f"{type(error).__name__}: {first}"[:300]) from None
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == name]
    if not calls:
        raise CutError(f"layer {name!r} is not called as a module in the traced graph")
    problem = call_site_problem(name, call, len(calls))
    if problem is not None:
        raise FdcamError(problem)
    return graph, calls[(call or 1) - 1]


def _head_nodes(graph: fx.Graph, target: fx.Node) -> list[fx.Node]:
    """Nodes that depend on the target call's output, in execution order."""
    after: set[fx.Node] = set()
    ordered = []
    for node in graph.nodes:
        if node is target or any(i in after for i in node.all_input_nodes):
            after.add(node)
            ordered.append(node)
    return ordered


def is_batch_size(node: fx.Node) -> bool:
    """``t.size(0)``, ``t.size()[0]`` or ``t.shape[0]``: the batch size of a tensor."""
    if node.op == "call_method" and node.target == "size" and node.args[1:] == (0,):
        return True
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        source = node.args[0]
        return isinstance(source, fx.Node) and (
            (source.op == "call_method" and source.target == "size" and len(source.args) == 1)
            or (source.op == "call_function" and source.target is getattr
                and source.args[1] == "shape"))
    return False


def _partition(model: nn.Module, graph: fx.Graph, target: fx.Node, name: str) -> GraphCut:
    nodes = list(graph.nodes)
    head_nodes = _head_nodes(graph, target)
    head_set = set(head_nodes)
    output = next(n for n in nodes if n.op == "output")
    if output not in head_set:
        raise CutError(f"the model's output does not depend on layer {name!r}")

    from_input: set[fx.Node] = set()  # body nodes: depend on an input, not on A
    for node in nodes:
        if node.op == "placeholder" or any(i in from_input for i in node.all_input_nodes):
            if node not in head_set:
                from_input.add(node)

    needed = [n for n in nodes if n in from_input and n is not target and any(
        u in head_set and u is not target for u in n.users)]
    batch_sizes = [n for n in needed if is_batch_size(n)]
    context = [n for n in needed if n not in batch_sizes]

    # The body: every node outside the head, returning A and the context.
    body = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        if node in head_set and node is not target:
            continue
        if node.op == "output":
            continue
        env[node] = body.node_copy(node, lambda n: env[n])
    body.output((env[target], *(env[n] for n in context)))

    # The head: A and the context as inputs, the needed constants copied, then its nodes.
    head = fx.Graph()
    henv: dict[fx.Node, fx.Node] = {target: head.placeholder("a")}
    for i, node in enumerate(context):
        henv[node] = head.placeholder(f"context_{i}")

    def copy(node: fx.Node) -> fx.Node:
        if node not in henv:
            for i in node.all_input_nodes:
                if i not in batch_sizes:
                    copy(i)
            local = dict(henv)
            if any(i in batch_sizes for i in node.all_input_nodes):
                # The batch size of this node's own tensor input (x.view(x.size(0), -1)).
                source = next((i for i in node.all_input_nodes if i in henv), target)
                size = head.call_method("size", (henv[source], 0))
                local.update({b: size for b in batch_sizes})
            henv[node] = head.node_copy(node, lambda n: local[n])
        return henv[node]

    for node in head_nodes[1:]:
        if node.op != "output":
            copy(node)
    head.output(fx.map_arg(output.args[0], lambda n: henv[n]))
    return GraphCut(_module(model, body), _module(model, head), tuple(n.name for n in context))


def _module(root: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    module = fx.GraphModule(root, graph)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module


def check_context(context: tuple[object, ...], batch: int) -> str | None:
    """Why the body's context cannot be split per image (None when it can)."""
    for value in context:
        if not isinstance(value, torch.Tensor):
            return f"the head reads a non-tensor value from before the cut ({type(value).__name__})"
        if value.dim() == 0 or value.shape[0] != batch:
            return (f"the head reads a value from before the cut whose first axis is not the "
                    f"batch (shape {tuple(value.shape)})")
    return None
