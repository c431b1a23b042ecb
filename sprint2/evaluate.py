"""Evaluation of single-box detectors: accuracy, IoU, hit rate, VOC AP@0.5 per class, confusion matrix.

Every report shows the trivial baseline (mean training box, majority class) beside the model,
evaluated by the same code, so a number only counts when it beats doing nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from sprint2.images import box_iou
from sprint2.metrics import average_precision

logger = logging.getLogger(__name__)

Target = Literal["largest", "all"]


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xmin, ymin, xmax, ymax boxes; degenerate boxes give 0."""
    return box_iou(np.reshape(a, (-1, 1, 4)), np.reshape(b, (1, -1, 4)))


def largest_index(boxes: np.ndarray) -> int:
    """Index of the largest-area box of one image (the first one on ties); -1 when there is none."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return -1
    return int(np.argmax(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(-1)))


def image_targets(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """One (label, box) per image: its largest object. Images without objects get label -1 and a zero box."""
    labels = np.full(len(ds.boxes), -1, np.int32)
    boxes = np.zeros((len(ds.boxes), 4), np.float32)
    for i, (b, lab) in enumerate(zip(ds.boxes, ds.labels)):
        j = largest_index(b)
        if j >= 0:
            labels[i], boxes[i] = int(np.asarray(lab)[j]), np.asarray(b, np.float32).reshape(-1, 4)[j]
    return labels, boxes


#: The models' named outputs: class probabilities (N, C) and boxes (N, 4) in pixels.
OUTPUT_NAMES: tuple[str, str] = ("class", "box")
Outputs = dict[str, np.ndarray]
Predictor = Callable[[np.ndarray], Outputs]


def predict_batched(predict: Predictor, images: np.ndarray, batch_size: int = 32) -> Outputs:
    """Runs `predict` (a Keras model call, a LiteRT model, ...) on images in batches; joins the outputs."""
    if len(images) == 0:
        raise ValueError("predict_batched needs at least one image")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    for start in range(0, len(images), batch_size):
        out = predict(np.asarray(images[start : start + batch_size], np.float32))
        for name in OUTPUT_NAMES:
            parts[name].append(np.asarray(out[name], np.float32))
    return {name: np.concatenate(v) for name, v in parts.items()}


def predict(model: Any, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Runs the model in batches (plain calls, no Model.predict): (probs (N, C), boxes (N, 4) px)."""
    if len(images) == 0:
        n_classes = int(model.outputs[0].shape[-1]) if hasattr(model, "outputs") else 0
        return np.zeros((0, n_classes), np.float32), np.zeros((0, 4), np.float32)
    out = predict_batched(lambda x: model(x, training=False), images, batch_size)
    return out["class"], out["box"]


def _ap_per_class(probs: np.ndarray, boxes: np.ndarray, ds: Any, num_classes: int) -> list[float | None]:
    """AP@0.5 per class with one detection per image (argmax class, its probability as score).

    A detection is a true positive when its best-overlapping ground-truth box of that class has
    IoU >= 0.5 and is not matched yet; `difficult` boxes (when the dataset has the flag) are neither.
    """
    difficult = getattr(ds, "difficult", None)
    pred_cls = probs.argmax(1)
    scores = probs[np.arange(len(probs)), pred_cls]
    aps: list[float | None] = []
    for c in range(num_classes):
        gt: list[np.ndarray] = []
        hard: list[np.ndarray] = []
        npos = 0
        for i, (b, lab) in enumerate(zip(ds.boxes, ds.labels)):
            mask = np.asarray(lab) == c
            d = np.asarray(difficult[i], bool) if difficult is not None else np.zeros(len(mask), bool)
            gt.append(np.asarray(b, np.float32).reshape(-1, 4)[mask])
            hard.append(d[mask])
            npos += int((~d[mask]).sum())
        if npos == 0:
            aps.append(None)
            continue
        det = np.where(pred_cls == c)[0]
        det = det[np.argsort(-scores[det], kind="stable")]
        used = [np.zeros(len(g), bool) for g in gt]
        tp, fp = [], []
        for i in det:
            ious = pairwise_iou(boxes[i : i + 1], gt[i])[0] if len(gt[i]) else np.zeros(0)
            j = int(np.argmax(ious)) if len(ious) else -1
            if j >= 0 and ious[j] >= 0.5:
                if hard[i][j]:
                    continue  # VOC: a hit on a difficult box counts for nothing
                if not used[i][j]:
                    used[i][j] = True
                    tp.append(1), fp.append(0)
                    continue
            tp.append(0), fp.append(1)
        ctp, cfp = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
        recall = ctp / npos
        precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        aps.append(average_precision(recall, precision) if len(det) else 0.0)
    return aps


