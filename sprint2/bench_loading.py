"""The loading benchmark: images/s of each way to load a VOC dataset, timed side by side in one run.

How it is kept fair:
- Every method runs in the same process after one untimed warm-up pass. In each of ``rounds`` rounds
  every method in turn (forward in even rounds, backward in odd ones) repeats whole passes over the
  data until at least ``min_seconds`` have passed; a round's rate is its images over its seconds, so
  a small dataset is timed as long as a large one. ``images_per_s`` is the median over rounds,
  ``spread`` = (max - min) / median of the round rates, and every ratio is one of medians. Taking
  turns puts every method through the same spells of a shared machine's load.
- Pool start-up is left out of every method (a warm process pool, threads, tf.data traced in the
  warm-up pass); spawning the process pool is timed on its own as ``process_startup_s``.
- The sprint2 methods do the full work (discover, parse XML, decode, check boxes against the image,
  resize, transform boxes, copy into the result); tf.data only decodes and resizes, so it is favoured.
- Every method decodes a JPEG at the same reduced scale (images.reduction_factor's rule).
- OpenCV threading is stated per method: the plain loop keeps OpenCV's default (the strongest plain
  loop), threads and process workers use one OpenCV thread each, tf.data uses TensorFlow's pools.
- The machine may be shared: the 1-minute load average and ``available_cores`` are recorded before
  and after the rounds; no parallel method can beat available_cores times the plain loop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sprint2.loading import AUTO_METHOD, load_dataset
from sprint2.taskqueue import (
    TaskQueue,
    default_workers,
    opencv_threads,
    process_pool_factory,
    warm_process_pool,
)
from sprint2.timing import round_order, spread
from sprint2.voc import discover

logger = logging.getLogger(__name__)

LOADING_METHODS = ("serial", "submit_result", "process", "thread", "tf_data")
DEFAULT_MIN_SECONDS = 2.0
DEFAULT_ROUNDS = 5

_OPENCV_THREADS = {
    "submit_result": "1 per worker process",
    "process": "1 per worker process",
    "thread": "1 (set while loading)",
    "tf_data": "not used (TensorFlow thread pools)",
}


def _tf_data_loader(paths: list[Path], size: int) -> Callable[[], int]:
    """A function that loads ``paths`` with tf.data (decode + bilinear resize) and returns the image count.

    JPEGs get sprint2's reduced decode (``decode_jpeg(ratio=N)``, N the largest of 8, 4, 2, 1 with
    floor(side / N) >= size on both sides, read from the header); other formats use ``decode_image``.
    TensorFlow is imported here only, in the benchmarking process; loading workers never see it.
    """
    import tensorflow as tf

    strings = [str(p) for p in paths]
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def decode_jpeg(data: Any) -> Any:
        shape = tf.io.extract_jpeg_shape(data)
        fits = tf.minimum(shape[0], shape[1]) // size  # N covers the target iff N <= fits
        index = tf.reduce_sum(tf.cast(tf.stack([fits >= 2, fits >= 4, fits >= 8]), tf.int32))
        branches = [functools.partial(tf.io.decode_jpeg, data, channels=3, ratio=r) for r in (1, 2, 4, 8)]
        return tf.switch_case(index, branches)

    def decode(path: Any) -> Any:
        data = tf.io.read_file(path)
        img = tf.cond(
            tf.io.is_jpeg(data),
            lambda: decode_jpeg(data),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        )
        img.set_shape([None, None, 3])
        return tf.cast(tf.clip_by_value(tf.image.resize(img, (size, size)), 0.0, 255.0), tf.uint8)

    def run() -> int:
        ds = (
            tf.data.Dataset.from_tensor_slices(strings)
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
            .ignore_errors()
            .batch(64)
            .prefetch(tf.data.AUTOTUNE)
        )
        n = 0
        for batch in ds:
            b = batch.numpy()
            out[n : n + len(b)] = b
            n += len(b)
        return n

    return run


def available_cores(workers: int, repeats: int = 3) -> float:
    """How many cores ``workers`` threads of GIL-free OpenCV work get right now (``workers`` when idle).

    One unit of work is timed in one thread, then one unit per thread in ``workers`` threads; the ratio
    times ``workers`` is the parallelism the machine offers at this moment, the ceiling of any parallel
    loader's speed-up. Best of ``repeats``, about 0.1 s each.
    """
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
    """Trivial task: the worker's pid per item (makes every worker start)."""
    return [os.getpid() for _ in chunk]


