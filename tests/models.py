"""Tiny CNNs for the tests: one plain nn.Sequential, one with a skip around the target."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def tiny_sequential(classes: int = 10, seed: int = 0) -> nn.Sequential:
    """conv-relu-conv-relu | maxpool-avgpool-flatten-linear-relu-dropout-linear.

    The head's ReLU works in place, as VGG16's does.
    """
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 24, 3, padding=1), nn.ReLU(),  # "3": the target layer
        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(3), nn.Flatten(1),
        nn.Linear(24 * 9, 32), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(32, classes),
    ).eval()


class TinySkip(nn.Module):
    """A CNN whose head also sees an earlier layer (a skip connection around `conv2`)."""

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv1(x))
        y = torch.relu(self.bn(self.conv2(h)) + h)
        return self.fc(y.mean(dim=(2, 3)))


def tiny_skip(seed: int = 0) -> TinySkip:
    torch.manual_seed(seed)
    model = TinySkip()
    model.bn.running_mean.uniform_(-0.1, 0.1)
    model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_voc_cnn(pretrained: bool) -> nn.Module:
    """The fine-tuning tests' stand-in for VGG16 (`fdcam.paper.finetune.ARCHS`, as
    ``"tiny-cnn"``): conv features, pooled, a linear classifier; it has no weights."""
    from fdcam.errors import FdcamError

    if pretrained:
        raise FdcamError("arch 'tiny-cnn' has no pretrained weights; use pretrained=False")
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 1000),
    )
