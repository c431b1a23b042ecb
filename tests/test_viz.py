"""sprint2.viz: figures that render to PNG, with the boxes, titles and numbers they should show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from sprint2 import drawing, viz
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


# ------------------------------------------------------------------------------------------- gt vs pred
def test_overlay_draws_truth_solid_prediction_dashed_and_the_iou_in_a_footer() -> None:
    image = np.full((384, 384, 3), 100, dtype=np.uint8)  # 384 px: shown as it is, not enlarged
    colors = drawing.class_colors(CLASSES)

    def panel(iou: float) -> np.ndarray:
        gt, pred = np.array([[60, 90, 300, 330]]), np.array([[30, 75, 270, 300]])
        fig = viz.plot_gt_vs_pred_grid([image], gt, ["cat"], pred, [1], [iou], CLASSES, pred_scores=[0.8])
        return _panel_pixels(fig)[0]

    a, b = panel(0.61), panel(0.12)
    assert a.shape[0] > 384 and a.shape[1] == 384 and a.dtype == np.uint8
    assert np.array_equal(a[:384], b[:384]) and not np.array_equal(
        a[384:], b[384:]
    )  # only the IoU text differs
    assert (a[384:] > 200).any(), "IoU text missing from the footer"
    assert _mask(a[:384], colors["cat"])[180:300, 300].all()  # ground truth: solid right edge
    dog_edge = _mask(a[:384], colors["dog"])[120:270, 270]
    assert dog_edge.any() and not dog_edge.all()  # prediction: dashed right edge
    assert _mask(a[302:330, 30:90], colors["dog"]).sum() > 100, "the prediction's label goes below its box"
    assert _mask(a[60:89, 60:120], colors["cat"]).sum() > 100, "the truth's label goes above its box"


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


def test_before_after_resize_titles_show_shapes_and_the_boxes_follow(tmp_path: Path) -> None:
    original = np.zeros((375, 500, 3), dtype=np.uint8)
    boxes = np.array([[50, 60, 300, 200]], dtype=np.float32)
    fig = viz.plot_before_after_resize(original, boxes, ["dog"], CLASSES, size=128)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 and "500x375" in titles[0] and "128x128" in titles[1] and "stretch" in titles[1]
    dog = drawing.class_colors(CLASSES)["dog"]
    resized = _mask(_panel_pixels(fig)[1], dog)  # 128 px drawn 3x larger: box (12.8, 20.5, 76.8, 68.3) x 3
    assert resized[100:160, 230].any() and not resized[100:160, 250].any()  # right edge near x = 230
    _saved_png(fig, tmp_path / "before_after.png")
    letterbox = viz.plot_before_after_resize(original, boxes, ["dog"], CLASSES, size=128, mode="letterbox")
    assert "letterbox" in letterbox.axes[1].get_title()


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
    fig = viz.plot_box_size_distribution(boxes, labels, CLASSES, image_sizes=(100, 200))
    assert len(fig.axes) == 3
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert sorted(map(tuple, np.round(points, 3))) == [(0.1, 0.4), (0.25, 0.25)]
    _saved_png(fig, tmp_path / "sizes.png")
    fig_px = viz.plot_box_size_distribution([np.array([[0, 0, 50, 25]])], [["cat"]], CLASSES)
    assert np.allclose(fig_px.axes[0].collections[0].get_offsets(), [[50, 25]])
    with pytest.raises(ValueError, match="differ in length"):
        viz.plot_box_size_distribution(boxes, labels[:1], CLASSES)


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


def test_plot_history_from_epoch_dicts(tmp_path: Path) -> None:
    epochs = [{"loss": 1.0, "val_loss": 1.2}, {"loss": 0.5, "val_loss": 0.9}, {"loss": 0.3}]
    fig = viz.plot_history(epochs)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["loss", "val_loss"]
    assert np.allclose(lines[0].get_ydata(), [1.0, 0.5, 0.3])
    assert np.isnan(lines[1].get_ydata()[2])
    titled = viz.plot_history(epochs, ("loss",), title="original model: loss", ylim=(0, 1))
    assert titled.axes[0].get_title() == "original model: loss" and titled.axes[0].get_ylim() == (0, 1)
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


def test_side_by_side_draws_truth_left_and_kept_detections_right(tmp_path: Path) -> None:
    images = np.full((2, 64, 64, 3), 128, np.uint8)
    gt_boxes = [
        np.array([[8, 8, 40, 40]], np.float32),
        np.array([[4, 4, 20, 20], [30, 30, 60, 60]], np.float32),
    ]
    gt_labels = [[1], [0, 1]]  # dog; cat, dog
    dets = [_Dets([[8, 8, 40, 40], [2, 40, 30, 62]], [0.9, 0.2], [1, 2]), _Dets([], [], [])]
    found = [d.boxes for d in dets], [d.labels for d in dets]

    def draw(**options: object) -> Figure:
        scores = [d.scores for d in dets]
        return viz.plot_gt_vs_pred_grid(
            images, gt_boxes, gt_labels, *found, None, CLASSES, 2, scores, side_by_side=True, **options
        )

    fig = draw(score_threshold=0.5, errors=([1, 0], [0, 0], [0, 2]), names=["a.jpg", "b.jpg"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "a.jpg: ground truth (1)",
        "detections (1): TP 1, FP 0, FN 0",
        "b.jpg: ground truth (2)",
        "detections (0): TP 0, FP 0, FN 2",
    ]
    assert [to_hex(ax.title.get_color()) for ax in fig.axes][1::2] == ["#1a7f37", "#c62828"]
    colors = drawing.class_colors(CLASSES)
    truth, kept = _panel_pixels(fig)[:2]
    assert _mask(truth, colors["dog"]).any() and not _mask(truth, colors["horse"]).any()
    assert _mask(kept, colors["dog"]).any()
    assert not _mask(kept, colors["horse"]).any(), "the detection under the threshold was drawn"
    assert not _mask(_panel_pixels(fig)[3], colors["cat"]).any(), "an image without detections got a box"
    _saved_png(fig, tmp_path / "pairs.png")
    assert _mask(_panel_pixels(draw())[1], colors["horse"]).any(), "threshold 0 keeps every detection"
    assert [ax.get_title() for ax in draw().axes][:2] == ["ground truth (1)", "detections (2)"]
    with pytest.raises(ValueError, match="2 images but 1 predicted box sets"):
        viz.plot_gt_vs_pred_grid(images, gt_boxes, gt_labels, found[0][:1], found[1], None, CLASSES)
    with pytest.raises(ValueError, match="errors must hold"):
        draw(errors=([1], [0], [0]))


def test_overlay_of_several_objects_counts_them_and_no_images_give_a_note() -> None:
    images, boxes, labels = _samples(2)
    fig = viz.plot_gt_vs_pred_grid(
        images, boxes, labels, [b[:1] for b in boxes], [lab[:1] for lab in labels], None, CLASSES
    )
    assert [ax.get_title() for ax in fig.axes] == ["ground truth (2), predictions (1)"] * 2
    assert all(to_hex(ax.title.get_color()) == "#000000" for ax in fig.axes)
    empty = viz.plot_gt_vs_pred_grid([], [], [], [], [], None, CLASSES, title="worst")
    assert [t.get_text() for t in empty.texts] == ["worst: no images to show"]


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
