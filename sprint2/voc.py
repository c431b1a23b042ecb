"""Pascal VOC annotations: find (image, XML) pairs in the usual folder layouts and parse them safely.

Every problem with an input file is raised as `DataError(path, reason)` so callers can report the
file and the reason instead of losing it. XML is parsed with entity expansion, DTD loading and
network access switched off, and documents that declare entities or a DTD are refused outright.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lxml import etree

from sprint2.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BOX_FIELDS: tuple[str, ...] = ("xmin", "ymin", "xmax", "ymax")
BOX_TOLERANCE_PX = 1.0  # VOC is 1-based and many tools write xmax == width (or width + 1)

_ANNOTATION_DIRS = ("Annotations", "annotations", "Annotation", "annotation", "labels", "xml", "xmls")
_IMAGE_DIRS = ("JPEGImages", "images", "Images", "imgs", "img", "jpg", "JPEG")
_FILENAME_RE = re.compile(rb"<filename>\s*([^<]*?)\s*</filename>")
_DTD_RE = re.compile(rb"<!DOCTYPE[^>\[]*(\[|SYSTEM|PUBLIC)")
_PARSERS = threading.local()
_XML_SUFFIXES = (".xml",)
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n", ""}


class VocObject(NamedTuple):
    """One annotated object; box is (xmin, ymin, xmax, ymax) in pixels of the original image.

    A NamedTuple rather than a frozen dataclass: images hold up to hundreds of objects, and a tuple
    is several times cheaper to build, which the parallel loader (GIL-bound here) feels.
    """

    name: str
    box: tuple[float, float, float, float]
    difficult: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class Annotation:
    """A parsed VOC XML file; width/height are 0 when <size> was absent (see check_against_image)."""

    xml_path: Path
    image_path: Path
    width: int
    height: int
    depth: int
    objects: tuple[VocObject, ...]


@dataclass(frozen=True)
class Sample:
    """An (image, XML) pair found by discover(); the image may be missing, which the loader reports."""

    image_path: Path
    xml_path: Path


# --------------------------------------------------------------------------------------------- parsing


def _safe_parser() -> etree.XMLParser:
    """An lxml parser that never expands entities, loads DTDs, touches the network or builds huge trees.

    Built once per thread and reused (building one costs about as much as parsing a small file);
    lxml parsers must not be shared between threads, hence the thread-local.
    """
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_blank_text=True,
        )
    return parser


def _ascii_view(data: bytes) -> bytes:
    """The document as bytes in which ASCII markup is visible, also for UTF-16/UTF-32 files."""
    if data[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        return data.decode("utf-32", "replace").encode("utf-8", "replace")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", "replace").encode("utf-8", "replace")
    if b"\x00" in data[:4]:  # UTF-16/32 without a byte-order mark
        return data.replace(b"\x00", b"")
    return data


def _load_xml(xml_path: Path) -> etree._Element:
    """Read the bytes ourselves and parse them safely; DataError for unreadable, empty, DTD or bad XML."""
    try:
        data = xml_path.read_bytes()
    except FileNotFoundError:
        raise DataError(xml_path, "annotation file missing") from None
    except OSError as exc:
        raise DataError(xml_path, f"cannot read file ({exc.strerror or exc})") from None
    if not data.strip():
        raise DataError(xml_path, "empty file")
    # Refuse before parsing: cheap, and it covers billion-laughs and external-entity (XXE) files.
    probe = _ascii_view(data)
    if b"<!ENTITY" in probe or _DTD_RE.search(probe):
        raise DataError(xml_path, "document declares entities/DTD, refused")
    try:
        root = etree.fromstring(data, parser=_safe_parser())
    except etree.XMLSyntaxError as exc:
        if "entity" in (exc.msg or "").lower():
            raise DataError(xml_path, f"document declares entities/DTD, refused ({exc.msg})") from None
        raise DataError(xml_path, f"malformed XML ({exc.msg})") from None
    docinfo = root.getroottree().docinfo
    # Second line of defence for encodings the byte scan cannot see (UTF-16 and friends).
    if docinfo.internalDTD is not None or docinfo.system_url or docinfo.public_id:
        raise DataError(xml_path, "document declares entities/DTD, refused")
    if root.tag != "annotation":
        raise DataError(xml_path, f"not a VOC annotation (root element <{root.tag}>)")
    return root


def _children(elem: etree._Element) -> dict[str, etree._Element]:
    """The first child element per tag, in one pass (what elem.find(tag) returns, for every tag at once)."""
    out: dict[str, etree._Element] = {}
    for child in elem:
        tag = child.tag
        if tag.__class__ is str and tag not in out:  # comments and processing instructions have no str tag
            out[tag] = child
    return out


def _text(children: dict[str, etree._Element], tag: str) -> str | None:
    """Stripped text of the child with this tag, or None when the element is absent."""
    child = children.get(tag)
    if child is None:
        return None
    return (child.text or "").strip()


def _number(xml_path: Path, where: str, field: str, text: str) -> float:
    """Parse a finite number, or raise a DataError saying which field held what."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(xml_path, f"{where}non-numeric {field} {text!r}") from None
    if not math.isfinite(value):
        raise DataError(xml_path, f"{where}non-finite {field} {text!r}")
    return value


