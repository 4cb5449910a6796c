"""The imagenet-sample evaluation in stages, resumable: ``make evaluate-imagenet-sample``.

    python -m scripts.sample_evaluation [--photos DIR] [--threads 1] [--device cpu]
                                      [--stages 1,3,4,2] [--methods gradcam,scorecam,…]

Every stage appends rows to the profile's CSVs (`fdcam.paper.runs`), so a stopped run
resumes where it stopped (rows that hold an error are tried again); within a stage, images
are done one after another with all their methods, in a seeded order, so the rows already
written are always a complete, seeded sample of what is to come. The default order
(1, 3, 5, 6, 2; stage 4 is done) gives every table a first answer before the long stage 2
grows Table I to all photos:

1. Tables I, III, IV at the main layer (`settings.SAMPLE_LAYER`): every method,
   Score-CAM and Ablation-CAM included, on the first 250 photos of the seeded order;
2. the same tables' other methods on the remaining 750 photos;
3. Table II: the pointing game on the 250 mosaics (the heavy methods on the first 63);
4. Table I at the last activation ``_swish`` on the first `SAMPLE_SWISH_IMAGES` photos;
5. the verdict by layer: Table I's light methods on the first `SAMPLE_BY_LAYER_IMAGES`
   photos at each further layer of `SAMPLE_BY_LAYER` (inside the premise A ≥ 0), the layers
   grown side by side in steps of `SAMPLE_BY_LAYER_STEP` photos;
6. the replication: Table I with EfficientNet-Lite2 (`SAMPLE_REPLICATION_MODEL`) at the layer
   the same rule chooses from its own survey (`REPLICATION_SURVEY_CSV`), on the first
   `SAMPLE_REPLICATION_IMAGES` photos (Score-CAM and Ablation-CAM on fewer).

Every stage of insertion and deletion first computes each of its photos' blank-map AUCs
(``blank_map.csv`` per network, the pseudo-method ``blank``; `fdcam.paper.blank_maps`), by
which a method's blank maps are recognised in its rows; the pointing game records whether
each map was blank as it makes it (``pointing_blank.csv``), and stage 3 first makes the
flags its earlier rows lack — both when ``--methods`` matches ``blank`` (the default ``*``
does; ``--methods gradcam`` alone does not).

``--upgrade`` (once, after fdcam's results format 3): binds every row of the profile's
results CSVs to the content of the image it was made from (the photos and mosaics this
script evaluates, hashed as `evaluate` hashes them), so that the next run resumes them
instead of refusing them; it prints each file's rows before and after.

``--methods`` restricts every stage to those of its methods that are named (``fdcam*``
patterns allowed): rows of methods whose code is not changing can grow while another
method's rows wait to be recomputed. ``--recompute`` first deletes the rows of the named
methods from every results CSV of the profile, so that they are made again by the code
that runs now (rows made by older code would not be reproducible by ``fdcam evaluate``).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs there append one at a time
    fcntl = None  # type: ignore[assignment]

from fdcam.checks import check_device
from fdcam.errors import FdcamError
from fdcam.evaluation.engine import add_engine_arguments
from fdcam.evaluation.results import IDENTITY_ATTR
from fdcam.evaluation.results_file import read_results, write_table
from fdcam.paper import blank_maps, runs, settings, setups


def run_stage(stage: int, photos: str | None, device: str,
              patterns: Sequence[str] = ("*",), engine: str = "auto") -> setups.Setup:
    """Run one stage (see the module docstring) for its methods that match one of
    `patterns`; rows already written are skipped. `engine`: `fdcam.paper.runs`'."""
    heavy = settings.SETTINGS["imagenet-sample"].heavy_images
    if stage in (1, 2):
        made = setups.setup("imagenet-sample", imagenet_sample=photos, device=device,
                            n_images=heavy if stage == 1 else None)
        methods = made.faithfulness_methods
    elif stage == 3:
        made = setups.setup("imagenet-sample", imagenet_sample=photos, device=device)
        methods = made.pointing_methods
    elif stage == 4:
        made = setups.last_activation_setup(
            setups.setup("imagenet-sample", imagenet_sample=photos, device=device),
            imagenet_sample=photos)
        methods = runs.table_methods(made, "I")
    elif stage == 5:
        # Every layer grows by a step of photos before the next step starts (rows already
        # written are skipped), so a stopped run leaves the layers with about as many rows.
        total, step = settings.SAMPLE_BY_LAYER_IMAGES, settings.SAMPLE_BY_LAYER_STEP
        for limit in [*range(step, total, step), total]:
            for layer in settings.SAMPLE_BY_LAYER:
                made = setups.setup("imagenet-sample", imagenet_sample=photos, device=device,
                                    layer=layer, n_images=limit)
                light = [m for m in runs.table_methods(made, "I")
                         if m not in made.heavy_methods]
                _run_chosen(made, light, patterns, faithfulness=True, engine=engine)
        return made
    elif stage == 6:
        main = setups.setup("imagenet-sample", imagenet_sample=photos, device=device)
        made = setups.replication_setup(main, imagenet_sample=photos, required=True)
        assert made is not None
        methods = runs.table_methods(made, "I")
    else:
        raise ValueError(f"unknown stage {stage}; expected 1 to 6")
    _run_chosen(made, methods, patterns, faithfulness=stage != 3, engine=engine)
    return made


