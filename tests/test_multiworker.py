"""MultiWorkerMirroredStrategy for real: two `sprint2 train` processes on loopback ports.

Checks that both finish, only the chief writes the run folder, the saved model scores what the chief
reported (the detector, the default model, and the single-box model), and that a detector worker
killed mid-training gives a clear error on the survivor and a restart resumes from the checkpoint.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from sprint2.launch import LocalWorkers
from sprint2.synthetic import generate

pytestmark = pytest.mark.slow  # trains, converts or starts processes: not in `make test-fast`

WAIT_S = 240  # the longest any worker may run before it is killed and the test fails
COLLECTIVE_TIMEOUT_S = "30"  # the survivor's all-reduce gives up after this; start-up skew must fit in it
SIZE = 32


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 training and 8 test images of 32 px: a few steps per epoch on two workers."""
    return generate(tmp_path_factory.mktemp("mw") / "data", train=32, test=8, seed=0)


def workers(data: Path, out: Path, logs: Path, epochs: int, model: str | None = None) -> LocalWorkers:
    """Two `sprint2 train --strategy multiworker` processes on tiny data, started; model None trains
    the default model (the detector)."""
    args = [str(data), *(["--model", model] if model else []), "--epochs", str(epochs), "--size", str(SIZE)]
    return LocalWorkers(args, out, logs, env={"SPRINT2_COLLECTIVE_TIMEOUT": COLLECTIVE_TIMEOUT_S}).start()


def run_to_end(cluster: LocalWorkers) -> None:
    """Waits for both workers (killing what is left at the deadline) and fails on a non-zero exit."""
    codes = cluster.run_to_end(WAIT_S)
    for i, code in enumerate(codes):
        assert code == 0, f"worker {i} exited {code}:\n{cluster.stderr(i)[-4000:]}"


def _latest_epoch(checkpoints: Path) -> int:
    """The epoch number of the newest checkpoint named in CheckpointManager's index file."""
    match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', (checkpoints / "checkpoint").read_text(), re.M)
    assert match, (checkpoints / "checkpoint").read_text()
    return int(match.group(1))


@pytest.mark.parametrize("model", [None, "improved"], ids=["detector (default)", "improved"])
def test_two_workers_train_and_only_the_chief_writes(
    tiny_data: Path, tmp_path: Path, model: str | None
) -> None:
    from sprint2.experiment import evaluate_model

    out = tmp_path / "run"
    with workers(tiny_data, out, tmp_path / "logs", epochs=1, model=model) as cluster:
        run_to_end(cluster)

    chief, other = cluster.metrics(0), cluster.metrics(1)
    for m in (chief, other):
        assert m["strategy"] == "multiworker" and m["replicas"] == 2 and m["epochs"] == 1
        assert m["model"] == (model or "detector") and m["start_epoch"] == 1
    assert chief["strategy_info"]["is_chief"] and not other["strategy_info"]["is_chief"]
    # Both replicas trained the same model: the all-reduced numbers agree exactly.
    assert chief["test"] == other["test"]

    # The run folder is the chief's alone; worker 1 cleaned up its scratch copy when it finished.
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {
        "model.keras",
        "model.json",
        "metrics.json",
        "history.csv",
        "checkpoints/checkpoint",
        "checkpoints/ckpt-1.index",
    } <= files
    assert json.loads((out / "metrics.json").read_text())["strategy_info"]["worker_index"] == 0
    assert not list(cluster.scratch_dir(1).iterdir()), "worker 1 left its scratch folder behind"
    # Each worker logged its one epoch; the numbers agree because the all-reduced statistics do.
    for i in range(2):
        assert [line.split(":")[0] for line in cluster.epoch_lines(i)] == ["epoch 1/1"]
    assert cluster.epoch_lines(0)[0].split("seconds=")[0] == cluster.epoch_lines(1)[0].split("seconds=")[0]

    # The saved model, read back with its card, scores what the chief reported for the test split.
    scored = evaluate_model(out / "model.keras", tiny_data, split="test")
    assert scored["kind"] == chief["model"] and scored["images"] == chief["test_images"] == 8
    assert scored["score_threshold"] == pytest.approx(chief["score_threshold"])
    keys = ["map50", "map50_95", "detections"] + (["accuracy", "mean_iou"] if model else [])
    assert {k: scored["scores"][k] for k in keys} == pytest.approx(
        {k: chief["test"][k] for k in keys}, abs=1e-6
    )


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(None, id="detector (default)"),
        pytest.param("improved", id="improved"),
    ],
)
def test_killed_worker_gives_clear_error_and_restart_resumes(
    tiny_data: Path, tmp_path: Path, model: str | None
) -> None:
    out = tmp_path / "run"
    checkpoints = out / "checkpoints"
    worker1_ckpt = "sprint2-*-worker1/checkpoints/ckpt-1.index"
    with workers(tiny_data, out, tmp_path / "logs1", epochs=50, model=model) as cluster:
        # Kill once both have saved epoch 1: the chief into --out, worker 1 into its own scratch folder.
        deadline = time.monotonic() + WAIT_S
        while not (
            (checkpoints / "ckpt-1.index").is_file() and list(cluster.scratch_dir(1).glob(worker1_ckpt))
        ):
            for i in range(2):
                assert cluster.poll(i) is None, f"worker {i} exited early:\n{cluster.stderr(i)[-4000:]}"
            assert time.monotonic() < deadline, "no checkpoint for epoch 1 in time"
            time.sleep(0.2)
        cluster.kill(1)
        killed_at = time.monotonic()
        code = cluster.wait(0, WAIT_S)
        detect_s = time.monotonic() - killed_at
    assert cluster.poll(1) == -signal.SIGKILL

    err = cluster.stderr(0)
    assert code != 0, err[-4000:]
    message = next((line for line in err.splitlines() if line.startswith("sprint2: error: ")), "")
    assert message, err[-4000:]
    assert "Traceback" not in err, "a lost worker is reported as a clear error, not a traceback"
    assert "worker 0 lost worker 1 (127.0.0.1:" in message
    assert re.search(r"during epoch \d+", message)
    assert f"resumes from the last checkpoint in {checkpoints}" in message
    assert detect_s < 120, f"the chief took {detect_s:.0f} s to notice"
    done = _latest_epoch(checkpoints)
    assert done >= 1

    # Restart both with the same --out: they resume after the last checkpoint and finish one more epoch.
    with workers(tiny_data, out, tmp_path / "logs2", epochs=done + 1, model=model) as restarted:
        run_to_end(restarted)
    for i in range(2):
        m = restarted.metrics(i)
        assert m["start_epoch"] == done + 1 and m["epochs"] == done + 1
        assert f"resumed from {checkpoints / f'ckpt-{done}'}" in restarted.stderr(i)
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, done + 2))
    assert _latest_epoch(checkpoints) == done + 1


