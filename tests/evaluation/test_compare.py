"""fdcam compare: the verdict rule, the paired table, the premise check and the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from fdcam.cli import main
from fdcam.evaluation.compare import (
    compare_table,
    format_negative_shares,
    negative_shares,
    results_file,
)
from fdcam.evaluation.results_file import read_results
from fdcam.evaluation.statistics import paired_verdicts


def test_paired_verdicts_by_hand() -> None:
    paired = pd.DataFrame({
        "metric": ["insertion", "insertion", "deletion", "deletion", "overall", "overall"],
        "ci_low": [0.01, -0.03, 0.01, -0.03, -0.01, 0.0],
        "ci_high": [0.03, -0.01, 0.03, -0.01, 0.02, 0.02],
    })
    # Higher insertion/overall is better; higher deletion is worse. An interval touching 0
    # does not exclude it.
    assert paired_verdicts(paired).tolist() == [
        "better", "worse", "worse", "better", "undecided", "undecided"]
    few = paired_verdicts(paired, pd.Series([25, 19, 20, 3, 40, 40]), min_images=20)
    assert few.tolist() == ["better", "too few images", "worse", "too few images",
                            "undecided", "undecided"]


def _results(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for method, insertion in values.items():
        for i, v in enumerate(insertion):
            rows.append({"image": f"img{i}", "method": method, "target": 1,
                         "insertion": v, "deletion": 0.1, "overall": v - 0.1, "error": None})
    return pd.DataFrame(rows)


def test_compare_table_by_hand() -> None:
    # gradcam − fdcam on insertion: 0.1, 0.2, 0.3 on three images → mean 0.2, and every
    # resample's mean lies in [0.1, 0.3]: the interval excludes 0 → "better".
    tables = {"layer4": _results({"fdcam": [0.5, 0.5, 0.5], "gradcam": [0.6, 0.7, 0.8]}),
              "layer3": _results({"fdcam": [0.5, 0.6, 0.7], "gradcam": [0.5, 0.6, 0.7]})}
    table = compare_table(tables, "fdcam", n_resamples=200, min_images=3)
    row = table[(table["layer"] == "layer4") & (table["metric"] == "insertion")].iloc[0]
    assert row["method"] == "gradcam" and row["reference"] == "fdcam"
    assert row["n"] == 3 and row["images"] == 3
    assert row["mean_difference"] == pytest.approx(0.2)
    assert 0.1 - 1e-9 <= row["ci_low"] <= row["ci_high"] <= 0.3 + 1e-9
    assert row["verdict"] == "better"
    same = table[table["layer"] == "layer3"]
    assert same["mean_difference"].tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert set(same["verdict"]) == {"undecided"}
    deletion = table[(table["layer"] == "layer4") & (table["metric"] == "deletion")]
    assert deletion["verdict"].tolist() == ["undecided"]  # equal deletions: difference 0
    by_rule = compare_table(tables, "fdcam", n_resamples=200)  # 3 images < 20
    assert set(by_rule["verdict"]) == {"too few images"}


def test_results_file_names_are_safe() -> None:
    assert results_file(Path("out"), "_blocks.15._swish#2") == \
        Path("out/results-_blocks.15._swish_2.csv")


def test_negative_shares_by_hand() -> None:
    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]).view(2, 2, 1, 1))
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                          nn.Linear(2, 3)).eval()
    # Layer "0" is (x₀, −x₁): x₀ has 1 negative of 4 values, −x₁ has 3 → 4 of 8 over one
    # image; the second image (all positive) adds 4 negatives (−x₁) of 8: 8 of 16.
    x1 = torch.tensor([[[1.0, -2.0], [3.0, 4.0]], [[1.0, 2.0, ], [-3.0, 5.0]]])
    x2 = torch.ones(2, 2, 2)
    shares = negative_shares(model, ["0", "1"], [x1, x2])
    assert [s.share for s in shares] == [0.5, 0.0]
    assert shares[0].minimum == -5.0 and shares[1].minimum == 0.0
    text = format_negative_shares(shares).splitlines()
    assert text[0].startswith("negative activations at 0: 50.0 % (min -5)") and "warning" in text[0]
    assert text[1] == "negative activations at 1: 0.0 % (min 0)"


TINY_MODULE = '''
import torch
from torch import nn


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 5))
'''


def test_compare_command_end_to_end_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "my_model.py").write_text(TINY_MODULE)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    torch.save(_tiny_state(), tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    argv = ["compare", "--model", "my_model:tiny", "--weights", "w.pt", "--layers", "1,3",
            "--images", "photos", "--methods", "gradcam,fdcam", "--out", "cmp",
            "--n-resamples", "50", "--min-images", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "method − fdcam [95 % CI]" in printed and "verdict vs fdcam" in printed
    assert "negative activations at 1: 0.0 %" in printed
    table = pd.read_csv(tmp_path / "cmp" / "paired.csv")
    assert sorted(set(table["layer"].astype(str))) == ["1", "3"]
    assert set(table["metric"]) == {"insertion", "deletion", "overall"}
    assert (table["n"] == 3).all()
    assert (tmp_path / "cmp" / "paired.png").stat().st_size > 0
    rows = read_results(tmp_path / "cmp" / "results-3.csv")
    assert len(rows) == 6 and rows["error"].isna().all()
    before = (tmp_path / "cmp" / "results-3.csv").read_bytes()
    assert main(argv) == 0  # a rerun: nothing left to compute, the same table
    assert (tmp_path / "cmp" / "results-3.csv").read_bytes() == before
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cmp" / "paired.csv"), table)


def _tiny_state() -> dict[str, torch.Tensor]:
    scope: dict[str, object] = {}
    exec(TINY_MODULE, scope)
    return scope["tiny"]().state_dict()  # type: ignore[operator]


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "no_such_module:f"], "cannot import module 'no_such_module'"),
    (["--model", "my_model:nothing"], "has no function 'nothing'"),
    (["--methods", "gradcam,nope"], "unknown method 'nope'"),
    (["--methods", "fdcam"], "names only the reference"),
    (["--layers", "9"], "'9'"),
    (["--weights", "other.pt"], "does not fit my_model:tiny"),
])
def test_compare_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture, argv: list[str],
                                     message: str) -> None:
    (tmp_path / "my_model.py").write_text(TINY_MODULE)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pt")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    monkeypatch.chdir(tmp_path)
    code = main(["compare", "--model", "my_model:tiny", "--images", "p.png", "--out", "o",
                 *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err
