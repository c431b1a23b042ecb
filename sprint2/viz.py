"""Figures for the notebooks: sprint2.drawing draws the boxes on the pixels, matplotlib lays out the figures.

Every picture in the report comes from here so notebooks only call functions. Figures are made with
pyplot and closed at once: Jupyter still shows a returned figure (once), and nothing piles up in memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from sprint2.drawing import (
    Label,
    add_footer,
    as_boxes,
    as_rgb_uint8,
    class_colors,
    class_name,
    draw_boxes,
    enlarge,
)
from sprint2.images import resize_image, transform_boxes

logger = logging.getLogger(__name__)

_GOOD, _BAD = "#1a7f37", "#c62828"  # title colours for right / wrong predictions


# ----------------------------------------------------------------------------------------------- figures
def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot figure, closed at once: Jupyter renders it once when returned, and it is freed when dropped.

    (A bare matplotlib.figure.Figure shows only as text in a notebook that never imported pyplot.)
    """
    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig


def _image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None,
    *,
    ncols: int,
    figsize: tuple[float, float] | None,
    title_colors: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Lay out ready-drawn images in a grid without ticks; one axes per image (unused cells are removed)."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to show")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    if figsize is None:
        aspect = images[0].shape[0] / images[0].shape[1]
        figsize = (3.2 * ncols, 3.2 * aspect * nrows + 0.4 * (suptitle is not None))
    fig = _new_figure(figsize)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.remove()
            continue
        ax.imshow(images[i])
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[i], fontsize=9, color=title_colors[i] if title_colors else "black")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def show_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    boxes_per_image: Sequence[np.ndarray],
    labels_per_image: Sequence[Sequence[Label]],
    *,
    class_names: Sequence[str],
    ncols: int = 4,
    titles: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A grid of images with their boxes and class labels (names or indices into `class_names`), one palette.

    Images smaller than 384 px are enlarged by a whole factor before drawing so the labels stay sharp.
    """
    if not len(images) == len(boxes_per_image) == len(labels_per_image):
        raise ValueError(
            f"{len(images)} images, {len(boxes_per_image)} box sets, {len(labels_per_image)} label sets"
        )
    colors = class_colors(class_names)
    drawn = [
        draw_boxes(*enlarge(img, boxes), list(labels), colors=colors, class_names=class_names)
        for img, boxes, labels in zip(images, boxes_per_image, labels_per_image)
    ]
    return _image_grid(drawn, titles, ncols=ncols, figsize=figsize)


def plot_before_after_resize(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[Label],
    class_names: Sequence[str],
    *,
    size: int | tuple[int, int],
    mode: str = "stretch",
) -> Figure:
    """An image and its boxes before and after resize_image + transform_boxes to `size` by `mode`
    ("stretch" or "letterbox"), side by side with their shapes: the boxes must still fit the pixels."""
    resized, how = resize_image(image, size, mode=mode)
    shapes = [("original", image.shape), (f"resized ({mode})", resized.shape)]
    return show_grid(
        [image, resized],
        [boxes, transform_boxes(boxes, how)],
        [labels, labels],
        class_names=class_names,
        ncols=2,
        titles=[f"{name} {shape[1]}x{shape[0]} px" for name, shape in shapes],
        figsize=(9, 4.2),
    )


def plot_class_histogram(counts: Mapping[str, int], *, title: str = "objects per class") -> Figure:
    """Bar chart of objects per class, largest first, in the class colours with the count on each bar."""
    colors = class_colors(counts)
    names = sorted(counts, key=lambda name: (-counts[name], name))
    fig = _new_figure((max(4.0, 0.6 * len(names) + 1.5), 3.5))
    ax = fig.subplots()
    bars = ax.bar(names, [counts[n] for n in names], color=[np.array(colors[n]) / 255 for n in names])
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("objects")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45 if len(names) > 6 else 0)
    return fig


def plot_box_size_distribution(
    boxes: Sequence[np.ndarray],
    labels: Sequence[Sequence[Label]],
    class_names: Sequence[str],
    image_sizes: tuple[int, int] | None = None,
) -> Figure:
    """Box width vs height, size (sqrt of area) and aspect ratio per class, in three axes, from the boxes
    and labels of each image; sizes are fractions of the image when image_sizes gives the (h, w) of
    every image (a loaded dataset's size). Boxes with no width or height are left out (and logged)."""
    per_image = [as_boxes(b) for b in boxes]
    if len(labels) != len(per_image) or any(len(lab) != len(b) for lab, b in zip(labels, per_image)):
        raise ValueError("boxes and labels differ in length")
    flat = np.concatenate(per_image or [np.zeros((0, 4))])
    names = np.array([class_name(label, class_names) for lab in labels for label in lab], dtype=object)
    w, h = flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]
    ok = (w > 0) & (h > 0)
    if not ok.all():
        logger.warning("leaving out %d degenerate boxes (width or height <= 0)", int((~ok).sum()))
    if image_sizes is not None:
        w, h = w / image_sizes[1], h / image_sizes[0]
    unit = "fraction of image" if image_sizes is not None else "px"
    colors = class_colors(class_names)
    fig = _new_figure((13, 3.8))
    ax_wh, ax_size, ax_ar = fig.subplots(1, 3)
    present = [c for c in sorted(class_names) if c in set(names)]
    per_class = {c: ok & (names == c) for c in present}
    rgb = [np.array(colors[c]) / 255 for c in present]
    for c, color in zip(present, rgb):
        ax_wh.scatter(w[per_class[c]], h[per_class[c]], s=8, alpha=0.6, color=color, label=c)
    ax_wh.set(xlabel=f"width ({unit})", ylabel=f"height ({unit})", title="box width vs height")
    if present:
        sqrt_area = [np.sqrt(w[m] * h[m]) for m in per_class.values()]
        ax_size.hist(sqrt_area, bins=30, stacked=True, color=rgb, label=present)
        ax_ar.hist([np.log2(w[m] / h[m]) for m in per_class.values()], bins=30, stacked=True, color=rgb)
        ax_wh.legend(fontsize=8, markerscale=2)
    ax_size.set(xlabel=f"sqrt(area) ({unit})", ylabel="boxes", title="box size")
    ax_ar.set(xlabel="log2(width / height)", ylabel="boxes", title="aspect ratio (0 = square)")
    return fig


