"""One custom training loop for every tf.distribute strategy, with resumable checkpoints and named recipes.

Why not `Model.fit`: in Keras 3 it has open bugs under tf.distribute (keras-team/keras#21069,
MirroredStrategy on two devices; #20585, multi-worker, where fit fails outright). A `tf.function`
step run with `strategy.run` over `strategy.experimental_distribute_dataset` works for the default
strategy, MirroredStrategy (GPUs or logical CPUs) and MultiWorkerMirroredStrategy alike.
Why not the `BackupAndRestore` callback: callbacks need fit, so resuming is done here with
`tf.train.Checkpoint` + `tf.train.CheckpointManager` (model, optimizer, epoch counter, early-stop state).
Targets and the tf.data pipeline live in `sprint2.pipeline`, augmentation in `sprint2.augment`, the
multi-worker coordination in `sprint2.distribute`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np
import tensorflow as tf

from sprint2.augment import AugmentParams, augment_params
from sprint2.distribute import (
    PEER_ERRORS,
    StrategyInfo,
    barrier,
    check_same_start,
    get_strategy,
    scratch_dir,
    worker_lost,
)
from sprint2.evaluate import baseline, evaluate, predict
from sprint2.model import HuberGIoULoss, build_model, tensor_iou
from sprint2.pipeline import make_dataset, make_targets

if TYPE_CHECKING:
    from sprint2.loading import LoadOptions

logger = logging.getLogger(__name__)

HISTORY_FIELDS = [
    "epoch",
    "loss",
    "class_loss",
    "box_loss",
    "accuracy",
    "mean_iou",
    "val_loss",
    "val_class_loss",
    "val_box_loss",
    "val_accuracy",
    "val_mean_iou",
    "seconds",
    "images_per_s",
]

# Defaults measured on 2 CPU cores: the 600/150 synthetic set needs ~1300 optimizer steps
# (20 epochs at batch 32 stopped at mean IoU 0.45, 30 at batch 16 at 0.73).
DEFAULT_EPOCHS = 40
DEFAULT_BATCH = 16
DEFAULT_LEARNING_RATE = 2e-3
DEFAULT_SIZE = 64
SMALL_DATA = 400  # fewer training images than this: the "small-photos" recipe (see choose_recipe)
CALIBRATION_PIXELS = 256 * 64 * 64  # 256 images of 64x64; fewer when they are larger
RUN_FILE = "run.json"
VAL_MIN_IMAGES = 20  # below this many training images no validation split is held out


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


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """The data-dependent part of a schedule: augmentation preset, warm-up, validation split, patience.

    patience applies only with a validation split; without one the run trains every epoch.
    """

    augmentation: str
    warmup_epochs: int
    val_fraction: float
    patience: int


RECIPES: dict[str, Recipe] = {
    # Hundreds of generated shapes: light jitter, a 10% validation split that picks the best epoch.
    "synthetic": Recipe(augmentation="light", warmup_epochs=0, val_fraction=0.1, patience=8),
    # A few hundred photos (raccoon): strong augmentation, a warm-up for Adam's noisy first steps, and
    # no validation split (a few dozen images would make early stopping noise): fixed epochs.
    "small-photos": Recipe(augmentation="strong", warmup_epochs=3, val_fraction=0.0, patience=8),
}


def choose_recipe(train_images: int) -> str:
    """The recipe "auto" picks: "small-photos" under SMALL_DATA training images, "synthetic" otherwise."""
    return "small-photos" if train_images < SMALL_DATA else "synthetic"


# --------------------------------------------------------------------------------------------
# The compiled step functions
# --------------------------------------------------------------------------------------------


class _Loop:
    """Holds the model, optimizer and compiled step functions for one strategy."""

    def __init__(
        self,
        model: keras.Model,
        config: TrainConfig,
        strategy: tf.distribute.Strategy,
        size: int,
        global_batch: int,
        steps_per_epoch: int,
    ) -> None:
        self.model, self.config, self.strategy = model, config, strategy
        self.size, self.global_batch = float(size), global_batch
        # Linear warm-up (Adam's early steps are noisy on small data), then cosine decay to 5%.
        total = config.epochs * steps_per_epoch
        warmup = min(config.warmup_epochs * steps_per_epoch, max(0, total - 1))
        schedule = keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 10 if warmup else config.learning_rate,
            decay_steps=max(1, total - warmup),
            alpha=0.05,
            warmup_target=config.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
        if config.weight_decay > 0:
            self.optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        else:
            self.optimizer = keras.optimizers.Adam(schedule)
        # Build the optimizer's slots now, under the scope: variables must not be created inside strategy.run.
        self.optimizer.build(model.trainable_variables)
        self.box_loss_fn = HuberGIoULoss()

    def per_example(self, labels: tf.Tensor, boxes: tf.Tensor, out: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-example class and box losses: improved on [0, 1] coordinates, original as MSE in pixels²."""
        cls = keras.losses.sparse_categorical_crossentropy(labels, out["class"])
        if self.config.model == "improved":
            box = self.box_loss_fn(boxes / self.size, out["box"] / self.size)
        else:
            box = tf.reduce_mean(tf.square(boxes - out["box"]), axis=-1)
        return cls, box

    def stats(self, labels: tf.Tensor, boxes: tf.Tensor, out: dict, cls: tf.Tensor, box: tf.Tensor) -> dict:
        """Sums (not means) so they add up correctly across replicas and batches."""
        pred = tf.cast(tf.argmax(out["class"], axis=-1), labels.dtype)
        return {
            "loss": tf.reduce_sum(cls + self.config.box_weight * box),
            "class_loss": tf.reduce_sum(cls),
            "box_loss": tf.reduce_sum(box),
            "correct": tf.reduce_sum(tf.cast(pred == labels, tf.float32)),
            "iou": tf.reduce_sum(tensor_iou(boxes, out["box"])),
            "count": tf.cast(tf.shape(labels)[0], tf.float32),
        }

    def replica_step(self, images: tf.Tensor, labels: tf.Tensor, boxes: tf.Tensor) -> dict:
        """Forward, loss scaled by the GLOBAL batch, gradients applied by the optimizer in replica context."""
        with tf.GradientTape() as tape:
            out = self.model(images, training=True)
            cls, box = self.per_example(labels, boxes, out)
            loss = tf.nn.compute_average_loss(
                cls + self.config.box_weight * box, global_batch_size=self.global_batch
            )
        grads = tape.gradient(loss, self.model.trainable_variables)
        # Keras 3's TF optimizer all-reduces (sums) the gradients itself when called in a replica context.
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return self.stats(labels, boxes, out, cls, box)

    @tf.function
    def train_step(self, batch: tuple) -> dict:
        per_replica = self.strategy.run(self.replica_step, args=batch)
        return {
            k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()
        }

    @tf.function
    def eval_step(self, images: tf.Tensor, labels: tf.Tensor, boxes: tf.Tensor) -> dict:
        out = self.model(images, training=False)
        cls, box = self.per_example(labels, boxes, out)
        return self.stats(labels, boxes, out, cls, box)