def _run_chosen(made: setups.Setup, methods: Sequence[str], patterns: Sequence[str], *,
                faithfulness: bool, engine: str) -> None:
    chosen = [m for m in methods if any(fnmatch.fnmatchcase(m, p) for p in patterns)]
    made.run_missing = True  # this script computes the rows that the notebooks read
    if faithfulness and any(fnmatch.fnmatchcase(blank_maps.BLANK, p) for p in patterns):
        # Each photo's blank-map AUCs first (about a second each): the rows of a method
        # whose map was blank are recognised by them (`fdcam.paper.blank_maps`). The file
        # is one per network: a run of another stage of it may be writing it.
        try:
            blank_maps.run_blank_maps(made, engine=engine)
        except FdcamError as error:
            if "being written by another process" not in str(error):
                raise
            print(f"blank maps skipped for now: {error}", flush=True)
    if not faithfulness and any(fnmatch.fnmatchcase(blank_maps.BLANK, p) for p in patterns):
        # Whether each pointing map was blank: kept as the maps are made; this makes the
        # flags of rows written before that (or lost to a kill) again.
        blank_maps.run_pointing_blank_maps(made, chosen or None)  # `--methods blank`: all
    if not chosen:
        return
    if faithfulness:
        runs.run_faithfulness(made, chosen, retry_failed=True, engine=engine)
    else:
        runs.run_pointing(made, chosen, retry_failed=True, engine=engine)


def drop_rows(patterns: Sequence[str], folder: Path | None = None) -> dict[Path, int]:
    """Delete the rows of the methods matching `patterns` from every results CSV under
    `folder` (default: the imagenet-sample results), each rewritten under its lock with its
    identity line; returns the number of rows deleted per file."""
    folder = settings.RESULTS_ROOT / "imagenet-sample" if folder is None else folder
    dropped = {}
    for path in sorted(folder.glob("*/*.csv")):
        if path.name == blank_maps.POINTING_BLANK_CSV:  # flags, not rows: made again anyway
            continue
        table = read_results(path)
        gone = table["method"].map(lambda m: any(fnmatch.fnmatchcase(m, p) for p in patterns))
        if gone.any():
            kept = table[~gone].reset_index(drop=True)
            kept.attrs = table.attrs
            write_table(kept, path)
            dropped[path] = int(gone.sum())
    return dropped


def upgrade(photos: str | None, folder: Path | None = None) -> dict[Path, tuple[int, int]]:
    """Bind the rows of the profile's format-2 results CSVs under `folder` (default: the
    imagenet-sample results, one folder per layer) to their images' content
    (`fdcam.evaluation.runner.upgrade_results` with the items `fdcam.paper.runs` gives
    `evaluate`); returns (rows before, rows after) per file."""
    from fdcam.evaluation.runner import upgrade_results

    folder = settings.RESULTS_ROOT / "imagenet-sample" if folder is None else Path(folder)
    main = setups.setup("imagenet-sample", imagenet_sample=photos)
    swish = setups.last_activation_setup(main, imagenet_sample=photos)
    counts: dict[Path, tuple[int, int]] = {}
    for made in (main, swish):
        if made is None:
            continue
        pointing = [(image_id, made.pointing_images[image_id].image)
                    for image_id in made.pointing_images]
        for kind, images in (("faithfulness", list(made.faithfulness_images)),
                             ("pointing", pointing)):
            path = folder / made.model.target_layer / f"{kind}.csv"
            if path.exists():
                counts[path] = upgrade_results(path, images)
                print(f"{path}: {counts[path][0]} rows before, {counts[path][1]} after",
                      flush=True)
    return counts


