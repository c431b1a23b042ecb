"""A run from a data folder to metrics.json (`run_training`, `sprint2 train`) and the scoring of a saved
model on one of its splits (`evaluate_model`, `sprint2 evaluate`).

This is the layer above the loop: it reads the data by the split rule of `sprint2.splits`, builds the
TrainConfig from a recipe (`sprint2.recipes`), the detector's schedule (`sprint2.schedule`) and the
caller's overrides, calls `sprint2.training.train` and scores the result with `sprint2.scoring`.
TensorFlow is imported only when a run starts, so notebooks and the CLI import this module cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sprint2.errors import DataError
from sprint2.loading import LoadOptions
from sprint2.modelcard import ModelCard
from sprint2.recipes import (
    DEFAULT_EPOCHS,
    DEFAULT_MODEL,
    DEFAULT_SIZE,
    RECIPES,
    ModelName,
    Recipe,
    TrainConfig,
    choose_recipe,
)
from sprint2.schedule import (
    DEFAULT_BUDGET_S,
    VAL_MIN_OBJECTS,
    DataStats,
    Schedule,
    detector_schedule,
    reads_validation,
)
from sprint2.scoring import run_metrics, score_split, task_for
from sprint2.splits import load_run_splits, train_samples
from sprint2.voc import Sample

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("test", "val", "train")


# --------------------------------------------------------------------------------------------
# run_training: load, split, train, evaluate, write metrics.json
# --------------------------------------------------------------------------------------------


def run_options() -> frozenset[str]:
    """The keyword overrides run_training takes: TrainConfig's fields (but model, seed, out_dir) and
    val_fraction."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return frozenset(fields - {"model", "seed", "out_dir"} | {"val_fraction"})


def _config(
    model: str,
    seed: int,
    out_dir: Path,
    recipe: Recipe,
    has_val: bool,
    overrides: dict,
    schedule: Schedule | None = None,
) -> TrainConfig:
    """The TrainConfig of a run: the recipe's (and for the detector the schedule's) choices, then the
    caller's overrides.

    Augmentation is on for the improved model and the detector; patience is the recipe's with a
    validation split, else every epoch is trained. The detector's epochs, batch, learning rate and
    warm-up come from the schedule, and its time budget holds unless epochs are given explicitly.
    """
    chosen: dict[str, Any] = {
        "augment": model in ("improved", "detector"),
        "augmentation": recipe.augmentation,
        "warmup_epochs": recipe.warmup_epochs,
        "min_epochs_share": recipe.min_epochs_share,
        "ema_momentum": recipe.ema_momentum,
    }
    if schedule is not None:
        chosen.update(
            epochs=schedule.epochs,
            batch_size=schedule.batch_size,
            learning_rate=schedule.learning_rate,
            warmup_epochs=schedule.warmup_epochs,
            time_budget_s=None if "epochs" in overrides else schedule.time_budget_s,
        )
    epochs = overrides.get("epochs", chosen.get("epochs", DEFAULT_EPOCHS))
    chosen["patience"] = recipe.patience if has_val else epochs
    chosen.update({k: v for k, v in overrides.items() if k != "val_fraction"})
    return TrainConfig(model=model, seed=seed, out_dir=out_dir, **chosen)  # type: ignore[arg-type]


def plan_detector(
    samples: Sequence[Sample], replicas: int, time_budget_s: float | None = None, precision: str = "auto"
) -> tuple[DataStats, Schedule]:
    """(statistics, schedule) of a detector run on these training samples, as run_training plans it:
    time_budget_s None is the default budget, precision "auto" is this machine's policy."""
    from sprint2.tasks import resolve_precision

    stats = DataStats.from_samples(samples)
    schedule = detector_schedule(
        stats,
        replicas=replicas,
        time_budget_s=DEFAULT_BUDGET_S if time_budget_s is None else time_budget_s,
        precision=resolve_precision(precision, "detector"),
    )
    return stats, schedule


def _load_options(
    model: str,
    samples: Sequence[Sample],
    load: LoadOptions | None,
    replicas: int,
    overrides: dict[str, Any],
) -> tuple[LoadOptions, Schedule | None]:
    """(LoadOptions, Schedule or None): the detector's schedule comes from the annotations of the
    training samples and the run's time budget and precision (overrides, else the defaults), and its
    input size is used unless `load` is given."""
    if model != "detector":
        return (load if load is not None else LoadOptions(size=DEFAULT_SIZE, errors="skip")), None
    stats, schedule = plan_detector(
        samples, replicas, overrides.get("time_budget_s"), overrides.get("precision", "auto")
    )
    logger.info("detector schedule from %s: %s", stats, schedule)
    if load is None:
        return LoadOptions(size=schedule.input_hw, errors="skip"), schedule
    return load, schedule