def calibrate_batch_norm(model: keras.Model, images: np.ndarray) -> None:
    """Sets every BatchNormalization's moving mean/variance to the exact statistics of `images`.

    Why: moving averages start at mean 0 / variance 1 while real feature variances here are ~0.01,
    and small datasets give too few steps for the average to forget its start (inference accuracy
    0.1-0.2 against 0.96 in training mode). One training-mode pass with momentum 0 fixes that.
    Called in cross-replica context, the assignment reaches every replica's copy.
    """
    layers = [x for x in model._flatten_layers() if isinstance(x, keras.layers.BatchNormalization)]
    if not layers or len(images) == 0:
        return
    saved = [layer.momentum for layer in layers]
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


def _add(totals: dict[str, float], part: dict) -> None:
    for k, v in part.items():
        totals[k] = totals.get(k, 0.0) + float(v)


# --------------------------------------------------------------------------------------------
# History and run identity
# --------------------------------------------------------------------------------------------


def read_history(path: Path | str, up_to: int | None = None) -> list[dict]:
    """The rows of a history.csv (epochs <= up_to when given): numbers as floats, epoch as int.

    Empty cells (val_* of a run without a validation split) are left out of the row, as in a live history.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return [r for r in rows if up_to is None or r["epoch"] <= up_to]


def write_history(path: Path | str, history: list[dict]) -> None:
    """Rewrites history.csv from the full history (one row per epoch, HISTORY_FIELDS as columns)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})


