"""Tables I–IV from the run's rows: the paper's number, ours with its 95 % interval, and
the difference side by side; paired differences with FD-CAM; ranks.

Every table says how many images (or pairs) each number rests on."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fdcam.errors import FdcamError
from fdcam.evaluation.pointing import pointing_game
from fdcam.evaluation.statistics import image_bootstrap, paired_differences, summarize
from fdcam.paper.names import method_label
from fdcam.paper.paper_tables import compare_table
from fdcam.paper.runs import faithfulness_results, pointing_results, table_methods
from fdcam.paper.settings import FAITHFULNESS_METRICS
from fdcam.paper.setups import Setup

_TABLE_COLUMNS = ["method", "label", "metric", "paper", "ours", "difference", "ci_low",
                  "ci_high", "paper_in_ci", "n"]


def _faithfulness_table(setup: Setup, table: str) -> pd.DataFrame:
    methods = setup.methods[table]
    df = faithfulness_results(setup)
    df = df[df["method"].isin(methods)]
    ours = summarize(df, metrics=FAITHFULNESS_METRICS, seed=setup.seed)
    merged = compare_table(ours, table, keep_extra=True)
    merged = merged[merged["method"].isin(methods)]
    return _finish(merged, ours, methods)


def _finish(merged: pd.DataFrame, ours: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    counts = ours.set_index(["method", "metric"])["n"] if len(ours) else pd.Series(dtype=int)
    n = [counts.get((m, k), 0) for m, k in zip(merged["method"], merged["metric"],
                                                strict=True)]
    merged = merged.assign(label=[method_label(m) for m in merged["method"]],
                           n=pd.array(n, dtype="Int64"))
    order = {m: i for i, m in enumerate(methods)}
    metric_order = {m: i for i, m in enumerate((*FAITHFULNESS_METRICS, "pointing_game",
                                                "pointing_game_tol15"))}
    merged = merged.assign(_order=merged["method"].map(order),
                           _metric=merged["metric"].map(metric_order))
    merged = merged.sort_values(["_order", "_metric"], kind="stable")
    return merged[_TABLE_COLUMNS].reset_index(drop=True)


def table_1(setup: Setup) -> pd.DataFrame:
    """Table I: insertion, deletion, overall per method — paper, ours, difference, 95 % CI.

    Columns: method, label (the paper's name), metric, paper, ours, difference (ours −
    paper), ci_low, ci_high (bootstrap over images), paper_in_ci, n (images).
    """
    return _faithfulness_table(setup, "I")


def table_3(setup: Setup) -> pd.DataFrame:
    """Table III (grouped channel switching ablation), in `table_1`'s columns."""
    return _faithfulness_table(setup, "III")


def table_4(setup: Setup) -> pd.DataFrame:
    """Table IV (weight combination), in `table_1`'s columns plus ``rho``, the formula.

    The paper's third row is labelled ρ = α̂e^(ŝ−0.5) while Eq. 10 says ρ = α̂e^ŝ − 0.5; we
    run both (``fdcam-exp-shifted`` and ``fdcam``) and compare each with that row: both rows'
    ``difference`` and ``paper_in_ci`` refer to it, but its value is printed once, on the
    ``fdcam`` row (``paper`` is missing on the other), so that the table does not repeat it.
    """
    frame = _faithfulness_table(setup, "IV")
    third = frame[frame["method"] == "fdcam"].set_index("metric")["paper"]
    shifted = frame["method"] == "fdcam-exp-shifted"
    frame.loc[shifted, "paper"] = frame.loc[shifted, "metric"].map(third).to_numpy()
    frame["difference"] = frame["ours"] - frame["paper"]
    inside = (frame["ci_low"] <= frame["paper"]) & (frame["paper"] <= frame["ci_high"])
    known = frame[["paper", "ci_low", "ci_high"]].notna().all(axis=1)
    frame["paper_in_ci"] = pd.array([bool(v) if k else pd.NA for v, k in
                                     zip(inside, known, strict=True)], dtype="boolean")
    frame.loc[shifted, "paper"] = float("nan")
    formulas = {"fdcam-product": "α̂·ŝ", "fdcam-exp": "α̂·e^ŝ",
                "fdcam-exp-shifted": "α̂·e^(ŝ−0.5)  (Table IV's label)",
                "fdcam": "α̂·e^ŝ − 0.5  (Eq. 10)"}
    frame.insert(2, "rho", frame["method"].map(formulas))
    return frame


