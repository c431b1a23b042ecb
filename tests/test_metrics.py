"""Detection metrics on hand-made detections whose answers are worked out by hand, and VOC against COCO."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sprint2.dataset import LoadedDataset
from sprint2.decode import Detections
from sprint2.metrics import (
    BACKGROUND,
    IGNORED,
    UNMATCHED,
    _match_image,
    average_precision,
    coco_metrics,
    confusion_matrix,
    evaluate_detections,
    image_errors,
    mean_box_baseline,
    pr_curves,
    precision_recall_at,
    single_box_detections,
    voc_ap,
)


def _dataset(
    boxes: list, labels: list, difficult: list | None = None, names: tuple = ("cat", "dog")
) -> LoadedDataset:
    return LoadedDataset(
        images=np.zeros((len(boxes), 8, 8, 3), np.uint8),
        boxes=[np.asarray(b, np.float32).reshape(-1, 4) for b in boxes],
        labels=[np.asarray(lab, np.int32) for lab in labels],
        class_names=list(names),
        paths=[Path(f"img{i}.jpg") for i in range(len(boxes))],
        difficult=difficult or [],
    )


def _dets(rows: list[tuple[list[float], float, int]]) -> Detections:
    """Detections from (box, score, label) rows."""
    return Detections([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


CAT, DOG = 0, 1


@pytest.fixture()
def scene() -> tuple[list[Detections], LoadedDataset]:
    """Two images. Image 0: cat A, a difficult cat B, dog C; image 1: cats D and E. Seven cat detections:
    0.95 on A (TP), 0.90 on D (TP), 0.85 on A again (FP), 0.80 on the difficult B (ignored), 0.75 on
    nothing (FP), 0.70 on E (TP), 0.60 a cat on the dog C (FP for cat; a dog/cat confusion)."""
    a, b, c = [0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]
    d, e = [0, 0, 20, 20], [40, 40, 60, 60]
    truth = _dataset(
        [[a, b, c], [d, e]], [[CAT, CAT, DOG], [CAT, CAT]], [[False, True, False], [False, False]]
    )
    dets = [
        _dets([(a, 0.95, CAT), (a, 0.85, CAT), (b, 0.80, CAT), (c, 0.60, CAT)]),
        _dets([(d, 0.90, CAT), ([100, 100, 110, 110], 0.75, CAT), (e, 0.70, CAT)]),
    ]
    return dets, truth


# Cat's sequence without the ignored detection: TP TP FP FP TP FP over 3 positives. Precision
# 1, 1, 2/3, 1/2, 3/5, 1/2 at recall 1/3, 2/3, 2/3, 2/3, 1, 1; the envelope is 1 up to recall 2/3, then 3/5.
SCENE_CAT_VOC = 1 / 3 + 1 / 3 + (1 / 3) * (3 / 5)  # 13/15
# COCO: recall points 0.00..0.33 and 0.34..0.66 read 1, 0.67..1.00 (34 points) read 3/5.
SCENE_CAT_COCO = (34 + 33 + 34 * 0.6) / 101


def test_average_precision_is_the_area_under_the_envelope() -> None:
    """The one AP function, shared by the detector's metrics and the single-box models' evaluate."""
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert average_precision(np.array([0.5, 0.5, 1.0]), np.array([0.5, 1.0, 2 / 3])) == pytest.approx(
        0.5 + 1 / 3
    )
    assert average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)
    # A later, higher precision lifts the earlier recall range: the envelope, not the raw curve.
    assert average_precision(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == pytest.approx(1.0)
    assert average_precision(np.array([0.25]), np.array([1.0])) == pytest.approx(0.25)
    assert average_precision(np.zeros(0), np.zeros(0)) == 0.0


def test_voc_ap_by_hand(scene) -> None:
    dets, truth = scene
    aps, mean = voc_ap(dets, truth)
    assert aps["cat"] == pytest.approx(13 / 15) and SCENE_CAT_VOC == pytest.approx(13 / 15)
    assert aps["dog"] == 0.0  # one positive, no dog detection
    assert mean == pytest.approx((13 / 15 + 0.0) / 2)


def test_pr_curve_arrays(scene) -> None:
    dets, truth = scene
    cat = pr_curves(dets, truth)["cat"]
    np.testing.assert_allclose(cat.scores, [0.95, 0.90, 0.85, 0.75, 0.70, 0.60], rtol=1e-6)
    assert cat.tp.tolist() == [True, True, False, False, True, False]
    assert cat.images.tolist() == [0, 1, 0, 1, 1, 0]
    assert cat.positives == 3
    np.testing.assert_allclose(cat.precision, [1, 1, 2 / 3, 1 / 2, 3 / 5, 1 / 2])
    np.testing.assert_allclose(cat.recall, [1 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1])
    dog = pr_curves(dets, truth)["dog"]
    assert len(dog.scores) == 0 and dog.positives == 1 and dog.ap == 0.0


def test_class_without_positives_is_none_and_left_out_of_the_mean() -> None:
    truth = _dataset([[[0, 0, 10, 10]]], [[CAT]], names=("cat", "dog", "bird"))
    dets = [_dets([([0, 0, 10, 10], 0.9, CAT), ([50, 50, 60, 60], 0.8, DOG)])]
    aps, mean = voc_ap(dets, truth)
    assert aps == {"cat": 1.0, "dog": None, "bird": None} and mean == 1.0
    assert np.isnan(pr_curves(dets, truth)["dog"].recall).all()
    assert voc_ap([Detections()], _dataset([[]], [[]]))[1] is None


def test_iou_threshold_is_inclusive() -> None:
    truth = _dataset([[[0, 0, 10, 10]]], [[CAT]])
    at_half = [_dets([([0, 0, 10, 5], 0.9, CAT)])]  # IoU 50 / 100 exactly
    below = [_dets([([0, 0, 10, 4.9], 0.9, CAT)])]
    assert voc_ap(at_half, truth)[0]["cat"] == 1.0
    assert voc_ap(below, truth)[0]["cat"] == 0.0
    assert voc_ap(below, truth, iou_threshold=0.45)[0]["cat"] == 1.0


def test_a_duplicate_takes_the_next_free_box_and_a_wrong_class_matches_nothing() -> None:
    # A and B overlap (IoU 2/3): the duplicate on A takes B, which it overlaps by 2/3.
    truth = _dataset([[[0, 0, 10, 10], [2, 0, 12, 10]]], [[CAT, CAT]])
    dets = [_dets([([0, 0, 10, 10], 0.9, CAT), ([0, 0, 10, 10], 0.8, CAT)])]
    assert _match_image(dets[0], truth.boxes[0], truth.labels[0], truth.difficult[0], 0.5).tolist() == [0, 1]
    assert voc_ap(dets, truth)[0]["cat"] == 1.0
    assert coco_metrics(dets, truth)["per_class_ap50"]["cat"] == pytest.approx(1.0)
    wrong = [_dets([([0, 0, 10, 10], 0.9, DOG)])]
    assert _match_image(wrong[0], truth.boxes[0], truth.labels[0], truth.difficult[0], 0.5).tolist() == [
        UNMATCHED
    ]


def test_detections_on_a_difficult_box_are_ignored_however_many() -> None:
    truth = _dataset([[[0, 0, 10, 10], [50, 50, 60, 60]]], [[CAT, CAT]], [[False, True]])
    hard = [50, 50, 60, 60]
    dets = [_dets([(hard, 0.99, CAT), (hard, 0.98, CAT), ([0, 0, 10, 10], 0.5, CAT)])]
    match = _match_image(dets[0], truth.boxes[0], truth.labels[0], truth.difficult[0], 0.5)
    assert match.tolist() == [IGNORED, IGNORED, 0]
    assert voc_ap(dets, truth)[0]["cat"] == 1.0  # were they false positives, AP would be 1/3
    assert coco_metrics(dets, truth)["per_class_ap50"]["cat"] == pytest.approx(1.0)
    assert pr_curves(dets, truth)["cat"].positives == 1


def test_documented_differences_between_voc_and_pycocotools_on_difficult_boxes() -> None:
    # 1. Best overlap on a difficult box, but a free regular box also reaches 0.5 (IoU 9/11):
    #    VOC ignores the detection and misses the box, COCO matches the regular box.
    truth = _dataset([[[0, 0, 10, 10], [1, 0, 11, 10]]], [[CAT, CAT]], [[False, True]])
    dets = [_dets([([1, 0, 11, 10], 0.9, CAT)])]
    assert voc_ap(dets, truth)[0]["cat"] == 0.0
    assert coco_metrics(dets, truth)["per_class_ap50"]["cat"] == pytest.approx(1.0)
    # 2. A small detection inside a large difficult box: IoU 0.01 makes it a VOC false positive, while
    #    COCO's crowd overlap (intersection over the detection's area) is 1 and ignores it.
    truth = _dataset([[[0, 0, 100, 100], [200, 200, 210, 210]]], [[CAT, CAT]], [[True, False]])
    dets = [_dets([([10, 10, 20, 20], 0.9, CAT), ([200, 200, 210, 210], 0.8, CAT)])]
    assert voc_ap(dets, truth)[0]["cat"] == pytest.approx(0.5)
    assert coco_metrics(dets, truth)["per_class_ap50"]["cat"] == pytest.approx(1.0)


def test_pycocotools_reads_iscrowd_not_ignore() -> None:
    """Why difficult boxes go in as iscrowd: pycocotools overwrites `ignore` with `iscrowd`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    box = [0.0, 0.0, 10.0, 10.0]
    with contextlib.redirect_stdout(io.StringIO()):
        gt, dt = COCO(), COCO()
        gt.dataset = {
            "images": [{"id": 1}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 1,
                    "bbox": box,
                    "area": 100.0,
                    "iscrowd": 0,
                    "ignore": 1,
                }
            ],
        }
        dt.dataset = {
            "images": [{"id": 1}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 1,
                    "bbox": box,
                    "area": 100.0,
                    "iscrowd": 0,
                    "score": 0.9,
                }
            ],
        }
        gt.createIndex(), dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate(), ev.accumulate()
    # An honoured ignore flag would leave no positive (precision -1); the box is scored as a positive.
    assert ev.eval["precision"][0, :, 0, 0, -1].min() == pytest.approx(1.0)


