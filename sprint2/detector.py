"""A CenterNet-style multi-object detector: the model builder, the per-batch targets and the loss.

The model predicts, at output stride 4, a per-class centre heatmap (sigmoid), each object's box size
(w, h in input pixels) and the sub-cell offset of its centre. It is built from standard layers only,
by one builder that takes the Keras package as an argument, so the same code gives a Keras 3 model
for training and a `tf_keras` twin (same layer names, same weight shapes) that
`tfmot.quantization.keras.quantize_model` accepts; `copy_weights` moves the weights across.

Targets are built in TensorFlow from padded boxes, per batch inside tf.data after augmentation;
the loss returns one value per image so a training loop can average it over the global batch.
Decoding the outputs into boxes lives in `sprint2.decode` (NumPy only).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

STRIDE = 4
#: Names of the three heads; the split model's outputs carry these names, in this order.
HEAD_NAMES: tuple[str, ...] = ("heatmap", "size", "offset")
#: The focal-loss prior: the heatmap's bias starts at -log((1 - p) / p), so every cell begins at p.
PRIOR_PROBABILITY = 0.01
#: The size head predicts relu(z) * SIZE_UNIT pixels: z stays O(1..20) for boxes of 16..320 px.
SIZE_UNIT = 16.0
#: Initial size prediction in input pixels (the size head's bias is SIZE_PRIOR / SIZE_UNIT).
SIZE_PRIOR = 32.0
#: Heatmap radius rule: a box shifted by r along one axis alone keeps IoU >= MIN_OVERLAP with itself.
MIN_OVERLAP = 0.7
#: Smallest Gaussian sigma in output cells, so that a tiny box still has a peak one cell wide.
MIN_SIGMA = 1.0 / 3.0
#: Predicted heatmap probabilities are clipped to [EPS, 1 - EPS] before taking logs.
EPS = 1e-4
#: The offset head spans (-OFFSET_REACH, OFFSET_REACH + 1) cells, so a cell up to OFFSET_REACH cells
#: from an object's centre cell can point at the centre (dense regression, `build_targets`).
OFFSET_REACH = 2
#: Dense regression covers the cells where the object's Gaussian is at least this: exp(-2), the value
#: at the shift that keeps IoU >= MIN_OVERLAP (see gaussian_sigma).
DENSE_MIN = math.exp(-2.0)

_BASE_WIDTHS = (16, 32, 64, 128, 256)  # stem (stride 2), then strides 4, 8, 16, 32
# Residual blocks at strides 4, 8, 16, 32: depth goes where the maps are small and cheap (the
# stride-4 neck and heads cost most of the FLOPs), for the context that tells crowded objects apart.
_BLOCKS = (1, 2, 3, 2)
_NECK_WIDTH = 64
_HEAD_WIDTH = 64


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _round_width(base: int, width: float) -> int:
    """Channels for a width multiplier: base * width rounded to a multiple of 8, at least 8."""
    return max(8, int(round(base * width / 8.0)) * 8)


def output_hw(input_hw: tuple[int, int], stride: int = STRIDE) -> tuple[int, int]:
    """The heatmap's (height, width) for an input of (height, width)."""
    return int(input_hw[0]) // stride, int(input_hw[1]) // stride


def _check_input_hw(input_hw: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(v) for v in input_hw)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ValueError(f"detector input (height, width) must be positive multiples of 32, got {input_hw!r}")
    return h, w


