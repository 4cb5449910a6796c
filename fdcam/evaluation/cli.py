"""``fdcam evaluate``: the resumable evaluation from the command line (images from a folder,
VOC boxes for the pointing game, one summary line per method and metric)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from fdcam.checks import check_device, parse_positive_int, parse_shard
from fdcam.errors import FdcamError
from fdcam.evaluation.engine import add_engine_arguments
from fdcam.evaluation.pointing import ClassBoxes
from fdcam.evaluation.results import file_content
from fdcam.evaluation.results_file import (
    check_writable_folder,
    read_results,
    refuse_foreign_file,
    resolved,
)
from fdcam.evaluation.runner import evaluate, upgrade_results
from fdcam.evaluation.statistics import format_summary
from fdcam.models import LoadedModel, load_model

# ------------------------------------------------------------------------------------- VOC XML


def read_voc_boxes(path: str | os.PathLike[str], categories: Sequence[str],
                   image_size: tuple[int, int] | None = None) -> dict[int, ClassBoxes]:
    """Boxes of a VOC annotation file, by model class: `fdcam.evaluation.voc.voc_class_boxes` of
    `fdcam.evaluation.voc.parse_voc_xml` (object names matched to `categories`, case-insensitive).

    Boxes stay in the original image's pixels (0-based inclusive) with its (H, W) from the
    file's ``<size>`` — or `image_size` when the file has none — so the pointing game is
    scored at the original resolution, exactly like Table II's.
    """
    from fdcam.evaluation.voc import parse_voc_xml, voc_class_boxes

    annotation = parse_voc_xml(path, categories)
    size = annotation["size"] or image_size
    if size is None:
        raise FdcamError(f"{path}: no <size>; expected the image's width and height")
    if image_size is not None and tuple(size) != tuple(image_size):
        raise FdcamError(f"{path}: <size> is {size[1]}x{size[0]} (width x height) but the image "
                         f"is {image_size[1]}x{image_size[0]}; expected the annotation of this "
                         f"image")
    boxes = annotation["boxes"]
    outside = ((boxes[:, :2] < 0) | (boxes[:, 2:3] > size[1]) | (boxes[:, 3:4] > size[0]))
    if bool(outside.any()):
        k = int(outside.any(1).nonzero()[0])
        raise FdcamError(f"{path}: object {k} has the box {boxes[k].tolist()}, outside the "
                         f"{size[1]}x{size[0]} image; expected 1-based pixels inside it")
    return voc_class_boxes(annotation, categories, size)


def argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a `fdcam.checks` parser: its one line becomes argparse's."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except FdcamError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return convert


def positive_int_argument(name: str) -> Callable[[str], int]:
    return functools.partial(parse_positive_int, name=name)


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate`` to an argparse sub-command group; its ``func`` is `run_evaluate`."""
    parser = subparsers.add_parser(
        "evaluate",
        help="insertion/deletion AUC (and the pointing game) of explainers over a folder",
        description="Explain every image of a folder with each method and append one row "
                    "per (image, method, target) to a CSV; rerunning resumes.")
    parser.add_argument("--model", required=True,
                        help="efficientnet-lite0, vgg16, resnet50, or any torchvision "
                             "classification model (convnext_tiny, …)")
    parser.add_argument("--weights", default=None,
                        help="DEFAULT, a torchvision weights name, or a state-dict file "
                             "(weights_only=True); default: the model's usual weights")
    parser.add_argument("--layer", default=None,
                        help="target layer (a dotted module name, or name#k for the k-th "
                             "call of a module that runs several times; default: the model's "
                             "conventional layer, e.g. _swish for EfficientNet-Lite0)")
    parser.add_argument("--images", required=True, type=Path, nargs="+",
                        help="image files, or folders of images (every non-hidden file, "
                             "sorted by name)")
    parser.add_argument("--methods", required=True,
                        help="comma-separated method names, or 'all'")
    parser.add_argument("--out", required=True, type=Path, help="results CSV (appended to)")
    parser.add_argument("--limit", type=argument_type(positive_int_argument("--limit")),
                        help="only the first N images")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--boxes", type=Path,
                        help="folder of VOC XML files (<image stem>.xml): adds the pointing "
                             "game and explains the annotated classes")
    parser.add_argument("--shard", type=argument_type(parse_shard), default=(0, 1), metavar="i/n",
                        help="evaluate only images whose index is i modulo n")
    parser.add_argument("--batch-size",
                        type=argument_type(positive_int_argument("--batch-size")), default=None,
                        help="perturbed images per forward pass (default: 4 on a CPU, 64 on "
                             "CUDA)")
    add_engine_arguments(parser)
    parser.add_argument("--retry-failed", action="store_true",
                        help="drop the error rows of an earlier run and try those again")
    parser.add_argument("--upgrade", action="store_true",
                        help="instead of running: bind the rows of a format-2 --out file to "
                             "the content of the --images they were made from (once), so "
                             "that it can be resumed")
    parser.set_defaults(func=run_evaluate)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """``fdcam evaluate``: run, then print the summary and the failed images on stdout."""
    from fdcam import baselines  # lazy: the evaluation core does not need the baselines

    known = tuple(baselines.METHODS)
    requested = [m.strip() for m in str(args.methods).split(",") if m.strip()]
    if "all" in requested and len(requested) > 1:
        raise FdcamError(f"--methods {args.methods!r}: 'all' stands alone; expected 'all' or "
                         f"a comma list of {', '.join(known)}")
    names = list(known) if requested == ["all"] else list(dict.fromkeys(requested))
    unknown = [m for m in names if m not in known]
    if not names or unknown:
        raise FdcamError(f"unknown method {(unknown or [args.methods])[0]!r}; "
                         f"available: {', '.join(known)} (or 'all')")
    files = image_files([Path(p) for p in args.images])
    if args.limit is not None:
        files = files[: args.limit]
    device = check_device(args.device)
    out = resolved(args.out)
    _check_not_an_input(out, [Path(p) for p in args.images], files)
    check_writable_folder(out)  # --out is checked before the model loads
    refuse_foreign_file(out)
    from fdcam.model_arguments import check_model_arguments

    name, _ = check_model_arguments(args.model, args.layer, None, args.weights)
    loaded = load_model(name, device=device, weights=args.weights)
    if args.layer is not None:
        loaded = dataclasses.replace(loaded, target_layer=args.layer)
    boxes = None
    if args.boxes is not None:
        box_dir = Path(args.boxes)
        if not box_dir.is_dir():
            raise FdcamError(f"box folder {box_dir} does not exist or is not a folder")
        boxes = {p.name: read_voc_boxes(box_dir / f"{p.stem}.xml", loaded.categories,
                                        _image_size(p))
                 for p in files if (box_dir / f"{p.stem}.xml").is_file()}
    # Each row records the SHA-256 of its image file: a rerun on other files with the same
    # names recomputes them instead of reusing their rows.
    items = [(p.name, functools.partial(read_image, p, loaded), file_content(p))
             for p in files]
    if args.upgrade:
        before, after = upgrade_results(out, items)
        print(f"{out}: {after} of {before} rows bound to their images' content")
        return 0
    # The experiments' batch sizes (`baselines.batch_options`), so rows match the book's.
    factories = {name: functools.partial(baselines.make_explainer, name,
                                         **baselines.batch_options(name, device))
                 for name in names}
    failed = evaluate(items, factories, loaded, out, boxes=boxes,
                      batch_size=args.batch_size, shard=args.shard, device=device,
                      progress=True, retry_failed=args.retry_failed, engine=args.engine)
    table = read_results(out)
    print(format_summary(table))
    if failed:
        errors = table[table["error"].notna()].drop_duplicates("image").set_index("image")
        print(f"\n{len(failed)} image(s) failed (rows with an error in {args.out}):")
        for image in failed:
            print(f"  {image}: {errors['error'].get(image, '')}")
    return 0


