"""Tests for sprint2.images: decoding (and refusing) images, resizing, box mapping, IoU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sprint2.images import (
    PAD_VALUE,
    Resize,
    box_iou,
    decode_image,
    decode_jpeg_scaled,
    decode_resized,
    reduction_factor,
    resize_image,
    scan_jpeg,
    transform_boxes,
    untransform_boxes,
)
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
    assert (
        img.dtype == np.uint8 and img[1, 1].tolist() == [255, 255, 255] and img[0, 0].tolist() == [3, 100, 0]
    )


def test_decode_tolerates_padding_after_eoi(tmp_path, jpeg_bytes):
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes + b"\x00" * 16)
    assert decode_image(tmp_path / "p.jpg").shape == (60, 80, 3)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda b: None, "image file missing"),
        (lambda b: b"", "empty file"),
        (lambda b: b"hello, I am text wearing a .jpg name\n", "not a decodable image"),
        (lambda b: b[: len(b) // 2], "truncated JPEG"),
        (lambda b: b[:-2], "truncated JPEG"),
        (lambda b: b[:40], "truncated JPEG"),
        (lambda b: b + b"GARBAGE-AFTER-END", "unexpected bytes after the EOI marker"),
    ],
)
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


@pytest.mark.parametrize(
    "shape, size",
    [
        ((90, 120, 3), 48),
        ((90, 120, 3), (50, 37)),
        ((240, 320, 3), 128),
        ((240, 320, 3), (100, 37)),
        ((240, 320, 3), (120, 160)),
        ((193, 261, 3), 128),
        ((193, 261, 3), (97, 128)),
        ((240, 320), 128),
        ((240, 320), (120, 160)),
        ((64, 80, 4), 48),
        ((64, 80, 4), (32, 40)),
    ],
)
def test_shrinking_gives_exactly_opencvs_uint8_area_result(shape, size):
    """resize_image may take a faster route to INTER_AREA, but never different pixels."""
    img = cv2.GaussianBlur(np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8), (0, 0), 1.5)
    out, _ = resize_image(img, size)
    h, w = (size, size) if isinstance(size, int) else size
    expected = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)


def test_letterbox_keeps_aspect_and_centres():
    img = np.full((50, 100, 3), 200, np.uint8)
    out, t = resize_image(img, 64, mode="letterbox")
    assert out.shape == (64, 64, 3) and t.scale_x == t.scale_y == 0.64
    assert (t.pad_x, t.pad_y) == (0.0, 16.0)
    assert (out[:16] == PAD_VALUE).all() and (out[48:] == PAD_VALUE).all() and (out[16:48] == 200).all()
    with pytest.raises(ValueError):
        resize_image(img, 64, mode="squash")


@pytest.mark.parametrize(
    "shape, box",
    [((120, 200), (30, 20, 140, 90)), ((64, 48), (5, 10, 40, 33)), ((300, 90), (10, 150, 80, 290))],
)
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


# ------------------------------------------------------------------------------- reduced JPEG decoding


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth but non-trivial BGR image (gradients plus blurred noise), like a photo at JPEG quality."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1)
    return ((noise.astype(np.int32) + ramp) // 2).astype(np.uint8)


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 Exif segment (little-endian TIFF, one IFD entry: Orientation) after SOI."""
    tiff = b"II*\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little")
    tiff += (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")
    tiff += orientation.to_bytes(2, "little") + b"\x00\x00" + (0).to_bytes(4, "little")
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


@pytest.mark.parametrize(
    "w, h, size, mode, factor",
    [
        (640, 480, 128, "stretch", 2),  # bccd: 480 / 4 = 120 < 128
        (640, 480, 128, "letterbox", 4),  # letterbox content is 128 x 96
        (1024, 768, 128, "stretch", 4),
        (2048, 2048, 128, "stretch", 8),
        (2048, 2048, 300, "stretch", 4),
        (255, 300, 128, "stretch", 1),  # floor(255 / 2) = 127 < 128: no upscaling, ever
        (256, 256, 128, "stretch", 2),
        (640, 480, (64, 320), "stretch", 2),  # (height, width): 640 / 4 = 160 < 320
        (100, 80, 128, "stretch", 1),
    ],
)
def test_reduction_factor_is_the_largest_that_still_covers_the_target(w, h, size, mode, factor):
    assert reduction_factor(w, h, size, mode) == factor


@pytest.mark.parametrize(
    "w, h, size, mode, factor",
    [
        (512, 384, 64, "stretch", 4),
        (640, 480, 128, "stretch", 2),
        (640, 480, 128, "letterbox", 4),
        (1024, 512, (48, 96), "stretch", 8),
    ],
)
def test_reduced_decode_matches_full_decode_when_the_factor_divides_the_size(
    tmp_path, w, h, size, mode, factor
):
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(textured(h, w), ".jpg"))
    assert reduction_factor(w, h, size, mode) == factor
    full, full_how = resize_image(decode_image(path), size, mode)
    img, how, real = decode_resized(path, size, mode)
    assert real == (w, h) and img.shape == full.shape and img.dtype == np.uint8
    assert how == full_how  # the same mapping from original pixels, so exactly the same boxes
    boxes = np.array([[0, 0, w, h], [10.5, 20.25, w / 2, h - 3]])
    np.testing.assert_array_equal(transform_boxes(boxes, how), transform_boxes(boxes, full_how))
    assert np.abs(img.astype(int) - full).mean() < 2.0
    unreduced, how1, _ = decode_resized(path, size, mode, reduce=False)
    assert np.array_equal(unreduced, full) and how1 == full_how


