"""bench_training in a fresh process on tiny data; the FLOP count and the projection against hand counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from sprint2.bench_training import _PeakRss, project_multi_gpu
from sprint2.model import gradient_bytes, model_flops
from sprint2.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (TensorFlow not yet initialised), as the CLI does."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data = generate(tmp_path_factory.mktemp("tiny"), train=32, test=8, seed=3)
    call = f"bench_training({str(data)!r}, replicas=(1, 2), epochs=2, size=32, batch=8, rounds=2)"
    code = f"import json; from sprint2.bench_training import bench_training; print(json.dumps({call}))"
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_rows_cover_no_strategy_and_each_replica_count(bench_result: dict) -> None:
    rows = bench_result["rows"]
    keys = set("setting device replicas images_per_s first_epoch_s epoch_s speedup efficiency".split())
    for row in rows:
        assert keys <= set(row), row
        assert isinstance(row["setting"], str) and isinstance(row["replicas"], int)
        assert row["images_per_s"] > 0 and row["first_epoch_s"] > 0 and row["epoch_s"] > 0
        assert len(row["epoch_seconds"]) == 2 and row["epoch_s"] == pytest.approx(row["epoch_seconds"][1])
        assert row["peak_rss_mb"] >= row["start_rss_mb"] > 0
        assert len(row["round_images_per_s"]) == 2 and row["images_per_s"] == max(row["round_images_per_s"])
    cpu = [r for r in rows if r["device"] == "cpu"]
    assert cpu[0]["setting"] == "no strategy (CPU)" and cpu[0]["replicas"] == 1
    assert [r["replicas"] for r in cpu[1:]] == [1, 2]
    assert all("mirrored" in r["setting"] for r in cpu[1:])
    assert [r["global_batch"] for r in cpu] == [8, 8, 16]


def test_speedup_and_efficiency_follow_their_definition(bench_result: dict) -> None:
    rows = bench_result["rows"]
    base = rows[0]["images_per_s"]
    assert rows[0]["speedup"] == pytest.approx(1.0)
    for row in rows:
        if row["device"] == "cpu":
            assert row["speedup"] == pytest.approx(row["images_per_s"] / base)
        assert row["efficiency"] == pytest.approx(row["speedup"] / row["replicas"])
    mirrored_1 = next(r for r in rows if r["setting"] == "mirrored x1 (logical CPU)")
    assert bench_result["strategy_overhead"] == pytest.approx(base / mirrored_1["images_per_s"] - 1.0)


def test_gpu_settings_are_run_or_skipped_with_a_reason(bench_result: dict) -> None:
    gpu_rows = [r for r in bench_result["rows"] if r["device"] == "gpu"]
    skipped = bench_result["skipped"]
    assert len(gpu_rows) == min(bench_result["gpus"], 2)
    assert len(gpu_rows) + len(skipped) == 2
    for item in skipped:
        assert set(item) == {"setting", "reason"} and "GPU" in item["setting"] and len(item["reason"]) > 10
    if bench_result["gpus"] == 0:
        assert "no GPU" in skipped[0]["reason"]


def test_ceiling_and_projection_are_filled_from_the_run(bench_result: dict) -> None:
    ceiling = bench_result["cpu_ceiling"]
    assert ceiling["matmul_gflops"] > 0 and ceiling["input_pipeline_images_per_s"] > 0
    assert ceiling["train_gflop_per_image"] == pytest.approx(3 * ceiling["forward_gflop_per_image"])
    assert ceiling["achieved_gflops"] == pytest.approx(
        ceiling["train_gflop_per_image"] * bench_result["rows"][0]["images_per_s"]
    )
    projection = bench_result["projection"]
    assert projection["grad_bytes"] > 0 and projection["grad_bytes"] % 4 == 0
    assert {r["gpus"] for r in projection["rows"]} == set(range(1, 9))
    assert projection["step_compute_source"].startswith("measured" if bench_result["gpus"] else "assumed")


def test_fails_clearly_when_tensorflow_already_started(tmp_path: Path) -> None:
    code = (
        "import tensorflow as tf; tf.constant(1.0) + 1.0; from sprint2.bench_training import bench_training; "
        f"bench_training({str(tmp_path)!r}, replicas=(1, 2), epochs=2)"
    )
    proc = _python(code)
    assert proc.returncode != 0
    assert "StrategyError" in proc.stderr and "before any TensorFlow op" in proc.stderr


def test_needs_two_epochs() -> None:
    from sprint2.bench_training import bench_training

    with pytest.raises(ValueError, match="epochs >= 2"):
        bench_training(ROOT, epochs=1)


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
