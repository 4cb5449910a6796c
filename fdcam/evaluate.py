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

The results file (format 2) is a CSV with one line before the column names::

    # fdcam-results/2 {"layer": "features.30", "model": "vgg16", "shard": [0, 1],
                       "step_fraction": 0.03571428571428571, "weights": "sha256:…"}
    image,method,target,probability,insertion,deletion,overall,error
    ILSVRC2012_val_00000001.JPEG,fdcam,65,0.61…,0.55…,0.09…,0.46…,

Read it with `read_results` (or ``pandas.read_csv(path, skiprows=1)``). The first line is
the file's identity (`results_identity`): model, weights fingerprint, layer, curve step,
shard, and any ``settings`` of the caller. What it guarantees:

* a run with another identity (model, weights, layer, settings, shard) is refused in one
  line, and so is a file that is not a results file — before anything is written to it;
* one writer at a time: the run holds an exclusive ``fcntl`` lock on the file (POSIX);
  a second run on the same file stops with one line;
* every line is checked on reading (field count, numbers, True/False, an error row has no
  metrics, ``overall`` equals ``insertion − deletion`` exactly); a line that fails — torn
  by a kill, cut, garbage, not UTF-8 — is reported (`ResultsWarning`), never counted, and
  `evaluate` recomputes it; a key seen twice counts once;
* rewrites (repairs, ``retry_failed``, `merge_results` via `_write_table`) go through a
  temporary file and an atomic rename, so a kill leaves the old or the new file;
* text cells (image, method, error) that a spreadsheet would run as a formula (starting
  with ``= + - @``, tab or CR) are written with a leading ``'``, and a cell that starts
  with ``'`` gets one more; `read_results` removes exactly one, so ids read back as given.

Files of format 1 (no identity line, written by an older fdcam) are still read; `evaluate`
adopts one by adding this run's identity.

Example::

    from fdcam.baselines import make_explainer
    methods = {name: functools.partial(make_explainer, name) for name in ("gradcam", "fdcam")}
    failed = evaluate(images, methods, loaded_model, "results.csv")   # images: (id, [3, H, W])
    table = read_results("results.csv")
    summarize(table), paired_differences(table, reference="fdcam")
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from fdcam.checks import check_device
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
from fdcam.models import LoadedModel, load_model
from fdcam.targets import check_images

try:  # the lock that keeps a second writer off a results file (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

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
    batch_size: int | None = None,
    step_fraction: float = STEP_FRACTION,
    shard: tuple[int, int] = (0, 1),
    device: str | torch.device | None = None,
    progress: bool = False,
    retry_failed: bool = False,
    curves: bool = True,
    on_explained: OnExplained | None = None,
    settings: Mapping[str, Any] | None = None,
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
    `batch_size` is the number of perturbed images per forward pass of the metrics (None:
    `fdcam.metrics.curve_batch_size`, the measured best for the device).
    ``curves=False`` skips insertion/deletion (their cells stay empty; ``probability`` is
    still filled), for runs that only need the pointing game. `on_explained` is called
    after each (image, method) succeeds, with the maps and the curves (None without
    curves), so that a caller can keep some of them, e.g. for a figure.

    The file records what produced its rows (`results_identity`: model, weights, layer,
    step fraction, shard, and `settings` such as ``{"layer": "_blocks.14"}`` when the
    explainers use another layer than the model's default); a run whose identity differs
    is refused, as is a file that is not a results file. The file is locked while the run
    writes (a second run on it stops with one line), and lines that are not valid rows are
    reported (`ResultsWarning`) and recomputed.

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
    identity = results_identity(model, step_fraction=step_fraction if curves else None,
                                shard=(shard_index, shard_count), settings=settings)
    table = _ResultsFile(path, result_columns(pointing), identity, retry_failed)
    explainers: dict[str, Explainer] = {}
    failed: list[str] = []
    seen: set[str] = set()
    total = _shard_total(images, shard_index, shard_count)
    was_training = network.training
    network.eval()
    try:
        with (table,
              tqdm(total=total, disable=not progress, unit="image", file=sys.stderr,
                   desc=f"evaluate {path.name}") as bar):
            for position, item in enumerate(images):
                if position % shard_count != shard_index:
                    continue
                image_id, source = _unpack(item, position)
                if "\n" in image_id or "\r" in image_id:
                    raise FdcamError(f"image id {image_id!r} contains a line break; ids "
                                     f"must be one line")
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
                                    on_explained)
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
                    device: str | torch.device, batch_size: int | None,
                    step_fraction: float | None,
                    table: _ResultsFile, on_explained: OnExplained | None = None) -> None:
    try:
        x = _load(image_id, source).to(device)
        top1 = None
        if wanted is None:
            with torch.no_grad():
                top1 = int(network(x[None]).argmax(1)[0])
    except Exception as error:  # an unreadable image must not stop a long run
        for method in pending:
            table.write([_error_row(image_id, method, None, error, pointing)])
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
        table.write(rows)


