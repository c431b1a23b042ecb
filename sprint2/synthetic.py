"""A deterministic synthetic Pascal VOC dataset: shape-and-colour "animals" on textured images.

Used when no real data is given (notebooks, `sprint2 report`) and by tests. Each class has its own
shape AND hue, so a small CNN can learn it; backgrounds, noise and unannotated clutter keep it honest.
By default an image holds 1 to 4 objects of varied sizes that may overlap partially (the rules are
beside MAX_IOU below); ``objects=1`` gives one larger object per image, the original dataset, byte
for byte. Files are byte-identical for the same arguments.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from lxml import etree

from sprint2.errors import DataError

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "cat",
    "dog",
    "horse",
    "cow",
    "sheep",
    "bird",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
)
LAYOUTS: tuple[str, ...] = ("side-by-side", "voc", "folders")
MARKER = ".sprint2-synthetic.json"
MARKER_VERSION = 2  # 1: one object per image, no object settings in the marker
JPEG_QUALITY = 92
SIZE_RANGE = (96, 256)  # image width and height are drawn from this range independently
OBJECT_COUNTS = (1, 4)  # default objects per image, an inclusive range drawn uniformly
MAX_OBJECTS = 8
# Object side as a fraction of the shorter image side, drawn uniformly: one object per image keeps
# the original range; several objects get smaller ones too, and a ceiling that leaves room for four.
OBJECT_RANGE = (0.25, 0.70)
MULTI_OBJECT_RANGE = (0.10, 0.50)
QUICK_COUNTS = (48, 16)
FULL_COUNTS = (600, 150)
_SS = 2  # supersampling factor: draw at 2x, then average 2x2 blocks

# Overlap rules, checked on every placement; objects are painted in order, later ones on top.
# - No object loses more than MAX_HIDDEN of its own pixels to objects painted after it.
# - Any two annotated boxes have IoU <= MAX_IOU, and their intersection covers at most MAX_INSIDE
#   of the smaller box (so no object sits mostly inside another's box).
# An object is tried at PLACE_ATTEMPTS random positions, shrunk by SHRINK every SHRINK_EVERY
# attempts (never below the size range); when none fits it is left out of the image (the first
# object always fits). Every placed object is at least 75% visible and recognisable, so none is
# marked difficult.
# Boxes are the tight extent of the visible pixels, as the VOC guidelines ask, rounded outwards to
# pixel edges (in float-coordinate images a box starts on a half pixel); an uncovered object's box
# is exact. An object whose visible box is smaller than its full extent (a later object covers one
# of its edges) is marked truncated, VOC's flag for "the box is not the object's full extent".
MAX_HIDDEN = 0.25
MAX_IOU = 0.30
MAX_INSIDE = 0.50
PLACE_ATTEMPTS = 40
SHRINK_EVERY = 10
SHRINK = 0.8

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in supersampled pixel edges

# Class -> (RGB colour, shape). Hues are spread round the wheel; zebra and giraffe add a pattern.
_COLOURS: dict[str, tuple[int, int, int]] = {
    "cat": (215, 35, 35),
    "dog": (245, 135, 20),
    "horse": (235, 215, 30),
    "cow": (35, 165, 50),
    "sheep": (30, 200, 215),
    "bird": (35, 70, 225),
    "elephant": (135, 50, 205),
    "bear": (225, 50, 170),
    "zebra": (245, 245, 245),
    "giraffe": (200, 150, 70),
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
    "cat": lambda u, v: u * u + v * v <= 1.0,  # disc
    "dog": lambda u, v: np.ones_like(u, dtype=bool),  # square
    "horse": lambda u, v: np.abs(u) <= (v + 1.0) / 2.0,  # triangle, apex up
    "cow": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,  # diamond
    "sheep": lambda u, v: (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34),  # plus sign
    "elephant": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.36),  # ring
    "zebra": lambda u, v: u * u + v * v <= 1.0,  # striped oval
    "giraffe": lambda u, v: np.ones_like(u, dtype=bool),  # spotted tall slab
}
_POLYGONS: dict[str, np.ndarray] = {"bird": _star(5, 0.45), "bear": _regular(6, np.pi / 6)}
_ASPECT: dict[str, tuple[float, float]] = {"zebra": (1.5, 1.8), "giraffe": (0.5, 0.62)}  # width / height


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A low-saturation two-colour gradient with faint lines (float32 RGB at the working resolution)."""
    base = rng.uniform(60, 200, size=2)[:, None] + rng.uniform(-22, 22, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.cos(angle) * xx / w + np.sin(angle) * yy / h
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = (base[0][None, None, :] * (1 - t[..., None]) + base[1][None, None, :] * t[..., None]).astype(
        np.float32
    )
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
    colour = np.clip(
        np.array(_COLOURS[name], np.float32) * rng.uniform(0.88, 1.08) + rng.uniform(-12, 12, 3), 0, 255
    )
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


@dataclass(frozen=True)
class SceneObject:
    """One painted object: its class, annotated box (pixel edges), VOC truncated flag, visible share."""

    name: str
    box: tuple[float, float, float, float]
    truncated: bool = False
    visible: float = 1.0  # fraction of the object's own pixels not covered by later objects


def _overlap_ok(a: Box, b: Box) -> bool:
    """The box rule: IoU <= MAX_IOU and the intersection covers at most MAX_INSIDE of the smaller box."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return True
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter <= MAX_IOU * (area_a + area_b - inter) and inter <= MAX_INSIDE * min(area_a, area_b)


class _Scene:
    """The objects placed so far at the working resolution: which object owns each pixel, and each
    object's full box, pixel count, visible pixel count and annotated (visible) box."""

    def __init__(self, height: int, width: int, halves: bool) -> None:
        self.owner = np.full((height, width), -1, np.int8)
        self.halves = halves
        self.full: list[Box] = []
        self.area: list[int] = []
        self.visible: list[int] = []
        self.boxes: list[Box] = []

    def _visible_box(self, owner: np.ndarray, k: int) -> Box:
        """Tight box of object k's visible pixels, rounded outwards to the output pixel grid."""
        x0, y0, x1, y1 = self.full[k]
        vx0, vy0, vx1, vy1 = _tight(owner[y0:y1, x0:x1] == k)
        start = 1 if self.halves else 0
        vx0, vy0 = x0 + vx0, y0 + vy0
        vx0 -= (vx0 - start) % _SS
        vy0 -= (vy0 - start) % _SS
        vx1, vy1 = x0 + vx1, y0 + vy1
        return vx0, vy0, vx1 + (-vx1) % _SS, vy1 + (-vy1) % _SS

    def add(self, mask: np.ndarray, ox: int, oy: int) -> bool:
        """Paint mask on top at (ox, oy) if every overlap rule holds afterwards; False leaves it out."""
        k = len(self.full)
        mh, mw = mask.shape
        under = self.owner[oy : oy + mh, ox : ox + mw][mask]
        hidden = np.bincount(under[under >= 0].astype(np.intp), minlength=k)
        if any(self.visible[j] - hidden[j] < (1 - MAX_HIDDEN) * self.area[j] for j in range(k)):
            return False
        mx0, my0, mx1, my1 = _tight(mask)
        full = (ox + mx0, oy + my0, ox + mx1, oy + my1)
        if not all(_overlap_ok(full, self.boxes[j]) for j in range(k) if not hidden[j]):
            return False
        changed = [j for j in range(k) if hidden[j]]
        owner, boxes = self.owner, list(self.boxes)
        if changed:  # covered objects get smaller visible boxes: check every pair they are in
            owner = owner.copy()
            owner[oy : oy + mh, ox : ox + mw][mask] = k
            for j in changed:
                boxes[j] = self._visible_box(owner, j)
            boxes.append(full)
            for j in changed:
                if not all(_overlap_ok(boxes[j], boxes[i]) for i in range(k + 1) if i != j):
                    return False
        else:
            owner[oy : oy + mh, ox : ox + mw][mask] = k
            boxes.append(full)
        self.owner, self.boxes = owner, boxes
        self.full.append(full)
        self.area.append(int(mask.sum()))
        self.visible = [v - int(hidden[j]) for j, v in enumerate(self.visible)] + [self.area[-1]]
        return True

    def objects(self, names: Sequence[str]) -> list[SceneObject]:
        """The placed objects in painting order, boxes in output pixels."""
        return [
            SceneObject(name, tuple(v / _SS for v in box), box != full, visible / area)
            for name, box, full, visible, area in zip(names, self.boxes, self.full, self.visible, self.area)
        ]


def render(
    rng: np.random.Generator,
    names: Sequence[str],
    distractors: bool = True,
    float_coords: bool = False,
    sizes: tuple[float, float] = OBJECT_RANGE,
) -> tuple[np.ndarray, list[SceneObject]]:
    """One RGB uint8 image holding the objects of classes names (those that fit), and their boxes.

    Objects are placed and painted in order; one that breaks an overlap rule at every try is left
    out (see MAX_IOU). With one name and OBJECT_RANGE this is the original one-object image.
    """
    w = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
    h = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
    img = _background(rng, h * _SS, w * _SS)
    if distractors:
        _distractors(rng, img)
    scene = _Scene(h * _SS, w * _SS, float_coords)
    placed: list[str] = []
    low = sizes[0] * min(w, h)
    for name in names:
        side = rng.uniform(*sizes) * min(w, h)
        lo, hi = _ASPECT.get(name, (0.8, 1.25))
        aspect = rng.uniform(lo, hi)
        for attempt in range(PLACE_ATTEMPTS):
            if attempt % SHRINK_EVERY == 0:
                scaled = side * SHRINK ** (attempt // SHRINK_EVERY)
                bw = int(np.clip(scaled * np.sqrt(aspect), low, sizes[1] * w))
                bh = int(np.clip(scaled / np.sqrt(aspect), low, sizes[1] * h))
                # The unpadded mask's corner lands on a multiple of _SS, so one snap fits every position.
                mask = _snap(_object_mask(name, bw * _SS, bh * _SS), 0, 0, float_coords)
            # Top-left corner in supersampled pixels, at least one output pixel away from every border;
            # the mask was padded by one pixel on each side.
            x0 = int(rng.integers(1, w - bw - 1)) * _SS - 1
            y0 = int(rng.integers(1, h - bh - 1)) * _SS - 1
            if scene.add(mask, x0, y0):
                paint = _object_paint(name, rng, mask.shape[1], mask.shape[0])
                region = img[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
                region[mask] = paint[mask]
                placed.append(name)
                break
        else:
            logger.debug("left out a %s: no position met the overlap rules", name)
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    small += rng.normal(0.0, 6.0, size=small.shape).astype(np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8), scene.objects(placed)


def _fmt(value: float, as_float: bool) -> str:
    """Coordinate text: '123' normally, '123.5' / '123.0' in images written with float coordinates."""
    return f"{value:.1f}" if as_float else str(int(round(value)))


def annotation_xml(
    folder: str, filename: str, width: int, height: int, objects: Sequence[SceneObject], float_coords: bool
) -> bytes:
    """Serialise one VOC annotation with every object, in a fixed layout (pretty printed, UTF-8)."""
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = folder
    etree.SubElement(root, "filename").text = filename
    etree.SubElement(etree.SubElement(root, "source"), "database").text = "sprint2 synthetic"
    size = etree.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        etree.SubElement(size, tag).text = str(value)
    etree.SubElement(root, "segmented").text = "0"
    for item in objects:
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = item.name
        etree.SubElement(obj, "pose").text = "Unspecified"
        etree.SubElement(obj, "truncated").text = "1" if item.truncated else "0"
        etree.SubElement(obj, "difficult").text = "0"
        bndbox = etree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), item.box):
            etree.SubElement(bndbox, tag).text = _fmt(value, float_coords)
    return etree.tostring(root, pretty_print=True, encoding="utf-8")


def _encode_jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg",
        cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 0],
    )
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
            raise DataError(
                out_dir, "folder is not empty and holds no synthetic dataset; refusing to write into it"
            )
        for name in _GENERATED:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def object_counts(objects: int | Sequence[int]) -> tuple[int, int]:
    """The inclusive range of objects per image: n means (n, n); ValueError outside 1..MAX_OBJECTS."""
    pair = (objects, objects) if isinstance(objects, (int, np.integer)) else tuple(objects)
    if len(pair) != 2 or not all(isinstance(n, (int, np.integer)) for n in pair):
        raise ValueError(f"objects must be an int or a (low, high) pair of ints, got {objects!r}")
    lo, hi = int(pair[0]), int(pair[1])
    if not 1 <= lo <= hi <= MAX_OBJECTS:
        raise ValueError(f"objects per image must satisfy 1 <= low <= high <= {MAX_OBJECTS}, got {lo}-{hi}")
    return lo, hi


