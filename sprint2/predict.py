"""`sprint2 predict`: a trained model on new image files, written as drawn images, VOC XML and one JSON.

Each image goes through the loader's own decode-and-resize (`decode_resized`, stretch or letterbox as
the model card says), batches run through the model, and every box is mapped back to the original
image's pixels. `.keras` models import TensorFlow when loaded; `.tflite` models run under LiteRT with
NumPy only, so that path never imports TensorFlow. Importing this module is light.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from lxml import etree

from sprint2.dataset import Failure
from sprint2.decode import Detections, decode
from sprint2.drawing import draw_boxes
from sprint2.errors import DataError
from sprint2.images import Resize, decode_image, decode_resized, untransform_boxes
from sprint2.modelcard import ModelCard, card_path
from sprint2.voc import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

DETECTOR = "detector"
SINGLE_BOX_KINDS: tuple[str, ...] = ("improved", "original")
RESIZE_MODES: tuple[str, ...] = ("stretch", "letterbox")
DEFAULT_BATCH = 16
#: Decoding settings a card may override in its `extra` (keys "top_k" and "iou_threshold").
DEFAULT_TOP_K = 100
DEFAULT_IOU_THRESHOLD = 0.5
PREDICTIONS_FILE = "detections.json"
#: A detection within this many pixels of the image border is marked <truncated>1</truncated>.
TRUNCATED_MARGIN_PX = 1


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class Predictor(Protocol):
    """A model ready to run: its card, and a call from (N, H, W, 3) float32 0..255 images to raw outputs."""

    card: ModelCard

    def __call__(self, images: np.ndarray) -> Any: ...


class KerasPredictor:
    """A `.keras` model (detector or single-box) behind one tf.function traced for any batch size."""

    def __init__(self, path: Path | str, card: ModelCard) -> None:
        import keras
        import tensorflow as tf

        self.path = Path(path)
        self.card = card
        if card.kind in SINGLE_BOX_KINDS:
            importlib.import_module("sprint2.model")  # registers their custom layers for loading
        try:
            model = keras.models.load_model(self.path, compile=False)
        except Exception as exc:  # Keras raises many types for a bad file; the user needs the file and why
            raise DataError(self.path, f"not a loadable Keras model ({type(exc).__name__}: {exc})") from None
        shape = tuple(model.input_shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise DataError(self.path, f"expected one (N, H, W, 3) image input, the model takes {shape}")
        _check_input_hw(self.path, shape[1:3], card)
        self.model = model
        spec = tf.TensorSpec((None, *card.input_hw, 3), tf.float32)
        self._run = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, images: np.ndarray) -> Any:
        out = self._run(np.asarray(images, np.float32))
        if isinstance(out, Mapping):
            return {str(k): np.asarray(v) for k, v in out.items()}
        if isinstance(out, (list, tuple)):
            return [np.asarray(v) for v in out]
        return np.asarray(out)


class LiteRTPredictor:
    """A `.tflite` model under LiteRT: float 0..255 images in, float outputs keyed by signature name.

    The one LiteRT runner of the project (`sprint2 predict` and `sprint2.quantize`). Inputs and
    outputs are found through the signature, never by position; (u)int8 inputs and outputs are
    (de)quantized here. The batch dimension is resized only when the batch size changes, so
    repeated calls of one size pay for set/invoke/get only. `card` None skips the input-size check.
    """

    def __init__(self, path: Path | str, card: ModelCard | None, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.card = card  # type: ignore[assignment]
        self.num_threads = num_threads
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
            signatures = self.interpreter.get_signature_list()
        except (ValueError, RuntimeError) as exc:
            raise DataError(self.path, f"not a loadable TFLite model ({exc})") from None
        if len(signatures) != 1:
            raise DataError(self.path, f"expected one signature, found {sorted(signatures)}")
        runner = self.interpreter.get_signature_runner()
        inputs = runner.get_input_details()
        if len(inputs) != 1:
            raise DataError(self.path, f"expected one image input, found {sorted(inputs)}")
        ((_, self._input),) = inputs.items()
        self._outputs = dict(runner.get_output_details())
        shape = tuple(int(d) for d in self._input["shape_signature"])
        if len(shape) != 4 or shape[-1] != 3:
            raise DataError(self.path, f"expected one (N, H, W, 3) image input, the model takes {shape}")
        if card is not None:
            _check_input_hw(self.path, shape[1:3], card)
        self._batch: int | None = None

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype the flatbuffer's input takes (float32, or (u)int8 for integer input)."""
        return np.dtype(self._input["dtype"])

    @property
    def output_names(self) -> list[str]:
        """The signature's output names, sorted."""
        return sorted(self._outputs)

    def _set_batch(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, *(int(d) for d in self._input["shape_signature"][1:])]
            self.interpreter.resize_tensor_input(self._input["index"], shape)
            self.interpreter.allocate_tensors()
            self._batch = batch

    def _to_input(self, images: np.ndarray) -> np.ndarray:
        """0..255 float images in the input's dtype (quantized with its scale and zero point)."""
        images = np.asarray(images, np.float32)
        dtype = self.input_dtype
        if dtype == np.float32:
            return images
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(images / scale + zero), info.min, info.max).astype(dtype)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._set_batch(len(images))
        self.interpreter.set_tensor(self._input["index"], self._to_input(images))
        self.interpreter.invoke()
        out = {}
        for name, detail in self._outputs.items():
            value = self.interpreter.get_tensor(detail["index"])
            if np.dtype(detail["dtype"]) != np.float32:
                scale, zero = detail["quantization"]
                value = (value.astype(np.float32) - zero) * scale
            out[name] = np.asarray(value, np.float32)
        return out


