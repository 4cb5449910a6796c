"""The one repository-root constant: where the committed data (``data/``) and the book live.

`REPO_ROOT` is the folder above the package, as in a source checkout or an editable
install; the paper's pipeline (`fdcam.paper`), the evaluation's label files and the scripts
find ``data/`` through it.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
