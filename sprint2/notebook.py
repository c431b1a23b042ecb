"""What every notebook does first and last: settings for quick and full mode, data, Markdown conclusions.

A notebook's ``parameters`` cell holds its settings; a setting left at None takes its value from
:data:`SETTINGS` for the mode asked for, so quick mode's smaller numbers live here and nowhere else.
Light on purpose: notebook 03 calls :func:`setup` before TensorFlow may start. Imported in a Jupyter
kernel, it filters TensorFlow's start-up notices out of the kernel's native stderr (:mod:`sprint2.quiet`),
so every notebook imports it before anything that imports TensorFlow.
"""

from __future__ import annotations

import html
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sprint2 import quiet
from sprint2.errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sprint2.analysis import Cases

logger = logging.getLogger(__name__)

#: Per notebook, every setting's value in full mode, and in quick mode (the smoke run of `make test`)
#: the ones it changes. None is a real value: "let the called function decide" (every core, ...).
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "01_parallel_loading": {
        # rounds and min_seconds: the benchmark rule (each method runs min_seconds per round)
        "full": {"size": 128, "rounds": 5, "min_seconds": 1.0},
        "quick": {"rounds": 2, "min_seconds": 0.1},
    },
    "02_box_visualization": {
        "full": {"size": 128, "n_samples": 8},
        "quick": {},
    },
    "03_cpu_vs_gpu_timing": {
        # the single-box model for the comparison with the original sprint, the detector users train;
        # detector_size and detector_batch None: the detector's schedule for the data
        "full": {
            "models": ["improved", "detector"],
            "replicas": [1, 2, 4],
            "min_seconds": 3.0,
            "rounds": 5,
            "batch": 32,
            "size": 64,
            "detector_size": None,
            "detector_batch": None,
            "max_images": None,
        },
        # tracing four replicas alone takes longer than the whole quick report should
        "quick": {
            "replicas": [1, 2],
            "min_seconds": 0.5,
            "rounds": 2,
            "batch": 8,
            "size": 32,
            "detector_size": [64, 64],
            "detector_batch": 4,
        },
    },
    "04_mirrored_training": {
        # epochs, batch and size are sprint2.experiment.run_training's defaults
        "full": {
            "strategy": "auto",
            "replicas": None,
            "epochs": 40,
            "batch": 16,
            "size": 64,
            "seed": 0,
            "n_cases": 8,
            # objects per generated image without data_dir: one, the single-box models' own task
            "objects": 1,
        },
        "quick": {"epochs": 2, "batch": 8, "size": 48},
    },
    "05_detector": {
        # None: sprint2.schedule decides (input size from the data, epochs within its time budget)
        "full": {
            "strategy": "auto",
            "replicas": None,
            "seed": 0,
            "detector_size": None,
            "detector_width": 1.0,
            "detector_epochs": None,
            "time_budget_s": None,
            "single_box_epochs": 40,
            "single_box_batch": 16,
            "single_box_size": 64,
            "n_gallery": 6,
        },
        "quick": {
            "detector_size": 64,
            "detector_width": 0.5,
            "detector_epochs": 2,
            "single_box_epochs": 2,
            "single_box_batch": 8,
            "single_box_size": 48,
            "n_gallery": 4,
        },
    },
    "06_quantization": {
        # the detector of notebook 05; fallback_*: the stand-in trained when it is missing (epochs and
        # size None: the detector's schedule for the data); rounds and min_seconds: the latency rule
        "full": {
            "model_path": None,
            "rounds": 5,
            "min_seconds": 1.0,
            "max_images": None,
            "num_threads": None,
            "qat_epochs": 2,
            "fallback_epochs": None,
            "fallback_size": None,
            "fallback_width": 1.0,
        },
        "quick": {
            "rounds": 2,
            "min_seconds": 0.1,
            # QAT's conversion path without its fine-tuning (tests/test_quantize runs an epoch)
            "qat_epochs": 0,
            "fallback_epochs": 2,
            "fallback_size": 64,
            "fallback_width": 0.5,
        },
    },
    "07_scaling_out": {
        "full": {"size": 64, "epochs": 3, "timeout": 300},
        "quick": {"size": 32, "epochs": 1},
    },
}


#: Notebooks that run a strategy in their own process: MirroredStrategy and SavedModel export log
#: every call at INFO through the "tensorflow" logger, which would bury the outputs.
QUIET_TENSORFLOW = frozenset(
    {"03_cpu_vs_gpu_timing", "04_mirrored_training", "05_detector", "06_quantization"}
)


def quiet_tensorflow_startup() -> bool:
    """In a Jupyter kernel, drop TensorFlow's start-up notices from native stderr; True when filtering."""
    return "ipykernel" in sys.modules and quiet.filter_native_stderr()


