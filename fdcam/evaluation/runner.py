"""Resumable batch evaluation of explainers into tidy tables (§IV).

`evaluate` explains every image with every method and writes one results row per
(image, method, target) as soon as it is finished (`fdcam.evaluation.results`).
``probability`` is the target's softmax probability on the clean image, ``insertion`` and
``deletion`` the AUCs of `insertion_deletion_curves`, ``overall`` their difference; the
pointing-game columns appear when boxes are given (`pointing_record`). A rerun reads the
file and skips the rows already there, so an interrupted run resumes where it stopped and
never writes a row twice. An image that cannot be read, has the wrong shape or makes an
explainer raise becomes a row with an ``error`` message and the run goes on.
``shard=(i, n)`` evaluates every n-th image for parallel runs.

Example::

    from fdcam.baselines import make_explainer
    methods = {name: functools.partial(make_explainer, name) for name in ("gradcam", "fdcam")}
    failed = evaluate(images, methods, loaded_model, "results.csv")   # images: (id, [3, H, W])
    table = read_results("results.csv")
    summarize(table), paired_differences(table, reference="fdcam")
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from fdcam.baselines.base import BaseExplainer
from fdcam.cam import FDCAM
from fdcam.checks import check_shard
from fdcam.errors import FdcamError
from fdcam.evaluation.engine import Forward, forward_engine
from fdcam.evaluation.faithfulness import (
    STEP_FRACTION,
    InsertionDeletion,
    insertion_deletion_curves,
)
from fdcam.evaluation.pointing import ClassBoxes, pointing_record
from fdcam.evaluation.results import (
    RESULTS_FORMAT,
    result_columns,
    results_identity,
    tensor_content,
)
from fdcam.evaluation.results_file import (
    ResultsFile,
    check_identity,
    open_locked,
    parse_results,
    render_results,
    replace_locked,
    report_problems,
    resolved,
    row_problem,
)
from fdcam.explanation import Explainer
from fdcam.models import LoadedModel
from fdcam.switching_memo import SwitchingMemo
from fdcam.targets import check_images

ExplainerFactory = Callable[[Any], Explainer]
"""Called once, lazily, with the `model` given to `evaluate`; returns the explainer."""
ImageSource = Tensor | Callable[[], Tensor]
"""A normalised image [3, H, W], or a function that loads it (errors become failed rows)."""
ImageItem = tuple[str, ImageSource] | tuple[str, ImageSource, str]
"""(image_id, image) or (image_id, image, content): `content` identifies the image's pixels
(e.g. `fdcam.evaluation.results.file_content` of its file); without it, the image is
loaded and `tensor_content` is used."""
OnExplained = Callable[[str, str, list[int], Tensor, InsertionDeletion | None], None]
"""``on_explained(image_id, method, classes, saliency [n, H, W], curves or None)``."""


# ------------------------------------------------------------------------------------ evaluate


def evaluate(
    images: Iterable[ImageItem],
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
    engine: str = "eager",
    share_switching: bool = True,
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
    deletes those first), when they were made from the same image content: each row
    records it (``content``: the third element of an item, or `tensor_content` of the
    loaded image, so resuming loads every image once), and the rows of an image whose
    content changed — another file under the same id — are removed and made again. Each
    (image, method) is written and flushed as soon as it ends.
    ``shard=(i, n)`` keeps images whose position in `images` is ≡ i (mod n).
    `batch_size` is the number of perturbed images per forward pass of the metrics (None:
    `fdcam.evaluation.faithfulness.curve_batch_size`, the measured best for the device).
    ``curves=False`` skips insertion/deletion (their cells stay empty; ``probability`` is
    still filled), for runs that only need the pointing game. `on_explained` is called
    after each (image, method) succeeds, with the maps and the curves (None without
    curves), so that a caller can keep some of them, e.g. for a figure.

    `engine` runs the curves' forward passes, and Group-CAM's and Score-CAM's masked
    batches: ``"eager"`` (the network itself), ``"compile"``, ``"onnxruntime"`` or ``"auto"``
    (ONNX Runtime on a CPU where installed, else compiled where a compiler is found), see
    `fdcam.evaluation.engine.forward_engine`. The maps' own passes (gradients, FD-CAM's
    head) are always the network's.

    FD-CAM's variants share one image's grouped switching (`fdcam.switching_memo`: the
    same maps, computed once; ``share_switching=False`` computes it per variant).

    The file records what produced its rows (`results_identity`: model, weights, layer,
    step fraction, shard, and `settings` such as ``{"layer": "_blocks.14"}`` when the
    explainers use another layer than the model's default); a run whose identity differs
    is refused, as is a file that is not a results file. The file is locked while the run
    writes (a second run on it stops with one line), and lines that are not valid rows are
    reported (`ResultsWarning`) and recomputed. Before the first image is explained, the
    model and layer are tried on it (`fdcam.preflight.check_before_work`: finite weights
    and logits [B, classes], a map at least 2×2 at the layer); a failure stops the run in
    one line. A row that its reader would reject (NaN, a probability outside [0, 1]) is
    written as an error row instead.

    Returns the ids of the selected images that have an error row, in input order.
    """
    if not methods:
        raise FdcamError("methods is empty; expected at least one name -> explainer factory")
    shard_index, shard_count = check_shard(shard)
    network = model.model if isinstance(model, LoadedModel) else model
    if device is None:
        device = next((p.device for p in network.parameters()), torch.device("cpu"))
    pointing = boxes is not None
    path = Path(out_csv)
    identity = results_identity(model, step_fraction=step_fraction if curves else None,
                                shard=(shard_index, shard_count), settings=settings)
    table = ResultsFile(path, result_columns(pointing), identity, retry_failed)
    checked: list[bool] = []  # whether `check_before_work` has run
    layer = identity.get("layer")
    explainers: dict[str, Explainer] = {}
    failed: list[str] = []
    seen: set[str] = set()
    total = _shard_total(images, shard_index, shard_count)
    was_training = network.training
    network.eval()
    forward = forward_engine(network, engine=engine, device=device)
    memo = SwitchingMemo() if share_switching else None
    try:
        with (table,
              tqdm(total=total, disable=not progress, unit="image", file=sys.stderr,
                   desc=f"evaluate {path.name}") as bar):
            for position, item in enumerate(images):
                if position % shard_count != shard_index:
                    continue
                image_id, source, content = _unpack(item, position)
                if "\n" in image_id or "\r" in image_id:
                    raise FdcamError(f"image id {image_id!r} contains a line break; ids "
                                     f"must be one line")
                if image_id in seen:
                    raise FdcamError(f"image id {image_id!r} appears twice in images; "
                                     f"ids must be unique")
                seen.add(image_id)
                if content is None:
                    try:
                        source = _load(image_id, source)
                        content = tensor_content(source)
                    except Exception:  # the same failure is recorded when it is loaded
                        content = None
                table.bind(image_id, content)
                image_boxes = boxes.get(image_id) if boxes is not None else None
                wanted = _wanted_targets(image_id, targets, image_boxes)
                pending = table.pending(image_id, list(methods), wanted)
                if pending:
                    _evaluate_image(image_id, source, content, pending, wanted, methods,
                                    model, network, forward, explainers, image_boxes, pointing,
                                    device,
                                    batch_size, step_fraction if curves else None, table,
                                    on_explained, None if checked else (checked, layer), memo)
                if table.has_error(image_id):
                    failed.append(image_id)
                bar.update(1)  # this shard's images only, to match `total`
    finally:
        network.train(was_training)
        for explainer in explainers.values():
            if isinstance(explainer, FDCAM) and memo is not None and explainer.memo is memo:
                explainer.memo = None
    return failed


