"""One command reproduces the paper: ``make reproduce`` (``python -m fdcam.reproduce``).

The steps, in order; each is safe to repeat and a killed run continues where it stopped:

=============  ==============================================================================
standins       dry run only: generated ILSVRC2012 val and VOCdevkit trees (`fdcam.standins`)
weights        torchvision's VGG16 ``IMAGENET1K_V1`` into the torch hub cache (skipped when
               cached; a dry run uses random weights and downloads nothing)
voc            with ``--voc-download``: VOC2007 through torchvision (skipped when present)
finetune       VGG16 fine-tuned on VOC2007 train (`fdcam.finetune`): skipped when its final
               weights exist, resumed from its checkpoint otherwise; ``--voc-checkpoint``
               gives weights made elsewhere and skips it
faithfulness   Tables I, III, IV: `fdcam.experiments.run_faithfulness` (resumable rows)
pointing       Table II: `fdcam.experiments.run_pointing` (resumable rows)
merge          `fdcam.experiments.merge_shards`: the shards' rows into the result tables
notebooks      papermill runs every ``notebooks/NN_*.ipynb`` with ``profile=paper`` and the
               paths above (as ``make notebooks``: kernel python3, no progress bar) into
               ``book/`` — a dry run into its own folder, so the committed notebooks stay
book           Jupyter Book builds the HTML (``-W --keep-going``)
=============  ==============================================================================

Sharding: ``--shard i/n`` evaluates every n-th image in the faithfulness and pointing steps,
so n machines (or n processes) share the work; such a run stops after ``pointing``. When
all n have finished into the same results folder, ``--steps merge,notebooks,book`` joins
them; the merged tables equal an unsharded run's. Every shard records the SHA-256 of the
fine-tuned weights it used, and ``merge`` refuses shards that disagree: fine-tune once and
share the weights (``--voc-checkpoint``), as GPU training is not bit-identical across
machines.

``--dry-run`` runs the same pipeline offline on a CPU in minutes: VGG16 with random weights,
stand-in trees of a few images (`fdcam.standins`), a fine-tuning of two steps, and what
``experiments.setup(..., dry_run=True)`` sets: every method, Score-CAM and Ablation-CAM
(~512 VGG16 passes per map) on the first image of each run only, insertion/deletion curves
with 12.5 % of the image per step (the paper's 3.6 % takes three times as long). Results go
to ``data/results/paper-dry-run``, notebooks (each run with ``dry_run=True``) to
``_build/dry-run/notebooks`` and the book to ``_build/dry-run/book``. Notebooks that do
not declare a ``dry_run`` parameter are skipped in it (they would load ImageNet weights).
A results folder remembers whether it holds real or dry-run results and refuses the other.

Examples::

    python -m fdcam.reproduce --imagenet-val /data/ILSVRC2012/val --voc-root /data/VOCdevkit
    python -m fdcam.reproduce --imagenet-val … --voc-root … --shard 0/4    # one of 4
    python -m fdcam.reproduce --imagenet-val … --voc-root … --steps merge,notebooks,book
    python -m fdcam.reproduce --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fdcam import experiments, notebooks
from fdcam.errors import FdcamError
from fdcam.models import file_sha256

ROOT = Path(__file__).resolve().parent.parent
"""The repository (the package is installed editable)."""

STEPS: tuple[str, ...] = ("standins", "weights", "voc", "finetune", "faithfulness", "pointing",
                          "merge", "notebooks", "book")
SHARD_STEPS: tuple[str, ...] = ("weights", "voc", "finetune", "faithfulness", "pointing")
"""What a run with ``--shard i/n`` (n > 1) does by default: everything up to the merge."""

CHAPTERS: tuple[str, ...] = ("01_channel_similarity", "02_grouped_switching",
                             "03_weight_combination", "04_qualitative", "05_faithfulness",
                             "06_discriminability", "07_ablations")
"""The book's notebook chapters (see _toc.yml); those not written yet are reported."""

