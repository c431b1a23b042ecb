"""The detector in the training loop: data, loss, resume, replicas, precision, schedule, metrics, evaluate."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sprint2 import schedule as sched
from sprint2.cli import _parser, main
from sprint2.dataset import LoadedDataset
from sprint2.experiment import run_training
from sprint2.loading import LoadOptions
from sprint2.metrics import voc_ap
from sprint2.recipes import TrainConfig
from sprint2.schedule import DataStats, detector_input_hw, detector_schedule, epochs_within_budget
from sprint2.synthetic import generate
from sprint2.training import DETECTOR_HISTORY_FIELDS, train

pytestmark = pytest.mark.slow  # trains, converts or starts processes: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[1]
COLOURS = [(230, 30, 30), (30, 220, 40), (40, 60, 240)]
HW = (64, 96)


def toy_scenes(n: int = 32, hw: tuple[int, int] = HW, seed: int = 0) -> LoadedDataset:
    """Dark non-square images with one to three coloured rectangles each; every fifth image's first
    box is flagged difficult."""
    rng = np.random.default_rng(seed)
    h, w = hw
    images = np.full((n, h, w, 3), 20, np.uint8)
    boxes, labels, hard = [], [], []
    for i in range(n):
        k = int(rng.integers(1, 4))
        b, lab = [], []
        for _ in range(k):
            c = int(rng.integers(0, len(COLOURS)))
            bw, bh = (int(v) for v in rng.integers(12, 28, 2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            images[i, y0 : y0 + bh, x0 : x0 + bw] = COLOURS[c]
            b.append([x0, y0, x0 + bw, y0 + bh])
            lab.append(c)
        boxes.append(np.array(b, np.float32))
        labels.append(np.array(lab, np.int32))
        hard.append(np.arange(k) == 0 if i % 5 == 0 else np.zeros(k, bool))
    paths = [Path(f"{i}.jpg") for i in range(n)]
    return LoadedDataset(images, boxes, labels, ["red", "green", "blue"], paths, difficult=hard)


def _config(out: Path | None, **kw) -> TrainConfig:
    base = dict(
        model="detector",
        epochs=4,
        batch_size=8,
        learning_rate=2e-3,
        seed=0,
        patience=10,
        width=0.25,
        precision="float32",
        augmentation="light",
        out_dir=out,
    )
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("detector")
    return out, train(toy_scenes(48), toy_scenes(16, seed=1), _config(out, epochs=4))


# --------------------------------------------------------------------------------------------
# The data path
# --------------------------------------------------------------------------------------------


def test_detection_dataset_carries_difficult_flags_into_the_targets() -> None:
    from sprint2.pipeline import detection_dataset, padded_flags, padded_targets

    ds = toy_scenes(10)
    labels, boxes = padded_targets(ds)
    hard = padded_flags(ds, "difficult", labels.shape[1])
    assert hard.shape == labels.shape and hard[0, 0] and hard[5, 0] and not hard[1].any()
    batches = list(
        detection_dataset(
            ds.images, labels, boxes, hard, 10, num_classes=3, seed=0, epoch=1, augment_data=False
        )
    )
    assert len(batches) == 1
    images, targets = batches[0]
    assert images.dtype.name == "float32" and images.shape == (10, *HW, 3)
    assert targets["heatmap"].shape == (10, HW[0] // 4, HW[1] // 4, 3)
    order = [
        int(np.flatnonzero((ds.images.reshape(10, -1) == img.reshape(-1)).all(1))[0])
        for img in images.numpy().astype(np.uint8)
    ]
    reg = targets["reg_mask"].numpy()
    for row, i in enumerate(order):  # shuffled rows: the difficult box is not trained, the others are
        k = len(ds.boxes[i])
        assert reg[row, :k].tolist() == [0.0 if f else 1.0 for f in ds.difficult[i]]
        assert not reg[row, k:].any()
    with pytest.raises(ValueError, match="difficult"):
        detection_dataset(
            ds.images, labels, boxes, hard[:, :1], 10, num_classes=3, seed=0, epoch=1, augment_data=False
        )


def test_detector_refuses_sizes_that_are_not_multiples_of_32() -> None:
    with pytest.raises(ValueError, match=r"multiples of 32 pixels, got 48x96.*LoadOptions\(size=\(H, W\)\)"):
        train(toy_scenes(8, hw=(48, 96)), None, _config(None, epochs=1))


# --------------------------------------------------------------------------------------------
# Training, resuming, the model card
# --------------------------------------------------------------------------------------------


def test_detector_loss_falls_and_the_run_writes_model_and_card(detector_run) -> None:
    out, result = detector_run
    losses = [row["loss"] for row in result.history]
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert losses[-1] < 0.9 * losses[0] and losses == sorted(losses, reverse=True), losses
    assert all(0.0 <= row["val_map50"] <= 1.0 for row in result.history)
    best = max(result.history, key=lambda r: r["val_map50"])
    assert result.best_epoch == best["epoch"]  # the best epoch is the one with the best validation mAP
    assert result.model.output_shape == (None, HW[0] // 4, HW[1] // 4, 3 + 4)
    with (out / "history.csv").open() as f:
        assert next(csv.reader(f)) == DETECTOR_HISTORY_FIELDS
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "detector" and card["input_hw"] == list(HW)
    assert card["class_names"] == ["red", "green", "blue"] and card["extra"]["threshold_from"] == "val"
    assert card["score_threshold"] == pytest.approx(result.score_threshold)
    assert (card["extra"]["top_k"], card["extra"]["iou_threshold"], card["extra"]["stride"]) == (100, 0.5, 4)
    assert (out / "model.keras").is_file()


def test_resume_continues_a_detector_run(detector_run, tmp_path) -> None:
    import shutil

    out, first = detector_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    again = train(toy_scenes(48), toy_scenes(16, seed=1), _config(copy, epochs=5))
    assert again.start_epoch == 5 and len(again.epoch_seconds) == 1
    assert [row["epoch"] for row in again.history] == [1, 2, 3, 4, 5]
    assert again.history[:4] == first.history[:4]  # read back from history.csv
    # The fifth epoch starts from the fourth's weights, not from scratch.
    assert again.history[4]["loss"] < first.history[1]["loss"]


def test_resume_with_the_detector_recipes_augmentation(tmp_path) -> None:
    # The recipe's AugmentParams hold tuples, which run.json gives back as lists: still the same run.
    from sprint2.recipes import DETECTOR_AUGMENTATION

    config = _config(tmp_path, epochs=1, augmentation=DETECTOR_AUGMENTATION)
    train(toy_scenes(16), None, config)
    again = train(toy_scenes(16), None, dataclasses.replace(config, epochs=2))
    assert again.start_epoch == 2 and [row["epoch"] for row in again.history] == [1, 2]


def test_averaged_weights_are_judged_and_the_training_weights_come_back() -> None:
    import tensorflow as tf

    from sprint2.distribute import StrategyInfo
    from sprint2.tasks import make_task
    from sprint2.training import TrainingRun

    config = _config(None, epochs=2, ema_momentum=0.9)
    task = make_task(config, ["red", "green", "blue"])
    data = task.prepare(toy_scenes(16), None, 1)
    run = TrainingRun(config, tf.distribute.get_strategy(), StrategyInfo(kind="given"), task, data)
    run.one_epoch(1)
    raw = [v.numpy() for v in run.model.trainable_variables]
    averages = [v.numpy() for v in run.loop.optimizer._model_variables_moving_average]
    assert any(not np.allclose(a, b) for a, b in zip(raw, averages))  # two steps apart: they differ
    with run.loop.averaged_weights():
        for var, average in zip(run.model.trainable_variables, averages):
            np.testing.assert_array_equal(var.numpy(), average)
    for var, value in zip(run.model.trainable_variables, raw):
        np.testing.assert_array_equal(var.numpy(), value)


def test_the_saved_model_is_the_averaged_model_that_was_validated(tmp_path) -> None:
    from sprint2.tasks import make_task

    val = toy_scenes(16, seed=1)
    result = train(toy_scenes(32), val, _config(tmp_path, epochs=3, ema_momentum=0.8, patience=10))
    best = next(row for row in result.history if row["epoch"] == result.best_epoch)
    task = make_task(_config(None), val.class_names)
    _, map50 = voc_ap(task.detections(result.model, val.images), val, class_names=val.class_names)
    assert map50 == pytest.approx(best["val_map50"], abs=1e-6)


def test_mixed_bfloat16_trains_and_the_policy_does_not_leak(tmp_path) -> None:
    import keras

    from sprint2.model import build_model

    result = train(toy_scenes(16), None, _config(tmp_path, epochs=1, precision="mixed_bfloat16"))
    assert result.precision == "mixed_bfloat16" and np.isfinite(result.history[0]["loss"])
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert {layer.dtype_policy.name for layer in result.model.layers} == {"float32"}  # saved in float32
    assert build_model("improved", 3, 32).get_layer("b1_conv").compute_dtype == "float32"
    saved = keras.saving.load_model(tmp_path / "model.keras")
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    card = json.loads((tmp_path / "model.json").read_text())
    assert (
        card["extra"]["trained_precision"] == "mixed_bfloat16" and card["extra"]["threshold_from"] == "train"
    )


def test_precision_auto_follows_the_cpu_flags(tmp_path, monkeypatch) -> None:
    from sprint2 import tasks

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("flags\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    without.write_text("flags\t: fpu sse avx2\n")
    assert tasks.cpu_supports_bf16(with_bf16) and not tasks.cpu_supports_bf16(without)
    assert not tasks.cpu_supports_bf16(tmp_path / "missing")
    monkeypatch.setattr(tasks, "cpu_supports_bf16", lambda: True)
    assert tasks.resolve_precision("auto", "detector") == "mixed_bfloat16"
    monkeypatch.setattr(tasks, "cpu_supports_bf16", lambda: False)
    assert tasks.resolve_precision("auto", "detector") == "float32"
    assert tasks.resolve_precision("auto", "detector", gpu=True) == "mixed_float16"
    assert tasks.resolve_precision("auto", "detector", gpu=False) == "float32"
    assert tasks.resolve_precision("auto", "improved", gpu=True) == "float32"
    with pytest.raises(ValueError, match="mixed precision is for the detector"):
        tasks.resolve_precision("mixed_bfloat16", "original")
    with pytest.raises(ValueError, match="precision must be one of"):
        tasks.resolve_precision("float64", "detector")


def test_two_replicas_give_the_loss_curve_of_one_at_equal_global_batch() -> None:
    """Global batch 8 as 2 logical CPUs x 4 and as 1 x 8: the per-image losses are averaged over the
    global batch, so only batch-norm statistics (per replica: 4 images instead of 8) differ. Stated
    tolerance: each epoch's mean training loss within 2% (relative) of the one-replica run."""
    code = """
import json, sys
sys.path.insert(0, "tests")
from sprint2.distribute import get_strategy
strategy, info = get_strategy("cpu", replicas=2)
from test_detector_training import _config, toy_scenes
from sprint2.training import train
two = train(toy_scenes(32), None, _config(None, epochs=3, batch_size=4), strategy, info)
one = train(toy_scenes(32), None, _config(None, epochs=3, batch_size=8))
print(json.dumps({"replicas": [two.replicas, one.replicas],
                  "two": [r["loss"] for r in two.history], "one": [r["loss"] for r in one.history]}))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["replicas"] == [2, 1]
    assert got["two"] == pytest.approx(got["one"], rel=0.02), got
    assert got["two"][-1] < got["two"][0] and got["one"][-1] < got["one"][0]


# --------------------------------------------------------------------------------------------
# The schedule rule
# --------------------------------------------------------------------------------------------


def test_schedule_input_size_follows_aspect_and_small_objects() -> None:
    # BCCD-like: 640 x 480 images, small objects ~39 px: scaled so they get MIN_OBJECT_PX (20) pixels,
    # which the pixel cap trims to 256 x 320.
    bccd = DataStats(images=292, objects=3941, image_hw=(480.0, 640.0), small_side=39.0)
    assert detector_input_hw(bccd) == (256, 320)
    # Objects that need less: 12 px objects would ask for 160 x 224.
    assert detector_input_hw(DataStats(292, 3941, (480.0, 640.0), 65.0)) == (160, 224)
    # Tiny objects in large photos: the pixel cap wins, the aspect stays, multiples of 32.
    h, w = detector_input_hw(DataStats(100, 500, (1080.0, 1920.0), 8.0))
    assert h * w <= sched.MAX_PIXELS and h % 32 == 0 and w % 32 == 0 and w > h
    assert abs(w / h - 1920 / 1080) < 0.35
    # Large objects: the shorter side stays at MIN_SIDE; portrait images stay portrait.
    assert detector_input_hw(DataStats(100, 100, (600.0, 400.0), 200.0)) == (192, 128)
    # Never upscaled past the images themselves, beyond rounding up to 32 (and MIN_SIDE).
    assert detector_input_hw(DataStats(10, 10, (160.0, 160.0), 4.0)) == (160, 160)


def test_schedule_epochs_learning_rate_and_warmup_follow_the_data() -> None:
    bccd = detector_schedule(DataStats(292, 3941, (480.0, 640.0), 39.0))
    assert bccd.batch_size == 4 and bccd.epochs == 77  # 300k object views / 3941 objects
    assert bccd.learning_rate == pytest.approx(2e-3 * np.sqrt(4 / 16))  # sqrt-scaled from LR_BATCH
    assert bccd.warmup_epochs == 1  # 30 steps of 73
    assert bccd.time_budget_s == sched.DEFAULT_BUDGET_S
    # Few objects: more passes, up to MAX_EPOCHS; a tiny set: a smaller batch and a smaller rate.
    few = detector_schedule(DataStats(24, 24, (300.0, 400.0), 100.0), time_budget_s=None)
    assert few.epochs == sched.MAX_EPOCHS and few.batch_size == 3 and few.time_budget_s is None
    assert few.learning_rate == pytest.approx(2e-3 * np.sqrt(3 / 16)) and few.warmup_epochs == 4
    many = detector_schedule(DataStats(20_000, 200_000, (480.0, 640.0), 39.0), replicas=2, time_budget_s=None)
    assert many.epochs == sched.MIN_EPOCHS and many.batch_size == 2  # global 4 over 2 replicas
    assert many.as_dict()["input_hw"] == [256, 320]


def _budget_epochs(stats: DataStats, schedule) -> float:
    """Epochs the schedule's budget holds at the planning rate."""
    return schedule.time_budget_s * schedule.pixel_rate / (stats.images * math.prod(schedule.input_hw))


