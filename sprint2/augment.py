"""Box-aware augmentation: random flip, zoom, stretch and shift that move every box with the pixels.

Boxes come padded, (B, M, 4) xmin, ymin, xmax, ymax in pixels with a (B, M) validity mask (or -1 rows
as padding), so one image may hold any number of objects. Two rules for boxes the geometry pushes
past the frame: `keep_whole` (the single-box models' rule) limits zoom and shift so that every valid
box of an image stays whole inside the frame; otherwise boxes are clipped to the frame and a box
whose visible part is less than `min_visible` of its area is dropped (mask off, row set to -1).
`augment_detection` adds the detector's third rule: a kept box showing less than `whole_visible` of its
area is marked difficult, so training neither asks for it nor against it.
Draws are stateless: the same seed gives the same batch, on any worker. `mosaic` (YOLOv4-style, optional)
tiles four images of a batch into one before `augment`; its boxes follow the same clip-and-drop and
whole_visible rules.

Training batches use this module, not Keras 3's box-aware preprocessing layers (RandomFlip, RandomZoom,
RandomTranslation, RandomCrop; tests/test_keras_box_layers.py checks them on the installed Keras):
those draw from a stateful seed generator and refuse a per-batch seed, so a batch cannot be redrawn
from (seed, step) and a parallel tf.data map does not repeat; RandomCrop moves boxes along the wrong
axes (keras-team/keras#23518); their default reflect fill paints copies of objects that no box covers;
they keep a box clipped to any sliver; and chained, they resample the image once per layer, which
costs more CPU per image than this module's single resampling.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from sprint2.recipes import AugmentParams

logger = logging.getLogger(__name__)

FILL_VALUE = 127.0  # canvas grey for zoomed-out images: neutral, not a copy of the edges
MIN_VISIBLE = 0.25  # a clipped box showing less than this share of its area no longer identifies its object
#: A kept box showing less than this share of its area is ambiguous: datasets disagree on whether a cut
#: object is labelled (bccd leaves most cells cut by the image border unlabelled, VOC labels truncated
#: objects), so the detector ignores it rather than learning it as an object (or, dropped, as background).
WHOLE_VISIBLE = 0.75
PAD = -1.0  # the coordinate of padded and dropped box rows
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma
#: RGB to YIQ (NTSC): luma first (GRAY_WEIGHTS), then the two chroma axes hue turns in.
YIQ = np.array([GRAY_WEIGHTS, (0.596, -0.274, -0.322), (0.211, -0.523, 0.312)])


def hue_rotation(turns: tf.Tensor) -> tf.Tensor:
    """(B, 3, 3) RGB matrices turning each image's hue by about `turns` (B,) of a circle, in HSV's
    direction: a rotation of the YIQ chroma plane, so luma and greys stay put. One 3 x 3 product per
    pixel, where HSV's own hue shift costs two colour-space conversions."""
    to_yiq = tf.constant(YIQ, tf.float32)
    from_yiq = tf.constant(np.linalg.inv(YIQ), tf.float32)
    angle = 2.0 * np.pi * turns
    cos, sin = tf.cos(angle), tf.sin(angle)
    one, zero = tf.ones_like(angle), tf.zeros_like(angle)
    rotate = tf.reshape(tf.stack([one, zero, zero, zero, cos, sin, zero, -sin, cos], axis=1), [-1, 3, 3])
    return from_yiq[None] @ rotate @ to_yiq[None]


