"""Post-training quantization to LiteRT (TFLite), measured rather than only shrunk.

A trained Keras model is exported once as a SavedModel and converted to four variants:
float32, dynamic-range int8, float16 and full-integer int8 (calibrated on a seeded sample of
training images), plus full-integer int8 with uint8 input/output for comparison. Each variant
runs under the LiteRT interpreter and is compared with the Keras float model on the same images
in the same run: file size, batch-1 latency (mean and p95), batched throughput, accuracy, mean
IoU and the largest output difference. Quantization-aware training is attempted with
tensorflow-model-optimization and its failure is reported verbatim.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from sprint2.evaluate import OUTPUT_NAMES, Outputs, Predictor, predict_batched  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

# The four post-training variants keep a float interface, so they drop in for the Keras model;
# "int8_io" is the same full-integer model with uint8 input/output, measured beside it to decide
# which interface to ship.
VARIANTS: tuple[str, ...] = ("float32", "dynamic_int8", "float16", "int8", "int8_io")

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

    Keras 3 models are not tf.keras models, so `TFLiteConverter.from_keras_model` is not the
    path; `model.export(..., format="tf_saved_model")` keeps the output dict's keys as the
    signature's output names, which the interpreter then exposes by name.
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


def convert_all(
    model: keras.Model,
    out_dir: Path,
    representative: np.ndarray,
    variants: Sequence[str] = VARIANTS,
) -> dict[str, Path]:
    """Exports `model` and writes out_dir/model_<variant>.tflite for each variant; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = export_saved_model(model, out_dir)
    paths: dict[str, Path] = {}
    for name in variants:
        start = time.perf_counter()
        path = out_dir / f"model_{name}.tflite"
        path.write_bytes(convert(saved, name, representative))
        paths[name] = path
        logger.info(
            "converted %s: %d bytes in %.1f s", name, path.stat().st_size, time.perf_counter() - start
        )
    return paths


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