def evaluate(probs: np.ndarray, boxes: np.ndarray, ds: Any, target: Target = "largest") -> dict:
    """Scores one prediction per image against `ds` (a LoadedDataset): accuracy, IoU, hit rate, AP, confusion.

    target="largest" compares with each image's largest object; "all" with the ground-truth box
    the prediction overlaps most (its class then decides correctness).
    """
    probs = np.asarray(probs, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n, num_classes = probs.shape[0], max(len(ds.class_names), probs.shape[1] if probs.ndim == 2 else 0)
    if n != len(ds.boxes) or len(boxes) != n:
        raise ValueError(f"got {n} class rows and {len(boxes)} boxes for {len(ds.boxes)} images")
    if target == "largest":
        t_labels, t_boxes = image_targets(ds)
    elif target == "all":
        t_labels = np.full(n, -1, np.int32)
        t_boxes = np.zeros((n, 4), np.float32)
        for i, (b, lab) in enumerate(zip(ds.boxes, ds.labels)):
            b = np.asarray(b, np.float32).reshape(-1, 4)
            if len(b):
                j = int(np.argmax(pairwise_iou(boxes[i : i + 1], b)[0]))
                t_labels[i], t_boxes[i] = int(np.asarray(lab)[j]), b[j]
    else:
        raise ValueError(f"target must be 'largest' or 'all', got {target!r}")
    keep = t_labels >= 0
    if not keep.all():
        logger.warning("%d of %d images have no objects; left out of accuracy and IoU", int((~keep).sum()), n)
    pred = probs.argmax(1) if n else np.zeros(0, np.int64)
    correct = (pred == t_labels)[keep]
    ious = box_iou(boxes, t_boxes)[keep]
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (t_labels[keep], pred[keep]), 1)
    aps = _ap_per_class(probs, boxes, ds, num_classes)
    valid = [a for a in aps if a is not None]
    return {
        "images": int(keep.sum()),
        "accuracy": float(correct.mean()) if len(correct) else 0.0,
        "mean_iou": float(ious.mean()) if len(ious) else 0.0,
        "hit_rate_iou50": float(((ious >= 0.5) & correct).mean()) if len(ious) else 0.0,
        "ap50": {name: aps[c] for c, name in enumerate(ds.class_names)},
        "map50": float(np.mean(valid)) if valid else 0.0,
        "confusion": confusion.tolist(),
        "class_names": list(ds.class_names),
    }


def baseline(train_ds: Any, test_ds: Any, target: Target = "largest") -> dict:
    """The do-nothing model: always the mean training target box and the majority training class."""
    labels, boxes = image_targets(train_ds)
    keep = labels >= 0
    if not keep.any():
        raise ValueError("the training set has no objects to take a baseline from")
    num_classes = len(train_ds.class_names)
    majority = int(np.bincount(labels[keep], minlength=num_classes).argmax())
    mean_box = boxes[keep].mean(0)
    n = len(test_ds.boxes)
    probs = np.zeros((n, num_classes), np.float32)
    probs[:, majority] = 1.0
    result = evaluate(probs, np.tile(mean_box, (n, 1)), test_ds, target=target)
    result.update(
        {"majority_class": train_ds.class_names[majority], "mean_box": [float(v) for v in mean_box]}
    )
    return result
