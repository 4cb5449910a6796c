"""Resumable batch evaluation of explainers into tidy tables (§IV).

`evaluate` explains every image with every method and writes one CSV row per
(image, method, target) as soon as it is finished:

    image, method, target, probability, insertion, deletion, overall,
    [hit, hit_tol15, difficult,] error

``probability`` is the target's softmax probability on the clean image, ``insertion`` and
``deletion`` the AUCs of `fdcam.metrics.insertion_deletion_curves`, ``overall`` their
difference; the pointing-game columns appear when boxes are given (`pointing_record`).
A rerun reads the CSV and skips the rows already there, so an interrupted run resumes
where it stopped and never writes a row twice. An image that cannot be read, has the
wrong shape or makes an explainer raise becomes a row with an ``error`` message and the run
goes on. ``shard=(i, n)`` evaluates every n-th image for parallel runs; `merge_results`
joins the shards into the table an unsharded run gives.

`summarize` and `paired_differences` turn a table into means with bootstrap confidence
intervals; `add_evaluate_parser` and `run_evaluate` are the ``fdcam evaluate`` command.

Example::

    from fdcam.baselines import make_explainer
    methods = {name: functools.partial(make_explainer, name) for name in ("gradcam", "fdcam")}
    failed = evaluate(images, methods, loaded_model, "results.csv")   # images: (id, [3, H, W])
    table = read_results("results.csv")
    summarize(table), paired_differences(table, reference="fdcam")
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from fdcam.errors import FdcamError
from fdcam.explanation import Explanation
from fdcam.metrics import (
    STEP_FRACTION,
    ClassBoxes,
    InsertionDeletion,
    insertion_deletion_curves,
    pointing_game,
    pointing_record,
)
from fdcam.models import MODEL_NAMES, LoadedModel, load_model
from fdcam.targets import check_images

Explainer = Callable[[Tensor, Tensor], Explanation]
"""``explainer(x [B, 3, H, W], target [B] long) -> Explanation`` with saliency [B, H, W]."""
ExplainerFactory = Callable[[Any], Explainer]
"""Called once, lazily, with the `model` given to `evaluate`; returns the explainer."""
ImageSource = Tensor | Callable[[], Tensor]
"""A normalised image [3, H, W], or a function that loads it (errors become failed rows)."""
OnExplained = Callable[[str, str, list[int], Tensor, InsertionDeletion | None], None]
"""``on_explained(image_id, method, classes, saliency [n, H, W], curves or None)``."""

KEY = ["image", "method", "target"]
METRIC_COLUMNS = ["probability", "insertion", "deletion", "overall"]
POINTING_COLUMNS = ["hit", "hit_tol15", "difficult"]
_FLOAT_COLUMNS = set(METRIC_COLUMNS)
_BOOL_COLUMNS = set(POINTING_COLUMNS)


def result_columns(pointing: bool) -> list[str]:
    """The CSV header: key, metrics, pointing-game columns when boxes are given, error."""
    return [*KEY, *METRIC_COLUMNS, *(POINTING_COLUMNS if pointing else []), "error"]


# ------------------------------------------------------------------------------------ evaluate


def evaluate(
    images: Iterable[tuple[str, ImageSource]],
    methods: Mapping[str, ExplainerFactory],
    model: nn.Module | LoadedModel,
    out_csv: str | os.PathLike[str],
    *,
    targets: int | Mapping[str, int | Sequence[int]] | None = None,
    boxes: Mapping[str, Mapping[int, ClassBoxes | Tensor]] | None = None,
    batch_size: int = 32,
    step_fraction: float = STEP_FRACTION,
    shard: tuple[int, int] = (0, 1),
    device: str | torch.device | None = None,
    progress: bool = False,
    retry_failed: bool = False,
    curves: bool = True,
    on_explained: OnExplained | None = None,
) -> list[str]:
    """Explain and score every image with every method; append rows to `out_csv`.

    images: (image_id, image) pairs, image a normalised tensor [3, H, W] or a loader
    returning one (a map-style dataset yielding such pairs works too). methods: name ->
    factory; ``factory(model)`` is called once, when the method is first needed.

    Targets per image: ``targets[image_id]`` (one int or several) or one int for all; else
    the classes annotated in ``boxes[image_id]``; else the model's top-1 class. With
    `boxes` ({image_id: {class: ClassBoxes or [N, 4] xyxy pixels}}) the pointing-game
    columns are added; a target without boxes in that image gets empty ones.

    Rows already in `out_csv` are skipped, error rows included (``retry_failed=True``
    deletes those first). Each (image, method) is written and flushed as soon as it ends.
    ``shard=(i, n)`` keeps images whose position in `images` is ≡ i (mod n).
    `batch_size` is the number of perturbed images per forward pass of the metrics.
    ``curves=False`` skips insertion/deletion (their cells stay empty; ``probability`` is
    still filled), for runs that only need the pointing game. `on_explained` is called
    after each (image, method) succeeds, with the maps and the curves (None without
    curves), so that a caller can keep some of them, e.g. for a figure.

    Returns the ids of the selected images that have an error row, in input order.
    """
    if not methods:
        raise FdcamError("methods is empty; expected at least one name -> explainer factory")
    shard_index, shard_count = _check_shard(shard)
    network = model.model if isinstance(model, LoadedModel) else model
    if device is None:
        device = next((p.device for p in network.parameters()), torch.device("cpu"))
    pointing = boxes is not None
    path = Path(out_csv)
    table = _ResultsFile(path, result_columns(pointing), retry_failed)
    explainers: dict[str, Explainer] = {}
    failed: list[str] = []
    seen: set[str] = set()
    total = _shard_total(images, shard_index, shard_count)
    was_training = network.training
    network.eval()
    try:
        with (table.open_for_append() as handle,
              tqdm(total=total, disable=not progress, unit="image", file=sys.stderr,
                   desc=f"evaluate {path.name}") as bar):
            writer = csv.writer(handle)
            for position, item in enumerate(images):
                if position % shard_count != shard_index:
                    continue
                image_id, source = _unpack(item, position)
                if image_id in seen:
                    raise FdcamError(f"image id {image_id!r} appears twice in images; "
                                     f"ids must be unique")
                seen.add(image_id)
                image_boxes = boxes.get(image_id) if boxes is not None else None
                wanted = _wanted_targets(image_id, targets, image_boxes)
                pending = table.pending(image_id, list(methods), wanted)
                if pending:
                    _evaluate_image(image_id, source, pending, wanted, methods, model,
                                    network, explainers, image_boxes, pointing, device,
                                    batch_size, step_fraction if curves else None, table,
                                    writer, handle, on_explained)
                if table.has_error(image_id):
                    failed.append(image_id)
                bar.update(1)  # this shard's images only, to match `total`
    finally:
        network.train(was_training)
    return failed


def _evaluate_image(image_id: str, source: ImageSource, pending: dict[str, list[int] | None],
                    wanted: list[int] | None, methods: Mapping[str, ExplainerFactory],
                    model: nn.Module | LoadedModel, network: nn.Module,
                    explainers: dict[str, Explainer],
                    image_boxes: Mapping[int, ClassBoxes | Tensor] | None, pointing: bool,
                    device: str | torch.device, batch_size: int, step_fraction: float | None,
                    table: _ResultsFile, writer: Any, handle: TextIO,
                    on_explained: OnExplained | None = None) -> None:
    try:
        x = _load(image_id, source).to(device)
        top1 = None
        if wanted is None:
            with torch.no_grad():
                top1 = int(network(x[None]).argmax(1)[0])
    except Exception as error:  # an unreadable image must not stop a long run
        for method in pending:
            table.write(writer, handle, [_error_row(image_id, method, None, error, pointing)])
        return
    for method, method_targets in pending.items():
        classes = method_targets if method_targets is not None else [top1]
        if method not in explainers:
            # A factory that fails is a configuration error, not an image's: let it raise.
            explainers[method] = methods[method](model)
        try:
            rows = _evaluate_method(image_id, method, explainers[method], x, classes,
                                    network, image_boxes, pointing, batch_size, step_fraction,
                                    on_explained)
        except Exception as error:  # the explainer's own failure: record it and go on
            rows = [_error_row(image_id, method, c, error, pointing) for c in classes]
        table.write(writer, handle, rows)


def _evaluate_method(image_id: str, method: str, explainer: Explainer, x: Tensor,
                     classes: list[int], network: nn.Module,
                     image_boxes: Mapping[int, ClassBoxes | Tensor] | None, pointing: bool,
                     batch_size: int, step_fraction: float | None,
                     on_explained: OnExplained | None = None) -> list[list[object]]:
    """Rows of one (image, method); ``step_fraction=None``: no insertion/deletion curves."""
    n = len(classes)
    target = torch.tensor(classes, dtype=torch.long, device=x.device)
    # A copy per class: an explainer that writes into its input must not touch the original.
    explanation = explainer(x[None].repeat(n, 1, 1, 1), target)
    saliency = getattr(explanation, "saliency", None)
    if not isinstance(saliency, Tensor):
        raise FdcamError(f"explainer {method!r} returned {type(explanation).__name__}; "
                         f"expected an Explanation with a saliency tensor")
    saliency = saliency.detach().to(x.device)
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        saliency = saliency.squeeze(1)
    if list(saliency.shape) != [n, *x.shape[1:]]:
        raise FdcamError(f"explainer {method!r} returned saliency of shape "
                         f"{list(saliency.shape)}; expected [{n}, {x.shape[1]}, {x.shape[2]}]")
    curves: InsertionDeletion | None = None
    if step_fraction is None:
        with torch.no_grad():
            logits = network(x[None]).float()
        probability = torch.softmax(logits, dim=1)[0, target].tolist()
        ins: list[float | None] = [None] * n
        dele: list[float | None] = [None] * n
        overall: list[float | None] = [None] * n
    else:
        curves = insertion_deletion_curves(network, x[None].expand(n, -1, -1, -1), saliency,
                                           target, step_fraction=step_fraction,
                                           batch_size=batch_size)
        probability = curves.deletion[:, 0].tolist()  # deletion starts from the clean image
        ins, dele = curves.insertion_auc.tolist(), curves.deletion_auc.tolist()
        overall = [a - b for a, b in zip(ins, dele, strict=True)]
    if on_explained is not None:
        on_explained(image_id, method, list(classes), saliency, curves)
    rows: list[list[object]] = []
    for i, cls in enumerate(classes):
        row: list[object] = [image_id, method, cls, probability[i], ins[i], dele[i],
                             overall[i]]
        if pointing:
            row += _pointing_cells(saliency[i], image_boxes, cls)
        rows.append([*row, None])
    return rows


def _pointing_cells(saliency: Tensor, image_boxes: Mapping[int, ClassBoxes | Tensor] | None,
                    cls: int) -> list[object]:
    if image_boxes is None or cls not in image_boxes:
        return [None, None, None]
    record = pointing_record(saliency.cpu(), image_boxes[cls], target=cls)
    return [record.hit, record.hit_tol15, record.difficult]


def _error_row(image_id: str, method: str, cls: int | None, error: BaseException,
               pointing: bool) -> list[object]:
    message = " ".join(f"{type(error).__name__}: {error}".split())  # one line in the CSV
    return [image_id, method, cls, *[None] * len(METRIC_COLUMNS),
            *([None] * len(POINTING_COLUMNS) if pointing else []), message]


def _load(image_id: str, source: ImageSource) -> Tensor:
    x = source if isinstance(source, Tensor) else source()
    if not isinstance(x, Tensor):
        raise FdcamError(f"image {image_id!r} loaded as {type(x).__name__}; "
                         f"expected a float tensor [3, H, W]")
    if x.dim() != 3:
        raise FdcamError(f"image {image_id!r} must have shape [3, H, W]; got {list(x.shape)}")
    return check_images(x[None], name=f"image {image_id!r}")[0]


def _unpack(item: object, position: int) -> tuple[str, ImageSource]:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise FdcamError(f"images must yield (image_id, image) pairs; item {position} is "
                         f"{type(item).__name__}")
    image_id, source = item
    return str(image_id), source


def _wanted_targets(image_id: str, targets: int | Mapping[str, int | Sequence[int]] | None,
                    image_boxes: Mapping[int, ClassBoxes | Tensor] | None) -> list[int] | None:
    """Classes to explain for one image, or None for the model's top-1 (known after a pass)."""
    chosen: int | Sequence[int] | None = None
    if isinstance(targets, int) and not isinstance(targets, bool):
        chosen = targets
    elif isinstance(targets, Mapping) and image_id in targets:
        chosen = targets[image_id]
    elif targets is not None and not isinstance(targets, Mapping):
        raise FdcamError(f"targets must be an int or a mapping image id -> classes; "
                         f"got {type(targets).__name__}")
    if chosen is None and image_boxes:
        chosen = sorted(image_boxes)
    if chosen is None:
        return None
    classes = [chosen] if isinstance(chosen, int) else list(chosen)
    if not classes or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        raise FdcamError(f"targets for image {image_id!r} must be one or more class indices; "
                         f"got {chosen!r}")
    return list(dict.fromkeys(classes))  # a class asked for twice is one row