# Where things go by default (all ignored by git).
PAPER_RESULTS = experiments.RESULTS_ROOT / "paper"  # experiments.setup's defaults
PAPER_CHECKPOINTS = ROOT / "data" / "checkpoints" / "voc-vgg16"
VOC_DOWNLOAD_ROOT = ROOT / "data" / "downloads" / "voc"
DRY_ROOT = ROOT / "data" / "cache" / "dry-run"
DRY_RESULTS = experiments.RESULTS_ROOT / "paper-dry-run"
DRY_BUILD = ROOT / "_build" / "dry-run"

# The dry run: few images, a two-step fine-tuning (the rest: experiments.setup(dry_run=True)).
DRY_IMAGENET_IMAGES = 2
DRY_VOC_TRAIN, DRY_VOC_VAL = 4, 2
DRY_FINETUNE = {"epochs": 1, "batch_size": 2, "limit": DRY_VOC_TRAIN, "pretrained": False}

RUN_RECORD = "reproduce.json"
_RECORD_FORMAT = "fdcam-reproduce/1"


@dataclass(frozen=True)
class Plan:
    """Everything one `reproduce` call does, resolved and checked before any work."""

    dry_run: bool
    device: str
    imagenet_val: Path | None
    voc_root: Path | None
    voc_download: bool
    voc_checkpoint: Path | None  # given: fine-tuning is skipped
    checkpoint_dir: Path
    results_dir: Path
    notebooks_out: Path
    book_source: Path  # the folder jupyter-book builds (the repository, or a dry-run copy)
    shard: tuple[int, int]
    steps: tuple[str, ...]
    n_images: int | None
    n_voc: int | None  # VOC2007 val images (experiments' n_mosaics); None: all
    faithfulness_methods: tuple[str, ...] | None  # None: the experiment's own default (all)
    pointing_methods: tuple[str, ...] | None
    seed: int = 0
    jb_flags: tuple[str, ...] = ("-W", "--keep-going")
    standins_dir: Path | None = None
    notebooks_in: Path = ROOT / "notebooks"
    progress_every: float = 300.0  # seconds between row counts of a running evaluation
    # papermill writes here first; kept when a notebook fails. None: notebooks.scratch_folder
    # ($FDCAM_PAPERMILL_SCRATCH or a new temporary folder, never inside the repository).
    scratch: Path | None = None

    @property
    def kind(self) -> str:
        return "dry-run" if self.dry_run else "paper"


@dataclass
class State:
    """What the steps learn on the way (the fine-tuned weights' path) and their timings."""

    voc_checkpoint: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    missing_notebooks: list[str] = field(default_factory=list)  # chapters not written yet
    not_dry_runnable: list[str] = field(default_factory=list)  # no dry_run parameter
    failed_notebooks: list[str] = field(default_factory=list)
    setup: Any = None  # fdcam.experiments.Setup, shared by the evaluation steps


def say(message: str) -> None:
    print(f"[reproduce] {message}", flush=True)


