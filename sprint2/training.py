"""One custom training loop for every tf.distribute strategy and every kind of model, resumable.

Why not `Model.fit`: in Keras 3 it has open bugs under tf.distribute (keras-team/keras#21069,
MirroredStrategy on two devices; #20585, multi-worker, where fit fails outright). A `tf.function`
step run with `strategy.run` over `strategy.experimental_distribute_dataset` works for the default
strategy, MirroredStrategy (GPUs or logical CPUs) and MultiWorkerMirroredStrategy alike.
Why not the `BackupAndRestore` callback: callbacks need fit, so resuming is done here with
`tf.train.Checkpoint` + `tf.train.CheckpointManager` (model, optimizer, epoch counter, early-stop state).
What differs per model (targets, losses, statistics, the validation score) is a `sprint2.tasks.Task`;
what to train is a `sprint2.recipes.TrainConfig`, the multi-worker coordination is `sprint2.distribute`.
`sprint2.experiment` is the layer above: a data folder in, metrics.json out.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from sprint2.dataset import LoadedDataset
from sprint2.distribute import (
    PEER_ERRORS,
    StrategyInfo,
    check_same_start,
    gather_ints,
    scratch_dir,
    worker_lost,
)
from sprint2.malloc import keep_freed_memory
from sprint2.recipes import TrainConfig
from sprint2.schedule import epochs_within_budget
from sprint2.scoring import choose_threshold
from sprint2.tasks import Task, TaskData, make_task

__all__ = [
    "DETECTOR_HISTORY_FIELDS",
    "HISTORY_FIELDS",
    "PLAN_AFTER",
    "TrainResult",
    "TrainingRun",
    "calibrate_batch_norm",
    "read_history",
    "train",
    "write_history",
]

logger = logging.getLogger(__name__)

#: history.csv columns of the single-box models; the detector's are in DETECTOR_HISTORY_FIELDS.
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
DETECTOR_HISTORY_FIELDS = [
    "epoch",
    "loss",
    "heatmap_loss",
    "size_loss",
    "offset_loss",
    "objects",
    "val_loss",
    "val_heatmap_loss",
    "val_size_loss",
    "val_offset_loss",
    "val_map50",
    "learning_rate",
    "seconds",
    "images_per_s",
]

RUN_FILE = "run.json"
# Epochs timed before the time budget fixes the epoch count; the mean of all but the first (which
# includes tracing) is the epoch time, since on shared or throttled machines single epochs vary by 1.5x.
PLAN_AFTER = 5


@dataclass
class TrainResult:
    """The trained model (best weights, float32) and how training went."""

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
    planned_epochs: int = 0
    score_threshold: float = 0.3
    threshold_from: str = ""
    precision: str = "float32"
    ended_by: str = "schedule"  # "schedule", "time budget" or "early stop"


# --------------------------------------------------------------------------------------------
# The compiled step functions
# --------------------------------------------------------------------------------------------


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from a tenth of the peak, then cosine decay to alpha x peak at total_steps.

    total_steps is a variable so the time budget can shorten the schedule after the first epochs.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: tf.Variable, alpha: float = 0.05) -> None:
        self.peak, self.warmup, self.total_steps, self.alpha = (
            float(peak),
            int(warmup_steps),
            total_steps,
            alpha,
        )

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        warmup = float(self.warmup)
        start = self.peak / 10 if self.warmup else self.peak
        warm = start + (self.peak - start) * step / max(warmup, 1.0)
        decay_steps = tf.maximum(tf.cast(self.total_steps, tf.float32) - warmup, 1.0)
        progress = tf.minimum(tf.maximum(step - warmup, 0.0), decay_steps) / decay_steps
        decayed = self.peak * ((1.0 - self.alpha) * 0.5 * (1.0 + tf.cos(math.pi * progress)) + self.alpha)
        return tf.where(step < warmup, warm, decayed)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup, "alpha": self.alpha}


class _Loop:
    """Holds the model, optimizer and the compiled step functions for one strategy and one task."""

    def __init__(
        self,
        model: keras.Model,
        task: Task,
        config: TrainConfig,
        strategy: tf.distribute.Strategy,
        data: TaskData,
        total_steps: tf.Variable,
    ) -> None:
        self.model, self.task, self.strategy = model, task, strategy
        self.global_batch = data.global_batch
        steps = data.steps
        warmup = min(config.warmup_epochs * steps, max(0, config.epochs * steps - 1))
        self.schedule = WarmupCosine(config.learning_rate, warmup, total_steps)
        ema = {"use_ema": config.ema_momentum > 0, "ema_momentum": config.ema_momentum or 0.99}
        if config.weight_decay > 0:
            optimizer = keras.optimizers.AdamW(self.schedule, weight_decay=config.weight_decay, **ema)
        else:
            optimizer = keras.optimizers.Adam(self.schedule, **ema)
        if task.policy == "mixed_float16":  # float16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        # Build the optimizer's slots now, under the scope: variables must not be created inside strategy.run.
        self.optimizer.build(model.trainable_variables)

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Inside: the model holds the optimizer's moving averages of its trainable weights (when the
        optimizer keeps them); the training weights come back on exit. Cross-replica context."""
        averages = getattr(self.optimizer, "_model_variables_moving_average", None)
        if not getattr(self.optimizer, "use_ema", False) or not averages:
            yield
            return
        variables = self.model.trainable_variables
        saved = [v.numpy() for v in variables]
        for var, average in zip(variables, averages):
            var.assign(average.value)
        try:
            yield
        finally:
            for var, value in zip(variables, saved):
                var.assign(value)

    def replica_step(self, batch: Any) -> dict:
        """Forward, loss averaged over the GLOBAL batch, gradients applied by the optimizer per replica."""
        with tf.GradientTape() as tape:
            out = self.model(batch[0], training=True)
            losses = self.task.losses(batch, out)
            loss = tf.nn.compute_average_loss(losses["loss"], global_batch_size=self.global_batch)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        # Keras 3's TF optimizer all-reduces (sums) the gradients itself when called in a replica context.
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return self.task.stats(batch, out, losses)

    @tf.function
    def train_step(self, batch: Any) -> dict:
        per_replica = self.strategy.run(self.replica_step, args=(batch,))
        return {
            k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()
        }

    @tf.function(reduce_retracing=True)
    def eval_step(self, batch: Any) -> tuple[Any, dict]:
        out = self.model(batch[0], training=False)
        return out, self.task.stats(batch, out, self.task.losses(batch, out))


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


