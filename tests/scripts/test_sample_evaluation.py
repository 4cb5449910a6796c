"""scripts.sample_evaluation: the recomputation check of the committed imagenet-sample rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdcam.errors import FdcamError
from fdcam.evaluation.results import result_columns
from fdcam.paper import settings
from scripts import sample_evaluation

HEADER = ",".join(result_columns(False))


def test_verify_matches_photos_by_stem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "RESULTS_ROOT", tmp_path)
    committed = tmp_path / "imagenet-sample" / "_blocks.14" / "faithfulness.csv"
    committed.parent.mkdir(parents=True)
    committed.write_text(f"{HEADER}\nn01_tench,fdcam,0,0.9,0.5,0.2,0.3,\n"
                         f"n02_goldfish,fdcam,1,0.8,0.6,0.1,0.5,\n")
    fresh = tmp_path / "fresh.csv"
    fresh.write_text(f"{HEADER}\nn01_tench.JPEG,fdcam,0,0.9,0.50001,0.2,{0.50001 - 0.2!r},\n")
    table = sample_evaluation.verify(fresh)
    assert table.loc["fdcam", "rows"] == 1
    assert table.loc["fdcam", "insertion"] == pytest.approx(1e-5)
    assert table.loc["fdcam", "deletion"] == 0
    fresh.write_text(f"{HEADER}\nother.JPEG,fdcam,0,0.9,0.5,0.2,0.3,\n")
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
