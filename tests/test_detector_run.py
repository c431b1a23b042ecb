"""sprint2.detector_run: the plan from the data, a fresh run, its summary, the heads' heatmaps and the
detector notebook 06 quantizes. Training is replaced by a fake; the last test builds tiny Keras models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sprint2 import detector_run
from sprint2.dataset import LoadedDataset
from sprint2.modelcard import ModelCard
from sprint2.synthetic import generate


class _FakeTraining:
    """Stands in for run_training: records each call and what the out_dir held when it was made."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, data: Path, **options: Any) -> dict[str, Any]:
        out = Path(options["out_dir"])
        self.calls.append({"data": data, **options, "existed": out.exists()})
        return {"model": options.get("model"), "out": str(out)}


def test_train_fresh_empties_the_run_folder_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeTraining()
    monkeypatch.setattr(detector_run, "run_training", fake)
    run_dir = tmp_path / "runs" / "detector"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt-3.index").write_text("old")
    got = detector_run.train_fresh(tmp_path / "data", run_dir, model="detector", epochs=2)
    assert got == {"model": "detector", "out": str(run_dir)}
    (call,) = fake.calls
    assert call["existed"] is False, "an old checkpoint would have been resumed"
    assert call["epochs"] == 2 and call["data"] == tmp_path / "data"


def test_the_plan_reads_the_training_split_and_sizes_the_input(tmp_path: Path) -> None:
    data = generate(tmp_path / "d", train=8, test=2, classes=2, seed=0)
    plan = detector_run.DetectorPlan.from_data(data, seed=0, replicas=2)
    assert plan.stats.images == 8 and plan.stats.objects >= 8
    assert plan.input_hw == plan.schedule.input_hw and all(side % 32 == 0 for side in plan.input_hw)
    asked = detector_run.DetectorPlan.from_data(data, seed=0, replicas=2, size=(64, 96))
    assert asked.input_hw == (64, 96) and asked.schedule == plan.schedule
    rows = asked.rows()
    assert rows["input used (h, w)"] == [64, 96] and rows["schedule: input (h, w)"] == list(plan.input_hw)
    assert rows["training images"] == 8
    table = asked.table()
    assert table.columns[0][0] == "detector schedule" and len(table.cells) == len(rows)
    train, val, test = asked.load_splits()
    assert len(train) + (len(val) if val is not None else 0) == 8 and len(test) == 2
    assert tuple(train.size) == tuple(test.size) == (64, 96) and train.images.shape[1:3] == (64, 96)
    assert asked.load_options(tmp_path / "cache").cache_dir == tmp_path / "cache"


METRICS = {
    "strategy": "mirrored",
    "replicas": 2,
    "precision": "float32",
    "input_hw": [64, 96],
    "train_images": 40,
    "val_images": 4,
    "test_images": 10,
    "val_source": "seeded 0.1 of the training split",
    "epochs": 3,
    "planned_epochs": 5,
    "best_epoch": 2,
    "best_val_map50": None,
    "first_epoch_s": 12.345,
    "train_seconds": 30.04,
    "images_per_s": 8.26,
}


def test_the_run_summary_rows_facts_and_figures(tmp_path: Path) -> None:
    card = ModelCard("detector", ["a", "b"], (64, 96), score_threshold=0.4, extra={"threshold_from": "val"})
    run = detector_run.DetectorRun(METRICS, card, tmp_path / "model.keras", 1234567, 0.98765)
    rows = run.rows()
    assert rows["strategy"] == "mirrored x2" and rows["input (h, w)"] == [64, 96]
    assert rows["train / val / test images"] == "40 / 4 / 10"
    assert rows["epochs run (planned)"] == "3 (5)" and rows["best epoch (val mAP@0.5)"] == "2 (0.000)"
    assert rows["parameters"] == "1,234,567" and rows["forward GFLOPs per image"] == 0.988
    assert rows["score threshold (from)"] == "0.400 (val)" and rows["training (s)"] == 30.0
    assert run.table().cells[1] == ["precision (trained / saved)", "float32 / float32"]
    assert run.facts()["best_val_map50"] == 0.0 and run.facts()["epochs"] == 3
    assert run.figures() == {
        "detector_epochs": 3,
        "detector_images_per_s": 8.26,
        "detector_parameters": 1234567,
        "detector_gflops": 0.98765,
        "detector_model": str(tmp_path / "model.keras"),
    }