def object_sizes(sizes: Sequence[float] | None, counts: tuple[int, int]) -> tuple[float, float]:
    """The range of object sides (fraction of the shorter image side); None: the default for counts."""
    if sizes is None:
        return OBJECT_RANGE if counts == (1, 1) else MULTI_OBJECT_RANGE
    pair = tuple(float(s) for s in sizes)
    if len(pair) != 2 or not 0.05 <= pair[0] <= pair[1] <= 0.8:
        raise ValueError(f"object sizes must satisfy 0.05 <= low <= high <= 0.8, got {sizes!r}")
    return pair[0], pair[1]


def _settings(
    train: int,
    test: int,
    classes: int,
    seed: int,
    layout: str,
    distractors: bool,
    counts: tuple[int, int],
    sizes: tuple[float, float],
) -> dict[str, object]:
    """What the marker records: every argument that changes the files (JSON-ready)."""
    return {
        "train": train,
        "test": test,
        "classes": classes,
        "seed": seed,
        "layout": layout,
        "distractors": distractors,
        "objects": list(counts),
        "sizes": list(sizes),
        "version": MARKER_VERSION,
    }


def _write_lists(out_dir: Path, split_ids: dict[str, list[str]]) -> None:
    """ImageSets/Main/<split>.txt: one image id per line, for the "voc" layout."""
    sets = out_dir / "ImageSets" / "Main"
    sets.mkdir(parents=True, exist_ok=True)
    for split, ids in split_ids.items():
        (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def generate(
    out_dir: Path | str,
    train: int = 200,
    test: int = 50,
    classes: int = 10,
    seed: int = 0,
    layout: str = "side-by-side",
    distractors: bool = True,
    objects: int | Sequence[int] = OBJECT_COUNTS,
    sizes: Sequence[float] | None = None,
) -> Path:
    """Write a deterministic VOC dataset to out_dir and return it.

    layout "side-by-side": train/ and test/ with each JPEG beside its XML; "voc": Annotations/,
    JPEGImages/, ImageSets/Main/{train,test}.txt; "folders": one pool in images/ + annotations/.
    objects: objects per image, n or an inclusive (low, high) range; sizes: the range of object
    sides as a fraction of the shorter image side (default OBJECT_RANGE for one object per image,
    MULTI_OBJECT_RANGE otherwise). Every third image has float coordinates. Classes are balanced
    over all objects of a split (round-robin, shuffled by seed), before any is left out.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not 1 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be between 1 and {len(CLASS_NAMES)}, got {classes}")
    if train < 0 or test < 0 or train + test == 0:
        raise ValueError(f"need a positive number of images, got train={train}, test={test}")
    counts = object_counts(objects)
    size_range = object_sizes(sizes, counts)
    out_dir = Path(out_dir)
    _prepare(out_dir)
    names = CLASS_NAMES[:classes]
    split_ids: dict[str, list[str]] = {}
    wanted = placed = 0
    for split_no, (split, count) in enumerate((("train", train), ("test", test))):
        if counts[0] == counts[1]:
            per_image = np.full(count, counts[0])
        else:
            per_image = np.random.default_rng([seed, split_no, 2]).integers(
                counts[0], counts[1] + 1, size=count
            )
        order = np.random.default_rng([seed, split_no, 0]).permutation(np.arange(per_image.sum()) % classes)
        starts = np.concatenate([[0], np.cumsum(per_image)])
        ids = []
        for i in range(count):
            stem = f"{split}_{i:05d}"
            wanted_names = [names[int(c)] for c in order[starts[i] : starts[i + 1]]]
            float_coords = i % 3 == 2
            rng = np.random.default_rng([seed, split_no, 1, i])
            img, scene = render(rng, wanted_names, distractors, float_coords, size_range)
            wanted, placed = wanted + len(wanted_names), placed + len(scene)
            image_path, xml_path, folder = _targets(out_dir, layout, split, stem)
            image_path.parent.mkdir(parents=True, exist_ok=True)
            xml_path.parent.mkdir(parents=True, exist_ok=True)
            image_path.write_bytes(_encode_jpeg(img))
            xml_path.write_bytes(
                annotation_xml(folder, image_path.name, img.shape[1], img.shape[0], scene, float_coords)
            )
            ids.append(stem)
        split_ids[split] = ids
    if layout == "voc":
        _write_lists(out_dir, split_ids)
    args = _settings(train, test, classes, seed, layout, distractors, counts, size_range)
    (out_dir / MARKER).write_text(json.dumps(args, sort_keys=True) + "\n", encoding="utf-8")
    logger.info(
        "wrote synthetic dataset %s (%s, train=%d, test=%d, classes=%d, seed=%d, %d-%d objects per image: "
        "%d placed, %d left out)",
        out_dir,
        layout,
        train,
        test,
        classes,
        seed,
        counts[0],
        counts[1],
        placed,
        wanted - placed,
    )
    return out_dir


def ensure_dataset(
    root: Path | str, quick: bool = False, seed: int = 0, objects: int | Sequence[int] = OBJECT_COUNTS
) -> Path:
    """The default dataset: root/"synthetic-quick" (48+16) or root/"synthetic" (600+150), made once.

    Other object counts get their own folder ("synthetic-objects1-1", ...). Regenerated when its
    marker records other settings (an older version included); built in a temporary folder and
    renamed, so an interrupted run never leaves a half-written dataset behind.
    """
    root = Path(root)
    counts = object_counts(objects)
    train, test = QUICK_COUNTS if quick else FULL_COUNTS
    name = "synthetic-quick" if quick else "synthetic"
    if counts != OBJECT_COUNTS:
        name = f"synthetic-objects{counts[0]}-{counts[1]}" + ("-quick" if quick else "")
    target = root / name
    classes = len(CLASS_NAMES)
    wanted = _settings(train, test, classes, seed, "side-by-side", True, counts, object_sizes(None, counts))
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
    generate(tmp, train=train, test=test, classes=classes, seed=seed, objects=counts)
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
    Bad samples keep only the template's first object, so a planted box problem is the only box of
    its image and fails the file (an image with another valid box would load without that box).
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
        for extra in root.findall("object")[1:]:
            root.remove(extra)
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