def test_schedule_spends_a_budget_on_a_larger_input_for_a_small_set() -> None:
    # 110 photos with ~1.6 large objects each: the objects alone ask for the smallest input.
    small = DataStats(images=110, objects=176, image_hw=(375.0, 500.0), small_side=60.0)
    plain = detector_schedule(small, time_budget_s=None)
    assert plain.input_hw == (128, 192) and plain.epochs == sched.MAX_EPOCHS
    budget = detector_schedule(small, time_budget_s=900.0)
    assert math.prod(budget.input_hw) > 2 * math.prod(plain.input_hw)  # finer, with the aspect kept
    assert budget.input_hw[1] > budget.input_hw[0]
    assert 0.8 * sched.GOOD_EPOCHS <= _budget_epochs(small, budget) <= 1.3 * sched.GOOD_EPOCHS
    # Never grown past the images' own size: 100 x 150 images stay at MIN_SIDE's (128, 192).
    tiny = DataStats(images=20, objects=20, image_hw=(100.0, 150.0), small_side=50.0)
    assert detector_schedule(tiny, time_budget_s=3600.0).input_hw == (128, 192)


def test_schedule_shrinks_the_input_for_a_short_budget_on_a_large_set() -> None:
    bccd = DataStats(images=205, objects=2804, image_hw=(480.0, 640.0), small_side=39.0)
    assert detector_schedule(bccd, time_budget_s=900.0).input_hw == (256, 320)  # room for the objects' size
    short = detector_schedule(bccd, time_budget_s=300.0)
    assert math.prod(short.input_hw) < 256 * 320 and _budget_epochs(bccd, short) >= 0.8 * sched.MIN_EPOCHS
    huge = detector_schedule(DataStats(20_000, 200_000, (480.0, 640.0), 39.0), time_budget_s=900.0)
    assert min(huge.input_hw) == sched.MIN_SIDE  # the budget cannot hold MIN_EPOCHS: the smallest input


