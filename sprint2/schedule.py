"""The detector's training schedule, worked out from the dataset: input size, batch, epochs, learning rate.

One rule (`detector_schedule`) turns a few annotation statistics (`DataStats`) into a `Schedule`;
`epochs_within_budget` then fits the epoch count into a wall-clock budget once the first epochs have
been timed. Light: NumPy and the VOC parser only, so notebooks and tests can call it without TensorFlow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sprint2.errors import DataError
from sprint2.voc import Sample, parse_annotation

logger = logging.getLogger(__name__)

#: The smaller side, in network-input pixels, that the small objects (SMALL_QUANTILE) are given:
#: 20 px is 5 cells of the stride-4 heatmap, so a small object's peak has neighbours on every side
#: and its size is regressed from more than a cell or two (chosen on bccd's val split, see README).
MIN_OBJECT_PX = 20.0
#: Which objects count as "small": this quantile of the boxes' smaller sides (robust to a few slivers).
SMALL_QUANTILE = 0.05
#: Input pixels at most (320 x 256): about 7 GFLOPs per training image, what two CPU cores can afford.
MAX_PIXELS = 320 * 256
#: The shorter input side at least, so the stride-32 features still hold a 4 x 4 grid.
MIN_SIDE = 128
ALIGN = 32  # the detector needs height and width in multiples of 32

#: Training throughput the input size is planned with, in input pixels per second, by the Keras dtype
#: policy the run trains under (`tasks.resolve_precision`). float32: two AVX2 cores at batch 16 (bccd
#: at 256 x 320: 10 images/s; 7.4 at batch 4, so a budget plans about a third more epochs than it
#: gets). mixed_bfloat16: two AMX cores at batch 4 (bccd: 22 images/s at 256 x 320, 40-44 at
#: 160 x 224). GPUs (mixed_float16) were never measured: they plan at the bf16 CPU rate, which can
#: only give them more epochs than planned.
PIXEL_RATES: dict[str, float] = {"float32": 0.8e6, "mixed_bfloat16": 1.6e6, "mixed_float16": 1.6e6}
PIXEL_RATE = PIXEL_RATES["float32"]
#: Epochs a budget should afford before the input grows past what the small objects need: more
#: passes than this add little at these learning rates (bccd: 67 and 120 epochs scored alike).
GOOD_EPOCHS = 100
#: Validation objects below which a validation mAP is too noisy to pick an epoch or stop early: the
#: standard error of a detection rate from n objects is up to 0.5 / sqrt(n), 0.022 at 500, the size
#: of the differences between late epochs.
VAL_MIN_OBJECTS = 500

#: Images per optimizer step. Small: a CPU budget holds a few dozen epochs of a few hundred images,
#: and at fixed epochs each halving of the batch (16, 8, 4) raised validation mAP on bccd and raccoon
#: (README, images per optimizer step): these runs are short of optimizer steps, not of images per step.
GLOBAL_BATCH = 4
MIN_BATCH = 2
#: The batch BASE_LEARNING_RATE was tuned at; other batches scale it by sqrt(batch / LR_BATCH).
LR_BATCH = 16
#: Object instances a run should see in total (epochs x objects): few objects need many passes.
SEEN_OBJECTS = 300_000
MIN_EPOCHS = 30
MAX_EPOCHS = 300
BASE_LEARNING_RATE = 2e-3  # Adam's peak at LR_BATCH images per step
WARMUP_STEPS = 30  # optimizer steps of linear warm-up, rounded up to whole epochs
DEFAULT_BUDGET_S = 15 * 60.0


@dataclass(frozen=True)
class DataStats:
    """What the schedule needs to know about a training set, in original-image pixels.

    image_hw: the median (height, width); small_side: the SMALL_QUANTILE of the boxes' smaller sides.
    """

    images: int
    objects: int
    image_hw: tuple[float, float]
    small_side: float

    @classmethod
    def from_samples(cls, samples: Iterable[Sample]) -> DataStats:
        """Reads the annotation files (not the images); files that do not parse are left out, logged."""
        sizes, sides, images, objects, bad = [], [], 0, 0, 0
        for sample in samples:
            try:
                ann = parse_annotation(sample.xml_path, sample.image_path, check=False)
            except DataError:
                bad += 1
                continue
            images += 1
            if ann.width > 0 and ann.height > 0:
                sizes.append((ann.height, ann.width))
            for obj in ann.objects:
                x0, y0, x1, y1 = obj.box
                side = min(x1 - x0, y1 - y0)
                if side > 0:
                    sides.append(side)
                    objects += 1
        if bad:
            logger.info("schedule statistics: %d annotation files did not parse and were left out", bad)
        return cls.from_arrays(images, sizes, sides)

    @classmethod
    def from_arrays(
        cls, images: int, image_hw: Sequence[tuple[float, float]], box_sides: Sequence[float]
    ) -> DataStats:
        """From per-image (height, width) sizes and per-box smaller sides (both original pixels)."""
        if images < 1 or not len(image_hw) or not len(box_sides):
            raise ValueError(
                f"need images with sizes and boxes to plan a schedule, got {images} images, "
                f"{len(image_hw)} sizes, {len(box_sides)} boxes"
            )
        hw = np.asarray(image_hw, np.float64).reshape(-1, 2)
        height, width = (float(v) for v in np.median(hw, axis=0))
        small = float(np.quantile(np.asarray(box_sides, np.float64), SMALL_QUANTILE))
        return cls(int(images), int(len(box_sides)), (height, width), small)


@dataclass(frozen=True)
class Schedule:
    """A detector run's settings; epochs is the most the data asks for, the time budget may stop sooner."""

    input_hw: tuple[int, int]
    batch_size: int  # per replica
    epochs: int
    learning_rate: float
    warmup_epochs: int
    time_budget_s: float | None
    pixel_rate: float = PIXEL_RATE  # input pixels per second the budget was planned at

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (input_hw as a list)."""
        return {**asdict(self), "input_hw": list(self.input_hw)}


def _align(value: float) -> int:
    return max(ALIGN, int(math.ceil(value / ALIGN - 1e-9)) * ALIGN)


def detector_input_hw(stats: DataStats, pixels: float | None = None) -> tuple[int, int]:
    """The network input (height, width), multiples of 32, keeping the images' median aspect.

    The scale makes the small objects MIN_OBJECT_PX on their smaller side, but no larger than the
    images themselves; `pixels` (from `budget_pixels`) moves it to about that many input pixels
    instead, never past the images' own size when growing; the shorter side is at least MIN_SIDE; then
    the pixel count is capped at MAX_PIXELS and at `pixels` (MAX_PIXELS wins over MIN_SIDE, MIN_SIDE
    over `pixels`). Sides are rounded up to multiples of 32, except where that would break the cap.
    """
    h, w = stats.image_hw
    scale = min(MIN_OBJECT_PX / stats.small_side, 1.0)
    smallest = MIN_SIDE / min(h, w)
    cap = MAX_PIXELS
    if pixels is not None:
        chosen = math.sqrt(pixels / (h * w))
        scale = max(scale, min(chosen, 1.0)) if chosen > scale else chosen
        cap = min(MAX_PIXELS, max(pixels, _align(h * smallest) * _align(w * smallest)))
    scale = max(scale, smallest)
    scale = min(scale, math.sqrt(cap / (h * w)))
    out_h, out_w = _align(h * scale), _align(w * scale)
    while out_h * out_w > cap:  # rounding up overshot the cap: shrink the side that grew most
        if out_w / (w * scale) >= out_h / (h * scale) and out_w > ALIGN:
            out_w -= ALIGN
        elif out_h > ALIGN:
            out_h -= ALIGN
        else:
            break
    return out_h, out_w


def pixel_rate(precision: str) -> float:
    """The planning rate (PIXEL_RATES) for a resolved dtype policy name."""
    if precision not in PIXEL_RATES:
        raise ValueError(f"no planning rate for precision {precision!r}; known: {sorted(PIXEL_RATES)}")
    return PIXEL_RATES[precision]


def budget_pixels(
    stats: DataStats, epochs: int, budget_s: float | None, rate: float = PIXEL_RATE
) -> float | None:
    """Input pixels the time budget asks for, or None to keep the small-object size.

    At `rate` input pixels per second, the small-object size should leave room for
    min(epochs, GOOD_EPOCHS) epochs and at least MIN_EPOCHS: a budget that affords more grows the
    input (a small set trains at a finer scale instead of ending early), one that affords fewer
    shrinks it (a short budget still converges).
    """
    if budget_s is None:
        return None
    per_epoch = budget_s * rate / max(stats.images, 1)
    current = math.prod(detector_input_hw(stats))
    grow_to, shrink_to = per_epoch / min(epochs, GOOD_EPOCHS), per_epoch / MIN_EPOCHS
    if grow_to > current:
        return grow_to
    return shrink_to if shrink_to < current else None


def detector_schedule(
    stats: DataStats,
    *,
    replicas: int = 1,
    time_budget_s: float | None = DEFAULT_BUDGET_S,
    precision: str = "float32",
) -> Schedule:
    """The detector's schedule for a training set: the one rule, from the data alone.

    - input size: `detector_input_hw` (small objects get 5 heatmap cells, at most MAX_PIXELS), moved
      by `budget_pixels` so that the time budget holds about GOOD_EPOCHS epochs, at least MIN_EPOCHS,
      at the planning rate of `precision` (a resolved dtype policy name, see PIXEL_RATES);
    - batch: GLOBAL_BATCH images, fewer for tiny sets (an eighth of the images, at least MIN_BATCH),
      split over the replicas;
    - epochs: enough passes to show the network SEEN_OBJECTS object instances, within
      [MIN_EPOCHS, MAX_EPOCHS]; the time budget (`epochs_within_budget`) may end the run sooner;
    - learning rate: BASE_LEARNING_RATE x sqrt(global batch / LR_BATCH) (Adam, cosine decay);
    - warm-up: WARMUP_STEPS optimizer steps, rounded up to whole epochs of this set.
    """
    replicas = max(1, int(replicas))
    per_replica = max(1, min(GLOBAL_BATCH, max(MIN_BATCH, stats.images // 8)) // replicas)
    global_batch = per_replica * replicas
    steps = max(1, stats.images // global_batch)
    epochs = int(np.clip(math.ceil(SEEN_OBJECTS / max(stats.objects, 1)), MIN_EPOCHS, MAX_EPOCHS))
    rate = pixel_rate(precision)
    return Schedule(
        input_hw=detector_input_hw(stats, budget_pixels(stats, epochs, time_budget_s, rate)),
        batch_size=per_replica,
        epochs=epochs,
        learning_rate=BASE_LEARNING_RATE * math.sqrt(global_batch / LR_BATCH),
        warmup_epochs=max(1, math.ceil(WARMUP_STEPS / steps)),
        time_budget_s=time_budget_s,
        pixel_rate=rate,
    )


def reads_validation(objects: int) -> bool:
    """Whether a validation set of this many objects may pick the best epoch and stop a run early
    (VAL_MIN_OBJECTS); otherwise a run trains its whole plan and keeps its last weights."""
    return objects >= VAL_MIN_OBJECTS


def epochs_within_budget(
    max_epochs: int, done: int, elapsed_s: float, epoch_s: float, budget_s: float
) -> int:
    """How many epochs a run can have in all: the `done` ones plus as many more of `epoch_s` seconds as
    fit in what is left of `budget_s` after `elapsed_s`; never fewer than done, never more than max_epochs.

    The scheme (training.PLAN_AFTER): time a few epochs, average all but the first (it includes
    tracing), then fix the count.
    """
    if epoch_s <= 0:
        return max_epochs
    more = math.floor(max(0.0, budget_s - elapsed_s) / epoch_s)
    return int(min(max_epochs, max(done, done + more)))
