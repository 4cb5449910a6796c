"""Executing the book's notebooks: parameters checked first, one line when anything fails.

`make notebooks` (and `make reproduce`'s notebooks step) run every
``notebooks/NN_*.ipynb`` through papermill with this module::

    python -m scripts.notebooks --into book -p profile offline [-p NAME VALUE ...] [NOTEBOOK ...]

What it adds to plain papermill:

* a parameter that none of the notebooks declares is refused before anything runs (papermill
  would only warn and inject it); each notebook receives the parameters it declares;
* every notebook checks its parameters in the cell right after them (`check_parameters`,
  or `fdcam.paper.setups.setup`), so a bad value stops the run there, and `FdcamError`
  shows in the notebook as its one line (`fdcam.errors`);
* a failed notebook is reported in one line — notebook, cell, error — and leaves the
  previously executed copy in place; its partial output is kept for reading in the scratch
  folder (``--scratch``, ``$FDCAM_PAPERMILL_SCRATCH``, or a new temporary folder: never
  inside the repository);
* a file that is not a notebook is refused in one line;
* an executed notebook already in the output folder that was executed under another
  profile (the published book's, say) is not replaced unless ``--replace`` is given: the
  run is refused, before anything runs, in one line naming both profiles;
* each notebook's wall time is printed;
* the executed copy is made ready for the book (`prepare_for_book`): the parameters cell
  and papermill's injected-parameters cell are tagged ``remove-cell`` (the book hides them,
  nbval still runs them), and papermill's record of the run names paths relative to the
  repository, not the machine that ran it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fdcam.errors import FdcamError
from fdcam.paper.parameters import PARAMETER_CHECKS, check_parameters
from fdcam.paths import REPO_ROOT

ROOT = REPO_ROOT
"""The repository (the package is installed editable)."""
SOURCES = ROOT / "notebooks"
SCRATCH_VARIABLE = "FDCAM_PAPERMILL_SCRATCH"
"""Environment variable naming the folder papermill writes to (default: a new temporary
folder per run, outside the repository); a failed notebook's partial output stays there."""
KERNEL = "python3"


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value: a Python literal (3, 0.5, None, True, ['a', 'b']) if it
    reads as one, else the string itself (``-p profile offline``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# -------------------------------------------------------------------------------- running


def sources(folder: Path = SOURCES) -> list[Path]:
    """``NN_*.ipynb`` in `folder`, in name order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(source: Path) -> list[str]:
    """The names in `source`'s cell tagged ``parameters`` (papermill's inspection); a file
    that is not a notebook is a one-line `FdcamError`."""
    import papermill

    try:
        return list(papermill.inspect_notebook(str(source)))
    except Exception as error:  # NotJSONError, a missing key, an unreadable file, …
        raise FdcamError(f"{source} is not a Jupyter notebook papermill can read "
                         f"({type(error).__name__}: {_first_line(str(error))})") from None


def scratch_folder(scratch: Path | None = None) -> Path:
    """Where papermill writes before a notebook replaces its target: `scratch`, else
    ``$FDCAM_PAPERMILL_SCRATCH``, else a new temporary folder (never inside the
    repository, which may be read-only or shared)."""
    if scratch is not None:
        return Path(scratch)
    if os.environ.get(SCRATCH_VARIABLE):
        return Path(os.environ[SCRATCH_VARIABLE])
    return Path(tempfile.mkdtemp(prefix="fdcam-papermill-"))


def split_parameters(notebooks: Sequence[Path],
                     parameters: Mapping[str, Any]) -> dict[Path, dict[str, Any]]:
    """Each notebook's share of `parameters` (those it declares). A name that none of the
    notebooks declares is a one-line `FdcamError`, before any of them runs."""
    return _split({source: declared_parameters(source) for source in notebooks}, parameters)


def _split(declared: Mapping[Path, list[str]],
           parameters: Mapping[str, Any]) -> dict[Path, dict[str, Any]]:
    notebooks = list(declared)
    known = {name for names in declared.values() for name in names}
    unknown = [name for name in parameters if name not in known]
    if unknown:
        which = notebooks[0].name if len(notebooks) == 1 else "any of the notebooks"
        raise FdcamError(f"unknown parameter {unknown[0]!r}: not declared by {which}; "
                         f"declared: {', '.join(sorted(known))}")
    return {source: {k: v for k, v in parameters.items() if k in declared[source]}
            for source in notebooks}


def execute(source: Path, target: Path, parameters: Mapping[str, Any],
            scratch: Path | None = None) -> float:
    """papermill `source` → `target` with `parameters`; returns the seconds it took.

    The kernel is ``python3`` of this environment, the working directory `target`'s
    folder, no progress bar. The output goes to `scratch` first and replaces `target` only
    when every cell ran, so a failure leaves the previous `target` as it was; it raises a
    one-line `FdcamError` naming the notebook, the cell and the error. `scratch`: see
    `scratch_folder`.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    scratch = scratch_folder(scratch)
    try:
        scratch.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FdcamError(f"cannot create the scratch folder {scratch}: "
                         f"{error.strerror or error}") from None
    written = scratch / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")  # python3 = this environment's
    logging.getLogger("papermill").setLevel(logging.ERROR)
    start = time.perf_counter()
    try:
        with _quiet_kernel_warning():
            papermill.execute_notebook(str(source), str(written), parameters=dict(parameters),
                                       kernel_name=KERNEL, cwd=str(target.parent),
                                       progress_bar=False, log_output=False)
    except PapermillExecutionError as error:
        raise FdcamError(f"{source.name} stopped in cell [{error.exec_count}]: "
                         f"{error.ename}: {_first_line(error.evalue)} (its output: "
                         f"{written})") from None
    except Exception as error:  # the kernel died, a bad notebook file, …
        raise FdcamError(f"{source.name} did not run: {type(error).__name__}: "
                         f"{_first_line(str(error))}") from None
    prepare_for_book(written, target)
    shutil.move(str(written), str(target))
    return time.perf_counter() - start