def test_reduced_decode_of_an_odd_size_maps_boxes_onto_the_decoded_pixels(tmp_path):
    w, h = 501, 377  # 1/2 decode: ceil -> 251 x 189, whose last row and column are half padding
    path = tmp_path / "odd.jpg"
    bgr = textured(h, w, seed=3)
    bgr[100:300, 50:400] = (0, 0, 255)  # a red block with known corners
    path.write_bytes(encode(bgr, ".jpg"))
    img, how, real = decode_resized(path, 128)
    assert real == (w, h) and reduction_factor(w, h, 128) == 2
    assert how.scale_x == 128 / (2 * 251) and how.scale_y == 128 / (2 * 189)
    full, full_how = resize_image(decode_image(path), 128)
    mapped = transform_boxes(np.array([[50, 100, 400, 300]]), how)[0]
    assert np.abs(mapped - transform_boxes(np.array([[50, 100, 400, 300]]), full_how)[0]).max() < 0.5
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    ys, xs = np.nonzero(red)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert np.abs(mapped - found).max() <= 1.0, (mapped, found)
    assert np.abs(img.astype(int) - full).mean() < 3.0


def test_reduced_decode_keeps_grayscale_and_ignores_exif_rotation(tmp_path):
    # Square, so a rotated decode would have the expected size and only the pixels could tell.
    gray = cv2.cvtColor(textured(512, 512, seed=1), cv2.COLOR_BGR2GRAY)
    path = tmp_path / "gray.jpg"
    path.write_bytes(with_exif_orientation(encode(gray, ".jpg"), 6))  # 6: "rotate 90 degrees to view"
    assert scan_jpeg(path.read_bytes()) == (None, (512, 512))  # frame header found past the EXIF segment
    assert reduction_factor(512, 512, 64) == 8
    img, how, real = decode_resized(path, 64)
    assert real == (512, 512) and img.shape == (64, 64, 3)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    full, full_how = resize_image(decode_image(path), 64)
    assert how == full_how and np.abs(img.astype(int) - full).mean() < 2.0
    assert np.abs(np.rot90(img, -1).astype(int) - full).mean() > 10  # the rotated view really differs


