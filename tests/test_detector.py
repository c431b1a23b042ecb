"""Tests for sprint2.detector: the model, its tf_keras twin and int8 export, the targets and the loss."""

from __future__ import annotations

import importlib.util
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sprint2 import detector as d
from sprint2 import targets as tg
from sprint2.decode import decode

C = 3
HW = (64, 96)  # input (height, width): output 16 x 24 cells
OUT_H, OUT_W = 16, 24


@pytest.fixture(scope="module")
def tiny() -> keras.Model:
    keras.utils.set_random_seed(0)
    return d.build_detector(C, HW, width=0.25)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, *HW, 3)).astype(np.float32)


def perturb_batch_norms(model, seed: int = 0) -> None:
    """Non-trivial BN statistics, so a twin that mixed up gamma/beta/mean/variance would show it."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if "BatchNormalization" in type(layer).__name__:
            g, b, m, v = layer.get_weights()
            layer.set_weights(
                [
                    g * rng.uniform(0.5, 1.5, g.shape),
                    b + rng.normal(0, 0.1, b.shape),
                    m + rng.normal(0, 0.1, m.shape),
                    v * rng.uniform(0.5, 2.0, v.shape),
                ]
            )


# -------------------------------------------------------------------------------------------- model


def test_output_shape_prior_and_initial_size(tiny: keras.Model) -> None:
    out = tiny(images(2), training=False).numpy()
    assert out.shape == (2, OUT_H, OUT_W, C + 4) and out.dtype == np.float32
    heat, size, offset = out[..., :C], out[..., C : C + 2], out[..., C + 2 :]
    assert abs(heat.mean() - 0.01) < 0.002, heat.mean()  # the focal-loss prior
    bias = tiny.get_layer("heatmap").get_weights()[1]
    np.testing.assert_allclose(bias, -math.log(0.99 / 0.01), rtol=1e-6)
    assert np.abs(size - d.SIZE_PRIOR).max() < 2.0 and (size >= 0).all()
    assert ((offset > 0) & (offset < 1)).all()


def test_only_standard_layers(tiny: keras.Model) -> None:
    split = d.build_detector(C, HW, width=0.25, split_outputs=True)
    standard = {"InputLayer", "Conv2D", "BatchNormalization", "ReLU", "Add", "UpSampling2D", "Concatenate"}
    for model in (tiny, split):
        kinds = {type(layer).__name__ for layer in model.layers}
        assert kinds <= standard, kinds
        assert all(type(layer).__module__.startswith("keras.src.layers") for layer in model.layers)
    assert "Concatenate" not in {type(layer).__name__ for layer in split.layers}


def test_input_is_normalised_by_a_fixed_convolution(tiny: keras.Model) -> None:
    norm = keras.Model(tiny.input, tiny.get_layer("normalize").output)
    x = np.zeros((1, *HW, 3), np.float32)
    x[0, 0, 0] = (0.0, 127.5, 255.0)
    np.testing.assert_allclose(norm(x).numpy()[0, 0, 0], [-1.0, 0.0, 1.0], atol=1e-6)
    fixed = {v.path.split("/")[0] for v in tiny.variables} - {
        v.path.split("/")[0] for v in tiny.trainable_variables
    }
    assert {"normalize", "size"} <= fixed


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        d.build_detector(C, (64, 100))
    with pytest.raises(ValueError, match="num_classes"):
        d.build_detector(0, HW)


def test_width_multiplier_and_full_size_budget() -> None:
    full = d.build_detector(20, (256, 320))
    assert 3e6 <= full.count_params() <= 5e6
    assert d.build_detector(20, (256, 320), width=0.5).count_params() < full.count_params() / 3


def test_mixed_bfloat16_keeps_float32_outputs() -> None:
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = d.build_detector(C, HW, width=0.25)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    out = model(images(1), training=False)
    assert out.dtype == tf.float32
    assert all(
        model.get_layer(n).compute_dtype == "float32" for n in ("heatmap", "size", "offset", "outputs")
    )


def test_split_model_has_the_same_layers_and_outputs(tiny: keras.Model) -> None:
    split = d.build_detector(C, HW, width=0.25, split_outputs=True)
    assert d.copy_weights(tiny, split) == sum(1 for layer in tiny.layers if layer.weights)
    x = images(1)
    joined, parts = tiny(x).numpy(), split(x)
    assert sorted(parts) == sorted(d.HEAD_NAMES)
    np.testing.assert_allclose(parts["heatmap"].numpy(), joined[..., :C], atol=1e-6)
    np.testing.assert_allclose(parts["size"].numpy(), joined[..., C : C + 2], atol=1e-4)
    np.testing.assert_allclose(parts["offset"].numpy(), joined[..., C + 2 :], atol=1e-6)


def test_copy_weights_names_the_mismatched_layer(tiny: keras.Model) -> None:
    wider = d.build_detector(C, HW, width=0.5)
    with pytest.raises(ValueError, match="layer 's4_down_conv' weights"):
        d.copy_weights(tiny, wider)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense_x")])
    with pytest.raises(ValueError, match="'dense_x' .* has no namesake"):
        d.copy_weights(tiny, other)


def test_one_training_step_reaches_every_trainable_variable() -> None:
    model = d.build_detector(C, HW, width=0.25)
    objects = {
        "boxes": [[[10, 10, 40, 30], [50, 20, 90, 60]]],
        "labels": [[0, 2]],
        "valid": [[True, True]],
        "difficult": [[False, False]],
    }
    targets = tg.build_targets(**objects, num_classes=C, input_hw=HW)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            tg.detection_loss(model(images(1), training=True), targets, num_classes=C)["loss"]
        )
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)


# -------------------------------------------------------------------------------------------- targets


def reference_targets(boxes, labels, valid, difficult, num_classes=C, input_hw=HW, stride=4) -> dict:
    """The target rules written as a plain loop over boxes and cells (float64)."""
    boxes, labels = np.asarray(boxes, float), np.asarray(labels)
    valid, difficult = np.asarray(valid, bool), np.asarray(difficult, bool)
    b_count, m_count = labels.shape
    in_h, in_w = input_hw
    h, w = in_h // stride, in_w // stride
    heat = np.zeros((b_count, h, w, num_classes))
    ignore = np.zeros_like(heat)
    out = {
        "indices": np.zeros((b_count, m_count), int),
        "size": np.zeros((b_count, m_count, 2)),
        "offset": np.zeros((b_count, m_count, 2)),
        "reg_mask": np.zeros((b_count, m_count)),
    }
    ratio = (1 - 0.7) / (1 + 0.7)
    for b in range(b_count):
        for m in range(m_count):
            x0, y0, x1, y1 = np.clip(boxes[b, m], 0, [in_w, in_h, in_w, in_h])
            if not valid[b, m] or x1 <= x0 or y1 <= y0:
                continue
            c = labels[b, m]
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            col, row = min(int(cx), w - 1), min(int(cy), h - 1)
            if difficult[b, m]:
                for i in range(h):
                    for j in range(w):
                        px, py = (j + 0.5) * stride, (i + 0.5) * stride
                        if (x0 <= px <= x1 and y0 <= py <= y1) or (i, j) == (row, col):
                            ignore[b, i, j, c] = 1
                continue
            sx = max((x1 - x0) / stride * ratio / 2, 1 / 3)
            sy = max((y1 - y0) / stride * ratio / 2, 1 / 3)
            for i in range(h):
                for j in range(w):
                    g = math.exp(-((j - col) ** 2 / (2 * sx**2) + (i - row) ** 2 / (2 * sy**2)))
                    heat[b, i, j, c] = max(heat[b, i, j, c], g)
            out["indices"][b, m] = row * w + col
            out["size"][b, m] = (x1 - x0, y1 - y0)
            out["offset"][b, m] = (cx - col, cy - row)
            out["reg_mask"][b, m] = 1
    out["heatmap"] = heat
    out["heatmap_mask"] = np.where((ignore > 0) & (heat != 1), 0.0, 1.0)
    return out


# Image 0: two overlapping boxes of one class and one of another on top of them, a padding slot
# holding garbage. Image 1: a box at the bottom-right border, one sticking out of the top-left
# corner, a difficult box overlapping a normal box of the same class, a difficult box smaller than a
# cell that holds no cell centre. Image 2: one difficult box, then padding.
CASE = {
    "boxes": [
        [[10, 8, 50, 40], [30, 20, 70, 56], [20, 10, 60, 50], [5, 5, 9, 9], [0, 0, 0, 0]],
        [[80, 48, 96, 64], [-6, -4, 14, 10], [40, 20, 72, 52], [44, 24, 60, 44], [2.5, 2.5, 5.5, 5.5]],
        [[1, 2, 30, 40], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    ],
    "labels": [[1, 1, 2, 0, 0], [0, 2, 1, 1, 0], [0, 0, 0, 0, 0]],
    "valid": [[True, True, True, False, False], [True] * 5, [True] + [False] * 4],
    "difficult": [[False] * 5, [False, False, True, False, True], [True] + [False] * 4],
}


@pytest.fixture(scope="module")
def targets() -> dict[str, np.ndarray]:
    out = tg.build_targets(**{k: tf.constant(v) for k, v in CASE.items()}, num_classes=C, input_hw=HW)
    return {k: v.numpy() for k, v in out.items()}


def test_targets_match_the_reference_loop(targets: dict[str, np.ndarray]) -> None:
    ref = reference_targets(**CASE)
    assert targets["heatmap"].shape == (3, OUT_H, OUT_W, C)
    for key in ("heatmap", "heatmap_mask", "size", "offset", "reg_mask"):
        np.testing.assert_allclose(targets[key], ref[key], atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(targets["indices"] * ref["reg_mask"], ref["indices"])


def test_targets_inside_tf_data_with_an_unknown_batch_size() -> None:
    data = tf.data.Dataset.from_tensor_slices({k: tf.constant(v) for k, v in CASE.items()}).batch(2)
    assert data.element_spec["boxes"].shape.as_list() == [None, 5, 4]
    batches = list(data.map(lambda objects: tg.build_targets(**objects, num_classes=C, input_hw=HW)))
    assert [b["heatmap"].shape[0] for b in batches] == [2, 1]
    ref = reference_targets(**CASE)
    for key in ("heatmap", "heatmap_mask", "size"):
        np.testing.assert_allclose(np.concatenate([b[key].numpy() for b in batches]), ref[key], atol=1e-5)


def test_targets_refuse_an_out_of_range_label() -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match="label >= 3"):
        tg.build_targets([[[0, 0, 8, 8]]], [[3]], [[True]], [[False]], num_classes=C, input_hw=HW)
    padded = tg.build_targets([[[0, 0, 8, 8]]], [[7]], [[False]], [[False]], num_classes=C, input_hw=HW)
    assert padded["heatmap"].numpy().max() == 0.0  # padding may hold anything


def test_targets_by_hand(targets: dict[str, np.ndarray]) -> None:
    heat, mask = targets["heatmap"], targets["heatmap_mask"]
    # Box (10, 8, 50, 40): centre (30, 24) -> cell (row 6, col 7), offset (0.5, 0), size 40 x 32.
    assert heat[0, 6, 7, 1] == 1.0 and targets["indices"][0, 0] == 6 * OUT_W + 7
    np.testing.assert_allclose(targets["offset"][0, 0], [0.5, 0.0])
    np.testing.assert_allclose(targets["size"][0, 0], [40, 32])
    # Overlapping boxes of one class: one channel with two peaks, the max of their Gaussians between.
    assert np.sum(heat[0, ..., 1] == 1.0) == 2 and np.sum(heat[0, ..., 2] == 1.0) == 1
    # The border box's centre (88, 56) is cell (14, 22); the clipped corner box is (0, 0, 14, 10).
    assert heat[1, 14, 22, 0] == 1.0
    np.testing.assert_allclose(targets["size"][1, 1], [14, 10])
    np.testing.assert_allclose(targets["offset"][1, 1], [0.75, 0.25])
    # Difficult boxes: no peak, no regression; their class's cells are ignored, other classes' are not.
    assert targets["reg_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [0] * 5]
    assert mask[1, 8, 12, 1] == 0.0 and mask[1, 8, 12, 0] == 1.0  # inside the difficult (40, 20, 72, 52)
    assert heat[1, 8, 13, 1] == 1.0 and mask[1, 8, 13, 1] == 1.0  # the normal box's peak still counts
    assert mask[1, 1, 1, 0] == 0.0 and mask[1, 0, 0, 0] == 1.0  # (2.5, 2.5, 5.5, 5.5): its centre cell only
    # Padding and a difficult-only image contribute nothing.
    assert heat[2].max() == 0.0 and mask[2, 5, 3, 0] == 0.0 and np.all(targets["size"][0, 3:] == 0)
    assert heat.max() == 1.0


# -------------------------------------------------------------------------------------------- loss


def perfect_output(targets: dict[str, np.ndarray], logit: float = 9.0) -> np.ndarray:
    """An output with confident peaks exactly at the targets and, at every cell, the size of the box
    the cell regresses (box_map) and the offset from the cell to that box's centre."""
    heat = targets["heatmap"]
    prob = np.where(heat == 1.0, 1 / (1 + math.exp(-logit)), 1e-4)
    box = np.asarray(targets["box_map"])
    rows, cols = np.mgrid[: heat.shape[1], : heat.shape[2]]
    size = np.stack([box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]], axis=-1)
    offset = np.stack(
        [
            (box[..., 0] + box[..., 2]) / (2 * d.STRIDE) - cols,
            (box[..., 1] + box[..., 3]) / (2 * d.STRIDE) - rows,
        ],
        axis=-1,
    )
    for b, m in zip(*np.nonzero(targets["reg_mask"])):  # the centre cells, as the centre targets say
        r, c = divmod(int(targets["indices"][b, m]), heat.shape[2])
        np.testing.assert_allclose(size[b, r, c], targets["size"][b, m])
        np.testing.assert_allclose(offset[b, r, c], targets["offset"][b, m], atol=1e-5)
    return np.concatenate([prob, size, offset], axis=-1).astype(np.float32)