def _flag(xml_path: Path, where: str, field: str, text: str | None) -> bool:
    """Parse a VOC 0/1 flag; a missing element means False."""
    if text is None:
        return False
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    try:
        return float(low) != 0.0
    except ValueError:
        raise DataError(xml_path, f"{where}bad {field} value {text!r}") from None


def _flag_of(xml_path: Path, where: str, field: str, elem: etree._Element | None) -> bool:
    """_flag for an optional element, with the common "0" and "1" answered first."""
    if elem is None:
        return False
    text = elem.text
    if text == "0":
        return False
    if text == "1":
        return True
    return _flag(xml_path, where, field, (text or "").strip())


def _size(xml_path: Path, top: dict[str, etree._Element]) -> tuple[int, int, int]:
    """(width, height, depth) from <size> (top: the root's children); absent or zero sizes are 0 (depth 3)."""
    size = top.get("size")
    if size is None:
        return 0, 0, 3
    fields = _children(size)
    values = []
    for field, default in (("width", 0), ("height", 0), ("depth", 3)):
        text = _text(fields, field)
        if text is None or text == "":
            values.append(default)
            continue
        number = _number(xml_path, "size: ", field, text)
        if number < 0 or number != int(number):
            raise DataError(xml_path, f"size: bad {field} {text!r}")
        values.append(int(number))
    return values[0], values[1], values[2] or 3


def _filename_from_bytes(xml_path: Path) -> str | None:
    """The basename in <filename>, read with a regex so discover never parses (or chokes on) the XML."""
    try:  # os-level calls: half the cost of Path.open for a file read once, at discovery
        fd = os.open(xml_path, os.O_RDONLY)
        try:
            head = os.read(fd, 65536)
        finally:
            os.close(fd)
    except OSError:
        return None
    match = _FILENAME_RE.search(head)
    if not match:
        return None
    name = match.group(1).decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or None


def _default_image_path(xml_path: Path, filename: str | None) -> Path:
    """Where the image of a lone XML file should be: beside it, or in ../JPEGImages for VOC trees."""
    dirs = [xml_path.parent]
    if xml_path.parent.name in _ANNOTATION_DIRS:
        dirs = [xml_path.parent.parent / d for d in _IMAGE_DIRS] + dirs
    names = [filename] if filename else []
    names.append(xml_path.stem + ".jpg")
    for d in dirs:
        for name in names:
            hit = _find_image(d, name)
            if hit is not None:
                return hit
    return dirs[-1] / names[0]


