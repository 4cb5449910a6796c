"""Checks before work: the model, its output and the target layer, tried on one image before
anything is explained or written, so that a run that cannot give valid results stops in one
line instead of writing a row per image (or a map of noise).

* the weights are finite (`check_finite_weights`);
* the model returns logits: a tensor [B, classes], finite (`check_logits`). A model that
  returns a tuple or a dict is refused, not unwrapped: wrap it so that its forward returns
  the logits tensor (e.g. ``lambda x: model(x)[0]`` in an ``nn.Module``), the one form every
  explainer here relies on;
* the target layer gives a map A [B, K, h, w] with h, w ≥ 2 (`check_layer_map`): a 1×1 map
  has no spatial extent, so Grad-CAM's map is constant (all zeros after normalisation) and
  FD-CAM's is rounding noise stretched to [0, 1]; a layer that is not a convolutional map
  (a ``Linear``'s [B, classes]) has none either.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError


def check_finite_weights(network: nn.Module, name: str = "the model") -> None:
    """One line naming the first parameter or buffer with NaN or inf."""
    for kind, named in (("parameter", network.named_parameters()),
                        ("buffer", network.named_buffers())):
        for key, tensor in named:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise FdcamError(f"the weights of {name} hold NaN or inf ({kind} {key!r}); "
                                 f"expected finite weights (a damaged or diverged checkpoint?)")


def check_logits(output: object, batch: int, name: str = "the model") -> Tensor:
    """`output` of ``model(x)`` for a batch of `batch` images: a finite tensor [B, classes]."""
    if not isinstance(output, Tensor):
        raise FdcamError(f"{name} returned {type(output).__name__}; expected a logits tensor "
                         f"[B, classes] (wrap a model that returns a tuple or dict so that its "
                         f"forward returns the logits)")
    if output.dim() != 2 or output.shape[0] != batch or output.shape[1] < 1:
        raise FdcamError(f"{name} returned shape {list(output.shape)}; expected logits "
                         f"[{batch}, classes]")
    if not bool(torch.isfinite(output).all()):
        raise FdcamError(f"{name} returned NaN or inf logits; expected finite scores (NaN or "
                         f"inf in its weights, or in the image?)")
    return output


def check_layer_map(network: nn.Module, layer: str, x: Tensor) -> Tensor:
    """The target layer's map A [B, K, h, w] on `x`; one line unless it is a tensor of four
    dimensions with h, w ≥ 2 (the layer runs once per forward pass: `split_model`)."""
    from fdcam.split import no_grad_body, split_model

    a = no_grad_body(split_model(network, layer), x)
    if not isinstance(a, Tensor) or a.dim() != 4:
        shown = list(a.shape) if isinstance(a, Tensor) else type(a).__name__
        raise FdcamError(f"layer {layer!r} gives {shown}; expected a convolutional map "
                         f"[B, channels, h, w] (choose a layer before pooling and the "
                         f"classifier)")
    if a.shape[2] < 2 or a.shape[3] < 2:
        raise FdcamError(f"layer {layer!r} gives a {a.shape[2]}×{a.shape[3]} map; expected at "
                         f"least 2×2 (a map without spatial extent cannot localise: choose "
                         f"an earlier layer)")
    return a


def check_before_work(network: nn.Module, x: Tensor, layer: str | None,
                      name: str = "the model") -> Tensor:
    """All of the above on one image batch `x` [B, 3, H, W]; returns the logits."""
    check_finite_weights(network, name)
    with torch.no_grad():
        logits = check_logits(network(x), x.shape[0], name)
    if layer:
        check_layer_map(network, layer, x)
    return logits
