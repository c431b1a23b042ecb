"""The loaded dataset: resized images with every box of every image, and the per-box VOC flags.

One type shared by the loaders, training, evaluation, quantization, notebooks and tests; `subset`,
`head` and `same_as` live here so nobody re-implements them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Failure:
    """A file that could not be loaded, and why (the reason, without the path)."""

    path: str
    error: str


@dataclass
class DroppedBox:
    """A box left out of an image that still loaded: its annotation file, 1-based object index, reason."""

    path: str
    index: int
    reason: str


@dataclass
class LoadedDataset:
    """A dataset in memory: (N, H, W, 3) uint8 RGB images plus every box, label and flag of each image.

    boxes[i] is (K_i, 4) float32 xmin, ymin, xmax, ymax in resized pixels; labels[i] (K_i,) int32;
    difficult[i] and truncated[i] (K_i,) bool, all False when the loader was not given them.
    ``failures`` lists the files that did not load, ``dropped`` the invalid boxes left out of images
    that did; both describe the load, so ``subset`` and ``head`` keep them unchanged.
    """

    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    class_names: list[str]
    paths: list[Path]
    failures: list[Failure] = field(default_factory=list)
    found: int = 0
    size: tuple[int, int] = (0, 0)
    difficult: list[np.ndarray] = field(default_factory=list)
    truncated: list[np.ndarray] = field(default_factory=list)
    dropped: list[DroppedBox] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("difficult", "truncated"):
            flags = getattr(self, name)
            if not flags and self.boxes:
                flags = [np.zeros(len(b), bool) for b in self.boxes]
            setattr(self, name, [np.asarray(f, bool).reshape(-1) for f in flags])
        counts = [len(b) for b in self.boxes]
        for name in ("labels", "difficult", "truncated"):
            if [len(v) for v in getattr(self, name)] != counts:
                raise ValueError(f"LoadedDataset: {name} must hold one entry per box of each image")

    def __len__(self) -> int:
        return len(self.boxes)

    def subset(self, idx: np.ndarray | list[int]) -> LoadedDataset:
        """The rows idx, in that order; failures, dropped and found describe the load and stay as is."""
        idx = np.asarray(idx, np.int64).reshape(-1)
        pick = [int(i) for i in idx]
        return dataclasses.replace(
            self,
            images=np.asarray(self.images)[idx],
            boxes=[self.boxes[i] for i in pick],
            labels=[self.labels[i] for i in pick],
            paths=[self.paths[i] for i in pick] if self.paths else [],
            difficult=[self.difficult[i] for i in pick],
            truncated=[self.truncated[i] for i in pick],
        )

    def head(self, n: int) -> LoadedDataset:
        """The first n images, with found recounted so found == len(paths) + len(failures) still holds."""
        kept = self.subset(np.arange(min(n, len(self))))
        return dataclasses.replace(kept, found=len(kept) + len(kept.failures))

    def same_as(self, other: LoadedDataset) -> bool:
        """Element-for-element equality of pixels, boxes, labels, flags, paths and the load's report."""
        if not isinstance(other, LoadedDataset):
            return False
        if self.images.shape != other.images.shape or not np.array_equal(self.images, other.images):
            return False
        plain = ("class_names", "paths", "failures", "dropped", "found", "size")
        if any(getattr(self, k) != getattr(other, k) for k in plain) or len(self) != len(other):
            return False
        ragged = ("boxes", "labels", "difficult", "truncated")
        return all(np.array_equal(a, b) for k in ragged for a, b in zip(getattr(self, k), getattr(other, k)))

    def differences(self, other: LoadedDataset) -> list[str]:
        """Names of the fields that differ (empty when same_as holds), for a readable assertion."""
        fields = [f.name for f in dataclasses.fields(self)]
        out = []
        for name in fields:
            a, b = getattr(self, name), getattr(other, name)
            if isinstance(a, np.ndarray):
                equal = a.shape == b.shape and np.array_equal(a, b)
            elif name in ("boxes", "labels", "difficult", "truncated"):
                equal = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
            else:
                equal = a == b
            if not equal:
                out.append(name)
        return out
