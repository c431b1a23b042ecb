"""What the detector learns from: per-batch training targets from padded boxes, and the loss.

Targets are built in TensorFlow from padded boxes, per batch inside tf.data after augmentation; the
loss returns one value per image so a training loop can average it over the global batch. The
network they train is `sprint2.detector`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from sprint2.detector import OFFSET_REACH, STRIDE, output_hw, split_heads

#: Heatmap radius rule: a box shifted by r along one axis alone keeps IoU >= MIN_OVERLAP with itself.
MIN_OVERLAP = 0.7
#: Smallest Gaussian sigma in output cells, so that a tiny box still has a peak one cell wide.
MIN_SIGMA = 1.0 / 3.0
#: Predicted heatmap probabilities are clipped to [EPS, 1 - EPS] before taking logs.
EPS = 1e-4
#: Dense regression covers the cells where the object's Gaussian is at least this: exp(-2), the value
#: at the shift that keeps IoU >= MIN_OVERLAP (see gaussian_sigma).
DENSE_MIN = math.exp(-2.0)


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
    labels, positive, difficult = _object_kinds(labels, valid, difficult, bw, bh, num_classes)

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


def _object_kinds(
    labels: tf.Tensor, valid: Any, difficult: Any, bw: tf.Tensor, bh: tf.Tensor, num_classes: int
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(labels, trained, difficult): labels checked to lie in [0, num_classes) where valid; a box is
    trained when valid, with area and not difficult; difficult only counts for boxes with area."""
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
    return labels, real & ~difficult, difficult


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
