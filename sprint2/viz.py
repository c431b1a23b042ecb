"""Boxes and figures for the notebooks: OpenCV draws the pixels, matplotlib makes the figures.

Every picture in the report comes from here so notebooks only call functions. Figures are made with
pyplot and closed at once: Jupyter still shows a returned figure (once), and nothing piles up in memory.
"""

from __future__ import annotations

import colorsys
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]
Label = str | int | np.integer

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_DEFAULT_COLOR: RGB = (31, 119, 180)  # tab10 blue, for boxes without a class
_GOOD, _BAD = "#1a7f37", "#c62828"  # title colours for right / wrong predictions


# ----------------------------------------------------------------------------------------------- colours
def class_colors(class_names: Iterable[str]) -> dict[str, RGB]:
    """A stable, distinct RGB colour per class, fixed by its index in the sorted names (not the input order).

    The first 10 are tab10, the next 10 tab20's light tints; beyond 20 the palette repeats, alternately
    darkened and lightened further each round, so colours stay distinct for any realistic class count.
    """
    tab20 = colormaps["tab20"].colors
    palette = list(tab20[0::2]) + list(tab20[1::2])  # strong hues first, then their tints
    colors: dict[str, RGB] = {}
    for i, name in enumerate(sorted(set(class_names))):
        r, g, b = palette[i % len(palette)]
        rnd = i // len(palette)
        if rnd:
            hue, light, sat = colorsys.rgb_to_hls(r, g, b)
            shift = 0.6 ** ((rnd + 1) // 2)  # 0.6, 0.6, 0.36, 0.36, ... of the distance kept
            light = light * shift if rnd % 2 else 1 - (1 - light) * shift  # odd rounds darker, even lighter
            r, g, b = colorsys.hls_to_rgb(hue, light, sat)
        colors[name] = (round(r * 255), round(g * 255), round(b * 255))
    return colors


def text_color_for(color: RGB) -> RGB:
    """Black or white, whichever contrasts more with `color` (WCAG relative luminance): readable labels."""
    channels = np.asarray(color, dtype=np.float64) / 255.0
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    luminance = float(linear @ np.array([0.2126, 0.7152, 0.0722]))
    # contrast with black is (L+0.05)/0.05, with white 1.05/(L+0.05); they are equal at L ~= 0.179
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


# ----------------------------------------------------------------------------------------------- pixels
def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """A fresh contiguous uint8 (H, W, 3) copy of `image` (gray, one channel or floats in [0, 1] accepted)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and float(np.nanmax(img)) <= 1.0:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(img).copy()


def _as_boxes(boxes: np.ndarray | Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    """Boxes as a float64 (k, 4) array; a single box of 4 numbers is accepted."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"expected boxes of shape (k, 4) as xmin, ymin, xmax, ymax; got {arr.shape}")
    return arr


def _style(shape: tuple[int, ...]) -> tuple[int, float, int]:
    """Line thickness, font scale and text thickness for an image, so a box looks alike at any resolution."""
    side = max(shape[0], shape[1])
    thickness = max(1, round(side / 250))
    font_scale = max(0.35, side / 800)
    return thickness, font_scale, 1 if font_scale < 0.9 else 2


def _name_of(label: Label, class_names: Sequence[str] | None) -> str:
    """A class name from a name or an index into `class_names` (LoadedDataset.labels holds indices)."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if class_names is None:
            return str(int(label))
        return class_names[int(label)]
    return str(label)


def _dashed_rectangle(
    img: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color: RGB, thickness: int
) -> None:
    """Draw a dashed rectangle in place; dashes scale with the line thickness and always cover the corners."""
    dash = max(4, 4 * thickness)
    (x1, y1), (x2, y2) = p1, p2
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for start in range(0, length + 1, 2 * dash):
            end = min(start + dash, length)
            t0, t1 = start / max(length, 1), end / max(length, 1)
            q0 = (round(a[0] + (b[0] - a[0]) * t0), round(a[1] + (b[1] - a[1]) * t0))
            q1 = (round(a[0] + (b[0] - a[0]) * t1), round(a[1] + (b[1] - a[1]) * t1))
            cv2.line(img, q0, q1, color, thickness, cv2.LINE_8)


def _draw_label(img: np.ndarray, text: str, box: Sequence[int], color: RGB, where: str = "top") -> None:
    """Write `text` on a filled patch of `color` at the box's top-left (or bottom-left), in place.

    The patch sits outside the box when there is room and flips inside at the image edge; it is shifted
    left when it would run off the right side, so labels stay inside the image.
    """
    height, width = img.shape[:2]
    _, scale, text_thickness = _style(img.shape)
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, text_thickness)
    pad = max(1, round(th * 0.25))
    lw, lh = tw + 2 * pad, th + baseline + 2 * pad
    x1, y1, _, y2 = box
    if where == "top":
        top = y1 - lh if y1 - lh >= 0 else y1
    else:
        top = y2 + 1 if y2 + 1 + lh <= height else y2 - lh
    top = min(max(top, 0), max(height - lh, 0))
    left = min(max(x1, 0), max(width - lw, 0))
    cv2.rectangle(img, (left, top), (left + lw - 1, top + lh - 1), color, cv2.FILLED)
    origin = (left + pad, top + pad + th)
    cv2.putText(img, text, origin, _FONT, scale, text_color_for(color), text_thickness, cv2.LINE_AA)


def _pixel_box(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Float box -> integer corners clipped to the image; halves round up (np.rint: 2.5 -> 2, 3.5 -> 4)."""
    corners = np.floor(np.asarray(box, dtype=np.float64) + 0.5).astype(np.int64)
    corners[[0, 2]] = np.clip(corners[[0, 2]], 0, shape[1] - 1)
    corners[[1, 3]] = np.clip(corners[[1, 3]], 0, shape[0] - 1)
    x1, y1, x2, y2 = (int(v) for v in corners)
    return x1, y1, x2, y2


def draw_boxes(
    image_rgb: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[Label] | None = None,
    *,
    colors: Mapping[str, RGB] | RGB | None = None,
    scores: Sequence[float] | None = None,
    thickness: int | None = None,
    dashed: bool = False,
    class_names: Sequence[str] | None = None,
    label_position: str = "top",
) -> np.ndarray:
    """Return a new uint8 RGB image with the boxes (xmin, ymin, xmax, ymax in pixels) and readable labels.

    `labels` are names or indices into `class_names`; `colors` is a class->RGB mapping or one RGB for
    all boxes (default: class_colors of `class_names`, else of the labels given). Labels go above the
    box ("top") or below it ("bottom"). Rectangles are drawn first and labels last, so no box line
    crosses a label. The input image is never modified.
    """
    img = _as_rgb_uint8(image_rgb)
    arr = _as_boxes(boxes)
    if labels is not None and len(labels) != len(arr):
        raise ValueError(f"{len(arr)} boxes but {len(labels)} labels")
    if scores is not None and len(scores) != len(arr):
        raise ValueError(f"{len(arr)} boxes but {len(scores)} scores")
    names = [_name_of(label, class_names) for label in labels] if labels is not None else None
    if colors is None:
        colors = class_colors(class_names if class_names is not None else (names or []))
    line = thickness if thickness is not None else _style(img.shape)[0]

    def color_of(i: int) -> RGB:
        if not isinstance(colors, Mapping):
            return tuple(int(c) for c in colors)  # type: ignore[return-value]
        if names is None:
            return _DEFAULT_COLOR
        return colors.get(names[i], _DEFAULT_COLOR)

    corners = [_pixel_box(box, img.shape) for box in arr]
    for i, (x1, y1, x2, y2) in enumerate(corners):
        if dashed:
            _dashed_rectangle(img, (x1, y1), (x2, y2), color_of(i), line)
        else:
            cv2.rectangle(img, (x1, y1), (x2, y2), color_of(i), line, cv2.LINE_8)
    for i, box in enumerate(corners):
        parts = [names[i]] if names is not None else []
        if scores is not None:
            parts.append(f"{scores[i]:.2f}")
        if parts:
            _draw_label(img, " ".join(parts), box, color_of(i), where=label_position)
    return img


def draw_gt_vs_pred(
    image: np.ndarray,
    gt_box: np.ndarray,
    gt_label: Label,
    pred_box: np.ndarray,
    pred_label: Label,
    iou: float,
    *,
    pred_score: float | None = None,
    class_names: Sequence[str],
) -> np.ndarray:
    """One image with the ground truth (solid, label above), the prediction (dashed, label below), the IoU.

    Each box takes its class colour, so a wrong class shows at a glance. The IoU goes in a dark strip
    added under the image (output is taller than the input), so it never hides a box or a label.
    """
    colors = class_colors(class_names)
    gt_name, pred_name = _name_of(gt_label, class_names), _name_of(pred_label, class_names)
    gt_color, pred_color = colors.get(gt_name, _DEFAULT_COLOR), colors.get(pred_name, _DEFAULT_COLOR)
    # both lines first, then both labels, so neither box's line runs through a label
    out = draw_boxes(image, pred_box, colors=pred_color, dashed=True)
    out = draw_boxes(out, gt_box, [f"GT {gt_name}"], colors=gt_color)
    pred_text = f"pred {pred_name}" + ("" if pred_score is None else f" {pred_score:.2f}")
    _draw_label(out, pred_text, _pixel_box(_as_boxes(pred_box)[0], out.shape), pred_color, where="bottom")
    return _add_footer(out, f"IoU {iou:.2f}   GT solid, pred dashed")


def _add_footer(img: np.ndarray, text: str) -> np.ndarray:
    """`img` with a dark strip below it holding `text` in white, sized like the box labels."""
    _, scale, text_thickness = _style(img.shape)
    (_, th), baseline = cv2.getTextSize(text, _FONT, scale, text_thickness)
    pad = max(2, round(th * 0.4))
    strip = np.full((th + baseline + 2 * pad, img.shape[1], 3), 30, dtype=np.uint8)
    cv2.putText(strip, text, (pad, pad + th), _FONT, scale, (255, 255, 255), text_thickness, cv2.LINE_AA)
    return np.concatenate([img, strip], axis=0)


def _for_display(image: np.ndarray, *box_sets: np.ndarray, min_side: int = 384) -> tuple[np.ndarray, ...]:
    """A small image upscaled by a whole factor (nearest neighbour: pixels stay visible), each box set too.

    Text drawn on a 128 px image is a blur of blocks once matplotlib enlarges it; drawing after the
    upscale keeps labels sharp while the image content stays the small one.
    """
    side = max(image.shape[0], image.shape[1])
    factor = math.ceil(min_side / side) if side < min_side else 1
    if factor > 1:
        image = cv2.resize(_as_rgb_uint8(image), None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    return image, *(_as_boxes(boxes) * factor for boxes in box_sets)


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
        draw_boxes(*_for_display(img, boxes), list(labels), colors=colors, class_names=class_names)
        for img, boxes, labels in zip(images, boxes_per_image, labels_per_image)
    ]
    return _image_grid(drawn, titles, ncols=ncols, figsize=figsize)


def plot_before_after_resize(
    original_image: np.ndarray,
    original_boxes: np.ndarray,
    resized_image: np.ndarray,
    resized_boxes: np.ndarray,
    labels: Sequence[Label],
    class_names: Sequence[str],
) -> Figure:
    """The same sample before and after resizing, side by side with their shapes: the boxes must still fit."""
    titles = [f"original {w}x{h} px" for h, w in [original_image.shape[:2]]]
    titles += [f"resized {w}x{h} px" for h, w in [resized_image.shape[:2]]]
    return show_grid(
        [original_image, resized_image],
        [original_boxes, resized_boxes],
        [labels, labels],
        class_names=class_names,
        ncols=2,
        titles=titles,
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


def _flatten_boxes(
    boxes: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence | np.ndarray,
    class_names: Sequence[str],
    image_sizes: Sequence[tuple[int, int]] | tuple[int, int] | None,
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """All boxes as one (n, 4) array, their class names and, when sizes are given, each box's image (h, w)."""
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2:
        boxes, labels = [boxes], [labels]
        if image_sizes is not None and np.ndim(image_sizes) == 1:
            image_sizes = [image_sizes]
    elif image_sizes is not None and np.ndim(image_sizes) == 1:
        image_sizes = [image_sizes] * len(boxes)  # one size shared by all images (a resized dataset)
    per_image = [_as_boxes(b) for b in boxes]
    if len(labels) != len(per_image) or any(len(lab) != len(b) for lab, b in zip(labels, per_image)):
        raise ValueError("boxes and labels differ in length")
    flat = np.concatenate(per_image) if per_image else np.zeros((0, 4))
    names = [_name_of(label, class_names) for lab in labels for label in lab]
    if image_sizes is None:
        return flat, names, None
    per_box = [
        np.tile(np.asarray(hw, dtype=np.float64)[:2], (len(b), 1)) for hw, b in zip(image_sizes, per_image)
    ]
    return flat, names, np.concatenate(per_box) if per_box else np.zeros((0, 2))


def plot_box_size_distribution(
    boxes: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence | np.ndarray,
    class_names: Sequence[str],
    image_sizes: Sequence[tuple[int, int]] | tuple[int, int] | None = None,
) -> Figure:
    """Box width vs height, size (sqrt of area) and aspect ratio per class, in three axes.

    Sizes are fractions of the image when `image_sizes` gives (h, w) per image (or one (h, w) for all).
    Boxes with zero or negative width or height are left out (and counted in the log).
    """
    flat, names, sizes = _flatten_boxes(boxes, labels, class_names, image_sizes)
    w, h = flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]
    ok = (w > 0) & (h > 0)
    if not ok.all():
        logger.warning("leaving out %d degenerate boxes (width or height <= 0)", int((~ok).sum()))
    if sizes is not None:
        w, h = w / sizes[:, 1], h / sizes[:, 0]
    unit = "fraction of image" if sizes is not None else "px"
    colors = class_colors(class_names)
    fig = _new_figure((13, 3.8))
    ax_wh, ax_size, ax_ar = fig.subplots(1, 3)
    present = [c for c in sorted(class_names) if c in set(names)]
    per_class = {c: ok & (np.array(names) == c) for c in present}
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


def plot_gt_vs_pred_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    gt_boxes: Sequence[np.ndarray] | np.ndarray,
    gt_labels: Sequence[Label],
    pred_boxes: Sequence[np.ndarray] | np.ndarray,
    pred_labels: Sequence[Label],
    ious: Sequence[float],
    class_names: Sequence[str],
    ncols: int = 4,
    pred_scores: Sequence[float] | None = None,
    title: str | None = None,
) -> Figure:
    """Ground truth vs prediction for several images (e.g. best and worst cases).

    A title is green when the class is right and IoU >= 0.5, else red.
    """
    n = len(images)
    if not all(len(x) == n for x in (gt_boxes, gt_labels, pred_boxes, pred_labels, ious)):
        raise ValueError("images, boxes, labels and ious must all have the same length")
    drawn, titles, title_colors = [], [], []
    for i in range(n):
        score = None if pred_scores is None else float(pred_scores[i])
        image, gt_box, pred_box = _for_display(images[i], gt_boxes[i], pred_boxes[i])
        iou = float(ious[i])
        picture = draw_gt_vs_pred(
            image,
            gt_box,
            gt_labels[i],
            pred_box,
            pred_labels[i],
            iou,
            pred_score=score,
            class_names=class_names,
        )
        drawn.append(picture)
        gt_name, pred_name = _name_of(gt_labels[i], class_names), _name_of(pred_labels[i], class_names)
        hit = gt_name == pred_name and iou >= 0.5
        titles.append(f"{gt_name} -> {pred_name}, IoU {iou:.2f}")
        title_colors.append(_GOOD if hit else _BAD)
    return _image_grid(drawn, titles, ncols=ncols, figsize=None, title_colors=title_colors, suptitle=title)


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
    history: Sequence[Mapping[str, float]] | Mapping[str, Sequence[float]],
    keys: Sequence[str] = ("loss", "val_loss"),
) -> Figure:
    """Training curves per epoch from a list of per-epoch dicts (or Keras' History.history dict of lists)."""
    if isinstance(history, Mapping):
        epochs = max((len(v) for v in history.values()), default=0)
        history = [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(epochs)]
    present = [k for k in keys if any(k in epoch for epoch in history)]
    if not present:
        raise ValueError(f"none of {list(keys)} in the history")
    fig = _new_figure((6, 3.5))
    ax = fig.subplots()
    x = np.arange(1, len(history) + 1)
    for key in present:
        ax.plot(x, [float(epoch.get(key, np.nan)) for epoch in history], marker="o", markersize=3, label=key)
    ax.set(xlabel="epoch", title="training history")
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