def _evaluate_method(image_id: str, method: str, explainer: Explainer, x: Tensor,
                     classes: list[int], network: nn.Module,
                     image_boxes: Mapping[int, ClassBoxes | Tensor] | None, pointing: bool,
                     batch_size: int | None, step_fraction: float | None,
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

RESULTS_FORMAT = 2
"""Version of the results-file layout written by this module (1: no identity line)."""
_MAGIC = "# fdcam-results/"
IDENTITY_ATTR = "fdcam_results"
"""``DataFrame.attrs`` key under which `read_results` puts the file's identity."""
_TEXT_COLUMNS = {"image", "method", "error"}
# A text cell starting with one of these is a formula (or hides one) in a spreadsheet; the
# quote that escapes them is escaped too, so that reading strips exactly one quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


class ResultsWarning(UserWarning):
    """Rows of a results file that were not counted (malformed, torn, duplicated)."""


def weights_fingerprint(network: nn.Module) -> str:
    """``sha256:`` + 16 hex digits of the network's state dict (names, dtypes, shapes and
    bytes): two runs with this fingerprint scored the same weights."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()[:16]


def results_identity(model: nn.Module | LoadedModel, *, step_fraction: float | None,
                     shard: tuple[int, int] = (0, 1),
                     settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What makes two runs' rows comparable, as stored in a results file's first line.

    model (`LoadedModel.name`, else the module's class name), weights (`weights_fingerprint`),
    layer (`LoadedModel.target_layer`, unless `settings` name another), step_fraction of
    the insertion/deletion curves (None without curves), shard [i, n], and every entry of
    `settings` (JSON values, e.g. ``{"layer": "_blocks.14"}``).
    """
    network = model.model if isinstance(model, LoadedModel) else model
    identity: dict[str, Any] = {
        "model": model.name if isinstance(model, LoadedModel) else type(network).__name__,
        "weights": weights_fingerprint(network),
        "layer": model.target_layer if isinstance(model, LoadedModel) else None,
        "step_fraction": step_fraction,
        "shard": [int(shard[0]), int(shard[1])],
    }
    for key, value in (settings or {}).items():
        try:
            identity[str(key)] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            raise FdcamError(f"settings[{key!r}] is {type(value).__name__}; expected a JSON "
                             f"value (str, number, bool, None, list, dict)") from None
    return identity


def _identity_line(identity: Mapping[str, Any]) -> str:
    return f"{_MAGIC}{RESULTS_FORMAT} " + json.dumps(dict(identity), sort_keys=True) + "\n"


def _escape(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _unescape(text: str) -> str:
    return text[1:] if text.startswith("'") else text


class _BadRow(ValueError):
    """A line that is not a valid row; its message says why."""


@dataclass
class _Parsed:
    """A results file as read: identity, columns, valid rows (Python values), problems."""

    identity: dict[str, Any] | None  # None: format 1 (a file of an older fdcam)
    columns: list[str]
    rows: list[list[Any]]
    problems: list[str]  # "line N: why", one per line that was not counted
    clean: bool  # the bytes are exactly what `_render` writes for (identity, rows)


def _encode(columns: Sequence[str], values: Sequence[Any]) -> list[str]:
    """Python values -> the cells written to disk (floats as repr: an exact round-trip)."""
    cells = []
    for column, value in zip(columns, values, strict=True):
        if _missing(value):
            cells.append("")
        elif column in _TEXT_COLUMNS:
            cells.append(_escape(str(value)))
        elif column in _FLOAT_COLUMNS:
            cells.append(repr(float(value)))
        elif column in _BOOL_COLUMNS:
            cells.append(str(bool(value)))
        else:
            cells.append(str(_plain(value)))
    return cells


def _decode(columns: Sequence[str], cells: list[str], escaped: bool) -> list[Any]:
    """Cells of one line -> Python values; `_BadRow` when the line is not a valid row."""
    if len(cells) != len(columns):
        raise _BadRow(f"{len(cells)} fields, expected {len(columns)}")
    row: dict[str, Any] = {}
    for column, cell in zip(columns, cells, strict=True):
        if column in _TEXT_COLUMNS:
            row[column] = (_unescape(cell) if escaped else cell) if cell else None
        elif column == "target":
            if cell and not (cell.isascii() and cell.isdigit()):
                raise _BadRow(f"target {cell[:40]!r} is not a class index")
            row[column] = int(cell) if cell else None
        elif column in _FLOAT_COLUMNS:
            try:
                row[column] = float(cell) if cell else None
            except ValueError:
                raise _BadRow(f"{column} {cell[:40]!r} is not a number") from None
        elif column in _BOOL_COLUMNS:
            if cell not in ("", "True", "False"):
                raise _BadRow(f"{column} {cell[:40]!r} is not True or False")
            row[column] = {"True": True, "False": False}.get(cell)
    if not row["image"] or not row["method"]:
        raise _BadRow("empty image or method")
    measured = [c for c in columns if c in _FLOAT_COLUMNS or c in _BOOL_COLUMNS]
    if row["error"] is not None:
        if any(row[c] is not None for c in measured):
            raise _BadRow("an error row with metric values")
    else:
        if row["target"] is None or row["probability"] is None:
            raise _BadRow("a row without error, target or probability")
        curve = [row["insertion"], row["deletion"], row["overall"]]
        if any(v is None for v in curve) and any(v is not None for v in curve):
            raise _BadRow("insertion, deletion and overall must be all filled or all empty")
        if curve[0] is not None and not _same_float(curve[2], curve[0] - curve[1]):
            raise _BadRow("overall is not insertion - deletion (a cut number?)")
    return [row[c] for c in columns]


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _parse(path: Path, data: bytes) -> _Parsed:
    """Read and check every line of a results file; raise `FdcamError` when it is not one.

    Layout (format 2): line 1 is ``# fdcam-results/2 {identity JSON}``, line 2 the column
    names, then one row per line. Format 1 (older fdcam) has no identity line. A line that
    is not a valid row (torn by a kill, cut, garbage, not UTF-8, a key seen before) becomes
    a problem and is not counted.
    """
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a line end
    position = 0
    identity: dict[str, Any] | None = None
    clean = torn == b""

    def text(raw: bytes) -> str:
        return raw.removesuffix(b"\r").decode("utf-8")

    def refuse(why: str) -> FdcamError:
        return FdcamError(f"{path} is not an fdcam results file ({why}); refusing to touch "
                          f"it: choose another file name")

    try:
        first = text(lines[0]) if lines else None
    except UnicodeDecodeError:
        raise refuse("its first line is not UTF-8 text") from None
    if first is not None and first.startswith(_MAGIC):
        version, _, payload = first.removeprefix(_MAGIC).partition(" ")
        if version != str(RESULTS_FORMAT):
            raise FdcamError(f"{path} is a results file of format {version[:20]!r}; this fdcam "
                             f"reads format {RESULTS_FORMAT} (and 1): use a matching fdcam "
                             f"or another file")
        try:
            identity = json.loads(payload)
        except ValueError:
            identity = None
        if not isinstance(identity, dict):
            raise FdcamError(f"{path}: its identity line (line 1) is damaged; expected "
                             f"{_MAGIC}{RESULTS_FORMAT} followed by a JSON object")
        position = 1
    try:
        header = text(lines[position]) if len(lines) > position else None
    except UnicodeDecodeError:
        raise refuse(f"line {position + 1} is not UTF-8 text") from None
    try:
        columns = next(csv.reader([header]), []) if header is not None else []
    except csv.Error:
        raise refuse(f"line {position + 1} is not CSV") from None
    if columns not in (result_columns(False), result_columns(True)):
        if header is None and (identity is not None or _MAGIC.encode().startswith(torn)
                               or torn.startswith(_MAGIC.encode())
                               or any(c.encode().startswith(torn)
                                      for c in (",".join(result_columns(False)),
                                                ",".join(result_columns(True))))):
            # killed while the header was written: nothing was ever counted in it
            return _Parsed(identity, [], [], [], False)
        shown = header if header is not None else torn.decode("utf-8", "replace")
        raise refuse(f"line {position + 1} is {shown[:60]!r}, not the results header "
                     f"{','.join(result_columns(False))}[,…]")
    clean = clean and identity is not None and all(not raw.endswith(b"\r") for raw in lines)
    problems: list[str] = []
    rows: list[list[Any]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for number, raw in enumerate(lines[position + 1:], start=position + 2):
        try:
            cells = next(csv.reader([text(raw)], strict=True), [])
            values = _decode(columns, cells, escaped=identity is not None)
        except UnicodeDecodeError:
            problems.append(f"line {number}: not UTF-8 text")
            continue
        except (csv.Error, _BadRow) as error:
            problems.append(f"line {number}: {error}")
            continue
        key = tuple(values[:3])
        if key in seen:
            index = seen[key]
            earlier_failed = rows[index][-1] is not None
            if earlier_failed and values[-1] is None:  # a success beats an error row
                rows[index] = values
            problems.append(f"line {number}: a second row for {key[0]!r}, {key[1]!r}, "
                            f"target {key[2]}")
            continue
        seen[key] = len(rows)
        rows.append(values)
    if torn:
        problems.append(f"line {len(lines) + 1}: incomplete (no line end; a run killed "
                        f"while writing it?)")
    return _Parsed(identity, columns, rows, problems, clean and not problems)


def _render(identity: Mapping[str, Any], columns: Sequence[str],
            rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    buffer.write(_identity_line(identity))
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(_encode(columns, row) for row in rows)
    return buffer.getvalue()


def _report(path: Path, problems: list[str], action: str) -> None:
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        warnings.warn(f"{path}: {len(problems)} line(s) not counted, {action}: "
                      f"{'; '.join(problems[:3])}{more}", ResultsWarning, stacklevel=3)


def _check_writable_folder(path: Path) -> None:
    """One line when `path` cannot be a file: it is a folder, or a file is in its way."""
    if path.is_dir():
        raise FdcamError(f"{path} is a folder; expected a results file name (e.g. "
                         f"{path / 'results.csv'})")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise FdcamError(f"cannot write {path}: {parent} is a file, not a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FdcamError(f"cannot create the folder {path.parent}: "
                         f"{error.strerror or error}") from None


def _lock(fd: int, path: Path) -> None:
    if fcntl is None:  # not on Linux/macOS: no lock (one writer per file is then on you)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FdcamError(f"results file {path} is being written by another process (it "
                         f"holds the file's lock); wait for it to end or use another "
                         f"file") from None


def _open_locked(path: Path) -> int:
    """Open (create) `path` for appending with an exclusive lock held; the fd is returned.

    The lock belongs to the file, not the name: when the name was replaced by another file
    between open and lock (another process rewrote it), the new file is opened and locked.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as error:
            raise FdcamError(f"cannot open {path} for writing: "
                             f"{error.strerror or error}") from None
        _lock(fd, path)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _replace_locked(path: Path, text: str, old_fd: int | None) -> int:
    """Write `text` to a locked temporary file and rename it over `path` (atomic: a kill
    leaves the old or the new file, never half); returns the new file's locked fd."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        _lock(fd, tmp)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if old_fd is not None:
        os.close(old_fd)  # releases the lock on the replaced file
    return fd


def _foreign_check(path: Path) -> None:
    """Refuse an existing file that is not a results file, before opening it for writing."""
    if not path.exists() or path.is_dir():
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(64 * 1024)
    except OSError as error:
        raise FdcamError(f"cannot read {path}: {error.strerror or error}") from None
    if head and b"\n" in head:
        # Only the first lines matter here; the rows are checked under the lock.
        upto = head.split(b"\n")
        _parse(path, b"\n".join(upto[:2]) + b"\n")


@dataclass
class _ResultsFile:
    """The CSV on disk, locked while a run appends to it, and the keys it already holds."""

    path: Path
    columns: list[str]
    identity: dict[str, Any]
    retry_failed: bool
    done: set[tuple[str, str, int]] = field(default_factory=set)
    any_row: set[tuple[str, str]] = field(default_factory=set)
    image_failed: set[tuple[str, str]] = field(default_factory=set)  # error before targets
    errors: set[str] = field(default_factory=set)
    fd: int | None = None
    handle: TextIO | None = None

    def __enter__(self) -> _ResultsFile:
        _check_writable_folder(self.path)
        _foreign_check(self.path)  # a foreign file is refused before it is opened to write
        fd = _open_locked(self.path)
        try:
            with os.fdopen(os.dup(fd), "rb") as reader:
                parsed = _parse(self.path, reader.read())
            rows = self._adopt(parsed)
            if (not parsed.clean or len(rows) != len(parsed.rows)
                    or parsed.identity != self.identity):
                fd = _replace_locked(self.path, _render(self.identity, self.columns, rows), fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.handle = os.fdopen(os.dup(fd), "a", newline="", encoding="utf-8")
        for values in rows:
            self._remember(values)
        return self

    def _adopt(self, parsed: _Parsed) -> list[list[Any]]:
        """Check the file's identity against this run's; the rows to keep."""
        if parsed.columns and parsed.columns != self.columns:
            raise FdcamError(f"{self.path} has columns {', '.join(parsed.columns)}; this run "
                             f"writes {', '.join(self.columns)} (boxes given in one run only?)"
                             f"; use another output file")
        old = parsed.identity or {}
        for key, value in old.items():
            if key == "shard":
                continue
            if key in self.identity and self.identity[key] != value:
                raise FdcamError(f"{self.path} holds rows of {key} {_shown(value)}; this run "
                                 f"has {key} {_shown(self.identity[key])}: use another output "
                                 f"file")
        if "shard" in old and old["shard"] != self.identity["shard"] and old["shard"][1] != 1:
            raise FdcamError(f"{self.path} holds shard {old['shard'][0]}/{old['shard'][1]}; "
                             f"this run is shard {self.identity['shard'][0]}/"
                             f"{self.identity['shard'][1]}: one file per shard")
        # Keys the file lacks (an older fdcam's file) are taken from this run; its shard is
        # kept: rows of one shard in an unsharded file are still a subset of the full run.
        self.identity = {**self.identity, **old} if old else self.identity
        rows = parsed.rows
        if parsed.problems:
            _report(self.path, parsed.problems, "they will be recomputed")
        if self.retry_failed:
            rows = [r for r in rows if r[-1] is None]
        return rows

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
        self.handle = self.fd = None

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

    def write(self, rows: list[list[object]]) -> None:
        assert self.handle is not None
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(
            _encode(self.columns, row) for row in rows)
        self.handle.write(buffer.getvalue())  # one write: rows of a method land together
        self.handle.flush()  # finished work must survive an interrupt
        for row in rows:
            self._remember(row)

    def _remember(self, row: Sequence[Any]) -> None:
        image, method, target = str(row[0]), str(row[1]), row[2]
        self.any_row.add((image, method))
        if target is None:
            self.image_failed.add((image, method))
        else:
            self.done.add((image, method, int(target)))
        if row[-1] is not None:
            self.errors.add(image)

    def has_error(self, image: str) -> bool:
        return image in self.errors


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _write_table(df: pd.DataFrame, path: Path) -> None:
    """Write a results table (e.g. `merge_results`) atomically, under the file's lock.

    Its identity is ``df.attrs[IDENTITY_ATTR]`` (set by `read_results`/`merge_results`).
    """
    path = Path(path)
    _check_writable_folder(path)
    _foreign_check(path)
    identity = dict(df.attrs.get(IDENTITY_ATTR) or {})
    columns = list(df.columns)
    rows = [[None if _missing(v) else _plain(v) for v in row]
            for row in df.itertuples(index=False)]
    fd = _open_locked(path)
    try:
        fd = _replace_locked(path, _render(identity, columns, rows), fd)
    finally:
        os.close(fd)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a results CSV with exact floats, ``target`` as Int64 and nullable booleans.

    Every cell is read as text first, so image ids such as ``NA`` or ``007`` stay as
    written. Lines that are not valid rows are left out with a `ResultsWarning` (a rerun of
    `evaluate` recomputes them); a key seen twice counts once. The file's identity is in
    ``df.attrs[IDENTITY_ATTR]`` ({} for a file of an older fdcam).
    """
    path = Path(path)
    if not path.is_file():
        raise FdcamError(f"results file {path} does not exist" if not path.exists() else
                         f"results file {path} is a folder; expected a CSV file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FdcamError(f"cannot read {path}: {error.strerror or error}") from None
    if not data:
        raise FdcamError(f"results file {path} is empty; expected the lines written by "
                         f"fdcam.evaluate")
    parsed = _parse(path, data)
    _report(path, parsed.problems, "left out")
    columns = parsed.columns or result_columns(False)
    raw = pd.DataFrame([_raw_cells(columns, row) for row in parsed.rows], columns=columns,
                       dtype=str)
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
    df.attrs[IDENTITY_ATTR] = dict(parsed.identity or {})
    return df


def _raw_cells(columns: Sequence[str], values: Sequence[Any]) -> list[str]:
    """Values as unescaped text cells (what a format-1 file held), for the typed columns."""
    return ["" if v is None else (str(v) if c in _TEXT_COLUMNS else cell)
            for c, v, cell in zip(columns, values, _encode(columns, values), strict=True)]


def merge_results(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Join result tables (shards, resumed runs) into one: no duplicates, sorted.

    The files must be parts of one run: the same identity (model, weights, layer,
    settings), and sharded files one complete set — every shard 0..n-1 of the same n. A key
    (image, method, target) that occurs more than once keeps a successful row over an error
    row, then the first one. Rows are sorted by image, method and target, so the merge of a
    sharded run equals the (merged) unsharded run. The result's identity
    (``attrs[IDENTITY_ATTR]``) is that of an unsharded run.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise FdcamError("merge_results needs at least one results file")
    tables = [read_results(p) for p in paths]
    columns = list(tables[0].columns)
    for path, table in zip(paths, tables, strict=True):
        if list(table.columns) != columns:
            raise FdcamError(f"{path} has columns {', '.join(table.columns)}; expected "
                             f"{', '.join(columns)} like the first file")
    identity = _merged_identity(paths, [t.attrs.get(IDENTITY_ATTR) or {} for t in tables])
    df = pd.concat(tables, ignore_index=True)
    df = df.assign(_failed=df["error"].notna())
    df = df.sort_values([*KEY, "_failed"], kind="stable", na_position="last")
    df = df.drop_duplicates(subset=KEY, keep="first").drop(columns="_failed")
    df = df.reset_index(drop=True)
    df.attrs = {IDENTITY_ATTR: identity}
    return df


def _merged_identity(paths: list[Path], identities: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    shards: dict[int, list[int]] = {}
    shard_files: dict[int, Path] = {}
    for path, identity in zip(paths, identities, strict=True):
        for key, value in identity.items():
            if key == "shard":
                index, count = value
                if count > 1:
                    shards.setdefault(count, []).append(index)
                    shard_files.setdefault(count, path)
                continue
            if key in merged and merged[key] != value:
                raise FdcamError(f"{path} holds rows of {key} {_shown(value)} but "
                                 f"{origin[key]} of {key} {_shown(merged[key])}: not parts "
                                 f"of one run")
            merged.setdefault(key, value)
            origin.setdefault(key, path)
    if len(shards) > 1:
        (n1, p1), (n2, p2) = list(shard_files.items())[:2]
        raise FdcamError(f"{p1} is a shard of {n1} but {p2} a shard of {n2}: merge the "
                         f"shards of one run (one n)")
    for count, indices in shards.items():
        missing = sorted(set(range(count)) - set(indices))
        if missing:
            raise FdcamError(f"shard {missing[0]}/{count} is missing (given: "
                             f"{', '.join(f'{i}/{count}' for i in sorted(set(indices)))}); "
                             f"a merge needs all {count} shards")
    if any(identities):
        merged["shard"] = [0, 1]
    return merged


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
                   image_size: tuple[int, int] | None = None) -> dict[int, ClassBoxes]:
    """Boxes of a VOC annotation file, by model class: `fdcam.data.voc_class_boxes` of
    `fdcam.data.parse_voc_xml` (object names matched to `categories`, case-insensitive).

    Boxes stay in the original image's pixels (0-based inclusive) with its (H, W) from the
    file's ``<size>`` — or `image_size` when the file has none — so the pointing game is
    scored at the original resolution, exactly like Table II's.
    """
    from fdcam.data import parse_voc_xml, voc_class_boxes

    annotation = parse_voc_xml(path, categories)
    size = annotation["size"] or image_size
    if size is None:
        raise FdcamError(f"{path}: no <size>; expected the image's width and height")
    return voc_class_boxes(annotation, categories, size)


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
    parser.add_argument("--model", required=True,
                        help="efficientnet-lite0, vgg16, resnet50, or any torchvision "
                             "classification model (convnext_tiny, …)")
    parser.add_argument("--weights", default=None,
                        help="DEFAULT, a torchvision weights name, or a state-dict file "
                             "(weights_only=True); default: the model's usual weights")
    parser.add_argument("--layer", default=None,
                        help="target layer (a dotted module name; default: the model's "
                             "conventional layer, e.g. _swish for EfficientNet-Lite0)")
    parser.add_argument("--images", required=True, type=Path, nargs="+",
                        help="image files, or folders of images (every non-hidden file, "
                             "sorted by name)")
    parser.add_argument("--methods", required=True,
                        help="comma-separated method names, or 'all'")
    parser.add_argument("--out", required=True, type=Path, help="results CSV (appended to)")
    parser.add_argument("--limit", type=_positive_int, help="only the first N images")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--boxes", type=Path,
                        help="folder of VOC XML files (<image stem>.xml): adds the pointing "
                             "game and explains the annotated classes")
    parser.add_argument("--shard", type=_shard_argument, default=(0, 1), metavar="i/n",
                        help="evaluate only images whose index is i modulo n")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="perturbed images per forward pass (default: 4 on a CPU, 64 on "
                             "CUDA)")
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
    files = _image_files([Path(p) for p in args.images])
    if args.limit is not None:
        files = files[: args.limit]
    device = check_device(args.device)
    out = Path(args.out)
    _check_writable_folder(out)  # --out is checked before the model loads
    _foreign_check(out)
    from fdcam.cli import check_model_arguments

    name, _ = check_model_arguments(args.model, args.layer, None, args.weights)
    loaded = load_model(name, device=device, weights=args.weights)
    if args.layer is not None:
        loaded = dataclasses.replace(loaded, target_layer=args.layer)
    boxes = None
    if args.boxes is not None:
        box_dir = Path(args.boxes)
        if not box_dir.is_dir():
            raise FdcamError(f"box folder {box_dir} does not exist or is not a folder")
        boxes = {p.name: read_voc_boxes(box_dir / f"{p.stem}.xml", loaded.categories,
                                        _image_size(p))
                 for p in files if (box_dir / f"{p.stem}.xml").is_file()}
    items = [(p.name, functools.partial(_read_image, p, loaded)) for p in files]
    # The experiments' batch sizes (`baselines.batch_options`), so rows match the book's.
    factories = {name: functools.partial(baselines.make_explainer, name,
                                         **baselines.batch_options(name, device))
                 for name in names}
    failed = evaluate(items, factories, loaded, args.out, boxes=boxes,
                      batch_size=args.batch_size, shard=args.shard, device=device,
                      progress=True, retry_failed=args.retry_failed)
    table = read_results(args.out)
    print(format_summary(table))
    if failed:
        errors = table[table["error"].notna()].drop_duplicates("image").set_index("image")
        print(f"\n{len(failed)} image(s) failed (rows with an error in {args.out}):")
        for image in failed:
            print(f"  {image}: {errors['error'].get(image, '')}")
    return 0


def _image_files(paths: list[Path]) -> list[Path]:
    """The files named, and those of the folders named (sorted by name), in that order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if p.is_file() and not p.name.startswith("."))
            if not inside:
                raise FdcamError(f"image folder {path} holds no files")
            files.extend(inside)
        elif path.is_file():
            files.append(path)
        else:
            raise FdcamError(f"image folder or file {path} does not exist")
    return list(dict.fromkeys(files))


def _image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of an image file from its header, upright (EXIF); None if unreadable
    (the evaluation reports that image's error when it loads it)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            width, height = ImageOps.exif_transpose(image).size
    except Exception:
        return None
    return height, width


def _read_image(path: Path, loaded: LoadedModel) -> Tensor:
    from fdcam.data import open_rgb  # upright (EXIF), 16-bit scaled, bombs refused

    return loaded.preprocess(open_rgb(path))


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
