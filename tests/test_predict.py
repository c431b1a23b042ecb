"""Tests for sprint2.predict and `sprint2 predict`: finding images, boxes back in original pixels,
bad images, the outputs (drawn image, VOC XML, detections.json) and Keras vs LiteRT agreement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sprint2.cli import main
from sprint2.dataset import Failure
from sprint2.decode import Detections
from sprint2.images import decode_image
from sprint2.modelcard import ModelCard
from sprint2.predict import (
    ImageResult,
    find_images,
    load_predictor,
    output_names,
    predict_files,
    run_predict,
    to_detections,
    voc_box,
    voc_xml,
)
from sprint2.voc import parse_annotation

CLASSES = ["cat", "dog"]
HW = (64, 64)  # network input (height, width); the detector's output is 16 x 16 cells
#: float32 TFLite vs Keras: the same float32 graph, only the summation order differs.
TFLITE_BOX_ATOL_PX = 1e-3
TFLITE_SCORE_ATOL = 1e-5
#: int8 TFLite with uint8 input/output vs Keras, on raw outputs: the rounding carried through some 25
#: int8 layers, a dozen steps of each head (heatmap 0..1 in steps of about 1/255; sizes of about 32 px
#: in steps of about 0.13 px), the same bound as VARIANT_ATOL's int8 row below.
INT8_ATOL = {"heatmap": 0.05, "size": 0.5, "offset": 0.02}


def write_image(path: Path, width: int, height: int, seed: int) -> Path:
    """A seeded noise image with a bright rectangle, written in the format of its suffix."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    img[height // 4 : height // 2, width // 4 : width // 2] = (250, 240, 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good images at two levels, one with a stem repeated in a subfolder, plus planted bad files."""
    root = tmp_path_factory.mktemp("predict") / "images"
    write_image(root / "a.jpg", 120, 80, 0)
    write_image(root / "b.png", 64, 96, 1)
    write_image(root / "nested" / "deeper" / "c.jpg", 200, 100, 2)
    write_image(root / "nested" / "a.jpg", 90, 90, 3)  # same stem as ../a.jpg
    good = (root / "a.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (root / "notes.jpg").write_text("not an image, only named like one\n")
    (root / "readme.txt").write_text("ignored: not an image extension\n")
    (root / ".hidden.jpg").write_text("ignored: hidden\n")
    return root


GOOD = ["a.jpg", "b.png", "nested/a.jpg", "nested/deeper/c.jpg"]
BAD = {"broken.jpg": "truncated JPEG", "notes.jpg": "not a decodable image"}


@pytest.fixture(scope="module")
def keras_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny detector whose heatmap varies strongly across cells, saved with its card."""
    import keras

    from sprint2.detector import build_detector

    keras.utils.set_random_seed(0)
    model = build_detector(len(CLASSES), HW, width=0.25)
    layer = model.get_layer("heatmap")
    kernel, bias = layer.get_weights()
    rng = np.random.default_rng(0)
    kernel = rng.normal(0.0, 1.0, kernel.shape).astype(np.float32)
    layer.set_weights([kernel, np.zeros_like(bias)])
    # Scale the kernel so the logits spread with a standard deviation of 3 on noise images, whatever
    # the untrained backbone's feature scale: then many cells clear the card's 0.6 threshold.
    noise = rng.uniform(0.0, 255.0, (4, *HW, 3)).astype(np.float32)
    heat = np.clip(np.asarray(model(noise, training=False))[..., : len(CLASSES)], 1e-6, 1.0 - 1e-6)
    logits = np.log(heat / (1.0 - heat))
    layer.set_weights([kernel * (3.0 / float(logits.std())), np.zeros_like(bias)])
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    model.save(path)
    ModelCard("detector", CLASSES, HW, resize_mode="letterbox", score_threshold=0.6).write(path)
    return path


@pytest.fixture(scope="module")
def tflite_detector(keras_detector: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same detector converted to float32 TFLite, with a copy of its card."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(keras_detector, compile=False)
    path = tmp_path_factory.mktemp("tflite") / "model.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    ModelCard.read(keras_detector).write(path)
    return path


@pytest.fixture(scope="module")
def split_tflite_detectors(keras_detector: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The detector with three named heads as float32 TFLite and as int8 with uint8 input/output."""
    import keras
    import tensorflow as tf

    from sprint2.detector import build_detector, copy_weights

    split = build_detector(len(CLASSES), HW, width=0.25, split_outputs=True)
    copy_weights(keras.models.load_model(keras_detector, compile=False), split)
    samples = np.random.default_rng(0).uniform(0, 255, (16, *HW, 3)).astype(np.float32)
    paths = {}
    for name in ("float32", "int8_io"):
        converter = tf.lite.TFLiteConverter.from_keras_model(split)
        if name == "int8_io":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([s[np.newaxis]] for s in samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.uint8
        path = tmp_path_factory.mktemp(name) / "model.tflite"
        path.write_bytes(converter.convert())
        ModelCard.read(keras_detector).write(path)
        paths[name] = path
    return paths


# --------------------------------------------------------------------------------------------
# A predictor whose output the test controls
# --------------------------------------------------------------------------------------------


class FakeDetector:
    """Emits, for the i-th image of each call, one peak whose decoded box is boxes[i] (input pixels)."""

    def __init__(self, card: ModelCard, boxes: list[tuple[float, float, float, float]], score: float = 0.9):
        self.card = card
        self.boxes = boxes
        self.score = score
        self.calls: list[int] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        c = len(self.card.class_names)
        h, w = self.card.input_hw
        out = np.zeros((len(images), h // 4, w // 4, c + 4), np.float32)
        for i in range(len(images)):
            x0, y0, x1, y1 = self.boxes[i % len(self.boxes)]
            cx, cy = (x0 + x1) / 8, (y0 + y1) / 8  # centre in cells
            row, col = int(cy), int(cx)
            out[i, row, col, i % c] = self.score
            out[i, row, col, c : c + 2] = (x1 - x0, y1 - y0)
            out[i, row, col, c + 2 :] = (cx - col, cy - row)
        return out


def _results(items: list) -> list[ImageResult]:
    return [item for item in items if isinstance(item, ImageResult)]


@pytest.mark.parametrize(
    ("mode", "boxes", "expected"),
    [
        # stretch 64 x 64: x scales by 64/200 and 64/100, y by 64/100 and 64/300
        ("stretch", [(16, 16, 48, 48), (16, 16, 48, 48)], [(50, 25, 150, 75), (25, 75, 75, 225)]),
        # letterbox: 200 x 100 -> 64 x 32 content, 16 px bands above and below; 100 x 300 -> 21 x 64,
        # 21 px band left (scale x 21/100, y 64/300)
        (
            "letterbox",
            [(16, 24, 48, 40), (24, 16, 40, 48)],
            [(50, 25, 150, 75), (3 / 0.21, 75, 19 / 0.21, 225)],
        ),
    ],
)
def test_boxes_are_mapped_back_to_original_pixels(tmp_path: Path, mode: str, boxes, expected) -> None:
    wide = write_image(tmp_path / "wide.jpg", 200, 100, 0)
    tall = write_image(tmp_path / "tall.png", 100, 300, 1)
    fake = FakeDetector(ModelCard("detector", CLASSES, HW, resize_mode=mode), boxes)
    results = _results(list(predict_files(fake, [wide, tall], score_threshold=0.5)))
    assert fake.calls == [2], "both images go in one batch"
    assert [(r.path, r.width, r.height) for r in results] == [(wide, 200, 100), (tall, 100, 300)]
    for result, box, label in zip(results, expected, (0, 1)):
        assert len(result.detections) == 1
        np.testing.assert_allclose(result.detections.boxes[0], box, atol=1e-3)
        assert result.detections.labels.tolist() == [label]
        np.testing.assert_allclose(result.detections.scores, [0.9], atol=1e-6)


def test_score_threshold_defaults_to_the_card_and_can_be_overridden(tmp_path: Path) -> None:
    image = write_image(tmp_path / "x.jpg", 64, 64, 0)
    fake = FakeDetector(ModelCard("detector", CLASSES, HW, score_threshold=0.95), [(8, 8, 24, 24)])
    assert len(_results(list(predict_files(fake, [image])))[0].detections) == 0
    assert len(_results(list(predict_files(fake, [image], score_threshold=0.9)))[0].detections) == 1
    with pytest.raises(ValueError, match="score threshold"):
        list(predict_files(fake, [image], score_threshold=1.5))


def test_batches_keep_the_input_order(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i}.png", 40 + 8 * i, 50, i) for i in range(5)]
    fake = FakeDetector(ModelCard("detector", CLASSES, HW), [(8, 8, 40, 40)])
    results = _results(list(predict_files(fake, paths, batch_size=2)))
    assert fake.calls == [2, 2, 1]
    assert [r.path for r in results] == paths and [r.width for r in results] == [40, 48, 56, 64, 72]


def test_single_box_outputs_give_one_detection_argmax_class_in_original_pixels() -> None:
    card = ModelCard("improved", ["a", "b", "c"], (64, 64))
    from sprint2.images import Resize

    how = Resize(scale_x=0.5, scale_y=0.25, pad_x=0.0, pad_y=0.0, out_w=64, out_h=64)  # a 128 x 256 image
    outputs = {
        "class": np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], np.float32),
        "box": np.array([[8, 8, 32, 48], [0, 0, 10, 10]], np.float32),
    }
    dets = to_detections(outputs, card, [how, how], [(128, 256), (128, 256)], score_threshold=0.6)
    assert len(dets[0]) == 1 and len(dets[1]) == 0  # the second's best probability is 0.5 < 0.6
    np.testing.assert_allclose(dets[0].boxes, [[16, 32, 64, 192]], atol=1e-4)
    assert dets[0].labels.tolist() == [1] and dets[0].scores.tolist() == pytest.approx([0.7])
    unnamed = [outputs["box"], outputs["class"]]  # a TFLite signature's output_0, output_1
    again = to_detections(unnamed, card, [how, how], [(128, 256), (128, 256)], score_threshold=0.6)
    np.testing.assert_array_equal(again[0].boxes, dets[0].boxes)


# --------------------------------------------------------------------------------------------
# Finding images and naming outputs
# --------------------------------------------------------------------------------------------


def test_find_images_is_recursive_sorted_and_skips_non_images(images: Path) -> None:
    found = find_images([images])
    assert [p.relative_to(images).as_posix() for p in found] == sorted(
        ["a.jpg", "b.png", "broken.jpg", "nested/a.jpg", "nested/deeper/c.jpg", "notes.jpg"]
    )
    explicit = find_images([images / "readme.txt", images / "a.jpg", images])  # named files always tried
    assert explicit[:2] == [images / "readme.txt", images / "a.jpg"] and len(explicit) == 7
    assert images / "nested" / "a.jpg" not in find_images([images], exclude=images / "nested")
    with pytest.raises(FileNotFoundError, match="missing"):
        find_images([images / "missing"])


def test_output_names_never_collide(tmp_path: Path) -> None:
    paths = [tmp_path / "d" / "x.jpg", tmp_path / "d" / "x.png", tmp_path / "d" / "sub" / "x.jpg"]
    paths.append(tmp_path / "d" / "X.JPG")
    names = output_names(paths, tmp_path / "out")
    rel = [names[p].relative_to(tmp_path / "out").as_posix() for p in paths]
    assert rel == ["x_jpg", "x_png", "sub/x", "X_jpg_2"]
    assert len({r.lower() for r in rel}) == len(rel)
    with pytest.raises(ValueError, match="beside the input images"):
        output_names(paths, tmp_path / "d")


def test_run_predict_writes_distinct_outputs_for_equal_stems(images: Path, tmp_path: Path) -> None:
    fake = FakeDetector(ModelCard("detector", CLASSES, HW), [(8, 8, 40, 40)])
    out = tmp_path / "out"
    result = run_predict(fake, [images / "a.jpg", images / "nested" / "a.jpg"], out)
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "a.jpg",
        "a.xml",
        "nested/a.jpg",
        "nested/a.xml",
        "detections.json",
    }
    assert [img["width"] for img in result["images"]] == [120, 90]
    with pytest.raises(ValueError, match="no images found"):
        run_predict(fake, [_empty(tmp_path)], tmp_path / "other")


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("no images here\n")
    return folder


# --------------------------------------------------------------------------------------------
# VOC XML
# --------------------------------------------------------------------------------------------


def test_voc_xml_round_trips_through_the_projects_parser(tmp_path: Path) -> None:
    image = write_image(tmp_path / "img.jpg", 100, 60, 0)
    dets = Detections(
        [[10.4, 5.6, 40.2, 30.5], [0.0, 20.0, 99.7, 60.0], [50.2, 50.1, 50.4, 50.3]],
        [0.9, 0.8, 0.7],
        [1, 0, 1],
    )
    xml_path = tmp_path / "img.xml"
    xml_path.write_bytes(voc_xml(ImageResult(image, 100, 60, dets), CLASSES))
    ann = parse_annotation(xml_path, class_names=CLASSES)  # check=True: no degenerate box
    assert (ann.width, ann.height, ann.depth) == (100, 60, 3)
    assert ann.image_path.name == "img.jpg"
    assert [o.name for o in ann.objects] == ["dog", "cat", "dog"]
    boxes = np.array([o.box for o in ann.objects])
    np.testing.assert_allclose(boxes[:2], dets.boxes[:2], atol=0.5)  # whole pixels: within half a pixel
    assert tuple(boxes[2]) == (50, 50, 51, 51)  # a sub-pixel box keeps one pixel
    assert [o.truncated for o in ann.objects] == [False, True, False]
    assert not any(o.difficult for o in ann.objects)
    from lxml import etree

    root = etree.fromstring(xml_path.read_bytes())
    assert [e.text for e in root.iter("pose")] == ["Unspecified"] * 3
    assert root.findtext("folder") == tmp_path.name and root.findtext("segmented") == "0"


def test_voc_box_keeps_boxes_inside_the_image_and_at_least_one_pixel() -> None:
    assert voc_box((-3.0, 2.4, 10.6, 2.45), 20, 10) == (0, 2, 11, 3)
    assert voc_box((19.8, 9.9, 20.4, 10.0), 20, 10) == (19, 9, 20, 10)


# --------------------------------------------------------------------------------------------
# The command line, end to end with a real detector
# --------------------------------------------------------------------------------------------


def test_cli_predicts_good_images_and_names_bad_ones(
    keras_detector: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(keras_detector), str(images), "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result == json.loads((out / "detections.json").read_text())

    assert set(result) == {"classes", "images", "errors"} and result["classes"] == CLASSES
    assert [Path(e["path"]).relative_to(images).as_posix() for e in result["errors"]] == sorted(BAD)
    for error in result["errors"]:
        assert BAD[Path(error["path"]).name] in error["reason"]
        assert f"{error['path']}: {error['reason']}" in captured.err
    assert [Path(i["path"]).relative_to(images).as_posix() for i in result["images"]] == GOOD
    total = 0
    for image in result["images"]:
        assert set(image) == {"path", "width", "height", "detections"}
        original = decode_image(image["path"])
        assert (image["height"], image["width"]) == original.shape[:2]
        for det in image["detections"]:
            assert set(det) == {"class", "score", "box"} and det["class"] in CLASSES
            assert 0.6 <= det["score"] <= 1.0  # the card's threshold
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 < x1 <= image["width"] and 0 <= y0 < y1 <= image["height"]
        total += len(image["detections"])

        stem = out / Path(image["path"]).relative_to(images).with_suffix("")
        drawn = decode_image(stem.with_name(stem.name + Path(image["path"]).suffix))
        assert drawn.shape == original.shape
        if image["detections"]:
            assert np.abs(drawn.astype(int) - original).max() > 100, "boxes are drawn on the image"
        ann = parse_annotation(stem.with_name(stem.name + ".xml"), class_names=CLASSES)
        assert (ann.width, ann.height) == (image["width"], image["height"])
        assert [o.name for o in ann.objects] == [d["class"] for d in image["detections"]]
        if image["detections"]:
            np.testing.assert_allclose(
                [o.box for o in ann.objects], [d["box"] for d in image["detections"]], atol=1.0
            )
    assert total > 0, "the heatmap was scaled to give detections above 0.6"


@pytest.mark.slow
def test_cli_exit_codes(keras_detector: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "out")
    assert main(["predict", str(keras_detector), str(images / "b.png"), "--out", out]) == 0
    assert "1 images" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "none.keras"), str(images), "--out", out]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main(["predict", str(keras_detector), str(_empty(tmp_path)), "--out", out]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["predict", str(keras_detector), str(images / "nope"), "--out", out]) == 2
    assert main(["predict", str(keras_detector), str(images), "--out", str(images)]) == 2
    assert "beside the input images" in capsys.readouterr().err
    assert main(["predict", str(keras_detector), str(images), "--score", "2"]) == 2
    lone = tmp_path / "lone" / "model.keras"
    lone.parent.mkdir()
    lone.write_bytes(keras_detector.read_bytes())
    assert main(["predict", str(lone), str(images), "--out", out]) == 2
    assert "model card missing" in capsys.readouterr().err
    ModelCard("detector", ["only-one"], HW).write(lone)
    assert main(["predict", str(lone), str(images), "--out", out]) == 2
    assert "outputs do not fit" in capsys.readouterr().err


