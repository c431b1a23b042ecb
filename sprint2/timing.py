"""Timing by interleaved rounds: settings take turns so that the machine's drift reaches all of them.

Shared by the loading, training and quantization benchmarks; `time_interleaved` times predictors
(the quantization report's Keras and LiteRT variants) at batch 1 and batched.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm  # the plain bar: disable=None turns it off unless stderr is a terminal


def spread(values: Sequence[float]) -> float:
    """(max - min) / median of the values: how far apart repeated measurements of one thing landed."""
    arr = np.asarray(values, np.float64)
    median = float(np.median(arr))
    return float((arr.max() - arr.min()) / median) if median > 0 else 0.0


def round_order(count: int, round_no: int) -> list[int]:
    """The order the settings take turns in during round ``round_no``: forward in even rounds, backward
    in odd ones. Neighbours stay neighbours in every round (no strategy beside mirrored x1), and over a
    pair of rounds every setting is as often early as late, so steady drift of the machine's load
    cancels out."""
    order = list(range(count))
    return order if round_no % 2 == 0 else order[::-1]


def _time_phase(predict: Callable[[np.ndarray], Any], inputs: list[np.ndarray], min_seconds: float) -> float:
    """Median ms per image of calls cycling through `inputs` for at least min_seconds, after one warm call."""
    predict(inputs[0])  # a new batch size re-allocates the interpreter's tensors: not timed
    times: list[float] = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < min_seconds:
        x = inputs[len(times) % len(inputs)]
        t0 = time.perf_counter()
        predict(x)
        times.append((time.perf_counter() - t0) * 1e3 / len(x))
    return float(np.median(times))


def time_interleaved(
    predictors: Mapping[str, Callable[[np.ndarray], Any]],
    images: np.ndarray,
    *,
    rounds: int,
    min_seconds: float,
    batch_size: int,
) -> dict[str, dict[str, list[float]]]:
    """Per predictor, per round: median ms per image at batch 1 ("batch1") and at batch_size ("batched").

    In every round each predictor takes its turn (in round_order) and is timed for at least
    min_seconds per batch size, so machine noise lands on all of them alike. A tqdm bar on stderr
    shows the progress when it is a terminal.
    """
    if len(images) == 0:
        raise ValueError("need at least one image to time")
    if rounds < 1 or not min_seconds > 0:
        raise ValueError(f"need rounds >= 1 and min_seconds > 0, got {rounds} and {min_seconds}")
    images = np.asarray(images, np.float32)
    singles = [images[i : i + 1] for i in range(len(images))]
    batch = min(int(batch_size), len(images))
    batches = [images[s : s + batch] for s in range(0, len(images) - batch + 1, batch)]
    names = list(predictors)
    times: dict[str, dict[str, list[float]]] = {name: {"batch1": [], "batched": []} for name in names}
    with tqdm(total=rounds * len(names), desc="latency rounds", disable=None, file=sys.stderr) as bar:
        for round_no in range(rounds):
            for i in round_order(len(names), round_no):
                name = names[i]
                bar.set_postfix_str(name)
                times[name]["batch1"].append(_time_phase(predictors[name], singles, min_seconds))
                times[name]["batched"].append(_time_phase(predictors[name], batches, min_seconds))
                bar.update()
    return times
