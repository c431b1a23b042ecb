"""Run the notebook series headless with papermill and write an HTML index of the results.

Each notebook receives ``data_dir``, ``out_dir`` and ``quick`` as parameters and may record its key
figures with :func:`record`; the index shows them beside each notebook's status and duration.
"""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sprint2.errors import ReportError

logger = logging.getLogger(__name__)

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "sprint2"
FIGURES_DIR = "figures"


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
) -> list[NotebookRun]:
    """Execute every notebook in order into ``out_dir``, render HTML and write ``index.html``.

    Without ``data_dir`` the default synthetic dataset is generated under ``out_dir/data``.
    The first failing notebook stops the run: its partly executed copy stays in ``out_dir``,
    the index shows it, and :class:`ReportError` names the notebook and the error.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
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
    params = {"data_dir": str(data), "out_dir": str(out), "quick": bool(quick)}
    failed = None
    for nb, run in zip(notebooks, runs):
        _execute(nb, run, out, params, kernel)
        if run.status == "failed":
            failed = ReportError(f"{nb.name} failed: {run.error} (partial output: {out / run.notebook})")
            break
    write_index(out, runs, quick=quick, data_dir=data)
    if failed is not None:
        raise failed
    return runs


def _execute(nb: Path, run: NotebookRun, out: Path, params: dict[str, Any], kernel: str) -> None:
    """Run one notebook into ``out`` with papermill and fill ``run``: status, error, time, figures, HTML."""
    import papermill

    executed = out / nb.name
    run.notebook = executed.name
    logger.info("running %s (kernel %s, quick=%s)", nb.name, kernel, params["quick"])
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(nb),
            str(executed),
            parameters=params,
            kernel_name=kernel,
            cwd=str(out),
            progress_bar=False,
            log_output=False,
        )
        run.status = "ok"
    except papermill.PapermillExecutionError as exc:
        run.status, run.error = "failed", f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # the kernel died, no parameters cell, ...
        run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
    run.seconds = round(time.perf_counter() - start, 2)
    run.figures = _read_figures(_figures_path(out, nb.stem))
    if executed.exists():
        run.html = _render_html(executed)


def _render_html(executed: Path) -> str:
    """Render one executed notebook to HTML next to it; returns the file name."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target.name


def write_index(out: Path, runs: list[NotebookRun], *, quick: bool, data_dir: Path) -> Path:
    """Write ``index.html`` (a table of notebooks) and ``index.json`` (the same, for machines)."""
    mode = "quick (small synthetic data, few epochs)" if quick else "full"
    page = _PAGE.format(
        mode=html.escape(mode),
        data=html.escape(str(data_dir)),
        rows="\n".join(_index_row(run) for run in runs),
        when=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    (out / "index.html").write_text(page, encoding="utf-8")
    summary = {"quick": quick, "data_dir": str(data_dir), "notebooks": [asdict(r) for r in runs]}
    (out / "index.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
    return out / "index.html"


def _index_row(run: NotebookRun) -> str:
    """One notebook's table row: a link to its HTML, status, duration, key figures and any error."""
    name = html.escape(run.name)
    link = f'<a href="{html.escape(run.html)}">{name}</a>' if run.html else name
    figures = "".join(
        f"<li><code>{html.escape(k)}</code>: {html.escape(_fmt(v))}</li>"
        for k, v in sorted(run.figures.items())
    )
    error = f'<div class="error">{html.escape(run.error)}</div>' if run.error else ""
    return (
        f'<tr class="{run.status.replace(" ", "-")}"><td>{link}</td><td>{run.status}</td>'
        f"<td>{run.seconds:.1f} s</td><td><ul>{figures}</ul>{error}</td></tr>"
    )


def _fmt(value: Any) -> str:
    """A figure as index text: floats to 4 significant digits, dicts as k=v pairs."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sprint2 report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .5rem; text-align: left; vertical-align: top; }}
tr.ok td:nth-child(2) {{ color: #1a7f37; }} tr.failed td:nth-child(2) {{ color: #cf222e; font-weight: bold; }}
tr.not-run {{ color: #888; }} ul {{ margin: 0; padding-left: 1rem; }} .error {{ color: #cf222e; }}
</style></head><body>
<h1>sprint2 report</h1>
<p>Mode: {mode}. Data: <code>{data}</code>. Written {when}.</p>
<table><thead><tr><th>Notebook</th><th>Status</th><th>Duration</th><th>Key figures</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""
