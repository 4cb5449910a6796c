"""Blank maps: what the protocol scores when a method's map says nothing.

A CAM is ReLU(Σ_k ω_k A^k) (Eq. 1); where the weighted sum is ≤ 0 at every position, the
map is zero everywhere — blank. Insertion and deletion rank a blank map's pixels in
row-major order (the stable sort of `fdcam.evaluation.faithfulness.saliency_ranks`), so its
AUCs measure that order, top rows first, not the method. Each image has one such pair of
AUCs, the same for every method and layer of one network: `run_blank_maps` computes it per
image (rows of the pseudo-method ``blank`` in ``blank_map.csv`` beside the results of the
network's main layer), and `blank_map_counts` finds the rows of each method that equal it,
i.e. the images on which the method's map was blank.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from fdcam.evaluation.results_file import read_results
from fdcam.evaluation.runner import evaluate
from fdcam.explanation import Explanation
from fdcam.models import LoadedModel
from fdcam.paper.names import method_label
from fdcam.paper.setups import Setup
from fdcam.targets import resolve_targets

#: The pseudo-method of the blank map's rows.
BLANK = "blank"
#: Largest AUC difference at which a method's row counts as the blank map's. Both come
#: from the same ranks and the same forward engine; the margin only absorbs a row computed
#: with another number of threads (≤ 4e-4 measured for non-blank maps, none for blank ones).
TOLERANCE = 1e-6


class BlankMap:
    """An explainer whose map is zero at every pixel: the map a CAM gives where its
    weighted sum is nowhere positive."""

    def __init__(self, model: nn.Module | LoadedModel) -> None:
        self.network = model.model if isinstance(model, LoadedModel) else model

    def __call__(self, x: Tensor, target: object = None) -> Explanation:
        batch, _, height, width = x.shape
        with torch.no_grad():
            logits = self.network(x)
        targets, multi = resolve_targets(logits.argmax(1) if target is None else target,
                                         batch, logits.shape[1])
        shape = (batch, targets.shape[1], height, width) if multi else (batch, height, width)
        return Explanation(saliency=x.new_zeros(shape), targets=targets, logits=logits,
                           method=BLANK)


def blank_csv(setup: Setup) -> Path:
    """``blank_map.csv`` of `setup`'s network: beside its layer's results folder where that
    folder is named by the layer (imagenet-sample: one file for all layers, since the blank
    map's AUCs do not depend on the layer), else in the results folder."""
    folder = setup.results_dir
    if folder.name == setup.model.target_layer:
        folder = folder.parent
    return folder / "blank_map.csv"


def run_blank_maps(setup: Setup, images: Sequence[str] | None = None, *,
                   engine: str = "auto") -> Path:
    """The blank map's insertion and deletion AUCs on `setup`'s faithfulness images (default:
    all; else those of the given ids), each image's top-1 class as the target, appended to
    `blank_csv`; resumable like every results file. A setup that does not run missing rows
    (``run_missing`` False: the imagenet-sample notebooks, whose rows the staged evaluation
    makes) only reads them. Returns the file's path."""
    path = blank_csv(setup)
    if not setup.run_missing:
        return path
    items = setup.faithfulness_images
    if images is not None:
        wanted = set(images)
        items = [item for item in items if item[0] in wanted]
    # A blank map has no layer: rows of any layer's setup of this network share the file.
    evaluate(items, {BLANK: BlankMap}, setup.model, path, batch_size=setup.batch_size,
             step_fraction=setup.step_fraction, device=setup.device, engine=engine,
             settings={"layer": None})
    return path


def blank_map_counts(setup: Setup, methods: Sequence[str] | None = None,
                     tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per method of `setup`'s faithfulness rows (default: all in the file), on how many of
    its images that have a blank-map row its insertion and deletion AUCs both equal the
    blank map's (within `tolerance`): the images where its map was blank.

    Columns: method, label, n (its images with a blank-map row), blank, share (blank / n).
    Empty where no blank-map rows exist yet.
    """
    columns = ["method", "label", "n", "blank", "share"]
    path = blank_csv(setup)
    if not path.exists() or not setup.faithfulness_csv.exists():
        return pd.DataFrame(columns=columns)
    blank = read_results(path)
    blank = blank[blank["error"].isna()].set_index(["image", "target"])
    rows = read_results(setup.faithfulness_csv)
    rows = rows[rows["error"].isna()]
    if methods is not None:
        rows = rows[rows["method"].isin(methods)]
    reference = blank[["insertion", "deletion"]].add_suffix("_blank")
    joined = rows.join(reference, on=["image", "target"], how="inner")
    joined["is_blank"] = ((joined["insertion"] - joined["insertion_blank"]).abs() <= tolerance) \
        & ((joined["deletion"] - joined["deletion_blank"]).abs() <= tolerance)
    order = list(dict.fromkeys(methods if methods is not None else rows["method"]))
    table = joined.groupby("method").agg(n=("is_blank", "size"), blank=("is_blank", "sum"))
    table = table.reindex([m for m in order if m in table.index]).reset_index()
    table["label"] = table["method"].map(method_label)
    table["share"] = table["blank"] / table["n"]
    return table[columns]


def blank_map_sentence(counts: pd.DataFrame, where: str) -> str:
    """The page's sentence for a `blank_map_counts` table: the methods with blank maps, most
    often first, "on k of n photos (share)", and what that means for their rows; `where`
    names the network and layer (e.g. "On EfficientNet-Lite0 at `_swish`")."""
    if counts.empty:
        return f"{where}, no blank-map rows have been computed yet."
    blank = counts[counts["blank"] > 0].sort_values(["share", "label"],
                                                     ascending=[False, True])
    n = int(counts["n"].max())
    if blank.empty:
        return f"{where}, no method's map was blank on any of the {n} photos."
    parts = [f"{row.label}'s on {int(row.blank)} of {int(row.n)} photos ({row.share:.0%})"
             for row in blank.itertuples(index=False)]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"{where}, the map is blank — zero at every pixel — for {listed}. On those "
            f"photos the method's insertion and deletion AUCs are the blank map's: they "
            f"measure the row-by-row order, not the method.")
