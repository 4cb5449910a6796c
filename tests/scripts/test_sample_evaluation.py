"""scripts.sample_evaluation: the recomputation check of the committed imagenet-sample rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdcam.errors import FdcamError
from fdcam.evaluation.results import result_columns
from fdcam.paper import settings
from scripts import sample_evaluation

HEADER = ",".join(result_columns(False, content=False))


def test_verify_matches_photos_by_stem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "RESULTS_ROOT", tmp_path)
    committed = tmp_path / "imagenet-sample" / "_blocks.14" / "faithfulness.csv"
    committed.parent.mkdir(parents=True)
    committed.write_text(f"{HEADER}\nn01_tench,fdcam,0,0.9,0.5,0.2,0.3,\n"
                         f"n02_goldfish,fdcam,1,0.8,0.6,0.1,0.5,\n")
    fresh = tmp_path / "fresh.csv"
    # The layer to compare with is the one the recomputed file records.
    identity = '# fdcam-results/2 {"layer": "_blocks.14", "model": "efficientnet-lite0"}'
    fresh.write_text(f"{identity}\n{HEADER}\n"
                     f"n01_tench.JPEG,fdcam,0,0.9,0.50001,0.2,{0.50001 - 0.2!r},\n")
    table = sample_evaluation.verify(fresh)
    assert table.loc["fdcam", "rows"] == 1
    assert table.loc["fdcam", "insertion"] == pytest.approx(1e-5)
    assert table.loc["fdcam", "deletion"] == 0
    fresh.write_text(f"{identity}\n{HEADER}\nother.JPEG,fdcam,0,0.9,0.5,0.2,0.3,\n")
    with pytest.raises(FdcamError, match=r"no row of .* matches a committed row"):
        sample_evaluation.verify(fresh)


def test_drop_rows_deletes_only_the_named_methods_and_keeps_the_identity(tmp_path: Path) -> None:
    from fdcam.evaluation.results_file import read_results

    csv = tmp_path / "_blocks.14" / "faithfulness.csv"
    csv.parent.mkdir(parents=True)
    identity = '# fdcam-results/2 {"layer": "_blocks.14", "model": "efficientnet-lite0"}'
    csv.write_text(f"{identity}\n{HEADER}\nn01_tench,fdcam,0,0.9,0.5,0.2,0.3,\n"
                   f"n01_tench,fdcam-g-off,0,0.9,0.4,0.2,0.2,\n"
                   f"n01_tench,gradcam,0,0.9,0.6,0.1,0.5,\n")
    assert sample_evaluation.drop_rows(["fdcam*"], tmp_path) == {csv: 2}
    assert csv.read_text().splitlines()[0] == identity
    assert read_results(csv)["method"].tolist() == ["gradcam"]
    assert sample_evaluation.drop_rows(["fdcam*"], tmp_path) == {}


def test_a_killed_runs_heartbeat_is_logged_by_the_next_run(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    # A heartbeat written, then its process killed before it could log its line.
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    (tmp_path / f"wall_time.{child.pid}.running").write_text("2,1700000000.0,125,1,cpu\n")
    # A heartbeat of a run still alive (this process) is left alone.
    with sample_evaluation.Heartbeat(tmp_path, 4, 1, "cpu") as beat:
        assert beat.path.exists()
        assert sample_evaluation.Heartbeat.recover(tmp_path) == 1
        assert beat.path.exists()
    assert not beat.path.exists()  # a run that ends removes its heartbeat
    lines = (tmp_path / "wall_time.csv").read_text().splitlines()
    assert lines[0] == sample_evaluation.WALL_TIME_HEADER
    assert lines[1].startswith("2,2023-11-14T22:13:20Z,125,False,1,cpu,")
    assert lines[1].endswith(f",{sample_evaluation.stage_subject(2)},")  # paused: unknown
    assert sample_evaluation.stage_subject(2) == f"efficientnet-lite0 at {settings.SAMPLE_LAYER}"
    assert len(lines) == 2
    assert not list(tmp_path.glob("*.running"))


def test_a_heartbeat_another_run_recovers_first_is_logged_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two runs started together (stages 1 and 6 on a core each) both find a killed run's
    # heartbeat; the one that claims it second must neither crash nor log it again.
    (tmp_path / "wall_time.999999.running").write_text("2,1700000000.0,125,1,cpu\n")

    claimed: list[int] = []

    def another_run_claims_it(pid: int) -> bool:
        if not claimed:  # the other run gets there between this one's look and its claim
            claimed.append(0)
            claimed[0] = sample_evaluation.Heartbeat.recover(tmp_path)
        return False

    monkeypatch.setattr(sample_evaluation, "_alive", another_run_claims_it)
    assert sample_evaluation.Heartbeat.recover(tmp_path) == 0
    assert claimed == [1]
    lines = (tmp_path / "wall_time.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("2,2023-11-14T22:13:20Z,125,False,")
    assert not list(tmp_path.glob("*.running*"))


@pytest.mark.skipif(sample_evaluation.fcntl is None, reason="no advisory locks here")
def test_concurrent_runs_append_one_header_and_whole_lines(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        pool.starmap(_log_many, [(tmp_path, stage) for stage in (1, 2, 3, 4)])
    lines = (tmp_path / "wall_time.csv").read_text().splitlines()
    assert lines[0].startswith("stage,") and len(lines) == 1 + 4 * 50
    assert sum(line.startswith("stage,") for line in lines) == 1
    assert all(len(line.split(",")) == 9 for line in lines)


def _log_many(folder: Path, stage: int) -> None:
    for _ in range(50):
        sample_evaluation.log_time(folder, stage, 1700000000.0, 1.0, 1, "cpu")


def test_time_a_run_spent_stopped_is_paused_not_running(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock the test moves: the heartbeat's thread wakes every 5 s (one wake 1 s late:
    # not a pause), then the run is stopped for 300 s (SIGSTOP; its next wake comes that
    # late), then runs on.
    clock = {"wall": 1000.0, "mono": 50.0}
    monkeypatch.setattr(sample_evaluation.time, "time", lambda: clock["wall"])
    monkeypatch.setattr(sample_evaluation.time, "monotonic", lambda: clock["mono"])
    beat = sample_evaluation.Heartbeat(tmp_path, 1, 1, "cpu")

    def advance(seconds: float) -> None:
        clock["wall"] += seconds
        clock["mono"] += seconds
        beat._tick()

    for _ in range(12):
        advance(5.0)
    advance(6.0)
    assert beat.path.exists() and beat.paused == 0  # written at 60 s; 1 s late is no pause
    advance(5.0 + 300.0)
    for _ in range(4):
        advance(5.0)
    assert beat.paused == pytest.approx(300.0)
    assert beat.seconds() == pytest.approx(12 * 5 + 6 + 305 + 4 * 5 - 300)
    fields = beat.path.read_text().strip().split(",")
    assert fields[2] == "71" and fields[5] == "300"  # written at the late wake (376 s - 305)
    # A run killed meanwhile: the next run logs its running seconds and the pause.
    monkeypatch.setattr(sample_evaluation, "_alive", lambda pid: False)
    assert sample_evaluation.Heartbeat.recover(tmp_path) == 1
    line = (tmp_path / "wall_time.csv").read_text().splitlines()[1].split(",")
    assert line[2] == "71" and line[8] == "300"


def test_a_log_with_an_older_header_gets_todays(tmp_path: Path) -> None:
    old = "stage,started_utc,seconds,finished,threads,device,cpus,subject"
    (tmp_path / "wall_time.csv").write_text(old + "\n1,2026-01-01T00:00:00Z,5,True,1,cpu,2,m\n")
    sample_evaluation.log_time(tmp_path, 2, 1700000000.0, 7.0, 1, "cpu", paused=3.0)
    lines = (tmp_path / "wall_time.csv").read_text().splitlines()
    assert lines[0] == sample_evaluation.WALL_TIME_HEADER
    assert lines[1] == "1,2026-01-01T00:00:00Z,5,True,1,cpu,2,m"  # kept: paused unknown
    assert lines[2].startswith("2,2023-11-14T22:13:20Z,7,True,") and lines[2].endswith(",3")
    import pandas as pd
    assert pd.read_csv(tmp_path / "wall_time.csv")["paused"].tolist()[1] == 3


def test_a_heartbeat_claimed_by_a_run_killed_before_it_logged_it_is_logged_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wall_time.111.running.claimed-222").write_text("2,1700000000.0,125,1,cpu,0\n")
    alive = {222}
    monkeypatch.setattr(sample_evaluation, "_alive", lambda pid: pid in alive)
    assert sample_evaluation.Heartbeat.recover(tmp_path) == 0  # its claimant still runs
    alive.clear()
    assert sample_evaluation.Heartbeat.recover(tmp_path) == 1
    assert not list(tmp_path.glob("*.running*"))
    assert (tmp_path / "wall_time.csv").read_text().splitlines()[1].startswith("2,2023-11-14")


def committed_and_fresh(folder: Path, committed: str, fresh: str) -> Path:
    """Committed rows of `_blocks.14` under `folder` (the results root) and a recomputed
    file that records that layer; returns the recomputed file's path."""
    path = folder / "imagenet-sample" / "_blocks.14" / "faithfulness.csv"
    path.parent.mkdir(parents=True)
    path.write_text(f"{HEADER}\n{committed}")
    identity = '# fdcam-results/2 {"layer": "_blocks.14", "model": "efficientnet-lite0"}'
    (folder / "fresh.csv").write_text(f"{identity}\n{HEADER}\n{fresh}")
    return folder / "fresh.csv"