def test_schedule_plans_at_the_rate_of_the_precision() -> None:
    bccd = DataStats(images=205, objects=2804, image_hw=(480.0, 640.0), small_side=39.0)
    slow = detector_schedule(bccd, time_budget_s=300.0)
    fast = detector_schedule(bccd, time_budget_s=300.0, precision="mixed_bfloat16")
    assert slow.pixel_rate == sched.PIXEL_RATES["float32"] == sched.PIXEL_RATE
    assert fast.pixel_rate == sched.PIXEL_RATES["mixed_bfloat16"] > slow.pixel_rate
    # Faster cores spend the same short budget on a finer input, not on more epochs than it needs.
    assert math.prod(fast.input_hw) > math.prod(slow.input_hw)
    for plan in (slow, fast):
        assert 0.8 * sched.MIN_EPOCHS <= _budget_epochs(bccd, plan) <= 1.3 * sched.MIN_EPOCHS
    assert fast.as_dict()["pixel_rate"] == fast.pixel_rate
    with pytest.raises(ValueError, match="no planning rate for precision 'auto'"):
        detector_schedule(bccd, precision="auto")  # callers resolve "auto" first


def test_validation_picks_epochs_only_with_enough_objects() -> None:
    assert not sched.reads_validation(32)  # 20 images of a one-class set
    assert sched.reads_validation(1190)  # bccd's val list
    assert sched.reads_validation(sched.VAL_MIN_OBJECTS) and not sched.reads_validation(
        sched.VAL_MIN_OBJECTS - 1
    )


