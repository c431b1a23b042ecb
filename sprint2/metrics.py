"""Detection metrics for a multi-object detector: VOC mAP@0.5, COCO metrics and one threshold's errors.

Detections are one `sprint2.decode.Detections` per image; ground truth is a `LoadedDataset` or the
three lists (boxes, labels, difficult), both in the same pixel space. Single-box models are scored by
the same code through `single_box_detections` and `mean_box_baseline`. Importing this module needs
NumPy only: pycocotools and `sprint2.images` (which loads OpenCV) are imported where they are used.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sprint2.dataset import LoadedDataset
from sprint2.decode import Detections

logger = logging.getLogger(__name__)

#: A detection's match: the index of its ground-truth box, or one of these two.
UNMATCHED = -1
IGNORED = -2  # its best match is a `difficult` box: neither true nor false positive

BACKGROUND = "background"

GroundTruth = LoadedDataset | Sequence[Any]


@dataclass(frozen=True)
class _Truth:
    """Validated ground truth: per image (K_i, 4) float64 boxes, int64 labels, bool difficult flags."""

    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    difficult: list[np.ndarray]
    class_names: list[str]

    def positives(self, c: int) -> int:
        """Non-difficult boxes of class c over all images."""
        return int(sum(((lab == c) & ~hard).sum() for lab, hard in zip(self.labels, self.difficult)))


def _check_boxes(boxes: np.ndarray, where: str) -> None:
    if not np.isfinite(boxes).all():
        raise ValueError(f"{where}: boxes hold non-finite coordinates")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        raise ValueError(f"{where}: box {int(np.argmax(bad))} has xmax < xmin or ymax < ymin")


def _prepare(
    detections: Sequence[Detections], ground_truth: GroundTruth, class_names: Sequence[str] | None
) -> tuple[list[Detections], _Truth]:
    """Checks that detections and ground truth describe the same images and classes, with clear errors.

    Without class names (lists given without `class_names`), classes are "0".."C-1" with C one more
    than the largest label seen in either input.
    """
    if hasattr(ground_truth, "boxes") and hasattr(ground_truth, "labels"):
        boxes, labels = ground_truth.boxes, ground_truth.labels
        difficult = getattr(ground_truth, "difficult", None)
        if class_names is None:
            class_names = getattr(ground_truth, "class_names", None)
    elif isinstance(ground_truth, Sequence) and len(ground_truth) == 3:
        boxes, labels, difficult = ground_truth
    else:
        raise ValueError("ground truth must be a LoadedDataset or a (boxes, labels, difficult) triple")
    if not difficult:
        difficult = [np.zeros(len(np.asarray(lab).reshape(-1)), bool) for lab in labels]
    if not len(boxes) == len(labels) == len(difficult):
        raise ValueError(
            f"ground truth: {len(boxes)} box lists, {len(labels)} label lists, "
            f"{len(difficult)} difficult lists"
        )
    dets = list(detections)
    if len(dets) != len(boxes):
        raise ValueError(f"{len(dets)} detection sets for {len(boxes)} ground-truth images")
    t_boxes, t_labels, t_hard = [], [], []
    for i, (b, lab, hard) in enumerate(zip(boxes, labels, difficult)):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        lab = np.asarray(lab, np.int64).reshape(-1)
        hard = np.asarray(hard, bool).reshape(-1)
        if not len(b) == len(lab) == len(hard):
            raise ValueError(f"ground-truth image {i}: {len(b)} boxes, {len(lab)} labels, {len(hard)} flags")
        _check_boxes(b, f"ground-truth image {i}")
        t_boxes.append(b), t_labels.append(lab), t_hard.append(hard)
    for i, d in enumerate(dets):
        if not isinstance(d, Detections):
            raise ValueError(
                f"detections of image {i}: expected sprint2.decode.Detections, got {type(d).__name__}"
            )
        _check_boxes(d.boxes, f"detections of image {i}")
        if not np.isfinite(d.scores).all():
            raise ValueError(f"detections of image {i}: non-finite scores")
    if class_names is None:
        top = max((int(v.max()) for v in t_labels + [d.labels for d in dets] if len(v)), default=-1)
        class_names = [str(c) for c in range(top + 1)]
    n_classes = len(class_names)
    for what, per_image in (("ground-truth", t_labels), ("detection", [d.labels for d in dets])):
        for i, lab in enumerate(per_image):
            bad = (lab < 0) | (lab >= n_classes)
            if bad.any():
                raise ValueError(
                    f"{what} labels of image {i}: {int(lab[bad][0])} is outside 0..{n_classes - 1} "
                    f"({n_classes} classes)"
                )
    return dets, _Truth(t_boxes, t_labels, t_hard, list(class_names))


def _iou_matrix(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """(D, G) IoU of every detection with every ground-truth box, through images.box_iou's broadcasting."""
    from sprint2.images import box_iou

    return box_iou(det_boxes.reshape(-1, 1, 4), gt_boxes.reshape(1, -1, 4))