def table_2(setup: Setup, *, n_resamples: int = 2000, pairs: str = "all") -> pd.DataFrame:
    """Table II: pointing-game accuracy in %, paper vs ours, with bootstrap 95 % CIs.

    ``pointing_game``: the paper's Eq. 12, Hits / (Hits + Misses) over all (image, class)
    pairs, the map's maximum inside a box of the class. ``pointing_game_tol15`` (extra rows,
    no paper value): the original protocol, within 15 px of a non-difficult box, accuracy
    per class then averaged. ``n``: (image, class) pairs. ``pairs="hard"``: the hard subset
    only (`fdcam.paper.runs.hard_pairs`); the paper has no value for it, so its ``paper``
    (and ``difference``, ``paper_in_ci``) cells are empty.
    """
    methods = setup.methods["II"]
    df = pointing_results(setup, pairs)
    df = df[df["method"].isin(methods) & df["error"].isna() & df["hit"].notna()]
    rows = []
    if len(df):
        hits = summarize(df, metrics=["hit"], seed=setup.seed, n_resamples=n_resamples)
        games = pointing_game(df).set_index("method")
        for row in hits.itertuples(index=False):
            rows.append({"method": row.method, "metric": "pointing_game",
                         "mean": 100 * row.mean, "ci_low": 100 * row.ci_low,
                         "ci_high": 100 * row.ci_high, "n": row.n})
            group = df[df["method"] == row.method]
            low, high = _tol15_interval(group, n_resamples, setup.seed)
            game = games.loc[row.method]
            rows.append({"method": row.method, "metric": "pointing_game_tol15",
                         "mean": 100 * float(game["accuracy_tol15"]), "ci_low": 100 * low,
                         "ci_high": 100 * high, "n": int(game["pairs_tol15"])})
    ours = pd.DataFrame(rows, columns=["method", "metric", "mean", "ci_low", "ci_high", "n"])
    merged = compare_table(ours, "II", keep_extra=True)
    merged = merged[merged["method"].isin(methods)]
    table = _finish(merged, ours, methods)
    if pairs != "all":
        no_paper = [c for c in ("paper", "difference", "paper_in_ci") if c in table.columns]
        for column in no_paper:
            table[column] = None
    return table


def _tol15_interval(group: pd.DataFrame, n_resamples: int, seed: int) -> tuple[float, float]:
    """Bootstrap (images resampled) percentile 95 % CI of the per-class mean accuracy."""
    valid = group[group["hit_tol15"].notna()]
    if valid.empty:
        return math.nan, math.nan
    images = sorted(valid["image"].unique())
    classes = sorted(valid["target"].unique())
    row = {image: i for i, image in enumerate(images)}
    col = {c: j for j, c in enumerate(classes)}
    hits = np.zeros((len(images), len(classes)))
    pairs = np.zeros((len(images), len(classes)))
    for image, target, hit in valid[["image", "target", "hit_tol15"]].itertuples(index=False):
        pairs[row[image], col[target]] += 1
        hits[row[image], col[target]] += bool(hit)

    def per_class_mean(h: np.ndarray, p: np.ndarray) -> np.ndarray:  # [R, classes] -> [R]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(np.where(p > 0, h / np.where(p > 0, p, 1), np.nan), axis=1)

    return image_bootstrap((hits, pairs), per_class_mean, n_resamples, (0.025, 0.975), seed)


