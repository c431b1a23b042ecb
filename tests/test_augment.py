"""Box-aware augmentation and the tf.data pipeline: every box follows its pixels, for every transform."""

from __future__ import annotations

import colorsys
import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
import tensorflow as tf

from sprint2.augment import (
    FILL_VALUE,
    GRAY_WEIGHTS,
    MIN_VISIBLE,
    WHOLE_VISIBLE,
    _mosaic_draws,
    augment,
    augment_detection,
    colour_jitter,
    hue_rotation,
    mosaic,
)
from sprint2.evaluate import image_targets
from sprint2.pipeline import detection_dataset, make_dataset, make_targets, padded_targets
from sprint2.recipes import AUGMENT_PRESETS, AugmentParams, augment_params

SIZE = 64
HEIGHT, WIDTH = 48, 80  # the property tests' frame: non-square, so a transform that swaps x and y shows
ROWS = 6  # box rows per image in the property tests: 1 to ROWS - 1 objects, the rest -1 padding
TOL = 1.5  # px, for any box-aware transform: the colour threshold's half pixel plus a resampling offset
EXACT = 1.0  # px, for augment, which maps edges exactly: only the threshold's half pixel remains
# Pure colours on black: a pixel belongs to colour c when each channel sits on c's side of half-intensity,
# so a painted edge blended by bilinear resampling is found within half a pixel of where the box says.
PAINT = np.array(
    [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)],
    np.float32,
)

STILL = dict(flip=False, zoom=(1.0, 1.0), aspect=0.0, shift=0.0)
TRANSFORMS = {
    "flip": AugmentParams(**{**STILL, "flip": True}),
    "zoom in": AugmentParams(**{**STILL, "zoom": (1.2, 1.6)}),
    "zoom out": AugmentParams(**{**STILL, "zoom": (0.5, 0.8)}),
    "stretch": AugmentParams(**{**STILL, "aspect": 0.3}),
    "shift": AugmentParams(**{**STILL, "shift": 0.4}),
    "strong geometry": dataclasses.replace(
        AUGMENT_PRESETS["strong"], brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale=0.0
    ),
    "all geometry": AugmentParams(flip=True, zoom=(0.5, 1.6), aspect=0.3, shift=0.4),
}


