"""A detector training run as notebooks 05 and 06 use it: the plan the data asks for, a fresh run, its
summary and key figures, what its heads output on one image, and the saved detector 06 quantizes.

Light at import: TensorFlow starts when a run trains, a model loads or targets are built.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sprint2.analysis import key_value_table
from sprint2.dataset import LoadedDataset
from sprint2.experiment import plan_detector, run_training
from sprint2.images import target_size
from sprint2.loading import LoadOptions
from sprint2.modelcard import ModelCard
from sprint2.predict import Predictor
from sprint2.recipes import RECIPES
from sprint2.schedule import DataStats, Schedule
from sprint2.splits import load_run_splits, train_samples
from sprint2.table import Table

Row = dict[str, Any]


def train_fresh(data: Path, out_dir: Path, **options: Any) -> dict[str, Any]:
    """run_training(data, out_dir=out_dir, **options) into an emptied out_dir.

    A run resumes from the checkpoints it finds in its folder, so a fresh run empties it first.
    """
    shutil.rmtree(out_dir, ignore_errors=True)
    return run_training(data, out_dir=out_dir, **options)


@dataclass(frozen=True)
class DetectorPlan:
    """The detector's schedule for a dataset (`sprint2.schedule`, from the annotations of the images the
    run trains on) and the input size a run uses: the schedule's, or the `size` asked for."""

    data: Path
    seed: int
    stats: DataStats
    schedule: Schedule
    input_hw: tuple[int, int]

    @classmethod
    def from_data(
        cls,
        data: Path,
        seed: int,
        replicas: int,
        size: int | tuple[int, int] | None = None,
        *,
        time_budget_s: float | None = None,
        precision: str = "auto",
    ) -> DetectorPlan:
        """Reads the training annotations of data by run_training's split rule and plans the run as
        run_training would for this budget (None: the default one) and precision ("auto": this
        machine's choice)."""
        samples = train_samples(data, seed, None, RECIPES["detector"].val_fraction)
        stats, schedule = plan_detector(samples, replicas, time_budget_s, precision)
        input_hw = schedule.input_hw if size is None else target_size(size)
        return cls(Path(data), seed, stats, schedule, (int(input_hw[0]), int(input_hw[1])))

    def load_options(self, cache_dir: Path | None = None) -> LoadOptions:
        """Loading at the planned input size, bad files skipped, decoded arrays cached in cache_dir."""
        return LoadOptions(size=self.input_hw, errors="skip", cache_dir=cache_dir)

    def load_splits(
        self, cache_dir: Path | None = None
    ) -> tuple[LoadedDataset, LoadedDataset | None, LoadedDataset]:
        """(train, validation or None, test) as run_training loads them for the detector."""
        fraction = RECIPES["detector"].val_fraction
        train, val, test, _ = load_run_splits(
            self.data, self.seed, self.load_options(cache_dir), None, fraction
        )
        return train, val, test

    def rows(self) -> Row:
        """What the schedule read from the data, what it planned and the input size used."""
        plan = self.schedule
        return {
            "training images": self.stats.images,
            "objects": self.stats.objects,
            "median image (h, w), px": [round(v) for v in self.stats.image_hw],
            "small objects' shorter side, px": self.stats.small_side,
            "schedule: input (h, w)": list(plan.input_hw),
            "input used (h, w)": list(self.input_hw),
            "schedule: batch per replica": plan.batch_size,
            "schedule: epochs at most": plan.epochs,
            "schedule: learning rate": plan.learning_rate,
            "schedule: time budget (s)": plan.time_budget_s,
            "schedule: planned input pixels/s": plan.pixel_rate,
        }

    def table(self) -> Table:
        return key_value_table("detector schedule", self.rows())