def _process_startup_s(workers: int) -> float:
    """Seconds to spawn a fresh pool of ``workers`` and get a trivial answer from each worker."""
    start = time.perf_counter()
    with TaskQueue(process_pool_factory(workers), workers=workers, max_in_flight=workers) as queue:
        queue.map(_pids, list(range(workers)), chunk_size=1)
    return time.perf_counter() - start


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its live children (the pool's workers).

    Unlike wall time this hardly changes when other jobs share the cores. Resolution: one clock tick
    (10 ms) per process.
    """
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def _measure(run: Callable[[], int], min_seconds: float) -> dict[str, float]:
    """One round of one method: whole passes until at least min_seconds of wall time have passed."""
    images = passes = 0
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    while passes == 0 or time.perf_counter() - start < min_seconds:
        images += run()
        passes += 1
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    return {
        "images_per_s": images / seconds,
        "seconds": seconds,
        "passes": passes,
        "images": images,
        "cpu_s": cpu,
    }


def _interleaved(
    runners: dict[str, Callable[[], int]], rounds: int, min_seconds: float
) -> tuple[dict[str, list[dict[str, float]]], dict[str, int]]:
    """Every runner's rounds (see the module docstring) and its images per pass.

    One untimed pass per runner first: it warms pools, the file cache and tf.data's tracing.
    """
    names = list(runners)
    counts = {name: runners[name]() for name in names}
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tqdm(
        total=rounds * len(names), desc="bench loading", unit="run", disable=None, file=sys.stderr
    ) as bar:
        for round_no in range(rounds):
            for i in round_order(len(names), round_no):
                name = names[i]
                got = _measure(runners[name], min_seconds)
                measured[name].append(got)
                logger.info(
                    "round %d, %s: %d images in %d passes, %.3f s (%.3f CPU s)",
                    round_no + 1,
                    name,
                    got["images"],
                    got["passes"],
                    got["seconds"],
                    got["cpu_s"],
                )
                bar.set_postfix_str(
                    f"round {round_no + 1}/{rounds} {name} {got['images_per_s']:.0f} images/s"
                )
                bar.update()
    return measured, counts


def _method_entry(rounds: list[dict[str, float]], images: int, opencv: str, work: str) -> dict[str, Any]:
    """One method's figures over its rounds: median rate, spread, the rounds themselves, CPU per image."""
    rates = [r["images_per_s"] for r in rounds]
    return {
        "images_per_s": float(np.median(rates)),
        "spread": spread(rates),
        "round_images_per_s": rates,
        "round_seconds": [r["seconds"] for r in rounds],
        "round_passes": [int(r["passes"]) for r in rounds],
        "images": images,
        "seconds_per_pass": float(np.median([r["seconds"] / r["passes"] for r in rounds])),
        "cpu_ms_per_image": float(np.median([1e3 * r["cpu_s"] / max(1, r["images"]) for r in rounds])),
        "opencv_threads": opencv,
        "work": work,
    }


def bench_loading(
    data_dir: Path | str,
    *,
    size: int = 128,
    rounds: int = DEFAULT_ROUNDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    workers: int | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """images/s of serial, submit_result, process, thread and tf_data loading, interleaved over rounds.

    "submit_result" is the original sprint's pattern: a process pool fed one sample at a time, each
    submit followed at once by .result(), so it runs serially plus inter-process overhead.
    Returns ``methods`` ({name: images_per_s (median over rounds), spread, round_images_per_s,
    round_seconds, round_passes, images (per pass), seconds_per_pass, cpu_ms_per_image (this process
    and its pool workers, median over rounds), opencv_threads, work}), ``best``, ``default`` (the method
    ``load_dataset(method="auto")`` uses) with its ``speedup_vs_serial`` and ``vs_tf_data``, ``ceiling``
    (cores x serial), ``process_startup_s``, and the load average and available cores before and after.
    """
    if rounds < 1:
        raise ValueError(f"need rounds >= 1, got {rounds}")
    if not min_seconds > 0:
        raise ValueError(f"need min_seconds > 0 (loading seconds per method and round), got {min_seconds}")
    import cv2

    root = Path(data_dir)
    load_before = os.getloadavg()[0]
    cv2_threads = cv2.getNumThreads()
    n_workers = workers or default_workers()
    cores_before = available_cores(n_workers)
    pool = warm_process_pool(n_workers)
    paths = [s.image_path for s in discover(root)]
    common = {"size": size, "errors": "skip", "workers": n_workers, "chunk_size": chunk_size}
    runners: dict[str, Callable[[], int]] = {
        "serial": lambda: len(load_dataset(root, method="serial", **common)),
        "submit_result": lambda: len(
            load_dataset(root, method=pool.executor, size=size, errors="skip", chunk_size=1, max_in_flight=1)
        ),
        "process": lambda: len(load_dataset(root, method="process", **common)),
        "thread": lambda: len(load_dataset(root, method="thread", **common)),
        "tf_data": _tf_data_loader(paths, size),
    }
    measured, counts = _interleaved(runners, rounds, min_seconds)
    opencv = {"serial": f"default ({cv2_threads} threads)", **_OPENCV_THREADS}
    methods = {
        name: _method_entry(
            measured[name],
            counts[name],
            opencv[name],
            "decode + resize only" if name == "tf_data" else "full",
        )
        for name in runners
    }
    rate = {name: m["images_per_s"] for name, m in methods.items()}
    cores = default_workers()
    return {
        "load_average_1min": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "available_cores": [cores_before, available_cores(n_workers)],
        "cores": cores,
        "workers": n_workers,
        "images": len(paths),
        "rounds": rounds,
        "min_seconds": float(min_seconds),
        "methods": methods,
        "best": max(rate, key=rate.__getitem__),
        "default": AUTO_METHOD,
        "speedup_vs_serial": rate[AUTO_METHOD] / rate["serial"],
        "vs_tf_data": rate[AUTO_METHOD] / rate["tf_data"],
        "ceiling": cores * rate["serial"],
        "ratios_from": "medians over rounds",
        "spread_definition": "(max - min) / median of a method's round rates",
        "startup_included": False,
        "process_startup_s": _process_startup_s(n_workers),
    }