def colour_jitter(images: tf.Tensor, p: AugmentParams, seeds: tf.Tensor) -> tf.Tensor:
    """Per-image brightness, contrast, saturation, hue and optional grayscale on float 0..255 RGB.

    seeds: (5, 2) stateless seeds, one per kind of draw. Each kind is affine in the pixel values and
    saturation, hue and grayscale leave greys unchanged, so the five compose into one per-image
    x -> contrast * M x + k (M the 3 x 3 colour matrix, k a grey offset), applied in one pass and clipped.
    """
    b = tf.shape(images)[0]
    luma = tf.constant(GRAY_WEIGHTS, tf.float32)[None, :]  # (1, 3)
    eye = tf.eye(3, batch_shape=[1])
    to_grey = tf.ones([3, 1]) @ luma  # every channel becomes the luma

    def draw(i: int, lo: float, hi: float) -> tf.Tensor:
        return tf.random.stateless_uniform([b], seeds[i], lo, hi)

    shift = draw(0, -p.brightness, p.brightness) * 255.0 if p.brightness > 0 else tf.zeros([b])
    contrast = draw(1, 1.0 - p.contrast, 1.0 + p.contrast) if p.contrast > 0 else tf.ones([b])
    matrix = tf.tile(eye, [b, 1, 1])
    if p.saturation > 0:  # s x + (1 - s) grey
        s = draw(2, 1.0 - p.saturation, 1.0 + p.saturation)[:, None, None]
        matrix = s * eye + (1.0 - s) * to_grey[None]
    if p.hue > 0:
        matrix = hue_rotation(draw(3, -p.hue, p.hue)) @ matrix
    if p.grayscale > 0:
        drop = (draw(4, 0.0, 1.0) < p.grayscale)[:, None, None]
        matrix = tf.where(drop, to_grey[None] @ matrix, matrix)
    # brightness then contrast about the brightened image's mean: c (x + shift) + (1 - c) (mean + shift)
    mean = tf.reduce_mean(images, axis=[1, 2, 3])
    offset = shift + (1.0 - contrast) * mean
    x = tf.einsum("bhwc,bdc->bhwd", images, contrast[:, None, None] * matrix)
    return tf.clip_by_value(x + offset[:, None, None, None], 0.0, 255.0)