def _check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise FdcamError(f"shard must be (i, n) with 0 <= i < n; got {shard!r}")
    return index, count


def _shard_total(images: object, index: int, count: int) -> int | None:
    try:
        size = len(images)  # type: ignore[arg-type]
    except TypeError:
        return None
    return len(range(index, size, count))


# ------------------------------------------------------------------------------- results file


@dataclass
class _ResultsFile:
    """The CSV on disk and what it already holds, so a rerun skips finished rows."""

    path: Path
    columns: list[str]
    retry_failed: bool
    done: set[tuple[str, str, int]] = field(default_factory=set)
    any_row: set[tuple[str, str]] = field(default_factory=set)
    image_failed: set[tuple[str, str]] = field(default_factory=set)  # error before targets
    errors: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        _drop_partial_last_line(self.path)
        existing = read_results(self.path)
        if list(existing.columns) != self.columns:
            raise FdcamError(f"{self.path} has columns {', '.join(existing.columns)}; this run "
                             f"writes {', '.join(self.columns)} (boxes given in one run only?)"
                             f"; use another output file")
        if self.retry_failed and existing["error"].notna().any():
            existing = existing[existing["error"].isna()]
            _write_table(existing, self.path)
        for image, method, target, error in existing[[*KEY, "error"]].itertuples(index=False):
            self.any_row.add((image, method))
            if pd.isna(target):
                self.image_failed.add((image, method))
            else:
                self.done.add((image, method, int(target)))
            if not pd.isna(error):
                self.errors.add(image)

    def open_for_append(self) -> TextIO:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a", newline="", encoding="utf-8")
        if new:
            csv.writer(handle).writerow(self.columns)
            handle.flush()
        return handle

    def pending(self, image: str, methods: list[str],
                wanted: list[int] | None) -> dict[str, list[int] | None]:
        """Per method, the classes still to do (None: the top-1, not known yet)."""
        todo: dict[str, list[int] | None] = {}
        for method in methods:
            if (image, method) in self.image_failed:
                continue
            if wanted is None:
                # The top-1 class is a function of the image: any row means it is done.
                if (image, method) not in self.any_row:
                    todo[method] = None
                continue
            classes = [c for c in wanted if (image, method, c) not in self.done]
            if classes:
                todo[method] = classes
        return todo

    def write(self, writer: Any, handle: TextIO, rows: list[list[object]]) -> None:
        writer.writerows([[_cell(v) for v in row] for row in rows])
        handle.flush()  # finished work must survive an interrupt
        for row in rows:
            image, method, target = str(row[0]), str(row[1]), row[2]
            self.any_row.add((image, method))
            if target is None:
                self.image_failed.add((image, method))
            else:
                self.done.add((image, method, int(target)))  # type: ignore[call-overload]
            if row[-1] is not None:
                self.errors.add(image)

    def has_error(self, image: str) -> bool:
        return image in self.errors


