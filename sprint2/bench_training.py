"""The training benchmark: each model with no strategy, under MirroredStrategy on N logical CPUs and on GPUs.

Every model named (by default the single-box "improved" model, the kind the original sprint timed,
and the "detector" that `sprint2 train` trains) runs under every setting on the same data, in one
process. Beside the timings it measures the CPU's matmul peak, each model's FLOPs per image and
achieved FLOP/s, and projects data-parallel training to 8 GPUs. How it is kept fair and what its
numbers mean:
- A setting is one model under one strategy: a fresh model built under that strategy's scope, with
  the optimizer and the compiled `strategy.run` step of `sprint2.training` (the loop `sprint2 train`
  runs) and the model's own tf.data pipeline (augmentation, detector targets).
- Its first epoch traces and compiles the step: reported apart (``first_epoch_s``).
- Rounds: every setting is built once; in each of ``rounds`` rounds every setting in turn (forward in
  even rounds, backward in odd ones: `round_order`) streams its training data as repeated epochs,
  takes WARMUP_STEPS untimed steps, then times steps until at least ``min_seconds`` have passed. A
  round's rate is its images over those seconds; ``images_per_s`` is the median over rounds and
  ``spread`` = (max - min) / median of the round rates. Taking turns puts every setting through the
  same spells of a shared machine's load. On a terminal a tqdm bar on stderr counts builds and rounds.
- ``epoch_start_s``: the time from a new (distributed) iterator to its first batch, which every epoch
  pays once; ``epoch_s`` = that + steps per epoch x the steady step time.
- Weak scaling: the batch is per replica, so N replicas process N x batch images per step.
- speedup = images_per_s / that of the one-device reference of the same model and kind: the
  no-strategy row for CPU rows (so MirroredStrategy rows carry the strategy's own cost), the one-GPU
  row for GPU rows; efficiency = speedup / replicas; ``vs_cpu`` compares a row with the no-strategy
  CPU row of its model.
- strategy_overhead: the median over rounds of (no-strategy rate / mirrored x1 rate - 1) within each
  round, where the two ran back to back; a spell of other work that slows one round moves both
  rates of that round, not their ratio. ``strategy_overhead_of_medians`` compares the medians.
- FLOPs: Conv and Dense multiply-adds x 2 from layer shapes (`sprint2.model.model_flops`), training
  = 3 x forward; achieved GFLOP/s = that x images/s, against the matmul peak of the dtype the model
  computes in (bfloat16 under mixed_bfloat16, else float32).
- Peak memory is this process's RSS sampled every 20 ms while a setting builds and trains; RSS is
  process-wide and every setting stays alive until the end, so ``start_rss_mb`` shows the level a
  setting started from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sprint2.timing import round_order, spread

logger = logging.getLogger(__name__)

GPU_CPU_RATIO_ORIGINAL = 12 * 60 / 47  # the original sprint: 12 min on CPU vs 47 s on GPU, 10 epochs each
LINKS_GBPS: dict[str, float] = {"PCIe 4.0 x16": 25.0, "NVLink 3": 300.0}  # assumed effective all-reduce GB/s
MATMUL_N = 2048
#: The single-box model first: it is the kind the original sprint timed; the detector is what users train.
DEFAULT_MODELS: tuple[str, ...] = ("improved", "detector")
MODELS: tuple[str, ...] = ("detector", "improved", "original")
DEFAULT_MIN_SECONDS = 3.0
DEFAULT_ROUNDS = 5
WARMUP_STEPS = 1  # untimed steps of each round after its first batch
_SPEEDUP_DEFINITION = (
    "images_per_s / images_per_s of the same model's no-strategy CPU row (GPU rows: of its one-GPU row); "
    "efficiency = speedup / replicas"
)
_MIXED_DTYPES = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}

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


def matmul_gflops(n: int = MATMUL_N, repeats: int = 10, dtype: str = "float32") -> float:
    """The CPU ceiling: GFLOP/s of an n x n tf.linalg.matmul (2 n^3 FLOPs) in `dtype`, best of ``repeats``."""
    import tensorflow as tf

    with tf.device("/CPU:0"):
        a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
        b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)), dtype)
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


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model: its kind, network input (height, width), batch per replica and precision."""

    name: str
    input_hw: tuple[int, int]
    batch: int
    precision: str = "float32"  # what its CPU settings ask for; GPU settings ask for "auto"

    @property
    def load_size(self) -> int | tuple[int, int]:
        """The loader's size: a side for a square input, else (height, width)."""
        h, w = self.input_hw
        return h if h == w else (h, w)