# ----------------------------------------------------------------------------------------------- charts
def plot_bar(values: Mapping[str, float], *, ylabel: str, title: str, annotate: bool = True) -> Figure:
    """Bar chart of named numbers in the given order, each bar labelled with its value when `annotate`."""
    names = list(values)
    fig = _new_figure((max(4.0, 0.9 * len(names) + 1.5), 3.5))
    ax = fig.subplots()
    palette = colormaps["tab10"].colors
    heights = [float(values[n]) for n in names]
    bars = ax.bar(names, heights, color=[palette[i % 10] for i in range(len(names))])
    if annotate:
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in heights], fontsize=8)
        ax.margins(y=0.12)  # room for the numbers above the tallest bar
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30 if len(names) > 4 else 0)
    return fig


def plot_history(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str] = ("loss", "val_loss"),
    *,
    title: str = "training history",
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """Training curves per epoch from a list of per-epoch dicts (read_history's rows); missing values gap."""
    present = [k for k in keys if any(k in epoch for epoch in history)]
    if not present:
        raise ValueError(f"none of {list(keys)} in the history")
    fig = _new_figure((6, 3.5))
    ax = fig.subplots()
    x = np.arange(1, len(history) + 1)
    for key in present:
        ax.plot(x, [float(epoch.get(key, np.nan)) for epoch in history], marker="o", markersize=3, label=key)
    ax.set(xlabel="epoch", title=title, ylim=ylim)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], normalize: bool = True) -> Figure:
    """Confusion matrix (rows = true class, columns = predicted) with every cell written.

    With `normalize` each row is divided by its total, so the diagonal reads as per-class recall.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"matrix shape {counts.shape} does not match {n} class names")
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    side = max(3.5, 0.55 * n + 2)
    fig = _new_figure((side + 1, side))
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    threshold = (shown.max() or 1) / 2
    for (r, c), value in np.ndenumerate(shown):
        text = f"{value:.2f}" if normalize else f"{int(round(value))}"
        shade = "white" if value > threshold else "black"
        ax.text(c, r, text, ha="center", va="center", fontsize=8, color=shade)
    ax.set_xticks(range(n), class_names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), class_names)
    title = "confusion matrix" + (" (row-normalized)" if normalize else "")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def plot_projection(projection: Mapping[str, Any], feed_images_per_s: float | None = None) -> Figure:
    """Projected speedup against GPU count per interconnect (bench_training's ``projection``), the ideal line,
    any measured GPU points and, given the host input pipeline's images/s, the speedup where it runs dry.
    """
    rows = projection["rows"]
    fig = _new_figure((6, 4))
    ax = fig.subplots()
    gpus = sorted({r["gpus"] for r in rows})
    ax.plot(gpus, gpus, color="grey", linestyle=":", label="ideal (N x)")
    for link in dict.fromkeys(r["link"] for r in rows):
        mine = [r for r in rows if r["link"] == link]
        label = f"{link} ({mine[0]['bandwidth_gbps']:g} GB/s, model)"
        ax.plot(
            [r["gpus"] for r in mine], [r["speedup"] for r in mine], marker="o", markersize=4, label=label
        )
    measured = projection.get("measured") or []
    if measured:
        points = ([m["gpus"] for m in measured], [m["speedup"] for m in measured])
        ax.scatter(*points, color="black", zorder=3, marker="*", s=120, label="measured on this machine")
    one = next((r for r in rows if r["gpus"] == 1 and "images_per_s" in r), None)
    if feed_images_per_s and one:
        label = f"host input pipeline limit ({feed_images_per_s:.0f} images/s, measured)"
        ax.axhline(feed_images_per_s / one["images_per_s"], color="tab:red", linestyle="--", label=label)
    ax.set(xlabel="GPUs (per-replica batch fixed)", ylabel="speedup over one GPU")
    ax.set_title("projected data-parallel speedup")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------------------------- truth and predictions
def _verdict(
    truth: list[str], found: list[str], iou: float | None, errors: Sequence[int] | None
) -> tuple[str, str]:
    """An image's title and its colour: the classes and IoU (green for the right class at IoU >= 0.5), or the
    TP / FP / FN counts (green without errors), or nothing."""
    if iou is not None:
        right = truth[:1] == found[:1] and iou >= 0.5
        return f"{(truth or ['-'])[0]} -> {(found or ['-'])[0]}, IoU {iou:.2f}", _GOOD if right else _BAD
    if errors is not None:
        tp, fp, fn = (int(e) for e in errors)
        return f"TP {tp}, FP {fp}, FN {fn}", _BAD if fp + fn else _GOOD
    return "", "black"


def plot_gt_vs_pred_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    gt_boxes: Sequence[np.ndarray] | np.ndarray,
    gt_labels: Sequence[Any],
    pred_boxes: Sequence[np.ndarray] | np.ndarray,
    pred_labels: Sequence[Any],
    ious: Sequence[float] | None,
    class_names: Sequence[str],
    ncols: int = 4,
    pred_scores: Sequence[Any] | None = None,
    title: str | None = None,
    *,
    score_threshold: float = 0.0,
    errors: tuple[Sequence[int], Sequence[int], Sequence[int]] | None = None,
    names: Sequence[str] | None = None,
    side_by_side: bool = False,
) -> Figure:
    """Ground truth (solid boxes, labels above) against predictions (dashed, labels below) per image.

    Per image one box (4,) and one label, as a single-box model predicts, or (k, 4) boxes and k labels;
    pred_scores per prediction (those under score_threshold are left out). Overlaid, with a key strip
    under the image, or side by side (truth left, predictions right) for crowded images. The title
    (after names[i]) gives the classes and IoU with ious, the TP / FP / FN counts with errors ((tp, fp,
    fn) per image, metrics.image_errors), in green or red. ncols counts images; none gives a note.
    """
    n = len(images)
    given = {"box sets": gt_boxes, "label sets": gt_labels, "predicted box sets": pred_boxes, "IoUs": ious}
    given |= {"predicted label sets": pred_labels, "score sets": pred_scores, "names": names}
    wrong = [f"{len(v)} {what}" for what, v in given.items() if v is not None and len(v) != n]
    if wrong:
        raise ValueError(f"{n} images but {', '.join(wrong)}")
    if errors is not None and not all(len(e) == n for e in errors):
        raise ValueError(f"errors must hold (tp, fp, fn) counts for each of the {n} images")
    if not n:
        fig = _new_figure((6, 1.2))
        fig.text(0.5, 0.5, f"{title + ': ' if title else ''}no images to show", ha="center", va="center")
        return fig
    style = {"colors": class_colors(class_names), "class_names": class_names}
    drawn, titles, title_colors = [], [], []
    for i in range(n):
        found = as_boxes(pred_boxes[i])
        scores = None if pred_scores is None else np.atleast_1d(np.asarray(pred_scores[i], np.float64))
        kept = np.ones(len(found), bool) if scores is None else scores >= score_threshold
        truth_names = [class_name(v, class_names) for v in np.atleast_1d(gt_labels[i]).tolist()]
        found_names = [class_name(v, class_names) for v in np.atleast_1d(pred_labels[i])[kept].tolist()]
        image, truth, found = enlarge(images[i], gt_boxes[i], found[kept])
        iou = None if ious is None else float(ious[i])
        counts = None if errors is None else [e[i] for e in errors]
        verdict, colour = _verdict(truth_names, found_names, iou, counts)
        key = ("" if iou is None else f"IoU {iou:.2f}   ") + "GT solid, pred dashed"
        shown = None if scores is None else scores[kept].tolist()
        drawn += _panels(image, (truth, truth_names), (found, found_names, shown), side_by_side, key, style)
        prefix = f"{names[i]}: " if names is not None else ""
        if side_by_side:
            titles += [f"{prefix}ground truth ({len(truth)})", f"detections ({len(found)})"]
            titles[-1] += f": {verdict}" if verdict else ""
        else:
            titles.append(prefix + (verdict or f"ground truth ({len(truth)}), predictions ({len(found)})"))
        title_colors += ["black", colour] if side_by_side else [colour]
    per_row = ncols * (2 if side_by_side else 1)
    return _image_grid(drawn, titles, ncols=per_row, figsize=None, title_colors=title_colors, suptitle=title)


def _panels(
    image: np.ndarray, truth: tuple, found: tuple, side_by_side: bool, key: str, style: Mapping[str, Any]
) -> list[np.ndarray]:
    """One image's panels: truth (boxes, names) beside the predictions (boxes, names, scores), or both on
    the image with `key` in a strip under it, every line drawn before any label so none crosses a label."""
    (truth_boxes, truth_names), (boxes, names, scores) = truth, found
    dashed = {"scores": scores, "dashed": True, **style}
    if side_by_side:
        return [
            draw_boxes(image, truth_boxes, truth_names, **style),
            draw_boxes(image, boxes, names, **dashed),
        ]
    out = draw_boxes(image, boxes, names, label_position=None, **dashed)
    out = draw_boxes(out, truth_boxes, truth_names, label_position=None, **style)
    out = draw_boxes(out, truth_boxes, truth_names, lines=False, **style)
    out = draw_boxes(out, boxes, names, lines=False, label_position="bottom", **dashed)
    return [add_footer(out, key)]


def plot_detection_gallery(
    ds: Any,
    detections: Sequence[Any],
    idx: Sequence[int] | np.ndarray,
    *,
    score_threshold: float,
    errors: Any = None,
    ncols: int = 2,
    title: str | None = None,
) -> Figure:
    """plot_gt_vs_pred_grid, side by side, for the images idx of a LoadedDataset and their detections
    (anything with .boxes (K, 4), .scores and .labels, such as decode.Detections), named by file;
    errors: metrics.ImageErrors (tp, fp, fn arrays over all images) or None."""
    idx = [int(i) for i in np.asarray(idx, np.int64).reshape(-1)]
    if len(detections) != len(ds.boxes):
        raise ValueError(f"{len(detections)} detection sets for {len(ds.boxes)} images")
    dets = [detections[i] for i in idx]
    return plot_gt_vs_pred_grid(
        np.asarray(ds.images)[idx],
        [ds.boxes[i] for i in idx],
        [ds.labels[i] for i in idx],
        [d.boxes for d in dets],
        [d.labels for d in dets],
        None,
        ds.class_names,
        ncols,
        [d.scores for d in dets],
        title,
        score_threshold=score_threshold,
        errors=None
        if errors is None
        else tuple(np.asarray(e)[idx] for e in (errors.tp, errors.fp, errors.fn)),
        names=[Path(ds.paths[i]).name for i in idx] if len(ds.paths) else [f"image {i}" for i in idx],
        side_by_side=True,
    )


def plot_pr_curves(
    curves: Mapping[str, Any], *, score_threshold: float | None = None, title: str = "precision-recall"
) -> Figure:
    """One precision-recall curve per class (metrics.PRCurve: recall, precision, ap, positives, at()) in
    its class colour, AP in the legend; a dot marks the operating point at score_threshold.

    Classes without positives have no curve (AP is undefined) and are named in the log.
    """
    colors = class_colors(curves)
    fig = _new_figure((6.5, 4.5))
    ax = fig.subplots()
    skipped = []
    for name, curve in curves.items():
        if not curve.positives:
            skipped.append(name)
            continue
        color = np.array(colors[name]) / 255
        recall = np.concatenate([[0.0], np.asarray(curve.recall, np.float64)])
        precision = np.concatenate([[1.0], np.asarray(curve.precision, np.float64)])
        label = f"{name} (AP {curve.ap:.2f})" if len(curve.recall) else f"{name} (no detections)"
        ax.plot(recall, precision, drawstyle="steps-post", color=color, label=label)
        if score_threshold is not None:
            p, r = curve.at(score_threshold)
            if p is not None and r is not None:
                ax.plot([r], [p], "o", color=color, markeredgecolor="black")
    if skipped:
        logger.info("no precision-recall curve for %s: no ground-truth boxes", ", ".join(skipped))
    if score_threshold is not None:  # one legend entry for the dots
        ax.plot([], [], "o", color="grey", markeredgecolor="black", label=f"score >= {score_threshold:.2f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncols=2 if len(curves) > 6 else 1)
    return fig


def plot_detection_confusion(
    matrix: np.ndarray, labels: Sequence[str], *, title: str | None = None
) -> Figure:
    """A detection confusion matrix (metrics.confusion_matrix: rows ground truth, columns predictions,
    the last of each "background") with every count written; colour is the share of its row.

    The background row holds detections that matched no object (false positives), the background
    column objects no detection matched (misses); lines set them apart, and their shared cell is empty.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    n = len(labels)
    if counts.shape != (n, n) or n < 2:
        raise ValueError(f"matrix shape {counts.shape} does not match {n} labels (classes + background)")
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.55 * n + 2)
    fig = _new_figure((side + 1, side))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the row")
    for (r, c), value in np.ndenumerate(counts):
        if r == c == n - 1:
            continue
        shade = "white" if share[r, c] > 0.5 else "black"
        ax.text(c, r, f"{int(round(value))}", ha="center", va="center", fontsize=8, color=shade)
    for edge in (ax.axhline, ax.axvline):
        edge(n - 1.5, color="tab:red", linewidth=1.5)
    rotate = n > 5
    ax.set_xticks(range(n), labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n), labels)
    ax.set(
        xlabel="predicted (last column: missed objects)",
        ylabel="ground truth (last row: false detections)",
        title=title or "detection confusion matrix (counts)",
    )
    return fig