def loss_of(output: np.ndarray, targets: dict, dense: bool = True) -> dict[str, np.ndarray]:
    losses = tg.detection_loss(tf.constant(output), targets, num_classes=C, dense=dense)
    return {k: v.numpy() for k, v in losses.items()}


@pytest.mark.parametrize("dense", [True, False])
def test_perfect_prediction_has_no_regression_loss(targets: dict, dense: bool) -> None:
    loss = loss_of(perfect_output(targets), targets, dense)
    assert loss["loss"].shape == (3,)
    assert np.abs(loss["size"]).max() < 1e-6 and np.abs(loss["offset"]).max() < 1e-5
    assert np.abs(loss["giou"]).max() < 1e-5
    assert loss["heatmap"].max() < 0.01
    np.testing.assert_allclose(loss["num_objects"], [3, 3, 1])


def test_dense_regression_weights_each_object_once_around_its_centre(targets: dict) -> None:
    weight = np.asarray(targets["box_weight"])
    # Every trained object's cells weigh 1 in all: per image, the weights sum to its object count.
    np.testing.assert_allclose(
        weight.sum(axis=(1, 2)), np.asarray(targets["reg_mask"]).sum(axis=1), atol=1e-4
    )
    for b, m in zip(*np.nonzero(targets["reg_mask"])):
        r, c = divmod(int(targets["indices"][b, m]), weight.shape[2])
        assert weight[b, r, c] > 0  # the centre cell always regresses its own object
        np.testing.assert_allclose(
            targets["box_map"][b, r, c], np.clip(CASE["boxes"][b][m], 0, [HW[1], HW[0]] * 2)
        )
    reach = d.OFFSET_REACH
    rows, cols = np.nonzero(weight[0])
    centres = [divmod(int(i), weight.shape[2]) for i in targets["indices"][0][targets["reg_mask"][0] > 0]]
    for r, c in zip(rows, cols):  # a weighted cell lies within OFFSET_REACH cells of some centre
        assert any(abs(r - rr) <= reach and abs(c - cc) <= reach for rr, cc in centres)
    # A prediction off by half a box at the non-centre cells costs GIoU loss only in dense mode.
    moved = perfect_output(targets)
    centre_cells = np.zeros(weight.shape, bool)
    for b, m in zip(*np.nonzero(targets["reg_mask"])):
        centre_cells[b][divmod(int(targets["indices"][b, m]), weight.shape[2])] = True
    moved[..., C + 2 :][~centre_cells] += 3.0
    assert (
        loss_of(moved, targets)["giou"][0] > 0.05 and loss_of(moved, targets, dense=False)["offset"][0] < 1e-5
    )


