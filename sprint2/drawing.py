"""Boxes drawn on pixels with OpenCV: a colour per class, solid and dashed boxes, readable labels.

Every box in a figure (sprint2.viz) and in a `sprint2 predict` output image is drawn here. Images come
back as new uint8 RGB arrays; the input is never modified.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
from matplotlib import colormaps

RGB = tuple[int, int, int]
Label = str | int | np.integer

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_DEFAULT_COLOR: RGB = (31, 119, 180)  # tab10 blue, for boxes without a class


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
def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
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


def as_boxes(boxes: np.ndarray | Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
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


def class_name(label: Label, class_names: Sequence[str] | None) -> str:
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
    colors: Mapping[str, RGB] | None = None,
    scores: Sequence[float] | None = None,
    thickness: int | None = None,
    dashed: bool = False,
    class_names: Sequence[str] | None = None,
    label_position: str | None = "top",
    lines: bool = True,
) -> np.ndarray:
    """Return a new uint8 RGB image with the boxes (xmin, ymin, xmax, ymax in pixels) and readable labels.

    `labels` are names or indices into `class_names`; `colors` maps a class to its RGB (default:
    class_colors of `class_names`, else of the labels given; unlabelled boxes are blue). Labels go above the
    box ("top"), below it ("bottom") or nowhere (None); without `lines` only the labels are drawn.
    Rectangles are drawn first and labels last, so no box line crosses a label. The input image is
    never modified.
    """
    img = as_rgb_uint8(image_rgb)
    arr = as_boxes(boxes)
    if labels is not None and len(labels) != len(arr):
        raise ValueError(f"{len(arr)} boxes but {len(labels)} labels")
    if scores is not None and len(scores) != len(arr):
        raise ValueError(f"{len(arr)} boxes but {len(scores)} scores")
    names = [class_name(label, class_names) for label in labels] if labels is not None else None
    if colors is None:
        colors = class_colors(class_names if class_names is not None else (names or []))
    line = thickness if thickness is not None else _style(img.shape)[0]

    def color_of(i: int) -> RGB:
        return _DEFAULT_COLOR if names is None else colors.get(names[i], _DEFAULT_COLOR)

    corners = [_pixel_box(box, img.shape) for box in arr]
    for i, (x1, y1, x2, y2) in enumerate(corners if lines else []):
        if dashed:
            _dashed_rectangle(img, (x1, y1), (x2, y2), color_of(i), line)
        else:
            cv2.rectangle(img, (x1, y1), (x2, y2), color_of(i), line, cv2.LINE_8)
    for i, box in enumerate(corners):
        parts = [names[i]] if names is not None else []
        if scores is not None:
            parts.append(f"{scores[i]:.2f}")
        if parts and label_position:
            _draw_label(img, " ".join(parts), box, color_of(i), where=label_position)
    return img


def add_footer(img: np.ndarray, text: str) -> np.ndarray:
    """`img` with a dark strip below it holding `text` in white, sized like the box labels."""
    _, scale, text_thickness = _style(img.shape)
    (_, th), baseline = cv2.getTextSize(text, _FONT, scale, text_thickness)
    pad = max(2, round(th * 0.4))
    strip = np.full((th + baseline + 2 * pad, img.shape[1], 3), 30, dtype=np.uint8)
    cv2.putText(strip, text, (pad, pad + th), _FONT, scale, (255, 255, 255), text_thickness, cv2.LINE_AA)
    return np.concatenate([img, strip], axis=0)


def enlarge(image: np.ndarray, *box_sets: np.ndarray, min_side: int = 384) -> tuple[np.ndarray, ...]:
    """A small image upscaled by a whole factor (nearest neighbour: pixels stay visible), each box set too.

    Text drawn on a 128 px image is a blur of blocks once matplotlib enlarges it; drawing after the
    upscale keeps labels sharp while the image content stays the small one.
    """
    side = max(image.shape[0], image.shape[1])
    factor = math.ceil(min_side / side) if side < min_side else 1
    if factor > 1:
        image = cv2.resize(as_rgb_uint8(image), None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    return image, *(as_boxes(boxes) * factor for boxes in box_sets)
