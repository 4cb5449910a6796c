"""Command line: ``fdcam explain IMAGE …``, ``fdcam evaluate …`` and ``fdcam compare …``
(also ``python -m fdcam``).

Bad input ends the program with one line on stderr and a non-zero exit code, never a
traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from fdcam.errors import FdcamError, missing_extra


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fdcam", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_explain_parser(commands)
    try:
        from fdcam.evaluation.cli import add_evaluate_parser
        from fdcam.evaluation.compare import add_compare_parser
    except ModuleNotFoundError as error:  # `pip install fdcam` without the [evaluation] extra
        words = list(sys.argv[1:] if argv is None else argv)
        for command in ("evaluate", "compare"):
            commands.add_parser(command, help="(needs the [evaluation] extra)")
            if words[:1] == [command]:
                print(f"fdcam {command}: error: {missing_extra(error, f'fdcam {command}')}",
                      file=sys.stderr)
                return 2
    else:
        add_evaluate_parser(commands)
        add_compare_parser(commands)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = functools.partial(_one_line_warning, args.command)
        try:
            try:
                return int(args.func(args))
            except ModuleNotFoundError as error:
                if (error.name or "fdcam").split(".")[0] == "fdcam":
                    raise
                raise missing_extra(error, f"fdcam {args.command}") from error
        except FdcamError as error:
            print(f"fdcam {args.command}: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"fdcam {args.command}: interrupted", file=sys.stderr)
            return 130


def _one_line_warning(command: str, message: Warning | str, category: type[Warning],
                      *_: object, **__: object) -> None:
    """A warning of ours (e.g. rows of a results file left out) as one line on stderr."""
    print(f"fdcam {command}: warning: {message}", file=sys.stderr)


def _add_explain_parser(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="write a heat-map overlay for one image")
    explain.add_argument("image", type=Path, help="an image file PIL can read")
    explain.add_argument("--model", default="efficientnet-lite0",
                         help="efficientnet-lite0 (default), vgg16, resnet50, or any torchvision "
                              "classification model (convnext_tiny, densenet121, …)")
    explain.add_argument("--weights", default=None,
                         help="DEFAULT (torchvision's; cached or downloaded), a weights name "
                              "(IMAGENET1K_V1, …), or a state-dict file (loaded with "
                              "weights_only=True); default: the model's usual weights")
    explain.add_argument("--layer", default=None,
                         help="target layer: a dotted module name, or name#k for the k-th call "
                              "of a module that runs several times (_blocks.15._swish#2)")
    explain.add_argument("--target", type=int, default=None,
                         help="class index to explain (default: the top-1 class)")
    explain.add_argument("--method", default="fdcam", help="fdcam or a baseline name")
    explain.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    explain.add_argument("--out", type=Path, required=True, help="the overlay PNG to write")
    explain.set_defaults(func=run_explain)


def check_out_file(path: Path, image: Path | None = None) -> None:
    """--out must be a file name whose folder exists or can be made, neither the input
    `image` nor an existing file other than a PNG (symlinks followed): the overlay never
    replaces a photo or a results file."""
    from fdcam.checks import check_file_name
    from fdcam.files import resolved

    check_file_name(path, f"--out {path}", f"a file name such as {path / 'overlay.png'}")
    target = resolved(path)
    if image is not None and target == resolved(image):
        raise FdcamError(f"--out {path} is the input image; expected a new file name such as "
                         f"{path.with_name(path.stem + '_overlay.png')}")
    if target.is_file():
        with target.open("rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                raise FdcamError(f"--out {path} exists and is not a PNG image; refusing to "
                                 f"replace it: choose a new file name")


def run_explain(args: argparse.Namespace) -> int:

    from fdcam.baselines import METHODS, make_explainer
    from fdcam.checks import check_device
    from fdcam.evaluation.images import open_rgb
    from fdcam.evaluation.overlay import blend
    from fdcam.model_arguments import check_model_arguments
    from fdcam.models import load_model

    # Every argument is checked before the model loads or runs (seconds to minutes).
    device = check_device(args.device)
    if args.method not in METHODS:
        raise FdcamError(f"unknown method {args.method!r}; available: {', '.join(METHODS)}")
    check_out_file(args.out, args.image)
    name, layer = check_model_arguments(args.model, args.layer, args.target, args.weights)
    image = open_rgb(args.image)
    loaded = load_model(name, device=device, weights=args.weights)
    layer = layer or loaded.target_layer
    if not layer:
        from fdcam.split import default_layer

        default_layer(loaded.model)  # raises the one line that lists candidate layers
    x = loaded.preprocess(image).unsqueeze(0).to(device)
    from fdcam.preflight import check_before_work

    # Finite weights and logits, a map at least 2×2 at the layer: else one line, no map.
    probabilities = check_before_work(loaded.model, x, layer, name).softmax(dim=1)[0]
    top = probabilities.topk(5)
    for rank, (p, c) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
        print(f"{rank + 1}. {c:4d} {_category(loaded.categories, c):<30s} {p:.4f}")
    target = int(top.indices[0]) if args.target is None else args.target
    explainer = make_explainer(args.method, loaded.model, layer)
    saliency = explainer(x, target=target).saliency[0]
    pixels = blend(loaded.to_pixels(x[0]).cpu(), saliency.cpu())
    _write_png(pixels, args.out)
    print(f"{args.method} map for class {target} ({_category(loaded.categories, target)}) "
          f"-> {args.out}")
    return 0


def _category(categories: Sequence[str], index: int) -> str:
    return categories[index] if 0 <= index < len(categories) else f"class {index}"


def _write_png(pixels, path: Path) -> None:  # type: ignore[no-untyped-def]
    import io

    from PIL import Image

    from fdcam.files import replace_file, resolved

    array = (pixels.clip(0, 1) * 255).round().astype("uint8")
    encoded = io.BytesIO()
    Image.fromarray(array).save(encoded, format="PNG")
    target = resolved(path)  # a symlink's target is written; the link stays
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FdcamError(f"cannot write {path}: {error.strerror or error}") from error
    replace_file(target, encoded.getvalue())  # whole or not at all


if __name__ == "__main__":
    raise SystemExit(main())
