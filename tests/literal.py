"""Literal, slow implementations of the paper's definitions (Eq. 2, 4–11), for parity tests.

Everything here follows the text of the paper one formula at a time, with Python loops,
and never calls into `fdcam`'s algorithm code. `head` is a callable that maps activations
A [N, K, h, w] to logits, written out in each test from the model's own forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Head = Callable[[Tensor], Tensor]


def cosine_matrix(a: Tensor) -> Tensor:
    """Eq. 4 by loops, in float64; a zero channel has similarity 0; values rounded to
    multiples of 2^-36 so that mathematically equal similarities tie (our tie rule)."""
    k = a.shape[0]
    v = a.flatten(1).double()
    norms = v.norm(dim=1)
    m = torch.zeros(k, k, dtype=torch.float64)
    for i in range(k):  # row i: cos(A^i, A^l) = v^i · v^l / (|v^i| |v^l|) for every l
        if norms[i] > 0:
            dots = (v * v[i]).sum(dim=1)
            m[i] = torch.where(norms > 0, dots / (norms[i] * norms), 0.0)
    return torch.round(m.clamp(-1, 1) * 2.0**36) / 2.0**36


def groups_of(a: Tensor, theta: float) -> list[list[int]]:
    """Eq. 5 with torch.quantile as the threshold."""
    m = cosine_matrix(a)
    groups = []
    for k in range(a.shape[0]):
        tau = torch.quantile(m[k], 1 - theta)
        groups.append(torch.nonzero(m[k] > tau).flatten().tolist())
    return groups


def scores_of_masks(head: Head, a: Tensor, masks: list[Tensor], c: int,
                    chunk: int = 64) -> list[float]:
    """f_c with A ⊙ m, one mask at a time (batched only to save time)."""
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(masks), chunk):
            batch = torch.stack([a * m.view(-1, 1, 1) for m in masks[start: start + chunk]])
            out.extend(head(batch)[:, c].tolist())
    return out


def literal_fdcam(head: Head, a: Tensor, c: int, size: tuple[int, int], *, theta: float = 0.05,
                  bias: float = 0.5, combination: str = "exp_minus_bias",
                  grouping: bool = True, switch_on: bool = True) -> dict[str, Tensor]:
    """FD-CAM for one image's activations a [K, h, w] and one class c."""
    k = a.shape[0]
    groups = groups_of(a, theta) if grouping else [[i] for i in range(k)]
    with torch.no_grad():
        f = float(head(a.clone().unsqueeze(0))[0, c])  # clone: heads may work in place
    off_masks, on_masks = [], []
    for g in groups:
        off = torch.ones(k)
        off[g] = 0  # switch off the group (Eq. 6)
        on = torch.zeros(k)
        on[g] = 1  # switch on only the group (Eq. 7)
        off_masks.append(off)
        on_masks.append(on)
    s_off = torch.tensor([f - v for v in scores_of_masks(head, a, off_masks, c)])
    s_on = torch.tensor(scores_of_masks(head, a, on_masks, c)) if switch_on else None
    s = (s_off + s_on) / 2 if s_on is not None else s_off  # Eq. 8

    leaf = a.clone().unsqueeze(0).requires_grad_(True)
    head(leaf.clone())[0, c].backward()
    alpha = leaf.grad[0].mean(dim=(1, 2))  # Eq. 2

    def norm(v: Tensor) -> Tensor:
        lo, hi = float(v.min()), float(v.max())
        return torch.zeros_like(v) if hi == lo else (v - lo) / (hi - lo)

    a_hat, s_hat = norm(alpha), norm(s)
    omega = torch.zeros(k)
    for i in range(k):  # Eq. 10 and the Table IV alternatives
        if combination == "exp_minus_bias":
            omega[i] = a_hat[i] * math.exp(s_hat[i]) - bias
        elif combination == "exp_shifted":
            omega[i] = a_hat[i] * math.exp(s_hat[i] - bias)
        elif combination == "exp":
            omega[i] = a_hat[i] * math.exp(s_hat[i])
        else:
            omega[i] = a_hat[i] * s_hat[i]
    cam = torch.zeros(a.shape[1:])
    for i in range(k):
        cam += omega[i] * a[i]
    cam = torch.relu(cam)  # Eq. 11
    cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    cam = norm(cam.flatten()).view(size)
    return {"groups": groups, "off": s_off, "on": s_on, "score": s, "alpha": alpha,
            "weights": omega, "saliency": cam}
