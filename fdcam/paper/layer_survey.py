"""Which target layer? A survey of where FD-CAM's premise holds and its two ideas change the
maps (issues 14 and 21).

FD-CAM adds two things to a gradient CAM: *switch-on* (Eq. 7) and *grouping* (Eq. 5). At a
layer whose head is pooling + Linear (EfficientNet-Lite0's last activation) the score is
linear in the channels, so switch-on is switch-off shifted by a constant and the full
method equals its ``g+off`` variant: a layer like that cannot test the paper's claims. The
survey measures, per candidate layer and photo, how much each idea moves the map:

* switch-on: the full FD-CAM map against ``g+off`` (grouping, switch-off only);
* grouping: ``g+off`` against ``ng+off`` (each channel alone, switch-off only).

For each pair: the Pearson correlation of the two [0, 1] maps and their largest absolute
difference. It also records the method's premise (issue 21): switching a channel off
(A^k → 0) and ``ReLU(Σ ω_k A^k)`` assume A ≥ 0, as after VGG16's ReLUs, so each row has the
share of negative activations, and whether the head after the layer is linear (affine) in
A (`head_is_linear`), where switch-on is vacuous.

`choose_premise_layer` applies the rule fixed before any evaluation runs: A ≥ 0, a
non-linear head, both ideas change the map on at least half of the photos, and of those
layers the nearest to the output. (`choose_layer` is issue 14's rule, sensitivity only.)
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from fdcam.cam import FDCAM
from fdcam.errors import FdcamError
from fdcam.paper.settings import RESULTS_ROOT
from fdcam.split import CALL_MARK, Context, Split, eval_mode

#: A map "changes" when some pixel moves by more than this (maps are in [0, 1]).
CHANGE = 0.05

#: The rule needs both ideas to change the map on at least this share of the photos.
MAJORITY = 0.5


def _compare(a: Tensor, b: Tensor) -> tuple[float, float]:
    """(Pearson correlation, max |a − b|) of two maps [H, W]; constant maps correlate 1 if
    equal."""
    x, y = a.flatten().double(), b.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    gap = float((a - b).abs().max())
    correlation = float(x @ y) / denominator if denominator > 0 else float(gap == 0)
    return correlation, gap


# Operations that are affine in their input (eval mode): pooling by averaging, reshaping,
# dropout, Linear, convolution, batch norm, zero or constant padding, sums.
_AFFINE_MODULES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Identity, nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.ZeroPad2d, nn.ConstantPad2d,
)
_AFFINE_FUNCTIONS = {
    F.conv2d, torch.conv2d, F.linear, torch.flatten, F.adaptive_avg_pool2d, F.avg_pool2d,
    F.dropout, F.pad, operator.add, operator.sub, operator.neg, operator.getitem, getattr,
    torch.add, torch.cat, torch.mean, torch.sum,
}
# Modules that are not affine (the graph then decides: not linear).
_NON_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.AdaptiveMaxPool2d,
)
_NON_LINEAR_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.hardtanh,
    F.mish, F.elu, F.leaky_relu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.max_pool2d,
    F.adaptive_max_pool2d, F.softmax, torch.softmax, torch.clamp, torch.maximum, torch.minimum,
    torch.max, torch.min,
}
_NON_LINEAR_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "softmax", "max",
                       "min"}
_AFFINE_METHODS = {"view", "reshape", "flatten", "mean", "sum", "size", "squeeze", "unsqueeze",
                   "contiguous", "permute", "transpose", "add", "sub"}


def _graph_is_affine(head: fx.GraphModule) -> bool | None:
    """From the head's graph ``(a, *context) -> logits``: True when every operation that
    reads A (directly or not) is affine (`_AFFINE_MODULES`, …; a product or quotient with
    one factor independent of A), False when one is not, None when one is not known."""
    nodes = list(head.graph.nodes)
    reads_a = {nodes[0]}  # the first placeholder is A
    verdict: bool | None = True
    for node in nodes[1:]:
        inputs = [i for i in node.all_input_nodes if i in reads_a]
        if not inputs or node.op == "output":
            continue
        reads_a.add(node)
        if node.op == "call_module":
            module = head.get_submodule(str(node.target))
            if isinstance(module, _AFFINE_MODULES):
                continue
            if type(module) in _NON_LINEAR_MODULES or isinstance(module, nn.MaxPool2d):
                return False
            verdict = None  # an opaque module: not known from the graph
        elif node.op == "call_function" and node.target in (operator.mul, torch.mul):
            if sum(isinstance(v, fx.Node) and v in reads_a for v in node.args) > 1:
                return False  # A times A (x * x counts twice: all_input_nodes would not)
        elif node.op == "call_function" and node.target in (operator.truediv, torch.div):
            if len(inputs) > 1 or node.args[0] not in reads_a:
                return False  # only a numerator that reads A is affine
        elif node.op == "call_function" and node.target in _AFFINE_FUNCTIONS:
            if node.target is F.dropout and node.kwargs.get("training", True) is not False \
                    and not (len(node.args) > 2 and node.args[2] is False):
                return False
        elif node.op == "call_method" and node.target in _AFFINE_METHODS:
            continue
        elif node.target in _NON_LINEAR_FUNCTIONS or node.target in _NON_LINEAR_METHODS:
            return False
        else:
            verdict = None  # an operation this list does not know
    return verdict


def _is_additive(split: Split, a: Tensor, context: Context = ()) -> bool:
    """The numeric check ``f(A₁ + A₂) = f(A₁) + f(A₂) − f(0)`` (to 1e-4 of the logits'
    scale), with A₁ = a [1, K, h, w] and A₂ its channels in reverse order."""
    a1, a2 = a[:1], a[:1].flip(1)
    batch = torch.cat([a1 + a2, a1, a2, torch.zeros_like(a1)])
    rows = tuple(v[:1].expand(4, *v.shape[1:]).clone() for v in context)
    with torch.no_grad():
        f = split.head(batch, context=rows).double()
    gap = float((f[0] - f[1] - f[2] + f[3]).abs().max())
    return gap <= 1e-4 * max(1.0, float(f.abs().max()))


def head_is_linear(split: Split, a: Tensor, context: Context = ()) -> bool:
    """Is the head after the target layer affine in A, f(A) = W·A + b?

    Decided from the head's torch.fx graph (`Split.head_graph`): affine when every operation
    on the way from A to the logits is (average pooling, flatten, dropout, Linear,
    convolution, eval-mode batch norm, padding, sums; ReLU, sigmoid or max-pooling make it
    non-linear). Where the graph cannot tell (a hook split, an opaque module), the numeric
    check ``f(A₁ + A₂) = f(A₁) + f(A₂) − f(0)`` on the activations a [B, K, h, w] decides.
    """
    graph = split.head_graph
    verdict = None if graph is None else _graph_is_affine(graph)
    return _is_additive(split, a, context) if verdict is None else verdict


def survey(model: nn.Module, images: Tensor, targets: Sequence[int],
           layers: Sequence[str], names: Sequence[str] | None = None, *,
           done: pd.DataFrame | None = None,
           on_row: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """One row per (layer, image): K, the premise, and how switch-on and grouping change
    the map.

    images: [N, 3, H, W] (normalised as the model expects); targets: N class indices.
    Columns: layer, image, channels, negative_share (the share of A's values below 0),
    head_linear (`head_is_linear`, one value per layer), on_correlation,
    on_max_difference, group_correlation, group_max_difference.

    Resumable: rows of `done` (an earlier, interrupted survey's) are kept and their
    (layer, image) pairs skipped; `on_row` is called with all rows so far after each new
    one (to write them), so a stopped survey loses at most the pair in progress.
    """
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    rows = [] if done is None else done.to_dict("records")
    finished = {(str(r["layer"]), str(r["image"])) for r in rows}
    for layer in layers:
        if all((layer, name) in finished for name in names):
            continue
        variants = {
            "full": FDCAM(model, layer),
            "g+off": FDCAM(model, layer, switch_on=False),
            "ng+off": FDCAM(model, layer, switch_on=False, grouping=False),
        }
        linear = None
        for i, (name, target) in enumerate(zip(names, targets, strict=True)):
            if (layer, name) in finished:
                continue
            x = images[i: i + 1]
            explained = {key: cam(x, target=int(target)) for key, cam in variants.items()}
            maps = {key: out.saliency[0] for key, out in explained.items()}
            a = explained["full"].activations
            assert a is not None
            if linear is None:
                split = variants["full"].split
                with torch.no_grad(), eval_mode(model):
                    linear = head_is_linear(split, a, split.forward_body(x)[1])
            on = _compare(maps["full"], maps["g+off"])
            group = _compare(maps["g+off"], maps["ng+off"])
            rows.append({"layer": layer, "image": name, "channels": int(a.shape[1]),
                         "negative_share": float((a < 0).double().mean()),
                         "head_linear": bool(linear),
                         "on_correlation": on[0], "on_max_difference": on[1],
                         "group_correlation": group[0], "group_max_difference": group[1]})
            if on_row is not None:
                on_row(pd.DataFrame(rows))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # In survey order (layers input to output, photos as given), whatever order a resumed
    # run found them in.
    rank = {"layer": {layer: k for k, layer in enumerate(layers)},
            "image": {name: k for k, name in enumerate(names)}}
    return table.sort_values(["layer", "image"], key=lambda c: c.map(rank[str(c.name)]),
                             ignore_index=True)


def summarize_survey(rows: pd.DataFrame) -> pd.DataFrame:
    """Per layer (in survey order): the premise (share of negative activations over all
    photos, linear head) where the rows have it, median correlations and the share of photos
    whose map changes by more than `CHANGE` under each idea."""
    grouped = rows.groupby("layer", sort=False)
    premise = {}
    if {"negative_share", "head_linear"} <= set(rows.columns):
        premise = {"share negative": grouped["negative_share"].mean(),
                   "linear head": grouped["head_linear"].first().astype(bool)}
    return pd.DataFrame({
        "channels": grouped["channels"].first(),
        "photos": grouped.size(),
        **premise,
        "switch-on: median correlation": grouped["on_correlation"].median(),
        "switch-on: share changed": grouped["on_max_difference"].apply(
            lambda s: float((s > CHANGE).mean())),
        "grouping: median correlation": grouped["group_correlation"].median(),
        "grouping: share changed": grouped["group_max_difference"].apply(
            lambda s: float((s > CHANGE).mean())),
    })


def choose_layer(summary: pd.DataFrame) -> str | None:
    """Issue 14's rule: of the layers where switch-on *and* grouping each change the map on
    at least `MAJORITY` of the photos, the one nearest the output (the last in survey order,
    which lists layers from input to output). None if none."""
    both = summary[(summary["switch-on: share changed"] >= MAJORITY)
                   & (summary["grouping: share changed"] >= MAJORITY)]
    return None if both.empty else str(both.index[-1])


def meets_premise_rule(summary: pd.DataFrame) -> pd.Series:
    """Per layer of a `summarize_survey` summary, whether it meets the conditions of the
    rule of issue 21, fixed before the evaluation at the layer it chooses:

    * A ≥ 0 (share negative == 0: an activation output, as VGG16's after a ReLU),
    * the head is not linear in A (else switch-on only shifts switch-off),
    * switch-on and grouping each change the map on at least `MAJORITY` of the photos.
    """
    if not {"share negative", "linear head"} <= set(summary.columns):
        raise FdcamError("the survey has no premise columns (share negative, linear head); "
                         "rerun python -m fdcam.paper.layer_survey")
    return ((summary["share negative"] == 0) & ~summary["linear head"].astype(bool)
            & (summary["switch-on: share changed"] >= MAJORITY)
            & (summary["grouping: share changed"] >= MAJORITY))


def choose_premise_layer(summary: pd.DataFrame) -> str | None:
    """The rule of issue 21: of the layers that meet its conditions (`meets_premise_rule`),
    the one nearest the output (the last in survey order: input to output). None if none."""
    keep = summary[meets_premise_rule(summary)]
    return None if keep.empty else str(keep.index[-1])


#: The committed survey behind the imagenet-sample profile's layer (`settings.SAMPLE_LAYER`).
SURVEY_CSV = RESULTS_ROOT / "imagenet-sample" / "layer_survey.csv"


#: The replication's survey (EfficientNet-Lite2, its own candidates at 260 px).
REPLICATION_SURVEY_CSV = (RESULTS_ROOT / "imagenet-sample" / "efficientnet-lite2"
                          / "layer_survey.csv")


def committed_survey(path: Path = SURVEY_CSV) -> tuple[pd.DataFrame, str | None]:
    """A committed survey (default `SURVEY_CSV`) summarised per layer, and the layer the
    rule chooses from it: `choose_premise_layer` when the rows have the premise columns,
    else issue 14's `choose_layer` (a survey made before issue 21)."""
    if not path.exists():
        raise FdcamError(f"no layer survey at {path}; run python -m "
                         f"fdcam.paper.layer_survey first")
    summary = summarize_survey(pd.read_csv(path))
    rule = choose_premise_layer if "share negative" in summary.columns else choose_layer
    return summary, rule(summary)


def lite_candidates(model: nn.Module, size: int) -> tuple[str, ...]:
    """An EfficientNet-Lite's candidate layers at its last feature map's resolution (7 × 7
    for Lite0 at 224 px, 9 × 9 for Lite2 at 260 px), from input to output: the block
    outputs ``_blocks.N``, the activation call sites inside the last two blocks
    (``_blocks.N._swish#1`` after the expansion conv + BN, ``#2`` after the depthwise conv
    + BN), ``_conv_head``, ``_bn1`` and ``_swish`` (its head call, = ``_swish#2``).

    Found by one forward pass of a blank [1, 3, size, size] image with hooks."""
    blocks = list(model._blocks)  # type: ignore[arg-type]
    last_two = {f"_blocks.{i}" for i in range(len(blocks) - 2, len(blocks))}
    watched = {f"_blocks.{i}": block for i, block in enumerate(blocks)}
    watched.update({f"{name}._swish": watched[name]._swish for name in sorted(last_two)})
    watched.update({"_conv_head": model._conv_head, "_bn1": model._bn1,
                    "_swish": model._swish})
    fired: list[tuple[str, int, tuple[int, ...]]] = []  # (name, call, spatial size)
    runs: dict[str, int] = {}
    handles = []
    for name, module in watched.items():
        def keep(_m: nn.Module, _i: object, out: Tensor, name: str = name) -> None:
            runs[name] = runs.get(name, 0) + 1
            fired.append((name, runs[name], tuple(out.shape[2:])))
        handles.append(module.register_forward_hook(keep))
    parameter = next(model.parameters())
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, 3, size, size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
    final = fired[-1][2]  # `_swish` at the head
    labels = []
    for name, call, spatial in fired:
        if spatial != final or (name == "_swish" and call == 1):
            continue
        labels.append(name if runs[name] == 1 or name == "_swish"
                      else f"{name}{CALL_MARK}{call}")
    return tuple(labels)


#: EfficientNet-Lite0's candidates at 224 px (`lite_candidates`), from input to output.
LITE0_CANDIDATES = ("_blocks.11", "_blocks.12", "_blocks.13", "_blocks.14._swish#1",
                    "_blocks.14._swish#2", "_blocks.14", "_blocks.15._swish#1",
                    "_blocks.15._swish#2", "_blocks.15", "_conv_head", "_bn1", "_swish")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fdcam.paper.layer_survey [--model efficientnet-lite0] [--photos DIR]
    [--n 20] [--seed 0] [--out CSV]``: the survey on n seeded imagenet-sample photos with an
    EfficientNet-Lite (real weights) at every candidate of `lite_candidates`, each photo's
    top-1 class explained."""
    import argparse
    import random

    from fdcam.evaluation.imagenet import ImageNetSample
    from fdcam.models import load_model
    from fdcam.split import is_efficientnet_lite

    parser = argparse.ArgumentParser(prog="python -m fdcam.paper.layer_survey")
    parser.add_argument("--model", default="efficientnet-lite0",
                        help="an EfficientNet-Lite that fdcam.models.load_model knows")
    parser.add_argument("--photos", default=None, help="the imagenet-sample folder")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(SURVEY_CSV))
    args = parser.parse_args(argv)
    loaded = load_model(args.model)
    if not is_efficientnet_lite(loaded.model):
        raise FdcamError(f"the survey's candidates are EfficientNet-Lite layers; got "
                         f"{args.model}")
    sample = ImageNetSample(args.photos)
    chosen = sorted(random.Random(args.seed).sample(range(len(sample)), args.n))
    x = torch.stack([loaded.preprocess(sample.image(i)) for i in chosen])
    with torch.no_grad():
        targets = loaded.model(x).argmax(1).tolist()
    layers = lite_candidates(loaded.model, x.shape[-1])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [sample.names[i] for i in chosen]
    done = _resumable_rows(out, layers, names)

    def write(rows: pd.DataFrame) -> None:
        temporary = out.with_name(out.name + ".tmp")
        rows.to_csv(temporary, index=False, float_format="%.6g")
        temporary.replace(out)

    rows = survey(loaded.model, x, targets, layers, names, done=done, on_row=write)
    write(rows)
    summary = summarize_survey(rows)
    print(summary.round(3).to_string())
    print(f"chosen layer (issue 21's rule): {choose_premise_layer(summary)}  (rows: {out})")
    return 0


def _resumable_rows(out: Path, layers: Sequence[str], names: Sequence[str]) -> pd.DataFrame | None:
    """The rows of an earlier run of the same survey in `out` (its photos and layers), so a
    stopped survey resumes; None when `out` is absent. A file of another survey (other
    columns, photos or layers) is refused in one line rather than mixed in."""
    if not out.exists():
        return None
    rows = pd.read_csv(out)
    expected = {"layer", "image", "negative_share", "head_linear", "on_correlation"}
    if not expected <= set(rows.columns) or not set(rows["image"]) <= set(names) \
            or not set(rows["layer"]) <= set(layers):
        raise FdcamError(f"{out} holds another survey (other columns, photos or layers); "
                         f"move it away or pass another --out")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