def test_a_worse_heatmap_costs_more(targets: dict) -> None:
    good = perfect_output(targets)
    base = loss_of(good, targets)["heatmap"]
    weak_peaks = perfect_output(targets, logit=0.0)  # p = 0.5 at the centres
    noisy = good.copy()
    noisy[..., :C] = np.maximum(noisy[..., :C], 0.3)  # false positives everywhere
    assert (loss_of(weak_peaks, targets)["heatmap"][:2] > base[:2] + 0.1).all()  # image 2 has no peak
    assert (loss_of(noisy, targets)["heatmap"] > base + 0.1).all()
    shifted = good.copy()
    shifted[:, :, :, C : C + 2] *= 1.2  # every size 20 % too large
    np.testing.assert_allclose(loss_of(shifted, targets)["size"][:2], 0.2, rtol=1e-5)


def test_padding_and_ignored_cells_contribute_nothing(targets: dict) -> None:
    good = perfect_output(targets)
    base = loss_of(good, targets)
    assert base["heatmap"][2] < 1e-3 and base["size"][2] == 0 and base["offset"][2] == 0
    # Confident false positives inside the difficult box, on its class: ignored.
    ignored = good.copy()
    ignored[1, 6:12, 11:17, 1] = np.where(
        targets["heatmap"][1, 6:12, 11:17, 1] == 1, ignored[1, 6:12, 11:17, 1], 0.9
    )
    np.testing.assert_allclose(loss_of(ignored, targets)["heatmap"], base["heatmap"], rtol=1e-6)
    other_class = good.copy()
    other_class[1, 6:12, 11:17, 2] = 0.9  # the same false positives on another class do count
    assert loss_of(other_class, targets)["heatmap"][1] > base["heatmap"][1] + 1.0
    # Garbage in the padding slots of the inputs changes no target and no loss.
    case = {k: [list(row) for row in v] for k, v in CASE.items()}
    case["boxes"][0][4] = [3, 3, 90, 60]
    case["labels"][0][4] = 2
    padded = tg.build_targets(**case, num_classes=C, input_hw=HW)
    np.testing.assert_allclose(loss_of(good, padded)["loss"], base["loss"], rtol=1e-6)


