"""The quantized TFLite variants of `sprint2 quantize` and how each is made; `sprint2.quantize` measures them.

Post-training: a model is exported as a SavedModel and converted to float32, float16, dynamic-range
int8 and full-integer int8 (calibrated on a seeded sample of training images); the detector from its
split-output twin, so each int8 head has a scale of its own. Quantization-aware (`qat_int8`): the
detector's tf_keras twin is fine-tuned with fake quantization and converted to int8; beside it, the
float twin fine-tuned alike is the control. A card (`<variant>.json`) is written beside each file.
tfmot (tensorflow-model-optimization) is built on tf_keras (Keras 2), so both are imported only inside
the QAT functions: importing this module costs no more than TensorFlow and Keras.
"""

from __future__ import annotations

import functools
import logging
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

from sprint2 import installed_version
from sprint2.modelcard import ModelCard

logger = logging.getLogger(__name__)

# The single-box variants keep a float interface, so they drop in for the Keras model; "int8_io" is
# the same full-integer model with uint8 input/output, measured beside it to decide which to ship.
VARIANTS: tuple[str, ...] = ("float32", "dynamic_int8", "float16", "int8", "int8_io")
#: The detector's post-training variants, all with float input and outputs.
DETECTOR_VARIANTS: tuple[str, ...] = ("float32", "float16", "dynamic_int8", "int8")
#: The quantization-aware-trained full-integer detector.
QAT_VARIANT = "qat_int8"
DEFAULT_QAT_EPOCHS = 2
DEFAULT_QAT_BATCH = 8
DEFAULT_QAT_LEARNING_RATE = 1e-4


# --------------------------------------------------------------------------------------------
# Post-training conversion
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


# --------------------------------------------------------------------------------------------
# Quantization-aware training of the detector: fine-tuning its tf_keras twin
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QatOptions:
    """How the detector is fine-tuned quantization-aware (and its float control, alike)."""

    epochs: int = DEFAULT_QAT_EPOCHS
    batch_size: int = DEFAULT_QAT_BATCH
    learning_rate: float = DEFAULT_QAT_LEARNING_RATE


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
    run = run if run is not None else QatRun()
    start = time.perf_counter()
    run.model = _twin(model, width, representative, run, quantize)
    if epochs < 1:
        run.stage = "quantize_model (no fine-tuning)"
        run.seconds = time.perf_counter() - start
        return run
    import tf_keras

    run.stage = "fine-tuning"
    num_classes = int(model.get_layer("heatmap").filters)
    batches = _epoch_batches(train_ds, batch_size, num_classes, seed)
    step = _train_step(run.model, num_classes, tf_keras.optimizers.Adam(learning_rate))
    what = "QAT" if quantize else "float fine-tuning"
    for epoch in range(epochs):
        t0 = time.perf_counter()
        losses = [float(step(x, targets)) for x, targets in batches(epoch=epoch)]
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "steps": len(losses)}
        row["seconds"] = time.perf_counter() - t0
        run.epochs.append(row)
        logger.info(
            "%s epoch %d/%d: loss %.4f in %.1f s", what, epoch + 1, epochs, row["loss"], row["seconds"]
        )
        if not np.isfinite(row["loss"]):
            raise FloatingPointError(f"QAT loss became {row['loss']} in epoch {epoch + 1}")
    run.stage = "fine-tuned"
    run.seconds = time.perf_counter() - start
    return run


def _twin(model: keras.Model, width: float, representative: np.ndarray, run: QatRun, quantize: bool) -> Any:
    """The tf_keras twin to fine-tune: fake-quantized and calibrated, or plain float for the control."""
    from sprint2.detector import quantization_aware, tf_keras_twin

    if quantize:
        run.stage = "tf_keras twin + tfmot quantize_model + calibrate_quantizers"
        return quantization_aware(model, width=width, calibration=representative)
    run.stage = "tf_keras twin"
    return tf_keras_twin(model, width=width)