def test_epochs_within_budget() -> None:
    # 2 epochs done in 30 s, 10 s each from now on, 100 s budget: 7 more fit.
    assert epochs_within_budget(50, done=2, elapsed_s=30.0, epoch_s=10.0, budget_s=100.0) == 9
    assert epochs_within_budget(5, 2, 30.0, 10.0, 100.0) == 5  # the data asks for fewer
    assert epochs_within_budget(50, 2, 130.0, 10.0, 100.0) == 2  # over budget already: stop here
    assert epochs_within_budget(50, 2, 30.0, 0.0, 100.0) == 50


def test_schedule_statistics_from_annotation_files(tmp_path) -> None:
    from sprint2.voc import discover, parse_annotation

    data = generate(tmp_path / "data", train=12, test=2, classes=2, seed=1)
    samples = discover(data, "train")
    (samples[0].xml_path.parent / "broken.xml").write_text("<annotation>")
    stats = DataStats.from_samples(
        samples + [type(samples[0])(samples[0].image_path, samples[0].xml_path.parent / "broken.xml")]
    )
    sides = [
        min(o.box[2] - o.box[0], o.box[3] - o.box[1])
        for s in samples
        for o in parse_annotation(s.xml_path).objects
    ]
    assert stats.images == 12 and stats.objects == len(sides)  # the broken file is left out
    assert stats.small_side == pytest.approx(np.quantile(sides, sched.SMALL_QUANTILE))
    assert 96 <= min(stats.image_hw) and max(stats.image_hw) <= 256 and stats.small_side > 0
    with pytest.raises(ValueError, match="need images with sizes and boxes"):
        DataStats.from_arrays(0, [], [])