def test_coco_metrics_by_hand(scene, capsys) -> None:
    dets, truth = scene
    coco = coco_metrics(dets, truth)
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed
    assert coco["per_class_ap50"]["cat"] == pytest.approx(SCENE_CAT_COCO)
    assert coco["per_class_ap50"]["dog"] == 0.0
    assert coco["ap50"] == pytest.approx(SCENE_CAT_COCO / 2)
    # Every cat detection sits exactly on its box, so each IoU threshold reads the same curve.
    assert coco["map50_95"] == pytest.approx(SCENE_CAT_COCO / 2)
    assert coco["ap_small"] == pytest.approx(SCENE_CAT_COCO / 2)  # areas 100 and 400 are all small
    assert coco["ap_medium"] is None and coco["ap_large"] is None


def test_coco_iou_thresholds_and_area_ranges() -> None:
    truth = _dataset([[[0, 0, 10, 10]]], [[CAT]])
    dets = [_dets([([0, 0, 10, 7.2], 0.9, CAT)])]  # IoU 0.72: matched at 0.50 .. 0.70, not at 0.75 .. 0.95
    coco = coco_metrics(dets, truth)
    assert (
        coco["ap50"] == pytest.approx(1.0) and coco["ap75"] == 0.0 and coco["map50_95"] == pytest.approx(0.5)
    )
    small, medium, large, edge = [0, 0, 4, 4], [100, 0, 150, 50], [0, 100, 100, 200], [200, 200, 232, 232]
    truth = _dataset([[small, medium, large, edge]], [[CAT] * 4])
    dets = [_dets([(small, 0.9, CAT), (large, 0.8, CAT), (edge, 0.7, CAT)])]
    coco = coco_metrics(dets, truth)
    # Small holds the 4x4 box and the 32x32 one (on the boundary, in both ranges); medium 50x50 and 32x32.
    assert coco["ap_small"] == pytest.approx(1.0) and coco["ap_large"] == pytest.approx(1.0)
    assert coco["ap_medium"] == pytest.approx(51 / 101)  # recall 1/2 at precision 1: points 0.00 .. 0.50


