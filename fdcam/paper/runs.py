"""The resumable runs behind the tables: the faithfulness run (Tables I, III, IV) and the
pointing run (Table II) of a `Setup`, written through `fdcam.evaluation.runner` into CSVs
that later notebooks reuse, sharded runs and their merge.

Runs, in the order that lets later notebooks reuse earlier rows::

    setup = setups.setup("offline")
    runs.run_faithfulness(setup, runs.table_methods(setup, "I"))   # nb 05
    runs.run_pointing(setup)                                        # nb 06
    runs.run_faithfulness(setup)       # nb 07: Tables III, IV; FD-CAM rows reused

Targets: the faithfulness runs explain each image's top-1 class (the model's decision, the
usual choice of the insertion/deletion literature); the pointing game explains every class
with a box in the image. Score-CAM costs one full forward pass per channel: on a CPU the
offline profile runs it on the photos but on 2 of the 8 mosaics only
(`Setup.heavy_methods`, `Setup.heavy_limits`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fdcam.checks import check_int, check_shard
from fdcam.errors import FdcamError
from fdcam.evaluation.pointing import ClassBoxes
from fdcam.evaluation.results_file import merge_results, read_results, write_table
from fdcam.evaluation.runner import OnExplained, evaluate
from fdcam.paper.figure_cache import FigureKeeper
from fdcam.paper.settings import SAME_MAP
from fdcam.paper.setups import PointingImage, Setup

# ------------------------------------------------------------------------------------- runs


def table_methods(setup: Setup, table: str) -> tuple[str, ...]:
    """The methods of the paper's Table `table` ("I" … "IV") in this setup's profile."""
    key = str(table).upper().removeprefix("TABLE").strip()
    if key not in setup.methods:
        raise FdcamError(f"unknown table {table!r}; expected one of {', '.join(setup.methods)}")
    return setup.methods[key]


def run_faithfulness(setup: Setup, methods: Sequence[str] | None = None, *,
                     shard: tuple[int, int] = (0, 1), batch_size: int | None = None,
                     retry_failed: bool = False, engine: str = "auto",
                     share_switching: bool = True) -> Path:
    """Insertion/deletion AUCs (Tables I, III, IV) into ``faithfulness.csv``; resumable.

    `methods` default to those of Tables I, III and IV. Rows already in the CSV are not
    recomputed, so notebook 07 reuses notebook 05's FD-CAM rows. Heavy methods run on the
    first ``setup.heavy_limits["faithfulness"]`` images only. ``shard=(i, n)`` writes
    ``faithfulness.shard<i>of<n>.csv`` (join them with `merge_shards`); `batch_size` is the
    number of perturbed images per forward pass (default ``setup.batch_size``);
    ``retry_failed=True`` recomputes the rows that hold an error; `engine` is
    `fdcam.evaluation.runner.evaluate`'s (default ``auto``, see
    `fdcam.evaluation.engine.forward_engine`), as is `share_switching` (FD-CAM's variants
    reuse one image's switching). Returns the CSV's path.
    """
    chosen = check_methods(methods, setup.faithfulness_methods, "faithfulness")
    # Identical maps are evaluated once, under their source's name (`SAME_MAP`).
    chosen = list(dict.fromkeys(SAME_MAP.get(m, m) for m in chosen))
    return _run(setup, "faithfulness", chosen, shard, batch_size, retry_failed, engine,
                share_switching)


def run_pointing(setup: Setup, methods: Sequence[str] | None = None, *,
                 shard: tuple[int, int] = (0, 1), retry_failed: bool = False,
                 engine: str = "auto") -> Path:
    """The pointing game (Table II) into ``pointing.csv``; resumable, like `run_faithfulness`.

    Every class with a box in an image is explained; no insertion/deletion curves are
    computed (their columns stay empty), only the clean image's class probability.
    """
    chosen = check_methods(methods, setup.pointing_methods, "pointing")
    return _run(setup, "pointing", chosen, shard, None, retry_failed, engine)


def _run(setup: Setup, kind: str, methods: list[str], shard: tuple[int, int],
         batch_size: int | None, retry_failed: bool = False,
         engine: str = "auto", share_switching: bool = True) -> Path:
    from fdcam.baselines import make_explainer

    shard = check_shard(shard)
    batch = setup.batch_size if batch_size is None else check_int(batch_size, "batch_size")
    path = csv_path(setup, kind, shard)
    if not setup.run_missing:  # the rows are computed elsewhere; read what is there
        return path
    pointing = kind == "pointing"
    model = setup.pointing_model if pointing else setup.model
    if pointing:
        images = [(image_id, setup.pointing_images[image_id].image)
                  for image_id in setup.pointing_images]
        boxes: Mapping[str, Mapping[int, ClassBoxes]] | None = _BoxesView(setup.pointing_images)
    else:
        images = list(setup.faithfulness_images)
        boxes = None
    keeper: OnExplained = FigureKeeper(setup, kind)
    if pointing:  # and whether each map was blank (`fdcam.paper.blank_maps`), for free
        from fdcam.paper.blank_maps import PointingBlankKeeper

        keeper = _both(keeper, PointingBlankKeeper(setup))
    # Light methods over every image first, then the heavy ones over their prefix: both
    # append to the same CSV, whose (image, method, target) rows make reruns resume.
    groups: dict[int, list[str]] = {}
    for method in methods:
        groups.setdefault(len(setup.images_for(method, kind)), []).append(method)
    for count, names in sorted(groups.items(), reverse=True):
        if count == 0:
            continue
        factories = {name: functools.partial(make_explainer, name, **method_options(name, setup))
                     for name in names}
        evaluate(images[:count], factories, model, path, boxes=boxes, batch_size=batch,
                 step_fraction=setup.step_fraction, shard=shard, device=setup.device,
                 curves=not pointing, on_explained=keeper, retry_failed=retry_failed,
                 engine=engine, share_switching=share_switching)
    if not path.exists():  # nothing to run (e.g. only heavy methods, limit 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        from fdcam.evaluation.results import result_columns

        path.write_text(",".join(result_columns(pointing)) + "\n")
    return path


def _both(first: OnExplained, second: OnExplained) -> OnExplained:
    """One ``on_explained`` callback that calls `first`, then `second`."""

    def call(*args: Any) -> None:
        first(*args)
        second(*args)

    return call


def method_options(method: str, setup: Setup) -> dict[str, Any]:
    """`make_explainer` options of `method` in `setup` (the batch size of the methods that
    run many masked copies; their maps do not depend on it)."""
    from fdcam.baselines import batch_options

    return batch_options(method, setup.device)


class _BoxesView(Mapping[str, Mapping[int, ClassBoxes]]):
    """image_id -> boxes of the pointing images, without building them all up front."""

    def __init__(self, images: Mapping[str, PointingImage]) -> None:
        self.images = images

    def __getitem__(self, image_id: str) -> Mapping[int, ClassBoxes]:
        return self.images[image_id].boxes

    def __iter__(self) -> Iterator[str]:
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)


def check_methods(methods: Sequence[str] | None, default: tuple[str, ...],
                  kind: str) -> list[str]:
    from fdcam.baselines import METHODS

    if methods is None:
        return list(default)
    if isinstance(methods, str):
        methods = [methods]
    chosen = list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in METHODS]
    if not chosen or unknown:
        raise FdcamError(f"unknown method {(unknown or [''])[0]!r} for the {kind} run; "
                         f"available: {', '.join(METHODS)}")
    return chosen


def csv_path(setup: Setup, kind: str, shard: tuple[int, int] = (0, 1)) -> Path:
    """The CSV a run of `kind` ("faithfulness" or "pointing") appends to: the main table, or
    ``<table>.shard<i>of<n>.csv`` for shard (i, n) of a sharded run."""
    main = setup.faithfulness_csv if kind == "faithfulness" else setup.pointing_csv
    if shard == (0, 1):
        return main
    return main.with_name(f"{main.stem}.shard{shard[0]}of{shard[1]}{main.suffix}")


def merge_shards(setup: Setup) -> list[Path]:
    """Join ``*.shard<i>of<n>.csv`` (and the main CSV, if any) into the main CSVs.

    A key present twice keeps a successful row over an error row (`merge_results`). The
    shard files are left in place. Returns the main CSVs written.
    """
    written = []
    for main in (setup.faithfulness_csv, setup.pointing_csv):
        shards = sorted(main.parent.glob(f"{main.stem}.shard*of*{main.suffix}"))
        if not shards:
            continue
        parts = ([main] if main.exists() else []) + shards
        write_table(merge_results(parts), main)
        written.append(main)
    return written


# -------------------------------------------------------------------------- rows, read back


def faithfulness_results(setup: Setup) -> pd.DataFrame:
    """The faithfulness CSV restricted to this setup's images and methods (heavy methods to
    their image limit): a larger earlier run in the same folder does not leak in."""
    return read_run_results(setup, "faithfulness", setup.faithfulness_methods)


#: Which (image, class) pairs of the pointing game a table uses: all of them, or the hard
#: subset (`hard_pairs`).
PAIRS = ("all", "hard")


def pointing_results(setup: Setup, pairs: str = "all") -> pd.DataFrame:
    """The pointing-game CSV restricted to this setup's images and methods; ``pairs="hard"``
    keeps the hard subset only (`hard_pairs`)."""
    if pairs not in PAIRS:
        raise FdcamError(f"pairs must be one of {', '.join(PAIRS)}; got {pairs!r}")
    df = read_run_results(setup, "pointing", setup.pointing_methods)
    return hard_pairs(df) if pairs == "hard" else df


def hard_pairs(rows: pd.DataFrame) -> pd.DataFrame:
    """The pointing game's hard subset, fixed before its results were looked at: in every
    image with two or more classes, the class the model finds *least* probable (the
    ``probability`` column: the softmax of the whole image, which no explanation method
    affects) — the paper's Fig. 1 cat at 0.68 % next to a dog at 97.12 %. A
    discriminative map must leave the more probable objects for it. One pair per
    multi-class image (a 2×2 mosaic: the weakest of its four photos)."""
    probabilities = rows.drop_duplicates(["image", "target"])[["image", "target",
                                                                "probability"]]
    multi = probabilities.groupby("image")["target"].transform("size") >= 2
    candidates = probabilities[multi & probabilities["probability"].notna()]
    weakest = candidates.loc[candidates.groupby("image")["probability"].idxmin(),
                             ["image", "target"]]
    keys = pd.MultiIndex.from_frame(weakest)
    chosen = pd.MultiIndex.from_frame(rows[["image", "target"]]).isin(keys)
    return rows[chosen].reset_index(drop=True)


def read_run_results(setup: Setup, kind: str, methods: Sequence[str]) -> pd.DataFrame:
    path = setup.faithfulness_csv if kind == "faithfulness" else setup.pointing_csv
    if not path.exists():
        run = "run_faithfulness" if kind == "faithfulness" else "run_pointing"
        raise FdcamError(f"no results at {path}; run runs.{run}(setup) first")
    df = read_results(path)
    # A method evaluated once for two names (`SAME_MAP`) appears under both.
    aliases = [df[df["method"] == source].assign(method=alias)
               for alias, source in SAME_MAP.items()
               if alias in methods and not (df["method"] == alias).any()]
    df = pd.concat([df, *aliases], ignore_index=True) if aliases else df
    keep = pd.Series(False, index=df.index)
    for method in methods:
        allowed = set(setup.images_for(method, kind))
        keep |= (df["method"] == method) & df["image"].isin(allowed)
    return df[keep].reset_index(drop=True)


def rows_done(setup: Setup) -> pd.DataFrame:
    """How many rows (and failures) each method has in this setup's results, per run."""
    parts = []
    for kind, reader in (("faithfulness", faithfulness_results), ("pointing", pointing_results)):
        try:
            df = reader(setup)
        except FdcamError:
            continue
        grouped = df.groupby("method", sort=False)
        parts.append(pd.DataFrame({"run": kind, "rows": grouped.size(),
                                   "errors": grouped["error"].count()}))
    if not parts:
        return pd.DataFrame(columns=["run", "rows", "errors"])
    return pd.concat(parts).rename_axis("method").reset_index()


