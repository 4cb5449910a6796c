"""``fdcam compare``: which CAM, at which layer, is the most faithful for a user's model.

One command evaluates the chosen methods at one or more layers on the user's images
(`fdcam.evaluation.runner.evaluate`, one resumable results file per layer in ``--out``) and
answers with paired differences: for each layer, method and metric (insertion, deletion,
overall), the mean of (method − reference) over the images both explained, its paired 95 %
bootstrap interval (`paired_differences`), n, and the word `paired_verdicts` gives it —
the rule of the book's claim verdicts:

    better / worse     the interval excludes 0 on the method's / the reference's side
                       (for deletion, lower is better)
    undecided          the interval contains 0
    too few images     fewer than --min-images images (20: the book's rule)

It also prints, per layer, the share of negative activations over the images: FD-CAM's
switching scores assume A ≥ 0 (a ReLU output); a layer with negative values is outside that
premise and gets a warning. Files written to ``--out``: ``results-<layer>.csv`` (rerunning
the command skips finished rows), ``paired.csv`` (the table) and ``paired.png`` (the
differences with their intervals, one panel per metric).

Example::

    fdcam compare --model resnet50 --weights my_weights.pt --layers layer3,layer4 \\
        --images photos/ --methods gradcam,gradcam++,fdcam --out compare/
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.evaluation.engine import add_engine_arguments
from fdcam.models import LoadedModel

METRICS = ("insertion", "deletion", "overall")
COLUMNS = ["layer", "method", "reference", "metric", "n", "images", "mean_difference",
           "ci_low", "ci_high", "verdict"]


# ---------------------------------------------------------------------------------- the model


def load_user_model(spec: str, weights: str | None,
                    device: str | torch.device) -> LoadedModel:
    """A torchvision model name (`fdcam.models.load_model`), or ``module:function`` — a
    function of an importable module (the current folder is searched first) that returns an
    ``nn.Module``; `weights` is then a state-dict file loaded into it (strict, tensors only).
    A user model is preprocessed as torchvision's ImageNet models (224×224, ImageNet mean
    and standard deviation); its classes are named by their index."""
    from fdcam.models import IMAGENET_MEAN, IMAGENET_STD, load_model, load_state_dict_file

    if ":" not in spec:
        from fdcam.model_arguments import check_model_arguments

        name, _ = check_model_arguments(spec, None, None, weights)
        return load_model(name, device=device, weights=weights)
    module_name, _, function_name = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise FdcamError(f"--model {spec}: cannot import module {module_name!r} ({error}); "
                         f"expected module:function with the module importable from "
                         f"{Path.cwd()}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise FdcamError(f"--model {spec}: module {module_name!r} has no function "
                         f"{function_name!r}; expected module:function returning an nn.Module")
    model = function()
    if not isinstance(model, nn.Module):
        raise FdcamError(f"--model {spec}: {function_name}() returned "
                         f"{type(model).__name__}; expected an nn.Module")
    if weights is not None:
        state = load_state_dict_file(Path(weights))
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise FdcamError(f"--weights {weights} does not fit {spec}: {first}") from None
    model.eval().to(device)
    with torch.no_grad():
        parameter = next(model.parameters(), None)
        probe = torch.zeros(1, 3, 224, 224, device=device,
                            dtype=torch.float32 if parameter is None else parameter.dtype)
        classes = int(model(probe).shape[1])
    return LoadedModel(spec, model, "", IMAGENET_MEAN, IMAGENET_STD,
                       [str(c) for c in range(classes)])


def check_layers(loaded: LoadedModel, layers: Sequence[str]) -> list[str]:
    """The layers to compare (default: the model's conventional one), each a module name of
    the model; an unknown name is a one-line error listing the last ones."""
    from fdcam.split import default_layer, resolve_layer

    chosen = list(dict.fromkeys(layers)) or [loaded.target_layer or default_layer(loaded.model)]
    for layer in chosen:
        resolve_layer(loaded.model, layer)
    return chosen


# ------------------------------------------------------------------------------ the premise


@dataclasses.dataclass(frozen=True)
class NegativeShare:
    """Activations at one layer over the images: the share below 0 and the smallest value."""

    layer: str
    share: float
    minimum: float
    values: int

    @property
    def breaks_premise(self) -> bool:
        """True when some activation is negative: FD-CAM's switching assumes A ≥ 0."""
        return self.share > 0


def negative_shares(model: nn.Module, layers: Sequence[str],
                    images: Iterable[Tensor]) -> list[NegativeShare]:
    """Share of negative activations A < 0 at each layer, over all images [3, H, W] (the
    layer's output as FD-CAM's split sees it, one forward pass of the body per image)."""
    from fdcam.split import eval_mode, split_model

    splits = [split_model(model, layer) for layer in layers]
    negative = [0] * len(layers)
    total = [0] * len(layers)
    low = [math.inf] * len(layers)
    with torch.no_grad(), eval_mode(model):
        for x in images:
            for i, split in enumerate(splits):
                a, _ = split.forward_body(x[None])
                negative[i] += int((a < 0).sum())
                total[i] += a.numel()
                low[i] = min(low[i], float(a.min()))
    return [NegativeShare(layer, negative[i] / max(total[i], 1), low[i], total[i])
            for i, layer in enumerate(layers)]


def format_negative_shares(shares: Sequence[NegativeShare]) -> str:
    """One line per layer, with a warning for a layer that breaks A ≥ 0."""
    lines = []
    for s in shares:
        line = f"negative activations at {s.layer}: {100 * s.share:.1f} % (min {s.minimum:.3g})"
        if s.breaks_premise:
            line += (" — warning: FD-CAM assumes A ≥ 0 (a ReLU output); switching channels "
                     "off and on means less here")
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the table


def compare_table(tables: dict[str, pd.DataFrame], reference: str, *, n_resamples: int = 2000,
                  seed: int = 0, min_images: int | None = None) -> pd.DataFrame:
    """Paired differences method − reference per layer (`paired_differences`), with the
    images each comparison shares and its verdict (`paired_verdicts`).

    tables: layer -> results table of that layer -> columns `COLUMNS`, one row per
    (layer, method, metric).
    """
    from fdcam.evaluation.statistics import MIN_IMAGES, paired_differences, paired_verdicts

    parts = []
    for layer, df in tables.items():
        paired = paired_differences(df, reference, metrics=list(METRICS),
                                    n_resamples=n_resamples, seed=seed)
        ok = df[df["error"].isna()] if "error" in df.columns else df
        mine = set(ok.loc[ok["method"] == reference, "image"])
        shared = {m: len(mine & set(ok.loc[ok["method"] == m, "image"]))
                  for m in set(paired["method"])}
        paired.insert(0, "layer", layer)
        paired["images"] = paired["method"].map(shared).astype(int)
        paired["verdict"] = paired_verdicts(
            paired, paired["images"], MIN_IMAGES if min_images is None else min_images)
        parts.append(paired)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    return table[COLUMNS]


def format_compare(table: pd.DataFrame) -> str:
    """The paired table as text: layer, method, metric, n, difference [95 % CI], verdict."""
    if table.empty:
        return "no paired rows yet (every method needs finished rows beside the reference's)"
    reference = str(table["reference"].iloc[0])
    rows = [[str(r.layer), str(r.method), str(r.metric), str(int(r.n)),
             f"{r.mean_difference:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]", str(r.verdict)]
            for r in table.itertuples(index=False)]
    header = ["layer", "method", "metric", "n", f"method − {reference} [95 % CI]",
              f"verdict vs {reference}"]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]
    return "\n".join(lines)


