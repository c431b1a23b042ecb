"""sprint2.quantize (and sprint2.tflite_variants, which makes the files): every TFLite variant converts,
runs under LiteRT by output name, and is measured; the detector's variants (QAT included) are scored by
the detection metrics of training."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from sprint2 import quantize as q

pytestmark = pytest.mark.slow  # trains, converts or starts processes: not in `make test-fast`

SIZE = 32


def tiny_model(num_classes: int, size: int = SIZE, seed: int = 0) -> keras.Model:
    """A small model with the project's contract: 0..255 float input, {"class": softmax, "box": px}.

    The box head's bias sits at image-sized pixel values so that mixing up the two outputs
    (same shape when num_classes == 4) shows up as a large difference.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    x = layers.Conv2D(32, 3, strides=2, activation="relu")(x)  # > 1024 weights: dynamic-range quantizes it
    x = layers.GlobalAveragePooling2D()(x)
    cls = layers.Dense(num_classes, activation="softmax", name="class")(x)
    box = layers.Dense(
        4, name="box", bias_initializer=keras.initializers.Constant([4.0, 6.0, size - 6.0, size - 4.0])
    )(x)
    return keras.Model(inputs, {"class": cls, "box": box})


def images(n: int, size: int = SIZE, seed: int = 1) -> np.ndarray:
    """Random 0..255 float32 images with some structure (a bright square) so activations vary."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 120, (n, size, size, 3)).astype(np.float32)
    for img in out:
        x0, y0 = rng.integers(0, size // 2, 2)
        img[y0 : y0 + size // 3, x0 : x0 + size // 3] += 130.0
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, dict[str, Path]]:
    """The tiny model (C == 4, same shape as the box) converted once to every variant."""
    model = tiny_model(num_classes=4)
    out = tmp_path_factory.mktemp("tflite")
    paths = q.convert_all(model, out, q.representative_sample(images(40, seed=2), count=16, seed=0))
    return model, paths


def test_all_variants_written_to_out_dir(converted: tuple[keras.Model, dict[str, Path]]) -> None:
    _, paths = converted
    assert set(paths) == set(q.VARIANTS)
    for name, path in paths.items():
        assert path.name == f"{name}.tflite" and path.stat().st_size > 0
    assert (next(iter(paths.values())).parent / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.parametrize("variant", q.VARIANTS)
def test_variant_runs_batch1_and_batched(
    converted: tuple[keras.Model, dict[str, Path]], variant: str
) -> None:
    model, paths = converted
    runner = q.single_box_runner(paths[variant], num_threads=1)
    x = images(6)
    one = runner(x[:1])
    assert one["class"].shape == (1, 4) and one["box"].shape == (1, 4)
    many = runner(x)
    assert many["class"].shape == (6, 4) and many["box"].shape == (6, 4)
    again = runner(x[:1])  # resized back down
    for name in q.OUTPUT_NAMES:
        assert again[name].dtype == np.float32
        np.testing.assert_allclose(again[name], one[name], atol=1e-6)
        # Batched rows equal single-image runs (quantized too: per-tensor activation scales are fixed).
        np.testing.assert_allclose(many[name][:1], one[name], atol=1e-4)
    np.testing.assert_allclose(many["class"].sum(1), 1.0, atol=0.02)


@pytest.mark.parametrize("variant", q.VARIANTS)
def test_outputs_mapped_by_name_not_position(
    converted: tuple[keras.Model, dict[str, Path]], variant: str
) -> None:
    """With C == 4 both outputs have shape (N, 4); each must still match Keras' output of the same name."""
    model, paths = converted
    x = images(8, seed=3)
    ref = q.keras_predictor(model)(x)
    got = q.single_box_runner(paths[variant], num_threads=2)(x)
    assert np.abs(ref["box"] - ref["class"]).min() > 1.0  # the two outputs are far apart
    np.testing.assert_allclose(got["class"], ref["class"], atol=0.05)
    np.testing.assert_allclose(got["box"], ref["box"], atol=1.0)


def test_float32_matches_keras_within_1e_4(converted: tuple[keras.Model, dict[str, Path]]) -> None:
    model, paths = converted
    x = images(10, seed=4)
    ref = q.keras_predictor(model)(x)
    got = q.predict_batched(q.single_box_runner(paths["float32"], num_threads=2), x, batch_size=4)
    for name in q.OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-4, rtol=0)


