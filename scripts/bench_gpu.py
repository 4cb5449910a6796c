"""``make bench-gpu``: time the paper pipeline's parts and project a full reproduction.

One short script for a GPU box (it also runs on a CPU). Setting: torchvision VGG16 with
random weights (no download), stand-in images of the datasets' typical sizes held as
tensors, no dataset files. Measured, per image (medians), by `scripts.bench_parts`: the
explanation time of each method of Tables I–IV (`fdcam.paper.settings.TABLE_METHODS`, with
the experiments' options), insertion + deletion at the experiments' batch size (and, on a
GPU, larger ones), the pointing-game set-up of Table II (a VGG16 with 20 outputs, two
classes per image), JPEG decoding + preprocessing, a fine-tuning step, a plain forward.

Then it projects the full reproduction on the machine that measured: Tables I, III, IV —
2,000 ILSVRC images × (8 methods + 5 FD-CAM variants), each explained and scored by
insertion/deletion; Table II — 2,510 VOC2007 val images × their labelled classes × 7
methods; the VOC fine-tuning (10 epochs over 2,501 train images). Only measured figures are
projected: for a GPU's numbers, run it on the GPU.

``--check-precision`` (`scripts.bench_precision`) compares maps and AUCs under
channels_last, TF32 and autocast with exact fp32. The timings always use exact fp32.

    python -m scripts.bench_gpu                          # on a GPU box: cuda, 8 images
    python -m scripts.bench_gpu --device cpu --images 2  # CPU figures + projection
    python -m scripts.bench_gpu --check-precision
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fdcam.checks import resolve_device
from fdcam.errors import FdcamError
from fdcam.paper.settings import HEAVY_METHODS, TABLE_METHODS
from scripts.bench_parts import (
    TUNED_BATCH_SIZES,
    Part,
    decode_time,
    exact_fp32,
    finetune_part,
    forward_part,
    method_part,
    metrics_part,
    pipeline_metric_batch,
    pipeline_options,
    stand_in_images,
    tune_batch_size,
)
from scripts.bench_precision import check_precision, format_precision

# ---------------------------------------------------------------------- the paper's workload

IMAGENET_IMAGES = 2_000  # §IV: 2,000 ILSVRC val images (data/imagenet_val_manifest.txt)
VOC_VAL_IMAGES = 2_510  # VOC2007 val
VOC_TRAIN_IMAGES = 2_501  # VOC2007 train, for the fine-tuning
VOC_LABELS_PER_IMAGE = 1.46
"""Assumed distinct labelled classes per VOC2007 image (multi-label literature: ≈1.4–1.5);
``--voc-root`` counts the real (image, class) pairs of val instead."""
FINETUNE_EPOCHS = 10  # fdcam.paper.finetune.Recipe
LOADER_WORKERS = 8
"""Data-loading processes of the fine-tuning on a GPU (`fdcam.paper.finetune`: up to 8): their
JPEG decoding overlaps the GPU's work. The evaluation decodes in its own process."""

# The methods of the paper's tables, as the experiments run them (`fdcam.paper.settings`).
TABLE_I_METHODS = TABLE_METHODS["I"]
VARIANTS = tuple(dict.fromkeys(m for t in ("III", "IV") for m in TABLE_METHODS[t]
                               if m != "fdcam"))
"""Tables III and IV: FD-CAM without grouping / without switch-on, and the combinations."""
TABLE_II_METHODS = TABLE_METHODS["II"]
SLOW_METHODS = HEAVY_METHODS  # one forward pass of the whole net per channel


# ---------------------------------------------------------------------- projection


def voc_pairs(voc_root: str | Path | None) -> tuple[float, str]:
    """(image, class) pairs of VOC2007 val that Table II explains, and where the number
    comes from: counted from the annotations, or the assumption."""
    if voc_root is None:
        pairs = VOC_VAL_IMAGES * VOC_LABELS_PER_IMAGE
        return pairs, (f"assumed: {VOC_VAL_IMAGES:,} images × {VOC_LABELS_PER_IMAGE} "
                       f"labelled classes")
    from fdcam.evaluation.voc import VOC2007

    voc = VOC2007(voc_root, "val")
    count = sum(len(set(voc.annotation(i)["labels"])) for i in range(len(voc)))
    return float(count), f"counted in {voc.root} ({len(voc):,} images)"