def plot_compare(table: pd.DataFrame, path: Path) -> Path:
    """One panel per metric: each method's mean difference with its 95 % interval, per layer
    (x), against the reference's zero line. Written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(table["layer"]))
    methods = list(dict.fromkeys(table["method"]))
    reference = str(table["reference"].iloc[0]) if len(table) else "reference"
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS) + 1.6, 3.2),
                             squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for ax, metric in zip(axes[0], METRICS, strict=True):
        part = table[table["metric"] == metric]
        for j, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("layer").reindex(layers)
            x = [i - 0.4 + width * (j + 0.5) for i in range(len(layers))]
            mean = rows["mean_difference"].astype(float)
            ax.errorbar(x, mean, yerr=[mean - rows["ci_low"].astype(float),
                                       rows["ci_high"].astype(float) - mean],
                        fmt="o", capsize=3, label=method)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
        better = "lower" if metric == "deletion" else "higher"
        ax.set_title(f"{metric} ({better} is better)")
        ax.set_ylabel(f"method − {reference}")
    axes[0][-1].legend(title="method", bbox_to_anchor=(1.02, 1), loc="upper left",
                       frameon=False)
    fig.suptitle("Paired differences with 95 % intervals over the images")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- command line


def results_file(out: Path, layer: str) -> Path:
    """``results-<layer>.csv`` in `out`, with characters other than letters, digits, '.',
    '_' and '-' in the layer name replaced by '_'."""
    return out / f"results-{re.sub(r'[^A-Za-z0-9._-]', '_', layer)}.csv"


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``compare`` to an argparse sub-command group; its ``func`` is `run_compare`."""
    from fdcam.evaluation.cli import argument_type, positive_int_argument

    parser = subparsers.add_parser(
        "compare",
        help="paired differences of CAM methods against a reference, per layer, on your images",
        description="Evaluate methods at one or more layers of your model on your images and "
                    "print each method minus the reference with paired 95 %% intervals and a "
                    "verdict; rerunning resumes.")
    parser.add_argument("--model", required=True,
                        help="a torchvision classification model name (resnet50, vgg16, …), "
                             "efficientnet-lite0, or module:function returning an nn.Module")
    parser.add_argument("--weights", default=None,
                        help="a state-dict file (weights_only=True), or for a torchvision "
                             "name DEFAULT or a weights name")
    parser.add_argument("--layers", default="",
                        help="comma-separated target layers (default: the model's "
                             "conventional layer)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, nargs="+",
                        help="image files, or folders of images (sorted by name)")
    source.add_argument("--example-photos", action="store_true",
                        help="the photos that ship in scikit-image and matplotlib "
                             "(data/offline_photos.csv)")
    parser.add_argument("--methods", default="gradcam,fdcam",
                        help="comma-separated method names (default: gradcam,fdcam)")
    parser.add_argument("--reference", default="fdcam",
                        help="the method the others are compared with (default: fdcam)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for the results files, paired.csv and paired.png")
    parser.add_argument("--limit", type=argument_type(positive_int_argument("--limit")),
                        help="only the first N images")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--batch-size",
                        type=argument_type(positive_int_argument("--batch-size")), default=None,
                        help="perturbed images per forward pass of the metrics")
    add_engine_arguments(parser)
    parser.add_argument("--n-resamples", type=argument_type(positive_int_argument("--n-resamples")),
                        default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--min-images",
                        type=argument_type(positive_int_argument("--min-images")), default=None,
                        help="fewer shared images than this give 'too few images' "
                             "(default 20, the book's rule)")
    parser.set_defaults(func=run_compare)
    return parser


