"""The verdict by layer: Table I's paired differences at every surveyed layer that has rows,
beside the layer's premise columns (share of negative activations, linear head).

FD-CAM's switching ("a channel off" = 0) and the CAM sum ReLU(Σ ω_k A^k) assume A ≥ 0, as
after the ReLU of the paper's VGG16 layers. On EfficientNet-Lite0 the block outputs are linear
projections with about half their values negative; the activation call sites inside a block
are ≥ 0. This table shows how FD-CAM's advantage over each rival moves with the layer, and
beside it why: the survey's share of negatives and whether the head is linear
(`fdcam.paper.layer_survey`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from fdcam.errors import FdcamError
from fdcam.evaluation.statistics import paired_verdicts
from fdcam.paper.blank_maps import blank_map_counts
from fdcam.paper.layer_survey import committed_survey
from fdcam.paper.numbers import format_count_range
from fdcam.paper.setups import Setup, setup
from fdcam.paper.tables import paired_vs_fdcam

#: A rival's `paired_verdicts` word against FD-CAM, as this table says it.
VERDICT_WORDS = {"better": "rival better", "worse": "FD-CAM better", "undecided": "undecided",
                 "too few images": "too few images"}

BY_LAYER_COLUMNS = ["layer", "share_negative", "head_linear", "method", "label", "metric",
                    "n", "fdcam_minus_rival", "ci_low", "ci_high", "verdict", "blank_share",
                    "fdcam_blank_share"]


def layer_setups(main: Setup, layers: Sequence[str], *,
                 imagenet_sample: str | Path | None = None) -> dict[str, Setup]:
    """The imagenet-sample setups of `layers` (in that order) that have Table I rows beside
    `main`'s: ``<results>/<layer>/faithfulness.csv`` next to `main`'s layer folder."""
    base: Path = main.results_dir.parent
    found = {}
    for layer in layers:
        folder = base / layer
        if layer == main.model.target_layer:
            found[layer] = main
        elif (folder / "faithfulness.csv").exists():
            found[layer] = setup(main.profile, layer=layer, device=main.device, seed=main.seed,
                                 model=main.model.name, results_dir=folder,
                                 imagenet_sample=imagenet_sample)
    return found


def by_layer(setups: Mapping[str, Setup], survey: pd.DataFrame, *,
             metric: str = "overall") -> pd.DataFrame:
    """FD-CAM minus each rival of Table I in `metric` at each layer of `setups` (in their
    order), with the paired 95 % interval over the images both ran on (`paired_vs_fdcam`),
    so that a positive value is FD-CAM ahead in insertion and overall, and behind in deletion
    (lower is better there).

    survey: `fdcam.paper.layer_survey.committed_survey`'s summary (index: layer), whose
    columns "share negative" and "linear head" give ``share_negative`` and ``head_linear``
    (NaN / None for a layer it lacks).
    ``verdict``: "FD-CAM better", "rival better", "undecided" by the interval, or "too few
    images" under `fdcam.evaluation.statistics.MIN_IMAGES` (`paired_verdicts`' rule).
    ``blank_share``: the share of the rival's maps at that layer that were blank
    (`fdcam.paper.blank_maps.blank_map_counts`; NaN without blank-map rows);
    ``fdcam_blank_share``: FD-CAM's own.
    """
    rows = []
    for layer, made in setups.items():
        try:
            paired = paired_vs_fdcam(made, "I")
        except FdcamError:  # no FD-CAM rows at this layer yet
            continue
        paired = paired[(paired["metric"] == metric) & (paired["method"] != "fdcam")]
        negative = survey["share negative"].get(layer) if "share negative" in survey else None
        linear = survey["linear head"].get(layer) if "linear head" in survey else None
        # The rival's word against FD-CAM, by the rule `fdcam compare` prints.
        words = paired_verdicts(paired, paired["n"]).map(VERDICT_WORDS)
        # How often the rival's map was blank here (`fdcam.paper.blank_maps`; NaN: unknown).
        blank = blank_map_counts(made).set_index("method")["share"]
        for item, verdict in zip(paired.itertuples(index=False), words, strict=True):
            rows.append({"layer": layer,
                         "share_negative": float("nan") if negative is None else negative,
                         "head_linear": None if linear is None else bool(linear),
                         "method": item.method, "label": item.label, "metric": metric,
                         "n": int(item.n), "fdcam_minus_rival": -item.mean_difference,
                         "ci_low": -item.ci_high, "ci_high": -item.ci_low,
                         "verdict": verdict,
                         "blank_share": float(blank.get(item.method, float("nan"))),
                         "fdcam_blank_share": float(blank.get("fdcam", float("nan")))})
    return pd.DataFrame(rows, columns=BY_LAYER_COLUMNS)


def verdict_by_layer(main: Setup, *, metric: str = "overall",
                     survey: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """The verdict by layer of `main`'s profile, as chapters 05 and 08 show it: `by_layer`
    over every layer of the committed survey (`survey`, default
    `fdcam.paper.layer_survey.committed_survey`'s) that has Table I rows beside `main`'s
    layer folder. None where fewer than two layers have FD-CAM rows: only the
    ``imagenet-sample`` profile keeps rows at several layers."""
    if main.profile != "imagenet-sample":
        return None
    if survey is None:
        survey, _ = committed_survey()
    found = layer_setups(main, list(survey.index))
    frame = by_layer(found, survey, metric=metric) if len(found) > 1 else None
    return frame if frame is not None and frame["layer"].nunique() > 1 else None


def premise_words(rows: pd.DataFrame) -> tuple[str, str, str]:
    """How the pages name a layer's premise, from its `by_layer` rows: its share of negative
    activations ("49% negative"), whether it is inside the premise ("outside the premise",
    "inside the premise (A ≥ 0)") and its head ("linear head", "non-linear head")."""
    share = rows["share_negative"].iloc[0]
    if share != share:  # NaN: a layer the survey lacks
        negatives, premise = "share of negatives unknown", "premise not surveyed"
    else:
        negatives = f"{share:.0%} negative"
        premise = "outside the premise" if share > 0 else "inside the premise (A ≥ 0)"
    head = {True: "linear head", False: "non-linear head"}.get(rows["head_linear"].iloc[0],
                                                              "head not surveyed")
    return negatives, premise, head


def premise_note(frame: pd.DataFrame) -> str:
    """One sentence per layer of a `by_layer` frame, for the page: the share of negatives,
    the head, and how many rivals FD-CAM beats and trails (by the interval)."""
    parts = []
    for layer, rows in frame.groupby("layer", sort=False):
        negatives, premise, head = premise_words(rows)
        wins = int((rows["verdict"] == "FD-CAM better").sum())
        losses = int((rows["verdict"] == "rival better").sum())
        blank = rows[rows["blank_share"] > 0] if "blank_share" in rows else rows.iloc[:0]
        named = [f"{r.label} {r.blank_share:.0%}" for r in blank.itertuples(index=False)]
        own = rows["fdcam_blank_share"].iloc[0] if "fdcam_blank_share" in rows else 0.0
        if own > 0:
            named.insert(0, f"FD-CAM {own:.0%}")
        blank_text = "; blank maps: " + ", ".join(named) if named else ""
        n = format_count_range(rows["n"])
        parts.append(f"`{layer}` ({negatives}, {premise}, a {head}; n = {n}): "
                     f"FD-CAM ahead of {wins} and behind {losses} of {len(rows)} rivals"
                     f"{blank_text}")
    return "; ".join(parts) + "." if parts else ""


def summary_line(frame: pd.DataFrame, model: str) -> str:
    """The verdict by layer in one sentence, for the landing page and the README: per layer,
    whether it is inside the premise and its head, and how many rivals FD-CAM is ahead of
    and behind by the interval (`premise_note` says more, blank maps included)."""
    if frame.empty:
        return ""
    parts = []
    for layer, rows in frame.groupby("layer", sort=False):
        negatives, premise, head = premise_words(rows)
        wins = int((rows["verdict"] == "FD-CAM better").sum())
        losses = int((rows["verdict"] == "rival better").sum())
        n = format_count_range(rows["n"])
        parts.append(f"at `{layer}` ({negatives}, {premise}, {head}; n = {n}), "
                     f"ahead of {wins} and behind {losses} of {len(rows)} rivals")
    return (f"How the verdict moves with the layer ({model}, FD-CAM's "
            f"{frame['metric'].iloc[0]} AUC against each rival of Table I by its paired 95 % "
            f"interval): " + "; ".join(parts) + ".")


def inside_premise(frame: pd.DataFrame) -> pd.Series:
    """Per row of a `by_layer` frame: whether its layer is inside the premise with a head
    that is not linear (A ≥ 0, where both of FD-CAM's ideas can be tested), as the rule
    that chose the main layer asks; the other layers are the contrast."""
    return frame["share_negative"].eq(0) & frame["head_linear"].eq(False)
