"""From a LoadedDataset to training batches: per-image targets and the seeded, augmented tf.data pipeline.

Two target layouts: one box per row (labels (N,), boxes (N, 4)) for the single-box models, and padded
boxes (labels (N, M) and boxes (N, M, 4), -1 as padding) for detectors that learn every object.
`detection_dataset` carries the padded boxes, labels and `difficult` flags through augmentation and
builds the detector's targets per batch (`sprint2.targets.build_targets`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from sprint2.augment import MIN_VISIBLE, PAD, WHOLE_VISIBLE, augment, augment_detection, mosaic
from sprint2.evaluate import image_targets
from sprint2.recipes import AugmentParams
from sprint2.targets import build_targets

logger = logging.getLogger(__name__)

Target = Literal["largest", "all"]
MOSAIC_STREAM = 1  # folded into a batch's augmentation seed for mosaic's draws, independent of augment's


def make_targets(ds: Any, target: Target = "largest") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8, labels (R,) int32, boxes (R, 4) float32 px): one training target per row.

    "largest" keeps each image once with its largest object (evaluate.image_targets' choice);
    "all" repeats the image for every object (the original sprint's scheme). Images without
    objects are skipped. The dataset itself keeps every box, for evaluation and drawing.
    """
    if target == "largest":
        labels, boxes = image_targets(ds)
        rows = np.flatnonzero(labels >= 0)
        if len(rows) < len(labels):
            logger.warning("%d images without objects left out of training", len(labels) - len(rows))
        return np.asarray(ds.images)[rows], labels[rows], boxes[rows]
    if target != "all":
        raise ValueError(f"target must be 'largest' or 'all', got {target!r}")
    counts = [len(np.asarray(b).reshape(-1, 4)) for b in ds.boxes]
    rows = np.repeat(np.arange(len(counts)), counts)
    labels = np.concatenate(
        [np.asarray(lab, np.int32).reshape(-1) for lab in ds.labels] or [np.zeros(0, np.int32)]
    )
    boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in ds.boxes] or [np.zeros((0, 4))])
    return np.asarray(ds.images)[rows], labels.astype(np.int32), boxes.astype(np.float32)


def padded_targets(ds: Any, max_boxes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N, M) int32, boxes (N, M, 4) float32 px) with every box of each image, -1 rows as padding.

    M is the largest box count, or max_boxes (an image with more keeps its first max_boxes, logged).
    """
    counts = [len(np.asarray(b).reshape(-1, 4)) for b in ds.boxes]
    m = max(counts, default=0) if max_boxes is None else int(max_boxes)
    labels = np.full((len(counts), m), -1, np.int32)
    boxes = np.full((len(counts), m, 4), PAD, np.float32)
    cut = 0
    for i, (b, lab) in enumerate(zip(ds.boxes, ds.labels)):
        k = min(counts[i], m)
        cut += counts[i] - k
        boxes[i, :k] = np.asarray(b, np.float32).reshape(-1, 4)[:k]
        labels[i, :k] = np.asarray(lab, np.int32).reshape(-1)[:k]
    if cut:
        logger.warning("%d boxes beyond max_boxes=%d left out", cut, m)
    return labels, boxes


def padded_flags(ds: Any, name: str = "difficult", max_boxes: int | None = None) -> np.ndarray:
    """(N, M) bool: the per-box flag `name` ("difficult" or "truncated") laid out like padded_targets."""
    flags = getattr(ds, name)
    counts = [len(np.asarray(b).reshape(-1, 4)) for b in ds.boxes]
    m = max(counts, default=0) if max_boxes is None else int(max_boxes)
    out = np.zeros((len(counts), m), bool)
    for i, f in enumerate(flags):
        k = min(counts[i], m)
        out[i, :k] = np.asarray(f, bool).reshape(-1)[:k]
    return out


def _batched(arrays: tuple, global_batch: int, seed: int, epoch: int) -> tf.data.Dataset:
    """Rows shuffled by seed + epoch (the same order after a resume), in whole global batches."""
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    ds = ds.shuffle(len(arrays[0]), seed=seed * 1000 + epoch, reshuffle_each_iteration=False)
    return ds.batch(global_batch, drop_remainder=True)


def _finish(ds: tf.data.Dataset, multiworker: bool) -> tf.data.Dataset:
    """Sharding by data under multi-worker (each worker its share of every batch), then prefetching."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
        if multiworker
        else tf.data.experimental.AutoShardPolicy.AUTO
    )
    # No autotuning model thread: an epoch's iterator is deleted at the epoch's end, and deleting one
    # waits for that thread to wake from its current sleep (seconds once a run has gone on a while).
    # AUTOTUNE parallelism then means one call per core, and prefetching keeps its own buffer rule.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    global_batch: int,
    *,
    seed: int,
    epoch: int,
    augment_data: bool,
    multiworker: bool = False,
    params: AugmentParams | None = None,
    min_visible: float = MIN_VISIBLE,
) -> tf.data.Dataset:
    """(images, labels, boxes) batches: shuffled by seed + epoch (the same order after a resume), augmented.

    boxes (N, 4), one per row: augmentation keeps that box whole in the frame. boxes (N, M, 4) with
    labels (N, M), -1 as padding: every box moves, and one pushed mostly out of the frame (visible part
    under min_visible) turns into padding, label included.
    """
    padded = np.ndim(boxes) == 3
    ds = _batched((images, labels, boxes), global_batch, seed, epoch)

    def prepare(step: tf.Tensor, batch: tuple) -> tuple:
        x, y, b = batch
        x = tf.cast(x, tf.float32)
        if augment_data:
            seed_pair = tf.stack([tf.cast(seed * 7919 + epoch, tf.int64), step])
            if padded:
                x, b, keep = augment(x, b, y >= 0, seed_pair, params, min_visible=min_visible)
                y = tf.where(keep, y, tf.cast(-1, y.dtype))
            else:
                x, b, _ = augment(x, b[:, None], None, seed_pair, params, keep_whole=True)
                b = b[:, 0]
        return x, y, b

    ds = ds.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(ds, multiworker)


