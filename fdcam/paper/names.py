"""The paper's vocabulary: profiles, tables, metrics (and which way is better) and the
methods' labels as the paper prints them."""

from __future__ import annotations

from fdcam.errors import FdcamError

PROFILES = ("offline", "imagenet-sample", "paper", "smoke")
"""The values of the papermill parameter ``profile`` (the book's "How to reproduce" page)."""

TABLES = ("I", "II", "III", "IV")

METRICS = {
    "insertion": "higher",
    "deletion": "lower",
    "overall": "higher",
    "pointing_game": "higher",
}
"""Each metric of the paper's tables and which direction is better."""

METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "scorecam": "Score-CAM",
    "ablationcam": "Ablation-CAM",
    "layercam": "Layer-CAM",
    "groupcam": "Group-CAM",
    "fdcam": "FD-CAM",
    "fdcam-ng-off": "FD-CAM (ng+off)",
    "fdcam-g-off": "FD-CAM (g+off)",
    "fdcam-product": "FD-CAM (α̂·ŝ)",
    "fdcam-exp": "FD-CAM (α̂·exp ŝ)",
    "fdcam-exp-shifted": "FD-CAM (α̂·exp(ŝ − 0.5))",
    "ig": "Integrated Gradients",
    "xrai": "XRAI",
}
"""How the paper writes each method name; ours are the keys."""


def check_profile(profile: str) -> str:
    """Return `profile` if it is one of `PROFILES`; otherwise raise a one-line FdcamError.

    `fdcam.paper.parameters.check_parameters` and `fdcam.paper.setups.setup` call it, so a bad
    papermill parameter (``-p profile x``) stops a notebook before any work is done.
    """
    if profile not in PROFILES:
        raise FdcamError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile


def method_label(method: str) -> str:
    """The paper's name of one of our methods ("gradcam++" -> "Grad-CAM++"); else the key."""
    return METHOD_LABELS.get(method, method)