def parse_annotation(
    xml_path: Path | str,
    image_path: Path | str | None = None,
    class_names: Sequence[str] | None = None,
    check: bool = True,
) -> Annotation:
    """Parse one VOC XML file into an Annotation; DataError(path, reason) for anything wrong.

    With class_names, an unknown class is a DataError. check=True also refuses degenerate boxes
    (xmax <= xmin or ymax <= ymin); check=False keeps them, so that screen_boxes() can drop them one
    by one. Boxes are checked against the real image by screen_boxes() or check_against_image().
    """
    xml_path = xml_path if isinstance(xml_path, Path) else Path(xml_path)
    root = _load_xml(xml_path)
    top = _children(root)
    width, height, depth = _size(xml_path, top)
    if image_path is None:
        image_path = _default_image_path(xml_path, _text(top, "filename") or None)
    known = set(class_names) if class_names is not None else None
    objects = []
    for index, obj in enumerate(root.iterchildren("object"), start=1):
        name_el = bndbox = difficult = truncated = None  # the first child of each tag, as find() would
        for child in obj:
            tag = child.tag
            if tag == "bndbox":
                bndbox = child if bndbox is None else bndbox
            elif tag == "name":
                name_el = child if name_el is None else name_el
            elif tag == "difficult":
                difficult = child if difficult is None else difficult
            elif tag == "truncated":
                truncated = child if truncated is None else truncated
        where = f"object {index}: "
        if name_el is None:
            raise DataError(xml_path, f"{where}missing name")
        name = (name_el.text or "").strip()
        if not name:
            raise DataError(xml_path, f"{where}empty name")
        if bndbox is None:
            raise DataError(xml_path, f"{where}missing bndbox")
        box = _box(xml_path, where, _children(bndbox))
        flat = _degenerate(box) if check else None
        if flat:
            raise DataError(xml_path, where + flat)
        if known is not None and name not in known:
            raise DataError(xml_path, f"{where}unknown class {name!r} (known: {', '.join(sorted(known))})")
        objects.append(
            VocObject(
                name,
                box,
                _flag_of(xml_path, where, "difficult", difficult),
                _flag_of(xml_path, where, "truncated", truncated),
            )
        )
    image_path = image_path if isinstance(image_path, Path) else Path(image_path)
    return Annotation(
        xml_path=xml_path,
        image_path=image_path,
        width=width,
        height=height,
        depth=depth,
        objects=tuple(objects),
    )


def _box(xml_path: Path, where: str, corners: dict[str, etree._Element]) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) from the <bndbox> children; one float() each on the usual path.

    float() accepts surrounding whitespace as strip() would; anything it refuses (or a missing,
    empty or non-finite value) is re-read field by field to raise the precise DataError.
    """
    try:
        box = (
            float(corners["xmin"].text),
            float(corners["ymin"].text),  # type: ignore[arg-type]
            float(corners["xmax"].text),
            float(corners["ymax"].text),
        )  # type: ignore[arg-type]
        if math.isfinite(box[0] + box[1] + box[2] + box[3]):
            return box
    except (KeyError, TypeError, ValueError):
        pass
    coords = []
    for field in BOX_FIELDS:
        text = _text(corners, field)
        if text is None or text == "":
            raise DataError(xml_path, f"{where}missing bndbox/{field}")
        coords.append(_number(xml_path, where, f"bndbox/{field}", text))
    return coords[0], coords[1], coords[2], coords[3]


def _fmt_box(box: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _image(ann: Annotation, width: int, height: int) -> str:
    """How a box problem names the image: "the 640x480 image x.jpg"."""
    return f"the {width}x{height} image {ann.image_path.name}"


def _degenerate(box: Sequence[float]) -> str | None:
    """Why a box has no area (xmax <= xmin or ymax <= ymin), or None when it has some."""
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"degenerate box {_fmt_box(box)} (needs xmax > xmin and ymax > ymin)"
    return None


def screen_boxes(ann: Annotation, width: int, height: int) -> tuple[Annotation, list[tuple[int, str]]]:
    """Reconcile an annotation with its decoded image, keeping the boxes that fit and dropping the rest.

    The real size wins over <size> (a disagreement is logged). A box may overshoot by
    BOX_TOLERANCE_PX (1 px, VOC's 1-based convention) and is then clipped. A degenerate box, one
    further out, or one with no area inside the image is dropped: the result holds the kept objects
    and (1-based object index, reason) per dropped one. An image without pixels is a DataError.
    """
    if width <= 0 or height <= 0:
        raise DataError(ann.image_path, f"image has no pixels ({width}x{height})")
    if (ann.width, ann.height) != (0, 0) and (ann.width, ann.height) != (width, height):
        logger.warning(
            "%s: <size> says %dx%d but the image %s is %dx%d; using the image's size",
            ann.xml_path,
            ann.width,
            ann.height,
            ann.image_path.name,
            width,
            height,
        )
    tol = BOX_TOLERANCE_PX
    kept, dropped = [], []
    for index, obj in enumerate(ann.objects, start=1):
        x0, y0, x1, y1 = obj.box
        if 0.0 <= x0 < x1 <= width and 0.0 <= y0 < y1 <= height:  # the usual case: nothing to clip
            kept.append(obj)
            continue
        flat = _degenerate(obj.box)
        if flat:
            dropped.append((index, flat))
            continue
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            dropped.append((index, f"box {_fmt_box(obj.box)} outside {_image(ann, width, height)}"))
            continue
        clipped = (
            min(max(x0, 0.0), width),
            min(max(y0, 0.0), height),
            min(max(x1, 0.0), width),
            min(max(y1, 0.0), height),
        )
        if _degenerate(clipped):
            dropped.append(
                (index, f"box {_fmt_box(obj.box)} has no area inside {_image(ann, width, height)}")
            )
            continue
        kept.append(obj._replace(box=clipped) if clipped != obj.box else obj)
    return Annotation(ann.xml_path, ann.image_path, width, height, ann.depth, tuple(kept)), dropped


def check_against_image(ann: Annotation, width: int, height: int) -> Annotation:
    """screen_boxes() that tolerates no bad box: the first one is a DataError naming the annotation file."""
    checked, dropped = screen_boxes(ann, width, height)
    if dropped:
        index, reason = dropped[0]
        raise DataError(ann.xml_path, f"object {index}: {reason}")
    return checked


def class_names_from(annotations: Iterable[Annotation]) -> list[str]:
    """Sorted unique class names over all objects of the given annotations."""
    return sorted({obj.name for ann in annotations for obj in ann.objects})


# ------------------------------------------------------------------------------------------- discovery


def _listing(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files in folder with one of the suffixes (not hidden), sorted by name.

    os.scandir gives each entry's type with the listing, so unlike Path.is_file() this costs no stat
    per file (symlinks are still followed); sorting names instead of Paths is several times cheaper.
    """
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if _counts(e, suffixes))
    return [folder / name for name in names]


