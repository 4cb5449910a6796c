"""``make bench``: medians of wall-clock times on this machine, and their ratios.

Everything a ratio compares is measured in the same run, interleaved round by round so
that a busy machine slows every contender alike. Setting: VGG16 with random weights (no
download), one 3×224×224 image, 2 CPU threads, as the core issue asks.

    python -m scripts.bench [--rounds N] [--threads T] [--skip-metrics] [--skip-any-cnn]
                            [--only-engines]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch

from fdcam.cam import FDCAM


def _time(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Warm every contender up once, then time them round-robin `rounds` times."""
    for function in contenders.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, function in contenders.items():
            times[name].append(_time(function))
    return times


def core_benchmark(rounds: int) -> dict[str, float]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchvision.models import vgg16

    torch.manual_seed(0)
    model = vgg16().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    target = 243
    classes = [list(range(20))]
    fdcam = FDCAM(model, model.features[-1])
    gradcam = GradCAM(model=model, target_layers=[model.features[-1]])

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    contenders = {
        "plain forward": forward,
        "pytorch-grad-cam GradCAM": lambda: gradcam(x, targets=[ClassifierOutputTarget(target)]),
        "FD-CAM, 1 class": lambda: fdcam(x, target=target),
        "FD-CAM, 20 classes": lambda: fdcam(x, target=classes),
    }
    times = measure(contenders, rounds)
    medians = {name: statistics.median(t) for name, t in times.items()}
    out = fdcam(x, target=target)
    print(f"VGG16 (random weights), 1x3x224x224, {torch.get_num_threads()} threads, "
          f"{rounds} rounds; medians (min):")
    for name, t in times.items():
        print(f"  {name:<28s} {1000 * medians[name]:8.1f} ms  ({1000 * min(t):.1f})")
    k = out.activations.shape[1]
    print(f"  distinct channel masks evaluated: {int(out.evaluations[0])} of {2 * k + 1}")
    fd, fwd, gc = medians["FD-CAM, 1 class"], medians["plain forward"], \
        medians["pytorch-grad-cam GradCAM"]
    ratios = {
        "FD-CAM / plain forward (target <= 2.5, stretch <= 1.5)": fd / fwd,
        "FD-CAM / pytorch-grad-cam GradCAM (target <= 0.7)": fd / gc,
        "FD-CAM 20 classes / 1 class (target <= 1.5)": medians["FD-CAM, 20 classes"] / fd,
    }
    print("ratios:")
    for name, value in ratios.items():
        print(f"  {name:<56s} {value:5.2f}")
    return ratios


def metrics_benchmark(rounds: int) -> None:
    from torchvision.models import vgg16

    from fdcam.evaluation.faithfulness import insertion_deletion_curves

    torch.manual_seed(0)
    model = vgg16().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    saliency = torch.rand(1, 224, 224, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([243])
    times = measure({"insertion + deletion": lambda: insertion_deletion_curves(
        model, x, saliency, target)}, rounds)
    t = statistics.median(times["insertion + deletion"])
    print(f"insertion + deletion curves, VGG16, one 224x224 image (2 x 29 forward passes): "
          f"median {t:.2f} s over {rounds} rounds")


def curves_benchmark(rounds: int, batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)) -> float:
    """Insertion + deletion for one 224×224 image with EfficientNet-Lite0 (real weights)
    vs its 2 × 29 = 58 plain forward passes, both at the plain passes' best batch size.

    Returns the ratio curves / forward passes (target <= 1.2): what the curves add to the
    network's own work (ranking, building the perturbed images, the softmax).
    """
    from fdcam.evaluation.faithfulness import insertion_deletion_curves, perturbation_steps
    from fdcam.models import load_model

    net = load_model("efficientnet-lite0").model.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    saliency = torch.rand(1, 224, 224, generator=torch.Generator().manual_seed(1))
    n = 2 * (perturbation_steps(224, 224)[1] + 1)
    images = x.expand(n, -1, -1, -1).contiguous()

    def forwards(batch: int) -> Callable[[], object]:
        def run() -> None:
            with torch.no_grad():
                for start in range(0, n, batch):
                    net(images[start:start + batch])
        return run

    per_batch = measure({str(b): forwards(b) for b in batch_sizes}, 1)
    best = min(batch_sizes, key=lambda b: per_batch[str(b)][0])
    times = measure({"forwards": forwards(best), "curves": lambda: insertion_deletion_curves(
        net, x, saliency, 243, batch_size=best)}, rounds)
    fwd, curves = (statistics.median(times[k]) for k in ("forwards", "curves"))
    ratio = curves / fwd
    print(f"insertion + deletion, EfficientNet-Lite0, one 224x224 image: {curves:.2f} s vs its "
          f"{n} forward passes {fwd:.2f} s at batch {best} (best of {list(batch_sizes)}), "
          f"ratio {ratio:.2f} (target <= 1.2)")
    return ratio


