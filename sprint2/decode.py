"""Turning a detector's dense outputs into boxes: shared by evaluation, `sprint2 predict` and LiteRT models.

NumPy only, so a `.tflite` model can be decoded without importing TensorFlow. `decode` reads the
CenterNet-style output of `sprint2.detector` (heatmap | size | offset at stride 4): 3x3 peak picking,
top-k, boxes from centre cell + offset and size, per-class NMS, the score threshold, and the way
back to the original image through the loader's `Resize` record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sprint2.images import Resize

# sprint2.images (OpenCV) is imported inside the functions that need it, so that importing this module,
# and `sprint2.metrics` with it, for the Detections type stays NumPy only.

STRIDE = 4
HEAD_NAMES: tuple[str, ...] = ("heatmap", "size", "offset")


@dataclass
class Detections:
    """One image's detections: boxes (K, 4) float32 xmin, ymin, xmax, ymax; scores (K,); labels (K,) int32."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, np.int32).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError("Detections: boxes, scores and labels must have one entry per detection")

    def __len__(self) -> int:
        return len(self.scores)


def split_outputs(outputs: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmap (N, h, w, C), size (N, h, w, 2), offset (N, h, w, 2)) float32 arrays.

    Accepts the concatenated (N, h, w, C + 4) array, a sequence of the three heads, a one-entry
    mapping holding the concatenated array under any name (a TFLite signature's "output_0"), or a
    mapping whose keys are the head names or end in "_" + a head name (tfmot's "quant_heatmap", ...).
    """
    if isinstance(outputs, Mapping) and len(outputs) == 1:
        (outputs,) = outputs.values()
    if isinstance(outputs, Mapping):
        parts = []
        for head in HEAD_NAMES:
            keys = [k for k in outputs if k == head or str(k).endswith("_" + head)]
            if len(keys) != 1:
                raise ValueError(f"decode: expected one output named like {head!r}, got {sorted(outputs)}")
            parts.append(np.asarray(outputs[keys[0]], np.float32))
    elif isinstance(outputs, (list, tuple)):
        if len(outputs) != 3:
            raise ValueError(f"decode: expected the three heads {HEAD_NAMES}, got {len(outputs)} arrays")
        parts = [np.asarray(p, np.float32) for p in outputs]
    else:
        out = np.asarray(outputs, np.float32)
        if out.ndim != 4 or out.shape[-1] != num_classes + 4:
            expected = f"(N, h, w, {num_classes} + 4)"
            raise ValueError(
                f"decode: expected outputs {expected} for {num_classes} classes, got {out.shape}"
            )
        parts = [out[..., :num_classes], out[..., num_classes : num_classes + 2], out[..., num_classes + 2 :]]
    heat, size, offset = parts
    expected = [(num_classes,), (2,), (2,)]
    for name, part, channels in zip(HEAD_NAMES, parts, expected):
        if part.ndim != 4 or part.shape[-1:] != channels or part.shape[:3] != heat.shape[:3]:
            raise ValueError(f"decode: {name} has shape {part.shape}, expected {heat.shape[:3] + channels}")
    return heat, size, offset


def local_peaks(heat: np.ndarray) -> np.ndarray:
    """Boolean mask of cells equal to the maximum of their 3x3 neighbourhood, per channel of (h, w, C)."""
    h, w = heat.shape[:2]
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = heat.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(pooled, padded[dy : dy + h, dx : dx + w], out=pooled)
    return heat >= pooled


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy per-class non-maximum suppression, best score first (ties: lower index).

    A box is dropped when its IoU with a kept box of the same label exceeds iou_threshold.
    """
    from sprint2.images import box_iou

    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    keep: list[int] = []
    suppressed = np.zeros(len(scores), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        same = (labels == labels[i]) & ~suppressed
        same[i] = False
        overlap = box_iou(boxes[i][np.newaxis], boxes) > iou_threshold
        suppressed |= same & overlap
    return np.asarray(keep, np.int64)


def _image_extent(
    resize: Resize | None, image_size: tuple[float, float] | None, fallback: tuple[float, float]
) -> tuple[float, float]:
    """(width, height) of the image boxes are clipped to.

    image_size when given; else the content area a Resize implies, (out - 2 * pad) / scale: exact for
    "stretch", and for "letterbox" at most one resized pixel wider or taller than the image (an odd
    padding's extra pixel sits on the far side and is not recorded); else the network input.
    """
    if image_size is not None:
        return float(image_size[0]), float(image_size[1])
    if resize is not None:
        return (
            (resize.out_w - 2.0 * resize.pad_x) / resize.scale_x,
            (resize.out_h - 2.0 * resize.pad_y) / resize.scale_y,
        )
    return fallback


def _is_size(value: Any) -> bool:
    """Whether value is one (width, height) pair rather than a sequence of per-image entries."""
    return (
        isinstance(value, (tuple, list, np.ndarray))
        and len(value) == 2
        and all(v is not None and np.ndim(v) == 0 for v in value)
    )


def _per_image(value: Any, n: int, single: bool, what: str) -> list[Any]:
    """One entry per image: a single value (or None) shared by all, else a sequence of n."""
    if value is None or single:
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"decode: {len(values)} {what} for {n} images")
    return values


def decode(
    outputs: Any,
    num_classes: int,
    *,
    score_threshold: float,
    top_k: int,
    iou_threshold: float,
    resize: Resize | Sequence[Resize] | None = None,
    image_size: tuple[float, float] | Sequence[tuple[float, float] | None] | None = None,
    stride: int = STRIDE,
) -> list[Detections]:
    """Detections per image from a detector's outputs (see split_outputs for the accepted forms).

    Candidates are 3x3 local maxima of each class's heatmap; the top_k best are turned into boxes,
    centre ((col, row) + offset) * stride and size w, h, in network-input pixels; per-class NMS at
    iou_threshold follows, and scores below score_threshold are dropped. With `resize` (one Resize
    for all images or one per image) boxes are mapped back to the original image's pixels; they are
    clipped to the image (`image_size`: one (width, height) for all images, or one per image where
    None means unknown; see _image_extent) and boxes left
    without area are dropped. Each result is sorted by score, best first.
    """
    from sprint2.images import Resize, untransform_boxes

    heat, size, offset = split_outputs(outputs, num_classes)
    if top_k < 1:
        raise ValueError(f"decode: top_k must be >= 1, got {top_k}")
    n, h, w, _ = heat.shape
    resizes = _per_image(resize, n, isinstance(resize, Resize), "resize records")
    sizes = _per_image(image_size, n, _is_size(image_size), "image sizes")
    results = []
    for i in range(n):
        peaks = local_peaks(heat[i]) & (heat[i] >= score_threshold)
        flat = np.flatnonzero(peaks)
        scores = heat[i].reshape(-1)[flat]
        order = np.lexsort((flat, -scores))[:top_k]
        flat, scores = flat[order], scores[order]
        rows, cols, labels = np.unravel_index(flat, heat[i].shape)
        cx = (cols + offset[i, rows, cols, 0]) * stride
        cy = (rows + offset[i, rows, cols, 1]) * stride
        bw, bh = size[i, rows, cols, 0], size[i, rows, cols, 1]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1).astype(np.float32)
        keep = nms(boxes, scores, labels, iou_threshold)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if resizes[i] is not None:
            boxes = untransform_boxes(boxes, resizes[i])
        width, height = _image_extent(resizes[i], sizes[i], (w * stride, h * stride))
        boxes = np.clip(boxes, 0.0, [width, height, width, height]).astype(np.float32)
        area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        results.append(Detections(boxes[area], scores[area], labels[area]))
    return results
