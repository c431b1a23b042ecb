"""Turning a detector's dense outputs into boxes: shared by evaluation, `sprint2 predict` and LiteRT models.

NumPy only, so a `.tflite` model can be decoded without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """One image's detections: boxes (K, 4) float32 xmin, ymin, xmax, ymax; scores (K,); labels (K,) int32."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, np.int32).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError("Detections: boxes, scores and labels must have one entry per detection")

    def __len__(self) -> int:
        return len(self.scores)
