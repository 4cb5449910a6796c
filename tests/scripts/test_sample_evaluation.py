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