def _run_signature(config: TrainConfig, size: int, class_names: list[str]) -> dict:
    """What a checkpoint must agree on to be resumed: the model's shape and the training recipe.

    The epoch count is left out on purpose: resuming with more epochs continues a finished run.
    """
    fields = (
        "model",
        "batch_size",
        "learning_rate",
        "seed",
        "augment",
        "target",
        "box_weight",
        "warmup_epochs",
        "weight_decay",
    )
    recipe = {name: getattr(config, name) for name in fields}
    augmentation = config.augmentation
    recipe["augmentation"] = (
        augmentation if isinstance(augmentation, str) else dataclasses.asdict(augmentation)
    )
    return {**recipe, "image_size": int(size), "class_names": list(class_names)}


def _check_same_run(path: Path, signature: dict) -> None:
    """Refuse to resume another run's checkpoints (a different size or model would not even restore)."""
    if not path.is_file():
        return  # checkpoints without run.json (written before it existed) are trusted
    saved = json.loads(path.read_text())
    changed = sorted(k for k in signature.keys() | saved.keys() if saved.get(k) != signature.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} then, {signature.get(k)!r} now" for k in changed)
        raise ValueError(
            f"{path.parent}: holds checkpoints of a different run ({detail}); "
            "use another output folder, delete this one, or train with resume=False"
        )


# --------------------------------------------------------------------------------------------
# train: an epoch loop of named steps
# --------------------------------------------------------------------------------------------


