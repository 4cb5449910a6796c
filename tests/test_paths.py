"""Where the package reads and writes: what the library reads ships inside the package (a
non-editable install has no data/ folder), and the results folder is the user's choice."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import fdcam.paths as paths
from fdcam.evaluation.imagenet import IMAGENET_WNIDS_FILE, PAPER_MANIFEST_FILE
from fdcam.evaluation.photos import BOOK_OFFLINE_PHOTOS_FILE, OFFLINE_PHOTOS_FILE

ROOT = Path(__file__).resolve().parent.parent


def test_the_library_reads_its_files_from_inside_the_package() -> None:
    for file in (IMAGENET_WNIDS_FILE, PAPER_MANIFEST_FILE, OFFLINE_PHOTOS_FILE):
        assert file.parent == ROOT / "fdcam" / "data", file
        assert file.is_file(), file


def test_every_file_of_the_package_data_folder_is_declared_package_data() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["fdcam"]
    present = sorted(f"data/{p.name}" for p in (ROOT / "fdcam" / "data").iterdir())
    assert present == sorted(d for d in declared if d.startswith("data/"))


@pytest.mark.parametrize(("book_copy", "package_copy"), [
    (BOOK_OFFLINE_PHOTOS_FILE, OFFLINE_PHOTOS_FILE),
    (ROOT / "data" / "imagenet_val_manifest.txt", PAPER_MANIFEST_FILE),
])
def test_the_books_copies_equal_the_package_data(book_copy: Path, package_copy: Path) -> None:
    assert book_copy == ROOT / "data" / package_copy.name
    assert book_copy.read_bytes() == package_copy.read_bytes()


def test_in_a_checkout_results_go_to_data_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.RESULTS_ENV, raising=False)
    assert paths.in_checkout()
    assert paths.results_root() == ROOT / "data" / "results"
    assert paths.from_base("data/x") == ROOT / "data" / "x"


def test_fdcam_results_chooses_the_results_folder(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv(paths.RESULTS_ENV, str(tmp_path / "mine"))
    assert paths.results_root() == tmp_path / "mine"
    monkeypatch.setenv(paths.RESULTS_ENV, "relative/results")
    assert paths.results_root() == ROOT / "relative" / "results"


def test_installed_paths_start_at_the_working_directory(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """As in site-packages: the folder above the package has no pyproject.toml and data/."""
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(paths, "REPO_ROOT", site_packages)
    monkeypatch.setattr(paths, "DATA_DIR", site_packages / "data")
    monkeypatch.delenv(paths.RESULTS_ENV, raising=False)
    monkeypatch.chdir(work)
    assert not paths.in_checkout()
    assert paths.results_root() == work / "fdcam-results"
    assert paths.from_base("runs/a") == work / "runs" / "a"
    monkeypatch.setenv(paths.RESULTS_ENV, "mine")
    assert paths.results_root() == work / "mine"