def _check_input_hw(path: Path, model_hw: Sequence[Any], card: ModelCard) -> None:
    """DataError unless the model's input (height, width) is the card's input_hw."""
    if tuple(model_hw) != tuple(card.input_hw):
        raise DataError(
            path,
            f"the model takes {model_hw[0]}x{model_hw[1]} images but its card {card_path(path)} says "
            f"input_hw {card.input_hw[0]}x{card.input_hw[1]}",
        )


def check_card(card: ModelCard, model_path: Path) -> None:
    """DataError naming the card when it cannot drive prediction (unknown kind, mode, no classes)."""
    where = card_path(model_path)
    if card.kind != DETECTOR and card.kind not in SINGLE_BOX_KINDS:
        kinds = ", ".join((DETECTOR, *SINGLE_BOX_KINDS))
        raise DataError(where, f"unknown model kind {card.kind!r} (known: {kinds})")
    if card.resize_mode not in RESIZE_MODES:
        raise DataError(where, f"unknown resize_mode {card.resize_mode!r} (known: {', '.join(RESIZE_MODES)})")
    if not card.class_names:
        raise DataError(where, "class_names is empty")
    if min(card.input_hw) <= 0:
        raise DataError(where, f"input_hw must be positive, got {card.input_hw}")


def load_predictor(model_path: Path | str, num_threads: int | None = None) -> Predictor:
    """The predictor for a `.keras` or `.tflite` file and the card beside it (`model.json`).

    FileNotFoundError when the model is missing; DataError naming the file for an unusable model or
    card, including outputs that do not fit the card's kind and classes (checked on one blank image).
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    card = ModelCard.read(path)
    check_card(card, path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        predictor: Predictor = KerasPredictor(path, card)
    elif suffix == ".tflite":
        predictor = LiteRTPredictor(path, card, num_threads=num_threads)
    else:
        raise DataError(path, f"unknown model format {path.suffix!r} (expected .keras or .tflite)")
    blank = np.zeros((1, *card.input_hw, 3), np.float32)
    try:
        to_detections(predictor(blank), card, [None], [None], score_threshold=1.0)
    except ValueError as exc:
        raise DataError(path, f"outputs do not fit its card's kind {card.kind!r} ({exc})") from None
    return predictor


# --------------------------------------------------------------------------------------------
# Outputs to detections
# --------------------------------------------------------------------------------------------


def _named(outputs: Mapping[str, Any], head: str) -> np.ndarray | None:
    keys = [k for k in outputs if k == head or str(k).endswith("_" + head)]
    return np.asarray(outputs[keys[0]], np.float32) if len(keys) == 1 else None


def single_box_outputs(outputs: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N, C), boxes (N, 4)) from a single-box model's outputs.

    A mapping is read by the names "class" and "box" (or names ending in "_class", "_box"); a pair
    without those names (e.g. a TFLite signature's "output_0", "output_1") by its channel counts,
    which is refused when C == 4 makes them ambiguous.
    """
    if isinstance(outputs, Mapping):
        probs, boxes = _named(outputs, "class"), _named(outputs, "box")
        parts = list(outputs.values())
    elif isinstance(outputs, (list, tuple)):
        probs = boxes = None
        parts = list(outputs)
    else:
        raise ValueError("a single-box model must output class probabilities and a box, got one array")
    if probs is None or boxes is None:
        if len(parts) != 2 or num_classes == 4:
            raise ValueError(f"cannot tell the class and box outputs apart among {len(parts)} outputs")
        a, b = (np.asarray(p, np.float32) for p in parts)
        probs, boxes = (a, b) if b.shape[-1:] == (4,) else (b, a)
    if probs.ndim != 2 or probs.shape[1] != num_classes or boxes.shape != (len(probs), 4):
        raise ValueError(
            f"expected class (N, {num_classes}) and box (N, 4) outputs, got {probs.shape} and {boxes.shape}"
        )
    return probs, boxes


