"""Check an installed, non-editable fdcam from outside the repository (the workflow's
``package`` job; by hand after ``pip install dist/fdcam-*.whl``).

Run it with the venv's Python from any folder but the repository root, so that ``import
fdcam`` finds the installed package (this file's folder, scripts/, is the only repository
folder on the path)::

    venv/bin/python scripts/check_installed.py core
    venv/bin/python scripts/check_installed.py evaluation [--photos A.JPEG B.JPEG]

``core`` (``pip install fdcam``: torch and torchvision only) explains a ResNet-50 with a
random state dict. ``evaluation`` (``pip install 'fdcam[evaluation]'``) runs ``fdcam explain``
and ``fdcam evaluate`` on two photos (default: two of scikit-image's), ``ImageNetVal`` on a
tiny class-folder tree made of them, and reads every file the library ships as package data.
Everything is written to a temporary folder; the last line says what passed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.models import resnet50

import fdcam
from fdcam import FDCAM


def check_installed_copy() -> Path:
    """The imported fdcam must be the installed one, not a checkout on the path."""
    package = Path(fdcam.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    if package.parent != site:
        raise SystemExit(f"fdcam was imported from {package}, not from {site}: run this "
                         f"script from outside the repository, with the venv's Python")
    print(f"fdcam {fdcam.__version__} from {package}; "
          f"torch {torch.__version__}")
    return package


def random_resnet50_weights(folder: Path) -> Path:
    """A seeded random state dict for torchvision's ResNet-50 (no download)."""
    torch.manual_seed(0)
    path = folder / "resnet50-random.pt"
    torch.save(resnet50().state_dict(), path)
    return path


def check_core(folder: Path) -> None:
    weights = random_resnet50_weights(folder)
    model = resnet50()
    model.load_state_dict(torch.load(weights, weights_only=True))
    explanation = FDCAM(model.eval())(torch.randn(2, 3, 96, 96), target=[1, 2])
    saliency = explanation.saliency
    assert saliency.shape == (2, 96, 96), saliency.shape
    assert bool(torch.isfinite(saliency).all()) and float(saliency.max()) <= 1.0
    print(f"core: FDCAM explained a random-weight ResNet-50 at layer4: maps "
          f"{tuple(saliency.shape)}, range [{float(saliency.min()):.2f}, "
          f"{float(saliency.max()):.2f}]")


def default_photos(folder: Path) -> list[Path]:
    """Two of scikit-image's photos (a dependency of [evaluation]) as files."""
    from PIL import Image
    from skimage import data

    paths = []
    for name in ("coffee", "chelsea"):
        path = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        paths.append(path)
    return paths


def run(argv: Sequence[str], cwd: Path) -> str:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): "
                         f"{done.stderr.strip()[-2000:]}")
    return done.stdout + done.stderr


def check_package_data() -> None:
    from fdcam.evaluation.imagenet import PAPER_MANIFEST_FILE, imagenet_wnids, read_manifest
    from fdcam.evaluation.photos import offline_photos

    assert len(imagenet_wnids()) == 1000
    assert len(read_manifest(PAPER_MANIFEST_FILE)) == 2000
    photos = offline_photos()
    assert photos, "no offline photos"
    print(f"package data: 1000 WordNet ids, the 2000-image val manifest, "
          f"{len(photos)} offline photos ({', '.join(p.name for p in photos)})")


def check_imagenet_val(folder: Path, photos: Sequence[Path]) -> None:
    """ImageNetVal on a tree of two class folders; labels re-derived from the sorted ids."""
    from fdcam.evaluation.imagenet import ImageNetVal, imagenet_wnids

    wnids = imagenet_wnids()
    chosen = {"n01440764": photos[0], "n15075141": photos[1]}  # the first and last class
    root = folder / "imagenet" / "val"
    for k, (wnid, photo) in enumerate(chosen.items()):
        (root / wnid).mkdir(parents=True)
        shutil.copyfile(photo, root / wnid / f"ILSVRC2012_val_{k + 1:08d}.JPEG")
    val = ImageNetVal(root.parent)  # the ImageNet root: val/ is found
    items = [(name, label) for _, label, name in val]
    expected = [(f"ILSVRC2012_val_{k + 1:08d}.JPEG", wnids.index(w))
                for k, w in enumerate(chosen)]
    assert items == expected == [("ILSVRC2012_val_00000001.JPEG", 0),
                                 ("ILSVRC2012_val_00000002.JPEG", 999)], items
    print(f"ImageNetVal: {len(val)} images in {root}: {items}")


def check_evaluation(folder: Path, photos: Sequence[Path]) -> None:
    check_package_data()
    weights = random_resnet50_weights(folder)
    fdcam_cli = [sys.executable, "-m", "fdcam"]
    overlay = folder / "overlay.png"
    print(run([*fdcam_cli, "explain", str(photos[0]), "--model", "resnet50", "--weights",
               str(weights), "--out", str(overlay)], folder).strip())
    assert overlay.is_file()
    results = folder / "results.csv"
    print(run([*fdcam_cli, "evaluate", "--model", "resnet50", "--weights", str(weights),
               "--images", *map(str, photos), "--methods", "gradcam,fdcam", "--out",
               str(results), "--engine", "eager"], folder).strip())
    from fdcam.evaluation.results_file import read_results

    rows = read_results(results)  # the file starts with its identity, then one row per map
    assert len(rows) == 2 * len(photos), len(rows)
    for row in rows.itertuples():
        print(f"  {row.image}: {row.method} insertion {row.insertion:.3f} "
              f"deletion {row.deletion:.3f}")
    check_imagenet_val(folder, photos)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("core", "evaluation"))
    parser.add_argument("--photos", type=Path, nargs=2, default=None,
                        help="two photos for fdcam evaluate (default: scikit-image's)")
    args = parser.parse_args(argv)
    check_installed_copy()
    with tempfile.TemporaryDirectory(prefix="fdcam-installed-") as tmp:
        folder = Path(tmp)
        if args.what == "core":
            check_core(folder)
        else:
            photos = ([p.resolve() for p in args.photos] if args.photos
                      else default_photos(folder))
            check_evaluation(folder, photos)
    print(f"check_installed {args.what}: passed")


if __name__ == "__main__":
    main()
