"""Command line: ``fdcam explain IMAGE …`` and ``fdcam evaluate …`` (also ``python -m fdcam``).

Bad input ends the program with one line on stderr and a non-zero exit code, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fdcam.errors import FdcamError
from fdcam.models import MODEL_NAMES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fdcam", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_explain_parser(commands)
    from fdcam.evaluate import add_evaluate_parser

    add_evaluate_parser(commands)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FdcamError as error:
        print(f"fdcam {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fdcam {args.command}: interrupted", file=sys.stderr)
        return 130


def _add_explain_parser(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="write a heat-map overlay for one image")
    explain.add_argument("image", type=Path, help="an image file PIL can read")
    explain.add_argument("--model", choices=MODEL_NAMES, default="efficientnet-lite0")
    explain.add_argument("--layer", default=None, help="target layer (dotted name)")
    explain.add_argument("--target", type=int, default=None,
                         help="class index to explain (default: the top-1 class)")
    explain.add_argument("--method", default="fdcam", help="fdcam or a baseline name")
    explain.add_argument("--device", default="cpu")
    explain.add_argument("--out", type=Path, required=True, help="the overlay PNG to write")
    explain.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    import torch

    from fdcam.baselines import make_explainer
    from fdcam.data import open_rgb
    from fdcam.models import load_model
    from fdcam.plots import blend

    image = open_rgb(args.image)
    loaded = load_model(args.model, device=args.device)
    x = loaded.preprocess(image).unsqueeze(0).to(args.device)
    with torch.no_grad():
        probabilities = loaded.model(x).softmax(dim=1)[0]
    top = probabilities.topk(5)
    for rank, (p, c) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
        print(f"{rank + 1}. {c:4d} {loaded.categories[c]:<30s} {p:.4f}")
    target = int(top.indices[0]) if args.target is None else args.target
    explainer = make_explainer(args.method, loaded.model, args.layer or loaded.target_layer)
    saliency = explainer(x, target=target).saliency[0]
    pixels = blend(loaded.to_pixels(x[0]).cpu(), saliency.cpu())
    _write_png(pixels, args.out)
    print(f"{args.method} map for class {target} ({loaded.categories[target]}) -> {args.out}")
    return 0


def _write_png(pixels, path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    array = (pixels.clip(0, 1) * 255).round().astype("uint8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path, format="PNG")
    except OSError as error:
        raise FdcamError(f"cannot write {path}: {error.strerror or error}") from error


if __name__ == "__main__":
    raise SystemExit(main())
