"""`scripts/check_imports.py` finds a private name imported across modules and an import cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.check_imports import ROOT, analyse, main


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _package(root: Path) -> None:
    """pkg.a takes a private name from pkg.b; pkg.c and pkg.sub.d import each other, d lazily."""
    _write(root, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import _helper, public\n",
        "pkg/b.py": "def _helper():\n    pass\n\n\ndef public():\n    pass\n",
        "pkg/c.py": "from pkg.sub import d\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "def f():\n    from pkg import c\n    return c\n",
        "pkg/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        "pkg/f.py": "from . import b\n\nb.public()\n",
    })


def test_reports_the_private_import_and_the_cycle(tmp_path: Path, capsys) -> None:
    _package(tmp_path)
    private, cycles = analyse(tmp_path, ["pkg"])
    assert [(p.module, p.source, p.name, p.line) for p in private] == [
        ("pkg.a", "pkg.b", "_helper", 1)]
    assert cycles == [["pkg.c", "pkg.sub.d", "pkg.c"]]
    assert main(["--root", str(tmp_path), "pkg"]) == 1
    out = capsys.readouterr().out
    assert "pkg.a uses pkg.b._helper" in out
    assert "cycle: pkg.c -> pkg.sub.d -> pkg.c" in out


def test_attribute_access_through_a_module_alias_counts(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/b.py": "_x = 1\n",
        "pkg/g.py": "from pkg import b\n\nprint(b._x)\n",
    })
    private, cycles = analyse(tmp_path, ["pkg"])
    assert [(p.module, p.source, p.name) for p in private] == [("pkg.g", "pkg.b", "_x")]
    assert cycles == []


def test_a_clean_package_exits_zero(tmp_path: Path) -> None:
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/b.py": "from pkg.c import x\n",
                      "pkg/c.py": "x = 1\n"})
    assert main(["--root", str(tmp_path), "pkg"]) == 0


def test_runs_as_a_module(tmp_path: Path) -> None:
    _package(tmp_path)
    result = subprocess.run([sys.executable, "-m", "scripts.check_imports", "--root",
                             str(tmp_path), "pkg"], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 1, result.stderr
    assert "1 private name(s) imported across modules, 1 import cycle(s)" in result.stdout
