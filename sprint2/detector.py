"""A CenterNet-style multi-object detector: the model builder, its heads, and its int8 / QAT forms.

The model predicts, at output stride 4, a per-class centre heatmap (sigmoid), each object's box size
(w, h in input pixels) and the sub-cell offset of its centre. It is built from standard layers only,
by one builder that takes the Keras package as an argument, so the same code gives a Keras 3 model
for training and a `tf_keras` twin (same layer names, same weight shapes) that
`tfmot.quantization.keras.quantize_model` accepts; `copy_weights` moves the weights across.

What the detector learns from, its targets and loss, lives in `sprint2.targets`; decoding the outputs
into boxes lives in `sprint2.decode` (NumPy only).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

STRIDE = 4
#: Names of the three heads; the split model's outputs carry these names, in this order.
HEAD_NAMES: tuple[str, ...] = ("heatmap", "size", "offset")
#: The focal-loss prior: the heatmap's bias starts at -log((1 - p) / p), so every cell begins at p.
PRIOR_PROBABILITY = 0.01
#: The size head predicts relu(z) * SIZE_UNIT pixels: z stays O(1..20) for boxes of 16..320 px.
SIZE_UNIT = 16.0
#: Initial size prediction in input pixels (the size head's bias is SIZE_PRIOR / SIZE_UNIT).
SIZE_PRIOR = 32.0
#: The offset head spans (-OFFSET_REACH, OFFSET_REACH + 1) cells, so a cell up to OFFSET_REACH cells
#: from an object's centre cell can point at the centre (dense regression, `build_targets`).
OFFSET_REACH = 2

_BASE_WIDTHS = (16, 32, 64, 128, 256)  # stem (stride 2), then strides 4, 8, 16, 32
# Residual blocks at strides 4, 8, 16, 32: depth goes where the maps are small and cheap (the
# stride-4 neck and heads cost most of the FLOPs), for the context that tells crowded objects apart.
_BLOCKS = (1, 2, 3, 2)
_NECK_WIDTH = 64
_HEAD_WIDTH = 64


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _round_width(base: int, width: float) -> int:
    """Channels for a width multiplier: base * width rounded to a multiple of 8, at least 8."""
    return max(8, int(round(base * width / 8.0)) * 8)


def output_hw(input_hw: tuple[int, int], stride: int = STRIDE) -> tuple[int, int]:
    """The heatmap's (height, width) for an input of (height, width)."""
    return int(input_hw[0]) // stride, int(input_hw[1]) // stride


def _check_input_hw(input_hw: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(v) for v in input_hw)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ValueError(f"detector input (height, width) must be positive multiples of 32, got {input_hw!r}")
    return h, w


def build_detector(
    num_classes: int,
    input_hw: tuple[int, int],
    *,
    keras_module: Any = None,
    width: float = 1.0,
    split_outputs: bool = False,
    name: str = "detector",
) -> Any:
    """The detector as an uncompiled functional model of `keras_module` (default: Keras 3).

    Input: (N, H, W, 3) float32 RGB 0..255, H and W multiples of 32. Output: one float32 tensor
    (N, H/4, W/4, C + 4) = heatmap probabilities | size w, h in input pixels | centre offset in cells;
    with `split_outputs`, the same layers end in a dict of three outputs keyed by HEAD_NAMES instead,
    the form to quantize: one int8 tensor has one scale, too coarse for 0..1 probabilities when it
    also holds 0..320 px sizes.
    `width` multiplies every channel count (1.0, 3 classes: 4.03 M parameters, 3.01 GFLOPs per 320 x 256
    image).
    """
    K = keras if keras_module is None else keras_module
    h, w = _check_input_hw(input_hw)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width!r}")
    num_classes = int(num_classes)
    blocks = _Blocks(K)
    inputs = K.layers.Input((h, w, 3), dtype="float32", name="image")
    x = _backbone_and_neck(blocks, inputs, width)
    heat, size, offset = _heads(blocks, x, num_classes, _round_width(_HEAD_WIDTH, width))
    if split_outputs:
        model = K.Model(inputs, dict(zip(HEAD_NAMES, (heat, size, offset))), name=name)
    else:
        out = K.layers.Concatenate(axis=-1, dtype="float32", name="outputs")([heat, size, offset])
        model = K.Model(inputs, out, name=name)
    _set_fixed_layers(model)
    logger.debug(
        "built detector: %d classes, input %dx%d, width %.2f, %d parameters",
        num_classes,
        h,
        w,
        width,
        model.count_params(),
    )
    return model