# ----------------------------------------------------------------------------- the plan


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise FdcamError(f"SHARD must look like i/n (e.g. 0/4); got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise FdcamError(f"SHARD i/n needs 0 <= i < n; got {text!r}")
    return index, count


def _device(name: str) -> str:
    if name in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise FdcamError(f"unknown DEVICE {name!r}; expected auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FdcamError(f"DEVICE={name} was asked for but no CUDA device is available")
    return name


def _path(text: str | None) -> Path | None:
    return Path(text).expanduser().resolve() if text else None


def _steps(text: str | None, dry_run: bool, sharded: bool) -> tuple[str, ...]:
    if text:
        chosen = [s.strip() for s in text.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in STEPS]
        if unknown or not chosen:
            raise FdcamError(f"unknown step {(unknown or [text])[0]!r}; steps: "
                             f"{', '.join(STEPS)}")
        steps = [s for s in STEPS if s in chosen]  # always in pipeline order
    else:
        steps = list(SHARD_STEPS if sharded else STEPS)
        if dry_run and "standins" not in steps:
            steps.insert(0, "standins")
    if not dry_run and "standins" in steps:
        if text:
            raise FdcamError("step standins belongs to the dry run (--dry-run)")
        steps.remove("standins")
    return tuple(steps)


def make_plan(args: argparse.Namespace) -> Plan:
    """Resolve the command line into a `Plan`; every bad input is a one-line FdcamError."""
    shard = _shard(args.shard or "0/1")
    dry_run = bool(args.dry_run)
    steps = _steps(args.steps, dry_run, shard[1] > 1)
    device = _device(args.device or ("cpu" if dry_run else "auto"))
    voc_checkpoint = _path(args.voc_checkpoint)
    jb_flags = tuple(args.jb_flags.split()) if args.jb_flags is not None else (
        "-W", "--keep-going")
    if dry_run:
        if args.imagenet_val or args.voc_root or args.voc_download:
            say("dry run: IMAGENET_VAL, VOC_ROOT and VOC_DOWNLOAD are ignored (stand-ins)")
        results = _path(args.results_dir) or DRY_RESULTS
        if results == PAPER_RESULTS:
            raise FdcamError(f"RESULTS_DIR={results} is the paper's results folder; a dry run "
                             f"writes elsewhere (default {DRY_RESULTS})")
        dry_root = DRY_ROOT
        return Plan(
            dry_run=True, device=device, imagenet_val=None, voc_root=None, voc_download=False,
            voc_checkpoint=voc_checkpoint, checkpoint_dir=dry_root / "voc-finetune",
            results_dir=results, notebooks_out=DRY_BUILD / "notebooks",
            book_source=DRY_BUILD / "book", shard=shard, steps=steps,
            n_images=args.n_images or DRY_IMAGENET_IMAGES, n_voc=args.n_voc,
            faithfulness_methods=None, pointing_methods=None, seed=args.seed,
            jb_flags=jb_flags, standins_dir=dry_root / "standins",
            progress_every=60.0)
    imagenet_val = _path(args.imagenet_val)
    voc_root = _path(args.voc_root) or (VOC_DOWNLOAD_ROOT if args.voc_download else None)
    return Plan(
        dry_run=False, device=device, imagenet_val=imagenet_val, voc_root=voc_root,
        voc_download=bool(args.voc_download), voc_checkpoint=voc_checkpoint,
        checkpoint_dir=_path(args.checkpoint_dir) or PAPER_CHECKPOINTS,
        results_dir=_path(args.results_dir) or PAPER_RESULTS,
        notebooks_out=ROOT / "book", book_source=ROOT, shard=shard, steps=steps,
        n_images=args.n_images, n_voc=args.n_voc, faithfulness_methods=None,
        pointing_methods=None, seed=args.seed, jb_flags=jb_flags)


def check_plan(plan: Plan) -> None:
    """Check the inputs the chosen steps need, before any of them runs (one line each)."""
    from fdcam.data import PAPER_MANIFEST_FILE, VOC2007, ImageNetVal, read_manifest

    steps = set(plan.steps)
    _check_results_kind(plan)
    if plan.voc_checkpoint is not None and not plan.voc_checkpoint.is_file():
        raise FdcamError(f"VOC_CHECKPOINT={plan.voc_checkpoint} does not exist; expected the "
                         f"weights written by python -m fdcam.finetune")
    if plan.dry_run:
        return  # the stand-in trees are made by the first step
    uses_setup = steps & {"faithfulness", "pointing", "merge", "notebooks"}
    if uses_setup:
        if plan.imagenet_val is None:
            raise FdcamError("IMAGENET_VAL is not set; expected the ILSVRC2012 val folder "
                             "(class subfolders, or flat with LOC_val_solution.csv)")
        if not plan.imagenet_val.is_dir():
            raise FdcamError(f"IMAGENET_VAL={plan.imagenet_val} does not exist; expected the "
                             f"ILSVRC2012 val folder")
    if steps & {"faithfulness", "notebooks"}:
        assert plan.imagenet_val is not None
        names = read_manifest(PAPER_MANIFEST_FILE)[:plan.n_images]
        try:  # every image of the manifest is there, before hours of work
            ImageNetVal(plan.imagenet_val, manifest=names)
        except FdcamError as error:
            raise FdcamError(f"IMAGENET_VAL={plan.imagenet_val}: {error}") from error
    if uses_setup or steps & {"voc", "finetune"}:
        if plan.voc_root is None:
            raise FdcamError("VOC_ROOT is not set; expected VOCdevkit/ (or VOC_DOWNLOAD=1 to "
                             "fetch VOC2007 into data/downloads/voc)")
        if not (plan.voc_download and "voc" in steps):
            splits = ["val"]
            if "finetune" in steps and plan.voc_checkpoint is None:
                splits.insert(0, "train")
            for split in splits:
                try:
                    VOC2007(plan.voc_root, split)
                except FdcamError as error:
                    raise FdcamError(f"VOC_ROOT={plan.voc_root}: {error}") from error


def _check_results_kind(plan: Plan) -> None:
    record = plan.results_dir / RUN_RECORD
    if not record.is_file():
        return
    try:
        kind = json.loads(record.read_text(encoding="utf-8")).get("kind")
    except (ValueError, AttributeError, OSError):  # not JSON, not UTF-8, not an object
        raise FdcamError(f"{record} is not a reproduce record (expected a JSON object such "
                         f"as {{\"format\": \"{_RECORD_FORMAT}\", \"kind\": \"paper\"}}); "
                         f"use another RESULTS_DIR or delete that file") from None
    if kind != plan.kind:
        raise FdcamError(f"RESULTS_DIR={plan.results_dir} holds {kind or 'unknown'} results; "
                         f"a {plan.kind} run never writes there: use another RESULTS_DIR")


def _write_run_record(plan: Plan) -> None:
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    record = plan.results_dir / RUN_RECORD
    if not record.is_file():
        record.write_text(json.dumps({"format": _RECORD_FORMAT, "kind": plan.kind}) + "\n")


# ----------------------------------------------------------------------------- steps


def step_standins(plan: Plan, state: State) -> None:
    from fdcam.standins import write_standins

    assert plan.standins_dir is not None
    trees = write_standins(plan.standins_dir, n_imagenet=max(plan.n_images or 0, 3),
                           n_voc_train=DRY_VOC_TRAIN, n_voc_val=DRY_VOC_VAL, seed=plan.seed)
    say(f"stand-in ILSVRC2012 val: {trees.imagenet_val} ({len(trees.imagenet_names)} images)")
    say(f"stand-in VOCdevkit: {trees.voc_root} (train {len(trees.voc_train_ids)}, "
        f"val {len(trees.voc_val_ids)})")


def _inputs(plan: Plan) -> tuple[Path, Path]:
    """ILSVRC val and VOCdevkit: the user's, or the dry run's stand-ins."""
    if plan.dry_run:
        from fdcam.standins import read_standins

        assert plan.standins_dir is not None
        trees = read_standins(plan.standins_dir)
        return trees.imagenet_val, trees.voc_root
    if plan.imagenet_val is None or plan.voc_root is None:
        raise FdcamError("IMAGENET_VAL and VOC_ROOT are needed for this step")
    return plan.imagenet_val, plan.voc_root


def step_weights(plan: Plan, state: State) -> None:
    if plan.dry_run:
        say("dry run: VGG16 with random weights; nothing to download")
        return
    from fdcam.models import load_model

    load_model("vgg16", pretrained=True)
    say(f"VGG16 IMAGENET1K_V1 weights are in {Path(torch.hub.get_dir()) / 'checkpoints'}")


def step_voc(plan: Plan, state: State) -> None:
    from fdcam.data import VOC2007

    if plan.dry_run:
        say("dry run: the stand-in VOCdevkit is used")
        return
    assert plan.voc_root is not None
    for split in ("train", "val"):
        voc = VOC2007(plan.voc_root, split, download=plan.voc_download)
        say(f"VOC2007 {split}: {len(voc)} images in {voc.root}")


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (shards sharing a folder fine-tune once, not n times)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def step_finetune(plan: Plan, state: State) -> None:
    from fdcam.finetune import FINAL_NAME, finetune_voc

    if plan.voc_checkpoint is not None:
        say(f"using the given fine-tuned weights {plan.voc_checkpoint}")
        state.voc_checkpoint = plan.voc_checkpoint
        return
    _, voc_root = _inputs(plan)
    options: dict[str, Any] = dict(DRY_FINETUNE) if plan.dry_run else {}
    done = (plan.checkpoint_dir / FINAL_NAME.format(arch="vgg16")).is_file()
    with _exclusive(plan.checkpoint_dir / ".lock"):
        # Finished weights of the same recipe are returned at once; a checkpoint resumes.
        final = finetune_voc(voc_root, plan.checkpoint_dir, device=plan.device,
                             seed=plan.seed, log=say, **options)
    if done:
        say(f"fine-tuned weights already there: {final}")
    state.voc_checkpoint = final


def _checkpoint_path(plan: Plan, state: State) -> Path:
    """The fine-tuned VOC weights: just made, given, or where the step finetune puts them."""
    from fdcam.finetune import FINAL_NAME

    return state.voc_checkpoint or plan.voc_checkpoint or (
        plan.checkpoint_dir / FINAL_NAME.format(arch="vgg16"))


def _voc_checkpoint(plan: Plan, state: State) -> Path:
    path = _checkpoint_path(plan, state)
    if not path.is_file():
        raise FdcamError(f"no fine-tuned VOC weights at {path}; run the step finetune first "
                         f"or pass VOC_CHECKPOINT")
    return path


def _setup(plan: Plan, state: State) -> Any:
    """`fdcam.experiments.setup` of the paper profile, made once per run."""
    if state.setup is not None:
        return state.setup
    imagenet_val, voc_root = _inputs(plan)
    setup = experiments.setup(
        "paper", imagenet_val=imagenet_val, voc_root=voc_root,
        voc_checkpoint=_voc_checkpoint(plan, state), n_images=plan.n_images,
        n_mosaics=plan.n_voc, device=plan.device, results_dir=plan.results_dir,
        dry_run=plan.dry_run, seed=plan.seed)
    state.setup = setup
    return setup


@contextlib.contextmanager
def _progress(path: Path, expected: int | None, interval: float) -> Iterator[None]:
    """Every `interval` seconds, say how many rows `path` holds (a long run is not silent)."""
    import threading

    stop = threading.Event()
    start = time.perf_counter()
    initial = _rows(path)

    def report() -> None:
        while not stop.wait(interval):
            rows = _rows(path)
            elapsed = time.perf_counter() - start
            text = f"{path.name}: {rows} rows"
            done = rows - initial
            if expected and done > 0 and rows < expected:
                eta = elapsed / done * (expected - rows)
                text += f" of {expected}, about {eta / 60:.0f} min to go"
            say(text)

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _rows(path: Path) -> int:
    """Lines after the header (and the identity line of `fdcam.evaluate`'s format 2)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline()
            lines = 1 + sum(1 for _ in handle) if first else 0
    except OSError:
        return 0
    return max(0, lines - (2 if first.startswith(b"# fdcam-results/") else 1))


def _record_shard(plan: Plan, state: State, step: str, finished: bool = False) -> None:
    """Provenance of one shard's evaluation, written when it starts (``finished`` false) and
    again when it ends: merge checks that the shards agree and that all of them finished."""
    index, count = plan.shard
    folder = plan.results_dir / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"step": step, "shard": [index, count], "finished": finished,
              "device": plan.device,
              "torch": torch.__version__, "dry_run": plan.dry_run,
              "gpu": torch.cuda.get_device_name() if plan.device.startswith("cuda") else None}
    if step == "pointing":
        record["voc_checkpoint_sha256"] = file_sha256(_voc_checkpoint(plan, state))
    path = folder / f"{step}-{index}-of-{count}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)  # a kill leaves the old record or the new one, never half


def step_faithfulness(plan: Plan, state: State) -> None:
    setup = _setup(plan, state)
    _record_shard(plan, state, "faithfulness")
    methods = plan.faithfulness_methods or setup.faithfulness_methods
    index, count = plan.shard
    expected = sum(len(range(index, len(setup.images_for(m, "faithfulness")), count))
                   for m in methods)  # heavy methods may run on fewer images
    with _progress(experiments.csv_path(setup, "faithfulness", plan.shard), expected,
                   plan.progress_every):
        path = experiments.run_faithfulness(setup, plan.faithfulness_methods, shard=plan.shard)
    _record_shard(plan, state, "faithfulness", finished=True)
    say(f"faithfulness rows (Tables I, III, IV), shard {index}/{count}: {path}")


def step_pointing(plan: Plan, state: State) -> None:
    setup = _setup(plan, state)
    _record_shard(plan, state, "pointing")
    with _progress(experiments.csv_path(setup, "pointing", plan.shard), None,
                   plan.progress_every):
        path = experiments.run_pointing(setup, plan.pointing_methods, shard=plan.shard)
    _record_shard(plan, state, "pointing", finished=True)
    say(f"pointing-game rows (Table II), shard {plan.shard[0]}/{plan.shard[1]}: {path}")


def _read_shard_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        index, count = record["shard"]
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise ValueError("bad shard")
    except (ValueError, KeyError, TypeError, OSError):
        raise FdcamError(f"{path} is not a shard record (expected the JSON written by a "
                         f"--shard run: step, shard [i, n], finished); rerun that shard or "
                         f"delete the file") from None
    return dict(record)


def check_shard_records(results_dir: Path) -> None:
    """The shards of a results folder must form one complete set per step — one n, every
    shard 0..n-1 present and finished — and share the fine-tuned weights."""
    for step in ("faithfulness", "pointing"):
        paths = sorted((results_dir / "shards").glob(f"{step}-*-of-*.json"))
        records = {path: _read_shard_record(path) for path in paths}
        sharded = {p: r for p, r in records.items() if r["shard"][1] > 1}
        counts = sorted({r["shard"][1] for r in sharded.values()})
        if len(counts) > 1:
            raise FdcamError(f"the {step} shards in {results_dir} come from runs split "
                             f"{' and '.join(map(str, counts))} ways; merge one set (move the "
                             f"other's CSVs and records away)")
        for count in counts:
            have = {r["shard"][0] for r in sharded.values()}
            missing = sorted(set(range(count)) - have)
            if missing:
                raise FdcamError(f"{step} shard {missing[0]}/{count} has not run in "
                                 f"{results_dir}; run SHARD={missing[0]}/{count} before the "
                                 f"merge")
            unfinished = sorted(r["shard"][0] for r in sharded.values()
                                if r.get("finished") is False)
            if unfinished:
                raise FdcamError(f"{step} shard {unfinished[0]}/{count} in {results_dir} has "
                                 f"not finished (killed, or still running); rerun it before "
                                 f"the merge")
    records = [_read_shard_record(p)
               for p in sorted((results_dir / "shards").glob("pointing-*-of-*.json"))]
    hashes = {r.get("voc_checkpoint_sha256") for r in records}
    if len(hashes) > 1:
        raise FdcamError(f"the pointing shards in {results_dir} used different fine-tuned "
                         f"weights ({len(hashes)} SHA-256s); fine-tune once and pass the same "
                         f"VOC_CHECKPOINT to every shard, then rerun the odd ones")


def step_merge(plan: Plan, state: State) -> None:
    check_shard_records(plan.results_dir)
    setup = _setup(plan, state)
    merged = experiments.merge_shards(setup)
    say(f"merged the shards in {plan.results_dir}" + (f": {merged}" if merged else ""))


def notebook_parameters(plan: Plan, state: State) -> dict[str, Any]:
    """The papermill parameters of the paper profile (absolute paths: cwd differs)."""
    imagenet_val, voc_root = _inputs(plan)
    checkpoint = _checkpoint_path(plan, state)
    return {"profile": "paper", "n_images": plan.n_images, "n_mosaics": plan.n_voc,
            "device": plan.device,
            "imagenet_val": str(imagenet_val), "voc_root": str(voc_root),
            "voc_checkpoint": str(checkpoint), "results_dir": str(plan.results_dir),
            "seed": plan.seed, "dry_run": plan.dry_run}


def step_notebooks(plan: Plan, state: State) -> None:
    """Execute every notebook with the parameters it declares (papermill would inject the
    others as unused variables, with a warning each). A dry run executes only notebooks
    that declare ``dry_run``: the others would load the ImageNet weights."""
    sources = notebooks.sources(plan.notebooks_in)
    present = {p.stem for p in sources}
    state.missing_notebooks = [c for c in CHAPTERS if c not in present]
    if state.missing_notebooks:
        say(f"skipped, not written yet: {', '.join(state.missing_notebooks)}")
    parameters = notebook_parameters(plan, state)
    scratch = notebooks.scratch_folder(plan.scratch)
    for source in sources:
        declared = notebooks.declared_parameters(source)
        if plan.dry_run and "dry_run" not in declared:
            state.not_dry_runnable.append(source.stem)
            say(f"skipped {source.name} in the dry run: it has no dry_run parameter, so its "
                f"paper profile would load the ImageNet weights")
            continue
        target = plan.notebooks_out / source.name
        try:
            seconds = notebooks.execute(
                source, target, {k: v for k, v in parameters.items() if k in declared},
                scratch)
        except FdcamError as error:
            say(f"FAILED {error}")
            state.failed_notebooks.append(source.name)
            continue
        say(f"executed {source.name} -> {target} ({seconds:.0f} s)")
    if state.failed_notebooks:
        raise FdcamError(f"{len(state.failed_notebooks)} notebook(s) failed: "
                         f"{', '.join(state.failed_notebooks)}; their partial outputs are in "
                         f"{scratch}")


def _dry_book_source(plan: Plan) -> Path:
    """A book source folder of the dry run: the repository's prose and configuration, and
    the dry run's executed notebooks (the committed ones in book/ stay untouched)."""
    source = plan.book_source
    shutil.rmtree(source, ignore_errors=True)
    (source / "book").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, source / name)
    for path in (ROOT / "book").iterdir():
        if path.is_file() and path.suffix != ".ipynb":
            shutil.copy2(path, source / "book" / path.name)
    for path in sorted(plan.notebooks_out.glob("*.ipynb")):
        shutil.copy2(path, source / "book" / path.name)
    (source / "_build").mkdir()
    mathjax = ROOT / "_build" / "mathjax"
    if mathjax.is_dir():
        (source / "_build" / "mathjax").symlink_to(mathjax, target_is_directory=True)
    return source


def step_book(plan: Plan, state: State) -> None:
    if not (ROOT / "_build" / "mathjax" / "mathjax" / "MathJax.js").is_file():
        raise FdcamError("MathJax is not in _build/mathjax; run `make mathjax` (make reproduce "
                         "does) before the step book")
    source = _dry_book_source(plan) if plan.dry_run else plan.book_source
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book if jupyter_book.exists() else "jupyter-book"), "build",
               str(source), *plan.jb_flags]
    say(" ".join(command))
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise FdcamError(f"jupyter-book build failed (exit {result.returncode}); see its "
                         f"output above")
    say(f"book: {source / '_build' / 'html' / 'index.html'}")


