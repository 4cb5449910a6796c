"""The protocol's forward passes at the compiler's speed: a `torch.compile` copy of the network.

Nearly all of an evaluation's time is forward passes of perturbed images under ``no_grad``:
58 per map for insertion and deletion (`fdcam.evaluation.faithfulness`), plus the masked
copies of Group-CAM and Score-CAM. `CompiledForward` runs them through a copy of the
network compiled by ``torch.compile`` (inductor; a C++ compiler on a CPU, Triton on CUDA).

* **Static shapes, no recompiles.** Each input shape compiles once. A batch smaller than
  one already compiled for its image size (the last, partial batch of a curve) is padded
  with copies of its last image and the extra rows are dropped: eval-mode rows do not
  interact, so the kept rows are those of the unpadded batch up to rounding.
* **A copy, not the model.** The compiled network is a deep copy in eval mode without
  gradients, its weights frozen into the compiled graph, so that hooks which explainers
  put on the model (pytorch-grad-cam's, the layer swap of its Ablation-CAM) never reach
  compiled code, and compiled code never fires them. The model's weights must not change
  while the copy is in use.
* **A cache that outlives the run.** Inductor's compiled kernels go to
  ``$TORCHINDUCTOR_CACHE_DIR`` (default here: ``$XDG_CACHE_HOME/fdcam/torchinductor``), so
  a resumed run loads them instead of compiling again.

`OnnxRuntimeForward` (CPU, the ``[onnxruntime]`` extra) exports the network to ONNX once per
image size instead. On this project's 2-core CPU it is far faster than torch.compile
(``make bench``: 2.1–4.5× eager against compile's 1.3–1.7×, EfficientNet-Lite0), so
`forward_engine(network, engine="auto")` picks ONNX Runtime on a CPU where it is installed
(falling back, with one line, when the network does not export), else the compiled copy
where a compiler is found (CUDA included), else eager after one line on stderr. Every engine
agrees with eager to about 1e-6 in probability (``make bench`` prints the largest
difference); the insertion/deletion AUCs of committed rows move by at most about 1e-4.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import inspect
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from fdcam.errors import FdcamError

Forward = Callable[[Tensor], Tensor]
"""``images [N, C, H, W] -> logits [N, classes]`` under ``no_grad``."""

RECOMPILE_LIMIT = 64
"""Compiled variants per forward code object: one per (model, image size, batch size)."""


def compiler_missing(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot run on `device` here, or None when it can."""
    kind = torch.device(device).type
    if kind == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "Triton is not installed (torch.compile needs it on CUDA)"
        return None
    if kind != "cpu":
        return f"torch.compile is not used on {kind} devices here"
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(name) for name in names):
        return f"no C++ compiler found ({', '.join(names)}); torch.compile needs one on a CPU"
    return None


def onnxruntime_installed() -> bool:
    """Whether the ``[onnxruntime]`` extra's onnxruntime can be imported here."""
    return importlib.util.find_spec("onnxruntime") is not None


def inductor_cache_dir() -> Path:
    """Where compiled kernels are kept between runs (set before the first compilation)."""
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if given:
        return Path(given)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "fdcam" / "torchinductor"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


class CompiledForward:
    """``network(images)`` through a compiled copy of `network`, padding partial batches.

    Call it with batches of one image size; it returns the logits of exactly the images
    given. ``sizes`` records the batch sizes compiled per image shape.
    """

    def __init__(self, network: nn.Module) -> None:
        if not isinstance(network, nn.Module):
            raise FdcamError(f"network must be a torch.nn.Module; got {type(network).__name__}")
        inductor_cache_dir()
        dynamo = torch._dynamo.config
        # Named cache_size_limit before torch 2.6.
        name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
        setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILE_LIMIT))
        self.network = copy.deepcopy(network).eval().requires_grad_(False)
        # Freezing folds the weights into the graph as constants and pre-packs the
        # convolutions: 2.1x eager on EfficientNet-Lite0 here, 1.4x without it.
        self._compiled = torch.compile(self.network, dynamic=False,
                                       options={"freezing": True})
        self.sizes: dict[tuple[object, ...], list[int]] = {}

    def __repr__(self) -> str:
        return f"CompiledForward({type(self.network).__name__})"

    def __call__(self, images: Tensor) -> Tensor:
        n = images.shape[0]
        key = (tuple(images.shape[1:]), images.dtype, images.device)
        compiled = self.sizes.setdefault(key, [])
        size = min((s for s in compiled if s >= n), default=None)
        if size is None:
            compiled.append(n)
            size = n
        if size > n:
            images = torch.cat([images, images[-1:].expand(size - n, *images.shape[1:])])
        with torch.no_grad():
            return self._compiled(images)[:n]


