"""Timing by interleaved rounds: settings take turns so that the machine's drift reaches all of them.

Shared by the loading, training and quantization benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