@dataclass
class _Data:
    """The training and validation arrays with the batch arithmetic worked out for one strategy."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    val: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    global_batch: int
    steps: int
    calib: np.ndarray  # a fixed seeded sample (the same on every worker) for batch-norm statistics

    @classmethod
    def prepare(cls, train_ds: Any, val_ds: Any | None, config: TrainConfig, replicas: int) -> _Data:
        images, labels, boxes = make_targets(train_ds, config.target)
        global_batch = config.batch_size * replicas
        if len(images) < global_batch:
            global_batch = max(replicas, (len(images) // replicas) * replicas)
            logger.warning("only %d training rows: global batch lowered to %d", len(images), global_batch)
        val = make_targets(val_ds, config.target) if val_ds is not None else None
        n_calib = max(32, CALIBRATION_PIXELS // (images.shape[1] * images.shape[2]))
        calib = images[np.sort(np.random.default_rng(config.seed).permutation(len(images))[:n_calib])]
        return cls(images, labels, boxes, val, global_batch, len(images) // global_batch, calib)

    @property
    def size(self) -> int:
        """The (square) image side in pixels."""
        return int(self.images.shape[1])


class _Run:
    """One run's state: model, optimizer, checkpoint variables, folders, history, early-stop counters.

    Output folders: the chief writes to out_dir, other workers to a scratch folder removed at the end
    (every worker still saves: TF's multi-worker guide). All resume from out_dir, which must be shared.
    """

    def __init__(
        self,
        config: TrainConfig,
        strategy: tf.distribute.Strategy,
        info: StrategyInfo,
        data: _Data,
        class_names: list[str],
    ) -> None:
        self.config, self.strategy, self.info, self.data = config, strategy, info, data
        self.class_names = list(class_names)
        self.multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.scratch = scratch_dir(self.out_dir, info) if self.out_dir is not None else None
        self.write_dir = self.scratch or self.out_dir
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            self.model = build_model(config.model, len(class_names), data.size)
            self.loop = _Loop(self.model, config, strategy, data.size, data.global_batch, data.steps)
            self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.best_var = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
            self.best_epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
            self.ckpt = tf.train.Checkpoint(
                model=self.model,
                optimizer=self.loop.optimizer,
                epoch=self.epoch_var,
                best_val_loss=self.best_var,
                best_epoch=self.best_epoch_var,
            )
        self.manager: tf.train.CheckpointManager | None = None
        self.history: list[dict] = []
        self.best_weights: list[np.ndarray] | None = None
        self.epoch_seconds: list[float] = []
        self.best_loss, self.best_epoch, self.wait = float("inf"), 0, 0
        self.stopped = False

    @property
    def checkpoint_dir(self) -> object:
        """Where a restart resumes from (for messages)."""
        return self.out_dir / "checkpoints" if self.out_dir is not None else "(no --out)"

    def restore(self) -> int:
        """Resumes from out_dir's latest checkpoint (when resume is on); returns the epoch to start at."""
        if self.write_dir is not None:
            self._restore_files()
        start_epoch = int(self.epoch_var.numpy()) + 1
        if self.multiworker:
            check_same_start(self.strategy, self.info, start_epoch, self.out_dir)
        self.best_loss, self.best_epoch = float(self.best_var.numpy()), int(self.best_epoch_var.numpy())
        self.wait = (start_epoch - 1 - self.best_epoch) if self.best_epoch else 0
        c, d = self.config, self.data
        logger.info(
            "training %s: %d rows, global batch %d (%d x %d replicas), %d steps/epoch, epochs %d..%d",
            c.model,
            len(d.images),
            d.global_batch,
            c.batch_size,
            self.strategy.num_replicas_in_sync,
            d.steps,
            start_epoch,
            c.epochs,
        )
        return start_epoch

    def _restore_files(self) -> None:
        """The checkpoint manager, and the saved run's state and history when there is one to resume."""
        assert self.out_dir is not None and self.write_dir is not None
        checkpoints = self.out_dir / "checkpoints"
        self.manager = tf.train.CheckpointManager(
            self.ckpt, str(self.write_dir / "checkpoints"), max_to_keep=2
        )
        latest = tf.train.latest_checkpoint(str(checkpoints)) if self.config.resume else None
        signature = _run_signature(self.config, self.data.size, self.class_names)
        if not latest:
            (self.write_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.write_dir / "checkpoints" / RUN_FILE).write_text(json.dumps(signature, indent=2))
            return
        _check_same_run(checkpoints / RUN_FILE, signature)
        self.ckpt.restore(latest).assert_existing_objects_matched()
        self.history = read_history(self.out_dir / "history.csv", int(self.epoch_var.numpy()))
        best_file = checkpoints / "best.weights.h5"
        if best_file.is_file():
            current = self.model.get_weights()
            self.model.load_weights(best_file)
            self.best_weights = self.model.get_weights()
            self.model.set_weights(current)
        logger.info("resumed from %s after epoch %d", latest, int(self.epoch_var.numpy()))

    def one_epoch(self, epoch: int) -> dict:
        """Trains one pass over the data; returns the epoch's training means, its seconds and images/s."""
        d = self.data
        data = make_dataset(
            d.images,
            d.labels,
            d.boxes,
            d.global_batch,
            seed=self.config.seed,
            epoch=epoch,
            augment_data=self.config.augment,
            multiworker=self.multiworker,
            params=augment_params(self.config.augmentation),
        )
        dist = self.strategy.experimental_distribute_dataset(data)
        start = time.perf_counter()
        totals: dict[str, float] = {}
        try:
            for batch in dist:
                _add(totals, self.loop.train_step(batch))
        except PEER_ERRORS as exc:  # a dead peer: a timed-out or aborted all-reduce
            if not self.multiworker:
                raise
            raise worker_lost(exc, self.info, epoch, self.checkpoint_dir) from exc
        seconds = time.perf_counter() - start
        self.epoch_seconds.append(seconds)
        calibrate_batch_norm(self.model, d.calib)
        rate = totals.get("count", 0.0) / seconds if seconds > 0 else 0.0
        return {**_summarise(totals), "seconds": seconds, "images_per_s": rate}

    def validate(self) -> dict:
        """val_* means over the validation rows (empty without them), in chunks of 256 images."""
        if self.data.val is None or not len(self.data.val[0]):
            return {}
        images, labels, boxes = self.data.val
        totals: dict[str, float] = {}
        for s in range(0, len(images), 256):
            part = self.loop.eval_step(
                tf.constant(images[s : s + 256], tf.float32),
                tf.constant(labels[s : s + 256]),
                tf.constant(boxes[s : s + 256]),
            )
            _add(totals, part)
        return _summarise(totals, "val_")

    def record(self, epoch: int, values: dict) -> dict:
        """The epoch's history row (columns in HISTORY_FIELDS order), appended and logged.

        The log line is the one `sprint2.launch.LocalWorkers.epoch_lines` picks out of a worker's stderr.
        """
        row = {"epoch": epoch, **{k: values[k] for k in HISTORY_FIELDS if k in values}}
        self.history.append(row)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        logger.info("epoch %d/%d: %s", epoch, self.config.epochs, summary)
        return row

    def keep_best(self, row: dict) -> None:
        """Keeps the weights of the lowest validation loss (training loss without validation) so far."""
        monitor = row.get("val_loss", row["loss"])
        if monitor < self.best_loss:
            self.best_loss, self.best_epoch, self.wait = monitor, row["epoch"], 0
            self.best_weights = self.model.get_weights()
            if self.write_dir is not None:
                (self.write_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
                self.model.save_weights(self.write_dir / "checkpoints" / "best.weights.h5")
        else:
            self.wait += 1

    def checkpoint(self, epoch: int) -> None:
        """Saves model, optimizer, epoch and early-stop state, and rewrites history.csv."""
        self.epoch_var.assign(epoch)
        self.best_var.assign(self.best_loss)
        self.best_epoch_var.assign(self.best_epoch)
        if self.manager is not None and self.write_dir is not None:
            self.manager.save(checkpoint_number=epoch)
            write_history(self.write_dir / "history.csv", self.history)

    def early_stop(self, epoch: int) -> bool:
        """True once the monitored loss has not improved for `patience` epochs."""
        if self.wait < self.config.patience:
            return False
        logger.info(
            "early stop after epoch %d: val loss has not improved for %d epochs (best %d)",
            epoch,
            self.wait,
            self.best_epoch,
        )
        self.stopped = True
        return True

    def finish(self, start_epoch: int) -> TrainResult:
        """Restores the best weights, saves model.keras, removes the scratch folder, sums up the timings."""
        last = self.history[-1]["epoch"] if self.history else 0
        if self.best_weights is not None and self.best_epoch != last:
            logger.info(
                "restoring the weights of epoch %d (best validation loss %.4g)",
                self.best_epoch,
                self.best_loss,
            )
            self.model.set_weights(self.best_weights)
        if self.write_dir is not None:
            self.model.save(self.write_dir / "model.keras")
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        trained = self.history[len(self.history) - len(self.epoch_seconds) :]
        steady, steady_rows = self.epoch_seconds[1:] or self.epoch_seconds, trained[1:] or trained
        seen = sum(r["images_per_s"] * r["seconds"] for r in steady_rows)
        return TrainResult(
            model=self.model,
            history=self.history,
            epoch_seconds=self.epoch_seconds,
            first_epoch_s=self.epoch_seconds[0] if self.epoch_seconds else 0.0,
            images_per_s=seen / sum(steady) if steady and sum(steady) > 0 else 0.0,
            replicas=int(self.strategy.num_replicas_in_sync),
            strategy=self.info,
            start_epoch=start_epoch,
            best_epoch=self.best_epoch,
            stopped_early=self.stopped,
        )


def train(
    train_ds: Any,
    val_ds: Any | None,
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    info: StrategyInfo | None = None,
) -> TrainResult:
    """Trains a fresh (or resumed) model on LoadedDataset-like data under `strategy` (default: the current).

    With config.out_dir: checkpoints each epoch in out_dir/checkpoints (resumed when config.resume),
    history.csv, best.weights.h5 and model.keras; under multi-worker only the chief writes there.
    """
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    replicas = int(strategy.num_replicas_in_sync)
    if info is None:
        info = StrategyInfo(kind="given", replicas=replicas, reason="strategy passed in by the caller")
    data = _Data.prepare(train_ds, val_ds, config, replicas)
    run = _Run(config, strategy, info, data, train_ds.class_names)
    start_epoch = run.restore()
    for epoch in range(start_epoch, config.epochs + 1):
        trained = run.one_epoch(epoch)
        row = run.record(epoch, {**trained, **run.validate()})
        run.keep_best(row)
        run.checkpoint(epoch)
        if run.early_stop(epoch):
            break
    return run.finish(start_epoch)


# --------------------------------------------------------------------------------------------
# run_training: load, split, train, evaluate, write metrics.json
# --------------------------------------------------------------------------------------------

# TrainConfig fields run_training takes as keyword overrides, beside the recipe's val_fraction.
OVERRIDES = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"model", "seed", "out_dir"} | {
    "val_fraction"
}


def split_validation(ds: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    """(train, validation or None): a seeded `fraction` of ds held out, none under VAL_MIN_IMAGES images."""
    order = np.random.default_rng(seed).permutation(len(ds.boxes))
    n_val = int(round(len(order) * fraction)) if len(order) >= VAL_MIN_IMAGES else 0
    if not n_val:
        return ds, None
    return ds.subset(np.sort(order[n_val:])), ds.subset(np.sort(order[:n_val]))


def _load_splits(data_dir: Path, seed: int, load: LoadOptions | None) -> tuple[Any, Any, Any]:
    """(train, test, image size) read with `load` (default: DEFAULT_SIZE pixels, bad files skipped)."""
    from sprint2.loading import (
        LoadOptions,
        load_splits,
    )  # light; imported here so model code loads without it

    options = load if load is not None else LoadOptions(size=DEFAULT_SIZE, errors="skip")
    return *load_splits(data_dir, seed=seed, options=options), options.size


def _config(
    model: str, seed: int, out_dir: Path, recipe: Recipe, has_val: bool, overrides: dict
) -> TrainConfig:
    """The TrainConfig of a run: the recipe's choices, then the caller's overrides.

    Augmentation is on for the improved model only; patience is the recipe's with a validation
    split, else every epoch is trained.
    """
    epochs = overrides.get("epochs", DEFAULT_EPOCHS)
    chosen: dict[str, Any] = {
        "augment": model == "improved",
        "augmentation": recipe.augmentation,
        "warmup_epochs": recipe.warmup_epochs,
        "patience": recipe.patience if has_val else epochs,
    }
    chosen.update({k: v for k, v in overrides.items() if k != "val_fraction"})
    return TrainConfig(model=model, seed=seed, out_dir=out_dir, **chosen)  # type: ignore[arg-type]


def run_training(
    data_dir: str | Path,
    *,
    model: Literal["original", "improved"] = "improved",
    recipe: str = "auto",
    out_dir: str | Path = "runs/train",
    strategy: str = "auto",
    replicas: int | None = None,
    seed: int = 0,
    load: LoadOptions | None = None,
    **overrides: Any,
) -> dict:
    """Loads data_dir, trains, evaluates on the test split beside the mean-box baseline; writes model.keras,
    history.csv and metrics.json into out_dir and returns the metrics dict (the CLI's JSON).

    recipe: a name in RECIPES, or "auto" (choose_recipe of the training-split size). overrides: TrainConfig
    fields (epochs, batch_size, learning_rate, patience, augmentation, warmup_epochs, weight_decay, ...)
    and val_fraction; None means "not given". load: how to read the data (default: DEFAULT_SIZE pixels,
    bad files skipped). The validation set for early stopping is a seeded val_fraction of the training
    split; the test split is touched only for the final numbers.
    """
    if recipe != "auto" and recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose auto or one of {sorted(RECIPES)}")
    unknown = sorted(set(overrides) - OVERRIDES)
    if unknown:
        raise TypeError(f"run_training got unknown options {unknown}; it takes {sorted(OVERRIDES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not 0.0 <= overrides.get("val_fraction", 0.0) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {overrides['val_fraction']}")

    # The strategy first: logical CPU devices must be configured before TensorFlow's runtime starts.
    strat, info = get_strategy(strategy, replicas)  # type: ignore[arg-type]
    train_all, test_ds, size = _load_splits(Path(data_dir), seed, load)
    name = choose_recipe(len(train_all.boxes)) if recipe == "auto" else recipe
    chosen = RECIPES[name]
    train_ds, val_ds = split_validation(train_all, overrides.get("val_fraction", chosen.val_fraction), seed)
    config = _config(model, seed, Path(out_dir), chosen, val_ds is not None, overrides)
    logger.info("recipe %s%s: %s", name, " (auto)" if recipe == "auto" else "", config)
    result = train(train_ds, val_ds, config, strat, info)

    metrics = _metrics(result, config, info, name, size, train_ds, val_ds, test_ds)
    if info.is_chief:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if info.kind == "multiworker":  # the chief leads TF's coordination service: it leaves last
        barrier(
            strat, info, result.history[-1]["epoch"] if result.history else 0, Path(out_dir) / "checkpoints"
        )
    return metrics


def _metrics(
    result: TrainResult,
    config: TrainConfig,
    info: StrategyInfo,
    recipe: str,
    size: Any,
    train_ds: Any,
    val_ds: Any | None,
    test_ds: Any,
) -> dict:
    """metrics.json: the trained model and the mean-box baseline on the test split, and how training went."""
    probs, boxes = predict(result.model, test_ds.images)
    test = evaluate(probs, boxes, test_ds)
    base = baseline(train_ds, test_ds)
    keys = ("accuracy", "mean_iou", "hit_rate_iou50")
    augmentation = config.augmentation
    return {
        "strategy": info.kind,
        "replicas": result.replicas,
        "epochs": len(result.history),
        "start_epoch": result.start_epoch,  # > 1 when resumed from a checkpoint
        "train_images": len(train_ds.boxes),
        "test_images": len(test_ds.boxes),
        "images_per_s": result.images_per_s,
        "test": {k: test[k] for k in keys},
        "baseline": {k: base[k] for k in keys},
        "model": config.model,
        "size": size,
        "batch_per_replica": config.batch_size,
        "val_images": len(val_ds.boxes) if val_ds is not None else 0,
        "recipe": recipe,
        "augmentation": (augmentation if isinstance(augmentation, str) else dataclasses.asdict(augmentation))
        if config.augment
        else "none",
        "warmup_epochs": config.warmup_epochs,
        "first_epoch_s": result.first_epoch_s,
        "train_seconds": float(sum(result.epoch_seconds)),
        "best_epoch": result.best_epoch,
        "strategy_info": info.as_dict(),
        "test_detail": {k: test[k] for k in ("map50", "ap50", "confusion", "class_names")},
        "baseline_detail": {k: base[k] for k in ("map50", "ap50", "mean_box", "majority_class")},
    }