def test_quantized_variants_are_smaller(converted: tuple[keras.Model, dict[str, Path]]) -> None:
    _, paths = converted
    size = {name: p.stat().st_size for name, p in paths.items()}
    for name in ("dynamic_int8", "float16", "int8", "int8_io"):
        assert size[name] < size["float32"], (name, size)


def test_int8_io_takes_uint8_pixels_and_returns_floats(
    converted: tuple[keras.Model, dict[str, Path]],
) -> None:
    model, paths = converted
    runner = q.single_box_runner(paths["int8_io"], num_threads=1)
    assert runner.input_dtype == np.uint8
    assert q.single_box_runner(paths["int8"], num_threads=1).input_dtype == np.float32
    x = images(4, seed=5)
    # uint8 input of 0..255 pixels: the interpreter sees exactly the image (scale 1, zero point 0).
    assert np.array_equal(runner._to_input(x), x.astype(np.uint8))
    out = runner(x)
    assert out["box"].dtype == np.float32 and out["box"].max() > 10.0  # dequantized pixels, not raw codes


def test_convert_rejects_unknown_variant_and_missing_calibration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        q.convert(tmp_path, "int4")
    saved = q.export_saved_model(tiny_model(3), tmp_path)
    with pytest.raises(ValueError, match="representative"):
        q.convert(saved, "int8", representative=None)


