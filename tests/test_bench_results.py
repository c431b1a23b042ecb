"""sprint2.bench_results on hand-made benchmark results: the tables' columns and cells, the numbers the
notebooks' sentences quote, and the key figures under the names the front page reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sprint2.bench_results import LoadingResult, TimingResult
from sprint2.bench_training import project_multi_gpu

LOADING = {
    "images": 64,
    "cores": 2,
    "default": "thread",
    "speedup_vs_serial": 1.6,
    "vs_tf_data": 1.25,
    "ceiling": 200.0,
    "methods": {
        "serial": {"images_per_s": 100.0},
        "submit_result": {"images_per_s": 80.0},
        "thread": {"images_per_s": 160.0},
        "tf_data": {"images_per_s": 128.0},
    },
}


def test_loading_result_table_facts_and_figures() -> None:
    bench = LoadingResult(LOADING)
    assert bench.rates == {"serial": 100.0, "submit_result": 80.0, "thread": 160.0, "tf_data": 128.0}
    shown = bench.table()
    assert [h for h, _, _ in shown.columns] == ["method", "images/s", "vs plain loop"]
    assert shown.cells[2] == ["thread", "160", "1.60x"]
    facts = bench.facts()
    assert facts["share"] == pytest.approx(0.8) and facts["original"] == 80.0
    assert facts["original_vs_serial"] == pytest.approx(0.8) and facts["original_change"] == pytest.approx(
        -0.2
    )
    assert facts["images"] == 64, "the result's own numbers stay available to the sentences"
    figures = bench.figures(planted_failures=7, cache_second_load_s=0.25)
    assert figures == {
        "images": 64,
        "cores": 2,
        "default_method": "thread",
        "speedup_vs_serial": 1.6,
        "vs_tf_data": 1.25,
        "original_pattern_vs_serial": pytest.approx(0.8),
        "images_per_s": bench.rates,
        "planted_failures": 7,
        "cache_second_load_s": 0.25,
    }


def _row(model: str, setting: str, device: str, replicas: int, rate: float, spread: float) -> dict:
    return {
        "model": model,
        "setting": setting,
        "device": device,
        "replicas": replicas,
        "precision": "float32",
        "global_batch": 8 * replicas,
        "images_per_s": rate,
        "spread": spread,
        "step_s": 8 / rate,
        "epoch_start_s": 0.05,
        "first_epoch_s": 2.0 * replicas,
        "speedup": rate / 100.0,
        "efficiency": rate / 100.0 / replicas,
        "peak_rss_mb": 900.0,
    }


def _model(params: int, step_s: float, feed: float) -> dict:
    return {
        "input_hw": [64, 64],
        "batch_per_replica": 8,
        "precision": "float32",
        "parameters": params,
        "strategy_overhead": 0.05,
        "cpu_ceiling": {
            "forward_gflop_per_image": 0.1,
            "train_gflop_per_image": 0.3,
            "achieved_gflops": 30.0,
            "peak_dtype": "float32",
            "matmul_gflops": 300.0,
            "fraction_of_matmul": 0.1,
            "input_pipeline_images_per_s": feed,
        },
        "projection": {
            "rows": project_multi_gpu(step_s, 4.0 * params, gpus=(1, 2, 4, 8), links={"pcie": 25.0}, batch=8),
            "grad_bytes": 4.0 * params,
            "measured": [],
        },
    }


@pytest.fixture()
def timing() -> TimingResult:
    rows = [
        _row("improved", "no strategy (CPU)", "cpu", 1, 100.0, 0.02),
        _row("improved", "mirrored x1 (CPU)", "cpu", 1, 95.0, 0.04),
        _row("improved", "mirrored x2 (CPU)", "cpu", 2, 90.0, 0.10),
        _row("detector", "no strategy (CPU)", "cpu", 1, 20.0, 0.03),
        _row("detector", "mirrored x1 (CPU)", "cpu", 1, 21.0, 0.01),
    ]
    return TimingResult(
        {
            "rows": rows,
            "models": {"improved": _model(10_000, 0.08, 400.0), "detector": _model(4_000_000, 0.4, 40.0)},
            "matmul_gflops": {"float32": 300.0},
            "skipped": [],
            "load_average": {"before": 0.5, "after": 1.5},
            "gpus": 0,
            "cores": 2,
            "min_seconds": 0.5,
            "rounds": 2,
        }
    )


def test_timing_result_reads_the_detector_first(timing: TimingResult) -> None:
    assert timing.primary == "detector"
    assert timing.projection is timing.result["models"]["detector"]["projection"]
    assert (
        timing.model_row()["parameters"] == 4_000_000 and timing.model_row("improved")["parameters"] == 10_000
    )
    assert timing.by_model("images_per_s") == {
        "improved": {"no strategy": 100.0, "x1 CPU": 95.0, "x2 CPU": 90.0},
        "detector": {"no strategy": 20.0, "x1 CPU": 21.0},
    }
    assert set(timing.flops_by_model()["detector"]) == {"training, no strategy", "matmul peak (float32)"}
    only = TimingResult({**timing.result, "models": {"improved": timing.result["models"]["improved"]}})
    assert only.primary == "improved"


def test_timing_tables_know_their_columns(timing: TimingResult) -> None:
    settings = timing.settings_table()
    assert len(settings.columns) == 13 and len(settings.cells) == 5
    assert settings.cells[2][:3] == ["improved", "mirrored x2 (CPU)", "2"] and settings.cells[2][6] == "10.0%"
    models = timing.models_table()
    assert models.cells[1] == ["detector", "64x64", "8", "float32", "4,000,000", "20.0", "3.0%"]
    overhead = timing.overhead_table()
    assert overhead.cells[0] == ["improved", "+5.0%", "10.0%"]
    flops = timing.flops_table()
    assert flops.cells[0] == ["improved", "0.300", "30.0", "float32", "300", "10.0%"]
    projection = timing.projection_table()
    assert [row[:3] for row in projection.cells[:4]] == [["improved", "pcie", str(g)] for g in (1, 2, 4, 8)]
    assert projection.cells[0][3] == "0.000" and projection.cells[0][5] == "1.00"
    share = timing.allreduce_table(gpus=8)
    assert share.cells[1][:4] == ["detector", "16.00", "pcie", "8"]
    allreduce = 2 * 7 / 8 * 16e6 / 25e9
    assert share.cells[1][4] == f"{allreduce / 0.4:.1%}"


def test_timing_facts_for_the_sentences(timing: TimingResult) -> None:
    facts = timing.run_facts()
    assert facts == {
        "cores": 2,
        "rounds": 2,
        "min_seconds": 0.5,
        "load_before": 0.5,
        "load_after": 1.5,
        "skipped": "none",
    }
    skipped = {**timing.result, "skipped": [{"setting": "1 GPU", "reason": "no GPU"}]}
    assert TimingResult(skipped).run_facts()["skipped"] == "1 GPU (no GPU)"
    assert (
        timing.ceiling_facts()["model"] == "detector" and timing.ceiling_facts()["fraction_of_matmul"] == 0.1
    )
    fastest = timing.fastest_cpu()
    assert fastest["setting"] == "mirrored x1 (CPU)" and fastest["cores"] == 2
    feed = timing.feed_facts()
    top = timing.projection["rows"][-1]  # 8 GPUs
    assert feed["gpus"] == 8 and feed["link"] == "pcie" and feed["feed"] == 40.0
    assert feed["need"] == pytest.approx(top["images_per_s"]) and feed["ratio"] == pytest.approx(
        top["images_per_s"] / 40
    )


def test_timing_figures_are_bench_figures_and_the_mode(timing: TimingResult) -> None:
    figures = timing.figures(quick=True)
    assert figures["quick"] is True
    assert figures["no_strategy_images_per_s"] == {"improved": 100.0, "detector": 20.0}
    assert figures["strategy_overhead"] == {"improved": 0.05, "detector": 0.05}
    assert figures["mirrored_efficiency"]["improved x2"] == pytest.approx(0.45)
    assert figures["gpus"] == 0 and figures["skipped"] == []


def test_bench_results_do_not_import_tensorflow() -> None:
    code = "import sys, sprint2.bench_results; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
