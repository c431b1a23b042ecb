"""sprint2.analysis on small hand-made inputs whose answers can be worked out by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_data import blank_dataset as _ds

from sprint2 import analysis
from sprint2.dataset import Failure
from sprint2.errors import DataError
from sprint2.evaluate import evaluate
from sprint2.voc import Annotation, VocObject


def _onehot(classes: list[int], n: int = 2) -> np.ndarray:
    out = np.full((len(classes), n), 0.1, np.float32)
    out[np.arange(len(classes)), classes] = 0.9
    return out


# Five images, 100 x 100. Image 1 holds two objects: the target (largest, touching the border) and a
# small one the prediction lands on. Image 3 has no object. Expected IoUs: 1, 0, 1, -, 0.6.
CASE_BOXES = [
    [[10, 10, 50, 50]],
    [[0, 0, 60, 60], [70, 70, 90, 90]],
    [[20, 20, 40, 40]],
    [],
    [[30, 30, 70, 70]],
]
CASE_LABELS = [[0], [1, 0], [0], [], [1]]
PRED_BOXES = np.array(
    [[10, 10, 50, 50], [70, 70, 90, 90], [20, 20, 40, 40], [0, 0, 10, 10], [40, 30, 80, 70]], np.float32
)
PRED_CLASSES = [0, 1, 1, 0, 1]  # image 2 has the wrong class


@pytest.fixture()
def cases() -> analysis.Cases:
    return analysis.analyse_cases(_onehot(PRED_CLASSES), PRED_BOXES, _ds(CASE_BOXES, CASE_LABELS))


def test_cases_score_each_image_against_its_largest_object(cases: analysis.Cases) -> None:
    assert cases.valid.tolist() == [True, True, True, False, True]
    assert cases.target_labels.tolist() == [0, 1, 0, -1, 1]
    np.testing.assert_allclose(cases.iou[cases.valid], [1.0, 0.0, 1.0, 0.6], atol=1e-6)
    assert cases.correct.tolist() == [True, True, False, False, True]
    assert cases.accuracy == pytest.approx(0.75)
    assert cases.other_object.tolist() == [False, True, False, False, False]
    np.testing.assert_allclose(cases.area[cases.valid], [0.16, 0.36, 0.04, 0.16])
    assert cases.near_edge.tolist()[:3] == [False, True, False] and not cases.near_edge[4]
    assert cases.objects.tolist() == [1, 2, 1, 0, 1]
    np.testing.assert_allclose(cases.scores, 0.9)


def test_cases_agree_with_evaluate(cases: analysis.Cases) -> None:
    ds = _ds(CASE_BOXES, CASE_LABELS)
    scores = evaluate(_onehot(PRED_CLASSES), PRED_BOXES, ds)
    assert cases.accuracy == pytest.approx(scores["accuracy"])
    assert float(cases.iou[cases.valid].mean()) == pytest.approx(scores["mean_iou"])


def test_ranking_puts_wrong_classes_first_then_low_iou(cases: analysis.Cases) -> None:
    best, worst = cases.ranked(2)
    assert worst.tolist() == [2, 1]  # the wrong class, then the right class with IoU 0
    assert best.tolist() == [0, 4]  # IoU 1, then IoU 0.6
    best_all, worst_all = cases.ranked(10)
    assert sorted(worst_all.tolist()) == [0, 1, 2, 4] and best_all.tolist() == worst_all.tolist()[::-1]


def test_failure_summary_counts_and_medians(cases: analysis.Cases) -> None:
    worst = cases.summary([2, 1], "2 worst")
    assert worst == {
        "images": "2 worst",
        "wrong_class": 1,
        "low_iou": 1,
        "other_object": 1,
        "objects": 1.5,
        "area": pytest.approx(0.2),
        "near_edge": 0.5,
    }
    everything = cases.summary(cases.rows, "all")
    assert everything["objects"] == 1.25 and everything["area"] == pytest.approx(0.16)
    assert everything["near_edge"] == 0.25 and everything["wrong_class"] == 1
    with pytest.raises(ValueError, match="have a target"):
        cases.summary([3], "empty image")


def test_near_edge_uses_each_side_of_a_wide_image() -> None:
    # 50 high, 100 wide: ymax 48 is within 5% of the bottom (47.5) although it is far from x = 95.
    ds = _ds([[[10, 10, 30, 48]], [[10, 10, 30, 40]], [[10, 10, 96, 20]]], [[0], [0], [0]], size=(50, 100))
    got = analysis.analyse_cases(_onehot([0, 0, 0]), np.zeros((3, 4), np.float32), ds)
    assert got.near_edge.tolist() == [True, False, True]
    np.testing.assert_allclose(got.area, [20 * 38 / 5000, 20 * 30 / 5000, 86 * 10 / 5000], rtol=1e-6)


def test_analyse_cases_rejects_mismatched_predictions() -> None:
    with pytest.raises(ValueError, match="3 class rows and 3 boxes for 5 images"):
        analysis.analyse_cases(_onehot([0, 0, 0]), np.zeros((3, 4)), _ds(CASE_BOXES, CASE_LABELS))


def test_confusions_and_recall() -> None:
    confusion = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])
    rows = analysis.top_confusions(confusion, ["a", "b", "c"])
    assert rows == [
        {"true": "b", "predicted": "a", "images": 2, "share": 0.5},
        {"true": "a", "predicted": "b", "images": 1, "share": 0.25},
    ]
    assert analysis.top_confusions(confusion, ["a", "b", "c"], n=1) == rows[:1]
    assert analysis.top_confusions(np.diag([2, 3]), ["a", "b"]) == []
    recall = analysis.recall_range(confusion, ["a", "b", "c"])  # c has no image: not the lowest recall
    assert recall == {
        "lowest": 0.5,
        "lowest_class": "b",
        "highest": 0.75,
        "highest_class": "a",
        "misclassified": 3,
        "images": 8,
    }


def test_history_rows_pick_the_best_validation_epoch() -> None:
    with_val = [
        {"epoch": e, "accuracy": a, "val_accuracy": va, "mean_iou": m, "val_mean_iou": v}
        for e, a, va, m, v in [(1, 0.2, 0.1, 0.3, 0.2), (2, 0.5, 0.4, 0.6, 0.5), (3, 0.7, 0.3, 0.8, 0.4)]
    ]
    no_val = [
        {"epoch": 1, "accuracy": 0.1, "mean_iou": 0.4, "val_mean_iou": None},
        {"epoch": 2, "accuracy": 0.2, "mean_iou": 0.3, "val_mean_iou": None},
    ]
    first, second = analysis.history_rows({"m": with_val, "n": no_val})
    assert first == {
        "model": "m",
        "epochs": 3,
        "accuracy": 0.7,
        "val_accuracy": 0.3,
        "mean_iou": 0.8,
        "val_mean_iou": 0.4,
        "best_val_mean_iou": 0.5,
        "best_epoch": 2,
    }
    assert (
        second["best_epoch"] == 1 and second["best_val_mean_iou"] is None and second["val_accuracy"] is None
    )
    with pytest.raises(ValueError, match="empty"):
        analysis.history_rows({"x": []})


def test_box_mse_and_score_rows() -> None:
    target = np.array([[0, 0, 10, 10], [2, 0, 10, 14]], np.float32)
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    assert analysis.box_mse(pred, target, [True, True]) == pytest.approx((4 + 16) / 8)
    assert analysis.box_mse(pred, target, [True, False]) == 0.0
    mean_box = np.array([1, 0, 10, 12], np.float32)  # one box for every image
    assert analysis.box_mse(mean_box, target, [True, True]) == pytest.approx((1 + 4 + 1 + 4) / 8)
    with pytest.raises(ValueError):
        analysis.box_mse(pred, target, [False, False])
    rows = analysis.score_rows(
        {"m": {"accuracy": 0.5, "mean_iou": 0.4, "ap50": {"a": 1.0}}},
        {"m": pred},
        target,
        np.array([True, True]),
    )
    assert rows == [{"model": "m", "accuracy": 0.5, "mean_iou": 0.4, "box_mse": pytest.approx(2.5)}]


def test_per_class_rows_and_files(tmp_path: Path) -> None:
    rows = analysis.per_class_rows({"x": {"a": 0.5, "b": None}, "y": {"a": 1.0}}, ["a", "b"])
    assert rows == [{"class": "a", "x": 0.5, "y": 1.0}, {"class": "b", "x": None, "y": None}]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"x" * 1500)
    (tmp_path / "run" / "sub").mkdir()
    assert analysis.file_rows([tmp_path / "run"], tmp_path) == [{"file": "run/model.keras", "kB": 1.5}]


CHECK = {
    "size_ratio": {"value": 0.26, "limit": 0.3, "met": True},
    "speedup": {"value": 1.5, "limit": 2.0, "met": False},
    "accuracy_drop": {"value": 0.01, "limit": 0.02, "met": True},
    "mean_iou_drop": {"value": 0.05, "limit": 0.03, "met": False},
}


def test_target_rows_and_missed_targets() -> None:
    all_met = {k: {**v, "met": True} for k, v in CHECK.items()}
    rows = analysis.target_rows({"int8": CHECK, "dynamic_int8": all_met})
    assert [r["target"] for r in rows] == [
        "size vs float32",
        "speedup vs Keras float",
        "accuracy drop",
        "mean IoU drop",
    ]
    assert rows[0] == {
        "target": "size vs float32",
        "limit": "<= 0.30x",
        "int8": "0.26x met",
        "dynamic_int8": "0.26x met",
    }
    assert rows[1]["limit"] == ">= 2.00x" and rows[1]["int8"] == "1.50x MISSED"
    assert rows[2]["int8"] == "+1.0% met" and rows[3]["int8"] == "+0.050 MISSED"
    assert analysis.missed_targets(CHECK) == ["speedup vs Keras float", "mean IoU drop"]
    assert analysis.missed_targets(all_met) == []
    detector = {
        "size_ratio": {"value": 0.27, "limit": 0.3, "met": True},
        "speedup": {"value": 2.5, "limit": 2.0, "met": True},
        "map50_drop": {"value": 0.031, "limit": 0.02, "met": False},
    }
    rows = analysis.target_rows({"int8": detector})
    assert [r["target"] for r in rows] == ["size vs float32", "speedup vs Keras float", "mAP@0.5 drop"]
    assert rows[2] == {"target": "mAP@0.5 drop", "limit": "<= +0.020", "int8": "+0.031 MISSED"}
    assert analysis.missed_targets(detector) == ["mAP@0.5 drop"]
    with pytest.raises(ValueError, match="no variants"):
        analysis.target_rows({})


def test_load_comparison_names_the_field_that_differs() -> None:
    a = _ds([[[1, 2, 3, 4]], [[0, 0, 5, 5]]], [[0], [1]])
    b = _ds([[[1, 2, 3, 4]], [[0, 0, 5, 5]]], [[0], [1]])
    assert all(r["identical"] for r in analysis.load_comparison(a, b))
    b.boxes[1] = b.boxes[1] + 1
    rows = {r["compared"]: r["identical"] for r in analysis.load_comparison(a, b)}
    assert rows["boxes"] is False and rows["images"] and rows["labels"] and rows["paths"]
    assert [k for k, same in rows.items() if not same] == ["boxes"]


def test_ground_truth_class_counts_and_summary() -> None:
    ann = Annotation(
        Path("x.xml"),
        Path("x.jpg"),
        20,
        10,
        3,
        (VocObject("cat", (0, 0, 5, 5)), VocObject("dog", (1, 1, 2, 2))),
    )
    boxes, names = analysis.ground_truth([ann])
    np.testing.assert_array_equal(boxes[0], [[0, 0, 5, 5], [1, 1, 2, 2]])
    assert boxes[0].dtype == np.float32 and names == [["cat", "dog"]]
    ds = _ds(
        [[[0, 0, 10, 5], [0, 0, 20, 10]], [[0, 0, 2, 2]]],
        [[0, 1], [1]],
        size=(10, 20),
        classes=("a", "b", "c"),
    )
    assert analysis.class_counts(ds) == {"a": 1, "b": 2, "c": 0}
    assert analysis.dataset_summary(ds) == {
        "images": 2,
        "objects": 3,
        "classes": 3,
        "median_box_area": 0.25,
        "max_objects_per_image": 2,
    }


def test_loader_box_error_by_hand() -> None:
    # A 200 x 100 image letterboxed to 64 x 64: scale 0.32, content 64 x 32, 16 px of padding above.
    ann = Annotation(Path("x.xml"), Path("x.jpg"), 200, 100, 3, (VocObject("a", (50, 25, 150, 75)),))
    original = np.zeros((100, 200, 3), np.uint8)
    exact = _ds([[[16, 24, 48, 40]]], [[0]], size=(64, 64), classes=("a",), paths=[Path("x.jpg")])
    assert analysis.loader_box_error(exact, [ann], [original], "letterbox") == pytest.approx(0.0, abs=1e-5)
    off = _ds([[[16, 24, 48.5, 40]]], [[0]], size=(64, 64), classes=("a",), paths=[Path("x.jpg")])
    assert analysis.loader_box_error(off, [ann], [original], "letterbox") == pytest.approx(0.5, abs=1e-5)
    stretched = _ds([[[16, 16, 48, 48]]], [[0]], size=(64, 64), classes=("a",), paths=[Path("x.jpg")])
    assert analysis.loader_box_error(stretched, [ann], [original], "stretch") == pytest.approx(0.0, abs=1e-5)
    missing = _ds([[[16, 24, 48, 40]]], [[0]], size=(64, 64), classes=("a",), paths=[Path("y.jpg")])
    with pytest.raises(DataError, match="x.jpg: not in the loaded dataset"):
        analysis.loader_box_error(missing, [ann], [original], "letterbox")


def test_loader_box_error_on_a_real_load(tmp_path: Path) -> None:
    from sprint2.images import decode_image
    from sprint2.loading import load_dataset
    from sprint2.synthetic import generate
    from sprint2.voc import discover, parse_annotation

    data = generate(tmp_path / "d", train=4, test=0, classes=2, seed=3) / "train"
    samples = discover(data)
    annotations = [parse_annotation(s.xml_path, s.image_path) for s in samples]
    originals = [decode_image(s.image_path) for s in samples]
    loaded = load_dataset(data, 128, mode="letterbox", method="serial")  # no reduced JPEG decode at 128
    assert analysis.loader_box_error(loaded, annotations, originals, "letterbox") < 1e-3


def test_describe_layouts(tmp_path: Path) -> None:
    rows = analysis.describe_layouts(tmp_path)
    assert [r["layout"] for r in rows] == ["side-by-side", "voc", "folders"]
    # 6 train + 2 test images: the first two layouts are asked for their train split, folders has none
    assert [r["pairs found"] for r in rows] == [6, 6, 8]
    assert rows[1]["first image"].startswith("JPEGImages/") and rows[1]["its XML"].startswith("Annotations/")
    assert all(r["files"] >= 16 for r in rows)


def test_small_row_builders() -> None:
    bench = {"methods": {"serial": {"images_per_s": 50.0}, "thread": {"images_per_s": 125.0}}}
    assert analysis.loading_rows(bench)[1] == {"method": "thread", "images/s": 125.0, "vs plain loop": 2.5}
    assert analysis.failure_rows([Failure("/d/bad.xml", "malformed XML")]) == [
        {"file": "bad.xml", "reason": "malformed XML"}
    ]
    assert analysis.key_value_rows({"devices": ["a", "b"], "replicas": 2}) == [
        {"what": "devices", "value": "a, b"},
        {"what": "replicas", "value": 2},
    ]
    rows = [
        {"setting": "no strategy (default)", "replicas": 1, "device": "cpu", "images_per_s": 10.0},
        {"setting": "MirroredStrategy", "replicas": 2, "device": "cpu", "images_per_s": 12.0},
        {"setting": "MirroredStrategy", "replicas": 1, "device": "gpu", "images_per_s": 90.0},
    ]
    assert [analysis.setting_label(r) for r in rows] == ["no strategy", "x2 CPU", "x1 GPU"]
    assert analysis.best_row(rows, "images_per_s", device="cpu")["replicas"] == 2
    assert analysis.best_row(rows, "images_per_s")["device"] == "gpu"
    with pytest.raises(ValueError):
        analysis.best_row(rows, "images_per_s", device="tpu")
    projection = {
        "rows": [
            {"link": "pcie", "gpus": 8, "t_allreduce_s": 0.002, "t_compute_s": 0.04},
            {"link": "pcie", "gpus": 4, "t_allreduce_s": 0.001, "t_compute_s": 0.04},
        ]
    }
    assert analysis.allreduce_share(projection) == [{"link": "pcie", "gpus": 8, "allreduce_share": 0.05}]
    workers = analysis.worker_score_rows(
        [{"replicas": 2, "strategy_info": {"is_chief": True}, "test": {"accuracy": 0.5}}, {}]
    )
    assert (
        workers[0]["chief"] is True
        and workers[0]["test accuracy"] == 0.5
        and workers[0]["test mean_iou"] is None
    )
    assert workers[1] == {
        "worker": 1,
        "model": None,
        "chief": None,
        "replicas": None,
        "epochs": None,
        "test accuracy": None,
        "test mean_iou": None,
        "test map50": None,
        "train seconds": None,
    }
    detector = {"model": "detector", "start_epoch": 3, "epochs": 5, "test": {"map50": 0.4, "map50_95": 0.2}}
    (row,) = analysis.worker_score_rows([detector])
    assert row["epochs"] == "3..5" and row["test map50"] == 0.4 and row["test map50_95"] == 0.2
    assert "test accuracy" not in row


def test_analysis_does_not_import_tensorflow() -> None:
    code = "import sys, sprint2.analysis; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_projection_run_rows_and_largest_difference(tmp_path: Path) -> None:
    projection = {
        "rows": [{"gpus": g, "t_allreduce_s": 0.0005 * g, "step_s": 0.01 + 0.0005 * g} for g in (1, 3, 8)]
    }
    rows = analysis.projection_rows(projection)
    assert [r["gpus"] for r in rows] == [1, 8]
    assert rows[1]["allreduce_ms"] == pytest.approx(4.0) and rows[1]["step_ms"] == pytest.approx(14.0)
    metrics = {"train_images": 40, "val_images": 4, "test_images": 16, "epochs": 3, "model": "improved"}
    (row,) = analysis.run_rows({"improved": metrics}, {"improved": 12.5})
    assert row["split"] == "40 / 4 / 16" and row["wall_s"] == 12.5 and row["epochs"] == 3
    a = {"m": {"accuracy": 0.5, "mean_iou": 0.40}, "n": {"accuracy": 0.25, "mean_iou": 0.3}}
    b = {"m": {"accuracy": 0.5, "mean_iou": 0.41}, "n": {"accuracy": 0.5, "mean_iou": 0.3}}
    assert analysis.largest_difference(a, b, ["mean_iou"]) == pytest.approx(0.01)
    assert analysis.largest_difference(a, b, ["accuracy", "mean_iou"]) == pytest.approx(0.25)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "metrics.json").write_text("{}")
    (tmp_path / "run" / "checkpoints" / "ckpt-1.index").write_bytes(b"12345")
    assert analysis.file_rows([tmp_path / "run"], tmp_path / "run", recursive=True) == [
        {"file": "checkpoints/ckpt-1.index", "kB": 0.005},
        {"file": "metrics.json", "kB": 0.002},
    ]


def test_objects_per_image_counts_every_number_up_to_the_most() -> None:
    ds = _ds(
        [[], [[0, 0, 5, 5]], [[1, 1, 4, 4]], [[0, 0, 2, 2], [3, 3, 9, 9], [5, 5, 8, 8]]],
        [[], [0], [1], [0, 1, 0]],
    )
    assert analysis.objects_per_image(ds) == {"0": 1, "1": 2, "2": 0, "3": 1}
    assert analysis.objects_per_image(_ds([], [])) == {"0": 0}


def test_ready_tables_format_their_columns(tmp_path: Path) -> None:
    kv = analysis.key_value_table("run", {"input": [64, 96], "epochs": 3})
    assert [h for h, _, _ in kv.columns] == ["run", ""]
    assert kv.cells == [["input", "64, 96"], ["epochs", "3"]]
    train = _ds([[[0, 0, 50, 50], [0, 0, 10, 10]], [[0, 0, 20, 20]]], [[0, 1], [1]])
    splits = analysis.split_table({"train": train, "validation": None, "test": train.head(1)})
    assert [row[0] for row in splits.cells] == ["train", "test"], "a missing split shows no row"
    assert splits.cells[0] == ["train", "2", "3", "2", "4.0%", "2"]
    assert "median box area (of image)" in str(splits)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"x" * 1234)
    files = analysis.file_table([tmp_path / "run"], tmp_path, title="detector")
    assert [h for h, _, _ in files.columns] == ["detector", "size (kB)"]
    assert files.cells == [["run/model.keras", "1.2"]]
