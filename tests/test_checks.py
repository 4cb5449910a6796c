"""fdcam.checks: the one parser each for shards, positive ints, devices and writable file names
that the command line, make reproduce, the benchmarks and the runs share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fdcam.checks import (
    check_file_name,
    check_positive_int,
    check_shard,
    parse_positive_int,
    parse_shard,
    resolve_device,
)
from fdcam.errors import FdcamError


def test_shards() -> None:
    assert parse_shard("0/4") == (0, 4)
    assert check_shard([3, 4]) == (3, 4)
    with pytest.raises(FdcamError, match=r"^SHARD i/n needs 0 <= i < n; got 4/4$"):
        parse_shard("4/4", "SHARD")
    with pytest.raises(FdcamError, match=r"^shard must look like i/n \(e\.g\. 0/4\); got 'two'$"):
        parse_shard("two")
    with pytest.raises(FdcamError, match="shard must be \\(i, n\\), two ints"):
        check_shard((0.0, 1))


def test_positive_ints() -> None:
    assert check_positive_int(np.int64(3), "n") == 3
    assert parse_positive_int("5", "--limit") == 5
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(FdcamError, match=r"^n must be a positive int; got "):
            check_positive_int(bad, "n")
    for text in ("0", "x", "-2"):
        with pytest.raises(FdcamError, match=r"^--limit: expected a positive integer"):
            parse_positive_int(text, "--limit")


def test_devices() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(FdcamError, match=r"^device must be 'cpu' or 'cuda'"):
        resolve_device("tpu")


def test_file_names(tmp_path: Path) -> None:
    check_file_name(tmp_path / "new" / "out.png", "--out", "a file name")  # folder made later
    with pytest.raises(FdcamError, match=r"is a folder; expected a file name$"):
        check_file_name(tmp_path, f"--out {tmp_path}", "a file name")
    (tmp_path / "f").write_text("")
    with pytest.raises(FdcamError, match=r"is a file, not a folder"):
        check_file_name(tmp_path / "f" / "out.png", "--out", "a file name")
