"""Small in-memory datasets shared by the tests (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sprint2.dataset import LoadedDataset


def blank_dataset(
    boxes: list[list[list[float]]],
    labels: list[list[int]],
    size: tuple[int, int] = (100, 100),
    classes: tuple[str, ...] = ("a", "b"),
    paths: list[Path] | None = None,
) -> LoadedDataset:
    """A LoadedDataset of black images with the given boxes (xmin, ymin, xmax, ymax) and labels."""
    h, w = size
    return LoadedDataset(
        images=np.zeros((len(boxes), h, w, 3), np.uint8),
        boxes=[np.array(b, np.float32).reshape(-1, 4) for b in boxes],
        labels=[np.array(lab, np.int32) for lab in labels],
        class_names=list(classes),
        paths=paths if paths is not None else [Path(f"img{i}.jpg") for i in range(len(boxes))],
        found=len(boxes),
        size=size,
    )