class _Blocks:
    """The detector's building blocks in one Keras package (Keras 3 or tf_keras for the QAT twin)."""

    def __init__(self, keras_module: Any) -> None:
        self.K, self.L = keras_module, keras_module.layers

    def small(self) -> Any:
        """A fresh initializer per layer (tf_keras warns about a reused unseeded one)."""
        return self.K.initializers.RandomNormal(stddev=0.01)

    def conv_bn(
        self, x: Any, filters: int, name: str, *, kernel: int = 3, strides: int = 1, relu: bool = True
    ) -> Any:
        L = self.L
        x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return L.ReLU(name=f"{name}_relu")(x) if relu else x

    def residual(self, x: Any, filters: int, name: str) -> Any:
        y = self.conv_bn(x, filters, f"{name}_a")
        y = self.conv_bn(y, filters, f"{name}_b", relu=False)
        return self.L.ReLU(name=f"{name}_relu")(self.L.Add(name=f"{name}_add")([x, y]))


def _backbone_and_neck(b: _Blocks, inputs: Any, width: float) -> Any:
    """Residual stages at strides 4-32, then a top-down neck back to stride 4 (one feature map)."""
    widths = [_round_width(c, width) for c in _BASE_WIDTHS]
    neck_w = _round_width(_NECK_WIDTH, width)
    # Fixed 1x1 convolution 0..255 -> -1..1 (weights set later): Rescaling is not in tfmot's registry.
    x = b.L.Conv2D(3, 1, trainable=False, name="normalize")(inputs)
    x = b.conv_bn(x, widths[0], "stem", strides=2)
    features = {}
    for i, (stride, blocks) in enumerate(zip((4, 8, 16, 32), _BLOCKS), start=1):
        x = b.conv_bn(x, widths[i], f"s{stride}_down", strides=2)
        for j in range(blocks):
            x = b.residual(x, widths[i], f"s{stride}_res{j + 1}")
        features[stride] = x
    # Top-down neck: 1x1 laterals to one width, nearest upsampling, add, a 3x3 conv at each level.
    x = b.conv_bn(features[32], neck_w, "lat32", kernel=1)
    for stride in (16, 8, 4):
        up = b.L.UpSampling2D(2, interpolation="nearest", name=f"up{stride}")(x)
        lateral = b.conv_bn(features[stride], neck_w, f"lat{stride}", kernel=1)
        x = b.L.Add(name=f"merge{stride}")([up, lateral])
        x = b.conv_bn(x, neck_w, f"neck{stride}")
    return x


def _heads(b: _Blocks, x: Any, num_classes: int, head_w: int) -> tuple[Any, Any, Any]:
    """(heatmap, size, offset) heads on the stride-4 features, each ending in a float32 conv."""
    L = b.L
    prior_bias = -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    heat = b.conv_bn(x, head_w, "heat")
    heat = L.Conv2D(
        num_classes,
        1,
        activation="sigmoid",
        kernel_initializer=b.small(),
        bias_initializer=b.K.initializers.Constant(prior_bias),
        dtype="float32",
        name="heatmap",
    )(heat)
    box = b.conv_bn(x, head_w, "box")
    # relu inside the conv, not a ReLU layer: tfmot's Conv2D+ReLU rule would drop the kernel's fake-quant.
    size = L.Conv2D(
        2,
        1,
        activation="relu",
        kernel_initializer=b.small(),
        bias_initializer=b.K.initializers.Constant(SIZE_PRIOR / SIZE_UNIT),
        dtype="float32",
        name="size_raw",
    )(box)
    size = L.Conv2D(2, 1, trainable=False, dtype="float32", name="size")(size)  # fixed: x SIZE_UNIT
    offset = L.Conv2D(
        2, 1, activation="sigmoid", kernel_initializer=b.small(), dtype="float32", name="offset_raw"
    )(box)
    offset = L.Conv2D(2, 1, trainable=False, dtype="float32", name="offset")(offset)  # fixed: to cells
    return heat, size, offset


