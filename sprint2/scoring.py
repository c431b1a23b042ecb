"""How a trained model is scored: the score threshold, the test split beside the mean-box baseline,
and the metrics.json of a run.

Every model kind is scored by the same detection metrics (`sprint2.metrics`: VOC mAP@0.5, COCO
mAP@[.5:.95], per-class AP, precision and recall at the card's score threshold) beside the trivial
baseline (`metrics.mean_box_baseline`); the single-box models keep their accuracy / IoU fields too.
The score threshold is chosen on validation data (best F1), on the training split when a run has no
validation split, never on the test split.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from sprint2.dataset import LoadedDataset
from sprint2.metrics import evaluate_detections, mean_box_baseline

if TYPE_CHECKING:
    from sprint2.distribute import StrategyInfo
    from sprint2.loading import LoadOptions
    from sprint2.recipes import TrainConfig
    from sprint2.tasks import Task, TaskData

logger = logging.getLogger(__name__)

#: evaluate_detections' summary numbers: metrics.json "test" / "baseline", evaluate's "scores".
DETECTION_KEYS: tuple[str, ...] = (
    "images",
    "detections",
    "score_threshold",
    "map50",
    "ap50",
    "map50_95",
    "coco_ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ap50_95",
    "precision",
    "recall",
    "positives",
)
#: Its per-image and confusion detail: metrics.json "test_errors", evaluate's "errors".
ERROR_KEYS: tuple[str, ...] = ("confusion", "confusion_labels", "image_errors", "worst_images")
SINGLE_BOX_KEYS: tuple[str, ...] = ("accuracy", "mean_iou", "hit_rate_iou50")


def choose_threshold(task: Task, model: Any, data: TaskData) -> tuple[float, str]:
    """(score threshold, "val" or "train"): the best-F1 threshold on the validation images, on the
    training images when there are none."""
    from sprint2.tasks import best_f1_threshold

    ds, source = (data.val_ds, "val") if data.val_ds is not None else (data.train_ds, "train")
    threshold, f1 = best_f1_threshold(task.detections(model, ds.images), ds, task.class_names)
    logger.info("score threshold %.3f (F1 %.3f on the %s images)", threshold, f1, source)
    return threshold, source


def detection_report(
    dets: list, ds: LoadedDataset, threshold: float, class_names: list[str]
) -> tuple[dict, dict]:
    """(summary numbers, errors detail) of evaluate_detections at one score threshold."""
    full = evaluate_detections(dets, ds, score_threshold=threshold, class_names=class_names)
    return {k: full[k] for k in DETECTION_KEYS}, {k: full[k] for k in ERROR_KEYS}


def score_split(
    task: Task, model: Any, ds: LoadedDataset, train_ds: LoadedDataset, threshold: float
) -> dict[str, Any]:
    """The model and the mean-box baseline on ds by the detection metrics, and the images scored.

    Keys: scores, baseline, errors, files; single-box models add their accuracy, mean IoU and hit rate
    to scores and baseline, and scores_detail / baseline_detail (evaluate.evaluate's AP and confusion).
    """
    scores, errors = detection_report(task.detections(model, ds.images), ds, threshold, task.class_names)
    base, _ = detection_report(mean_box_baseline(train_ds, len(ds)), ds, 0.5, task.class_names)
    out: dict[str, Any] = {"scores": scores, "baseline": base, "errors": errors}
    if task.kind != "detector":
        from sprint2.evaluate import baseline, evaluate, predict

        old = evaluate(*predict(model, ds.images), ds)
        old_base = baseline(train_ds, ds)
        out["scores"] = {**{k: old[k] for k in SINGLE_BOX_KEYS}, **scores}
        out["baseline"] = {**{k: old_base[k] for k in SINGLE_BOX_KEYS}, **base}
        out["scores_detail"] = {k: old[k] for k in ("map50", "ap50", "confusion", "class_names")}
        out["baseline_detail"] = {k: old_base[k] for k in ("map50", "ap50", "mean_box", "majority_class")}
    out["files"] = [str(p) for p in ds.paths]
    return out


def run_metrics(
    result: Any,
    config: TrainConfig,
    info: StrategyInfo,
    recipe: str,
    options: LoadOptions,
    train_ds: LoadedDataset,
    val_ds: LoadedDataset | None,
    test_ds: LoadedDataset,
) -> dict:
    """metrics.json: the trained model and the baseline on the test split, and how training went."""
    task = task_for(config.model, train_ds.class_names)
    scored = score_split(task, result.model, test_ds, train_ds, result.score_threshold)
    augmentation = config.augmentation
    size = list(options.size) if isinstance(options.size, (tuple, list)) else options.size
    metrics = {
        "strategy": info.kind,
        "replicas": result.replicas,
        "epochs": len(result.history),
        "start_epoch": result.start_epoch,  # > 1 when resumed from a checkpoint
        "train_images": len(train_ds.boxes),
        "test_images": len(test_ds.boxes),
        "images_per_s": result.images_per_s,
        "test": scored["scores"],
        "baseline": scored["baseline"],
        "test_files": scored["files"],
        "test_errors": scored["errors"],
        "model": config.model,
        "size": size,
        "input_hw": [int(v) for v in result.model.input_shape[1:3]],
        "batch_per_replica": config.batch_size,
        "learning_rate": config.learning_rate,
        "val_images": len(val_ds.boxes) if val_ds is not None else 0,
        "recipe": recipe,
        "augmentation": (augmentation if isinstance(augmentation, str) else dataclasses.asdict(augmentation))
        if config.augment
        else "none",
        "warmup_epochs": config.warmup_epochs,
        "precision": result.precision,
        "time_budget_s": config.time_budget_s,
        "planned_epochs": result.planned_epochs,
        "stopped_early": result.stopped_early,
        "ended_by": result.ended_by,
        "score_threshold": result.score_threshold,
        "threshold_from": result.threshold_from,
        "first_epoch_s": result.first_epoch_s,
        "train_seconds": float(sum(result.epoch_seconds)),
        "best_epoch": result.best_epoch,
        "best_val_map50": _best_val_map(result.history, result.best_epoch),
        "strategy_info": info.as_dict(),
    }
    if "scores_detail" in scored:
        metrics["test_detail"] = scored["scores_detail"]
        metrics["baseline_detail"] = scored["baseline_detail"]
    return metrics


def _best_val_map(history: list[dict], best_epoch: int) -> float | None:
    row = next((r for r in history if r["epoch"] == best_epoch), None)
    return None if row is None or "val_map50" not in row else float(row["val_map50"])


def task_for(kind: str, class_names: list[str]) -> Task:
    """A scoring-only Task of a model kind (float32, nothing to train)."""
    from sprint2.recipes import TrainConfig
    from sprint2.tasks import make_task

    return make_task(TrainConfig(model=kind, precision="float32"), class_names)  # type: ignore[arg-type]