HIDDEN_TAGS = {"parameters": "remove-cell", "injected-parameters": "remove-cell"}
"""Cells tagged with a key get the value's tag too: plumbing that the book does not show.
(The source notebooks tag their own check, import and nbval-only cells.)"""


def prepare_for_book(path: Path, target: Path | None = None) -> None:
    """Rewrite an executed notebook in place for the book: `HIDDEN_TAGS`, and machine paths
    out of papermill's metadata (``input_path``, and ``output_path`` = `target` if given,
    relative to the repository; path parameters under the repository relative to it, under
    the home folder as ``~``; no environment variables)."""
    import nbformat

    notebook = nbformat.read(str(path), as_version=4)
    for cell in notebook.cells:
        tags = list(cell.metadata.get("tags", []))
        for tag, hidden in HIDDEN_TAGS.items():
            if tag in tags and hidden not in tags:
                tags.append(hidden)
        if tags:
            cell.metadata["tags"] = tags
    record = notebook.metadata.get("papermill")
    if isinstance(record, dict):
        if target is not None:
            record["output_path"] = str(target)
        for key in ("input_path", "output_path"):
            if isinstance(record.get(key), str):
                record[key] = portable_path(record[key])
        for group in ("parameters", "default_parameters"):
            values = record.get(group)
            if isinstance(values, dict):
                record[group] = {k: portable_path(v) if isinstance(v, str) else v
                                 for k, v in values.items()}
        record.pop("environment_variables", None)
    nbformat.write(notebook, str(path))


def portable_path(value: str) -> str:
    """`value` without this machine in it: a path inside the repository relative to it, a
    path under the home folder as ``~/…``, a temporary file's as its name; other text as
    it is."""
    if not value.startswith(("/", "~")) and "\\" not in value:
        return value
    path = Path(value).expanduser()
    for base, shown in ((ROOT, ""), (Path.home(), "~/")):
        try:
            return shown + str(path.resolve().relative_to(base.resolve()))
        except (ValueError, OSError):
            continue
    temporary = Path(tempfile.gettempdir()).resolve()
    if path.resolve().is_relative_to(temporary):
        return path.name
    return value


# ipykernel ≥ 7 warns on every local kernel start; it says nothing about the notebook.
_KERNEL_WARNING = "Kernel is running over TCP without encryption"


