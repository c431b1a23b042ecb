"""Choosing a tf.distribute strategy: all GPUs, N logical CPUs, or several workers from TF_CONFIG.

Logical CPU devices let MirroredStrategy be exercised (and tested) on a laptop; they must be
configured before TensorFlow initialises its runtime, hence `configure_logical_cpus`.
Multi-worker collectives get a timeout (SPRINT2_COLLECTIVE_TIMEOUT seconds) so that a worker whose
peer died fails with `WorkerLostError` instead of waiting forever. The multi-worker coordination the
training loop needs lives here too: the start-epoch check, the exit barrier and the non-chief workers'
scratch folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tensorflow as tf

from sprint2.errors import StrategyError, WorkerLostError

logger = logging.getLogger(__name__)

StrategyKind = Literal["auto", "cpu", "gpu", "multiworker"]

TIMEOUT_ENV = "SPRINT2_COLLECTIVE_TIMEOUT"
DEFAULT_COLLECTIVE_TIMEOUT = 60.0  # seconds one all-reduce may wait for its peers, start-up skew included

# What a collective raises when a peer is gone: refused connection, timeout, or an abort that
# another op (or the coordination service's heartbeat) started after noticing the loss.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
)


@dataclass
class StrategyInfo:
    """What `get_strategy` chose and why; plain data, safe to log or put in metrics.json."""

    kind: str
    devices: list[str] = field(default_factory=list)
    replicas: int = 1
    reason: str = ""
    is_chief: bool = True
    worker_index: int = 0
    task_type: str = ""
    cluster: dict[str, list[str]] = field(default_factory=dict)
    collective_timeout_s: float | None = None

    def as_dict(self) -> dict:
        """JSON-ready copy."""
        return {
            "kind": self.kind,
            "devices": list(self.devices),
            "replicas": self.replicas,
            "reason": self.reason,
            "is_chief": self.is_chief,
            "worker_index": self.worker_index,
            "task_type": self.task_type,
            "cluster": {k: list(v) for k, v in self.cluster.items()},
            "collective_timeout_s": self.collective_timeout_s,
        }

    def peers(self) -> list[str]:
        """The other tasks of the cluster as 'type index (address)', for error messages."""
        return [
            f"{job} {i} ({addr})"
            for job, addrs in self.cluster.items()
            for i, addr in enumerate(addrs)
            if (job, i) != (self.task_type, self.worker_index)
        ]


def configure_logical_cpus(n: int) -> list[str]:
    """Splits the CPU into n logical devices (reusing an existing split of >= n) and returns their names.

    Raises StrategyError when TensorFlow's runtime is already initialised with fewer devices.
    """
    if n < 1:
        raise ValueError(f"need at least one logical CPU, got {n}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu) or []
    if len(configured) < n:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError as exc:
            have = len(tf.config.list_logical_devices("CPU"))
            if have < n:
                raise StrategyError(
                    f"cannot create {n} logical CPU devices: TensorFlow's runtime is already initialised "
                    f"with {have}. Call sprint2.distribute.configure_logical_cpus({n}) "
                    f"(or get_strategy('cpu', replicas={n})) at the top of the process or notebook, "
                    "before any TensorFlow op runs, "
                    f"or restart the kernel. ({exc})"
                ) from exc
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < n:
        raise StrategyError(
            f"asked for {n} logical CPU devices but TensorFlow reports {len(devices)}: {devices}"
        )
    return devices[:n]


def collective_timeout() -> float | None:
    """Seconds from SPRINT2_COLLECTIVE_TIMEOUT (default 60); 0 or 'none' means wait forever."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip().lower()
    if not raw:
        return DEFAULT_COLLECTIVE_TIMEOUT
    if raw in ("0", "none", "off"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise StrategyError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise StrategyError(f"{TIMEOUT_ENV} must be >= 0 seconds, got {value}")
    return value


def _read_tf_config() -> tuple[dict[str, list[str]], str, int]:
    """(cluster, task type, task index) from TF_CONFIG, checked so mistakes fail here with a clear reason."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StrategyError(
            "strategy 'multiworker' needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}})'
        )
    try:
        config = json.loads(raw)
        task = config["task"]
        cluster = {str(k): [str(a) for a in v] for k, v in config["cluster"].items()}
        task_type, index = str(task.get("type", "worker")), int(task.get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StrategyError(f"TF_CONFIG is not valid: {exc!r}") from exc
    if task_type not in cluster or not 0 <= index < len(cluster[task_type]):
        raise StrategyError(f"TF_CONFIG task {task_type} {index} is not in its cluster {cluster}")
    return cluster, task_type, index


def _multiworker(replicas: int | None = None) -> tuple[tf.distribute.Strategy, StrategyInfo]:
    """MultiWorkerMirroredStrategy from TF_CONFIG; the chief is task 'chief', else worker 0.

    The replica count follows from TF_CONFIG (workers x local GPUs, or x 1 on CPUs); a `replicas` that
    disagrees is refused before the strategy connects to its peers.
    """
    cluster, task_type, index = _read_tf_config()
    workers = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
    expected = workers * max(1, len(tf.config.list_physical_devices("GPU")))
    if replicas is not None and replicas != expected:
        raise StrategyError(
            f"asked for {replicas} replicas, but strategy 'multiworker' gets its replicas from TF_CONFIG: "
            f"{workers} workers x {expected // workers} device(s) each = {expected}; "
            "drop --replicas or change the cluster"
        )
    timeout = collective_timeout()
    # Without a timeout a collective whose peer died waits forever; with one it raises DeadlineExceeded.
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    info = StrategyInfo(
        kind="multiworker",
        devices=list(strategy.extended.worker_devices),
        replicas=int(strategy.num_replicas_in_sync),
        reason=f"MultiWorkerMirroredStrategy over {workers} workers from TF_CONFIG; "
        f"this is {task_type} {index}",
        is_chief=is_chief,
        worker_index=index,
        task_type=task_type,
        cluster=cluster,
        collective_timeout_s=timeout,
    )
    return strategy, info


def lost_peer(exc: BaseException, info: StrategyInfo) -> str:
    """Names the peer an error points at ('worker 1 (host:port)'), or every peer when it does not say."""
    text = str(exc)
    named = set()
    for job, i in re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", text):
        named.add((job, int(i)))
    for job, addrs in info.cluster.items():
        for i, addr in enumerate(addrs):
            if addr in text:
                named.add((job, i))
    named.discard((info.task_type, info.worker_index))
    described = [
        f"{job} {i} ({info.cluster[job][i]})"
        for job, i in sorted(named)
        if job in info.cluster and i < len(info.cluster[job])
    ]
    if described:
        return " and ".join(described)
    return "a peer (one of " + ", ".join(info.peers()) + ")" if info.peers() else "a peer"


def worker_lost(
    exc: BaseException, info: StrategyInfo, epoch: int, checkpoint_dir: object
) -> WorkerLostError:
    """The error to raise when a collective failed because a peer is gone (see PEER_ERRORS)."""
    detail = " ".join(re.sub(r"\{\{function_node [^}]*\}\}", "", str(exc)).split())
    detail = detail if len(detail) <= 240 else detail[:237] + "..."
    return WorkerLostError(
        f"{info.task_type or 'worker'} {info.worker_index} lost {lost_peer(exc, info)} during epoch {epoch} "
        f"({type(exc).__name__}: {detail}). Restart every worker with the same TF_CONFIG and --out: training "
        f"resumes from the last checkpoint in {checkpoint_dir}"
    )


def mirrored_cpus(n: int) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over the first n logical CPU devices (configured here if they are not yet).

    NCCL and hierarchical copy need GPUs; reducing onto one device works on logical CPUs. n = 1 is a
    real one-replica mirror, which the benchmark needs to measure the strategy's own cost.
    """
    devices = configure_logical_cpus(n)
    return tf.distribute.MirroredStrategy(
        devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0])
    )