def wall_time(setup: Setup) -> pd.DataFrame:
    """What the profile's staged evaluation cost (``wall_time.csv`` beside its results,
    written by ``make evaluate-imagenet-sample``): per stage and what it evaluated (``what``:
    network and layer, as the run logged it; a stage's number names another layer once the
    main layer changed), the wall-clock seconds summed over the runs that did it (a stopped
    run logs the part it did), how many runs, whether one finished, and their threads and
    devices. Empty where no staged run logged time.

    Wall clock, not CPU time: runs that shared the machine with other work count in full.
    Time a run spent stopped (SIGSTOP) is left out and shown as ``paused_hours``, for the
    runs that logged it (the log's ``paused`` column; older lines did not, and count it).
    """
    columns = ["stage", "what", "hours", "paused_hours", "runs", "finished", "threads",
               "device"]
    path = _wall_time_log(setup)
    if path is None:
        return pd.DataFrame(columns=columns)
    log = pd.read_csv(path)
    if "subject" not in log.columns:  # a log written before stages named their subject
        log["subject"] = ""
    log["subject"] = log["subject"].fillna("")
    if "paused" not in log.columns:  # a log written before runs noticed being stopped
        log["paused"] = float("nan")

    def listed(values: pd.Series) -> str:
        return ", ".join(map(str, sorted(set(values))))

    table = log.groupby(["stage", "subject"], sort=True).agg(
        seconds=("seconds", "sum"), paused=("paused", lambda v: v.sum(min_count=1)),
        runs=("seconds", "size"),
        finished=("finished", "any"),
        threads=("threads", listed), device=("device", listed)).reset_index()
    table["hours"] = (table["seconds"] / 3600).round(2)
    table["paused_hours"] = (table["paused"] / 3600).round(2)
    return table.rename(columns={"subject": "what"})[columns]


def _wall_time_log(setup: Setup) -> Path | None:
    """The staged evaluation's ``wall_time.csv``: in the results folder or the one above it
    (imagenet-sample: one log for all layers). None where no run logged time."""
    folder = setup.results_dir
    return next((p / "wall_time.csv" for p in (folder, folder.parent)
                 if (p / "wall_time.csv").exists()), None)


def elapsed_hours(setup: Setup) -> float:
    """Hours during which at least one staged run of the profile was running: the union of
    the runs' intervals [start, start + seconds + paused] in ``wall_time.csv`` (runs of two
    stages often ran side by side, one per core, so this is less than `wall_time`'s sum).
    0 where no run logged time."""
    path = _wall_time_log(setup)
    if path is None:
        return 0.0
    log = pd.read_csv(path)
    start = (pd.to_datetime(log["started_utc"], utc=True)
             - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    paused = log["paused"].fillna(0) if "paused" in log.columns else 0.0
    intervals = sorted(zip(start, start + log["seconds"] + paused, strict=True))
    total, end = 0.0, float("-inf")
    for begin, stop in intervals:
        if stop > end:
            total += stop - max(begin, end)
            end = stop
    return total / 3600
