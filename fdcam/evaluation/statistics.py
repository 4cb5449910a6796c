"""Means with bootstrap 95 % intervals over images (`summarize`), paired differences
with a reference method over the images both ran on (`paired_differences`), and the word
that a paired interval earns (`paired_verdicts`: better, worse, undecided, too few images),
which the book's claim verdicts and ``fdcam compare`` both use."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from fdcam.checks import check_positive_int
from fdcam.errors import FdcamError
from fdcam.evaluation.pointing import pointing_game

# ---------------------------------------------------------------------------------- summaries


def _default_metrics(df: pd.DataFrame) -> list[str]:
    return [m for m in ("insertion", "deletion", "overall", "hit") if m in df.columns]


def image_bootstrap(per_image: Sequence[np.ndarray],
                    statistic: Callable[..., np.ndarray], n_resamples: int,
                    quantiles: tuple[float, float], seed: int) -> tuple[float, float]:
    """Percentile interval of `statistic` when images (clusters) are resampled with
    replacement: each array of `per_image` ([n_images, ...]) is summed over a resample, and
    ``statistic(*sums)`` gives one value per resample ([n_resamples]); the interval is its
    `quantiles`. The one bootstrap of the tables (means, paired differences, the
    15-pixel pointing game's per-class mean)."""
    n = len(per_image[0])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(n_resamples, n))
    values = statistic(*(array[pick].sum(axis=1) for array in per_image))
    low, high = np.quantile(values, list(quantiles))
    return float(low), float(high)


def _bootstrap(sums: np.ndarray, counts: np.ndarray, n_resamples: int, confidence: float,
               seed: int) -> tuple[float, float]:
    """Percentile CI of Σsums/Σcounts when images (clusters) are resampled with replacement."""
    tail = (1 - confidence) / 2
    return image_bootstrap((sums, counts), np.divide, n_resamples, (tail, 1 - tail), seed)