def detection_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    difficult: np.ndarray,
    global_batch: int,
    *,
    num_classes: int,
    seed: int,
    epoch: int,
    augment_data: bool,
    multiworker: bool = False,
    params: AugmentParams | None = None,
    min_visible: float = MIN_VISIBLE,
    whole_visible: float = WHOLE_VISIBLE,
) -> tf.data.Dataset:
    """(images float32, targets) batches for the detector, shuffled like make_dataset.

    labels (N, M), boxes (N, M, 4) px and difficult (N, M) come from padded_targets / padded_flags
    (-1 as padding). Augmentation moves every box; a box it pushes mostly out of the frame becomes
    padding, its difficult flag with it, and one it cuts to less than whole_visible of its area becomes
    difficult (`augment_detection`). With params.mosaic > 0, `mosaic` first tiles picked images with
    three others (M becomes 4M box rows per image); `augment` then acts on the mosaics. `build_targets`
    then turns each augmented batch into the heatmap, sizes, offsets and masks of `sprint2.detector`
    (difficult boxes ignored there).
    """
    if (
        np.ndim(boxes) != 3
        or np.shape(labels) != np.shape(boxes)[:2]
        or np.shape(difficult) != np.shape(labels)
    ):
        raise ValueError(
            f"detection_dataset needs labels (N, M), boxes (N, M, 4) and difficult (N, M), got "
            f"{np.shape(labels)}, {np.shape(boxes)} and {np.shape(difficult)}"
        )
    input_hw = (int(np.shape(images)[1]), int(np.shape(images)[2]))
    ds = _batched((images, labels, boxes, np.asarray(difficult, bool)), global_batch, seed, epoch)
    chance = (params or AugmentParams()).mosaic

    def prepare(step: tf.Tensor, batch: tuple) -> tuple:
        x, y, b, hard = batch
        x = tf.cast(x, tf.float32)
        valid = y >= 0
        if augment_data:
            seed_pair = tf.stack([tf.cast(seed * 7919 + epoch, tf.int64), step])
            if chance > 0:
                tiled_seed = tf.random.experimental.stateless_fold_in(seed_pair, MOSAIC_STREAM)
                x, b, valid, y, hard = mosaic(
                    x,
                    b,
                    valid,
                    y,
                    hard,
                    tiled_seed,
                    chance,
                    min_visible=min_visible,
                    whole_visible=whole_visible,
                )
            x, b, valid, hard = augment_detection(
                x, b, valid, hard, seed_pair, params, min_visible=min_visible, whole_visible=whole_visible
            )
        targets = build_targets(b, y, valid, hard & valid, num_classes=num_classes, input_hw=input_hw)
        return x, targets

    ds = ds.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(ds, multiworker)
