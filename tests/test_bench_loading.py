"""sprint2.bench_loading: the result's structure, rounds and medians, equal work per method (never speeds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sprint2.bench_loading import LOADING_METHODS, available_cores, bench_loading
from sprint2.loading import AUTO_METHOD
from sprint2.synthetic import generate


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("bench"), train=16, test=0, classes=2, seed=5) / "train"


def test_bench_loading_reports_every_method_on_the_same_images(small_set: Path) -> None:
    result = bench_loading(small_set, size=48, rounds=2, min_seconds=0.05, workers=2)
    json.dumps(result)  # the CLI prints it with --json
    assert {"cores", "images", "methods", "best", "speedup_vs_serial", "vs_tf_data"} <= set(result)
    assert result["images"] == 16 and result["cores"] >= 1 and result["workers"] == 2
    assert result["rounds"] == 2 and result["min_seconds"] == 0.05
    assert set(result["methods"]) == set(LOADING_METHODS)
    for name, entry in result["methods"].items():
        assert entry["images"] == 16, name  # every method loaded every image in each pass
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


def test_each_method_runs_every_round_for_at_least_min_seconds_and_reports_median_and_spread(
    small_set: Path,
) -> None:
    result = bench_loading(small_set, size=32, rounds=3, min_seconds=0.2, workers=2)
    for name, entry in result["methods"].items():
        rates, seconds, passes = entry["round_images_per_s"], entry["round_seconds"], entry["round_passes"]
        assert len(rates) == len(seconds) == len(passes) == 3, name
        assert all(s >= 0.2 for s in seconds), (name, seconds)
        # A round's rate is whole passes over the data divided by its seconds.
        for rate, secs, n in zip(rates, seconds, passes):
            assert n >= 1 and rate * secs == pytest.approx(n * entry["images"], rel=1e-9), name
        assert entry["images_per_s"] == pytest.approx(float(np.median(rates)))
        assert entry["spread"] == pytest.approx((max(rates) - min(rates)) / np.median(rates))
        assert 0 < entry["seconds_per_pass"] <= max(seconds)
    # The plain loop over 16 images of 32 px takes far less than 0.2 s, so its rounds repeat passes.
    assert max(result["methods"]["serial"]["round_passes"]) > 1


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"rounds": 0}, "rounds >= 1"), ({"min_seconds": 0.0}, "min_seconds > 0")]
)
def test_bad_arguments_are_refused(small_set: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench_loading(small_set, **kwargs)


def test_available_cores_is_between_zero_and_the_thread_count() -> None:
    for workers in (1, 2):
        cores = available_cores(workers, repeats=1)
        assert 0 < cores <= workers