def write_history(path: Path | str, history: list[dict], fields: Sequence[str] = HISTORY_FIELDS) -> None:
    """Rewrites history.csv from the full history (one row per epoch, `fields` as columns)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in fields})


def _run_signature(config: TrainConfig, input_hw: tuple[int, int], class_names: list[str]) -> dict:
    """What a checkpoint must agree on to be resumed: the model's shape and the training recipe.

    The epoch count and the time budget are left out on purpose: resuming with more epochs continues
    a finished run.
    """
    fields = [
        "model",
        "batch_size",
        "learning_rate",
        "seed",
        "augment",
        "target",
        "box_weight",
        "warmup_epochs",
        "weight_decay",
    ]
    if config.model == "detector":
        fields += ["precision", "width", "max_boxes", "ema_momentum", "box_regression"]
    recipe = {name: getattr(config, name) for name in fields}
    augmentation = config.augmentation
    recipe["augmentation"] = (
        augmentation if isinstance(augmentation, str) else dataclasses.asdict(augmentation)
    )
    size: Any = list(input_hw) if config.model == "detector" else int(input_hw[0])
    return {**recipe, "image_size": size, "class_names": list(class_names)}


def _check_same_run(path: Path, signature: dict) -> None:
    """Refuse to resume another run's checkpoints (a different size or model would not even restore)."""
    if not path.is_file():
        return  # checkpoints without run.json (written before it existed) are trusted
    saved = json.loads(path.read_text())
    signature = json.loads(json.dumps(signature))  # compare as run.json holds it: tuples come back as lists
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


