"""Where the package finds the files it reads, and where the book writes its results.

* `PACKAGE_DATA_DIR` (``fdcam/data/``) ships inside the wheel: the files the library reads at
  run time (the ImageNet WordNet ids, the offline photos' classes, the paper's ILSVRC val
  manifest). A non-editable install has nothing else.
* `REPO_ROOT` and `DATA_DIR` (``data/``) exist in a source checkout or an editable install
  only: the paper's tables, the downloads and the committed result rows of the book.
* `results_root()`: the default home of the results the book's pipeline writes:
  ``$FDCAM_RESULTS`` when set, else ``data/results/`` in a checkout, else
  ``./fdcam-results/`` under the working directory (an installed package must not write
  into site-packages).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "data"
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
RESULTS_ENV = "FDCAM_RESULTS"
INSTALLED_RESULTS_DIR = "fdcam-results"


def in_checkout() -> bool:
    """Whether the package runs from a source checkout (or an editable install of one), not
    from site-packages: the folder above it holds the project's pyproject.toml and data/."""
    return (REPO_ROOT / "pyproject.toml").is_file() and DATA_DIR.is_dir()


def base_dir() -> Path:
    """The folder that relative paths of the pipeline start from: the repository root in a
    checkout (the book's paths read the same from any working directory), else the working
    directory."""
    return REPO_ROOT if in_checkout() else Path.cwd()


def from_base(path: str | Path) -> Path:
    """`path` with ``~`` expanded; a relative one starts at `base_dir()`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else base_dir() / path


def results_root() -> Path:
    """The default folder of the pipeline's results: ``$FDCAM_RESULTS`` (relative paths start
    at `base_dir()`), else ``data/results`` in a checkout, else ``./fdcam-results``."""
    chosen = os.environ.get(RESULTS_ENV, "").strip()
    if chosen:
        return from_base(chosen)
    return DATA_DIR / "results" if in_checkout() else Path.cwd() / INSTALLED_RESULTS_DIR
