"""Notebook 07's two demonstrations of scaling out, each as a small object: the loading queue on a Dask
cluster against the local process pool (`compare_loading`), and a multi-worker training run on loopback
checked end to end (`local_workers`, `MultiWorkerCheck`).

Light at import; `MultiWorkerCheck.read` scores the saved model, which starts TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sprint2.analysis import file_rows, load_comparison
from sprint2.dataset import LoadedDataset
from sprint2.experiment import evaluate_model
from sprint2.launch import LocalWorkers
from sprint2.loading import load_dataset
from sprint2.table import Table, table
from sprint2.taskqueue import dask_client, shutdown_pools

Row = dict[str, Any]


@dataclass(frozen=True)
class LoadingComparison:
    """One folder loaded by the warm local process pool and by a Dask cluster, each timed after a warm-up
    load, with the cluster's address, its workers and how long it took to start."""

    by_pool: LoadedDataset
    by_dask: LoadedDataset
    process_s: float
    dask_s: float
    dask_start_s: float
    address: str
    workers: int
    size: int

    @property
    def identical(self) -> bool:
        """Whether the two loads agree element for element (LoadedDataset.same_as)."""
        return self.by_pool.same_as(self.by_dask)

    def field_table(self) -> Table:
        """Field by field, whether the two loads agree."""
        return table(load_comparison(self.by_pool, self.by_dask))

    def seconds(self) -> dict[str, float]:
        """Loading seconds by method."""
        return {"process pool": self.process_s, f"Dask ({self.workers} workers)": self.dask_s}

    def rates(self) -> dict[str, float]:
        """Images per second by method."""
        return {name: len(self.by_pool) / s for name, s in self.seconds().items()}

    def timing_table(self) -> Table:
        rows = [
            {"method": name, "seconds": s, "images/s": len(self.by_pool) / s}
            for name, s in self.seconds().items()
        ]
        return table(
            rows,
            [
                ("method", "method", "{}"),
                ("seconds", "seconds", "{:.2f}"),
                ("images/s", "images/s", "{:.0f}"),
            ],
        )

    def facts(self) -> Row:
        """For the notebook's sentences: images, their size, identical, the cluster and its start-up."""
        return {
            "n": len(self.by_pool),
            "size": self.size,
            "identical": self.identical,
            "address": self.address,
            "workers": self.workers,
            "start": self.dask_start_s,
        }

    def figures(self) -> Row:
        return {
            "dask_identical": self.identical,
            "dask_s": self.dask_s,
            "process_s": self.process_s,
            "dask_start_s": self.dask_start_s,
            "images": len(self.by_pool),
        }


def _timed_load(folder: Path, **options: Any) -> tuple[LoadedDataset, float]:
    """load_dataset(folder, **options) twice: a warm-up (the workers import the loader), then timed."""
    load_dataset(folder, **options)
    start = time.perf_counter()
    loaded = load_dataset(folder, **options)
    return loaded, time.perf_counter() - start


def compare_loading(folder: Path, size: int) -> LoadingComparison:
    """Loads folder at size x size (bad files skipped) with the process pool, then on a local Dask
    cluster of two worker processes over TCP (`taskqueue.dask_client("local")`)."""
    by_pool, process_s = _timed_load(folder, size=size, errors="skip", method="process")
    shutdown_pools()  # the warm process pool is not needed any more
    start = time.perf_counter()
    with dask_client("local") as client:
        dask_start_s = time.perf_counter() - start
        address, workers = client.scheduler.address, len(client.scheduler_info()["workers"])
        by_dask, dask_s = _timed_load(folder, size=size, errors="skip", scheduler=address)
    return LoadingComparison(by_pool, by_dask, process_s, dask_s, dask_start_s, address, workers, size)


def local_workers(data: Path, epochs: int, size: int, run_dir: Path, log_dir: Path) -> LocalWorkers:
    """Two loopback workers for `sprint2 train data --epochs epochs --size size` under
    MultiWorkerMirroredStrategy; run_dir and log_dir are emptied first: an old checkpoint would be resumed."""
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(log_dir, ignore_errors=True)
    return LocalWorkers([data, "--epochs", epochs, "--size", size], run_dir, log_dir)


def tf_config_table(workers: LocalWorkers) -> Table:
    """Each worker's TF_CONFIG, as JSON."""
    return table([{"worker": i, "TF_CONFIG": json.dumps(c)} for i, c in enumerate(workers.tf_configs)])


def epoch_log_table(workers: LocalWorkers) -> Table:
    """The epoch lines each worker logged."""
    n = len(workers.tf_configs)
    return table([{"worker": i, "logged": line} for i in range(n) for line in workers.epoch_lines(i)])


@dataclass(frozen=True)
class MultiWorkerCheck:
    """What a finished multi-worker run left: exit codes, each worker's printed metrics, the chief's
    metrics.json, the saved model scored again on the test split, and the files left in worker 1's
    temporary folder (which should be none)."""

    codes: list[int]
    results: list[dict[str, Any]]
    chief: dict[str, Any]
    rescored: dict[str, Any]
    left_by_worker1: list[Row]
    run_dir: Path

    @classmethod
    def read(cls, workers: LocalWorkers, codes: Sequence[int], run_dir: Path, data: Path) -> MultiWorkerCheck:
        """Reads the run: the workers' output, run_dir/metrics.json, and run_dir/model.keras scored on
        the test split of data with `sprint2 evaluate`'s code."""
        results = [workers.metrics(i) for i in range(len(codes))]
        chief = json.loads((Path(run_dir) / "metrics.json").read_text())
        rescored = evaluate_model(Path(run_dir) / "model.keras", data, split="test")
        left = file_rows([workers.scratch_dir(1)], workers.log_dir, recursive=True) if len(codes) > 1 else []
        return cls(list(codes), results, chief, rescored, left, Path(run_dir))

    @property
    def ok(self) -> bool:
        """Every worker exited 0, only the chief wrote the model and left nothing behind, the workers
        report the same test scores, and the saved model scores what the chief reported."""
        return (
            all(code == 0 for code in self.codes)
            and len(self.codes) > 1
            and (self.run_dir / "model.keras").is_file()
            and not self.left_by_worker1
            and bool(self.chief["strategy_info"]["is_chief"])
            and all(r.get("test") == self.results[0].get("test") for r in self.results)
            and abs(self.rescored["scores"]["map50"] - self.chief["test"]["map50"]) < 1e-6
        )

    def facts(self) -> Row:
        return {
            "kind": self.rescored["kind"],
            "again": self.rescored["scores"]["map50"],
            "images": self.rescored["images"],
            "reported": self.chief["test"]["map50"],
            "ok": self.ok,
        }

    def figures(self, seconds: float, epochs: int) -> Mapping[str, Any]:
        """Key figures; seconds: the workers' wall time, epochs: the epochs asked for."""
        return {
            "multiworker_ok": self.ok,
            "multiworker_s": seconds,
            "multiworker_epochs": epochs,
            "multiworker_model": self.chief["model"],
            "multiworker_test_map50": self.chief["test"]["map50"],
        }