def test_verify_exits_1_above_the_tolerance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(settings, "RESULTS_ROOT", tmp_path)
    fresh = committed_and_fresh(tmp_path, "n01_tench,fdcam,0,0.9,0.5,0.2,0.3,\n",
                                f"n01_tench.JPEG,fdcam,0,0.9,0.5002,0.2,{0.5002 - 0.2!r},\n")
    assert sample_evaluation.main(["--verify", str(fresh)]) == 0
    assert "largest difference: 2.00e-04 over 1 rows, within 0.001" in capsys.readouterr().out
    assert sample_evaluation.main(["--verify", str(fresh), "--tolerance", "1e-4"]) == 1
    assert "above the tolerance 0.0001" in capsys.readouterr().out


def test_stage_5_grows_every_layer_by_a_step_before_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from fdcam.paper import setups

    calls: list[tuple[str, int]] = []

    def fake_setup(profile: str, **kwargs: object) -> SimpleNamespace:
        calls.append((str(kwargs["layer"]), int(kwargs["n_images"])))  # type: ignore[call-overload]
        return SimpleNamespace(heavy_methods=("scorecam",))

    monkeypatch.setattr(settings, "SAMPLE_BY_LAYER", ("a#1", "b#2"))
    monkeypatch.setattr(settings, "SAMPLE_BY_LAYER_IMAGES", 120)
    monkeypatch.setattr(settings, "SAMPLE_BY_LAYER_STEP", 50)
    monkeypatch.setattr(setups, "setup", fake_setup)
    monkeypatch.setattr(sample_evaluation.runs, "table_methods",
                        lambda made, table: ("gradcam", "scorecam", "fdcam"))
    chosen: list[list[str]] = []
    monkeypatch.setattr(sample_evaluation, "_run_chosen",
                        lambda made, methods, patterns, **kw: chosen.append(list(methods)))
    sample_evaluation.run_stage(5, None, "cpu")
    assert calls == [("a#1", 50), ("b#2", 50), ("a#1", 100), ("b#2", 100),
                     ("a#1", 120), ("b#2", 120)]
    assert chosen == [["gradcam", "fdcam"]] * 6  # the light methods only


