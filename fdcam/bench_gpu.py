"""``make bench-gpu``: time the paper pipeline's parts and project a full reproduction.

One short script for a GPU box (it also runs on a CPU). Setting: torchvision VGG16 with
random weights (no download), stand-in images of the datasets' typical sizes (crops of the
package photos at 500×375 etc., resized to 224×224 as the pipeline does) held as tensors,
no dataset files. Measured, per image (medians):

* the explanation time of each method of the paper — FD-CAM, Grad-CAM, Grad-CAM++,
  XGrad-CAM, Score-CAM and Ablation-CAM (batch size tuned on a GPU), Layer-CAM,
  Group-CAM — and of the FD-CAM variants of Tables III–IV;
* insertion + deletion (2 × 29 forward passes, `fdcam.metrics`), at the experiments' batch
  size (`fdcam.experiments.Setup.batch_size`) and, on a GPU, at larger ones;
* the pointing-game set-up of Table II: a fine-tuned-shaped VGG16 (20 outputs), two classes
  explained per image, as `fdcam.evaluate` calls the methods (`run_pointing` computes no
  insertion/deletion curves);
* JPEG decoding + preprocessing of one 500×375 image, a fine-tuning step, a plain forward.

Methods run with the experiments' options (Score-CAM, Ablation-CAM and Group-CAM: 128
masked copies per pass on a GPU, 64 on a CPU); on a GPU the two channel-by-channel methods
are also tried at other batch sizes and the fastest is reported.

Then it projects the full reproduction: Tables I, III, IV — 2,000 ILSVRC images × (8
methods + 5 FD-CAM variants), each explained once and scored by insertion/deletion;
Table II — 2,510 VOC2007 val images × their labelled classes × 7 methods, explained; and the
VOC fine-tuning (10 epochs over 2,501 train images, val mAP after each).

On a CPU the projection is printed twice: for this CPU as measured, and for an H100 scaled
by FLOPs — each part's CPU time × (this CPU's measured VGG16 FLOP rate ÷ the H100's assumed
sustained rate); the assumptions are printed with it. That is a projection, not a
measurement: run the script on the GPU for numbers.

``--check-precision`` compares a few maps and their insertion/deletion AUCs under
channels_last, TF32 (on a CPU: ``float32_matmul_precision("medium")``) and autocast with
exact fp32, and says whether any reported number changes beyond the third decimal. The
timings always use exact fp32 (TF32 off), the pipeline's default.

    python -m fdcam.bench_gpu                          # on a GPU box: cuda, 8 images
    python -m fdcam.bench_gpu --device cpu --images 2  # here: CPU figures + projection
    python -m fdcam.bench_gpu --check-precision
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError

# ---------------------------------------------------------------------- the paper's workload

IMAGENET_IMAGES = 2_000  # §IV: 2,000 ILSVRC val images (data/imagenet_val_manifest.txt)
VOC_VAL_IMAGES = 2_510  # VOC2007 val
VOC_TRAIN_IMAGES = 2_501  # VOC2007 train, for the fine-tuning
VOC_LABELS_PER_IMAGE = 1.46
"""Assumed distinct labelled classes per VOC2007 image (multi-label literature: ≈1.4–1.5);
``--voc-root`` counts the real (image, class) pairs of val instead."""
FINETUNE_EPOCHS = 10  # fdcam.finetune.Recipe
LOADER_WORKERS = 8
"""Data-loading processes of the fine-tuning on a GPU (`fdcam.finetune`: up to 8): their
JPEG decoding overlaps the GPU's work. The evaluation decodes in its own process."""

TABLE_I_METHODS = ("fdcam", "gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam",
                   "layercam", "groupcam")
VARIANTS = ("fdcam-ng-off", "fdcam-g-off", "fdcam-product", "fdcam-exp", "fdcam-exp-shifted")
"""Tables III and IV: FD-CAM without grouping / without switch-on, and the combinations."""
TABLE_II_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "scorecam",
                    "ablationcam", "fdcam")
SLOW_METHODS = ("scorecam", "ablationcam")  # one forward pass of the whole net per channel
TUNED_BATCH_SIZES = (16, 32, 64, 128, 256, 512)


def pipeline_options(method: str, device: torch.device) -> dict[str, Any]:
    """The explainer options `fdcam.experiments` runs `method` with on `device`."""
    from types import SimpleNamespace

    from fdcam import experiments

    return experiments.method_options(method, SimpleNamespace(device=device.type))  # type: ignore[arg-type]