def to_detections(
    outputs: Any,
    card: ModelCard,
    resizes: Sequence[Resize | None],
    image_sizes: Sequence[tuple[int, int] | None],
    *,
    score_threshold: float,
    top_k: int | None = None,
    iou_threshold: float | None = None,
) -> list[Detections]:
    """Detections per image in original pixels (each Resize undone, boxes clipped to (width, height)).

    A detector's outputs (the concatenated array, alone or as a one-entry mapping, or the three
    named heads) go through `decode` (top_k and iou_threshold default to the card's extra,
    else DEFAULT_TOP_K and DEFAULT_IOU_THRESHOLD); a single-box model gives one detection per image,
    its argmax class with that class's probability as the score. Scores below the threshold and boxes
    left without area are dropped.
    """
    num_classes = len(card.class_names)
    if card.kind == DETECTOR:
        if top_k is None:
            top_k = int(card.extra.get("top_k", DEFAULT_TOP_K))
        if iou_threshold is None:
            iou_threshold = float(card.extra.get("iou_threshold", DEFAULT_IOU_THRESHOLD))
        return decode(
            outputs,
            num_classes,
            score_threshold=score_threshold,
            top_k=top_k,
            iou_threshold=iou_threshold,
            resize=list(resizes),
            image_size=[None if s is None else tuple(s) for s in image_sizes],
        )
    probs, boxes = single_box_outputs(outputs, num_classes)
    if len(probs) != len(resizes) or len(probs) != len(image_sizes):
        raise ValueError(f"{len(probs)} outputs for {len(resizes)} images")
    results = []
    for prob, box, how, size in zip(probs, boxes, resizes, image_sizes):
        label = int(np.argmax(prob))
        score = float(prob[label])
        if how is not None:
            box = untransform_boxes(box, how)[0]
        width, height = size if size is not None else (card.input_hw[1], card.input_hw[0])
        box = np.clip(np.asarray(box, np.float32), 0.0, [width, height, width, height])
        keep = score >= score_threshold and box[2] > box[0] and box[3] > box[1]
        results.append(Detections(box[np.newaxis], [score], [label]) if keep else Detections())
    return results


# --------------------------------------------------------------------------------------------
# Finding images and running
# --------------------------------------------------------------------------------------------


def find_images(inputs: Iterable[Path | str], exclude: Path | str | None = None) -> list[Path]:
    """Image files named or found (recursively) in folders, in argument order, each folder sorted.

    Inside folders only files with an IMAGE_SUFFIXES extension count and hidden files and folders
    (".name", such as macOS "._x.jpg" companions) are skipped; a file named explicitly is always
    tried. A subfolder that is `exclude` (the output folder) is not searched. A file reached twice is
    listed once.
    FileNotFoundError for an input that does not exist.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for item in inputs:
        item = Path(item)
        if item.is_file():
            add(item)
        elif item.is_dir():
            hits = []
            for root, dirs, files in os.walk(item):
                base = Path(root)
                dirs[:] = [d for d in dirs if not d.startswith(".") and (base / d).resolve() != skip]
                hits.extend(
                    base / f
                    for f in files
                    if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
                )
            for path in sorted(hits):
                add(path)
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    return found


@dataclass
class ImageResult:
    """One image's detections, boxes in its original pixels; width and height of the original."""

    path: Path
    width: int
    height: int
    detections: Detections = field(default_factory=Detections)


