"""Side-by-side benchmarks. ``bench_loading``: images/s of each way to load a VOC dataset.

How the loading benchmark is made fair:
- Every method is timed in the same run, round-robin (serial, submit_result, process, thread, tf_data,
  then again), after one untimed warm-up round, and reports its best of ``repeats``. Round-robin
  spreads a noisy neighbour over all methods instead of punishing one.
- Pool start-up is excluded for every method: ``load_dataset(method="process")`` keeps a warm
  module-level pool across calls, threads cost nothing to start, and tf.data traces its map function
  in the warm-up round. Spawning the process pool is measured separately ("process_startup_s").
- All sprint2 methods do the full work (discover, parse XML, decode, check boxes against the real
  image size, resize, transform boxes, copy into the preallocated array); tf.data only decodes and
  resizes images (bilinear, where sprint2 uses INTER_AREA), so it is favoured.
- Every method decodes a JPEG at the same reduced scale (1/2, 1/4 or 1/8 when that still covers the
  target: images.reduction_factor; tf.data through ``decode_jpeg(ratio=N)`` with the same rule).
- OpenCV threading: "serial" keeps OpenCV's default (it may use every core inside resize, the
  strongest plain loop); "thread" sets one OpenCV thread while it runs; process workers use one each.
  tf.data uses TensorFlow's own thread pools (one thread per core or more).
- The 1-minute load average before and after is recorded: on a shared 2-core machine anything above
  about 1 means other jobs took CPU time, and parallel methods lose most (they need both cores).
  "available_cores" measures it directly: how many cores two threads of GIL-free work got just
  before and after the rounds; no parallel loader can beat that multiple of the plain loop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sprint2.loading import (AUTO_METHOD, TaskQueue, default_workers, load_dataset, opencv_threads,
                             process_pool_factory, warm_process_pool)
from sprint2.voc import discover

logger = logging.getLogger(__name__)

LOADING_METHODS = ("serial", "submit_result", "process", "thread", "tf_data")


# --------------------------------------------------------------------------------------------------
# Loading benchmark
# --------------------------------------------------------------------------------------------------


def _tf_data_loader(paths: list[Path], size: int) -> Callable[[], int]:
    """A function that loads ``paths`` with tf.data (decode + bilinear resize), returning the image count.

    JPEGs get the same reduced decode as sprint2 (``decode_jpeg(ratio=N)``, N the largest of 8, 4, 2, 1
    with floor(side / N) >= size on both sides, read from the header by ``extract_jpeg_shape``), so
    both sides skip the same work; other formats go through ``decode_image``. TensorFlow is imported
    here only, in the benchmarking process; the loading workers never see it.
    """
    import tensorflow as tf

    strings = [str(p) for p in paths]
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def decode_jpeg(data: Any) -> Any:
        shape = tf.io.extract_jpeg_shape(data)
        fits = tf.minimum(shape[0], shape[1]) // size  # N covers the target iff N <= fits
        index = tf.reduce_sum(tf.cast(tf.stack([fits >= 2, fits >= 4, fits >= 8]), tf.int32))
        return tf.switch_case(index, [functools.partial(tf.io.decode_jpeg, data, channels=3, ratio=r)
                                      for r in (1, 2, 4, 8)])

    def decode(path: Any) -> Any:
        data = tf.io.read_file(path)
        img = tf.cond(tf.io.is_jpeg(data), lambda: decode_jpeg(data),
                      lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
        img.set_shape([None, None, 3])
        return tf.cast(tf.clip_by_value(tf.image.resize(img, (size, size)), 0.0, 255.0), tf.uint8)

    def run() -> int:
        ds = (tf.data.Dataset.from_tensor_slices(strings)
              .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
              .ignore_errors()
              .batch(64)
              .prefetch(tf.data.AUTOTUNE))
        n = 0
        for batch in ds:
            b = batch.numpy()
            out[n:n + len(b)] = b
            n += len(b)
        return n

    return run


def _process_startup_s(workers: int) -> float:
    """Seconds to spawn a fresh pool of ``workers`` and get a trivial answer from each worker."""
    start = time.perf_counter()
    with TaskQueue(process_pool_factory(workers), workers=workers, max_in_flight=workers) as queue:
        queue.map(_pids, list(range(workers)), chunk_size=1)
    return time.perf_counter() - start


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its live children (the pool's workers).

    Unlike wall time this hardly changes when other jobs share the cores, so cores / CPU-per-image is
    what a method could reach on an idle machine if its work spread perfectly. Resolution: one clock
    tick (10 ms) per process, about 3 % of a 364-image load.
    """
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def available_cores(workers: int, repeats: int = 3) -> float:
    """How many cores ``workers`` threads of GIL-free OpenCV work get right now (workers when the machine is idle).

    Times one unit of work in one thread, then one unit per thread in ``workers`` threads; the ratio
    times ``workers`` is the parallelism the machine offers at this moment, the real ceiling of every
    parallel loader's speed-up on a shared machine. Best of ``repeats``; about 0.1 s each.
    """
    import threading

    import cv2

    img = np.random.default_rng(0).random((240, 320, 3), dtype=np.float32)

    def unit() -> None:
        for _ in range(8):
            cv2.GaussianBlur(img, (0, 0), 3)

    best = 0.0
    with opencv_threads(1):
        unit()
        for _ in range(repeats):
            start = time.perf_counter()
            unit()
            one = time.perf_counter() - start
            threads = [threading.Thread(target=unit) for _ in range(workers)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            best = max(best, min(float(workers), workers * one / (time.perf_counter() - start)))
    return best


def _pids(chunk: list[int]) -> list[int]:
    """Trivial task: the worker's pid per item (forces the worker to start)."""
    return [os.getpid() for _ in chunk]


def bench_loading(data_dir: Path | str, *, size: int = 128, repeats: int = 3, workers: int | None = None,
                  chunk_size: int | None = None) -> dict[str, Any]:
    """images/s of serial, submit_result, process, thread and tf_data loading, best of ``repeats``.

    "submit_result" is the original sprint's pattern: a process pool used one sample at a time,
    each submit followed at once by .result(), so it runs serially plus inter-process overhead.
    Returns cores, images, methods {name: {images_per_s, images, seconds, cpu_ms_per_image (this process
    and its pool workers; least of the repeats), opencv_threads, work}}, best, default (the method
    that load_dataset(method="auto") uses), speedup_vs_serial and vs_tf_data for that default,
    ceiling (cores x serial), startup_included (False), process_startup_s and the 1-minute load
    average before and after the run (anything near or above 1 on 2 cores means the numbers are
    contended) with available_cores (available_cores() before and after: the speed-up any parallel
    method could have had). Each method entry also says its OpenCV threading and how much work it does.
    """
    import cv2

    root = Path(data_dir)
    load_before = os.getloadavg()[0]  # other jobs on the machine distort parallel speed-ups; record it
    cv2_threads = cv2.getNumThreads()
    n_workers = workers or default_workers()
    cores_before = available_cores(n_workers)
    pool = warm_process_pool(n_workers)
    paths = [s.image_path for s in discover(root)]
    common = {"size": size, "errors": "skip", "workers": n_workers, "chunk_size": chunk_size}
    runners: dict[str, Callable[[], int]] = {
        "serial": lambda: len(load_dataset(root, method="serial", **common)),
        "submit_result": lambda: len(load_dataset(root, method=pool.executor, size=size, errors="skip",
                                                  chunk_size=1, max_in_flight=1)),
        "process": lambda: len(load_dataset(root, method="process", **common)),
        "thread": lambda: len(load_dataset(root, method="thread", **common)),
        "tf_data": _tf_data_loader(paths, size),
    }
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    counts: dict[str, int] = {}
    for round_no in range(repeats + 1):  # round 0 warms pools, file cache and tf.data's tracing
        for name, run in runners.items():
            cpu_start = _cpu_seconds()
            start = time.perf_counter()
            counts[name] = run()
            elapsed = time.perf_counter() - start
            used = _cpu_seconds() - cpu_start
            if round_no > 0:
                best[name] = min(best.get(name, float("inf")), elapsed)
                cpu[name] = min(cpu.get(name, float("inf")), used)
            logger.info("%s round %d: %d images in %.3f s (%.3f CPU s)", name, round_no, counts[name],
                        elapsed, used)
    opencv = {"serial": f"default ({cv2_threads} threads)", "submit_result": "1 per worker process",
              "process": "1 per worker process", "thread": "1 (set while loading)",
              "tf_data": "not used (TensorFlow thread pools)"}
    methods = {name: {"images_per_s": counts[name] / best[name], "images": counts[name],
                      "seconds": best[name], "cpu_ms_per_image": 1e3 * cpu[name] / max(1, counts[name]),
                      "opencv_threads": opencv[name],
                      "work": "decode + resize only" if name == "tf_data" else "full"}
               for name in runners}
    rate = {name: m["images_per_s"] for name, m in methods.items()}
    cores = default_workers()
    return {
        "load_average_1min": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "available_cores": [cores_before, available_cores(n_workers)],  # before and after the rounds
        "cores": cores,
        "images": len(paths),
        "methods": methods,
        "best": max(rate, key=rate.__getitem__),
        "default": AUTO_METHOD,
        "speedup_vs_serial": rate[AUTO_METHOD] / rate["serial"],
        "vs_tf_data": rate[AUTO_METHOD] / rate["tf_data"],
        "ceiling": cores * rate["serial"],
        "startup_included": False,
        "process_startup_s": _process_startup_s(n_workers),
    }


# --------------------------------------------------------------------------------------------------
# Training benchmark: no strategy, MirroredStrategy over N logical CPUs, GPUs; projection to 8 GPUs
# --------------------------------------------------------------------------------------------------
#
# How the training benchmark is made fair and what its numbers mean:
# - One process, one dataset, one model kind and one seed for every setting; each setting builds a
#   fresh model under its own strategy's scope (sprint2.training.train does that).
# - Round-robin: every setting is trained `rounds` times in turn and keeps its fastest round, so a
#   neighbour's burst of work on a shared machine does not decide the comparison.
# - Weak scaling: the batch is per replica, so N replicas process N x batch images per step.
# - Epoch 1 traces and compiles the step function; it is reported apart ("first_epoch_s") and the
#   steady state ("images_per_s", "epoch_s") is the mean over epochs 2..E.
# - speedup = images_per_s / images_per_s of the one-device reference of the same kind: the
#   no-strategy row for CPU rows (so MirroredStrategy rows carry the strategy's own cost), the
#   one-GPU row for GPU rows. efficiency = speedup / replicas. "vs_cpu" compares every row with the
#   no-strategy CPU row.
# - Peak memory: psutil RSS of this process sampled every 20 ms in a thread while a setting runs
#   ("peak_rss_mb"); RSS is process-wide, so earlier settings' memory is included ("start_rss_mb"
#   shows the level it started from). ru_maxrss is a lifetime high-water mark, reported once.
# - The machine may be shared: the 1-minute load average before and after is reported, and
#   "best_images_per_s" (fastest steady epoch) sits beside the mean as a less noise-prone figure.

GPU_CPU_RATIO_ORIGINAL = 12 * 60 / 47  # the original sprint: 12 min on CPU vs 47 s on GPU, 10 epochs each
LINKS_GBPS: dict[str, float] = {"PCIe 4.0 x16": 25.0, "NVLink 3": 300.0}  # assumed effective all-reduce GB/s
MATMUL_N = 2048


class _PeakRss:
    """Samples this process's resident set size in a background thread; `peak_mb` once the block ends."""

    def __init__(self, interval_s: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = None
        self.start_mb = self.peak_mb = 0.0

    def __enter__(self) -> "_PeakRss":
        import threading

        self.start_mb = self.peak_mb = self._proc.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)


def matmul_gflops(n: int = MATMUL_N, repeats: int = 10) -> float:
    """This CPU's float32 ceiling: GFLOP/s of an n x n tf.linalg.matmul (2 n^3 FLOPs), best of `repeats` after warm-up."""
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


def project_multi_gpu(step_compute_s: float, grad_bytes: float, gpus: Any = range(1, 9),
                      links: dict[str, float] | None = None, batch: int | None = None) -> list[dict[str, Any]]:
    """Weak-scaling model of N data-parallel GPUs: a ring all-reduce of the gradients after each step's compute.

    t_allreduce = 2 (N - 1) / N x grad_bytes / bandwidth; speedup = N t_compute / (t_compute + t_allreduce).
    `links` maps a name to an assumed effective bandwidth in GB/s (default LINKS_GBPS). No overlap of
    compute and communication, no latency term, no input-pipeline limit: a model, not a measurement.
    """
    rows = []
    for name, gbps in (links or LINKS_GBPS).items():
        for n in gpus:
            allreduce = 2.0 * (n - 1) / n * grad_bytes / (gbps * 1e9)
            step = step_compute_s + allreduce
            speedup = n * step_compute_s / step
            row = {"link": name, "bandwidth_gbps": gbps, "gpus": int(n), "t_compute_s": step_compute_s,
                   "t_allreduce_s": allreduce, "step_s": step, "speedup": speedup, "efficiency": speedup / n}
            if batch:
                row["images_per_s"] = n * batch / step
            rows.append(row)
    return rows


def _input_pipeline_images_per_s(images: np.ndarray, labels: np.ndarray, boxes: np.ndarray, batch: int,
                                 augment_data: bool) -> float:
    """images/s the host's tf.data pipeline (shuffle, batch, augment) delivers with no model behind it."""
    from sprint2.training import make_dataset

    rate = 0.0
    for epoch in (1, 2):  # epoch 1 warms the map function's tracing; epoch 2 is timed
        ds = make_dataset(images, labels, boxes, batch, seed=0, epoch=epoch, augment_data=augment_data)
        start = time.perf_counter()
        n = sum(int(x.shape[0]) for x, _, _ in ds)
        rate = n / (time.perf_counter() - start)
    return rate


def _settings(replicas: list[int], gpus: int) -> tuple[list[tuple[str, str, Callable[[], Any]]], list[dict]]:
    """(setting, device kind, strategy factory) in run order, and the GPU settings skipped with a reason."""
    from sprint2.distribute import get_strategy, mirrored_cpus

    settings: list[tuple[str, str, Callable[[], Any]]] = [("no strategy (CPU)", "cpu", lambda: None)]
    for n in replicas:
        settings.append((f"mirrored x{n} (logical CPU)", "cpu", lambda n=n: mirrored_cpus(n)))
    skipped = []
    if gpus >= 1:
        settings.append(("mirrored x1 (GPU)", "gpu", lambda: get_strategy("gpu", 1)[0]))
    else:
        skipped.append({"setting": "mirrored x1 (GPU)",
                        "reason": "TensorFlow sees no GPU on this machine (tf.config.list_physical_devices('GPU') "
                                  "is empty)"})
    if gpus >= 2:
        settings.append((f"mirrored x{gpus} (GPU)", "gpu", lambda: get_strategy("gpu", gpus)[0]))
    else:
        skipped.append({"setting": "mirrored x all (GPU)",
                        "reason": f"needs at least two GPUs; this machine has {gpus}"})
    return settings, skipped


def _run_row(name: str, kind: str, result: Any, batch: int, rss: _PeakRss) -> dict[str, Any]:
    """One setting's numbers from one TrainResult: steady state = epochs 2..E, first epoch apart."""
    return {"setting": name, "device": kind, "replicas": int(result.replicas),
            "images_per_s": float(result.images_per_s), "first_epoch_s": float(result.first_epoch_s),
            "epoch_s": float(np.mean(result.epoch_seconds[1:])), "speedup": 0.0, "efficiency": 0.0,
            "global_batch": batch * int(result.replicas), "epoch_seconds": [float(s) for s in result.epoch_seconds],
            "best_images_per_s": max(float(h["images_per_s"]) for h in result.history[1:]),
            "peak_rss_mb": round(rss.peak_mb, 1), "start_rss_mb": round(rss.start_mb, 1)}


def bench_training(data_dir: Path | str, *, replicas: Any = (1, 2, 4), epochs: int = 3, model: str = "improved",
                   size: int = 64, batch: int = 32, max_images: int | None = None, seed: int = 0,
                   rounds: int = 2) -> dict[str, Any]:
    """Trains the same model on the same data with no strategy, MirroredStrategy over each count of logical
    CPUs and on the GPUs there are; returns rows, skipped, strategy_overhead, cpu_ceiling and projection.

    Every setting is trained `rounds` times, round-robin, keeping its fastest round (a shared machine's
    noise only ever slows a run down). Configures max(replicas) logical CPUs first, so it must run
    before TensorFlow's runtime starts (a fresh process, as the CLI gives it); otherwise
    sprint2.distribute's StrategyError says so.
    """
    replicas = sorted({int(n) for n in replicas})
    if epochs < 2:
        raise ValueError(f"need epochs >= 2 (epoch 1 compiles; the steady state is epochs 2..E), got {epochs}")
    if rounds < 1:
        raise ValueError(f"need rounds >= 1, got {rounds}")
    if not replicas or replicas[0] < 1:
        raise ValueError(f"replicas must be positive integers, got {replicas}")
    from sprint2.distribute import configure_logical_cpus

    configure_logical_cpus(max(replicas))  # before anything else touches TensorFlow's runtime

    import contextlib
    import gc
    import resource

    import keras
    import tensorflow as tf

    from sprint2.loading import load_splits
    from sprint2.model import build_model, gradient_bytes, model_flops
    from sprint2.training import TrainConfig, make_targets, train

    train_ds, _ = load_splits(Path(data_dir), size=size, seed=seed, errors="skip", method="thread")
    if max_images is not None and max_images < len(train_ds.boxes):
        train_ds = train_ds.subset(np.arange(max_images))
    augment_data = model == "improved"  # as run_training does
    config = TrainConfig(model=model, epochs=epochs, batch_size=batch, seed=seed, augment=augment_data,
                         patience=epochs + 1, out_dir=None, resume=False)  # type: ignore[arg-type]
    gpus = len(tf.config.list_physical_devices("GPU"))
    settings, skipped = _settings(replicas, gpus)

    load_before = os.getloadavg()[0]
    ceiling = matmul_gflops()  # measured before and after the training; the better one is the ceiling
    strategies = [(name, kind, make()) for name, kind, make in settings]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in strategies}
    for round_no in range(rounds):  # round-robin: a noisy neighbour is spread over every setting
        for name, kind, strategy in strategies:
            # With a GPU present the default strategy would use it; pin the no-strategy row to the CPU.
            pin = tf.device("/CPU:0") if strategy is None and gpus else contextlib.nullcontext()
            with _PeakRss() as rss, pin:
                result = train(train_ds, None, config, strategy)
            runs[name].append(_run_row(name, kind, result, batch, rss))
            logger.info("round %d, %s: %.1f images/s, first epoch %.2f s, steady epoch %.2f s", round_no + 1, name,
                        runs[name][-1]["images_per_s"], runs[name][-1]["first_epoch_s"], runs[name][-1]["epoch_s"])
            del result
            keras.backend.clear_session()
            gc.collect()
    rows = []
    for name, attempts in runs.items():  # keep each setting's fastest round; list every round's rate
        row = max(attempts, key=lambda r: r["images_per_s"])
        row["round_images_per_s"] = [r["images_per_s"] for r in attempts]
        row["best_images_per_s"] = max(r["best_images_per_s"] for r in attempts)
        row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in attempts)
        rows.append(row)

    cpu_ref = rows[0]["images_per_s"]
    gpu_ref = next((r["images_per_s"] for r in rows if r["device"] == "gpu" and r["replicas"] == 1), None)
    for row in rows:
        ref = gpu_ref if row["device"] == "gpu" else cpu_ref
        row["baseline"] = "mirrored x1 (GPU)" if row["device"] == "gpu" else rows[0]["setting"]
        row["speedup"] = row["images_per_s"] / ref
        row["efficiency"] = row["speedup"] / row["replicas"]
        row["vs_cpu"] = row["images_per_s"] / cpu_ref

    mirrored_1 = next((r for r in rows if r["setting"] == "mirrored x1 (logical CPU)"), None)
    overhead = cpu_ref / mirrored_1["images_per_s"] - 1.0 if mirrored_1 else None
    overhead_best = rows[0]["best_images_per_s"] / mirrored_1["best_images_per_s"] - 1.0 if mirrored_1 else None

    reference = build_model(model, len(train_ds.class_names), size)  # type: ignore[arg-type]
    flops = model_flops(reference)
    grads = gradient_bytes(reference)
    train_flops = 3 * flops["forward_flops"]  # backward ~ 2x forward
    ceiling = max(ceiling, matmul_gflops())
    images, labels, boxes = make_targets(train_ds, config.target)
    cpu_ceiling = {
        "matmul_gflops": ceiling, "matmul_n": MATMUL_N,
        "forward_gflop_per_image": flops["forward_flops"] / 1e9, "train_gflop_per_image": train_flops / 1e9,
        "achieved_gflops": train_flops * cpu_ref / 1e9, "fraction_of_matmul": train_flops * cpu_ref / 1e9 / ceiling,
        "counted": "Conv and Dense multiply-adds x 2 from layer shapes; training = 3 x forward",
        "input_pipeline_images_per_s": _input_pipeline_images_per_s(images, labels, boxes, batch, augment_data),
    }

    if gpu_ref is not None:
        step_compute = batch / gpu_ref
        source = "measured: one-GPU row of this run (batch / images_per_s)"
    else:
        step_compute = batch / cpu_ref / GPU_CPU_RATIO_ORIGINAL
        source = (f"assumed: this run's CPU step time (batch / no-strategy images_per_s) divided by "
                  f"{GPU_CPU_RATIO_ORIGINAL:.2f}, the original sprint's GPU/CPU ratio (12 min vs 47 s for 10 epochs, "
                  f"two machines, the original model)")
    projection = {
        "step_compute_s": step_compute, "step_compute_source": source, "grad_bytes": grads,
        "per_replica_batch": batch, "links_gbps": dict(LINKS_GBPS),
        "assumptions": ["weak scaling: per-replica batch fixed", "ring all-reduce, 2(N-1)/N x bytes / bandwidth",
                        "bandwidths are nominal effective figures, not measured here",
                        "no compute/communication overlap, no per-message latency",
                        "the host's input pipeline and CPU-side step overhead are not modelled"],
        "rows": project_multi_gpu(step_compute, grads, links=LINKS_GBPS, batch=batch),
        "measured": [{"gpus": r["replicas"], "speedup": r["speedup"], "images_per_s": r["images_per_s"]}
                     for r in rows if r["device"] == "gpu"],
    }
    return {
        "rows": rows, "skipped": skipped, "strategy_overhead": overhead, "strategy_overhead_best_epoch": overhead_best,
        "cpu_ceiling": cpu_ceiling, "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "projection": projection, "gpus": gpus, "cores": os.cpu_count(), "images": int(len(images)),
        "model": model, "size": size, "batch_per_replica": batch, "epochs": epochs, "seed": seed, "rounds": rounds,
        "parameters": int(reference.count_params()),
        "speedup_definition": "images_per_s / images_per_s of the no-strategy CPU row (GPU rows: of the one-GPU row); "
                              "efficiency = speedup / replicas",
        "memory": "peak_rss_mb: psutil RSS of the whole process sampled every 20 ms during the setting",
        "max_rss_mb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def plot_projection(projection: dict[str, Any], feed_images_per_s: float | None = None) -> Any:
    """Projected speedup vs GPU count per interconnect, the ideal line, any measured GPU points and,
    given the host input pipeline's images/s, the speedup at which the host can no longer feed the GPUs.

    Lives here because sprint2.viz has no line chart for it.
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 4), layout="constrained")
    plt.close(fig)  # rendered once when returned in a notebook, like sprint2.viz's figures
    ax = fig.subplots()
    rows = projection["rows"]
    gpus = sorted({r["gpus"] for r in rows})
    ax.plot(gpus, gpus, color="grey", linestyle=":", label="ideal (N x)")
    for link in dict.fromkeys(r["link"] for r in rows):
        mine = [r for r in rows if r["link"] == link]
        ax.plot([r["gpus"] for r in mine], [r["speedup"] for r in mine], marker="o", markersize=4,
                label=f"{link} ({mine[0]['bandwidth_gbps']:g} GB/s, model)")
    measured = projection.get("measured") or []
    if measured:
        ax.scatter([m["gpus"] for m in measured], [m["speedup"] for m in measured], color="black", zorder=3,
                   marker="*", s=120, label="measured on this machine")
    one = next((r for r in rows if r["gpus"] == 1 and "images_per_s" in r), None)
    if feed_images_per_s and one:
        ax.axhline(feed_images_per_s / one["images_per_s"], color="tab:red", linestyle="--",
                   label=f"host input pipeline limit ({feed_images_per_s:.0f} images/s, measured)")
    ax.set(xlabel="GPUs (per-replica batch fixed)", ylabel="speedup over one GPU",
           title="projected data-parallel speedup")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
