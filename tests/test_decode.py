"""Tests for sprint2.decode: peaks, boxes, NMS, top-k, threshold and the way back to the original image."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sprint2.decode import Detections, decode, local_peaks, nms, split_outputs
from sprint2.images import resize_image, transform_boxes

C = 3
H, W = 8, 10  # output cells: a 32 x 40 network input at stride 4


def empty_output(n: int = 1, h: int = H, w: int = W, c: int = C) -> np.ndarray:
    """All-zero detector output (n, h, w, c + 4): no score anywhere."""
    return np.zeros((n, h, w, c + 4), np.float32)


def put(out: np.ndarray, image: int, row: int, col: int, label: int, score: float, box: tuple) -> None:
    """Writes one object whose decoded box is exactly `box` (input pixels) at cell (row, col)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2 / 4, (y0 + y1) / 2 / 4
    assert (int(np.floor(cx)), int(np.floor(cy))) == (col, row), "the box's centre must lie in the cell"
    out[image, row, col, label] = score
    out[image, row, col, C : C + 2] = (x1 - x0, y1 - y0)
    out[image, row, col, C + 2 :] = (cx - col, cy - row)


def test_known_peaks_give_the_exact_boxes_best_first() -> None:
    out = empty_output(2)
    put(out, 0, 2, 3, label=1, score=0.9, box=(8.0, 4.0, 20.0, 16.0))
    put(out, 0, 6, 8, label=0, score=0.6, box=(30.5, 22.0, 38.5, 30.0))
    put(out, 1, 0, 0, label=2, score=0.7, box=(0.0, 0.0, 6.0, 4.0))
    dets = decode(out, C, score_threshold=0.3, top_k=10, iou_threshold=0.5)
    assert [len(d) for d in dets] == [2, 1]
    np.testing.assert_allclose(dets[0].boxes, [[8, 4, 20, 16], [30.5, 22, 38.5, 30]], atol=1e-5)
    np.testing.assert_allclose(dets[0].scores, [0.9, 0.6], atol=1e-7)
    np.testing.assert_array_equal(dets[0].labels, [1, 0])
    np.testing.assert_allclose(dets[1].boxes, [[0, 0, 6, 4]], atol=1e-5)
    assert dets[1].labels.tolist() == [2] and isinstance(dets[1], Detections)


def test_only_3x3_local_maxima_are_candidates() -> None:
    out = empty_output()
    put(out, 0, 4, 4, label=0, score=0.8, box=(14.0, 14.0, 22.0, 22.0))
    put(out, 0, 4, 5, label=0, score=0.5, box=(18.0, 14.0, 26.0, 22.0))  # beside a better peak
    put(out, 0, 4, 5, label=1, score=0.5, box=(18.0, 14.0, 26.0, 22.0))  # same cell, other class
    dets = decode(out, C, score_threshold=0.1, top_k=10, iou_threshold=1.0)[0]
    assert dets.labels.tolist() == [0, 1]
    np.testing.assert_allclose(dets.scores, [0.8, 0.5], atol=1e-7)
    peaks = local_peaks(out[0, ..., :C])
    assert peaks[4, 4, 0] and not peaks[4, 5, 0] and peaks[4, 5, 1]


def test_nms_keeps_the_best_of_overlapping_same_class_boxes_and_other_classes() -> None:
    out = empty_output()
    big = (4.0, 4.0, 36.0, 28.0)
    put(out, 0, 4, 5, label=0, score=0.9, box=big)
    put(out, 0, 4, 3, label=0, score=0.7, box=(0.0, 4.0, 30.0, 28.0))  # IoU with big 0.72, two cells away
    put(out, 0, 2, 5, label=2, score=0.6, box=(4.0, 0.0, 36.0, 20.0))  # overlaps big, another class
    dets = decode(out, C, score_threshold=0.3, top_k=10, iou_threshold=0.5)[0]
    assert dets.labels.tolist() == [0, 2]
    np.testing.assert_allclose(dets.scores, [0.9, 0.6], atol=1e-7)
    np.testing.assert_allclose(dets.boxes[0], big, atol=1e-5)
    # A looser threshold keeps the second box of class 0 too.
    assert len(decode(out, C, score_threshold=0.3, top_k=10, iou_threshold=0.8)[0]) == 3


