"""Notebook 05's comparison: the mean-box baseline, the original and improved single-box models and the
detector, each scored as a detector on the same test images, in the detector's input pixels.

`ModelComparison.build` runs the models and scores them with `metrics.evaluate_detections`;
`check_runs` verifies that the saved models score what their training runs reported; its methods give
the table, the bars, the numbers the notebook's sentences quote and the key figures. Models come in
as `predict.load_predictor` predictors, so importing this module does not start TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sprint2.analysis import largest_difference, per_class_rows
from sprint2.dataset import LoadedDataset
from sprint2.decode import Detections
from sprint2.metrics import (
    ImageErrors,
    PRCurve,
    evaluate_detections,
    image_errors,
    mean_box_baseline,
    pr_curves,
    single_box_detections,
)
from sprint2.predict import DETECTOR, Predictor, single_box_outputs, to_detections
from sprint2.table import Table, table

Row = dict[str, Any]

#: The comparison table's measures, all from metrics.evaluate_detections.
DETECTION_ROW_KEYS = ("map50", "map50_95", "coco_ap50", "ap75", "ap_small", "ap_medium", "ap_large")
#: Its columns: (header, key, format).
DETECTION_COLUMNS = [
    ("model", "model", "{}"),
    ("mAP@0.5", "map50", "{:.3f}"),
    ("mAP@[.5:.95]", "map50_95", "{:.3f}"),
    ("AP50", "coco_ap50", "{:.3f}"),
    ("AP75", "ap75", "{:.3f}"),
    ("AP small", "ap_small", "{:.3f}"),
    ("AP medium", "ap_medium", "{:.3f}"),
    ("AP large", "ap_large", "{:.3f}"),
    ("detections per image", "detections_per_image", "{:.1f}"),
    ("training (s)", "train_s", "{:.0f}"),
]
#: The baseline's score threshold: its one box per image always scores 1.
BASELINE_THRESHOLD = 0.5


def single_box_ceiling(ds: LoadedDataset) -> Row:
    """The most a one-box-per-image model can recall: one true positive per image that has an object.

    Counts the non-difficult boxes (the positives of the detection metrics): max_recall is the images
    holding at least one, over all of them (None without positives).
    """
    easy = [int((~np.asarray(hard, bool)).sum()) for hard in ds.difficult]
    objects, with_objects = int(sum(easy)), int(sum(k > 0 for k in easy))
    return {
        "images": len(ds),
        "objects": objects,
        "images_with_objects": with_objects,
        "max_recall": with_objects / objects if objects else None,
    }


def model_detections(
    predictor: Predictor, images: np.ndarray, *, score_threshold: float, batch_size: int = 32
) -> list[Detections]:
    """Detections per image in network-input pixels from a `predict.load_predictor` model, in batches.

    A detector's outputs are decoded with its card's settings and score_threshold; a single-box model
    gives its one box per image, scored by its class probability (metrics.single_box_detections), as
    training scores it. images must already be at the card's input size.
    """
    card = predictor.card
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:3]) != tuple(card.input_hw):
        raise ValueError(
            f"images of shape {images.shape} do not fit the model's input "
            f"{card.input_hw[0]}x{card.input_hw[1]}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dets: list[Detections] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].astype(np.float32)
        outputs = predictor(chunk)
        if card.kind == DETECTOR:
            none = [None] * len(chunk)
            dets += to_detections(outputs, card, none, none, score_threshold=score_threshold)
        else:
            dets += single_box_detections(*single_box_outputs(outputs, len(card.class_names)))
    return dets


def rescale_detections(
    detections: Sequence[Detections], from_hw: Sequence[int], to_hw: Sequence[int]
) -> list[Detections]:
    """Detections moved from one stretched input size to another, (height, width) each.

    Exact between two stretch resizes of the same images (each axis is a plain scale); a letterbox
    resize adds padding this cannot know about. IoU, and so mAP, is unchanged by it.
    """
    (fh, fw), (th, tw) = (tuple(int(v) for v in hw) for hw in (from_hw, to_hw))
    if min(fh, fw, th, tw) <= 0:
        raise ValueError(f"sizes must be positive, got {tuple(from_hw)} and {tuple(to_hw)}")
    scale = np.array([tw / fw, th / fh, tw / fw, th / fh], np.float64)
    return [Detections(np.asarray(d.boxes, np.float64) * scale, d.scores, d.labels) for d in detections]


def detection_rows(reports: Mapping[str, Mapping[str, Any]], train_seconds: Mapping[str, Any]) -> list[Row]:
    """One row per model from its evaluate_detections dict: DETECTION_ROW_KEYS, detections per image
    and the training seconds (None for a model that was not trained)."""
    return [
        {
            "model": name,
            **{k: r.get(k) for k in DETECTION_ROW_KEYS},
            "detections_per_image": r["detections"] / r["images"] if r["images"] else 0.0,
            "train_s": train_seconds.get(name),
        }
        for name, r in reports.items()
    ]


def pooled_errors(image_errors: Mapping[str, Sequence[int]]) -> Row:
    """True and false positives and misses summed over the images (evaluate_detections' image_errors),
    with the pooled precision and recall they give (None where undefined)."""
    tp, fp, fn = (int(np.sum(image_errors[k])) for k in ("tp", "fp", "fn"))
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }


def confusion_summary(confusion: np.ndarray) -> Row:
    """What a detection confusion matrix (classes, then background last) adds up to: objects found with
    the right class, found with a wrong class, missed (background column) and false detections
    (background row)."""
    counts = np.asarray(confusion, np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
        raise ValueError(f"expected a (C + 1, C + 1) matrix, got shape {counts.shape}")
    classes = counts[:-1, :-1]
    return {
        "objects": int(counts[:-1].sum()),
        "right_class": int(np.trace(classes)),
        "wrong_class": int(classes.sum() - np.trace(classes)),
        "missed": int(counts[:-1, -1].sum()),
        "false_detections": int(counts[-1, :-1].sum()),
    }


@dataclass(frozen=True)
class ModelComparison:
    """Every model's detections and evaluate_detections report on one test split.

    Each model is judged at its own score threshold: its card's (chosen on validation images), the
    baseline's BASELINE_THRESHOLD. `own_size_reports` scores the single-box models at their own input
    size, which is what their runs reported. `runs` holds run_training's metrics by model; the
    detector's run holds the baseline's scores too.
    """

    test: LoadedDataset
    detections: dict[str, list[Detections]]
    thresholds: dict[str, float]
    reports: dict[str, dict[str, Any]]
    own_size_reports: dict[str, dict[str, Any]]
    runs: Mapping[str, Mapping[str, Any]]
    threshold_source: str = "validation"

    @classmethod
    def build(
        cls,
        detector: Predictor,
        single_box: Mapping[str, Predictor],
        runs: Mapping[str, Mapping[str, Any]],
        train: LoadedDataset,
        test: LoadedDataset,
        small_test: LoadedDataset,
        score_floor: float | None = None,
    ) -> ModelComparison:
        """Detections and reports of the baseline (from train), the single_box models (run on small_test,
        the same images at their input size, boxes scaled to test's) and the detector (on test).

        score_floor: the detector's lowest score kept for mAP (None: training's, `tasks.DECODE`).
        """
        if score_floor is None:
            from sprint2.tasks import DECODE  # mAP counts every candidate that could matter

            score_floor = DECODE.score_floor
        if [str(p) for p in small_test.paths] != [str(p) for p in test.paths]:
            raise ValueError("the single-box test split holds other images than the detector's")
        own = {
            kind: model_detections(p, small_test.images, score_threshold=0.0)
            for kind, p in single_box.items()
        }
        detections = {
            "baseline": mean_box_baseline(train, len(test)),
            **{kind: rescale_detections(d, small_test.size, test.size) for kind, d in own.items()},
            "detector": model_detections(detector, test.images, score_threshold=score_floor),
        }
        thresholds = {
            "baseline": BASELINE_THRESHOLD,
            **{kind: p.card.score_threshold for kind, p in single_box.items()},
            "detector": detector.card.score_threshold,
        }
        reports = {
            name: evaluate_detections(dets, test, score_threshold=thresholds[name])
            for name, dets in detections.items()
        }
        own_size = {
            kind: evaluate_detections(dets, small_test, score_threshold=thresholds[kind])
            for kind, dets in own.items()
        }
        source = str(detector.card.extra.get("threshold_from", "validation"))
        return cls(test, detections, thresholds, reports, own_size, runs, source)

    def check_runs(self, tolerance: float = 1e-4) -> float:
        """The largest difference of mAP@0.5 and mAP@[.5:.95] from what the training runs reported.

        The single-box models are compared at their own input size: scaled boxes can move an IoU that
        sits exactly on a COCO threshold by a rounding error. ValueError when a run tested other images
        or a score differs by tolerance or more.
        """
        files = [str(p) for p in self.test.paths]
        other = [name for name, run in self.runs.items() if list(run["test_files"]) != files]
        if other:
            raise ValueError(f"these runs tested other images: {', '.join(other)}")
        reported = {"baseline": self.runs["detector"]["baseline"]}
        reported |= {name: run["test"] for name, run in self.runs.items()}
        ours = self.reports | self.own_size_reports
        gap = largest_difference({name: ours[name] for name in reported}, reported, ["map50", "map50_95"])
        if gap >= tolerance:
            raise ValueError(f"scores differ from the training runs' by {gap}")
        return gap

    def table(self) -> Table:
        """DETECTION_COLUMNS for every model, with its run's training seconds."""
        seconds = {name: run["train_seconds"] for name, run in self.runs.items()}
        return table(detection_rows(self.reports, seconds), DETECTION_COLUMNS)

    def map_bars(self) -> dict[str, dict[str, float]]:
        """{model: {"mAP@0.5": ..., "mAP@[.5:.95]": ...}}, the shape viz.plot_grouped_bars takes."""
        return {n: {"mAP@0.5": r["map50"], "mAP@[.5:.95]": r["map50_95"]} for n, r in self.reports.items()}

    def pooled(self, name: str = "detector") -> Row:
        """A model's true and false positives and misses over the test split at its threshold."""
        return pooled_errors(self.reports[name]["image_errors"])

    def per_class_table(self, name: str = "detector", against: str = "improved") -> Table:
        """Per class: test objects, the model's AP, precision and recall, and another model's AP@0.5."""
        report = self.reports[name]
        keys = ("positives", "ap50", "ap50_95", "precision", "recall")
        values = {k: report[k] for k in keys} | {"other_ap50": self.reports[against]["ap50"]}
        return table(
            per_class_rows(values, self.test.class_names),
            [
                ("class", "class", "{}"),
                ("test objects", "positives", "{}"),
                ("AP@0.5", "ap50", "{:.3f}"),
                ("AP@[.5:.95]", "ap50_95", "{:.3f}"),
                ("precision", "precision", "{:.1%}"),
                ("recall", "recall", "{:.1%}"),
                (f"{against} model's AP@0.5", "other_ap50", "{:.3f}"),
            ],
        )

    def summary_facts(self) -> Row:
        """For the headline sentence: every model's report by name, the test images, each model's pooled
        recall ("recall_<model>", 0 when undefined) and the single-box ceiling on recall."""
        ceiling = single_box_ceiling(self.test)["max_recall"]
        recalls = {f"recall_{name}": self.pooled(name)["recall"] or 0.0 for name in self.reports}
        return {**self.reports, "images": len(self.test), **recalls, "ceiling": ceiling or 0.0}

    def threshold_facts(self, name: str = "detector") -> Row:
        """A model's threshold, where it was chosen, detections kept and its pooled counts and rates."""
        pooled = self.pooled(name)
        return {
            **pooled,
            "threshold": self.thresholds[name],
            "source": self.threshold_source,
            "kept": pooled["tp"] + pooled["fp"],
            "precision": pooled["precision"] or 0.0,
            "recall": pooled["recall"] or 0.0,
        }

    def confusion_facts(self, name: str = "detector") -> Row:
        """confusion_summary of a model's confusion matrix with the background class."""
        return confusion_summary(self.reports[name]["confusion"])

    def curves(self, name: str = "detector") -> dict[str, PRCurve]:
        """A model's per-class precision-recall curves on the test split."""
        return pr_curves(self.detections[name], self.test)

    def errors(self, name: str = "detector") -> ImageErrors:
        """A model's true and false positives and misses per test image, at its threshold."""
        return image_errors(self.detections[name], self.test, self.thresholds[name])

    def figures(self) -> Row:
        """Key figures: test images, every model's mAPs, every run's training seconds, and the detector's
        threshold with its pooled precision and recall."""
        pooled = self.pooled("detector")
        return {
            "test_images": len(self.test),
            **{f"{n}_{k}": r[k] for n, r in self.reports.items() for k in ("map50", "map50_95")},
            **{f"{n}_train_s": run["train_seconds"] for n, run in self.runs.items()},
            "score_threshold": self.thresholds["detector"],
            "detector_precision": pooled["precision"],
            "detector_recall": pooled["recall"],
        }
