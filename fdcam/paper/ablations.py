"""Chapter 07's checks (Tables III and IV): how often switch-on changes FD-CAM's AUCs,
whether α̂e^(ŝ−b) and α̂e^ŝ give the same maps, and the verdict on which formula of
Eq. 10 / Table IV reproduces the paper."""

from __future__ import annotations

import math

import pandas as pd
import torch

from fdcam.checks import check_optional_int
from fdcam.errors import FdcamError
from fdcam.paper.figure_data import image_tensor
from fdcam.paper.runs import faithfulness_results
from fdcam.paper.setups import Setup


def differing_images(setup: Setup, method: str = "fdcam", other: str = "fdcam-g-off",
                     tolerance: float = 1e-6) -> tuple[int, int]:
    """(images whose `method` and `other` AUCs differ, images both ran on): e.g. how often
    switch-on changes FD-CAM's map enough to move insertion or deletion (Table III)."""
    df = faithfulness_results(setup)
    df = df[df["error"].isna()].set_index(["image", "target", "method"])
    both = df.xs(method, level="method")[["insertion", "deletion"]].join(
        df.xs(other, level="method")[["insertion", "deletion"]].add_suffix("_other"),
        how="inner")
    gap = ((both["insertion"] - both["insertion_other"]).abs()
           + (both["deletion"] - both["deletion_other"]).abs())
    return int((gap > tolerance).sum()), len(both)


def combination_check(setup: Setup, n: int | None = None) -> pd.DataFrame:
    """Measure what combine.py's docstring claims: α̂e^(ŝ−b) gives exactly α̂e^ŝ's maps.

    For the first `n` faithfulness images (default: all), FD-CAM is run with the three
    exponential combinations on the same activations; per image: the largest absolute
    difference of the weights ω after dividing out e^(−0.5), of the maps of
    ``fdcam-exp-shifted`` vs ``fdcam-exp`` and of Eq. 10's ``fdcam`` vs ``fdcam-exp``, and
    Eq. 10's insertion AUC minus α̂e^ŝ's from the faithfulness CSV (NaN where not run).
    The label's AUCs are not compared: the run evaluates equal maps once
    (`fdcam.paper.settings.SAME_MAP`), so its rows are α̂e^ŝ's by construction.
    """
    from fdcam.cam import FDCAM

    n = check_optional_int(n, "n", minimum=1)
    images = setup.faithfulness_images if n is None else setup.faithfulness_images[:n]
    explainers = {c: FDCAM(setup.model.model, setup.model.target_layer, combination=c)
                  for c in ("exp", "exp_shifted", "exp_minus_bias")}
    try:
        table = faithfulness_results(setup)
    except FdcamError:
        table = pd.DataFrame(columns=["image", "method", "insertion", "deletion"])
    rows = []
    for image_id, source in images:
        x = image_tensor(source).to(setup.device)[None]
        out = {c: e(x) for c, e in explainers.items()}
        exp, shifted, eq10 = out["exp"], out["exp_shifted"], out["exp_minus_bias"]
        weights = (shifted.weights * math.exp(0.5) - exp.weights).abs().max()
        rows.append({
            "image": image_id,
            "max |Δω| (shifted·e^0.5 − exp)": float(weights),
            "max |Δmap| exp-shifted vs exp": float((shifted.saliency - exp.saliency).abs().max()),
            "max |Δmap| Eq. 10 vs exp": float((eq10.saliency - exp.saliency).abs().max()),
            "Δinsertion Eq. 10 − exp": _auc_gap(table, image_id, "fdcam", "fdcam-exp",
                                                "insertion"),
        })
    return pd.DataFrame(rows)


def switch_on_check(setup: Setup, n: int | None = None) -> pd.DataFrame:
    """Measure what switch-on adds to switch-off (Table III's g+off vs full) on this model.

    When the head after the target layer is pooling followed by one Linear layer (as
    EfficientNet-Lite0's), zeroing channels is linear in the logit: s⁺ = s⁻ + b_c (the
    class bias), so s = s⁻ + b_c/2 and the min-max normalised ŝ — hence the map — is the
    same with and without switch-on. VGG16's three-layer head is not linear, and there the
    two differ. Per image (first `n`, default all): the largest absolute differences of ŝ
    and of the maps between ``fdcam-g-off`` and ``fdcam``, and of ŝ between ``fdcam`` and
    ``fdcam-ng-off`` (grouping's effect), plus the largest |s⁺ − s⁻ − b_c| when the head's
    last layer has a bias.
    """
    from fdcam.cam import FDCAM
    from fdcam.combine import min_max

    n = check_optional_int(n, "n", minimum=1)
    images = setup.faithfulness_images if n is None else setup.faithfulness_images[:n]
    network = setup.model.model
    variants = {"full": FDCAM(network, setup.model.target_layer),
                "g-off": FDCAM(network, setup.model.target_layer, switch_on=False),
                "ng-off": FDCAM(network, setup.model.target_layer, grouping=False,
                                switch_on=False)}
    rows = []
    for image_id, source in images:
        x = image_tensor(source).to(setup.device)[None]
        out = {name: e(x) for name, e in variants.items()}
        full, off, single = out["full"], out["g-off"], out["ng-off"]
        s_full, s_off = min_max(full.scores.double()), min_max(off.scores.double())
        row = {"image": image_id,
               "max |Δŝ| g+off vs full": float((s_full - s_off).abs().max()),
               "max |Δmap| g+off vs full": float((full.saliency - off.saliency).abs().max()),
               "max |Δŝ| ng+off vs full": float((s_full - min_max(single.scores.double()))
                                                .abs().max())}
        bias = _last_bias(network, int(full.targets.reshape(-1)[0]))
        if bias is not None and full.switch_on is not None and full.switch_off is not None:
            gap = full.switch_on.double() - full.switch_off.double() - bias
            row["max |s⁺ − s⁻ − b_c|"] = float(gap.abs().max())
        rows.append(row)
    return pd.DataFrame(rows)