def _epoch_batches(train_ds: Any, batch_size: int, num_classes: int, seed: int) -> Callable[..., Any]:
    """detection_dataset over the whole training split, augmented; call it with `epoch=` for one pass."""
    from sprint2.pipeline import detection_dataset, padded_flags, padded_targets

    labels, boxes = padded_targets(train_ds)
    difficult = padded_flags(train_ds, "difficult", labels.shape[1])
    images = np.asarray(train_ds.images)
    batch = max(1, min(int(batch_size), len(images)))
    return functools.partial(
        detection_dataset,
        images,
        labels,
        boxes,
        difficult,
        batch,
        num_classes=num_classes,
        seed=seed,
        augment_data=True,
    )


def _train_step(net: Any, num_classes: int, optimizer: Any) -> Callable[[tf.Tensor, Any], tf.Tensor]:
    """One optimizer step on the mean detection loss, over the trainable (not fixed) weights of `net`."""
    from sprint2.detector import qat_trainable_variables
    from sprint2.targets import detection_loss

    variables = qat_trainable_variables(net)

    @tf.function
    def step(x: tf.Tensor, targets: dict[str, tf.Tensor]) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                detection_loss(net(x, training=True), targets, num_classes=num_classes)["loss"]
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def fine_tuner(
    model: keras.Model,
    train_ds: Any,
    representative: np.ndarray,
    options: QatOptions,
    *,
    width: float,
    seed: int,
) -> Callable[..., QatRun]:
    """qat_fine_tune bound to one model, data and options: QAT and its float control fine-tune alike."""
    return functools.partial(
        qat_fine_tune,
        model,
        train_ds,
        representative,
        width=width,
        epochs=options.epochs,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        seed=seed,
    )


def qat_variant(
    fine_tune: Callable[..., QatRun], representative: np.ndarray, out_dir: Path, card: ModelCard | None
) -> tuple[QatRun, Path | None, float]:
    """Fine-tunes quantization-aware and writes out_dir/qat_int8.tflite: (run, path, conversion seconds).

    QAT spans three libraries (Keras 3, tf_keras, tfmot), so an exception is not raised: the run names
    the stage that failed and the error, the path is None, and the caller measures the other variants.
    """
    from sprint2.detector import int8_tflite

    run = QatRun()
    try:
        fine_tune(run=run)
        run.stage = "detector.int8_tflite (TFLite conversion of the QAT model)"
        start = time.perf_counter()
        path = write_variant(out_dir, QAT_VARIANT, int8_tflite(run.model, representative), card)
        seconds = time.perf_counter() - start
    except Exception as exc:  # QAT spans three libraries; the report names the failing stage and error
        run.error = _error_text(exc)
        logger.warning("quantization-aware training failed at %s: %s", run.stage, run.error)
        return run, None, 0.0
    run.stage = "converted"
    return run, path, seconds


def float_control(
    fine_tune: Callable[..., QatRun], score: Callable[[Any], Mapping[str, Any]]
) -> dict[str, Any]:
    """The float tf_keras twin fine-tuned like QAT and `score`d in float: what the extra training alone gives.

    The control is optional: its failure is reported in the dict (stage and error), not raised.
    """
    tuned = QatRun()
    control: dict[str, Any] = {"what": "the float tf_keras twin fine-tuned like QAT, not quantized"}
    try:
        fine_tune(run=tuned, quantize=False)
        control.update(score(tuned.model))
    except Exception as exc:  # the control is optional: its failure is reported, not fatal
        tuned.error = _error_text(exc)
        logger.warning("the float fine-tuning control failed at %s: %s", tuned.stage, tuned.error)
    control.update(tuned.as_dict())
    return control


# --------------------------------------------------------------------------------------------
# Library versions, and whether tfmot takes a Keras 3 model (the single-box models) as it is
# --------------------------------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    """The form every QAT failure is reported in: "<ExceptionType>: <message>"."""
    return f"{type(exc).__name__}: {exc}"


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide what conversion and QAT can do."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "ai_edge_litert": installed_version("ai-edge-litert"),
        "tfmot": installed_version("tensorflow-model-optimization"),
        "tf_keras": installed_version("tf-keras"),
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
        return QatOutcome(False, _error_text(exc), info)
    info["tfmot"] = getattr(tfmot, "__version__", info["tfmot"])
    try:
        quantized = tfmot.quantization.keras.quantize_model(model)
    except Exception as exc:
        logger.info("quantization-aware training not supported: %s: %s", type(exc).__name__, exc)
        return QatOutcome(False, _error_text(exc), info)
    return QatOutcome(True, None, info, quantized)