STEP_FUNCTIONS: dict[str, Callable[[Plan, State], None]] = {
    "standins": step_standins, "weights": step_weights, "voc": step_voc,
    "finetune": step_finetune, "faithfulness": step_faithfulness, "pointing": step_pointing,
    "merge": step_merge, "notebooks": step_notebooks, "book": step_book,
}


def run(plan: Plan) -> State:
    """Run the plan's steps in order; returns what they recorded."""
    check_plan(plan)
    if plan.dry_run:
        os.environ["FDCAM_OFFLINE"] = "1"  # a download attempt fails at once, in one line
    if set(plan.steps) & {"faithfulness", "pointing", "merge"}:
        _write_run_record(plan)
    state = State()
    say(f"{plan.kind} run on {plan.device}: steps {', '.join(plan.steps)}; results in "
        f"{plan.results_dir}" + (f"; shard {plan.shard[0]}/{plan.shard[1]}"
                                 if plan.shard[1] > 1 else ""))
    if plan.dry_run:
        limits = experiments.DRY_RUN_HEAVY_LIMITS
        heavy = ", ".join(experiments.SETTINGS["paper"].heavy)
        say(f"dry run: random-weight VGG16, stand-in data, {plan.n_images} ImageNet images; "
            f"every method, {heavy} on the first {limits['faithfulness']} faithfulness and "
            f"{limits['pointing']} pointing-game image(s); curves with "
            f"{experiments.DRY_RUN_STEP_FRACTION:.1%} of the image per step")
    for step in plan.steps:
        start = time.perf_counter()
        say(f"== {step}")
        STEP_FUNCTIONS[step](plan, state)
        state.timings[step] = time.perf_counter() - start
    total = sum(state.timings.values())
    say("done: " + ", ".join(f"{s} {t:.0f} s" for s, t in state.timings.items())
        + f"; total {total:.0f} s")
    if state.missing_notebooks or state.not_dry_runnable:
        say("notebooks not executed: " + "; ".join(
            part for part in (
                f"not written yet: {', '.join(state.missing_notebooks)}"
                if state.missing_notebooks else "",
                f"no dry_run parameter: {', '.join(state.not_dry_runnable)}"
                if state.not_dry_runnable else "") if part))
    if plan.shard[1] > 1 and "merge" not in plan.steps:
        say(f"shard {plan.shard[0]}/{plan.shard[1]} finished; when all {plan.shard[1]} have, "
            f"run: make reproduce STEPS=merge,notebooks,book (same IMAGENET_VAL, VOC_ROOT, "
            f"RESULTS_DIR)")
    return state


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fdcam.reproduce",
        description="Reproduce the paper end to end (resumable), or dry-run it on a CPU.")
    parser.add_argument("--imagenet-val", default=None,
                        help="ILSVRC2012 val folder (IMAGENET_VAL)")
    parser.add_argument("--voc-root", default=None, help="VOCdevkit folder (VOC_ROOT)")
    parser.add_argument("--voc-download", action="store_true",
                        help="fetch VOC2007 through torchvision (VOC_DOWNLOAD=1)")
    parser.add_argument("--voc-checkpoint", default=None,
                        help="fine-tuned VOC VGG16 weights made elsewhere: skip fine-tuning")
    parser.add_argument("--checkpoint-dir", default=None,
                        help=f"fine-tuning checkpoints (default {PAPER_CHECKPOINTS})")
    parser.add_argument("--results-dir", default=None,
                        help=f"result tables (default {PAPER_RESULTS}; dry run {DRY_RESULTS})")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--shard", default=None, metavar="i/n",
                        help="evaluate every n-th image, starting at i (SHARD)")
    parser.add_argument("--steps", default=None,
                        help=f"comma-separated subset of: {', '.join(STEPS)}")
    parser.add_argument("--n-images", type=int, default=None,
                        help="only the first N images (default: all; dry run 2)")
    parser.add_argument("--n-voc", type=int, default=None,
                        help="only the first N VOC2007 val images (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true",
                        help="offline on a CPU: random weights, stand-in data (DRY_RUN=1)")
    parser.add_argument("--jb-flags", default=None,
                        help="jupyter-book flags (default '-W --keep-going')")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = make_plan(args)
        run(plan)
    except FdcamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