def test_runner_requires_named_outputs(tmp_path: Path) -> None:
    """A model whose outputs are not named class/box is refused instead of guessed by position."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(
        inputs, {"scores": layers.Dense(3, name="scores")(x), "box": layers.Dense(4, name="box")(x)}
    )
    path = tmp_path / "bad.tflite"
    path.write_bytes(q.convert(q.export_saved_model(model, tmp_path), "float32"))
    with pytest.raises(ValueError, match="lack"):
        q.single_box_runner(path, num_threads=1)


def test_representative_sample_is_seeded_subset() -> None:
    x = images(30)
    a = q.representative_sample(x, count=10, seed=7)
    b = q.representative_sample(x, count=10, seed=7)
    c = q.representative_sample(x, count=10, seed=8)
    assert a.shape == (10, SIZE, SIZE, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert all(any(np.array_equal(row, img) for img in x) for row in a)
    assert len(q.representative_sample(x, count=500)) == 30


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(hi - lo, 0, None).prod(1)
    union = (
        np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1) + np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1) - inter
    )
    return inter / np.maximum(union, 1e-9)


def test_measure_variants_report_keys_and_types(tmp_path: Path) -> None:
    model = tiny_model(num_classes=3)
    test_x = images(12, seed=6)
    labels = np.arange(12) % 3
    gt = np.tile([[4.0, 6.0, SIZE - 6.0, SIZE - 4.0]], (12, 1))

    def metrics(probs: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
        return {
            "accuracy": float((probs.argmax(1) == labels).mean()),
            "mean_iou": float(_iou(boxes, gt).mean()),
        }

    report = q.measure_variants(
        model,
        images(20, seed=7),
        test_x,
        metrics,
        out_dir=tmp_path,
        rounds=2,
        min_seconds=0.02,
        batch_size=5,
        num_threads=1,
        representative_count=8,
        keras_bytes=123_456,
    )
    assert [r["name"] for r in report["variants"]] == list(q.VARIANTS)
    types = {
        "name": str,
        "bytes": int,
        "size_ratio": float,
        "size_ratio_keras": float,
        "latency_ms": float,
        "latency_spread": float,
        "batched_ms_per_image": float,
        "speedup": float,
        "batched_speedup": float,
        "throughput_ips": float,
        "accuracy": float,
        "mean_iou": float,
        "max_diff_class": float,
        "max_diff_box_px": float,
        "io_dtype": str,
    }
    for row in report["variants"]:
        for key, typ in types.items():
            assert isinstance(row[key], typ), (row["name"], key, row[key])
        assert row["bytes"] == Path(report["files"][row["name"]]).stat().st_size
        assert math.isclose(row["size_ratio_keras"], row["bytes"] / 123_456)
        assert row["latency_ms"] > 0 and row["batched_ms_per_image"] > 0 and row["latency_spread"] >= 0
        assert len(row["latency_rounds_ms"]) == 2
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["mean_iou"] <= 1.0
    f32 = report["variants"][0]
    assert f32["size_ratio"] == 1.0 and f32["max_diff_class"] < 1e-4 and f32["max_diff_box_px"] < 1e-4
    ref = report["reference"]
    assert ref["name"] == "keras" and ref["speedup"] == 1.0 and ref["bytes"] == 123_456
    assert isinstance(ref["latency_ms"], float) and isinstance(ref["predict_latency_ms"], float)
    assert math.isclose(ref["latency_ms"] / f32["latency_ms"], f32["speedup"])
    assert f32["accuracy"] == ref["accuracy"] and math.isclose(f32["mean_iou"], ref["mean_iou"], abs_tol=1e-5)
    assert report["threads"]["litert"] == 1 and report["representative_images"] == 8
    assert report["test_images"] == 12 and report["rounds"] == 2 and report["kind"] == "single_box"
    targets = q.check_targets(report, "int8")
    assert set(targets) == {"size_ratio", "speedup", "accuracy_drop", "mean_iou_drop"}
    assert targets["size_ratio"]["met"] == (report["variants"][3]["size_ratio"] <= 0.3)


def test_improved_model_converts_with_names_mapped(tmp_path: Path) -> None:
    """The real improved architecture (CoordConv, pixel box head) converts and runs under LiteRT."""
    model_mod = pytest.importorskip("sprint2.model")
    keras.utils.set_random_seed(0)
    model = model_mod.build_model("improved", num_classes=4, image_size=64)
    x = images(6, size=64, seed=8)
    paths = q.convert_all(model, tmp_path, x, variants=("float32", "int8"))
    ref = q.keras_predictor(model)(x)
    f32 = q.single_box_runner(paths["float32"], num_threads=2)(x)
    for name in q.OUTPUT_NAMES:
        np.testing.assert_allclose(f32[name], ref[name], atol=1e-4, rtol=1e-5)
    int8 = q.single_box_runner(paths["int8"], num_threads=2)(x)
    np.testing.assert_allclose(
        int8["box"], ref["box"], atol=3.0
    )  # 64-px boxes, a few px of int8 error at most
    np.testing.assert_allclose(int8["class"], ref["class"], atol=0.1)
    assert paths["int8"].stat().st_size < 0.3 * paths["float32"].stat().st_size


def test_quantize_report_end_to_end(tmp_path: Path) -> None:
    """The CLI's function on generated VOC data and a saved .keras model."""
    for name in ("sprint2.loading", "sprint2.synthetic"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} not written yet")
    from sprint2.synthetic import generate

    data = generate(tmp_path / "data", train=16, test=6, classes=3, seed=0)
    model_path = tmp_path / "tiny.keras"
    tiny_model(num_classes=3).save(model_path)
    report = q.quantize_report(
        model_path, data, out_dir=tmp_path / "out", rounds=1, min_seconds=0.01, max_images=4, qat=False
    )
    assert [r["name"] for r in report["variants"]] == list(q.VARIANTS)
    assert report["test_images"] == 4 and report["image_size"] == SIZE
    assert report["reference"]["bytes"] == model_path.stat().st_size
    for row in report["variants"]:
        assert Path(report["files"][row["name"]]).parent == tmp_path / "out"
        assert {"accuracy", "mean_iou", "hit_rate_iou50"} <= set(row)


def test_tfmot_refuses_a_keras3_model_as_it_is() -> None:
    """Pins why QAT needs the tf_keras twin: tfmot 0.8 (on tf_keras 2.21) refuses a Keras 3 model outright."""
    pytest.importorskip("tensorflow_model_optimization")
    outcome = q.try_quantization_aware_training(tiny_model(3))
    assert outcome.versions["tensorflow"] == tf.__version__ and outcome.versions["keras"] == keras.__version__
    assert outcome.versions["tfmot"] and outcome.versions["tf_keras"]
    assert not outcome.supported and outcome.quantized_model is None
    assert (
        outcome.error
        == "ValueError: `to_quantize` can only either be a keras Sequential or Functional model."
    )
    assert set(outcome.as_dict()) == {"supported", "error", "versions"}


