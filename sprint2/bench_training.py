"""The training benchmark: one model with no strategy, under MirroredStrategy on N logical CPUs and on GPUs.

Beside the timings it measures the CPU's matmul ceiling and projects data-parallel training to 8 GPUs.
How it is kept fair and what its numbers mean:
- One process, dataset, model kind and seed for every setting; each setting builds a fresh model under
  its own strategy's scope (sprint2.training.train does that).
- Round-robin: every setting is trained ``rounds`` times in turn and keeps its fastest round, so a
  neighbour's burst of work on a shared machine does not decide the comparison.
- Weak scaling: the batch is per replica, so N replicas process N x batch images per step.
- Epoch 1 traces and compiles the step function: it is reported apart (``first_epoch_s``); the steady
  state (``images_per_s``, ``epoch_s``) is the mean over epochs 2..E.
- speedup = images_per_s / that of the one-device reference of the same kind: the no-strategy row for
  CPU rows (so MirroredStrategy rows carry the strategy's own cost), the one-GPU row for GPU rows;
  efficiency = speedup / replicas; ``vs_cpu`` compares every row with the no-strategy CPU row.
- Peak memory is this process's RSS sampled every 20 ms while a setting runs; RSS is process-wide, so
  ``start_rss_mb`` shows the level a setting started from.
- The 1-minute load average before and after is recorded, and ``best_images_per_s`` (the fastest
  steady epoch) sits beside the mean as a figure less prone to noise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

GPU_CPU_RATIO_ORIGINAL = 12 * 60 / 47  # the original sprint: 12 min on CPU vs 47 s on GPU, 10 epochs each
LINKS_GBPS: dict[str, float] = {"PCIe 4.0 x16": 25.0, "NVLink 3": 300.0}  # assumed effective all-reduce GB/s
MATMUL_N = 2048
_SPEEDUP_DEFINITION = (
    "images_per_s / images_per_s of the no-strategy CPU row (GPU rows: of the one-GPU row); "
    "efficiency = speedup / replicas"
)

_Setting = tuple[str, str, Callable[[], Any]]  # (setting name, device kind, strategy factory)


class _PeakRss:
    """Samples this process's resident set size in a background thread; ``peak_mb`` once the block ends."""

    def __init__(self, interval_s: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_mb = self.peak_mb = 0.0

    def _rss_mb(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def __enter__(self) -> _PeakRss:
        self.start_mb = self.peak_mb = self._rss_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


def matmul_gflops(n: int = MATMUL_N, repeats: int = 10) -> float:
    """This CPU's float32 ceiling: GFLOP/s of an n x n tf.linalg.matmul (2 n^3 FLOPs), best of ``repeats``."""
    import tensorflow as tf

    with tf.device("/CPU:0"):
        a = tf.random.stateless_normal((n, n), seed=(1, 2))
        b = tf.random.stateless_normal((n, n), seed=(3, 4))
        for _ in range(2):  # warm-up: thread pool start, kernel selection, page faults
            tf.linalg.matmul(a, b).numpy()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            tf.linalg.matmul(a, b).numpy()  # eager CPU ops are synchronous; .numpy() makes sure
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def project_multi_gpu(
    step_compute_s: float,
    grad_bytes: float,
    gpus: Any = range(1, 9),
    links: dict[str, float] | None = None,
    batch: int | None = None,
) -> list[dict[str, Any]]:
    """Weak-scaling model of N data-parallel GPUs: each step computes, then ring-all-reduces the gradients.

    t_allreduce = 2 (N - 1) / N x grad_bytes / bandwidth; speedup = N t_compute / (t_compute + t_allreduce).
    ``links`` maps a name to an assumed effective bandwidth in GB/s (default LINKS_GBPS). No overlap of
    compute and communication, no latency term, no input-pipeline limit: a model, not a measurement.
    """
    rows = []
    for name, gbps in (links or LINKS_GBPS).items():
        for n in gpus:
            allreduce = 2.0 * (n - 1) / n * grad_bytes / (gbps * 1e9)
            step = step_compute_s + allreduce
            speedup = n * step_compute_s / step
            row = {
                "link": name,
                "bandwidth_gbps": gbps,
                "gpus": int(n),
                "t_compute_s": step_compute_s,
                "t_allreduce_s": allreduce,
                "step_s": step,
                "speedup": speedup,
                "efficiency": speedup / n,
            }
            if batch:
                row["images_per_s"] = n * batch / step
            rows.append(row)
    return rows


def _input_pipeline_images_per_s(
    images: np.ndarray, labels: np.ndarray, boxes: np.ndarray, batch: int, augment_data: bool
) -> float:
    """images/s the host's tf.data pipeline (shuffle, batch, augment) delivers with no model behind it."""
    from sprint2.pipeline import make_dataset

    rate = 0.0
    for epoch in (1, 2):  # epoch 1 warms the map function's tracing; epoch 2 is timed
        ds = make_dataset(images, labels, boxes, batch, seed=0, epoch=epoch, augment_data=augment_data)
        start = time.perf_counter()
        n = sum(int(x.shape[0]) for x, _, _ in ds)
        rate = n / (time.perf_counter() - start)
    return rate


def _settings(replicas: list[int], gpus: int) -> tuple[list[_Setting], list[dict[str, str]]]:
    """The settings in run order, and the GPU settings skipped with a reason."""
    from sprint2.distribute import get_strategy, mirrored_cpus

    settings: list[_Setting] = [("no strategy (CPU)", "cpu", lambda: None)]
    for n in replicas:
        settings.append((f"mirrored x{n} (logical CPU)", "cpu", lambda n=n: mirrored_cpus(n)))
    skipped = []
    if gpus >= 1:
        settings.append(("mirrored x1 (GPU)", "gpu", lambda: get_strategy("gpu", 1)[0]))
    else:
        reason = "TensorFlow sees no GPU on this machine (tf.config.list_physical_devices('GPU') is empty)"
        skipped.append({"setting": "mirrored x1 (GPU)", "reason": reason})
    if gpus >= 2:
        settings.append((f"mirrored x{gpus} (GPU)", "gpu", lambda: get_strategy("gpu", gpus)[0]))
    else:
        skipped.append(
            {"setting": "mirrored x all (GPU)", "reason": f"needs at least two GPUs; this machine has {gpus}"}
        )
    return settings, skipped


def _run_row(name: str, kind: str, result: Any, batch: int, rss: _PeakRss) -> dict[str, Any]:
    """One setting's numbers from one TrainResult: steady state = epochs 2..E, first epoch apart."""
    return {
        "setting": name,
        "device": kind,
        "replicas": int(result.replicas),
        "images_per_s": float(result.images_per_s),
        "first_epoch_s": float(result.first_epoch_s),
        "epoch_s": float(np.mean(result.epoch_seconds[1:])),
        "speedup": 0.0,
        "efficiency": 0.0,
        "global_batch": batch * int(result.replicas),
        "epoch_seconds": [float(s) for s in result.epoch_seconds],
        "best_images_per_s": max(float(h["images_per_s"]) for h in result.history[1:]),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "start_rss_mb": round(rss.start_mb, 1),
    }


def _train_round_robin(
    train_ds: Any, config: Any, strategies: list[tuple[str, str, Any]], gpus: int, rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Every setting trained ``rounds`` times in turn: {setting: one row per round}."""
    import gc

    import keras
    import tensorflow as tf

    from sprint2.training import train

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in strategies}
    for round_no in range(rounds):
        for name, kind, strategy in strategies:
            # With a GPU present the default strategy would use it; the no-strategy row stays on the CPU.
            pin = tf.device("/CPU:0") if strategy is None and gpus else contextlib.nullcontext()
            with _PeakRss() as rss, pin:
                result = train(train_ds, None, config, strategy)
            row = _run_row(name, kind, result, config.batch_size, rss)
            runs[name].append(row)
            logger.info(
                "round %d, %s: %.1f images/s, first epoch %.2f s, steady epoch %.2f s",
                round_no + 1,
                name,
                row["images_per_s"],
                row["first_epoch_s"],
                row["epoch_s"],
            )
            del result
            keras.backend.clear_session()
            gc.collect()
    return runs


def _fastest_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each setting's fastest round with every round's rate, its speedup and efficiency (module docstring)."""
    rows = []
    for attempts in runs.values():
        row = max(attempts, key=lambda r: r["images_per_s"])
        row["round_images_per_s"] = [r["images_per_s"] for r in attempts]
        row["best_images_per_s"] = max(r["best_images_per_s"] for r in attempts)
        row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in attempts)
        rows.append(row)
    cpu_ref = rows[0]["images_per_s"]
    gpu_ref = _one_gpu_rate(rows)
    for row in rows:
        on_gpu = row["device"] == "gpu"
        row["baseline"] = "mirrored x1 (GPU)" if on_gpu else rows[0]["setting"]
        row["speedup"] = row["images_per_s"] / (gpu_ref if on_gpu else cpu_ref)
        row["efficiency"] = row["speedup"] / row["replicas"]
        row["vs_cpu"] = row["images_per_s"] / cpu_ref
    return rows


def _one_gpu_rate(rows: list[dict[str, Any]]) -> float | None:
    """images/s of the one-GPU row, None without a GPU."""
    return next((r["images_per_s"] for r in rows if r["device"] == "gpu" and r["replicas"] == 1), None)


def _projection(rows: list[dict[str, Any]], batch: int, grads: int) -> dict[str, Any]:
    """The projection from the one-GPU row's step time; with no GPU, from the CPU's and the original ratio."""
    gpu_ref = _one_gpu_rate(rows)
    if gpu_ref is not None:
        step_compute = batch / gpu_ref
        source = "measured: one-GPU row of this run (batch / images_per_s)"
    else:
        step_compute = batch / rows[0]["images_per_s"] / GPU_CPU_RATIO_ORIGINAL
        source = (
            f"assumed: this run's CPU step time (batch / no-strategy images_per_s) divided by "
            f"{GPU_CPU_RATIO_ORIGINAL:.2f}, the original sprint's GPU/CPU ratio "
            f"(12 min vs 47 s for 10 epochs, two machines, the original model)"
        )
    return {
        "step_compute_s": step_compute,
        "step_compute_source": source,
        "grad_bytes": grads,
        "per_replica_batch": batch,
        "links_gbps": dict(LINKS_GBPS),
        "assumptions": [
            "weak scaling: per-replica batch fixed",
            "ring all-reduce, 2(N-1)/N x bytes / bandwidth",
            "bandwidths are nominal effective figures, not measured here",
            "no compute/communication overlap, no per-message latency",
            "the host's input pipeline and CPU-side step overhead are not modelled",
        ],
        "rows": project_multi_gpu(step_compute, grads, links=LINKS_GBPS, batch=batch),
        "measured": [
            {"gpus": r["replicas"], "speedup": r["speedup"], "images_per_s": r["images_per_s"]}
            for r in rows
            if r["device"] == "gpu"
        ],
    }


def bench_training(
    data_dir: Path | str,
    *,
    replicas: Any = (1, 2, 4),
    epochs: int = 3,
    model: str = "improved",
    size: int = 64,
    batch: int = 32,
    max_images: int | None = None,
    seed: int = 0,
    rounds: int = 2,
) -> dict[str, Any]:
    """Trains one model on one dataset with no strategy, on each count of logical CPUs and on the GPUs.

    Returns rows, skipped, strategy_overhead, cpu_ceiling and projection (see the module docstring for
    how each is measured). Configures max(replicas) logical CPUs first, so it must run before
    TensorFlow's runtime starts (a fresh process, as the CLI gives it); otherwise
    sprint2.distribute's StrategyError says so.
    """
    replicas = sorted({int(n) for n in replicas})
    if epochs < 2:
        raise ValueError(
            f"need epochs >= 2 (epoch 1 compiles; the steady state is epochs 2..E), got {epochs}"
        )
    if rounds < 1:
        raise ValueError(f"need rounds >= 1, got {rounds}")
    if not replicas or replicas[0] < 1:
        raise ValueError(f"replicas must be positive integers, got {replicas}")
    from sprint2.distribute import configure_logical_cpus

    configure_logical_cpus(max(replicas))  # before anything else touches TensorFlow's runtime

    import resource

    import tensorflow as tf

    from sprint2.loading import load_splits
    from sprint2.model import build_model, gradient_bytes, model_flops
    from sprint2.pipeline import make_targets
    from sprint2.training import TrainConfig

    train_ds, _ = load_splits(Path(data_dir), size=size, seed=seed, errors="skip", method="thread")
    if max_images is not None and max_images < len(train_ds.boxes):
        train_ds = train_ds.subset(np.arange(max_images))
    augment_data = model == "improved"  # as run_training does
    config = TrainConfig(
        model=model,  # type: ignore[arg-type]
        epochs=epochs,
        batch_size=batch,
        seed=seed,
        augment=augment_data,
        patience=epochs + 1,
        out_dir=None,
        resume=False,
    )
    gpus = len(tf.config.list_physical_devices("GPU"))
    settings, skipped = _settings(replicas, gpus)

    load_before = os.getloadavg()[0]
    ceiling = matmul_gflops()  # measured before and after the training; the better one is the ceiling
    strategies = [(name, kind, make()) for name, kind, make in settings]
    rows = _fastest_rows(_train_round_robin(train_ds, config, strategies, gpus, rounds))

    cpu_ref = rows[0]["images_per_s"]
    mirrored_1 = next((r for r in rows if r["setting"] == "mirrored x1 (logical CPU)"), None)
    overhead = cpu_ref / mirrored_1["images_per_s"] - 1.0 if mirrored_1 else None
    overhead_best = (
        rows[0]["best_images_per_s"] / mirrored_1["best_images_per_s"] - 1.0 if mirrored_1 else None
    )

    reference = build_model(model, len(train_ds.class_names), size)  # type: ignore[arg-type]
    flops = model_flops(reference)
    grads = gradient_bytes(reference)
    train_flops = 3 * flops["forward_flops"]  # backward ~ 2x forward
    ceiling = max(ceiling, matmul_gflops())
    images, labels, boxes = make_targets(train_ds, config.target)
    cpu_ceiling = {
        "matmul_gflops": ceiling,
        "matmul_n": MATMUL_N,
        "forward_gflop_per_image": flops["forward_flops"] / 1e9,
        "train_gflop_per_image": train_flops / 1e9,
        "achieved_gflops": train_flops * cpu_ref / 1e9,
        "fraction_of_matmul": train_flops * cpu_ref / 1e9 / ceiling,
        "counted": "Conv and Dense multiply-adds x 2 from layer shapes; training = 3 x forward",
        "input_pipeline_images_per_s": _input_pipeline_images_per_s(
            images, labels, boxes, batch, augment_data
        ),
    }
    return {
        "rows": rows,
        "skipped": skipped,
        "strategy_overhead": overhead,
        "strategy_overhead_best_epoch": overhead_best,
        "cpu_ceiling": cpu_ceiling,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "projection": _projection(rows, batch, grads),
        "gpus": gpus,
        "cores": os.cpu_count(),
        "images": int(len(images)),
        "model": model,
        "size": size,
        "batch_per_replica": batch,
        "epochs": epochs,
        "seed": seed,
        "rounds": rounds,
        "parameters": int(reference.count_params()),
        "speedup_definition": _SPEEDUP_DEFINITION,
        "memory": "peak_rss_mb: psutil RSS of the whole process sampled every 20 ms during the setting",
        "max_rss_mb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