def test_per_image_losses_make_replica_count_irrelevant(targets: dict) -> None:
    out = perfect_output(targets, logit=1.0)
    out[..., C:] *= 1.1
    whole = loss_of(out, targets)["loss"]
    halves = [
        loss_of(out[s], {k: v[s] for k, v in targets.items()})["loss"] for s in (slice(0, 2), slice(2, 3))
    ]
    np.testing.assert_allclose(np.concatenate(halves), whole, rtol=1e-6)
    one = tf.nn.compute_average_loss(whole, global_batch_size=3)
    two = sum(tf.nn.compute_average_loss(h, global_batch_size=3) for h in halves)
    np.testing.assert_allclose(float(one), float(two), rtol=1e-6)


def test_targets_of_a_perfect_prediction_decode_to_the_boxes(targets: dict) -> None:
    dets = decode(perfect_output(targets), C, score_threshold=0.5, top_k=20, iou_threshold=0.7)
    boxes = np.clip(np.asarray(CASE["boxes"][1], np.float32), 0, [96, 64, 96, 64])
    # Equal scores: ordered by cell, (1, 1), (8, 13), (14, 22).
    np.testing.assert_allclose(dets[1].boxes, boxes[[1, 3, 0]], atol=1e-4)
    assert dets[1].labels.tolist() == [2, 1, 0] and len(dets[2]) == 0