def test_collective_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sprint2.distribute import DEFAULT_COLLECTIVE_TIMEOUT, TIMEOUT_ENV, StrategyError, collective_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert collective_timeout() == DEFAULT_COLLECTIVE_TIMEOUT
    monkeypatch.setenv(TIMEOUT_ENV, "12.5")
    assert collective_timeout() == 12.5
    monkeypatch.setenv(TIMEOUT_ENV, "0")
    assert collective_timeout() is None
    for bad in ("soon", "-3"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(StrategyError, match=TIMEOUT_ENV):
            collective_timeout()


def test_tf_config_naming_a_task_outside_its_cluster_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from sprint2.distribute import StrategyError, get_strategy

    config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with pytest.raises(StrategyError, match="worker 2 is not in its cluster"):
        get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StrategyError, match="TF_CONFIG is not valid"):
        get_strategy("multiworker")


def test_worker_lost_message_names_the_peer_epoch_and_checkpoints() -> None:
    import tensorflow as tf

    from sprint2.distribute import StrategyInfo, WorkerLostError, worker_lost

    info = StrategyInfo(
        "multiworker",
        task_type="worker",
        worker_index=0,
        cluster={"worker": ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"]},
    )
    text = (
        "{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0/device:CPU:0}} "
        "Collective ops is aborted by: The following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:2\nThe tasks have crashed."
    )
    err = worker_lost(tf.errors.UnavailableError(None, None, text), info, 4, Path("/runs/mw/checkpoints"))
    assert isinstance(err, WorkerLostError)
    assert str(err).startswith("worker 0 lost worker 2 (10.0.0.3:2222) during epoch 4 (UnavailableError: ")
    assert "function_node" not in str(err)
    assert str(err).endswith("resumes from the last checkpoint in /runs/mw/checkpoints")
    # A bare timeout does not say who is gone: every peer is listed, never this worker itself.
    vague = str(
        worker_lost(tf.errors.DeadlineExceededError(None, None, "Collective timed out"), info, 1, "/c")
    )
    assert "a peer (one of worker 1 (10.0.0.2:2222), worker 2 (10.0.0.3:2222))" in vague
    assert "10.0.0.1" not in vague