def _match_image(
    det: Detections,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_hard: np.ndarray,
    iou_threshold: float,
    class_aware: bool = True,
) -> np.ndarray:
    """Greedy matching of one image, highest score first (stable on ties): per detection, in input order,
    the index of the ground-truth box it matched, UNMATCHED or IGNORED.

    Each detection takes the best ground truth (of its class when class_aware; the first on IoU ties)
    among the non-difficult boxes not matched yet and all difficult boxes; with IoU >= iou_threshold it
    is a match, and a difficult best match makes it IGNORED (difficult boxes never become matched).
    """
    result = np.full(len(det), UNMATCHED, np.int64)
    if len(det) == 0 or len(gt_boxes) == 0:
        return result
    iou = _iou_matrix(det.boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-det.scores, kind="stable"):
        allowed = ~taken & ((gt_labels == det.labels[d]) if class_aware else True)
        row = np.where(allowed, iou[d], -1.0)
        j = int(np.argmax(row))
        if row[j] < iou_threshold:
            continue
        if gt_hard[j]:
            result[d] = IGNORED
        else:
            result[d] = j
            taken[j] = True
    return result


def _match_all(
    dets: list[Detections], truth: _Truth, iou_threshold: float, class_aware: bool
) -> list[np.ndarray]:
    return [
        _match_image(d, b, lab, hard, iou_threshold, class_aware)
        for d, b, lab, hard in zip(dets, truth.boxes, truth.labels, truth.difficult)
    ]


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+): the area under the precision envelope, the running maximum
    of precision taken from the highest recall down. 0.0 for an empty curve."""
    recall = np.asarray(recall, np.float64).reshape(-1)
    precision = np.asarray(precision, np.float64).reshape(-1)
    if recall.size == 0:
        return 0.0
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass
class PRCurve:
    """One class's precision-recall curve: its detections by descending score, IGNORED ones left out.

    recall is NaN throughout when the class has no positives (non-difficult ground-truth boxes).
    """

    scores: np.ndarray  # (D,) float64, descending
    tp: np.ndarray  # (D,) bool, True for a true positive
    images: np.ndarray  # (D,) int64, the image each detection belongs to
    positives: int
    precision: np.ndarray  # (D,) float64, precision of the top k+1 detections
    recall: np.ndarray  # (D,) float64

    @classmethod
    def from_matches(cls, scores: np.ndarray, tp: np.ndarray, images: np.ndarray, positives: int) -> PRCurve:
        """Sorts by descending score (stable: image order, then detection order, on ties, as COCO does)."""
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        scores, tp, images = np.asarray(scores, np.float64)[order], np.asarray(tp, bool)[order], images[order]
        ctp = np.cumsum(tp, dtype=np.float64)
        precision = ctp / np.arange(1, len(tp) + 1, dtype=np.float64)
        recall = ctp / positives if positives else np.full(len(tp), np.nan)
        return cls(scores, tp, np.asarray(images, np.int64), positives, precision, recall)

    @property
    def ap(self) -> float | None:
        """All-point interpolated AP; None without positives (AP is undefined)."""
        return average_precision(self.recall, self.precision) if self.positives else None

    def at(self, score_threshold: float) -> tuple[float | None, float | None]:
        """(precision, recall) of the detections scoring >= score_threshold; None where undefined
        (precision with no such detection, recall with no positives)."""
        kept = self.scores >= score_threshold
        tp = int(self.tp[kept].sum())
        n = int(kept.sum())
        return (tp / n if n else None), (tp / self.positives if self.positives else None)


def _curves(dets: list[Detections], truth: _Truth, matches: list[np.ndarray]) -> dict[str, PRCurve]:
    curves = {}
    image_of = np.concatenate(
        [np.full(len(d), i, np.int64) for i, d in enumerate(dets)] + [np.zeros(0, np.int64)]
    )
    scores = np.concatenate([d.scores for d in dets] + [np.zeros(0, np.float32)])
    labels = np.concatenate([d.labels for d in dets] + [np.zeros(0, np.int32)])
    match = np.concatenate(matches + [np.zeros(0, np.int64)])
    for c, name in enumerate(truth.class_names):
        mine = (labels == c) & (match != IGNORED)
        curves[name] = PRCurve.from_matches(
            scores[mine], match[mine] >= 0, image_of[mine], truth.positives(c)
        )
    return curves


def pr_curves(
    detections: Sequence[Detections],
    ground_truth: GroundTruth,
    *,
    iou_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> dict[str, PRCurve]:
    """Per-class precision-recall curves under VOC matching (see `voc_ap`), as arrays for plotting."""
    dets, truth = _prepare(detections, ground_truth, class_names)
    return _curves(dets, truth, _match_all(dets, truth, iou_threshold, class_aware=True))


def _voc_summary(curves: dict[str, PRCurve]) -> tuple[dict[str, float | None], float | None]:
    aps = {name: curve.ap for name, curve in curves.items()}
    valid = [a for a in aps.values() if a is not None]
    return aps, (float(np.mean(valid)) if valid else None)


def voc_ap(
    detections: Sequence[Detections],
    ground_truth: GroundTruth,
    *,
    iou_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> tuple[dict[str, float | None], float | None]:
    """VOC AP per class and their mean over the classes that have positives (None when none has).

    Per class, detections are taken by descending score over all images; each is matched greedily to
    the best not-yet-matched ground truth of its class with IoU >= iou_threshold. One whose best match
    is a `difficult` box counts neither as TP nor FP, and difficult boxes are not positives. AP is the
    all-point interpolated area (`average_precision`); a class without positives gets None. Unlike the
    2012 devkit, a detection whose best box is already taken may still match the next-best free one.
    """
    return _voc_summary(
        pr_curves(detections, ground_truth, iou_threshold=iou_threshold, class_names=class_names)
    )


def precision_recall_at(
    detections: Sequence[Detections],
    ground_truth: GroundTruth,
    score_threshold: float,
    *,
    iou_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Per-class precision and recall of the detections scoring >= score_threshold, under VOC matching.

    Matching highest score first means keeping only those detections matches them the same way.
    """
    curves = pr_curves(detections, ground_truth, iou_threshold=iou_threshold, class_names=class_names)
    pairs = {name: curve.at(score_threshold) for name, curve in curves.items()}
    return {k: p for k, (p, _) in pairs.items()}, {k: r for k, (_, r) in pairs.items()}


