"""Writing files so that a failure cannot lose what was there: every write checked, a
replacement written whole and fsynced before an atomic rename, symlinks followed."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from fdcam.errors import FdcamError


def resolved(path: str | os.PathLike[str]) -> Path:
    """`path` with every symlink followed (a dangling link: the path it points to), so that
    the file a link names is written, never the link replaced by a plain file."""
    return Path(os.path.realpath(path))


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written: a short write (a full disk, a signal) is
    continued, and a write that makes no progress raises `OSError`."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(28, "no progress writing (disk full?)")
        view = view[written:]


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_file(path: Path, data: bytes, *,
                 before_rename: Callable[[int, Path], None] | None = None,
                 keep_open: bool = False) -> int | None:
    """Replace `path` by `data` atomically: a temporary file beside it is written whole
    (`write_all`) and fsynced, then renamed over `path`, keeping its permissions. Any
    failure (a full disk, a read-only folder, a kill) leaves `path` as it was and is one
    `FdcamError` line. `before_rename(fd, tmp)` runs on the new file first (e.g. to lock
    it); `keep_open`: its fd is returned open, else it is closed (None)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o666)
    except OSError as error:
        raise FdcamError(f"cannot write {path}: no file can be made in {path.parent} "
                         f"({error.strerror or error}); {path} is unchanged") from None
    try:
        if before_rename is not None:
            before_rename(fd, tmp)
        with contextlib.suppress(OSError):  # the replaced file's permissions, if any
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        write_all(fd, data)
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError):
            raise FdcamError(f"cannot write {path}: {error.strerror or error}; {path} is "
                             f"unchanged") from None
        raise
    _fsync_folder(path.parent)
    if keep_open:
        return fd
    os.close(fd)
    return None
