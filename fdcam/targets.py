"""Target classes and input images: checked once, at the boundary.

`target` may be an int (one class for every image), a sequence of B ints (one per image),
or a [B, C] int tensor / nested list (C classes per image; outputs gain a class axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError

Target = int | Sequence[int] | Sequence[Sequence[int]] | Tensor


def _categories(target: object) -> object:
    if isinstance(target, list | tuple):
        return [_categories(t) for t in target]
    return category_of(target)


def check_images(x: object, name: str = "x", channels: int | None = None) -> Tensor:
    """Accept only a float tensor [B, C, H, W]; anything else is a one-line error.

    `channels`: the number C that the caller needs (3 for the evaluation protocols, which
    read photos); None accepts any C ≥ 1, as FD-CAM itself does (a grayscale model is as
    explainable as an RGB one).
    """
    shape = "[B, C, H, W]" if channels is None else f"[B, {channels}, H, W]"
    if not isinstance(x, Tensor):
        raise FdcamError(f"{name} must be a float tensor {shape}; got {type(x).__name__}")
    if x.dim() != 4:
        raise FdcamError(f"{name} must have 4 dimensions {shape}; got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise FdcamError(f"{name} must have {channels} colour channels {shape}; "
                         f"got {x.shape[1]} in shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise FdcamError(f"{name} has no channels in shape {tuple(x.shape)}; expected {shape}")
    if not x.is_floating_point():
        raise FdcamError(f"{name} must be a float tensor; got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise FdcamError(f"{name} is an empty batch; expected at least one image")
    return x


def check_model_input(model: nn.Module, x: object, channels: int | None = None) -> Tensor:
    """`check_images`, then: `x` is on the model's device and holds finite pixels."""
    x = check_images(x, channels=channels)
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device != x.device:
        raise FdcamError(f"x is on {x.device} but the model is on {parameter.device}; "
                         f"move one of them")
    if not torch.isfinite(x).all():
        raise FdcamError("x contains NaN or infinite values; expected finite pixels")
    return x


def category_of(target: object) -> object:
    """A pytorch-grad-cam target (an object with ``.category``, e.g. ClassifierOutputTarget)
    as its class index; ints and other values pass through unchanged."""
    category = getattr(target, "category", None)
    if category is not None and not isinstance(target, Tensor | int):
        return category
    if callable(target) and not isinstance(target, Tensor):
        raise FdcamError(f"target {type(target).__name__} has no .category; FD-CAM explains "
                         f"class scores, so give class indices or ClassifierOutputTarget(c)")
    return target


def resolve_targets(target: Target, batch: int, num_classes: int) -> tuple[Tensor, bool]:
    """Normalise `target` to a long tensor [B, C] and say whether a class axis was asked for.

    pytorch-grad-cam targets (objects with ``.category``) count as their class index, alone
    or in (nested) lists.

    Returns ``(targets, multi)``: ``multi`` is True when the caller passed C classes per
    image (a 2-D target), so results keep the class axis; otherwise C = 1 and results drop it.
    """
    target = _categories(target)
    if isinstance(target, bool):
        raise FdcamError(f"target must be a class index, not {target!r}")
    if isinstance(target, int):
        t = torch.full((batch, 1), target, dtype=torch.long)
        multi = False
    else:
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError) as error:
            raise FdcamError(f"target must be an int, B ints or a [B, C] table of ints; "
                             f"got {target!r}") from error
        if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
            raise FdcamError(f"target must hold integer class indices; got dtype {t.dtype}")
        t = t.long().cpu()
        if t.dim() == 0:
            t = t.expand(batch).reshape(batch, 1)
            multi = False
        elif t.dim() == 1:
            if t.shape[0] != batch:
                raise FdcamError(f"target has {t.shape[0]} entries but the batch has {batch} "
                                 f"images; give one class per image (or one int for all)")
            t = t.view(batch, 1)
            multi = False
        elif t.dim() == 2:
            if t.shape[0] != batch:
                raise FdcamError(f"target has {t.shape[0]} rows but the batch has {batch} "
                                 f"images; give a [B, C] table with B = {batch}")
            if t.shape[1] == 0:
                raise FdcamError("target has no classes per image; expected [B, C] with C >= 1")
            multi = True
        else:
            raise FdcamError(f"target must be an int, B ints or [B, C] ints; "
                             f"got shape {tuple(t.shape)}")
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        value = int(t[bad][0])
        raise FdcamError(f"target class {value} is out of range; the model has {num_classes} "
                         f"classes (0..{num_classes - 1})")
    return t, multi
