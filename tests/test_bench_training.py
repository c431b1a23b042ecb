"""bench_training in a fresh process on tiny data for both models; FLOPs, rounds, projection, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from sprint2 import analysis
from sprint2.bench_training import _PeakRss, model_specs, project_multi_gpu, round_order, spread
from sprint2.model import build_model, gradient_bytes, model_flops
from sprint2.synthetic import generate

pytestmark = pytest.mark.slow  # trains, converts or starts processes: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[1]
MIN_SECONDS = 0.3
ROUNDS = 2


def _python(code: str) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (TensorFlow not yet initialised), as the CLI does."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("tiny"), train=32, test=8, seed=3)


@pytest.fixture(scope="module")
def bench_result(tiny_data: Path) -> dict:
    call = (
        f"bench_training({str(tiny_data)!r}, replicas=(1, 2), min_seconds={MIN_SECONDS}, rounds={ROUNDS}, "
        "size=32, batch=8, detector_size=32, detector_batch=4)"
    )
    code = f"import json; from sprint2.bench_training import bench_training; print(json.dumps({call}))"
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rows(result: dict, model: str) -> list[dict]:
    return [r for r in result["rows"] if r["model"] == model]


def test_rows_cover_every_model_under_no_strategy_and_each_replica_count(bench_result: dict) -> None:
    rows = bench_result["rows"]
    assert list(bench_result["models"]) == ["improved", "detector"]
    assert [r["model"] for r in rows if r["device"] == "cpu"] == ["improved"] * 3 + ["detector"] * 3
    keys = set("model setting device replicas images_per_s spread first_epoch_s epoch_s speedup".split())
    for model, batch, hw in (("improved", 8, [32, 32]), ("detector", 4, [32, 32])):
        cpu = [r for r in _rows(bench_result, model) if r["device"] == "cpu"]
        for row in cpu:
            assert keys <= set(row), row
            assert row["input_hw"] == hw
            assert row["first_epoch_s"] > 0 and row["step_s"] > 0 and row["epoch_start_s"] > 0
            assert row["epoch_s"] == pytest.approx(
                row["epoch_start_s"] + row["steps_per_epoch"] * row["step_s"]
            )
            assert row["peak_rss_mb"] >= row["start_rss_mb"] > 0
        assert cpu[0]["setting"] == "no strategy (CPU)" and cpu[0]["replicas"] == 1
        assert [r["replicas"] for r in cpu[1:]] == [1, 2]
        assert all("mirrored" in r["setting"] for r in cpu[1:])
        assert [r["global_batch"] for r in cpu] == [batch, batch, 2 * batch]
    detector = _rows(bench_result, "detector")
    assert {r["precision"] for r in detector} <= {"float32", "mixed_bfloat16"}
    assert {r["precision"] for r in _rows(bench_result, "improved")} == {"float32"}


def test_each_setting_runs_every_round_for_at_least_min_seconds(bench_result: dict) -> None:
    assert bench_result["min_seconds"] == MIN_SECONDS and bench_result["rounds"] == ROUNDS
    for row in bench_result["rows"]:
        rates = row["round_images_per_s"]
        assert len(rates) == len(row["round_seconds"]) == len(row["round_steps"]) == ROUNDS
        assert all(s >= MIN_SECONDS for s in row["round_seconds"]), row["round_seconds"]
        assert all(n >= 1 for n in row["round_steps"]) and min(rates) > 0
        assert row["images_per_s"] == pytest.approx(float(np.median(rates)))
        assert row["spread"] == pytest.approx((max(rates) - min(rates)) / np.median(rates))
        # A round's rate is its images over its seconds: whole global batches per step.
        for rate, seconds, steps in zip(rates, row["round_seconds"], row["round_steps"]):
            assert rate * seconds == pytest.approx(steps * row["global_batch"], rel=1e-6)


def test_speedup_efficiency_and_overhead_follow_their_definition_per_model(bench_result: dict) -> None:
    for model, summary in bench_result["models"].items():
        rows = _rows(bench_result, model)
        base = rows[0]["images_per_s"]
        assert rows[0]["speedup"] == pytest.approx(1.0)
        for row in rows:
            if row["device"] == "cpu":
                assert row["speedup"] == pytest.approx(row["images_per_s"] / base)
            assert row["efficiency"] == pytest.approx(row["speedup"] / row["replicas"])
        mirrored_1 = next(r for r in rows if r["setting"] == "mirrored x1 (logical CPU)")
        pairs = zip(rows[0]["round_images_per_s"], mirrored_1["round_images_per_s"])
        paired = [a / b - 1.0 for a, b in pairs]
        assert summary["strategy_overhead_rounds"] == pytest.approx(paired)
        assert summary["strategy_overhead"] == pytest.approx(float(np.median(paired)))
        assert summary["strategy_overhead_of_medians"] == pytest.approx(
            base / mirrored_1["images_per_s"] - 1.0
        )


def test_gpu_settings_are_run_or_skipped_with_a_reason(bench_result: dict) -> None:
    gpu_rows = [r for r in bench_result["rows"] if r["device"] == "gpu"]
    skipped = bench_result["skipped"]
    assert len(gpu_rows) == 2 * min(bench_result["gpus"], 2)
    assert len(skipped) == 2 - min(bench_result["gpus"], 2)
    for item in skipped:
        assert set(item) == {"setting", "reason"} and "GPU" in item["setting"] and len(item["reason"]) > 10
    if bench_result["gpus"] == 0:
        assert "no GPU" in skipped[0]["reason"]


def test_flops_per_image_are_those_of_the_model_trained(bench_result: dict) -> None:
    """The improved model's count matches the same model built here; the detector's is of its input size."""
    from sprint2.detector import build_detector

    reference = {
        "improved": build_model("improved", 10, 32),
        "detector": build_detector(10, (32, 32)),
    }
    for model, built in reference.items():
        summary = bench_result["models"][model]
        ceiling = summary["cpu_ceiling"]
        assert ceiling["forward_gflop_per_image"] == pytest.approx(model_flops(built)["forward_flops"] / 1e9)
        assert summary["parameters"] == built.count_params()
        assert summary["projection"]["grad_bytes"] == gradient_bytes(built)


def test_achieved_flops_are_set_against_the_peak_of_the_models_dtype(bench_result: dict) -> None:
    peaks = bench_result["matmul_gflops"]
    assert peaks["float32"] > 0
    for model, summary in bench_result["models"].items():
        ceiling = summary["cpu_ceiling"]
        base = _rows(bench_result, model)[0]
        assert ceiling["train_gflop_per_image"] == pytest.approx(3 * ceiling["forward_gflop_per_image"])
        assert ceiling["achieved_gflops"] == pytest.approx(
            ceiling["train_gflop_per_image"] * base["images_per_s"]
        )
        dtype = "bfloat16" if summary["precision"] == "mixed_bfloat16" else "float32"
        assert ceiling["peak_dtype"] == dtype and ceiling["matmul_gflops"] == peaks[dtype]
        assert ceiling["fraction_of_matmul"] == pytest.approx(ceiling["achieved_gflops"] / peaks[dtype])
        assert ceiling["input_pipeline_images_per_s"] > 0
        for row in _rows(bench_result, model):
            assert row["achieved_gflops"] == pytest.approx(
                ceiling["train_gflop_per_image"] * row["images_per_s"]
            )


def test_projection_is_filled_from_the_run_per_model(bench_result: dict) -> None:
    for summary in bench_result["models"].values():
        projection = summary["projection"]
        assert projection["grad_bytes"] > 0 and projection["grad_bytes"] % 4 == 0
        assert {r["gpus"] for r in projection["rows"]} == set(range(1, 9))
        assert projection["per_replica_batch"] == summary["batch_per_replica"]
        assert projection["step_compute_source"].startswith("measured" if bench_result["gpus"] else "assumed")


def test_analysis_tables_read_the_result_per_model(bench_result: dict) -> None:
    rows = analysis.bench_model_rows(bench_result)
    assert [r["model"] for r in rows] == ["improved", "detector"]
    for row in rows:
        mine = _rows(bench_result, row["model"])
        assert row["images_per_s"] == mine[0]["images_per_s"]
        assert row["largest_spread"] == max(r["spread"] for r in mine)
        assert row["strategy_overhead"] == bench_result["models"][row["model"]]["strategy_overhead"]
    by_model = analysis.values_by_model(bench_result["rows"], "images_per_s")
    assert list(by_model["detector"]) == ["no strategy", "x1 CPU", "x2 CPU"]
    assert by_model["detector"]["x2 CPU"] == _rows(bench_result, "detector")[2]["images_per_s"]
    flops = analysis.flops_by_model(bench_result)["improved"]
    assert flops["matmul peak (float32)"] == bench_result["matmul_gflops"]["float32"]
    assert len(analysis.projection_rows_by_model(bench_result)) == 2 * 2 * 4  # models x links x GPU counts
    assert analysis.primary_model(bench_result) == "detector"
    figures = analysis.bench_figures(bench_result)
    assert set(figures["mirrored_images_per_s"]) == {
        "improved x1",
        "improved x2",
        "detector x1",
        "detector x2",
    }
    assert figures["strategy_overhead"]["detector"] == bench_result["models"]["detector"]["strategy_overhead"]
    json.dumps(figures)  # the report index stores them as JSON


def test_fails_clearly_when_tensorflow_already_started(tmp_path: Path) -> None:
    code = (
        "import tensorflow as tf; tf.constant(1.0) + 1.0; from sprint2.bench_training import bench_training; "
        f"bench_training({str(tmp_path)!r}, models=['improved'], replicas=(1, 2))"
    )
    proc = _python(code)
    assert proc.returncode != 0
    assert "StrategyError" in proc.stderr and "before any TensorFlow op" in proc.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_seconds": 0}, "min_seconds > 0"),
        ({"rounds": 0}, "rounds >= 1"),
        ({"replicas": (0, 2)}, "replicas must be positive"),
        ({"models": ["improved", "yolo"]}, "unknown model 'yolo'"),
        ({"models": ["improved", "improved"]}, "each model once"),
        ({"models": ["detector"], "detector_size": (48, 64), "detector_batch": 2}, "multiples of 32"),
    ],
)
def test_bad_arguments_are_refused_before_any_training(kwargs: dict, message: str, tiny_data: Path) -> None:
    from sprint2.bench_training import bench_training

    with pytest.raises(ValueError, match=message):
        bench_training(tiny_data, **kwargs)


def test_the_detector_defaults_to_its_schedule_for_the_data(tiny_data: Path) -> None:
    from sprint2.schedule import DataStats, detector_schedule
    from sprint2.splits import train_samples

    schedule = detector_schedule(DataStats.from_samples(train_samples(tiny_data, 0)), replicas=1)
    common = {"size": 48, "batch": 6, "precision": "float32", "seed": 0}
    specs = model_specs(
        tiny_data, ["detector", "original"], detector_size=None, detector_batch=None, **common
    )
    assert [s.name for s in specs] == ["detector", "original"]
    assert specs[0].input_hw == schedule.input_hw and specs[0].batch == schedule.batch_size
    assert specs[1].input_hw == (48, 48) and specs[1].batch == 6 and specs[1].load_size == 48
    given = model_specs(tiny_data, ["detector"], detector_size=(64, 96), detector_batch=3, **common)[0]
    assert (given.input_hw, given.batch, given.load_size, given.precision) == (
        (64, 96),
        3,
        (64, 96),
        "float32",
    )


def test_rounds_go_forward_then_backward_and_spread_is_relative() -> None:
    assert [round_order(3, r) for r in range(3)] == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]
    assert spread([90.0, 100.0, 120.0]) == pytest.approx(0.3)
    assert spread([5.0]) == 0.0


def test_cli_rejects_bad_lists_with_usage_errors(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    from sprint2.cli import main

    assert main(["bench", "training", str(tiny_data), "--replicas", "1,two"]) == 2
    assert "--replicas" in capsys.readouterr().err
    assert main(["bench", "training", str(tiny_data), "--model", "improved,yolo"]) == 2
    assert "unknown model 'yolo'" in capsys.readouterr().err


def test_flops_of_a_small_model_match_a_hand_count() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="same")(inputs)  # 8x8 out
    x = keras.layers.Conv2D(6, 3, strides=2, padding="valid", name="valid")(x)  # 3x3 out
    x = keras.layers.MaxPooling2D(name="pool")(x)  # not counted
    x = keras.layers.Flatten()(x)  # 1x1x6 -> 6
    outputs = keras.layers.Dense(5, name="dense")(x)
    model = keras.Model(inputs, outputs)
    counted = model_flops(model)
    # multiply-adds: 8*8 outputs * 3*3*3*4; 3*3 outputs * 3*3*4*6; 6*5; FLOPs = 2 x that.
    assert counted["layers"] == {"same": 2 * 64 * 108, "valid": 2 * 9 * 216, "dense": 2 * 30}
    assert counted["forward_flops"] == 2 * (6912 + 1944 + 30)
    # gradient bytes: (3*3*3*4 + 4) + (3*3*4*6 + 6) + (6*5 + 5) float32 parameters.
    assert gradient_bytes(model) == 4 * (112 + 222 + 35)


def test_projection_matches_hand_computed_numbers() -> None:
    rows = project_multi_gpu(0.1, 100e6, gpus=[1, 4], links={"slow": 25.0, "fast": 300.0}, batch=32)
    by = {(r["link"], r["gpus"]): r for r in rows}
    one = by[("slow", 1)]
    assert (
        one["t_allreduce_s"] == 0.0
        and one["speedup"] == pytest.approx(1.0)
        and one["images_per_s"] == pytest.approx(320)
    )
    # 2 * 3/4 * 100 MB / 25 GB/s = 6 ms; speedup 4 * 0.1 / 0.106.
    slow = by[("slow", 4)]
    assert slow["t_allreduce_s"] == pytest.approx(0.006)
    assert slow["speedup"] == pytest.approx(3.773585, rel=1e-6)
    assert slow["efficiency"] == pytest.approx(0.943396, rel=1e-6)
    assert slow["images_per_s"] == pytest.approx(4 * 32 / 0.106)
    # 2 * 3/4 * 100 MB / 300 GB/s = 0.5 ms; speedup 0.4 / 0.1005.
    assert by[("fast", 4)]["speedup"] == pytest.approx(3.980100, rel=1e-6)


def test_peak_rss_sees_memory_allocated_inside_the_block() -> None:
    with _PeakRss(interval_s=0.005) as rss:
        block = np.ones(100 * 2**20, dtype=np.uint8)  # 100 MiB, every page touched
    assert rss.start_mb > 0
    assert rss.peak_mb - rss.start_mb > 80, (rss.start_mb, rss.peak_mb)
    del block
