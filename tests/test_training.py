"""The custom training loop: default and mirrored strategies, resuming, augmentation that moves boxes."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from sprint2.training import (AUGMENT_PRESETS, FILL_VALUE, AugmentParams, TrainConfig, augment, augment_params,
                              make_targets, train)

ROOT = Path(__file__).resolve().parents[1]
COLOURS = [(230, 30, 30), (30, 220, 40), (40, 60, 240)]


@dataclass
class ToyDataset:
    """LoadedDataset-like: one coloured rectangle per image, class = colour."""

    images: np.ndarray
    boxes: list
    labels: list
    class_names: list
    paths: list = field(default_factory=list)


def toy_dataset(n: int = 48, size: int = 32, seed: int = 0) -> ToyDataset:
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
    return ToyDataset(images, boxes, labels, ["red", "green", "blue"], [Path(f"{i}.jpg") for i in range(n)])


def _config(tmp_path: Path | None, **kw) -> TrainConfig:
    base = dict(model="improved", epochs=2, batch_size=8, learning_rate=2e-3, seed=0, patience=5,
                out_dir=tmp_path)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_make_targets_largest_and_all() -> None:
    ds = toy_dataset(3)
    ds.boxes[1] = np.array([[0, 0, 4, 4], [2, 2, 20, 20]], np.float32)
    ds.labels[1] = np.array([2, 0], np.int32)
    images, labels, boxes = make_targets(ds, "largest")
    assert images.shape == (3, 32, 32, 3) and labels.tolist() == [0, 0, 2]
    np.testing.assert_array_equal(boxes[1], [2, 2, 20, 20])
    images, labels, boxes = make_targets(ds, "all")
    assert len(images) == 4 and labels.tolist() == [0, 2, 0, 2]
    np.testing.assert_array_equal(images[1], images[2])  # the two-object image is duplicated


def test_augmentation_keeps_boxes_on_the_object() -> None:
    size = 48
    image = np.zeros((size, size, 3), np.float32)
    image[10:26, 4:16] = 255.0  # object on the left half
    batch = tf.constant(np.repeat(image[None], 32, axis=0))
    box = tf.constant([[4.0, 10.0, 16.0, 26.0]] * 32)
    out_images, out_boxes = augment(batch, box, tf.constant([3, 4], tf.int64))
    out_images, out_boxes = out_images.numpy(), out_boxes.numpy()
    centres = (out_boxes[:, 0] + out_boxes[:, 2]) / 2
    assert (centres > size / 2).any() and (centres < size / 2).any()  # some flipped, some not
    assert not np.allclose(out_boxes, box.numpy())  # scaled / shifted too
    for img, b in zip(out_images, out_boxes):
        ys, xs = np.nonzero(img[..., 0] > 127)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        np.testing.assert_allclose(found, b, atol=1.5)  # the box still bounds the bright pixels


def _bright_bounds(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(img[..., 0] > 191)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("zoom", [(0.6, 0.8), (1.2, 1.4), (0.6, 1.4)])
def test_strong_crops_and_zooms_keep_the_box_on_the_object(zoom) -> None:
    size, n = 64, 48
    image = np.zeros((size, size, 3), np.float32)
    image[6:46, 30:60] = 255.0  # a large object near the right edge: zooming in must not cut it
    box = np.array([30.0, 6.0, 60.0, 46.0], np.float32)
    params = AugmentParams(zoom=zoom, aspect=0.15, shift=0.5)
    out_images, out_boxes = augment(tf.constant(np.repeat(image[None], n, 0)), tf.constant(np.tile(box, (n, 1))),
                                    tf.constant([7, 8], tf.int64), params)  # fmt: skip
    out_images, out_boxes = out_images.numpy(), out_boxes.numpy()
    widths = out_boxes[:, 2] - out_boxes[:, 0]
    if zoom[1] < 1:
        assert (widths < 30 * 0.95).all()  # zoomed out (0.8 x stretch up to e^0.15): smaller
        assert np.isclose(out_images[:, 0, 0], FILL_VALUE).mean() > 0.5  # grey canvas shows at the corner
    if zoom[0] > 1:
        assert (widths > 30 * 1.1).any()  # zoomed in where it fits
    assert (out_boxes >= 0).all() and (out_boxes <= size).all()
    assert out_boxes[:, 0].std() > 2 and out_boxes[:, 1].std() > 2  # boxes really move about
    for img, b in zip(out_images, out_boxes):
        np.testing.assert_allclose(_bright_bounds(img), b, atol=1.5)  # still bounds the object, whole


def test_colour_jitter_keeps_dtype_range_and_boxes() -> None:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (16, 24, 24, 3)), tf.float32)
    boxes = tf.constant(np.tile([[2.0, 3.0, 20.0, 22.0]], (16, 1)), tf.float32)
    params = AugmentParams(flip=False, zoom=(1.0, 1.0), shift=0.0, brightness=0.3, contrast=0.4,
                           saturation=0.4, hue=0.1)  # fmt: skip
    out, out_boxes = augment(x, boxes, tf.constant([1, 1], tf.int64), params)
    assert out.dtype == tf.float32 and out.shape == x.shape
    out = out.numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.abs(out - x.numpy()).mean() > 5  # the colours really changed
    np.testing.assert_allclose(out_boxes.numpy(), boxes.numpy(), atol=1e-4)  # colour never moves boxes
    grey, _ = augment(x, boxes, tf.constant([1, 1], tf.int64), AugmentParams(flip=False, zoom=(1.0, 1.0),
                                                                             shift=0.0, grayscale=1.0))  # fmt: skip
    grey = grey.numpy()
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-3)
    np.testing.assert_allclose(grey[..., 1], grey[..., 2], atol=1e-3)


def test_augment_presets_resolve() -> None:
    assert augment_params("strong") is AUGMENT_PRESETS["strong"]
    custom = AugmentParams(zoom=(0.8, 1.2))
    assert augment_params(custom) is custom
    with pytest.raises(ValueError, match="strong"):
        augment_params("wild")


def test_augmentation_is_reproducible() -> None:
    x = tf.constant(toy_dataset(4).images, tf.float32)
    b = tf.constant(np.concatenate(toy_dataset(4).boxes))
    first = augment(x, b, tf.constant([1, 2], tf.int64))
    second = augment(x, b, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(first[1].numpy(), second[1].numpy())


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
from sprint2.training import TrainConfig, train
config = TrainConfig(model="improved", epochs=3, batch_size=8, learning_rate=2e-3, seed=0, out_dir=None)
result = train(toy_dataset(48), toy_dataset(12, seed=1), config, strategy, info)
out = result.model(toy_dataset(2).images.astype(np.float32), training=False)
print(json.dumps({"replicas": result.replicas, "kind": info.kind, "history": result.history,
                  "outputs": {k: list(v.shape) for k, v in out.items()}}))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
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
    synthetic = pytest.importorskip("sprint2.synthetic")
    loading = pytest.importorskip("sprint2.loading")
    if not hasattr(synthetic, "generate") or not hasattr(loading, "load_splits"):
        pytest.skip("data layer not complete yet")
    from sprint2.training import run_training

    data = synthetic.generate(tmp_path / "data", train=40, test=12, classes=3, seed=0)
    metrics = run_training(data, model="improved", epochs=2, batch=8, size=32, out_dir=tmp_path / "run", seed=0)
    assert {"strategy", "replicas", "epochs", "train_images", "test_images", "images_per_s", "test",
            "baseline"} <= set(metrics)  # fmt: skip
    assert metrics["train_images"] + metrics.get("val_images", 0) == 40 and metrics["test_images"] == 12
    for part in ("test", "baseline"):
        assert set(metrics[part]) == {"accuracy", "mean_iou", "hit_rate_iou50"}
    for name in ("model.keras", "history.csv", "metrics.json"):
        assert (tmp_path / "run" / name).is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 2
    # 40 images is a small set: the small-data recipe (strong augmentation, warm-up, no validation split).
    assert metrics["augmentation"] == "strong" and metrics["warmup_epochs"] == 3 and metrics["val_images"] == 0
