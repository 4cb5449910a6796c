"""Gradients of several class scores at once, for Grad-CAM's α (Eq. 2)."""

from __future__ import annotations

import torch
from torch import Tensor


def class_gradients(logits: Tensor, leaf: Tensor, targets: Tensor) -> Tensor:
    """∂ logits[b, targets[b, j]] / ∂ leaf for every class column j: [C, *leaf.shape].

    logits: [B, classes] computed from `leaf`; targets: long [B, C].
    """
    c = targets.shape[1]
    select = torch.zeros(c, *logits.shape, dtype=logits.dtype, device=logits.device)
    select.scatter_(2, targets.T.unsqueeze(-1), 1.0)  # select[j, i, targets[i, j]] = 1
    return vector_jacobian_products(logits, leaf, select)


def vector_jacobian_products(output: Tensor, leaf: Tensor, cotangents: Tensor) -> Tensor:
    """Vector-Jacobian products for a stack of cotangents [C, *output.shape]: [C, *leaf.shape]."""
    c = cotangents.shape[0]
    if c == 1:
        return torch.autograd.grad(output, leaf, cotangents[0], retain_graph=True)[0][None]
    try:
        return torch.autograd.grad(output, leaf, cotangents, is_grads_batched=True,
                                   retain_graph=True)[0]
    except RuntimeError:  # an op without a batching rule: one backward pass per class
        return torch.stack([torch.autograd.grad(output, leaf, cotangents[j], retain_graph=True)[0]
                            for j in range(c)])
