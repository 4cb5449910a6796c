"""One command reproduces the paper: ``make reproduce`` (``python -m scripts.reproduce``).

The steps, in order; each is safe to repeat and a killed run continues where it stopped:

=============  ==============================================================================
standins       dry run only: generated ILSVRC2012 val and VOCdevkit trees (`scripts.standins`)
weights        torchvision's VGG16 ``IMAGENET1K_V1`` into the torch hub cache (skipped when
               cached; a dry run uses random weights and downloads nothing)
voc            with ``--voc-download``: VOC2007 through torchvision (skipped when present)
finetune       VGG16 fine-tuned on VOC2007 train (`fdcam.paper.finetune`): skipped when its final
               weights exist, resumed from its checkpoint otherwise; ``--voc-checkpoint``
               gives weights made elsewhere and skips it
faithfulness   Tables I, III, IV: `fdcam.paper.runs.run_faithfulness` (resumable rows)
pointing       Table II: `fdcam.paper.runs.run_pointing` (resumable rows)
merge          `fdcam.paper.runs.merge_shards`: the shards' rows into the result tables
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
stand-in trees of a few images (`scripts.standins`), a fine-tuning of two steps, and what
``setups.setup(..., dry_run=True)`` sets: every method, Score-CAM and Ablation-CAM
(~512 VGG16 passes per map) on the first image of each run only, insertion/deletion curves
with 12.5 % of the image per step (the paper's 3.6 % takes three times as long). Results go
to ``data/results/paper-dry-run``, notebooks (each run with ``dry_run=True``) to
``_build/dry-run/notebooks`` and the book to ``_build/dry-run/book``. Notebooks that do
not declare a ``dry_run`` parameter are skipped in it (they would load ImageNet weights).
A results folder remembers whether it holds real or dry-run results and refuses the other.

Examples::

    python -m scripts.reproduce --imagenet-val /data/ILSVRC2012/val --voc-root /data/VOCdevkit
    python -m scripts.reproduce --imagenet-val … --voc-root … --shard 0/4    # one of 4
    python -m scripts.reproduce --imagenet-val … --voc-root … --steps merge,notebooks,book
    python -m scripts.reproduce --dry-run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from fdcam.errors import FdcamError
from fdcam.evaluation.engine import ENGINES
from fdcam.paper import settings
from scripts.reproduce_plan import (
    DRY_RESULTS,
    PAPER_CHECKPOINTS,
    PAPER_RESULTS,
    STEPS,
    Plan,
    State,
    check_plan,
    make_plan,
    say,
    write_run_record,
)
from scripts.reproduce_steps import STEP_FUNCTIONS


def run(plan: Plan) -> State:
    """Run the plan's steps in order; returns what they recorded."""
    check_plan(plan)
    if plan.dry_run:
        os.environ["FDCAM_OFFLINE"] = "1"  # a download attempt fails at once, in one line
    if set(plan.steps) & {"faithfulness", "pointing", "merge"}:
        write_run_record(plan)
    state = State()
    say(f"{plan.kind} run on {plan.device}: steps {', '.join(plan.steps)}; results in "
        f"{plan.results_dir}" + (f"; shard {plan.shard[0]}/{plan.shard[1]}"
                                 if plan.shard[1] > 1 else ""))
    if plan.dry_run:
        limits = settings.DRY_RUN_HEAVY_LIMITS
        heavy = ", ".join(settings.SETTINGS["paper"].heavy)
        size = "×".join(map(str, settings.DRY_RUN_INPUT_SIZE))
        say(f"dry run: random-weight VGG16 at {size} px, stand-in data, {plan.n_images} "
            f"ImageNet images; "
            f"every method, {heavy} on the first {limits['faithfulness']} faithfulness and "
            f"{limits['pointing']} pointing-game image(s); curves with "
            f"{settings.DRY_RUN_STEP_FRACTION:.1%} of the image per step")
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
        prog="python -m scripts.reproduce",
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
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="the protocol's forward passes (fdcam.evaluation.engine): auto "
                             "(ONNX Runtime on a CPU where installed, else torch.compile where a "
                             "compiler is found), compile, eager or "
                             "onnxruntime; default auto, eager for a dry run (its few images "
                             "do not repay the compilation)")
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
