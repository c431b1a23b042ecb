"""What differs per kind of model in the one training loop: targets, losses, statistics, validation, scoring.

`sprint2.training` runs every model through the same `strategy.run` loop; a `Task` supplies the parts
that depend on the model: the arrays and tf.data batches it trains on, its per-example losses (the
loop averages them over the global batch), the summed statistics, the validation score that picks
the best epoch, the detections it is scored by and the model card. `SingleBoxTask` serves the
original and improved models (one class, one box per image), `DetectorTask` the multi-object
detector of `sprint2.detector`. Mixed precision (`resolve_precision`, `dtype_policy`) lives here too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from sprint2.decode import Detections, decode
from sprint2.detector import STRIDE, build_detector
from sprint2.metrics import pr_curves, single_box_detections, voc_ap
from sprint2.model import KINDS, SINGLE_BOX_KINDS, HuberGIoULoss, build_model, tensor_iou
from sprint2.modelcard import ModelCard
from sprint2.pipeline import detection_dataset, make_dataset, make_targets, padded_flags, padded_targets
from sprint2.recipes import augment_params
from sprint2.targets import build_targets, detection_loss

logger = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
CALIBRATION_PIXELS = 256 * 64 * 64  # batch-norm calibration sample: 256 images of 64x64, fewer when larger
EVAL_BATCH = 32
DEFAULT_THRESHOLD = 0.3  # the card's score threshold when no validation data can choose one


@dataclass(frozen=True)
class DecodeSettings:
    """How detector outputs become boxes: the first three go into the model card for `sprint2 predict`.

    score_floor is the threshold for mAP (every candidate that could matter); the card's
    score_threshold, chosen on validation data, is the one for precision, recall and predictions.
    """

    top_k: int = 100
    iou_threshold: float = 0.5
    stride: int = STRIDE
    score_floor: float = 0.01


DECODE = DecodeSettings()


# --------------------------------------------------------------------------------------------
# Mixed precision
# --------------------------------------------------------------------------------------------


def cpu_supports_bf16(cpuinfo: Path | str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has native bfloat16 arithmetic (the avx512_bf16 or amx_bf16 flag)."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(precision: str, kind: str, *, gpu: bool | None = None) -> str:
    """The Keras dtype policy a run uses: "auto" is mixed_float16 on GPUs and mixed_bfloat16 on a CPU
    with bf16 for the detector, float32 otherwise; the single-box models always train in float32.

    gpu: whether the run trains on GPUs (None: whether TensorFlow sees one). Loss scaling is applied
    for mixed_float16 only (bf16 has float32's exponent range).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if kind != "detector":
        if precision not in ("auto", "float32"):
            raise ValueError(f"mixed precision is for the detector; the {kind} model trains in float32")
        return "float32"
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU") if gpu is None else gpu:
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_supports_bf16() else "float32"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Builds layers under the Keras dtype policy `name`, restoring the previous global policy after."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


@dataclass
class TaskData:
    """A task's training and validation arrays and the batch arithmetic for one strategy.

    train and val are the arrays sliced into tf.data (images first); train_ds and val_ds the
    LoadedDatasets they came from (ground truth for detection metrics); calib a fixed seeded sample
    of training images (the same on every worker) for batch-norm statistics.
    """

    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...] | None
    train_ds: Any
    val_ds: Any | None
    global_batch: int
    steps: int
    calib: np.ndarray

    @property
    def images(self) -> np.ndarray:
        return self.train[0]

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def size(self) -> int:
        """The image side of a square input (the single-box models'); the height otherwise."""
        return self.input_hw[0]