def stage_subject(stage: int) -> str:
    """What a stage evaluates, for its lines in wall_time.csv: the network and layer(s)."""
    if stage in (1, 2, 3):
        return f"{settings.SAMPLE_MODEL} at {settings.SAMPLE_LAYER}"
    if stage == 4:
        return f"{settings.SAMPLE_MODEL} at _swish"
    if stage == 5:
        return f"{settings.SAMPLE_MODEL} at " + " and ".join(settings.SAMPLE_BY_LAYER)
    layer = setups.replication_layer()
    return f"{settings.SAMPLE_REPLICATION_MODEL} at {layer or '(its survey unfinished)'}"


WALL_TIME_HEADER = "stage,started_utc,seconds,finished,threads,device,cpus,subject,paused"


def log_time(folder: Path, stage: int, started: float, seconds: float | None,
             threads: int, device: str, *, finished: bool | None = None,
             paused: float | None = None) -> None:
    """Append one line to ``<folder>/wall_time.csv``: when a stage (or a part of it, if the
    run was stopped) ran, for how long and on what (`stage_subject`: a stage's number names
    a different layer once the main layer changes), so that the run's wall time can be
    summed. `seconds` None: until now, an unfinished part; `finished` defaults to seconds
    given. `paused`: the seconds the run was stopped (SIGSTOP) and did nothing, already
    left out of `seconds` (`Heartbeat.seconds`); empty where unknown."""
    path = folder / "wall_time.csv"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    elapsed = time.time() - started if seconds is None else seconds
    done = seconds is not None if finished is None else finished
    stopped = "" if paused is None else f"{paused:.0f}"
    line = (f"{stage},{stamp},{elapsed:.0f},{done},{threads},{device},"
            f"{os.cpu_count()},{stage_subject(stage)},{stopped}\n")
    # Two runs (say stages 1 and 6 on one core each) append to the same file: the lock
    # keeps the header single and each line whole.
    with path.open("a", encoding="utf-8") as handle, _locked(handle):
        if handle.tell() == 0:
            line = WALL_TIME_HEADER + "\n" + line
        else:
            _upgrade_header(path)
        handle.write(line)


def _upgrade_header(path: Path) -> None:
    """Give a log written before a column was added (its header a prefix of
    `WALL_TIME_HEADER`) today's header, in place; its old lines read as empty there. Called
    with the file's lock held."""
    with path.open("r+", encoding="utf-8", newline="") as whole:
        text = whole.read()
        header, _, rest = text.partition("\n")
        if header != WALL_TIME_HEADER and WALL_TIME_HEADER.startswith(header + ","):
            whole.seek(0)
            whole.write(WALL_TIME_HEADER + "\n" + rest)


@contextlib.contextmanager
def _locked(handle: IO[str]) -> Iterator[None]:
    """An exclusive advisory lock on an open file where the platform has one (POSIX)."""
    if fcntl is None:
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        handle.seek(0, os.SEEK_END)
        yield
        handle.flush()
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


#: How often a running stage rewrites its heartbeat file (seconds).
HEARTBEAT_SECONDS = 60.0
#: How often the heartbeat's thread wakes to look for a pause (seconds).
TICK_SECONDS = 5.0
#: A wake this much later than due means the process was stopped (SIGSTOP) meanwhile.
PAUSE_SLACK_SECONDS = 10.0