def test_time_budget_fixes_the_epoch_count_after_the_timed_epochs(tmp_path) -> None:
    from sprint2.training import PLAN_AFTER

    result = train(toy_scenes(16), None, _config(tmp_path, epochs=40, time_budget_s=1e-3))
    assert [row["epoch"] for row in result.history] == list(range(1, PLAN_AFTER + 1))
    assert result.planned_epochs == PLAN_AFTER
    # The plan is part of the checkpoint: a resumed run keeps it instead of timing again.
    again = train(toy_scenes(16), None, _config(tmp_path, epochs=40, time_budget_s=1e-3))
    assert again.start_epoch == PLAN_AFTER + 1 and not again.epoch_seconds
    assert again.planned_epochs == PLAN_AFTER


# --------------------------------------------------------------------------------------------
# run_training, metrics.json and sprint2 evaluate
# --------------------------------------------------------------------------------------------


def test_detector_is_the_default_model() -> None:
    assert inspect.signature(run_training).parameters["model"].default == "detector"
    assert _parser().parse_args(["train", "data"]).model == "detector"
    assert _parser().parse_args(["train", "data", "--size", "64,96"]).size == (64, 96)
    from sprint2.model import KINDS, build_model

    assert "detector" in KINDS and build_model("detector", 3, HW).output_shape == (None, 16, 24, 7)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_training")
    data = generate(root / "data", train=24, test=8, classes=3, seed=2)
    load = LoadOptions(size=(64, 96), errors="skip")
    metrics = run_training(
        data, out_dir=root / "run", load=load, epochs=2, batch_size=8, width=0.25, precision="float32"
    )
    return data, root / "run", metrics