def _set_fixed_layers(model: Any) -> None:
    """Sets the fixed convolutions: normalize (x / 127.5 - 1), size (x SIZE_UNIT) and offset
    (0..1 -> -OFFSET_REACH..OFFSET_REACH + 1 cells)."""
    model.get_layer("normalize").set_weights(
        [np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3) / 127.5, np.full(3, -1.0, np.float32)]
    )
    model.get_layer("size").set_weights(
        [np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2) * SIZE_UNIT, np.zeros(2, np.float32)]
    )
    model.get_layer("offset").set_weights(
        [
            np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2) * (2 * OFFSET_REACH + 1),
            np.full(2, -float(OFFSET_REACH), np.float32),
        ]
    )


def copy_weights(src: Any, dst: Any) -> int:
    """Copies every weighted layer of `dst` from the layer of `src` with the same name; returns how many.

    Works across Keras 3 and tf_keras (both keep a layer's weights in the same order). A layer of
    `dst` missing from `src`, or weights of another count or shape, raise ValueError naming the layer.
    """
    copied = 0
    source = {layer.name: layer for layer in src.layers}
    for layer in dst.layers:
        target = layer.get_weights()
        if not target:
            continue
        if layer.name not in source:
            raise ValueError(
                f"copy_weights: layer {layer.name!r} of {dst.name!r} has no namesake in {src.name!r}"
            )
        values = source[layer.name].get_weights()
        shapes = [v.shape for v in values]
        if shapes != [t.shape for t in target]:
            raise ValueError(
                f"copy_weights: layer {layer.name!r} weights {[t.shape for t in target]} in {dst.name!r} "
                f"but {shapes} in {src.name!r}"
            )
        layer.set_weights(values)
        copied += 1
    return copied


# --------------------------------------------------------------------------------------------
# Splitting the output
# --------------------------------------------------------------------------------------------