def test_single_box_model_gives_its_argmax_and_probability(tmp_path: Path, images: Path) -> None:
    import keras

    from sprint2.images import decode_resized
    from sprint2.model import build_model

    keras.utils.set_random_seed(1)
    model = build_model("improved", len(CLASSES), 64)
    path = tmp_path / "model.keras"
    model.save(path)
    ModelCard("improved", CLASSES, (64, 64)).write(path)
    predictor = load_predictor(path)
    paths = [images / name for name in GOOD]
    results = _results(list(predict_files(predictor, paths, score_threshold=0.0)))
    assert [len(r.detections) for r in results] == [1] * len(GOOD)
    for path_, result in zip(paths, results):
        img, how, size = decode_resized(path_, 64)
        out = model(img[np.newaxis].astype(np.float32), training=False)
        probs = np.asarray(out["class"])[0]
        assert result.detections.labels[0] == int(np.argmax(probs))
        assert result.detections.scores[0] == pytest.approx(float(probs.max()), abs=1e-5)
        shift, scale = [how.pad_x, how.pad_y] * 2, [how.scale_x, how.scale_y] * 2
        box = (np.asarray(out["box"])[0] - shift) / scale
        box = np.clip(box, 0, [size[0], size[1]] * 2)
        np.testing.assert_allclose(result.detections.boxes[0], box, atol=1e-2)


