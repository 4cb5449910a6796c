"""The results file under abuse (issue 12): identity, lock, row checks, foreign files,
shard merges and spreadsheet formulas — each case ends in one line or the right table."""

from __future__ import annotations

import csv
import fcntl
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from fdcam.errors import FdcamError
from fdcam.evaluation.results import IDENTITY_ATTR, ResultsWarning, result_columns
from fdcam.evaluation.results_file import merge_results, read_results, write_table
from tests.evaluation.test_runner import corner, factories, make_images, run

LEGACY_HEADER = ",".join(result_columns(False, content=False))  # formats 1 and 2
HEADER = ",".join(result_columns(False))


def full_run(tmp_path: Path, n: int = 3) -> tuple[Path, pd.DataFrame]:
    path = tmp_path / "full.csv"
    run(make_images(n), path)
    return path, read_results(path)


def by_key(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in key order: a resumed file holds the recomputed rows at its end."""
    return df.sort_values(["image", "method", "target"], kind="stable").reset_index(drop=True)


def data_lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)[2:]


# ------------------------------------------------------------------------- the identity line


def test_the_first_line_identifies_the_run(tmp_path: Path) -> None:
    path, df = full_run(tmp_path)
    first, header = path.read_text().splitlines()[:2]
    assert first.startswith("# fdcam-results/3 {")
    identity = json.loads(first.split(" ", 2)[2])
    assert set(identity) == {"model", "weights", "layer", "step_fraction", "shard"}
    assert identity["model"] == "Sequential" and identity["shard"] == [0, 1]
    assert identity["step_fraction"] == 0.1 and identity["weights"].startswith("sha256:")
    assert header == HEADER
    assert df.attrs[IDENTITY_ATTR] == identity
    # pandas reads it as a plain CSV after the identity line
    assert len(pd.read_csv(path, skiprows=1)) == len(df)


def test_another_model_layer_step_or_shard_is_refused(tmp_path: Path) -> None:
    import torch

    path, _ = full_run(tmp_path)
    before = path.read_bytes()
    from tests.evaluation.test_runner import FAST, METHODS, evaluate, tiny_cnn

    other = tiny_cnn()
    with torch.no_grad():
        other[-1].bias.add_(1)  # same architecture, other weights
    with pytest.raises(FdcamError, match=r"holds rows of weights .*this run has weights"):
        evaluate(make_images(3), METHODS, other, path, **FAST)
    with pytest.raises(FdcamError, match=r"^.*holds rows of layer null; this run has layer "
                                         r"'_blocks.14': use another output file$"):
        run(make_images(3), path, settings={"layer": "_blocks.14"})
    with pytest.raises(FdcamError, match=r"holds rows of step_fraction 0\.1; this run has "
                                         r"step_fraction 0\.2"):
        run(make_images(3), path, step_fraction=0.2)
    run(make_images(3), tmp_path / "s.csv", shard=(0, 2))
    with pytest.raises(FdcamError, match="holds shard 0/2; this run is shard 1/2"):
        run(make_images(3), tmp_path / "s.csv", shard=(1, 2))
    assert path.read_bytes() == before


def test_a_file_without_identity_is_read_but_never_adopted(tmp_path: Path) -> None:
    """Issue 22: rows without an identity line (an old fdcam's, or a pandas round trip that
    dropped line 1) cannot be matched to a model and weights: read, but refused by a run."""
    path, df = full_run(tmp_path)
    legacy = tmp_path / "legacy.csv"
    legacy.write_text("".join([LEGACY_HEADER + "\r\n", *(
        line.replace("\n", "\r\n").replace(",tensor-sha256:", ",").rsplit(",", 2)[0]
        + ",\r\n" for line in data_lines(path))]))
    old = read_results(legacy)
    assert old.attrs[IDENTITY_ATTR] == {}
    pd.testing.assert_frame_equal(old, df.drop(columns="content"))
    before = legacy.read_bytes()
    with pytest.raises(FdcamError, match=r"holds rows but no identity line .* not adopted"):
        run(make_images(3), legacy)
    assert legacy.read_bytes() == before
    roundtrip = tmp_path / "roundtrip.csv"  # what pandas writes back: no line 1
    read_results(path).to_csv(roundtrip, index=False)
    with pytest.raises(FdcamError, match="holds rows but no identity line"):
        run(make_images(3), roundtrip)


# ------------------------------------------------------------------------- foreign files


@pytest.mark.parametrize(("name", "content"), [
    ("notes.txt", b"my notes, line one\nthe second line of my notes\n"),
    ("notes2.txt", b"no line end at all"),
    ("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 2),
    ("image.csv", b"image,label\ncat.png,3\n"),
])
def test_an_existing_foreign_file_is_refused_untouched(tmp_path: Path, name: str,
                                                       content: bytes) -> None:
    out = tmp_path / name
    out.write_bytes(content)
    with pytest.raises(FdcamError, match=r"is not an fdcam results file .*refusing to touch"):
        run(make_images(1), out)
    assert out.read_bytes() == content
    with pytest.raises(FdcamError, match="is not an fdcam results file"):
        read_results(out)
    assert out.read_bytes() == content


def test_out_under_a_file_or_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(FdcamError, match=r"cannot write .*plain/sub/r\.csv: .*plain is a "
                                         r"file, not a folder"):
        run(make_images(1), tmp_path / "plain" / "sub" / "r.csv")
    with pytest.raises(FdcamError, match="is a folder; expected a results file name"):
        run(make_images(1), tmp_path)
    with pytest.raises(FdcamError, match="is a folder; expected a CSV file"):
        read_results(tmp_path)


# ------------------------------------------------------------------------------ the lock


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    path, _ = full_run(tmp_path)
    before = path.read_bytes()
    with path.open("rb") as other:  # another process's open file, as far as flock goes
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FdcamError, match=r"is being written by another process .*wait "
                                             r"for it to end or use another file$"):
            run(make_images(4), path)
    assert path.read_bytes() == before
    run(make_images(4), path)  # lock released: the run goes on
    assert len(read_results(path)) == 8


# ------------------------------------------------------------------------- malformed rows


def corrupt(path: Path, line: int, replacement: str | bytes | None) -> None:
    data = path.read_bytes().split(b"\n")
    if replacement is None:
        del data[line]
    else:
        data[line] = replacement.encode() if isinstance(replacement, str) else replacement
    path.write_bytes(b"\n".join(data))


@pytest.mark.parametrize(("case", "edit"), [
    ("middle row cut to 4 fields", lambda p: corrupt(p, 3, b",".join(
        p.read_bytes().split(b"\n")[3].split(b",")[:4]))),
    ("middle row cut inside a number", lambda p: corrupt(p, 3, b",".join(
        f[:-3] if i == 6 else f for i, f in enumerate(p.read_bytes().split(b"\n")[3]
                                                      .split(b","))))),
    ("garbage appended", lambda p: p.write_bytes(p.read_bytes() + b"garbage\n")),
    ("too many fields", lambda p: p.write_bytes(p.read_bytes() + b"a,b,c,d,e,f,g,h,i,j\n")),
    ("not a number", lambda p: corrupt(p, 4, "img01,energy,2,zero,0.1,0.1,0.0,")),
    ("not UTF-8", lambda p: corrupt(p, 4, b"img01,\xff\xfe,2,0.5,0.1,0.1,0.0,")),
    ("error row with metrics", lambda p: corrupt(p, 4, "img01,energy,2,0.5,,,,boom")),
    ("cut inside a quoted id", lambda p: p.write_bytes(p.read_bytes() + b'"img, with a com')),
    ("torn last row", lambda p: p.write_bytes(p.read_bytes()[:-20])),
    ("a row written twice", lambda p: p.write_bytes(p.read_bytes() + b"\n".join(
        p.read_bytes().split(b"\n")[2:4]) + b"\n")),
])
def test_a_malformed_line_is_reported_never_counted_and_recomputed(
        tmp_path: Path, case: str, edit) -> None:  # type: ignore[no-untyped-def]
    path, full = full_run(tmp_path)
    edit(path)
    twice = case == "a row written twice"
    with pytest.warns(ResultsWarning, match=r"duplicated row\(s\), counted once: line \d+"
                      if twice else r"line\(s\) not counted, left out: line \d+"):
        partial = read_results(path)
    assert not partial.duplicated(["image", "method", "target"]).any()
    assert len(partial) <= len(full)
    with pytest.warns(ResultsWarning, match="removed" if twice else "they will be recomputed"):
        run(make_images(3), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file is clean again
        pd.testing.assert_frame_equal(by_key(read_results(path)), by_key(full))


def test_an_empty_file_is_one_line_to_read_and_new_to_evaluate(tmp_path: Path) -> None:
    path, _ = full_run(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(FdcamError, match="is empty; expected the lines written by"):
        read_results(empty)
    run(make_images(3), empty)
    assert empty.read_bytes() == path.read_bytes()
    torn_header = tmp_path / "torn.csv"
    torn_header.write_text(LEGACY_HEADER[:10])  # an older fdcam killed during the header
    run(make_images(3), torn_header)
    assert torn_header.read_bytes() == path.read_bytes()


def test_a_damaged_identity_line_or_newer_format_is_one_line(tmp_path: Path) -> None:
    path, _ = full_run(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("# fdcam-results/2 {not json\n" + "".join(lines[1:]))
    with pytest.raises(FdcamError, match=r"identity line \(line 1\) is damaged"):
        read_results(path)
    path.write_text("# fdcam-results/9 {}\n" + "".join(lines[1:]))
    with pytest.raises(FdcamError, match="format '9'; this fdcam reads formats 1 to 3"):
        run(make_images(3), path)


# ------------------------------------------------------------------------ spreadsheet formulas


def test_formula_cells_are_escaped_and_read_back_as_written(tmp_path: Path) -> None:
    images = make_images(6)
    ids = ["=HYPERLINK(\"http://x\",\"y\")", "+1", "-2", "@SUM(A1)", "'quoted", "plain"]
    renamed = [(new, x) for new, (_, x) in zip(ids, images, strict=True)]
    path = tmp_path / "r.csv"
    run(renamed, path, methods=factories(corner=corner))
    with path.open(newline="") as handle:
        cells = [row[0] for row in list(csv.reader(handle))[2:]]
    assert cells == ["'" + i for i in ids[:5]] + ["plain"]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    assert read_results(path)["image"].tolist() == ids
    run(renamed, path, methods=factories(corner=corner))  # resumes: ids match after reading
    assert len(read_results(path)) == 6


def test_an_id_with_a_line_break_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(FdcamError, match="contains a line break; ids must be one line"):
        run([("a\nb", make_images(1)[0][1])], tmp_path / "r.csv")


# ------------------------------------------------------------------------------ shard merges


def shards(tmp_path: Path, count: int) -> list[Path]:
    paths = [tmp_path / f"part{i}of{count}.csv" for i in range(count)]
    for i, path in enumerate(paths):
        run(make_images(6), path, shard=(i, count))
    return paths


def test_merge_checks_shard_sets_and_identity(tmp_path: Path) -> None:
    _, full = full_run(tmp_path, 6)
    three = shards(tmp_path, 3)
    merged = merge_results(three)
    pd.testing.assert_frame_equal(merged, by_key(full))
    assert merged.attrs[IDENTITY_ATTR]["shard"] == [0, 1]
    with pytest.raises(FdcamError, match=r"shard 1/3 is missing \(given: 0/3, 2/3\); a merge "
                                         r"needs all 3 shards"):
        merge_results([three[0], three[2]])
    two = shards(tmp_path, 2)
    with pytest.raises(FdcamError, match=r"part0of2.csv is a shard of 2 but .*part1of3.csv a "
                                         r"shard of 3"):
        merge_results([two[0], three[1], three[0], three[2]])
    other = tmp_path / "other.csv"
    run(make_images(6), other, step_fraction=0.2)
    with pytest.raises(FdcamError, match=r"holds rows of step_fraction 0\.2 but .* of "
                                         r"step_fraction 0\.1: not parts of one run"):
        merge_results([*three, other])
    # the merged table keeps its identity on disk, and a resumed run accepts it
    main = tmp_path / "main.csv"
    write_table(merged, main)
    assert read_results(main).attrs[IDENTITY_ATTR] == merged.attrs[IDENTITY_ATTR]
    run(make_images(6), main)
    pd.testing.assert_frame_equal(read_results(main), by_key(full))