class TrainingRun:
    """One run's state: task, model, optimizer, checkpoint variables, folders, history, early-stop counters.

    Output folders: the chief writes to out_dir, other workers to a scratch folder removed at the end
    (every worker still saves: TF's multi-worker guide). All resume from out_dir, which must be shared.
    """

    def __init__(
        self,
        config: TrainConfig,
        strategy: tf.distribute.Strategy,
        info: StrategyInfo,
        task: Task,
        data: TaskData,
    ) -> None:
        self.config, self.strategy, self.info, self.task, self.data = config, strategy, info, task, data
        self.class_names = task.class_names
        self.multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.scratch = scratch_dir(self.out_dir, info) if self.out_dir is not None else None
        self.write_dir = self.scratch or self.out_dir
        self.fields = DETECTOR_HISTORY_FIELDS if task.kind == "detector" else HISTORY_FIELDS
        self.epochs = config.epochs
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            self.model = task.build(data)
            self.total_steps = tf.Variable(
                config.epochs * data.steps, dtype=tf.int64, trainable=False, name="total_steps"
            )
            self.loop = _Loop(self.model, task, config, strategy, data, self.total_steps)
            self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.best_var = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_monitor")
            self.best_epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
            self.planned_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="planned_epochs")
            self.ckpt = tf.train.Checkpoint(
                model=self.model,
                optimizer=self.loop.optimizer,
                epoch=self.epoch_var,
                best_monitor=self.best_var,
                best_epoch=self.best_epoch_var,
                planned_epochs=self.planned_var,
                total_steps=self.total_steps,
            )
        self.manager: tf.train.CheckpointManager | None = None
        self.history: list[dict] = []
        self.best_weights: list[np.ndarray] | None = None
        self.epoch_seconds: list[float] = []
        self.wall_seconds: list[float] = []  # training, calibration and validation of each epoch
        self.best_score, self.best_epoch, self.wait = float("inf"), 0, 0
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
        self.best_score, self.best_epoch = float(self.best_var.numpy()), int(self.best_epoch_var.numpy())
        self.wait = (start_epoch - 1 - self.best_epoch) if self.best_epoch else 0
        planned = int(self.planned_var.numpy())
        if planned and self.config.time_budget_s is not None:
            self.epochs = min(self.config.epochs, planned)  # the resumed run keeps the plan it made
        else:  # without a plan the schedule follows config.epochs, so more epochs extend a finished run
            self.total_steps.assign(self.config.epochs * self.data.steps)
        c, d = self.config, self.data
        logger.info(
            "training %s (%s): %d rows, global batch %d (%d x %d replicas), %d steps/epoch, epochs %d..%d",
            c.model,
            self.task.policy,
            len(d.images),
            d.global_batch,
            c.batch_size,
            self.strategy.num_replicas_in_sync,
            d.steps,
            start_epoch,
            self.epochs,
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
        signature = _run_signature(self.config, self.data.input_hw, self.class_names)
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
        self.epoch_start = time.perf_counter()
        dist = self.strategy.experimental_distribute_dataset(
            self.task.dataset(self.data, epoch, self.multiworker)
        )
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
        rate = totals.get("count", 0.0) / seconds if seconds > 0 else 0.0
        lr = float(self.loop.schedule(self.loop.optimizer.iterations))
        return {**self.task.summarise(totals), "learning_rate": lr, "seconds": seconds, "images_per_s": rate}

    def validate(self) -> dict:
        """The task's val_* values (empty without validation data), after setting the BatchNorm
        statistics of the weights being judged (calibrate_batch_norm)."""
        calibrate_batch_norm(self.model, self.data.calib)
        return self.task.validate(self.loop.eval_step, self.data)

    def record(self, epoch: int, values: dict) -> dict:
        """The epoch's history row (columns in the task's field order), appended and logged.

        The log line is the one `sprint2.launch.LocalWorkers.epoch_lines` picks out of a worker's stderr.
        """
        row = {"epoch": epoch, **{k: values[k] for k in self.fields if k in values}}
        self.history.append(row)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        logger.info("epoch %d/%d: %s", epoch, self.epochs, summary)
        self.wall_seconds.append(time.perf_counter() - self.epoch_start)
        return row

    def keep_best(self, row: dict) -> None:
        """Keeps the weights of the best monitored value so far (Task.monitor: lower is better)."""
        score = self.task.monitor(row)
        if score < self.best_score or not self.config.select_epoch:
            self.best_score, self.best_epoch, self.wait = score, row["epoch"], 0
            self.best_weights = self.model.get_weights()
            if self.write_dir is not None:
                (self.write_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
                self.model.save_weights(self.write_dir / "checkpoints" / "best.weights.h5")
        else:
            self.wait += 1

    def plan(self, epoch: int, start_epoch: int) -> None:
        """With a time budget, fixes the epoch count once PLAN_AFTER epochs of this process are timed.

        Every worker takes the smallest count any worker computed, so all stop at the same epoch.
        """
        budget = self.config.time_budget_s
        if budget is None or int(self.planned_var.numpy()) or epoch >= self.epochs:
            return
        timed = self.wall_seconds
        if len(timed) < min(PLAN_AFTER, self.epochs - start_epoch + 1):
            return
        epoch_s = float(np.mean(timed[1:] or timed))
        planned = epochs_within_budget(self.config.epochs, epoch, sum(timed), epoch_s, budget)
        if self.multiworker:
            planned = min(gather_ints(self.strategy, planned))
        self.epochs = planned
        self.planned_var.assign(planned)
        self.total_steps.assign(planned * self.data.steps)
        logger.info(
            "time budget %.0f s: %d epochs (%.1f s each after the first), of at most %d",
            budget,
            planned,
            epoch_s,
            self.config.epochs,
        )

    def checkpoint(self, epoch: int) -> None:
        """Saves model, optimizer, epoch, plan and early-stop state, and rewrites history.csv."""
        self.epoch_var.assign(epoch)
        self.best_var.assign(self.best_score)
        self.best_epoch_var.assign(self.best_epoch)
        if self.manager is not None and self.write_dir is not None:
            self.manager.save(checkpoint_number=epoch)
            write_history(self.write_dir / "history.csv", self.history, self.fields)

    def early_stop(self, epoch: int) -> bool:
        """True once the monitored value has not improved for `patience` epochs, after the first
        min_epochs_share of the planned epochs."""
        if not self.config.select_epoch:
            return False
        if self.wait < self.config.patience or epoch < self.config.min_epochs_share * self.epochs:
            return False
        logger.info(
            "early stop after epoch %d: %s has not improved for %d epochs (best %d)",
            epoch,
            self.task.monitor_name,
            self.wait,
            self.best_epoch,
        )
        self.stopped = True
        return True

    def finish(self, start_epoch: int, resize_mode: str, card_extra: dict) -> TrainResult:
        """Restores the best weights, chooses the score threshold, saves model.keras and model.json,
        removes the scratch folder and sums up the timings."""
        last = self.history[-1]["epoch"] if self.history else 0
        if self.best_weights is not None:  # also for the last epoch: they may be the averaged weights
            if self.best_epoch != last:
                logger.info("restoring the weights of epoch %d (%s)", self.best_epoch, self.task.monitor_name)
            self.model.set_weights(self.best_weights)
        model = self.task.export(self.model)
        threshold, source = choose_threshold(self.task, model, self.data)
        if self.write_dir is not None:
            model.save(self.write_dir / "model.keras")
            extra = {"seed": self.config.seed, "threshold_from": source, **card_extra}
            self.task.card(self.data.input_hw, resize_mode, threshold, extra).write(
                self.write_dir / "model.keras"
            )
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        trained = self.history[len(self.history) - len(self.epoch_seconds) :]
        steady, steady_rows = self.epoch_seconds[1:] or self.epoch_seconds, trained[1:] or trained
        seen = sum(r["images_per_s"] * r["seconds"] for r in steady_rows)
        return TrainResult(
            model=model,
            history=self.history,
            epoch_seconds=self.epoch_seconds,
            first_epoch_s=self.epoch_seconds[0] if self.epoch_seconds else 0.0,
            images_per_s=seen / sum(steady) if steady and sum(steady) > 0 else 0.0,
            replicas=int(self.strategy.num_replicas_in_sync),
            strategy=self.info,
            start_epoch=start_epoch,
            best_epoch=self.best_epoch,
            stopped_early=self.stopped,
            planned_epochs=self.epochs,
            score_threshold=threshold,
            threshold_from=source,
            precision=self.task.policy,
            ended_by=self._ended_by(),
        )

    def _ended_by(self) -> str:
        """Why the run ended: early stopping, the time budget's plan, or the data's epoch count."""
        if self.stopped:
            return "early stop"
        return "time budget" if self.epochs < self.config.epochs else "schedule"


def _epoch_bar(run: TrainingRun, start_epoch: int) -> tqdm:
    """The epoch bar on stderr (on a terminal only, for the chief); a resumed run says where it resumed."""
    if start_epoch > 1:
        logger.warning(
            "resumed from the checkpoint of epoch %d in %s: training continues at epoch %d of %d",
            start_epoch - 1,
            run.checkpoint_dir,
            start_epoch,
            run.epochs,
        )
    return tqdm(
        total=run.epochs,
        initial=min(start_epoch - 1, run.epochs),
        desc=f"training {run.config.model}",
        unit="epoch",
        disable=None if run.info.is_chief else True,
        file=sys.stderr,
    )


def _show_epoch(bar: tqdm, run: TrainingRun, row: dict) -> None:
    """Advances the epoch bar, showing the training loss and the validation score the best epoch follows."""
    bar.total = run.epochs  # a time budget may have fixed the epoch count after the first epochs
    shown = {k: f"{row[k]:.4g}" for k in ("loss", run.task.monitor_name, "val_mean_iou") if k in row}
    bar.set_postfix(shown, refresh=False)
    bar.update()


def train(
    train_ds: LoadedDataset,
    val_ds: LoadedDataset | None,
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    info: StrategyInfo | None = None,
    *,
    resize_mode: str = "stretch",
    card_extra: dict | None = None,
) -> TrainResult:
    """Trains a fresh (or resumed) model on LoadedDataset-like data under `strategy` (default: the current).

    With config.out_dir: checkpoints each epoch in out_dir/checkpoints (resumed when config.resume),
    history.csv, best.weights.h5, model.keras and its model.json card (resize_mode and card_extra are
    recorded there); under multi-worker only the chief writes there.
    """
    keep_freed_memory()  # steps reuse their buffers instead of faulting them in again (sprint2.malloc)
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    replicas = int(strategy.num_replicas_in_sync)
    if info is None:
        info = StrategyInfo(kind="given", replicas=replicas, reason="strategy passed in by the caller")
    task = make_task(config, train_ds.class_names)
    data = task.prepare(train_ds, val_ds, replicas)
    run = TrainingRun(config, strategy, info, task, data)
    start_epoch = epoch = run.restore()
    bar = _epoch_bar(run, start_epoch)
    while epoch <= run.epochs:
        trained = run.one_epoch(epoch)
        with run.loop.averaged_weights():  # the weights that are judged, kept and saved
            row = run.record(epoch, {**trained, **run.validate()})
            run.keep_best(row)
        run.plan(epoch, start_epoch)
        _show_epoch(bar, run, row)
        run.checkpoint(epoch)
        if run.early_stop(epoch):
            break
        epoch += 1
    bar.close()
    return run.finish(start_epoch, resize_mode, card_extra or {})
