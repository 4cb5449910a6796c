"""Reading, writing and merging results files safely.

* a run with another identity (model, weights, layer, settings, shard) is refused in one
  line, and so is a file that is not a results file, a file whose identity line is
  incomplete or edited (`check_identity`), and a file of rows without an identity line —
  before anything is written to it;
* a row is reused only for the image content it was made from (its ``content`` cell): the
  rows of an image whose content changed are removed and made again;
* one writer at a time: the run holds an exclusive ``fcntl`` lock on the file (POSIX); a
  second run on the same file stops with one line;
* every write is checked: a rewrite (repairs, ``retry_failed``, changed content,
  `merge_results` via `write_table`) goes to a temporary file that is written whole and
  fsynced before an atomic rename, so a kill, a full disk or a read-only folder leaves the
  old file byte for byte (and one line); an append that fails is cut back to the last
  complete row;
* a symlink is followed: its target is what is read, locked and replaced.

Read a file with `read_results` (or ``pandas.read_csv(path, skiprows=1)``); `merge_results`
joins the shards of a sharded run into the table an unsharded run gives; `upgrade_results`
binds the rows of a format-2 file to their images' content, once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fdcam.checks import check_file_name
from fdcam.errors import FdcamError
from fdcam.files import replace_file, resolved, write_all

try:  # the lock that keeps a second writer off a results file (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
from fdcam.evaluation.results import (
    BOOL_COLUMNS,
    FLOAT_COLUMNS,
    IDENTITY_ATTR,
    KEY,
    RESULTS_FORMAT,
    TEXT_COLUMNS,
    BadRow,
    ParsedResults,
    ResultsWarning,
    check_identity,
    decode_row,
    encode_row,
    is_missing,
    parse_results,
    plain_value,
    render_results,
    report_problems,
    result_columns,
)

UPGRADE_HINT = ("upgrade it once with the images its rows were made from: fdcam evaluate "
                "… --upgrade (the same --images), or "
                "fdcam.evaluation.runner.upgrade_results(path, images); the book's "
                "files: python -m scripts.sample_evaluation --upgrade")


def check_writable_folder(path: Path) -> None:
    """One line when `path` cannot be a file: it is a folder, or a file is in its way."""
    check_file_name(path, str(path), f"a results file name (e.g. {path / 'results.csv'})")
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


def open_locked(path: Path) -> int:
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


def replace_locked(path: Path, text: str, old_fd: int | None) -> int:
    """Write `text` to a locked temporary file and rename it over `path` (`replace_file`);
    returns the new file's locked fd (the old one is closed only on success)."""
    fd = replace_file(path, text.encode("utf-8"), before_rename=_lock, keep_open=True)
    assert fd is not None
    if old_fd is not None:
        os.close(old_fd)  # releases the lock on the replaced file
    return fd


def refuse_foreign_file(path: Path) -> None:
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
        parse_results(path, b"\n".join(upto[:2]) + b"\n")


def row_problem(columns: Sequence[str], row: Sequence[Any]) -> str | None:
    """Why `row` would not read back as a valid row (NaN, a probability outside [0, 1], …),
    or None: what `evaluate` writes is checked by the reader's own rules first."""
    try:
        decode_row(columns, encode_row(columns, row), escaped=True)
    except BadRow as error:
        return str(error)
    return None


