"""The notebooks' papermill parameters and their checks: the cell after each notebook's
``parameters`` cell calls `check_parameters`, and the runner checks ``-p`` values with the
same checks before anything runs."""

from __future__ import annotations

from typing import Any

from fdcam.checks import (
    check_bool,
    check_choice,
    check_choices,
    check_device,
    check_dry_run,
    check_finite,
    check_fraction,
    check_int,
    check_optional_int,
)
from fdcam.errors import FdcamError
from fdcam.paper.names import check_profile

# --------------------------------------------------------------------------- the parameters


def _photo_names() -> list[str]:
    from fdcam.evaluation.photos import offline_photos

    return [photo.name for photo in offline_photos()]


PARAMETER_CHECKS: dict[str, Any] = {
    "profile": lambda v, n: check_profile(v),
    "device": lambda v, n: check_device(v),
    "seed": lambda v, n: check_int(v, n, minimum=0),
    "dry_run": check_bool,
    "threads": lambda v, n: check_int(v, n, minimum=0),
    "theta": check_fraction,
    "bias": check_finite,
    "photo": lambda v, n: check_choice(v, n, _photo_names()),
    # None: the package photos' defaults, or (imagenet-sample) the rule of
    # fdcam.paper.figure_choice
    "fig1_photos": lambda v, n: None if v is None else check_choices(v, n, _photo_names()),
    "fig4_photos": lambda v, n: None if v is None else check_choices(v, n, _photo_names()),
    "fig1_mosaic": lambda v, n: check_optional_int(v, n, minimum=0),
    "scorecam_batch_size": check_int,
    "n_images": check_optional_int,
    "n_mosaics": check_optional_int,
}

_PACKAGE_PHOTO_PARAMETERS = ("fig1_mosaic", "fig1_photos", "fig4_photos")
"""Chapter 04's choice of package photos: None (the default) with the imagenet-sample
profile, whose photos are chosen by a rule."""


def check_parameters(**parameters: Any) -> dict[str, Any]:
    """Check a notebook's papermill parameters; a bad one is a one-line `FdcamError`.

    Called in the cell after the ``parameters`` cell with every parameter by name:
    ``check_parameters(profile=profile, device=device, photo=photo, ...)``. ``dry_run``
    (random weights, for `make reproduce DRY_RUN=1`) applies to the paper profile only;
    ``fig1_mosaic``, ``fig1_photos`` and ``fig4_photos`` (package photos) stay None with the
    imagenet-sample profile.
    Returns the checked values.
    """
    checked = {}
    for name, value in parameters.items():
        if name not in PARAMETER_CHECKS:
            raise FdcamError(f"check_parameters has no check for {name!r}; known: "
                             f"{', '.join(PARAMETER_CHECKS)}")
        checked[name] = PARAMETER_CHECKS[name](value, name)
    if "dry_run" in checked:
        check_dry_run(checked["dry_run"], checked.get("profile", "paper"))
    if checked.get("profile") == "imagenet-sample":
        given = [name for name in _PACKAGE_PHOTO_PARAMETERS if checked.get(name) is not None]
        if given:
            raise FdcamError(f"{given[0]} chooses package photos; the imagenet-sample profile "
                             f"chooses Figs. 1 and 4 by the rule of fdcam.paper.figure_choice: "
                             f"leave {given[0]} None")
    return checked
