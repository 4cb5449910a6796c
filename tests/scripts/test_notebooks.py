"""scripts.notebooks: parameters checked in one line, papermill failures in one line, the old
executed copy kept; and every source notebook checks all of its parameters up front."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from fdcam.errors import FdcamError
from fdcam.paper.parameters import check_parameters
from scripts import notebooks
from scripts.notebooks import parse_value

ROOT = Path(__file__).resolve().parents[2]


def _notebook(path: Path, parameters: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(cell) for cell in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


# ----------------------------------------------------------------------------- parameters


def test_good_parameters_come_back_checked() -> None:
    got = check_parameters(profile="offline", device="cpu", seed=0, photo="chelsea",
                           theta=0.05, bias=0.5, dry_run=False, n_images=None, threads=1,
                           fig4_photos=["camera", "chelsea"])
    assert got["theta"] == 0.05 and got["fig4_photos"] == ["camera", "chelsea"]
    assert check_parameters(profile="paper", dry_run=True)["dry_run"] is True


@pytest.mark.parametrize(("parameters", "message"), [
    ({"profile": "gpu"}, "unknown profile 'gpu'; expected one of offline, imagenet-sample, "
                         "paper, smoke"),
    ({"photo": "tiger"}, "unknown photo 'tiger'; expected one of camera, coffee, chelsea"),
    ({"theta": 5}, "theta must be a number in (0, 1]; got 5"),
    ({"theta": "0.05"}, "theta must be a number in (0, 1]; got '0.05'"),
    ({"bias": float("nan")}, "bias must be a finite number; got nan"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"n_images": 0}, "n_images must be an int >= 1 (or None); got 0"),
    ({"device": "gpu"}, "device must be 'cpu' or 'cuda'"),
    ({"dry_run": "yes"}, "dry_run must be True or False; got 'yes'"),
    ({"profile": "offline", "dry_run": True}, "dry_run applies to the paper profile only"),
    ({"fig4_photos": "camera"}, "fig4_photos must be a non-empty list"),
    ({"fig4_photos": ["camera", "moon"]}, "fig4_photos: unknown 'moon'"),
    ({"fig1_photos": ["coffee", "coffee"]}, "fig1_photos must not repeat a name"),
    ({"colour": "red"}, "check_parameters has no check for 'colour'"),
])
def test_a_bad_parameter_is_one_line_naming_it(parameters: dict[str, object],
                                               message: str) -> None:
    with pytest.raises(FdcamError) as caught:
        check_parameters(**parameters)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_values_from_the_command_line() -> None:
    assert parse_value("offline") == "offline"
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5
    assert parse_value("None") is None and parse_value("True") is True
    assert parse_value("['camera', 'coffee']") == ["camera", "coffee"]
    assert parse_value("/data/ILSVRC2012/val") == "/data/ILSVRC2012/val"


def test_fdcam_error_shows_as_one_line_in_ipython() -> None:
    assert FdcamError("theta must be …")._render_traceback_() == [
        "FdcamError: theta must be …"]


# ---------------------------------------------------------------------------------- running


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path: Path) -> None:
    source = _notebook(tmp_path / "01_a.ipynb", 'profile = "offline"', "raise SystemExit")
    with pytest.raises(FdcamError, match=r"^unknown parameter 'profle': not declared by "
                                         r"01_a\.ipynb; declared: profile$"):
        notebooks.run([source], tmp_path / "out", {"profle": "paper"}, tmp_path / "scratch")
    with pytest.raises(FdcamError, match=r"^unknown profile 'gpu'"):  # values too
        notebooks.run([source], tmp_path / "out", {"profile": "gpu"}, tmp_path / "scratch")
    assert not (tmp_path / "out").exists()


def test_missing_paper_paths_are_refused_before_anything_runs(tmp_path: Path) -> None:
    source = _notebook(tmp_path / "05_e.ipynb",
                       'profile = "offline"\nimagenet_val = None\nvoc_root = None\n'
                       'voc_checkpoint = None\ndry_run = False', "raise SystemExit")
    with pytest.raises(FdcamError, match=r"^the paper profile needs imagenet_val: the "
                                         r"ILSVRC2012 val folder"):
        notebooks.run([source], tmp_path / "out", {"profile": "paper"}, tmp_path / "scratch")
    with pytest.raises(FdcamError, match=r"^imagenet_val .*nope is not a folder; expected"):
        notebooks.run([source], tmp_path / "out",
                      {"profile": "paper", "imagenet_val": str(tmp_path / "nope")},
                      tmp_path / "scratch")
    assert not (tmp_path / "out").exists()


def test_each_notebook_gets_the_parameters_it_declares(tmp_path: Path) -> None:
    first = _notebook(tmp_path / "01_a.ipynb", 'profile = "offline"', "print(profile)")
    second = _notebook(tmp_path / "02_b.ipynb", 'profile = "offline"\nn_images = None',
                       "print(profile, n_images)")
    shares = notebooks.split_parameters([first, second], {"profile": "smoke", "n_images": 2})
    assert shares == {first: {"profile": "smoke"}, second: {"profile": "smoke", "n_images": 2}}
    seconds = notebooks.run([first, second], tmp_path / "out",
                            {"profile": "smoke", "n_images": 2}, tmp_path / "scratch")
    assert list(seconds) == ["01_a.ipynb", "02_b.ipynb"]
    executed = nbformat.read(tmp_path / "out" / "02_b.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "smoke 2\n"


def test_a_bad_value_stops_in_the_checking_cell_in_one_line(tmp_path: Path) -> None:
    source = _notebook(
        tmp_path / "03_c.ipynb", 'profile = "offline"\ntheta = 0.05',
        "from fdcam.paper.parameters import check_parameters\n\n"
        "check_parameters(profile=profile, theta=theta)",
        "print('never')")
    out = tmp_path / "out"
    out.mkdir()
    (out / "03_c.ipynb").write_text("the previous executed copy")
    with pytest.raises(FdcamError) as caught:
        # without `run`'s checks up front: cell [3] (after papermill's injected parameters)
        notebooks.execute(source, out / "03_c.ipynb", {"theta": 2.0}, tmp_path / "scratch")
    message = str(caught.value)
    assert "\n" not in message
    assert re.match(r"^03_c\.ipynb stopped in cell \[3\]: FdcamError: theta must be a number "
                    r"in \(0, 1\]; got 2\.0 \(its output: .*03_c\.ipynb\)$", message), message
    assert (out / "03_c.ipynb").read_text() == "the previous executed copy"
    partial = nbformat.read(tmp_path / "scratch" / "03_c.ipynb", as_version=4)
    errors = [o for c in partial.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert [e["traceback"] for e in errors] == [
        ["FdcamError: theta must be a number in (0, 1]; got 2.0"]]


def test_command_line_error_is_one_line(tmp_path: Path) -> None:
    source = _notebook(tmp_path / "01_a.ipynb", 'profile = "offline"', "pass")
    done = subprocess.run(
        [sys.executable, "-m", "scripts.notebooks", str(source), "--into", str(tmp_path / "o"),
         "-p", "profile", "offline", "-p", "imagenet_val", "/data"],
        capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: unknown parameter 'imagenet_val': not declared by 01_a.ipynb; declared: "
        "profile"]


def test_command_line_run_prints_the_notebooks_and_no_kernel_chatter(tmp_path: Path) -> None:
    source = _notebook(tmp_path / "01_a.ipynb", 'profile = "offline"',
                       "import sys\nprint('from the kernel', file=sys.stderr)")
    done = subprocess.run(
        [sys.executable, "-m", "scripts.notebooks", str(source), "--into", str(tmp_path / "o"),
         "-p", "profile", "smoke"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "without encryption" not in done.stderr
    assert "01_a.ipynb" in done.stdout and "1 notebook(s) in" in done.stdout
    assert (tmp_path / "o" / "01_a.ipynb").is_file()


# ------------------------------------------------------------------- the book's notebooks


def test_every_source_notebook_checks_all_its_parameters_first() -> None:
    """The cell after the parameters hands every parameter to a checking call, so a bad
    papermill value stops there (not in cell 12), and ``dry_run`` exists everywhere (the
    dry run of `make reproduce` executes every chapter)."""
    sources = notebooks.sources(ROOT / "notebooks")
    assert len(sources) == 8  # chapters 01-07 and the summary (08)
    for source in sources:
        nb = nbformat.read(source, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), source.name
        declared = notebooks.declared_parameters(source)
        assert {"profile", "device", "seed", "dry_run"} <= set(declared), source.name
        check = code[1].source
        assert "check_parameters(" in check or "setups.setup(" in check, source.name
        for name in declared:
            assert re.search(rf"(\(|\b{name}=){name}\b", check), f"{source.name}: {name} unchecked"


# ----------------------------------------------------------------------------- issue 12


@pytest.mark.parametrize("content", [b"not json at all", b"\x89PNG\r\n\x1a\n\x00", b"{}"])
def test_a_file_that_is_not_a_notebook_is_one_line(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "01_bad.ipynb"
    source.write_bytes(content)
    with pytest.raises(FdcamError, match=r"^.*01_bad\.ipynb is not a Jupyter notebook "
                                         r"papermill can read \(\w+: .*\)$") as caught:
        notebooks.run([source], tmp_path / "out", {}, tmp_path / "scratch")
    assert "\n" not in str(caught.value)
    assert notebooks.main(["--into", str(tmp_path / "out"), str(source)]) == 2


def test_the_scratch_folder_is_outside_the_repository(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(notebooks.SCRATCH_VARIABLE, raising=False)
    first, second = notebooks.scratch_folder(), notebooks.scratch_folder()
    assert first != second and first.is_dir()
    assert notebooks.ROOT not in first.resolve().parents
    monkeypatch.setenv(notebooks.SCRATCH_VARIABLE, str(tmp_path / "mine"))
    assert notebooks.scratch_folder() == tmp_path / "mine"
    assert notebooks.scratch_folder(tmp_path / "given") == tmp_path / "given"
    first.rmdir()
    second.rmdir()


def test_another_profiles_execution_is_not_replaced_without_asking(tmp_path: Path) -> None:
    source = _notebook(tmp_path / "05_e.ipynb", 'profile = "offline"', "print(profile)")
    out = tmp_path / "book"
    notebooks.run([source], out, {"profile": "smoke"}, tmp_path / "scratch")
    assert notebooks.executed_profile(out / "05_e.ipynb") == "smoke"
    published = (out / "05_e.ipynb").read_bytes()
    with pytest.raises(FdcamError, match=r"05_e\.ipynb holds the smoke profile's execution; "
                                         r"executing it with profile offline would replace "
                                         r"it: pass --replace"):
        notebooks.run([source], out, {"profile": "offline"}, tmp_path / "scratch")
    assert (out / "05_e.ipynb").read_bytes() == published
    notebooks.run([source], out, {"profile": "smoke"}, tmp_path / "scratch")  # same: fine
    notebooks.run([source], out, {"profile": "offline"}, tmp_path / "scratch", replace=True)
    assert notebooks.executed_profile(out / "05_e.ipynb") == "offline"


def test_into_an_existing_file_is_one_line(tmp_path: Path) -> None:
    from scripts.notebooks import main

    existing = tmp_path / "book.txt"
    existing.write_text("not a folder")
    with pytest.raises(FdcamError, match=r"--into .*book.txt is a file; expected a folder"):
        notebooks.run([tmp_path / "01_x.ipynb"], existing, {})
    assert main(["--into", str(existing), str(tmp_path / "01_x.ipynb")]) == 2
    assert existing.read_text() == "not a folder"
