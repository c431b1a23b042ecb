"""`sprint2 bench detector`: what the detector's defaults give on real data, per dataset, budget and seed.

Each run is `sprint2 train DATA --budget B --seed S` in a fresh process, exactly what a user types,
so no state leaks between runs and each starts TensorFlow as the CLI does. Its metrics.json and
history.csv give the test mAP@0.5 and mAP@[.5:.95] with per-class AP, the validation mAP against
training seconds (time to quality), images/s, the epochs run and why the run ended; runs of one
dataset and budget are summed up over the seeds as mean, standard deviation and range.
Runs share the machine with nothing else only if the caller sees to it: a budget cuts epochs when
the cores are shared. Light: no TensorFlow in this process.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_BUDGETS: tuple[float, ...] = (900.0,)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1)


@dataclass(frozen=True)
class DetectorRun:
    """One default training run: its test scores, its validation curve and how it went."""

    data: str
    budget_s: float
    seed: int
    map50: float
    map50_95: float
    ap50: dict[str, float]
    val_curve: list[tuple[float, float]]  # (training seconds so far, validation mAP@0.5) per epoch
    images_per_s: float
    epochs: int
    planned_epochs: int
    ended_by: str
    epoch_choice: str
    input_hw: tuple[int, int]
    train_seconds: float
    wall_seconds: float
    out_dir: str

    @classmethod
    def from_run_dir(cls, data: str, budget_s: float, seed: int, out: Path, wall_s: float) -> DetectorRun:
        """Reads a finished run's metrics.json and history.csv."""
        metrics = json.loads((out / "metrics.json").read_text())
        curve, total = [], 0.0
        with (out / "history.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                total += float(row["seconds"])
                if row.get("val_map50"):
                    curve.append((round(total, 2), float(row["val_map50"])))
        test = metrics["test"]
        return cls(
            data=data,
            budget_s=budget_s,
            seed=seed,
            map50=float(test["map50"] or 0.0),
            map50_95=float(test["map50_95"] or 0.0),
            ap50={k: float(v or 0.0) for k, v in test["ap50"].items()},
            val_curve=curve,
            images_per_s=float(metrics["images_per_s"]),
            epochs=int(metrics["epochs"]),
            planned_epochs=int(metrics["planned_epochs"]),
            ended_by=str(metrics.get("ended_by", "")),
            epoch_choice=str(metrics.get("epoch_choice", "")),
            input_hw=tuple(metrics["input_hw"]),  # type: ignore[arg-type]
            train_seconds=float(metrics["train_seconds"]),
            wall_seconds=wall_s,
            out_dir=str(out),
        )

    def seconds_to(self, share: float) -> float | None:
        """Training seconds until validation mAP@0.5 first reached `share` of its best value."""
        if not self.val_curve:
            return None
        best = max(v for _, v in self.val_curve)
        return next(s for s, v in self.val_curve if v >= share * best)


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation and range of one figure over seeds."""

    mean: float
    std: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        arr = np.asarray(values, np.float64)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        return cls(float(arr.mean()), std, float(arr.min()), float(arr.max()))

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f}" if self.std else f"{self.mean:.3f}"


@dataclass(frozen=True)
class DetectorSummary:
    """The runs of one dataset and budget, over seeds."""

    data: str
    budget_s: float
    seeds: list[int]
    map50: Spread
    map50_95: Spread
    ap50: dict[str, Spread]
    images_per_s: Spread
    epochs: list[int]
    ended_by: list[str]
    seconds_to_95pct: list[float | None] = field(default_factory=list)

    @classmethod
    def of(cls, runs: Sequence[DetectorRun]) -> DetectorSummary:
        first = runs[0]
        return cls(
            data=first.data,
            budget_s=first.budget_s,
            seeds=[r.seed for r in runs],
            map50=Spread.of([r.map50 for r in runs]),
            map50_95=Spread.of([r.map50_95 for r in runs]),
            ap50={k: Spread.of([r.ap50.get(k, 0.0) for r in runs]) for k in first.ap50},
            images_per_s=Spread.of([r.images_per_s for r in runs]),
            epochs=[r.epochs for r in runs],
            ended_by=[r.ended_by for r in runs],
            seconds_to_95pct=[r.seconds_to(0.95) for r in runs],
        )

    def row(self) -> dict[str, Any]:
        """One line of the text table."""
        return {
            "data": Path(self.data).name,
            "budget_s": f"{self.budget_s:g}",
            "seeds": ",".join(map(str, self.seeds)),
            "map50": str(self.map50),
            "map50_95": str(self.map50_95),
            **{f"AP {k}": str(v) for k, v in self.ap50.items()},
            "images_per_s": f"{self.images_per_s.mean:.1f}",
            "epochs": ",".join(map(str, self.epochs)),
            "ended_by": ",".join(sorted(set(self.ended_by))),
        }


@dataclass(frozen=True)
class DetectorBench:
    """Every run and the per-dataset, per-budget summaries."""

    runs: list[DetectorRun]
    summaries: list[DetectorSummary]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: summaries first, then the runs with their validation curves."""
        return {"summaries": [asdict(s) for s in self.summaries], "runs": [asdict(r) for r in self.runs]}


def train_command(data: Path, out: Path, budget_s: float, seed: int) -> list[str]:
    """The CLI call of one default run."""
    return [
        sys.executable,
        "-m",
        "sprint2",
        "train",
        str(data),
        "--out",
        str(out),
        "--budget",
        f"{budget_s:g}",
        "--seed",
        str(seed),
        "--json",
    ]


def run_once(data: Path, out: Path, budget_s: float, seed: int) -> DetectorRun:
    """Trains with the defaults in a fresh process (an existing out folder is resumed, not redone)."""
    start = time.perf_counter()
    done = subprocess.run(train_command(data, out, budget_s, seed), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"sprint2 train {data} (budget {budget_s:g} s, seed {seed}) failed:\n{done.stderr[-3000:]}"
        )
    return DetectorRun.from_run_dir(str(data), budget_s, seed, out, time.perf_counter() - start)


def bench_detector(
    data_dirs: Sequence[Path | str],
    *,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    out_dir: Path | str = "runs/bench-detector",
) -> DetectorBench:
    """Trains every dataset x budget x seed with the defaults, one run at a time, into out_dir."""
    if not data_dirs or not budgets or not seeds:
        raise ValueError("need at least one dataset, one budget and one seed")
    if any(not b > 0 for b in budgets):
        raise ValueError(f"budgets must be positive seconds, got {list(budgets)}")
    runs: list[DetectorRun] = []
    summaries: list[DetectorSummary] = []
    for data in map(Path, data_dirs):
        if not data.is_dir():
            raise NotADirectoryError(f"{data}: not a directory")
        for budget in budgets:
            mine = []
            for seed in seeds:
                out = Path(out_dir) / f"{data.name}-{budget:g}s-seed{seed}"
                logger.info("training %s, budget %g s, seed %d into %s", data, budget, seed, out)
                mine.append(run_once(data, out, float(budget), int(seed)))
            runs.extend(mine)
            summaries.append(DetectorSummary.of(mine))
    return DetectorBench(runs, summaries)