@contextlib.contextmanager
def _quiet_kernel_warning() -> Iterator[None]:
    """The kernel inherits file descriptor 2: catch what it and papermill write there and
    pass it on, less ipykernel's transport warning."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if _KERNEL_WARNING not in line:
                    sys.stderr.write(line)
            sys.stderr.flush()


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:300]


def executed_profile(path: Path) -> str | None:
    """The ``profile`` parameter an executed notebook was run with (papermill's record in
    its metadata), or None when `path` is missing, unreadable or carries no record."""
    import json

    try:
        record = json.loads(path.read_text(encoding="utf-8"))["metadata"]["papermill"]
        profile = record["parameters"]["profile"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return profile if isinstance(profile, str) else None


def _check_not_replacing(shares: Mapping[Path, Mapping[str, Any]], into: Path,
                         declared: Mapping[Path, list[str]]) -> None:
    """Refuse to overwrite a notebook in `into` that was executed under another profile."""
    for source, share in shares.items():
        if "profile" not in declared[source]:
            continue
        old = executed_profile(into / source.name)
        new = share.get("profile", "offline")
        if old is not None and old != new:
            raise FdcamError(
                f"{_shown(into / source.name)} holds the {old} profile's execution; executing "
                f"it with profile {new} would replace it: pass --replace (make notebooks "
                f"REPLACE=1), or write elsewhere (--into DIR, make notebooks NOTEBOOK_DIR=DIR)")


def run(notebooks: Sequence[Path], into: Path, parameters: Mapping[str, Any],
        scratch: Path | None = None, *, replace: bool = False) -> dict[str, float]:
    """Execute `notebooks` in order into the folder `into`; stops at the first failure
    (a one-line `FdcamError`). A notebook in `into` executed under another profile is
    replaced only with `replace`. Returns each notebook's seconds."""
    if not notebooks:
        raise FdcamError(f"no notebooks to run; expected NN_*.ipynb files in {SOURCES}")
    if into.exists() and not into.is_dir():
        raise FdcamError(f"--into {into} is a file; expected a folder for the executed "
                         f"notebooks (it is made if missing)")
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        raise FdcamError(f"notebook {missing[0]} does not exist")
    declared = {source: declared_parameters(source) for source in notebooks}
    shares = _split(declared, parameters)
    for source, share in shares.items():  # the values too, before anything runs
        check_parameters(**{k: v for k, v in share.items() if k in PARAMETER_CHECKS})
        if share.get("profile") == "paper" and "imagenet_val" in declared[source]:
            from fdcam.paper.disk_setups import check_paper_paths

            check_paper_paths(share.get("imagenet_val"), share.get("voc_root"),
                              share.get("voc_checkpoint"), bool(share.get("dry_run")))
    if not replace:
        _check_not_replacing(shares, into, declared)
    seconds = {}
    scratch = scratch_folder(scratch)  # one folder for the whole run
    for source, share in shares.items():
        shown = " ".join(f"{k}={v!r}" for k, v in share.items())
        print(f"papermill {_shown(source)} -> {_shown(into / source.name)} ({shown})",
              flush=True)
        seconds[source.name] = execute(source, into / source.name, share, scratch)
        print(f"  {seconds[source.name]:.0f} s", flush=True)
    print(f"{len(seconds)} notebook(s) in {sum(seconds.values()):.0f} s", flush=True)
    return seconds


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.notebooks",
        description="Execute the book's notebooks with papermill (default: all of "
                    "notebooks/NN_*.ipynb, in order).")
    parser.add_argument("notebooks", nargs="*", type=Path, help="source notebooks")
    parser.add_argument("--into", type=Path, default=ROOT / "book",
                        help="output folder, also the working directory (default book/)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="a papermill parameter; VALUE is read as a Python literal "
                             "where it is one (3, None, True, ['a', 'b']), else as text")
    parser.add_argument("--scratch", type=Path, default=None,
                        help=f"where papermill writes first (default ${SCRATCH_VARIABLE}, "
                             f"else a new temporary folder)")
    parser.add_argument("--replace", action="store_true",
                        help="replace executed notebooks of another profile in --into")
    args = parser.parse_args(argv)
    parameters = {name: parse_value(value) for name, value in args.parameter}
    try:
        run(args.notebooks or sources(), args.into, parameters, args.scratch,
            replace=args.replace)
    except FdcamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished notebooks are in place, the one running was "
              "left as it was", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