def _evaluate_image(image_id: str, source: ImageSource, content: str | None,
                    pending: dict[str, list[int] | None],
                    wanted: list[int] | None, methods: Mapping[str, ExplainerFactory],
                    model: nn.Module | LoadedModel, network: nn.Module, forward: Forward,
                    explainers: dict[str, Explainer],
                    image_boxes: Mapping[int, ClassBoxes | Tensor] | None, pointing: bool,
                    device: str | torch.device, batch_size: int | None,
                    step_fraction: float | None,
                    table: ResultsFile, on_explained: OnExplained | None = None,
                    check: tuple[list[bool], str | None] | None = None,
                    memo: SwitchingMemo | None = None) -> None:
    try:
        x = _load(image_id, source).to(device)
    except Exception as error:  # an unreadable image must not stop a long run
        for method in pending:
            table.write([_error_row(table.columns, image_id, method, None, error, content)])
        return
    if check is not None:  # the first image that loads: the model and layer are tried on it
        from fdcam.preflight import check_before_work

        check_before_work(network, x[None], check[1])
        check[0].append(True)
    try:
        top1 = None
        if wanted is None:
            with torch.no_grad():
                top1 = int(network(x[None]).argmax(1)[0])
    except Exception as error:
        for method in pending:
            table.write([_error_row(table.columns, image_id, method, None, error, content)])
        return
    for method, method_targets in pending.items():
        classes = method_targets if method_targets is not None else [top1]
        if method not in explainers:
            # A factory that fails is a configuration error, not an image's: let it raise.
            explainers[method] = methods[method](model)
            if forward is not network and isinstance(explainers[method], BaseExplainer):
                explainers[method].batch_forward = forward
            made = explainers[method]
            if memo is not None and isinstance(made, FDCAM) and made.memo is None:
                made.memo = memo  # taken off again when the run ends
        try:
            rows = _evaluate_method(image_id, method, explainers[method], x, classes,
                                    forward, image_boxes, pointing, batch_size, step_fraction,
                                    on_explained)
            rows = [_row(table.columns, {**cells, "content": content}) for cells in rows]
            for row, cls in zip(rows, classes, strict=True):
                why = row_problem(table.columns, row)
                if why is not None:
                    raise FdcamError(f"its row for class {cls} is not valid ({why})")
        except Exception as error:  # the explainer's own failure: record it and go on
            rows = [_error_row(table.columns, image_id, method, c, error, content)
                    for c in classes]
        table.write(rows)


