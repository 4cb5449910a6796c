"""Faithfulness (§IV-B): RISE's insertion and deletion curves and their AUCs.

Deletion replaces pixels by 0 in normalised space; insertion starts from a blurred copy
(RISE's kernel) and restores pixels; pixels in descending saliency with a stable sort; each
step changes 224·8 = 1,792 pixels at 224×224 (3.57 %): 28 steps, 29 points; the score is
the target's softmax probability; AUC = (Σs − s₀/2 − sₙ/2)/(n − 1); overall = ins − del."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdcam.errors import FdcamError
from fdcam.models import LoadedModel
from fdcam.split import eval_mode
from fdcam.targets import check_images

RISE_STEP = 224 * 8  # pixels per step at 224×224 in RISE's reference (`CausalMetric`)
RISE_AREA = 224 * 224
STEP_FRACTION = RISE_STEP / RISE_AREA  # 1/28 = 3.57 %, which §IV-B rounds to "3.6%"
BLUR_KERNEL_SIZE = 11  # RISE's insertion substrate: klen = 11 …
BLUR_SIGMA = 5.0  # … nsig = 5, through scipy.ndimage.gaussian_filter
BLUR_TRUNCATE = 4.0  # scipy.ndimage's default: the 1-D filter's radius is ⌊4σ + ½⌋ = 20
CPU_CURVE_BATCH = 4  # perturbed images per forward pass on a CPU (measured, see below)
CUDA_CURVE_BATCH = 64

Classifier = nn.Module | LoadedModel | Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- insertion/deletion


@dataclass(frozen=True)
class InsertionDeletion:
    """Insertion and deletion curves of a batch, and their areas.

    ``insertion``, ``deletion``: [B, n_points], the target-class probability after
    ``changed[i]`` pixels were inserted/deleted. ``changed``: [n_points] pixel counts,
    0 … H·W. ``insertion_auc``, ``deletion_auc``, ``overall``: [B].
    """

    insertion: Tensor
    deletion: Tensor
    changed: Tensor
    insertion_auc: Tensor
    deletion_auc: Tensor

    @property
    def overall(self) -> Tensor:
        """The paper's overall score (Table I): insertion AUC − deletion AUC, [B]."""
        return self.insertion_auc - self.deletion_auc

    @property
    def fractions(self) -> Tensor:
        """Fraction of the image changed at each point, [n_points] in [0, 1] (a plot's x)."""
        return self.changed.double() / self.changed[-1].double()


def perturbation_steps(height: int, width: int,
                       step_fraction: float = STEP_FRACTION) -> tuple[int, int]:
    """Pixels changed per step and the number of steps for an H×W image.

    step = max(1, round(step_fraction·H·W)), n_steps = ceil(H·W / step); a curve has
    n_steps + 1 points. The default fraction is RISE's 1792/50176 = 1/28: (1792, 28) at
    224×224. The product is exact (the fraction as a ratio of small integers), so a size
    whose share is a whole number of pixels gets exactly that many.
    """
    if not 0 < step_fraction <= 1:
        raise FdcamError(f"step_fraction must be in (0, 1]; got {step_fraction!r}")
    if height < 1 or width < 1:
        raise FdcamError(f"image size must be positive; got {height}x{width}")
    area = height * width
    # 1/28 as a float times 50176 is not exactly 1792.0; the nearest simple ratio is.
    fraction = Fraction(step_fraction).limit_denominator(1_000_000)
    step = max(1, round(fraction * area))
    return step, math.ceil(area / step)


def auc(curve: Tensor) -> Tensor:
    """Area under curves sampled uniformly on [0, 1], by the trapezoid rule.

    AUC = (Σᵢ sᵢ − s₀/2 − sₙ₋₁/2) / (n − 1) over the last axis: curve [..., n] -> [...].
    As in RISE the points count as equally spaced even when the last step is shorter.
    """
    if curve.dim() == 0 or curve.shape[-1] < 2:
        raise FdcamError(f"a curve needs at least 2 points on its last axis; "
                         f"got shape {tuple(curve.shape)}")
    n = curve.shape[-1]
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / (n - 1)


