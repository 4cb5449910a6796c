"""The method itself needs torch alone: `from fdcam import FDCAM` explains a ResNet-50 with the
evaluation, baseline and plotting libraries made unimportable (a fresh interpreter whose path
starts with stand-in packages that raise ModuleNotFoundError when imported), and the command
line, which needs the [evaluation] extra, says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BLOCKED = ("pandas", "matplotlib", "captum", "cv2", "pytorch_grad_cam", "seaborn", "skimage",
           "sklearn", "tqdm", "saliency", "efficientnet_lite_pytorch", "papermill")

SCRIPT = """
import sys
import torch
from torchvision.models import resnet50

from fdcam import FDCAM

torch.manual_seed(0)
out = FDCAM(resnet50().eval())(torch.randn(1, 3, 64, 64), target=3)
assert out.saliency.shape == (1, 64, 64)
"""


def _without_extras(tmp_path: Path) -> dict[str, str]:
    """An environment whose imports of the extras' packages fail as if not installed."""
    for name in BLOCKED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name} is made unimportable by this test', "
            f"name='{name}')\n")
    root = Path(__file__).resolve().parent.parent
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}


def test_fdcam_core_imports_torch_only(tmp_path: Path) -> None:
    env = _without_extras(tmp_path)
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300, check=False, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_command_line_names_the_missing_extra_in_one_line(tmp_path: Path) -> None:
    env = _without_extras(tmp_path)
    for argv in (["evaluate", "--model", "vgg16"],
                 ["explain", "x.jpg", "--model", "vgg16", "--out", "o.png"]):
        done = subprocess.run([sys.executable, "-m", "fdcam", *argv], capture_output=True,
                              text=True, timeout=300, check=False, env=env, cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr[-2000:]
        assert lines[0].startswith(f"fdcam {argv[0]}: error: fdcam {argv[0]} needs the "
                                   f"[evaluation] extra"), lines[0]
        assert "pip install 'fdcam[evaluation]'" in lines[0]


def test_explain_needs_the_evaluation_extra_only(tmp_path: Path) -> None:
    """With [evaluation] but not [book] (no seaborn, papermill), the command line
    still writes an overlay: it does not import the book's figure styling."""
    import numpy as np
    from PIL import Image

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("seaborn", "papermill"):
        (blocked / name).mkdir()
        (blocked / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name} is not in [evaluation]', name='{name}')\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(root)]),
           "OMP_NUM_THREADS": "1"}
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        photo)
    done = subprocess.run([sys.executable, "-m", "fdcam", "explain", str(photo), "--model",
                           "efficientnet-lite0", "--method", "gradcam", "--out",
                           str(tmp_path / "overlay.png")], capture_output=True, text=True,
                          timeout=300, check=False, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "overlay.png").is_file()