def _evaluate_method(image_id: str, method: str, explainer: Explainer, x: Tensor,
                     classes: list[int], forward: Forward,
                     image_boxes: Mapping[int, ClassBoxes | Tensor] | None, pointing: bool,
                     batch_size: int | None, step_fraction: float | None,
                     on_explained: OnExplained | None = None) -> list[dict[str, object]]:
    """The cells of each row of one (image, method), by column name (`_row` orders them);
    ``step_fraction=None``: no insertion/deletion curves."""
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
            logits = forward(x[None]).float()
        probability = torch.softmax(logits, dim=1)[0, target].tolist()
        ins: list[float | None] = [None] * n
        dele: list[float | None] = [None] * n
        overall: list[float | None] = [None] * n
    else:
        curves = insertion_deletion_curves(forward, x[None].expand(n, -1, -1, -1), saliency,
                                           target, step_fraction=step_fraction,
                                           batch_size=batch_size)
        probability = curves.deletion[:, 0].tolist()  # deletion starts from the clean image
        ins, dele = curves.insertion_auc.tolist(), curves.deletion_auc.tolist()
        overall = [a - b for a, b in zip(ins, dele, strict=True)]
    if on_explained is not None:
        on_explained(image_id, method, list(classes), saliency, curves)
    metrics = {"probability": probability, "insertion": ins, "deletion": dele,
               "overall": overall}
    rows: list[dict[str, object]] = []
    for i, cls in enumerate(classes):
        cells: dict[str, object] = {"image": image_id, "method": method, "target": cls}
        cells.update({name: values[i] for name, values in metrics.items()})
        if pointing:
            cells.update(_pointing_cells(saliency[i], image_boxes, cls))
        rows.append(cells)
    return rows


def _row(columns: Sequence[str], cells: Mapping[str, object]) -> list[object]:
    """A row in the file's column order, from its cells by name (a column without one is
    empty): a new metric is a column of `fdcam.evaluation.results` and a cell here, with no
    position to keep in step."""
    unknown = set(cells) - set(columns)
    if unknown:
        raise FdcamError(f"cells {sorted(unknown)} have no column in the results file")
    return [cells.get(column) for column in columns]


def _pointing_cells(saliency: Tensor, image_boxes: Mapping[int, ClassBoxes | Tensor] | None,
                    cls: int) -> dict[str, object]:
    if image_boxes is None or cls not in image_boxes:
        return {}
    record = pointing_record(saliency.cpu(), image_boxes[cls], target=cls)
    return {"hit": record.hit, "hit_tol15": record.hit_tol15, "difficult": record.difficult}


def _error_row(columns: Sequence[str], image_id: str, method: str, cls: int | None,
               error: BaseException, content: str | None) -> list[object]:
    message = " ".join(f"{type(error).__name__}: {error}".split())  # one line in the CSV
    return _row(columns, {"image": image_id, "method": method, "target": cls,
                          "content": content, "error": message})