def _batch_arithmetic(rows: int, batch_size: int, replicas: int) -> int:
    """The global batch: batch_size per replica, lowered (logged) when there are fewer rows."""
    global_batch = batch_size * replicas
    if rows < global_batch:
        global_batch = max(replicas, (rows // replicas) * replicas)
        logger.warning("only %d training rows: global batch lowered to %d", rows, global_batch)
    return global_batch


def _calibration_sample(images: np.ndarray, seed: int) -> np.ndarray:
    n = max(32, CALIBRATION_PIXELS // (images.shape[1] * images.shape[2]))
    return images[np.sort(np.random.default_rng(seed).permutation(len(images))[:n])]


def _add(totals: dict[str, float], part: dict) -> None:
    for k, v in part.items():
        totals[k] = totals.get(k, 0.0) + float(v)


EvalStep = Callable[[Any], tuple[Any, dict]]


class Task:
    """The per-model maths the training loop calls; see the module docstring.

    losses() returns per-example tensors with the optimised one under "loss"; stats() sums (not
    means) so they add up across replicas and batches, with the example count under "count";
    monitor() turns an epoch's history row into the number the best epoch minimises.
    """

    kind: str = ""
    history_fields: tuple[str, ...] = ()
    monitor_name: str = "val_loss"

    def __init__(self, config: Any, class_names: list[str]) -> None:
        self.config = config
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.policy = resolve_precision(getattr(config, "precision", "float32"), config.model)

    # --- data
    def prepare(self, train_ds: Any, val_ds: Any | None, replicas: int) -> TaskData:
        raise NotImplementedError

    def dataset(self, data: TaskData, epoch: int, multiworker: bool) -> tf.data.Dataset:
        raise NotImplementedError

    # --- model
    def build(self, data: TaskData) -> keras.Model:
        raise NotImplementedError

    def export(self, model: keras.Model) -> keras.Model:
        """The model to save and score: float32, whatever policy it was trained under."""
        return model

    # --- maths
    def losses(self, batch: Any, outputs: Any) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def stats(self, batch: Any, outputs: Any, losses: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def summarise(self, sums: dict[str, float], prefix: str = "") -> dict[str, float]:
        raise NotImplementedError

    def validate(self, eval_step: EvalStep, data: TaskData) -> dict[str, float]:
        raise NotImplementedError

    def monitor(self, row: dict) -> float:
        """Lower is better: the validation loss, or the training loss without validation."""
        return float(row.get("val_loss", row["loss"]))

    # --- scoring
    def detections(self, model: keras.Model, images: np.ndarray) -> list[Detections]:
        raise NotImplementedError

    def card(self, input_hw: tuple[int, int], resize_mode: str, threshold: float, extra: dict) -> ModelCard:
        return ModelCard(
            kind=self.kind,
            class_names=self.class_names,
            input_hw=(int(input_hw[0]), int(input_hw[1])),
            resize_mode=resize_mode,
            score_threshold=float(threshold),
            extra={"trained_precision": self.policy, "saved_precision": "float32", **extra},
        )


def make_task(config: Any, class_names: list[str]) -> Task:
    """The Task for config.model: DetectorTask for "detector", SingleBoxTask for the single-box models."""
    if config.model == "detector":
        return DetectorTask(config, class_names)
    if config.model in SINGLE_BOX_KINDS:
        return SingleBoxTask(config, class_names)
    raise ValueError(f"model must be one of {KINDS}, got {config.model!r}")


# --------------------------------------------------------------------------------------------
# The single-box models
# --------------------------------------------------------------------------------------------


class SingleBoxTask(Task):
    """One class and one box per image (the original and improved models of `sprint2.model`)."""

    history_fields = ("loss", "class_loss", "box_loss", "accuracy", "mean_iou")

    def __init__(self, config: Any, class_names: list[str]) -> None:
        super().__init__(config, class_names)
        self.kind = config.model
        self.box_loss_fn = HuberGIoULoss()

    def prepare(self, train_ds: Any, val_ds: Any | None, replicas: int) -> TaskData:
        images, labels, boxes = make_targets(train_ds, self.config.target)
        global_batch = _batch_arithmetic(len(images), self.config.batch_size, replicas)
        val = make_targets(val_ds, self.config.target) if val_ds is not None else None
        return TaskData(
            (images, labels, boxes),
            val,
            train_ds,
            val_ds,
            global_batch,
            len(images) // global_batch,
            _calibration_sample(images, self.config.seed),
        )

    def dataset(self, data: TaskData, epoch: int, multiworker: bool) -> tf.data.Dataset:
        images, labels, boxes = data.train
        return make_dataset(
            images,
            labels,
            boxes,
            data.global_batch,
            seed=self.config.seed,
            epoch=epoch,
            augment_data=self.config.augment,
            multiworker=multiworker,
            params=augment_params(self.config.augmentation),
        )

    def build(self, data: TaskData) -> keras.Model:
        return build_model(self.config.model, self.num_classes, data.size)

    def losses(self, batch: Any, outputs: Any) -> dict[str, tf.Tensor]:
        """Class and box losses: improved on [0, 1] coordinates, original as MSE in pixels²."""
        _, labels, boxes = batch
        size = tf.cast(tf.shape(batch[0])[1], tf.float32)
        cls = keras.losses.sparse_categorical_crossentropy(labels, outputs["class"])
        if self.config.model == "improved":
            box = self.box_loss_fn(boxes / size, outputs["box"] / size)
        else:
            box = tf.reduce_mean(tf.square(boxes - outputs["box"]), axis=-1)
        return {"loss": cls + self.config.box_weight * box, "class": cls, "box": box}

    def stats(self, batch: Any, outputs: Any, losses: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        _, labels, boxes = batch
        pred = tf.cast(tf.argmax(outputs["class"], axis=-1), labels.dtype)
        return {
            "loss": tf.reduce_sum(losses["loss"]),
            "class_loss": tf.reduce_sum(losses["class"]),
            "box_loss": tf.reduce_sum(losses["box"]),
            "correct": tf.reduce_sum(tf.cast(pred == labels, tf.float32)),
            "iou": tf.reduce_sum(tensor_iou(boxes, outputs["box"])),
            "count": tf.cast(tf.shape(labels)[0], tf.float32),
        }

    def summarise(self, sums: dict[str, float], prefix: str = "") -> dict[str, float]:
        n = max(float(sums.get("count", 0.0)), 1.0)
        return {
            f"{prefix}loss": float(sums["loss"]) / n,
            f"{prefix}class_loss": float(sums["class_loss"]) / n,
            f"{prefix}box_loss": float(sums["box_loss"]) / n,
            f"{prefix}accuracy": float(sums["correct"]) / n,
            f"{prefix}mean_iou": float(sums["iou"]) / n,
        }

    def validate(self, eval_step: EvalStep, data: TaskData) -> dict[str, float]:
        """val_* means over the validation rows (empty without them), in chunks of 256 images."""
        if data.val is None or not len(data.val[0]):
            return {}
        images, labels, boxes = data.val
        totals: dict[str, float] = {}
        for s in range(0, len(images), 256):
            batch = (
                tf.constant(images[s : s + 256], tf.float32),
                tf.constant(labels[s : s + 256]),
                tf.constant(boxes[s : s + 256]),
            )
            _add(totals, eval_step(batch)[1])
        return self.summarise(totals, "val_")

    def detections(self, model: keras.Model, images: np.ndarray) -> list[Detections]:
        """One detection per image: the argmax class and its box (metrics.single_box_detections)."""
        from sprint2.evaluate import predict

        probs, boxes = predict(model, images)
        return single_box_detections(probs, boxes)


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


class DetectorTask(Task):
    """The CenterNet-style detector: padded boxes in, per-batch targets, focal + L1 losses, mAP@0.5."""

    kind = "detector"
    history_fields = ("loss", "heatmap_loss", "size_loss", "offset_loss", "objects")
    monitor_name = "val_map50"

    def __init__(self, config: Any, class_names: list[str]) -> None:
        super().__init__(config, class_names)
        self._val_batches: list[tuple[tf.Tensor, dict]] | None = None

    def _arrays(self, ds: Any) -> tuple[np.ndarray, ...]:
        labels, boxes = padded_targets(ds, self.config.max_boxes)
        difficult = padded_flags(ds, "difficult", labels.shape[1])
        return np.asarray(ds.images), labels, boxes, difficult

    def prepare(self, train_ds: Any, val_ds: Any | None, replicas: int) -> TaskData:
        train = self._arrays(train_ds)
        h, w = train[0].shape[1:3]
        if h % 32 or w % 32:
            raise ValueError(
                f"the detector needs images of multiples of 32 pixels, got {h}x{w}: "
                "load with LoadOptions(size=(H, W)), H and W multiples of 32"
            )
        global_batch = _batch_arithmetic(len(train[0]), self.config.batch_size, replicas)
        val = self._arrays(val_ds) if val_ds is not None and len(val_ds) else None
        if val is not None and val[0].shape[1:3] != (h, w):
            raise ValueError(f"validation images are {val[0].shape[1:3]}, training images {(h, w)}")
        return TaskData(
            train,
            val,
            train_ds,
            val_ds if val is not None else None,
            global_batch,
            len(train[0]) // global_batch,
            _calibration_sample(train[0], self.config.seed),
        )

    def dataset(self, data: TaskData, epoch: int, multiworker: bool) -> tf.data.Dataset:
        images, labels, boxes, difficult = data.train
        return detection_dataset(
            images,
            labels,
            boxes,
            difficult,
            data.global_batch,
            num_classes=self.num_classes,
            seed=self.config.seed,
            epoch=epoch,
            augment_data=self.config.augment,
            multiworker=multiworker,
            params=augment_params(self.config.augmentation),
        )

    def _build(self, input_hw: tuple[int, int], policy: str) -> keras.Model:
        with dtype_policy(policy):
            return build_detector(self.num_classes, input_hw, width=self.config.width)

    def build(self, data: TaskData) -> keras.Model:
        return self._build(data.input_hw, self.policy)

    def export(self, model: keras.Model) -> keras.Model:
        """A float32 copy of a mixed-precision model (same layers, so the weights transfer one to one)."""
        if self.policy == "float32":
            return model
        plain = self._build(tuple(int(v) for v in model.input_shape[1:3]), "float32")
        plain.set_weights(model.get_weights())
        return plain

    def losses(self, batch: Any, outputs: Any) -> dict[str, tf.Tensor]:
        dense = self.config.box_regression == "dense"
        return detection_loss(outputs, batch[1], num_classes=self.num_classes, dense=dense)

    def stats(self, batch: Any, outputs: Any, losses: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {
            "loss": tf.reduce_sum(losses["loss"]),
            "heatmap_loss": tf.reduce_sum(losses["heatmap"]),
            "size_loss": tf.reduce_sum(losses["size"]),
            "offset_loss": tf.reduce_sum(losses["offset"]),
            "objects": tf.reduce_sum(tf.cast(batch[1]["reg_mask"], tf.float32)),
            "count": tf.cast(tf.shape(losses["loss"])[0], tf.float32),
        }

    def summarise(self, sums: dict[str, float], prefix: str = "") -> dict[str, float]:
        """Per-image means of the losses, and the objects trained per image."""
        n = max(float(sums.get("count", 0.0)), 1.0)
        keys = ("loss", "heatmap_loss", "size_loss", "offset_loss", "objects")
        return {f"{prefix}{k}": float(sums[k]) / n for k in keys}

    def _validation_batches(self, data: TaskData) -> list[tuple[tf.Tensor, dict]]:
        """The validation set in EVAL_BATCH chunks with its targets, built once (no augmentation)."""
        if self._val_batches is None:
            images, labels, boxes, difficult = data.val  # type: ignore[misc]
            self._val_batches = []
            for s in range(0, len(images), EVAL_BATCH):
                part = slice(s, s + EVAL_BATCH)
                targets = build_targets(
                    boxes[part],
                    labels[part],
                    labels[part] >= 0,
                    difficult[part] & (labels[part] >= 0),
                    num_classes=self.num_classes,
                    input_hw=data.input_hw,
                )
                self._val_batches.append((tf.constant(images[part], tf.float32), targets))
        return self._val_batches

    def validate(self, eval_step: EvalStep, data: TaskData) -> dict[str, float]:
        """val_* loss means and val_map50, VOC mAP@0.5 of the decoded detections (difficult boxes ignored)."""
        if data.val is None:
            return {}
        totals: dict[str, float] = {}
        dets: list[Detections] = []
        for batch in self._validation_batches(data):
            outputs, sums = eval_step(batch)
            _add(totals, sums)
            dets.extend(self.decode(np.asarray(outputs)))
        _, map50 = voc_ap(dets, data.val_ds, class_names=self.class_names)
        return {**self.summarise(totals, "val_"), "val_map50": float(map50 or 0.0)}

    def monitor(self, row: dict) -> float:
        """Lower is better: minus the validation mAP@0.5, or the training loss without validation."""
        return -float(row["val_map50"]) if "val_map50" in row else float(row["loss"])

    def decode(self, outputs: np.ndarray, score_threshold: float | None = None) -> list[Detections]:
        """Detections in network-input pixels, at the mAP floor unless a threshold is given."""
        return decode(
            outputs,
            self.num_classes,
            score_threshold=DECODE.score_floor if score_threshold is None else score_threshold,
            top_k=DECODE.top_k,
            iou_threshold=DECODE.iou_threshold,
            stride=DECODE.stride,
        )

    def detections(self, model: keras.Model, images: np.ndarray) -> list[Detections]:
        dets: list[Detections] = []
        for s in range(0, len(images), EVAL_BATCH):
            out = model(tf.constant(images[s : s + EVAL_BATCH], tf.float32), training=False)
            dets.extend(self.decode(np.asarray(out)))
        return dets

    def card(self, input_hw: tuple[int, int], resize_mode: str, threshold: float, extra: dict) -> ModelCard:
        decoding = {  # at the top of extra, where `sprint2.predict` reads them
            "top_k": DECODE.top_k,
            "iou_threshold": DECODE.iou_threshold,
            "stride": DECODE.stride,
            "outputs": "heatmap|size|offset",
        }
        return super().card(
            input_hw, resize_mode, threshold, {**decoding, "width": self.config.width, **extra}
        )


# --------------------------------------------------------------------------------------------
# The score threshold
# --------------------------------------------------------------------------------------------


def best_f1_threshold(
    detections: list[Detections], ground_truth: Any, class_names: list[str] | None = None
) -> tuple[float, float]:
    """(threshold, F1): the score threshold with the best F1 over all classes pooled, at IoU 0.5.

    Detections are matched as `metrics.voc_ap` does (difficult boxes neither help nor hurt); keeping
    those scoring >= threshold gives that F1. (DEFAULT_THRESHOLD, 0.0) when nothing can be matched.
    """
    curves = pr_curves(detections, ground_truth, class_names=class_names).values()
    positives = sum(c.positives for c in curves)
    scores = np.concatenate([c.scores for c in curves] + [np.zeros(0)])
    tp = np.concatenate([c.tp for c in curves] + [np.zeros(0, bool)])
    if not positives or not tp.any():
        return DEFAULT_THRESHOLD, 0.0
    order = np.argsort(-scores, kind="stable")
    scores, tp = scores[order], tp[order]
    # Only the last detection of a run of equal scores is a place to cut.
    last = np.r_[scores[1:] != scores[:-1], True]
    ctp = np.cumsum(tp)[last]
    kept = np.arange(1, len(tp) + 1)[last]
    f1 = 2 * ctp / (kept + positives)
    best = int(np.argmax(f1))
    return float(scores[last][best]), float(f1[best])