def pipeline_metric_batch(device: torch.device | str = "cuda") -> int:
    """Perturbed images per forward pass in the experiments' insertion/deletion: the
    metrics' default for `device` unless `Setup.batch_size` fixes one."""
    from fdcam.experiments import Setup
    from fdcam.metrics import curve_batch_size

    fixed = Setup.__dataclass_fields__["batch_size"].default
    return curve_batch_size(device) if fixed is None else int(fixed)  # type: ignore[arg-type]

# ---------------------------------------------------------------------- FLOPs and the H100

VGG16_GMAC = 15.5
"""VGG16 forward pass on 3×224×224: 15.5 GMAC = 31.0 GFLOP (torch's FlopCounterMode
counts 30.94 GFLOP: convolutions and linear layers)."""


@dataclass(frozen=True)
class GpuAssumption:
    """Peak dense throughputs of the GPU and the fraction a VGG16 workload sustains."""

    name: str = "NVIDIA H100 SXM5 80GB"
    fp32_tflops: float = 66.9  # dense FP32 on the CUDA cores (no tensor cores)
    tf32_tflops: float = 494.7  # dense TF32 on the tensor cores (989.4 with sparsity)
    efficiency: float = 0.5  # sustained / peak for cuDNN convolutions and GEMMs

    def rate(self, tf32: bool = False) -> float:
        """Assumed sustained FLOP/s."""
        return (self.tf32_tflops if tf32 else self.fp32_tflops) * 1e12 * self.efficiency


H100 = GpuAssumption()

# ---------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    function()
    _sync(device)
    return time.perf_counter() - start


def count_flops(function: Callable[[], object]) -> float:
    """FLOPs of the matrix products and convolutions `function` runs (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


@dataclass
class Part:
    """One timed part of the pipeline: per-call times (s) and FLOPs per call."""

    name: str
    seconds: list[float] = field(default_factory=list)
    flops: float = math.nan
    note: str = ""
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan


def exact_fp32(device: torch.device) -> None:
    """The pipeline's numerics: exact fp32, no TF32 anywhere."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def stand_in_images(n: int, seed: int = 0) -> Tensor:
    """`n` normalised [3, 224, 224] tensors from crops of the package photos at the
    datasets' typical sizes (as `fdcam.standins` writes them, but never saved)."""
    from fdcam.models import _IMAGENET_MEAN, _IMAGENET_STD, preprocess_image
    from fdcam.standins import IMAGENET_SIZES, canvas

    rng = random.Random(seed)
    return torch.stack([preprocess_image(canvas(rng, rng.choice(IMAGENET_SIZES), "photos"),
                                         _IMAGENET_MEAN, _IMAGENET_STD) for _ in range(n)])


def decode_time(rounds: int = 21) -> float:
    """Median seconds to decode and preprocess one 500×375 JPEG (in memory)."""
    from fdcam.models import _IMAGENET_MEAN, _IMAGENET_STD, preprocess_image
    from fdcam.standins import canvas

    buffer = io.BytesIO()
    canvas(random.Random(0), (500, 375), "photos").save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()

    def decode() -> None:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            preprocess_image(image, _IMAGENET_MEAN, _IMAGENET_STD)

    decode()
    return statistics.median(_timed(decode, torch.device("cpu")) for _ in range(rounds))


def forward_part(model: nn.Module, x: Tensor, batch: int, rounds: int) -> Part:
    """A plain batched forward pass: seconds per image, FLOPs per image."""
    device = x.device
    data = x[:1].expand(batch, -1, -1, -1).contiguous()

    def run() -> None:
        with torch.no_grad():
            model(data)

    part = Part(f"VGG16 forward (batch {batch})")
    part.flops = count_flops(run) / batch
    run()
    part.seconds = [_timed(run, device) / batch for _ in range(rounds)]
    return part


