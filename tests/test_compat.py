"""fdcam.compat: FD-CAM where a pytorch-grad-cam method is, and pytorch-grad-cam targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    RawScoresOutputTarget,
)
from torchvision.models import resnet18

from fdcam import FDCAM, FdcamError
from fdcam.compat import FDCAMCompat

# pytorch-grad-cam's README example, verbatim but for the import of the method.
USER_SCRIPT = """
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.image import show_cam_on_image

target_layers = [model.layer4[-1]]
targets = [ClassifierOutputTarget(281)]
with GradCAM(model=model, target_layers=target_layers) as cam:
    grayscale_cam = cam(input_tensor=input_tensor, targets=targets)
    grayscale_cam = grayscale_cam[0, :]
    visualization = show_cam_on_image(rgb_img, grayscale_cam, use_rgb=True)
    model_outputs = cam.outputs
"""


def _model_and_input() -> tuple[torch.nn.Module, torch.Tensor, np.ndarray]:
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rgb = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    return model, x, rgb


def test_pytorch_grad_cam_users_script_runs_unchanged() -> None:
    model, x, rgb = _model_and_input()
    scope = {"GradCAM": FDCAMCompat, "model": model, "input_tensor": x, "rgb_img": rgb}
    exec(USER_SCRIPT, scope)  # the user's code, unchanged
    grayscale = scope["grayscale_cam"]
    assert isinstance(grayscale, np.ndarray) and grayscale.dtype == np.float32
    assert grayscale.shape == (64, 64)
    assert 0.0 <= grayscale.min() and grayscale.max() <= 1.0
    assert scope["visualization"].shape == (64, 64, 3)
    assert scope["model_outputs"].shape == (1, 1000)
    expected = FDCAM(model, model.layer4[-1])(x, target=281).saliency[0]
    np.testing.assert_allclose(grayscale, expected.numpy(), atol=1e-6)


def test_several_layers_are_averaged_and_rescaled() -> None:
    model, x, _ = _model_and_input()
    layers = [model.layer3, model.layer4]
    maps = FDCAMCompat(model, layers)(x, targets=[ClassifierOutputTarget(3)])
    single = [FDCAM(model, layer)(x, target=3).saliency for layer in layers]
    mean = (single[0] + single[1]) / 2
    expected = (mean - mean.min()) / (mean.max() - mean.min())
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-6)


def test_fdcam_takes_pytorch_grad_cam_targets() -> None:
    model, x, _ = _model_and_input()
    x2 = torch.cat([x, x.flip(-1)])
    cam = FDCAM(model)
    by_objects = cam(x2, target=[ClassifierOutputTarget(5), ClassifierOutputSoftmaxTarget(9)])
    by_ints = cam(x2, target=[5, 9])
    torch.testing.assert_close(by_objects.saliency, by_ints.saliency)
    nested = cam(x2, target=[[ClassifierOutputTarget(1), 2], [3, ClassifierOutputTarget(4)]])
    assert nested.targets.tolist() == [[1, 2], [3, 4]]


def test_unsupported_options_and_targets_are_one_line_errors() -> None:
    model, x, _ = _model_and_input()
    cam = FDCAMCompat(model, [model.layer4])
    with pytest.raises(FdcamError, match=r"has no \.category"):
        cam(x, targets=[RawScoresOutputTarget()])
    with pytest.raises(FdcamError, match="aug_smooth and eigen_smooth"):
        cam(x, targets=None, aug_smooth=True)
    with pytest.raises(FdcamError, match="reshape_transform is not supported"):
        FDCAMCompat(model, [model.layer4], reshape_transform=lambda t: t)
    with pytest.raises(FdcamError, match="non-empty list of modules"):
        FDCAMCompat(model, model.layer4)  # type: ignore[arg-type]
    top1 = cam(x, targets=None)  # None: each image's top-1 class, as pytorch-grad-cam
    assert top1.shape == (1, 64, 64)