def test_non_jpeg_and_deep_images_decode_at_full_size(tmp_path):
    deep = textured(300, 400, seed=2).astype(np.uint16) * 257
    bgra = np.dstack([textured(300, 400, seed=4), np.full((300, 400), 9, np.uint8)])
    for name, pixels in (("deep.png", deep), ("alpha.png", bgra), ("big.png", textured(600, 800))):
        path = tmp_path / name
        path.write_bytes(encode(pixels, ".png"))
        for mode in ("stretch", "letterbox"):
            img, how, real = decode_resized(path, 64, mode)
            full, full_how = resize_image(decode_image(path), 64, mode)
            assert real == (pixels.shape[1], pixels.shape[0]) and how == full_how
            assert np.array_equal(img, full), (name, mode)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda b: b[: len(b) // 2], "truncated JPEG"),
        (lambda b: b + b"GARBAGE-AFTER-END", "unexpected bytes after the EOI marker"),
        (lambda b: b"", "empty file"),
    ],
)
def test_reduced_decode_refuses_what_decode_image_refuses(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(make(encode(textured(480, 640), ".jpg")))
    with pytest.raises(DataError) as info:
        decode_resized(path, 64)
    assert info.value.path == path and reason in info.value.reason


def test_reduced_decode_on_the_real_datasets(shared_datasets):
    """Every good raccoon and bccd image: the real size is known, geometry equal, boxes and pixels close."""
    paths = sorted((shared_datasets / "raccoon" / "images").glob("*.jpg"))[::4]
    paths += sorted((shared_datasets / "bccd" / "JPEGImages").glob("*.jpg"))[::20]
    reduced = 0
    for path in paths:
        try:
            image = decode_image(path)
        except DataError:
            continue
        full, full_how = resize_image(image, 128)
        img, how, real = decode_resized(path, 128)
        n = reduction_factor(*real, 128)
        reduced += n > 1
        assert real == (image.shape[1], image.shape[0]) and img.shape == full.shape
        box = np.array([[0, 0, real[0], real[1]]])
        tol = (n - 1) * max(full_how.scale_x, full_how.scale_y) + 1e-4
        np.testing.assert_allclose(
            transform_boxes(box, how), transform_boxes(box, full_how), atol=tol, rtol=0
        )
        assert np.abs(img.astype(int) - full).mean() < 8.0, path.name
    assert reduced > len(paths) // 2


def test_import_does_not_set_opencv_threads():
    code = (
        "import cv2; n = cv2.getNumThreads(); import sprint2.images, sprint2.voc, sprint2.synthetic; "
        "import sys; assert cv2.getNumThreads() == n, (n, cv2.getNumThreads()); "
        "assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_scan_jpeg_names_what_is_wrong(jpeg_bytes):
    assert scan_jpeg(jpeg_bytes) == (None, (80, 60))
    assert scan_jpeg(b"\x89PNG\r\n\x1a\n")[0].startswith("not a JPEG")
    assert scan_jpeg(jpeg_bytes[:-2])[0].startswith("truncated JPEG")
    assert scan_jpeg(jpeg_bytes + b"tail")[0] == "corrupt JPEG (4 unexpected bytes after the EOI marker)"
    assert scan_jpeg(jpeg_bytes[:30]) == ("truncated JPEG (stream ends inside a segment)", None)


def test_simplejpeg_and_opencv_paths_give_identical_results(tmp_path, shared_datasets_or_none):
    files = []
    for name, pixels in (
        ("odd.jpg", textured(333, 517, seed=5)),
        ("small.jpg", textured(40, 50, seed=6)),
        ("gray.jpg", cv2.cvtColor(textured(480, 640, seed=7), cv2.COLOR_BGR2GRAY)),
    ):
        files.append(tmp_path / name)
        files[-1].write_bytes(encode(pixels, ".jpg"))
    files.append(tmp_path / "exif.jpg")
    files[-1].write_bytes(with_exif_orientation(encode(textured(256, 256, seed=8), ".jpg"), 6))
    if shared_datasets_or_none is not None:  # every 10th real image too, when ../shared is there
        files += sorted((shared_datasets_or_none / "raccoon" / "images").glob("*.jpg"))[::10]
        files += sorted((shared_datasets_or_none / "bccd" / "JPEGImages").glob("*.jpg"))[::10]
    cases = [
        (f, size, mode)
        for f in files
        for size, mode in ((128, "stretch"), (64, "letterbox"), (300, "stretch"))
    ]
    for f, size, mode in cases:
        data = f.read_bytes()
        problem, frame = scan_jpeg(data)
        assert problem is None and frame is not None, f.name
        factor = reduction_factor(*frame, size, mode)
        assert decode_jpeg_scaled(data, frame, factor) is not None, (f.name, factor)  # simplejpeg takes it
        img, how, real = decode_resized(f, size, mode)
        ref_img, ref_how, ref_real = decode_resized(f, size, mode, prefer_simplejpeg=False)
        assert (how, real) == (ref_how, ref_real), f.name
        assert np.array_equal(img, ref_img), (f.name, size, mode)


def test_simplejpeg_refusals_fall_back_to_opencv(tmp_path):
    data = encode(textured(480, 640), ".jpg")
    assert decode_jpeg_scaled(data, (640, 480), 2).shape == (240, 320, 3)
    cut = tmp_path / "cut.jpg"  # entropy data cut short but closed with EOI: libjpeg only warns
    cut.write_bytes(data[:2000] + b"\xff\xd9")
    assert decode_jpeg_scaled(cut.read_bytes(), (640, 480), 2, cut) is None  # strict: refused
    img, how, real = decode_resized(cut, 64)  # ... so OpenCV decides, as it does without simplejpeg
    ref_img, ref_how, ref_real = decode_resized(cut, 64, prefer_simplejpeg=False)
    assert (how, real) == (ref_how, ref_real) and np.array_equal(img, ref_img)