def test_nms_suppresses_only_above_the_threshold_and_breaks_ties_by_index() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.5, 0.5, 0.9, 0.1], np.float32)
    labels = np.zeros(4, np.int32)
    assert nms(boxes, scores, labels, 0.5).tolist() == [2, 0, 3]  # IoU(2, 0) = 1/3 is kept
    assert nms(boxes, scores, labels, 0.3).tolist() == [2, 3]


def test_top_k_and_score_threshold() -> None:
    out = empty_output()
    scores = [0.95, 0.85, 0.75, 0.65, 0.2]
    for i, score in enumerate(scores):  # far apart: no NMS interaction
        put(
            out,
            0,
            1 + (i // 3) * 4,
            1 + (i % 3) * 3,
            label=i % C,
            score=score,
            box=(
                (1 + (i % 3) * 3) * 4 + 1.0,
                (1 + (i // 3) * 4) * 4 + 1.0,
                (1 + (i % 3) * 3) * 4 + 3.0,
                (1 + (i // 3) * 4) * 4 + 3.0,
            ),
        )
    top2 = decode(out, C, score_threshold=0.0, top_k=2, iou_threshold=0.5)[0]
    np.testing.assert_allclose(top2.scores, [0.95, 0.85], atol=1e-7)
    above = decode(out, C, score_threshold=0.7, top_k=100, iou_threshold=0.5)[0]
    np.testing.assert_allclose(above.scores, [0.95, 0.85, 0.75], atol=1e-7)
    assert len(decode(out, C, score_threshold=0.99, top_k=100, iou_threshold=0.5)[0]) == 0


@pytest.mark.parametrize(
    "mode, original",
    [("stretch", (500, 375)), ("letterbox", (500, 375)), ("letterbox", (333, 517)), ("stretch", (97, 411))],
)
def test_boxes_return_to_the_original_image_within_half_a_pixel(mode: str, original: tuple) -> None:
    width, height = original
    in_h, in_w = 64, 96
    _, how = resize_image(np.zeros((height, width, 3), np.uint8), (in_h, in_w), mode)
    truth = np.array(
        [
            [0.2 * width, 0.3 * height, 0.7 * width, 0.9 * height],
            [0.05 * width, 0.05 * height, 0.25 * width, 0.2 * height],
        ],
        np.float32,
    )
    encoded = transform_boxes(truth, how)
    out = empty_output(h=in_h // 4, w=in_w // 4)
    for label, (score, box) in enumerate(zip((0.9, 0.8), encoded)):
        cx, cy = (box[0] + box[2]) / 8, (box[1] + box[3]) / 8
        put(out, 0, int(cy), int(cx), label, score, tuple(box))
    dets = decode(out, C, score_threshold=0.5, top_k=10, iou_threshold=0.5, resize=how)[0]
    np.testing.assert_array_equal(dets.labels, [0, 1])
    assert np.abs(dets.boxes - truth).max() < 0.5


def test_boxes_are_clipped_to_the_image() -> None:
    out = empty_output(h=16, w=24)
    put(out, 0, 1, 1, label=0, score=0.9, box=(-10.0, -6.0, 22.0, 18.0))  # sticks out top-left
    put(out, 0, 15, 22, label=1, score=0.8, box=(80.0, 50.0, 100.0, 70.0))  # sticks out bottom-right
    dets = decode(out, C, score_threshold=0.5, top_k=10, iou_threshold=0.5)[0]
    np.testing.assert_allclose(dets.boxes, [[0, 0, 22, 18], [80, 50, 96, 64]], atol=1e-5)
    _, how = resize_image(np.zeros((100, 200, 3), np.uint8), (64, 96), "letterbox")  # 96 x 48 content
    mapped = decode(out, C, score_threshold=0.5, top_k=10, iou_threshold=0.5, resize=how)[0]
    assert mapped.boxes.min() >= 0 and mapped.boxes[:, [0, 2]].max() <= 200 + 1e-3
    assert mapped.boxes[:, [1, 3]].max() <= 100 + 1e-3
    exact = decode(out, C, score_threshold=0.5, top_k=10, iou_threshold=0.5, resize=how, image_size=(150, 90))
    assert exact[0].boxes[:, [0, 2]].max() <= 150 and exact[0].boxes[:, [1, 3]].max() <= 90


def test_a_box_left_in_the_letterbox_padding_is_dropped() -> None:
    _, how = resize_image(np.zeros((100, 200, 3), np.uint8), (64, 96), "letterbox")  # pad_y = 8
    assert how.pad_y == 8
    out = empty_output(h=16, w=24)
    put(out, 0, 0, 10, label=0, score=0.9, box=(40.0, 1.0, 46.0, 5.0))  # inside the top padding
    put(out, 0, 8, 10, label=1, score=0.8, box=(40.0, 30.0, 46.0, 36.0))
    dets = decode(out, C, score_threshold=0.5, top_k=10, iou_threshold=0.5, resize=how)[0]
    assert dets.labels.tolist() == [1]


def test_the_three_output_forms_decode_alike_and_bad_shapes_are_refused() -> None:
    out = empty_output()
    put(out, 0, 2, 3, label=1, score=0.9, box=(8.0, 4.0, 20.0, 16.0))
    heads = (out[..., :C], out[..., C : C + 2], out[..., C + 2 :])
    named = {"quant_offset": heads[2], "quant_heatmap": heads[0], "quant_size": heads[1]}
    results = [decode(o, C, score_threshold=0.5, top_k=5, iou_threshold=0.5)[0] for o in (out, heads, named)]
    for r in results[1:]:
        np.testing.assert_array_equal(r.boxes, results[0].boxes)
    assert [a.shape for a in split_outputs(named, C)] == [(1, H, W, C), (1, H, W, 2), (1, H, W, 2)]
    with pytest.raises(ValueError, match=r"\(N, h, w, 4 \+ 4\)"):
        decode(out, 4, score_threshold=0.5, top_k=5, iou_threshold=0.5)
    with pytest.raises(ValueError, match="size has shape"):
        decode((heads[0], heads[1][..., :1], heads[2]), C, score_threshold=0.5, top_k=5, iou_threshold=0.5)
    with pytest.raises(ValueError, match="named like 'size'"):
        decode({"heatmap": heads[0], "offset": heads[2]}, C, score_threshold=0.5, top_k=5, iou_threshold=0.5)
    with pytest.raises(ValueError, match="2 resize records for 1 images"):
        _, how = resize_image(np.zeros((10, 10, 3), np.uint8), 32)
        decode(out, C, score_threshold=0.5, top_k=5, iou_threshold=0.5, resize=[how, how])


def test_decode_does_not_import_tensorflow() -> None:
    code = "import sys, sprint2.decode\nprint('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_image_sizes_may_be_unknown_for_some_images() -> None:
    """A per-image size list with None entries: those images are clipped by their Resize, others by size."""
    out = empty_output(2, h=16, w=24)
    for i in range(2):
        put(out, i, 13, 20, label=1, score=0.8, box=(60.0, 40.0, 100.0, 70.0))  # sticks out bottom-right
    _, how = resize_image(np.zeros((100, 200, 3), np.uint8), (64, 96), "stretch")
    dets = decode(
        out,
        C,
        score_threshold=0.5,
        top_k=10,
        iou_threshold=0.5,
        resize=[how, how],
        image_size=[(150, 90), None],
    )
    assert dets[0].boxes[:, [0, 2]].max() == pytest.approx(150) and dets[0].boxes[:, [1, 3]].max() == 90
    assert dets[1].boxes[:, [0, 2]].max() == pytest.approx(200) and dets[1].boxes[:, [1, 3]].max() == 100
    with pytest.raises(ValueError, match="1 image sizes for 2 images"):
        decode(out, C, score_threshold=0.5, top_k=10, iou_threshold=0.5, image_size=[None])


def test_a_one_entry_mapping_holds_the_concatenated_output() -> None:
    out = empty_output()
    put(out, 0, 2, 3, label=1, score=0.9, box=(8.0, 4.0, 20.0, 16.0))
    plain = decode(out, C, score_threshold=0.5, top_k=5, iou_threshold=0.5)[0]
    keyed = decode({"output_0": out}, C, score_threshold=0.5, top_k=5, iou_threshold=0.5)[0]
    np.testing.assert_array_equal(keyed.boxes, plain.boxes)
    np.testing.assert_array_equal(keyed.labels, [1])
    with pytest.raises(ValueError, match=r"\(N, h, w, 4 \+ 4\)"):
        decode({"output_0": out}, 4, score_threshold=0.5, top_k=5, iou_threshold=0.5)
