"""Run the notebook series headless with papermill and write the report's front page.

Each notebook receives ``data_dir``, ``out_dir`` and ``quick`` as parameters and may record its key
figures with :func:`record`; :mod:`sprint2.frontpage` reads the sprint's claims from them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from sprint2 import frontpage
from sprint2.errors import ReportError

logger = logging.getLogger(__name__)

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "sprint2"
FIGURES_DIR = "figures"
LOGS_DIR = "logs"


@dataclass
class NotebookRun:
    """What happened to one notebook of the series."""

    name: str
    status: str  # "ok", "failed" or "not run"
    seconds: float = 0.0
    notebook: str = ""
    html: str = ""
    error: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    thumbnail: str = ""  # the representative plot's PNG, relative to the report folder


def record(out_dir: str | Path, notebook: str, **figures: Any) -> Path:
    """Save a notebook's key figures as JSON (merged with earlier calls) for the report index."""
    path = _figures_path(Path(out_dir), notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    current = _read_figures(path)
    current.update(figures)
    path.write_text(json.dumps(current, indent=2, sort_keys=True, default=_jsonable))
    return path


def _figures_path(out: Path, notebook: str) -> Path:
    """Where :func:`record` keeps one notebook's figures under the report folder."""
    return out / FIGURES_DIR / f"{notebook}.json"


def _read_figures(path: Path) -> dict[str, Any]:
    """The figures recorded so far in ``path``; none when the notebook recorded nothing."""
    return json.loads(path.read_text()) if path.exists() else {}


def _jsonable(value: Any) -> Any:
    """Numpy scalars and arrays as plain JSON values, anything else (paths) as its text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def find_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """The ordered series: files named like ``01_name.ipynb``."""
    found = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise ReportError(f"{notebooks_dir}: no notebooks named NN_name.ipynb")
    return found


def kernel_name() -> str:
    """The project's kernel when `make` installed it, else the current environment's python3."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL if KERNEL in KernelSpecManager().find_kernel_specs() else "python3"


def run_report(
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    quick: bool = False,
    notebooks_dir: str | Path = NOTEBOOKS_DIR,
    only: list[str] | None = None,
    progress: TextIO | None = None,
) -> list[NotebookRun]:
    """Execute every notebook in order into ``out_dir``, render HTML and write the front page.

    Without ``data_dir`` each notebook generates its default synthetic dataset under ``out_dir/data``
    (notebook 04 its one-object set; the others share the default set, generated here once first).
    The first failing notebook stops the run: its partly executed copy stays in ``out_dir``,
    the front page shows it, and :class:`ReportError` names the notebook, the cell and the error.
    ``progress`` (a console) gets one line per notebook, ``[4/7] name ... ok, 12.3 s``, and the page's path.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    given = data_dir is not None
    if data_dir is None:
        from sprint2.synthetic import ensure_dataset

        data_dir = ensure_dataset(out / "data", quick=quick)
    data = Path(data_dir).resolve()
    if not data.is_dir():
        raise ReportError(f"{data}: data folder does not exist")

    notebooks = find_notebooks(notebooks_dir)
    if only:
        notebooks = [nb for nb in notebooks if nb.stem in only or nb.stem[:2] in only]
    runs = [NotebookRun(name=nb.stem, status="not run") for nb in notebooks]
    kernel = kernel_name()
    params = {"out_dir": str(out), "quick": bool(quick)} | ({"data_dir": str(data)} if given else {})
    failed = None
    for i, (nb, run) in enumerate(zip(notebooks, runs), start=1):
        _say(progress, f"[{i}/{len(runs)}] {nb.stem} ... ", end="")
        _execute(nb, run, out, params, kernel)
        _say(progress, f"{run.status}, {run.seconds:.1f} s" + (f": {run.error}" if run.error else ""))
        if run.status == "failed":
            failed = ReportError(f"{nb.name} failed: {run.error} (partial output: {out / run.notebook})")
            break
    page = write_index(out, runs, quick=quick, data_dir=data)
    _say(progress, f"report: {page}")
    if failed is not None:
        raise failed
    return runs


def _say(progress: TextIO | None, text: str, end: str = "\n") -> None:
    """Write one piece of progress to the console, if there is one, at once."""
    if progress is not None:
        progress.write(text + end)
        progress.flush()


def _execute(nb: Path, run: NotebookRun, out: Path, params: dict[str, Any], kernel: str) -> None:
    """Run one notebook into ``out`` with papermill and fill ``run``: status, error, time, figures, HTML.

    The kernel process's own stdout and stderr (start-up warnings, native logs written before or
    outside the notebook's capture) go to ``logs/<notebook>.kernel.log``, not to the console.
    """
    import papermill

    executed = out / nb.name
    run.notebook = executed.name
    log_path = out / LOGS_DIR / f"{nb.stem}.kernel.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Figures are merged across record() calls, so a rerun into the same folder starts from none.
    _figures_path(out, nb.stem).unlink(missing_ok=True)
    logger.info("running %s (kernel %s, quick=%s)", nb.name, kernel, params["quick"])
    start = time.perf_counter()
    with log_path.open("wb") as log:
        try:
            papermill.execute_notebook(
                str(nb),
                str(executed),
                parameters=params,
                kernel_name=kernel,
                cwd=str(out),
                progress_bar=False,
                log_output=False,
                kernel_manager_class=_kernel_manager_class(log),
            )
            run.status = "ok"
        except papermill.PapermillExecutionError as exc:
            run.status = "failed"
            run.error = f"cell {exc.cell_index + 1} (In [{exc.exec_count}]) {exc.ename}: {exc.evalue}"
        except Exception as exc:  # the kernel died, no parameters cell, ...
            run.status, run.error = "failed", f"{type(exc).__name__}: {exc} (kernel log: {log_path})"
    run.seconds = round(time.perf_counter() - start, 2)
    run.figures = _read_figures(_figures_path(out, nb.stem))
    if executed.exists():
        run.html = _render_html(executed)
        run.thumbnail = frontpage.extract_thumbnail(executed, out / frontpage.THUMBNAILS_DIR)


def _kernel_manager_class(log: BinaryIO) -> type:
    """A kernel manager whose kernel writes its own output to ``log`` and runs as it would under Jupyter.

    Rules: the kernel captures native output into the notebook as Jupyter's does, also when this runs
    under pytest (ipykernel skips that capture when PYTEST_CURRENT_TEST is set), so the report holds
    what a reader would see; the transport is CurveZMQ-encrypted when the kernel and pyzmq support it.
    """
    import zmq
    from jupyter_client.manager import AsyncKernelManager

    class ReportKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if zmq.has("curve"):
                self.transport_encryption = "auto"

        async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
            cmd, kw = await super()._async_pre_start_kernel(**kw)
            kw["env"] = {k: v for k, v in kw.get("env", os.environ).items() if k != "PYTEST_CURRENT_TEST"}
            kw["stdout"] = kw["stderr"] = log
            return cmd, kw

    return ReportKernelManager


#: nbconvert's own log: its accessibility notes on every plot (no alt text) are not the reader's concern.
_NBCONVERT_LOG = logging.getLogger(f"{__name__}.nbconvert")
_NBCONVERT_LOG.setLevel(logging.ERROR)


def _render_html(executed: Path) -> str:
    """Render one executed notebook to HTML next to it; returns the file name."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(log=_NBCONVERT_LOG).from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target.name


def write_index(out: Path, runs: list[NotebookRun], *, quick: bool, data_dir: Path) -> Path:
    """Write the front page ``index.html`` and ``index.json`` (claims, environment, every figure).

    ``quick`` is the mode every notebook ran in (run_report passes it to them as a parameter): a quick
    run's claims show their figures unjudged (:data:`frontpage.SMOKE_RUN`).
    """
    figures = {run.name: run.figures for run in runs}
    links = frontpage.claim_links(out, {r.name: r.html for r in runs})
    claims = frontpage.read_claims(figures, links, quick=quick)
    env = frontpage.environment(figures, quick=quick, seeds=_seeds(runs, quick))
    notebooks = [asdict(r) for r in runs]
    page = frontpage.render(claims=claims, notebooks=notebooks, env=env, data_dir=str(data_dir), quick=quick)
    (out / "index.html").write_text(page, encoding="utf-8")
    summary = {
        "quick": quick,
        "data_dir": str(data_dir),
        "environment": env,
        "claims": claims,
        "notebooks": notebooks,
    }
    (out / "index.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
    return out / "index.html"


def _seeds(runs: list[NotebookRun], quick: bool) -> list[Any]:
    """The seeds the notebooks ran with: recorded ones, else their settings' for the mode."""
    from sprint2.notebook import SETTINGS, resolve

    seeds = [r.figures["seed"] for r in runs if "seed" in r.figures]
    if not seeds:
        seeds = [resolve(r.name, quick).get("seed") for r in runs if r.name in SETTINGS]
    return [s for s in seeds if s is not None]