def _cell(value: object) -> object:
    # repr of a float round-trips exactly; None is an empty cell.
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def _drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write can leave half a row; cut it so the rerun redoes that row."""
    with path.open("rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        handle.seek(data.rfind(b"\n") + 1)
        handle.truncate()


def _write_table(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(df.columns))
        for row in df.itertuples(index=False):
            writer.writerow([_cell(None if _missing(v) else _plain(v)) for v in row])
    os.replace(tmp, path)  # atomic: an interrupt leaves the old or the new file, never half


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a results CSV with exact floats, ``target`` as Int64 and nullable booleans.

    Every cell is read as text first, so image ids such as ``NA`` or ``007`` stay as written.
    """
    path = Path(path)
    if not path.exists():
        raise FdcamError(f"results file {path} does not exist")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    if not set(KEY) | {"error"} <= set(raw.columns):
        raise FdcamError(f"{path} is not a results table: expected columns "
                         f"{', '.join([*KEY, 'error'])}; got {', '.join(raw.columns)}")
    df = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        cells = raw[column]
        if column == "target":
            df[column] = pd.array([int(c) if c else pd.NA for c in cells], dtype="Int64")
        elif column in _FLOAT_COLUMNS:
            df[column] = [float(c) if c else math.nan for c in cells]  # exact round-trip
        elif column in _BOOL_COLUMNS:
            df[column] = pd.array([{"True": True, "False": False}.get(c, pd.NA)
                                   for c in cells], dtype="boolean")
        else:
            df[column] = cells.where(cells != "", None) if column == "error" else cells
    return df