def _batched(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path | str],
    *,
    score_threshold: float | None = None,
    batch_size: int = DEFAULT_BATCH,
    top_k: int | None = None,
    iou_threshold: float | None = None,
) -> Iterator[ImageResult | Failure]:
    """Runs the model on the files in batches; yields an ImageResult per image, a Failure per bad file.

    Each batch's Failures come before its results; results keep the input order. The score
    threshold defaults to the card's.
    """
    card = predictor.card
    threshold = card.score_threshold if score_threshold is None else float(score_threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"score threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    for chunk in _batched([Path(p) for p in paths], batch_size):
        images, resizes, sizes, good = [], [], [], []
        for path in chunk:
            try:
                img, how, size = decode_resized(path, card.input_hw, card.resize_mode)
            except DataError as exc:
                logger.info("%s: %s", exc.path, exc.reason)
                yield Failure(str(path), exc.reason)
                continue
            except OSError as exc:  # e.g. removed since it was found
                yield Failure(str(path), f"cannot read ({exc})")
                continue
            images.append(img)
            resizes.append(how)
            sizes.append(size)
            good.append(path)
        if not good:
            continue
        outputs = predictor(np.stack(images).astype(np.float32))
        dets = to_detections(
            outputs,
            card,
            resizes,
            sizes,
            score_threshold=threshold,
            top_k=top_k,
            iou_threshold=iou_threshold,
        )
        for path, (width, height), det in zip(good, sizes, dets):
            yield ImageResult(path, int(width), int(height), det)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def output_names(paths: Sequence[Path], out_dir: Path | str) -> dict[Path, Path]:
    """Where each image's outputs go: out_dir / (its folder relative to the images' common folder) / stem.

    The images' folders below their common folder are kept, so equal stems in different folders do
    not collide; stems shared within one folder (x.jpg and x.png) get the extension appended
    (x_jpg, x_png), then a number if still needed. Case is ignored when comparing, for case-insensitive
    file systems. ValueError when an output would land in a folder that holds input images (it could
    overwrite them or their annotations).
    """
    out_dir = Path(out_dir)
    if not paths:
        return {}
    absolute = [Path(os.path.abspath(p)) for p in paths]
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    relative = [p.parent.relative_to(root) / p.stem for p in absolute]
    counts: dict[str, int] = {}
    for rel in relative:
        counts[rel.as_posix().lower()] = counts.get(rel.as_posix().lower(), 0) + 1
    used: set[str] = set()
    names: dict[Path, Path] = {}
    for path, abs_path, rel in zip(paths, absolute, relative):
        if counts[rel.as_posix().lower()] > 1:
            rel = rel.with_name(f"{rel.name}_{abs_path.suffix.lstrip('.').lower() or 'noext'}")
        candidate, n = rel, 2
        while candidate.as_posix().lower() in used:
            candidate, n = rel.with_name(f"{rel.name}_{n}"), n + 1
        used.add(candidate.as_posix().lower())
        names[Path(path)] = out_dir / candidate
    input_dirs = {p.parent.resolve() for p in absolute}
    for path, target in names.items():
        if target.parent.resolve() in input_dirs:
            raise ValueError(
                f"output folder {out_dir} would put outputs beside the input images in {target.parent} "
                f"(such as {Path(path).name}); choose another --out"
            )
    return names


def voc_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """A box as whole pixels inside the image, at least one pixel wide and tall (tools refuse empty boxes)."""
    x0, y0, x1, y1 = (math.floor(float(v) + 0.5) for v in box)

    def fit(lo: int, hi: int, limit: int) -> tuple[int, int]:
        lo, hi = min(max(lo, 0), limit), min(max(hi, 0), limit)
        if hi <= lo:
            hi = min(lo + 1, limit)
            lo = hi - 1
        return lo, hi

    x0, x1 = fit(x0, x1, max(int(width), 1))
    y0, y1 = fit(y0, y1, max(int(height), 1))
    return x0, y0, x1, y1


def voc_xml(result: ImageResult, class_names: Sequence[str], *, depth: int = 3) -> bytes:
    """A Pascal VOC annotation of the detections, with the fields labelImg and CVAT read.

    folder, filename and path name the original image; each <object> has name, pose "Unspecified",
    truncated (1 when the box reaches the image border), difficult 0 and an integer bndbox. VOC has
    no score field: scores are in detections.json.
    """
    path = Path(os.path.abspath(result.path))
    root = etree.Element("annotation")

    def text(parent: etree._Element, tag: str, value: Any) -> etree._Element:
        child = etree.SubElement(parent, tag)
        child.text = str(value)
        return child

    text(root, "folder", path.parent.name)
    text(root, "filename", path.name)
    text(root, "path", path)
    source = etree.SubElement(root, "source")
    text(source, "database", "Unknown")
    size = etree.SubElement(root, "size")
    text(size, "width", result.width)
    text(size, "height", result.height)
    text(size, "depth", depth)
    text(root, "segmented", 0)
    det = result.detections
    for box, label in zip(det.boxes, det.labels):
        x0, y0, x1, y1 = voc_box(box, result.width, result.height)
        obj = etree.SubElement(root, "object")
        text(obj, "name", class_names[int(label)])
        text(obj, "pose", "Unspecified")
        edge = TRUNCATED_MARGIN_PX
        touches = x0 <= edge or y0 <= edge or x1 >= result.width - edge or y1 >= result.height - edge
        text(obj, "truncated", int(touches))
        text(obj, "difficult", 0)
        bndbox = etree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
            text(bndbox, tag, value)
    return etree.tostring(root, pretty_print=True, encoding="utf-8")


def result_json(result: ImageResult, class_names: Sequence[str]) -> dict[str, Any]:
    """One image's entry of detections.json: path, original width/height, detections in original pixels."""
    det = result.detections
    return {
        "path": str(result.path),
        "width": int(result.width),
        "height": int(result.height),
        "detections": [
            {
                "class": class_names[int(label)],
                "score": round(float(score), 5),
                "box": [round(float(v), 2) for v in box],
            }
            for box, score, label in zip(det.boxes, det.scores, det.labels)
        ],
    }


def _encode(image_rgb: np.ndarray, suffix: str) -> tuple[bytes, str]:
    """The image encoded in its original format when OpenCV can write it, else as PNG; (bytes, suffix)."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    for ext in dict.fromkeys((suffix.lower() or ".png", ".png")):
        try:
            ok, buf = cv2.imencode(ext, bgr)
        except cv2.error:
            ok = False
        if ok:
            return buf.tobytes(), ext
    raise OSError(f"cannot encode an image as {suffix} or .png")


def write_image_outputs(result: ImageResult, class_names: Sequence[str], stem: Path) -> tuple[Path, Path]:
    """Writes stem + the image's suffix (the image with boxes, labels and scores) and stem.xml (VOC)."""
    det = result.detections
    original = decode_image(result.path)
    drawn = draw_boxes(
        original,
        det.boxes,
        labels=[class_names[int(i)] for i in det.labels],
        scores=[float(s) for s in det.scores],
        class_names=list(class_names),
    )
    data, ext = _encode(drawn, Path(result.path).suffix)
    stem.parent.mkdir(parents=True, exist_ok=True)
    image_out = stem.with_name(stem.name + ext)
    image_out.write_bytes(data)
    xml_out = stem.with_name(stem.name + ".xml")
    xml_out.write_bytes(voc_xml(result, class_names, depth=original.shape[2]))
    return image_out, xml_out


def run_predict(
    model: Predictor | Path | str,
    inputs: Iterable[Path | str],
    out_dir: Path | str | None = Path("predictions"),
    *,
    score_threshold: float | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, Any]:
    """Predicts on every image found in `inputs` and returns the detections.json object.

    With out_dir (None writes nothing) each image gets a drawn copy and a VOC XML there (see
    output_names) and the object is saved as out_dir/detections.json. Schema: {"classes": [str],
    "images": [{"path", "width", "height", "detections": [{"class", "score", "box"}]}], "errors":
    [{"path", "reason"}]}, boxes [xmin, ymin, xmax, ymax] in original pixels. ValueError when no
    image is found; a bad image is an entry of "errors" and the others go on.
    """
    predictor = load_predictor(model) if isinstance(model, (str, Path)) else model
    inputs = [Path(p) for p in inputs]
    paths = find_images(inputs, exclude=out_dir)
    if not paths:
        raise ValueError(f"no images found in {', '.join(str(p) for p in inputs)}")
    names = output_names(paths, out_dir) if out_dir is not None else {}
    class_names = list(predictor.card.class_names)
    images: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for item in predict_files(predictor, paths, score_threshold=score_threshold, batch_size=batch_size):
        if isinstance(item, Failure):
            errors.append({"path": item.path, "reason": item.error})
            continue
        if out_dir is not None:
            try:
                write_image_outputs(item, class_names, names[item.path])
            except DataError as exc:  # decoded for the model, yet not at full size
                errors.append({"path": str(item.path), "reason": exc.reason})
                continue
        images.append(result_json(item, class_names))
    result = {"classes": class_names, "images": images, "errors": errors}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / PREDICTIONS_FILE).write_text(json.dumps(result, indent=2))
        logger.info("wrote %d images' predictions and %d errors to %s", len(images), len(errors), out)
    return result
