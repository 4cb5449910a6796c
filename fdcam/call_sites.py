"""Call sites: one call of a module that runs several times in one forward pass.

A target layer is named ``name#k``, the k-th call (1-based) of the module ``name``
(EfficientNet-Lite's ``_blocks.15._swish#2``); a plain name must run exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fdcam.errors import FdcamError

#: Separates a module's name from the number of its call: ``_blocks.15._swish#2``.
CALL_MARK = "#"


@dataclass(frozen=True)
class CallSite:
    """One call of a module in the forward pass: the target layer.

    ``call`` is 1-based (``name#2``: the module's second call in one forward pass), or
    None for a module named plainly, which must run exactly once (EfficientNet-Lite's
    ``_swish`` excepted: its plain name is its last call). ``label`` is the layer's name as
    the user writes it and the results files record it.
    """

    name: str
    module: nn.Module
    call: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.call is None else f"{self.name}{CALL_MARK}{self.call}"


def parse_layer_name(layer: str) -> tuple[str, int | None]:
    """``"a.b#2"`` -> ``("a.b", 2)``; ``"a.b"`` -> ``("a.b", None)``; a bad call number is a
    one-line error."""
    name, mark, number = layer.partition(CALL_MARK)
    if not mark:
        return layer, None
    if not (number.isdigit() and number.isascii() and int(number) >= 1):
        raise FdcamError(f"layer {layer!r} names call {number!r} of {name!r}; expected "
                         f"{name}{CALL_MARK}k with k = 1, 2, … (the module's k-th call in one "
                         f"forward pass)")
    return name, int(number)


def call_names(name: str, runs: int) -> str:
    """``"m#1, m#2"``: the call-site names of a module that runs `runs` times."""
    return ", ".join(f"{name}{CALL_MARK}{k}" for k in range(1, runs + 1))


def call_site_problem(name: str, call: int | None, runs: int) -> str | None:
    """Why call `call` of the module `name`, which runs `runs` times in one forward pass,
    is not a target layer (one line), or None when it is."""
    if call is None:
        if runs == 1:
            return None
        if runs == 0:
            return f"layer {name!r} does not run in the forward pass"
        return (f"layer {name!r} runs {runs} times in one forward pass; name one call: "
                f"{call_names(name, runs)}")
    if call <= runs:
        return None
    label = f"{name}{CALL_MARK}{call}"
    if runs == 0:
        return f"layer {label!r}: {name!r} does not run in the forward pass"
    return (f"layer {label!r} is out of range: {name!r} runs {runs} time{'s' * (runs > 1)} "
            f"in one forward pass; expected {call_names(name, runs)}")