def build_detector(
    num_classes: int,
    input_hw: tuple[int, int],
    *,
    keras_module: Any = None,
    width: float = 1.0,
    split_outputs: bool = False,
    name: str = "detector",
) -> Any:
    """The detector as an uncompiled functional model of `keras_module` (default: Keras 3).

    Input: (N, H, W, 3) float32 RGB 0..255, H and W multiples of 32. Output: one float32 tensor
    (N, H/4, W/4, C + 4) = heatmap probabilities | size w, h in input pixels | centre offset in cells;
    with `split_outputs`, the same layers end in a dict of three outputs keyed by HEAD_NAMES instead,
    the form to quantize: one int8 tensor has one scale, too coarse for 0..1 probabilities when it
    also holds 0..320 px sizes.
    `width` multiplies every channel count (1.0, 3 classes: 4.03 M parameters, 3.01 GFLOPs per 320 x 256
    image).
    """
    K = keras if keras_module is None else keras_module
    L = K.layers
    h, w = _check_input_hw(input_hw)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width!r}")
    num_classes = int(num_classes)
    widths = [_round_width(c, width) for c in _BASE_WIDTHS]
    neck_w = _round_width(_NECK_WIDTH, width)
    head_w = _round_width(_HEAD_WIDTH, width)

    def small() -> Any:  # a fresh initializer per layer (tf_keras warns about a reused unseeded one)
        return K.initializers.RandomNormal(stddev=0.01)

    def conv_bn(
        x: Any, filters: int, name: str, *, kernel: int = 3, strides: int = 1, relu: bool = True
    ) -> Any:
        x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return L.ReLU(name=f"{name}_relu")(x) if relu else x

    def residual(x: Any, filters: int, name: str) -> Any:
        y = conv_bn(x, filters, f"{name}_a")
        y = conv_bn(y, filters, f"{name}_b", relu=False)
        return L.ReLU(name=f"{name}_relu")(L.Add(name=f"{name}_add")([x, y]))

    inputs = L.Input((h, w, 3), dtype="float32", name="image")
    # Fixed 1x1 convolution 0..255 -> -1..1 (weights set below): Rescaling is not in tfmot's registry.
    x = L.Conv2D(3, 1, trainable=False, name="normalize")(inputs)
    x = conv_bn(x, widths[0], "stem", strides=2)
    features = {}
    for i, (stride, blocks) in enumerate(zip((4, 8, 16, 32), _BLOCKS), start=1):
        x = conv_bn(x, widths[i], f"s{stride}_down", strides=2)
        for j in range(blocks):
            x = residual(x, widths[i], f"s{stride}_res{j + 1}")
        features[stride] = x
    # Top-down neck: 1x1 laterals to one width, nearest upsampling, add, a 3x3 conv at each level.
    x = conv_bn(features[32], neck_w, "lat32", kernel=1)
    for stride in (16, 8, 4):
        up = L.UpSampling2D(2, interpolation="nearest", name=f"up{stride}")(x)
        lateral = conv_bn(features[stride], neck_w, f"lat{stride}", kernel=1)
        x = L.Add(name=f"merge{stride}")([up, lateral])
        x = conv_bn(x, neck_w, f"neck{stride}")
    prior_bias = -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    heat = conv_bn(x, head_w, "heat")
    heat = L.Conv2D(
        num_classes,
        1,
        activation="sigmoid",
        kernel_initializer=small(),
        bias_initializer=K.initializers.Constant(prior_bias),
        dtype="float32",
        name="heatmap",
    )(heat)
    box = conv_bn(x, head_w, "box")
    # relu inside the conv, not a ReLU layer: tfmot's Conv2D+ReLU rule would drop the kernel's fake-quant.
    size = L.Conv2D(
        2,
        1,
        activation="relu",
        kernel_initializer=small(),
        bias_initializer=K.initializers.Constant(SIZE_PRIOR / SIZE_UNIT),
        dtype="float32",
        name="size_raw",
    )(box)
    size = L.Conv2D(2, 1, trainable=False, dtype="float32", name="size")(size)  # fixed: x SIZE_UNIT
    offset = L.Conv2D(
        2, 1, activation="sigmoid", kernel_initializer=small(), dtype="float32", name="offset_raw"
    )(box)
    offset = L.Conv2D(2, 1, trainable=False, dtype="float32", name="offset")(offset)  # fixed: to cells
    if split_outputs:
        model = K.Model(inputs, dict(zip(HEAD_NAMES, (heat, size, offset))), name=name)
    else:
        out = L.Concatenate(axis=-1, dtype="float32", name="outputs")([heat, size, offset])
        model = K.Model(inputs, out, name=name)
    _set_fixed_layers(model)
    logger.debug(
        "built detector: %d classes, input %dx%d, width %.2f, %d parameters",
        num_classes,
        h,
        w,
        width,
        model.count_params(),
    )
    return model


def _set_fixed_layers(model: Any) -> None:
    """Sets the fixed convolutions: normalize (x / 127.5 - 1), size (x SIZE_UNIT) and offset
    (0..1 -> -OFFSET_REACH..OFFSET_REACH + 1 cells)."""
    model.get_layer("normalize").set_weights(
        [np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3) / 127.5, np.full(3, -1.0, np.float32)]
    )
    model.get_layer("size").set_weights(
        [np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2) * SIZE_UNIT, np.zeros(2, np.float32)]
    )
    model.get_layer("offset").set_weights(
        [
            np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2) * (2 * OFFSET_REACH + 1),
            np.full(2, -float(OFFSET_REACH), np.float32),
        ]
    )


