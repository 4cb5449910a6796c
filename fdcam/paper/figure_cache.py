"""The figure cache: the maps and curves a run computes anyway, kept per method and image
(``results_dir/figures/<kind>/``) so that Fig. 5 and Fig. 6 need no second explanation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fdcam.evaluation.faithfulness import (
    InsertionDeletion,
)
from fdcam.paper.setups import Setup

# ----------------------------------------------------------------------------- figure data


class FigureKeeper:
    """Keeps the maps (and curves) of the first ``setup.figure_images`` images of a run."""

    def __init__(self, setup: Setup, kind: str) -> None:
        self.folder = setup.results_dir / "figures" / kind
        self.keep = set(setup.image_ids(kind)[: setup.figure_images])

    def __call__(self, image_id: str, method: str, classes: list[int], saliency: Tensor,
                 curves: InsertionDeletion | None) -> None:
        if image_id not in self.keep:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"targets": list(classes),
                                  "saliency": saliency.detach().to("cpu", torch.float32)}
        if curves is not None:
            record["insertion"] = curves.insertion.detach().cpu()
            record["deletion"] = curves.deletion.detach().cpu()
        torch.save(record, _figure_file(self.folder, method, image_id))


def _figure_file(folder: Path, method: str, image_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{method}__{image_id}")
    return folder / f"{safe}.pt"


def load_figure(setup: Setup, kind: str, method: str, image_id: str) -> dict[str, Any] | None:
    path = _figure_file(setup.results_dir / "figures" / kind, method, image_id)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
