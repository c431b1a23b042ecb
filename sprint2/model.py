"""Detection models: the original sprint's architecture (baseline) and the improved one.

Both kinds share one contract so quantization, benchmarks and notebooks need not care which
they got: input float32 (N, S, S, 3) with values 0..255 (rescaling happens inside the model),
output a dict {"class": (N, C) softmax probabilities, "box": (N, 4) xmin, ymin, xmax, ymax in
resized-image pixels}. The losses used by the training loop live here too, beside the heads
they belong to. The multi-object detector (`sprint2.detector`, its own output contract) is
registered beside them, so `build_model` makes every kind the training loop trains.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf
from keras import layers

logger = logging.getLogger(__name__)

ModelKind = Literal["original", "improved", "detector"]
SINGLE_BOX_KINDS: tuple[str, ...] = ("original", "improved")
KINDS: tuple[str, ...] = (*SINGLE_BOX_KINDS, "detector")


@keras.saving.register_keras_serializable(package="sprint2")
class AddCoords(layers.Layer):
    """Appends two channels holding each cell's x and y position in [-1, 1] (CoordConv).

    Global average pooling throws away *where* features fire; giving the convolutions their
    own coordinates lets pooled features encode position, which the box head needs.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(inputs)
        n, h, w = shape[0], shape[1], shape[2]
        ys = tf.linspace(-1.0, 1.0, h)
        xs = tf.linspace(-1.0, 1.0, w)
        yy, xx = tf.meshgrid(ys, xs, indexing="ij")
        coords = tf.stack([xx, yy], axis=-1)[tf.newaxis]
        coords = tf.tile(tf.cast(coords, inputs.dtype), tf.stack([n, 1, 1, 1]))
        return tf.concat([inputs, coords], axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], input_shape[-1] + 2)