# -------------------------------------------------------------------------------------------- QAT, int8

needs_tfmot = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None
    or importlib.util.find_spec("tf_keras") is None,
    reason="tensorflow-model-optimization / tf_keras not installed",
)


def structured_images(n: int, seed: int) -> np.ndarray:
    """Dark random images with one bright rectangle each, so activations vary like on real pictures."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 120, (n, *HW, 3)).astype(np.float32)
    for img in out:
        x0, y0 = rng.integers(0, 48, 2)
        img[y0 : y0 + 20, x0 : x0 + 30] += 130.0
    return out


def spread_heads(model, seed: int = 0) -> None:
    """Heads with visible dynamic range: heatmap probabilities across 0..1, sizes up to tens of pixels."""
    rng = np.random.default_rng(seed)
    heat = model.get_layer("heatmap")
    kernel, bias = heat.get_weights()
    heat.set_weights([rng.normal(0, 0.5, kernel.shape).astype(np.float32), np.zeros_like(bias)])
    size = model.get_layer("size_raw")
    kernel, bias = size.get_weights()
    size.set_weights([rng.normal(0, 0.3, kernel.shape).astype(np.float32), bias + 2.0])


def run_tflite(flatbuffer: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """Runs a TFLite model image by image under LiteRT; {output name: (N, ...) array}."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=flatbuffer).get_signature_runner()
    (name,) = runner.get_input_details()
    outs = [runner(**{name: x[i : i + 1]}) for i in range(len(x))]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def integer_kernels_only(flatbuffer: bytes) -> bool:
    """True when every tensor between the float input and outputs is an integer tensor."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    io = {t["index"] for t in interp.get_input_details() + interp.get_output_details()}
    kinds = {np.dtype(t["dtype"]) for t in interp.get_tensor_details() if t["index"] not in io}
    return kinds <= {np.dtype(np.int8), np.dtype(np.int32)} and np.dtype(np.int8) in kinds


@pytest.fixture(scope="module")
def keras3_split() -> keras.Model:
    keras.utils.set_random_seed(1)
    model = d.build_detector(C, HW, width=0.25, split_outputs=True)
    perturb_batch_norms(model)
    spread_heads(model)
    return model


@needs_tfmot
def test_tf_keras_twin_gives_the_same_outputs(keras3_split: keras.Model) -> None:
    import tf_keras

    twin = d.tf_keras_twin(keras3_split, width=0.25)
    assert isinstance(twin, tf_keras.Model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in keras3_split.layers]
    x = structured_images(2, seed=3)
    ours, theirs = keras3_split(x, training=False), twin(x, training=False)
    np.testing.assert_allclose(theirs["heatmap"].numpy(), ours["heatmap"].numpy(), atol=1e-5)
    np.testing.assert_allclose(theirs["size"].numpy(), ours["size"].numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(theirs["offset"].numpy(), ours["offset"].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        d.tf_keras_twin(keras3_split, width=0.5)


def heads_of(outputs, names) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in d._named_heads(outputs, list(names)).items()}


@pytest.mark.slow
@needs_tfmot
def test_quantization_aware_training_step_and_int8_export(keras3_split: keras.Model) -> None:
    import tf_keras

    x = structured_images(4, seed=4)
    qat = d.quantization_aware(keras3_split, width=0.25, calibration=structured_images(16, seed=5))
    assert any("Quantize" in type(layer).__name__ for layer in qat.layers)
    # Calibrated, the fake-quant model starts where the float model is.
    fake, ref = heads_of(qat(x, training=False), qat.output_names), keras3_split(x, training=False)
    assert np.abs(fake["heatmap"] - ref["heatmap"].numpy()).max() < 0.02
    assert np.abs(fake["size"] - ref["size"].numpy()).max() < 1.0 and ref["size"].numpy().max() > 20

    train = d.qat_trainable_variables(qat)
    assert len(train) == len(keras3_split.trainable_variables)
    assert not any(v.name.split("/")[0] in d.FIXED_LAYERS for v in train)
    objects = {
        "boxes": [[[10, 8, 50, 40], [40, 20, 90, 60]]] * 4,
        "labels": [[0, 2]] * 4,
        "valid": [[True, True]] * 4,
        "difficult": [[False, False]] * 4,
    }
    targets = tg.build_targets(**objects, num_classes=C, input_hw=HW)
    before = [v.numpy().copy() for v in train]
    fixed_before = qat.get_layer("quant_normalize").get_weights()[0].copy()
    optimizer = tf_keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tg.detection_loss(qat(x, training=True), targets, num_classes=C)["loss"])
    grads = tape.gradient(loss, train)
    optimizer.apply_gradients(zip(grads, train))
    assert np.isfinite(float(loss)) and all(g is not None for g in grads)
    assert sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, train)) > len(train) // 2
    np.testing.assert_array_equal(qat.get_layer("quant_normalize").get_weights()[0], fixed_before)

    flatbuffer = d.int8_tflite(qat, structured_images(8, seed=5))
    assert integer_kernels_only(flatbuffer)
    lite = run_tflite(flatbuffer, x)
    assert sorted(lite) == sorted(d.HEAD_NAMES)
    fake = heads_of(qat(x, training=False), qat.output_names)  # what the int8 kernels should reproduce
    assert np.abs(lite["heatmap"] - fake["heatmap"]).max() < 0.02
    assert np.abs(lite["size"] - fake["size"]).max() < 1.0  # needs the equal-bias workaround (size_raw: 4, 4)
    assert np.abs(lite["offset"] - fake["offset"]).max() < 0.01


@pytest.mark.slow
@needs_tfmot
def test_uncalibrated_qat_clips_sizes_at_tfmots_initial_range(keras3_split: keras.Model) -> None:
    qat = d.quantization_aware(keras3_split, width=0.25)
    fake = heads_of(qat(structured_images(2, seed=8), training=False), qat.output_names)
    assert fake["size"].max() <= 6.0 + 1e-3  # tfmot starts every activation range at [-6, 6]


@needs_tfmot
def test_converter_quantizes_an_equal_qat_bias_with_the_first_channels_scale() -> None:
    """Pins the TF 2.21 converter behaviour that _spread_equal_biases works around (fails once fixed)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from ai_edge_litert.interpreter import Interpreter

    inputs = tf_keras.Input((8, 8, 4))
    head = tf_keras.layers.Conv2D(2, 1, name="head")
    model = tf_keras.Model(
        inputs, head(tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    )
    kernel = np.random.default_rng(0).normal(0.0, [0.2, 0.5], (1, 1, 8, 2)).astype(np.float32)
    head.set_weights([kernel, np.array([1.0, 1.0], np.float32)])
    qat = tfmot.quantization.keras.quantize_model(model)
    x = np.random.default_rng(1).uniform(0, 1, (8, 8, 8, 4)).astype(np.float32)
    qat(x, training=True)  # sets the per-channel kernel ranges
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    interp = Interpreter(model_content=converter.convert())
    (bias,) = [t for t in interp.get_tensor_details() if t["dtype"] == np.int32 and tuple(t["shape"]) == (2,)]
    scales = bias["quantization_parameters"]["scales"]
    stored = interp.get_tensor(bias["index"]) * scales
    assert stored[0] == pytest.approx(1.0, abs=1e-3)
    assert stored[1] == pytest.approx(scales[1] / scales[0], rel=1e-3) and abs(stored[1] - 1.0) > 0.1


@pytest.mark.slow
@needs_tfmot
def test_int8_keeps_the_heatmap_only_with_split_outputs(keras3_split: keras.Model) -> None:
    joined = d.build_detector(C, HW, width=0.25)
    d.copy_weights(keras3_split, joined)
    calibration, x = structured_images(16, seed=6), structured_images(4, seed=7)
    ref = keras3_split(x, training=False)
    split = run_tflite(d.int8_tflite(keras3_split, calibration), x)
    (concatenated,) = run_tflite(d.int8_tflite(joined, calibration), x).values()
    split_error = np.abs(split["heatmap"] - ref["heatmap"].numpy()).max()
    joined_error = np.abs(concatenated[..., :C] - ref["heatmap"].numpy()).max()
    # One int8 scale for 0..1 probabilities and sizes of tens of pixels: steps of ~0.2 in the heatmap.
    assert split_error < 0.02 < 0.05 < joined_error, (split_error, joined_error)
    assert np.abs(split["size"] - ref["size"].numpy()).max() < 1.0