def tune_batch_size(name: str, model: nn.Module, x: Tensor, target: Tensor,
                    candidates: Sequence[int]) -> tuple[int, str]:
    """The fastest `batch_size` of a channel-by-channel method on one image (GPU only)."""
    from fdcam.baselines import make_explainer

    best: tuple[float, int] | None = None
    tried = []
    for batch in candidates:
        explainer = make_explainer(name, model, "features.30", batch_size=batch)
        try:
            explainer(x, target=target)  # warm-up: cuDNN picks its kernels
            seconds = _timed(lambda e=explainer: e(x, target=target), x.device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            tried.append(f"{batch}: out of memory")
            break
        tried.append(f"{batch}: {seconds:.3f} s")
        if best is None or seconds < best[0]:
            best = (seconds, batch)
    if best is None:
        raise FdcamError(f"{name}: every batch size ran out of memory ({', '.join(tried)})")
    return best[1], "; ".join(tried)


def method_part(name: str, model: nn.Module, images: Tensor, targets: Tensor,
                options: dict[str, Any], label: str, warm_up: bool) -> Part:
    """Time ``make_explainer(name)(x, target)`` per item; count its FLOPs once.

    `images` [N, C, 3, H, W] and `targets` [N, C]: item i is explained for its C classes in
    one call, as `fdcam.evaluate` does (the image repeated once per class).
    """
    from fdcam.baselines import make_explainer

    part = Part(label, note=", ".join(f"{k}={v}" for k, v in options.items()))
    explainer = make_explainer(name, model, "features.30", **options)
    device = images.device
    try:
        first = lambda: explainer(images[0], target=targets[0])  # noqa: E731
        if warm_up:
            part.flops = count_flops(first)
        else:  # a slow method on a CPU: the counted call is also the timed one
            start = time.perf_counter()
            part.flops = count_flops(first)
            part.seconds.append(time.perf_counter() - start)
        for i in range(len(part.seconds), len(images)):
            part.seconds.append(_timed(lambda i=i: explainer(images[i], target=targets[i]),
                                       device))
    except Exception as error:  # report it and go on: the bench times the other parts
        part.error = " ".join(f"{type(error).__name__}: {error}".split())[:200]
    return part


def metrics_part(model: nn.Module, images: Tensor, targets: Tensor, batch: int,
                 label: str) -> Part:
    """Insertion + deletion curves for each item's C maps at once (as `fdcam.evaluate`)."""
    from fdcam.metrics import insertion_deletion_curves

    device = images.device
    n, c = targets.shape
    saliency = torch.rand(n, c, *images.shape[-2:], device=device,
                          generator=torch.Generator(device).manual_seed(0))
    part = Part(label, note=f"batch_size={batch}")

    def run(i: int) -> None:
        insertion_deletion_curves(model, images[i], saliency[i], targets[i], batch_size=batch)

    part.flops = count_flops(lambda: run(0))
    part.seconds = [_timed(lambda i=i: run(i), device) for i in range(n)]
    return part


def finetune_part(device: torch.device, batch: int, rounds: int) -> Part:
    """One SGD step of VGG16 (20 outputs) on `batch` images: seconds per image."""
    from fdcam.finetune import build_voc_model

    torch.manual_seed(0)
    model = build_voc_model("vgg16", pretrained=False).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = (torch.rand(batch, 20, device=device) < 0.1).float()
    loss_fn = nn.BCEWithLogitsLoss()

    def step() -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    part = Part(f"fine-tune step (batch {batch})")
    part.flops = count_flops(step) / batch
    part.seconds = [_timed(step, device) / batch for _ in range(rounds)]
    return part


# ---------------------------------------------------------------------- projection


def voc_pairs(voc_root: str | Path | None) -> tuple[float, str]:
    """(image, class) pairs of VOC2007 val that Table II explains, and where the number
    comes from: counted from the annotations, or the assumption."""
    if voc_root is None:
        pairs = VOC_VAL_IMAGES * VOC_LABELS_PER_IMAGE
        return pairs, (f"assumed: {VOC_VAL_IMAGES:,} images × {VOC_LABELS_PER_IMAGE} "
                       f"labelled classes")
    from fdcam.data import VOC2007

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
            scale: float = 1.0, workers: int = 0) -> Projection:
    """The full run from per-call medians; `scale` multiplies every compute time (1 on the
    machine that measured; CPU rate ÷ GPU rate for the FLOP-based projection). JPEG
    decoding is CPU time, never scaled: the evaluation's adds to the total; the
    fine-tuning's runs in `workers` loader processes beside the compute (0: in turn)."""
    def median(key: str) -> float:  # NaN for a part not measured (--methods) or failed
        part = parts.get(key)
        return part.median if part is not None and not part.error else math.nan

    insdel = median("insdel")
    faithfulness = {m: IMAGENET_IMAGES * (median(m) + insdel) * scale
                    for m in (*TABLE_I_METHODS, *VARIANTS)}
    pointing = {m: pairs * median(f"voc:{m}") / voc_classes * scale
                for m in TABLE_II_METHODS}
    train = parts["finetune"].median
    forward = parts["forward"].median
    compute = FINETUNE_EPOCHS * (VOC_TRAIN_IMAGES * train + VOC_VAL_IMAGES * forward) * scale
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