def _objects(ds: Any | None) -> int:
    """Boxes in a loaded dataset (0 for None)."""
    return 0 if ds is None else sum(len(np.asarray(b).reshape(-1, 4)) for b in ds.boxes)


def run_training(
    data_dir: str | Path,
    *,
    model: ModelName = DEFAULT_MODEL,
    recipe: str = "auto",
    out_dir: str | Path = "runs/train",
    strategy: str = "auto",
    replicas: int | None = None,
    seed: int = 0,
    load: LoadOptions | None = None,
    **overrides: Any,
) -> dict:
    """Loads data_dir, trains, scores the test split beside the mean-box baseline; writes model.keras,
    model.json, history.csv and metrics.json into out_dir and returns the metrics dict (the CLI's JSON).

    recipe: a name in RECIPES, or "auto" (choose_recipe). overrides: TrainConfig fields (epochs,
    batch_size, learning_rate, patience, augmentation, warmup_epochs, weight_decay, precision,
    time_budget_s, ...) and val_fraction; None means "not given". load: how to read the data (default:
    the detector's schedule size, or DEFAULT_SIZE pixels for the single-box models; bad files skipped).
    Validation: the dataset's own ImageSets val split when it has one and val_fraction is not given,
    else a seeded val_fraction of the training split; the test split is touched only for the final numbers.
    """
    if recipe != "auto" and recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose auto or one of {sorted(RECIPES)}")
    allowed = run_options()
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise TypeError(f"run_training got unknown options {unknown}; it takes {sorted(allowed)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not 0.0 <= overrides.get("val_fraction", 0.0) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {overrides['val_fraction']}")
    if model not in ("detector", "original", "improved"):
        raise ValueError(f"model must be detector, improved or original, got {model!r}")

    from sprint2.distribute import barrier, get_strategy
    from sprint2.training import train

    # The strategy first: logical CPU devices must be configured before TensorFlow's runtime starts.
    strat, info = get_strategy(strategy, replicas)  # type: ignore[arg-type]
    root = Path(data_dir)
    # The recipe decides the validation split, so it is chosen from the file count before loading.
    name = choose_recipe(len(train_samples(root, seed)), model) if recipe == "auto" else recipe
    chosen = RECIPES[name]
    trained_on = train_samples(root, seed, overrides.get("val_fraction"), chosen.val_fraction)
    options, schedule = _load_options(model, trained_on, load, int(strat.num_replicas_in_sync), overrides)
    train_ds, val_ds, test_ds, val_source = load_run_splits(
        root, seed, options, overrides.get("val_fraction"), chosen.val_fraction
    )
    config = _config(model, seed, Path(out_dir), chosen, val_ds is not None, overrides, schedule)
    val_objects = _objects(val_ds)
    if model == "detector" and val_ds is not None and not reads_validation(val_objects):
        config.select_epoch = False
        logger.info(
            "validation holds %d objects (< %d): trained to the end of the plan, last weights kept",
            val_objects,
            VAL_MIN_OBJECTS,
        )
    logger.info("recipe %s%s: %s", name, " (auto)" if recipe == "auto" else "", config)
    split_rule = {"val_fraction": overrides.get("val_fraction"), "default_val_fraction": chosen.val_fraction}
    result = train(train_ds, val_ds, config, strat, info, resize_mode=options.mode, card_extra=split_rule)

    metrics = run_metrics(result, config, info, name, options, train_ds, val_ds, test_ds)
    metrics["val_source"] = val_source
    metrics["val_objects"] = val_objects
    metrics["epoch_choice"] = "best validation epoch" if config.select_epoch else "last epoch"
    if schedule is not None:
        metrics["schedule"] = schedule.as_dict()
    metrics = json.loads(json.dumps(metrics))  # what metrics.json holds: tuples as lists
    if info.is_chief:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if info.kind == "multiworker":  # the chief leads TF's coordination service: it leaves last
        barrier(
            strat, info, result.history[-1]["epoch"] if result.history else 0, Path(out_dir) / "checkpoints"
        )
    return metrics


# --------------------------------------------------------------------------------------------
# sprint2 evaluate
# --------------------------------------------------------------------------------------------


def evaluate_model(model_path: Path | str, data_dir: Path | str, split: str = "test") -> dict[str, Any]:
    """Scores a saved model on one split of data_dir with the code metrics.json comes from.

    The model card beside the model gives the kind, classes, input size, resize mode, score
    threshold and the run's seed and validation rule, so "test", "val" and "train" are the images
    the run used for them. The baseline is the mean box of that run's training split.
    """
    from sprint2.model import load_model

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
    task = task_for(card.kind, card.class_names)
    scored = score_split(task, load_model(model_path), ds, train, card.score_threshold)
    return {
        "model": str(model_path),
        "kind": card.kind,
        "split": split,
        "images": len(ds),
        "score_threshold": card.score_threshold,
        **scored,
    }