def copy_weights(src: Any, dst: Any) -> int:
    """Copies every weighted layer of `dst` from the layer of `src` with the same name; returns how many.

    Works across Keras 3 and tf_keras (both keep a layer's weights in the same order). A layer of
    `dst` missing from `src`, or weights of another count or shape, raise ValueError naming the layer.
    """
    copied = 0
    source = {layer.name: layer for layer in src.layers}
    for layer in dst.layers:
        target = layer.get_weights()
        if not target:
            continue
        if layer.name not in source:
            raise ValueError(
                f"copy_weights: layer {layer.name!r} of {dst.name!r} has no namesake in {src.name!r}"
            )
        values = source[layer.name].get_weights()
        shapes = [v.shape for v in values]
        if shapes != [t.shape for t in target]:
            raise ValueError(
                f"copy_weights: layer {layer.name!r} weights {[t.shape for t in target]} in {dst.name!r} "
                f"but {shapes} in {src.name!r}"
            )
        layer.set_weights(values)
        copied += 1
    return copied


# --------------------------------------------------------------------------------------------
# Splitting the output
# --------------------------------------------------------------------------------------------


def split_heads(outputs: Any, num_classes: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(heatmap, size, offset) float32 tensors from the concatenated output or the split model's outputs.

    Accepts the (N, h, w, C + 4) tensor, a sequence of three tensors or a mapping whose keys are the
    HEAD_NAMES or end in "_" + one of them (the QAT model's "quant_heatmap", ...).
    """
    if isinstance(outputs, Mapping):
        parts = list(_named_heads(outputs, []).values())
    elif isinstance(outputs, (list, tuple)):
        parts = list(outputs)
    else:
        out = tf.convert_to_tensor(outputs)
        if out.shape[-1] is not None and out.shape[-1] != num_classes + 4:
            raise ValueError(f"detector output has {out.shape[-1]} channels, expected {num_classes} + 4")
        parts = [out[..., :num_classes], out[..., num_classes : num_classes + 2], out[..., num_classes + 2 :]]
    if len(parts) != 3:
        raise ValueError(f"expected three detector outputs {HEAD_NAMES}, got {len(parts)}")
    heat, size, offset = (tf.cast(p, tf.float32) for p in parts)
    return heat, size, offset


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def gaussian_sigma(box_w: tf.Tensor, box_h: tf.Tensor, stride: int = STRIDE) -> tuple[tf.Tensor, tf.Tensor]:
    """The heatmap Gaussian's (sigma_x, sigma_y) in output cells for boxes of box_w x box_h input pixels.

    Rule: r = side / stride * (1 - t) / (1 + t) with t = MIN_OVERLAP is the shift along one axis at
    which the box still overlaps itself with IoU t; sigma = max(r / 2, MIN_SIGMA), so the heatmap
    is exp(-2) ~ 0.14 at that shift and a box smaller than a cell still gets a one-cell peak.
    """
    ratio = (1.0 - MIN_OVERLAP) / (1.0 + MIN_OVERLAP)
    sx = tf.maximum(box_w / stride * ratio / 2.0, MIN_SIGMA)
    sy = tf.maximum(box_h / stride * ratio / 2.0, MIN_SIGMA)
    return sx, sy


def build_targets(
    boxes: tf.Tensor,
    labels: tf.Tensor,
    valid: tf.Tensor,
    difficult: tf.Tensor,
    *,
    num_classes: int,
    input_hw: tuple[int, int],
    stride: int = STRIDE,
) -> dict[str, tf.Tensor]:
    """Training targets for a batch of padded boxes (B, M, 4) xmin, ymin, xmax, ymax in input pixels.

    labels (B, M) int in [0, num_classes) where valid, valid (B, M) bool (False = padding), difficult
    (B, M) bool. Boxes are clipped to the image first; one left with no area counts as padding. A valid
    label out of range fails with InvalidArgumentError. Returns:
      heatmap (B, h, w, C): per class, the max over its objects of a Gaussian (gaussian_sigma) centred
        on the object's centre cell, exactly 1 there;
      heatmap_mask (B, h, w, C): 0 on cells whose centre lies in a difficult box (that box's class
        only; its centre cell always), unless the cell is another object's peak; 1 elsewhere;
      indices (B, M) int32: the centre cell's flat index row * w + col;
      size (B, M, 2): box w, h in input pixels; offset (B, M, 2): centre / stride - cell, in [0, 1];
      reg_mask (B, M) float32: 1 for objects that are trained (valid, with area, not difficult);
      box_map (B, h, w, 4) and box_weight (B, h, w): the box each cell regresses and its weight
        (`dense_box_targets`), for dense regression.
    Difficult boxes get no peak and no regression, and count neither for nor against the heatmap.
    """
    in_h, in_w = (int(v) for v in input_hw)
    out_h, out_w = output_hw((in_h, in_w), stride)
    boxes = tf.cast(boxes, tf.float32)
    labels = tf.cast(labels, tf.int32)
    limit = tf.constant([in_w, in_h, in_w, in_h], tf.float32)
    boxes = tf.clip_by_value(boxes, 0.0, limit)
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    bw, bh = x1 - x0, y1 - y0
    valid = tf.cast(valid, tf.bool)
    used_labels = tf.boolean_mask(labels, valid)
    checks = [
        tf.debugging.assert_non_negative(used_labels, message="build_targets: negative class label"),
        tf.debugging.assert_less(used_labels, num_classes, message=f"build_targets: label >= {num_classes}"),
    ]
    with tf.control_dependencies(checks):
        labels = tf.identity(labels)
    real = valid & (bw > 0) & (bh > 0)
    difficult = tf.cast(difficult, tf.bool) & real
    positive = real & ~difficult

    cx, cy = (x0 + x1) / (2.0 * stride), (y0 + y1) / (2.0 * stride)
    col = tf.clip_by_value(tf.floor(cx), 0.0, out_w - 1.0)
    row = tf.clip_by_value(tf.floor(cy), 0.0, out_h - 1.0)
    sx, sy = gaussian_sigma(bw, bh, stride)

    xs = tf.range(out_w, dtype=tf.float32)[tf.newaxis, tf.newaxis, tf.newaxis, :]
    ys = tf.range(out_h, dtype=tf.float32)[tf.newaxis, tf.newaxis, :, tf.newaxis]

    def e(t: tf.Tensor) -> tf.Tensor:  # (B, M) -> (B, M, 1, 1), against the (h, w) grid
        return t[:, :, tf.newaxis, tf.newaxis]

    dx2 = tf.square(xs - e(col)) / (2.0 * tf.square(e(sx)))
    dy2 = tf.square(ys - e(row)) / (2.0 * tf.square(e(sy)))
    gauss = tf.exp(-(dx2 + dy2))  # (B, M, h, w)

    # Cells covered by a difficult box: cell centres inside it, plus its centre cell.
    cell_x = (xs + 0.5) * stride
    cell_y = (ys + 0.5) * stride
    inside = (cell_x >= e(x0)) & (cell_x <= e(x1)) & (cell_y >= e(y0)) & (cell_y <= e(y1))
    centre = tf.equal(xs, e(col)) & tf.equal(ys, e(row))
    covered = tf.cast(inside | centre, tf.float32)

    batch = tf.shape(boxes)[0]
    heat = _per_class_max(gauss, labels, positive, batch, num_classes, out_h, out_w)
    ignored = _per_class_max(covered, labels, difficult, batch, num_classes, out_h, out_w)
    peak = tf.cast(tf.equal(heat, 1.0), tf.float32)
    heat_mask = 1.0 - ignored * (1.0 - peak)

    near = (tf.abs(xs - e(col)) <= OFFSET_REACH) & (tf.abs(ys - e(row)) <= OFFSET_REACH)
    box_map, box_weight = dense_box_targets(tf.where(near & e(positive), gauss, 0.0), boxes)
    keep = tf.cast(positive, tf.float32)
    indices = tf.cast(row * out_w + col, tf.int32) * tf.cast(positive, tf.int32)
    size = tf.stack([bw, bh], axis=-1) * keep[..., tf.newaxis]
    offset = tf.stack([cx - col, cy - row], axis=-1) * keep[..., tf.newaxis]
    return {
        "heatmap": heat,
        "heatmap_mask": heat_mask,
        "indices": indices,
        "size": size,
        "offset": offset,
        "reg_mask": keep,
        "box_map": box_map,
        "box_weight": box_weight,
    }


def dense_box_targets(gauss: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(box_map (B, h, w, 4), box_weight (B, h, w)) from per-object Gaussians (B, M, h, w), zero where
    an object may not be regressed from, and the boxes (B, M, 4).

    A cell regresses the object whose Gaussian is highest there, when that value is at least
    DENSE_MIN; an object's cells share a weight of 1 in proportion to its Gaussian, so every object
    counts once however large it is (TTFNet's Gaussian-area regression, without its log-area weight).
    """
    owner = tf.argmax(gauss, axis=1, output_type=tf.int32)  # (B, h, w)
    best = tf.reduce_max(gauss, axis=1, keepdims=True)
    taken = tf.one_hot(owner, tf.shape(gauss)[1], axis=1) * tf.cast(best >= DENSE_MIN, tf.float32)
    share = taken * gauss
    total = tf.reduce_sum(share, axis=[2, 3], keepdims=True)
    weight = tf.reduce_sum(share / tf.maximum(total, 1e-6), axis=1)
    return tf.gather(boxes, owner, batch_dims=1), weight


def _per_class_max(
    maps: tf.Tensor,
    labels: tf.Tensor,
    use: tf.Tensor,
    batch: tf.Tensor,
    num_classes: int,
    out_h: int,
    out_w: int,
) -> tf.Tensor:
    """(B, h, w, C): per image and class, the cell-wise max of `maps` (B, M, h, w) over the boxes in `use`."""
    segments = batch * num_classes
    ids = tf.range(batch)[:, tf.newaxis] * num_classes + tf.clip_by_value(labels, 0, num_classes - 1)
    ids = tf.where(use, ids, segments)  # unused boxes go to one extra segment, dropped below
    flat = tf.reshape(maps, [-1, out_h * out_w])
    best = tf.math.unsorted_segment_max(flat, tf.reshape(ids, [-1]), segments + 1)[:segments]
    best = tf.maximum(best, 0.0)  # empty segments hold the dtype's lowest value
    return tf.transpose(tf.reshape(best, [batch, num_classes, out_h, out_w]), [0, 2, 3, 1])


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


def detection_loss(
    outputs: Any,
    targets: Mapping[str, tf.Tensor],
    *,
    num_classes: int,
    size_weight: float = 1.0,
    offset_weight: float = 1.0,
    giou_weight: float = 1.0,
    dense: bool = True,
    stride: int = STRIDE,
) -> dict[str, tf.Tensor]:
    """Per-image losses (B,): {"loss", "heatmap", "size", "offset", "giou", "num_objects"}.

    heatmap: penalty-reduced focal loss (alpha 2, beta 4) summed over the cells heatmap_mask keeps;
    size: L1 of the relative error |w - w*| / w* (scale-free, like IoU), mean of w and h;
    offset: L1 in cells, mean of x and y. Each image's terms are divided by its own object count
    (at least 1), so per-image values do not depend on the rest of the batch and a training loop
    gets the same loss from `tf.nn.compute_average_loss(loss, global_batch_size=...)` on any number
    of replicas. With `dense`, size and offset are taken at every cell of `box_map` / `box_weight`
    (each object's cells weighted to 1 in all) and the GIoU loss of the boxes those cells predict is
    added; otherwise at the objects' centre cells only, with no GIoU term.
    loss = heatmap + size_weight * size + offset_weight * offset + giou_weight * giou.
    """
    heat, size, offset = split_heads(outputs, num_classes)
    y = tf.cast(targets["heatmap"], tf.float32)
    mask = tf.cast(targets["heatmap_mask"], tf.float32)
    p = tf.clip_by_value(heat, EPS, 1.0 - EPS)
    pos = tf.cast(tf.equal(y, 1.0), tf.float32)
    pos_term = -tf.math.log(p) * tf.square(1.0 - p) * pos
    neg_term = -tf.math.log(1.0 - p) * tf.square(p) * tf.pow(1.0 - y, 4.0) * (1.0 - pos)
    reg_mask = tf.cast(targets["reg_mask"], tf.float32)
    count = tf.maximum(tf.reduce_sum(reg_mask, axis=1), 1.0)
    heat_loss = tf.reduce_sum((pos_term + neg_term) * mask, axis=[1, 2, 3]) / count

    if dense:
        size_loss, offset_loss, giou_loss = _dense_box_losses(size, offset, targets, stride, count)
        total = heat_loss + size_weight * size_loss + offset_weight * offset_loss + giou_weight * giou_loss
        return {
            "loss": total,
            "heatmap": heat_loss,
            "size": size_loss,
            "offset": offset_loss,
            "giou": giou_loss,
            "num_objects": count,
        }
    indices = tf.cast(targets["indices"], tf.int32)
    cells = tf.shape(size)[1] * tf.shape(size)[2]
    pred_size = tf.gather(tf.reshape(size, [-1, cells, 2]), indices, batch_dims=1)
    pred_offset = tf.gather(tf.reshape(offset, [-1, cells, 2]), indices, batch_dims=1)
    true_size = tf.cast(targets["size"], tf.float32)
    rel = tf.abs(pred_size - true_size) / tf.maximum(true_size, 1.0)
    size_loss = tf.reduce_sum(tf.reduce_mean(rel, axis=-1) * reg_mask, axis=1) / count
    off = tf.abs(pred_offset - tf.cast(targets["offset"], tf.float32))
    offset_loss = tf.reduce_sum(tf.reduce_mean(off, axis=-1) * reg_mask, axis=1) / count
    total = heat_loss + size_weight * size_loss + offset_weight * offset_loss
    return {
        "loss": total,
        "heatmap": heat_loss,
        "size": size_loss,
        "offset": offset_loss,
        "giou": tf.zeros_like(total),
        "num_objects": count,
    }


def giou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Generalized IoU of boxes (..., 4) xmin, ymin, xmax, ymax: IoU minus the share of the enclosing
    box that the union leaves empty; -1..1, finite for empty boxes."""
    inter_w = tf.nn.relu(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]))
    inter_h = tf.nn.relu(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]))
    inter = inter_w * inter_h
    area_a = tf.nn.relu(a[..., 2] - a[..., 0]) * tf.nn.relu(a[..., 3] - a[..., 1])
    area_b = tf.nn.relu(b[..., 2] - b[..., 0]) * tf.nn.relu(b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    enclose_w = tf.maximum(a[..., 2], b[..., 2]) - tf.minimum(a[..., 0], b[..., 0])
    enclose_h = tf.maximum(a[..., 3], b[..., 3]) - tf.minimum(a[..., 1], b[..., 1])
    enclose = tf.nn.relu(enclose_w) * tf.nn.relu(enclose_h)
    return inter / tf.maximum(union, 1e-6) - (enclose - union) / tf.maximum(enclose, 1e-6)


def _dense_box_losses(
    size: tf.Tensor, offset: tf.Tensor, targets: Mapping[str, tf.Tensor], stride: int, count: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-image (size, offset, GIoU) losses over the weighted cells of box_map, divided by count."""
    box = tf.cast(targets["box_map"], tf.float32)
    weight = tf.cast(targets["box_weight"], tf.float32)
    cols = tf.range(tf.shape(size)[2], dtype=tf.float32)[tf.newaxis, tf.newaxis, :]
    rows = tf.range(tf.shape(size)[1], dtype=tf.float32)[tf.newaxis, :, tf.newaxis]
    true_size = tf.stack([box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]], axis=-1)
    centre_x = (box[..., 0] + box[..., 2]) / (2.0 * stride)
    centre_y = (box[..., 1] + box[..., 3]) / (2.0 * stride)
    true_offset = tf.stack([centre_x - cols, centre_y - rows], axis=-1)
    rel = tf.reduce_mean(tf.abs(size - true_size) / tf.maximum(true_size, 1.0), axis=-1)
    off = tf.reduce_mean(tf.abs(offset - true_offset), axis=-1)
    px = (cols + offset[..., 0]) * stride
    py = (rows + offset[..., 1]) * stride
    half_w, half_h = size[..., 0] / 2.0, size[..., 1] / 2.0
    predicted = tf.stack([px - half_w, py - half_h, px + half_w, py + half_h], axis=-1)
    box_loss = 1.0 - giou(predicted, box)

    def per_image(values: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(values * weight, axis=[1, 2]) / count

    return per_image(rel), per_image(off), per_image(box_loss)


# --------------------------------------------------------------------------------------------
# Quantization-aware training and int8 export
# --------------------------------------------------------------------------------------------

#: Layers with fixed weights: the input normalisation and the size and offset heads' scales.
FIXED_LAYERS: tuple[str, ...] = ("normalize", "size", "offset")


def tf_keras_twin(model: keras.Model, *, width: float = 1.0) -> Any:
    """The tf_keras (Keras 2) split-output twin of a Keras 3 detector, with its weights copied.

    `width` must be the one `model` was built with; copy_weights refuses mismatched shapes.
    """
    import tf_keras

    names = {layer.name for layer in model.layers}
    if not {"normalize", "heatmap", "size", "offset"} <= names:
        raise ValueError(f"model {model.name!r} is not a detector built by build_detector")
    num_classes = int(model.get_layer("heatmap").filters)
    input_hw = tuple(int(v) for v in model.input_shape[1:3])
    twin = build_detector(
        num_classes,
        input_hw,
        keras_module=tf_keras,
        width=width,
        split_outputs=True,
        name=f"{model.name}_tf_keras",
    )
    copy_weights(model, twin)
    return twin


def quantization_aware(
    model: keras.Model, *, width: float = 1.0, calibration: np.ndarray | None = None
) -> Any:
    """tfmot's quantization-aware (fake-quant) tf_keras model for a Keras 3 detector, weights copied.

    Pass `calibration` images: tfmot starts every activation range at [-6, 6] and moves it by
    0.1 % per training step, so without calibrate_quantizers the sizes (tens of pixels) stay clipped
    at 6 for thousands of steps. Train with `qat_trainable_variables(qat)`, not `qat.trainable_variables`:
    tfmot's QuantizeWrapperV2 lists a wrapped kernel as trainable even when its layer is not.
    """
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(tf_keras_twin(model, width=width))
    if calibration is not None:
        calibrate_quantizers(qat, model, calibration)
    return qat


def _layer_ranges(model: Any, names: list[str], images: np.ndarray, batch_size: int) -> dict[str, tuple]:
    """{layer name: (min, max)} of each named layer's output over the images, in inference mode."""
    probe = type(model)(model.input, [model.get_layer(n).output for n in names])
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for start in range(0, len(images), batch_size):
        outs = probe(np.asarray(images[start : start + batch_size], np.float32), training=False)
        for n, out in zip(names, outs if isinstance(outs, (list, tuple)) else [outs]):
            value = np.asarray(out)
            lo[n], hi[n] = min(lo[n], float(value.min())), max(hi[n], float(value.max()))
    return {n: (lo[n], hi[n]) for n in names}


def calibrate_quantizers(qat: Any, model: keras.Model, images: np.ndarray, batch_size: int = 8) -> int:
    """Sets the QAT model's quantization ranges from the float `model` on `images`; returns how many.

    Activation ranges (output_*, post_activation_*) become each layer's observed output range, the
    sigmoid heads' pre_activation_* the matching logit range, kernel_* each kernel's per-channel
    +-max|w| (what tfmot computes at the next training step) and the input's the pixel range 0..255.
    Every range includes 0, as TFLite requires.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"need calibration images (N, H, W, 3), got shape {images.shape}")
    wrapped = {layer.name: layer.layer.name for layer in qat.layers if hasattr(layer, "layer")}
    names = sorted(set(wrapped.values()) & {layer.name for layer in model.layers})
    ranges = _layer_ranges(model, names, images, batch_size)
    set_count = 0
    for layer in qat.layers:
        inner = wrapped.get(layer.name)
        for var in layer.non_trainable_weights:
            kind = var.name.split("/")[-1].split(":")[0]
            value = None
            if layer.name.startswith("quantize_layer") and kind.endswith(("_min", "_max")):
                value = 0.0 if kind.endswith("_min") else 255.0
            elif inner in ranges and kind in (
                "output_min",
                "output_max",
                "post_activation_min",
                "post_activation_max",
            ):
                lo, hi = ranges[inner]
                value = min(lo, 0.0) if kind.endswith("_min") else max(hi, 0.0)
            elif inner in ranges and kind in ("pre_activation_min", "pre_activation_max"):
                p = np.clip(np.array(ranges[inner]), 1e-6, 1.0 - 1e-6)  # sigmoid output -> logits
                lo, hi = np.log(p / (1.0 - p))
                value = min(float(lo), 0.0) if kind.endswith("_min") else max(float(hi), 0.0)
            elif inner is not None and kind in ("kernel_min", "kernel_max"):
                kernel = model.get_layer(inner).get_weights()[0]
                bound = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)
                value = np.reshape(-bound if kind == "kernel_min" else bound, var.shape)
            if value is not None:
                var.assign(np.broadcast_to(np.asarray(value, np.float32), var.shape))
                set_count += 1
    return set_count


def qat_trainable_variables(model: Any) -> list[tf.Variable]:
    """The trainable variables of a (QAT) model without the FIXED_LAYERS' weights."""
    return [v for v in model.trainable_variables if v.name.split("/")[0] not in FIXED_LAYERS]


def _named_heads(outputs: Any, output_names: list[str]) -> dict[str, tf.Tensor]:
    """{head name: tensor} from a model's dict or list outputs whose names end in a head's name."""
    if not isinstance(outputs, Mapping):
        outputs = dict(zip(output_names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
    named = {}
    for head in HEAD_NAMES:
        keys = [k for k in outputs if k == head or k.endswith("_" + head)]
        if len(keys) != 1:
            raise ValueError(f"expected one output named like {head!r}, got {sorted(outputs)}")
        named[head] = outputs[keys[0]]
    return named


def int8_tflite(model: Any, representative: np.ndarray) -> bytes:
    """A full-integer int8 TFLite flatbuffer (float32 input and outputs) of a split-output detector.

    Takes a Keras 3 model (post-training quantization, calibrated on `representative` images) or a
    tf_keras QAT model from `quantization_aware` (its fake-quant ranges decide the scales). Outputs
    are named by HEAD_NAMES; only int8 kernels are allowed, so a float op fails the conversion.
    """
    samples = np.array(representative, np.float32)
    if samples.ndim != 4 or len(samples) == 0:
        raise ValueError(f"need representative images (N, H, W, 3), got shape {samples.shape}")
    # Pin one pixel to 0 and one to 255 so the input's int8 range is the whole pixel range.
    samples[0].reshape(-1)[:2] = (0.0, 255.0)

    def calibration() -> Iterator[list[np.ndarray]]:
        for image in samples:
            yield [image[np.newaxis]]

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    output_names = list(getattr(model, "output_names", []) or [])

    @tf.function(input_signature=[spec])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return _named_heads(model(images, training=False), output_names)

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, keras.Model):
            path = Path(tmp) / "saved_model"
            model.export(str(path), format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
            restore: list[tuple[Any, np.ndarray]] = []
        else:
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [serve.get_concrete_function()], model
            )
            restore = _spread_equal_biases(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            return converter.convert()
        finally:
            for var, value in restore:
                var.assign(value)


def _spread_equal_biases(model: Any) -> list[tuple[Any, np.ndarray]]:
    """Makes each conv bias whose channels are all equal and non-zero slightly unequal; returns the originals.

    TF 2.21's converter quantizes such a constant ("splat") bias of a fake-quant (QAT) conv with the
    first channel's scale for every channel, which is wrong whenever the per-channel kernel scales
    differ (a freshly initialised head, e.g. the heatmap prior). Relative steps of 1e-6 break the
    splat and stay far below one int32 bias step.
    """
    changed = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        bias = getattr(inner, "bias", None)
        if bias is None or int(np.prod(bias.shape)) < 2:
            continue
        value = bias.numpy()
        if value.flat[0] != 0 and np.all(value == value.flat[0]):
            changed.append((bias, value.copy()))
            steps = np.arange(value.size, dtype=np.float32).reshape(value.shape)
            bias.assign(value * (1.0 + 1e-6 * steps))
    return changed


# --------------------------------------------------------------------------------------------
# Training speed
# --------------------------------------------------------------------------------------------


def random_batch(
    batch_size: int, num_classes: int, input_hw: tuple[int, int], *, max_objects: int = 8, seed: int = 0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Seeded random images (B, H, W, 3) 0..255 and padded {"boxes", "labels", "valid", "difficult"}."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in input_hw)
    images = rng.uniform(0.0, 255.0, (batch_size, h, w, 3)).astype(np.float32)
    sizes = rng.uniform(0.05, 0.6, (batch_size, max_objects, 2)) * [w, h]
    corner = rng.uniform(0.0, 1.0, (batch_size, max_objects, 2)) * ([w, h] - sizes)
    boxes = np.concatenate([corner, corner + sizes], axis=-1).astype(np.float32)
    counts = rng.integers(1, max_objects + 1, batch_size)
    valid = np.arange(max_objects)[np.newaxis] < counts[:, np.newaxis]
    objects = {
        "boxes": boxes,
        "labels": rng.integers(0, num_classes, (batch_size, max_objects)).astype(np.int32),
        "valid": valid,
        "difficult": valid & (rng.uniform(size=valid.shape) < 0.1),
    }
    return images, objects


def time_training(
    num_classes: int = 20,
    input_hw: tuple[int, int] = (256, 320),
    *,
    batch_size: int = 16,
    policy: str = "float32",
    width: float = 1.0,
    seconds: float = 60.0,
    warmup_steps: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Training images/s of the detector under a Keras dtype policy, from a plain GradientTape step.

    One fixed random batch and its targets (built once: in training they come from tf.data); Adam;
    steps are timed for about `seconds` after `warmup_steps` untimed ones (tracing included there).
    """
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        model = build_detector(num_classes, input_hw, width=width)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    images, objects = random_batch(batch_size, num_classes, input_hw, seed=seed)
    targets = build_targets(**objects, num_classes=num_classes, input_hw=input_hw)
    images = tf.constant(images)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            losses = detection_loss(model(images, training=True), targets, num_classes=num_classes)
            loss = tf.reduce_mean(losses["loss"])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(warmup_steps):
        float(step())
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 2:
        loss = step()
        steps += 1
    float(loss)
    elapsed = time.perf_counter() - start
    return {
        "policy": policy,
        "batch_size": int(batch_size),
        "input_hw": [int(v) for v in input_hw],
        "steps": steps,
        "seconds": elapsed,
        "images_per_s": steps * batch_size / elapsed,
        "parameters": int(model.count_params()),
        "final_loss": float(loss),
    }
