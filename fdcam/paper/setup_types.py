"""A profile's `Setup` (models, images, methods, limits) and what the builders of
`fdcam.paper.setups` and `fdcam.paper.disk_setups` share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fdcam.errors import FdcamError
from fdcam.evaluation.faithfulness import STEP_FRACTION
from fdcam.evaluation.pointing import ClassBoxes
from fdcam.evaluation.runner import ImageSource
from fdcam.models import LoadedModel
from fdcam.paper.names import method_label
from fdcam.paper.settings import HEAVY_METHODS, SAME_MAP
from fdcam.paths import base_dir


@dataclass(frozen=True)
class PointingImage:
    """One image of the pointing game: the normalised image (or its loader) and, per class
    index of the pointing model, its boxes in input pixels (0-based inclusive xyxy) with
    VOC ``difficult`` flags."""

    image: ImageSource
    boxes: Mapping[int, ClassBoxes]


@dataclass
class Setup:
    """Everything a profile's experiments need; made by `setup`.

    ``faithfulness_images``: (image_id, image or loader) pairs for Tables I, III, IV;
    ``pointing_images``: image_id -> `PointingImage` for Table II; ``methods``: table
    ("I" … "IV") -> method names; ``heavy_limits``: "faithfulness"/"pointing" -> how many
    of those images the ``heavy_methods`` run on (None: all). ``run_missing``: whether
    `fdcam.paper.runs` computes the rows a results file lacks (False: it only reads them, as
    the imagenet-sample profile's notebooks do, whose rows ``make evaluate-imagenet-sample``
    computes; the tables then rest on the rows there and say their n).
    """

    profile: str
    model: LoadedModel
    pointing_model: LoadedModel
    device: str
    results_dir: Path
    faithfulness_images: list[tuple[str, ImageSource]]
    pointing_images: Mapping[str, PointingImage]
    methods: dict[str, tuple[str, ...]]
    heavy_limits: dict[str, int | None]
    step_fraction: float = STEP_FRACTION
    batch_size: int | None = None  # perturbed images per forward pass (None: metrics')
    figure_images: int = 3
    seed: int = 0
    dry_run: bool = False
    data_note: str = ""
    heavy_methods: tuple[str, ...] = HEAVY_METHODS
    run_missing: bool = True

    @property
    def faithfulness_methods(self) -> tuple[str, ...]:
        """The methods of Tables I, III and IV, each once, Table I's first."""
        return tuple(dict.fromkeys(m for t in ("I", "III", "IV") for m in self.methods[t]))

    @property
    def pointing_methods(self) -> tuple[str, ...]:
        return self.methods["II"]

    @property
    def faithfulness_csv(self) -> Path:
        return self.results_dir / "faithfulness.csv"

    @property
    def pointing_csv(self) -> Path:
        return self.results_dir / "pointing.csv"

    def image_ids(self, kind: str) -> list[str]:
        """The image ids of a run, in order: kind is "faithfulness" or "pointing"."""
        if kind == "faithfulness":
            return [image_id for image_id, _ in self.faithfulness_images]
        if kind == "pointing":
            return list(self.pointing_images)
        raise FdcamError(f"unknown run kind {kind!r}; expected faithfulness or pointing")

    def images_for(self, method: str, kind: str) -> list[str]:
        """The image ids `method` runs on: all of them, or a prefix for a heavy method."""
        ids = self.image_ids(kind)
        limit = self.heavy_limits.get(kind) if method in self.heavy_methods else None
        return ids if limit is None else ids[:limit]

    def describe(self) -> pd.DataFrame:
        """A one-column summary for the notebook: models, data, sizes (no temporary paths)."""
        heavy = {k: ("all" if v is None else str(v)) for k, v in self.heavy_limits.items()}
        try:
            where = str(self.results_dir.relative_to(base_dir()))
        except ValueError:
            where = "a temporary folder" if self.profile == "smoke" else str(self.results_dir)
        rows = {
            "profile": self.profile + (" (dry run: random weights)" if self.dry_run else ""),
            "model (Tables I, III, IV)": f"{self.model.name}, target layer "
                                         f"{self.model.target_layer}",
            "model (Table II)": f"{self.pointing_model.name}, target layer "
                                f"{self.pointing_model.target_layer}",
            "faithfulness images": str(len(self.faithfulness_images)),
            "pointing-game images": str(len(self.pointing_images)),
            "heavy methods": ", ".join(method_label(m) for m in self.heavy_methods)
                             + f" on {heavy['faithfulness']} faithfulness images, "
                               f"{heavy['pointing']} pointing-game images",
            **self._rows_so_far(),
            "input size": "×".join(map(str, self.model.input_size)),
            "pixels per insertion/deletion step": f"{self.step_fraction:.1%} of the image",
            "data": self.data_note,
            "results": where,
        }
        return pd.DataFrame({"value": rows})

    def _rows_so_far(self) -> dict[str, str]:
        """Where the rows come from a run outside the notebook (``run_missing`` False), how
        far that run has got: the images with rows of the light and of the heavy methods,
        of those planned (the tables rest on these, and say their n)."""
        if self.run_missing:
            return {}
        from fdcam.evaluation.results_file import read_results

        done = {}
        for kind, path, planned, methods in (
                ("faithfulness", self.faithfulness_csv, len(self.faithfulness_images),
                 self.faithfulness_methods),
                ("pointing", self.pointing_csv, len(self.pointing_images),
                 self.pointing_methods)):
            if planned == 0:
                continue
            limit = self.heavy_limits.get(kind)
            heavy_planned = planned if limit is None else min(limit, planned)
            rows = read_results(path) if path.exists() else pd.DataFrame(
                columns=["image", "method", "error"])
            rows = rows[rows["error"].isna()]  # a row that failed is not done
            # Images per planned method (0 for one without rows); the least is how far.
            # (A method that shares another's map, `SAME_MAP`, has that one's rows.)
            per_method = rows.groupby("method")["image"].nunique().reindex(
                list(dict.fromkeys(SAME_MAP.get(m, m) for m in methods)), fill_value=0)
            heavy = per_method[per_method.index.isin(self.heavy_methods)]
            light = per_method[~per_method.index.isin(self.heavy_methods)]
            parts, growing = [], False
            for name, group, of in (("light methods", light, planned),
                                    ("heavy", heavy, heavy_planned)):
                if len(group):  # a table without heavy (or light) methods: nothing to say
                    parts.append(f"{name} on {int(group.min())} of {of} images")
                    growing |= int(group.min()) < of
            if parts:
                done[f"{kind} rows so far"] = ", ".join(parts) + (
                    " (the run is still growing them)" if growing else "")
        return done


