"""``make bench-gpu BENCH_GPU_FLAGS=--check-precision``: do channels_last, TF32 and autocast
change a reported number? Maps and insertion/deletion AUCs against exact fp32."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scripts.bench_parts import exact_fp32, forward_part, pipeline_metric_batch, stand_in_images

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
    from fdcam.evaluation.faithfulness import insertion_deletion_curves

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