def _per_image(values: pd.Series, images: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    grouped = values.astype(float).groupby(images.to_numpy(), sort=True)
    return grouped.sum().to_numpy(), grouped.count().to_numpy().astype(float)


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    check_positive_int(n_resamples, "n_resamples")
    if not 0 < confidence < 1:
        raise FdcamError(f"confidence must be in (0, 1); got {confidence}")


def _check_metrics(df: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    chosen = _default_metrics(df) if metrics is None else list(metrics)
    missing = [m for m in chosen if m not in df.columns]
    if missing:
        raise FdcamError(f"no column {missing[0]!r} in the table; available: "
                         f"{', '.join(df.columns)}")
    return chosen


def summarize(df: pd.DataFrame, *, metrics: Sequence[str] | None = None,
              n_resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Mean of each metric per method with a bootstrap confidence interval.

    One row per (method, metric): ``n`` rows used, ``mean``, ``ci_low``, ``ci_high``. Error
    rows and empty cells are left out. The bootstrap resamples images with replacement
    (all of an image's targets together, since they share the image) `n_resamples` times
    and takes the percentile interval; the generator is seeded per (method, metric), so a
    summary does not depend on which other methods the table holds. Metrics default to
    insertion, deletion, overall and (for pointing-game tables) hit — the paper's Eq. 12
    accuracy; `fdcam.evaluation.pointing.pointing_game` gives the per-class 15-pixel variant.
    """
    _check_bootstrap(n_resamples, confidence)
    chosen = _check_metrics(df, metrics)
    ok = df[df["error"].isna()] if "error" in df.columns else df
    rows = []
    for method, group in ok.groupby("method", sort=False):
        for metric in chosen:
            valid = group[group[metric].notna()]
            if valid.empty:
                continue
            sums, counts = _per_image(valid[metric], valid["image"])
            low, high = _bootstrap(sums, counts, n_resamples, confidence, seed)
            rows.append({"method": method, "metric": metric, "n": len(valid),
                         "mean": float(sums.sum() / counts.sum()),
                         "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["method", "metric", "n", "mean", "ci_low", "ci_high"])


def paired_differences(df: pd.DataFrame, reference: str = "fdcam", *,
                       metrics: Sequence[str] | None = None, n_resamples: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean difference method − reference on the same (image, target) pairs, with a CI.

    For every other method, rows are paired with the reference's on (image, target); pairs
    where either side failed or is empty are dropped. ``mean_difference`` = mean of
    (method − reference); the paired bootstrap resamples images, keeping each image's
    pairs together. Columns: method, reference, metric, n, mean_difference, ci_low, ci_high.
    """
    _check_bootstrap(n_resamples, confidence)
    chosen = _check_metrics(df, metrics)
    ok = df[df["error"].isna()] if "error" in df.columns else df
    names = list(dict.fromkeys(df["method"]))
    if reference not in names:
        raise FdcamError(f"reference method {reference!r} is not in the table; "
                         f"methods: {', '.join(map(str, names))}")
    base = ok[ok["method"] == reference]
    rows = []
    for method in names:
        if method == reference:
            continue
        other = ok[ok["method"] == method]
        paired = other.merge(base, on=["image", "target"], suffixes=("", "_ref"))
        for metric in chosen:
            valid = paired[paired[metric].notna() & paired[f"{metric}_ref"].notna()]
            if valid.empty:
                continue
            diff = valid[metric].astype(float) - valid[f"{metric}_ref"].astype(float)
            sums, counts = _per_image(diff, valid["image"])
            low, high = _bootstrap(sums, counts, n_resamples, confidence, seed)
            rows.append({"method": method, "reference": reference, "metric": metric,
                         "n": len(valid), "mean_difference": float(sums.sum() / counts.sum()),
                         "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["method", "reference", "metric", "n",
                                       "mean_difference", "ci_low", "ci_high"])


#: Metrics where a lower value is the better one (the deletion AUC); higher is better elsewhere.
LOWER_IS_BETTER = frozenset({"deletion"})

#: A bootstrap over fewer images than this cannot say how wide an interval is (one image
#: resampled gives an interval of width 0): such comparisons get "too few images".
MIN_IMAGES = 20


def paired_verdicts(paired: pd.DataFrame, images: pd.Series | int | None = None,
                    min_images: int = MIN_IMAGES) -> pd.Series:
    """The word each row of `paired_differences` earns for its method against the reference.

    With d = method − reference oriented so that d > 0 favours the method (−d for the
    metrics of `LOWER_IS_BETTER`) and [lo, hi] its 95 % interval so oriented:

    * better — lo > 0 (the interval excludes 0 on the method's side);
    * worse — hi < 0 (it excludes 0 on the reference's side);
    * undecided — otherwise (the interval contains 0);
    * too few images — the comparison rests on fewer than `min_images` images (`images`:
      per row, or one count for all; None: never).

    paired: rows with metric, ci_low, ci_high -> str Series on the same index.
    """
    sign = np.where(paired["metric"].isin(LOWER_IS_BETTER), -1.0, 1.0)
    low = np.minimum(sign * paired["ci_low"].astype(float), sign * paired["ci_high"].astype(float))
    high = np.maximum(sign * paired["ci_low"].astype(float),
                      sign * paired["ci_high"].astype(float))
    words = np.where(low > 0, "better", np.where(high < 0, "worse", "undecided")).astype(object)
    if images is not None:
        counts = np.broadcast_to(np.asarray(images), words.shape)
        words = np.where(counts < min_images, "too few images", words)
    return pd.Series(words, index=paired.index, dtype=object)


def format_summary(df: pd.DataFrame) -> str:
    """A results table as text: per method, mean [95 % CI] of each metric (and pointing)."""
    ok = df[df["error"].isna()]
    if ok.empty:
        return "no finished rows yet"
    summary = summarize(df)
    summary["cell"] = [f"{m:.4f} [{lo:.4f}, {hi:.4f}]"
                       for m, lo, hi in summary[["mean", "ci_low", "ci_high"]].itertuples(
                           index=False)]
    wide = summary.pivot(index="method", columns="metric", values="cell")
    wide = wide[[m for m in _default_metrics(df) if m in wide.columns]]
    wide.insert(0, "n", summary.groupby("method")["n"].max())
    text = wide.to_string()
    if "hit" in df.columns and ok["hit"].notna().any():
        text += "\n\npointing game\n" + pointing_game(df).to_string(index=False)
    return text
