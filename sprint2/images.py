"""Image decoding and resizing with OpenCV, plus the box arithmetic that goes with a resize.

decode_image() reads the bytes itself and checks that JPEG and PNG files are complete, because
OpenCV decodes a truncated JPEG with only a warning on stderr and grey pixels where data is missing.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sprint2.voc import DataError

logger = logging.getLogger(__name__)

PAD_VALUE = 114  # constant grey used by letterbox padding
_JPEG_PADDING = b"\x00\xff \t\r\n"
_MARKER_RE = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # a marker inside entropy-coded data (not stuffing/RST)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_problem(data: bytes) -> str | None:
    """Why a JPEG stream is incomplete (None when it reaches EOI followed only by padding).

    Walks the marker segments (so an EXIF thumbnail's EOI is skipped) and scans entropy-coded data.
    """
    pos, n = 2, len(data)
    while True:
        if pos + 2 > n:
            return "truncated JPEG (stream ends before the EOI marker FF D9)"
        if data[pos] != 0xFF:
            return f"corrupt JPEG (expected a marker at byte {pos})"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            tail = data[pos + 2:]
            if tail.strip(_JPEG_PADDING):
                return f"corrupt JPEG ({len(tail)} unexpected bytes after the EOI marker)"
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        if pos + 4 > n:
            return "truncated JPEG (stream ends inside a segment header)"
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        pos += 2 + length
        if pos > n:
            return "truncated JPEG (stream ends inside a segment)"
        if marker == 0xDA:  # SOS: entropy-coded data runs until the next real marker
            match = _MARKER_RE.search(data, pos)
            if match is None:
                return "truncated JPEG (stream ends inside the image data, no EOI marker FF D9)"
            pos = match.start()


def _png_problem(data: bytes) -> str | None:
    """Why a PNG is incomplete (None when its chunks run through IEND)."""
    pos, n = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= n:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        pos += 12 + length
        if pos > n:
            break
        if kind == b"IEND":
            return None
    return "truncated PNG (no IEND chunk)"


def _to_rgb_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """Convert whatever imdecode returned (gray, BGR, BGRA; 8/16-bit or float) to RGB uint8."""
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype.kind == "f":
        img = np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(path, f"unsupported pixel type {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise DataError(path, f"unsupported image shape {img.shape}")


def decode_image(path: Path | str) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); DataError for missing, empty, truncated or non-images.

    Pixels are taken as stored (no EXIF rotation), which is the grid VOC boxes are drawn on.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "image file missing") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not an image file") from None
    except OSError as exc:
        raise DataError(path, f"cannot read image file ({exc.strerror or exc})") from None
    if not data:
        raise DataError(path, "empty file")
    if data[:3] == b"\xff\xd8\xff":
        problem = _jpeg_problem(data)
    elif data[:8] == _PNG_SIGNATURE:
        problem = _png_problem(data)
    else:
        problem = None
    if problem:
        raise DataError(path, problem)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise DataError(path, f"not a decodable image ({exc.err})") from None
    if img is None or img.size == 0:
        raise DataError(path, "not a decodable image")
    return np.ascontiguousarray(_to_rgb_uint8(img, path))


@dataclass(frozen=True)
class Resize:
    """How a resize maps original pixels: x' = x * scale_x + pad_x, y' = y * scale_y + pad_y."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    out_w: int
    out_h: int


def _target(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int (square) or an (height, width) pair."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"resize target must be positive, got {size!r}")
    return h, w


def resize_image(img: np.ndarray, size: int | tuple[int, int], mode: str = "stretch") -> tuple[np.ndarray, Resize]:
    """Resize to size (int, or (height, width)) by "stretch" or "letterbox" (keep aspect, grey padding).

    Shrinking uses INTER_AREA, growing INTER_LINEAR. Returns the image and the box mapping.
    """
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected a non-empty (H, W[, C]) image, got shape {img.shape}")
    out_h, out_w = _target(size)
    h, w = img.shape[:2]
    if mode == "stretch":
        new_w, new_h, pad_x, pad_y = out_w, out_h, 0, 0
    elif mode == "letterbox":
        scale = min(out_w / w, out_h / h)
        new_w = min(out_w, max(1, round(w * scale)))
        new_h = min(out_h, max(1, round(h * scale)))
        pad_x, pad_y = (out_w - new_w) // 2, (out_h - new_h) // 2
    else:
        raise ValueError(f"mode must be 'stretch' or 'letterbox', got {mode!r}")
    scale_x, scale_y = new_w / w, new_h / h
    interp = cv2.INTER_AREA if scale_x <= 1.0 and scale_y <= 1.0 else cv2.INTER_LINEAR
    resized = img if (new_w, new_h) == (w, h) else cv2.resize(img, (new_w, new_h), interpolation=interp)
    if mode == "letterbox":
        out = np.full((out_h, out_w) + img.shape[2:], PAD_VALUE, dtype=img.dtype)
        out[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
        resized = out
    return resized, Resize(scale_x=scale_x, scale_y=scale_y, pad_x=float(pad_x), pad_y=float(pad_y),
                           out_w=out_w, out_h=out_h)


def transform_boxes(boxes: np.ndarray, t: Resize) -> np.ndarray:
    """Map (k, 4) xmin, ymin, xmax, ymax boxes from original to resized pixel coordinates (float32)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([t.scale_x, t.scale_y, t.scale_x, t.scale_y])
    shift = np.array([t.pad_x, t.pad_y, t.pad_x, t.pad_y])
    return (b * scale + shift).astype(np.float32)


def untransform_boxes(boxes: np.ndarray, t: Resize) -> np.ndarray:
    """Inverse of transform_boxes: resized pixel coordinates back to the original image (float32)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([t.scale_x, t.scale_y, t.scale_x, t.scale_y])
    shift = np.array([t.pad_x, t.pad_y, t.pad_x, t.pad_y])
    return ((b - shift) / scale).astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of two (N, 4) xmin, ymin, xmax, ymax arrays (broadcasting); 0 where the union is 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0.0, None) * np.clip(a[..., 3] - a[..., 1], 0.0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0.0, None) * np.clip(b[..., 3] - b[..., 1], 0.0, None)
    union = area_a + area_b - inter
    out = np.zeros(np.broadcast(inter, union).shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out