def plot_heatmaps(
    image: np.ndarray,
    heatmaps: Mapping[str, np.ndarray],
    *,
    boxes: np.ndarray | None = None,
    labels: Sequence[Label] | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """The image with its boxes, then each (h, w) heatmap of values in [0, 1] over a grey copy of it.

    A heatmap at the detector's stride covers the whole image (each cell is stretched to its pixels).
    """
    if not heatmaps:
        raise ValueError("no heatmaps to show")
    img = as_rgb_uint8(image)
    height, width = img.shape[:2]
    shown = img if boxes is None else draw_boxes(img, boxes, labels, class_names=class_names)
    grey = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    fig = _new_figure((3.3 * (len(heatmaps) + 1) + 0.6, 3.5))
    axes = fig.subplots(1, len(heatmaps) + 1)
    axes[0].imshow(shown)
    axes[0].set_title("image and boxes", fontsize=9)
    im = None
    for ax, (name, heat) in zip(axes[1:], heatmaps.items()):
        heat = np.asarray(heat, np.float64)
        if heat.ndim != 2:
            raise ValueError(f"heatmap {name!r} must be (h, w), got shape {heat.shape}")
        ax.imshow(grey, alpha=0.5)
        im = ax.imshow(heat, cmap="magma", vmin=0, vmax=1, alpha=0.75, extent=(0, width, height, 0))
        ax.set_title(f"{name} ({heat.shape[1]}x{heat.shape[0]} cells)", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes), fraction=0.02)
    if title:
        fig.suptitle(title)
    return fig