def model_specs(
    data_dir: Path | str,
    models: Sequence[str],
    *,
    size: int,
    batch: int,
    detector_size: int | Sequence[int] | None,
    detector_batch: int | None,
    precision: str,
    seed: int,
) -> list[ModelSpec]:
    """What each model trains on: the single-box models at size x size and `batch`; the detector at
    `detector_size` and `detector_batch`, each taken from its schedule for this data when None (what
    `sprint2 train` would use on one device). Light: reads annotations, not images."""
    specs = []
    for name in models:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        if name != "detector":
            specs.append(ModelSpec(name, (int(size), int(size)), int(batch)))
            continue
        from sprint2.tasks import resolve_precision  # "auto" as on a machine without GPUs

        hw, per_replica, policy = (0, 0), 0, resolve_precision(precision, "detector", gpu=False)
        if detector_size is None or detector_batch is None:
            hw, per_replica = _detector_defaults(data_dir, seed, policy)
        if detector_size is not None:
            hw = _pair(detector_size)
        if hw[0] % 32 or hw[1] % 32 or min(hw) <= 0:
            raise ValueError(f"the detector's input must be positive multiples of 32, got {hw}")
        specs.append(ModelSpec(name, hw, int(detector_batch or per_replica), policy))
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"each model once, got {list(models)}")
    return specs


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    h, w = (int(v) for v in value)
    return h, w


def _detector_defaults(data_dir: Path | str, seed: int, precision: str) -> tuple[tuple[int, int], int]:
    """The detector schedule's (input_hw, batch per replica) for one replica on this data, under the
    default budget at the planning rate of `precision` (a resolved policy name)."""
    from sprint2.schedule import DataStats, detector_schedule
    from sprint2.splits import train_samples

    stats = DataStats.from_samples(train_samples(Path(data_dir), seed))
    schedule = detector_schedule(stats, replicas=1, precision=precision)
    return schedule.input_hw, schedule.batch_size


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


