"""Which target layer? A survey of where FD-CAM's two ideas change the maps (issue 14).

FD-CAM adds two things to a gradient CAM: *switch-on* (Eq. 7) and *grouping* (Eq. 5). At a
layer whose head is pooling + Linear (EfficientNet-Lite0's last activation) the score is
linear in the channels, so switch-on is switch-off shifted by a constant and the full
method equals its ``g+off`` variant: a layer like that cannot test the paper's claims. The
survey measures, per candidate layer and photo, how much each idea moves the map:

* switch-on: the full FD-CAM map against ``g+off`` (grouping, switch-off only);
* grouping: ``g+off`` against ``ng+off`` (each channel alone, switch-off only).

For each pair: the Pearson correlation of the two [0, 1] maps and their largest absolute
difference. `choose_layer` then applies a rule fixed before any evaluation runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from fdcam.cam import FDCAM
from fdcam.errors import FdcamError
from fdcam.paper.settings import RESULTS_ROOT

#: A map "changes" when some pixel moves by more than this (maps are in [0, 1]).
CHANGE = 0.05

#: The rule needs both ideas to change the map on at least this share of the photos.
MAJORITY = 0.5


def _compare(a: Tensor, b: Tensor) -> tuple[float, float]:
    """(Pearson correlation, max |a − b|) of two maps [H, W]; constant maps correlate 1 if
    equal."""
    x, y = a.flatten().double(), b.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    gap = float((a - b).abs().max())
    correlation = float(x @ y) / denominator if denominator > 0 else float(gap == 0)
    return correlation, gap


def survey(model: nn.Module, images: Tensor, targets: Sequence[int],
           layers: Sequence[str], names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (layer, image): K, and how switch-on and grouping change the map.

    images: [N, 3, H, W] (normalised as the model expects); targets: N class indices.
    Columns: layer, image, channels, on_correlation, on_max_difference,
    group_correlation, group_max_difference.
    """
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    rows = []
    for layer in layers:
        variants = {
            "full": FDCAM(model, layer),
            "g+off": FDCAM(model, layer, switch_on=False),
            "ng+off": FDCAM(model, layer, switch_on=False, grouping=False),
        }
        for i, (name, target) in enumerate(zip(names, targets, strict=True)):
            x = images[i: i + 1]
            maps = {key: cam(x, target=int(target)).saliency[0] for key, cam in variants.items()}
            on = _compare(maps["full"], maps["g+off"])
            group = _compare(maps["g+off"], maps["ng+off"])
            rows.append({"layer": layer, "image": name,
                         "channels": int(variants["full"].split.body(x).shape[1]),
                         "on_correlation": on[0], "on_max_difference": on[1],
                         "group_correlation": group[0], "group_max_difference": group[1]})
    return pd.DataFrame(rows)


def summarize_survey(rows: pd.DataFrame) -> pd.DataFrame:
    """Per layer (in survey order): median correlations and the share of photos whose map
    changes by more than `CHANGE` under each idea."""
    grouped = rows.groupby("layer", sort=False)
    return pd.DataFrame({
        "channels": grouped["channels"].first(),
        "photos": grouped.size(),
        "switch-on: median correlation": grouped["on_correlation"].median(),
        "switch-on: share changed": grouped["on_max_difference"].apply(
            lambda s: float((s > CHANGE).mean())),
        "grouping: median correlation": grouped["group_correlation"].median(),
        "grouping: share changed": grouped["group_max_difference"].apply(
            lambda s: float((s > CHANGE).mean())),
    })


def choose_layer(summary: pd.DataFrame) -> str | None:
    """The rule, fixed before the evaluation: of the layers where switch-on *and* grouping
    each change the map on at least `MAJORITY` of the photos, the one nearest the output
    (the last in survey order, which lists layers from input to output). None if none."""
    both = summary[(summary["switch-on: share changed"] >= MAJORITY)
                   & (summary["grouping: share changed"] >= MAJORITY)]
    return None if both.empty else str(both.index[-1])


#: The committed survey behind the imagenet-sample profile's layer (`settings.SAMPLE_LAYER`).
SURVEY_CSV = RESULTS_ROOT / "imagenet-sample" / "layer_survey.csv"


def committed_survey() -> tuple[pd.DataFrame, str | None]:
    """The committed survey (`SURVEY_CSV`) summarised per layer, and the layer the rule
    chooses from it."""
    if not SURVEY_CSV.exists():
        raise FdcamError(f"no layer survey at {SURVEY_CSV}; run python -m "
                         f"fdcam.paper.layer_survey first")
    summary = summarize_survey(pd.read_csv(SURVEY_CSV))
    return summary, choose_layer(summary)


#: EfficientNet-Lite0's layers with 7×7 outputs, from input to output.
LITE0_CANDIDATES = ("_blocks.11", "_blocks.12", "_blocks.13", "_blocks.14", "_blocks.15",
                    "_conv_head", "_bn1", "_swish")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fdcam.paper.layer_survey [--photos DIR] [--n 20] [--seed 0] [--out CSV]``:
    the survey on n seeded imagenet-sample photos with EfficientNet-Lite0 (real weights),
    each photo's top-1 class explained."""
    import argparse
    import random

    from fdcam.evaluation.imagenet import ImageNetSample
    from fdcam.models import load_model

    parser = argparse.ArgumentParser(prog="python -m fdcam.paper.layer_survey")
    parser.add_argument("--photos", default=None, help="the imagenet-sample folder")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(SURVEY_CSV))
    args = parser.parse_args(argv)
    loaded = load_model("efficientnet-lite0")
    sample = ImageNetSample(args.photos)
    chosen = sorted(random.Random(args.seed).sample(range(len(sample)), args.n))
    x = torch.stack([loaded.preprocess(sample.image(i)) for i in chosen])
    with torch.no_grad():
        targets = loaded.model(x).argmax(1).tolist()
    rows = survey(loaded.model, x, targets, LITE0_CANDIDATES, [sample.names[i] for i in chosen])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out, index=False, float_format="%.6g")
    summary = summarize_survey(rows)
    print(summary.round(3).to_string())
    print(f"chosen layer: {choose_layer(summary)}  (rows: {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