def plot_grouped_bars(values: Mapping[str, Mapping[str, float | None]], *, ylabel: str, title: str) -> Figure:
    """Bars of several measures (inner keys) side by side for each group (outer keys, e.g. models), each
    labelled with its value; a missing or None value leaves a gap labelled "n/a"."""
    groups = list(values)
    series = list(dict.fromkeys(k for v in values.values() for k in v))
    if not groups or not series:
        raise ValueError("no values to plot")
    fig = _new_figure((max(5.0, 1.1 * len(groups) * max(1, len(series)) ** 0.5 + 2), 3.8))
    ax = fig.subplots()
    palette = colormaps["tab10"].colors
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for j, name in enumerate(series):
        heights = [np.nan if values[g].get(name) is None else float(values[g][name]) for g in groups]
        offset = x + (j - (len(series) - 1) / 2) * width
        bars = ax.bar(offset, np.nan_to_num(heights), width, label=name, color=palette[j % 10])
        ax.bar_label(bars, labels=["n/a" if np.isnan(h) else f"{h:.3g}" for h in heights], fontsize=7)
    ax.margins(y=0.12)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 3 else 0)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return fig


def plot_accuracy_vs_latency(
    rows: Sequence[Mapping[str, Any]], *, title: str = "accuracy against latency"
) -> Figure:
    """One labelled point per row ({"name", "latency_ms", "map50"}, rows missing either are left out), with a
    bar of width latency_ms * latency_spread around it when the row has a spread."""
    points = [r for r in rows if r.get("latency_ms") is not None and r.get("map50") is not None]
    if not points:
        raise ValueError("no row has both 'latency_ms' and 'map50'")
    fig = _new_figure((6, 4))
    ax = fig.subplots()
    palette = colormaps["tab10"].colors
    for i, row in enumerate(points):
        xv, yv, spread = float(row["latency_ms"]), float(row["map50"]), row.get("latency_spread")
        err = None if spread is None else float(spread) * xv / 2
        ax.errorbar(xv, yv, xerr=err, fmt="o", color=palette[i % 10], capsize=3, label=str(row["name"]))
        ax.annotate(str(row["name"]), (xv, yv), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xlabel="ms per image (batch 1, median)", ylabel="mAP@0.5", title=title)
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    return fig
