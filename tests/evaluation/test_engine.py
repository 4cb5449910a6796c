"""The compiled forward pass of the protocol (`fdcam.evaluation.engine`): the same logits as
eager, partial batches padded instead of recompiled, hooks kept off the compiled copy, and
the explainers' masked batches routed through it."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from fdcam.baselines import make_explainer
from fdcam.errors import FdcamError
from fdcam.evaluation import engine
from fdcam.evaluation.engine import CompiledForward, OnnxRuntimeForward, forward_engine
from fdcam.evaluation.faithfulness import insertion_deletion_curves
from tests.models import tiny_sequential

needs_compiler = pytest.mark.skipif(engine.compiler_missing("cpu") is not None,
                                    reason="no C++ compiler for torch.compile")


@pytest.fixture(scope="module")
def model() -> nn.Sequential:
    return tiny_sequential(classes=10, seed=3)


@pytest.fixture(scope="module")
def compiled(model: nn.Sequential) -> CompiledForward:
    return CompiledForward(model)


def images(n: int, seed: int = 0, size: int = 16) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class Counting:
    """A forward pass that counts the images it is given (an independent count)."""

    def __init__(self, network: nn.Module) -> None:
        self.network, self.images = network, 0

    def __call__(self, x: Tensor) -> Tensor:
        self.images += x.shape[0]
        return self.network(x)


@needs_compiler
def test_compiled_logits_equal_eager_and_partial_batches_are_padded(
        model: nn.Sequential, compiled: CompiledForward) -> None:
    x = images(6)
    with torch.no_grad():
        eager = model(x)
    torch.testing.assert_close(compiled(x[:4]), eager[:4], rtol=0, atol=1e-5)
    torch.testing.assert_close(compiled(x[:3]), eager[:3], rtol=0, atol=1e-5)  # padded to 4
    torch.testing.assert_close(compiled(x[5:]), eager[5:], rtol=0, atol=1e-5)  # 1, padded
    assert compiled.sizes[((3, 16, 16), torch.float32, torch.device("cpu"))] == [4]
    assert compiled(x).shape == (6, 10)  # a larger batch compiles once more
    assert compiled.sizes[((3, 16, 16), torch.float32, torch.device("cpu"))] == [4, 6]


@needs_compiler
def test_hooks_on_the_model_never_reach_the_compiled_copy(
        model: nn.Sequential, compiled: CompiledForward) -> None:
    calls: list[int] = []
    handle = model[3].register_forward_hook(lambda *_: calls.append(1))
    try:
        compiled(images(4, seed=1))
    finally:
        handle.remove()
    assert calls == []
    assert not any(p.requires_grad for p in compiled.network.parameters())


@needs_compiler
def test_curves_through_the_compiled_copy_equal_eager(model: nn.Sequential,
                                                      compiled: CompiledForward) -> None:
    x = images(2, seed=2)
    saliency = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([1, 7])
    eager = insertion_deletion_curves(model, x, saliency, target, batch_size=4)
    fast = insertion_deletion_curves(compiled, x, saliency, target, batch_size=4)
    torch.testing.assert_close(fast.insertion, eager.insertion, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast.deletion, eager.deletion, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("method", "masked"), [("scorecam", 24), ("groupcam", 8)])
def test_masked_batches_go_through_batch_forward(model: nn.Sequential, method: str,
                                                 masked: int) -> None:
    # Score-CAM masks the image once per channel of the layer (24 here), Group-CAM once
    # per group (8 here); the maps do not change when those passes are counted.
    options = {"groups": 8, "blur_kernel": 11} if method == "groupcam" else {}
    x, target = images(1, seed=5), torch.tensor([2])
    plain = make_explainer(method, model, target_layer="3", **options)(x, target)
    explainer = make_explainer(method, model, target_layer="3", **options)
    counting = Counting(model)
    explainer.batch_forward = counting
    routed = explainer(x, target)
    assert counting.images == masked
    torch.testing.assert_close(routed.saliency, plain.saliency, rtol=0, atol=0)


def test_eager_when_asked_or_when_no_compiler(model: nn.Sequential,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert forward_engine(model, engine="eager") is model
    monkeypatch.setenv("FDCAM_COMPILE", "0")
    assert forward_engine(model) is model
    monkeypatch.delenv("FDCAM_COMPILE")
    monkeypatch.setattr(engine, "onnxruntime_installed", lambda: False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(engine.shutil, "which", lambda _name: None)
    assert forward_engine(model) is model
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no C++ compiler" in err
    with pytest.raises(FdcamError, match=r"^cannot compile: no C\+\+ compiler .*--no-compile$"):
        forward_engine(model, engine="compile")
    with pytest.raises(FdcamError, match=r"^unknown engine 'fast'; expected one of auto, "):
        forward_engine(model, engine="fast")


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="the [onnxruntime] extra is not installed")
def test_onnxruntime_logits_equal_eager_at_any_batch_size(model: nn.Sequential) -> None:
    forward = forward_engine(model, engine="onnxruntime")
    assert isinstance(forward, OnnxRuntimeForward)
    x = images(5, seed=6, size=24)  # the exporter needs the pooled 12x12 to divide into 3x3
    with torch.no_grad():
        eager = model(x)
    for rows in (slice(0, 4), slice(4, 5), slice(0, 5)):
        torch.testing.assert_close(forward(x[rows]), eager[rows], rtol=0, atol=1e-5)
    with pytest.raises(FdcamError, match=r"^cannot export Sequential to ONNX .*--engine compile"):
        forward(images(1))  # 16x16: an 8x8 map pooled to 3x3, which the exporter refuses


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="the [onnxruntime] extra is not installed")
def test_auto_is_onnxruntime_on_a_cpu_and_falls_back_where_export_fails(
        model: nn.Sequential, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FDCAM_COMPILE", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(engine.shutil, "which", lambda _name: None)  # eager is the fallback
    forward = forward_engine(model)
    assert isinstance(forward, OnnxRuntimeForward)
    assert capsys.readouterr().err == ""
    small = images(3, seed=8)  # 16x16 does not export (see above): eager runs it, one note
    with torch.no_grad():
        eager, one = model(small), model(small[:1])
    torch.testing.assert_close(forward(small), eager, rtol=0, atol=0)
    torch.testing.assert_close(forward(small[:1]), one, rtol=0, atol=0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: cannot export Sequential to ONNX")
    x = images(2, seed=9, size=24)  # exports: ONNX Runtime runs it
    with torch.no_grad():
        torch.testing.assert_close(forward(x), model(x), rtol=0, atol=1e-5)
    assert set(forward._sessions) == {(3, 24, 24)}
    assert forward.fallback() is model
    assert capsys.readouterr().err == ""
    with pytest.raises(FdcamError, match=r"^cannot export Sequential to ONNX .*--engine compile"):
        forward_engine(model, engine="onnxruntime")(small)  # asked for: no fallback


@needs_compiler
def test_evaluate_rows_with_the_compiled_engine_match_eager(model: nn.Sequential,
                                                            tmp_path: Path) -> None:
    from fdcam.evaluation.results_file import read_results
    from fdcam.evaluation.runner import evaluate

    pictures = [(f"img{i}", images(1, seed=10 + i)[0]) for i in range(2)]
    methods = {name: functools.partial(make_explainer, name, target_layer="3")
               for name in ("gradcam", "layercam")}
    tables = {}
    for name in ("eager", "compile"):
        evaluate(pictures, methods, model, tmp_path / f"{name}.csv", engine=name, batch_size=4)
        tables[name] = read_results(tmp_path / f"{name}.csv").set_index(["image", "method"])
    metrics = ["probability", "insertion", "deletion", "overall"]
    gap = (tables["compile"][metrics] - tables["eager"][metrics]).abs().to_numpy().max()
    assert gap <= 1e-4
