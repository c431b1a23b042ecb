"""Which images a run trains, validates and tests on, by one rule that `sprint2 evaluate` repeats.

A dataset with train / val / test lists of its own (ImageSets/Main) uses them; otherwise
`loading.split_samples` holds out a seeded test share and a seeded share of the rest validates.
Nothing here reads pixels until `load_run_splits`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sprint2.dataset import LoadedDataset
from sprint2.loading import LoadOptions, load_dataset, load_splits, split_samples
from sprint2.voc import Sample, discover

VAL_MIN_IMAGES = 20  # below this many training images no validation split is held out
TEST_FRACTION = 0.2  # load_splits' held-out share for datasets without a split of their own


def own_validation_split(root: Path) -> bool:
    """Whether the dataset defines train, val and test lists of its own (ImageSets/Main/*.txt)."""
    main = Path(root) / "ImageSets" / "Main"
    return all((main / f"{name}.txt").is_file() for name in ("train", "val", "test"))


def train_samples(
    root: Path | str,
    seed: int,
    val_fraction: float | None = None,
    default_fraction: float = 0.0,
    test_fraction: float = TEST_FRACTION,
) -> list[Sample]:
    """The (image, XML) pairs a run trains on, by `load_run_splits`' rule, without loading anything.

    The dataset's own train list when the run validates on its own val list; otherwise the training
    split of `loading.split_samples` (a seeded validation share of it is held out after loading).
    """
    if uses_own_validation(root, val_fraction, default_fraction):
        return discover(Path(root), "train")
    return split_samples(root, test_fraction=test_fraction, seed=seed).train


def uses_own_validation(root: Path | str, val_fraction: float | None, default_fraction: float) -> bool:
    """Whether a run validates on the dataset's own val list: it has train / val / test lists, no
    validation share was asked for, and the recipe validates."""
    return val_fraction is None and default_fraction > 0 and own_validation_split(Path(root))


def split_validation(
    ds: LoadedDataset, fraction: float, seed: int
) -> tuple[LoadedDataset, LoadedDataset | None]:
    """(train, validation or None): a seeded `fraction` of ds held out, none under VAL_MIN_IMAGES images."""
    order = np.random.default_rng(seed).permutation(len(ds.boxes))
    n_val = int(round(len(order) * fraction)) if len(order) >= VAL_MIN_IMAGES else 0
    if not n_val:
        return ds, None
    return ds.subset(np.sort(order[n_val:])), ds.subset(np.sort(order[:n_val]))


def load_run_splits(
    root: Path | str,
    seed: int,
    options: LoadOptions,
    val_fraction: float | None,
    default_fraction: float,
) -> tuple[LoadedDataset, LoadedDataset | None, LoadedDataset, str]:
    """(train, validation or None, test, where the validation images came from).

    With val_fraction None and a recipe that validates (default_fraction > 0), a dataset with its own
    train / val / test lists uses them; otherwise `loading.load_splits` gives train and test and a
    seeded share of train (val_fraction, else default_fraction) is held out for validation.
    """
    root = Path(root)
    if uses_own_validation(root, val_fraction, default_fraction):
        train = load_dataset(root, split="train", options=options)
        val = load_dataset(root, split="val", class_names=train.class_names, options=options)
        test = load_dataset(root, split="test", class_names=train.class_names, options=options)
        return train, (val if len(val) else None), test, "ImageSets/Main/val.txt"
    train_all, test = load_splits(root, seed=seed, options=options)
    fraction = default_fraction if val_fraction is None else val_fraction
    train, val = split_validation(train_all, fraction, seed)
    return train, val, test, (f"seeded {fraction:g} of the training split" if val is not None else "none")