def test_verify_exits_1_when_a_recomputed_row_has_no_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(settings, "RESULTS_ROOT", tmp_path)
    fresh = committed_and_fresh(
        tmp_path, "n01_tench,fdcam,0,0.9,0.5,0.2,0.3,\nn02_carp,fdcam,0,0.9,0.5,0.2,0.3,\n",
        "n01_tench.JPEG,fdcam,0,0.9,0.5,0.2,0.3,\nn02_carp.JPEG,fdcam,0,,,,,OSError: truncated\n")
    assert sample_evaluation.main(["--verify", str(fresh)]) == 1
    assert "1 of 2 rows have no value to compare" in capsys.readouterr().out


def test_drop_rows_leaves_the_pointing_blank_flags_alone(tmp_path: Path) -> None:
    layer = tmp_path / "_blocks.14"
    layer.mkdir()
    (layer / "pointing.csv").write_text(
        f"{','.join(result_columns(True, content=False))}\n"
        "m0,gradcam,1,0.5,,,,True,True,False,\nm0,fdcam,1,0.5,,,,True,True,False,\n")
    (layer / "pointing_blank.csv").write_text("image,method,target,blank\nm0,gradcam,1,True\n")
    assert sample_evaluation.drop_rows(["gradcam"], tmp_path) == {layer / "pointing.csv": 1}
    assert "gradcam" in (layer / "pointing_blank.csv").read_text()
