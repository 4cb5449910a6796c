"""Issue 12, must-show 2: ``fdcam evaluate`` killed with SIGKILL at random points 20 times,
its results file corrupted between some of the runs (cut mid-row, garbage appended, a row
duplicated), resumed each time: the final table equals an uninterrupted run exactly, with
no row counted twice and none lost.

Each run is a child process that executes the real command line,
``fdcam.cli.main(["evaluate", ...])``, on a tiny CNN and fake explainers that take a few
milliseconds per image, so that the kills land anywhere in a run. The children are forked by
multiprocessing's fork server, a single-threaded process that has imported torch and fdcam
once (so the 20 starts cost no imports) and has never run a torch operation: forking pytest,
whose earlier tests have started torch's OpenMP threads, can leave a child deadlocked on a
lock one of those threads held (a CI run failed here, then ran out of its 5,400 s).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import Tensor

import fdcam
from fdcam.evaluation import cli as evaluation_cli
from fdcam.evaluation.results_file import read_results
from fdcam.explanation import Explanation
from fdcam.models import LoadedModel
from tests.evaluation.test_runner import SIZE, corner, energy, tiny_cnn

IMAGES = 12
KILLS = 20


def slow(explainer):  # type: ignore[no-untyped-def]
    def run(x: Tensor, target: Tensor) -> Explanation:
        time.sleep(0.01)  # rows come at a steady pace, so random kills fall between any
        return explainer(x, target)
    return run


def install_fakes() -> None:
    """In the child: the command line loads the tiny CNN and knows the two fake methods."""
    loaded = LoadedModel("tiny", tiny_cnn(), "0", (0.5,) * 3, (0.25,) * 3,
                         ["cat", "dog", "person", "car", "tree"], input_size=(SIZE, SIZE))
    evaluation_cli.load_model = lambda name, **options: loaded  # type: ignore[assignment]
    fake = types.ModuleType("fdcam.baselines")
    fake.METHODS = ("energy", "corner")  # type: ignore[attr-defined]
    fake.make_explainer = lambda name, model: {  # type: ignore[attr-defined]
        "energy": slow(energy), "corner": slow(corner)}[name]
    fake.batch_options = lambda name, device: {}  # type: ignore[attr-defined]
    sys.modules["fdcam.baselines"] = fake
    fdcam.baselines = fake  # type: ignore[attr-defined]


def command(folder: Path, out: Path) -> list[str]:
    return ["evaluate", "--model", "vgg16", "--images", str(folder), "--methods", "all",
            "--out", str(out), "--batch-size", "64"]


def child(argv: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    torch.set_num_threads(1)  # as in the paper runs' one-thread workers; steady row times
    install_fakes()
    from fdcam.cli import main

    os._exit(main(argv))


_SERVER = multiprocessing.get_context("forkserver")
# The server imports what a child needs once (this module itself it cannot: Python 3.11's
# server ignores sys.path; each child imports it, cheaply, with these already loaded).
_SERVER.set_forkserver_preload(["torchvision.models", "fdcam.cli", "fdcam.models",
                                "fdcam.evaluation.cli", "fdcam.explanation", "pandas", "PIL.Image"])


LIMIT = 300.0  # a run still going after this long has hung: the test fails, it never waits


def data_rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 2 if path.exists() else 0


def killed_run(argv: list[str], out: Path, *, rows: int | None = None,
               delay: float | None = None) -> int | None:
    """Run the command in a child of the fork server and SIGKILL it `delay` seconds after
    `out` holds `rows` data lines, or `delay` seconds after its start when `rows` is None;
    with neither, let it finish. Its exit code, or None when the kill ended it.

    Kills in a run's body are placed by its progress, not by a forecast of its timing, so
    that they land mid-run however fast or busy the machine is.
    """
    process = _SERVER.Process(target=child, args=(argv,))
    start = time.monotonic()
    process.start()
    armed = start if rows is None and delay is not None else None
    while process.is_alive():
        now = time.monotonic()
        if armed is None and rows is not None and data_rows(out) >= rows:
            armed = now
        if armed is not None and delay is not None and now >= armed + delay:
            process.kill()  # a child that ended a moment ago is not an error
            process.join()
            return None if process.exitcode == -signal.SIGKILL else process.exitcode
        if now > start + LIMIT:
            process.kill()
            process.join()
            pytest.fail(f"a run of `fdcam {' '.join(argv)}` did not end in {LIMIT:.0f} s")
        process.join(0.001)
    return process.exitcode


def corrupt(path: Path, how: str, rng: random.Random) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    if how == "cut mid-row" and len(lines) > 3:
        row = rng.randrange(2, len(lines) - 1)  # a data line
        start = sum(len(line) + 1 for line in lines[:row])
        path.write_bytes(data[:start + rng.randrange(1, max(2, len(lines[row])))])
    elif how == "garbage":
        path.write_bytes(data + rng.choice([b"garbage\n", b"\xff\xfe\x00junk", b"a,b\n",
                                            b'"unterminated,1,2\n']))
    elif how == "duplicate" and len(lines) > 3:
        path.write_bytes(data + lines[2] + b"\n")


def test_sigkill_corruption_and_resume_give_the_uninterrupted_table(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(g.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
            folder / f"=img{i:02d}.png")  # a formula-like name, escaped in the file
    reference = tmp_path / "reference.csv"
    assert killed_run(command(folder, reference), reference) == 0
    expected = read_results(reference)
    assert len(expected) == 2 * IMAGES
    begun = time.monotonic()
    assert killed_run(command(folder, reference), reference) == 0  # nothing left to do
    startup = time.monotonic() - begun  # a run's start: the child, the file's check and lock

    out = tmp_path / "resumed.csv"
    rng = random.Random(12)
    outcomes, rows_after = [], []
    for kill in range(KILLS):
        if kill % 3 == 1 or data_rows(out) >= len(expected):  # corrupt some runs, and a
            corrupt(out, rng.choice(["cut mid-row", "garbage", "duplicate"]), rng)  # full file
        # a random point of this run: during its start (by time), or a little after any of the
        # rows it has still to write (up to about one explainer call: in it or the writes)
        now = max(data_rows(out), 0)
        if rng.random() < 0.3:
            outcome = killed_run(command(folder, out), out, delay=rng.uniform(0, startup))
        else:
            outcome = killed_run(command(folder, out), out, delay=rng.uniform(0, 0.012),
                                 rows=now + rng.randrange(1, max(len(expected) - now, 2)))
        outcomes.append(outcome)
        rows_after.append(data_rows(out))
    assert outcomes.count(None) >= KILLS // 2  # most runs really were killed mid-way
    assert max(rows_after) > 0  # ... and some after rows had been written
    assert killed_run(command(folder, out), out) == 0  # the last run completes

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file: every line a valid row, read once
        final = read_results(out)
    assert not final.duplicated(["image", "method", "target"]).any()

    def by_key(df: pd.DataFrame) -> pd.DataFrame:
        return df.sort_values(["image", "method", "target"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(by_key(final), by_key(expected))
    assert final["image"].str.startswith("=img").all()
    torch.testing.assert_close(torch.tensor(by_key(final)["insertion"].to_numpy()),
                               torch.tensor(by_key(expected)["insertion"].to_numpy()),
                               rtol=0, atol=0)