class _Unit:
    """One model under one strategy: built and traced once, then timed for a few seconds per round."""

    def __init__(self, spec: ModelSpec, setting: str, kind: str, strategy: Any, pin: bool) -> None:
        self.spec, self.setting, self.kind, self.strategy = spec, setting, kind, strategy
        # With a GPU present the default strategy would use it; the no-strategy row stays on the CPU.
        self._pin = pin
        self.run: Any = None
        self.epoch = 0
        self.first_epoch_s = 0.0
        self.rounds: list[dict[str, Any]] = []
        self.start_rss_mb = self.peak_rss_mb = 0.0

    def _device(self) -> Any:
        import tensorflow as tf

        return tf.device("/CPU:0") if self._pin else contextlib.nullcontext()

    def build(self, train_ds: Any, seed: int) -> None:
        """Builds the model under the strategy's scope and trains the first (tracing) epoch."""
        import tensorflow as tf

        from sprint2.distribute import StrategyInfo
        from sprint2.recipes import RECIPES, TrainConfig, choose_recipe
        from sprint2.tasks import make_task
        from sprint2.training import TrainingRun

        spec = self.spec
        strategy = self.strategy if self.strategy is not None else tf.distribute.get_strategy()
        recipe = RECIPES[choose_recipe(len(train_ds), spec.name)]
        config = TrainConfig(
            model=spec.name,  # type: ignore[arg-type]
            epochs=1_000_000,  # the benchmark decides when to stop; this only sizes the LR schedule
            batch_size=spec.batch,
            seed=seed,
            augment=spec.name in ("improved", "detector"),  # as run_training does
            augmentation=recipe.augmentation,
            precision=spec.precision if self.kind == "cpu" else "auto",
            out_dir=None,
            resume=False,
        )
        replicas = int(strategy.num_replicas_in_sync)
        info = StrategyInfo(kind="bench", replicas=replicas, reason=self.setting)
        with _PeakRss() as rss, self._device():
            task = make_task(config, train_ds.class_names)
            self.run = TrainingRun(config, strategy, info, task, task.prepare(train_ds, None, replicas))
            self.epoch = self.run.restore()
            self.first_epoch_s = float(self._epoch()["seconds"])
        self.start_rss_mb, self.peak_rss_mb = rss.start_mb, rss.peak_mb

    def _epoch(self) -> dict[str, Any]:
        values = self.run.one_epoch(self.epoch)
        self.epoch += 1
        return values

    def _step(self, batch: Any) -> float:
        """One training step as the loop runs it (its summed statistics read back); the images it saw."""
        out = self.run.loop.train_step(batch)
        return {k: float(v) for k, v in out.items()}["count"]

    def measure(self, min_seconds: float, warmup_steps: int = WARMUP_STEPS) -> dict[str, Any]:
        """One round: the training data repeated as one stream of epochs; the time to its first batch
        (what every epoch pays to start its input), warmup_steps untimed steps, then steps timed until
        at least min_seconds have passed. Returns the round's images/s, steps, seconds and start_s."""
        run = self.run
        with _PeakRss() as rss, self._device():
            stream = run.task.dataset(run.data, self.epoch, False).repeat()
            self.epoch += 1
            dist = run.strategy.experimental_distribute_dataset(stream)
            start = time.perf_counter()
            batches = iter(dist)
            batch = next(batches)
            start_s = time.perf_counter() - start
            self._step(batch)
            for _ in range(warmup_steps - 1):
                self._step(next(batches))
            images, steps = 0.0, 0
            start = time.perf_counter()
            while steps == 0 or time.perf_counter() - start < min_seconds:
                images += self._step(next(batches))
                steps += 1
            seconds = time.perf_counter() - start
            del batches
        self.peak_rss_mb = max(self.peak_rss_mb, rss.peak_mb)
        result = {"images_per_s": images / seconds, "seconds": seconds, "steps": steps, "start_s": start_s}
        self.rounds.append(result)
        return result

    def row(self) -> dict[str, Any]:
        """The setting's numbers over its rounds (module docstring)."""
        rates = [r["images_per_s"] for r in self.rounds]
        data = self.run.data
        step_s = float(np.median([r["seconds"] / r["steps"] for r in self.rounds]))
        start_s = float(np.median([r["start_s"] for r in self.rounds]))
        return {
            "model": self.spec.name,
            "setting": self.setting,
            "device": self.kind,
            "replicas": int(self.run.strategy.num_replicas_in_sync),
            "precision": self.run.task.policy,
            "input_hw": list(self.spec.input_hw),
            "images_per_s": float(np.median(rates)),
            "spread": spread(rates),
            "round_images_per_s": rates,
            "round_seconds": [r["seconds"] for r in self.rounds],
            "round_steps": [r["steps"] for r in self.rounds],
            "first_epoch_s": self.first_epoch_s,
            "step_s": step_s,
            "epoch_start_s": start_s,
            "epoch_s": start_s + step_s * int(data.steps),
            "steps_per_epoch": int(data.steps),
            "speedup": 0.0,
            "efficiency": 0.0,
            "global_batch": int(data.global_batch),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "start_rss_mb": round(self.start_rss_mb, 1),
        }


def _train_round(units: list[_Unit], round_no: int, min_seconds: float, bar: tqdm) -> None:
    """One round: every setting in turn (in round_order) trains at least min_seconds."""
    for i in round_order(len(units), round_no):
        unit = units[i]
        got = unit.measure(min_seconds)
        logger.info(
            "round %d, %s, %s: %.1f images/s over %d steps (%.1f s)",
            round_no + 1,
            unit.spec.name,
            unit.setting,
            got["images_per_s"],
            got["steps"],
            got["seconds"],
        )
        bar.set_postfix_str(
            f"round {round_no + 1}, {unit.spec.name} {unit.setting}: {got['images_per_s']:.0f}/s"
        )
        bar.update()


def _with_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One model's rows with speedup, efficiency and vs_cpu filled in (the no-strategy row first)."""
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


def _input_pipeline_images_per_s(unit: _Unit) -> float:
    """images/s the host's tf.data pipeline of the model (shuffle, batch, augment, targets) delivers alone."""
    run = unit.run
    rate = 0.0
    with unit._device():
        for epoch in (1, 2):  # epoch 1 warms the map function's tracing; epoch 2 is timed
            ds = run.task.dataset(run.data, epoch, False)
            start = time.perf_counter()
            n = sum(int(batch[0].shape[0]) for batch in ds)
            rate = n / (time.perf_counter() - start)
    return rate