def test_the_detector_to_quantize_is_notebook_05s_or_a_stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeTraining()
    monkeypatch.setattr(detector_run, "run_training", fake)
    stand_in = detector_run.SavedDetector.find_or_train(tmp_path, None, tmp_path / "data", size=64, epochs=2)
    assert stand_in.stand_in is True
    assert stand_in.path == tmp_path / "models" / "detector-standalone" / "model.keras"
    (call,) = fake.calls
    assert call["model"] == "detector" and call["epochs"] == 2 and call["load"].size == 64
    own = tmp_path / "models" / "detector" / "model.keras"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"keras")
    found = detector_run.SavedDetector.find_or_train(tmp_path, None, tmp_path / "data")
    assert found == detector_run.SavedDetector(own, False) and len(fake.calls) == 1, "nothing trained"
    ModelCard("detector", ["a"], (32, 64)).write(own)
    assert found.card.input_hw == (32, 64)


class _FakeDetector:
    """A detector predictor on 32 x 32 images: one class-1 peak at cell (row 2, col 3)."""

    card = ModelCard("detector", ["a", "b"], (32, 32))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.zeros((len(images), 8, 8, 6), np.float32)
        out[:, 2, 3, 1] = 0.7
        return out


def test_heatmaps_put_the_target_bump_on_the_object_and_show_the_prediction(tmp_path: Path) -> None:
    ds = LoadedDataset(
        images=np.zeros((2, 32, 32, 3), np.uint8),
        boxes=[np.zeros((0, 4), np.float32), np.array([[10, 4, 18, 16]], np.float32)],
        labels=[np.zeros(0, np.int32), np.array([1], np.int32)],
        class_names=["a", "b"],
        paths=[Path("a.jpg"), Path("b.jpg")],
        size=(32, 32),
    )
    maps = detector_run.heatmaps(_FakeDetector(), ds, 1)
    assert set(maps) == {"target heatmap", "predicted heatmap"}
    target, predicted = maps["target heatmap"], maps["predicted heatmap"]
    assert target.shape == predicted.shape == (8, 8)
    assert np.unravel_index(target.argmax(), target.shape) == (2, 3) and target.max() == pytest.approx(1.0)
    assert predicted[2, 3] == pytest.approx(0.7) and predicted.sum() == pytest.approx(0.7)


def test_a_saved_run_reads_its_size_cost_and_history(tmp_path: Path) -> None:
    import keras

    from sprint2.model import model_flops
    from sprint2.predict import load_predictor

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(6, 3, strides=4, padding="same")])
    path = tmp_path / "model.keras"
    model.save(path)
    ModelCard("detector", ["a", "b"], (32, 32), score_threshold=0.25).write(path)
    (tmp_path / "history.csv").write_text("epoch,loss,val_map50\n1,2.5,0.1\n2,1.5,\n")
    run = detector_run.DetectorRun.of(METRICS, load_predictor(path))
    assert run.parameters == model.count_params() == 3 * 3 * 3 * 6 + 6
    assert run.gflops == pytest.approx(model_flops(model)["forward_flops"] / 1e9) and run.gflops > 0
    assert run.model_path == path and run.card.score_threshold == 0.25
    history = run.history()
    assert [h["epoch"] for h in history] == [1, 2] and history[0]["val_map50"] == pytest.approx(0.1)
    assert "val_map50" not in history[1], "an empty cell is left out of the row"
    facts = detector_run.SavedDetector(path, stand_in=True).facts()
    assert facts["params"] == model.count_params() and (facts["h"], facts["w"]) == (32, 32)
    assert facts["classes"] == "a, b" and facts["origin"].startswith("a stand-in")
    assert facts["mb"] == pytest.approx(path.stat().st_size / 1e6)
