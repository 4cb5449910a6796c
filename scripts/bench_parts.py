"""The parts `scripts.bench_gpu` times, each a median over stand-in images: decoding, a
forward pass, each method's explanation, insertion/deletion, a fine-tuning step."""

from __future__ import annotations

import io
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError

TUNED_BATCH_SIZES = (16, 32, 64, 128, 256, 512)


def pipeline_options(method: str, device: torch.device) -> dict[str, Any]:
    """The explainer options the experiments run `method` with on `device`
    (`fdcam.baselines.batch_options`, as `fdcam.paper.runs.method_options`)."""
    from fdcam.baselines import batch_options

    return batch_options(method, device.type)


def pipeline_metric_batch(device: torch.device | str = "cuda") -> int:
    """Perturbed images per forward pass in the experiments' insertion/deletion: the
    metrics' default for `device` unless `Setup.batch_size` fixes one."""
    from fdcam.evaluation.faithfulness import curve_batch_size
    from fdcam.paper.setups import Setup

    fixed = Setup.__dataclass_fields__["batch_size"].default
    return curve_batch_size(device) if fixed is None else int(fixed)  # type: ignore[arg-type]

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
    datasets' typical sizes (as `scripts.standins` writes them, but never saved)."""
    from fdcam.models import IMAGENET_MEAN, IMAGENET_STD, preprocess_image
    from scripts.standins import IMAGENET_SIZES, canvas

    rng = random.Random(seed)
    return torch.stack([preprocess_image(canvas(rng, rng.choice(IMAGENET_SIZES), "photos"),
                                         IMAGENET_MEAN, IMAGENET_STD) for _ in range(n)])


def decode_time(rounds: int = 21) -> float:
    """Median seconds to decode and preprocess one 500×375 JPEG (in memory)."""
    from fdcam.models import IMAGENET_MEAN, IMAGENET_STD, preprocess_image
    from scripts.standins import canvas

    buffer = io.BytesIO()
    canvas(random.Random(0), (500, 375), "photos").save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()

    def decode() -> None:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            preprocess_image(image, IMAGENET_MEAN, IMAGENET_STD)

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
    one call, as `fdcam.evaluation.runner.evaluate` does (the image repeated once per class).
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
    """Insertion + deletion curves for each item's C maps at once (as `evaluate`)."""
    from fdcam.evaluation.faithfulness import insertion_deletion_curves

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
    from fdcam.paper.finetune import build_voc_model

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