def _counts(entry: os.DirEntry, suffixes: Sequence[str]) -> bool:
    """Whether a listed entry is a file with one of the suffixes (case-insensitive) and not hidden."""
    return (
        not entry.name.startswith(".")
        and os.path.splitext(entry.name)[1].lower() in suffixes
        and entry.is_file()
    )


def _holds(folder: Path) -> tuple[bool, bool]:
    """Whether folder holds (XML files, image files) as _listing counts them, without a Path per entry."""
    has_xml = has_img = False
    with os.scandir(folder) as it:
        for entry in it:
            if not has_xml and _counts(entry, _XML_SUFFIXES):
                has_xml = True
            elif not has_img and _counts(entry, IMAGE_SUFFIXES):
                has_img = True
            if has_xml and has_img:
                break
    return has_xml, has_img


def _find_image(folder: Path, name: str) -> Path | None:
    """An existing image in folder called name (or name + an image suffix when name has none)."""
    candidate = folder / name
    if candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.is_file():
        return candidate
    if not Path(name).suffix:
        for suffix in IMAGE_SUFFIXES:
            if (folder / (name + suffix)).is_file():
                return folder / (name + suffix)
    return None


def _match(xml_path: Path, by_name: dict[str, Path], by_stem: dict[str, Path], fallback_dir: Path) -> Path:
    """Image for an XML: by <filename>, then by stem; else the expected (missing) path in fallback_dir."""
    filename = _filename_from_bytes(xml_path)
    if filename:
        hit = by_name.get(filename) or by_name.get(filename.lower())
        if hit is None and not Path(filename).suffix:
            hit = by_stem.get(filename)
        if hit is not None:
            return hit
    hit = by_stem.get(xml_path.stem)
    if hit is not None:
        return hit
    return fallback_dir / (filename or xml_path.stem + ".jpg")


def _index_images(folders: Iterable[Path]) -> tuple[dict[str, Path], dict[str, Path]]:
    """Name and stem lookup tables of the images in folders (first folder wins on clashes)."""
    by_name: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    for folder in folders:
        for path in _listing(folder, IMAGE_SUFFIXES):
            by_name.setdefault(path.name, path)
            by_name.setdefault(path.name.lower(), path)
            by_stem.setdefault(path.stem, path)
    return by_name, by_stem


