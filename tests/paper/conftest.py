"""The paper pipeline's tests: the tiny stand-in architecture of the VOC fine-tuning."""

from __future__ import annotations

import pytest

from fdcam.paper import finetune
from tests.models import tiny_voc_cnn


@pytest.fixture(autouse=True)
def tiny_cnn_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``arch="tiny-cnn"``: VGG16's training code on a CNN that trains in a fraction of a second."""
    monkeypatch.setitem(finetune.ARCHS, "tiny-cnn", tiny_voc_cnn)
