"""Evaluation metrics on hand-made predictions whose answers are known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from sprint2.evaluate import baseline, evaluate, image_targets
from sprint2.images import box_iou


@dataclass
class Data:
    """The LoadedDataset fields evaluation reads."""

    images: np.ndarray
    boxes: list
    labels: list
    class_names: list


def _data(boxes: list[list[list[float]]], labels: list[list[int]], classes: int = 2) -> Data:
    return Data(
        images=np.zeros((len(boxes), 32, 32, 3), np.uint8),
        boxes=[np.asarray(b, np.float32).reshape(-1, 4) for b in boxes],
        labels=[np.asarray(lab, np.int32) for lab in labels],
        class_names=[f"c{i}" for i in range(classes)],
    )


def _onehot(classes: list[int], n_classes: int = 2, p: float = 1.0) -> np.ndarray:
    probs = np.full((len(classes), n_classes), (1 - p) / max(n_classes - 1, 1), np.float32)
    probs[np.arange(len(classes)), classes] = p
    return probs


def test_perfect_predictions() -> None:
    ds = _data([[[0, 0, 10, 10]], [[5, 5, 20, 25]], [[1, 2, 30, 31]]], [[0], [1], [1]])
    labels, boxes = image_targets(ds)
    result = evaluate(_onehot(list(labels)), boxes, ds)
    assert result["accuracy"] == 1.0 and result["mean_iou"] == pytest.approx(1.0)
    assert result["hit_rate_iou50"] == 1.0
    assert result["ap50"] == {"c0": pytest.approx(1.0), "c1": pytest.approx(1.0)} and result["map50"] == 1.0
    assert result["confusion"] == [[1, 0], [0, 2]]


def test_shifted_box_known_iou() -> None:
    ds = _data([[[0, 0, 10, 10]]], [[0]])
    result = evaluate(_onehot([0]), np.array([[5, 0, 15, 10]], np.float32), ds)
    assert result["mean_iou"] == pytest.approx(50 / 150)
    assert result["accuracy"] == 1.0 and result["hit_rate_iou50"] == 0.0
    assert result["ap50"]["c0"] == 0.0 and result["ap50"]["c1"] is None  # no c1 objects: AP undefined


def test_wrong_class_is_no_hit_and_goes_off_the_diagonal() -> None:
    ds = _data([[[0, 0, 10, 10]], [[0, 0, 10, 10]]], [[0], [1]])
    result = evaluate(_onehot([1, 1]), np.array([[0, 0, 10, 10]] * 2, np.float32), ds)
    assert result["accuracy"] == 0.5 and result["mean_iou"] == pytest.approx(1.0)
    assert result["hit_rate_iou50"] == 0.5
    assert result["confusion"] == [[0, 1], [0, 1]]


def test_largest_object_is_the_target() -> None:
    ds = _data([[[0, 0, 4, 4], [10, 10, 30, 30]]], [[0, 1]])
    result = evaluate(_onehot([1]), np.array([[10, 10, 30, 30]], np.float32), ds)
    assert result["accuracy"] == 1.0 and result["mean_iou"] == pytest.approx(1.0)
    # "all" matches the box the prediction overlaps most: here the small class-0 one.
    result = evaluate(_onehot([0]), np.array([[0, 0, 4, 4]], np.float32), ds, target="all")
    assert result["accuracy"] == 1.0 and result["mean_iou"] == pytest.approx(1.0)


def test_ap_by_hand() -> None:
    # Four images with one class-0 object each. Detections by score: wrong box (FP), hit, hit;
    # the fourth image's prediction is class 1, so it gives no class-0 detection.
    ds = _data([[[0, 0, 10, 10]]] * 4, [[0]] * 4)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6]], np.float32)
    boxes = np.array([[20, 20, 30, 30], [0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 10]], np.float32)
    # Four positives: precision 0, 1/2, 2/3 at recall 0, 1/4, 2/4; envelope 2/3 on both steps -> AP = 1/3.
    assert evaluate(probs, boxes, ds)["ap50"]["c0"] == pytest.approx(1 / 3)
    # Without the fourth image (three positives) the same detections reach recall 2/3 -> AP = 4/9.
    three = _data([[[0, 0, 10, 10]]] * 3, [[0]] * 3)
    assert evaluate(probs[:3], boxes[:3], three)["ap50"]["c0"] == pytest.approx(4 / 9)


def test_ap_counts_every_ground_truth_box() -> None:
    # Two objects of class 0 in one image, one detection: recall can reach only 1/2.
    ds = _data([[[0, 0, 10, 10], [15, 15, 30, 30]]], [[0, 0]])
    assert evaluate(_onehot([0]), np.array([[15, 15, 30, 30]], np.float32), ds)["ap50"][
        "c0"
    ] == pytest.approx(0.5)


def test_elementwise_iou_degenerate_is_zero() -> None:
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0] == 0.0


def test_baseline_on_known_dataset() -> None:
    train = _data([[[0, 0, 10, 10]], [[10, 10, 30, 30]], [[5, 5, 25, 25], [0, 0, 2, 2]]], [[0], [1], [1, 0]])
    # Mean of the largest boxes: (0+10+5)/3 = 5, (10+30+25)/3 = 65/3; the majority class is 1.
    mean = [5.0, 5.0, 65 / 3, 65 / 3]
    test = _data([[mean], [[0, 0, 10, 10]]], [[1], [0]])
    result = baseline(train, test)
    assert result["majority_class"] == "c1"
    np.testing.assert_allclose(result["mean_box"], mean, rtol=1e-6)
    assert result["accuracy"] == 0.5
    expected_iou = (1.0 + box_iou(np.array([mean]), np.array([[0, 0, 10, 10]]))[0]) / 2
    assert result["mean_iou"] == pytest.approx(expected_iou)
    assert result["hit_rate_iou50"] == 0.5


def test_mismatched_lengths_rejected() -> None:
    ds = _data([[[0, 0, 10, 10]]], [[0]])
    with pytest.raises(ValueError, match="1 images"):
        evaluate(_onehot([0, 0]), np.zeros((2, 4), np.float32), ds)