def _check_not_an_input(out: Path, given: list[Path], files: list[Path]) -> None:
    """--out may be neither an image nor inside an --images folder (where the next run would
    read it as an image); paths are compared with their symlinks followed."""
    for path in [*given, *files]:
        source = resolved(path)
        if out == source:
            raise FdcamError(f"--out {out} is one of the --images; expected a new CSV file "
                             f"outside the images")
        if path.is_dir() and source in out.parents:
            raise FdcamError(f"--out {out} is inside the --images folder {path}, where the "
                             f"next run would read it as an image; write it elsewhere")


def image_files(paths: list[Path]) -> list[Path]:
    """The files named, and those of the folders named (sorted by name), in that order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if p.is_file() and not p.name.startswith("."))
            if not inside:
                raise FdcamError(f"image folder {path} holds no files")
            files.extend(inside)
        elif path.is_file():
            files.append(path)
        else:
            raise FdcamError(f"image folder or file {path} does not exist")
    return list(dict.fromkeys(files))


def _image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of an image file from its header, upright (EXIF); None if unreadable
    (the evaluation reports that image's error when it loads it)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            width, height = ImageOps.exif_transpose(image).size
    except Exception:
        return None
    return height, width


def read_image(path: Path, loaded: LoadedModel) -> Tensor:
    from fdcam.evaluation.images import open_rgb  # upright (EXIF), 16-bit scaled, bombs refused

    return loaded.preprocess(open_rgb(path))
