"""sprint2.single_box_runs on hand-made runs and predictions: training afresh (run_training stubbed), the
tables' columns, the comparison's scores against evaluate() and box MSE by hand, and the key figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sprint2 import single_box_runs
from sprint2.analysis import analyse_cases
from sprint2.dataset import LoadedDataset
from sprint2.evaluate import evaluate
from sprint2.single_box_runs import SingleBoxComparison, SingleBoxRuns, WorstCases, confusions_table

STRATEGY = {"kind": "default", "devices": ["/cpu:0"], "replicas": 1}


def _ds() -> LoadedDataset:
    """Four 100 x 100 images, one object each: classes a, b, a, b."""
    boxes = [[10, 10, 50, 50], [20, 20, 80, 80], [0, 0, 30, 30], [50, 50, 90, 90]]
    return LoadedDataset(
        images=np.zeros((4, 100, 100, 3), np.uint8),
        boxes=[np.array([b], np.float32) for b in boxes],
        labels=[np.array([c], np.int32) for c in (0, 1, 0, 1)],
        class_names=["a", "b"],
        paths=[Path(f"img{i}.jpg") for i in range(4)],
        found=4,
        size=(100, 100),
    )


def _metrics(kind: str, test: dict, epochs: int = 3) -> dict:
    return {
        "model": kind,
        "strategy_info": dict(STRATEGY),
        "strategy": "default",
        "replicas": 1,
        "train_images": 40,
        "val_images": 4,
        "test_images": 4,
        "epochs": epochs,
        "best_epoch": 2,
        "first_epoch_s": 4.0,
        "train_seconds": 10.0 * epochs,
        "images_per_s": 55.0,
        "test": test,
        "test_detail": {"confusion": [[2, 0], [1, 1]]},
        "baseline": {"accuracy": 0.5, "mean_iou": 0.2, "hit_rate_iou50": 0.0},
        "baseline_detail": {"map50": 0.25, "mean_box": [20.0, 20.0, 60.0, 60.0]},
    }


def _outputs(ds: LoadedDataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    truth = np.concatenate(ds.boxes)
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.7, 0.3]], np.float32)  # the last is wrong
    return {"original": (probs, truth + 10.0), "improved": (probs, truth)}


def _runs(tmp_path: Path, ds: LoadedDataset) -> SingleBoxRuns:
    outputs = _outputs(ds)
    metrics = {
        kind: _metrics(kind, evaluate(*out, ds), epochs=2 + i)
        for i, (kind, out) in enumerate(outputs.items())
    }
    return SingleBoxRuns(
        folder=tmp_path, metrics=metrics, wall_s={"original": 21.0, "improved": 32.0}, epochs=4, size=100
    )


def test_train_empties_each_folder_and_passes_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_run_training(data: Path, **options: object) -> dict:
        calls.append(options)
        out = Path(options["out_dir"])
        assert not (out / "stale.ckpt").exists(), "the run's folder was not emptied"
        return {"kind": options["model"]}

    monkeypatch.setattr(single_box_runs, "run_training", fake_run_training)
    for kind in ("original", "improved"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "stale.ckpt").write_text("old")
    settings = {
        "size": 48,
        "epochs": 2,
        "batch": 8,
        "strategy": "cpu",
        "replicas": 2,
        "seed": 3,
        "n_cases": 4,
    }
    runs = SingleBoxRuns.train(Path("data"), tmp_path, settings)
    assert [c["model"] for c in calls] == ["original", "improved"]
    first = calls[0]
    assert (first["strategy"], first["replicas"], first["seed"]) == ("cpu", 2, 3)
    assert (first["epochs"], first["batch_size"], first["load"].size, first["load"].errors) == (
        2,
        8,
        48,
        "skip",
    )
    assert "n_cases" not in first, "settings run_training does not take are not passed"
    assert set(runs.wall_s) == {"original", "improved"} and all(s >= 0 for s in runs.wall_s.values())
    assert (runs.epochs, runs.size, runs.folder) == (2, 48, tmp_path)


def test_runs_tables_strategy_and_figures(tmp_path: Path) -> None:
    runs = _runs(tmp_path, _ds())
    assert runs.strategy == STRATEGY
    shown = runs.table()
    assert len(shown.columns) == 10
    assert shown.cells[1] == ["improved", "default", "1", "40 / 4 / 4", "3", "2", "4.0", "30.0", "55", "32.0"]
    figures = runs.figures()
    assert figures == {
        "strategy": "default",
        "replicas": 1,
        "devices": ["/cpu:0"],
        "epochs_max": 4,
        "size": 100,
        "original_epochs": 2,
        "improved_epochs": 3,
        "original_train_s": 20.0,
        "improved_train_s": 30.0,
        "improved_images_per_s": 55.0,
        "improved_model": str(tmp_path / "improved" / "model.keras"),
    }
    assert runs.confusion().tolist() == [[2, 0], [1, 1]]
    runs.metrics["original"]["strategy_info"] = {**STRATEGY, "replicas": 2}
    with pytest.raises(ValueError, match="different strategies"):
        _ = runs.strategy


def test_history_table_reads_each_runs_csv(tmp_path: Path) -> None:
    runs = _runs(tmp_path, _ds())
    header = "epoch,loss,accuracy,mean_iou,val_loss,val_accuracy,val_mean_iou\n"
    for kind, best in (("original", 0.4), ("improved", 0.7)):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "history.csv").write_text(
            header + f"1,2.0,0.5,0.3,2.1,0.5,{best}\n2,1.0,0.6,0.4,1.5,0.6,0.5\n"
        )
    assert [len(h) for h in runs.histories().values()] == [2, 2]
    shown = runs.history_table()
    assert [h for h, _, _ in shown.columns][-2:] == ["best val IoU", "at epoch"]
    assert shown.cells[1] == ["improved", "2", "0.600", "0.600", "0.400", "0.500", "0.700", "1"]


def test_comparison_scores_every_model_and_the_baseline(tmp_path: Path) -> None:
    ds = _ds()
    runs = _runs(tmp_path, ds)
    comparison = SingleBoxComparison.of(runs, _outputs(ds), ds)
    assert list(comparison.scores) == ["baseline", "original", "improved"]
    improved = comparison.scores["improved"]
    assert (
        improved["accuracy"] == 0.75
        and improved["mean_iou"] == pytest.approx(1.0)
        and improved["box_mse"] == 0.0
    )
    assert comparison.scores["original"]["box_mse"] == pytest.approx(100.0)  # every corner 10 px off
    assert comparison.scores["baseline"]["map50"] == 0.25 and comparison.scores["baseline"]["accuracy"] == 0.5
    assert comparison.hit_rates() == {
        "baseline": 0.0,
        "original": comparison.scores["original"]["hit_rate_iou50"],
        "improved": 0.75,
    }
    shown = comparison.table()
    assert [h for h, _, _ in shown.columns][-1] == "box MSE (px², 100x100)"
    assert shown.cells[-1] == ["original sprint (historical, other data)", "16.6%", "-", "-", "-", "1588"]
    per_class = comparison.per_class_table()
    assert [h for h, _, _ in per_class.columns] == ["class", "AP@0.5 original", "AP@0.5 improved"]
    assert [row[0] for row in per_class.cells] == ["a", "b"]
    facts = comparison.facts()
    assert facts["images"] == 4 and facts["classes"] == 2 and facts["improved"] is improved
    figures = comparison.figures()
    assert len(figures) == 15 and figures["improved_accuracy"] == 0.75 and figures["baseline_box_mse"] > 0


def test_comparison_refuses_a_model_that_scores_other_than_its_run(tmp_path: Path) -> None:
    ds = _ds()
    runs = _runs(tmp_path, ds)
    runs.metrics["improved"]["test"] = {**runs.metrics["improved"]["test"], "accuracy": 0.5}
    with pytest.raises(ValueError, match="scores other than its training run reported"):
        SingleBoxComparison.of(runs, _outputs(ds), ds)


def test_worst_cases_and_confusions() -> None:
    ds = _ds()
    probs, boxes = _outputs(ds)["improved"]
    cases = analyse_cases(probs, boxes, ds)
    best, worst = cases.ranked(1)
    groups = WorstCases.of(cases, worst)
    assert groups.worst["images"] == "1 worst" and groups.worst["wrong_class"] == 1
    assert groups.split["images"] == "all 4" and groups.split["wrong_class"] == 1
    shown = groups.table()
    assert len(shown.columns) == 7 and shown.cells[0][:3] == ["1 worst", "1", "0"]
    top = confusions_table(np.array([[5, 1, 0], [3, 2, 0], [0, 0, 4]]), ["a", "b", "c"])
    assert top.cells == [["b", "a", "3", "60%"], ["a", "b", "1", "17%"]]


def test_single_box_runs_does_not_import_tensorflow() -> None:
    code = "import sys, sprint2.single_box_runs; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