@pytest.mark.parametrize(
    ("positives", "hits", "voc", "coco"),
    [
        # TP, FP, TP over two positives: envelope 1 up to recall 1/2, then 2/3.
        (2, [True, False, True], 5 / 6, (51 + 50 * 2 / 3) / 101),
        # One hit among 200 positives: all-point gives 1/200, the 101 points only the one at recall 0.
        (200, [True], 1 / 200, 1 / 101),
    ],
)
def test_exact_voc_and_coco_values(positives: int, hits: list[bool], voc: float, coco: float) -> None:
    gts = [[10 * (k % 20), 10 * (k // 20), 10 * (k % 20) + 8, 10 * (k // 20) + 8] for k in range(positives)]
    truth = _dataset([gts], [[CAT] * positives])
    rows, k = [], 0
    for rank, hit in enumerate(hits):
        box = gts[k] if hit else [500, 500, 510, 510 + rank]
        k += hit
        rows.append((box, 1.0 - 0.1 * rank, CAT))
    dets = [_dets(rows)]
    got_voc = voc_ap(dets, truth)[0]["cat"]
    got_coco = coco_metrics(dets, truth)["per_class_ap50"]["cat"]
    assert got_voc == pytest.approx(voc) and got_coco == pytest.approx(coco)
    assert abs(got_voc - got_coco) < 0.01


def _random_case(seed: int, n_classes: int = 3) -> tuple[list[Detections], LoadedDataset]:
    """Images on a 4x4 grid of 50 px cells, one ground-truth box per used cell, so a detection (kept in
    its cell) overlaps at most one box: VOC and COCO then match identically. Detections on difficult
    boxes are jittered by at most 5 % (IoU and COCO's crowd overlap both above 0.5); others by up to
    40 %, some with a wrong class; false positives fill empty cells."""
    rng = np.random.default_rng(seed)
    cell, grid = 50.0, 4
    boxes, labels, difficult, dets = [], [], [], []
    for _ in range(int(rng.integers(2, 8))):
        cells = rng.permutation(grid * grid)
        n_gt = int(rng.integers(0, 8))
        gt, det_rows = [], []
        lab = rng.integers(0, n_classes, n_gt)
        hard = rng.random(n_gt) < 0.15
        for k, idx in enumerate(cells[:n_gt]):
            ox, oy = (idx % grid) * cell, (idx // grid) * cell
            w, h = rng.uniform(8, 40, 2)
            x0, y0 = ox + rng.uniform(0, cell - w), oy + rng.uniform(0, cell - h)
            gt.append([x0, y0, x0 + w, y0 + h])
            for _ in range(int(rng.integers(0, 3))):
                jitter = 0.05 if hard[k] else 0.4
                box = np.array(gt[-1]) + rng.uniform(-jitter, jitter, 4) * [w, h, w, h]
                box = np.clip(box, [ox, oy, ox, oy], [ox + cell, oy + cell, ox + cell, oy + cell])
                label = int(lab[k]) if rng.random() < 0.8 else int(rng.integers(n_classes))
                det_rows.append((box.tolist(), float(rng.random()), label))
        for idx in cells[n_gt : n_gt + int(rng.integers(0, 4))]:
            ox, oy = (idx % grid) * cell, (idx // grid) * cell
            x0, y0 = ox + rng.uniform(0, 20), oy + rng.uniform(0, 20)
            det_rows.append(([x0, y0, x0 + 25, y0 + 25], float(rng.random()), int(rng.integers(n_classes))))
        boxes.append(gt), labels.append(lab), difficult.append(hard)
        dets.append(_dets(det_rows) if det_rows else Detections())
    return dets, _dataset(boxes, labels, difficult, names=tuple(f"c{c}" for c in range(n_classes)))


def test_voc_ap_agrees_with_pycocotools_ap50_within_the_interpolation_difference() -> None:
    """All-point AP integrates the envelope P(r); COCO averages P at r = 0, 0.01, .., 1. P does not
    increase and lies in [0, 1], so with S the 101-point sum the integral lies between (S - P(0)) / 100
    and (S - P(1)) / 100, and S / 101 is less than 0.01 away from it, whenever both match alike."""
    differences, inside = [], 0
    for seed in range(150):
        dets, truth = _random_case(seed)
        voc, voc_mean = voc_ap(dets, truth)
        coco = coco_metrics(dets, truth)
        assert [v is None for v in voc.values()] == [v is None for v in coco["per_class_ap50"].values()]
        for name, ap in voc.items():
            if ap is not None:
                assert abs(ap - coco["per_class_ap50"][name]) < 0.01, (seed, name)
                differences.append(abs(ap - coco["per_class_ap50"][name]))
                inside += 0 < ap < 1
        if voc_mean is not None:
            assert abs(voc_mean - coco["ap50"]) < 0.01, seed
    assert len(differences) > 300 and inside > 100  # the cases are not all trivial
    assert max(differences) > 1e-3  # and the two interpolations do differ


def test_precision_and_recall_at_a_threshold(scene) -> None:
    dets, truth = scene
    precision, recall = precision_recall_at(dets, truth, 0.72)
    assert precision == {"cat": 0.5, "dog": None} and recall["cat"] == pytest.approx(2 / 3)
    assert recall["dog"] == 0.0
    precision, recall = precision_recall_at(dets, truth, 0.65)
    assert precision["cat"] == pytest.approx(3 / 5) and recall["cat"] == 1.0


def test_confusion_matrix_with_background(scene) -> None:
    dets, truth = scene
    matrix, labels = confusion_matrix(dets, truth, 0.65)
    assert labels == ["cat", "dog", BACKGROUND]
    # cat/cat: A, D, E. background/cat: the duplicate on A and the one on nothing. dog/background: C missed.
    # The detection on the difficult B is not counted, nor is B.
    assert matrix.tolist() == [[3, 0, 0], [0, 0, 1], [2, 0, 0]]
    matrix, _ = confusion_matrix(dets, truth, 0.5)
    assert matrix.tolist() == [[3, 0, 0], [1, 0, 0], [2, 0, 0]]  # the cat on C matches it regardless of class


def test_image_errors_and_worst_images(scene) -> None:
    dets, truth = scene
    errors = image_errors(dets, truth, 0.65)
    assert errors.tp.tolist() == [1, 2] and errors.fp.tolist() == [1, 1] and errors.fn.tolist() == [1, 0]
    assert errors.worst(5) == [0, 1] and errors.worst(1) == [0]
    errors = image_errors(dets, truth, 0.96)
    assert errors.fn.tolist() == [2, 2] and errors.fp.tolist() == [0, 0]
    assert (
        image_errors(
            [Detections([[0, 0, 10, 10]], [0.9], [0])], _dataset([[[0, 0, 10, 10]]], [[0]]), 0.5
        ).worst(3)
        == []
    )


def test_single_box_detections() -> None:
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
    boxes = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
    dets = single_box_detections(probs, boxes)
    assert [d.labels.tolist() for d in dets] == [[1], [0]]
    np.testing.assert_allclose([d.scores[0] for d in dets], [0.8, 0.6])
    np.testing.assert_array_equal(dets[1].boxes, [[5, 6, 7, 8]])
    with pytest.raises(ValueError, match=r"boxes \(N, 4\)"):
        single_box_detections(probs, boxes[:1])
    with pytest.raises(ValueError, match=r"probs \(N, C>0\)"):
        single_box_detections(np.zeros((2, 0)), boxes)


def test_mean_box_baseline_uses_the_majority_of_non_difficult_boxes() -> None:
    # Three difficult dogs would outvote two cats if they counted.
    train = _dataset(
        [[[0, 0, 10, 10], [0, 0, 4, 4], [0, 0, 4, 4]], [[10, 10, 30, 30], [0, 0, 4, 4], [1, 1, 5, 5]]],
        [[CAT, DOG, DOG], [CAT, DOG, DOG]],
        [[False, True, True], [False, True, False]],
    )
    dets = mean_box_baseline(train, 3)
    assert len(dets) == 3 and all(d.labels.tolist() == [CAT] and d.scores.tolist() == [1.0] for d in dets)
    np.testing.assert_allclose(dets[0].boxes, [[5, 5, 20, 20]])
    with pytest.raises(ValueError, match="no non-difficult boxes"):
        mean_box_baseline(_dataset([[]], [[]]), 2)


def test_single_box_models_score_like_the_old_ap50() -> None:
    truth = _dataset([[[0, 0, 10, 10]], [[5, 5, 20, 25]]], [[CAT], [DOG]])
    probs = np.array([[0.9, 0.1], [0.3, 0.7]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [40, 40, 50, 50]], np.float32)
    aps, mean = voc_ap(single_box_detections(probs, boxes), truth)
    assert aps == {"cat": 1.0, "dog": 0.0} and mean == 0.5


def test_evaluate_detections_is_json_ready_and_consistent(scene) -> None:
    dets, truth = scene
    result = evaluate_detections(dets, truth, score_threshold=0.65, worst=1)
    json.dumps(result, allow_nan=False)
    assert result["map50"] == pytest.approx(13 / 30) and result["ap50"]["cat"] == pytest.approx(13 / 15)
    assert result["coco_ap50"] == pytest.approx(SCENE_CAT_COCO / 2)
    assert result["map50_95"] == pytest.approx(SCENE_CAT_COCO / 2) and result["ap75"] == pytest.approx(
        SCENE_CAT_COCO / 2
    )
    assert result["ap50_95"]["dog"] == 0.0
    assert result["precision"]["cat"] == pytest.approx(3 / 5) and result["recall"] == {"cat": 1.0, "dog": 0.0}
    assert result["confusion"] == [[3, 0, 0], [0, 0, 1], [2, 0, 0]]
    assert result["confusion_labels"] == ["cat", "dog", "background"]
    assert result["image_errors"] == {"tp": [1, 2], "fp": [1, 1], "fn": [1, 0]}
    assert result["worst_images"] == [0]
    assert result["positives"] == {"cat": 3, "dog": 1} and result["images"] == 2 and result["detections"] == 7
    lists = (truth.boxes, truth.labels, truth.difficult)
    assert (
        evaluate_detections(dets, lists, score_threshold=0.65, worst=1, class_names=["cat", "dog"]) == result
    )
    unnamed = evaluate_detections(dets, lists, score_threshold=0.65, worst=1)
    assert unnamed["class_names"] == ["0", "1"] and unnamed["ap50"]["0"] == pytest.approx(13 / 15)


def test_no_detections_at_all() -> None:
    truth = _dataset([[[0, 0, 10, 10]], []], [[CAT], []])
    result = evaluate_detections([Detections(), Detections()], truth)
    assert result["map50"] == 0.0 and result["map50_95"] == 0.0 and result["ap_large"] is None
    assert result["precision"]["cat"] is None and result["recall"]["cat"] == 0.0
    assert result["confusion"] == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_bad_input_is_named() -> None:
    truth = _dataset([[[0, 0, 10, 10]], [[0, 0, 5, 5]]], [[CAT], [DOG]])
    good = Detections([[0, 0, 10, 10]], [0.5], [0])
    with pytest.raises(ValueError, match="1 detection sets for 2 ground-truth images"):
        voc_ap([good], truth)
    with pytest.raises(ValueError, match=r"detection labels of image 1: 7 is outside 0\.\.1"):
        voc_ap([good, Detections([[0, 0, 1, 1]], [0.5], [7])], truth)
    with pytest.raises(ValueError, match="detections of image 0: box 0 has xmax < xmin"):
        voc_ap([Detections([[10, 0, 0, 10]], [0.5], [0]), good], truth)
    with pytest.raises(ValueError, match="detections of image 1: non-finite scores"):
        coco_metrics([good, Detections([[0, 0, 1, 1]], [np.nan], [0])], truth)
    with pytest.raises(ValueError, match="ground-truth image 0: boxes hold non-finite"):
        voc_ap([good], ([[[0, 0, np.inf, 1]]], [[0]], None))
    with pytest.raises(ValueError, match="ground-truth image 0: 1 boxes, 2 labels"):
        voc_ap([good], ([[[0, 0, 1, 1]]], [[0, 1]], None))
    with pytest.raises(ValueError, match="expected sprint2.decode.Detections"):
        voc_ap([(0, 0, 1, 1), good], truth)


def test_import_stays_light() -> None:
    code = (
        "import sys, sprint2.metrics\n"
        "heavy = ('tensorflow', 'keras', 'matplotlib', 'pycocotools', 'cv2')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