def test_qat_libraries_load_only_inside_the_qat_path() -> None:
    """Importing quantize (and the variants it re-exports) loads neither tf_keras nor tfmot."""
    code = (
        "import sys\n"
        "import sprint2.quantize as q, sprint2.tflite_variants as v, sprint2.timing as t\n"
        "print(sorted(m for m in ('tf_keras', 'tensorflow_model_optimization') if m in sys.modules))\n"
        "print(all(getattr(q, n) is getattr(v, n) for n in ('convert_detector', 'QAT_VARIANT', 'QatRun')))\n"
        "print(q.time_interleaved is t.time_interleaved and set(q.__all__) <= set(dir(q)))\n"
    )
    # Importing tfmot (an earlier test may have) sets TF_USE_LEGACY_KERAS=1, which makes TF load tf_keras.
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True", "True"], out.stdout


def test_qat_reports_import_error_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_model_optimization", None)  # makes the import raise
    outcome = q.try_quantization_aware_training(tiny_model(3))
    assert not outcome.supported
    assert outcome.error.startswith(("ImportError", "ModuleNotFoundError"))
    assert "tensorflow_model_optimization" in outcome.error


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------

DET_HW = (64, 64)
DET_WIDTH = 0.25
#: Full int8 (PTQ or QAT) against Keras float on raw heads: a few quantization steps of each head.
DET_INT8_ATOL = {"heatmap": 0.05, "size": 1.5, "offset": 0.03}