@dataclass(frozen=True)
class DetectorRun:
    """run_training's metrics of a detector, with the saved model's card, path, size and cost."""

    metrics: Mapping[str, Any]
    card: ModelCard
    model_path: Path
    parameters: int
    gflops: float  # forward pass, per image

    @classmethod
    def of(cls, metrics: Mapping[str, Any], predictor: Any) -> DetectorRun:
        """From the run's metrics and its model loaded by `predict.load_predictor` (a KerasPredictor)."""
        from sprint2.model import model_flops

        model = predictor.model
        flops = model_flops(model)["forward_flops"]
        return cls(metrics, predictor.card, Path(predictor.path), int(model.count_params()), flops / 1e9)

    def rows(self) -> Row:
        """How the run went: strategy, splits, epochs, time, speed, size and the chosen threshold."""
        m, card = self.metrics, self.card
        return {
            "strategy": f"{m['strategy']} x{m['replicas']}",
            "precision (trained / saved)": f"{m['precision']} / float32",
            "input (h, w)": m["input_hw"],
            "train / val / test images": f"{m['train_images']} / {m['val_images']} / {m['test_images']}",
            "validation images from": m["val_source"],
            "epochs run (planned)": f"{m['epochs']} ({m['planned_epochs']})",
            "best epoch (val mAP@0.5)": f"{m['best_epoch']} ({m['best_val_map50'] or 0:.3f})",
            "first epoch, with tracing (s)": round(m["first_epoch_s"], 1),
            "training (s)": round(m["train_seconds"], 1),
            "images/s (after the first epoch)": round(m["images_per_s"], 1),
            "parameters": f"{self.parameters:,}",
            "forward GFLOPs per image": round(self.gflops, 3),
            "score threshold (from)": f"{card.score_threshold:.3f} ({card.extra.get('threshold_from')})",
        }

    def table(self) -> Table:
        return key_value_table("detector run", self.rows())

    def history(self) -> list[dict]:
        """history.csv beside the model: one row per epoch (losses, validation mAP@0.5)."""
        from sprint2.training import read_history

        return read_history(self.model_path.parent / "history.csv")

    def facts(self) -> Row:
        """The metrics for a sentence, with a best validation mAP of 0 for a run without validation."""
        return {**self.metrics, "best_val_map50": self.metrics["best_val_map50"] or 0.0}

    def figures(self) -> Row:
        """Key figures: epochs, training speed, parameters, GFLOPs and where the model is."""
        return {
            "detector_epochs": self.metrics["epochs"],
            "detector_images_per_s": self.metrics["images_per_s"],
            "detector_parameters": self.parameters,
            "detector_gflops": self.gflops,
            "detector_model": str(self.model_path),
        }


def heatmaps(predictor: Predictor, ds: LoadedDataset, index: int = 0) -> dict[str, np.ndarray]:
    """For image index of ds (at the detector's input size): the heatmap training asks for and the one
    the detector predicts, each the maximum over the classes (one bump per object)."""
    from sprint2.decode import split_outputs
    from sprint2.targets import build_targets

    num_classes = len(ds.class_names)
    heat, _, _ = split_outputs(predictor(np.asarray(ds.images[index : index + 1], np.float32)), num_classes)
    boxes = np.asarray(ds.boxes[index], np.float32).reshape(1, -1, 4)
    target = build_targets(
        boxes,
        np.asarray(ds.labels[index]).reshape(1, -1),
        np.ones(boxes.shape[:2], bool),
        np.asarray(ds.difficult[index], bool).reshape(1, -1),
        num_classes=num_classes,
        input_hw=tuple(ds.size),
    )
    return {"target heatmap": np.asarray(target["heatmap"][0]).max(-1), "predicted heatmap": heat[0].max(-1)}


@dataclass(frozen=True)
class SavedDetector:
    """The detector notebook 06 quantizes: notebook 05's model, or a stand-in trained when it is missing."""

    path: Path
    stand_in: bool

    @classmethod
    def find_or_train(
        cls,
        out: Path,
        model_path: Path | str | None,
        data: Path,
        *,
        size: int | tuple[int, int] | None = None,
        epochs: int | None = None,
        width: float | None = None,
    ) -> SavedDetector:
        """model_path, else out/models/detector/model.keras (notebook 05's); when that file is missing,
        a stand-in trained (or resumed) by run_training in out/models/detector-standalone."""
        path = Path(model_path or Path(out) / "models" / "detector" / "model.keras")
        if path.is_file():
            return cls(path, False)
        path = Path(out) / "models" / "detector-standalone" / "model.keras"
        load = LoadOptions(size=size, errors="skip") if size else None
        run_training(data, model="detector", out_dir=path.parent, load=load, epochs=epochs, width=width)
        return cls(path, True)

    @property
    def card(self) -> ModelCard:
        return ModelCard.read(self.path)

    def facts(self) -> Row:
        """For a sentence: the file, where it came from, parameters, input size, classes, size in MB."""
        from sprint2.model import load_model

        card = self.card
        return {
            "file": self.path,
            "origin": "a stand-in trained here, not notebook 05's model"
            if self.stand_in
            else "notebook 05's",
            "params": load_model(self.path).count_params(),
            "h": card.input_hw[0],
            "w": card.input_hw[1],
            "classes": ", ".join(card.class_names),
            "mb": self.path.stat().st_size / 1e6,
        }
