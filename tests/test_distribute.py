"""Strategy choice (logical CPUs before the runtime starts, clear errors) and the multi-worker helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tensorflow as tf

from sprint2 import distribute
from sprint2.distribute import StrategyError, StrategyInfo, get_strategy, scratch_dir

pytestmark = pytest.mark.slow  # trains, converts or starts processes: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs code in a fresh Python (TF's runtime not yet started) from the repository root."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300
    )


def test_auto_without_gpu_is_default_strategy_with_reason() -> None:
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    strategy, info = get_strategy("auto")
    assert strategy.num_replicas_in_sync == 1 and info.replicas == 1
    assert "no GPU" in info.reason and info.is_chief and info.kind == "auto"


def test_gpu_without_gpu_errors() -> None:
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(StrategyError, match="no GPU"):
        get_strategy("gpu")


def test_multiworker_needs_tf_config(monkeypatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="TF_CONFIG"):
        get_strategy("multiworker")


def test_unknown_kind() -> None:
    with pytest.raises(StrategyError, match="unknown strategy"):
        get_strategy("tpu")  # type: ignore[arg-type]


def test_logical_cpus_configured_first_then_reused() -> None:
    code = """
import json, tensorflow as tf
from sprint2.distribute import get_strategy, configure_logical_cpus
s, info = get_strategy("cpu", replicas=2)
tf.constant(1.0) + 1.0  # the runtime is running now
again = configure_logical_cpus(2)  # already split in >= 2: reused, no error
print(json.dumps({"replicas": s.num_replicas_in_sync, "devices": info.devices, "again": again,
                  "ops": type(s.extended._cross_device_ops).__name__, "info_replicas": info.replicas}))
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["info_replicas"] == 2
    assert len(out["devices"]) == 2 and out["devices"] == out["again"]
    assert out["ops"] == "ReductionToOneDevice"


def test_logical_cpus_after_runtime_started_raise_clear_error() -> None:
    code = """
import tensorflow as tf
from sprint2.distribute import StrategyError, configure_logical_cpus
tf.constant(1.0) + 1.0
try:
    configure_logical_cpus(2)
except StrategyError as exc:
    print("ERROR:", exc)
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERROR:" in proc.stdout
    assert "before any TensorFlow op" in proc.stdout and "restart the kernel" in proc.stdout


def test_scratch_dir_is_for_non_chief_workers_fixed_per_run_and_emptied(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    (tmp_path / "tmp").mkdir()
    chief = StrategyInfo("multiworker", is_chief=True, task_type="worker", worker_index=0)
    other = StrategyInfo("multiworker", is_chief=False, task_type="worker", worker_index=1)
    assert scratch_dir(tmp_path / "run", chief) is None
    first = scratch_dir(tmp_path / "run", other)
    assert first.parent == tmp_path / "tmp" and first.name.endswith("-worker1") and not first.exists()
    (first / "checkpoints").mkdir(parents=True)  # what a killed worker leaves behind
    assert scratch_dir(tmp_path / "run", other) == first and not first.exists()
    assert scratch_dir(tmp_path / "other-run", other) != first


def test_check_same_start_refuses_workers_at_different_epochs(monkeypatch) -> None:
    strategy, info = get_strategy("auto")
    assert distribute.gather_ints(strategy, 7) == [7]
    distribute.check_same_start(strategy, info, 3, Path("/runs/mw"))  # one replica: nothing to compare
    monkeypatch.setattr(distribute, "gather_ints", lambda strategy, value: [value, 1])
    with pytest.raises(StrategyError, match=r"different epochs \[3, 1\].*/runs/mw/checkpoints.*shared"):
        distribute.check_same_start(strategy, info, 3, Path("/runs/mw"))


def test_auto_with_replicas_on_a_cpu_machine_gives_that_many_logical_cpus() -> None:
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: auto takes GPUs there")
    code = """
import json
from sprint2.distribute import get_strategy
s, info = get_strategy("auto", replicas=2)
print(json.dumps({"replicas": s.num_replicas_in_sync, "info": info.as_dict()}))
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["info"]["replicas"] == 2 and out["info"]["kind"] == "auto"
    assert len(out["info"]["devices"]) == 2 and all("CPU" in d for d in out["info"]["devices"])
    assert "logical CPU" in out["info"]["reason"] and "no GPU" in out["info"]["reason"]


def test_auto_with_replicas_after_the_runtime_started_fails_instead_of_ignoring_them() -> None:
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    code = """
import tensorflow as tf
from sprint2.distribute import StrategyError, get_strategy
tf.constant(1.0) + 1.0
try:
    get_strategy("auto", replicas=2)
except StrategyError as exc:
    print("ERROR:", exc)
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERROR: cannot create 2 logical CPU devices" in proc.stdout and "restart" in proc.stdout


def test_replicas_that_cannot_be_honoured_are_refused(monkeypatch) -> None:
    with pytest.raises(StrategyError, match="replicas must be >= 1"):
        get_strategy("auto", replicas=0)
    gpus = len(tf.config.list_physical_devices("GPU"))
    with pytest.raises(StrategyError, match=f"asked for {gpus + 1} GPU replicas" if gpus else "no GPU"):
        get_strategy("gpu", replicas=gpus + 1)
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    per_worker = max(1, gpus)
    # Refused before the strategy is created, so no peer is contacted.
    with pytest.raises(StrategyError, match=rf"asked for 3 replicas.*TF_CONFIG: 2 workers x {per_worker}"):
        get_strategy("multiworker", replicas=3)
