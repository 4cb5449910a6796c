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

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; flags are appended one row set at a time
    fcntl = None  # type: ignore[assignment]

import pandas as pd
import torch
from torch import Tensor, nn

from fdcam.evaluation.results_file import read_results
from fdcam.evaluation.runner import evaluate
from fdcam.explanation import Explanation
from fdcam.models import LoadedModel
from fdcam.paper.figure_findings import join_words, model_at_layer
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
    if folder.name == getattr(setup.model, "target_layer", None):
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


def blank_rows(setup: Setup, methods: Sequence[str] | None = None,
               tolerance: float = TOLERANCE) -> pd.DataFrame:
    """`setup`'s faithfulness rows (`fdcam.paper.runs.faithfulness_results`: its images and
    methods, default all) that have a blank-map row for their image and class, with
    ``blank``: whether both AUCs equal the blank map's within `tolerance`. Empty (with
    that column) where no blank-map rows exist yet."""
    from fdcam.paper.runs import faithfulness_results

    path = blank_csv(setup)
    if not path.exists() or not setup.faithfulness_csv.exists():
        return pd.DataFrame({"image": [], "method": [], "target": [], "insertion": [],
                             "deletion": [], "overall": [], "blank": pd.Series([], dtype=bool)})
    reference = read_results(path)
    reference = reference[reference["error"].isna()].set_index(["image", "target"])
    reference = reference[["insertion", "deletion"]].add_suffix("_blank")
    rows = faithfulness_results(setup)
    rows = rows[rows["error"].isna()]
    if methods is not None:
        rows = rows[rows["method"].isin(methods)]
    joined = rows.join(reference, on=["image", "target"], how="inner")
    blank = ((joined["insertion"] - joined["insertion_blank"]).abs() <= tolerance) \
        & ((joined["deletion"] - joined["deletion_blank"]).abs() <= tolerance)
    return joined.drop(columns=["insertion_blank", "deletion_blank"]).assign(
        blank=blank.astype(bool))


