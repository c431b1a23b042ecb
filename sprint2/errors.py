"""The project's exceptions, in one light module so any layer (CLI, loaders, training) can catch them.

Nothing here imports TensorFlow: the CLI catches `StrategyError` without starting a runtime.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A bad input file: `str(e) == f"{path}: {reason}"`; picklable so it crosses process pools."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) through pickling; the default passes only the message
        return (type(self), (self.path, self.reason))


class StrategyError(RuntimeError):
    """A strategy that cannot be built as asked, with the reason and what to do about it."""


class WorkerLostError(StrategyError):
    """A multi-worker run lost a peer mid-training; the message says who, when, and how to resume."""


class ReportError(RuntimeError):
    """A notebook of the report failed; the message names it and the error."""