class OnnxRuntimeForward:
    """``network(images)`` through ONNX Runtime (CPU, f32): the network exported to ONNX
    once per image size, with a free batch axis, so any batch size runs without another
    export. Needs the ``[onnxruntime]`` extra (``onnxruntime``, ``onnx``)."""

    def __init__(self, network: nn.Module, threads: int | None = None,
                 fallback: Callable[[], Forward] | None = None) -> None:
        if not onnxruntime_installed():
            raise FdcamError("engine 'onnxruntime' needs the onnxruntime package; "
                             "pip install 'fdcam[onnxruntime]'")
        self.network = copy.deepcopy(network).cpu().eval().requires_grad_(False)
        self.threads = threads or torch.get_num_threads()
        self._sessions: dict[tuple[object, ...], object] = {}
        # `fallback()` makes the engine that runs the image sizes ONNX Runtime cannot (engine
        # "auto"): made on first need, then kept.
        self._make_fallback = fallback
        self._fallback: Forward | None = None
        self._unexported: set[tuple[object, ...]] = set()

    def __repr__(self) -> str:
        return f"OnnxRuntimeForward({type(self.network).__name__})"

    def _session(self, example: Tensor) -> object:
        import io
        import warnings

        import onnxruntime

        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
                # The TorchScript exporter: no onnxscript needed (the keyword is torch ≥ 2.5's;
                # before, it was the only exporter).
                legacy = ({"dynamo": False}
                          if "dynamo" in inspect.signature(torch.onnx.export).parameters else {})
                torch.onnx.export(self.network, (example,), buffer, input_names=["x"],
                                  output_names=["logits"], dynamic_axes={"x": {0: "batch"}},
                                  **legacy)
        except Exception as error:
            raise FdcamError(f"cannot export {type(self.network).__name__} to ONNX at input "
                             f"{list(example.shape[1:])} ({_first_line(error)})") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        return onnxruntime.InferenceSession(buffer.getvalue(), options,
                                            providers=["CPUExecutionProvider"])

    def fallback(self) -> Forward | None:
        """The engine for image sizes ONNX Runtime cannot run (None: they are errors)."""
        if self._fallback is None and self._make_fallback is not None:
            self._fallback = self._make_fallback()
        return self._fallback

    def __call__(self, images: Tensor) -> Tensor:
        if images.device.type != "cpu":
            raise FdcamError(f"engine 'onnxruntime' runs on the CPU; images are on "
                             f"{images.device}")
        key = tuple(images.shape[1:])
        fallback = self.fallback() if key in self._unexported else None
        if fallback is not None:
            return fallback(images)
        ready = images.detach().float().contiguous()
        try:
            if key not in self._sessions:
                self._sessions[key] = self._session(ready[:1])
            session = self._sessions[key]
            return torch.from_numpy(session.run(None, {"x": ready.numpy()})[0])  # type: ignore[attr-defined]
        except Exception as error:
            why = (str(error) if isinstance(error, FdcamError) else
                   f"ONNX Runtime failed on input {list(images.shape[1:])} "
                   f"({_first_line(error)})")
            fallback = self.fallback()
            if fallback is None:
                raise FdcamError(f"{why}; use --engine compile") from None
            how = "compiled" if isinstance(fallback, CompiledForward) else "eager"
            print(f"note: {why}; running it {how} instead", file=sys.stderr)
            self._unexported.add(key)
            self._sessions.pop(key, None)
            return fallback(images)


def _first_line(error: Exception) -> str:
    """``Type: first line of the message`` (at most 200 characters of it)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


ENGINES = ("auto", "compile", "eager", "onnxruntime")
"""What `forward_engine` accepts; ``auto``: ONNX Runtime on a CPU where it is installed,
else compile where a compiler is found, else eager."""


def forward_engine(network: nn.Module, *, engine: str | None = "auto",
                   device: torch.device | str | None = None) -> Forward:
    """The forward pass the protocol uses: `CompiledForward`, `OnnxRuntimeForward` or
    `network` itself (``"eager"``).

    ``"auto"`` (or None), on `device` (default: the network's): on a CPU with onnxruntime
    installed, `OnnxRuntimeForward` (the fastest engine there in ``make bench``), which runs
    an image size that does not export through the next choice; else compiled where
    `compiler_missing` finds a compiler; else eager after one line on stderr saying why. The
    environment variable ``FDCAM_COMPILE=0`` makes it eager (the test suite sets it).
    ``"compile"`` insists: a missing compiler is a one-line error. ``"onnxruntime"``: CPU
    only, and an export failure is a one-line error.
    """
    engine = "auto" if engine is None else engine
    if engine not in ENGINES:
        raise FdcamError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "auto" and os.environ.get("FDCAM_COMPILE", "").strip() == "0":
        engine = "eager"
    if engine == "eager":
        return network
    if device is None:
        device = next((p.device for p in network.parameters()), torch.device("cpu"))
    if engine == "onnxruntime":
        if torch.device(device).type != "cpu":
            raise FdcamError(f"engine 'onnxruntime' runs on the CPU; the model is on {device}")
        return OnnxRuntimeForward(network)
    missing = compiler_missing(device)
    if missing is not None and engine == "compile":
        raise FdcamError(f"cannot compile: {missing}; use --no-compile")
    if engine == "auto" and torch.device(device).type == "cpu" and onnxruntime_installed():
        # Its note says why it falls back, so the fallback itself says nothing more.
        return OnnxRuntimeForward(network, fallback=functools.partial(
            _compiled_or_eager, network, missing, quiet=True))
    return _compiled_or_eager(network, missing)


def _compiled_or_eager(network: nn.Module, missing: str | None, *,
                       quiet: bool = False) -> Forward:
    if missing is not None:
        if not quiet:
            print(f"note: running eager, not compiled: {missing}", file=sys.stderr)
        return network
    return CompiledForward(network)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and its shorthands ``--compile`` / ``--no-compile`` (dest ``engine``)."""
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="the protocol's forward passes: auto (default: ONNX Runtime on a "
                             "CPU where installed, else torch.compile where a compiler is "
                             "found, else eager), compile, eager, onnxruntime "
                             "(CPU; the [onnxruntime] extra); every engine agrees with eager "
                             "to about 1e-6 in probability")
    parser.add_argument("--compile", dest="engine", action="store_const", const="compile",
                        help="same as --engine compile")
    parser.add_argument("--no-compile", dest="engine", action="store_const", const="eager",
                        help="same as --engine eager")