@dataclass
class Projection:
    """Seconds for each stage of the full reproduction."""

    faithfulness: dict[str, float]  # per method: 2,000 × (explain + insertion/deletion)
    pointing: dict[str, float]  # per method: pairs × explain (no curves in run_pointing)
    finetune: float  # with its JPEG decoding (overlapped by loader processes, or added)
    decoding: float  # the evaluation's JPEG decoding and preprocessing: CPU work

    @property
    def total(self) -> float:
        return (sum(self.faithfulness.values()) + sum(self.pointing.values())
                + self.finetune + self.decoding)


def project(parts: dict[str, Part], pairs: float, voc_classes: int,
            workers: int = 0) -> Projection:
    """The full run on the machine that measured, from its per-call medians × the paper's
    counts. The evaluation's JPEG decoding adds to the total; the fine-tuning's runs in
    `workers` loader processes beside the compute (0: in turn)."""
    def median(key: str) -> float:  # NaN for a part not measured (--methods) or failed
        part = parts.get(key)
        return part.median if part is not None and not part.error else math.nan

    insdel = median("insdel")
    faithfulness = {m: IMAGENET_IMAGES * (median(m) + insdel)
                    for m in (*TABLE_I_METHODS, *VARIANTS)}
    pointing = {m: pairs * median(f"voc:{m}") / voc_classes
                for m in TABLE_II_METHODS}
    train = parts["finetune"].median
    forward = parts["forward"].median
    compute = FINETUNE_EPOCHS * (VOC_TRAIN_IMAGES * train + VOC_VAL_IMAGES * forward)
    decode = parts["decode"].median
    loading = FINETUNE_EPOCHS * (VOC_TRAIN_IMAGES + VOC_VAL_IMAGES) * decode
    finetune = max(compute, loading / workers) if workers else compute + loading
    decoding = decode * (IMAGENET_IMAGES + VOC_VAL_IMAGES)
    return Projection(faithfulness, pointing, finetune, decoding)


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_projection(projection: Projection, title: str) -> str:
    lines = [title]
    lines.append("  Tables I, III, IV (2,000 ILSVRC images, explain + insertion/deletion):")
    for method, seconds in projection.faithfulness.items():
        lines.append(f"    {method:<18s} {_duration(seconds):>10s}")
    lines.append(f"    {'subtotal':<18s} {_duration(sum(projection.faithfulness.values())):>10s}")
    lines.append("  Table II (VOC2007 val (image, class) pairs, explain):")
    for method, seconds in projection.pointing.items():
        lines.append(f"    {method:<18s} {_duration(seconds):>10s}")
    lines.append(f"    {'subtotal':<18s} {_duration(sum(projection.pointing.values())):>10s}")
    lines.append(f"  VOC fine-tuning ({FINETUNE_EPOCHS} epochs)  {_duration(projection.finetune)}")
    lines.append(f"  evaluation's JPEG decoding {_duration(projection.decoding)}")
    lines.append(f"  TOTAL                      {_duration(projection.total)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def _methods(text: str) -> list[str]:
    known = list(dict.fromkeys((*TABLE_I_METHODS, *VARIANTS, *TABLE_II_METHODS)))
    chosen = known if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in known]
    if unknown or not chosen:
        raise FdcamError(f"unknown method {(unknown or [text])[0]!r}; available: "
                         f"{', '.join(known)} (or all)")
    return chosen


