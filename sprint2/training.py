"""One custom training loop for every tf.distribute strategy, with resumable checkpoints.

Why not `Model.fit`: in Keras 3 it has open bugs under tf.distribute (keras-team/keras#21069,
MirroredStrategy on two devices; #20585, multi-worker, where fit fails outright). A `tf.function`
step run with `strategy.run` over `strategy.experimental_distribute_dataset` works for the default
strategy, MirroredStrategy (GPUs or logical CPUs) and MultiWorkerMirroredStrategy alike.
Why not the `BackupAndRestore` callback: callbacks need fit, so resuming is done here with
`tf.train.Checkpoint` + `tf.train.CheckpointManager` (model, optimizer, epoch counter, early-stop state).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from sprint2.distribute import PEER_ERRORS, StrategyError, StrategyInfo, get_strategy, worker_lost
from sprint2.evaluate import baseline, evaluate, largest_index, predict
from sprint2.model import HuberGIoULoss, build_model

logger = logging.getLogger(__name__)

HISTORY_FIELDS = [
    "epoch", "loss", "class_loss", "box_loss", "accuracy", "mean_iou",
    "val_loss", "val_class_loss", "val_box_loss", "val_accuracy", "val_mean_iou",
    "seconds", "images_per_s",
]  # fmt: skip

# Defaults measured on 2 CPU cores (see the training helper's report): the 600/150 synthetic set needs
# ~1300 optimizer steps (20 epochs at batch 32 stopped at mean IoU 0.45, 30 at batch 16 at 0.73).
DEFAULT_EPOCHS = 40
DEFAULT_BATCH = 16
DEFAULT_LEARNING_RATE = 2e-3
DEFAULT_SIZE = 64
SMALL_DATA = 400  # fewer training images than this: the small-photo-set recipe in run_training
CALIBRATION_PIXELS = 256 * 64 * 64  # 256 images of 64x64; fewer when they are larger


@dataclass
class TrainConfig:
    """What to train and how; batch_size is per replica (global batch = batch_size x replicas)."""

    model: Literal["original", "improved"] = "improved"
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


@dataclass
class TrainResult:
    """The trained model (best weights) and how training went."""

    model: keras.Model
    history: list[dict] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    first_epoch_s: float = 0.0
    images_per_s: float = 0.0
    replicas: int = 1
    strategy: StrategyInfo | None = None
    start_epoch: int = 1
    best_epoch: int = 0
    stopped_early: bool = False


def make_targets(ds: Any, target: Literal["largest", "all"] = "largest") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8, labels (M,) int32, boxes (M, 4) float32 px): one training target per row.

    "largest" keeps each image once with its largest object; "all" repeats the image for every
    object (the original sprint's scheme). Images without objects are skipped. The dataset itself
    keeps every box, for evaluation and drawing.
    """
    if target not in ("largest", "all"):
        raise ValueError(f"target must be 'largest' or 'all', got {target!r}")
    rows, labels, boxes = [], [], []
    for i, (b, lab) in enumerate(zip(ds.boxes, ds.labels)):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        lab = np.asarray(lab, np.int32).reshape(-1)
        picks = [largest_index(b)] if target == "largest" else list(range(len(b)))
        for j in picks:
            if j >= 0:
                rows.append(i), labels.append(lab[j]), boxes.append(b[j])
    if len(rows) < len(ds.boxes) and target == "largest":
        logger.warning("%d images without objects left out of training", len(ds.boxes) - len(rows))
    idx = np.asarray(rows, np.int64)
    return (
        np.asarray(ds.images)[idx],
        np.asarray(labels, np.int32).reshape(-1),
        np.asarray(boxes, np.float32).reshape(-1, 4),
    )


