"""sprint2.drawing: exact border pixels, readable labels, distinct colours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sprint2 import drawing

CLASSES = ["cat", "dog", "horse"]


def _mask(img: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(img == np.array(color, dtype=np.uint8), axis=-1)


# ------------------------------------------------------------------------------------------- colours
def test_class_colors_distinct_stable_and_order_independent() -> None:
    for n in (3, 10, 20, 60):
        names = [f"class{i:02d}" for i in range(n)]
        colors = drawing.class_colors(names)
        assert set(colors) == set(names)
        assert len(set(colors.values())) == n, f"colours repeat for {n} classes"
        assert all(
            len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors.values()
        )
        assert drawing.class_colors(list(reversed(names))) == colors
        assert drawing.class_colors(names) == colors


def test_text_colour_follows_luminance() -> None:
    assert drawing.text_color_for((255, 230, 0)) == (0, 0, 0)
    assert drawing.text_color_for((255, 255, 255)) == (0, 0, 0)
    assert drawing.text_color_for((0, 0, 128)) == (255, 255, 255)
    assert drawing.text_color_for((0, 0, 0)) == (255, 255, 255)


# ------------------------------------------------------------------------------------------- draw_boxes
def test_draw_boxes_returns_new_image_and_leaves_input_alone() -> None:
    image = np.full((60, 80, 3), 90, dtype=np.uint8)
    before = image.copy()
    out = drawing.draw_boxes(image, np.array([[5, 20, 40, 50]]), ["cat"], class_names=CLASSES)
    assert np.array_equal(image, before)
    assert out is not image and out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(out, image)


def test_border_pixels_have_the_class_colour_exactly() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    color = drawing.class_colors(CLASSES)["dog"]
    # floats round half up: 10.4 -> 10, 20.6 -> 21, 60.5 -> 61, 80.2 -> 80
    out = drawing.draw_boxes(
        image, np.array([[10.4, 20.6, 60.5, 80.2]]), ["dog"], class_names=CLASSES, thickness=1
    )
    hit = _mask(out, color)
    for y, x in [(80, 30), (80, 61), (50, 10), (50, 61), (60, 10), (21, 61)]:
        assert hit[y, x], f"no box colour at (y={y}, x={x})"
    for y, x in [(50, 11), (50, 60), (50, 62), (79, 30), (81, 30), (50, 30)]:
        assert not out[y, x].any(), f"unexpected paint at (y={y}, x={x})"


def test_half_pixel_coordinates_round_half_up_consistently() -> None:
    out = drawing.draw_boxes(np.zeros((12, 12, 3), np.uint8), np.array([[2.5, 3.5, 7.5, 8.5]]), thickness=1)
    painted = out.any(axis=-1)
    assert painted[4, 3] and painted[9, 5] and painted[6, 8]  # left 3, top 4, right 8, bottom 9
    assert not painted[6, 2] and not painted[3, 5] and not painted[6, 7]


def test_label_has_filled_background_and_contrasting_text() -> None:
    image = np.full((200, 200, 3), 128, dtype=np.uint8)
    for color, text_rgb in [((255, 230, 0), (0, 0, 0)), ((0, 0, 128), (255, 255, 255))]:
        out = drawing.draw_boxes(
            image, np.array([[50, 80, 150, 180]]), ["cat"], colors={"cat": color}, thickness=1
        )
        above = out[:80, 50:120]  # the label sits above the top edge
        assert _mask(above, color).sum() > 100
        near_text = np.abs(above.astype(int) - np.array(text_rgb)).max(axis=-1) < 60  # anti-aliased strokes
        assert near_text.sum() > 5, "label text missing or in the wrong colour"
        assert _mask(out[81:180, 51:150], color).sum() == 0  # the inside stays clear


def test_label_goes_inside_at_top_edge_and_stays_in_image() -> None:
    image = np.zeros((120, 120, 3), dtype=np.uint8)
    text = "a rather long label"
    out = drawing.draw_boxes(
        image, np.array([[70, 0, 119, 60]]), [text], colors={text: (200, 40, 40)}, thickness=1
    )
    hit = _mask(out, (200, 40, 40))
    assert hit[3:8, 100:119].sum() > 20, "label should be drawn inside, below the top edge"
    assert hit[3:8, :70].any(), "label should shift left rather than run off the right edge"
    assert hit[3:8, 119].any()


def test_scores_and_index_labels() -> None:
    image = np.full((100, 160, 3), 200, dtype=np.uint8)
    boxes = np.array([[20, 40, 80, 90]])
    by_name = drawing.draw_boxes(image, boxes, ["horse"], class_names=CLASSES)
    by_index = drawing.draw_boxes(image, boxes, np.array([2]), class_names=CLASSES)
    assert np.array_equal(by_name, by_index)
    with_score = drawing.draw_boxes(image, boxes, ["horse"], class_names=CLASSES, scores=[0.93])
    color = drawing.class_colors(CLASSES)["horse"]
    assert _mask(with_score[:40], color).sum() > _mask(by_name[:40], color).sum()  # a wider label patch


def test_dashed_has_gaps_solid_does_not() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 90, 90]])
    solid = drawing.draw_boxes(image, boxes, thickness=1).any(axis=-1)
    dashed = drawing.draw_boxes(image, boxes, thickness=1, dashed=True).any(axis=-1)
    assert solid[90, 10:91].all()
    assert 0.3 < dashed[90, 10:91].mean() < 0.8
    assert dashed[10, 10] and dashed[90, 90]  # corners are covered


def test_draw_boxes_accepts_gray_and_empty_and_rejects_mismatch() -> None:
    gray = np.full((40, 50), 77, dtype=np.uint8)
    out = drawing.draw_boxes(gray, np.zeros((0, 4)), [])
    assert out.shape == (40, 50, 3) and (out == 77).all()
    with pytest.raises(ValueError, match="labels"):
        drawing.draw_boxes(gray, np.array([[1, 1, 5, 5], [2, 2, 9, 9]]), ["cat"])
    with pytest.raises(ValueError, match="shape"):
        drawing.draw_boxes(gray, np.array([[1, 1, 5]]))


def test_enlarge_scales_small_images_and_their_boxes_by_a_whole_factor() -> None:
    # the longer side, 150 px, needs a factor of 3 to reach 384 px
    image, boxes = drawing.enlarge(np.zeros((100, 150, 3), np.uint8), np.array([10, 20, 30, 40]))
    assert image.shape == (300, 450, 3) and np.allclose(boxes, [[30, 60, 90, 120]])
    large, same = drawing.enlarge(np.zeros((400, 500, 3), np.uint8), [[1, 2, 3, 4]])
    assert large.shape == (400, 500, 3) and np.allclose(same, [[1, 2, 3, 4]])


def test_labels_only_and_lines_only() -> None:
    image = np.zeros((120, 120, 3), dtype=np.uint8)
    box = np.array([[30, 40, 90, 100]])
    color = drawing.class_colors(CLASSES)["cat"]
    lines = _mask(drawing.draw_boxes(image, box, ["cat"], class_names=CLASSES, label_position=None), color)
    labels = _mask(drawing.draw_boxes(image, box, ["cat"], class_names=CLASSES, lines=False), color)
    assert lines[70, 30] and not lines[:40].any(), "label_position None: the box without its label"
    assert labels[:40].any() and not labels[70, 30], "lines=False: the label without its box"


def test_drawing_does_not_import_tensorflow_or_pyplot() -> None:
    code = (
        "import sys, sprint2.drawing; sys.exit(bool({'tensorflow', 'matplotlib.pyplot'} & set(sys.modules)))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0
    )
