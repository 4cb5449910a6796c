"""Reading, writing and merging results files safely.

* a run with another identity (model, weights, layer, settings, shard) is refused in one
  line, and so is a file that is not a results file — before anything is written to it;
* one writer at a time: the run holds an exclusive ``fcntl`` lock on the file (POSIX); a
  second run on the same file stops with one line;
* rewrites (repairs, ``retry_failed``, `merge_results` via `_write_table`) go through a
  temporary file and an atomic rename, so a kill leaves the old or the new file.

Read a file with `read_results` (or ``pandas.read_csv(path, skiprows=1)``); `merge_results`
joins the shards of a sharded run into the table an unsharded run gives.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from fdcam.checks import check_file_name
from fdcam.errors import FdcamError

try:  # the lock that keeps a second writer off a results file (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
from fdcam.evaluation.results import (
    _BOOL_COLUMNS,
    _FLOAT_COLUMNS,
    _TEXT_COLUMNS,
    IDENTITY_ATTR,
    KEY,
    _encode,
    _missing,
    _parse,
    _Parsed,
    _plain,
    _render,
    _report,
    result_columns,
)


def _check_writable_folder(path: Path) -> None:
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
