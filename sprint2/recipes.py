"""What a run trains and how, as data: `TrainConfig`, the augmentation presets, the data-dependent
recipes and the single-box defaults. No TensorFlow here (`sprint2.augment` applies the presets).

Recipes are data (`RECIPES`), picked by `choose_recipe`; `sprint2.experiment.run_training` combines a
recipe with the detector's schedule (`sprint2.schedule`) and the caller's overrides into a TrainConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelName = Literal["detector", "original", "improved"]

# Single-box defaults measured on 2 CPU cores: the 600/150 synthetic set needs ~1300 optimizer steps
# (20 epochs at batch 32 stopped at mean IoU 0.45, 30 at batch 16 at 0.73).
DEFAULT_EPOCHS = 40
DEFAULT_BATCH = 16
DEFAULT_LEARNING_RATE = 2e-3
DEFAULT_SIZE = 64
DEFAULT_MODEL: ModelName = "detector"
SMALL_DATA = 400  # fewer training images than this: the "small-photos" recipe (see choose_recipe)


@dataclass(frozen=True)
class AugmentParams:
    """How hard `augment` distorts a batch: geometry moves the boxes with the pixels, colour leaves them.

    zoom: scale range (>1 zooms in, <1 zooms out onto a grey canvas); aspect: log-range of independent
    x/y stretching; shift: largest translation as a fraction of the image; brightness/contrast/saturation:
    jitter strengths; hue: largest hue rotation in turns; grayscale: probability of dropping colour;
    mosaic: probability that a training image is replaced by a `mosaic` of four (applied before the rest).
    """

    flip: bool = True
    zoom: tuple[float, float] = (0.9, 1.1)
    aspect: float = 0.0
    shift: float = 0.1
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale: float = 0.0
    mosaic: float = 0.0

    @property
    def has_colour(self) -> bool:
        """Whether any colour jitter is on."""
        return bool(self.brightness or self.contrast or self.saturation or self.hue or self.grayscale)


# "light": mild geometric jitter, for the synthetic shapes. "strong": wide zooms and shifts plus colour
# jitter, for small photo datasets, where a few hundred images would otherwise be learnt by heart.
AUGMENT_PRESETS: dict[str, AugmentParams] = {
    "light": AugmentParams(),
    "strong": AugmentParams(
        zoom=(0.6, 1.4),
        aspect=0.15,
        shift=0.5,
        brightness=0.15,
        contrast=0.3,
        saturation=0.3,
        hue=0.03,
        grayscale=0.1,
    ),
}


def augment_params(spec: str | AugmentParams) -> AugmentParams:
    """Resolves a preset name ("light", "strong") or passes explicit parameters through."""
    if isinstance(spec, AugmentParams):
        return spec
    if spec not in AUGMENT_PRESETS:
        raise ValueError(
            f"augmentation must be one of {sorted(AUGMENT_PRESETS)} or AugmentParams, got {spec!r}"
        )
    return AUGMENT_PRESETS[spec]


@dataclass
class TrainConfig:
    """What to train and how; batch_size is per replica (global batch = batch_size x replicas).

    epochs is the most a run trains; with time_budget_s the count is fixed after training.PLAN_AFTER timed
    epochs so that the run fits the budget (schedule.epochs_within_budget). precision, width and
    max_boxes concern the detector only.
    """

    model: ModelName = "improved"
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH
    learning_rate: float = DEFAULT_LEARNING_RATE
    seed: int = 0
    augment: bool = True
    patience: int = 8
    target: Literal["largest", "all"] = "largest"
    out_dir: Path | None = None
    resume: bool = True
    box_weight: float = 1.0
    augmentation: str | AugmentParams = "light"  # a name in AUGMENT_PRESETS or explicit parameters
    warmup_epochs: int = 0
    weight_decay: float = 0.0  # > 0: AdamW with this decoupled weight decay
    precision: str = (
        "auto"  # "auto", "float32", "mixed_bfloat16" or "mixed_float16" (tasks.resolve_precision)
    )
    time_budget_s: float | None = None
    width: float = 1.0  # the detector's channel multiplier
    max_boxes: int | None = None  # boxes per image the detector trains on (None: the most any image has)
    # Early stopping waits until this share of the planned epochs is done: under cosine decay the
    # validation score of a long schedule keeps rising late, and small validation folds are noisy.
    min_epochs_share: float = 0.0
    # > 0: validation, the best epoch and the saved model use an exponential moving average of the
    # weights (this momentum per optimizer step), which is smoother than the last step's weights.
    ema_momentum: float = 0.0
    # False: validation is only recorded; the run trains its whole plan and keeps its last weights
    # (a validation set too small to read, schedule.reads_validation).
    select_epoch: bool = True
    # The detector's size and offset regression: "dense" from every cell of an object's Gaussian core
    # with a GIoU term (targets.dense_box_targets), or "centre" from its centre cell alone.
    box_regression: Literal["dense", "centre"] = "centre"


@dataclass(frozen=True)
class Recipe:
    """The data-dependent part of a schedule: augmentation, warm-up, validation split, patience.

    patience applies only with a validation split; without one the run trains every epoch.
    """

    augmentation: str | AugmentParams
    warmup_epochs: int
    val_fraction: float
    patience: int
    min_epochs_share: float = 0.0  # see TrainConfig.min_epochs_share
    ema_momentum: float = 0.0  # see TrainConfig.ema_momentum


#: The detector's augmentation: every box moves with the pixels, so zooms and shifts stay moderate
#: (a box pushed mostly out of the frame is dropped, one cut below 3/4 of its area is ignored: see
#: augment.WHOLE_VISIBLE), with colour jitter for stain and lighting.
DETECTOR_AUGMENTATION = AugmentParams(
    zoom=(0.75, 1.3), aspect=0.1, shift=0.15, brightness=0.1, contrast=0.2, saturation=0.2, hue=0.02
)

RECIPES: dict[str, Recipe] = {
    # Hundreds of generated shapes: light jitter, a 10% validation split that picks the best epoch.
    "synthetic": Recipe(augmentation="light", warmup_epochs=0, val_fraction=0.1, patience=8),
    # A few hundred photos (raccoon): strong augmentation, a warm-up for Adam's noisy first steps, and
    # no validation split (a few dozen images would make early stopping noise): fixed epochs.
    "small-photos": Recipe(augmentation="strong", warmup_epochs=3, val_fraction=0.0, patience=8),
    # The multi-object detector: the dataset's own val split (else 15% held out) picks the epoch by
    # mAP@0.5; warm-up, epochs, batch and input size come from sprint2.schedule.detector_schedule.
    "detector": Recipe(
        augmentation=DETECTOR_AUGMENTATION,
        warmup_epochs=0,
        val_fraction=0.15,
        patience=15,
        # Early stopping only in the last quarter, where the cosine rate is under 15% of its peak: the
        # averaged weights' validation mAP plateaus while the rate is high and climbs as it decays.
        min_epochs_share=0.75,
        ema_momentum=0.99,
    ),
}


def choose_recipe(train_images: int, model: str = "improved") -> str:
    """The recipe "auto" picks: "detector" for the detector; for the single-box models "small-photos"
    under SMALL_DATA training images, "synthetic" otherwise."""
    if model == "detector":
        return "detector"
    return "small-photos" if train_images < SMALL_DATA else "synthetic"
