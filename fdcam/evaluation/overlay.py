"""The overlay the command line writes (``fdcam explain --out``) and the book's figures draw:
a saliency map in [0, 1] coloured by `SALIENCY_CMAP` and blended onto the image's pixels.

Only matplotlib's colour maps are needed (the [evaluation] extra), not the figures' styling.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import torch
from torch import Tensor

from fdcam.errors import FdcamError

SALIENCY_CMAP = "jet"
"""The colour map of saliency overlays: jet, as in the paper's figures (OpenCV's JET)."""


def cpu_tensor(value: Tensor | np.ndarray, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise FdcamError(f"{name} must be a torch tensor, not {type(value).__name__}")
    return value.detach().to("cpu", torch.float32)


def image_pixels(image: Tensor | np.ndarray, name: str = "image") -> np.ndarray:
    """[3, H, W] in [0, 1] -> numpy [H, W, 3]."""
    x = cpu_tensor(image, name)
    if x.ndim != 3 or x.shape[0] != 3:
        raise FdcamError(f"{name} must have shape [3, H, W]; got {list(x.shape)}")
    low, high = float(x.min()), float(x.max())
    if low < -1e-4 or high > 1 + 1e-4:
        raise FdcamError(f"{name} pixels must lie in [0, 1]; got [{low:.3g}, {high:.3g}] "
                         f"(undo the normalisation with LoadedModel.to_pixels)")
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def saliency_pixels(saliency: Tensor | np.ndarray, size: tuple[int, int] | None,
              name: str = "saliency") -> np.ndarray:
    """[H, W] in [0, 1] (at `size` when given) -> numpy [H, W]."""
    s = cpu_tensor(saliency, name)
    if s.ndim != 2:
        raise FdcamError(f"{name} must have shape [H, W]; got {list(s.shape)}")
    if size is not None and tuple(s.shape) != tuple(size):
        raise FdcamError(f"{name} is {list(s.shape)} but the image is {list(size)}; "
                         f"saliency maps are at the input's resolution")
    if not torch.isfinite(s).all():
        raise FdcamError(f"{name} has NaN or infinite values")
    low, high = float(s.min()), float(s.max())
    if low < -1e-4 or high > 1 + 1e-4:
        raise FdcamError(f"{name} must lie in [0, 1]; got [{low:.3g}, {high:.3g}]")
    return s.clamp(0, 1).numpy()


def blend(image: Tensor | np.ndarray, saliency: Tensor | np.ndarray, *, alpha: float = 0.5,
          cmap: str = SALIENCY_CMAP) -> np.ndarray:
    """The overlay's pixels: (1 − alpha)·image + alpha·cmap(saliency), numpy [H, W, 3].

    The same blend as pytorch-grad-cam's ``show_cam_on_image``, on a fixed [0, 1] scale so
    that maps of different methods are comparable.
    """
    if not 0 <= alpha <= 1:
        raise FdcamError(f"alpha must lie in [0, 1]; got {alpha}")
    pixels = image_pixels(image)
    heat = mpl.colormaps[cmap](saliency_pixels(saliency, pixels.shape[:2]))[..., :3]
    return (1 - alpha) * pixels + alpha * heat