@dataclass
class ResultsFile:
    """The CSV on disk, locked while a run appends to it, and the rows it already holds."""

    path: Path
    columns: list[str]
    identity: dict[str, Any]
    retry_failed: bool
    rows: list[list[Any]] = field(default_factory=list)
    done: set[tuple[str, str, int]] = field(default_factory=set)
    any_row: set[tuple[str, str]] = field(default_factory=set)
    image_failed: set[tuple[str, str]] = field(default_factory=set)  # error before targets
    errors: set[str] = field(default_factory=set)
    contents: dict[str, set[str | None]] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # images whose rows were remade
    fd: int | None = None

    def __enter__(self) -> ResultsFile:
        self.path = resolved(self.path)
        check_writable_folder(self.path)
        refuse_foreign_file(self.path)  # a foreign file is refused before it is opened to write
        fd = open_locked(self.path)
        try:
            with os.fdopen(os.dup(fd), "rb") as reader:
                parsed = parse_results(self.path, reader.read())
            rows = self._adopt(parsed)
            if (not parsed.clean or len(rows) != len(parsed.rows)
                    or parsed.identity != self.identity or parsed.columns != self.columns
                    or parsed.version != RESULTS_FORMAT):
                text = render_results(self.identity, self.columns, rows)
                fd = replace_locked(self.path, text, fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._reset(rows)
        return self

    def _reset(self, rows: list[list[Any]]) -> None:
        self.rows = []
        for collection in (self.done, self.any_row, self.image_failed, self.errors,
                           self.contents):
            collection.clear()
        for values in rows:
            self._remember(values)

    def _adopt(self, parsed: ParsedResults) -> list[list[Any]]:
        """Check the file's identity against this run's; the rows to keep."""
        held = bool(parsed.rows or parsed.problems or parsed.duplicates)
        if parsed.identity is None and held:
            raise FdcamError(f"{self.path} holds rows but no identity line (line 1: "
                             f"# fdcam-results/…; a file of an old fdcam, or one a "
                             f"spreadsheet or pandas rewrote): its rows cannot be matched to "
                             f"a model and weights, so they are not adopted; use another "
                             f"output file")
        if parsed.version != RESULTS_FORMAT and held:
            raise FdcamError(f"{self.path} is a format-{parsed.version} results file: its "
                             f"rows do not record their images' content, so resuming could "
                             f"reuse rows of other pixels; {UPGRADE_HINT}")
        if held and parsed.columns != self.columns:
            raise FdcamError(f"{self.path} has columns {', '.join(parsed.columns)}; this run "
                             f"writes {', '.join(self.columns)} (boxes given in one run only?)"
                             f"; use another output file")
        if parsed.identity is None:  # empty, or only a header: nothing to adopt
            return []
        old = check_identity(self.path, parsed.identity)
        extra = sorted(set(old) - set(self.identity))
        lacking = sorted(set(self.identity) - set(old))
        if extra or lacking:
            which = (f"a key this run does not have ({extra[0]})" if extra else
                     f"no {lacking[0]}, which this run has")
            raise FdcamError(f"{self.path}: its identity line has {which}; its rows come "
                             f"from other settings (or the line was edited): use another "
                             f"output file")
        for key, value in old.items():
            if key != "shard" and self.identity[key] != value:
                raise FdcamError(f"{self.path} holds rows of {key} {_shown(value)}; this run "
                                 f"has {key} {_shown(self.identity[key])}: use another output "
                                 f"file")
        if old["shard"] != self.identity["shard"] and old["shard"][1] != 1:
            raise FdcamError(f"{self.path} holds shard {old['shard'][0]}/{old['shard'][1]}; "
                             f"this run is shard {self.identity['shard'][0]}/"
                             f"{self.identity['shard'][1]}: one file per shard")
        # An unsharded file keeps its shard: rows of one shard in it are still a subset of
        # the full run.
        self.identity = {**self.identity, "shard": old["shard"]}
        rows = parsed.rows
        report_problems(self.path, parsed.problems, "they will be recomputed")
        report_problems(self.path, parsed.duplicates, "removed (the first one is kept)",
                        "duplicated row(s)")
        if self.retry_failed:
            rows = [r for r in rows if r[-1] is None]
        return rows

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
        self.fd = None
        if len(self.changed) > 1:
            warnings.warn(f"{self.path}: the rows of {len(self.changed)} images in all were "
                          f"made from other content and were recomputed (first: "
                          f"{self.changed[0]!r})", ResultsWarning, stacklevel=2)

    def bind(self, image: str, content: str | None) -> None:
        """Keep only the rows of `image` made from `content`: rows made from other pixels
        (another file under the same name, an edited photo) are removed now, reported,
        and so made again."""
        held = self.contents.get(image)
        if held is None or held == {content}:
            return
        index = self.columns.index("content")
        kept = [r for r in self.rows if r[0] != image or r[index] == content]
        if not self.changed:
            warnings.warn(f"{self.path}: the rows of image {image!r} were made from other "
                          f"content (another file under this name?); they are recomputed",
                          ResultsWarning, stacklevel=3)
        self.changed.append(image)
        assert self.fd is not None
        self.fd = replace_locked(self.path, render_results(self.identity, self.columns, kept),
                                 self.fd)
        self._reset(kept)

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
        """Append `rows` in one checked write; a write that fails (a full disk) is cut back
        to the file's previous end, so no torn row is left, and is one line."""
        assert self.fd is not None
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(
            encode_row(self.columns, row) for row in rows)
        end = os.fstat(self.fd).st_size
        try:
            write_all(self.fd, buffer.getvalue().encode("utf-8"))  # a method's rows together
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, end)
            raise FdcamError(f"cannot append to {self.path}: {error.strerror or error}; the "
                             f"rows written before are kept (rerun to resume)") from None
        for row in rows:
            self._remember(row)

    def _remember(self, row: Sequence[Any]) -> None:
        image, method, target = str(row[0]), str(row[1]), row[2]
        self.rows.append(list(row))
        self.any_row.add((image, method))
        self.contents.setdefault(image, set()).add(row[-2])
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


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Write a results table (e.g. `merge_results`) atomically, under the file's lock.

    Its identity is ``df.attrs[IDENTITY_ATTR]`` (set by `read_results`/`merge_results`).
    """
    path = resolved(path)
    check_writable_folder(path)
    refuse_foreign_file(path)
    identity = dict(df.attrs.get(IDENTITY_ATTR) or {})
    columns = list(df.columns)
    rows = [[None if is_missing(v) else plain_value(v) for v in row]
            for row in df.itertuples(index=False)]
    fd = open_locked(path)
    try:
        fd = replace_locked(path, render_results(identity, columns, rows), fd)
    finally:
        os.close(fd)




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
                         f"fdcam evaluate")
    parsed = parse_results(path, data)
    report_problems(path, parsed.problems, "left out")
    report_problems(path, parsed.duplicates, "counted once", "duplicated row(s)")
    columns = parsed.columns or result_columns(False)
    raw = pd.DataFrame([_raw_cells(columns, row) for row in parsed.rows], columns=columns,
                       dtype=str)
    df = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        cells = raw[column]
        if column == "target":
            df[column] = pd.array([int(c) if c else pd.NA for c in cells], dtype="Int64")
        elif column in FLOAT_COLUMNS:
            df[column] = [float(c) if c else math.nan for c in cells]  # exact round-trip
        elif column in BOOL_COLUMNS:
            df[column] = pd.array([{"True": True, "False": False}.get(c, pd.NA)
                                   for c in cells], dtype="boolean")
        else:
            df[column] = cells.where(cells != "", None) if column == "error" else cells
    df.attrs[IDENTITY_ATTR] = dict(parsed.identity or {})
    return df


def _raw_cells(columns: Sequence[str], values: Sequence[Any]) -> list[str]:
    """Values as unescaped text cells (what a format-1 file held), for the typed columns."""
    return ["" if v is None else (str(v) if c in TEXT_COLUMNS else cell)
            for c, v, cell in zip(columns, values, encode_row(columns, values), strict=True)]


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