@keras.saving.register_keras_serializable(package="sprint2")
class BoxToPixels(layers.Layer):
    """Orders a normalised [0, 1] box (xmin <= xmax, ymin <= ymax) and multiplies it by the image size.

    Ordering inside the model means every output is a valid box, whatever the head learned.
    """

    def __init__(self, size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        lo = tf.minimum(inputs[:, :2], inputs[:, 2:])
        hi = tf.maximum(inputs[:, :2], inputs[:, 2:])
        return tf.concat([lo, hi], axis=-1) * tf.cast(self.size, inputs.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}


IOU_EPS = 1e-7  # keeps IoU finite when both boxes are empty; far below float32 resolution for real unions


def _intersection_union(a: tf.Tensor, b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Intersection and union areas of row i of a with row i of b, (N, 4) boxes; inverted boxes are empty."""
    lo = tf.maximum(a[:, :2], b[:, :2])
    hi = tf.minimum(a[:, 2:], b[:, 2:])
    inter = tf.reduce_prod(tf.nn.relu(hi - lo), axis=-1)
    area_a = tf.reduce_prod(tf.nn.relu(a[:, 2:] - a[:, :2]), axis=-1)
    area_b = tf.reduce_prod(tf.nn.relu(b[:, 2:] - b[:, :2]), axis=-1)
    return inter, area_a + area_b - inter


def tensor_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """IoU of row i of a with row i of b, (N, 4) xmin, ymin, xmax, ymax: the tensor twin of images.box_iou."""
    inter, union = _intersection_union(a, b)
    return inter / (union + IOU_EPS)


def giou_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-example 1 - GIoU of (N, 4) xmin, ymin, xmax, ymax boxes; smooth where the boxes do not overlap."""
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    # Keep the predicted box well formed (xmin <= xmax) so areas stay non-negative.
    p_min = tf.minimum(y_pred[:, :2], y_pred[:, 2:])
    p_max = tf.maximum(y_pred[:, :2], y_pred[:, 2:])
    t_min, t_max = y_true[:, :2], y_true[:, 2:]
    inter, union = _intersection_union(tf.concat([p_min, p_max], axis=-1), y_true)
    iou = inter / (union + IOU_EPS)
    hull_wh = tf.maximum(p_max, t_max) - tf.minimum(p_min, t_min)
    hull = hull_wh[:, 0] * hull_wh[:, 1]
    giou = iou - (hull - union) / (hull + IOU_EPS)
    return 1.0 - giou


@keras.saving.register_keras_serializable(package="sprint2")
class HuberGIoULoss(keras.losses.Loss):
    """Box loss on normalised coordinates: Huber (stable early gradients) plus GIoU (tracks IoU).

    Returns one value per example (reduction is left to the caller, who knows the global batch).
    """

    def __init__(
        self, delta: float = 0.1, giou_weight: float = 1.0, name: str = "huber_giou", **kwargs
    ) -> None:
        kwargs.setdefault("reduction", None)
        super().__init__(name=name, **kwargs)
        self.delta = float(delta)
        self.giou_weight = float(giou_weight)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        err = tf.abs(y_true - y_pred)
        huber = tf.where(err <= self.delta, 0.5 * tf.square(err), self.delta * (err - 0.5 * self.delta))
        # Divide by delta so the Huber term has slope 1 far from the target, like the GIoU term.
        return tf.reduce_mean(huber, axis=-1) / self.delta + self.giou_weight * giou_loss(y_true, y_pred)

    def get_config(self) -> dict:
        return {**super().get_config(), "delta": self.delta, "giou_weight": self.giou_weight}


def _original(num_classes: int, image_size: int) -> keras.Model:
    """The first sprint's network, kept faithful (flaws included) as the baseline."""
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i in range(5):
        x = layers.Conv2D(32, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        if i < 4:
            x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    c = layers.Dense(128, activation="relu", name="class_dense1")(x)
    cls = layers.Dense(num_classes, activation="softmax", name="class")(c)
    b = x
    for i, units in enumerate((128, 64, 32)):
        b = layers.Dense(units, activation="relu", name=f"box_dense{i + 1}")(b)
    box = layers.Dense(4, activation=None, name="box")(b)
    return keras.Model(inputs, {"class": cls, "box": box}, name="original")


def _conv_bn(x: tf.Tensor, filters: int, name: str) -> tf.Tensor:
    """3x3 convolution, batch norm, ReLU: the improved model's basic unit."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _improved(num_classes: int, image_size: int) -> keras.Model:
    """Wider later blocks, CoordConv + global pooling instead of Flatten, a sigmoid box head in pixels."""
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn(x, 32, "b1")
    x = layers.MaxPooling2D(2, name="b1_pool")(x)
    for i, filters in enumerate((64, 128, 192), start=2):
        x = _conv_bn(x, filters, f"b{i}a")
        x = _conv_bn(x, filters, f"b{i}b")
        x = layers.MaxPooling2D(2, name=f"b{i}_pool")(x)
    x = AddCoords(name="coords")(x)
    x = _conv_bn(x, 256, "b5")
    feats = layers.Concatenate(name="pooled")(
        [layers.GlobalAveragePooling2D(name="gap")(x), layers.GlobalMaxPooling2D(name="gmp")(x)]
    )
    c = layers.Dense(128, activation="relu", name="class_dense")(feats)
    c = layers.Dropout(0.2, name="class_dropout")(c)
    cls = layers.Dense(num_classes, activation="softmax", name="class")(c)
    b = layers.Dense(128, activation="relu", name="box_dense")(feats)
    b = layers.Dense(4, activation="sigmoid", name="box_norm")(b)
    box = BoxToPixels(image_size, name="box")(b)
    return keras.Model(inputs, {"class": cls, "box": box}, name="improved")


def build_model(kind: ModelKind, num_classes: int, image_size: int | tuple[int, int]) -> keras.Model:
    """Builds an uncompiled model of the given kind; call it under a strategy's scope to mirror it.

    image_size: the square side; the detector also takes (height, width), multiples of 32.
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")
    if kind == "detector":
        from sprint2.detector import build_detector

        hw = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
        return build_detector(int(num_classes), hw)  # type: ignore[arg-type]
    if not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"the {kind} model takes a square image side, got {image_size!r}")
    if num_classes < 1 or image_size < 32:
        raise ValueError(f"need num_classes >= 1 and image_size >= 32, got {num_classes}, {image_size}")
    builder = _original if kind == "original" else _improved
    model = builder(int(num_classes), int(image_size))
    logger.debug("built %s model: %d parameters", kind, model.count_params())
    return model


def model_flops(model: Any) -> dict[str, Any]:
    """Forward FLOPs per image (2 x multiply-adds) of the Conv and Dense layers, counted from their shapes.

    MACs = prod(kernel shape) x prod(output spatial dims) (input spatial dims for transposed convs);
    batch norm, pooling, activations and the losses are left out (a few % of a conv net's work).
    """
    L = keras.layers
    transposes = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
    counted = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D, *transposes)
    per_layer: dict[str, int] = {}
    for layer in model._flatten_layers(include_self=False):
        if not isinstance(layer, counted):
            continue
        kernel = int(np.prod(layer.kernel.shape))
        transposed = isinstance(layer, transposes)
        spatial = (layer.input.shape if transposed else layer.output.shape)[1:-1]
        per_layer[layer.name] = 2 * kernel * int(np.prod(spatial, dtype=np.int64))
    return {"forward_flops": int(sum(per_layer.values())), "layers": per_layer}


def gradient_bytes(model: Any) -> int:
    """Bytes all-reduced per step: every trainable variable's size x its dtype's width (4 for float32)."""
    return int(sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in model.trainable_variables))


def load_model(model_path: Path) -> keras.Model:
    """Loads a .keras file for inference (this module registers the custom layers it may hold)."""
    return keras.models.load_model(Path(model_path), compile=False)