def _paint(rng: np.random.Generator, image: np.ndarray, count: int, min_side: int = 6) -> list[np.ndarray]:
    """Paints `count` solid rectangles of PAINT's colours (the j-th in PAINT[j]) on `image`; their boxes.

    Rectangles keep 3 px from each other and 2 px from the border, so no two colours ever blend.
    """
    height, width = image.shape[:2]
    placed: list[np.ndarray] = []
    while len(placed) < count:
        w = rng.integers(min_side, max(min_side + 1, width // 3))
        h = rng.integers(min_side, max(min_side + 1, height // 3))
        x0, y0 = rng.integers(2, width - 2 - w), rng.integers(2, height - 2 - h)
        box = np.array([x0, y0, x0 + w, y0 + h], np.float32)
        if all(
            box[0] > b[2] + 3 or b[0] > box[2] + 3 or box[1] > b[3] + 3 or b[1] > box[3] + 3 for b in placed
        ):
            image[y0 : y0 + h, x0 : x0 + w] = PAINT[len(placed)]
            placed.append(box)
    return placed


def painted(n: int, seed: int, count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """n black SIZE x SIZE images, each with `count` rectangles (row j painted PAINT[j]), and their boxes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SIZE, SIZE, 3), np.float32)
    boxes = np.stack([_paint(rng, image, count) for image in images]).astype(np.float32)
    return images, boxes


def scene(
    n: int, seed: int, height: int = HEIGHT, width: int = WIDTH, rows: int = ROWS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n black images with 1 to rows - 1 rectangles each: images, boxes (n, rows, 4), labels (n, rows).

    Row j holds the rectangle painted PAINT[j] and label j; the rows after the last object are padding
    (box -1, label -1), so every image has at least one padded row.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n, height, width, 3), np.float32)
    boxes = np.full((n, rows, 4), -1.0, np.float32)
    labels = np.full((n, rows), -1, np.int32)
    for i, image in enumerate(images):
        count = int(rng.integers(1, rows))
        boxes[i, :count] = _paint(rng, image, count)
        labels[i, :count] = np.arange(count)
    return images, boxes, labels


def colour_bounds(image: np.ndarray, j: int) -> np.ndarray | None:
    """[xmin, ymin, xmax, ymax] of the pixels of colour PAINT[j] (None when none is left)."""
    on = PAINT[j] > 127.5
    hit = np.all((image > 127.5) == on, axis=-1)
    ys, xs = np.nonzero(hit)
    if not len(xs):
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_boxes_follow_pixels(
    name: str, images: np.ndarray, boxes: np.ndarray, keep: np.ndarray, labels: np.ndarray, atol: float = TOL
) -> tuple[int, int]:
    """The property every box-aware transform must hold, on the output of a `scene`; (kept, dropped).

    A kept box encloses its colour's pixels within atol, wherever they are, so a copy of an object the
    fill painted elsewhere fails it too; only a box thinner than atol may show no pixel. A dropped row
    is -1 and whatever is left of its colour touches the frame. Padding stays padding.
    """
    height, width = images.shape[1:3]
    kept = dropped = 0
    for i, (img, bxs) in enumerate(zip(images, boxes)):
        for j, label in enumerate(labels[i]):
            where = f"{name}: image {i}, row {j}, box {bxs[j].tolist()}"
            if label < 0:
                assert not keep[i, j], where
                np.testing.assert_array_equal(bxs[j], -1.0, err_msg=where)
                continue
            found = colour_bounds(img, int(label))
            if keep[i, j]:
                kept += 1
                x0, y0, x1, y1 = bxs[j]
                assert -1e-3 <= x0 <= x1 <= width + 1e-3 and -1e-3 <= y0 <= y1 <= height + 1e-3, where
                if found is None:
                    assert min(x1 - x0, y1 - y0) < atol, f"{where}: no pixel of its colour is left"
                else:
                    np.testing.assert_allclose(found, bxs[j], atol=atol, err_msg=f"{where}, pixels {found}")
            else:
                dropped += 1
                np.testing.assert_array_equal(bxs[j], -1.0, err_msg=where)
                assert (
                    found is None
                    or found[0] == 0
                    or found[1] == 0
                    or found[2] == width
                    or (found[3] == height)
                ), f"{where}: dropped although its pixels {found} do not touch the frame"
    return kept, dropped


def _augment(images, boxes, seed, params, **kw):
    out = augment(tf.constant(images), tf.constant(boxes), None, tf.constant(seed, tf.int64), params, **kw)
    return [t.numpy() for t in out]


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_every_box_follows_its_pixels(name: str) -> None:
    """Over many seeds on non-square images with padded rows, each kept box encloses its colour's pixels
    tightly, and a dropped one was cut off by the frame."""
    params = TRANSFORMS[name]
    kept_total = dropped_total = 0
    for seed in range(8):
        images, boxes, labels = scene(16, seed)
        out_images, out_boxes, mask = _augment(images, boxes, [seed, 11], params)
        kept, dropped = assert_boxes_follow_pixels(name, out_images, out_boxes, mask, labels, EXACT)
        kept_total, dropped_total = kept_total + kept, dropped_total + dropped
    assert kept_total > 0.5 * (kept_total + dropped_total)
    if name in ("flip", "zoom out"):
        assert dropped_total == 0  # these never push a box out of the frame
    if name in ("zoom in", "shift", "all geometry"):
        assert dropped_total > 0  # the drop rule is exercised
    if name == "flip":
        # The flip really happens (about half the time), boxes mirrored with the pixels.
        images, boxes, labels = scene(32, 0)
        _, flipped, _ = _augment(images, boxes, [0, 11], params)
        valid = labels >= 0
        mirrored = np.where(valid, np.isclose(flipped[..., 0], WIDTH - boxes[..., 2]), True).all(axis=1)
        assert 0 < mirrored.sum() < len(mirrored)


def test_colour_jitter_never_moves_a_box() -> None:
    """The same seed with and without colour jitter: identical boxes and masks, different pixels."""
    geometry = TRANSFORMS["all geometry"]
    colour = dataclasses.replace(
        geometry, brightness=0.3, contrast=0.4, saturation=0.4, hue=0.1, grayscale=0.2
    )
    for seed in range(4):
        images, boxes, _ = scene(16, seed)
        plain = _augment(images, boxes, [seed, 5], geometry)
        jittered = _augment(images, boxes, [seed, 5], colour)
        np.testing.assert_array_equal(jittered[1], plain[1])
        np.testing.assert_array_equal(jittered[2], plain[2])
        assert np.abs(jittered[0] - plain[0]).mean() > 5


@pytest.mark.parametrize("name", ["zoom in", "shift", "strong geometry", "all geometry"])
def test_keep_whole_keeps_every_box_whole_inside_the_frame(name: str) -> None:
    """keep_whole (the single-box rule) limits zoom and shift: no box is dropped or clipped."""
    for seed in range(4):
        images, boxes = painted(24, seed)
        out_images, out_boxes, mask = _augment(images, boxes, [seed, 3], TRANSFORMS[name], keep_whole=True)
        assert mask.all()
        assert (out_boxes >= 0).all() and (out_boxes <= SIZE).all()
        # Unclipped: every box of an image is scaled by the same factor on each axis.
        ratio = (out_boxes[..., 2:] - out_boxes[..., :2]) / (boxes[..., 2:] - boxes[..., :2])
        np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-4)
        for img, bxs in zip(out_images, out_boxes):
            for j, box in enumerate(bxs):
                np.testing.assert_allclose(colour_bounds(img, j), box, atol=1.5)


def test_drop_rule_follows_the_visible_fraction() -> None:
    """A fixed 2x zoom about the centre: boxes fully out, half out and fully in, against min_visible."""
    images = np.zeros((1, SIZE, SIZE, 3), np.float32)
    # x -> 2x - 32: [0, 16] leaves the frame, [8, 24] keeps half of its width, [24, 40] stays whole.
    boxes = np.array([[[0, 0, 16, 16], [8, 24, 24, 40], [24, 24, 40, 40], [-1, -1, -1, -1]]], np.float32)
    params = AugmentParams(**{**STILL, "zoom": (2.0, 2.0)})
    _, out, mask = _augment(images, boxes, [0, 0], params, min_visible=0.4)
    assert mask.tolist() == [[False, True, True, False]]
    np.testing.assert_allclose(out[0, 1], [0, 16, 16, 48])
    np.testing.assert_allclose(out[0, 2], [16, 16, 48, 48])
    np.testing.assert_array_equal(out[0, [0, 3]], -1.0)
    _, _, mask = _augment(images, boxes, [0, 0], params, min_visible=0.6)
    assert mask.tolist() == [[False, False, True, False]]
    with pytest.raises(ValueError, match="min_visible"):
        _augment(images, boxes, [0, 0], params, min_visible=1.5)


def test_detection_augment_marks_boxes_cut_below_whole_visible_difficult() -> None:
    """The same fixed 2x zoom: the half-cut box stays but becomes difficult, the whole one keeps its
    flag, the dropped one is never difficult; the draws are augment's."""
    images = np.zeros((1, SIZE, SIZE, 3), np.float32)
    boxes = np.array([[[0, 0, 16, 16], [8, 24, 24, 40], [24, 24, 40, 40], [-1, -1, -1, -1]]], np.float32)
    params = AugmentParams(**{**STILL, "zoom": (2.0, 2.0)})

    def run(difficult: list[bool], **kw: float) -> list[np.ndarray]:
        out = augment_detection(
            tf.constant(images),
            tf.constant(boxes),
            tf.constant(boxes[..., 0] >= 0),
            tf.constant([difficult]),
            tf.constant([0, 0], tf.int64),
            params,
            **kw,
        )
        return [t.numpy() for t in out]

    _, out, kept, hard = run([True, False, False, False], min_visible=0.4)
    assert 0.5 < WHOLE_VISIBLE <= 1.0
    assert kept.tolist() == [[False, True, True, False]]
    assert hard.tolist() == [[False, True, False, False]]  # half of box 1 shows; box 0 left the frame
    np.testing.assert_array_equal(out, _augment(images, boxes, [0, 0], params, min_visible=0.4)[1])
    _, _, _, hard = run([False, False, True, False], min_visible=0.4)
    assert hard.tolist() == [[False, True, True, False]]  # a difficult object stays difficult
    _, _, _, hard = run([False] * 4, min_visible=0.4, whole_visible=0.5)
    assert not hard.any()  # exactly half shows: not below the bar
    with pytest.raises(ValueError, match="whole_visible"):
        run([False] * 4, min_visible=0.4, whole_visible=0.3)


def test_an_explicit_mask_wins_over_the_padding_rule() -> None:
    images, boxes = painted(4, 0)
    mask = np.array([[True, False, True]] * 4)
    out = augment(tf.constant(images), tf.constant(boxes), tf.constant(mask), tf.constant([1, 2], tf.int64))
    assert out[2].numpy().tolist() == mask.tolist()
    np.testing.assert_array_equal(out[1].numpy()[:, 1], -1.0)


def test_strong_crops_and_zooms_keep_a_single_box_whole() -> None:
    """The single-box rule on a large object near the edge: zooming in must not cut it, boxes still move."""
    n = 48
    image = np.zeros((SIZE, SIZE, 3), np.float32)
    image[6:46, 30:60] = 255.0
    box = np.array([[30.0, 6.0, 60.0, 46.0]], np.float32)
    for zoom in [(0.6, 0.8), (1.2, 1.4), (0.6, 1.4)]:
        params = AugmentParams(zoom=zoom, aspect=0.15, shift=0.5)
        out_images, out_boxes, mask = _augment(
            np.repeat(image[None], n, 0), np.tile(box, (n, 1, 1)), [7, 8], params, keep_whole=True
        )
        out_boxes = out_boxes[:, 0]
        assert mask.all()
        widths = out_boxes[:, 2] - out_boxes[:, 0]
        if zoom[1] < 1:
            assert (widths < 30 * 0.95).all()  # zoomed out (0.8 x stretch up to e^0.15): smaller
            assert np.isclose(out_images[:, 0, 0], FILL_VALUE).mean() > 0.5  # grey canvas shows at the corner
        if zoom[0] > 1:
            assert (widths > 30 * 1.1).any()  # zoomed in where it fits
        assert out_boxes[:, 0].std() > 2 and out_boxes[:, 1].std() > 2  # boxes really move about
        for img, b in zip(out_images, out_boxes):
            np.testing.assert_allclose(colour_bounds(img, 3), b, atol=1.5)


def test_colour_jitter_changes_pixels_and_leaves_boxes_alone() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 24, 24, 3)).astype(np.float32)
    boxes = np.tile([[[2.0, 3.0, 20.0, 22.0], [-1, -1, -1, -1]]], (16, 1, 1)).astype(np.float32)
    params = AugmentParams(**STILL, brightness=0.3, contrast=0.4, saturation=0.4, hue=0.1)
    out, out_boxes, mask = _augment(x, boxes, [1, 1], params)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.abs(out - x).mean() > 5  # the colours really changed
    np.testing.assert_array_equal(out_boxes, boxes)  # colour never moves boxes
    assert mask[:, 0].all() and not mask[:, 1].any()
    grey, _, _ = _augment(x, boxes, [1, 1], AugmentParams(**STILL, grayscale=1.0))
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-3)
    np.testing.assert_allclose(grey[..., 1], grey[..., 2], atol=1e-3)


def test_hue_rotation_keeps_greys_and_luma_and_turns_hue_like_hsv() -> None:
    turns = np.array([0.05, -0.05, 0.0], np.float32)
    m = hue_rotation(tf.constant(turns)).numpy()
    grey, luma = np.full(3, 90.0), np.array(GRAY_WEIGHTS)
    colours = np.array([(200, 80, 60), (60, 150, 90), (90, 100, 220)], np.float64)
    for k, t in enumerate(turns):
        np.testing.assert_allclose(m[k] @ grey, grey, atol=1e-3)
        np.testing.assert_allclose((colours @ m[k].T) @ luma, colours @ luma, atol=1e-2)
        for c in colours:
            before = colorsys.rgb_to_hsv(*(c / 255))[0]
            after = colorsys.rgb_to_hsv(*(np.clip(m[k] @ c, 0, 255) / 255))[0]
            turned = (after - before + 0.5) % 1.0 - 0.5
            assert abs(turned - t) <= 0.6 * abs(t) + 1e-4, (t, c, turned)  # same way, similar amount
    np.testing.assert_allclose(m[0] @ m[1], np.eye(3), atol=1e-4)  # opposite turns undo each other


def test_colour_jitter_is_the_composition_of_its_steps() -> None:
    """Brightness, contrast about the mean, then saturation toward luma, as separate steps by hand."""
    rng = np.random.default_rng(1)
    x = rng.uniform(40, 200, (4, 8, 8, 3)).astype(np.float32)
    seeds = tf.random.experimental.stateless_split(tf.constant([3, 4], tf.int64), 5)
    p = AugmentParams(brightness=0.1, contrast=0.2, saturation=0.3)
    got = colour_jitter(tf.constant(x), p, seeds).numpy()
    draw = [
        tf.random.stateless_uniform([4], seeds[i], lo, hi).numpy()
        for i, lo, hi in [(0, -0.1, 0.1), (1, 0.8, 1.2), (2, 0.7, 1.3)]
    ]
    y = x + draw[0][:, None, None, None] * 255.0
    mean = y.mean(axis=(1, 2, 3), keepdims=True)
    y = (y - mean) * draw[1][:, None, None, None] + mean
    grey = (y * np.array(GRAY_WEIGHTS, np.float32)).sum(-1, keepdims=True)
    y = grey + (y - grey) * draw[2][:, None, None, None]
    np.testing.assert_allclose(got, np.clip(y, 0, 255), atol=0.05)


def test_augmentation_is_reproducible_and_seed_dependent() -> None:
    images, boxes = painted(8, 0)
    params = AUGMENT_PRESETS["strong"]
    first = _augment(images, boxes, [1, 2], params)
    second = _augment(images, boxes, [1, 2], params)
    other = _augment(images, boxes, [1, 3], params)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_augment_presets_resolve() -> None:
    assert augment_params("strong") is AUGMENT_PRESETS["strong"]
    custom = AugmentParams(zoom=(0.8, 1.2))
    assert augment_params(custom) is custom
    with pytest.raises(ValueError, match="strong"):
        augment_params("wild")
    assert AUGMENT_PRESETS["strong"].has_colour and not AUGMENT_PRESETS["light"].has_colour
    assert 0.0 < MIN_VISIBLE < 1.0


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


@dataclass
class Boxes:
    """The LoadedDataset fields the pipeline reads."""

    images: np.ndarray
    boxes: list
    labels: list
    class_names: list = field(default_factory=lambda: ["a", "b", "c"])
    paths: list = field(default_factory=list)


def _three_images() -> Boxes:
    return Boxes(
        images=np.arange(3)[:, None, None, None] * np.ones((3, 8, 8, 3), np.uint8),
        boxes=[
            np.array([[0, 0, 4, 4], [2, 2, 8, 8]], np.float32),
            np.zeros((0, 4), np.float32),
            np.array([[1, 1, 3, 3]], np.float32),
        ],
        labels=[np.array([2, 0], np.int32), np.zeros(0, np.int32), np.array([1], np.int32)],
    )


def test_make_targets_largest_is_image_targets_without_the_empty_images() -> None:
    ds = _three_images()
    images, labels, boxes = make_targets(ds, "largest")
    t_labels, t_boxes = image_targets(ds)
    keep = t_labels >= 0
    assert labels.tolist() == t_labels[keep].tolist() == [0, 1]
    np.testing.assert_array_equal(boxes, t_boxes[keep])
    assert images[:, 0, 0, 0].tolist() == [0, 2]
    images, labels, boxes = make_targets(ds, "all")
    assert images[:, 0, 0, 0].tolist() == [0, 0, 2] and labels.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(boxes[1], [2, 2, 8, 8])
    with pytest.raises(ValueError, match="largest"):
        make_targets(ds, "every")


def test_padded_targets() -> None:
    labels, boxes = padded_targets(_three_images())
    assert labels.tolist() == [[2, 0], [-1, -1], [1, -1]] and boxes.shape == (3, 2, 4)
    np.testing.assert_array_equal(boxes[1], -1.0)
    np.testing.assert_array_equal(boxes[2, 0], [1, 1, 3, 3])
    labels, boxes = padded_targets(_three_images(), max_boxes=1)
    assert labels.tolist() == [[2], [-1], [1]]


def test_make_dataset_single_box_rows_keep_their_box_whole() -> None:
    images, boxes = painted(16, 5, count=1)
    labels = np.zeros(16, np.int32)
    ds = make_dataset(
        images.astype(np.uint8),
        labels,
        boxes[:, 0],
        8,
        seed=1,
        epoch=2,
        augment_data=True,
        params=AUGMENT_PRESETS["strong"],
    )
    batches = list(ds)
    assert len(batches) == 2
    for x, y, b in batches:
        assert x.shape == (8, SIZE, SIZE, 3) and b.shape == (8, 4) and y.shape == (8,)
        assert (b.numpy() >= 0).all() and (b.numpy() <= SIZE).all()
    again = list(
        make_dataset(
            images.astype(np.uint8),
            labels,
            boxes[:, 0],
            8,
            seed=1,
            epoch=2,
            augment_data=True,
            params=AUGMENT_PRESETS["strong"],
        )
    )
    np.testing.assert_array_equal(
        batches[1][2].numpy(), again[1][2].numpy()
    )  # same seed and epoch, same batch


def test_make_dataset_padded_boxes_drop_labels_with_their_boxes() -> None:
    images, boxes = painted(32, 6)
    labels = np.tile(np.array([[0, 1, 2]], np.int32), (32, 1))
    params = AugmentParams(zoom=(1.5, 2.0), shift=0.4)  # pushes boxes out of the frame
    ds = make_dataset(images, labels, boxes, 16, seed=0, epoch=1, augment_data=True, params=params)
    dropped = 0
    for x, y, b in ds:
        y, b = y.numpy(), b.numpy()
        assert b.shape == (16, 3, 4)
        np.testing.assert_array_equal(y < 0, (b < 0).all(-1))  # a label goes with its box
        dropped += int((y < 0).sum())
        for img, row_boxes, row_labels in zip(x.numpy(), b, y):
            for box, label in zip(row_boxes, row_labels):
                if label >= 0:
                    np.testing.assert_allclose(colour_bounds(img, int(label)), box, atol=1.5)
    assert dropped > 0
    plain = next(iter(make_dataset(images, labels, boxes, 16, seed=0, epoch=1, augment_data=False)))
    assert plain[0].dtype == tf.float32 and (plain[1].numpy() >= 0).all()


# --------------------------------------------------------------------------------------------
# Mosaic
# --------------------------------------------------------------------------------------------

# 37 colours, each with a channel at 255 and none a multiple of another: a pixel blending one of them with
# the black ground never passes for another, so each object of a batch has a colour of its own.
MOSAIC_COLOURS = np.array([t for t in itertools.product(range(4), repeat=3) if max(t) == 3], np.float32) * 85


def mosaic_scene(n: int, seed: int, rows: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`scene` with one colour per object of the batch: images, boxes (n, rows, 4), ids (n, rows) (the
    object's MOSAIC_COLOURS index and its label, -1 as padding) and difficult (n, rows): every third id."""
    images, boxes, labels = scene(n, seed, rows=rows)
    ids = np.where(labels >= 0, np.cumsum(labels >= 0).reshape(labels.shape) - 1, -1).astype(np.int32)
    assert ids.max() < len(MOSAIC_COLOURS)
    for i, j in zip(*np.nonzero(ids >= 0)):
        x0, y0, x1, y1 = boxes[i, j].astype(int)
        images[i, y0:y1, x0:x1] = MOSAIC_COLOURS[ids[i, j]]
    return images, boxes, ids, (ids >= 0) & (ids % 3 == 0)


def _mosaic(images, boxes, ids, hard, seed, probability=1.0, **kw):
    out = mosaic(
        tf.constant(images),
        tf.constant(boxes),
        tf.constant(ids >= 0),
        tf.constant(ids),
        tf.constant(hard),
        tf.constant(seed, tf.int64),
        probability,
        **kw,
    )
    return [t.numpy() for t in out]


def assert_solid_colour(image: np.ndarray, box: np.ndarray, colour: np.ndarray, where: str) -> None:
    """Pixels centred 1.5 px or more inside the box are exactly `colour`; no pixel centred over half a pixel
    outside it comes near that colour; and across the box's middle, a pixel near the box is more than half
    `colour` exactly when its centre lies inside it (bilinear ramps cross one half on the true edge)."""
    ys, xs = np.arange(image.shape[0])[:, None] + 0.5, np.arange(image.shape[1])[None] + 0.5
    x0, y0, x1, y1 = box

    def within(margin: float) -> np.ndarray:
        return (xs >= x0 - margin) & (xs <= x1 + margin) & (ys >= y0 - margin) & (ys <= y1 + margin)

    distance = np.abs(image - colour).max(axis=-1)
    assert (distance[within(-1.5)] < 0.01).all(), f"{where}: the inside is not its colour"
    stray = (distance < 10) & ~within(0.5)
    assert not stray.any(), f"{where}: its colour at {np.argwhere(stray)[:3].tolist()} (row, col)"
    share = image @ colour / (colour @ colour)
    cx, cy = xs[0], ys[:, 0]
    rows, cols = (cy >= y0 + 1.5) & (cy <= y1 - 1.5), (cx >= x0 + 1.5) & (cx <= x1 - 1.5)
    for lines, centres, lo, hi in [(share[rows], cx, x0, x1), (share[:, cols].T, cy, y0, y1)]:
        # Within a pixel of the box (other objects lie further), and no tie on an edge.
        clear = (
            (centres > lo - 1)
            & (centres < hi + 1)
            & (np.abs(centres - lo) > 1e-3)
            & (np.abs(centres - hi) > 1e-3)
        )
        expected = (centres > lo) & (centres < hi)
        assert (((lines > 0.5) == expected) | ~clear).all(), f"{where}: an edge is off"


def test_mosaic_boxes_follow_their_pixels() -> None:
    """Probability 1: each kept box sits on its own object's pixels (found by colour, label = colour), lands
    where the window puts it, and every object the window shows whole is kept; clipped ones obey the rule."""
    n, rows = 8, 5
    counts = {"whole": 0, "clipped": 0, "dropped": 0}
    for seed in range(4):
        images, boxes, ids, hard = mosaic_scene(n, seed, rows)
        out_images, out_boxes, mask, out_ids, _ = _mosaic(images, boxes, ids, hard, [seed, 7])
        assert out_images.shape == images.shape and out_boxes.shape == (n, 4 * rows, 4)
        _, k, fx, fy = (t.numpy() for t in _mosaic_draws(tf.constant([seed, 7], tf.int64), n, 1.0))
        for i in range(n):
            # Quadrant q of the 2H x 2W canvas holds image i + q; the window's corner maps to 0, scale 1 / k.
            cells = [np.array([q % 2 * WIDTH, q // 2 * HEIGHT] * 2, np.float32) for q in range(4)]
            src = np.concatenate([boxes[(i + q) % n] + cells[q] for q in range(4)])
            expected = (src - np.array([fx[i] * WIDTH, fy[i] * HEIGHT] * 2)) / k[i]
            src_ids = np.concatenate([ids[(i + q) % n] for q in range(4)])
            frame = np.array([WIDTH, HEIGHT] * 2, np.float32)
            clipped = np.clip(expected, 0, frame)
            for r, box in enumerate(expected):
                where = f"seed {seed}, image {i}, row {r}, id {src_ids[r]}"
                if src_ids[r] < 0:
                    assert not mask[i, r] and out_ids[i, r] == -1, where
                    continue
                area, visible = (np.prod(np.maximum(b[2:] - b[:2], 0)) for b in (box, clipped[r]))
                if np.allclose(box, clipped[r], atol=1e-4):
                    counts["whole"] += 1
                    assert mask[i, r], f"{where}: whole inside the output, dropped"
                elif abs(visible - MIN_VISIBLE * area) > 1e-3 * area:
                    counts["clipped" if mask[i, r] else "dropped"] += 1
                    assert mask[i, r] == (visible > MIN_VISIBLE * area), f"{where}: drop rule"
                if mask[i, r]:
                    np.testing.assert_allclose(out_boxes[i, r], clipped[r], atol=1e-3, err_msg=where)
                    assert out_ids[i, r] == src_ids[r], where
                    assert_solid_colour(out_images[i], out_boxes[i, r], MOSAIC_COLOURS[src_ids[r]], where)
                else:
                    assert out_ids[i, r] == -1 and (out_boxes[i, r] == -1).all(), where
    assert min(counts.values()) > 0, counts  # every case is exercised


def test_mosaic_off_or_not_picked_leaves_images_unchanged() -> None:
    """Probability 0: everything as it came, padded to 4M rows; probability 0.5: the same for the images
    not picked, while the picked ones change."""
    rows = 5
    images, boxes, ids, hard = mosaic_scene(8, 1, rows)
    out_images, out_boxes, mask, out_ids, out_hard = _mosaic(images, boxes, ids, hard, [3, 4], 0.0)
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_boxes[:, :rows], boxes)
    np.testing.assert_array_equal(out_boxes[:, rows:], -1.0)
    assert mask.tolist() == np.pad(ids >= 0, [(0, 0), (0, 3 * rows)]).tolist()
    assert out_ids.tolist() == np.pad(ids, [(0, 0), (0, 3 * rows)], constant_values=-1).tolist()
    assert out_hard.tolist() == np.pad(hard, [(0, 0), (0, 3 * rows)]).tolist()

    images, boxes, ids, hard = mosaic_scene(8, 2, rows)
    picked = _mosaic_draws(tf.constant([5, 6], tf.int64), 8, 0.5)[0].numpy()
    assert 0 < picked.sum() < 8
    out_images, out_boxes, mask, out_ids, _ = _mosaic(images, boxes, ids, hard, [5, 6], 0.5)
    np.testing.assert_array_equal(out_images[~picked], images[~picked])
    np.testing.assert_array_equal(out_boxes[~picked, :rows], boxes[~picked])
    np.testing.assert_array_equal(out_ids[~picked, :rows], ids[~picked])
    assert (out_ids[~picked, rows:] == -1).all() and not mask[~picked, rows:].any()
    assert all(not np.array_equal(a, b) for a, b in zip(out_images[picked], images[picked]))
    assert (out_ids[picked, rows:] >= 0).any()


def test_mosaic_is_reproducible_and_seed_dependent() -> None:
    images, boxes, ids, hard = mosaic_scene(8, 3)
    first = _mosaic(images, boxes, ids, hard, [1, 2], 0.7)
    second = _mosaic(images, boxes, ids, hard, [1, 2], 0.7)
    other = _mosaic(images, boxes, ids, hard, [1, 3], 0.7)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


def test_mosaic_labels_and_difficult_flags_travel_with_their_boxes() -> None:
    """Each kept row keeps its object's label and difficult flag; dropped and padding rows are -1 / False."""
    n, rows = 8, 5
    images, boxes, ids, hard = mosaic_scene(n, 4, rows)
    by_id = {int(ids[r, j]): (boxes[r, j], bool(hard[r, j])) for r, j in zip(*np.nonzero(ids >= 0))}
    # whole_visible at the floor: no kept box counts as cut, so the flags are the sources' own.
    out_images, out_boxes, mask, out_ids, out_hard = _mosaic(
        images, boxes, ids, hard, [9, 9], whole_visible=MIN_VISIBLE
    )
    assert (mask == (out_ids >= 0)).all()
    assert not out_hard[~mask].any() and (out_boxes[~mask] == -1).all()
    assert out_hard[mask].any() and not out_hard[mask].all()
    for i, r in zip(*np.nonzero(mask)):
        box, flag = by_id[int(out_ids[i, r])]
        assert out_hard[i, r] == flag
        src = ids[(i + r // rows) % n, r % rows]  # row q * M + j is row j of image i + q
        assert out_ids[i, r] == src
        # Its size matches the source object's, at the window's common scale (unless clipped).
        assert_solid_colour(out_images[i], out_boxes[i, r], MOSAIC_COLOURS[src], f"image {i}, row {r}")
        assert (out_boxes[i, r, 2:] - out_boxes[i, r, :2] <= box[2:] - box[:2] + 1e-3).all()
    # whole_visible adds the boxes the tiling cuts to the difficult ones, and only kept ones.
    _, _, same_mask, _, cut_hard = _mosaic(images, boxes, ids, hard, [9, 9], whole_visible=1.0)
    assert (same_mask == mask).all() and (cut_hard[out_hard]).all() and not cut_hard[~mask].any()
    assert cut_hard.sum() > out_hard.sum()
    # The default, WHOLE_VISIBLE, lies between the two, and a value below min_visible is refused.
    *_, default_hard = _mosaic(images, boxes, ids, hard, [9, 9])
    assert (default_hard >= out_hard).all() and (default_hard <= cut_hard).all()
    with pytest.raises(ValueError, match="whole_visible"):
        _mosaic(images, boxes, ids, hard, [9, 9], min_visible=0.5, whole_visible=0.3)


def test_detection_dataset_with_mosaic_puts_one_peak_on_every_kept_box() -> None:
    """mosaic=1.0: 4M box rows, one heatmap peak (a class per object) per kept box, more objects per
    image than without; the default parameters keep M rows and the same batch as mosaic=0.0."""
    n, rows = 8, 5
    images, boxes, ids, _ = mosaic_scene(n, 5, rows)
    hard = np.zeros_like(ids, bool)

    def first_batch(params: AugmentParams, **kw: float) -> dict:
        ds = detection_dataset(
            images,
            ids,
            boxes,
            hard,
            n,
            num_classes=int(ids.max()) + 1,
            seed=2,
            epoch=0,
            augment_data=True,
            params=params,
            **kw,
        )
        return {key: t.numpy() for key, t in next(iter(ds))[1].items()}

    tiled = first_batch(AugmentParams(mosaic=1.0))
    assert tiled["indices"].shape == (n, 4 * rows) and tiled["reg_mask"].shape == (n, 4 * rows)
    kept = tiled["reg_mask"].sum(axis=1)
    peaks = (tiled["heatmap"] == 1.0).sum(axis=(1, 2, 3))
    assert peaks.tolist() == kept.tolist()
    assert kept.sum() > 1.5 * (ids >= 0).sum()
    # Boxes the tiling cuts below WHOLE_VISIBLE are difficult: no peak, no regression, a masked heatmap.
    uncut = first_batch(AugmentParams(mosaic=1.0), whole_visible=MIN_VISIBLE)
    assert uncut["reg_mask"].sum() > kept.sum()
    assert (uncut["heatmap"] == 1.0).sum() == uncut["reg_mask"].sum()
    assert tiled["heatmap_mask"].sum() < uncut["heatmap_mask"].sum()
    plain = first_batch(AugmentParams())
    assert plain["indices"].shape == (n, rows) and plain["heatmap"].shape == tiled["heatmap"].shape
    for key, value in first_batch(AugmentParams(mosaic=0.0)).items():
        np.testing.assert_array_equal(value, plain[key], err_msg=key)


def test_training_pipelines_run_without_the_autotuning_thread() -> None:
    """Each epoch deletes its iterator, and with tf.data's autotuning thread that deletion waits for the
    thread's sleep to end (seconds of idle CPU inside an epoch's time), so the thread is off."""
    images, boxes = painted(8, 2)
    labels = np.zeros(boxes.shape[:2], np.int32)
    hard = np.zeros(boxes.shape[:2], bool)
    single = make_dataset(images, labels[:, 0], boxes[:, 0], 4, seed=0, epoch=0, augment_data=True)
    detection = detection_dataset(
        images, labels, boxes, hard, 4, num_classes=1, seed=0, epoch=0, augment_data=True
    )
    for ds in (single, detection):
        assert ds.options().autotune.enabled is False
        assert len(list(ds)) == 2, "both whole batches still arrive"