def blank_map_counts(setup: Setup, methods: Sequence[str] | None = None,
                     tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per method (`blank_rows`' methods, in that order): on how many of its images with a
    blank-map row its insertion and deletion AUCs both equal the blank map's — the images
    where its map was blank.

    Columns: method, label, n (its images with a blank-map row), blank, share (blank / n).
    Empty where no blank-map rows exist yet.
    """
    return _counts(blank_rows(setup, methods, tolerance), methods)


def _counts(rows: pd.DataFrame, methods: Sequence[str] | None) -> pd.DataFrame:
    """Per method of rows with a ``blank`` column (in `methods`' order, else the rows'):
    method, label, n, blank, share."""
    columns = ["method", "label", "n", "blank", "share"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    order = list(dict.fromkeys(methods if methods is not None else rows["method"]))
    table = rows.groupby("method").agg(n=("blank", "size"), blank=("blank", "sum"))
    table = table.reindex([m for m in order if m in table.index]).reset_index()
    table["label"] = table["method"].map(method_label)
    table["share"] = table["blank"] / table["n"]
    return table[columns]


def without_blank_maps(setup: Setup, methods: Sequence[str] | None = None,
                       metric: str = "overall", tolerance: float = TOLERANCE) -> pd.DataFrame:
    """FD-CAM minus each method with blank maps, in `metric`, on the images where neither
    map is blank: whether FD-CAM's lead over a method rests on that method's blank maps.

    Paired as in `fdcam.paper.tables.paired_vs_fdcam` (images resampled, 95 %); a positive
    difference is FD-CAM ahead in insertion and overall, behind in deletion. Columns:
    method, label, n (images left), fdcam_minus_rival, ci_low, ci_high, verdict ("FD-CAM
    better", "rival better", "undecided", "too few images"). Methods without blank maps
    are left out.
    """
    return _without_blank(blank_rows(setup, methods, tolerance), metric, setup.seed)


def _without_blank(rows: pd.DataFrame, metric: str, seed: int) -> pd.DataFrame:
    """`without_blank_maps` of rows with a ``blank`` column: FD-CAM minus each rival that has
    blank maps, paired on the (image, target) pairs where neither map is blank."""
    from fdcam.evaluation.statistics import paired_differences, paired_verdicts
    from fdcam.paper.by_layer import VERDICT_WORDS

    columns = ["method", "label", "n", "fdcam_minus_rival", "ci_low", "ci_high", "verdict"]
    if rows.empty or "fdcam" not in set(rows["method"]):
        return pd.DataFrame(columns=columns)
    blanks = rows[rows["blank"]]
    rivals = [m for m in dict.fromkeys(blanks["method"]) if m != "fdcam"]
    if not rivals:
        return pd.DataFrame(columns=columns)
    keys = pd.MultiIndex.from_frame(rows[["image", "target"]])

    def blank_pairs(method: str) -> pd.MultiIndex:
        return pd.MultiIndex.from_frame(
            blanks.loc[blanks["method"] == method, ["image", "target"]])

    fdcam_blank = blank_pairs("fdcam")
    parts = []
    for method in rivals:
        empty = keys.isin(blank_pairs(method)) | keys.isin(fdcam_blank)
        kept = rows[rows["method"].isin([method, "fdcam"]).to_numpy() & ~empty]
        if kept["method"].nunique() < 2:
            continue
        parts.append(paired_differences(kept, "fdcam", metrics=[metric], seed=seed))
    if not parts:
        return pd.DataFrame(columns=columns)
    paired = pd.concat(parts, ignore_index=True)
    words = paired_verdicts(paired, paired["n"]).map(VERDICT_WORDS)
    return pd.DataFrame({
        "method": paired["method"], "label": paired["method"].map(method_label),
        "n": paired["n"].astype(int), "fdcam_minus_rival": -paired["mean_difference"],
        "ci_low": -paired["ci_high"], "ci_high": -paired["ci_low"], "verdict": words},
        columns=columns)


# ------------------------------------------------------------------ the pointing game

#: Whether each map of the pointing game was blank, beside its ``pointing.csv``.
POINTING_BLANK_CSV = "pointing_blank.csv"
_POINTING_BLANK_COLUMNS = ["image", "method", "target", "blank"]


def pointing_blank_csv(setup: Setup) -> Path:
    """``pointing_blank.csv`` in `setup`'s results folder: image, method, target, blank."""
    return setup.results_dir / POINTING_BLANK_CSV


class PointingBlankKeeper:
    """An ``on_explained`` callback of the pointing game (`fdcam.evaluation.runner.evaluate`):
    appends, for each class explained, whether the method's map was blank — zero at every
    pixel, so that its peak is the first pixel in row-major order (`saliency_peak`'s tie
    rule) and its hit says where the class's box is, not what the method found."""

    def __init__(self, setup: Setup) -> None:
        self.path = pointing_blank_csv(setup)

    def __call__(self, image_id: str, method: str, classes: list[int], saliency: Tensor,
                 curves: object = None) -> None:
        maps = saliency.reshape(len(classes), -1)
        _append_flags(self.path, [(image_id, method, int(c), bool(m.max() <= 0))
                                  for c, m in zip(classes, maps, strict=True)])


def _append_flags(path: Path, rows: Sequence[tuple[str, str, int, bool]]) -> None:
    """Append flag rows under an exclusive lock (sharded runs share the file): the header
    first into an empty file, and a line break first where a killed writer left a line
    unfinished (`_read_flags` then skips that line; its flag is made again)."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.seek(0, 2)
        size = handle.tell()
        prefix = b""
        if size == 0:
            prefix = (",".join(_POINTING_BLANK_COLUMNS) + "\n").encode()
        else:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                prefix = b"\n"
        handle.seek(0, 2)
        handle.write(prefix + text.getvalue().encode("utf-8"))
        handle.flush()


def _read_flags(setup: Setup) -> pd.DataFrame:
    """The flags of `pointing_blank_csv`, the last per (image, method, target). Only whole
    rows count: a line cut by a kill (a field short, or a flag not exactly True or False)
    and repeated headers are skipped, so that their maps are checked again."""
    import csv

    path = pointing_blank_csv(setup)
    rows = []
    if path.exists():
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            for fields in csv.reader(handle):
                if (len(fields) == 4 and fields[3] in ("True", "False")
                        and fields[2].isdigit()):
                    rows.append((fields[0], fields[1], int(fields[2]), fields[3] == "True"))
    flags = pd.DataFrame(rows, columns=_POINTING_BLANK_COLUMNS)
    flags["blank"] = flags["blank"].astype(bool)
    return flags.drop_duplicates(["image", "method", "target"], keep="last")


def run_pointing_blank_maps(setup: Setup, methods: Sequence[str] | None = None) -> Path:
    """The flags of `PointingBlankKeeper` for the pointing rows made before it kept them (or
    whose flag a kill lost): each such map is made again with the method's explainer, the
    image's classes in one batch as the run makes them, and checked. A setup that does not
    run missing rows only reads them. Returns the path."""
    from fdcam.paper.figure_data import discriminability_maps
    from fdcam.paper.runs import pointing_results

    path = pointing_blank_csv(setup)
    if not setup.run_missing or not setup.pointing_csv.exists():
        return path
    rows = pointing_results(setup)
    rows = rows[rows["error"].isna()]
    if methods is not None:
        rows = rows[rows["method"].isin(methods)]
    done = pd.MultiIndex.from_frame(_read_flags(setup)[["image", "method", "target"]])
    todo = rows[~pd.MultiIndex.from_frame(rows[["image", "method", "target"]]).isin(done)]
    keeper = PointingBlankKeeper(setup)
    for (image_id, method), _ in todo.groupby(["image", "method"], sort=False):
        # The image's classes in one batch, as the run explains them (kept maps reused).
        maps = discriminability_maps(setup, image_id, [method])
        if method in maps.maps:
            keeper(image_id, method, maps.classes, maps.maps[method])
    return path


def pointing_blank_rows(setup: Setup, methods: Sequence[str] | None = None,
                        pairs: str = "all") -> pd.DataFrame:
    """`setup`'s pointing rows (`fdcam.paper.runs.pointing_results`, `pairs` "all" or
    "hard") that have a blank flag, with ``blank`` and ``hit`` in percent (0 or 100)."""
    from fdcam.paper.runs import pointing_results

    flags = _read_flags(setup)
    if flags.empty or not setup.pointing_csv.exists():
        return pd.DataFrame({"image": [], "method": [], "target": [], "hit": [],
                             "blank": pd.Series([], dtype=bool)})
    rows = pointing_results(setup, pairs)
    rows = rows[rows["error"].isna()]
    if methods is not None:
        rows = rows[rows["method"].isin(methods)]
    joined = rows.merge(flags, on=["image", "method", "target"], how="inner")
    return joined.assign(hit=joined["hit"].astype("Float64") * 100)


def pointing_blank_counts(setup: Setup, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Per method: on how many of its image–class pairs with a flag its map was blank.
    Columns: method, label, n, blank, share, hit_rate (its pointing accuracy in % on the
    pairs where its map was not blank)."""
    rows = pointing_blank_rows(setup, methods)
    table = _counts(rows, methods)
    kept = rows[~rows["blank"]].groupby("method")["hit"].mean().astype(float)
    return table.assign(hit_rate=kept.reindex(table["method"]).to_numpy())


def pointing_without_blank(setup: Setup, methods: Sequence[str] | None = None
                           ) -> pd.DataFrame:
    """FD-CAM minus each method with blank maps in pointing accuracy (percentage points),
    on the image–class pairs where neither map is blank (`without_blank_maps`' columns)."""
    return _without_blank(pointing_blank_rows(setup, methods), "hit", setup.seed)


def pointing_blank_sentence(counts: pd.DataFrame, without: pd.DataFrame, where: str) -> str:
    """The pointing game's blank maps in words: which methods had them on how many pairs,
    what a blank map's hit means, and FD-CAM minus each of them without those pairs."""
    from fdcam.paper.numbers import format_difference

    if counts.empty:
        return f"{where}, no pointing map has been checked for blankness yet."
    listed = _listed(counts, "pairs")
    if not listed:
        return (f"{where}, no method's map was blank on any of the "
                f"{int(counts['n'].max())} image–class pairs checked.")
    text = (f"{where}, the pointing map is blank — zero at every pixel — for "
            f"{listed}. A blank map's maximum is its first pixel, top left, "
            f"so its hit says whether the class's box covers that corner, not what the method "
            f"found.")
    if len(without):
        quoted = [f"{r.label} {format_difference(r.fdcam_minus_rival, r.ci_low, r.ci_high, 1)}"
                  f" (n = {int(r.n)}, {r.verdict})" for r in without.itertuples(index=False)]
        text += (" FD-CAM minus each, in points, on the pairs where neither map is blank: "
                 + "; ".join(quoted) + ".")
    return text


def blank_map_sentence(counts: pd.DataFrame, where: str) -> str:
    """The page's sentence for a `blank_map_counts` table: the methods with blank maps, most
    often first, "on k of n photos (share)", and what that means for their rows; `where`
    names the network and layer (e.g. "On EfficientNet-Lite0 at `_swish`")."""
    if counts.empty:
        return f"{where}, no blank-map rows have been computed yet."
    listed = _listed(counts, "photos")
    if not listed:
        return (f"{where}, no method's map was blank on any of the {int(counts['n'].max())} "
                f"photos.")
    return (f"{where}, the map is blank — zero at every pixel — for {listed}. On those "
            f"photos the method's insertion and deletion AUCs are the blank map's: they "
            f"measure the row-by-row order, not the method.")


def blank_map_table(counts: pd.DataFrame, without: pd.DataFrame) -> pd.DataFrame:
    """For the page: `blank_map_counts` beside `without_blank_maps` — per method its photos,
    blank maps and their share, and FD-CAM minus it on the photos where neither map is blank
    (difference [95 % interval], n), "—" where it had no blank map."""
    from fdcam.paper.numbers import MISSING, format_difference

    kept = without.set_index("method") if len(without) else without
    cells = []
    for row in counts.itertuples(index=False):
        if len(kept) and row.method in kept.index:
            other = kept.loc[row.method]
            difference = format_difference(other["fdcam_minus_rival"], other["ci_low"],
                                           other["ci_high"])
            cells.append(f"{difference}, n = {int(other['n'])}")
        elif row.blank:  # blank maps, but no photo left where neither map is
            cells.append("no photo left")
        else:
            cells.append(MISSING)
    return _shown_counts(counts, "photos").assign(
        **{"FD-CAM − it, overall, without blank maps": cells})


def pointing_blank_table(counts: pd.DataFrame) -> pd.DataFrame:
    """For the page: `pointing_blank_counts` as per method its image–class pairs, blank
    maps, their share and its pointing accuracy (%) on the pairs where its map was not
    blank ("—" where every map was blank)."""
    from fdcam.paper.numbers import MISSING

    return _shown_counts(counts, "pairs").assign(
        **{"accuracy (%) without its blank maps": [MISSING if pd.isna(v) else f"{v:.1f}"
                                                   for v in counts["hit_rate"]]})


def _shown_counts(counts: pd.DataFrame, unit: str) -> pd.DataFrame:
    """A `_counts` table's first columns as the page shows them: method (its label), `unit`
    (its images or pairs), blank maps and their share."""
    return pd.DataFrame({"method": counts["label"].to_numpy(), unit: counts["n"].to_numpy(),
                         "blank maps": counts["blank"].to_numpy(),
                         "share": [_share(v) for v in counts["share"]]})


def without_blank_sentence(without: pd.DataFrame) -> str:
    """Whether FD-CAM's lead over the methods with blank maps survives leaving those photos
    out, from `without_blank_maps`: "" where no method had blank maps."""
    if without.empty:
        return ""
    from fdcam.paper.numbers import format_difference

    def quoted(row: pd.Series) -> str:
        difference = format_difference(row["fdcam_minus_rival"], row["ci_low"],
                                       row["ci_high"])
        return f"{row['label']} ({difference}, n = {int(row['n'])})"

    groups = {word: [quoted(r) for _, r in without.iterrows() if r["verdict"] == word]
              for word in ("FD-CAM better", "rival better", "undecided", "too few images")}
    parts = []
    if groups["FD-CAM better"]:
        parts.append("FD-CAM is ahead of " + join_words(groups["FD-CAM better"]))
    if groups["rival better"]:
        parts.append("FD-CAM is behind " + join_words(groups["rival better"]))
    if groups["undecided"]:
        parts.append("the interval holds zero against " + join_words(groups["undecided"]))
    if groups["too few images"]:
        parts.append("too few photos are left to decide against "
                     + join_words(groups["too few images"]))
    return ("In overall AUC on the photos where neither map is blank, " + "; ".join(parts)
            + ".")


def blank_map_summary(setup: Setup, methods: Sequence[str] | None = None) -> str:
    """`blank_map_sentence` and `without_blank_sentence` of `setup`'s rows together, naming
    its network and layer: the pages' paragraph on blank maps."""
    where = f"On {model_at_layer(setup.model)}"
    return (f"{blank_map_sentence(blank_map_counts(setup, methods), where)} "
            f"{without_blank_sentence(without_blank_maps(setup, methods))}").strip()


def _listed(counts: pd.DataFrame, unit: str) -> str:
    """The methods of `_counts` with blank maps, most often first, in words: "Grad-CAM on 35
    of 276 pairs (13%) and …"; "" where none had any."""
    blank = counts[counts["blank"] > 0].sort_values(["share", "label"],
                                                     ascending=[False, True])
    if blank.empty:
        return ""
    return join_words([f"{r.label} on {int(r.blank)} of {int(r.n)} {unit} ({_share(r.share)})"
                       for r in blank.itertuples(index=False)])


def _share(value: float) -> str:
    """A share as a whole percentage; "<1%" for a share that is not zero but rounds to it."""
    return "<1%" if 0 < value < 0.005 else f"{value:.0%}"