def paired_vs_fdcam(setup: Setup, table: str = "I", *, pairs: str = "all") -> pd.DataFrame:
    """Each method minus FD-CAM on the same images (and classes), with a paired 95 % CI.

    Tables I, III, IV: insertion, deletion, overall; Table II: the pointing game's hit rate
    in percentage points (``pairs="hard"``: its hard subset only). Pairs only images both
    methods ran on, so heavy methods on a subset are compared fairly. Columns: method,
    label, metric, n, mean_difference, ci_low, ci_high, and ``fdcam_better`` (whether the CI
    excludes 0 in FD-CAM's favour).
    """
    key = str(table).upper().removeprefix("TABLE").strip()
    methods = table_methods(setup, key)
    if key == "II":
        df = pointing_results(setup, pairs)
        metrics: tuple[str, ...] = ("hit",)
    else:
        df = faithfulness_results(setup)
        metrics = FAITHFULNESS_METRICS
    df = df[df["method"].isin(methods)]
    if "fdcam" not in set(df["method"]):
        raise FdcamError(f"no FD-CAM rows for Table {key} yet; run the experiment first")
    if key == "II":  # booleans -> 0/100 so that differences are in percentage points
        df = df.assign(hit=df["hit"].astype("Float64") * 100)
    diff = paired_differences(df, "fdcam", metrics=list(metrics), seed=setup.seed)
    lower_better = {"deletion"}
    better = [(hi < 0) if metric not in lower_better else (lo > 0)
              for metric, lo, hi in diff[["metric", "ci_low", "ci_high"]].itertuples(
                  index=False)]
    diff = diff.assign(label=[method_label(m) for m in diff["method"]], fdcam_better=better)
    diff["metric"] = diff["metric"].replace({"hit": "pointing_game"})
    order = {m: i for i, m in enumerate(methods)}
    diff = diff.assign(_o=diff["method"].map(order)).sort_values(["_o"], kind="stable")
    return diff[["method", "label", "metric", "n", "mean_difference", "ci_low", "ci_high",
                 "fdcam_better"]].reset_index(drop=True)


def side_by_side(table: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """A table builder's output as one row per method: ours and the paper's per metric.

    Columns ``<metric>`` (ours) and ``<metric> (paper)``, rounded to `decimals`, then
    ``n`` (images, or pairs for the pointing game). Methods are named as in the paper.
    """
    needed = {"label", "metric", "paper", "ours", "n"}
    if not needed <= set(table.columns):
        raise FdcamError(f"side_by_side needs a table_1 … table_4 result; missing "
                         f"{', '.join(sorted(needed - set(table.columns)))}")
    labels = list(dict.fromkeys(table["label"]))
    metrics = list(dict.fromkeys(table["metric"]))
    out = pd.DataFrame(index=pd.Index(labels, name="method"))
    for metric in metrics:
        rows = table[table["metric"] == metric].set_index("label")
        out[metric] = rows["ours"].astype(float).round(decimals)
        out[f"{metric} (paper)"] = rows["paper"].astype(float).round(decimals)
    counts = table.groupby("label", sort=False)["n"].max()
    out["n"] = counts.reindex(labels).astype("Int64")
    return out


def ranks(table: pd.DataFrame) -> pd.DataFrame:
    """Rank of each method per metric by our numbers and by the paper's (1 = best).

    Higher is better except for deletion. Ties share the best rank; a method without a
    number has none.
    """
    from fdcam.paper.names import METRICS

    labels = list(dict.fromkeys(table["label"]))
    out = pd.DataFrame(index=pd.Index(labels, name="method"))
    for metric in dict.fromkeys(table["metric"]):
        rows = table[table["metric"] == metric].set_index("label")
        lower = METRICS.get(metric.removesuffix("_tol15"), "higher") == "lower"
        for source in ("ours", "paper"):
            values = rows[source].astype(float)
            rank = values.rank(ascending=lower, method="min")
            out[f"{metric} {source}"] = rank.reindex(labels).astype("Int64")
    return out


def as_text(frame: pd.DataFrame, decimals: int = 3, *, index: bool = True) -> str:
    """A table as plain text with every float printed with `decimals` decimals — the form
    the notebooks print in cells that nbval compares (bit-stable, whatever pandas' display
    options)."""
    return frame.to_string(float_format=f"{{:.{decimals}f}}".format, index=index,
                           na_rep="—")


def rounded(frame: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """A copy with every float column rounded, for printing bit-stable numbers (nbval)."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(decimals)
    return out