# --------------------------------------------------------------------------------------------
# LiteRT
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tflite_gives_the_keras_detections(keras_detector: Path, tflite_detector: Path, images: Path) -> None:
    paths = find_images([images])
    runs = []
    for model in (keras_detector, tflite_detector):
        items = list(predict_files(load_predictor(model), paths, batch_size=3))
        assert sorted(Path(f.path).name for f in items if isinstance(f, Failure)) == sorted(BAD)
        runs.append(_results(items))
    keras_run, tflite_run = runs
    assert [r.path for r in keras_run] == [r.path for r in tflite_run] == [images / g for g in GOOD]
    assert sum(len(r.detections) for r in keras_run) > 0
    for a, b in zip(keras_run, tflite_run):
        assert a.detections.labels.tolist() == b.detections.labels.tolist(), a.path
        np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, atol=TFLITE_BOX_ATOL_PX)
        np.testing.assert_allclose(a.detections.scores, b.detections.scores, atol=TFLITE_SCORE_ATOL)


def test_tflite_path_does_not_import_tensorflow(tflite_detector: Path, images: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sprint2.predict import run_predict\n"
        f"result = run_predict({str(tflite_detector)!r}, [{str(images)!r}], {str(tmp_path / 'out')!r})\n"
        "heavy = sorted({'tensorflow', 'keras', 'tf_keras'} & set(sys.modules))\n"
        "print(len(result['images']), len(result['errors']), heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == f"{len(GOOD)} {len(BAD)} []"
    assert (tmp_path / "out" / "detections.json").is_file()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")
def test_tflite_with_named_heads_and_uint8_io(
    keras_detector: Path, split_tflite_detectors: dict[str, Path], images: Path
) -> None:
    from sprint2.images import decode_resized

    paths = [images / name for name in GOOD]
    reference = _results(list(predict_files(load_predictor(keras_detector), paths)))
    named = _results(list(predict_files(load_predictor(split_tflite_detectors["float32"]), paths)))
    for a, b in zip(reference, named):
        assert a.detections.labels.tolist() == b.detections.labels.tolist(), a.path
        np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, atol=TFLITE_BOX_ATOL_PX)

    quantized = load_predictor(split_tflite_detectors["int8_io"])
    assert quantized._input["dtype"] == np.uint8  # the (de)quantizing branch is the one under test
    batch = np.stack([decode_resized(p, HW, "letterbox")[0] for p in paths]).astype(np.float32)
    outputs = quantized(batch)
    expected = np.asarray(load_predictor(keras_detector).model(batch, training=False))
    for head, channels in (("heatmap", slice(0, 2)), ("size", slice(2, 4)), ("offset", slice(4, 6))):
        assert outputs[head].dtype == np.float32
        np.testing.assert_allclose(outputs[head], expected[..., channels], atol=INT8_ATOL[head], err_msg=head)