# ----------------------------------------------------------------------------------------------- detections
# Multi-object detections are duck-typed: anything with .boxes (K, 4), .scores (K,) and .labels (K,) class
# indices, such as sprint2.decode.Detections, so this module needs no detector code.


def plot_detection_pairs(
    images: Sequence[np.ndarray] | np.ndarray,
    gt_boxes: Sequence[np.ndarray],
    gt_labels: Sequence[Sequence[Label]],
    detections: Sequence[Any],
    class_names: Sequence[str],
    *,
    score_threshold: float = 0.0,
    errors: tuple[Sequence[int], Sequence[int], Sequence[int]] | None = None,
    names: Sequence[str] | None = None,
    ncols: int = 2,
    title: str | None = None,
) -> Figure:
    """Per image, the ground truth (left, solid boxes) beside the detections scoring >= score_threshold
    (right, dashed boxes labelled with class and score), both in the class colours.

    errors: per-image (tp, fp, fn) counts (metrics.image_errors) for the right panel's title, red when
    the image has any false positive or miss; names: a title prefix per image. ncols counts pairs.
    """
    n = len(images)
    if not len(gt_boxes) == len(gt_labels) == len(detections) == n:
        raise ValueError(
            f"{n} images, {len(gt_boxes)} box sets, {len(gt_labels)} label sets, {len(detections)} detections"
        )
    if errors is not None and not all(len(e) == n for e in errors):
        raise ValueError(f"errors must hold (tp, fp, fn) counts for each of the {n} images")
    if names is not None and len(names) != n:
        raise ValueError(f"{len(names)} names for {n} images")
    colors = class_colors(class_names)
    drawn, titles, title_colors = [], [], []
    for i in range(n):
        det = detections[i]
        kept = np.asarray(det.scores, np.float64) >= score_threshold
        det_labels = [int(v) for v in np.asarray(det.labels)[kept]]
        image, truth, found = _for_display(images[i], gt_boxes[i], np.asarray(det.boxes)[kept])
        labels = list(gt_labels[i])
        drawn.append(draw_boxes(image, truth, labels, colors=colors, class_names=class_names))
        drawn.append(
            draw_boxes(
                image,
                found,
                det_labels,
                colors=colors,
                scores=[float(s) for s in np.asarray(det.scores)[kept]],
                dashed=True,
                class_names=class_names,
            )
        )
        prefix = f"{names[i]}: " if names is not None else ""
        titles.append(f"{prefix}ground truth ({len(labels)})")
        result = f"detections ({len(det_labels)})"
        bad = False
        if errors is not None:
            tp, fp, fn = (int(e[i]) for e in errors)
            result += f": TP {tp}, FP {fp}, FN {fn}"
            bad = fp + fn > 0
        titles.append(result)
        title_colors += ["black", _BAD if bad else _GOOD]
    return _image_grid(
        drawn, titles, ncols=2 * max(1, ncols), figsize=None, title_colors=title_colors, suptitle=title
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
                ax.plot([r], [p], marker="o", color=color, markeredgecolor="black", linestyle="none")
    if skipped:
        logger.info("no precision-recall curve for %s: no ground-truth boxes", ", ".join(skipped))
    if score_threshold is not None:
        ax.plot(
            [],
            [],
            marker="o",
            color="grey",
            markeredgecolor="black",
            linestyle="none",
            label=f"score >= {score_threshold:.2f}",
        )
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
    img = _as_rgb_uint8(image)
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


def plot_grouped_bars(
    values: Mapping[str, Mapping[str, float | None]], *, ylabel: str, title: str, annotate: bool = True
) -> Figure:
    """Bars of several measures (inner keys) side by side for each group (outer keys, e.g. models).

    A missing or None value leaves a gap, labelled "n/a" when annotating.
    """
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
        raw = [values[g].get(name) for g in groups]
        heights = [np.nan if v is None else float(v) for v in raw]
        bars = ax.bar(
            x + (j - (len(series) - 1) / 2) * width,
            np.nan_to_num(heights),
            width,
            label=name,
            color=palette[j % 10],
        )
        if annotate:
            texts = ["n/a" if np.isnan(h) else f"{h:.3g}" for h in heights]
            ax.bar_label(bars, labels=texts, fontsize=7)
    ax.margins(y=0.12)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 3 else 0)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return fig


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
    """plot_detection_pairs for the images idx of a LoadedDataset, named by file, with its per-image
    detections and errors (metrics.ImageErrors: tp, fp, fn arrays over all images, or None).

    With no images to show (idx empty, e.g. no image has an error) the figure says so in words.
    """
    from pathlib import Path

    idx = [int(i) for i in np.asarray(idx, np.int64).reshape(-1)]
    if len(detections) != len(ds.boxes):
        raise ValueError(f"{len(detections)} detection sets for {len(ds.boxes)} images")
    if not idx:
        fig = _new_figure((6, 1.2))
        fig.text(0.5, 0.5, f"{title + ': ' if title else ''}no images to show", ha="center", va="center")
        return fig
    counts = None if errors is None else tuple(np.asarray(e)[idx] for e in (errors.tp, errors.fp, errors.fn))
    names = [Path(ds.paths[i]).name for i in idx] if len(ds.paths) else [f"image {i}" for i in idx]
    return plot_detection_pairs(
        np.asarray(ds.images)[idx],
        [ds.boxes[i] for i in idx],
        [ds.labels[i] for i in idx],
        [detections[i] for i in idx],
        ds.class_names,
        score_threshold=score_threshold,
        errors=counts,
        names=names,
        ncols=ncols,
        title=title,
    )


def plot_accuracy_vs_latency(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str = "latency_ms",
    y: str = "map50",
    xlabel: str = "ms per image (batch 1, median)",
    ylabel: str = "mAP@0.5",
    title: str = "accuracy against latency",
    spread: str | None = "latency_spread",
) -> Figure:
    """One labelled point per row ({"name", x, y}); with `spread`, a bar of width x * spread around it."""
    points = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    if not points:
        raise ValueError(f"no row has both {x!r} and {y!r}")
    fig = _new_figure((6, 4))
    ax = fig.subplots()
    palette = colormaps["tab10"].colors
    for i, row in enumerate(points):
        xv, yv = float(row[x]), float(row[y])
        err = float(row[spread]) * xv / 2 if spread and row.get(spread) is not None else None
        ax.errorbar(xv, yv, xerr=err, fmt="o", color=palette[i % 10], capsize=3, label=str(row["name"]))
        ax.annotate(str(row["name"]), (xv, yv), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    return fig