def _discover_voc(root: Path, split: str | None) -> list[Sample]:
    """Canonical VOC: Annotations/, JPEGImages/, optional ImageSets/Main/<split>.txt; images matched by id."""
    ann_dir = root / "Annotations"
    img_dir = root / "JPEGImages"
    img_dirs = [img_dir] if img_dir.is_dir() else []
    by_name, by_stem = _index_images(img_dirs)
    if split is None:
        xmls = _listing(ann_dir, _XML_SUFFIXES)
    else:
        split_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(split_file, f"split file for split {split!r} not found")
        xmls = []
        for lineno, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            xml = ann_dir / f"{fields[0]}.xml"
            if not xml.is_file():
                raise DataError(
                    split_file, f"line {lineno}: id {fields[0]!r} has no annotation {xml.name} in {ann_dir}"
                )
            xmls.append(xml)
        xmls = sorted(set(xmls))
    # The devkit's rule: an image is JPEGImages/<id>.jpg, <id> being the annotation's stem. Only an id
    # without such an image falls back to <filename>, so the common case reads no XML here.
    return [
        Sample(image_path=by_stem.get(x.stem) or _match(x, by_name, by_stem, img_dir), xml_path=x)
        for x in xmls
    ]


def _discover_folders(root: Path) -> list[Sample] | None:
    """Separate folders (e.g. images/ + annotations/); None when root does not look like that."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    ann_dirs, img_dirs, mixed = [], [], []
    for d in subdirs:
        has_xml, has_img = _holds(d)
        if has_xml and has_img:
            mixed.append(d)
        elif has_xml:
            ann_dirs.append(d)
        elif has_img:
            img_dirs.append(d)
    if not ann_dirs:
        if mixed:
            names = ", ".join(d.name for d in mixed)
            raise DataError(
                root,
                f"no annotations directly here; the subfolders {names} hold image+XML "
                f"pairs: pass split= or one of them as data_dir",
            )
        return None
    # Prefer conventionally named image folders, so images/ is searched before e.g. thumbnails/.
    img_dirs.sort(key=lambda d: (d.name not in _IMAGE_DIRS, d.name))
    by_name, by_stem = _index_images(img_dirs)
    fallback = img_dirs[0] if img_dirs else root / "images"
    xmls = sorted((p for d in ann_dirs for p in _listing(d, _XML_SUFFIXES)), key=str)
    return [Sample(image_path=_match(x, by_name, by_stem, fallback), xml_path=x) for x in xmls]


def discover(data_dir: Path | str, split: str | None = None) -> list[Sample]:
    """Find (image, XML) pairs, sorted by XML path, in one of three layouts.

    (a) images beside their XML files; (b) canonical VOC (Annotations/, JPEGImages/, ImageSets/Main),
    images by id; (c) separate folders such as images/ + annotations/, matched by <filename> or stem.
    When split is given and data_dir/split is a folder, that folder is used. An XML whose image is
    not found still yields a Sample (with the expected path) so the loader reports it instead of
    dropping it.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(data_dir, "data folder does not exist")
    if not data_dir.is_dir():
        raise DataError(data_dir, "not a folder")
    if split is not None and (data_dir / split).is_dir():
        data_dir, split = data_dir / split, None
    if (data_dir / "Annotations").is_dir():
        samples = _discover_voc(data_dir, split)
    else:
        if split is not None:
            raise DataError(
                data_dir,
                f"split {split!r} requested but there is neither a {split}/ folder "
                f"nor ImageSets/Main/{split}.txt",
            )
        xmls = _listing(data_dir, _XML_SUFFIXES)
        if xmls:
            by_name, by_stem = _index_images([data_dir])
            samples = [Sample(image_path=_match(x, by_name, by_stem, data_dir), xml_path=x) for x in xmls]
        else:
            samples = _discover_folders(data_dir) or []
    if not samples:
        raise DataError(data_dir, "no Pascal VOC annotations (*.xml) found")
    if logger.isEnabledFor(logging.INFO):  # a stat per sample, only worth paying when it is logged
        missing = sum(not s.image_path.is_file() for s in samples)
        logger.info(
            "%s: found %d annotated samples (%d without an image file)", data_dir, len(samples), missing
        )
    return sorted(samples, key=lambda s: (str(s.xml_path), str(s.image_path)))