def _load(image_id: str, source: ImageSource) -> Tensor:
    x = source if isinstance(source, Tensor) else source()
    if not isinstance(x, Tensor):
        raise FdcamError(f"image {image_id!r} loaded as {type(x).__name__}; "
                         f"expected a float tensor [3, H, W]")
    if x.dim() != 3:
        raise FdcamError(f"image {image_id!r} must have shape [3, H, W]; got {list(x.shape)}")
    x = check_images(x[None], name=f"image {image_id!r}", channels=3)[0]
    if not bool(torch.isfinite(x).all()):
        raise FdcamError(f"image {image_id!r} has NaN or inf pixels; expected finite values")
    return x


def _unpack(item: object, position: int) -> tuple[str, ImageSource, str | None]:
    if not isinstance(item, tuple | list) or len(item) not in (2, 3):
        raise FdcamError(f"images must yield (image_id, image) pairs or (image_id, image, "
                         f"content) triples; item {position} is {type(item).__name__}")
    content = item[2] if len(item) == 3 else None
    if content is not None and (not isinstance(content, str) or not content
                                or "\n" in content or "\r" in content):
        raise FdcamError(f"the content of item {position} is {content!r}; expected one line "
                         f"of text such as sha256:…")
    return str(item[0]), item[1], content


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


def _shard_total(images: object, index: int, count: int) -> int | None:
    try:
        size = len(images)  # type: ignore[arg-type]
    except TypeError:
        return None
    return len(range(index, size, count))


def upgrade_results(out_csv: str | os.PathLike[str],
                    images: Iterable[ImageItem]) -> tuple[int, int]:
    """Bind the rows of a format-2 results file to their images' content, once, so that
    `evaluate` can resume it: each row gets the ``content`` that `evaluate` records for
    its image (the item's third element, else `tensor_content` of the loaded image).

    `images`: the items the rows were made from, as given to `evaluate`. Every row's image
    must be among them and load (an error row's image may fail to: its content stays
    empty); anything else is a one-line `FdcamError` and the file is left as it was. Lines
    that are not valid rows are left out with a `ResultsWarning` (a rerun recomputes them).
    Returns (valid rows before, rows after), equal unless rows were left out. A file already
    in format 3 is left as it is.
    """
    path = resolved(out_csv)
    if not path.is_file():
        raise FdcamError(f"results file {path} does not exist")
    fd = open_locked(path)
    try:
        with os.fdopen(os.dup(fd), "rb") as reader:
            parsed = parse_results(path, reader.read())
        if parsed.version == RESULTS_FORMAT:
            return len(parsed.rows), len(parsed.rows)
        if parsed.identity is None:
            raise FdcamError(f"{path} has no identity line (format 1): its rows cannot be "
                             f"matched to a model and weights, so they are not upgraded")
        identity = check_identity(path, parsed.identity)
        report_problems(path, parsed.problems, "left out (a rerun recomputes them)")
        wanted = dict.fromkeys(str(row[0]) for row in parsed.rows)
        contents: dict[str, str | None] = {}
        failure = ""
        for position, item in enumerate(images):
            image_id, source, content = _unpack(item, position)
            if image_id in wanted and image_id not in contents:
                if content is None:
                    try:
                        content = tensor_content(_load(image_id, source))
                    except Exception as error:
                        content = None
                        failure = f"{type(error).__name__}: {error}"
                contents[image_id] = content
                if content is None and any(r[0] == image_id and r[-1] is None
                                           for r in parsed.rows):
                    raise FdcamError(f"image {image_id!r} has rows with results but cannot "
                                     f"be loaded ({failure}); {path} is unchanged")
        missing = [image for image in wanted if image not in contents]
        if missing:
            raise FdcamError(f"{len(missing)} image(s) with rows in {path} are not among the "
                             f"images given (first: {missing[0]!r}); give the images the "
                             f"rows were made from; {path} is unchanged")
        pointing = "hit" in parsed.columns
        rows = [[*row[:-1], contents[str(row[0])], row[-1]] for row in parsed.rows]
        fd = replace_locked(path, render_results(identity, result_columns(pointing), rows), fd)
    finally:
        os.close(fd)
    return len(parsed.rows), len(rows)
