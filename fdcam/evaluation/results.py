"""The results file (format 3): its columns, its identity line, and the checked encoding of
every row.

One row per (image, method, target)::

    image, method, target, probability, insertion, deletion, overall,
    [hit, hit_tol15, difficult,] content, error

The file is a CSV with one line before the column names::

    # fdcam-results/3 {"layer": "features.30", "model": "vgg16", "shard": [0, 1],
                       "step_fraction": 0.03571428571428571, "weights": "sha256:…"}
    image,method,target,probability,insertion,deletion,overall,content,error
    ILSVRC2012_val_00000001.JPEG,fdcam,65,0.61…,0.55…,0.09…,0.46…,sha256:…,

The first line is the file's identity (`results_identity`): model, weights fingerprint,
layer, curve step, shard, and any ``settings`` of the caller; `check_identity` says what a
complete one is. ``content`` binds a row to its image's pixels (`tensor_content`,
`file_content`): a row is reused only for the same content. Every line is checked on
reading (field count, numbers, True/False, an error row has no metrics, every metric finite,
``probability``, ``insertion`` and ``deletion`` in [0, 1], ``overall`` equal to
``insertion − deletion`` exactly); a line that fails — torn by a kill, cut, garbage, not
UTF-8, a value no run can produce — is reported (`ResultsWarning`), never counted. Text
cells (image, method, error) that a spreadsheet would run as a formula (starting with
``= + - @``, tab or CR) are written with a leading ``'``, and a cell that starts with ``'``
gets one more; reading removes exactly one, so ids read back as given.

Files of format 2 (no ``content`` column) and 1 (no identity line) are still read, for
analysis; `evaluate` does not resume them (`fdcam.evaluation.runner.upgrade_results`
binds a format-2 file's rows to their images once).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.models import LoadedModel

KEY = ["image", "method", "target"]
METRIC_COLUMNS = ["probability", "insertion", "deletion", "overall"]
POINTING_COLUMNS = ["hit", "hit_tol15", "difficult"]
FLOAT_COLUMNS = set(METRIC_COLUMNS)
BOOL_COLUMNS = set(POINTING_COLUMNS)


def result_columns(pointing: bool, content: bool = True) -> list[str]:
    """The CSV header: key, metrics, pointing-game columns when boxes are given, the image's
    content (`content=False`: format 2's header, which has none), error."""
    return [*KEY, *METRIC_COLUMNS, *(POINTING_COLUMNS if pointing else []),
            *(["content"] if content else []), "error"]


# ------------------------------------------------------------------------------- results file

RESULTS_FORMAT = 3
"""Version of the results-file layout written by this module (2: no ``content`` column;
1: no identity line either)."""
_MAGIC = "# fdcam-results/"
IDENTITY_ATTR = "fdcam_results"
"""``DataFrame.attrs`` key under which `read_results` puts the file's identity."""
TEXT_COLUMNS = {"image", "method", "content", "error"}
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


def tensor_content(x: Tensor) -> str:
    """``tensor-sha256:`` + 16 hex digits of an image tensor's dtype, shape and bytes: the
    ``content`` of a row whose image was given as a tensor (or a loader of one)."""
    flat = x.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{flat.dtype}:{tuple(flat.shape)};".encode())
    digest.update(flat.reshape(-1).view(torch.uint8).numpy())
    return "tensor-sha256:" + digest.hexdigest()[:16]


def file_content(path: str | Path) -> str:
    """``sha256:`` + 16 hex digits of a file's bytes: the ``content`` of a row whose image is
    that file (``fdcam evaluate``)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise FdcamError(f"cannot read the image {path}: {error.strerror or error}") from None
    return "sha256:" + digest.hexdigest()[:16]


IDENTITY_KEYS = ("layer", "model", "shard", "step_fraction", "weights")
"""The keys every identity line holds (`results_identity`); a caller's settings add more."""


def check_identity(path: Path, identity: object) -> dict[str, Any]:
    """A file's identity, checked: every key of `IDENTITY_KEYS`, each of its type and range
    (model and weights text, layer text or null, step_fraction in (0, 1] or null, shard
    [i, n] with 0 ≤ i < n); anything else is a one-line `FdcamError` naming the key."""
    def bad(key: str, expected: str) -> FdcamError:
        shown = json.dumps(identity[key]) if isinstance(identity, dict) else ""
        return FdcamError(f"{path}: its identity line has {key} {shown[:60]}; expected "
                          f"{expected} (an edited or damaged line: the file is left as it is)")

    if not isinstance(identity, dict):
        raise FdcamError(f"{path}: its identity line (line 1) is damaged; expected "
                         f"{_MAGIC}{RESULTS_FORMAT} followed by a JSON object")
    missing = [k for k in IDENTITY_KEYS if k not in identity]
    if missing:
        raise FdcamError(f"{path}: its identity line lacks {', '.join(missing)}; expected "
                         f"all of {', '.join(IDENTITY_KEYS)} (an edited or damaged line: the "
                         f"file is left as it is)")
    if not isinstance(identity["model"], str) or not identity["model"]:
        raise bad("model", "a model name")
    if not isinstance(identity["weights"], str) or not identity["weights"]:
        raise bad("weights", "a weights fingerprint such as \"sha256:…\"")
    if identity["layer"] is not None and not isinstance(identity["layer"], str):
        raise bad("layer", "a layer name or null")
    step = identity["step_fraction"]
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | float)
                             or not 0 < step <= 1):
        raise bad("step_fraction", "a number in (0, 1] or null")
    shard = identity["shard"]
    if (not isinstance(shard, list) or len(shard) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
            or not 0 <= shard[0] < shard[1]):
        raise bad("shard", "[i, n] with 0 <= i < n")
    return identity


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