# Parameters that keep requires_grad=True: the last convolution before the target layer (so
# that A still requires grad for the library's hooks) and everything after it.
_TRAINABLE_PREFIXES: dict[str, tuple[str, ...]] = {
    "efficientnet-lite0": ("_conv_head.", "_bn1.", "_fc."),
    "vgg16": ("features.28.", "classifier."),
}


def freeze_body(loaded: LoadedModel) -> LoadedModel:
    """Set ``requires_grad=False`` on the parameters before the target layer's last
    convolution of a known model (EfficientNet-Lite0, VGG16 and its VOC fine-tune); other
    models are left as they are. Gradients w.r.t. the target layer do not change."""
    family = "vgg16" if loaded.name.startswith("vgg16") else loaded.name
    keep = _TRAINABLE_PREFIXES.get(family)
    # A block's output or a call site inside the block (`_blocks.15._swish#2`).
    block = re.fullmatch(r"_blocks\.(\d+)(\..+)?", loaded.target_layer)
    if family == "efficientnet-lite0" and block is not None:  # the block and all after it
        n_blocks = len(loaded.model._blocks)  # type: ignore[arg-type]
        keep = (*(f"_blocks.{i}." for i in range(int(block.group(1)), n_blocks)),
                "_conv_head.", "_bn1.", "_fc.")
    elif keep is None or loaded.target_layer not in ("_swish", "features.30"):
        return loaded
    for name, parameter in loaded.model.named_parameters():
        parameter.requires_grad_(name.startswith(keep))
    return loaded


def clip_limit(limit: int | None, n: int) -> int | None:
    """A heavy method's image limit for a run of `n` images: None when it covers them all."""
    return None if limit is None or limit >= n else limit
