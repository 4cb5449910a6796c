"""The method itself needs torch alone: `from fdcam import FDCAM` explains a ResNet-50 with the
evaluation, baseline and plotting libraries made unimportable (a fresh interpreter whose path
starts with stand-in packages that raise ImportError when imported)."""

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


def test_fdcam_core_imports_torch_only(tmp_path: Path) -> None:
    for name in BLOCKED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('{name} is made unimportable by this test')\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300, check=False, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
