"""Around the training loop: which images train, validate and test, how a model is scored, `sprint2 evaluate`.

Every model kind is scored by the same detection metrics (`sprint2.metrics`: VOC mAP@0.5, COCO
mAP@[.5:.95], per-class AP, precision and recall at the card's score threshold) beside the trivial
baseline (`metrics.mean_box_baseline`); the single-box models keep their accuracy / IoU fields too.
The score threshold is chosen on validation data (best F1), on the training split when a run has no
validation split, never on the test split.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sprint2.metrics import evaluate_detections, mean_box_baseline
from sprint2.voc import Sample, discover

if TYPE_CHECKING:
    from sprint2.distribute import StrategyInfo
    from sprint2.loading import LoadOptions
    from sprint2.tasks import Task, TaskData

logger = logging.getLogger(__name__)

VAL_MIN_IMAGES = 20  # below this many training images no validation split is held out
TEST_FRACTION = 0.2  # load_splits' held-out share for datasets without a split of their own
SPLITS: tuple[str, ...] = ("test", "val", "train")

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


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def own_validation_split(root: Path) -> bool:
    """Whether the dataset defines train, val and test lists of its own (ImageSets/Main/*.txt)."""
    main = Path(root) / "ImageSets" / "Main"
    return all((main / f"{name}.txt").is_file() for name in ("train", "val", "test"))


def train_samples(
    root: Path | str,
    seed: int,
    val_fraction: float | None = None,
    default_fraction: float = 0.0,
    test_fraction: float = TEST_FRACTION,
) -> list[Sample]:
    """The (image, XML) pairs a run trains on, by `load_run_splits`' rule, without loading anything.

    The dataset's own train list when the run validates on its own val list; otherwise the training
    split of `loading.split_samples` (a seeded validation share of it is held out after loading).
    """
    from sprint2.loading import split_samples

    if uses_own_validation(root, val_fraction, default_fraction):
        return discover(Path(root), "train")
    return split_samples(root, test_fraction=test_fraction, seed=seed).train


def uses_own_validation(root: Path | str, val_fraction: float | None, default_fraction: float) -> bool:
    """Whether a run validates on the dataset's own val list: it has train / val / test lists, no
    validation share was asked for, and the recipe validates."""
    return val_fraction is None and default_fraction > 0 and own_validation_split(Path(root))


def split_validation(ds: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    """(train, validation or None): a seeded `fraction` of ds held out, none under VAL_MIN_IMAGES images."""
    order = np.random.default_rng(seed).permutation(len(ds.boxes))
    n_val = int(round(len(order) * fraction)) if len(order) >= VAL_MIN_IMAGES else 0
    if not n_val:
        return ds, None
    return ds.subset(np.sort(order[n_val:])), ds.subset(np.sort(order[:n_val]))


def load_run_splits(
    root: Path | str,
    seed: int,
    options: LoadOptions,
    val_fraction: float | None,
    default_fraction: float,
) -> tuple[Any, Any | None, Any, str]:
    """(train, validation or None, test, where the validation images came from).

    With val_fraction None and a recipe that validates (default_fraction > 0), a dataset with its own
    train / val / test lists uses them; otherwise `loading.load_splits` gives train and test and a
    seeded share of train (val_fraction, else default_fraction) is held out for validation.
    """
    from sprint2.loading import load_dataset, load_splits

    root = Path(root)
    if uses_own_validation(root, val_fraction, default_fraction):
        train = load_dataset(root, split="train", options=options)
        val = load_dataset(root, split="val", class_names=train.class_names, options=options)
        test = load_dataset(root, split="test", class_names=train.class_names, options=options)
        return train, (val if len(val) else None), test, "ImageSets/Main/val.txt"
    train_all, test = load_splits(root, seed=seed, options=options)
    fraction = default_fraction if val_fraction is None else val_fraction
    train, val = split_validation(train_all, fraction, seed)
    return train, val, test, (f"seeded {fraction:g} of the training split" if val is not None else "none")


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def choose_threshold(task: Task, model: Any, data: TaskData) -> tuple[float, str]:
    """(score threshold, "val" or "train"): the best-F1 threshold on the validation images, on the
    training images when there are none."""
    from sprint2.tasks import best_f1_threshold

    ds, source = (data.val_ds, "val") if data.val_ds is not None else (data.train_ds, "train")
    threshold, f1 = best_f1_threshold(task.detections(model, ds.images), ds, task.class_names)
    logger.info("score threshold %.3f (F1 %.3f on the %s images)", threshold, f1, source)
    return threshold, source


def detection_report(dets: list, ds: Any, threshold: float, class_names: list[str]) -> tuple[dict, dict]:
    """(summary numbers, errors detail) of evaluate_detections at one score threshold."""
    full = evaluate_detections(dets, ds, score_threshold=threshold, class_names=class_names)
    return {k: full[k] for k in DETECTION_KEYS}, {k: full[k] for k in ERROR_KEYS}


def score_split(task: Task, model: Any, ds: Any, train_ds: Any, threshold: float) -> dict[str, Any]:
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
    config: Any,
    info: StrategyInfo,
    recipe: str,
    options: LoadOptions,
    train_ds: Any,
    val_ds: Any | None,
    test_ds: Any,
) -> dict:
    """metrics.json: the trained model and the baseline on the test split, and how training went."""
    task = _task_for(config.model, train_ds.class_names)
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


def _task_for(kind: str, class_names: list[str]) -> Task:
    """A scoring-only Task of a model kind (float32, nothing to train)."""
    from sprint2.tasks import make_task
    from sprint2.training import TrainConfig

    return make_task(TrainConfig(model=kind, precision="float32"), class_names)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# sprint2 evaluate
# --------------------------------------------------------------------------------------------


def evaluate_model(model_path: Path | str, data_dir: Path | str, split: str = "test") -> dict[str, Any]:
    """Scores a saved model on one split of data_dir with the code metrics.json comes from.

    The model card beside the model gives the kind, classes, input size, resize mode, score
    threshold and the run's seed and validation rule, so "test", "val" and "train" are the images
    the run used for them. The baseline is the mean box of that run's training split.
    """
    from sprint2.errors import DataError
    from sprint2.loading import LoadOptions
    from sprint2.modelcard import ModelCard
    from sprint2.quantize import load_model

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file not found")
    card = ModelCard.read(model_path)
    options = LoadOptions(size=tuple(card.input_hw), mode=card.resize_mode, errors="skip")  # type: ignore[arg-type]
    seed = int(card.extra.get("seed", 0))
    val_fraction = card.extra.get("val_fraction")
    default = float(card.extra.get("default_val_fraction", 0.0))
    train, val, test, _ = load_run_splits(data_dir, seed, options, val_fraction, default)
    if list(train.class_names) != list(card.class_names):
        raise DataError(
            model_path, f"the model knows classes {card.class_names}, {data_dir} has {train.class_names}"
        )
    ds = {"test": test, "val": val, "train": train}[split]
    if ds is None or not len(ds):
        raise ValueError(f"{data_dir}: the run had no {split} images")
    task = _task_for(card.kind, card.class_names)
    scored = score_split(task, load_model(model_path), ds, train, card.score_threshold)
    return {
        "model": str(model_path),
        "kind": card.kind,
        "split": split,
        "images": len(ds),
        "score_threshold": card.score_threshold,
        **scored,
    }