def run_bench(device: torch.device, n_images: int, n_slow: int, voc_classes: int,
              metric_batches: Sequence[int], methods: Sequence[str],
              log: Callable[[str], None]) -> dict[str, Part]:
    """Measure every part; returns them by key (methods, ``voc:<method>``, insdel, …)."""
    from fdcam.models import load_model
    from fdcam.paper.finetune import build_voc_model

    exact_fp32(device)
    torch.manual_seed(0)
    model = load_model("vgg16", pretrained=False, device=device).model
    images = stand_in_images(n_images).to(device)
    targets = torch.randint(0, 1000, (n_images, 1), generator=torch.Generator().manual_seed(0))
    items = images[:, None]  # [N, 1, 3, H, W]: one class per image
    parts: dict[str, Part] = {}
    gpu = device.type == "cuda"

    parts["decode"] = Part("JPEG decode + preprocess (500×375)", [decode_time()])
    parts["forward"] = forward_part(model, images, 64 if gpu else 8, 5 if gpu else 2)
    log(f"  forward: {parts['forward'].median * 1e3:.1f} ms/image")
    parts["finetune"] = finetune_part(device, 32 if gpu else 2, 3 if gpu else 1)
    log(f"  fine-tune step: {parts['finetune'].median * 1e3:.1f} ms/image")

    def explain(name: str, net: nn.Module, data: Tensor, classes: Tensor, key: str) -> None:
        options = pipeline_options(name, device)
        slow = name in SLOW_METHODS
        tuned = ""
        if slow and gpu:
            batch, tried = tune_batch_size(name, net, data[0], classes[0], TUNED_BATCH_SIZES)
            tuned = f"fastest batch_size={batch}"
            log(f"  {key}: batch sizes tried: {tried}")
        count = min(len(data), n_slow) if slow else len(data)
        part = method_part(name, net, data[:count], classes[:count], options,
                           key, warm_up=gpu or not slow)
        part.note = "; ".join(n for n in (part.note, tuned) if n)
        parts[key] = part
        log(f"  {key}: {part.median:.3f} s/call over {len(part.seconds)}"
            + (f" ERROR {part.error}" if part.error else ""))

    for name in (*TABLE_I_METHODS, *VARIANTS):
        if name in methods:
            explain(name, model, items, targets, name)
    for batch in metric_batches:
        key = "insdel" if batch == metric_batches[0] else f"insdel@{batch}"
        parts[key] = metrics_part(model, images[:, None], targets, batch,
                                  f"insertion + deletion (batch {batch})")
        log(f"  {key}: {parts[key].median:.3f} s/image")

    del model
    torch.manual_seed(0)
    voc_model = build_voc_model("vgg16", pretrained=False).to(device).eval()
    voc_items = images[:, None].expand(-1, voc_classes, -1, -1, -1).contiguous()
    voc_targets = torch.stack([torch.randperm(20, generator=torch.Generator().manual_seed(i))
                               [:voc_classes] for i in range(n_images)])
    for name in TABLE_II_METHODS:
        if name not in methods:
            continue
        if name in SLOW_METHODS and not gpu and name in parts and not parts[name].error:
            # Minutes per class on a CPU, and the same work per class as on ILSVRC (512
            # masked passes; the 20-way last layer is negligible): derived, not re-timed.
            base = parts[name]
            parts[f"voc:{name}"] = Part(f"voc:{name}", [base.median * voc_classes],
                                        base.flops * voc_classes,
                                        note=f"derived: {name} per image × {voc_classes}")
            continue
        explain(name, voc_model, voc_items, voc_targets, f"voc:{name}")
    return parts


