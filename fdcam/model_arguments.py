"""The command line's checks of a model and its layer (``--model``, ``--layer``, ``--target``,
``--weights``), shared by ``fdcam explain``, ``fdcam evaluate`` and ``fdcam compare``: made on
the model's skeleton, before any weights are loaded or images read.
"""

from __future__ import annotations

from pathlib import Path

from fdcam.errors import FdcamError


def check_model_arguments(model: str, layer: str | None, target: int | None,
                          weights: str | None) -> tuple[str, str | None]:
    """Check --model, --layer, --target and a --weights file on the model's skeleton (no
    weights loaded, nothing run); returns the model's name and the layer (None: default)."""
    from fdcam.models import check_model_name, is_weights_file, model_skeleton
    from fdcam.split import parse_layer_name

    name = check_model_name(model)
    skeleton = model_skeleton(name)
    modules = dict(skeleton.named_modules())
    module_name = None if layer is None else parse_layer_name(layer)[0]
    if layer is not None and (not module_name or module_name not in modules):
        last = [n for n in modules if n][-5:]
        raise FdcamError(f"unknown layer {layer!r} of {name}; expected a dotted module name "
                         f"such as {', '.join(last)}")
    if layer is not None:
        _check_call_site(skeleton, layer)
    if target is not None:
        classes = _class_count(skeleton)
        if not 0 <= target < classes:
            raise FdcamError(f"--target {target} is not a class of {name}; expected 0 to "
                             f"{classes - 1}")
    if weights is not None and is_weights_file(weights) and not Path(weights).is_file():
        state = "is a folder" if Path(weights).is_dir() else "does not exist"
        raise FdcamError(f"weights file {weights} {state}; expected a state dict "
                         f"saved with torch.save(model.state_dict(), path), or DEFAULT")
    return name, layer


def _check_call_site(skeleton: object, layer: str) -> None:
    """The module of `layer` runs once, or `layer` names one of its calls (``name#k``):
    counted in one forward pass of the skeleton on meta tensors (skipped if that fails)."""
    import torch

    from fdcam.split import (
        call_site_problem,
        is_efficientnet_lite_head_activation,
        resolve_call_site,
    )

    site = resolve_call_site(skeleton, layer)  # type: ignore[arg-type]
    if is_efficientnet_lite_head_activation(skeleton, site):  # type: ignore[arg-type]
        return  # `_swish`: the head call, by convention
    runs = [0]
    handle = site.module.register_forward_hook(lambda *_: runs.__setitem__(0, runs[0] + 1))
    try:
        skeleton(torch.empty(1, 3, 224, 224, device="meta"))  # type: ignore[operator]
    except Exception:  # a model that cannot run on meta tensors: checked when it runs
        return
    finally:
        handle.remove()
    problem = call_site_problem(site.name, site.call, runs[0])
    if problem is not None:
        raise FdcamError(problem)


def _class_count(skeleton: object) -> int:
    import torch

    size = 224
    try:
        out = skeleton(torch.empty(1, 3, size, size, device="meta"))  # type: ignore[operator]
        return int(out.shape[1])
    except Exception:  # a model that cannot run on meta tensors: ImageNet's classes
        return 1000
