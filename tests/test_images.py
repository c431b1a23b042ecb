"""Tests for sprint2.images: decoding (and refusing) images, resizing, box mapping, IoU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sprint2.images import PAD_VALUE, Resize, box_iou, decode_image, resize_image, transform_boxes, untransform_boxes
from sprint2.voc import DataError


def encode(img_bgr: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, img_bgr)
    assert ok
    return buf.tobytes()


@pytest.fixture
def jpeg_bytes() -> bytes:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
    return encode(img, ".jpg")


# -------------------------------------------------------------------------------------------- decoding

def test_decode_jpeg_is_rgb(tmp_path):
    bgr = np.zeros((40, 50, 3), np.uint8)
    bgr[..., 2] = 220  # pure red in BGR order
    path = tmp_path / "red.jpg"
    path.write_bytes(encode(bgr, ".jpg"))
    img = decode_image(path)
    assert img.shape == (40, 50, 3) and img.dtype == np.uint8
    assert img[..., 0].mean() > 200 and img[..., 1].mean() < 20 and img[..., 2].mean() < 20


def test_decode_gray_alpha_and_16_bit(tmp_path):
    gray = np.arange(30 * 20, dtype=np.uint8).reshape(30, 20)
    (tmp_path / "g.png").write_bytes(encode(gray, ".png"))
    img = decode_image(tmp_path / "g.png")
    assert img.shape == (30, 20, 3) and (img == gray[..., None]).all()

    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 7  # blue, nearly transparent
    (tmp_path / "a.png").write_bytes(encode(bgra, ".png"))
    img = decode_image(tmp_path / "a.png")
    assert img.shape == (10, 12, 3) and (img[..., 2] == 200).all() and (img[..., :2] == 0).all()

    deep = np.full((8, 9, 3), 65535, np.uint16)
    deep[0, 0] = (0, 257 * 100, 257 * 3)
    (tmp_path / "d.png").write_bytes(encode(deep, ".png"))
    img = decode_image(tmp_path / "d.png")
    assert img.dtype == np.uint8 and img[1, 1].tolist() == [255, 255, 255] and img[0, 0].tolist() == [3, 100, 0]


def test_decode_tolerates_padding_after_eoi(tmp_path, jpeg_bytes):
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes + b"\x00" * 16)
    assert decode_image(tmp_path / "p.jpg").shape == (60, 80, 3)


@pytest.mark.parametrize("make, reason", [
    (lambda b: None, "image file missing"),
    (lambda b: b"", "empty file"),
    (lambda b: b"hello, I am text wearing a .jpg name\n", "not a decodable image"),
    (lambda b: b[: len(b) // 2], "truncated JPEG"),
    (lambda b: b[:-2], "truncated JPEG"),
    (lambda b: b[:40], "truncated JPEG"),
    (lambda b: b + b"GARBAGE-AFTER-END", "unexpected bytes after the EOI marker"),
])
def test_decode_errors(tmp_path, jpeg_bytes, make, reason):
    path = tmp_path / "bad.jpg"
    data = make(jpeg_bytes)
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(DataError) as info:
        decode_image(path)
    assert info.value.path == path and reason in info.value.reason


def test_decode_truncated_png(tmp_path):
    data = encode(np.full((20, 20, 3), 90, np.uint8), ".png")
    (tmp_path / "t.png").write_bytes(data[:-12])  # IEND chunk cut off
    with pytest.raises(DataError, match="truncated PNG"):
        decode_image(tmp_path / "t.png")


def jpeg_ends_cleanly(data: bytes) -> bool:
    """Independent, naive check: the file ends with EOI (FF D9), ignoring zero padding."""
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def test_raccoon_grayscale_and_truncated(shared_datasets, tmp_path):
    images = sorted((shared_datasets / "raccoon" / "images").glob("*.jpg"))
    assert len(images) == 200
    gray, truncated, failed = [], [], {}
    for path in images:
        data = path.read_bytes()
        if not jpeg_ends_cleanly(data):
            truncated.append(path)
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.ndim == 2:
            gray.append(path)
        try:
            img = decode_image(path)
        except DataError as exc:
            failed[path] = exc.reason
            continue
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
        if raw.ndim == 2:
            assert (img == raw[..., None]).all()
    assert gray, "the raccoon set is known to hold grayscale JPEGs"
    assert not set(gray) & set(failed)
    # Every file the naive tail check flags must be refused, and nothing else may be.
    assert sorted(failed) == truncated
    assert all("truncated JPEG" in reason for reason in failed.values())

    # A real image cut right after its EXIF thumbnail ends in FF D9 too; it must still be refused.
    for path in images:
        data = path.read_bytes()
        first_eoi = data.find(b"\xff\xd9")
        if 0 < first_eoi < len(data) - 2:
            cut = tmp_path / path.name
            cut.write_bytes(data[: first_eoi + 2])
            assert jpeg_ends_cleanly(cut.read_bytes())
            with pytest.raises(DataError, match="truncated JPEG"):
                decode_image(cut)
            break
    else:
        pytest.fail("expected a raccoon JPEG with an embedded thumbnail")


# -------------------------------------------------------------------------------------------- resizing

def rect_image(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    return img


def test_stretch_uses_area_when_shrinking_and_linear_when_growing():
    img = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    small, t = resize_image(img, 48)
    assert np.array_equal(small, cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA))
    assert t == Resize(48 / 120, 48 / 90, 0.0, 0.0, 48, 48)
    big, _ = resize_image(img, (200, 300))  # (height, width)
    assert big.shape == (200, 300, 3)
    assert np.array_equal(big, cv2.resize(img, (300, 200), interpolation=cv2.INTER_LINEAR))


def test_letterbox_keeps_aspect_and_centres():
    img = np.full((50, 100, 3), 200, np.uint8)
    out, t = resize_image(img, 64, mode="letterbox")
    assert out.shape == (64, 64, 3) and t.scale_x == t.scale_y == 0.64
    assert (t.pad_x, t.pad_y) == (0.0, 16.0)
    assert (out[:16] == PAD_VALUE).all() and (out[48:] == PAD_VALUE).all() and (out[16:48] == 200).all()
    with pytest.raises(ValueError):
        resize_image(img, 64, mode="squash")


@pytest.mark.parametrize("shape, box", [((120, 200), (30, 20, 140, 90)), ((64, 48), (5, 10, 40, 33)),
                                        ((300, 90), (10, 150, 80, 290))])
@pytest.mark.parametrize("size", [48, (96, 64), 256])
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_transform_boxes_bound_the_resized_rectangle(shape, box, size, mode):
    out, t = resize_image(rect_image(*shape, box), size, mode=mode)
    ys, xs = np.nonzero(out[..., 0] > 127)  # where the rectangle is after resampling
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    mapped = transform_boxes(np.array([box]), t)[0]
    assert mapped.dtype == np.float32
    assert np.abs(mapped - found).max() <= 1.0, (mapped, found)
    assert np.allclose(untransform_boxes(transform_boxes(np.array([box]), t), t)[0], box, atol=1e-3)


def test_transform_boxes_empty():
    assert transform_boxes(np.zeros((0, 4)), Resize(2, 2, 1, 1, 10, 10)).shape == (0, 4)


def test_box_iou():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [5, 5, 5, 5], [0, 0, 4, 4]], float)
    b = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [3, 3, 4, 4], [5, 5, 5, 5], [1, 1, 3, 3]], float)
    with np.errstate(all="raise"):
        iou = box_iou(a, b)
    assert iou.shape == (5,)
    assert np.allclose(iou, [1.0, 2 / 6, 0.0, 0.0, 4 / 16])
    assert np.allclose(box_iou(a[:1], b), [1.0, 2 / 6, 0.0, 0.0, 1 / 7])  # broadcasting


def test_import_does_not_set_opencv_threads():
    code = ("import cv2; n = cv2.getNumThreads(); import sprint2.images, sprint2.voc, sprint2.synthetic; "
            "import sys; assert cv2.getNumThreads() == n, (n, cv2.getNumThreads()); "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
