"""Shared fixtures: the real datasets beside the checkout (skipped when absent) and small synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("SPRINT2_SHARED", ROOT.parent / "shared")) / "datasets"


@pytest.fixture(scope="session")
def shared_datasets_or_none() -> Path | None:
    """The folder holding raccoon/ and bccd/, or None when ../shared is not there (the test goes on)."""
    if (SHARED_DATASETS / "raccoon").is_dir() and (SHARED_DATASETS / "bccd").is_dir():
        return SHARED_DATASETS
    return None


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The folder holding raccoon/ and bccd/; skips the test when ../shared is not there."""
    if not (SHARED_DATASETS / "raccoon").is_dir() or not (SHARED_DATASETS / "bccd").is_dir():
        pytest.skip(f"real datasets not found under {SHARED_DATASETS}")
    return SHARED_DATASETS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs the notebooks first, then the slow modules, then the rest (a stable sort, files kept whole).

    Under `pytest -n 2 --dist loadfile` (make test) each worker takes the next file in this order, so
    the longest files start first and the two workers finish close together.
    """

    def rank(item: pytest.Item) -> int:
        marks = getattr(item.module, "pytestmark", [])
        names = {m.name for m in (marks if isinstance(marks, list) else [marks])}
        return 0 if "notebooks" in names else 1 if "slow" in names else 2

    items.sort(key=rank)