def _methods(text: str, reference: str) -> list[str]:
    from fdcam.baselines import METHODS

    names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if reference not in names:
        names.append(reference)
    unknown = [m for m in [*names, reference] if m not in METHODS]
    if unknown:
        raise FdcamError(f"unknown method {unknown[0]!r}; available: {', '.join(METHODS)}")
    if len(names) < 2:
        raise FdcamError(f"--methods names only the reference {reference!r}; expected at "
                         f"least one other method to compare with it")
    return names


def _images(args: argparse.Namespace,
            loaded: LoadedModel) -> list[tuple[str, Callable[[], Tensor]]]:
    if args.example_photos:
        from fdcam.evaluation.photos import offline_photos

        photos = offline_photos()
        items = [(p.name, functools.partial(loaded.preprocess, p.image)) for p in photos]
    else:
        from fdcam.evaluation.cli import image_files, read_image

        files = image_files([Path(p) for p in args.images])
        items = [(p.name, functools.partial(read_image, p, loaded)) for p in files]
    return items[: args.limit] if args.limit is not None else items


def run_compare(args: argparse.Namespace) -> int:
    """``fdcam compare``: evaluate per layer, then print and write the paired table, the
    figure and the negative-share lines."""
    from fdcam import baselines
    from fdcam.checks import check_device
    from fdcam.evaluation.results_file import check_writable_folder, read_results
    from fdcam.evaluation.runner import evaluate

    methods = _methods(str(args.methods), str(args.reference))
    device = check_device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FdcamError(f"--out {out} is a file; expected a folder (made if missing)")
    check_writable_folder(out / "paired.csv")  # makes the folder
    loaded = load_user_model(str(args.model), args.weights, device)
    layers = check_layers(loaded, [s.strip() for s in str(args.layers).split(",") if s.strip()])
    items = _images(args, loaded)
    if not items:
        raise FdcamError("no images to compare on; expected image files or folders")
    tables: dict[str, pd.DataFrame] = {}
    for layer in layers:
        at_layer = dataclasses.replace(loaded, target_layer=layer)
        factories = {m: functools.partial(baselines.make_explainer, m,
                                          **baselines.batch_options(m, device))
                     for m in methods}
        path = results_file(out, layer)
        evaluate(items, factories, at_layer, path, batch_size=args.batch_size, device=device,
                 progress=True, engine=args.engine)
        tables[layer] = read_results(path)
    table = compare_table(tables, str(args.reference), n_resamples=args.n_resamples,
                          min_images=args.min_images)
    table.to_csv(out / "paired.csv", index=False)
    print(format_compare(table))
    if len(table):
        print(f"\nfigure: {plot_compare(table, out / 'paired.png')}")
    shares = negative_shares(loaded.model, layers,
                             (source().to(device) for _, source in items))
    print(format_negative_shares(shares))
    failed = {layer: sorted(set(t.loc[t["error"].notna(), "image"]))
              for layer, t in tables.items()}
    for layer, images in failed.items():
        if images:
            print(f"{len(images)} image(s) failed at {layer} (error rows in "
                  f"{results_file(out, layer)}): {', '.join(images)}")
    return 0

