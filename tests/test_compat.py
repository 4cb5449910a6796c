"""fdcam.compat: FD-CAM where a pytorch-grad-cam method is, and pytorch-grad-cam targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import ttach as tta
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    RawScoresOutputTarget,
)
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torchvision.models import resnet18, vgg11

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
    with pytest.raises(FdcamError, match="batch has 1 images"):
        cam(x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    with pytest.raises(FdcamError, match="4 dimensions"):
        cam(x[:, :, None], targets=None)  # a 3-D convolution's input
    with pytest.raises(FdcamError, match="detach=False is not supported"):
        FDCAMCompat(model, [model.layer4], detach=False)
    with pytest.raises(FdcamError, match="unknown option for FD-CAM"):
        FDCAMCompat(model, [model.layer4], use_cuda=True)
    with pytest.raises(FdcamError, match="tta_transforms must yield"):
        FDCAMCompat(model, [model.layer4], tta_transforms=[lambda t: t])(x, aug_smooth=True)
    with pytest.raises(FdcamError, match="reshape_transform is not supported"):
        FDCAMCompat(model, [model.layer4], reshape_transform=lambda t: t)
    with pytest.raises(FdcamError, match="non-empty list of modules"):
        FDCAMCompat(model, model.layer4)  # type: ignore[arg-type]
    top1 = cam(x, targets=None)  # None: each image's top-1 class, as pytorch-grad-cam
    assert top1.shape == (1, 64, 64)


# pytorch-grad-cam's tests/test_run_all_models.py, ported: the same models, layers, sizes,
# batches, targets and eigen_smooth values, with FD-CAM in place of its methods (random
# weights: only shapes and ranges are checked there, as here; values are checked below).
@pytest.fixture(scope="module")
def torchvision_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"resnet18": resnet18().eval(), "vgg11": vgg11().eval()}


@pytest.mark.parametrize(("cnn_model", "target_layer_names"),
                         [("resnet18", ["layer4[-1]", "layer4[-2]"]),
                          ("vgg11", ["features[-1]"])])
@pytest.mark.parametrize(("batch_size", "width", "height"), [(2, 32, 32), (1, 32, 40)])
@pytest.mark.parametrize("target_category", [None, 100])
@pytest.mark.parametrize("eigen_smooth", [True, False])
def test_all_cam_models_can_run(torchvision_models: dict[str, torch.nn.Module],
                                cnn_model: str, target_layer_names: list[str], batch_size: int,
                                width: int, height: int, target_category: int | None,
                                eigen_smooth: bool) -> None:
    model = torchvision_models[cnn_model]
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(2))
    input_tensor = image.repeat(batch_size, 1, 1, 1)
    target_layers = [eval(f"model.{layer}", {"model": model}) for layer in target_layer_names]
    targets = None if target_category is None else \
        [ClassifierOutputTarget(target_category) for _ in range(batch_size)]
    with FDCAMCompat(model=model, target_layers=target_layers) as cam:
        cam.batch_size = 4  # the ported test sets it; FD-CAM has no use for it
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets, aug_smooth=False,
                            eigen_smooth=eigen_smooth)
    assert grayscale_cam.shape[0] == input_tensor.shape[0]
    assert grayscale_cam.shape[1:] == input_tensor.shape[2:]
    assert grayscale_cam.dtype == np.float32
    assert 0.0 <= grayscale_cam.min() and grayscale_cam.max() <= 1.0


def test_one_channel_model() -> None:
    """pytorch-grad-cam's tests/test_one_channel.py: a ResNet-18 whose conv1 takes one
    channel, explained at layer4 in a `with` block with targets None."""
    torch.manual_seed(0)
    model = resnet18().eval()
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3),
                                  bias=False)
    gray = torch.rand(1, 1, 64, 80, generator=torch.Generator().manual_seed(3)) * 255
    input_tensor = gray.repeat(4, 1, 1, 1)
    with FDCAMCompat(model=model, target_layers=[model.layer4]) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=None)
    assert grayscale_cam.shape == (4, 64, 80)
    top1 = model(input_tensor).argmax(1)
    expected = FDCAM(model, model.layer4)(input_tensor, target=top1.tolist()).saliency
    np.testing.assert_allclose(grayscale_cam, expected.detach().numpy(), atol=1e-6)


def _literal_eigen_map(weights: np.ndarray, activations: np.ndarray,
                       size: tuple[int, int]) -> np.ndarray:
    """eigen_smooth written out: per image, the weighted activations as pixels × channels,
    centred, SVD in float64, projection on the first right-singular vector, its sign taken
    so that it covaries non-negatively with Σ_k ω_k A^k, ReLU, bilinear, min-max."""
    maps = []
    for w, a in zip(weights, activations, strict=True):
        weighted = w[:, None, None] * a  # [K, h, w]
        m = weighted.reshape(weighted.shape[0], -1).T.astype(np.float64)  # [hw, K]
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=True)
        p = m @ vt[0]
        if float(p @ weighted.sum(0).reshape(-1)) < 0:
            p = -p
        maps.append(np.maximum(p.reshape(a.shape[1:]), 0))
    up = torch.nn.functional.interpolate(torch.tensor(np.array(maps))[:, None], size=size,
                                         mode="bilinear", align_corners=False)[:, 0].numpy()
    out = []
    for u in up:
        span = u.max() - u.min()
        out.append((u - u.min()) / span if span > 0 else np.zeros_like(u))
    return np.array(out)


def test_eigen_smooth_is_the_first_principal_component_of_the_weighted_activations() -> None:
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(4))
    plain = FDCAM(model, model.layer4)(x, target=[7, 9])
    weights = plain.weights.double().numpy()
    activations = plain.activations.double().numpy()  # [2, 512, 6, 6]
    cam = FDCAMCompat(model, [model.layer4])
    maps = cam(x, targets=[ClassifierOutputTarget(7), ClassifierOutputTarget(9)],
               eigen_smooth=True)
    expected = _literal_eigen_map(weights, activations, (192, 192))
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    # Before the ReLU, the projection is pytorch-grad-cam's own, up to the SVD's sign.
    projection = cam.get_cam_image(x, model.layer4, [7, 9], eigen_smooth=True)
    theirs = get_2d_projection(weights[:, :, None, None] * activations)
    for ours, reference in zip(projection, theirs, strict=True):
        sign = np.sign(float((ours * reference).sum()))
        np.testing.assert_allclose(ours, sign * reference, atol=1e-4)
    assert not np.allclose(maps, cam(x, targets=[7, 9]), atol=1e-2)  # it changes the maps


def test_aug_smooth_is_the_mean_over_flips_and_pixel_factors() -> None:
    model, _, _ = _model_and_input()
    x = torch.randn(1, 3, 64, 48, generator=torch.Generator().manual_seed(5))
    fdcam = FDCAM(model, model.layer4)
    expected = []
    for flip in (False, True):  # pytorch-grad-cam's default: ttach HorizontalFlip × Multiply
        for factor in (0.9, 1.0, 1.1):
            augmented = x * factor
            if flip:
                augmented = augmented.flip(-1)
            saliency = fdcam(augmented, target=3).saliency
            expected.append(saliency.flip(-1) if flip else saliency)
    mean = torch.stack(expected).mean(0)
    cam = FDCAMCompat(model, [model.layer4])
    maps = cam(x, targets=[ClassifierOutputTarget(3)], aug_smooth=True)
    np.testing.assert_allclose(maps, mean.numpy(), atol=1e-5)
    assert maps.shape == (1, 64, 48) and maps.dtype == np.float32
    # ttach's own Compose, as pytorch-grad-cam builds it, gives the same maps.
    compose = tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])])
    with_ttach = FDCAMCompat(model, [model.layer4], tta_transforms=compose)
    np.testing.assert_allclose(with_ttach(x, targets=[3], aug_smooth=True), maps, atol=1e-6)
    both = cam(x, targets=[3], aug_smooth=True, eigen_smooth=True)
    assert both.shape == (1, 64, 48)


def test_softmax_targets_explain_the_same_class() -> None:
    model, x, _ = _model_and_input()
    cam = FDCAMCompat(model, [model.layer4])
    softmax = cam(x, targets=[ClassifierOutputSoftmaxTarget(12)])
    raw = cam(x, targets=[ClassifierOutputTarget(12)])
    np.testing.assert_array_equal(softmax, raw)


def test_base_cam_methods_and_attributes() -> None:
    model, x, _ = _model_and_input()
    cam = FDCAMCompat(model, [model.layer3, model.layer4])
    assert cam.get_target_width_height(torch.zeros(1, 3, 20, 30)) == (30, 20)
    assert cam.device == torch.device("cpu")
    fd = FDCAM(model, model.layer4)(x, target=5)
    weights = cam.get_cam_weights(x, model.layer4, [ClassifierOutputTarget(5)], None, None)
    np.testing.assert_allclose(weights, fd.weights.numpy(), atol=1e-6)
    image = cam.get_cam_image(x, model.layer4, [5], None, None)
    expected = np.einsum("bk,bkhw->bhw", fd.weights.numpy(), fd.activations.numpy())
    np.testing.assert_allclose(image, expected, rtol=1e-5)
    per_layer = cam.compute_cam_per_layer(x, [5], False)
    assert [m.shape for m in per_layer] == [(1, 1, 64, 64)] * 2
    np.testing.assert_allclose(cam.aggregate_multi_layers(per_layer), cam.forward(x, [5]))
    assert cam.outputs is not None and cam.outputs.shape == (1, 1000)
    with pytest.raises(FdcamError, match="not one of this CAM's target_layers"):
        cam.get_cam_weights(x, model.layer2, [5])