@dataclass
class ImageErrors:
    """Per-image counts at one score threshold under VOC matching: true positives, false positives and
    missed non-difficult ground truth (false negatives)."""

    tp: np.ndarray  # (N,) int64
    fp: np.ndarray
    fn: np.ndarray

    def worst(self, n: int) -> list[int]:
        """Up to n images with any error: most errors (FP + FN) first, then most misses, then by index."""
        errors = self.fp + self.fn
        order = np.lexsort((np.arange(len(errors)), -self.fn, -errors))
        return [int(i) for i in order if errors[i] > 0][:n]


def _image_errors(
    dets: list[Detections], truth: _Truth, matches: list[np.ndarray], score_threshold: float
) -> ImageErrors:
    tp, fp, fn = (np.zeros(len(dets), np.int64) for _ in range(3))
    for i, (d, match, hard) in enumerate(zip(dets, matches, truth.difficult)):
        kept = d.scores >= score_threshold
        tp[i] = int((kept & (match >= 0)).sum())
        fp[i] = int((kept & (match == UNMATCHED)).sum())
        fn[i] = int((~hard).sum()) - tp[i]
    return ImageErrors(tp, fp, fn)


def image_errors(
    detections: Sequence[Detections],
    ground_truth: GroundTruth,
    score_threshold: float,
    *,
    iou_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> ImageErrors:
    """TP, FP and FN per image among the detections scoring >= score_threshold (VOC matching, IGNORED
    detections in no count), to rank the worst images for a gallery with `ImageErrors.worst`."""
    dets, truth = _prepare(detections, ground_truth, class_names)
    return _image_errors(
        dets, truth, _match_all(dets, truth, iou_threshold, class_aware=True), score_threshold
    )


def _confusion(
    dets: list[Detections], truth: _Truth, score_threshold: float, iou_threshold: float
) -> np.ndarray:
    n = len(truth.class_names)
    matrix = np.zeros((n + 1, n + 1), np.int64)
    for d, b, lab, hard in zip(dets, truth.boxes, truth.labels, truth.difficult):
        kept = d.scores >= score_threshold
        d = Detections(d.boxes[kept], d.scores[kept], d.labels[kept])
        match = _match_image(d, b, lab, hard, iou_threshold, class_aware=False)
        hit = match >= 0
        np.add.at(matrix, (lab[match[hit]], d.labels[hit]), 1)
        np.add.at(matrix, (n, d.labels[match == UNMATCHED]), 1)
        missed = np.ones(len(b), bool)
        missed[match[hit]] = False
        np.add.at(matrix, (lab[missed & ~hard], n), 1)
    return matrix


def confusion_matrix(
    detections: Sequence[Detections],
    ground_truth: GroundTruth,
    score_threshold: float,
    *,
    iou_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Detection confusion matrix (C + 1, C + 1) and its labels (the classes, then "background").

    Rows are ground-truth classes, columns predicted classes; the last row and column are background.
    Per image, the detections scoring >= score_threshold are matched by `voc_ap`'s greedy rule but
    regardless of class (best free box of any class, IoU >= iou_threshold). A detection of class p
    matched to a box of class g adds 1 to [g, p]; an unmatched one adds 1 to [background, p]; a
    non-difficult box left unmatched adds 1 to [g, background]. Detections whose best match is a
    difficult box, and unmatched difficult boxes, are not counted; [background, background] stays 0.
    """
    dets, truth = _prepare(detections, ground_truth, class_names)
    return _confusion(dets, truth, score_threshold, iou_threshold), [*truth.class_names, BACKGROUND]


def _coco_mean(precision: np.ndarray) -> float | None:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _coco(dets: list[Detections], truth: _Truth, max_detections: int) -> dict[str, Any]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box: np.ndarray) -> list[float]:
        x0, y0, x1, y1 = (float(v) for v in box)
        return [x0, y0, x1 - x0, y1 - y0]

    # Ids start at 1: COCOeval stores matched ids in zero-initialised arrays, so an id 0 reads as unmatched.
    images = [{"id": i + 1} for i in range(len(dets))]
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(truth.class_names)]
    gt_anns, dt_anns = [], []
    for i, (b, lab, hard) in enumerate(zip(truth.boxes, truth.labels, truth.difficult)):
        for box, c, crowd in zip(b, lab, hard):
            x, y, w, h = xywh(box)
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
    for i, d in enumerate(dets):
        for box, score, c in zip(d.boxes, d.scores, d.labels):
            x, y, w, h = xywh(box)
            dt_anns.append(
                {
                    "id": len(dt_anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "score": float(score),
                }
            )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
        # What COCO.loadRes builds from a result list; built directly because loadRes fails on an empty one.
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dt_anns}
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
    logger.debug("pycocotools: %s", out.getvalue().strip())
    params = evaluator.params
    precision = evaluator.eval["precision"][..., -1]  # (IoU thresholds, recall points, classes, areas)
    at50 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
    at75 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.75))[0])
    area = {label: k for k, label in enumerate(params.areaRngLbl)}
    return {
        "map50_95": _coco_mean(precision[:, :, :, area["all"]]),
        "ap50": _coco_mean(precision[at50, :, :, area["all"]]),
        "ap75": _coco_mean(precision[at75, :, :, area["all"]]),
        "ap_small": _coco_mean(precision[:, :, :, area["small"]]),
        "ap_medium": _coco_mean(precision[:, :, :, area["medium"]]),
        "ap_large": _coco_mean(precision[:, :, :, area["large"]]),
        "per_class_ap50_95": {
            name: _coco_mean(precision[:, :, k, area["all"]]) for k, name in enumerate(truth.class_names)
        },
        "per_class_ap50": {
            name: _coco_mean(precision[at50, :, k, area["all"]]) for k, name in enumerate(truth.class_names)
        },
    }


def coco_metrics(
    detections: Sequence[Detections],
    ground_truth: GroundTruth,
    *,
    class_names: Sequence[str] | None = None,
    max_detections: int = 100,
) -> dict[str, Any]:
    """COCO box metrics from pycocotools: map50_95 (AP@[.5:.95]), ap50, ap75, ap_small/medium/large, and
    per_class_ap50_95 / per_class_ap50; None where no class has positives.

    COCO interpolates precision at 101 recall points. Small/medium/large split at areas 32**2 and 96**2
    square pixels *of the evaluated images* (resized ones give other objects than COCO's originals);
    a box of area exactly 32**2 or 96**2 counts in both neighbouring ranges, as pycocotools does.
    At most max_detections per image and class are kept, highest scores first.

    Difficult boxes go in as `iscrowd`: pycocotools overwrites an annotation's `ignore` key with its
    `iscrowd` flag, so `ignore` alone changes nothing. Like VOC, a crowd box is no positive and any
    number of detections on it are ignored; unlike VOC, a detection prefers a free non-crowd box that
    reaches the threshold over a crowd box, and overlap with a crowd box is intersection over the
    detection's own area rather than IoU. pycocotools' prints go to this module's debug log.
    """
    dets, truth = _prepare(detections, ground_truth, class_names)
    return _coco(dets, truth, max_detections)


def single_box_detections(probs: np.ndarray, boxes: np.ndarray) -> list[Detections]:
    """One detection per image from a single-box model: the argmax class, its probability as the score."""
    probs = np.asarray(probs, np.float32)
    boxes = np.asarray(boxes, np.float32)
    if probs.ndim != 2 or probs.shape[1] == 0 or boxes.shape != (len(probs), 4):
        raise ValueError(f"expected probs (N, C>0) and boxes (N, 4), got {probs.shape} and {boxes.shape}")
    classes = probs.argmax(1)
    return [
        Detections(boxes[i : i + 1], probs[i, classes[i] : classes[i] + 1], classes[i : i + 1])
        for i in range(len(probs))
    ]


def mean_box_baseline(train: GroundTruth, n_images: int) -> list[Detections]:
    """The do-nothing detector: for each of n_images, the mean training box of the majority class
    (both over the non-difficult training boxes; the lowest class index on a tie) with score 1."""
    if hasattr(train, "boxes") and hasattr(train, "labels"):
        boxes, labels, difficult = train.boxes, train.labels, getattr(train, "difficult", None)
    else:
        boxes, labels, difficult = train
    if not difficult:
        difficult = [np.zeros(len(np.asarray(lab).reshape(-1)), bool) for lab in labels]
    all_boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes] + [np.zeros((0, 4))])
    all_labels = np.concatenate(
        [np.asarray(lab, np.int64).reshape(-1) for lab in labels] + [np.zeros(0, np.int64)]
    )
    easy = ~np.concatenate([np.asarray(h, bool).reshape(-1) for h in difficult] + [np.zeros(0, bool)])
    if len(all_labels) != len(all_boxes) or len(easy) != len(all_boxes):
        raise ValueError("training set: boxes, labels and difficult flags differ in count")
    if not easy.any():
        raise ValueError("the training set has no non-difficult boxes to take a baseline from")
    majority = int(np.bincount(all_labels[easy]).argmax())
    mean_box = all_boxes[easy & (all_labels == majority)].mean(0)
    return [Detections(mean_box[None], [1.0], [majority]) for _ in range(n_images)]


def _plain(value: float | None) -> float | None:
    return None if value is None else float(value)


def evaluate_detections(
    detections: Sequence[Detections],
    ground_truth: GroundTruth,
    *,
    score_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    max_detections: int = 100,
    worst: int = 12,
) -> dict[str, Any]:
    """Every detection metric in one JSON-ready dict (plain floats, ints, lists; None where undefined).

    map50 / ap50 (per class): VOC AP@0.5 (`voc_ap`); map50_95, coco_ap50, ap75, ap_small, ap_medium,
    ap_large and ap50_95 (per class): pycocotools (`coco_metrics`); precision, recall, confusion,
    image_errors and worst_images: at score_threshold (`precision_recall_at`, `confusion_matrix`,
    `image_errors`), all at IoU 0.5.
    """
    dets, truth = _prepare(detections, ground_truth, class_names)
    matches = _match_all(dets, truth, 0.5, class_aware=True)
    curves = _curves(dets, truth, matches)
    ap50, map50 = _voc_summary(curves)
    coco = _coco(dets, truth, max_detections)
    pairs = {name: curve.at(score_threshold) for name, curve in curves.items()}
    errors = _image_errors(dets, truth, matches, score_threshold)
    return {
        "images": len(dets),
        "detections": int(sum(len(d) for d in dets)),
        "class_names": list(truth.class_names),
        "positives": {name: curve.positives for name, curve in curves.items()},
        "score_threshold": float(score_threshold),
        "map50": _plain(map50),
        "ap50": {k: _plain(v) for k, v in ap50.items()},
        "map50_95": coco["map50_95"],
        "coco_ap50": coco["ap50"],
        "ap75": coco["ap75"],
        "ap_small": coco["ap_small"],
        "ap_medium": coco["ap_medium"],
        "ap_large": coco["ap_large"],
        "ap50_95": coco["per_class_ap50_95"],
        "precision": {k: p for k, (p, _) in pairs.items()},
        "recall": {k: r for k, (_, r) in pairs.items()},
        "confusion": _confusion(dets, truth, score_threshold, 0.5).tolist(),
        "confusion_labels": [*truth.class_names, BACKGROUND],
        "image_errors": {"tp": errors.tp.tolist(), "fp": errors.fp.tolist(), "fn": errors.fn.tolist()},
        "worst_images": errors.worst(worst),
    }