class Heartbeat:
    """A running stage's time, kept where a killed run leaves it: every `HEARTBEAT_SECONDS`
    ``<folder>/wall_time.<pid>.running`` is rewritten with the stage, its start and the
    seconds so far. A run that ends or is stopped logs its line itself (`log_time`) and
    removes the file; one killed outright (SIGKILL, a session that ends) leaves it, and the
    next run logs it as an unfinished part (`recover`), to within a minute.

    Time the process spent stopped (SIGSTOP, to keep a benchmark or a notebook run quiet)
    is not running time: the heartbeat's thread wakes every `TICK_SECONDS`, a wake that
    comes more than `PAUSE_SLACK_SECONDS` late counts its delay as paused, and `seconds`
    leaves it out. A pause is so measured to within a tick; one shorter than the slack is
    not seen."""

    def __init__(self, folder: Path, stage: int, threads: int, device: str) -> None:
        self.path = folder / f"wall_time.{os.getpid()}.running"
        self.stage, self.threads, self.device = stage, threads, device
        self.started = time.time()
        self.paused = 0.0
        self._last = self._written = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def seconds(self) -> float:
        """Wall-clock seconds since the start, less the pauses seen so far (a pause that has
        just ended, before its late beat, included)."""
        with self._lock:
            self._account()
            return time.time() - self.started - self.paused

    def _account(self) -> None:
        now = time.monotonic()
        late = now - self._last - TICK_SECONDS
        if late > PAUSE_SLACK_SECONDS:
            self.paused += late
        self._last = now

    def _beat(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self._tick()

    def _tick(self) -> None:
        with self._lock:
            self._account()
        if time.monotonic() - self._written >= HEARTBEAT_SECONDS:
            self._write()

    def _write(self) -> None:
        self._written = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        seconds = self.seconds()
        temporary.write_text(f"{self.stage},{self.started},{seconds:.0f},"
                             f"{self.threads},{self.device},{self.paused:.0f}\n",
                             encoding="utf-8")
        temporary.replace(self.path)

    @staticmethod
    def recover(folder: Path) -> int:
        """Log the heartbeats of runs that were killed (their process is gone) as unfinished
        parts in wall_time.csv; returns how many."""
        count = 0
        # A heartbeat (``wall_time.<pid>.running``), or one that a run claimed and was killed
        # before it logged it (``….running.claimed-<its pid>``): whose process must be gone.
        for path in sorted(folder.glob("wall_time.*.running*")):
            owner = (path.name.rsplit("-", 1)[1] if ".claimed-" in path.name
                     else path.name.split(".")[1])
            if not owner.isdigit() or _alive(int(owner)):
                continue
            # Claim it first: of two runs that start together, only one renames it, so its
            # line is logged once (the other finds it gone and moves on).
            heartbeat = path.name.split(".claimed-")[0]
            claimed = path.with_name(f"{heartbeat}.claimed-{os.getpid()}")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue
            stage, started, seconds, threads, device, *paused = (
                claimed.read_text().strip().split(","))
            log_time(folder, int(stage), float(started), float(seconds), int(threads), device,
                     finished=False, paused=float(paused[0]) if paused else None)
            claimed.unlink()
            count += 1
        return count


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: `--verify`'s default tolerance: a row recomputed with another number of threads, or
#: another forward engine, moves an AUC by up to about 4e-4 (book/reproduce.md); a
#: difference of 1e-3 would change the third decimal the tables print.
VERIFY_TOLERANCE = 1e-3


def verify(recomputed: str | Path, layer: str | None = None) -> pd.DataFrame:
    """Compare rows recomputed by ``fdcam evaluate`` with the committed ones of `layer`
    (default: the layer the recomputed file records, else `settings.SAMPLE_LAYER`).

    Rows are matched on (photo, method, target), the photo by its file stem; returns per
    method the number of matched rows, how many of them have no value to compare (an error
    row on either side) and the largest absolute difference of each metric.
    """
    fresh = read_results(recomputed)
    if layer is None:
        identity = fresh.attrs.get(IDENTITY_ATTR) or {}
        layer = str(identity.get("layer") or settings.SAMPLE_LAYER)
    committed = read_results(settings.RESULTS_ROOT / "imagenet-sample" / layer
                             / "faithfulness.csv")
    fresh = fresh.assign(image=[Path(str(i)).stem for i in fresh["image"]])
    pairs = fresh.merge(committed, on=["image", "method", "target"], suffixes=("", "_committed"))
    if pairs.empty:
        raise FdcamError(f"no row of {recomputed} matches a committed row of layer {layer!r}")
    metrics = ["probability", "insertion", "deletion", "overall"]
    gaps = pd.DataFrame({m: (pairs[m] - pairs[f"{m}_committed"]).abs() for m in metrics})
    missing = gaps.isna().any(axis=1)  # an error row on either side: nothing to compare
    gaps["method"] = pairs["method"]
    table = gaps.groupby("method").max()
    table.insert(0, "rows", pairs.groupby("method").size())
    table.insert(1, "no value", missing.groupby(pairs["method"]).sum().astype(int))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.sample_evaluation",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=None,
                        help="the imagenet-sample folder (default: $IMAGENET_SAMPLE or "
                             "data/downloads/imagenet-sample)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stages", default="1,3,5,6,2")
    parser.add_argument("--methods", default="*",
                        help="comma list of the methods to run (shell patterns, e.g. "
                             "'gradcam*,scorecam'); default: all of each stage's")
    add_engine_arguments(parser)
    parser.add_argument("--verify", default=None, metavar="CSV",
                        help="instead of running: compare rows recomputed by `fdcam evaluate` "
                             "with the committed rows and print the largest differences")
    parser.add_argument("--tolerance", type=float, default=VERIFY_TOLERANCE,
                        help="with --verify: the largest difference that passes (default "
                             f"{VERIFY_TOLERANCE:g}); a larger one exits with status 1")
    parser.add_argument("--upgrade", action="store_true",
                        help="instead of running: bind the rows of the results CSVs to their "
                             "images' content (once; format 2 -> 3)")
    parser.add_argument("--results", default=None, type=Path, metavar="DIR",
                        help="with --upgrade: the folder of per-layer results (default "
                             "data/results/imagenet-sample)")
    parser.add_argument("--recompute", default=None, metavar="METHODS",
                        help="comma list of methods (shell patterns) whose rows are deleted "
                             "before the run, so that the run makes them again")
    args = parser.parse_args(argv)
    if args.verify is not None:
        table = verify(args.verify)
        print(table.to_string(float_format=lambda v: f"{v:.2e}"))
        gaps = table.drop(columns=["rows", "no value"]).to_numpy(dtype=float)
        largest = float(np.nanmax(gaps)) if np.isfinite(gaps).any() else float("nan")
        rows, missing = int(table["rows"].sum()), int(table["no value"].sum())
        if missing:
            print(f"{missing} of {rows} rows have no value to compare (an error row); the "
                  f"largest difference of the others: {largest:.2e}")
            return 1
        if largest > args.tolerance:
            print(f"largest difference: {largest:.2e} over {rows} rows, above the tolerance "
                  f"{args.tolerance:g}")
            return 1
        print(f"largest difference: {largest:.2e} over {rows} rows, within {args.tolerance:g}")
        return 0
    if args.upgrade:
        upgrade(args.photos, args.results)
        return 0
    if args.recompute:
        for path, count in drop_rows(args.recompute.split(",")).items():
            print(f"{path}: deleted {count} rows of {args.recompute} to recompute them",
                  flush=True)
    device = check_device(args.device)
    torch.set_num_threads(args.threads)
    folder = settings.RESULTS_ROOT / "imagenet-sample"
    recovered = Heartbeat.recover(folder)
    if recovered:
        print(f"logged the time of {recovered} killed run(s) in {folder / 'wall_time.csv'}",
              flush=True)
    for stage in (int(s) for s in args.stages.split(",")):
        # A stopped run (SIGTERM, Ctrl-C) still records how long it ran; a killed one
        # leaves its heartbeat for the next run to log.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        beat = Heartbeat(folder, stage, args.threads, device)
        try:
            with beat:
                run_stage(stage, args.photos, device, args.methods.split(","), args.engine)
        except BaseException:
            log_time(folder, stage, beat.started, beat.seconds(), args.threads, device,
                     finished=False, paused=beat.paused)
            raise
        seconds = beat.seconds()
        # Only a run of all its methods finishes a stage; one restricted by --methods (say
        # the blank maps alone) finishes its part.
        log_time(folder, stage, beat.started, seconds, args.threads, device,
                 finished=args.methods == "*", paused=beat.paused)
        print(f"stage {stage} done in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except FdcamError as error:  # a bad argument or missing photos: one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