def get_strategy(
    kind: StrategyKind = "auto", replicas: int | None = None
) -> tuple[tf.distribute.Strategy, StrategyInfo]:
    """Returns (strategy, info) for 'auto', 'cpu', 'gpu' or 'multiworker'.

    replicas is honoured or refused, never ignored: 'gpu' and 'auto' with GPUs take the first N GPUs;
    'cpu' and 'auto' without GPUs split the CPU into N logical devices (N > 1), which must happen
    before TensorFlow's runtime starts; 'multiworker' checks N against TF_CONFIG.
    """
    if replicas is not None and replicas < 1:
        raise StrategyError(f"replicas must be >= 1, got {replicas}")
    if kind == "multiworker":
        return _multiworker(replicas)
    if kind not in ("auto", "cpu", "gpu"):
        raise StrategyError(f"unknown strategy {kind!r}; choose auto, cpu, gpu or multiworker")

    gpus = tf.config.list_physical_devices("GPU") if kind != "cpu" else []
    if kind == "gpu" and not gpus:
        raise StrategyError("strategy 'gpu' asked for but TensorFlow sees no GPU; use 'auto' or 'cpu'")
    if not gpus and replicas is not None and replicas > 1:
        devices = configure_logical_cpus(replicas)
        strategy = mirrored_cpus(replicas)
        reason = (
            f"MirroredStrategy over {replicas} logical CPU devices (one physical CPU split in {replicas})"
            + (": no GPU found, so the replicas asked for are logical CPUs" if kind == "auto" else "")
        )
        return strategy, StrategyInfo(kind, devices, replicas, reason)
    if gpus:
        names = [d.name for d in tf.config.list_logical_devices("GPU")]
        if replicas:
            if replicas > len(names):
                raise StrategyError(f"asked for {replicas} GPU replicas but only {len(names)} GPUs: {names}")
            names = names[:replicas]
        ops = tf.distribute.NcclAllReduce() if len(names) > 1 else tf.distribute.HierarchicalCopyAllReduce()
        strategy = tf.distribute.MirroredStrategy(devices=names, cross_device_ops=ops)
        reason = f"MirroredStrategy over {len(names)} GPU(s)"
        return strategy, StrategyInfo(kind, names, len(names), reason)

    strategy = tf.distribute.get_strategy()
    reason = (
        "default strategy on CPU: no GPU found (replicas > 1 gives MirroredStrategy over logical CPUs)"
        if kind == "auto"
        else "default strategy on CPU (one replica)"
    )
    cpu = [d.name for d in tf.config.list_logical_devices("CPU")][:1]
    return strategy, StrategyInfo(kind, cpu, 1, reason)