quiet_tensorflow_startup()


@dataclass(frozen=True)
class NotebookSetup:
    """A notebook's resolved settings and paths; ``cfg.size`` reads the setting ``size``."""

    name: str
    quick: bool
    out: Path
    data: Path
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def train_dir(self) -> Path:
        """The training images: data/train when the dataset has split folders, else data itself."""
        return self.data / "train" if (self.data / "train").is_dir() else self.data

    def __getattr__(self, key: str) -> Any:
        settings = self.__dict__.get("settings", {})
        if key.startswith("_") or key not in settings:
            raise AttributeError(f"{self.__dict__.get('name', 'notebook')} has no setting {key!r}")
        return settings[key]

    def rows(self) -> list[dict[str, Any]]:
        """The settings as (setting, value) rows, paths and mode first."""
        head = {"mode": "quick" if self.quick else "full", "data": str(self.data), "out": str(self.out)}
        return [{"setting": k, "value": v} for k, v in {**head, **self.settings}.items()]

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td>{html.escape(str(r['setting']))}</td><td>{html.escape(str(r['value']))}</td></tr>"
            for r in self.rows()
        )
        return f"<table><thead><tr><th>setting</th><th>value</th></tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        return "\n".join(f"{r['setting']}: {r['value']}" for r in self.rows())


def resolve(name: str, quick: bool, **parameters: Any) -> dict[str, Any]:
    """Every setting of notebook `name`: the given value, or the table's for the mode when it is None."""
    if name not in SETTINGS:
        raise ValueError(f"unknown notebook {name!r}; known: {', '.join(SETTINGS)}")
    table = {**SETTINGS[name]["full"], **(SETTINGS[name]["quick"] if quick else {})}
    unknown = sorted(set(parameters) - set(table))
    if unknown:
        raise ValueError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; its settings are {', '.join(table)}"
        )
    return {
        key: default if parameters.get(key) is None else parameters[key] for key, default in table.items()
    }


def setup(
    name: str,
    namespace: Mapping[str, Any] | None = None,
    *,
    data_dir: str | Path | None = None,
    out_dir: str | Path = "../reports",
    quick: bool = False,
    **parameters: Any,
) -> NotebookSetup:
    """Resolve a notebook's settings, create out_dir and find or generate its data.

    namespace: the notebook's `globals()`, so that its parameters cell is the only place a setting is
    written: data_dir, out_dir, quick and every setting of SETTINGS[name] found there are taken from it
    (keywords given as well win). Without data_dir the default synthetic dataset (quick or full) is
    generated under out_dir/data, with the notebook's "objects" setting (objects per image) when it has one.
    """
    if namespace is not None:
        names = {"data_dir", "out_dir", "quick", *SETTINGS.get(name, {}).get("full", {})}
        taken = {key: namespace[key] for key in names if key in namespace}
        return setup(name, **{**taken, **parameters})
    settings = resolve(name, bool(quick), **parameters)
    quiet_tensorflow_startup()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if data_dir:
        data = Path(data_dir).resolve()
        if not data.is_dir():
            raise DataError(data, "data folder does not exist")
    else:
        from sprint2.synthetic import ensure_dataset

        counts = {"objects": settings["objects"]} if settings.get("objects") is not None else {}
        data = ensure_dataset(out / "data", quick=bool(quick), **counts).resolve()
    if name in QUIET_TENSORFLOW:
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logger.info("%s: %s mode, data %s, settings %s", name, "quick" if quick else "full", data, settings)
    return NotebookSetup(name=name, quick=bool(quick), out=out, data=data, settings=settings)


def say(template: str, **figures: Any) -> None:
    """Display `template`, filled with this run's figures by str.format, as Markdown in the notebook."""
    from IPython.display import Markdown, display

    display(Markdown(template.format(**figures)))


def plot_cases(
    images: np.ndarray,
    cases: Cases,
    idx: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    title: str,
    ncols: int = 4,
) -> Figure:
    """Ground truth against prediction for the images idx of an analysis.analyse_cases result."""
    from sprint2 import viz

    idx = np.asarray(idx, np.int64)
    return viz.plot_gt_vs_pred_grid(
        np.asarray(images)[idx],
        cases.target_boxes[idx],
        cases.target_labels[idx],
        cases.pred_boxes[idx],
        cases.pred_labels[idx],
        cases.iou[idx],
        class_names,
        ncols=ncols,
        pred_scores=cases.scores[idx],
        title=title,
    )


@dataclass
class Stopwatch:
    """Seconds spent inside a ``with stopwatch() as t:`` block, in ``t.seconds`` once it ends."""

    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """Time a block with time.perf_counter; the result is set even when the block raises."""
    watch = Stopwatch()
    start = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - start