def _other_engines(net: torch.nn.Module, x: torch.Tensor,
                   threads: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """ONNX Runtime (the evaluation's `OnnxRuntimeForward`, the ``[onnxruntime]`` extra) and
    OpenVINO (f32, CPU; not a dependency: `make bench` only tells whether it would pay) on
    `net` for inputs shaped like `x`, where installed."""
    import importlib.util
    import warnings

    from fdcam.evaluation.engine import OnnxRuntimeForward, onnxruntime_installed

    engines: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    if onnxruntime_installed():
        engines["ONNX Runtime"] = OnnxRuntimeForward(net, threads)
    if importlib.util.find_spec("openvino") is not None:
        import openvino

        core = openvino.Core()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript tracer's deprecation notes
            model = openvino.convert_model(net, example_input=x)
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "INFERENCE_PRECISION_HINT": "f32"})
        engines["OpenVINO (f32)"] = lambda images: torch.from_numpy(
            compiled(images.numpy())[0].copy())
    return engines


def engine_benchmark(rounds: int, batch_sizes: tuple[int, ...] = (4, 16)) -> dict[str, float]:
    """The protocol's forward pass, EfficientNet-Lite0 (real weights), 224×224: eager,
    `fdcam.evaluation.engine.CompiledForward` (torch.compile) and, where installed, ONNX
    Runtime and OpenVINO; ms per image at each batch size, the speed-up over eager and the
    largest change of any class probability against eager. Then insertion + deletion of
    one image, eager vs compiled (target >= 2). Returns name -> speed-up at batch 4."""
    import importlib.util

    from fdcam.evaluation.engine import CompiledForward, compiler_missing, forward_engine
    from fdcam.evaluation.faithfulness import insertion_deletion_curves
    from fdcam.models import load_model

    missing = compiler_missing("cpu")
    if missing is not None:
        print(f"engine benchmark skipped: {missing}")
        return {}
    net = load_model("efficientnet-lite0").model.eval()
    generator = torch.Generator().manual_seed(0)
    speedups: dict[str, float] = {}
    print(f"the protocol's forward pass, EfficientNet-Lite0, 224x224, "
          f"{torch.get_num_threads()} threads, {rounds} rounds; medians:")
    print(f"  {'engine':<16s} {'batch':>5s} {'ms/img':>8s} {'vs eager':>9s} {'max |dp|':>9s}")
    compiled = CompiledForward(net)
    for batch in batch_sizes:
        x = torch.randn(batch, 3, 224, 224, generator=generator)
        engines: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "eager": net, "torch.compile": compiled,
            **_other_engines(net, x, torch.get_num_threads())}

        def run(engine: Callable[[torch.Tensor], torch.Tensor] = net,
                x: torch.Tensor = x) -> torch.Tensor:
            with torch.no_grad():
                return engine(x)

        times = measure({name: functools.partial(run, engine)
                         for name, engine in engines.items()}, rounds)
        reference = run(net).softmax(1)
        eager = statistics.median(times["eager"])
        for name, engine in engines.items():
            t = statistics.median(times[name])
            gap = float((run(engine).softmax(1) - reference).abs().max())
            print(f"  {name:<16s} {batch:>5d} {1000 * t / batch:8.2f} {eager / t:8.2f}x "
                  f"{gap:9.1e}")
            if batch == batch_sizes[0]:
                speedups[name] = eager / t
    x = torch.randn(1, 3, 224, 224, generator=generator)
    saliency = torch.rand(1, 224, 224, generator=generator)
    engines = {"eager": net, "compiled": compiled}
    if importlib.util.find_spec("onnxruntime") is not None:
        engines["onnxruntime"] = forward_engine(net, engine="onnxruntime")
    curves = {name: functools.partial(insertion_deletion_curves, engine, x, saliency, 243,
                                      batch_size=batch_sizes[0])
              for name, engine in engines.items()}
    times = measure(curves, rounds)
    eager = statistics.median(times["eager"])
    reference = curves["eager"]().insertion
    for name in engines:
        if name == "eager":
            continue
        fast = statistics.median(times[name])
        gap = float((curves[name]().insertion - reference).abs().max())
        print(f"insertion + deletion, one EfficientNet-Lite0 image, batch {batch_sizes[0]}: "
              f"eager {eager:.2f} s, {name} {fast:.2f} s, ratio {eager / fast:.2f} "
              f"(target >= 2); largest curve difference {gap:.1e}")
        speedups[f"curves {name}"] = eager / fast
    return speedups


