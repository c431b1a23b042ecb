"""sprint2.comparison: the detection row shapers, and the models of notebook 05 compared on hand-made
images whose detections and scores can be worked out by hand (fake predictors, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_data import blank_dataset as _ds

from sprint2 import comparison
from sprint2.dataset import LoadedDataset
from sprint2.modelcard import ModelCard


def test_single_box_ceiling_counts_one_object_per_image_and_leaves_difficult_boxes_out() -> None:
    import dataclasses

    ds = _ds(
        [[[0, 0, 5, 5], [6, 6, 9, 9], [1, 1, 3, 3]], [[2, 2, 8, 8]], [[0, 0, 9, 9]], []],
        [[0, 1, 0], [1], [0], []],
    )
    assert comparison.single_box_ceiling(ds) == {
        "images": 4,
        "objects": 5,
        "images_with_objects": 3,
        "max_recall": 0.6,
    }
    hard = dataclasses.replace(
        ds, difficult=[np.array([False, True, True]), np.array([False]), np.array([True]), []]
    )
    assert comparison.single_box_ceiling(hard) == {
        "images": 4,
        "objects": 2,
        "images_with_objects": 2,
        "max_recall": 1.0,
    }
    assert comparison.single_box_ceiling(_ds([[]], [[]]))["max_recall"] is None


class _FakePredictor:
    """A predictor as predict.load_predictor returns it: a card and a call on (N, H, W, 3) images."""

    def __init__(self, card: object, make: object) -> None:
        self.card, self.make, self.calls = card, make, []

    def __call__(self, images: np.ndarray) -> object:
        self.calls.append(len(images))
        return self.make(images)


def test_model_detections_decode_a_detector_in_batches() -> None:
    def outputs(images: np.ndarray) -> np.ndarray:
        # 32 x 32 input, stride 4: an 8 x 8 grid; class 1 peaks at row 2, col 3 with a 8 x 12 px box
        # centred half a cell on: centre (14, 10), so the box is (10, 4, 18, 16). Image i scores 0.9 - 0.1 i.
        out = np.zeros((len(images), 8, 8, 6), np.float32)
        out[:, 2, 3, 1] = 0.9 - 0.1 * images[:, 0, 0, 0]
        out[:, 2, 3, 2:4] = [8.0, 12.0]
        out[:, 2, 3, 4:6] = 0.5
        return out

    card = ModelCard(kind="detector", class_names=["a", "b"], input_hw=(32, 32))
    images = np.zeros((3, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = [0, 1, 2]
    model = _FakePredictor(card, outputs)
    dets = comparison.model_detections(model, images, score_threshold=0.75, batch_size=2)
    assert model.calls == [2, 1]
    assert [len(d) for d in dets] == [1, 1, 0]  # the third image's peak (0.7) is under the threshold
    np.testing.assert_allclose(dets[0].boxes, [[10, 4, 18, 16]], atol=1e-5)
    assert dets[1].labels.tolist() == [1] and dets[1].scores == pytest.approx([0.8])
    with pytest.raises(ValueError, match="do not fit the model's input 32x32"):
        comparison.model_detections(model, np.zeros((1, 16, 32, 3)), score_threshold=0.1)


def test_model_detections_give_a_single_box_model_one_box_per_image() -> None:
    card = ModelCard(kind="improved", class_names=["a", "b", "c"], input_hw=(16, 16))
    probs = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]], np.float32)
    boxes = np.array([[1, 2, 30, 40], [0, 0, 4, 4]], np.float32)  # the first runs past the 16 px image
    model = _FakePredictor(card, lambda images: {"class": probs[: len(images)], "box": boxes[: len(images)]})
    dets = comparison.model_detections(model, np.zeros((2, 16, 16, 3)), score_threshold=0.9)
    assert [d.labels.tolist() for d in dets] == [[1], [0]]
    assert [float(d.scores[0]) for d in dets] == pytest.approx([0.7, 0.6]), "scored by the class probability"
    np.testing.assert_array_equal(dets[0].boxes, boxes[:1])  # as training scores it: unclipped


def test_rescale_detections_scales_each_axis_and_keeps_map() -> None:
    from sprint2.decode import Detections
    from sprint2.metrics import voc_ap

    small = [Detections([[10, 5, 30, 25]], [0.9], [0]), Detections([[0, 0, 8, 16]], [0.4], [1])]
    big = comparison.rescale_detections(small, (50, 40), (100, 120))  # (h, w): x times 3, y times 2
    np.testing.assert_allclose(big[0].boxes, [[30, 10, 90, 50]])
    np.testing.assert_allclose(big[1].boxes, [[0, 0, 24, 32]])
    assert big[1].scores.tolist() == pytest.approx([0.4]) and big[1].labels.tolist() == [1]
    truth_small = _ds([[[12, 6, 30, 24]], [[0, 0, 7, 14]]], [[0], [1]], size=(50, 40))
    truth_big = _ds([[[36, 12, 90, 48]], [[0, 0, 21, 28]]], [[0], [1]], size=(100, 120))
    assert voc_ap(big, truth_big) == voc_ap(small, truth_small)
    with pytest.raises(ValueError, match="sizes must be positive"):
        comparison.rescale_detections(small, (0, 40), (100, 120))


def test_detection_rows_pooled_errors_and_confusion_summary() -> None:
    from sprint2.decode import Detections
    from sprint2.metrics import evaluate_detections

    truth = _ds([[[10, 10, 50, 50], [60, 60, 90, 90]], [[20, 20, 40, 40]]], [[0, 1], [1]])
    perfect = [Detections(b, [0.9] * len(b), lab) for b, lab in zip(truth.boxes, truth.labels)]
    one = [Detections([[10, 10, 50, 50]], [0.9], [1]), Detections([[0, 0, 5, 5]], [0.8], [1])]
    reports = {name: evaluate_detections(d, truth) for name, d in (("perfect", perfect), ("one", one))}
    rows = comparison.detection_rows(reports, {"perfect": 12.5})
    assert [r["model"] for r in rows] == ["perfect", "one"]
    assert rows[0]["map50"] == pytest.approx(1.0) and rows[0]["map50_95"] == pytest.approx(1.0)
    assert rows[0]["detections_per_image"] == 1.5 and rows[0]["train_s"] == 12.5
    assert rows[1]["map50"] == pytest.approx(0.0) and rows[1]["train_s"] is None
    assert set(comparison.DETECTION_ROW_KEYS) <= set(rows[1])

    # "one": image 0 names the cat box a dog (no class-aware match), image 1 misses; 2 FP, 3 misses
    assert comparison.pooled_errors(reports["one"]["image_errors"]) == {
        "tp": 0,
        "fp": 2,
        "fn": 3,
        "precision": 0.0,
        "recall": 0.0,
    }
    assert comparison.pooled_errors({"tp": [], "fp": [], "fn": []})["precision"] is None
    summary = comparison.confusion_summary(reports["one"]["confusion"])
    assert summary == {"objects": 3, "right_class": 0, "wrong_class": 1, "missed": 2, "false_detections": 1}
    assert comparison.confusion_summary(reports["perfect"]["confusion"])["right_class"] == 3
    with pytest.raises(ValueError, match="expected a \\(C \\+ 1, C \\+ 1\\) matrix"):
        comparison.confusion_summary(np.zeros((2, 3)))


# Two test images at the detector's 32 x 32 input (the single-box models see them at 16 x 16): image 0
# holds a "b" box (10, 4, 18, 16), image 1 an "a" box (0, 0, 16, 16). Pixel (0, 0) tells them apart.
TEST_BOXES = [[[10, 4, 18, 16]], [[0, 0, 16, 16]]]
TEST_LABELS = [[1], [0]]


def _images(ds: LoadedDataset) -> LoadedDataset:
    ds.images[:, 0, 0, 0] = np.arange(len(ds))
    return ds


def _detector_outputs(images: np.ndarray) -> np.ndarray:
    """A perfect detector on the two test images: stride 4, an 8 x 8 grid, heads (a, b, w, h, dx, dy)."""
    out = np.zeros((len(images), 8, 8, 6), np.float32)
    for i, marker in enumerate(images[:, 0, 0, 0].astype(int)):
        if marker == 0:  # centre (14, 10): cell (row 2, col 3) plus half a cell
            out[i, 2, 3, 1], out[i, 2, 3, 2:4], out[i, 2, 3, 4:6] = 0.9, [8, 12], 0.5
        else:  # centre (8, 8): cell (2, 2) exactly
            out[i, 2, 2, 0], out[i, 2, 2, 2:4] = 0.8, [16, 16]
    return out


def _improved_outputs(images: np.ndarray) -> dict[str, np.ndarray]:
    """A single-box model at 16 x 16: right on image 0, the right place but class "b" on image 1."""
    probs = np.array([[0.1, 0.9], [0.4, 0.6]], np.float32)
    boxes = np.array([[5, 2, 9, 8], [0, 0, 8, 8]], np.float32)
    rows = images[:, 0, 0, 0].astype(int)
    return {"class": probs[rows], "box": boxes[rows]}


@pytest.fixture()
def compared() -> comparison.ModelComparison:
    test = _images(_ds(TEST_BOXES, TEST_LABELS, size=(32, 32)))
    small = _images(_ds([[[5, 2, 9, 8]], [[0, 0, 8, 8]]], TEST_LABELS, size=(16, 16)))
    train = _ds([[[10, 4, 18, 16]], [[12, 6, 20, 18]], [[0, 0, 4, 4]]], [[1], [1], [0]], size=(32, 32))
    detector = _FakePredictor(
        ModelCard("detector", ["a", "b"], (32, 32), score_threshold=0.5, extra={"threshold_from": "val"}),
        _detector_outputs,
    )
    improved = _FakePredictor(
        ModelCard("improved", ["a", "b"], (16, 16), score_threshold=0.3), _improved_outputs
    )
    files = [str(p) for p in test.paths]
    runs = {
        "detector": {"test_files": files, "train_seconds": 30.0, "test": {"map50": 1.0, "map50_95": 1.0}},
        "improved": {"test_files": files, "train_seconds": 10.0, "test": {"map50": 0.5, "map50_95": 0.5}},
    }
    built = comparison.ModelComparison.build(detector, {"improved": improved}, runs, train, test, small, 0.01)
    runs["detector"]["baseline"] = {k: built.reports["baseline"][k] for k in ("map50", "map50_95")}
    return built


def test_the_comparison_runs_every_model_on_the_same_images(compared: comparison.ModelComparison) -> None:
    assert list(compared.reports) == ["baseline", "improved", "detector"]
    assert compared.thresholds == {"baseline": 0.5, "improved": 0.3, "detector": 0.5}
    np.testing.assert_allclose(compared.detections["improved"][0].boxes, [[10, 4, 18, 16]])  # scaled x2
    np.testing.assert_allclose(compared.detections["detector"][1].boxes, [[0, 0, 16, 16]], atol=1e-5)
    assert compared.reports["detector"]["map50"] == pytest.approx(1.0)
    assert compared.reports["improved"]["map50"] == pytest.approx(0.5)  # "a" never predicted: AP 0
    # the mean box of the majority class "b" over training: (11, 5, 19, 17)
    np.testing.assert_allclose(compared.detections["baseline"][1].boxes, [[11, 5, 19, 17]])
    assert compared.own_size_reports["improved"]["map50"] == pytest.approx(0.5)
    assert compared.threshold_source == "val"


def test_the_comparison_checks_the_runs(compared: comparison.ModelComparison) -> None:
    assert compared.check_runs() == pytest.approx(0.0, abs=1e-9)
    compared.runs["improved"]["test"]["map50"] = 0.25
    with pytest.raises(ValueError, match="differ from the training runs' by 0.25"):
        compared.check_runs()
    compared.runs["improved"]["test_files"] = ["other.jpg", "img1.jpg"]
    with pytest.raises(ValueError, match="tested other images: improved"):
        compared.check_runs()


def test_the_comparison_refuses_a_single_box_split_of_other_images(
    compared: comparison.ModelComparison,
) -> None:
    other = _ds(TEST_BOXES, TEST_LABELS, size=(16, 16), paths=[Path("x.jpg"), Path("y.jpg")])
    with pytest.raises(ValueError, match="other images"):
        comparison.ModelComparison.build(None, {}, compared.runs, compared.test, compared.test, other, 0.01)


def test_the_comparison_rows_facts_and_figures(compared: comparison.ModelComparison) -> None:
    table = compared.table()
    assert [row[0] for row in table.cells] == ["baseline", "improved", "detector"]
    assert table.cells[2][1] == "1.000" and table.cells[2][-2:] == ["1.0", "30"]
    assert table.cells[0][-1] == "-", "the baseline was not trained"
    assert compared.map_bars()["improved"] == {
        "mAP@0.5": pytest.approx(0.5),
        "mAP@[.5:.95]": pytest.approx(0.5),
    }
    per_class = compared.per_class_table()
    assert per_class.columns[-1][0] == "improved model's AP@0.5"
    assert per_class.cells[0] == ["a", "1", "1.000", "1.000", "100.0%", "100.0%", "0.000"]
    summary = compared.summary_facts()
    assert summary["images"] == 2 and summary["ceiling"] == 1.0
    assert summary["recall_detector"] == 1.0 and summary["recall_improved"] == 0.5
    assert summary["detector"]["map50"] == pytest.approx(1.0)
    assert compared.threshold_facts() == {
        "tp": 2,
        "fp": 0,
        "fn": 0,
        "precision": 1.0,
        "recall": 1.0,
        "threshold": 0.5,
        "source": "val",
        "kept": 2,
    }
    assert compared.confusion_facts() == {
        "objects": 2,
        "right_class": 2,
        "wrong_class": 0,
        "missed": 0,
        "false_detections": 0,
    }
    assert compared.confusion_facts("improved")["wrong_class"] == 1
    assert compared.errors("improved").fp.tolist() == [0, 1] and set(compared.curves()) == {"a", "b"}
    figures = compared.figures()
    assert figures["test_images"] == 2 and figures["detector_map50"] == pytest.approx(1.0)
    assert figures["improved_train_s"] == 10.0 and "baseline_train_s" not in figures
    assert figures["score_threshold"] == 0.5 and figures["detector_recall"] == 1.0
    assert set(figures) >= {"baseline_map50", "baseline_map50_95", "improved_map50_95", "detector_precision"}
