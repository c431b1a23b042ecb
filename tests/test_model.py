"""Model contract: both kinds take 0..255 float images and return {"class": probs, "box": pixels}."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sprint2.images import box_iou
from sprint2.model import AddCoords, BoxToPixels, HuberGIoULoss, build_model, giou_loss, tensor_iou

SIZE, CLASSES = 32, 3


def _images(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("kind", ["original", "improved"])
def test_output_contract(kind: str) -> None:
    model = build_model(kind, CLASSES, SIZE)
    out = model(_images(), training=False)
    assert set(out) == {"class", "box"}
    probs, boxes = np.asarray(out["class"]), np.asarray(out["box"])
    assert probs.shape == (5, CLASSES) and boxes.shape == (5, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert model.input_shape == (None, SIZE, SIZE, 3)
    if kind == "improved":
        # Sigmoid head scaled to pixels inside the model, boxes ordered.
        assert boxes.min() >= 0 and boxes.max() <= SIZE
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_original_is_faithful() -> None:
    model = build_model("original", 10, 64)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 5 and all(c.filters == 32 and c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 4
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 5
    assert any(isinstance(layer, keras.layers.Flatten) for layer in model.layers)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert sum(layer.name.startswith("class") for layer in dense) == 2
    assert sum(layer.name.startswith("box") for layer in dense) == 4
    assert model.get_layer("box").activation.__name__ == "linear"


def test_improved_uses_global_pooling_not_flatten() -> None:
    model = build_model("improved", 10, 64)
    assert not any(isinstance(layer, keras.layers.Flatten) for layer in model.layers)
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model.layers)
    assert model.get_layer("box_norm").activation.__name__ == "sigmoid"


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError, match="improved"):
        build_model("resnet", 3, 32)


@pytest.mark.parametrize("kind", ["original", "improved"])
def test_save_load_round_trip(kind: str, tmp_path) -> None:
    # Built under a (one-device) MirroredStrategy scope, as the training loop does.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_model(kind, CLASSES, SIZE)
    x = _images(3, seed=1)
    before = model(x, training=False)
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = loaded(x, training=False)
    for key in ("class", "box"):
        np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(after[key]))
    assert any(isinstance(layer, (AddCoords, BoxToPixels)) for layer in loaded.layers) == (kind == "improved")


def test_giou_loss_values() -> None:
    a = tf.constant([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2]])
    b = tf.constant([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5], [0.8, 0.8, 1.0, 1.0]])
    loss = giou_loss(a, b).numpy()
    assert loss[0] == pytest.approx(0.0, abs=1e-6)
    assert loss[1] == pytest.approx(1 - 1 / 3, abs=1e-5)  # IoU 1/3, hull == union
    assert 1.0 < loss[2] < 2.0  # disjoint boxes still get a gradient signal


def test_tensor_iou_matches_the_numpy_iou_and_drives_giou() -> None:
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 40, (200, 2))
    a = np.concatenate([lo, lo + rng.uniform(0, 30, (200, 2))], 1).astype(np.float32)
    b = np.concatenate([lo + 5, lo + rng.uniform(0, 30, (200, 2))], 1).astype(np.float32)  # some inverted
    a[0], b[0] = [1, 1, 1, 1], [2, 2, 2, 2]  # both empty: 0, not NaN
    np.testing.assert_allclose(tensor_iou(tf.constant(a), tf.constant(b)).numpy(), box_iou(a, b), atol=1e-6)
    # With ordered, non-nested boxes whose hull is their union, 1 - GIoU is 1 - IoU.
    x, y = tf.constant([[0.0, 0.0, 0.5, 0.5]]), tf.constant([[0.25, 0.0, 0.75, 0.5]])
    assert giou_loss(x, y).numpy()[0] == pytest.approx(1.0 - tensor_iou(x, y).numpy()[0], abs=1e-6)


def test_box_loss_is_serialisable_and_per_example() -> None:
    loss = HuberGIoULoss(delta=0.2)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, HuberGIoULoss) and clone.delta == pytest.approx(0.2)
    y = tf.constant([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9]])
    values = clone(y, y + tf.constant([[0.0, 0.0, 0.0, 0.0], [0.1, 0.0, 0.1, 0.0]])).numpy()
    assert values.shape == (2,)
    assert values[0] == pytest.approx(0.0, abs=1e-6) and values[1] > 0
