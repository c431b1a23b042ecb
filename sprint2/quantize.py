"""`sprint2 quantize`: every TFLite variant measured against the Keras float model, not just shrunk.

`sprint2 quantize` takes a trained `.keras` model and its data. `sprint2.tflite_variants` makes the
files: the detector's split-output form (each int8 head with a scale of its own) as float32, float16,
dynamic-range int8 and full-integer int8; with `qat`, its tf_keras twin fine-tuned quantization-aware
and converted to int8 as well; the single-box models' five variants (the four plus int8 with uint8
input/output). Here every variant runs under LiteRT (`sprint2.predict.LiteRTPredictor`) and is
compared with the Keras float model on the same test images in the same run: file size, batch-1 and
batched latency (interleaved rounds, `sprint2.timing.time_interleaved`: median and spread), and
accuracy by the code training is scored with (detector: decode + `evaluate_detections`; single-box:
`sprint2.evaluate`). The cards written beside the files let `sprint2 predict` run them.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from sprint2.errors import DataError
from sprint2.evaluate import OUTPUT_NAMES, Outputs, Predictor, evaluate, predict_batched
from sprint2.model import load_model
from sprint2.modelcard import ModelCard, card_path
from sprint2.predict import LiteRTPredictor
from sprint2.tflite_variants import (
    DEFAULT_QAT_BATCH,
    DEFAULT_QAT_EPOCHS,
    DEFAULT_QAT_LEARNING_RATE,
    DETECTOR_VARIANTS,
    QAT_VARIANT,
    VARIANTS,
    QatOptions,
    QatOutcome,
    QatRun,
    convert,
    convert_all,
    convert_detector,
    export_saved_model,
    fine_tuner,
    float_control,
    qat_fine_tune,
    qat_variant,
    representative_sample,
    try_quantization_aware_training,
    versions,
    write_variant,
)
from sprint2.timing import spread, time_interleaved

# The names other modules, notebooks and tests import from here, those of sprint2.tflite_variants included.
__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_MIN_SECONDS",
    "DEFAULT_QAT_BATCH",
    "DEFAULT_QAT_EPOCHS",
    "DEFAULT_QAT_LEARNING_RATE",
    "DEFAULT_ROUNDS",
    "DETECTOR_VARIANTS",
    "QAT_VARIANT",
    "VARIANTS",
    "MeasureOptions",
    "MetricsFn",
    "QatOutcome",
    "QatRun",
    "check_targets",
    "convert",
    "convert_all",
    "convert_detector",
    "detector_map",
    "export_saved_model",
    "is_detector",
    "keras_predictor",
    "latency_fields",
    "measure_detector",
    "measure_variants",
    "predict_call_latency",
    "qat_fine_tune",
    "quantize_report",
    "representative_sample",
    "run_batched",
    "single_box_runner",
    "threading_info",
    "time_interleaved",
    "try_quantization_aware_training",
    "versions",
    "write_variant",
]

logger = logging.getLogger(__name__)

DEFAULT_ROUNDS = 5
DEFAULT_MIN_SECONDS = 1.0
DEFAULT_BATCH = 8

MetricsFn = Callable[[np.ndarray, np.ndarray], Mapping[str, Any]]


@dataclass(frozen=True)
class MeasureOptions:
    """How the variants are measured: latency rounds and batch, LiteRT threads, calibration, .keras size."""

    rounds: int = DEFAULT_ROUNDS
    min_seconds: float = DEFAULT_MIN_SECONDS
    batch_size: int = DEFAULT_BATCH
    num_threads: int | None = None
    representative_count: int = 200
    seed: int = 0
    keras_bytes: int | None = None

    @property
    def threads(self) -> int:
        """LiteRT's thread count: num_threads, or every core when it is not given."""
        return int(self.num_threads or os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def single_box_runner(path: Path, num_threads: int | None, card: ModelCard | None = None) -> LiteRTPredictor:
    """The LiteRT runner of a single-box flatbuffer; ValueError unless it outputs "class" and "box" by name.

    With C == 4 both outputs have shape (N, 4), so they are never told apart by position or shape.
    """
    runner = LiteRTPredictor(path, card, num_threads=num_threads)
    missing = [name for name in OUTPUT_NAMES if name not in runner.output_names]
    if missing:
        raise ValueError(f"{path}: signature outputs {runner.output_names} lack {missing}")
    return runner


def keras_predictor(model: keras.Model) -> Predictor:
    """The Keras float reference: model(x, training=False) inside a tf.function with a fixed signature.

    Traced once for any batch size, so batch-1 timing measures the model, not Python dispatch
    or Model.predict's per-call setup (which would flatter TFLite). Dict outputs come back as a dict
    of arrays, a single output as one array.
    """
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def serve(x: tf.Tensor) -> Any:
        return model(x, training=False)

    def run(images: np.ndarray) -> Any:
        out = serve(tf.convert_to_tensor(np.asarray(images, np.float32)))
        if isinstance(out, Mapping):
            return {str(name): value.numpy() for name, value in out.items()}
        return out.numpy()

    return run


def run_batched(predict: Callable[[np.ndarray], Any], images: np.ndarray, batch_size: int) -> list[Any]:
    """The predictor's raw outputs for each chunk of `batch_size` images, in order."""
    return [
        predict(np.asarray(images[s : s + batch_size], np.float32)) for s in range(0, len(images), batch_size)
    ]


# --------------------------------------------------------------------------------------------
# Timing and the rows every report shares
# --------------------------------------------------------------------------------------------


def latency_fields(
    rounds_ms: Mapping[str, Sequence[float]], reference: Mapping[str, Sequence[float]]
) -> dict:
    """A row's latency numbers: medians over rounds, their spread ((max - min) / median), speedups."""
    one, many = np.median(rounds_ms["batch1"]), np.median(rounds_ms["batched"])
    return {
        "latency_ms": float(one),
        "latency_spread": spread(rounds_ms["batch1"]),
        "latency_rounds_ms": [float(v) for v in rounds_ms["batch1"]],
        "batched_ms_per_image": float(many),
        "batched_spread": spread(rounds_ms["batched"]),
        "throughput_ips": float(1e3 / many),
        "speedup": float(np.median(reference["batch1"]) / one),
        "batched_speedup": float(np.median(reference["batched"]) / many),
    }


def predict_call_latency(model: keras.Model, images: np.ndarray, calls: int = 20) -> float:
    """Mean ms of model.predict on one image: shown beside the reference to expose its per-call overhead."""
    singles = [np.asarray(images[i % len(images)][np.newaxis], np.float32) for i in range(calls + 2)]
    model.predict(singles[0], verbose=0)
    model.predict(singles[1], verbose=0)
    start = time.perf_counter()
    for x in singles[2:]:
        model.predict(x, verbose=0)
    return (time.perf_counter() - start) * 1e3 / max(calls, 1)


def threading_info(num_threads: int) -> dict[str, int]:
    """Threads each runtime uses: LiteRT's explicit count and TensorFlow's pools (0 = all cores)."""
    return {
        "litert": int(num_threads),
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count() or 1,
    }


def _size_fields(size: int, float_bytes: int | None, keras_bytes: int | None) -> dict[str, Any]:
    """A variant's file size and its ratios to the float32 TFLite file and to the .keras file."""
    return {
        "bytes": int(size),
        "size_ratio": float(size / float_bytes) if float_bytes else float("nan"),
        "size_ratio_keras": float(size / keras_bytes) if keras_bytes else float("nan"),
    }


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest absolute difference between two output arrays (0 when they are empty)."""
    return float(np.abs(a - b).max(initial=0.0))


def _measure_rows(
    model: keras.Model,
    lite: Mapping[str, LiteRTPredictor],
    paths: Mapping[str, Path],
    images: np.ndarray,
    options: MeasureOptions,
    score: Callable[[Predictor], tuple[Any, dict[str, Any]]],
    compare: Callable[[str, Any, Any], dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Keras float row and one row per LiteRT runner, timed interleaved on the same `images`.

    Every row has the size, the latency fields and what `score(predictor)` gives (it returns the
    outputs and their metrics); a variant's row adds `compare(name, outputs, Keras outputs)`.
    """
    reference = keras_predictor(model)
    ref_out, ref_scores = score(reference)
    times = time_interleaved(
        {"keras": reference, **lite},
        images,
        rounds=options.rounds,
        min_seconds=options.min_seconds,
        batch_size=options.batch_size,
    )
    ref_row = {
        "name": "keras",
        "bytes": options.keras_bytes,
        **latency_fields(times["keras"], times["keras"]),
        **ref_scores,
        # Not the reference: Model.predict's per-call setup, shown to say why it is not used.
        "predict_latency_ms": predict_call_latency(model, images),
    }
    float_bytes = paths["float32"].stat().st_size if "float32" in paths else None
    rows = []
    for name, runner in lite.items():
        out, scores = score(runner)
        rows.append(
            {
                "name": name,
                **_size_fields(paths[name].stat().st_size, float_bytes, options.keras_bytes),
                **latency_fields(times[name], times["keras"]),
                **scores,
                **compare(name, out, ref_out),
                "io_dtype": runner.input_dtype.name,
            }
        )
    return ref_row, rows


def _run_fields(
    paths: Mapping[str, Path], options: MeasureOptions, test_images: int, representative_images: int
) -> dict[str, Any]:
    """How a quantization report was measured: files, threads, images, the latency rule, the seed."""
    return {
        "files": {name: str(path) for name, path in paths.items()},
        "threads": threading_info(options.threads),
        "test_images": int(test_images),
        "rounds": int(options.rounds),
        "min_seconds": float(options.min_seconds),
        "batch_size": int(options.batch_size),
        "representative_images": int(representative_images),
        "seed": int(options.seed),
    }


# --------------------------------------------------------------------------------------------
# Single-box models
# --------------------------------------------------------------------------------------------


def _metrics_row(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics worth a table column (accuracy, mean IoU, hit rate), as floats."""
    keys = ("accuracy", "mean_iou", "hit_rate_iou50")
    return {k: float(metrics[k]) for k in keys if k in metrics}


def measure_variants(
    model: keras.Model,
    train_images: np.ndarray,
    test_images: np.ndarray,
    metrics: MetricsFn,
    *,
    out_dir: Path,
    variants: Sequence[str] = VARIANTS,
    rounds: int = DEFAULT_ROUNDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    batch_size: int = DEFAULT_BATCH,
    num_threads: int | None = None,
    representative_count: int = 200,
    seed: int = 0,
    keras_bytes: int | None = None,
    card: ModelCard | None = None,
) -> dict[str, Any]:
    """Converts a single-box `model` to each variant in out_dir and measures everything against Keras float.

    `metrics(probs, boxes)` scores one prediction per test image (the caller binds the dataset).
    Returns {"reference": Keras row, "variants": [rows], ...}; speedups are the Keras median latency
    over the variant's, timed interleaved on the same test images in this call.
    """
    options = MeasureOptions(
        rounds=rounds,
        min_seconds=min_seconds,
        batch_size=batch_size,
        num_threads=num_threads,
        representative_count=representative_count,
        seed=seed,
        keras_bytes=keras_bytes,
    )
    test_images = np.asarray(test_images, np.float32)
    representative = representative_sample(train_images, options.representative_count, options.seed)
    paths = convert_all(model, out_dir, representative, variants, card)
    lite = {name: single_box_runner(path, options.threads) for name, path in paths.items()}

    def score(run: Predictor) -> tuple[Outputs, dict[str, float]]:
        out = predict_batched(run, test_images, options.batch_size)
        return out, _metrics_row(metrics(out["class"], out["box"]))

    def compare(name: str, out: Outputs, ref_out: Outputs) -> dict[str, float]:
        return {
            "max_diff_class": _max_diff(out["class"], ref_out["class"]),
            "max_diff_box_px": _max_diff(out["box"], ref_out["box"]),
        }

    ref_row, rows = _measure_rows(model, lite, paths, test_images, options, score, compare)
    return {
        "kind": "single_box",
        "reference": ref_row,
        "variants": rows,
        **_run_fields(paths, options, len(test_images), len(representative)),
    }


def is_detector(model: keras.Model) -> bool:
    """Whether a loaded model is the detector of sprint2.detector (its three named heads)."""
    names = {layer.name for layer in model.layers}
    return {"heatmap", "size", "offset"} <= names


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


def detector_map(
    outputs: Sequence[Any], test_ds: Any, card: ModelCard, class_names: list[str]
) -> dict[str, float | None]:
    """map50 and map50_95 of raw detector outputs (chunks in image order) on test_ds, scored as training is.

    Decoding uses sprint2.tasks.DECODE (the mAP score floor, top-k, NMS) in network-input pixels,
    then sprint2.scoring.detection_report at the card's score threshold.
    """
    from sprint2.decode import decode
    from sprint2.scoring import detection_report
    from sprint2.tasks import DECODE

    dets = []
    for chunk in outputs:
        dets.extend(
            decode(
                chunk,
                len(class_names),
                score_threshold=DECODE.score_floor,
                top_k=DECODE.top_k,
                iou_threshold=DECODE.iou_threshold,
                stride=DECODE.stride,
            )
        )
    scores, _ = detection_report(dets, test_ds, card.score_threshold, class_names)
    return {
        "map50": scores["map50"],
        "map50_95": scores["map50_95"],
        "precision": scores["precision"],
        "recall": scores["recall"],
    }


def _heads(outputs: Sequence[Any], num_classes: int) -> dict[str, np.ndarray]:
    """{head: (N, h, w, k)} of output chunks in any form sprint2.decode.split_outputs reads."""
    from sprint2.decode import HEAD_NAMES, split_outputs

    parts = [split_outputs(chunk, num_classes) for chunk in outputs]
    return {head: np.concatenate([p[i] for p in parts]) for i, head in enumerate(HEAD_NAMES)}


def _detector_splits(data_dir: Path, card: ModelCard, model_path: Path) -> tuple[Any, Any]:
    """(train, test) of the run that trained the model: its card's seed and validation rule, as evaluate."""
    from sprint2.loading import LoadOptions
    from sprint2.splits import load_run_splits

    options = LoadOptions(size=tuple(card.input_hw), mode=card.resize_mode, errors="skip")  # type: ignore[arg-type]
    train, _, test, _ = load_run_splits(
        data_dir,
        int(card.extra.get("seed", 0)),
        options,
        card.extra.get("val_fraction"),
        float(card.extra.get("default_val_fraction", 0.0)),
    )
    for failure in train.failures + test.failures:
        logger.warning("skipped %s: %s", failure.path, failure.error)
    if list(train.class_names) != list(card.class_names):
        raise DataError(
            model_path, f"the model knows classes {card.class_names}, {data_dir} has {train.class_names}"
        )
    return train, test


def _float_scores(test_ds: Any, card: ModelCard, batch_size: int, net: Any) -> dict[str, float | None]:
    """detector_map of a tf_keras model (the float control) run in float on the test images."""
    images = np.asarray(test_ds.images, np.float32)
    chunks = run_batched(lambda x: net(x, training=False), images, batch_size)
    float_out = [{k: np.asarray(v) for k, v in chunk.items()} for chunk in chunks]
    return detector_map(float_out, test_ds, card, list(card.class_names))


def _detector_rows(
    model: keras.Model,
    card: ModelCard,
    test_ds: Any,
    paths: Mapping[str, Path],
    convert_seconds: Mapping[str, float],
    options: MeasureOptions,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Keras reference row and one row per TFLite file: size, latency, mAP, largest head differences."""
    class_names = list(card.class_names)
    test_images = np.asarray(test_ds.images, np.float32)
    lite = {name: LiteRTPredictor(path, None, num_threads=options.threads) for name, path in paths.items()}

    def score(run: Predictor) -> tuple[list[Any], dict[str, float | None]]:
        out = run_batched(run, test_images, options.batch_size)
        return out, detector_map(out, test_ds, card, class_names)

    def compare(name: str, out: list[Any], ref_out: list[Any]) -> dict[str, float]:
        heads, ref_heads = _heads(out, len(class_names)), _heads(ref_out, len(class_names))
        diffs = {f"max_diff_{head}": _max_diff(heads[head], ref_heads[head]) for head in heads}
        return {**diffs, "convert_seconds": convert_seconds[name]}

    return _measure_rows(model, lite, paths, test_images, options, score, compare)


def measure_detector(
    model: keras.Model,
    card: ModelCard,
    train_ds: Any,
    test_ds: Any,
    *,
    out_dir: Path,
    rounds: int = DEFAULT_ROUNDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    batch_size: int = DEFAULT_BATCH,
    num_threads: int | None = None,
    representative_count: int = 200,
    seed: int = 0,
    keras_bytes: int | None = None,
    qat: bool = False,
    qat_epochs: int = DEFAULT_QAT_EPOCHS,
    qat_batch: int = DEFAULT_QAT_BATCH,
    qat_learning_rate: float = DEFAULT_QAT_LEARNING_RATE,
    qat_control: bool = False,
) -> dict[str, Any]:
    """Converts the detector to DETECTOR_VARIANTS (and qat_int8 with `qat`) in out_dir and measures each.

    Rows: name, bytes, size_ratio (to float32), latency_ms (batch-1 median over rounds),
    latency_spread, batched_ms_per_image, speedup (Keras float batch-1 median over the variant's),
    map50, map50_95, max_diff_* (largest difference per head from Keras float on the test images).
    A failing QAT call is reported under "qat" (stage and error) and the other rows are still measured.
    With `qat_control`, the float twin is fine-tuned the same way (same epochs, seed, batches) and its
    float mAP is reported under "qat" / "control": the share of QAT's gain that extra training alone gives.
    """
    options = MeasureOptions(
        rounds=rounds,
        min_seconds=min_seconds,
        batch_size=batch_size,
        num_threads=num_threads,
        representative_count=representative_count,
        seed=seed,
        keras_bytes=keras_bytes,
    )
    out_dir = Path(out_dir)
    representative = representative_sample(train_ds.images, options.representative_count, options.seed)
    paths, convert_seconds = convert_detector(model, card, out_dir, representative)
    qat_run, control = QatRun(), None
    if qat:
        qat_options = QatOptions(epochs=qat_epochs, batch_size=qat_batch, learning_rate=qat_learning_rate)
        width = float(card.extra.get("width", 1.0))
        fine_tune = fine_tuner(model, train_ds, representative, qat_options, width=width, seed=options.seed)
        qat_run, qat_path, seconds = qat_variant(fine_tune, representative, out_dir, card)
        if qat_path is not None:
            paths[QAT_VARIANT], convert_seconds[QAT_VARIANT] = qat_path, seconds
        if qat_control:
            score = functools.partial(_float_scores, test_ds, card, options.batch_size)
            control = float_control(fine_tune, score)
    ref_row, rows = _detector_rows(model, card, test_ds, paths, convert_seconds, options)
    return {
        "kind": "detector",
        "reference": ref_row,
        "variants": rows,
        "qat": {
            "requested": bool(qat),
            **qat_run.as_dict(),
            "epochs_requested": int(qat_epochs) if qat else 0,
            "control": control,
        },
        "test_files": [str(p) for p in test_ds.paths],
        **_run_fields(paths, options, len(test_ds.images), len(representative)),
    }


# --------------------------------------------------------------------------------------------
# sprint2 quantize
# --------------------------------------------------------------------------------------------


def quantize_report(
    model_path: Path,
    data_dir: Path,
    *,
    out_dir: Path,
    rounds: int = DEFAULT_ROUNDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    max_images: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    num_threads: int | None = None,
    representative_count: int = 200,
    seed: int = 0,
    variants: Sequence[str] = VARIANTS,
    qat: bool = False,
    qat_epochs: int = DEFAULT_QAT_EPOCHS,
    qat_control: bool = False,
) -> dict[str, Any]:
    """The `sprint2 quantize` report: every variant measured on the test split of `data_dir`.

    A detector (its card beside it says so) is measured by measure_detector on the test split of the
    run that trained it (the card's seed and validation rule); `qat` adds the quantization-aware
    int8 row, `qat_control` the float fine-tuning control. A single-box model is measured by
    measure_variants (`variants`) with sprint2.evaluate on load_splits' test split at its input size
    (`seed` picks the held-out split as in run_training; `qat` records whether tfmot accepts the Keras 3
    model). Both use the first `max_images` test images.
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    model = load_model(model_path)
    card = ModelCard.read(model_path) if card_path(model_path).is_file() else None
    common = {
        "out_dir": out_dir,
        "rounds": rounds,
        "min_seconds": min_seconds,
        "batch_size": batch_size,
        "num_threads": num_threads,
        "representative_count": representative_count,
        "seed": seed,
        "keras_bytes": model_path.stat().st_size,
    }
    image_size: Any
    if is_detector(model):
        if card is None:
            raise DataError(
                card_path(model_path), "model card missing (the detector's classes and input size)"
            )
        train_ds, test_ds = _detector_splits(Path(data_dir), card, model_path)
        test_ds = _first_test_images(test_ds, max_images, data_dir)
        result = measure_detector(
            model, card, train_ds, test_ds, qat=qat, qat_epochs=qat_epochs, qat_control=qat_control, **common
        )
        image_size = list(card.input_hw)
    else:
        image_size = int(model.input_shape[1])
        result, test_ds = _single_box_report(model, card, data_dir, max_images, variants, qat, common)
    result.update(
        {
            "model_path": str(model_path),
            "data_dir": str(data_dir),
            "out_dir": str(out_dir),
            "image_size": image_size,
            "class_names": list(test_ds.class_names),
            "versions": versions(),
        }
    )
    return result


def _single_box_report(
    model: keras.Model,
    card: ModelCard | None,
    data_dir: Path,
    max_images: int | None,
    variants: Sequence[str],
    qat: bool,
    common: Mapping[str, Any],
) -> tuple[dict[str, Any], Any]:
    """quantize_report's single-box part: (measure_variants' result, the test split it measured on).

    Same split and error policy as run_training (a seeded held-out split when the data has none; bad
    files are reported and skipped), so the test images are the ones the model was scored on.
    """
    from sprint2.loading import load_splits

    size = int(model.input_shape[1])
    train_ds, test_ds = load_splits(Path(data_dir), size, seed=common["seed"], errors="skip")
    for failure in train_ds.failures + test_ds.failures:
        logger.warning("skipped %s: %s", failure.path, failure.error)
    test_ds = _first_test_images(test_ds, max_images, data_dir)
    metrics = functools.partial(evaluate, ds=test_ds)
    result = measure_variants(
        model, train_ds.images, test_ds.images, metrics, variants=variants, card=card, **common
    )
    if qat:
        result["qat"] = try_quantization_aware_training(model).as_dict()
    return result, test_ds


def _first_test_images(test_ds: Any, max_images: int | None, data_dir: Path) -> Any:
    """The first `max_images` test images (all with None); ValueError when none are left to measure on."""
    if max_images is not None:
        test_ds = test_ds.head(max_images)
    if len(test_ds.images) == 0:
        raise ValueError(f"{data_dir}: no test images to measure on")
    return test_ds


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def _target(value: float, limit: float, met: bool) -> dict[str, float | bool]:
    return {"value": float(value), "limit": float(limit), "met": bool(met)}


def check_targets(
    report: Mapping[str, Any],
    variant: str = "int8",
    *,
    max_size_ratio: float = 0.3,
    min_speedup: float = 2.0,
    max_map50_drop: float = 0.02,
    max_accuracy_drop: float = 0.02,
    max_iou_drop: float = 0.03,
) -> dict[str, dict[str, float | bool]]:
    """Checks one variant against the limits for shipping it; each entry holds the value, limit and "met".

    Both kinds: at most 0.3x the float32 TFLite size, at least 2x faster per image (batch 1) than Keras
    float. Detector: mAP@0.5 at most 0.02 below the float32 TFLite variant's (map50_drop). Single-box:
    at most 2 points of accuracy and 0.03 mean IoU lost against Keras float.
    """
    row = next((r for r in report["variants"] if r["name"] == variant), None)
    if row is None:
        raise ValueError(f"no variant {variant!r} in the report: {[r['name'] for r in report['variants']]}")
    checks = {
        "size_ratio": _target(row["size_ratio"], max_size_ratio, row["size_ratio"] <= max_size_ratio),
        "speedup": _target(row["speedup"], min_speedup, row["speedup"] >= min_speedup),
    }
    if report.get("kind") == "detector":
        base = next((r for r in report["variants"] if r["name"] == "float32"), report["reference"])
        drop = float(base["map50"] or 0.0) - float(row["map50"] or 0.0)
        checks["map50_drop"] = _target(drop, max_map50_drop, drop <= max_map50_drop)
        return checks
    ref = report["reference"]
    acc_drop = ref.get("accuracy", float("nan")) - row.get("accuracy", float("nan"))
    iou_drop = ref.get("mean_iou", float("nan")) - row.get("mean_iou", float("nan"))
    checks["accuracy_drop"] = _target(acc_drop, max_accuracy_drop, acc_drop <= max_accuracy_drop)
    checks["mean_iou_drop"] = _target(iou_drop, max_iou_drop, iou_drop <= max_iou_drop)
    return checks