def _reflect_index(index: Tensor, n: int) -> Tensor:
    """Half-sample symmetric extension of 0 … n−1 (scipy's 'reflect': d c b a | a b c d |
    d c b a), for any integer index: period 2n, and i ↦ 2n − 1 − i on the mirrored half."""
    m = torch.remainder(index, 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def rise_kernel(size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA, *,
                truncate: float = BLUR_TRUNCATE, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """RISE's insertion kernel, [size, size]: a unit impulse at the centre of a size×size
    grid filtered by a Gaussian of σ with a reflecting border.

    This is ``scipy.ndimage.gaussian_filter(impulse, sigma)`` with its defaults (mode
    'reflect', truncate 4), written in torch: the filter is separable, k = r rᵀ, with the
    1-D response to the impulse at c = ⌊size/2⌋

        r_i = Σ_{t=−R}^{R} w_t · [reflect(i + t) = c],   w_t = exp(−t²/2σ²) / Σ_u exp(−u²/2σ²),

    R = ⌊truncate·σ + ½⌋ (20 for σ = 5) and reflect the half-sample symmetric extension.
    Because R exceeds the grid, most of the Gaussian folds back onto it: the kernel is
    nearly flat, centre/corner = 1.142 for the defaults (a sampled Gaussian has 2.72), and
    Σ k = 1 (reflection keeps the mass).
    """
    if size < 1 or size % 2 == 0:
        raise FdcamError(f"blur kernel size must be a positive odd number; got {size}")
    if not sigma > 0:
        raise FdcamError(f"blur sigma must be positive; got {sigma!r}")
    if not truncate > 0:
        raise FdcamError(f"blur truncate must be positive; got {truncate!r}")
    radius = int(truncate * sigma + 0.5)  # scipy's rule
    taps = torch.arange(-radius, radius + 1)
    w = torch.exp(-(taps.double() ** 2) / (2 * sigma**2))
    w = w / w.sum()
    source = _reflect_index(torch.arange(size)[:, None] + taps[None, :], size)  # [size, taps]
    r = (w[None, :] * (source == size // 2)).sum(dim=1)
    return torch.outer(r, r).to(dtype=dtype, device=device)


def blur(x: Tensor, size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """Insertion's starting image: each channel convolved with `rise_kernel`, [B, C, H, W].

    Depthwise convolution with zero padding (size // 2) in normalised space, so the border
    darkens towards the dataset mean exactly as in RISE's reference.
    """
    channels = x.shape[1]
    k = rise_kernel(size, sigma, dtype=x.dtype, device=x.device)
    weight = k.expand(channels, 1, size, size)
    return F.conv2d(x, weight, padding=size // 2, groups=channels)


def saliency_ranks(saliency: Tensor) -> Tensor:
    """Rank of every pixel in descending saliency: [B, H, W] -> [B, H·W], 0 = most salient.

    The sort is stable, so pixels of equal saliency are ranked by their row-major index;
    ReLU'd maps full of zeros therefore give reproducible curves on every device.
    """
    flat = saliency.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    ranks.scatter_(1, order, positions)  # ranks[b, order[b, r]] = r
    return ranks


def curve_batch_size(device: torch.device | str) -> int:
    """Default number of perturbed images per forward pass of the curves on `device`.

    On a CPU small batches are faster per image: EfficientNet-Lite0 on this project's
    2-core machine took 20–30 ms/image at batch 2–4 and 55–100 ms/image at batch 32
    (its activations no longer fit the caches), so `CPU_CURVE_BATCH` = 4; on a GPU a
    batch fills the device: `CUDA_CURVE_BATCH` = 64.
    """
    return CUDA_CURVE_BATCH if torch.device(device).type == "cuda" else CPU_CURVE_BATCH


def insertion_deletion_curves(
    model: Classifier,
    x: Tensor,
    saliency: Tensor,
    target: int | Sequence[int] | Tensor,
    *,
    step_fraction: float = STEP_FRACTION,
    batch_size: int | None = None,
) -> InsertionDeletion:
    """Insertion and deletion curves (RISE protocol, §IV-B) of a batch of saliency maps.

    x: normalised images [B, 3, H, W]; saliency: [B, H, W] (or [B, 1, H, W]); target: one
    class per image, [B] (or one int for all). Point i of a curve changes the
    n_i = min(i·step, H·W) highest-ranked pixels (`saliency_ranks`, `perturbation_steps`):

        deletion_i  = p_c(x ⊙ (1 − M_i))
        insertion_i = p_c(x ⊙ M_i + blur(x) ⊙ (1 − M_i)),   M_i = [rank < n_i]

    with p_c the softmax probability of the target class. This equals RISE's loop, which
    replaces the next `step` pixels in place and scores after each step, point for point.
    Both curves of all images are one list of 2·B·(n_steps + 1) perturbed images, evaluated
    `batch_size` at a time (None: `curve_batch_size` for x's device); each batch is built by
    one gather from the stacked (start, finish) images through the rank map, under
    `torch.no_grad` on x's device. An `nn.Module` is put in eval mode and restored after.
    """
    check_images(x, channels=3)
    batch, channels, height, width = x.shape
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        saliency = saliency.squeeze(1)
    if tuple(saliency.shape) != (batch, height, width):
        raise FdcamError(f"saliency must have shape [B, H, W] = {[batch, height, width]} "
                         f"to match x; got {list(saliency.shape)}")
    if not torch.isfinite(saliency).all():
        raise FdcamError("saliency contains NaN or infinite values; expected finite maps")
    if batch_size is None:
        batch_size = curve_batch_size(x.device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FdcamError(f"batch_size must be a positive int or None; got {batch_size!r}")
    targets = _target_vector(target, batch).to(x.device)
    step, n_steps = perturbation_steps(height, width, step_fraction)
    n_points = n_steps + 1
    area = height * width
    changed = (torch.arange(n_points, device=x.device) * step).clamp_(max=area)

    network = model.model if isinstance(model, LoadedModel) else model
    # Dropout/batch-norm in train mode would make the curves random: eval mode, restored.
    mode = eval_mode(network) if isinstance(network, nn.Module) else contextlib.nullcontext()
    with mode, torch.no_grad():
        ranks = saliency_ranks(saliency.to(x.device)).view(batch, 1, height, width)
        # Per image, [deletion start, deletion finish, insertion start, insertion finish]:
        # a pixel of a perturbed image comes from "finish" once its rank is < n_i.
        ends = torch.stack([x, torch.zeros_like(x), blur(x), x], dim=1)
        ends = ends.reshape(batch * 4, channels, height, width)
        per_image = 2 * n_points  # deletion points, then insertion points
        total = batch * per_image
        probabilities = torch.empty(total, device=x.device)
        for start in range(0, total, batch_size):
            q = torch.arange(start, min(start + batch_size, total), device=x.device)
            image, rest = q // per_image, q % per_image
            kind, point = rest // n_points, rest % n_points  # kind 0 deletion, 1 insertion
            finished = ranks[image] < changed[point].view(-1, 1, 1, 1)  # [n, 1, H, W]
            source = (4 * image + 2 * kind).view(-1, 1, 1, 1) + finished
            perturbed = ends.gather(0, source.expand(-1, channels, -1, -1))
            probabilities[q] = _probability(network, perturbed, targets[image])
    probabilities = probabilities.view(batch, 2, n_points)
    deletion, insertion = probabilities[:, 0], probabilities[:, 1]
    return InsertionDeletion(insertion, deletion, changed, auc(insertion), auc(deletion))


def _target_vector(target: int | Sequence[int] | Tensor, batch: int) -> Tensor:
    if isinstance(target, bool):
        raise FdcamError(f"target must be a class index, not {target!r}")
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long)
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise FdcamError(f"target must hold integer class indices; got dtype {t.dtype}")
    if t.dim() == 2 and t.shape[1] == 1:
        t = t.squeeze(1)
    if t.dim() == 0:
        t = t.expand(batch)
    if tuple(t.shape) != (batch,):
        raise FdcamError(f"target must be one class per image, shape [{batch}]; "
                         f"got shape {list(t.shape)}")
    return t.long()


def _probability(network: Callable[[Tensor], Tensor], images: Tensor, cls: Tensor) -> Tensor:
    logits = network(images)
    if logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        raise FdcamError(f"model must return logits [N, classes]; got {list(logits.shape)}")
    if int(cls.max()) >= logits.shape[1] or int(cls.min()) < 0:
        raise FdcamError(f"target class {int(cls.max())} is out of range; the model has "
                         f"{logits.shape[1]} classes")
    # Softmax in float32 at least: half-precision probabilities near 1 lose the curve's tail.
    probs = torch.softmax(logits.float(), dim=1)
    return probs.gather(1, cls[:, None]).squeeze(1)