def _last_bias(network: torch.nn.Module, target: int) -> float | None:
    linears = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    if not linears or linears[-1].bias is None:
        return None
    return float(linears[-1].bias.detach()[target])


def _auc_gap(table: pd.DataFrame, image_id: str, a: str, b: str, metric: str) -> float:
    def value(method: str) -> float:
        rows = table[(table["image"] == image_id) & (table["method"] == method)]
        return float(rows[metric].iloc[0]) if len(rows) else math.nan

    return value(a) - value(b)


def combination_verdict(check: pd.DataFrame, table4: pd.DataFrame,
                        tolerance: float = 1e-5) -> str:
    """Eq. 10 vs Table IV's label, in words, from `combination_check` and `table_4`.

    Only booleans and numbers rounded to 3 decimals are printed, so that the text is
    bit-stable across reruns (nbval).
    """
    if check.empty:
        raise FdcamError("combination_check returned no images; run it on at least one")

    def worst(column: str) -> float:
        values = check[column].abs()
        return float(values.max()) if values.notna().any() else math.nan

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    weights = worst("max |Δω| (shifted·e^0.5 − exp)")
    shifted = worst("max |Δmap| exp-shifted vs exp")
    eq10 = worst("max |Δmap| Eq. 10 vs exp")
    paper = table4.pivot_table(index="method", columns="metric", values="paper",
                               aggfunc="first")
    ours = table4.pivot_table(index="method", columns="metric", values="ours",
                              aggfunc="first")

    def cell(frame: pd.DataFrame, method: str) -> str:
        if method not in frame.index or "overall" not in frame.columns:
            return "n/a"
        value = frame.loc[method, "overall"]
        return "n/a" if pd.isna(value) else f"{value:.3f}"

    lines = [
        f"images measured: {len(check)}",
        f"label's weights x e^0.5 equal a*e^s weights (max |diff| < {tolerance:g}): "
        f"{yes(weights < tolerance)}",
        f"label's maps equal a*e^s maps (max |diff| < {tolerance:g}): {yes(shifted < tolerance)}",
        f"Eq. 10 maps equal a*e^s maps: {yes(eq10 < tolerance)} "
        f"(max |diff| = {eq10:.3f})",
        "AUCs of the label's formula: a*e^s's rows, reused (equal maps are evaluated once)",
        f"paper, overall: a*e^s {cell(paper, 'fdcam-exp')}, best row {cell(paper, 'fdcam')}",
        f"ours, overall:  a*e^s {cell(ours, 'fdcam-exp')}, label's formula "
        f"{cell(ours, 'fdcam-exp-shifted')}, Eq. 10 {cell(ours, 'fdcam')}",
    ]
    same = shifted < tolerance
    lines.append("verdict: the label's formula gives the maps of a*e^s, so the paper's best "
                 "row, which differs from its a*e^s row, is Eq. 10 (fdcam)" if same else
                 "verdict: the label's formula changes the maps here; see the table above")
    return "\n".join(lines)


def switch_on_summary(switch: pd.DataFrame, setup: Setup, tolerance: float = 1e-6) -> str:
    """What `switch_on_check` and the run's rows say about switch-on, in words (numbers
    rounded to 3 decimals: bit-stable for nbval): on how many re-explained images it changes
    ŝ and the map, and on how many images of the whole run FD-CAM's AUCs differ from
    ``g+off``'s (`differing_images`, which needs no re-explaining)."""
    from fdcam.paper.layer_survey import CHANGE as SURVEY_CHANGE

    if switch.empty:
        raise FdcamError("switch_on_check returned no images; run it on at least one")
    maps = switch["max |Δmap| g+off vs full"]
    scores = switch["max |Δŝ| g+off vs full"]
    changed, differ = int((maps > tolerance).sum()), int((scores > tolerance).sum())
    lines = [f"re-explained images: {len(switch)}; switch-on changes ŝ on {differ} and the "
             f"map on {changed} (by more than {tolerance:g} anywhere; largest map difference "
             f"{float(maps.max()):.3f}; chapter 05's survey counts a photo only where some "
             f"pixel moves by more than {SURVEY_CHANGE:g})"]
    try:
        auc, both = differing_images(setup)
    except FdcamError:
        auc, both = 0, 0
    if both:
        lines.append(f"images of the run whose FD-CAM AUCs differ from g+off's: {auc} of {both}")
    if changed == 0:
        lines.append("switch-on changes no map here: Table III's g+off and full rows are one "
                     "experiment, and only grouping (ng+off vs g+off) is tested")
    else:
        lines.append("switch-on changes the maps here: Table III tests both of its steps")
    return "\n".join(lines)