def merge_results(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Join result tables (shards, resumed runs) into one: no duplicates, sorted.

    A key (image, method, target) that occurs more than once keeps a successful row over an
    error row, then the first one. Rows are sorted by image, method and target, so the merge
    of a sharded run equals the (merged) unsharded run.
    """
    paths = list(paths)
    if not paths:
        raise FdcamError("merge_results needs at least one results file")
    tables = [read_results(p) for p in paths]
    columns = list(tables[0].columns)
    for path, table in zip(paths, tables, strict=True):
        if list(table.columns) != columns:
            raise FdcamError(f"{path} has columns {', '.join(table.columns)}; expected "
                             f"{', '.join(columns)} like the first file")
    df = pd.concat(tables, ignore_index=True)
    df = df.assign(_failed=df["error"].notna())
    df = df.sort_values([*KEY, "_failed"], kind="stable", na_position="last")
    df = df.drop_duplicates(subset=KEY, keep="first").drop(columns="_failed")
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------- summaries


def _default_metrics(df: pd.DataFrame) -> list[str]:
    return [m for m in ("insertion", "deletion", "overall", "hit") if m in df.columns]


def _bootstrap(sums: np.ndarray, counts: np.ndarray, n_resamples: int, confidence: float,
               seed: int) -> tuple[float, float]:
    """Percentile CI of Σsums/Σcounts when images (clusters) are resampled with replacement."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(sums), size=(n_resamples, len(sums)))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _per_image(values: pd.Series, images: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    grouped = values.astype(float).groupby(images.to_numpy(), sort=True)
    return grouped.sum().to_numpy(), grouped.count().to_numpy().astype(float)


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise FdcamError(f"n_resamples must be a positive int; got {n_resamples}")
    if not 0 < confidence < 1:
        raise FdcamError(f"confidence must be in (0, 1); got {confidence}")


def _check_metrics(df: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    chosen = _default_metrics(df) if metrics is None else list(metrics)
    missing = [m for m in chosen if m not in df.columns]
    if missing:
        raise FdcamError(f"no column {missing[0]!r} in the table; available: "
                         f"{', '.join(df.columns)}")
    return chosen


def summarize(df: pd.DataFrame, *, metrics: Sequence[str] | None = None,
              n_resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Mean of each metric per method with a bootstrap confidence interval.

    One row per (method, metric): ``n`` rows used, ``mean``, ``ci_low``, ``ci_high``. Error
    rows and empty cells are left out. The bootstrap resamples images with replacement
    (all of an image's targets together, since they share the image) `n_resamples` times
    and takes the percentile interval; the generator is seeded per (method, metric), so a
    summary does not depend on which other methods the table holds. Metrics default to
    insertion, deletion, overall and (for pointing-game tables) hit — the paper's Eq. 12
    accuracy; `fdcam.metrics.pointing_game` gives the per-class 15-pixel variant.
    """
    _check_bootstrap(n_resamples, confidence)
    chosen = _check_metrics(df, metrics)
    ok = df[df["error"].isna()] if "error" in df.columns else df
    rows = []
    for method, group in ok.groupby("method", sort=False):
        for metric in chosen:
            valid = group[group[metric].notna()]
            if valid.empty:
                continue
            sums, counts = _per_image(valid[metric], valid["image"])
            low, high = _bootstrap(sums, counts, n_resamples, confidence, seed)
            rows.append({"method": method, "metric": metric, "n": len(valid),
                         "mean": float(sums.sum() / counts.sum()),
                         "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["method", "metric", "n", "mean", "ci_low", "ci_high"])


def paired_differences(df: pd.DataFrame, reference: str = "fdcam", *,
                       metrics: Sequence[str] | None = None, n_resamples: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean difference method − reference on the same (image, target) pairs, with a CI.

    For every other method, rows are paired with the reference's on (image, target); pairs
    where either side failed or is empty are dropped. ``mean_difference`` = mean of
    (method − reference); the paired bootstrap resamples images, keeping each image's
    pairs together. Columns: method, reference, metric, n, mean_difference, ci_low, ci_high.
    """
    _check_bootstrap(n_resamples, confidence)
    chosen = _check_metrics(df, metrics)
    ok = df[df["error"].isna()] if "error" in df.columns else df
    names = list(dict.fromkeys(df["method"]))
    if reference not in names:
        raise FdcamError(f"reference method {reference!r} is not in the table; "
                         f"methods: {', '.join(map(str, names))}")
    base = ok[ok["method"] == reference]
    rows = []
    for method in names:
        if method == reference:
            continue
        other = ok[ok["method"] == method]
        paired = other.merge(base, on=["image", "target"], suffixes=("", "_ref"))
        for metric in chosen:
            valid = paired[paired[metric].notna() & paired[f"{metric}_ref"].notna()]
            if valid.empty:
                continue
            diff = valid[metric].astype(float) - valid[f"{metric}_ref"].astype(float)
            sums, counts = _per_image(diff, valid["image"])
            low, high = _bootstrap(sums, counts, n_resamples, confidence, seed)
            rows.append({"method": method, "reference": reference, "metric": metric,
                         "n": len(valid), "mean_difference": float(sums.sum() / counts.sum()),
                         "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["method", "reference", "metric", "n",
                                       "mean_difference", "ci_low", "ci_high"])


# ------------------------------------------------------------------------------------- VOC XML


def read_voc_boxes(path: str | os.PathLike[str], categories: Sequence[str],
                   input_size: tuple[int, int]) -> dict[int, ClassBoxes]:
    """Boxes of a VOC annotation file, by model class, in input-pixel coordinates.

    Object names are matched to `categories` (case-insensitive). VOC corners are 1-based
    inclusive pixels of the original image; the image is resized to `input_size` (H, W)
    without cropping, so a box becomes the input pixels it overlaps:
    x1 = ⌊(xmin − 1)·W/width⌋, x2 = ⌈xmax·W/width⌉ − 1 (rows alike).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
        width = int(float(_xml_text(root, "size/width")))
        height = int(float(_xml_text(root, "size/height")))
        if width <= 0 or height <= 0:
            raise ValueError(f"image size {width}x{height}")
        objects = []
        for obj in root.iter("object"):
            name = _xml_text(obj, "name").strip()
            difficult = obj.findtext("difficult", "0").strip() not in ("0", "")
            corners = [float(_xml_text(obj, f"bndbox/{k}"))
                       for k in ("xmin", "ymin", "xmax", "ymax")]
            objects.append((name, difficult, corners))
    except (ET.ParseError, ValueError, OSError) as error:
        raise FdcamError(f"malformed VOC annotation {path}: {error}") from error
    index = {name.lower(): i for i, name in enumerate(categories)}
    out_h, out_w = input_size
    sx, sy = out_w / width, out_h / height
    boxes: dict[int, list[list[float]]] = {}
    flags: dict[int, list[bool]] = {}
    for name, difficult, (xmin, ymin, xmax, ymax) in objects:
        if name.lower() not in index:
            raise FdcamError(f"{path}: object class {name!r} is not a class of the model "
                             f"(expected one of its {len(categories)} category names)")
        cls = index[name.lower()]
        x1 = min(max(math.floor((xmin - 1) * sx), 0), out_w - 1)
        y1 = min(max(math.floor((ymin - 1) * sy), 0), out_h - 1)
        x2 = min(max(math.ceil(xmax * sx) - 1, x1), out_w - 1)
        y2 = min(max(math.ceil(ymax * sy) - 1, y1), out_h - 1)
        boxes.setdefault(cls, []).append([x1, y1, x2, y2])
        flags.setdefault(cls, []).append(difficult)
    return {cls: ClassBoxes(torch.tensor(b, dtype=torch.float64), torch.tensor(flags[cls]))
            for cls, b in boxes.items()}


def _xml_text(node: ET.Element, tag: str) -> str:
    text = node.findtext(tag)
    if text is None or not text.strip():
        raise ValueError(f"missing <{tag}>")
    return text


# ------------------------------------------------------------------------------------------ CLI


def _shard_argument(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must look like i/n (e.g. 0/4); "
                                         f"got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard i/n needs 0 <= i < n; got {text!r}")
    return index, count


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate`` to an argparse sub-command group; its ``func`` is `run_evaluate`."""
    parser = subparsers.add_parser(
        "evaluate",
        help="insertion/deletion AUC (and the pointing game) of explainers over a folder",
        description="Explain every image of a folder with each method and append one row "
                    "per (image, method, target) to a CSV; rerunning resumes.")
    parser.add_argument("--model", required=True, choices=MODEL_NAMES, help="model to explain")
    parser.add_argument("--images", required=True, type=Path,
                        help="folder of images (every non-hidden file, sorted by name)")
    parser.add_argument("--methods", required=True,
                        help="comma-separated method names, or 'all'")
    parser.add_argument("--out", required=True, type=Path, help="results CSV (appended to)")
    parser.add_argument("--limit", type=_positive_int, help="only the first N images")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--boxes", type=Path,
                        help="folder of VOC XML files (<image stem>.xml): adds the pointing "
                             "game and explains the annotated classes")
    parser.add_argument("--shard", type=_shard_argument, default=(0, 1), metavar="i/n",
                        help="evaluate only images whose index is i modulo n")
    parser.add_argument("--batch-size", type=_positive_int, default=32,
                        help="perturbed images per forward pass (default 32)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="drop the error rows of an earlier run and try those again")
    parser.set_defaults(func=run_evaluate)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """``fdcam evaluate``: run, then print the summary and the failed images on stdout."""
    from fdcam import baselines  # lazy: the evaluation core does not need the baselines

    known = tuple(baselines.METHODS)
    requested = [m.strip() for m in str(args.methods).split(",") if m.strip()]
    names = list(known) if requested == ["all"] else list(dict.fromkeys(requested))
    unknown = [m for m in names if m not in known]
    if not names or unknown:
        raise FdcamError(f"unknown method {(unknown or [args.methods])[0]!r}; "
                         f"available: {', '.join(known)} (or 'all')")
    folder = Path(args.images)
    if not folder.is_dir():
        raise FdcamError(f"image folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if args.limit is not None:
        files = files[: args.limit]
    if not files:
        raise FdcamError(f"image folder {folder} holds no files")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise FdcamError("--device cuda was asked for but no CUDA device is available")
    loaded = load_model(args.model, device=args.device)
    boxes = None
    if args.boxes is not None:
        box_dir = Path(args.boxes)
        if not box_dir.is_dir():
            raise FdcamError(f"box folder {box_dir} does not exist or is not a folder")
        boxes = {p.name: read_voc_boxes(box_dir / f"{p.stem}.xml", loaded.categories,
                                        loaded.input_size)
                 for p in files if (box_dir / f"{p.stem}.xml").is_file()}
    items = [(p.name, functools.partial(_read_image, p, loaded)) for p in files]
    factories = {name: functools.partial(baselines.make_explainer, name) for name in names}
    failed = evaluate(items, factories, loaded, args.out, boxes=boxes,
                      batch_size=args.batch_size, shard=args.shard, device=args.device,
                      progress=True, retry_failed=args.retry_failed)
    table = read_results(args.out)
    print(format_summary(table))
    if failed:
        errors = table[table["error"].notna()].drop_duplicates("image").set_index("image")
        print(f"\n{len(failed)} image(s) failed (rows with an error in {args.out}):")
        for image in failed:
            print(f"  {image}: {errors['error'].get(image, '')}")
    return 0


def _read_image(path: Path, loaded: LoadedModel) -> Tensor:
    with Image.open(path) as image:
        image.load()  # decode now, so a truncated file fails here and is recorded
        return loaded.preprocess(image)


def format_summary(df: pd.DataFrame) -> str:
    """A results table as text: per method, mean [95 % CI] of each metric (and pointing)."""
    ok = df[df["error"].isna()]
    if ok.empty:
        return "no finished rows yet"
    summary = summarize(df)
    summary["cell"] = [f"{m:.4f} [{lo:.4f}, {hi:.4f}]"
                       for m, lo, hi in summary[["mean", "ci_low", "ci_high"]].itertuples(
                           index=False)]
    wide = summary.pivot(index="method", columns="metric", values="cell")
    wide = wide[[m for m in _default_metrics(df) if m in wide.columns]]
    wide.insert(0, "n", summary.groupby("method")["n"].max())
    text = wide.to_string()
    if "hit" in df.columns and ok["hit"].notna().any():
        text += "\n\npointing game\n" + pointing_game(df).to_string(index=False)
    return text