#: sprint2.quantize's detector variants against Keras float on raw heads (input-pixel sizes of ~32 px):
#: float16 weights round at ~1e-3 relative; int8 weights or activations at a few quantization steps.
VARIANT_ATOL = {
    "float32": {"heatmap": 1e-5, "size": 1e-3, "offset": 1e-5},
    "float16": {"heatmap": 0.01, "size": 0.2, "offset": 0.01},
    "dynamic_int8": {"heatmap": 0.05, "size": 1.0, "offset": 0.03},
    "int8": {"heatmap": 0.05, "size": 1.0, "offset": 0.03},
}


@pytest.fixture(scope="module")
def quantized_detectors(keras_detector: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every detector variant written by sprint2.quantize.convert_detector, each with its own card."""
    import keras

    from sprint2.quantize import convert_detector

    model = keras.models.load_model(keras_detector, compile=False)
    card = ModelCard.read(keras_detector)
    card.extra["width"] = 0.25
    samples = np.random.default_rng(1).uniform(0, 255, (16, *HW, 3)).astype(np.float32)
    paths, _ = convert_detector(model, card, tmp_path_factory.mktemp("quantized"), samples)
    return paths


@pytest.mark.slow
def test_each_quantized_variant_runs_from_its_own_card_near_keras(
    keras_detector: Path, quantized_detectors: dict[str, Path], images: Path
) -> None:
    from sprint2.images import decode_resized

    paths = [images / name for name in GOOD]
    batch = np.stack([decode_resized(p, HW, "letterbox")[0] for p in paths]).astype(np.float32)
    keras_predictor = load_predictor(keras_detector)
    expected = np.asarray(keras_predictor.model(batch, training=False))
    reference = _results(list(predict_files(keras_predictor, paths)))
    assert set(quantized_detectors) == set(VARIANT_ATOL)
    for variant, path in quantized_detectors.items():
        assert path.name == f"{variant}.tflite" and path.with_suffix(".json").is_file()
        predictor = load_predictor(path)
        assert predictor.card.extra["variant"] == variant and predictor.card.resize_mode == "letterbox"
        outputs = predictor(batch)
        for head, channels in (("heatmap", slice(0, 2)), ("size", slice(2, 4)), ("offset", slice(4, 6))):
            np.testing.assert_allclose(
                outputs[head],
                expected[..., channels],
                atol=VARIANT_ATOL[variant][head],
                err_msg=variant + head,
            )
    float32 = _results(list(predict_files(load_predictor(quantized_detectors["float32"]), paths)))
    assert sum(len(r.detections) for r in reference) > 0
    for a, b in zip(reference, float32):
        assert a.detections.labels.tolist() == b.detections.labels.tolist(), a.path
        np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, atol=TFLITE_BOX_ATOL_PX)


def test_cli_predicts_with_a_quantized_int8_file(
    quantized_detectors: dict[str, Path], images: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    code = main(
        ["predict", str(quantized_detectors["int8"]), str(images / "a.jpg"), "--out", str(out), "--json"]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["classes"] == CLASSES and [Path(i["path"]).name for i in printed["images"]] == ["a.jpg"]
    assert (out / "detections.json").is_file() and (out / "a.xml").is_file()
