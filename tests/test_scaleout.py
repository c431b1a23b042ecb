"""sprint2.scaleout: the Dask loading comparison (one real local cluster) and the multi-worker run's
check, read from worker output written by hand (no training)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sprint2 import scaleout
from sprint2.dataset import LoadedDataset
from sprint2.synthetic import generate


def _ds(n: int, shift: float = 0.0) -> LoadedDataset:
    return LoadedDataset(
        images=np.zeros((n, 8, 8, 3), np.uint8),
        boxes=[np.array([[1 + shift, 1, 5, 5]], np.float32)] * n,
        labels=[np.array([0], np.int32)] * n,
        class_names=["a"],
        paths=[Path(f"img{i}.jpg") for i in range(n)],
        found=n,
        size=(8, 8),
    )


def _loads(by_dask: LoadedDataset) -> scaleout.LoadingComparison:
    return scaleout.LoadingComparison(_ds(10), by_dask, 0.5, 2.0, 3.25, "tcp://127.0.0.1:1234", 2, 8)


def test_the_loading_comparison_rows_facts_and_figures() -> None:
    same = _loads(_ds(10))
    assert same.identical and all(row[1] == "True" for row in same.field_table().cells)
    assert same.seconds() == {"process pool": 0.5, "Dask (2 workers)": 2.0}
    assert same.rates() == {"process pool": 20.0, "Dask (2 workers)": 5.0}
    assert same.timing_table().cells == [["process pool", "0.50", "20"], ["Dask (2 workers)", "2.00", "5"]]
    assert same.facts() == {
        "n": 10,
        "size": 8,
        "identical": True,
        "address": "tcp://127.0.0.1:1234",
        "workers": 2,
        "start": 3.25,
    }
    assert same.figures() == {
        "dask_identical": True,
        "dask_s": 2.0,
        "process_s": 0.5,
        "dask_start_s": 3.25,
        "images": 10,
    }
    moved = _loads(_ds(10, shift=0.5))
    assert not moved.identical and moved.figures()["dask_identical"] is False
    assert [row[0] for row in moved.field_table().cells if row[1] == "False"] == ["boxes"]


def test_compare_loading_on_a_local_dask_cluster(tmp_path: Path) -> None:
    folder = generate(tmp_path / "d", train=6, test=0, classes=2, seed=4) / "train"
    loads = scaleout.compare_loading(folder, 32)
    assert loads.identical, loads.by_pool.differences(loads.by_dask)
    assert len(loads.by_pool) == 6 and loads.by_pool.images.shape[1:3] == (32, 32)
    assert loads.workers == 2 and loads.address.startswith("tcp://127.0.0.1:")
    assert min(loads.process_s, loads.dask_s, loads.dask_start_s) > 0


def test_local_workers_start_from_empty_folders(tmp_path: Path) -> None:
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    (run_dir / "checkpoints").mkdir(parents=True)
    logs.mkdir()
    (logs / "worker0.err").write_text("old")
    workers = scaleout.local_workers(tmp_path / "data", 3, 64, run_dir, logs)
    assert not run_dir.exists() and not logs.exists()
    assert workers.train_args == [str(tmp_path / "data"), "--epochs", "3", "--size", "64"]
    configs = scaleout.tf_config_table(workers).cells
    assert [row[0] for row in configs] == ["0", "1"]
    assert json.loads(configs[1][1])["task"] == {"type": "worker", "index": 1}


def _finished(tmp_path: Path, metrics: list[dict[str, Any]]) -> tuple[Any, Path]:
    """LocalWorkers as they look after a run: each worker's stdout and log, and the chief's files."""
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    workers = scaleout.local_workers(tmp_path / "data", 2, 32, run_dir, logs)
    logs.mkdir()
    for i, m in enumerate(metrics):
        (logs / f"worker{i}.out").write_text("training...\n" + json.dumps(m))
        (logs / f"worker{i}.err").write_text(f"INFO sprint2.training: epoch 1/2: loss={1.5 - i}\nnoise\n")
        workers.scratch_dir(i).mkdir()
    run_dir.mkdir()
    (run_dir / "model.keras").write_bytes(b"model")
    (run_dir / "metrics.json").write_text(json.dumps(metrics[0]))
    return workers, run_dir


CHIEF = {
    "model": "detector",
    "strategy_info": {"is_chief": True},
    "test": {"map50": 0.42},
}


def test_the_multi_worker_check_reads_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scored: list[tuple[Path, Path, str]] = []

    def fake_evaluate(model: Path, data: Path, split: str) -> dict[str, Any]:
        scored.append((model, data, split))
        return {"kind": "detector", "images": 5, "scores": {"map50": 0.42}}

    monkeypatch.setattr(scaleout, "evaluate_model", fake_evaluate)
    worker = {**CHIEF, "strategy_info": {"is_chief": False}}
    workers, run_dir = _finished(tmp_path, [CHIEF, worker])
    assert scaleout.epoch_log_table(workers).cells == [
        ["0", "epoch 1/2: loss=1.5"],
        ["1", "epoch 1/2: loss=0.5"],
    ]
    check = scaleout.MultiWorkerCheck.read(workers, [0, 0], run_dir, tmp_path / "data")
    assert scored == [(run_dir / "model.keras", tmp_path / "data", "test")]
    assert check.results == [CHIEF, worker] and check.chief == CHIEF and check.left_by_worker1 == []
    assert check.ok
    assert check.facts() == {"kind": "detector", "again": 0.42, "images": 5, "reported": 0.42, "ok": True}
    assert check.figures(12.5, 2) == {
        "multiworker_ok": True,
        "multiworker_s": 12.5,
        "multiworker_epochs": 2,
        "multiworker_model": "detector",
        "multiworker_test_map50": 0.42,
    }
    (workers.scratch_dir(1) / "ckpt-1.index").write_text("left behind")
    left = scaleout.MultiWorkerCheck.read(workers, [0, 0], run_dir, tmp_path / "data")
    assert left.left_by_worker1 == [{"file": "tmp1/ckpt-1.index", "kB": 0.011}] and not left.ok


def test_the_multi_worker_check_fails_on_any_broken_promise(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"model")
    rescored = {"kind": "detector", "images": 5, "scores": {"map50": 0.42}}
    good = scaleout.MultiWorkerCheck([0, 0], [CHIEF, CHIEF], CHIEF, rescored, [], tmp_path)
    assert good.ok
    broken = [
        {"codes": [0, 1]},
        {"codes": [0]},
        {"results": [CHIEF, {**CHIEF, "test": {"map50": 0.4}}]},
        {"chief": {**CHIEF, "strategy_info": {"is_chief": False}}},
        {"rescored": {**rescored, "scores": {"map50": 0.41}}},
        {"left_by_worker1": [{"file": "tmp1/x", "kB": 0.1}]},
        {"run_dir": tmp_path / "missing"},
    ]
    for change in broken:
        assert not dataclasses.replace(good, **change).ok, change