def _peak_dtype(policy: str) -> str:
    return _MIXED_DTYPES.get(policy, "float32")


def _flop_rates(rows: list[dict[str, Any]], train_flops: float, peaks: dict[str, float]) -> None:
    """Adds achieved GFLOP/s to every row and, on CPU rows, its fraction of the matmul peak of its dtype."""
    for row in rows:
        row["achieved_gflops"] = train_flops * row["images_per_s"] / 1e9
        dtype = _peak_dtype(row["precision"])
        on_cpu = row["device"] == "cpu" and dtype in peaks
        row["fraction_of_peak"] = row["achieved_gflops"] / peaks[dtype] if on_cpu else None


def _model_summary(
    spec: ModelSpec, units: list[_Unit], rows: list[dict[str, Any]], peaks: dict[str, float], images: int
) -> dict[str, Any]:
    """Per model: FLOPs, achieved FLOP/s against the peak, the strategy's overhead, the projection."""
    from sprint2.model import gradient_bytes, model_flops

    reference = units[0].run.model  # the no-strategy setting's model
    flops = model_flops(reference)
    grads = gradient_bytes(reference)
    train_flops = 3 * flops["forward_flops"]  # backward ~ 2x forward
    _flop_rates(rows, train_flops, peaks)
    base = rows[0]
    mirrored_1 = next((r for r in rows if r["setting"] == "mirrored x1 (logical CPU)"), None)
    overhead = paired = of_medians = None
    if mirrored_1 is not None:
        pairs = zip(base["round_images_per_s"], mirrored_1["round_images_per_s"])
        paired = [a / b - 1.0 for a, b in pairs]
        overhead = float(np.median(paired))
        of_medians = base["images_per_s"] / mirrored_1["images_per_s"] - 1.0
    dtype = _peak_dtype(base["precision"])
    return {
        "model": spec.name,
        "input_hw": list(spec.input_hw),
        "batch_per_replica": spec.batch,
        "precision": base["precision"],
        "parameters": int(reference.count_params()),
        "images": images,
        "strategy_overhead": overhead,
        "strategy_overhead_rounds": paired,
        "strategy_overhead_of_medians": of_medians,
        "cpu_ceiling": {
            "peak_dtype": dtype,
            "matmul_gflops": peaks[dtype],
            "matmul_n": MATMUL_N,
            "forward_gflop_per_image": flops["forward_flops"] / 1e9,
            "train_gflop_per_image": train_flops / 1e9,
            "achieved_gflops": base["achieved_gflops"],
            "fraction_of_matmul": base["fraction_of_peak"],
            "counted": "Conv and Dense multiply-adds x 2 from layer shapes; training = 3 x forward",
            "input_pipeline_images_per_s": _input_pipeline_images_per_s(units[0]),
        },
        "projection": _projection(rows, spec.batch, grads),
    }


def _load(data_dir: Path, specs: list[ModelSpec], seed: int, max_images: int | None) -> dict[tuple, Any]:
    """The training split once per input size the models need, the first max_images of it when given."""
    from sprint2.loading import load_splits

    loaded: dict[tuple, Any] = {}
    for spec in specs:
        if spec.input_hw in loaded:
            continue
        train_ds, _ = load_splits(data_dir, size=spec.load_size, seed=seed, errors="skip", method="thread")
        if max_images is not None and max_images < len(train_ds):
            train_ds = train_ds.subset(np.arange(max_images))
        loaded[spec.input_hw] = train_ds
    return loaded


def _check_arguments(models: Sequence[str], replicas: list[int], min_seconds: float, rounds: int) -> None:
    """ValueError naming the first argument bench_training cannot run with."""
    if not min_seconds > 0:
        raise ValueError(
            f"need min_seconds > 0 (steady-state seconds per setting and round), got {min_seconds}"
        )
    if rounds < 1:
        raise ValueError(f"need rounds >= 1, got {rounds}")
    if not replicas or replicas[0] < 1:
        raise ValueError(f"replicas must be positive integers, got {replicas}")
    if not models:
        raise ValueError("need at least one model")


