"""One-line checks of values a user types: notebook parameters, `setup` arguments, flags.

Each returns the value (normalised) or raises `FdcamError` naming the parameter and what
was expected, so that a bad value stops the run where it is given, not deep inside torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fdcam.errors import FdcamError


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """An int (not a bool) ≥ `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise FdcamError(f"{name} must be an int >= {minimum} (or None); got {value!r}")
    return int(value)


def check_positive_int(value: object, name: str) -> int:
    """An int ≥ 1 (not a bool): a size, a count, a batch size."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise FdcamError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def parse_positive_int(text: str, name: str = "value") -> int:
    """A command-line positive integer (``--limit 5``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise FdcamError(f"{name}: expected a positive integer; got {text!r}")
    return value


def check_shard(shard: object, name: str = "shard") -> tuple[int, int]:
    """(i, n), the i-th of n shards: every n-th image from the i-th, 0 ≤ i < n."""
    if (not isinstance(shard, tuple | list) or len(shard) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)):
        raise FdcamError(f"{name} must be (i, n), two ints; got {shard!r}")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise FdcamError(f"{name} i/n needs 0 <= i < n; got {index}/{count}")
    return int(index), int(count)


def parse_shard(text: str, name: str = "shard") -> tuple[int, int]:
    """``"i/n"`` from a command line or a make variable, as (i, n) (`check_shard`)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise FdcamError(f"{name} must look like i/n (e.g. 0/4); got {text!r}") from None
    return check_shard((index, count), name)


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


def check_file_name(path: Path, label: str, expected: str) -> None:
    """One line when `path` cannot be written as a file: it is a folder, or a file stands
    where one of its folders should be (a missing folder is fine: it will be made)."""
    if path.is_dir():
        raise FdcamError(f"{label} is a folder; expected {expected}")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise FdcamError(f"cannot write {path}: {parent} is a file, not a folder")
            break


def check_device(device: object) -> str:
    """'cpu', 'cuda' or 'cuda:N', and CUDA only where a CUDA device is present."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise FdcamError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'); got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FdcamError(f"device {device!r} was asked for but no CUDA device is available; "
                         f"use device='cpu'")
    return device


def resolve_device(device: str) -> str:
    """A command line's device: 'auto' (or '') is CUDA where there is one, else the CPU;
    anything else as `check_device`."""
    if device in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(device)
