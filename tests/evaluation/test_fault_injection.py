"""Issue 12, must-show 2: ``fdcam evaluate`` killed with SIGKILL at random points 20 times,
its results file corrupted between some of the runs (cut mid-row, garbage appended, a row
duplicated), resumed each time: the final table equals an uninterrupted run exactly, with
no row counted twice and none lost.

Each run is a forked child process (so the 20 starts cost no imports) that executes the
real command line, ``fdcam.cli.main(["evaluate", ...])``, on a tiny CNN and fake explainers
that take a few milliseconds per image, so that the kills land anywhere in a run.
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


@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = LoadedModel("tiny", tiny_cnn(), "0", (0.5,) * 3, (0.25,) * 3,
                         ["cat", "dog", "person", "car", "tree"], input_size=(SIZE, SIZE))
    monkeypatch.setattr(evaluation_cli, "load_model", lambda name, **options: loaded)
    fake = types.ModuleType("fdcam.baselines")
    fake.METHODS = ("energy", "corner")  # type: ignore[attr-defined]
    fake.make_explainer = lambda name, model: {  # type: ignore[attr-defined]
        "energy": slow(energy), "corner": slow(corner)}[name]
    fake.batch_options = lambda name, device: {}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fdcam.baselines", fake)
    monkeypatch.setattr(fdcam, "baselines", fake, raising=False)


def command(folder: Path, out: Path) -> list[str]:
    return ["evaluate", "--model", "vgg16", "--images", str(folder), "--methods", "all",
            "--out", str(out), "--batch-size", "64"]


def child(argv: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    import torch

    # A forked child must not use the parent's OpenMP pool (it may hang): one thread, as
    # torch's own DataLoader workers do.
    torch.set_num_threads(1)
    from fdcam.cli import main

    os._exit(main(argv))


def killed_run(argv: list[str], after: float) -> int | None:
    """Run the command in a forked child and SIGKILL it after `after` seconds (if still
    running); its exit code, or None when it was killed."""
    process = multiprocessing.get_context("fork").Process(target=child, args=(argv,))
    process.start()
    process.join(after)
    if process.is_alive():
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        return None
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


def test_sigkill_corruption_and_resume_give_the_uninterrupted_table(
        tmp_path: Path, fake_cli: None) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(g.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
            folder / f"=img{i:02d}.png")  # a formula-like name, escaped in the file
    reference = tmp_path / "reference.csv"
    from fdcam.cli import check_model_arguments

    check_model_arguments("vgg16", None, None, None)  # imports torchvision once, here

    start = time.perf_counter()
    # Generous limits: a busy machine may be many times slower; nothing here is timed.
    assert killed_run(command(folder, reference), 600.0) == 0
    duration = time.perf_counter() - start  # kills are drawn over a whole run's length
    expected = read_results(reference)
    assert len(expected) == 2 * IMAGES

    start = time.perf_counter()
    assert killed_run(command(folder, reference), 600.0) == 0  # nothing left to do
    startup = time.perf_counter() - start
    per_row = max(duration - startup, 0.01) / len(expected)

    out = tmp_path / "resumed.csv"
    rng = random.Random(12)
    outcomes, rows_after = [], []
    for kill in range(KILLS):
        lines = out.read_bytes().count(b"\n") - 2 if out.exists() else 0
        if kill % 3 == 1 or lines >= len(expected):  # corrupt some runs, and a finished file
            corrupt(out, rng.choice(["cut mid-row", "garbage", "duplicate"]), rng)
            lines = out.read_bytes().count(b"\n") - 2 if out.exists() else 0
        # a random point in what is left of this run: its start, or any of its rows
        left = max(len(expected) - lines, 1)
        after = rng.uniform(0.5, 1.0) * startup + rng.uniform(0, left) * per_row
        outcomes.append(killed_run(command(folder, out), after))
        rows_after.append(out.read_bytes().count(b"\n") - 2 if out.exists() else 0)
    assert outcomes.count(None) >= KILLS // 2  # most runs really were killed mid-way
    assert max(rows_after) > 0  # ... and some after rows had been written
    assert killed_run(command(folder, out), 600.0) == 0  # the last run completes

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
