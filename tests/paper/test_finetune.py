"""Fine-tuning on VOC2007: a CPU smoke run on a generated tree, resume, mAP, bad input.

The smoke runs use the `tiny-cnn` arch at 32×32 pixels: the same training code as VGG16
(last Linear replaced by 20 outputs, BCE, SGD, checkpoints) in well under a second a step.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from fdcam.errors import FdcamError
from fdcam.evaluation.voc import VOC_CLASSES
from fdcam.paper.finetune import (
    build_voc_model,
    finetune_voc,
    last_linear_name,
    load_voc_model,
    load_voc_vgg16,
    main,
    mean_average_precision,
)

# Each class is a coloured square, so a tiny CNN can learn them in a few steps.
COLOURS = {"cat": (220, 30, 30), "dog": (30, 200, 30), "car": (30, 30, 220)}
SMOKE = {"arch": "tiny-cnn", "pretrained": False, "image_size": 32, "batch_size": 4,
         "lr_head": 1.0, "lr_body": 1.0, "device": "cpu"}


def _voc_tree(root: Path, n_train: int = 16, n_val: int = 6) -> Path:
    year = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    ids = []
    for i in range(n_train + n_val):
        image_id = f"{i:06d}"
        ids.append(image_id)
        image = Image.new("RGB", (48, 40), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        # One or two objects, in varying corners; every third image has a second class.
        classes = [names[i % 3]] + ([names[(i + 1) % 3]] if i % 3 == 0 else [])
        objects = []
        for j, name in enumerate(classes):
            x0, y0 = (2 + 24 * j, 2 + 18 * (i % 2))
            box = (x0, y0, x0 + 19, y0 + 17)
            draw.rectangle(box, fill=COLOURS[name])
            objects.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox>"
                           f"<xmin>{box[0] + 1}</xmin><ymin>{box[1] + 1}</ymin>"
                           f"<xmax>{box[2] + 1}</xmax><ymax>{box[3] + 1}</ymax>"
                           f"</bndbox></object>")
        image.save(year / "JPEGImages" / f"{image_id}.jpg", quality=95)
        (year / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename>{''.join(objects)}</annotation>")
    main_dir = year / "ImageSets" / "Main"
    (main_dir / "train.txt").write_text("\n".join(ids[:n_train]) + "\n")
    (main_dir / "val.txt").write_text("\n".join(ids[n_train:]) + "\n")
    return root / "VOCdevkit"


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _voc_tree(tmp_path_factory.mktemp("voc"))


def test_smoke_loss_decreases_and_resume_continues_exactly(voc: Path, tmp_path: Path) -> None:
    # Uninterrupted: 3 epochs of 4 steps.
    final = finetune_voc(voc, tmp_path / "a", epochs=3, **SMOKE)
    assert final.name == "tiny-cnn_voc2007.pt"
    state = torch.load(final, weights_only=True)
    losses = state["history"]["loss"]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    epochs = state["history"]["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert all(0 <= e["val_map"] <= 1 for e in epochs)
    assert epochs[-1]["val_ap"]["bus"] is None  # no positive image: no AP
    assert (tmp_path / "a" / "history.json").exists()

    # Interrupted after 5 steps (mid-epoch 1), then resumed by the same call.
    stopped = finetune_voc(voc, tmp_path / "b", epochs=3, max_steps=5, **SMOKE)
    assert stopped.name == "checkpoint.pt"
    checkpoint = torch.load(stopped, weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"], checkpoint["step_in_epoch"]) == (1, 5, 1)
    assert set(checkpoint) >= {"model", "optimizer", "epoch", "step"}
    assert checkpoint["history"]["loss"] == losses[:5]
    resumed = finetune_voc(voc, tmp_path / "b", epochs=3, **SMOKE)
    again = torch.load(resumed, weights_only=True)
    assert again["history"]["loss"] == losses
    for name, tensor in state["model"].items():
        assert torch.equal(again["model"][name], tensor), name

    # A finished run returns its weights at once; the model loads in eval mode.
    assert finetune_voc(voc, tmp_path / "b", epochs=3, **SMOKE) == resumed
    model = load_voc_model(resumed)
    assert not model.training
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, len(VOC_CLASSES))


def test_resume_with_another_recipe_is_refused(voc: Path, tmp_path: Path) -> None:
    finetune_voc(voc, tmp_path, epochs=1, max_steps=1, **SMOKE)
    with pytest.raises(FdcamError, match=r"another recipe \(epochs=1→2\)"):
        finetune_voc(voc, tmp_path, epochs=2, **SMOKE)


def test_vgg16_gets_a_20_way_last_layer() -> None:
    model = build_voc_model("vgg16", pretrained=False)
    assert last_linear_name(model) == "classifier.6"
    layer = model.get_submodule("classifier.6")
    assert isinstance(layer, nn.Linear)
    assert (layer.in_features, layer.out_features) == (4096, 20)


def test_mean_average_precision_follows_the_voc_protocol() -> None:
    present = torch.zeros(4, 20)
    ignore = torch.zeros(4, 20, dtype=torch.bool)
    scores = torch.zeros(4, 20)
    present[[0, 1], 0] = 1  # class 0: images 0, 1 positive, ranked first: AP 1
    scores[:, 0] = torch.tensor([0.9, 0.8, 0.1, 0.2])
    present[[2, 3], 1] = 1  # class 1: image 3 is difficult-only and the top score
    ignore[3, 1] = True
    scores[:, 1] = torch.tensor([0.1, 0.2, 0.7, 0.9])
    present[0, 2] = 1  # class 2: the positive is ranked second of four: AP 1/2
    scores[:, 2] = torch.tensor([0.5, 0.9, 0.1, 0.1])
    result = mean_average_precision(scores, present, ignore)
    assert result.per_class["aeroplane"] == pytest.approx(1.0)
    assert result.per_class["bicycle"] == pytest.approx(1.0)  # the ignored image is out
    assert result.per_class["bird"] == pytest.approx(0.5)
    assert math.isnan(result.per_class["tvmonitor"])
    assert result.mean == pytest.approx(2.5 / 3)


def test_bad_inputs_are_one_line_errors(voc: Path, tmp_path: Path) -> None:
    with pytest.raises(FdcamError, match=r"unknown arch 'resnet9'"):
        finetune_voc(voc, tmp_path, **{**SMOKE, "arch": "resnet9"})
    with pytest.raises(FdcamError, match=r"epochs must be >= 1"):
        finetune_voc(voc, tmp_path, epochs=0, **SMOKE)
    with pytest.raises(FdcamError, match=r"VOC2007 folder .*nowhere does not exist"):
        finetune_voc(tmp_path / "nowhere", tmp_path / "out", **SMOKE)
    with pytest.raises(FdcamError, match=r"checkpoint .*missing\.pt does not exist"):
        load_voc_vgg16(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(FdcamError, match=r"junk\.pt is not a readable checkpoint"):
        load_voc_vgg16(junk)
    tiny = finetune_voc(voc, tmp_path / "tiny", epochs=1, max_steps=1, **SMOKE)
    with pytest.raises(FdcamError, match=r"holds a fine-tuned 'tiny-cnn', not vgg16"):
        load_voc_vgg16(tiny)


def test_command_line_reports_errors_in_one_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: VOC2007 folder")
    assert err.count("\n") == 1