#: Issue 13's models: torchvision families at their default layers, and EfficientNet-Lite0 at
#: its last two MBConv blocks (whose heads begin with a 1x1 convolution).
ANY_CNN = [("resnet50", None), ("convnext_tiny", None), ("densenet121", None),
           ("efficientnet_b0", None), ("mobilenet_v3_large", None), ("regnet_y_800mf", None),
           ("efficientnet-lite0", "_blocks.15"), ("efficientnet-lite0", "_blocks.14")]


def multiply_accumulates(run: Callable[[], object]) -> int:
    """Multiply-accumulates of the matrix products and convolutions that `run` computes
    (torch's FLOP counter, which counts 2 per multiply-accumulate)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        run()
    return counter.get_total_flops() // 2


def arithmetic_floor(model: torch.nn.Module, fdcam: FDCAM, x: torch.Tensor) -> float:
    """A lower bound on FD-CAM / forward in multiply-accumulates: every distinct mask must
    run the head's middle stage (after the linear first operation, whose sums are sparse;
    without the last Linear, of which only the target row is computed) on its own input."""
    stages = fdcam.split.stages
    if stages is None or stages.middle is None:
        return 0.0
    forward = multiply_accumulates(lambda: model(x))
    a, context = fdcam.split.forward_body(x)
    with torch.no_grad():
        h = stages.first(stages.channel_wise(a)) if stages.first is not None \
            else stages.channel_wise(a)
    middle = multiply_accumulates(lambda: stages.middle(h, *context))  # type: ignore[misc]
    masks = int(fdcam(x, target=243).evaluations[0])
    return masks * middle / forward


def any_cnn_benchmark(rounds: int) -> dict[str, tuple[float, float]]:
    """FD-CAM at any layer of any CNN: plain forward, pytorch-grad-cam GradCAM at the same
    layer and FD-CAM (one class), random weights, 1x3x224x224; returns name -> the ratios
    (FD-CAM / forward, FD-CAM / GradCAM). Targets: <= 3 and <= 1.

    The column ``floor`` is `arithmetic_floor`: what exact grouped switching must compute
    at that layer, in forward passes' worth of multiply-accumulates. Where it is above 3,
    no exact implementation meets the first target on any hardware of the forward's speed.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchvision.models import get_model

    from fdcam.models import efficientnet_lite0

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    target = 243
    print(f"FD-CAM at any layer, random weights (EfficientNet-Lite0: real), 1x3x224x224, "
          f"{torch.get_num_threads()} threads, {rounds} rounds; medians in ms:")
    print(f"  {'model':<20s} {'layer':<15s} {'K':>5s} {'forward':>8s} {'GradCAM':>8s} "
          f"{'FD-CAM':>8s} {'/fwd':>6s} {'/GradCAM':>8s} {'floor':>6s}")
    ratios = {}
    for name, layer in ANY_CNN:
        torch.manual_seed(0)
        model = efficientnet_lite0() if name == "efficientnet-lite0" else get_model(name)
        model.eval()
        fdcam = FDCAM(model, layer)
        module = model.get_submodule(fdcam.split.layer_name)
        gradcam = GradCAM(model=model, target_layers=[module])

        def forward(model: torch.nn.Module = model) -> object:
            with torch.no_grad():
                return model(x)

        times = measure({
            "forward": forward,
            "gradcam": lambda g=gradcam: g(x, targets=[ClassifierOutputTarget(target)]),
            "fdcam": lambda f=fdcam: f(x, target=target),
        }, rounds)
        med = {key: statistics.median(t) for key, t in times.items()}
        k = fdcam.split.body(x).shape[1]
        r_fwd, r_gc = med["fdcam"] / med["forward"], med["fdcam"] / med["gradcam"]
        floor = arithmetic_floor(model, fdcam, x)
        ratios[f"{name} {fdcam.split.layer_name}"] = (r_fwd, r_gc)
        print(f"  {name:<20s} {fdcam.split.layer_name:<15s} {k:>5d} "
              f"{1000 * med['forward']:8.1f} {1000 * med['gradcam']:8.1f} "
              f"{1000 * med['fdcam']:8.1f} {r_fwd:6.2f} {r_gc:8.2f} {floor:6.2f}"
              f"{'' if r_fwd <= 3 and r_gc <= 1 else '  (target not met)'}")
        del gradcam
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-metrics", action="store_true")
    parser.add_argument("--skip-any-cnn", action="store_true")
    parser.add_argument("--only-engines", action="store_true",
                        help="only the protocol's forward pass: eager vs compiled")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only_engines:
        engine_benchmark(args.rounds)
        return 0
    core_benchmark(args.rounds)
    if not args.skip_any_cnn:
        any_cnn_benchmark(max(3, args.rounds // 2))
    if not args.skip_metrics:
        metrics_benchmark(max(1, args.rounds // 3))
        curves_benchmark(max(1, args.rounds // 3))
        engine_benchmark(max(3, args.rounds // 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
