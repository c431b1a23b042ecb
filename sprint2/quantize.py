"""Post-training quantization and quantization-aware training to LiteRT (TFLite), measured rather than shrunk.

`sprint2 quantize` takes a trained `.keras` model and its data. The detector is converted from its
split-output form (three named heads, so each int8 head has a scale of its own) to float32, float16,
dynamic-range int8 and full-integer int8 (calibrated on a seeded sample of training images); with
`qat`, its tf_keras twin is fine-tuned quantization-aware and converted to int8 as well. The
single-box models keep their five variants (the four plus int8 with uint8 input/output). Every
variant runs under LiteRT (`sprint2.predict.LiteRTPredictor`) and is compared with the Keras float
model on the same test images in the same run: file size, batch-1 and batched latency (interleaved
rounds, median and spread), and accuracy by the code training is scored with (detector: decode +
`evaluate_detections`; single-box: `sprint2.evaluate`). A card (`<variant>.json`) is written beside
each `<variant>.tflite`, so `sprint2 predict` runs it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm  # the plain bar: disable=None turns it off unless stderr is a terminal

from sprint2.errors import DataError
from sprint2.evaluate import OUTPUT_NAMES, Outputs, Predictor, predict_batched
from sprint2.model import load_model
from sprint2.modelcard import ModelCard, card_path
from sprint2.predict import LiteRTPredictor
from sprint2.timing import round_order, spread

logger = logging.getLogger(__name__)

# The single-box variants keep a float interface, so they drop in for the Keras model; "int8_io" is
# the same full-integer model with uint8 input/output, measured beside it to decide which to ship.
VARIANTS: tuple[str, ...] = ("float32", "dynamic_int8", "float16", "int8", "int8_io")
#: The detector's post-training variants, all with float input and outputs.
DETECTOR_VARIANTS: tuple[str, ...] = ("float32", "float16", "dynamic_int8", "int8")
#: The quantization-aware-trained full-integer detector.
QAT_VARIANT = "qat_int8"
DEFAULT_ROUNDS = 5
DEFAULT_MIN_SECONDS = 1.0
DEFAULT_BATCH = 8
DEFAULT_QAT_EPOCHS = 2
DEFAULT_QAT_BATCH = 8
DEFAULT_QAT_LEARNING_RATE = 1e-4

MetricsFn = Callable[[np.ndarray, np.ndarray], Mapping[str, Any]]


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def representative_sample(images: np.ndarray, count: int = 200, seed: int = 0) -> np.ndarray:
    """A seeded subset of at most `count` training images (in their original order) for calibration."""
    n = len(images)
    if n == 0:
        raise ValueError("need at least one training image to calibrate full-integer quantization")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(count, n), replace=False))
    return np.asarray(images[idx], np.float32)


def export_saved_model(model: keras.Model, out_dir: Path) -> Path:
    """Exports the model's inference function as a SavedModel (the converter's recommended input).

    `model.export(..., format="tf_saved_model")` keeps the output dict's keys as the signature's
    output names, which the interpreter then exposes by name.
    """
    path = Path(out_dir) / "saved_model"
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def convert(saved_model_dir: Path, variant: str, representative: np.ndarray | None = None) -> bytes:
    """Converts a SavedModel to one TFLite flatbuffer variant (see VARIANTS)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant in ("int8", "int8_io"):
        if representative is None or len(representative) == 0:
            raise ValueError(f"variant {variant!r} needs representative images for calibration")
        samples = np.array(representative, np.float32)
        # The input's int8 range comes from the calibration min/max. Pinning one pixel of the
        # first sample to 0 and one to 255 makes it the full pixel range, so brighter test
        # pixels are never clipped and uint8 input is exact (scale 1, zero point 0).
        samples[0].reshape(-1)[:2] = (0.0, 255.0)

        def calibration() -> Iterator[list[np.ndarray]]:
            for image in samples:
                yield [image[np.newaxis]]

        converter.representative_dataset = calibration
        # Only integer kernels: conversion fails loudly instead of silently keeping float ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if variant == "int8_io":
            # uint8 input has scale 1, zero point 0 for 0..255 images: raw pixels go in unchanged.
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    return converter.convert()


def write_variant(out_dir: Path, name: str, flatbuffer: bytes, card: ModelCard | None) -> Path:
    """Writes out_dir/<name>.tflite and, given the source model's card, <name>.json with the variant named."""
    path = Path(out_dir) / f"{name}.tflite"
    path.write_bytes(flatbuffer)
    if card is not None:
        replace(card, extra={**card.extra, "variant": name}).write(path)
    return path