def _identity_line(identity: Mapping[str, Any], version: int = RESULTS_FORMAT) -> str:
    return f"{_MAGIC}{version} " + json.dumps(dict(identity), sort_keys=True) + "\n"


def _escape(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _unescape(text: str) -> str:
    return text[1:] if text.startswith("'") else text


class BadRow(ValueError):
    """A line that is not a valid row; its message says why."""


@dataclass
class ParsedResults:
    """A results file as read: identity, columns, valid rows (Python values), problems."""

    identity: dict[str, Any] | None  # None: format 1 (a file of an older fdcam)
    columns: list[str]
    rows: list[list[Any]]
    problems: list[str]  # "line N: why", one per line that is not a valid row
    clean: bool  # the bytes are exactly what `render_results` writes for (identity, rows)
    version: int = RESULTS_FORMAT  # the file's format (1, 2 or 3)
    duplicates: list[str] = field(default_factory=list)  # "line N: …", a key seen before


def encode_row(columns: Sequence[str], values: Sequence[Any]) -> list[str]:
    """Python values -> the cells written to disk (floats as repr: an exact round-trip)."""
    cells = []
    for column, value in zip(columns, values, strict=True):
        if is_missing(value):
            cells.append("")
        elif column in TEXT_COLUMNS:
            cells.append(_escape(str(value)))
        elif column in FLOAT_COLUMNS:
            cells.append(repr(float(value)))
        elif column in BOOL_COLUMNS:
            cells.append(str(bool(value)))
        else:
            cells.append(str(plain_value(value)))
    return cells


def decode_row(columns: Sequence[str], cells: list[str], escaped: bool) -> list[Any]:
    """Cells of one line -> Python values; `BadRow` when the line is not a valid row."""
    if len(cells) != len(columns):
        raise BadRow(f"{len(cells)} fields, expected {len(columns)}")
    row: dict[str, Any] = {}
    for column, cell in zip(columns, cells, strict=True):
        if column in TEXT_COLUMNS:
            row[column] = (_unescape(cell) if escaped else cell) if cell else None
        elif column == "target":
            if cell and not (cell.isascii() and cell.isdigit()):
                raise BadRow(f"target {cell[:40]!r} is not a class index")
            row[column] = int(cell) if cell else None
        elif column in FLOAT_COLUMNS:
            try:
                value = float(cell) if cell else None
            except ValueError:
                raise BadRow(f"{column} {cell[:40]!r} is not a number") from None
            if value is not None and not math.isfinite(value):
                raise BadRow(f"{column} {cell[:40]!r} is not finite")
            if value is not None and column != "overall" and not 0.0 <= value <= 1.0:
                raise BadRow(f"{column} {cell[:40]!r} is outside [0, 1]")
            row[column] = value
        elif column in BOOL_COLUMNS:
            if cell not in ("", "True", "False"):
                raise BadRow(f"{column} {cell[:40]!r} is not True or False")
            row[column] = {"True": True, "False": False}.get(cell)
    if not row["image"] or not row["method"]:
        raise BadRow("empty image or method")
    measured = [c for c in columns if c in FLOAT_COLUMNS or c in BOOL_COLUMNS]
    if row["error"] is not None:
        if any(row[c] is not None for c in measured):
            raise BadRow("an error row with metric values")
    else:
        if row["target"] is None or row["probability"] is None:
            raise BadRow("a row without error, target or probability")
        if "content" in row and row["content"] is None:
            raise BadRow("a row without error or content")
        curve = [row["insertion"], row["deletion"], row["overall"]]
        if any(v is None for v in curve) and any(v is not None for v in curve):
            raise BadRow("insertion, deletion and overall must be all filled or all empty")
        if curve[0] is not None and curve[2] != curve[0] - curve[1]:
            raise BadRow("overall is not insertion - deletion (a cut number?)")
    return [row[c] for c in columns]


def parse_results(path: Path, data: bytes) -> ParsedResults:
    """Read and check every line of a results file; raise `FdcamError` when it is not one.

    Layout (format 3): line 1 is ``# fdcam-results/3 {identity JSON}``, line 2 the column
    names (with ``content``), then one row per line. Format 2 has no ``content`` column,
    format 1 no identity line either. A line that is not a valid row (torn by a kill, cut,
    garbage, not UTF-8, an impossible metric) becomes a problem and is not counted; a key
    seen before is a duplicate, counted once.
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
    version = 1
    if first is not None and first.startswith(_MAGIC):
        shown, _, payload = first.removeprefix(_MAGIC).partition(" ")
        if shown not in ("2", str(RESULTS_FORMAT)):
            raise FdcamError(f"{path} is a results file of format {shown[:20]!r}; this fdcam "
                             f"reads formats 1 to {RESULTS_FORMAT}: use a matching fdcam "
                             f"or another file")
        version = int(shown)
        try:
            identity = json.loads(payload)
        except ValueError:
            identity = None
        if not isinstance(identity, dict):
            raise FdcamError(f"{path}: its identity line (line 1) is damaged; expected "
                             f"{_MAGIC}{RESULTS_FORMAT} followed by a JSON object")
        position = 1
    headers = [result_columns(p, content=version == RESULTS_FORMAT) for p in (False, True)]
    if version == 1:  # no identity line: an old file, or a newer one whose line 1 was lost
        headers += [result_columns(p) for p in (False, True)]
    try:
        header = text(lines[position]) if len(lines) > position else None
    except UnicodeDecodeError:
        raise refuse(f"line {position + 1} is not UTF-8 text") from None
    try:
        columns = next(csv.reader([header]), []) if header is not None else []
    except csv.Error:
        raise refuse(f"line {position + 1} is not CSV") from None
    if columns not in headers:
        if header is None and (identity is not None or _MAGIC.encode().startswith(torn)
                               or torn.startswith(_MAGIC.encode())
                               or any(",".join(c).encode().startswith(torn)
                                      for c in headers)):
            # killed while the header was written: nothing was ever counted in it
            return ParsedResults(identity, [], [], [], False, version)
        shown = header if header is not None else torn.decode("utf-8", "replace")
        raise refuse(f"line {position + 1} is {shown[:60]!r}, not the results header "
                     f"{','.join(headers[0])}")
    clean = clean and identity is not None and all(not raw.endswith(b"\r") for raw in lines)
    problems: list[str] = []
    duplicates: list[str] = []
    rows: list[list[Any]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for number, raw in enumerate(lines[position + 1:], start=position + 2):
        try:
            cells = next(csv.reader([text(raw)], strict=True), [])
            values = decode_row(columns, cells, escaped=identity is not None)
        except UnicodeDecodeError:
            problems.append(f"line {number}: not UTF-8 text")
            continue
        except (csv.Error, BadRow) as error:
            problems.append(f"line {number}: {error}")
            continue
        key = tuple(values[:3])
        if key in seen:
            index = seen[key]
            earlier_failed = rows[index][-1] is not None
            if earlier_failed and values[-1] is None:  # a success beats an error row
                rows[index] = values
            duplicates.append(f"line {number}: a second row for {key[0]!r}, {key[1]!r}, "
                              f"target {key[2]}")
            continue
        seen[key] = len(rows)
        rows.append(values)
    if torn:
        problems.append(f"line {len(lines) + 1}: incomplete (no line end; a run killed "
                        f"while writing it?)")
    return ParsedResults(identity, columns, rows, problems,
                         clean and not problems and not duplicates, version, duplicates)


def render_results(identity: Mapping[str, Any], columns: Sequence[str],
            rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    # A table without the content column (a format-2 file's, rewritten) stays format 2.
    buffer.write(_identity_line(identity, RESULTS_FORMAT if "content" in columns else 2))
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(encode_row(columns, row) for row in rows)
    return buffer.getvalue()


def report_problems(path: Path, problems: list[str], action: str,
            what: str = "line(s) not counted") -> None:
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        warnings.warn(f"{path}: {len(problems)} {what}, {action}: "
                      f"{'; '.join(problems[:3])}{more}", ResultsWarning, stacklevel=3)



def is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def plain_value(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return value