def _time_units(
    specs: Sequence[ModelSpec],
    settings: list[_Setting],
    loaded: dict[tuple, Any],
    gpus: int,
    rounds: int,
    min_seconds: float,
    seed: int,
) -> list[_Unit]:
    """Builds one unit per model and setting (its first, tracing epoch), then times them in rounds."""
    units: list[_Unit] = []
    total = len(specs) * len(settings) * (1 + rounds)  # one build (the tracing epoch) and each round
    with tqdm(total=total, desc="bench training", unit="run", disable=None, file=sys.stderr) as bar:
        for spec in specs:
            for name, kind, make in settings:
                bar.set_postfix_str(f"building {spec.name} {name}")
                unit = _Unit(spec, name, kind, make(), pin=kind == "cpu" and bool(gpus))
                unit.build(loaded[spec.input_hw], seed)
                logger.info("%s, %s: first epoch %.2f s", spec.name, name, unit.first_epoch_s)
                units.append(unit)
                bar.update()
        for round_no in range(rounds):
            _train_round(units, round_no, min_seconds, bar)
    return units


def bench_training(
    data_dir: Path | str,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    replicas: Any = (1, 2, 4),
    min_seconds: float = DEFAULT_MIN_SECONDS,
    rounds: int = DEFAULT_ROUNDS,
    size: int = 64,
    batch: int = 32,
    detector_size: int | Sequence[int] | None = None,
    detector_batch: int | None = None,
    precision: str = "auto",
    max_images: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Trains each model on one dataset with no strategy, on each count of logical CPUs and on the GPUs.

    size and batch (per replica) are the single-box models'; detector_size and detector_batch the
    detector's (None: its schedule's for this data); precision is the detector's on CPU settings
    ("auto": mixed_bfloat16 where the CPU has bf16). Returns rows (one per model and setting),
    models (per-model FLOPs, ceiling, overhead and projection), matmul_gflops, skipped and the run's
    conditions; see the module docstring for how each is measured. Configures max(replicas) logical
    CPUs first, so it must run before TensorFlow's runtime starts (a fresh process, as the CLI gives
    it); otherwise sprint2.distribute's StrategyError says so.
    """
    replicas = sorted({int(n) for n in replicas})
    _check_arguments(models, replicas, min_seconds, rounds)
    data_dir = Path(data_dir)
    specs = model_specs(
        data_dir,
        list(models),
        size=size,
        batch=batch,
        detector_size=detector_size,
        detector_batch=detector_batch,
        precision=precision,
        seed=seed,
    )
    from sprint2.distribute import configure_logical_cpus
    from sprint2.malloc import keep_freed_memory

    configure_logical_cpus(max(replicas))  # before anything else touches TensorFlow's runtime
    keep_freed_memory()  # as training does (sprint2.malloc)

    import tensorflow as tf

    loaded = _load(data_dir, specs, seed, max_images)
    gpus = len(tf.config.list_physical_devices("GPU"))
    settings, skipped = _settings(replicas, gpus)
    load_before = os.getloadavg()[0]
    dtypes = sorted({"float32"} | {_peak_dtype(s.precision) for s in specs} - {"float16"})
    peaks = {d: matmul_gflops(dtype=d) for d in dtypes}  # again after the timing; the better one counts

    units = _time_units(specs, settings, loaded, gpus, rounds, min_seconds, seed)
    peaks = {d: max(v, matmul_gflops(dtype=d)) for d, v in peaks.items()}

    rows: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    for spec in specs:
        mine = [u for u in units if u.spec is spec]
        model_rows = _with_speedups([u.row() for u in mine])
        summaries[spec.name] = _model_summary(spec, mine, model_rows, peaks, len(loaded[spec.input_hw]))
        rows.extend(model_rows)
    return {
        "rows": rows,
        "models": summaries,
        "matmul_gflops": peaks,
        "skipped": skipped,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "gpus": gpus,
        "cores": os.cpu_count(),
        "min_seconds": float(min_seconds),
        "rounds": rounds,
        "seed": seed,
        "speedup_definition": _SPEEDUP_DEFINITION,
        "spread_definition": "(max - min) / median of a setting's round rates",
        "memory": "peak_rss_mb: psutil RSS of the whole process sampled every 20 ms during the setting",
        "max_rss_mb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