def convert_all(
    model: keras.Model,
    out_dir: Path,
    representative: np.ndarray,
    variants: Sequence[str] = VARIANTS,
    card: ModelCard | None = None,
) -> dict[str, Path]:
    """Exports `model`, writes out_dir/<variant>.tflite (and its card) per variant; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = export_saved_model(model, out_dir)
    paths: dict[str, Path] = {}
    for name in variants:
        start = time.perf_counter()
        paths[name] = write_variant(out_dir, name, convert(saved, name, representative), card)
        logger.info(
            "converted %s: %d bytes in %.1f s",
            name,
            paths[name].stat().st_size,
            time.perf_counter() - start,
        )
    return paths


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
# Timing
# --------------------------------------------------------------------------------------------


def _time_phase(predict: Callable[[np.ndarray], Any], inputs: list[np.ndarray], min_seconds: float) -> float:
    """Median ms per image of calls cycling through `inputs` for at least min_seconds, after one warm call."""
    predict(inputs[0])  # a new batch size re-allocates the interpreter's tensors: not timed
    times: list[float] = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < min_seconds:
        x = inputs[len(times) % len(inputs)]
        t0 = time.perf_counter()
        predict(x)
        times.append((time.perf_counter() - t0) * 1e3 / len(x))
    return float(np.median(times))


def time_interleaved(
    predictors: Mapping[str, Callable[[np.ndarray], Any]],
    images: np.ndarray,
    *,
    rounds: int = DEFAULT_ROUNDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, dict[str, list[float]]]:
    """Per predictor, per round: median ms per image at batch 1 ("batch1") and at batch_size ("batched").

    In every round each predictor takes its turn (forward in even rounds, backward in odd ones:
    bench_training.round_order) and is timed for at least min_seconds per batch size, so machine
    noise lands on all of them alike. A tqdm bar on stderr shows the progress when it is a terminal.
    """
    if len(images) == 0:
        raise ValueError("need at least one image to time")
    if rounds < 1 or not min_seconds > 0:
        raise ValueError(f"need rounds >= 1 and min_seconds > 0, got {rounds} and {min_seconds}")
    images = np.asarray(images, np.float32)
    singles = [images[i : i + 1] for i in range(len(images))]
    batch = min(int(batch_size), len(images))
    batches = [images[s : s + batch] for s in range(0, len(images) - batch + 1, batch)]
    names = list(predictors)
    times: dict[str, dict[str, list[float]]] = {name: {"batch1": [], "batched": []} for name in names}
    with tqdm(total=rounds * len(names), desc="latency rounds", disable=None, file=sys.stderr) as bar:
        for round_no in range(rounds):
            for i in round_order(len(names), round_no):
                name = names[i]
                bar.set_postfix_str(name)
                times[name]["batch1"].append(_time_phase(predictors[name], singles, min_seconds))
                times[name]["batched"].append(_time_phase(predictors[name], batches, min_seconds))
                bar.update()
    return times


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
    num_threads = int(num_threads or os.cpu_count() or 1)
    test_images = np.asarray(test_images, np.float32)
    representative = representative_sample(train_images, representative_count, seed)
    paths = convert_all(model, out_dir, representative, variants, card)
    lite = {name: single_box_runner(path, num_threads) for name, path in paths.items()}
    reference = keras_predictor(model)

    def outputs(run: Callable[[np.ndarray], Any]) -> Outputs:
        return predict_batched(run, test_images, batch_size)

    times = time_interleaved(
        {"keras": reference, **lite},
        test_images,
        rounds=rounds,
        min_seconds=min_seconds,
        batch_size=batch_size,
    )
    ref_out = outputs(reference)
    ref_row: dict[str, Any] = {
        "name": "keras",
        "bytes": keras_bytes,
        **latency_fields(times["keras"], times["keras"]),
        **_metrics_row(metrics(ref_out["class"], ref_out["box"])),
        # Not the reference: Model.predict's per-call setup, shown to say why it is not used.
        "predict_latency_ms": predict_call_latency(model, test_images),
    }
    float_bytes = paths["float32"].stat().st_size if "float32" in paths else None
    rows = []
    for name, runner in lite.items():
        out = outputs(runner)
        size = paths[name].stat().st_size
        rows.append(
            {
                "name": name,
                **_size_fields(size, float_bytes, keras_bytes),
                **latency_fields(times[name], times["keras"]),
                **_metrics_row(metrics(out["class"], out["box"])),
                "max_diff_class": float(np.abs(out["class"] - ref_out["class"]).max(initial=0.0)),
                "max_diff_box_px": float(np.abs(out["box"] - ref_out["box"]).max(initial=0.0)),
                "io_dtype": runner.input_dtype.name,
            }
        )
    return {
        "kind": "single_box",
        "reference": ref_row,
        "variants": rows,
        **_run_fields(
            paths, num_threads, len(test_images), rounds, min_seconds, batch_size, len(representative), seed
        ),
    }


def _size_fields(size: int, float_bytes: int, keras_bytes: int | None) -> dict[str, Any]:
    """A variant's file size and its ratios to the float32 TFLite file and to the .keras file."""
    return {
        "bytes": int(size),
        "size_ratio": float(size / float_bytes) if float_bytes else float("nan"),
        "size_ratio_keras": float(size / keras_bytes) if keras_bytes else float("nan"),
    }


