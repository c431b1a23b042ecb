"""sprint2.viz: exact border pixels, readable labels, distinct colours, and figures that render to PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from sprint2 import viz
from sprint2.bench_training import project_multi_gpu
from sprint2.table import table

CLASSES = ["cat", "dog", "horse"]


def _saved_png(fig: Figure, path: Path) -> np.ndarray:
    """Save `fig` as PNG and read it back, so the test fails if rendering fails or writes nothing."""
    fig.savefig(path)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 50 and img.shape[1] > 50
    return img


def _mask(img: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(img == np.array(color, dtype=np.uint8), axis=-1)


# ------------------------------------------------------------------------------------------- colours
def test_class_colors_distinct_stable_and_order_independent() -> None:
    for n in (3, 10, 20, 60):
        names = [f"class{i:02d}" for i in range(n)]
        colors = viz.class_colors(names)
        assert set(colors) == set(names)
        assert len(set(colors.values())) == n, f"colours repeat for {n} classes"
        assert all(
            len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors.values()
        )
        assert viz.class_colors(list(reversed(names))) == colors
        assert viz.class_colors(names) == colors


def test_text_colour_follows_luminance() -> None:
    assert viz.text_color_for((255, 230, 0)) == (0, 0, 0)
    assert viz.text_color_for((255, 255, 255)) == (0, 0, 0)
    assert viz.text_color_for((0, 0, 128)) == (255, 255, 255)
    assert viz.text_color_for((0, 0, 0)) == (255, 255, 255)


# ------------------------------------------------------------------------------------------- draw_boxes
def test_draw_boxes_returns_new_image_and_leaves_input_alone() -> None:
    image = np.full((60, 80, 3), 90, dtype=np.uint8)
    before = image.copy()
    out = viz.draw_boxes(image, np.array([[5, 20, 40, 50]]), ["cat"], class_names=CLASSES)
    assert np.array_equal(image, before)
    assert out is not image and out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(out, image)


def test_border_pixels_have_the_class_colour_exactly() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    color = viz.class_colors(CLASSES)["dog"]
    # floats round half up: 10.4 -> 10, 20.6 -> 21, 60.5 -> 61, 80.2 -> 80
    out = viz.draw_boxes(
        image, np.array([[10.4, 20.6, 60.5, 80.2]]), ["dog"], class_names=CLASSES, thickness=1
    )
    hit = _mask(out, color)
    for y, x in [(80, 30), (80, 61), (50, 10), (50, 61), (60, 10), (21, 61)]:
        assert hit[y, x], f"no box colour at (y={y}, x={x})"
    for y, x in [(50, 11), (50, 60), (50, 62), (79, 30), (81, 30), (50, 30)]:
        assert not out[y, x].any(), f"unexpected paint at (y={y}, x={x})"


def test_half_pixel_coordinates_round_half_up_consistently() -> None:
    out = viz.draw_boxes(np.zeros((12, 12, 3), np.uint8), np.array([[2.5, 3.5, 7.5, 8.5]]), thickness=1)
    painted = out.any(axis=-1)
    assert painted[4, 3] and painted[9, 5] and painted[6, 8]  # left 3, top 4, right 8, bottom 9
    assert not painted[6, 2] and not painted[3, 5] and not painted[6, 7]


def test_label_has_filled_background_and_contrasting_text() -> None:
    image = np.full((200, 200, 3), 128, dtype=np.uint8)
    for color, text_rgb in [((255, 230, 0), (0, 0, 0)), ((0, 0, 128), (255, 255, 255))]:
        out = viz.draw_boxes(
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
    out = viz.draw_boxes(
        image, np.array([[70, 0, 119, 60]]), [text], colors={text: (200, 40, 40)}, thickness=1
    )
    hit = _mask(out, (200, 40, 40))
    assert hit[3:8, 100:119].sum() > 20, "label should be drawn inside, below the top edge"
    assert hit[3:8, :70].any(), "label should shift left rather than run off the right edge"
    assert hit[3:8, 119].any()


def test_scores_and_index_labels() -> None:
    image = np.full((100, 160, 3), 200, dtype=np.uint8)
    boxes = np.array([[20, 40, 80, 90]])
    by_name = viz.draw_boxes(image, boxes, ["horse"], class_names=CLASSES)
    by_index = viz.draw_boxes(image, boxes, np.array([2]), class_names=CLASSES)
    assert np.array_equal(by_name, by_index)
    with_score = viz.draw_boxes(image, boxes, ["horse"], class_names=CLASSES, scores=[0.93])
    color = viz.class_colors(CLASSES)["horse"]
    assert _mask(with_score[:40], color).sum() > _mask(by_name[:40], color).sum()  # a wider label patch


def test_dashed_has_gaps_solid_does_not() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 90, 90]])
    solid = viz.draw_boxes(image, boxes, thickness=1).any(axis=-1)
    dashed = viz.draw_boxes(image, boxes, thickness=1, dashed=True).any(axis=-1)
    assert solid[90, 10:91].all()
    assert 0.3 < dashed[90, 10:91].mean() < 0.8
    assert dashed[10, 10] and dashed[90, 90]  # corners are covered


def test_draw_boxes_accepts_gray_and_empty_and_rejects_mismatch() -> None:
    gray = np.full((40, 50), 77, dtype=np.uint8)
    out = viz.draw_boxes(gray, np.zeros((0, 4)), [])
    assert out.shape == (40, 50, 3) and (out == 77).all()
    with pytest.raises(ValueError, match="labels"):
        viz.draw_boxes(gray, np.array([[1, 1, 5, 5], [2, 2, 9, 9]]), ["cat"])
    with pytest.raises(ValueError, match="shape"):
        viz.draw_boxes(gray, np.array([[1, 1, 5]]))


# ------------------------------------------------------------------------------------------- gt vs pred
def test_draw_gt_vs_pred_solid_dashed_and_iou_footer() -> None:
    image = np.full((128, 128, 3), 100, dtype=np.uint8)
    colors = viz.class_colors(CLASSES)
    a = viz.draw_gt_vs_pred(
        image,
        np.array([20, 30, 100, 110]),
        "cat",
        np.array([10, 25, 90, 100]),
        1,
        0.61,
        pred_score=0.8,
        class_names=CLASSES,
    )
    b = viz.draw_gt_vs_pred(
        image,
        np.array([20, 30, 100, 110]),
        "cat",
        np.array([10, 25, 90, 100]),
        1,
        0.12,
        pred_score=0.8,
        class_names=CLASSES,
    )
    assert a.shape[0] > 128 and a.shape[1] == 128 and a.dtype == np.uint8
    assert np.array_equal(a[:128], b[:128]) and not np.array_equal(
        a[128:], b[128:]
    )  # only the IoU text differs
    assert (a[128:] > 200).any(), "IoU text missing from the footer"
    assert _mask(a[:128], colors["cat"])[60:100, 100].all()  # ground truth: solid right edge
    dog_edge = _mask(a[:128], colors["dog"])[40:90, 90]
    assert dog_edge.any() and not dog_edge.all()  # prediction: dashed right edge


# ------------------------------------------------------------------------------------------- figures
def _samples(
    n: int, size: tuple[int, int] = (96, 128)
) -> tuple[list[np.ndarray], list[np.ndarray], list[list[str]]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]
    boxes = [np.array([[5, 5, 60, 50], [30, 20, 120, 90]], dtype=np.float32) for _ in range(n)]
    labels = [[CLASSES[i % 3], CLASSES[(i + 1) % 3]] for i in range(n)]
    return images, boxes, labels


def test_show_grid_one_axes_per_image(tmp_path: Path) -> None:
    images, boxes, labels = _samples(5)
    fig = viz.show_grid(
        images, boxes, labels, class_names=CLASSES, ncols=4, titles=[f"s{i}" for i in range(5)]
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    assert all(len(ax.get_images()) == 1 for ax in fig.axes)
    assert [ax.get_title() for ax in fig.axes] == [f"s{i}" for i in range(5)]
    _saved_png(fig, tmp_path / "grid.png")


def test_before_after_resize_titles_show_shapes(tmp_path: Path) -> None:
    original = np.zeros((375, 500, 3), dtype=np.uint8)
    resized = cv2.resize(original, (128, 128))
    boxes = np.array([[50, 60, 300, 200]], dtype=np.float32)
    scaled = boxes * np.array([128 / 500, 128 / 375] * 2)
    fig = viz.plot_before_after_resize(original, boxes, resized, scaled, ["dog"], CLASSES)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 and "500x375" in titles[0] and "128x128" in titles[1]
    _saved_png(fig, tmp_path / "before_after.png")


def test_class_histogram_bars_largest_first(tmp_path: Path) -> None:
    fig = viz.plot_class_histogram({"cat": 3, "dog": 10, "horse": 1})
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dog", "cat", "horse"]
    assert [p.get_height() for p in ax.patches] == [10, 3, 1]
    _saved_png(fig, tmp_path / "hist.png")


def test_box_size_distribution_skips_degenerate_boxes(tmp_path: Path) -> None:
    boxes = [
        np.array([[0, 0, 50, 25], [10, 10, 10, 30]]),
        np.array([[0, 0, 20, 40]]),
    ]  # second box has no width
    labels = [np.array([0, 1]), np.array([1])]
    fig = viz.plot_box_size_distribution(boxes, labels, CLASSES, image_sizes=[(100, 100), (50, 200)])
    assert len(fig.axes) == 3
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert sorted(map(tuple, np.round(points, 3))) == [(0.1, 0.8), (0.5, 0.25)]
    _saved_png(fig, tmp_path / "sizes.png")
    fig_px = viz.plot_box_size_distribution(np.array([[0, 0, 50, 25]]), ["cat"], CLASSES)
    assert np.allclose(fig_px.axes[0].collections[0].get_offsets(), [[50, 25]])


def test_gt_vs_pred_grid_colours_titles_by_hit(tmp_path: Path) -> None:
    images, _, _ = _samples(3)
    gt = np.array([[10, 10, 60, 60]] * 3, dtype=np.float32)
    fig = viz.plot_gt_vs_pred_grid(
        images,
        gt,
        ["cat", "cat", 0],
        gt + 5,
        ["cat", "dog", "cat"],
        [0.7, 0.9, 0.3],
        CLASSES,
        ncols=2,
        pred_scores=[0.9, 0.8, 0.7],
        title="worst",
    )
    assert len(fig.axes) == 3
    colors = [to_hex(ax.title.get_color()) for ax in fig.axes]
    assert (
        colors[0] != colors[1] and colors[1] == colors[2]
    )  # only the first is a right class with IoU >= 0.5
    assert "IoU 0.70" in fig.axes[0].get_title() and fig.get_suptitle() == "worst"
    _saved_png(fig, tmp_path / "gt_pred.png")


def test_plot_bar_annotates_values(tmp_path: Path) -> None:
    fig = viz.plot_bar({"serial": 12.34, "process": 3.5}, ylabel="s", title="load")
    (ax,) = fig.axes
    assert len(ax.patches) == 2
    assert {t.get_text() for t in ax.texts} == {"12.3", "3.5"}
    assert not viz.plot_bar({"a": 1.0}, ylabel="s", title="t", annotate=False).axes[0].texts
    _saved_png(fig, tmp_path / "bar.png")


def test_plot_history_from_epoch_dicts_and_keras_dict(tmp_path: Path) -> None:
    epochs = [{"loss": 1.0, "val_loss": 1.2}, {"loss": 0.5, "val_loss": 0.9}, {"loss": 0.3}]
    fig = viz.plot_history(epochs)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["loss", "val_loss"]
    assert np.allclose(lines[0].get_ydata(), [1.0, 0.5, 0.3])
    assert np.isnan(lines[1].get_ydata()[2])
    keras_like = viz.plot_history({"loss": [1.0, 0.5], "val_loss": [2.0, 1.0]})
    assert np.allclose(keras_like.axes[0].get_lines()[1].get_ydata(), [2.0, 1.0])
    with pytest.raises(ValueError):
        viz.plot_history(epochs, keys=("accuracy",))
    _saved_png(fig, tmp_path / "history.png")


def test_plot_confusion_normalizes_rows(tmp_path: Path) -> None:
    fig = viz.plot_confusion(np.array([[3, 1, 0], [0, 0, 0], [0, 2, 2]]), CLASSES)
    assert len(fig.axes) == 2  # the matrix and its colour bar
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.75", "0.25", "0.00", "0.00", "0.00", "0.00", "0.00", "0.50", "0.50"]
    raw = viz.plot_confusion(np.array([[3, 1, 0], [0, 0, 0], [0, 2, 2]]), CLASSES, normalize=False)
    assert [t.get_text() for t in raw.axes[0].texts][:2] == ["3", "1"]
    with pytest.raises(ValueError):
        viz.plot_confusion(np.eye(2), CLASSES)
    _saved_png(fig, tmp_path / "confusion.png")


def test_plot_projection_draws_each_link_the_ideal_and_the_feed_limit(tmp_path: Path) -> None:
    rows = project_multi_gpu(0.1, 100e6, gpus=range(1, 5), links={"slow": 25.0, "fast": 300.0}, batch=32)
    measured = [{"gpus": 2, "speedup": 1.8, "images_per_s": 576.0}]
    fig = viz.plot_projection({"rows": rows, "measured": measured}, feed_images_per_s=1000.0)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert len(lines) == 4 and "ideal (N x)" in lines
    assert np.allclose(lines["ideal (N x)"].get_ydata(), [1, 2, 3, 4])
    slow = next(line for label, line in lines.items() if label.startswith("slow (25 GB/s"))
    assert np.allclose(slow.get_ydata(), [r["speedup"] for r in rows if r["link"] == "slow"])
    limit = next(line for label, line in lines.items() if label.startswith("host input pipeline"))
    assert np.allclose(limit.get_ydata(), 1000.0 / 320.0)  # feed / one GPU's 32 images per 0.1 s
    assert np.allclose(ax.collections[0].get_offsets(), [[2, 1.8]])
    _saved_png(fig, tmp_path / "projection.png")


def test_viz_does_not_import_tensorflow() -> None:
    code = "import sys, sprint2.viz; sys.exit('tensorflow' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0
    )


def test_figures_are_not_left_open_in_pyplot() -> None:
    """Jupyter shows open pyplot figures again at the end of a cell: a returned figure would show twice."""
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    viz.plot_bar({"a": 1.0}, ylabel="s", title="t")
    viz.plot_confusion(np.eye(3), CLASSES)
    viz.plot_projection({"rows": project_multi_gpu(0.1, 1e6, gpus=[1, 2])})
    assert set(plt.get_fignums()) == before


def test_table_renders_html_and_text_with_formats_and_dashes() -> None:
    rows = [{"model": "improved", "acc": 0.953, "note": None}, {"model": "<b>", "acc": 1 / 3}]
    t = table(rows, ["model", ("accuracy", "acc", "{:.1%}"), "note"])
    page = t._repr_html_()
    assert "<th>accuracy</th>" in page and "<td>95.3%</td>" in page and "<td>33.3%</td>" in page
    assert "<td>&lt;b&gt;</td>" in page, "cells are HTML-escaped"
    assert page.count("<td>-</td>") == 2  # None and the missing key
    lines = str(t).splitlines()
    assert lines[0].split() == ["model", "accuracy", "note"]
    assert lines[1].split() == ["improved", "95.3%", "-"]
    assert table([{"a": 1.23456789, "b": 2}])._repr_html_().count("<td>") == 2
    assert "1.235" in str(table([{"a": 1.23456789}]))


# ------------------------------------------------------------------------------------------- detections
class _Dets:
    """A stand-in for sprint2.decode.Detections: the viz functions read only these three arrays."""

    def __init__(self, boxes: list[list[float]], scores: list[float], labels: list[int]) -> None:
        self.boxes = np.array(boxes, np.float32).reshape(-1, 4)
        self.scores = np.array(scores, np.float32)
        self.labels = np.array(labels, np.int32)


def _panel_pixels(fig: Figure) -> list[np.ndarray]:
    return [ax.images[0].get_array() for ax in fig.axes if ax.images]


def test_detection_pairs_draw_truth_left_and_kept_detections_right(tmp_path: Path) -> None:
    images = np.full((2, 64, 64, 3), 128, np.uint8)
    gt_boxes = [
        np.array([[8, 8, 40, 40]], np.float32),
        np.array([[4, 4, 20, 20], [30, 30, 60, 60]], np.float32),
    ]
    gt_labels = [[1], [0, 1]]  # dog; cat, dog
    dets = [_Dets([[8, 8, 40, 40], [2, 40, 30, 62]], [0.9, 0.2], [1, 2]), _Dets([], [], [])]
    fig = viz.plot_detection_pairs(
        images,
        gt_boxes,
        gt_labels,
        dets,
        CLASSES,
        score_threshold=0.5,
        errors=([1, 0], [0, 0], [0, 2]),
        names=["a.jpg", "b.jpg"],
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "a.jpg: ground truth (1)",
        "detections (1): TP 1, FP 0, FN 0",
        "b.jpg: ground truth (2)",
        "detections (0): TP 0, FP 0, FN 2",
    ]
    assert [to_hex(ax.title.get_color()) for ax in fig.axes][1::2] == ["#1a7f37", "#c62828"]
    colors = viz.class_colors(CLASSES)
    truth, found = _panel_pixels(fig)[:2]
    assert _mask(truth, colors["dog"]).any() and not _mask(truth, colors["horse"]).any()
    assert _mask(found, colors["dog"]).any()
    assert not _mask(found, colors["horse"]).any(), "the detection under the threshold was drawn"
    assert not _mask(_panel_pixels(fig)[3], colors["cat"]).any(), "an image without detections got a box"
    _saved_png(fig, tmp_path / "pairs.png")
    with pytest.raises(ValueError, match="2 images, 2 box sets, 2 label sets, 1 detections"):
        viz.plot_detection_pairs(images, gt_boxes, gt_labels, dets[:1], CLASSES)
    with pytest.raises(ValueError, match="errors must hold"):
        viz.plot_detection_pairs(images, gt_boxes, gt_labels, dets, CLASSES, errors=([1], [0], [0]))


def test_detection_gallery_picks_images_by_index_and_says_when_there_are_none() -> None:
    from sprint2.dataset import LoadedDataset

    ds = LoadedDataset(
        images=np.zeros((3, 32, 32, 3), np.uint8),
        boxes=[np.array([[2, 2, 20, 20]], np.float32)] * 3,
        labels=[np.array([0], np.int32)] * 3,
        class_names=CLASSES,
        paths=[Path(f"img{i}.jpg") for i in range(3)],
        size=(32, 32),
    )
    dets = [_Dets([[2, 2, 20, 20]], [0.8], [0])] * 3

    class Errors:
        tp, fp, fn = np.array([1, 1, 0]), np.array([0, 2, 0]), np.array([0, 0, 1])

    fig = viz.plot_detection_gallery(ds, dets, [2, 0], score_threshold=0.5, errors=Errors(), title="two")
    assert [ax.get_title() for ax in fig.axes] == [
        "img2.jpg: ground truth (1)",
        "detections (1): TP 0, FP 0, FN 1",
        "img0.jpg: ground truth (1)",
        "detections (1): TP 1, FP 0, FN 0",
    ]
    assert fig._suptitle.get_text() == "two"
    empty = viz.plot_detection_gallery(ds, dets, [], score_threshold=0.5, title="worst")
    assert [t.get_text() for t in empty.texts] == ["worst: no images to show"]
    with pytest.raises(ValueError, match="2 detection sets for 3 images"):
        viz.plot_detection_gallery(ds, dets[:2], [0], score_threshold=0.5)


def test_pr_curves_plot_each_class_with_ap_and_the_operating_point(tmp_path: Path) -> None:
    from sprint2.metrics import PRCurve

    curves = {
        "cat": PRCurve.from_matches(
            np.array([0.9, 0.8, 0.3]), np.array([True, False, True]), np.zeros(3, np.int64), 2
        ),
        "dog": PRCurve.from_matches(np.array([0.6]), np.array([True]), np.zeros(1, np.int64), 4),
        "horse": PRCurve.from_matches(np.zeros(0), np.zeros(0, bool), np.zeros(0, np.int64), 0),
    }
    fig = viz.plot_pr_curves(curves, score_threshold=0.5)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert f"cat (AP {curves['cat'].ap:.2f})" in lines and f"dog (AP {curves['dog'].ap:.2f})" in lines
    assert not any(label.startswith("horse") for label in lines), "a class without positives has no AP"
    cat = lines[f"cat (AP {curves['cat'].ap:.2f})"]
    assert np.allclose(cat.get_xdata(), [0, 0.5, 0.5, 1.0]) and np.allclose(
        cat.get_ydata(), [1, 1, 0.5, 2 / 3]
    )
    points = [line for line in ax.get_lines() if line.get_marker() == "o" and len(line.get_xdata())]
    # at score >= 0.5: cat keeps 0.9 (TP) and 0.8 (FP): precision 0.5, recall 0.5; dog 1.0 and 0.25
    assert sorted((float(p.get_xdata()[0]), float(p.get_ydata()[0])) for p in points) == [
        (0.25, 1.0),
        (0.5, 0.5),
    ]
    _saved_png(fig, tmp_path / "pr.png")


def test_detection_confusion_writes_every_count_and_sets_background_apart(tmp_path: Path) -> None:
    matrix = np.array([[5, 1, 2], [0, 3, 4], [6, 7, 0]])
    labels = ["cat", "dog", "background"]
    fig = viz.plot_detection_confusion(matrix, labels)
    ax = fig.axes[0]
    written = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert written == {(r, c): str(matrix[r, c]) for r in range(3) for c in range(3) if (r, c) != (2, 2)}
    assert np.allclose(ax.images[0].get_array()[0], [5 / 8, 1 / 8, 2 / 8]), "colour is the row's share"
    separators = [line for line in ax.get_lines() if to_hex(line.get_color()) == to_hex("tab:red")]
    assert len(separators) == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    _saved_png(fig, tmp_path / "confusion.png")
    with pytest.raises(ValueError, match="does not match 2 labels"):
        viz.plot_detection_confusion(matrix, labels[:2])


def test_heatmaps_cover_the_whole_image(tmp_path: Path) -> None:
    image = np.zeros((64, 96, 3), np.uint8)
    heat = np.zeros((16, 24))
    heat[4, 6] = 1.0
    fig = viz.plot_heatmaps(
        image,
        {"target": heat, "predicted": heat * 0.5},
        boxes=[[10, 10, 40, 30]],
        labels=[0],
        class_names=CLASSES,
    )
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == [
        "image and boxes",
        "target (24x16 cells)",
        "predicted (24x16 cells)",
    ]
    overlay = panels[1].images[-1]
    assert overlay.get_extent() == [0, 96, 64, 0] and overlay.get_array().max() == 1.0
    _saved_png(fig, tmp_path / "heat.png")
    with pytest.raises(ValueError, match="must be \\(h, w\\)"):
        viz.plot_heatmaps(image, {"bad": np.zeros((2, 2, 2))})
    with pytest.raises(ValueError, match="no heatmaps"):
        viz.plot_heatmaps(image, {})


def test_grouped_bars_put_each_measure_beside_the_others() -> None:
    fig = viz.plot_grouped_bars(
        {"baseline": {"a": 0.1, "b": None}, "detector": {"a": 0.6, "b": 0.3}}, ylabel="AP", title="t"
    )
    ax = fig.axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [0.1, 0.6, 0.0, 0.3]  # series a for both groups, then series b
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.1", "0.6", "n/a", "0.3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline", "detector"]
    with pytest.raises(ValueError, match="no values"):
        viz.plot_grouped_bars({}, ylabel="AP", title="t")


def test_detection_figures_are_not_left_open_in_pyplot() -> None:
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    viz.plot_detection_confusion(np.eye(3), ["a", "b", "background"])
    viz.plot_grouped_bars({"m": {"x": 1.0}}, ylabel="y", title="t")
    viz.plot_heatmaps(np.zeros((8, 8, 3), np.uint8), {"h": np.zeros((2, 2))})
    assert set(plt.get_fignums()) == before


def test_plot_accuracy_vs_latency_puts_one_labelled_point_per_row(tmp_path: Path) -> None:
    rows = [
        {"name": "keras", "latency_ms": 40.0, "map50": 0.86, "latency_spread": 0.1},
        {"name": "int8", "latency_ms": 10.0, "map50": 0.85, "latency_spread": None},
        {"name": "broken", "latency_ms": 5.0, "map50": None},
    ]
    fig = viz.plot_accuracy_vs_latency(rows)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["keras", "int8"]
    xs = [line.get_xdata()[0] for line in ax.get_lines() if line.get_marker() == "o"]
    assert sorted(xs) == [10.0, 40.0]
    with pytest.raises(ValueError, match="no row has both"):
        viz.plot_accuracy_vs_latency([{"name": "a", "latency_ms": 1.0}])
    _saved_png(fig, tmp_path / "map_latency.png")
