"""sprint2.launch without TensorFlow: ports, per-worker TF_CONFIG and folders, exit codes, kills, logs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sprint2.launch import LocalWorkers, free_ports


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(1024 <= p < 65536 for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_each_worker_gets_its_task_of_one_cluster(tmp_path: Path) -> None:
    workers = LocalWorkers(["data"], tmp_path / "out", tmp_path / "logs", workers=3)
    assert len(workers.addresses) == 3 and all(a.startswith("127.0.0.1:") for a in workers.addresses)
    for i, config in enumerate(workers.tf_configs):
        assert config == {"cluster": {"worker": workers.addresses}, "task": {"type": "worker", "index": i}}
    assert [workers.scratch_dir(i) for i in range(3)] == [tmp_path / "logs" / f"tmp{i}" for i in range(3)]
    with pytest.raises(RuntimeError, match="start"):
        workers.run_to_end(1)
    with pytest.raises(ValueError, match="at least one worker"):
        LocalWorkers(["data"], tmp_path, tmp_path, workers=0)


def test_a_bad_command_line_gives_each_workers_exit_code_and_log(tmp_path: Path) -> None:
    """A missing data folder fails in the CLI before TensorFlow loads: exit 2 from every worker."""
    with LocalWorkers([str(tmp_path / "missing")], tmp_path / "out", tmp_path / "logs").start() as workers:
        assert workers.run_to_end(120) == [2, 2]
        for i in range(2):
            assert "not a directory" in workers.stderr(i) and workers.scratch_dir(i).is_dir()
            assert workers.metrics(i) == {} and workers.epoch_lines(i) == [] and workers.stdout(i) == ""
        with pytest.raises(RuntimeError, match="started already"):
            workers.start()


def test_leaving_the_block_kills_what_still_runs(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with LocalWorkers([str(tmp_path / "data")], tmp_path / "out", tmp_path / "logs").start() as workers:
        assert workers.poll(0) is None and workers.poll(1) is None
        with pytest.raises(subprocess.TimeoutExpired):
            workers.wait(0, 0.1)  # still running: the wait gives up, the worker goes on
        assert workers.poll(0) is None
    assert workers.poll(0) == -signal.SIGKILL and workers.poll(1) == -signal.SIGKILL


def test_metrics_and_epoch_lines_come_from_the_worker_logs(tmp_path: Path) -> None:
    workers = LocalWorkers(["data"], tmp_path / "out", tmp_path / "logs", workers=1)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "worker0.out").write_text(json.dumps({"epochs": 2, "test": {"accuracy": 0.5}}, indent=2) + "\n")
    (logs / "worker0.err").write_text(
        "INFO sprint2.training: training improved: 32 rows\n"
        "INFO sprint2.training: epoch 1/2: loss=2.1, seconds=1.5\n"
        "W0000 some TensorFlow noise\n"
        "INFO sprint2.training: epoch 2/2: loss=1.7, seconds=1.2\n"
    )
    assert workers.metrics(0) == {"epochs": 2, "test": {"accuracy": 0.5}}
    assert workers.epoch_lines(0) == ["epoch 1/2: loss=2.1, seconds=1.5", "epoch 2/2: loss=1.7, seconds=1.2"]
    (logs / "worker0.out").write_text('{"epochs": 2, "te')  # killed while printing
    assert workers.metrics(0) == {}


def test_launch_stays_light() -> None:
    code = "import sys, sprint2.launch; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
