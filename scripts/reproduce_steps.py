"""The steps of `scripts.reproduce`, each safe to repeat: stand-ins, weights, VOC,
fine-tuning, the faithfulness and pointing runs (with progress and shard records), merge,
notebooks, book."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from fdcam.errors import FdcamError
from fdcam.models import file_sha256
from fdcam.paper import runs, setups
from scripts import notebooks
from scripts.reproduce_plan import (
    CHAPTERS,
    DRY_FINETUNE,
    DRY_VOC_TRAIN,
    DRY_VOC_VAL,
    ROOT,
    Plan,
    State,
    say,
)

# ----------------------------------------------------------------------------- steps


def step_standins(plan: Plan, state: State) -> None:
    from scripts.standins import write_standins

    assert plan.standins_dir is not None
    trees = write_standins(plan.standins_dir, n_imagenet=max(plan.n_images or 0, 3),
                           n_voc_train=DRY_VOC_TRAIN, n_voc_val=DRY_VOC_VAL, seed=plan.seed)
    say(f"stand-in ILSVRC2012 val: {trees.imagenet_val} ({len(trees.imagenet_names)} images)")
    say(f"stand-in VOCdevkit: {trees.voc_root} (train {len(trees.voc_train_ids)}, "
        f"val {len(trees.voc_val_ids)})")


def _inputs(plan: Plan) -> tuple[Path, Path]:
    """ILSVRC val and VOCdevkit: the user's, or the dry run's stand-ins."""
    if plan.dry_run:
        from scripts.standins import read_standins

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
    from fdcam.evaluation.voc import VOC2007

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
    from fdcam.paper.finetune import FINAL_NAME, finetune_voc

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
    from fdcam.paper.finetune import FINAL_NAME

    return state.voc_checkpoint or plan.voc_checkpoint or (
        plan.checkpoint_dir / FINAL_NAME.format(arch="vgg16"))


def _voc_checkpoint(plan: Plan, state: State) -> Path:
    path = _checkpoint_path(plan, state)
    if not path.is_file():
        raise FdcamError(f"no fine-tuned VOC weights at {path}; run the step finetune first "
                         f"or pass VOC_CHECKPOINT")
    return path


def _setup(plan: Plan, state: State) -> Any:
    """`fdcam.paper.setups.setup` of the paper profile, made once per run."""
    if state.setup is not None:
        return state.setup
    imagenet_val, voc_root = _inputs(plan)
    setup = setups.setup(
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
    """Lines after the header (and the identity line of a results file of format 2 or 3)."""
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
    with _progress(runs.csv_path(setup, "faithfulness", plan.shard), expected,
                   plan.progress_every):
        path = runs.run_faithfulness(setup, plan.faithfulness_methods, shard=plan.shard,
                                     engine=plan.engine)
    _record_shard(plan, state, "faithfulness", finished=True)
    say(f"faithfulness rows (Tables I, III, IV), shard {index}/{count}: {path}")


def step_pointing(plan: Plan, state: State) -> None:
    setup = _setup(plan, state)
    _record_shard(plan, state, "pointing")
    with _progress(runs.csv_path(setup, "pointing", plan.shard), None,
                   plan.progress_every):
        path = runs.run_pointing(setup, plan.pointing_methods, shard=plan.shard,
                                 engine=plan.engine)
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
    merged = runs.merge_shards(setup)
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
    """A book source folder of the dry run: the repository's prose, configuration and
    book/'s folders (its local Sphinx extension, static files), and the dry run's executed
    notebooks (the committed ones in book/ stay untouched)."""
    source = plan.book_source
    shutil.rmtree(source, ignore_errors=True)
    (source / "book").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, source / name)
    for path in (ROOT / "book").iterdir():
        if path.is_dir():  # _ext (the bibliography style, a local extension), _static
            shutil.copytree(path, source / "book" / path.name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif path.suffix != ".ipynb":
            shutil.copy2(path, source / "book" / path.name)
    for path in sorted(plan.notebooks_out.glob("*.ipynb")):
        shutil.copy2(path, source / "book" / path.name)
    static = book_static_path(ROOT)
    if static.is_dir():
        link = source / static.relative_to(ROOT)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(static, target_is_directory=True)
    return source


def _sphinx_config(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))["sphinx"]["config"]


def book_static_path(root: Path = ROOT) -> Path:
    """The folder `make mathjax` fills: _config.yml's first ``html_static_path``."""
    return root / _sphinx_config(root)["html_static_path"][0]


def mathjax_script(root: Path = ROOT) -> Path:
    """The MathJax entry script the book loads: _config.yml's ``mathjax_path`` inside its first
    ``html_static_path`` — the one place that names it (the Makefile's ``MATHJAX``, which
    `make mathjax` writes, is tested against it)."""
    return book_static_path(root) / _sphinx_config(root)["mathjax_path"]


def check_mathjax(root: Path = ROOT) -> None:
    """One line when the book's MathJax is missing (the book would build with broken math)."""
    script = mathjax_script(root)
    if not script.is_file():
        raise FdcamError(f"MathJax is not at {script.relative_to(root)}; run `make mathjax` "
                         f"(make reproduce does) before the step book")


def step_book(plan: Plan, state: State) -> None:
    check_mathjax(ROOT)
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