def _run_fields(
    paths: Mapping[str, Path],
    num_threads: int,
    test_images: int,
    rounds: int,
    min_seconds: float,
    batch_size: int,
    representative_images: int,
    seed: int,
) -> dict[str, Any]:
    """How a quantization report was measured: files, threads, images, the latency rule, the seed."""
    return {
        "files": {name: str(path) for name, path in paths.items()},
        "threads": threading_info(num_threads),
        "test_images": int(test_images),
        "rounds": int(rounds),
        "min_seconds": float(min_seconds),
        "batch_size": int(batch_size),
        "representative_images": int(representative_images),
        "seed": int(seed),
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


@dataclass
class QatRun:
    """What quantization-aware training did: the stage reached, per-epoch losses, the error if one failed."""

    stage: str = "not run"
    epochs: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model)."""
        return {"stage": self.stage, "epochs": self.epochs, "error": self.error, "seconds": self.seconds}


def qat_fine_tune(
    model: keras.Model,
    train_ds: Any,
    representative: np.ndarray,
    *,
    width: float = 1.0,
    epochs: int = DEFAULT_QAT_EPOCHS,
    batch_size: int = DEFAULT_QAT_BATCH,
    learning_rate: float = DEFAULT_QAT_LEARNING_RATE,
    seed: int = 0,
    run: QatRun | None = None,
    quantize: bool = True,
) -> QatRun:
    """Quantization-aware fine-tuning of a Keras 3 detector on one device; returns the QatRun with the model.

    sprint2.detector.quantization_aware builds the tf_keras twin, copies the weights, wraps it with
    tfmot's quantize_model and calibrates its ranges on `representative`; then `epochs` passes over
    the training split (augmented, targets from sprint2.pipeline.detection_dataset) with
    detection_loss, Adam at `learning_rate`, in a plain tf.function step (not the strategy loop:
    tfmot models are tf_keras models). Each stage is recorded in `run` first, so on an exception the
    caller knows which call failed. `quantize` False fine-tunes the plain float twin the same way:
    the control that tells what the extra training alone does.
    """
    from sprint2.detector import detection_loss, qat_trainable_variables, quantization_aware, tf_keras_twin
    from sprint2.pipeline import detection_dataset, padded_flags, padded_targets

    run = run if run is not None else QatRun()
    start = time.perf_counter()
    if quantize:
        run.stage = "tf_keras twin + tfmot quantize_model + calibrate_quantizers"
        qat = quantization_aware(model, width=width, calibration=representative)
    else:
        run.stage = "tf_keras twin"
        qat = tf_keras_twin(model, width=width)
    run.model = qat
    if epochs < 1:
        run.stage = "quantize_model (no fine-tuning)"
        run.seconds = time.perf_counter() - start
        return run
    import tf_keras

    run.stage = "fine-tuning"
    num_classes = int(model.get_layer("heatmap").filters)
    labels, boxes = padded_targets(train_ds)
    difficult = padded_flags(train_ds, "difficult", labels.shape[1])
    images = np.asarray(train_ds.images)
    batch = max(1, min(int(batch_size), len(images)))
    variables = qat_trainable_variables(qat)
    optimizer = tf_keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(x: tf.Tensor, targets: dict[str, tf.Tensor]) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                detection_loss(qat(x, training=True), targets, num_classes=num_classes)["loss"]
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for epoch in range(epochs):
        t0 = time.perf_counter()
        data = detection_dataset(
            images,
            labels,
            boxes,
            difficult,
            batch,
            num_classes=num_classes,
            seed=seed,
            epoch=epoch,
            augment_data=True,
        )
        losses = [float(step(x, targets)) for x, targets in data]
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "steps": len(losses)}
        row["seconds"] = time.perf_counter() - t0
        run.epochs.append(row)
        what = "QAT" if quantize else "float fine-tuning"
        logger.info(
            "%s epoch %d/%d: loss %.4f in %.1f s", what, epoch + 1, epochs, row["loss"], row["seconds"]
        )
        if not np.isfinite(row["loss"]):
            raise FloatingPointError(f"QAT loss became {row['loss']} in epoch {epoch + 1}")
    run.stage = "fine-tuned"
    run.seconds = time.perf_counter() - start
    return run


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


def convert_detector(
    model: keras.Model,
    card: ModelCard,
    out_dir: Path,
    representative: np.ndarray,
    variants: Sequence[str] = DETECTOR_VARIANTS,
) -> tuple[dict[str, Path], dict[str, float]]:
    """Writes out_dir/<variant>.tflite and <variant>.json per variant from the detector's split-output twin.

    Full int8 needs the split form (one int8 scale per head); the same SavedModel serves every variant,
    so all of them have the outputs "heatmap", "size" and "offset". Returns (paths, seconds per variant).
    """
    from sprint2.detector import build_detector, copy_weights

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = build_detector(
        len(card.class_names),
        tuple(card.input_hw),
        width=float(card.extra.get("width", 1.0)),
        split_outputs=True,
    )
    copy_weights(model, split)
    saved = export_saved_model(split, out_dir)
    paths: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    for name in tqdm(variants, desc="converting", disable=None, file=sys.stderr):
        start = time.perf_counter()
        paths[name] = write_variant(out_dir, name, convert(saved, name, representative), card)
        seconds[name] = time.perf_counter() - start
    return paths, seconds


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
    from sprint2.detector import int8_tflite

    out_dir = Path(out_dir)
    num_threads = int(num_threads or os.cpu_count() or 1)
    class_names = list(card.class_names)
    num_classes = len(class_names)
    width = float(card.extra.get("width", 1.0))
    representative = representative_sample(train_ds.images, representative_count, seed)
    test_images = np.asarray(test_ds.images, np.float32)

    paths, convert_seconds = convert_detector(model, card, out_dir, representative)
    # QAT and its float control fine-tune alike: same epochs, seed and batches.
    fine_tune = functools.partial(
        qat_fine_tune,
        model,
        train_ds,
        representative,
        width=width,
        epochs=qat_epochs,
        batch_size=qat_batch,
        learning_rate=qat_learning_rate,
        seed=seed,
    )
    qat_run = QatRun()
    if qat:
        try:
            fine_tune(run=qat_run)
            qat_run.stage = "detector.int8_tflite (TFLite conversion of the QAT model)"
            start = time.perf_counter()
            paths[QAT_VARIANT] = write_variant(
                out_dir, QAT_VARIANT, int8_tflite(qat_run.model, representative), card
            )
            convert_seconds[QAT_VARIANT] = time.perf_counter() - start
            qat_run.stage = "converted"
        except Exception as exc:  # QAT spans three libraries; the report names the failing stage and error
            qat_run.error = f"{type(exc).__name__}: {exc}"
            logger.warning("quantization-aware training failed at %s: %s", qat_run.stage, qat_run.error)
    control: dict[str, Any] | None = None
    if qat and qat_control:
        tuned = QatRun()
        control = {"what": "the float tf_keras twin fine-tuned like QAT, not quantized"}
        try:
            fine_tune(run=tuned, quantize=False)
            float_out = run_batched(lambda x: tuned.model(x, training=False), test_images, batch_size)
            float_out = [{k: np.asarray(v) for k, v in chunk.items()} for chunk in float_out]
            control.update(detector_map(float_out, test_ds, card, class_names))
        except Exception as exc:  # the control is optional: its failure is reported, not fatal
            tuned.error = f"{type(exc).__name__}: {exc}"
            logger.warning("the float fine-tuning control failed at %s: %s", tuned.stage, tuned.error)
        control.update(tuned.as_dict())
    lite = {name: LiteRTPredictor(path, None, num_threads=num_threads) for name, path in paths.items()}
    reference = keras_predictor(model)
    ref_out = run_batched(reference, test_images, batch_size)
    ref_heads = _heads(ref_out, num_classes)
    times = time_interleaved(
        {"keras": reference, **lite},
        test_images,
        rounds=rounds,
        min_seconds=min_seconds,
        batch_size=batch_size,
    )
    ref_row: dict[str, Any] = {
        "name": "keras",
        "bytes": keras_bytes,
        **latency_fields(times["keras"], times["keras"]),
        **detector_map(ref_out, test_ds, card, class_names),
        "predict_latency_ms": predict_call_latency(model, test_images),
    }
    float_bytes = paths["float32"].stat().st_size
    rows = []
    for name, runner in lite.items():
        out = run_batched(runner, test_images, batch_size)
        heads = _heads(out, num_classes)
        size = paths[name].stat().st_size
        rows.append(
            {
                "name": name,
                **_size_fields(size, float_bytes, keras_bytes),
                **latency_fields(times[name], times["keras"]),
                **detector_map(out, test_ds, card, class_names),
                **{
                    f"max_diff_{head}": float(np.abs(heads[head] - ref_heads[head]).max(initial=0.0))
                    for head in heads
                },
                "convert_seconds": convert_seconds[name],
                "io_dtype": runner.input_dtype.name,
            }
        )
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
        **_run_fields(
            paths, num_threads, len(test_images), rounds, min_seconds, batch_size, len(representative), seed
        ),
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
    from sprint2.loading import load_splits

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
    if is_detector(model):
        if card is None:
            raise DataError(
                card_path(model_path), "model card missing (the detector's classes and input size)"
            )
        train_ds, test_ds = _detector_splits(Path(data_dir), card, model_path)
        if max_images is not None:
            test_ds = test_ds.head(max_images)
        if len(test_ds) == 0:
            raise ValueError(f"{data_dir}: no test images to measure on")
        result = measure_detector(
            model, card, train_ds, test_ds, qat=qat, qat_epochs=qat_epochs, qat_control=qat_control, **common
        )
        image_size: Any = list(card.input_hw)
    else:
        from sprint2.evaluate import evaluate

        size = int(model.input_shape[1])
        # Same split and error policy as run_training (seeded held-out split when the data has none;
        # bad files are reported and skipped), so the test images are the ones the model was scored on.
        train_ds, test_ds = load_splits(Path(data_dir), size, seed=seed, errors="skip")
        for failure in train_ds.failures + test_ds.failures:
            logger.warning("skipped %s: %s", failure.path, failure.error)
        if max_images is not None:
            test_ds = test_ds.head(max_images)
        if len(test_ds.images) == 0:
            raise ValueError(f"{data_dir}: no test images to measure on")

        def metrics(probs: np.ndarray, boxes: np.ndarray) -> Mapping[str, Any]:
            return evaluate(probs, boxes, test_ds)

        result = measure_variants(
            model, train_ds.images, test_ds.images, metrics, variants=variants, card=card, **common
        )
        if qat:
            result["qat"] = try_quantization_aware_training(model).as_dict()
        image_size = size
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


# --------------------------------------------------------------------------------------------
# Targets and quantization-aware training of the single-box models
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


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide what conversion and QAT can do."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "ai_edge_litert": _version("ai-edge-litert"),
        "tfmot": _version("tensorflow-model-optimization"),
        "tf_keras": _version("tf-keras"),
    }


@dataclass(frozen=True)
class QatOutcome:
    """Whether tfmot's quantize_model accepted a model as it is; the exact error and versions when not."""

    supported: bool
    error: str | None
    versions: dict[str, str | None]
    quantized_model: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model)."""
        return {"supported": self.supported, "error": self.error, "versions": dict(self.versions)}


def try_quantization_aware_training(model: keras.Model) -> QatOutcome:
    """Really attempts tfmot.quantization.keras.quantize_model(model) on a Keras 3 model and reports it.

    tfmot is built on tf_keras (Keras 2) and refuses Keras 3 models; the detector gets around this
    with its tf_keras twin (qat_fine_tune), the single-box models have none, so this records the error.
    """
    info = versions()
    try:
        import tensorflow_model_optimization as tfmot
    except Exception as exc:  # ImportError, or tf_keras failing on import: both are the answer
        logger.info("tfmot not importable: %s", exc)
        return QatOutcome(False, f"{type(exc).__name__}: {exc}", info)
    info["tfmot"] = getattr(tfmot, "__version__", info["tfmot"])
    try:
        quantized = tfmot.quantization.keras.quantize_model(model)
    except Exception as exc:
        logger.info("quantization-aware training not supported: %s: %s", type(exc).__name__, exc)
        return QatOutcome(False, f"{type(exc).__name__}: {exc}", info)
    return QatOutcome(True, None, info, quantized)