# ---------------------------------------------------------------------- precision check


@dataclass(frozen=True)
class PrecisionRow:
    mode: str
    method: str
    max_map_difference: float
    max_auc_difference: float
    aucs_changed_at_3_decimals: int
    aucs: int
    forward_seconds: float
    error: str = ""


@contextlib.contextmanager
def precision_mode(mode: str, device: torch.device) -> Iterator[None]:
    """fp32 (exact), channels_last, tf32 (reduced-precision fp32 matmuls), autocast."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    try:
        if mode == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.set_float32_matmul_precision("high" if device.type == "cuda" else "medium")
        if mode == "autocast":
            dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
            with torch.autocast(device.type, dtype=dtype):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


PRECISION_MODES = ("fp32", "channels_last", "tf32", "autocast")


def _precision_model(device: torch.device, pretrained: bool) -> tuple[nn.Module, str]:
    from fdcam.models import load_model

    if pretrained:
        return load_model("vgg16", device=device).model, "VGG16 IMAGENET1K_V1 (pretrained)"
    torch.manual_seed(0)
    model = load_model("vgg16", pretrained=False, device=device).model
    # Random weights give a flat softmax (every probability ≈ 1/1000), so every AUC would
    # be ≈ 0.001 and no precision could move it at the third decimal: scale the last
    # layer so that the logits spread like a trained model's (std ≈ 4).
    last = model.classifier[6]
    with torch.no_grad():
        probe = model(torch.randn(4, 3, 224, 224, device=device,
                                  generator=torch.Generator(device).manual_seed(1)))
        factor = 4.0 / float(probe.std())
        last.weight.mul_(factor)
        last.bias.mul_(factor)
    return model, f"VGG16 random weights, last layer scaled ×{factor:.0f} (logit std 4)"


def check_precision(device: torch.device, n_images: int, methods: Sequence[str],
                    pretrained: bool) -> tuple[list[PrecisionRow], str]:
    """Maps and insertion/deletion AUCs of `methods` under each mode vs exact fp32."""
    from fdcam.baselines import make_explainer
    from fdcam.metrics import insertion_deletion_curves

    exact_fp32(device)
    model, description = _precision_model(device, pretrained)
    images = stand_in_images(n_images, seed=1).to(device)
    with torch.no_grad():
        targets = model(images).argmax(1)
    results: dict[tuple[str, str], tuple[Tensor, Tensor]] = {}
    rows = []
    for mode in PRECISION_MODES:
        x = images
        net = model
        if mode == "channels_last":
            net = model.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
        with precision_mode(mode, device):
            seconds = forward_part(net, x, min(8, 2 * n_images), 3).median
            for method in methods:
                try:
                    explainer = make_explainer(method, net, "features.30")
                    maps = explainer(x, target=targets).saliency.float()
                    curves = insertion_deletion_curves(net, x, maps, targets,
                                                       batch_size=pipeline_metric_batch(device))
                    aucs = torch.stack([curves.insertion_auc, curves.deletion_auc]).float()
                    results[mode, method] = (maps.cpu(), aucs.cpu())
                    error = ""
                except Exception as caught:  # a mode a method cannot run in is a finding
                    error = " ".join(f"{type(caught).__name__}: {caught}".split())[:160]
                if not error and mode != "fp32" and ("fp32", method) not in results:
                    error = "no exact-fp32 reference to compare with (it failed)"
                if mode == "fp32" or error:
                    rows.append(PrecisionRow(mode, method, math.nan, math.nan, 0, 0, seconds,
                                             error))
                    continue
                ref_maps, ref_aucs = results["fp32", method]
                maps, aucs = results[mode, method]
                changed = int((ref_aucs.mul(1000).round() != aucs.mul(1000).round()).sum())
                rows.append(PrecisionRow(
                    mode, method, float((maps - ref_maps).abs().max()),
                    float((aucs - ref_aucs).abs().max()), changed, aucs.numel(), seconds))
        if mode == "channels_last":
            model = model.to(memory_format=torch.contiguous_format)
    return rows, description


def format_precision(rows: Sequence[PrecisionRow], description: str, n_images: int,
                     device: torch.device) -> str:
    lines = [f"precision check: {description}, {n_images} stand-in image(s), maps and "
             f"insertion/deletion AUCs vs exact fp32"]
    if device.type == "cpu":
        lines.append("  (on a CPU, tf32 means float32_matmul_precision('medium') and autocast "
                     "means bfloat16; on CUDA: TF32 matmuls/convolutions and float16)")
    lines.append(f"  {'mode':<14s}{'method':<12s}{'fwd/img':>10s}{'max |Δmap|':>13s}"
                 f"{'max |ΔAUC|':>13s}  AUCs changed at 3 decimals")
    verdicts: dict[str, bool] = {}
    for row in rows:
        if row.error:
            lines.append(f"  {row.mode:<14s}{row.method:<12s}  error: {row.error}")
            verdicts[row.mode] = False
            continue
        if row.mode == "fp32":
            lines.append(f"  {row.mode:<14s}{row.method:<12s}{row.forward_seconds * 1e3:8.1f}ms"
                         f"{'reference':>13s}")
            continue
        within = row.max_auc_difference < 5e-4 and row.aucs_changed_at_3_decimals == 0
        verdicts[row.mode] = verdicts.get(row.mode, True) and within
        lines.append(f"  {row.mode:<14s}{row.method:<12s}{row.forward_seconds * 1e3:8.1f}ms"
                     f"{row.max_map_difference:13.2e}{row.max_auc_difference:13.2e}  "
                     f"{row.aucs_changed_at_3_decimals}/{row.aucs}")
    for mode, ok in verdicts.items():
        lines.append(f"  {mode}: " + ("no reported AUC changes beyond the 3rd decimal" if ok
                                      else "CHANGES reported numbers (or fails): keep fp32"))
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


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise FdcamError("--device cuda was asked for but no CUDA device is available; "
                         "use --device cpu --images 2 for a CPU-based projection")
    if name not in ("cpu", "cuda"):
        raise FdcamError(f"unknown device {name!r}; expected auto, cpu or cuda")
    return torch.device(name)


def run_bench(device: torch.device, n_images: int, n_slow: int, voc_classes: int,
              metric_batches: Sequence[int], methods: Sequence[str],
              log: Callable[[str], None]) -> dict[str, Part]:
    """Measure every part; returns them by key (methods, ``voc:<method>``, insdel, …)."""
    from fdcam.finetune import build_voc_model
    from fdcam.models import load_model

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
    parser = argparse.ArgumentParser(prog="python -m fdcam.bench_gpu",
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
    parser.add_argument("--gpu-efficiency", type=float, default=H100.efficiency,
                        help="sustained/peak throughput assumed for the H100 projection")
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
    device = _device(args.device)
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
    forward = parts["forward"]
    cpu_rate = forward.flops / forward.median
    h100 = GpuAssumption(efficiency=args.gpu_efficiency)
    lines.append(format_projection(project(parts, pairs, args.voc_classes),
                                   "\nPROJECTION for this CPU (measured medians × the "
                                   "paper's counts):"))
    lines.append(
        f"\nFLOP-based CPU→H100 scaling: VGG16 forward = {VGG16_GMAC} GMAC = "
        f"{2 * VGG16_GMAC:.1f} GFLOP per 224×224 image (counted here: {forward.flops / 1e9:.2f});"
        f" this CPU sustains {cpu_rate / 1e9:.1f} GFLOP/s on it. Assumed {h100.name}: dense "
        f"FP32 {h100.fp32_tflops} TFLOPS, dense TF32 {h100.tf32_tflops} TFLOPS (tensor cores), "
        f"sustained at {h100.efficiency:.0%} of peak → {h100.rate() / 1e12:.1f} / "
        f"{h100.rate(tf32=True) / 1e12:.1f} TFLOP/s. Every compute part is scaled by CPU rate "
        f"÷ H100 rate; JPEG decoding stays CPU time as measured here (the fine-tuning's in "
        f"{LOADER_WORKERS} loader processes beside the GPU). Launch latency, Python and the "
        f"CPU post-processing of pytorch-grad-cam do not shrink with FLOPs, so small-batch "
        f"parts will be slower than this on the GPU: run `make bench-gpu` there.")
    for tf32 in (False, True):
        scaled = project(parts, pairs, args.voc_classes, scale=cpu_rate / h100.rate(tf32),
                         workers=LOADER_WORKERS)
        label = "TF32 (only if --check-precision allows)" if tf32 else "exact fp32"
        lines.append(format_projection(scaled, f"\nPROJECTION for one H100 from CPU figures "
                                               f"(a projection, not a measurement), "
                                               f"FLOP-scaled, {label}:"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
