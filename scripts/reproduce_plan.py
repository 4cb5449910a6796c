"""What `scripts.reproduce` will do: the plan of a run (inputs, steps, shard, device, the
results folder and whether it holds real or dry-run results), checked before any step runs."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdcam.checks import parse_shard, resolve_device
from fdcam.errors import FdcamError
from fdcam.paper import settings
from fdcam.paths import REPO_ROOT

ROOT = REPO_ROOT
"""The repository (the package is installed editable)."""

STEPS: tuple[str, ...] = ("standins", "weights", "voc", "finetune", "faithfulness", "pointing",
                          "merge", "notebooks", "book")
SHARD_STEPS: tuple[str, ...] = ("weights", "voc", "finetune", "faithfulness", "pointing")
"""What a run with ``--shard i/n`` (n > 1) does by default: everything up to the merge."""

CHAPTERS: tuple[str, ...] = tuple(
    path.stem for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
"""The book's notebook chapters: the repository's notebooks/NN_*.ipynb (a run whose
``notebooks_in`` lacks one of them reports it)."""

# Where things go by default (all ignored by git).
PAPER_RESULTS = settings.RESULTS_ROOT / "paper"  # setups.setup's defaults
PAPER_CHECKPOINTS = ROOT / "data" / "checkpoints" / "voc-vgg16"
VOC_DOWNLOAD_ROOT = ROOT / "data" / "downloads" / "voc"
DRY_ROOT = ROOT / "data" / "cache" / "dry-run"
DRY_RESULTS = settings.RESULTS_ROOT / "paper-dry-run"
DRY_BUILD = ROOT / "_build" / "dry-run"

# The dry run: few images, a two-step fine-tuning (the rest: setups.setup(dry_run=True)).
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
    engine: str = "auto"  # the protocol's forward passes (fdcam.evaluation.engine)
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
    setup: Any = None  # fdcam.paper.setups.Setup, shared by the evaluation steps


def say(message: str) -> None:
    print(f"[reproduce] {message}", flush=True)


# ----------------------------------------------------------------------------- the plan


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
    shard = parse_shard(args.shard or "0/1", "SHARD")
    dry_run = bool(args.dry_run)
    steps = _steps(args.steps, dry_run, shard[1] > 1)
    device = resolve_device(args.device or ("cpu" if dry_run else "auto"))
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
            progress_every=60.0, engine=args.engine or "eager")
    imagenet_val = _path(args.imagenet_val)
    voc_root = _path(args.voc_root) or (VOC_DOWNLOAD_ROOT if args.voc_download else None)
    return Plan(
        dry_run=False, device=device, imagenet_val=imagenet_val, voc_root=voc_root,
        voc_download=bool(args.voc_download), voc_checkpoint=voc_checkpoint,
        checkpoint_dir=_path(args.checkpoint_dir) or PAPER_CHECKPOINTS,
        results_dir=_path(args.results_dir) or PAPER_RESULTS,
        notebooks_out=ROOT / "book", book_source=ROOT, shard=shard, steps=steps,
        n_images=args.n_images, n_voc=args.n_voc, faithfulness_methods=None,
        pointing_methods=None, seed=args.seed, jb_flags=jb_flags,
        engine=args.engine or "auto")


def check_plan(plan: Plan) -> None:
    """Check the inputs the chosen steps need, before any of them runs (one line each)."""
    from fdcam.evaluation.imagenet import PAPER_MANIFEST_FILE, ImageNetVal, read_manifest
    from fdcam.evaluation.voc import VOC2007

    steps = set(plan.steps)
    _check_results_kind(plan)
    if plan.voc_checkpoint is not None and not plan.voc_checkpoint.is_file():
        raise FdcamError(f"VOC_CHECKPOINT={plan.voc_checkpoint} does not exist; expected the "
                         f"weights written by python -m fdcam.paper.finetune")
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


def write_run_record(plan: Plan) -> None:
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    record = plan.results_dir / RUN_RECORD
    if not record.is_file():
        record.write_text(json.dumps({"format": _RECORD_FORMAT, "kind": plan.kind}) + "\n")
