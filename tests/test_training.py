"""The custom training loop: default and mirrored strategies, resuming, recipes, run_training end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sprint2 import experiment, training
from sprint2.dataset import LoadedDataset
from sprint2.experiment import run_training
from sprint2.loading import LoadOptions
from sprint2.recipes import RECIPES, SMALL_DATA, TrainConfig, choose_recipe
from sprint2.splits import split_validation
from sprint2.synthetic import generate
from sprint2.training import read_history, train, write_history

pytestmark = pytest.mark.slow  # trains, converts or starts processes: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[1]
COLOURS = [(230, 30, 30), (30, 220, 40), (40, 60, 240)]


def toy_dataset(n: int = 48, size: int = 32, seed: int = 0) -> LoadedDataset:
    """Black images with one rectangle of a class colour at a random place and size."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.uint8)
    boxes, labels = [], []
    for i in range(n):
        c = i % len(COLOURS)
        w, h = rng.integers(size // 4, size // 2 + 1, 2)
        x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
        images[i, y0 : y0 + h, x0 : x0 + w] = COLOURS[c]
        boxes.append(np.array([[x0, y0, x0 + w, y0 + h]], np.float32))
        labels.append(np.array([c], np.int32))
    return LoadedDataset(
        images, boxes, labels, ["red", "green", "blue"], [Path(f"{i}.jpg") for i in range(n)]
    )


def _config(tmp_path: Path | None, **kw) -> TrainConfig:
    base = dict(
        model="improved", epochs=2, batch_size=8, learning_rate=2e-3, seed=0, patience=5, out_dir=tmp_path
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    result = train(toy_dataset(48), toy_dataset(12, seed=1), _config(out, epochs=3))
    return out, result


def test_default_strategy_training(default_run) -> None:
    out, result = default_run
    losses = [row["loss"] for row in result.history]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert losses[-1] < losses[0]
    assert result.replicas == 1 and len(result.epoch_seconds) == 3 and result.images_per_s > 0
    assert result.first_epoch_s == result.epoch_seconds[0]
    assert {"val_loss", "val_accuracy", "val_mean_iou", "seconds", "images_per_s"} <= set(result.history[0])
    assert (out / "model.keras").is_file() and (out / "checkpoints").is_dir()
    with (out / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and float(rows[0]["loss"]) == pytest.approx(losses[0])
    out_dict = result.model(toy_dataset(2).images.astype(np.float32), training=False)
    assert set(out_dict) == {"class", "box"} and out_dict["box"].shape == (2, 4)


def test_mirrored_two_logical_cpus_in_subprocess(default_run) -> None:
    code = """
import json, sys
sys.path.insert(0, "tests")
from sprint2.distribute import get_strategy
strategy, info = get_strategy("cpu", replicas=2)
import numpy as np
from test_training import toy_dataset
from sprint2.recipes import TrainConfig
from sprint2.training import train
config = TrainConfig(model="improved", epochs=3, batch_size=8, learning_rate=2e-3, seed=0, out_dir=None)
result = train(toy_dataset(48), toy_dataset(12, seed=1), config, strategy, info)
out = result.model(toy_dataset(2).images.astype(np.float32), training=False)
print(json.dumps({"replicas": result.replicas, "kind": info.kind, "history": result.history,
                  "outputs": {k: list(v.shape) for k, v in out.items()}}))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["replicas"] == 2 and got["kind"] == "cpu"
    losses = [row["loss"] for row in got["history"]]
    assert losses[-1] < losses[0]
    _, default = default_run
    assert [set(row) for row in got["history"]] == [set(row) for row in default.history]
    assert got["outputs"] == {"class": [2, 3], "box": [2, 4]}


def test_resume_continues_from_last_epoch(tmp_path) -> None:
    train_ds, val_ds = toy_dataset(32), toy_dataset(8, seed=2)
    first = train(train_ds, val_ds, _config(tmp_path, epochs=2))
    assert first.start_epoch == 1 and len(first.epoch_seconds) == 2
    second = train(train_ds, val_ds, _config(tmp_path, epochs=3))
    assert second.start_epoch == 3
    assert len(second.epoch_seconds) == 1  # only epoch 3 was trained
    assert [row["epoch"] for row in second.history] == [1, 2, 3]
    assert second.history[0]["loss"] == pytest.approx(first.history[0]["loss"])
    # A fresh run (resume off) starts over.
    fresh = train(train_ds, val_ds, _config(tmp_path, epochs=1, resume=False))
    assert fresh.start_epoch == 1


def test_resume_refuses_checkpoints_of_a_different_run(tmp_path) -> None:
    train_ds, val_ds = toy_dataset(32), toy_dataset(8, seed=2)
    train(train_ds, val_ds, _config(tmp_path, epochs=1))
    with pytest.raises(ValueError, match=r"different run \(learning_rate: "):
        train(train_ds, val_ds, dataclasses.replace(_config(tmp_path, epochs=2), learning_rate=0.5))
    with pytest.raises(ValueError, match=r"different run \(model: 'improved' then, 'original' now"):
        train(train_ds, val_ds, dataclasses.replace(_config(tmp_path, epochs=2), model="original"))


def test_end_to_end_with_loading(tmp_path) -> None:
    data = generate(tmp_path / "data", train=40, test=12, classes=3, seed=0)
    load = LoadOptions(size=32, errors="skip")
    metrics = run_training(
        data, model="improved", out_dir=tmp_path / "run", seed=0, load=load, epochs=2, batch_size=8
    )
    assert {
        "strategy",
        "replicas",
        "epochs",
        "train_images",
        "test_images",
        "images_per_s",
        "test",
        "baseline",
    } <= set(metrics)
    assert metrics["train_images"] + metrics["val_images"] == 40 and metrics["test_images"] == 12
    for part in ("test", "baseline"):  # the single-box fields beside the detection metrics
        assert {"accuracy", "mean_iou", "hit_rate_iou50", "map50", "map50_95", "ap50"} <= set(metrics[part])
        assert set(metrics[part]["ap50"]) == set(metrics["test_detail"]["class_names"])
    assert len(metrics["test_files"]) == 12 and metrics["threshold_from"] == "train"
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["kind"] == "improved" and card["input_hw"] == [32, 32]
    assert card["score_threshold"] == metrics["score_threshold"]
    for name in ("model.keras", "model.json", "history.csv", "metrics.json"):
        assert (tmp_path / "run" / name).is_file()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["epochs"] == 2 and saved["recipe"] == "small-photos" and saved["size"] == 32
    # 40 images is a small set: the small-data recipe (strong augmentation, warm-up, no validation split).
    assert (
        metrics["augmentation"] == "strong" and metrics["warmup_epochs"] == 3 and metrics["val_images"] == 0
    )
    assert metrics["batch_per_replica"] == 8
    assert [row["epoch"] for row in read_history(tmp_path / "run" / "history.csv")] == [1, 2]


def test_auto_recipe_is_a_function_of_the_training_set_size() -> None:
    assert choose_recipe(SMALL_DATA - 1) == "small-photos" and choose_recipe(SMALL_DATA) == "synthetic"
    assert choose_recipe(0) == "small-photos" and set(RECIPES) == {"synthetic", "small-photos", "detector"}
    assert choose_recipe(0, "detector") == choose_recipe(10_000, "detector") == "detector"


def test_recipe_settings_reach_the_config_and_overrides_win(tmp_path: Path) -> None:
    small, large = RECIPES["small-photos"], RECIPES["synthetic"]
    config = experiment._config("improved", 3, tmp_path, small, False, {"epochs": 30})
    assert (config.augmentation, config.warmup_epochs, config.augment) == ("strong", 3, True)
    assert (
        config.patience == 30 and config.seed == 3 and config.out_dir == tmp_path
    )  # no validation: every epoch
    config = experiment._config("improved", 0, tmp_path, large, True, {})
    assert (config.augmentation, config.warmup_epochs, config.patience, config.epochs) == ("light", 0, 8, 40)
    config = experiment._config(
        "original",
        0,
        tmp_path,
        large,
        True,
        {"patience": 2, "augmentation": "strong", "val_fraction": 0.3, "batch_size": 4},
    )
    assert (config.patience, config.augmentation, config.batch_size, config.augment) == (
        2,
        "strong",
        4,
        False,
    )
    assert (large.val_fraction, small.val_fraction) == (0.1, 0.0)


def test_run_training_refuses_unknown_recipes_and_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recipe 'huge'; choose auto or one of"):
        run_training(tmp_path, recipe="huge")
    with pytest.raises(TypeError, match=r"unknown options \['batch'\]"):
        run_training(tmp_path, batch=8)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        run_training(tmp_path, val_fraction=1.0)


def test_split_validation_is_seeded_and_needs_enough_images() -> None:
    ds = toy_dataset(40)
    ds_train, ds_val = split_validation(ds, 0.25, seed=1)
    assert len(ds_train) == 30 and len(ds_val) == 10
    again_train, _ = split_validation(ds, 0.25, seed=1)
    assert ds_train.paths == again_train.paths and not set(ds_train.paths) & set(ds_val.paths)
    whole, none = split_validation(toy_dataset(19), 0.5, seed=1)
    assert none is None and len(whole) == 19


def test_history_round_trip_leaves_empty_cells_out(tmp_path: Path) -> None:
    rows = [
        {"epoch": 1, "loss": 2.5, "seconds": 1.0, "images_per_s": 10.0},
        {"epoch": 2, "loss": 1.5, "val_loss": 1.75, "seconds": 1.0, "images_per_s": 12.0},
    ]
    write_history(tmp_path / "h" / "history.csv", rows)
    header = (tmp_path / "h" / "history.csv").read_text().splitlines()[0]
    assert header.split(",") == training.HISTORY_FIELDS
    back = read_history(tmp_path / "h" / "history.csv")
    assert back == rows and isinstance(back[0]["epoch"], int)
    assert read_history(tmp_path / "h" / "history.csv", up_to=1) == rows[:1]
    assert read_history(tmp_path / "missing.csv") == []


def test_early_stopping_waits_for_the_recipes_share_of_the_planned_epochs() -> None:
    data, val = toy_dataset(16), toy_dataset(8, seed=1)
    eager = train(data, val, _config(None, epochs=4, patience=0))
    patient = train(data, val, _config(None, epochs=4, patience=0, min_epochs_share=0.5))
    assert [r["epoch"] for r in eager.history] == [1] and eager.stopped_early
    assert [r["epoch"] for r in patient.history] == [1, 2] and patient.stopped_early
    assert RECIPES["detector"].min_epochs_share == 0.75 and RECIPES["synthetic"].min_epochs_share == 0.0
    assert eager.ended_by == "early stop"


def test_a_run_that_does_not_select_epochs_trains_its_plan_and_keeps_the_last() -> None:
    data, val = toy_dataset(16), toy_dataset(8, seed=1)
    result = train(data, val, _config(None, epochs=3, patience=0, select_epoch=False))
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and not result.stopped_early
    assert result.best_epoch == 3 and result.ended_by == "schedule"
    assert all("val_mean_iou" in r for r in result.history)  # validation is still recorded
