"""sprint2 bench detector: default runs in fresh processes, typed summaries over seeds, the JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sprint2.bench_detector import DetectorRun, DetectorSummary, Spread
from sprint2.cli import main
from sprint2.synthetic import generate

pytestmark = pytest.mark.slow  # trains, converts or starts processes: not in `make test-fast`


def _fake_run(out: Path, map50: float, curve: list[float]) -> Path:
    """A run folder as sprint2 train leaves it: metrics.json and history.csv (10 s per epoch)."""
    out.mkdir(parents=True)
    metrics = {
        "test": {"map50": map50, "map50_95": map50 / 2, "ap50": {"a": map50, "b": None}},
        "images_per_s": 12.5,
        "epochs": len(curve),
        "planned_epochs": len(curve),
        "ended_by": "time budget",
        "epoch_choice": "last epoch",
        "input_hw": [64, 96],
        "train_seconds": 10.0 * len(curve),
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    with (out / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "seconds", "val_map50"])
        writer.writeheader()
        for i, v in enumerate(curve, start=1):
            writer.writerow({"epoch": i, "seconds": 10.0, "val_map50": v})
    return out


def test_runs_and_summaries_read_the_run_folders(tmp_path: Path) -> None:
    one = DetectorRun.from_run_dir("d", 300.0, 0, _fake_run(tmp_path / "a", 0.6, [0.1, 0.5, 0.7, 0.8]), 55.0)
    two = DetectorRun.from_run_dir("d", 300.0, 1, _fake_run(tmp_path / "b", 0.8, [0.2, 0.9, 0.9]), 45.0)
    assert one.val_curve == [(10.0, 0.1), (20.0, 0.5), (30.0, 0.7), (40.0, 0.8)]
    assert one.ap50 == {"a": 0.6, "b": 0.0} and one.input_hw == (64, 96)
    assert one.seconds_to(0.95) == 40.0 and two.seconds_to(0.95) == 20.0 and one.seconds_to(0.5) == 20.0
    summary = DetectorSummary.of([one, two])
    assert summary.seeds == [0, 1] and summary.epochs == [4, 3]
    assert summary.map50.mean == pytest.approx(0.7) and summary.map50.std == pytest.approx(0.1414, abs=1e-4)
    assert (summary.map50.low, summary.map50.high) == pytest.approx((0.6, 0.8))
    assert summary.ap50["a"].mean == pytest.approx(0.7) and summary.seconds_to_95pct == [40.0, 20.0]
    assert summary.row()["map50"] == "0.700 ± 0.141" and str(Spread.of([0.5])) == "0.500"


def test_bench_detector_trains_the_defaults_and_prints_json(tmp_path: Path, capsys) -> None:
    data = generate(tmp_path / "tiny", train=24, test=4, classes=2, seed=5)  # 20 train, 4 validation
    out = tmp_path / "bench"
    argv = ["bench", "detector", str(data), "--budgets", "2", "--seeds", "1", "--out", str(out), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    (summary,) = result["summaries"]
    assert summary["budget_s"] == 2.0 and summary["seeds"] == [1] and Path(summary["data"]) == data
    assert set(summary["ap50"]) == {"cat", "dog"}
    assert summary["map50"]["low"] <= summary["map50"]["mean"] <= summary["map50"]["high"]
    runs = result["runs"]
    assert [r["seed"] for r in runs] == [1] and all(r["ended_by"] == "time budget" for r in runs)
    for run in runs:
        metrics = json.loads((Path(run["out_dir"]) / "metrics.json").read_text())
        assert run["map50"] == pytest.approx(metrics["test"]["map50"] or 0.0)
        assert run["epochs"] == len(run["val_curve"]) == metrics["epochs"] and run["images_per_s"] > 0
        assert metrics["time_budget_s"] == 2.0 and metrics["ended_by"] == "time budget"
    assert main(["bench", "detector", str(tmp_path / "missing"), "--seeds", "0"]) == 2
