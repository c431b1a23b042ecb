"""Notebook 04's single-box models: the original and improved networks trained afresh under one strategy
(`SingleBoxRuns`), scored beside the do-nothing baseline on the same test images (`SingleBoxComparison`),
and where the improved model fails (`WorstCases`). Each knows its tables, the numbers its notebook's
sentences quote and its key figures.

Light at import: TensorFlow starts when a run trains or a saved model is loaded.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sprint2.analysis import (
    Cases,
    history_rows,
    largest_difference,
    per_class_rows,
    run_rows,
    score_rows,
    top_confusions,
)
from sprint2.dataset import LoadedDataset
from sprint2.evaluate import evaluate, image_targets, predict
from sprint2.experiment import run_training
from sprint2.loading import LoadOptions
from sprint2.table import Table, table

Row = dict[str, Any]
MODELS = ("original", "improved")
#: The scores recorded per model (analysis.score_rows' columns).
SCORES = ("accuracy", "mean_iou", "hit_rate_iou50", "map50", "box_mse")


@dataclass(frozen=True)
class SingleBoxRuns:
    """run_training's metrics per model (in folder/<model>), the seconds each whole call took, and the
    settings they shared."""

    folder: Path
    metrics: dict[str, dict[str, Any]]
    wall_s: dict[str, float]
    epochs: int
    size: int

    @classmethod
    def train(
        cls, data: Path, folder: Path, settings: Mapping[str, Any], models: Sequence[str] = MODELS
    ) -> SingleBoxRuns:
        """Train each model into an emptied folder/<model> (a run resumes from checkpoints it finds there).

        settings: notebook 04's (size, epochs, batch, strategy, replicas, seed; the others are not read).
        """
        size, epochs = settings["size"], settings["epochs"]
        options = {key: settings[key] for key in ("strategy", "replicas", "seed")}
        options |= {
            "load": LoadOptions(size=size, errors="skip"),
            "epochs": epochs,
            "batch_size": settings["batch"],
        }
        metrics, wall_s = {}, {}
        for kind in models:
            shutil.rmtree(folder / kind, ignore_errors=True)
            start = time.perf_counter()
            metrics[kind] = run_training(data, model=kind, out_dir=folder / kind, **options)
            wall_s[kind] = time.perf_counter() - start
        return cls(folder=Path(folder), metrics=metrics, wall_s=wall_s, epochs=epochs, size=size)

    @property
    def strategy(self) -> dict[str, Any]:
        """The strategy every run trained under (StrategyInfo.as_dict); runs that differ raise."""
        found = [m["strategy_info"] for m in self.metrics.values()]
        if any(info != found[0] for info in found):
            raise ValueError(f"the runs trained under different strategies: {found}")
        return found[0]

    def table(self) -> Table:
        """One row per run: strategy, split sizes, epochs, timings and the steady images/s."""
        return table(
            run_rows(self.metrics, self.wall_s),
            [
                ("model", "model", "{}"),
                ("strategy", "strategy", "{}"),
                ("replicas", "replicas", "{}"),
                ("train / val / test images", "split", "{}"),
                ("epochs run", "epochs", "{}"),
                ("best epoch", "best_epoch", "{}"),
                ("first epoch (s)", "first_epoch_s", "{:.1f}"),
                ("training (s)", "train_seconds", "{:.1f}"),
                ("images/s (steady)", "images_per_s", "{:.0f}"),
                ("whole call (s)", "wall_s", "{:.1f}"),
            ],
        )

    def histories(self) -> dict[str, list[dict]]:
        """Each run's history.csv rows, one per epoch."""
        from sprint2.training import read_history

        return {kind: read_history(self.folder / kind / "history.csv") for kind in self.metrics}

    def history_table(self) -> Table:
        """Per model, the last epoch's accuracy and IoU (training and validation) and the best epoch."""
        return table(
            history_rows(self.histories()),
            [
                ("model", "model", "{}"),
                ("epochs", "epochs", "{}"),
                ("last train accuracy", "accuracy", "{:.3f}"),
                ("last val accuracy", "val_accuracy", "{:.3f}"),
                ("last train IoU", "mean_iou", "{:.3f}"),
                ("last val IoU", "val_mean_iou", "{:.3f}"),
                ("best val IoU", "best_val_mean_iou", "{:.3f}"),
                ("at epoch", "best_epoch", "{}"),
            ],
        )

    def outputs(self, images: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each saved model.keras, loaded afresh, on images: {model: (class probabilities, boxes)}."""
        from sprint2.model import load_model

        return {
            kind: predict(load_model(self.folder / kind / "model.keras"), images) for kind in self.metrics
        }

    def confusion(self, kind: str = "improved") -> np.ndarray:
        """The test confusion matrix run_training reported for a model (rows true, columns predicted)."""
        return np.asarray(self.metrics[kind]["test_detail"]["confusion"])

    def figures(self) -> Row:
        """The runs' key figures for the report index: strategy, settings, epochs, seconds, speed."""
        info, improved = self.strategy, self.metrics["improved"]
        return {
            "strategy": info["kind"],
            "replicas": info["replicas"],
            "devices": info["devices"],
            "epochs_max": self.epochs,
            "size": self.size,
            **{f"{kind}_epochs": m["epochs"] for kind, m in self.metrics.items()},
            **{f"{kind}_train_s": m["train_seconds"] for kind, m in self.metrics.items()},
            "improved_images_per_s": improved["images_per_s"],
            "improved_model": str(self.folder / "improved" / "model.keras"),
        }


@dataclass(frozen=True)
class SingleBoxComparison:
    """The baseline and each model on the same test images: evaluate()'s scores (SCORES, per-class AP)."""

    scores: dict[str, Row]
    ap50: dict[str, dict[str, float | None]]
    class_names: list[str]
    images: int
    size: int

    @classmethod
    def of(
        cls, runs: SingleBoxRuns, outputs: Mapping[str, tuple[np.ndarray, np.ndarray]], test: LoadedDataset
    ) -> SingleBoxComparison:
        """Score each model's outputs on the test split; the baseline (majority class, mean training box)
        comes from the improved run, whose training split it was taken from. Raises when a saved model
        scores other than its run reported (accuracy or mean IoU off by 1e-4 or more)."""
        evaluated = {kind: evaluate(*outputs[kind], test) for kind in outputs}
        reported = {kind: runs.metrics[kind]["test"] for kind in outputs}
        if largest_difference(evaluated, reported, ["accuracy", "mean_iou"]) >= 1e-4:
            raise ValueError("a saved model scores other than its training run reported")
        trained = runs.metrics["improved"]
        base = {**trained["baseline"], "map50": trained["baseline_detail"]["map50"]}
        boxes = {"baseline": np.asarray(trained["baseline_detail"]["mean_box"])}
        boxes |= {kind: out[1] for kind, out in outputs.items()}
        labels, targets = image_targets(test)
        rows = score_rows({"baseline": base, **evaluated}, boxes, targets, labels >= 0)
        scores = {row["model"]: row for row in rows}
        ap50 = {kind: s["ap50"] for kind, s in evaluated.items()}
        return cls(scores, ap50, list(test.class_names), int((labels >= 0).sum()), runs.size)

    def table(self) -> Table:
        """The scores side by side, with the original sprint's own (historical) figures below."""
        historical = {
            "model": "original sprint (historical, other data)",
            "accuracy": 0.166,
            "box_mse": 1588.0,
        }
        return table(
            [*self.scores.values(), historical],
            [
                ("model", "model", "{}"),
                ("accuracy", "accuracy", "{:.1%}"),
                ("mean IoU", "mean_iou", "{:.3f}"),
                ("hit rate (IoU>=0.5, right class)", "hit_rate_iou50", "{:.1%}"),
                ("mAP@0.5", "map50", "{:.3f}"),
                (f"box MSE (px², {self.size}x{self.size})", "box_mse", "{:.0f}"),
            ],
        )

    def per_class_table(self) -> Table:
        """AP@0.5 per class, one column per model."""
        columns = [("class", "class", "{}")] + [(f"AP@0.5 {m}", m, "{:.3f}") for m in self.ap50]
        return table(per_class_rows(self.ap50, self.class_names), columns)

    def hit_rates(self) -> dict[str, float]:
        """Right class and IoU >= 0.5, per model: the bars of the comparison."""
        return {name: s["hit_rate_iou50"] for name, s in self.scores.items()}

    def facts(self) -> Row:
        """Each model's scores under its name, the test images and the classes, for a sentence."""
        return {**self.scores, "images": self.images, "classes": len(self.class_names)}

    def figures(self) -> Row:
        """The key figures for the report index: <model>_<score> for the baseline and both models."""
        return {f"{name}_{key}": self.scores[name][key] for name in (*MODELS, "baseline") for key in SCORES}


@dataclass(frozen=True)
class WorstCases:
    """The worst images of an analyse_cases result beside the whole test split: what went wrong, how many
    objects, how large and how close to the border the targets are (Cases.summary rows)."""

    worst: Row
    split: Row

    @classmethod
    def of(cls, cases: Cases, worst: Sequence[int] | np.ndarray) -> WorstCases:
        return cls(
            cases.summary(worst, f"{len(worst)} worst"), cases.summary(cases.rows, f"all {len(cases.rows)}")
        )

    def table(self) -> Table:
        return table(
            [self.worst, self.split],
            [
                ("images", "images", "{}"),
                ("wrong class", "wrong_class", "{}"),
                ("right class, IoU < 0.5", "low_iou", "{}"),
                ("box on another object (IoU >= 0.5)", "other_object", "{}"),
                ("objects per image (mean)", "objects", "{:.2f}"),
                ("target box area (median, of image)", "area", "{:.1%}"),
                ("target within 5% of the border", "near_edge", "{:.0%}"),
            ],
        )


def confusions_table(confusion: np.ndarray, class_names: Sequence[str], n: int = 5) -> Table:
    """The n most frequent confusions (true class, predicted class), with their share of the true class."""
    return table(
        top_confusions(confusion, class_names, n),
        [
            ("true class", "true", "{}"),
            ("predicted as", "predicted", "{}"),
            ("images", "images", "{}"),
            ("share of the true class", "share", "{:.0%}"),
        ],
    )
