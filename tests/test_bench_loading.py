"""Tests of sprint2.bench_loading: structure of the result and equal work across methods (never timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sprint2.bench_loading import LOADING_METHODS, available_cores, bench_loading
from sprint2.loading import AUTO_METHOD
from sprint2.synthetic import generate


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("bench"), train=16, test=0, classes=2, seed=5) / "train"


def test_bench_loading_reports_every_method_on_the_same_images(small_set: Path) -> None:
    result = bench_loading(small_set, size=48, repeats=1, workers=2)
    json.dumps(result)  # the CLI prints it with --json
    assert {"cores", "images", "methods", "best", "speedup_vs_serial", "vs_tf_data"} <= set(result)
    assert result["images"] == 16 and result["cores"] >= 1
    assert set(result["methods"]) == set(LOADING_METHODS)
    for name, entry in result["methods"].items():
        assert entry["images"] == 16, name  # every method loaded every image
        assert isinstance(entry["images_per_s"], float) and entry["images_per_s"] > 0
        # CPU time comes in clock ticks (10 ms), so on 16 tiny images a run may read as zero.
        assert isinstance(entry["cpu_ms_per_image"], float) and entry["cpu_ms_per_image"] >= 0, name
        assert entry["opencv_threads"], name
        assert entry["work"] == ("decode + resize only" if name == "tf_data" else "full")
    assert result["load_average_1min"] >= 0 and result["load_average_1min_after"] >= 0
    assert len(result["available_cores"]) == 2 and all(0 < c <= 2 for c in result["available_cores"])
    rates = {name: entry["images_per_s"] for name, entry in result["methods"].items()}
    assert result["best"] == max(rates, key=rates.get)
    default = result["default"]
    assert default == AUTO_METHOD and default in rates
    assert result["speedup_vs_serial"] == pytest.approx(rates[default] / rates["serial"])
    assert result["vs_tf_data"] == pytest.approx(rates[default] / rates["tf_data"])
    assert result["ceiling"] == pytest.approx(result["cores"] * rates["serial"])
    assert result["startup_included"] is False and result["process_startup_s"] > 0


def test_available_cores_is_between_zero_and_the_thread_count() -> None:
    for workers in (1, 2):
        cores = available_cores(workers, repeats=1)
        assert 0 < cores <= workers
