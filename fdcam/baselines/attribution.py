"""Attribution baselines beyond CAMs: Integrated Gradients (captum) and XRAI (saliency),
as maps in [0, 1] like the others."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fdcam.baselines.base import BaseExplainer, Layer
from fdcam.checks import check_positive_int
from fdcam.combine import min_max_maps
from fdcam.errors import FdcamError

# --------------------------------------------------------------------------------------
# Integrated Gradients and XRAI (pixel attributions; Fig. 4 only)
# --------------------------------------------------------------------------------------


def _attribution_to_saliency(attribution: Tensor, clip_percentile: float | None) -> Tensor:
    """[B, H, W] attribution -> [0, 1]: optional clipping at the upper percentile, min-max."""
    if clip_percentile is not None:
        flat = attribution.flatten(1)
        top = torch.quantile(flat, clip_percentile / 100, dim=1)
        attribution = torch.minimum(attribution, top[:, None, None])
    return min_max_maps(attribution)


def _check_percentile(value: float | None, name: str) -> float | None:
    if value is not None and not 0 < value <= 100:
        raise FdcamError(f"{name} must be in (0, 100] or None; got {value!r}")
    return value


class IntegratedGradients(BaseExplainer):
    """Integrated Gradients [9] (Sundararajan et al., ICML 2017), through captum:

    ``IG_i(x) = (x_i − x'_i) ∫_0^1 ∂f_c(x' + t (x − x'))/∂x_i dt`` with the baseline
    ``x' = 0`` in normalised space, f_c the raw logit, `n_steps` Gauss–Legendre points
    (captum's default rule) and `internal_batch_size` points per pass.

    `target_layer` is accepted for a uniform interface and ignored.
    Saliency: ``Σ_colour |IG|`` per pixel (the PAIR/XRAI convention; the magnitude of
    attribution regardless of sign), optionally clipped at its `clip_percentile`-th
    percentile per image (the PAIR visualisation uses 99), then min-max to [0, 1].
    """

    name = "ig"
    uses_layer = False

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 n_steps: int = 50, internal_batch_size: int = 16,
                 clip_percentile: float | None = None) -> None:
        super().__init__(model, target_layer)
        self.n_steps = check_positive_int(n_steps, "n_steps")
        self.internal_batch_size = check_positive_int(internal_batch_size,
                                                       "internal_batch_size")
        self.clip_percentile = _check_percentile(clip_percentile, "clip_percentile")

    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        with warnings.catch_warnings():
            # captum imports tqdm.auto, which warns in a notebook kernel without ipywidgets
            # ("IProgress not found"); no captum progress bar is ever shown here.
            warnings.filterwarnings("ignore", message="IProgress not found")
            from captum.attr import IntegratedGradients as CaptumIG

        ig = CaptumIG(self.forward_model)
        attribution = ig.attribute(x, baselines=torch.zeros_like(x), target=classes,
                                   n_steps=self.n_steps,
                                   internal_batch_size=self.internal_batch_size)
        return _attribution_to_saliency(attribution.detach().abs().sum(dim=1),
                                        self.clip_percentile)


class XRAI(BaseExplainer):
    """XRAI [11] (Kapishnikov et al., ICCV 2019), through ``saliency.core.XRAI`` (Google PAIR).

    XRAI over-segments the image (Felzenszwalb at six scales, dilated masks) and grows a
    region ranking greedily by attribution density ``mean_{R \\ S} IG``, where IG (raw logit,
    `steps` points, averaged over a black and a white baseline, channel max) comes from
    the same package. Each pixel's value is the density of the region that added it.

    Baselines: black and white pixels ``(0 − mean)/std`` and ``(1 − mean)/std`` when the
    model's normalisation `mean`, `std` is given (`make_explainer` passes it for a
    `LoadedModel`), else the package default: constant images at the min and max of x.
    The map is min-max normalised to [0, 1]. Runs one image and class at a time (slow).
    `target_layer` is accepted for a uniform interface and ignored.
    """

    name = "xrai"
    uses_layer = False

    def __init__(self, model: nn.Module, target_layer: Layer | None = None, *,
                 steps: int = 100, batch_size: int = 16, algorithm: str = "full",
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(model, target_layer)
        self.steps = check_positive_int(steps, "steps")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if algorithm not in ("full", "fast"):
            raise FdcamError(f"algorithm must be 'full' or 'fast'; got {algorithm!r}")
        self.algorithm = algorithm
        if (mean is None) != (std is None):
            raise FdcamError("give both mean and std (the model's normalisation) or neither")
        if mean is not None and std is not None:
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise FdcamError(f"mean and std must be 3 numbers each, std > 0; "
                                 f"got {tuple(mean)}, {tuple(std)}")
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)

    def _call_model(self, device: torch.device) -> Callable[..., dict[str, np.ndarray]]:
        import saliency.core as saliency

        def call_model(images: np.ndarray, call_model_args: dict[str, int] | None = None,
                       expected_keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
            c = (call_model_args or {})["class"]
            batch = torch.from_numpy(np.asarray(images, dtype=np.float32)).to(device)
            batch = batch.permute(0, 3, 1, 2).requires_grad_(True)  # NHWC -> NCHW
            with torch.enable_grad():
                out = self.forward_model(batch)
                (grad,) = torch.autograd.grad(out[:, c].sum(), batch)
            return {saliency.INPUT_OUTPUT_GRADIENTS:
                    grad.permute(0, 2, 3, 1).cpu().numpy()}

        return call_model

    def _baselines(self, image: np.ndarray) -> list[np.ndarray] | None:
        if self.mean is None or self.std is None:
            return None
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        return [np.broadcast_to((value - mean) / std, image.shape).astype(image.dtype)
                for value in (0.0, 1.0)]

    def _explain_column(self, x: Tensor, classes: Tensor, logits: Tensor) -> Tensor:
        import saliency.core as saliency

        xrai = saliency.XRAI()
        parameters = saliency.XRAIParameters(steps=self.steps, algorithm=self.algorithm)
        call_model = self._call_model(x.device)
        maps = []
        for image, c in zip(x, classes.tolist(), strict=True):
            value = image.permute(1, 2, 0).cpu().numpy().astype(np.float32)  # HWC
            attribution = xrai.GetMask(value, call_model, call_model_args={"class": c},
                                       baselines=self._baselines(value),
                                       batch_size=self.batch_size,
                                       extra_parameters=parameters)
            a = torch.as_tensor(np.asarray(attribution, dtype=np.float32), device=x.device)
            finite = torch.isfinite(a)
            low = a[finite].min() if finite.any() else a.new_zeros(())
            maps.append(torch.where(finite, a, low))
        return min_max_maps(torch.stack(maps))