@dataclass(frozen=True)
class AugmentParams:
    """How hard `augment` distorts a batch. Geometry moves the boxes with the pixels; colour leaves boxes alone.

    zoom: scale range (>1 zooms in, <1 zooms out onto a grey canvas), capped so the target box still
    fits; aspect: log-range of independent x/y stretching; shift: largest translation as a fraction
    of the image (always limited so the target box stays inside); brightness/contrast/saturation: jitter
    strengths; hue: largest hue rotation in turns; grayscale: probability of dropping colour.
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


# "light": the geometric jitter measured on synthetic data. "strong": crops/zooms that keep the target
# plus colour jitter, for small photo datasets (measured on raccoon, see the training helper's report).
AUGMENT_PRESETS: dict[str, AugmentParams] = {
    "light": AugmentParams(),
    "strong": AugmentParams(zoom=(0.6, 1.4), aspect=0.15, shift=0.5, brightness=0.15, contrast=0.3,
                            saturation=0.3, hue=0.03, grayscale=0.1),  # fmt: skip
}
FILL_VALUE = 127.0  # canvas grey for zoomed-out images: neutral, not a copy of the edges


def augment_params(spec: str | AugmentParams) -> AugmentParams:
    """Resolves a preset name ("light", "strong") or passes explicit parameters through."""
    if isinstance(spec, AugmentParams):
        return spec
    if spec not in AUGMENT_PRESETS:
        raise ValueError(f"augmentation must be one of {sorted(AUGMENT_PRESETS)} or AugmentParams, got {spec!r}")
    return AUGMENT_PRESETS[spec]


def _colour_jitter(images: tf.Tensor, p: AugmentParams, seeds: tf.Tensor) -> tf.Tensor:
    """Per-image brightness, contrast, saturation, hue and optional grayscale on float 0..255 RGB."""
    b = tf.shape(images)[0]

    def draw(i: int, lo: float, hi: float) -> tf.Tensor:
        return tf.random.stateless_uniform([b], seeds[i], lo, hi)[:, None, None, None]

    x = images
    if p.brightness > 0:
        x = x + draw(0, -p.brightness, p.brightness) * 255.0
    if p.contrast > 0:
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * draw(1, 1.0 - p.contrast, 1.0 + p.contrast) + mean
    gray = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)
    if p.saturation > 0:
        x = gray + (x - gray) * draw(2, 1.0 - p.saturation, 1.0 + p.saturation)
    if p.hue > 0:
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, 255.0) / 255.0)
        h = tf.math.floormod(hsv[..., :1] + draw(3, -p.hue, p.hue), 1.0)
        x = tf.image.hsv_to_rgb(tf.concat([h, hsv[..., 1:]], axis=-1)) * 255.0
    if p.grayscale > 0:
        drop = draw(4, 0.0, 1.0) < p.grayscale
        gray = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)
        x = tf.where(drop, tf.tile(gray, [1, 1, 1, 3]), x)
    return tf.clip_by_value(x, 0.0, 255.0)


def augment(images: tf.Tensor, boxes: tf.Tensor, seed: tf.Tensor,
            params: AugmentParams | None = None) -> tuple[tf.Tensor, tf.Tensor]:  # fmt: skip
    """Random flip, zoom (in or out), stretch and shift of a batch, boxes moved with the pixels, then colour jitter.

    images float32 (B, H, W, 3) in 0..255, boxes (B, 4) px, seed int (2,) for stateless (reproducible)
    draws. The target box always stays whole inside the frame, so it still bounds the object.
    """
    p = params or AugmentParams()
    shape = tf.shape(images)
    b = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 11)
    flip = tf.random.stateless_uniform([b], seeds[0]) < (0.5 if p.flip else 0.0)
    scale = tf.random.stateless_uniform([b], seeds[1], p.zoom[0], p.zoom[1])
    stretch = tf.exp(tf.random.stateless_uniform([b], seeds[2], -p.aspect, p.aspect)) if p.aspect > 0 else 1.0
    ux = tf.random.stateless_uniform([b], seeds[3])
    uy = tf.random.stateless_uniform([b], seeds[4])

    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    x0 = tf.where(flip, w - boxes[:, 2], boxes[:, 0])
    x1 = tf.where(flip, w - boxes[:, 0], boxes[:, 2])
    y0, y1 = boxes[:, 1], boxes[:, 3]
    # Cap each axis' scale so the scaled box fits in the frame (a box already filling it is not zoomed in).
    sx = tf.minimum(scale * stretch, tf.maximum(w / tf.maximum(x1 - x0, 1e-3), 1.0))
    sy = tf.minimum(scale / stretch, tf.maximum(h / tf.maximum(y1 - y0, 1e-3), 1.0))

    # Continuous coordinates: v_out = s * (v_in - L/2) + L/2 + t, t uniform over the shifts (up to
    # p.shift * L) that keep the scaled box inside; when none does, the one closest to 0 that does.
    def place(v0: tf.Tensor, v1: tf.Tensor, s: tf.Tensor, length: tf.Tensor, u: tf.Tensor) -> tuple:
        a0, a1 = s * (v0 - length / 2) + length / 2, s * (v1 - length / 2) + length / 2
        lo_ok, hi_ok = -a0, length - a1
        lo, hi = tf.maximum(lo_ok, -p.shift * length), tf.minimum(hi_ok, p.shift * length)
        t = tf.where(lo <= hi, lo + u * (hi - lo), tf.clip_by_value(tf.zeros_like(a0), lo_ok, tf.maximum(lo_ok, hi_ok)))
        return a0 + t, a1 + t, t

    nx0, nx1, tx = place(x0, x1, sx, w, ux)
    ny0, ny1, ty = place(y0, y1, sy, h, uy)
    new_boxes = tf.stack([tf.clip_by_value(nx0, 0.0, w), tf.clip_by_value(ny0, 0.0, h),
                          tf.clip_by_value(nx1, 0.0, w), tf.clip_by_value(ny1, 0.0, h)], axis=1)  # fmt: skip
    # The image op maps each output pixel index to an input index (pixel centres at integers).
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    zeros = tf.zeros_like(sx)
    transforms = tf.stack([1.0 / sx, zeros, cx - (cx + tx) / sx, zeros, 1.0 / sy, cy - (cy + ty) / sy, zeros, zeros],
                          axis=1)  # fmt: skip
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=FILL_VALUE,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    if p.brightness or p.contrast or p.saturation or p.hue or p.grayscale:
        images = _colour_jitter(images, p, seeds[5:10])
    return images, new_boxes


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
) -> tf.data.Dataset:
    """Shuffled (seed + epoch: same order after a resume), batched, optionally augmented tf.data pipeline."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels, boxes))
    ds = ds.shuffle(len(images), seed=seed * 1000 + epoch, reshuffle_each_iteration=False)
    ds = ds.batch(global_batch, drop_remainder=True)

    def prepare(step: tf.Tensor, batch: tuple) -> tuple:
        x, y, b = batch
        x = tf.cast(x, tf.float32)
        if augment_data:
            x, b = augment(x, b, tf.stack([tf.cast(seed * 7919 + epoch, tf.int64), step]), params)
        return x, y, b

    ds = ds.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA if multiworker else tf.data.experimental.AutoShardPolicy.AUTO
    )
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