def _hull(lo: tf.Tensor, hi: tf.Tensor, mask: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per image, the extent (B,) of its valid boxes along one axis; the frame's centre when it has none."""
    inf = tf.constant(float("inf"))
    h0 = tf.reduce_min(tf.where(mask, lo, inf), axis=1)
    h1 = tf.reduce_max(tf.where(mask, hi, -inf), axis=1)
    any_box = tf.reduce_any(mask, axis=1)
    return tf.where(any_box, h0, length / 2), tf.where(any_box, h1, length / 2)


def _shift(a0: tf.Tensor, a1: tf.Tensor, length: tf.Tensor, u: tf.Tensor, limit: float) -> tf.Tensor:
    """Translation (B,) uniform over the shifts up to limit x length that keep the scaled extent [a0, a1]
    inside the frame; when none does, the one closest to 0 that does."""
    lo_ok, hi_ok = -a0, length - a1
    lo, hi = tf.maximum(lo_ok, -limit * length), tf.minimum(hi_ok, limit * length)
    fallback = tf.clip_by_value(tf.zeros_like(a0), lo_ok, tf.maximum(lo_ok, hi_ok))
    return tf.where(lo <= hi, lo + u * (hi - lo), fallback)


def augment(
    images: tf.Tensor,
    boxes: tf.Tensor,
    mask: tf.Tensor | None,
    seed: tf.Tensor,
    params: AugmentParams | None = None,
    *,
    keep_whole: bool = False,
    min_visible: float = MIN_VISIBLE,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Random flip, zoom (in or out), stretch and shift, every box moved with the pixels, then colour jitter.

    images float32 (B, H, W, 3) in 0..255; boxes (B, M, 4) px; mask (B, M) bool, or None to take rows of
    -1 as padding; seed int (2,) for stateless draws. Returns (images, boxes, mask): boxes clipped to the
    frame, rows that are padding or dropped (see the module docstring) set to -1 with their mask off.
    """
    images, boxes, kept, _ = _augment(images, boxes, mask, seed, params, keep_whole, min_visible)
    return images, boxes, kept


def augment_detection(
    images: tf.Tensor,
    boxes: tf.Tensor,
    mask: tf.Tensor,
    difficult: tf.Tensor,
    seed: tf.Tensor,
    params: AugmentParams | None = None,
    *,
    min_visible: float = MIN_VISIBLE,
    whole_visible: float = WHOLE_VISIBLE,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`augment` for the detector's padded boxes, with their difficult flags (B, M) bool.

    Returns (images, boxes, mask, difficult): the same draws as `augment` with the same seed; a kept box
    the frame cuts to less than whole_visible of its area becomes difficult (see WHOLE_VISIBLE), and
    dropped rows are never difficult.
    """
    _check_whole_visible(min_visible, whole_visible)
    images, boxes, kept, share = _augment(images, boxes, mask, seed, params, False, min_visible)
    return images, boxes, kept, kept & (tf.cast(difficult, tf.bool) | (share < whole_visible))


def _check_whole_visible(min_visible: float, whole_visible: float) -> None:
    if not min_visible <= whole_visible <= 1.0:
        raise ValueError(
            f"whole_visible must be in [min_visible, 1], got {whole_visible} (min {min_visible})"
        )


def _augment(
    images: tf.Tensor,
    boxes: tf.Tensor,
    mask: tf.Tensor | None,
    seed: tf.Tensor,
    params: AugmentParams | None,
    keep_whole: bool,
    min_visible: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`augment`, plus each box's visible share of its area after the geometry (B, M) float32."""
    p = params or AugmentParams()
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
    images = tf.convert_to_tensor(images, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    mask = tf.reduce_all(boxes >= 0.0, axis=-1) if mask is None else tf.cast(mask, tf.bool)
    shape = tf.shape(images)
    b = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 11)
    flip = tf.random.stateless_uniform([b], seeds[0]) < (0.5 if p.flip else 0.0)
    scale = tf.random.stateless_uniform([b], seeds[1], p.zoom[0], p.zoom[1])
    stretch = tf.exp(tf.random.stateless_uniform([b], seeds[2], -p.aspect, p.aspect)) if p.aspect > 0 else 1.0
    ux = tf.random.stateless_uniform([b], seeds[3])
    uy = tf.random.stateless_uniform([b], seeds[4])
    sx, sy = scale * stretch, scale / stretch

    if p.flip:  # one gather per batch: each image reads its columns forwards or mirrored
        cols = tf.range(shape[2])
        src = tf.where(flip[:, None], shape[2] - 1 - cols[None], cols[None])
        images = tf.gather(images, src, axis=2, batch_dims=1)
    x0 = tf.where(flip[:, None], w - boxes[..., 2], boxes[..., 0])
    x1 = tf.where(flip[:, None], w - boxes[..., 0], boxes[..., 2])
    y0, y1 = boxes[..., 1], boxes[..., 3]

    # Continuous coordinates: v_out = s * (v_in - L/2) + L/2 + t, per image.
    if keep_whole:
        # Cap each axis' scale so the boxes' extent fits in the frame (one filling it is not zoomed in).
        hx0, hx1 = _hull(x0, x1, mask, w)
        hy0, hy1 = _hull(y0, y1, mask, h)
        sx = tf.minimum(sx, tf.maximum(w / tf.maximum(hx1 - hx0, 1e-3), 1.0))
        sy = tf.minimum(sy, tf.maximum(h / tf.maximum(hy1 - hy0, 1e-3), 1.0))

    def scaled(v: tf.Tensor, s: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
        return s[:, None] * (v - length / 2) + length / 2

    nx0, nx1, ny0, ny1 = scaled(x0, sx, w), scaled(x1, sx, w), scaled(y0, sy, h), scaled(y1, sy, h)
    if keep_whole:  # scaling is monotonic, so the scaled boxes' extent is the scaled extent
        tx = _shift(*_hull(nx0, nx1, mask, w), w, ux, p.shift)
        ty = _shift(*_hull(ny0, ny1, mask, h), h, uy, p.shift)
    else:
        tx, ty = (2.0 * ux - 1.0) * p.shift * w, (2.0 * uy - 1.0) * p.shift * h
    nx0, nx1 = nx0 + tx[:, None], nx1 + tx[:, None]
    ny0, ny1 = ny0 + ty[:, None], ny1 + ty[:, None]
    moved = tf.stack([nx0, ny0, nx1, ny1], axis=-1)
    new_boxes, kept, share = _clip_boxes(moved, mask, w, h, min_visible=None if keep_whole else min_visible)
    images = _warp(images, sx, sy, tx, ty, w, h)
    if p.has_colour:
        images = colour_jitter(images, p, seeds[5:10])
    return images, new_boxes, kept, share


def _visible(
    moved: tf.Tensor, clipped: tf.Tensor, mask: tf.Tensor, min_visible: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """(kept, share): each box's clipped area over its moved area (1 for a box without area), and the
    boxes in mask that keep some area and at least min_visible of it."""
    area = tf.reduce_prod(tf.nn.relu(moved[..., 2:] - moved[..., :2]), axis=-1)
    visible = tf.reduce_prod(tf.nn.relu(clipped[..., 2:] - clipped[..., :2]), axis=-1)
    kept = mask & (visible > 0.0) & (visible >= min_visible * area)
    return kept, tf.where(area > 0.0, visible / tf.maximum(area, 1e-6), 1.0)


def _clip_boxes(
    moved: tf.Tensor, mask: tf.Tensor, w: tf.Tensor, h: tf.Tensor, *, min_visible: float | None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(boxes clipped to the frame, PAD where dropped; kept; visible share): a box is kept while some of
    it and at least min_visible of its area stays in the frame; with min_visible None every box in mask
    is kept."""
    clipped = tf.clip_by_value(moved, 0.0, tf.stack([w, h, w, h]))
    kept, share = _visible(moved, clipped, mask, min_visible or 0.0)
    kept = mask if min_visible is None else kept
    return tf.where(kept[..., None], clipped, PAD), kept, share


def _warp(
    images: tf.Tensor, sx: tf.Tensor, sy: tf.Tensor, tx: tf.Tensor, ty: tf.Tensor, w: tf.Tensor, h: tf.Tensor
) -> tf.Tensor:
    """The images under v_out = s * (v_in - L/2) + L/2 + t per axis, bilinear, grey outside the input."""
    # The image op maps each output pixel index to an input index (pixel centres at integers).
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    zeros = tf.zeros_like(sx)
    transforms = tf.stack(
        [1.0 / sx, zeros, cx - (cx + tx) / sx, zeros, 1.0 / sy, cy - (cy + ty) / sy, zeros, zeros], axis=1
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=FILL_VALUE,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _tiles(t: tf.Tensor) -> tf.Tensor:
    """(B, M, ...) -> (B, 4M, ...): per image i, the rows of images i, i+1, i+2, i+3 (mod B), in turn."""
    return tf.concat([tf.roll(t, shift=-q, axis=0) for q in range(4)], axis=1)


def _mosaic_draws(
    seed: tf.Tensor, batch: tf.Tensor, probability: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per image (B,): whether it becomes a mosaic, the window scale k in [1, 2], and the window's top-left
    corner as a fraction of (W, H), uniform over the corners that put the four images' meeting point in
    the middle half of the output while the window stays inside the 2H x 2W canvas."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    picked = tf.random.stateless_uniform([batch], seeds[0]) < probability
    k = tf.random.stateless_uniform([batch], seeds[1], 1.0, 2.0)
    lo, hi = tf.maximum(0.0, 1.0 - 0.75 * k), tf.minimum(2.0 - k, 1.0 - 0.25 * k)
    fx = lo + tf.random.stateless_uniform([batch], seeds[2]) * (hi - lo)
    fy = lo + tf.random.stateless_uniform([batch], seeds[3]) * (hi - lo)
    return picked, k, fx, fy


def _mosaic_boxes(
    boxes: tf.Tensor, mask: tf.Tensor, window: tf.Tensor, k: tf.Tensor, frame: tf.Tensor, min_visible: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Every image's (B, 4M, 4) mosaic boxes in output pixels, which are kept (augment's drop rule) and
    their visible shares.

    window (B, 4): the window corner (x, y, x, y) in canvas pixels; k (B,): its scale; frame (4,): W, H, W, H.
    """
    m = boxes.shape[1] if boxes.shape[1] is not None else tf.shape(boxes)[1]
    cell = tf.constant([[0, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1]], tf.float32) * frame
    offsets = tf.repeat(cell, m, axis=0)  # (4M, 4): quadrant q of the canvas holds rows q*M .. q*M+M-1
    src = _tiles(boxes)

    def to_output(v: tf.Tensor) -> tf.Tensor:
        return (v + offsets - window[:, None]) / k[:, None, None]

    moved = to_output(src)
    # Clipped to its own image first, so a box never reaches into a neighbour's quadrant, then to the frame.
    clipped = tf.clip_by_value(to_output(tf.clip_by_value(src, 0.0, frame)), 0.0, frame)
    kept, share = _visible(moved, clipped, _tiles(mask), min_visible)
    return tf.where(kept[..., None], clipped, PAD), kept, share


def _mosaic_images(images: tf.Tensor, picked: tf.Tensor, window: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """The picked images replaced by their window of the 2H x 2W canvas, resampled to H x W in one pass;
    canvases are built for the picked images only."""
    idx = tf.where(picked)[:, 0]
    b = tf.shape(images, out_type=tf.int64)[0]
    tiles = [tf.gather(images, (idx + q) % b) for q in range(4)]
    canvas = tf.concat([tf.concat(tiles[:2], axis=2), tf.concat(tiles[2:], axis=2)], axis=1)
    s, x0, y0 = tf.gather(k, idx), tf.gather(window[:, 0], idx), tf.gather(window[:, 1], idx)
    zeros = tf.zeros_like(s)
    # Output pixel index j (centre j + 0.5) reads canvas position k (j + 0.5) + corner, i.e. index
    # k j + corner + (k - 1) / 2: at k = 2 on whole pixels, a 2 x 2 average.
    transforms = tf.stack([s, zeros, x0 + (s - 1.0) / 2, zeros, s, y0 + (s - 1.0) / 2, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=canvas,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=FILL_VALUE,
        interpolation="BILINEAR",
        fill_mode="NEAREST",  # the window lies inside the canvas: only rounding could reach past its edge
    )
    return tf.tensor_scatter_nd_update(images, idx[:, None], out)


def mosaic(
    images: tf.Tensor,
    boxes: tf.Tensor,
    mask: tf.Tensor | None,
    labels: tf.Tensor,
    difficult: tf.Tensor,
    seed: tf.Tensor,
    probability: float = 1.0,
    *,
    min_visible: float = MIN_VISIBLE,
    whole_visible: float = WHOLE_VISIBLE,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """YOLOv4-style mosaic: each image picked with `probability` becomes a 2 x 2 tile of itself and the
    next three images of the batch, so one training image shows four images' objects, at 1/2 to 1 scale.

    The 2H x 2W canvas holds images i, i+1 (top), i+2, i+3 (bottom, mod B) at full size; a window of
    k H x k W (k uniform in [1, 2]; k = 2 is the whole canvas) is resampled to H x W in one bilinear pass,
    its corner drawn so the images meet in the middle half of the output (the window never leaves the
    canvas: no fill). Inputs as `augment`, plus labels (B, M) int and difficult (B, M) bool; seed int (2,).
    Returns (images, boxes, mask, labels, difficult) with 4M rows: row q*M + j is box j of image i+q,
    moved with the pixels, clipped, dropped (-1, mask off, label -1, not difficult) under `min_visible`,
    made difficult when kept with less than `whole_visible` of its area (as `augment_detection`); images
    not picked are returned unchanged, their M rows first and 3M padding rows after.
    """
    if not 0.0 <= probability <= 1.0 or not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"probability and min_visible must be in [0, 1], got {probability}, {min_visible}")
    _check_whole_visible(min_visible, whole_visible)
    images = tf.convert_to_tensor(images, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    mask = tf.reduce_all(boxes >= 0.0, axis=-1) if mask is None else tf.cast(mask, tf.bool)
    labels, difficult = tf.convert_to_tensor(labels), tf.cast(difficult, tf.bool)
    shape = tf.shape(images)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    frame = tf.stack([w, h, w, h])
    picked, k, fx, fy = _mosaic_draws(seed, shape[0], probability)
    window = tf.stack([fx * w, fy * h, fx * w, fy * h], axis=1)
    new_boxes, kept, share = _mosaic_boxes(boxes, mask, window, k, frame, min_visible)
    m = boxes.shape[1] if boxes.shape[1] is not None else tf.shape(boxes)[1]

    def choose(mosaic_rows: tf.Tensor, own: tf.Tensor, fill: float | bool | int) -> tf.Tensor:
        """Mosaic rows for picked images; the image's own rows, padded to 4M with `fill`, for the rest."""
        pad = [[0, 0], [0, 3 * m]] + [[0, 0]] * (own.shape.rank - 2)
        own = tf.pad(own, pad, constant_values=tf.cast(fill, own.dtype))
        return tf.where(tf.reshape(picked, [-1] + [1] * (own.shape.rank - 1)), mosaic_rows, own)

    return (
        _mosaic_images(images, picked, window, k),
        choose(new_boxes, boxes, PAD),
        choose(kept, mask, False),
        choose(tf.where(kept, _tiles(labels), tf.cast(-1, labels.dtype)), labels, -1),
        choose(kept & (_tiles(difficult) | (share < whole_visible)), difficult, False),
    )
