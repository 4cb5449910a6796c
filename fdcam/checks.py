"""One-line checks of values a user types: notebook parameters, `setup` arguments, flags.

Each returns the value (normalised) or raises `FdcamError` naming the parameter and what
was expected, so that a bad value stops the run where it is given, not deep inside torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch

from fdcam.errors import FdcamError


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """An int (not a bool) ≥ `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise FdcamError(f"{name} must be an int >= {minimum} (or None); got {value!r}")
    return int(value)


def check_optional_int(value: object, name: str, minimum: int = 1) -> int | None:
    """None, or an int ≥ `minimum`."""
    return None if value is None else check_int(value, name, minimum)


def check_bool(value: object, name: str) -> bool:
    """True or False (papermill passes ``-p dry_run True`` as a bool)."""
    if not isinstance(value, bool):
        raise FdcamError(f"{name} must be True or False; got {value!r}")
    return value


def check_dry_run(dry_run: object, profile: str) -> bool:
    """``dry_run`` is a bool, and True only with the paper profile (random VGG16 weights)."""
    check_bool(dry_run, "dry_run")
    if dry_run and profile != "paper":
        raise FdcamError(f"dry_run applies to the paper profile only; got profile {profile!r}")
    return bool(dry_run)


def check_fraction(value: object, name: str) -> float:
    """A number in (0, 1] (θ of Eq. 5)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise FdcamError(f"{name} must be a number in (0, 1]; got {value!r}")
    return float(value)


def check_finite(value: object, name: str) -> float:
    """A finite number (b of Eq. 10)."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value)):
        raise FdcamError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """One of `choices`."""
    if value not in choices:
        raise FdcamError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return str(value)


def check_choices(value: object, name: str, choices: Sequence[str]) -> list[str]:
    """A non-empty list of distinct values from `choices`."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise FdcamError(f"{name} must be a non-empty list of names from "
                         f"{', '.join(choices)}; got {value!r}")
    unknown = [v for v in value if v not in choices]
    if unknown:
        raise FdcamError(f"{name}: unknown {', '.join(map(repr, unknown))}; expected names "
                         f"from {', '.join(choices)}")
    if len(set(value)) != len(value):
        raise FdcamError(f"{name} must not repeat a name; got {list(value)!r}")
    return [str(v) for v in value]


def check_device(device: object) -> str:
    """'cpu', 'cuda' or 'cuda:N', and CUDA only where a CUDA device is present."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise FdcamError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'); got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FdcamError(f"device {device!r} was asked for but no CUDA device is available; "
                         f"use device='cpu'")
    return device
