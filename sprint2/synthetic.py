"""A deterministic synthetic Pascal VOC dataset: one shape-and-colour "animal" per textured image.

Used when no real data is given (notebooks, `sprint2 report`) and by tests. Each class has its own
shape AND hue, so a small CNN can learn it; backgrounds, noise and unannotated clutter keep it honest.
Files are byte-identical for the same arguments.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from lxml import etree

from sprint2.errors import DataError

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("cat", "dog", "horse", "cow", "sheep", "bird", "elephant", "bear", "zebra", "giraffe")
LAYOUTS: tuple[str, ...] = ("side-by-side", "voc", "folders")
MARKER = ".sprint2-synthetic.json"
JPEG_QUALITY = 92
SIZE_RANGE = (96, 256)        # image width and height are drawn from this range independently
OBJECT_RANGE = (0.25, 0.70)   # object side as a fraction of the shorter image side
QUICK_COUNTS = (48, 16)
FULL_COUNTS = (600, 150)
_SS = 2                       # supersampling factor: draw at 2x, then average 2x2 blocks

# Class -> (RGB colour, shape). Hues are spread round the wheel; zebra and giraffe add a pattern.
_COLOURS: dict[str, tuple[int, int, int]] = {
    "cat": (215, 35, 35), "dog": (245, 135, 20), "horse": (235, 215, 30), "cow": (35, 165, 50),
    "sheep": (30, 200, 215), "bird": (35, 70, 225), "elephant": (135, 50, 205), "bear": (225, 50, 170),
    "zebra": (245, 245, 245), "giraffe": (200, 150, 70),
}


def _star(n: int, inner: float) -> np.ndarray:
    """Unit-box polygon of an n-pointed star (points up)."""
    angles = -np.pi / 2 + np.arange(2 * n) * np.pi / n
    radius = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    """Unit-box polygon of a regular n-gon."""
    angles = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


# Shapes as masks over normalised pixel-centre coordinates u, v in [-1, 1] of the object's box.
_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cat": lambda u, v: u * u + v * v <= 1.0,                                   # disc
    "dog": lambda u, v: np.ones_like(u, dtype=bool),                           # square
    "horse": lambda u, v: np.abs(u) <= (v + 1.0) / 2.0,                        # triangle, apex up
    "cow": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,                          # diamond
    "sheep": lambda u, v: (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34),           # plus sign
    "elephant": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.36),  # ring
    "zebra": lambda u, v: u * u + v * v <= 1.0,                                # striped oval
    "giraffe": lambda u, v: np.ones_like(u, dtype=bool),                       # spotted tall slab
}
_POLYGONS: dict[str, np.ndarray] = {"bird": _star(5, 0.45), "bear": _regular(6, np.pi / 6)}
_ASPECT: dict[str, tuple[float, float]] = {"zebra": (1.5, 1.8), "giraffe": (0.5, 0.62)}  # width / height


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A low-saturation two-colour gradient with faint lines (float32 RGB at the working resolution)."""
    base = rng.uniform(60, 200, size=2)[:, None] + rng.uniform(-22, 22, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = (base[0][None, None, :] * (1 - t[..., None]) + base[1][None, None, :] * t[..., None]).astype(np.float32)
    for _ in range(int(rng.integers(3, 8))):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        shade = float(rng.uniform(-28, 28))
        colour = tuple(float(c) for c in np.clip(img[p0[1], p0[0]] + shade, 0, 255))
        cv2.line(img, p0, p1, colour, int(rng.integers(1, 3)) * _SS, cv2.LINE_AA)
    return img


def _distractors(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw 0-3 small, desaturated blobs and line segments that belong to no class."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(int(rng.integers(0, 4))):
        grey = rng.uniform(40, 215)
        colour = tuple(float(c) for c in np.clip(grey + rng.uniform(-35, 35, size=3), 0, 255))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.6:
            axes = (int(side * rng.uniform(0.03, 0.09)), int(side * rng.uniform(0.03, 0.09)))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            length = side * rng.uniform(0.08, 0.2)
            angle = rng.uniform(0, np.pi)
            end = (int(centre[0] + length * np.cos(angle)), int(centre[1] + length * np.sin(angle)))
            cv2.line(img, centre, end, colour, int(rng.integers(1, 3)) * _SS, cv2.LINE_AA)


def _object_mask(name: str, bw: int, bh: int) -> np.ndarray:
    """Boolean (bh, bw) mask of the class shape filling a bw x bh box."""
    if name in _POLYGONS:
        pts = (_POLYGONS[name] + 1.0) / 2.0 * np.array([bw, bh])
        mask = np.zeros((bh, bw), np.uint8)
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        return mask.astype(bool)
    v, u = np.mgrid[0:bh, 0:bw].astype(np.float64)
    return _SHAPES[name](2 * (u + 0.5) / bw - 1, 2 * (v + 0.5) / bh - 1)


def _object_paint(name: str, rng: np.random.Generator, bw: int, bh: int) -> np.ndarray:
    """(bh, bw, 3) float colour of the object: jittered class colour, plus stripes or spots."""
    colour = np.clip(np.array(_COLOURS[name], np.float32) * rng.uniform(0.88, 1.08) + rng.uniform(-12, 12, 3), 0, 255)
    paint = np.empty((bh, bw, 3), np.float32)
    paint[:] = colour
    if name == "zebra":
        period = max(4, bh // 5)
        rows = (np.arange(bh) // (period // 2)) % 2 == 1
        paint[rows] = (25, 25, 25)
    elif name == "giraffe":
        for _ in range(int(rng.integers(5, 9))):
            c = (int(rng.integers(0, bw)), int(rng.integers(0, bh)))
            r = max(2, int(min(bw, bh) * rng.uniform(0.08, 0.15)))
            cv2.circle(paint, c, r, (105, 60, 20), -1, cv2.LINE_AA)
    shade = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(1.0, 1.12), bh, dtype=np.float32)[:, None, None]
    return np.clip(paint * shade, 0, 255)


def _tight(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel-edge bounding box (x0, y0, x1, y1) of a mask: columns x0..x1-1, rows y0..y1-1."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _snap(mask: np.ndarray, ox: int, oy: int, halves: bool) -> np.ndarray:
    """Pad the mask by one pixel, then grow it by at most one supersampled pixel per side so that
    its box, placed at (ox - 1, oy - 1), ends on whole output pixels and starts on whole pixels
    (halves=False) or half pixels (halves=True); the annotation then is exact."""
    mask = np.pad(mask, 1)
    ox, oy = ox - 1, oy - 1
    x0, y0, x1, y1 = _tight(mask)
    start = 1 if halves else 0
    if (ox + x0) % _SS != start:
        mask[:, x0 - 1] |= mask[:, x0]
    if (oy + y0) % _SS != start:
        mask[y0 - 1, :] |= mask[y0, :]
    if (ox + x1) % _SS:
        mask[:, x1] |= mask[:, x1 - 1]
    if (oy + y1) % _SS:
        mask[y1, :] |= mask[y1 - 1, :]
    return mask


def render(rng: np.random.Generator, name: str, distractors: bool = True,
           float_coords: bool = False) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """One RGB uint8 image holding one object of class name, and its exact box in pixel edges."""
    w = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
    h = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
    W, H = w * _SS, h * _SS
    img = _background(rng, H, W)
    if distractors:
        _distractors(rng, img)
    side = rng.uniform(*OBJECT_RANGE) * min(w, h)
    lo, hi = _ASPECT.get(name, (0.8, 1.25))
    aspect = rng.uniform(lo, hi)
    bw = int(np.clip(side * np.sqrt(aspect), OBJECT_RANGE[0] * min(w, h), OBJECT_RANGE[1] * w))
    bh = int(np.clip(side / np.sqrt(aspect), OBJECT_RANGE[0] * min(w, h), OBJECT_RANGE[1] * h))
    # Top-left corner in supersampled pixels, at least one output pixel away from every border.
    x0 = int(rng.integers(1, w - bw - 1)) * _SS
    y0 = int(rng.integers(1, h - bh - 1)) * _SS
    mask = _snap(_object_mask(name, bw * _SS, bh * _SS), x0, y0, float_coords)
    paint = _object_paint(name, rng, mask.shape[1], mask.shape[0])
    x0, y0 = x0 - 1, y0 - 1  # _snap padded the mask by one pixel on each side
    region = img[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
    region[mask] = paint[mask]
    mx0, my0, mx1, my1 = _tight(mask)
    box = ((x0 + mx0) / _SS, (y0 + my0) / _SS, (x0 + mx1) / _SS, (y0 + my1) / _SS)
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    small += rng.normal(0.0, 6.0, size=small.shape).astype(np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8), box


def _fmt(value: float, as_float: bool) -> str:
    """Coordinate text: '123' normally, '123.5' / '123.0' in images written with float coordinates."""
    return f"{value:.1f}" if as_float else str(int(round(value)))


def annotation_xml(folder: str, filename: str, width: int, height: int, name: str,
                   box: tuple[float, float, float, float], float_coords: bool) -> bytes:
    """Serialise one VOC annotation with a fixed layout (pretty printed, UTF-8, no declaration)."""
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = folder
    etree.SubElement(root, "filename").text = filename
    etree.SubElement(etree.SubElement(root, "source"), "database").text = "sprint2 synthetic"
    size = etree.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        etree.SubElement(size, tag).text = str(value)
    etree.SubElement(root, "segmented").text = "0"
    obj = etree.SubElement(root, "object")
    etree.SubElement(obj, "name").text = name
    etree.SubElement(obj, "pose").text = "Unspecified"
    etree.SubElement(obj, "truncated").text = "0"
    etree.SubElement(obj, "difficult").text = "0"
    bndbox = etree.SubElement(obj, "bndbox")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
        etree.SubElement(bndbox, tag).text = _fmt(value, float_coords)
    return etree.tostring(root, pretty_print=True, encoding="utf-8")


def _encode_jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 0])
    if not ok:
        raise RuntimeError("cv2.imencode failed to write a JPEG")
    return buf.tobytes()


def _targets(out_dir: Path, layout: str, split: str, stem: str) -> tuple[Path, Path, str]:
    """(image path, XML path, <folder> text) of one sample in the chosen layout."""
    if layout == "side-by-side":
        return out_dir / split / f"{stem}.jpg", out_dir / split / f"{stem}.xml", split
    if layout == "voc":
        return out_dir / "JPEGImages" / f"{stem}.jpg", out_dir / "Annotations" / f"{stem}.xml", "JPEGImages"
    return out_dir / "images" / f"{stem}.jpg", out_dir / "annotations" / f"{stem}.xml", "images"


_GENERATED = ("train", "test", "JPEGImages", "Annotations", "ImageSets", "images", "annotations", MARKER)


def _prepare(out_dir: Path) -> None:
    """Make out_dir ready: create it, or clear an earlier generation (recognised by its marker)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).is_file():
            raise DataError(out_dir, "folder is not empty and holds no synthetic dataset; refusing to write into it")
        for name in _GENERATED:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def generate(out_dir: Path | str, train: int = 200, test: int = 50, classes: int = 10, seed: int = 0,
             layout: str = "side-by-side", distractors: bool = True) -> Path:
    """Write a deterministic VOC dataset to out_dir and return it.

    layout "side-by-side": train/ and test/ with each JPEG beside its XML; "voc": Annotations/,
    JPEGImages/, ImageSets/Main/{train,test}.txt; "folders": one pool in images/ + annotations/.
    Every third image has float coordinates. Classes are balanced (round-robin, shuffled by seed).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not 1 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be between 1 and {len(CLASS_NAMES)}, got {classes}")
    if train < 0 or test < 0 or train + test == 0:
        raise ValueError(f"need a positive number of images, got train={train}, test={test}")
    out_dir = Path(out_dir)
    _prepare(out_dir)
    args = {"train": train, "test": test, "classes": classes, "seed": seed, "layout": layout,
            "distractors": distractors, "version": 1}
    names = CLASS_NAMES[:classes]
    split_ids: dict[str, list[str]] = {}
    for split_no, (split, count) in enumerate((("train", train), ("test", test))):
        order = np.random.default_rng([seed, split_no, 0]).permutation(np.arange(count) % classes)
        ids = []
        for i in range(count):
            stem = f"{split}_{i:05d}"
            name = names[int(order[i])]
            float_coords = i % 3 == 2
            img, box = render(np.random.default_rng([seed, split_no, 1, i]), name, distractors, float_coords)
            image_path, xml_path, folder = _targets(out_dir, layout, split, stem)
            image_path.parent.mkdir(parents=True, exist_ok=True)
            xml_path.parent.mkdir(parents=True, exist_ok=True)
            image_path.write_bytes(_encode_jpeg(img))
            xml_path.write_bytes(annotation_xml(folder, image_path.name, img.shape[1], img.shape[0],
                                                name, box, float_coords))
            ids.append(stem)
        split_ids[split] = ids
    if layout == "voc":
        sets = out_dir / "ImageSets" / "Main"
        sets.mkdir(parents=True, exist_ok=True)
        for split, ids in split_ids.items():
            (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    (out_dir / MARKER).write_text(json.dumps(args, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("wrote synthetic dataset %s (%s, train=%d, test=%d, classes=%d, seed=%d)",
                out_dir, layout, train, test, classes, seed)
    return out_dir


def ensure_dataset(root: Path | str, quick: bool = False, seed: int = 0) -> Path:
    """The default dataset: root/"synthetic-quick" (48+16) or root/"synthetic" (600+150), made once.

    Regenerated when its marker shows other arguments; built in a temporary folder and renamed,
    so an interrupted run never leaves a half-written dataset behind.
    """
    root = Path(root)
    train, test = QUICK_COUNTS if quick else FULL_COUNTS
    target = root / ("synthetic-quick" if quick else "synthetic")
    wanted = {"train": train, "test": test, "classes": len(CLASS_NAMES), "seed": seed,
              "layout": "side-by-side", "distractors": True, "version": 1}
    marker = target / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == wanted:
                return target
        except ValueError:
            pass
    elif target.exists():
        raise DataError(target, "exists but is not a synthetic dataset (no marker); move it away")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    generate(tmp, train=train, test=test, classes=len(CLASS_NAMES), seed=seed)
    if target.exists():
        shutil.rmtree(target)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first; keep its copy if it matches
        shutil.rmtree(tmp, ignore_errors=True)
        if not marker.is_file() or json.loads(marker.read_text(encoding="utf-8")) != wanted:
            raise
    return target


# ------------------------------------------------------------------------------------ planted bad files

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>%s</filename><object><name>&lol9;</name>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object></annotation>
"""

# kind -> (planted stem, which file is bad: "xml" or "image")
PLANTED: dict[str, tuple[str, str]] = {
    "malformed XML": ("bad_malformed_xml", "xml"),
    "missing field": ("bad_missing_field", "xml"),
    "non-numeric coordinate": ("bad_non_numeric", "xml"),
    "degenerate box": ("bad_degenerate_box", "xml"),
    "box outside image": ("bad_box_outside", "xml"),
    "truncated JPEG": ("bad_truncated_jpeg", "image"),
    "empty JPEG": ("bad_empty_jpeg", "image"),
    "text file named .jpg": ("bad_text_as_jpeg", "image"),
    "image missing": ("bad_image_missing", "image"),
    "billion laughs": ("bad_billion_laughs", "xml"),
}


def plant_bad_files(src_dir: Path | str, dst_dir: Path | str) -> list[Path]:
    """Copy a flat image+XML folder to dst_dir and add one bad sample per failure kind (see PLANTED).

    Returns the bad paths in PLANTED order: the XML for annotation problems, the image (for
    "image missing", its expected path) for image problems; each raises a DataError naming it.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    xmls = sorted(p for p in src_dir.glob("*.xml") if p.is_file())
    if not xmls or not any(src_dir.glob("*.jpg")):
        raise DataError(src_dir, "expected a flat folder of .jpg images beside their .xml annotations")
    dst_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(src_dir.iterdir()):
        if path.is_file():
            shutil.copyfile(path, dst_dir / path.name)
    template_xml = xmls[0]
    tree = etree.fromstring(template_xml.read_bytes())
    image_name = tree.findtext("filename") or template_xml.stem + ".jpg"
    image_bytes = (src_dir / image_name).read_bytes()
    width = int(tree.findtext("size/width"))

    def xml_with(stem: str, edit: Callable[[etree._Element], None] | None = None) -> bytes:
        root = etree.fromstring(template_xml.read_bytes())
        root.find("filename").text = f"{stem}.jpg"
        if edit is not None:
            edit(root)
        return etree.tostring(root, pretty_print=True, encoding="utf-8")

    def set_field(field: str, value: str | None) -> Callable[[etree._Element], None]:
        def edit(root: etree._Element) -> None:
            elem = root.find(f"object/bndbox/{field}")
            if value is None:
                elem.getparent().remove(elem)
            else:
                elem.text = value
        return edit

    def degenerate(root: etree._Element) -> None:
        root.find("object/bndbox/xmax").text = root.find("object/bndbox/xmin").text

    bad: list[Path] = []
    for kind, (stem, which) in PLANTED.items():
        xml_path, img_path = dst_dir / f"{stem}.xml", dst_dir / f"{stem}.jpg"
        xml, img = xml_with(stem), image_bytes
        if kind == "malformed XML":
            xml = xml[: len(xml) // 2]
        elif kind == "missing field":
            xml = xml_with(stem, set_field("xmax", None))
        elif kind == "non-numeric coordinate":
            xml = xml_with(stem, set_field("xmin", "twelve"))
        elif kind == "degenerate box":
            xml = xml_with(stem, degenerate)
        elif kind == "box outside image":
            xml = xml_with(stem, set_field("xmax", str(width + 40)))
        elif kind == "truncated JPEG":
            img = image_bytes[: len(image_bytes) // 2]
        elif kind == "empty JPEG":
            img = b""
        elif kind == "text file named .jpg":
            img = b"this is not an image, just text with a .jpg name\n"
        elif kind == "image missing":
            img = None
        elif kind == "billion laughs":
            xml = BILLION_LAUGHS.replace(b"%s", f"{stem}.jpg".encode())
        xml_path.write_bytes(xml)
        if img is not None:
            img_path.write_bytes(img)
        bad.append(xml_path if which == "xml" else img_path)
    return bad