def test_metrics_json_holds_detection_metrics_baseline_and_test_files(trained_run) -> None:
    data, run, metrics = trained_run
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert (
        metrics["model"] == "detector" and metrics["recipe"] == "detector" and metrics["input_hw"] == [64, 96]
    )
    assert (metrics["train_images"], metrics["val_images"], metrics["test_images"]) == (20, 4, 8)
    for part in ("test", "baseline"):
        block = metrics[part]
        assert {"map50", "map50_95", "ap50", "precision", "recall"} <= set(block)
        assert set(block["ap50"]) == {"cat", "dog", "horse"}
        assert block["map50"] is None or 0.0 <= block["map50"] <= 1.0
    assert set(metrics["test"]) == set(metrics["baseline"])
    assert metrics["test"]["score_threshold"] == metrics["score_threshold"]
    assert metrics["threshold_from"] == "val" and metrics["val_source"].startswith("seeded 0.15")
    assert [v % 32 for v in metrics["schedule"]["input_hw"]] == [0, 0]  # the rule's size; load= overrode it
    assert sorted(Path(p).name for p in metrics["test_files"]) == sorted(
        p.name for p in (data / "test").glob("*.jpg")
    )
    assert metrics["epochs"] == 2 and metrics["time_budget_s"] is None  # explicit epochs: no budget
    # 4 validation images are too few to pick an epoch: the run keeps its last weights.
    assert metrics["val_objects"] < sched.VAL_MIN_OBJECTS and metrics["epoch_choice"] == "last epoch"
    assert metrics["ended_by"] == "schedule" and metrics["best_epoch"] == 2
    assert {"confusion", "worst_images"} <= set(metrics["test_errors"])


def test_evaluate_subcommand_scores_the_saved_model_like_training_did(trained_run, capsys) -> None:
    data, run, metrics = trained_run
    assert main(["evaluate", str(run / "model.keras"), str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "detector" and result["split"] == "test" and result["images"] == 8
    assert result["files"] == metrics["test_files"]
    _close(result["scores"], metrics["test"])
    assert result["baseline"] == metrics["baseline"]
    assert main(["evaluate", str(run / "model.keras"), str(data), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    assert main(["evaluate", str(run / "model.keras"), str(data)]) == 0
    assert "map50" in capsys.readouterr().out
    assert main(["evaluate", str(run / "missing.keras"), str(data)]) == 2


def _close(a: dict, b: dict) -> None:
    """Asserts that two nested dicts of numbers agree to 1e-6 (None where both are None)."""
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], dict):
            _close(a[k], b[k])
        elif isinstance(a[k], float) or isinstance(b[k], float):
            assert a[k] == pytest.approx(b[k], abs=1e-6), k
        else:
            assert a[k] == b[k], k
