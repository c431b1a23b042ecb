"""Image decoding and resizing with OpenCV, plus the box arithmetic that goes with a resize.

decode_image() reads the bytes itself and checks that JPEG and PNG files are complete, because
OpenCV decodes a truncated JPEG with only a warning on stderr and grey pixels where data is missing.
decode_resized() does the same checks, then decodes a large JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's
DCT scaling, several times cheaper) when that still covers the target, and resizes. JPEGs go through
simplejpeg first: libjpeg-turbo decodes straight to RGB (no BGR conversion pass) with the GIL
released, so loading threads decode in parallel, and its pixels equal OpenCV's decode. OpenCV decodes
whatever simplejpeg refuses, so a file loads or fails exactly as it would with OpenCV alone.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from sprint2.errors import DataError

logger = logging.getLogger(__name__)

PAD_VALUE = 114  # constant grey used by letterbox padding
_JPEG_PADDING = b"\x00\xff \t\r\n"
_MARKER_RE = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # a marker inside entropy-coded data (not stuffing/RST)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic coded).
_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
#: libjpeg DCT-domain scaling: decode at 1/N of the size for a fraction of the work. IGNORE_ORIENTATION
#: keeps the pixels as stored, like IMREAD_UNCHANGED does (VOC boxes are drawn on the stored grid).
_REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}


def scan_jpeg(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """(why the JPEG stream is incomplete or None, (width, height) from its frame header or None).

    Walks the marker segments (so an EXIF thumbnail's EOI and frame header are skipped) and scans
    entropy-coded data; the frame size is free on the way and lets the caller pick a reduced decode.
    """
    if data[:2] != b"\xff\xd8":
        return "not a JPEG (no start-of-image marker FF D8)", None
    pos, n = 2, len(data)
    frame: tuple[int, int] | None = None
    while True:
        if pos + 2 > n:
            return "truncated JPEG (stream ends before the EOI marker FF D9)", frame
        if data[pos] != 0xFF:
            return f"corrupt JPEG (expected a marker at byte {pos})", frame
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            tail = data[pos + 2 :]
            if tail.strip(_JPEG_PADDING):
                return f"corrupt JPEG ({len(tail)} unexpected bytes after the EOI marker)", frame
            return None, frame
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        if pos + 4 > n:
            return "truncated JPEG (stream ends inside a segment header)", frame
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF_MARKERS and frame is None and pos + 9 <= n:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            if width and height:  # height 0 means a later DNL marker gives it: leave the size unknown
                frame = (width, height)
        pos += 2 + length
        if pos > n:
            return "truncated JPEG (stream ends inside a segment)", frame
        if marker == 0xDA:  # SOS: entropy-coded data runs until the next real marker
            match = _MARKER_RE.search(data, pos)
            if match is None:
                return "truncated JPEG (stream ends inside the image data, no EOI marker FF D9)", frame
            pos = match.start()


def _png_problem(data: bytes) -> str | None:
    """Why a PNG is incomplete (None when its chunks run through IEND)."""
    pos, n = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= n:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        pos += 12 + length
        if pos > n:
            break
        if kind == b"IEND":
            return None
    return "truncated PNG (no IEND chunk)"


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """8-bit pixels from whatever depth imdecode returned (16-bit rounded, float in [0, 1] scaled)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype.kind == "f":
        return np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise DataError(path, f"unsupported pixel type {img.dtype}")


def _to_rgb_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """Convert whatever imdecode returned (gray, BGR, BGRA; 8/16-bit or float) to RGB uint8."""
    img = _to_uint8(img, path)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise DataError(path, f"unsupported image shape {img.shape}")


def _read_checked(path: Path) -> tuple[bytes, tuple[int, int] | None]:
    """The file's bytes (refused when missing, empty or an incomplete JPEG/PNG) and a JPEG's (w, h)."""
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
    frame = None
    if data[:3] == b"\xff\xd8\xff":
        problem, frame = scan_jpeg(data)
    elif data[:8] == _PNG_SIGNATURE:
        problem = _png_problem(data)
    else:
        problem = None
    if problem:
        raise DataError(path, problem)
    return data, frame


def _imdecode(data: bytes, flags: int, path: Path) -> np.ndarray:
    """cv2.imdecode with its failures turned into DataError."""
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise DataError(path, f"not a decodable image ({exc.err})") from None
    if img is None or img.size == 0:
        raise DataError(path, "not a decodable image")
    return img


def _scaled_shape(frame: tuple[int, int], factor: int) -> tuple[int, int]:
    """(height, width) libjpeg gives a (width, height) frame decoded at 1/factor: each side rounded up."""
    width, height = frame
    return -(-height // factor), -(-width // factor)


def decode_jpeg_scaled(
    data: bytes, frame: tuple[int, int], factor: int, path: Path | None = None
) -> np.ndarray | None:
    """A JPEG decoded by simplejpeg at 1/factor scale to RGB uint8, or None when simplejpeg refuses it.

    ``frame`` is the JPEG's (width, height), as scan_jpeg() reads it; ``path`` only names the file in
    the debug log. The minimum output size ceil(side / factor) makes libjpeg-turbo pick exactly the
    1/factor scaling (its factors are multiples of 1/8). strict=True turns libjpeg's warnings about
    corrupt data into a refusal, so such files take the OpenCV path and fail or load as OpenCV decides.
    """
    height, width = _scaled_shape(frame, factor)
    try:
        img = simplejpeg.decode_jpeg(data, colorspace="rgb", min_height=height, min_width=width, strict=True)
    except ValueError as exc:
        logger.debug("%s: simplejpeg refused it (%s); decoding with OpenCV", path, exc)
        return None
    if img.shape != (height, width, 3):
        logger.debug("%s: simplejpeg gave %s at 1/%d; decoding with OpenCV", path, img.shape, factor)
        return None
    return img


def decode_image(path: Path | str) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); DataError for missing, empty, truncated or non-images.

    Pixels are taken as stored (no EXIF rotation), which is the grid VOC boxes are drawn on.
    """
    path = Path(path)
    data, _ = _read_checked(path)
    return np.ascontiguousarray(_to_rgb_uint8(_imdecode(data, cv2.IMREAD_UNCHANGED, path), path))


@dataclass(frozen=True)
class Resize:
    """How a resize maps original pixels: x' = x * scale_x + pad_x, y' = y * scale_y + pad_y."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    out_w: int
    out_h: int


def target_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int (square) or an (height, width) pair."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"resize target must be positive, got {size!r}")
    return h, w


@dataclass(frozen=True)
class _Plan:
    """Where a resize puts an image of the original size: content size, padding, output size."""

    new_w: int
    new_h: int
    pad_x: int
    pad_y: int
    out_w: int
    out_h: int


def _plan(w: int, h: int, size: int | tuple[int, int], mode: str) -> _Plan:
    """The output geometry for a w x h image: "stretch" fills the target, "letterbox" keeps the aspect."""
    out_h, out_w = target_size(size)
    if mode == "stretch":
        return _Plan(out_w, out_h, 0, 0, out_w, out_h)
    if mode == "letterbox":
        scale = min(out_w / w, out_h / h)
        new_w = min(out_w, max(1, round(w * scale)))
        new_h = min(out_h, max(1, round(h * scale)))
        return _Plan(new_w, new_h, (out_w - new_w) // 2, (out_h - new_h) // 2, out_w, out_h)
    raise ValueError(f"mode must be 'stretch' or 'letterbox', got {mode!r}")


def _shrink(img: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """cv2.resize with INTER_AREA, the same pixels, faster for uint8 at non-integer ratios.

    OpenCV's generic area resampling accumulates in float32 and rounds at the end; run on a float32
    copy it gives the identical uint8 result (checked in the tests) in about 3/4 of the time. Integer
    ratios keep the uint8 call, which has its own much faster (and differently rounded) code path.
    """
    h, w = img.shape[:2]
    if img.dtype != np.uint8 or (w % new_w == 0 and h % new_h == 0):
        return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = cv2.resize(img.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    return np.rint(out, out=out).astype(np.uint8)  # a weighted mean of uint8 values: no clipping needed


def _apply(img: np.ndarray, plan: _Plan) -> np.ndarray:
    """Resize img to the plan's content size (INTER_AREA shrinking, INTER_LINEAR growing) and pad it."""
    h, w = img.shape[:2]
    if (plan.new_w, plan.new_h) == (w, h):
        resized = img
    elif plan.new_w <= w and plan.new_h <= h:
        resized = _shrink(img, plan.new_w, plan.new_h)
    else:
        resized = cv2.resize(img, (plan.new_w, plan.new_h), interpolation=cv2.INTER_LINEAR)
    if (plan.new_w, plan.new_h) == (plan.out_w, plan.out_h):
        return resized
    out = np.full((plan.out_h, plan.out_w) + img.shape[2:], PAD_VALUE, dtype=img.dtype)
    out[plan.pad_y : plan.pad_y + plan.new_h, plan.pad_x : plan.pad_x + plan.new_w] = resized
    return out


def resize_image(
    img: np.ndarray, size: int | tuple[int, int], mode: str = "stretch"
) -> tuple[np.ndarray, Resize]:
    """Resize to size (int, or (height, width)) by "stretch" or "letterbox" (keep aspect, grey padding).

    Shrinking uses INTER_AREA, growing INTER_LINEAR. Returns the image and the box mapping.
    """
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected a non-empty (H, W[, C]) image, got shape {img.shape}")
    h, w = img.shape[:2]
    plan = _plan(w, h, size, mode)
    return _apply(img, plan), Resize(
        scale_x=plan.new_w / w,
        scale_y=plan.new_h / h,
        pad_x=float(plan.pad_x),
        pad_y=float(plan.pad_y),
        out_w=plan.out_w,
        out_h=plan.out_h,
    )


def reduction_factor(width: int, height: int, size: int | tuple[int, int], mode: str = "stretch") -> int:
    """The largest N in 8, 4, 2, 1 such that a 1/N decode still covers the resized content (never upscales).

    For "stretch" that is the target size in both dimensions; for "letterbox" the content size inside
    the padding. Uses floor(width / N), so even a partly covered last decoded pixel is not counted.
    """
    plan = _plan(width, height, size, mode)
    for n in (8, 4, 2):
        if width // n >= plan.new_w and height // n >= plan.new_h:
            return n
    return 1


def decode_resized(
    path: Path | str,
    size: int | tuple[int, int],
    mode: str = "stretch",
    reduce: bool = True,
    prefer_simplejpeg: bool = True,
) -> tuple[np.ndarray, Resize, tuple[int, int]]:
    """Decode and resize in one step: (RGB uint8 image, mapping from ORIGINAL pixels, original (w, h)).

    A JPEG much larger than the target is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (reduction_factor,
    reduce=False turns it off); its real size comes from the frame header, so boxes are checked against
    the full image. prefer_simplejpeg=False decodes with OpenCV alone (the same pixels; see the module
    docstring). Pixel j of a 1/N decode covers original pixels [N*j, N*j + N), hence the mapping's
    scale is content_size / (N * decoded_size): exactly the full decode's content_size / original_size
    when N divides the original size, and within (N - 1) / original_size (relative) of it otherwise.
    The output geometry (content size, padding) is planned on the original size, so it never differs.
    """
    path = path if isinstance(path, Path) else Path(path)
    data, frame = _read_checked(path)
    factor = 1
    if reduce and frame is not None:
        factor = reduction_factor(frame[0], frame[1], size, mode)
    img = decode_jpeg_scaled(data, frame, factor, path) if frame is not None and prefer_simplejpeg else None
    rgb = img is not None
    if img is None and factor > 1:
        img = _imdecode(data, _REDUCED_FLAGS[factor], path)
        expected = _scaled_shape(frame, factor)
        if img.shape[:2] != expected or img.dtype != np.uint8:
            logger.debug(
                "%s: reduced decode gave %s, expected %s; decoding at full size", path, img.shape, expected
            )
            img, factor = None, 1
    if img is None:
        img = _imdecode(data, cv2.IMREAD_UNCHANGED, path)
        img = _to_uint8(img, path)  # 16-bit or float: to 8 bits first, so the resize sees uint8 as before
    dh, dw = img.shape[:2]
    width, height = frame if factor > 1 else (dw, dh)  # a full decode's own size is the truth
    plan = _plan(width, height, size, mode)
    # Resizing acts on each channel alone, so converting to RGB after it (on the small image) is the same.
    out = _apply(img, plan)
    out = np.ascontiguousarray(out if rgb else _to_rgb_uint8(out, path))
    how = Resize(
        scale_x=plan.new_w / (factor * dw),
        scale_y=plan.new_h / (factor * dh),
        pad_x=float(plan.pad_x),
        pad_y=float(plan.pad_y),
        out_w=plan.out_w,
        out_h=plan.out_h,
    )
    return out, how, (width, height)


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