def split_heads(outputs: Any, num_classes: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(heatmap, size, offset) float32 tensors from the concatenated output or the split model's outputs.

    Accepts the (N, h, w, C + 4) tensor, a sequence of three tensors or a mapping whose keys are the
    HEAD_NAMES or end in "_" + one of them (the QAT model's "quant_heatmap", ...).
    """
    if isinstance(outputs, Mapping):
        parts = list(_named_heads(outputs, []).values())
    elif isinstance(outputs, (list, tuple)):
        parts = list(outputs)
    else:
        out = tf.convert_to_tensor(outputs)
        if out.shape[-1] is not None and out.shape[-1] != num_classes + 4:
            raise ValueError(f"detector output has {out.shape[-1]} channels, expected {num_classes} + 4")
        parts = [out[..., :num_classes], out[..., num_classes : num_classes + 2], out[..., num_classes + 2 :]]
    if len(parts) != 3:
        raise ValueError(f"expected three detector outputs {HEAD_NAMES}, got {len(parts)}")
    heat, size, offset = (tf.cast(p, tf.float32) for p in parts)
    return heat, size, offset


# --------------------------------------------------------------------------------------------
# Quantization-aware training and int8 export
# --------------------------------------------------------------------------------------------

#: Layers with fixed weights: the input normalisation and the size and offset heads' scales.
FIXED_LAYERS: tuple[str, ...] = ("normalize", "size", "offset")


def tf_keras_twin(model: keras.Model, *, width: float = 1.0) -> Any:
    """The tf_keras (Keras 2) split-output twin of a Keras 3 detector, with its weights copied.

    `width` must be the one `model` was built with; copy_weights refuses mismatched shapes.
    """
    import tf_keras

    names = {layer.name for layer in model.layers}
    if not {"normalize", "heatmap", "size", "offset"} <= names:
        raise ValueError(f"model {model.name!r} is not a detector built by build_detector")
    num_classes = int(model.get_layer("heatmap").filters)
    input_hw = tuple(int(v) for v in model.input_shape[1:3])
    twin = build_detector(
        num_classes,
        input_hw,
        keras_module=tf_keras,
        width=width,
        split_outputs=True,
        name=f"{model.name}_tf_keras",
    )
    copy_weights(model, twin)
    return twin


def quantization_aware(
    model: keras.Model, *, width: float = 1.0, calibration: np.ndarray | None = None
) -> Any:
    """tfmot's quantization-aware (fake-quant) tf_keras model for a Keras 3 detector, weights copied.

    Pass `calibration` images: tfmot starts every activation range at [-6, 6] and moves it by
    0.1 % per training step, so without calibrate_quantizers the sizes (tens of pixels) stay clipped
    at 6 for thousands of steps. Train with `qat_trainable_variables(qat)`, not `qat.trainable_variables`:
    tfmot's QuantizeWrapperV2 lists a wrapped kernel as trainable even when its layer is not.
    """
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(tf_keras_twin(model, width=width))
    if calibration is not None:
        calibrate_quantizers(qat, model, calibration)
    return qat


def _layer_ranges(model: Any, names: list[str], images: np.ndarray, batch_size: int) -> dict[str, tuple]:
    """{layer name: (min, max)} of each named layer's output over the images, in inference mode."""
    probe = type(model)(model.input, [model.get_layer(n).output for n in names])
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for start in range(0, len(images), batch_size):
        outs = probe(np.asarray(images[start : start + batch_size], np.float32), training=False)
        for n, out in zip(names, outs if isinstance(outs, (list, tuple)) else [outs]):
            value = np.asarray(out)
            lo[n], hi[n] = min(lo[n], float(value.min())), max(hi[n], float(value.max()))
    return {n: (lo[n], hi[n]) for n in names}


def calibrate_quantizers(qat: Any, model: keras.Model, images: np.ndarray, batch_size: int = 8) -> int:
    """Sets the QAT model's quantization ranges from the float `model` on `images`; returns how many.

    Activation ranges (output_*, post_activation_*) become each layer's observed output range, the
    sigmoid heads' pre_activation_* the matching logit range, kernel_* each kernel's per-channel
    +-max|w| (what tfmot computes at the next training step) and the input's the pixel range 0..255.
    Every range includes 0, as TFLite requires.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"need calibration images (N, H, W, 3), got shape {images.shape}")
    wrapped = {layer.name: layer.layer.name for layer in qat.layers if hasattr(layer, "layer")}
    names = sorted(set(wrapped.values()) & {layer.name for layer in model.layers})
    ranges = _layer_ranges(model, names, images, batch_size)
    set_count = 0
    for layer in qat.layers:
        inner = wrapped.get(layer.name)
        for var in layer.non_trainable_weights:
            kind = var.name.split("/")[-1].split(":")[0]
            value = None
            if layer.name.startswith("quantize_layer") and kind.endswith(("_min", "_max")):
                value = 0.0 if kind.endswith("_min") else 255.0
            elif inner in ranges and kind in (
                "output_min",
                "output_max",
                "post_activation_min",
                "post_activation_max",
            ):
                lo, hi = ranges[inner]
                value = min(lo, 0.0) if kind.endswith("_min") else max(hi, 0.0)
            elif inner in ranges and kind in ("pre_activation_min", "pre_activation_max"):
                p = np.clip(np.array(ranges[inner]), 1e-6, 1.0 - 1e-6)  # sigmoid output -> logits
                lo, hi = np.log(p / (1.0 - p))
                value = min(float(lo), 0.0) if kind.endswith("_min") else max(float(hi), 0.0)
            elif inner is not None and kind in ("kernel_min", "kernel_max"):
                kernel = model.get_layer(inner).get_weights()[0]
                bound = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)
                value = np.reshape(-bound if kind == "kernel_min" else bound, var.shape)
            if value is not None:
                var.assign(np.broadcast_to(np.asarray(value, np.float32), var.shape))
                set_count += 1
    return set_count


def qat_trainable_variables(model: Any) -> list[tf.Variable]:
    """The trainable variables of a (QAT) model without the FIXED_LAYERS' weights."""
    return [v for v in model.trainable_variables if v.name.split("/")[0] not in FIXED_LAYERS]


def _named_heads(outputs: Any, output_names: list[str]) -> dict[str, tf.Tensor]:
    """{head name: tensor} from a model's dict or list outputs whose names end in a head's name."""
    if not isinstance(outputs, Mapping):
        outputs = dict(zip(output_names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
    named = {}
    for head in HEAD_NAMES:
        keys = [k for k in outputs if k == head or k.endswith("_" + head)]
        if len(keys) != 1:
            raise ValueError(f"expected one output named like {head!r}, got {sorted(outputs)}")
        named[head] = outputs[keys[0]]
    return named


def int8_tflite(model: Any, representative: np.ndarray) -> bytes:
    """A full-integer int8 TFLite flatbuffer (float32 input and outputs) of a split-output detector.

    Takes a Keras 3 model (post-training quantization, calibrated on `representative` images) or a
    tf_keras QAT model from `quantization_aware` (its fake-quant ranges decide the scales). Outputs
    are named by HEAD_NAMES; only int8 kernels are allowed, so a float op fails the conversion.
    """
    samples = np.array(representative, np.float32)
    if samples.ndim != 4 or len(samples) == 0:
        raise ValueError(f"need representative images (N, H, W, 3), got shape {samples.shape}")
    # Pin one pixel to 0 and one to 255 so the input's int8 range is the whole pixel range.
    samples[0].reshape(-1)[:2] = (0.0, 255.0)

    def calibration() -> Iterator[list[np.ndarray]]:
        for image in samples:
            yield [image[np.newaxis]]

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    output_names = list(getattr(model, "output_names", []) or [])

    @tf.function(input_signature=[spec])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return _named_heads(model(images, training=False), output_names)

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, keras.Model):
            path = Path(tmp) / "saved_model"
            model.export(str(path), format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
            restore: list[tuple[Any, np.ndarray]] = []
        else:
            # A bare module holding the variables: saving the tf_keras model itself would trace
            # every layer's call for its SavedModel, which costs most of the conversion's time.
            holder = tf.Module()
            holder.model_variables = list(model.variables)
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [serve.get_concrete_function()], holder
            )
            restore = _spread_equal_biases(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            return converter.convert()
        finally:
            for var, value in restore:
                var.assign(value)


def _spread_equal_biases(model: Any) -> list[tuple[Any, np.ndarray]]:
    """Makes each conv bias whose channels are all equal and non-zero slightly unequal; returns the originals.

    TF 2.21's converter quantizes such a constant ("splat") bias of a fake-quant (QAT) conv with the
    first channel's scale for every channel, which is wrong whenever the per-channel kernel scales
    differ (a freshly initialised head, e.g. the heatmap prior). Relative steps of 1e-6 break the
    splat and stay far below one int32 bias step.
    """
    changed = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        bias = getattr(inner, "bias", None)
        if bias is None or int(np.prod(bias.shape)) < 2:
            continue
        value = bias.numpy()
        if value.flat[0] != 0 and np.all(value == value.flat[0]):
            changed.append((bias, value.copy()))
            steps = np.arange(value.size, dtype=np.float32).reshape(value.shape)
            bias.assign(value * (1.0 + 1e-6 * steps))
    return changed