def tiny_detector(num_classes: int) -> keras.Model:
    """An untrained small detector whose heatmap varies strongly across cells (so peaks exist)."""
    from sprint2.detector import build_detector

    keras.utils.set_random_seed(0)
    model = build_detector(num_classes, DET_HW, width=DET_WIDTH)
    layer = model.get_layer("heatmap")
    kernel, bias = layer.get_weights()
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(0.0, 3.0, kernel.shape).astype(np.float32), np.zeros_like(bias)])
    return model


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny detector on generated data, saved with its card, through quantize_report with one QAT epoch."""
    from sprint2.modelcard import ModelCard
    from sprint2.synthetic import generate

    root = tmp_path_factory.mktemp("detector")
    data = generate(root / "data", train=16, test=6, classes=2, seed=0)
    from sprint2.loading import load_splits

    classes = list(load_splits(data, DET_HW[0], seed=0)[0].class_names)
    model_path = root / "model" / "model.keras"
    model_path.parent.mkdir()
    tiny_detector(len(classes)).save(model_path)
    extra = {"width": DET_WIDTH, "seed": 0, "val_fraction": None, "default_val_fraction": 0.0}
    ModelCard("detector", classes, DET_HW, score_threshold=0.3, extra=extra).write(model_path)
    report = q.quantize_report(
        model_path,
        data,
        out_dir=root / "tflite",
        rounds=2,
        min_seconds=0.02,
        batch_size=4,
        num_threads=1,
        representative_count=8,
        qat=True,
        qat_epochs=1,
        qat_control=True,
    )
    return model_path, report


def test_detector_report_has_every_variant_and_the_issues_fields(detector_run: tuple[Path, dict]) -> None:
    model_path, report = detector_run
    assert report["kind"] == "detector" and report["image_size"] == list(DET_HW)
    assert [r["name"] for r in report["variants"]] == [*q.DETECTOR_VARIANTS, q.QAT_VARIANT]
    types = {"name": str, "bytes": int, "size_ratio": float, "latency_ms": float, "speedup": float}
    for row in report["variants"]:
        for key, typ in types.items():
            assert isinstance(row[key], typ), (row["name"], key)
        assert isinstance(row["map50"], float) and isinstance(row["map50_95"], float), row["name"]
        assert row["bytes"] == Path(report["files"][row["name"]]).stat().st_size
        assert len(row["latency_rounds_ms"]) == 2 and row["batched_ms_per_image"] > 0
        assert math.isclose(row["speedup"], report["reference"]["latency_ms"] / row["latency_ms"])
    rows = {r["name"]: r for r in report["variants"]}
    assert rows["float32"]["size_ratio"] == 1.0
    assert rows["int8"]["bytes"] < rows["float16"]["bytes"] < rows["float32"]["bytes"]
    assert report["reference"]["bytes"] == model_path.stat().st_size and report["test_images"] == 6


def test_detector_variants_agree_with_keras_per_head(detector_run: tuple[Path, dict]) -> None:
    _, report = detector_run
    rows = {r["name"]: r for r in report["variants"]}
    for head in ("heatmap", "size", "offset"):
        assert rows["float32"][f"max_diff_{head}"] < 1e-3, head
        assert rows["float16"][f"max_diff_{head}"] < 0.05 * (30 if head == "size" else 1), head
        assert rows["int8"][f"max_diff_{head}"] < DET_INT8_ATOL[head], (head, rows["int8"])
    # The same evaluation code on (nearly) the same outputs gives the same mAP.
    assert rows["float32"]["map50"] == pytest.approx(report["reference"]["map50"], abs=1e-6)
    assert rows["float32"]["map50_95"] == pytest.approx(report["reference"]["map50_95"], abs=1e-6)


def test_detector_qat_fine_tunes_and_converts(detector_run: tuple[Path, dict]) -> None:
    _, report = detector_run
    qat = report["qat"]
    assert qat["requested"] and qat["stage"] == "converted" and qat["error"] is None
    assert (
        len(qat["epochs"]) == 1 and np.isfinite(qat["epochs"][0]["loss"]) and qat["epochs"][0]["steps"] == 2
    )
    row = next(r for r in report["variants"] if r["name"] == q.QAT_VARIANT)
    assert row["io_dtype"] == "float32" and row["size_ratio"] < 1.0
    control = qat["control"]  # the same fine-tuning without fake quantization, scored in float
    assert control["stage"] == "fine-tuned" and len(control["epochs"]) == 1
    assert isinstance(control["map50"], float) and isinstance(control["map50_95"], float)
    assert control["epochs"][0]["loss"] != qat["epochs"][0]["loss"]  # not the QAT run reported twice


def test_every_tflite_gets_a_card_naming_its_variant(detector_run: tuple[Path, dict]) -> None:
    from sprint2.modelcard import ModelCard, card_path

    model_path, report = detector_run
    source = ModelCard.read(model_path)
    for name, file in report["files"].items():
        assert card_path(file) == Path(file).with_suffix(".json")
        card = ModelCard.read(file)
        assert card.extra["variant"] == name
        assert (card.class_names, card.input_hw, card.resize_mode) == (
            source.class_names,
            source.input_hw,
            source.resize_mode,
        )


def test_detector_targets_compare_map_with_float32(detector_run: tuple[Path, dict]) -> None:
    _, report = detector_run
    checks = q.check_targets(report, "int8")
    assert set(checks) == {"size_ratio", "speedup", "map50_drop"}
    rows = {r["name"]: r for r in report["variants"]}
    drop = rows["float32"]["map50"] - rows["int8"]["map50"]
    assert checks["map50_drop"]["value"] == pytest.approx(drop)
    assert checks["map50_drop"]["met"] == (drop <= 0.02)
    assert checks["size_ratio"]["met"] == (rows["int8"]["size_ratio"] <= 0.3)
    with pytest.raises(ValueError, match="no variant 'int4'"):
        q.check_targets(report, "int4")


def test_a_failing_qat_call_is_reported_and_the_rest_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sprint2 import detector
    from sprint2.loading import load_splits
    from sprint2.modelcard import ModelCard
    from sprint2.synthetic import generate

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("quantize_model refused the twin")

    monkeypatch.setattr(detector, "quantization_aware", refuse)
    data = generate(tmp_path / "data", train=8, test=3, classes=2, seed=1)
    train, test = load_splits(data, DET_HW[0], seed=0)
    card = ModelCard("detector", list(train.class_names), DET_HW, extra={"width": DET_WIDTH})
    report = q.measure_detector(
        tiny_detector(2), card, train, test, out_dir=tmp_path / "out", rounds=1, min_seconds=0.01, qat=True
    )
    assert [r["name"] for r in report["variants"]] == list(q.DETECTOR_VARIANTS)
    assert report["qat"]["stage"].startswith("tf_keras twin + tfmot quantize_model")
    assert report["qat"]["error"] == "RuntimeError: quantize_model refused the twin"