class _Loop:
    """Holds the model, optimizer and compiled step functions for one strategy."""

    def __init__(self, model: keras.Model, config: TrainConfig, strategy: tf.distribute.Strategy, size: int,
                 global_batch: int, steps_per_epoch: int) -> None:  # fmt: skip
        self.model, self.config, self.strategy = model, config, strategy
        self.size, self.global_batch = float(size), global_batch
        # Linear warm-up (Adam's early steps are noisy on small data), then cosine decay to 5%.
        warmup = min(config.warmup_epochs * steps_per_epoch, max(0, config.epochs * steps_per_epoch - 1))
        schedule = keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 10 if warmup else config.learning_rate,
            decay_steps=max(1, config.epochs * steps_per_epoch - warmup), alpha=0.05,
            warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup,
        )  # fmt: skip
        if config.weight_decay > 0:
            self.optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        else:
            self.optimizer = keras.optimizers.Adam(schedule)
        # Build the optimizer's slots now, under the scope: variables must not be created inside strategy.run.
        self.optimizer.build(model.trainable_variables)
        self.box_loss_fn = HuberGIoULoss()

    def per_example(self, labels: tf.Tensor, boxes: tf.Tensor, out: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-example class and box losses: the improved model's on [0, 1] coordinates, the original's MSE px²."""
        cls = keras.losses.sparse_categorical_crossentropy(labels, out["class"])
        if self.config.model == "improved":
            box = self.box_loss_fn(boxes / self.size, out["box"] / self.size)
        else:
            box = tf.reduce_mean(tf.square(boxes - out["box"]), axis=-1)
        return cls, box

    def stats(self, labels: tf.Tensor, boxes: tf.Tensor, out: dict, cls: tf.Tensor, box: tf.Tensor) -> dict:
        """Sums (not means) so they add up correctly across replicas and batches."""
        pred = tf.cast(tf.argmax(out["class"], axis=-1), labels.dtype)
        iou = tensor_iou(boxes, out["box"])
        return {
            "loss": tf.reduce_sum(cls + self.config.box_weight * box),
            "class_loss": tf.reduce_sum(cls),
            "box_loss": tf.reduce_sum(box),
            "correct": tf.reduce_sum(tf.cast(pred == labels, tf.float32)),
            "iou": tf.reduce_sum(iou),
            "count": tf.cast(tf.shape(labels)[0], tf.float32),
        }

    def replica_step(self, images: tf.Tensor, labels: tf.Tensor, boxes: tf.Tensor) -> dict:
        """Forward, loss scaled by the GLOBAL batch, gradients applied by the Keras optimizer in replica context."""
        with tf.GradientTape() as tape:
            out = self.model(images, training=True)
            cls, box = self.per_example(labels, boxes, out)
            loss = tf.nn.compute_average_loss(cls + self.config.box_weight * box, global_batch_size=self.global_batch)
        grads = tape.gradient(loss, self.model.trainable_variables)
        # Keras 3's TF optimizer all-reduces (sums) the gradients itself when called in a replica context.
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return self.stats(labels, boxes, out, cls, box)

    @tf.function
    def train_step(self, batch: tuple) -> dict:
        per_replica = self.strategy.run(self.replica_step, args=batch)
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    @tf.function
    def eval_step(self, images: tf.Tensor, labels: tf.Tensor, boxes: tf.Tensor) -> dict:
        out = self.model(images, training=False)
        cls, box = self.per_example(labels, boxes, out)
        return self.stats(labels, boxes, out, cls, box)


def tensor_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """IoU of row i of a with row i of b, (N, 4) boxes (a tensor twin of images.box_iou)."""
    lo = tf.maximum(a[:, :2], b[:, :2])
    hi = tf.minimum(a[:, 2:], b[:, 2:])
    inter = tf.reduce_prod(tf.nn.relu(hi - lo), axis=-1)
    area_a = tf.reduce_prod(tf.nn.relu(a[:, 2:] - a[:, :2]), axis=-1)
    area_b = tf.reduce_prod(tf.nn.relu(b[:, 2:] - b[:, :2]), axis=-1)
    union = area_a + area_b - inter
    return tf.math.divide_no_nan(inter, union)


def calibrate_batch_norm(model: keras.Model, images: np.ndarray) -> None:
    """Sets every BatchNormalization's moving mean/variance to the exact statistics of `images`.

    Why: moving averages start at mean 0 / variance 1 while real feature variances here are ~0.01,
    and small datasets give too few steps for the average to forget its start (measured: inference
    accuracy 0.1-0.2 against 0.96 in training mode). One training-mode pass with momentum 0 fixes
    that. Called in cross-replica context, the assignment reaches every replica's copy.
    """
    layers = [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    if not layers or len(images) == 0:
        return
    saved = [l.momentum for l in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(tf.constant(images, tf.float32), training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


def _summarise(sums: dict, prefix: str = "") -> dict:
    """Turns summed statistics into means: loss, class_loss, box_loss, accuracy, mean_iou."""
    n = max(float(sums["count"]), 1.0)
    return {
        f"{prefix}loss": float(sums["loss"]) / n,
        f"{prefix}class_loss": float(sums["class_loss"]) / n,
        f"{prefix}box_loss": float(sums["box_loss"]) / n,
        f"{prefix}accuracy": float(sums["correct"]) / n,
        f"{prefix}mean_iou": float(sums["iou"]) / n,
    }


def _read_history(path: Path, up_to: int) -> list[dict]:
    """Rows of an earlier run's history.csv for epochs <= up_to (numbers as floats, epoch as int)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return [r for r in rows if r["epoch"] <= up_to]


def _write_history(path: Path, history: list[dict]) -> None:
    """Rewrites history.csv from the full history (one row per epoch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})


def _gather_ints(strategy: tf.distribute.Strategy, value: int) -> list[int]:
    """Every replica's copy of a local integer, in replica order (an all-gather across the workers)."""
    local = strategy.experimental_distribute_values_from_function(lambda _: tf.constant([value], tf.int64))
    return [int(v) for v in strategy.gather(local, axis=0).numpy()]


def _check_same_start(strategy: tf.distribute.Strategy, info: StrategyInfo, start_epoch: int,
                      out_dir: Path | None) -> None:  # fmt: skip
    """Multi-worker: every worker must resume from the same epoch, or their all-reduces would not pair up.

    Different epochs mean some worker could not read the chief's checkpoints: out_dir is not shared.
    """
    try:
        starts = _gather_ints(strategy, start_epoch)
    except PEER_ERRORS as exc:
        raise worker_lost(exc, info, start_epoch, out_dir / "checkpoints" if out_dir else "(no --out)") from exc
    if len(set(starts)) > 1:
        raise StrategyError(
            f"workers would start at different epochs {starts} (replica order): every worker resumes from "
            f"{out_dir / 'checkpoints' if out_dir else 'the checkpoint directory'}, which must be on storage "
            "every worker can read (a shared file system or bucket) with the same --out path"
        )
    logger.info("all %d replicas start at epoch %d", len(starts), start_epoch)


def barrier(strategy: tf.distribute.Strategy, info: StrategyInfo, epoch: int, checkpoint_dir: object) -> None:
    """Multi-worker: waits until every worker reaches this point, so none exits while a peer still works."""
    try:
        _gather_ints(strategy, 0)
    except PEER_ERRORS as exc:
        raise worker_lost(exc, info, epoch, checkpoint_dir) from exc


RUN_FILE = "run.json"


def _run_signature(config: TrainConfig, size: int, class_names: list[str]) -> dict:
    """What a checkpoint must agree on to be resumed: the model's shape and the training recipe.

    The epoch count is left out on purpose: resuming with more epochs continues a finished run.
    """
    fields = ("model", "batch_size", "learning_rate", "seed", "augment", "target", "box_weight",
              "warmup_epochs", "weight_decay")
    recipe = {name: getattr(config, name) for name in fields}
    augmentation = config.augmentation
    recipe["augmentation"] = augmentation if isinstance(augmentation, str) else dataclasses.asdict(augmentation)
    return {**recipe, "image_size": int(size), "class_names": list(class_names)}


def _check_same_run(path: Path, signature: dict) -> None:
    """Refuse to resume another run's checkpoints (a different size or model would not even restore)."""
    if not path.is_file():
        return  # checkpoints written before run.json existed: trust them, as before
    saved = json.loads(path.read_text())
    changed = sorted(k for k in signature.keys() | saved.keys() if saved.get(k) != signature.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} then, {signature.get(k)!r} now" for k in changed)
        raise ValueError(f"{path.parent}: holds checkpoints of a different run ({detail}); "
                         "use another output folder, delete this one, or train with resume=False")


def train(train_ds: Any, val_ds: Any | None, config: TrainConfig,
          strategy: tf.distribute.Strategy | None = None, info: StrategyInfo | None = None) -> TrainResult:  # fmt: skip
    """Trains a fresh (or resumed) model on LoadedDataset-like data under `strategy` (default: the current one).

    With config.out_dir: checkpoints each epoch in out_dir/checkpoints (resumed when config.resume),
    history.csv, best.weights.h5 and model.keras; under multi-worker only the chief writes there.
    """
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    if info is None:
        info = StrategyInfo(kind="given", devices=[], replicas=int(strategy.num_replicas_in_sync),
                            reason="strategy passed in by the caller")  # fmt: skip
    replicas = int(strategy.num_replicas_in_sync)
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    images, labels, boxes = make_targets(train_ds, config.target)
    size = int(images.shape[1])
    global_batch = config.batch_size * replicas
    if len(images) < global_batch:
        global_batch = max(replicas, (len(images) // replicas) * replicas)
        logger.warning("only %d training rows: global batch lowered to %d", len(images), global_batch)
    steps = len(images) // global_batch
    if val_ds is not None:
        v_images, v_labels, v_boxes = make_targets(val_ds, config.target)

    # Output folders: the chief writes to out_dir, other workers to a scratch dir removed at the end
    # (every worker still saves: TF's multi-worker guide). All resume from out_dir, which must be shared.
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    scratch = None
    if out_dir is not None and not info.is_chief:
        # One fixed folder per (out_dir, task): a worker killed before its clean-up leaks nothing new on restart.
        tag = zlib.crc32(str(out_dir.resolve()).encode())
        scratch = Path(tempfile.gettempdir()) / f"sprint2-{tag:08x}-{info.task_type or 'worker'}{info.worker_index}"
        shutil.rmtree(scratch, ignore_errors=True)
    write_dir = scratch or out_dir

    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model(config.model, len(train_ds.class_names), size)
        loop = _Loop(model, config, strategy, size, global_batch, steps)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best_var = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
        best_epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
        ckpt = tf.train.Checkpoint(model=model, optimizer=loop.optimizer, epoch=epoch_var,
                                   best_val_loss=best_var, best_epoch=best_epoch_var)  # fmt: skip
    manager = None
    history: list[dict] = []
    best_weights = None
    if write_dir is not None:
        manager = tf.train.CheckpointManager(ckpt, str(write_dir / "checkpoints"), max_to_keep=2)
        latest = tf.train.latest_checkpoint(str(out_dir / "checkpoints")) if config.resume else None
        signature = _run_signature(config, size, train_ds.class_names)
        if latest:
            _check_same_run(out_dir / "checkpoints" / RUN_FILE, signature)
            ckpt.restore(latest).assert_existing_objects_matched()
            history = _read_history(out_dir / "history.csv", int(epoch_var.numpy()))
            best_file = out_dir / "checkpoints" / "best.weights.h5"
            if best_file.is_file():
                current = model.get_weights()
                model.load_weights(best_file)
                best_weights = model.get_weights()
                model.set_weights(current)
            logger.info("resumed from %s after epoch %d", latest, int(epoch_var.numpy()))
        if not latest:
            (write_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (write_dir / "checkpoints" / RUN_FILE).write_text(json.dumps(signature, indent=2))
    start_epoch = int(epoch_var.numpy()) + 1
    if multiworker:
        _check_same_start(strategy, info, start_epoch, out_dir)
    best_loss, best_epoch = float(best_var.numpy()), int(best_epoch_var.numpy())
    wait = (start_epoch - 1 - best_epoch) if best_epoch else 0
    logger.info("training %s: %d rows, global batch %d (%d x %d replicas), %d steps/epoch, epochs %d..%d",
                config.model, len(images), global_batch, config.batch_size, replicas, steps,
                start_epoch, config.epochs)  # fmt: skip

    # A fixed seeded sample (the same on every worker) for re-estimating batch-norm statistics.
    n_calib = max(32, CALIBRATION_PIXELS // (images.shape[1] * images.shape[2]))
    calib = images[np.sort(np.random.default_rng(config.seed).permutation(len(images))[:n_calib])]
    epoch_seconds: list[float] = []
    stopped = False
    for epoch in range(start_epoch, config.epochs + 1):
        data = make_dataset(images, labels, boxes, global_batch, seed=config.seed, epoch=epoch,
                            augment_data=config.augment, multiworker=multiworker,
                            params=augment_params(config.augmentation))  # fmt: skip
        dist = strategy.experimental_distribute_dataset(data)
        start = time.perf_counter()
        totals: dict[str, float] = {}
        try:
            for batch in dist:
                for k, v in loop.train_step(batch).items():
                    totals[k] = totals.get(k, 0.0) + float(v)
        except PEER_ERRORS as exc:  # a dead peer: a timed-out or aborted all-reduce
            if not multiworker:
                raise
            raise worker_lost(exc, info, epoch, out_dir / "checkpoints" if out_dir else "(no --out)") from exc
        seconds = time.perf_counter() - start
        epoch_seconds.append(seconds)
        calibrate_batch_norm(model, calib)
        row: dict[str, Any] = {"epoch": epoch, **_summarise(totals)}
        if val_ds is not None and len(v_images):
            vt: dict[str, float] = {}
            for s in range(0, len(v_images), 256):
                part = loop.eval_step(tf.constant(v_images[s : s + 256], tf.float32),
                                      tf.constant(v_labels[s : s + 256]), tf.constant(v_boxes[s : s + 256]))  # fmt: skip
                for k, v in part.items():
                    vt[k] = vt.get(k, 0.0) + float(v)
            row.update(_summarise(vt, "val_"))
        row["seconds"] = seconds
        row["images_per_s"] = totals.get("count", 0.0) / seconds if seconds > 0 else 0.0
        history.append(row)
        logger.info("epoch %d/%d: %s", epoch, config.epochs,
                    ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))  # fmt: skip

        monitor = row.get("val_loss", row["loss"])
        if monitor < best_loss:
            best_loss, best_epoch, wait = monitor, epoch, 0
            best_weights = model.get_weights()
            if write_dir is not None:
                (write_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
                model.save_weights(write_dir / "checkpoints" / "best.weights.h5")
        else:
            wait += 1
        epoch_var.assign(epoch)
        best_var.assign(best_loss)
        best_epoch_var.assign(best_epoch)
        if manager is not None:
            manager.save(checkpoint_number=epoch)
            _write_history(write_dir / "history.csv", history)
        if wait >= config.patience:
            logger.info("early stop after epoch %d: val loss has not improved for %d epochs (best %d)",
                        epoch, wait, best_epoch)  # fmt: skip
            stopped = True
            break

    if best_weights is not None and best_epoch != (history[-1]["epoch"] if history else 0):
        logger.info("restoring the weights of epoch %d (best validation loss %.4g)", best_epoch, best_loss)
        model.set_weights(best_weights)
    if write_dir is not None:
        model.save(write_dir / "model.keras")
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)

    steady = epoch_seconds[1:] or epoch_seconds
    steady_rows = history[len(history) - len(epoch_seconds) :][1:] or history[len(history) - len(epoch_seconds) :]
    seen = sum(r["images_per_s"] * r["seconds"] for r in steady_rows)
    return TrainResult(
        model=model,
        history=history,
        epoch_seconds=epoch_seconds,
        first_epoch_s=epoch_seconds[0] if epoch_seconds else 0.0,
        images_per_s=seen / sum(steady) if steady and sum(steady) > 0 else 0.0,
        replicas=replicas,
        strategy=info,
        start_epoch=start_epoch,
        best_epoch=best_epoch,
        stopped_early=stopped,
    )


def run_training(
    data_dir: str | Path,
    *,
    model: Literal["original", "improved"] = "improved",
    epochs: int = DEFAULT_EPOCHS,
    batch: int = DEFAULT_BATCH,
    strategy: str = "auto",
    replicas: int | None = None,
    size: int = DEFAULT_SIZE,
    out_dir: str | Path = "runs/train",
    seed: int = 0,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    val_fraction: float | None = None,
    augment_data: bool | None = None,
    patience: int | None = None,
    augmentation: str | AugmentParams | None = None,
    warmup_epochs: int | None = None,
    weight_decay: float = 0.0,
) -> dict:
    """Loads data_dir, trains, evaluates on the test split beside the mean-box baseline; writes
    model.keras, history.csv and metrics.json into out_dir and returns the metrics dict (the CLI's JSON).

    The validation set for early stopping is a seeded `val_fraction` of the training split; the
    test split is touched only for the final numbers. augment_data=None: on for the improved model only.
    None for val_fraction, patience, augmentation, warmup_epochs picks by training-set size: under
    SMALL_DATA images (photo sets like raccoon) the "strong" augmentation, a 3-epoch warm-up and fixed
    epochs (no validation split: a few dozen images make early stopping noise); otherwise "light",
    no warm-up, val_fraction 0.1 and patience 8 (the synthetic-data recipe).
    """
    from sprint2.loading import load_splits  # light module; imported here so model code loads without it

    # The strategy first: logical CPU devices must be configured before TensorFlow's runtime starts.
    strat, info = get_strategy(strategy, replicas)  # type: ignore[arg-type]
    train_all, test_ds = load_splits(Path(data_dir), size=size, seed=seed, errors="skip")
    small = len(train_all.boxes) < SMALL_DATA
    if val_fraction is None:
        val_fraction = 0.0 if small else 0.1
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_all.boxes))
    n_val = int(round(len(order) * val_fraction)) if len(order) >= 20 else 0
    val_ds = train_all.subset(np.sort(order[:n_val])) if n_val else None
    train_ds = train_all.subset(np.sort(order[n_val:])) if n_val else train_all
    config = TrainConfig(
        model=model, epochs=epochs, batch_size=batch, learning_rate=learning_rate, seed=seed,
        augment=(model == "improved") if augment_data is None else augment_data, out_dir=Path(out_dir),
        patience=(epochs if not n_val else 8) if patience is None else patience,
        augmentation=("strong" if small else "light") if augmentation is None else augmentation,
        warmup_epochs=(3 if small else 0) if warmup_epochs is None else warmup_epochs, weight_decay=weight_decay,
    )  # fmt: skip
    result = train(train_ds, val_ds, config, strat, info)
    probs, boxes = predict(result.model, test_ds.images)
    test = evaluate(probs, boxes, test_ds)
    base = baseline(train_ds, test_ds)
    keys = ("accuracy", "mean_iou", "hit_rate_iou50")
    metrics = {
        "strategy": info.kind,
        "replicas": result.replicas,
        "epochs": len(result.history),
        "start_epoch": result.start_epoch,  # > 1 when resumed from a checkpoint
        "train_images": len(train_ds.boxes),
        "test_images": len(test_ds.boxes),
        "images_per_s": result.images_per_s,
        "test": {k: test[k] for k in keys},
        "baseline": {k: base[k] for k in keys},
        "model": model,
        "size": size,
        "batch_per_replica": batch,
        "val_images": n_val,
        "augmentation": (config.augmentation if isinstance(config.augmentation, str)
                         else dataclasses.asdict(config.augmentation)) if config.augment else "none",
        "warmup_epochs": config.warmup_epochs,
        "first_epoch_s": result.first_epoch_s,
        "train_seconds": float(sum(result.epoch_seconds)),
        "best_epoch": result.best_epoch,
        "strategy_info": info.as_dict(),
        "test_detail": {k: test[k] for k in ("map50", "ap50", "confusion", "class_names")},
        "baseline_detail": {k: base[k] for k in ("map50", "ap50", "mean_box", "majority_class")},
    }
    if info.is_chief:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if info.kind == "multiworker":  # the chief leads TF's coordination service: it leaves last
        barrier(strat, info, result.history[-1]["epoch"] if result.history else 0, Path(out_dir) / "checkpoints")
    return metrics