def format_parts(parts: dict[str, Part], voc_classes: int) -> str:
    lines = [f"{'part':<34s}{'median':>10s}{'GFLOP':>9s}{'GFLOP/s':>9s}  n  note"]
    for key, part in parts.items():
        per = "/image" if key in ("forward", "finetune", "decode") else "/call"
        if key.startswith("voc:"):
            per = f"/{voc_classes}cls"
        rate = part.flops / part.median / 1e9 if part.seconds and part.flops == part.flops \
            else math.nan
        gflop = f"{part.flops / 1e9:9.1f}" if part.flops == part.flops else f"{'':9s}"
        text = (f"{key:<34s}{part.median:9.3f}s{gflop}{rate:9.1f}  {len(part.seconds)}  "
                f"{per} {part.note}")
        if part.error:
            text = f"{key:<34s}  ERROR {part.error}"
        lines.append(text)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_gpu",
                                     description="Time the paper pipeline's parts on a GPU "
                                     "(or CPU) and project the full reproduction.")
    parser.add_argument("--device", default="auto", help="auto (default), cuda or cpu")
    parser.add_argument("--images", type=int, default=8, help="stand-in images timed")
    parser.add_argument("--slow-images", type=int, default=None,
                        help="images for Score-CAM/Ablation-CAM (default: all on a GPU, "
                             "1 on a CPU, where each map takes minutes)")
    parser.add_argument("--voc-classes", type=int, default=2,
                        help="classes explained per VOC image (default 2)")
    parser.add_argument("--voc-root", default=None,
                        help="VOCdevkit: count Table II's (image, class) pairs from val")
    parser.add_argument("--metric-batch", type=int, nargs="+", default=None,
                        help="insertion/deletion batch sizes; the first is projected "
                             "(default: the experiments' 64, and 128 256 on a GPU)")
    parser.add_argument("--methods", default="all",
                        help="comma-separated subset to time (default all; the projection "
                             "needs all)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--check-precision", action="store_true",
                        help="compare maps and AUCs under channels_last/TF32/autocast")
    parser.add_argument("--precision-methods", default=None,
                        help="methods for --check-precision (default fdcam,gradcam and, on a "
                             "GPU, scorecam)")
    parser.add_argument("--pretrained", action="store_true",
                        help="--check-precision with the real VGG16 weights (cached)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the measurements here")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="project from measurements saved by --json (no timing)")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except FdcamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    device = torch.device(resolve_device(args.device))
    if args.images < 1 or args.voc_classes < 1:
        raise FdcamError("--images and --voc-classes must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"fdcam bench-gpu on {name}; torch {torch.__version__}; exact fp32 (TF32 off)")
    if args.check_precision:
        default = "fdcam,gradcam,scorecam" if gpu else "fdcam,gradcam"
        methods = [m.strip() for m in (args.precision_methods or default).split(",")
                   if m.strip()]
        rows, description = check_precision(device, args.images, methods, args.pretrained)
        print(format_precision(rows, description, args.images, device))
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
        return 0
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        parts = {key: Part(**value) for key, value in saved["parts"].items()}
        name, gpu = saved["device"], bool(saved.get("gpu", False))
        print(f"figures measured on {name}, read from {args.from_json}")
    else:
        n_slow = args.slow_images if args.slow_images is not None else (
            args.images if gpu else 1)
        batches = args.metric_batch or ([pipeline_metric_batch(device), 128, 256] if gpu
                                        else [pipeline_metric_batch(device)])
        parts = run_bench(device, args.images, n_slow, args.voc_classes, batches,
                          _methods(args.methods), lambda line: print(line, flush=True))
    report: dict[str, Any] = {"device": name, "gpu": gpu,
                              "parts": {k: asdict(p) for k, p in parts.items()}}
    if args.json:  # the measurements first: a failure below must not lose them
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print()
    print(format_parts(parts, args.voc_classes))
    print(_projections(parts, name, gpu, args))
    return 0


def _projections(parts: dict[str, Part], name: str, gpu: bool,
                 args: argparse.Namespace) -> str:
    pairs, source = voc_pairs(args.voc_root)
    lines = [f"\nworkload: {IMAGENET_IMAGES:,} ILSVRC images × {len(TABLE_I_METHODS)} methods "
             f"+ {len(VARIANTS)} FD-CAM variants; Table II: {pairs:,.0f} VOC (image, class) "
             f"pairs ({source}) × {len(TABLE_II_METHODS)} methods; fine-tuning "
             f"{FINETUNE_EPOCHS} epochs"]
    failed = [key for key, part in parts.items() if part.error]
    if failed:
        lines.append(f"not projected (errors): {', '.join(failed)}")
    if gpu:
        measured = project(parts, pairs, args.voc_classes, workers=LOADER_WORKERS)
        lines.append(format_projection(measured, f"\nPROJECTION for this GPU ({name}): "
                                                 f"measured medians × the paper's counts:"))
        return "\n".join(lines)
    lines.append(format_projection(
        project(parts, pairs, args.voc_classes),
        "\nPROJECTION for this CPU (measured medians × the paper's counts; for a GPU's "
        "figures run the script on the GPU):"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