class LiteRTModel:
    """A TFLite model under the LiteRT interpreter, called like the Keras model: images -> {"class", "box"}.

    Inputs and outputs are found through the signature's names, never by position or shape
    (C may equal 4). Quantized (u)int8 inputs/outputs are converted here, so callers always
    pass 0..255 float images and get float outputs. The batch dimension is resized only when
    the batch size changes, so repeated batch-1 calls pay for set/invoke/get only.
    """

    def __init__(self, path: Path, num_threads: int) -> None:
        self.path = Path(path)
        self.num_threads = int(num_threads)
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
        signatures = self.interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"{self.path}: expected one signature, found {sorted(signatures)}")
        runner = self.interpreter.get_signature_runner()
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input, found {sorted(inputs)}")
        missing = [name for name in OUTPUT_NAMES if name not in outputs]
        if missing:
            raise ValueError(f"{self.path}: signature outputs {sorted(outputs)} lack {missing}")
        ((self.input_name, self._input),) = inputs.items()
        self._outputs = {name: outputs[name] for name in OUTPUT_NAMES}
        self._batch: int | None = None

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype the flatbuffer's input takes (float32, or uint8 for int8_io)."""
        return np.dtype(self._input["dtype"])

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, *(int(d) for d in self._input["shape_signature"][1:])]
            self.interpreter.resize_tensor_input(self._input["index"], shape)
            self.interpreter.allocate_tensors()
            self._batch = batch

    def _to_input(self, images: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if dtype == np.float32:
            return np.asarray(images, np.float32)
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(np.asarray(images, np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    @staticmethod
    def _from_output(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
        if np.dtype(detail["dtype"]) == np.float32:
            return value
        scale, zero = detail["quantization"]
        return ((value.astype(np.float32) - zero) * scale).astype(np.float32)

    def __call__(self, images: np.ndarray) -> Outputs:
        """Runs one batch (N, S, S, 3) of 0..255 images and returns float {"class": (N, C), "box": (N, 4)}."""
        self._resize(len(images))
        self.interpreter.set_tensor(self._input["index"], self._to_input(images))
        self.interpreter.invoke()
        return {
            name: self._from_output(self.interpreter.get_tensor(d["index"]), d)
            for name, d in self._outputs.items()
        }


def keras_predictor(model: keras.Model) -> Predictor:
    """The Keras float reference: model(x, training=False) inside a tf.function with a fixed signature.

    Traced once for any batch size, so batch-1 timing measures the model, not Python dispatch
    or Model.predict's per-call setup (which would flatter TFLite).
    """
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(x, training=False)

    def run(images: np.ndarray) -> Outputs:
        out = serve(tf.convert_to_tensor(np.asarray(images, np.float32)))
        return {name: out[name].numpy() for name in OUTPUT_NAMES}

    return run


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def time_batch1(
    predictors: Mapping[str, Predictor], images: np.ndarray, repeats: int = 100, warmup: int = 5
) -> dict[str, np.ndarray]:
    """Per-image latencies in ms at batch 1, interleaved: each image goes through every predictor in turn.

    Interleaving spreads machine noise (other processes, frequency changes) evenly across the
    predictors instead of letting it land on whichever happened to run at that moment.
    """
    if len(images) == 0:
        raise ValueError("need at least one image to time")
    singles = [np.asarray(images[i : i + 1], np.float32) for i in range(len(images))]
    for predict in predictors.values():
        for i in range(warmup):
            predict(singles[i % len(singles)])
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for r in range(repeats):
        x = singles[r % len(singles)]
        for name, predict in predictors.items():
            start = time.perf_counter()
            predict(x)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.asarray(t) for name, t in times.items()}


def predict_call_latency(model: keras.Model, images: np.ndarray, calls: int = 20) -> float:
    """Mean ms of model.predict on one image: shown beside the reference to expose its per-call overhead."""
    singles = [np.asarray(images[i % len(images)][np.newaxis], np.float32) for i in range(calls + 2)]
    model.predict(singles[0], verbose=0)
    model.predict(singles[1], verbose=0)
    start = time.perf_counter()
    for x in singles[2:]:
        model.predict(x, verbose=0)
    return (time.perf_counter() - start) * 1e3 / max(calls, 1)


def throughput(predict: Predictor, images: np.ndarray, batch_size: int = 32) -> float:
    """Images per second over one pass in batches of `batch_size`, after one warm-up batch."""
    predict(np.asarray(images[:batch_size], np.float32))
    start = time.perf_counter()
    predict_batched(predict, images, batch_size)
    return len(images) / max(time.perf_counter() - start, 1e-9)


def threading_info(num_threads: int) -> dict[str, int]:
    """Threads each runtime uses: LiteRT's explicit count and TensorFlow's pools (0 = all cores)."""
    return {
        "litert": int(num_threads),
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count() or 1,
    }


# --------------------------------------------------------------------------------------------
# Measuring
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
    repeats: int = 100,
    batch_size: int = 32,
    num_threads: int | None = None,
    representative_count: int = 200,
    seed: int = 0,
    keras_bytes: int | None = None,
) -> dict[str, Any]:
    """Converts `model` to each variant in out_dir and measures everything against Keras float.

    `metrics(probs, boxes)` scores one prediction per test image (the caller binds the dataset).
    Returns {"reference": Keras row, "variants": [rows], ...}; speedups are Keras mean latency
    over the variant's, both timed interleaved on the same test images in this call.
    """
    num_threads = int(num_threads or os.cpu_count() or 1)
    test_images = np.asarray(test_images, np.float32)
    representative = representative_sample(train_images, representative_count, seed)
    paths = convert_all(model, out_dir, representative, variants)
    lite = {name: LiteRTModel(path, num_threads) for name, path in paths.items()}
    reference = keras_predictor(model)

    predictors: dict[str, Predictor] = {"keras": reference, **lite}
    latencies = time_batch1(predictors, test_images, repeats=repeats)

    ref_out = predict_batched(reference, test_images, batch_size)
    ref_row: dict[str, Any] = {
        "name": "keras",
        "bytes": keras_bytes,
        "latency_ms": float(latencies["keras"].mean()),
        "latency_p95_ms": float(np.percentile(latencies["keras"], 95)),
        "speedup": 1.0,
        "throughput_ips": throughput(reference, test_images, batch_size),
        **_metrics_row(metrics(ref_out["class"], ref_out["box"])),
        # Not the reference: Model.predict's per-call setup, shown to say why it is not used.
        "predict_latency_ms": predict_call_latency(model, test_images, calls=min(20, repeats)),
    }
    float_bytes = paths["float32"].stat().st_size if "float32" in paths else None
    rows = []
    for name, runner in lite.items():
        out = predict_batched(runner, test_images, batch_size)
        size = paths[name].stat().st_size
        lat = latencies[name]
        rows.append(
            {
                "name": name,
                "bytes": int(size),
                "size_ratio": float(size / float_bytes) if float_bytes else float("nan"),
                "size_ratio_keras": float(size / keras_bytes) if keras_bytes else float("nan"),
                "latency_ms": float(lat.mean()),
                "latency_p95_ms": float(np.percentile(lat, 95)),
                "speedup": float(latencies["keras"].mean() / lat.mean()),
                "throughput_ips": throughput(runner, test_images, batch_size),
                **_metrics_row(metrics(out["class"], out["box"])),
                "max_diff_class": float(np.abs(out["class"] - ref_out["class"]).max(initial=0.0)),
                "max_diff_box_px": float(np.abs(out["box"] - ref_out["box"]).max(initial=0.0)),
                "io_dtype": runner.input_dtype.name,
            }
        )
    return {
        "reference": ref_row,
        "variants": rows,
        "files": {name: str(path) for name, path in paths.items()},
        "threads": threading_info(num_threads),
        "test_images": int(len(test_images)),
        "timed_calls": int(repeats),
        "batch_size": int(batch_size),
        "representative_images": int(len(representative)),
        "seed": int(seed),
    }


def load_model(model_path: Path) -> keras.Model:
    """Loads a .keras file for inference; imports sprint2.model first so its custom layers are registered."""
    importlib.import_module("sprint2.model")
    return keras.models.load_model(Path(model_path), compile=False)


def quantize_report(
    model_path: Path,
    data_dir: Path,
    *,
    out_dir: Path,
    repeats: int = 100,
    max_images: int | None = None,
    batch_size: int = 32,
    num_threads: int | None = None,
    representative_count: int = 200,
    seed: int = 0,
    variants: Sequence[str] = VARIANTS,
    qat: bool = True,
) -> dict[str, Any]:
    """The `sprint2 quantize` report: every variant measured on the test split of `data_dir`.

    The image size is the model's input size; accuracy and IoU come from sprint2.evaluate on
    the first `max_images` test images (all when None). `seed` picks the held-out split (as in
    run_training) and the representative images. With `qat`, also records whether
    quantization-aware training works in this environment.
    """
    # Imported here: quantize stays importable (and testable) on its own.
    from sprint2.evaluate import evaluate
    from sprint2.loading import load_splits

    model_path, out_dir = Path(model_path), Path(out_dir)
    model = load_model(model_path)
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
        model,
        train_ds.images,
        test_ds.images,
        metrics,
        out_dir=out_dir,
        variants=variants,
        repeats=repeats,
        batch_size=batch_size,
        num_threads=num_threads,
        representative_count=representative_count,
        seed=seed,
        keras_bytes=model_path.stat().st_size,
    )
    result.update(
        {
            "model_path": str(model_path),
            "data_dir": str(data_dir),
            "out_dir": str(out_dir),
            "image_size": size,
            "class_names": list(test_ds.class_names),
            "versions": versions(),
        }
    )
    if qat:
        result["qat"] = try_quantization_aware_training(model).as_dict()
    return result


# --------------------------------------------------------------------------------------------
# Targets and quantization-aware training
# --------------------------------------------------------------------------------------------


def check_targets(
    report: Mapping[str, Any],
    variant: str = "int8",
    *,
    max_size_ratio: float = 0.3,
    min_speedup: float = 2.0,
    max_accuracy_drop: float = 0.02,
    max_iou_drop: float = 0.03,
) -> dict[str, dict[str, float | bool]]:
    """Checks one variant against the limits for shipping it: at most 0.3x the float32 size, at least 2x
    faster than Keras, at most 2 points of accuracy and 0.03 mean IoU lost. Each entry holds the
    measured value, the limit and whether it is met."""
    row = next(r for r in report["variants"] if r["name"] == variant)
    ref = report["reference"]
    acc_drop = ref.get("accuracy", float("nan")) - row.get("accuracy", float("nan"))
    iou_drop = ref.get("mean_iou", float("nan")) - row.get("mean_iou", float("nan"))
    return {
        "size_ratio": {
            "value": row["size_ratio"],
            "limit": max_size_ratio,
            "met": row["size_ratio"] <= max_size_ratio,
        },
        "speedup": {"value": row["speedup"], "limit": min_speedup, "met": row["speedup"] >= min_speedup},
        "accuracy_drop": {
            "value": acc_drop,
            "limit": max_accuracy_drop,
            "met": acc_drop <= max_accuracy_drop,
        },
        "mean_iou_drop": {"value": iou_drop, "limit": max_iou_drop, "met": iou_drop <= max_iou_drop},
    }


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
    """Whether tfmot's quantize_model accepted the model here; the exact error and versions when not."""

    supported: bool
    error: str | None
    versions: dict[str, str | None]
    quantized_model: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model)."""
        return {"supported": self.supported, "error": self.error, "versions": dict(self.versions)}


def try_quantization_aware_training(model: keras.Model) -> QatOutcome:
    """Really attempts tfmot.quantization.keras.quantize_model(model) and reports what happened.

    tfmot is built on tf_keras (Keras 2); this records its exact error on a Keras 3 model
    instead of leaving QAT out silently. On success the QAT-wrapped model is returned for
    fine-tuning.
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