def scratch_dir(out_dir: Path, info: StrategyInfo) -> Path | None:
    """Where a non-chief worker writes its own copy of the run (None for the chief, who writes to out_dir).

    Every worker saves, as TensorFlow's multi-worker guide asks, but only the chief's copy is kept. The
    folder is fixed per (out_dir, task) under the system temp directory and emptied here, so a worker
    killed before its clean-up leaves nothing new behind when it restarts.
    """
    if info.is_chief:
        return None
    tag = zlib.crc32(str(Path(out_dir).resolve()).encode())
    path = Path(tempfile.gettempdir()) / f"sprint2-{tag:08x}-{info.task_type or 'worker'}{info.worker_index}"
    shutil.rmtree(path, ignore_errors=True)
    return path


def gather_ints(strategy: tf.distribute.Strategy, value: int) -> list[int]:
    """Every replica's copy of a local integer, in replica order (an all-gather across the workers)."""
    local = strategy.experimental_distribute_values_from_function(lambda _: tf.constant([value], tf.int64))
    return [int(v) for v in strategy.gather(local, axis=0).numpy()]


def _checkpoints(out_dir: Path | None) -> object:
    return Path(out_dir) / "checkpoints" if out_dir is not None else "(no --out)"


def check_same_start(
    strategy: tf.distribute.Strategy, info: StrategyInfo, start_epoch: int, out_dir: Path | None
) -> None:
    """Multi-worker: every worker must resume from the same epoch, or their all-reduces would not pair up.

    Different epochs mean some worker could not read the chief's checkpoints: out_dir is not shared.
    """
    try:
        starts = gather_ints(strategy, start_epoch)
    except PEER_ERRORS as exc:
        raise worker_lost(exc, info, start_epoch, _checkpoints(out_dir)) from exc
    if len(set(starts)) > 1:
        where = _checkpoints(out_dir) if out_dir is not None else "the checkpoint directory"
        raise StrategyError(
            f"workers would start at different epochs {starts} (replica order): every worker resumes from "
            f"{where}, which must be on storage every worker can read (a shared file system or bucket) with "
            "the same --out path"
        )
    logger.info("all %d replicas start at epoch %d", len(starts), start_epoch)


def barrier(strategy: tf.distribute.Strategy, info: StrategyInfo, epoch: int, checkpoint_dir: object) -> None:
    """Multi-worker: waits until every worker reaches this point, so none exits while a peer still works."""
    try:
        gather_ints(strategy, 0)
    except PEER_ERRORS as exc:
        raise worker_lost(exc, info, epoch, checkpoint_dir) from exc
