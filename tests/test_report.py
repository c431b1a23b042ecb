"""The headless runner: parameters reach the notebooks, figures reach the index, failures stop it."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sprint2.errors import ReportError
from sprint2.report import record, run_report


def _notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('data_dir = None\nout_dir = "."\nquick = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(src) for src in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def series(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(
        folder / "01_first.ipynb",
        "from sprint2.report import record\n"
        "record(out_dir, '01_first', quick=quick, data=data_dir, answer=42.0)",
    )
    _notebook(folder / "02_second.ipynb", "print('second', quick)")
    return folder


def test_runs_in_order_passes_parameters_and_indexes_figures(series: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    record(out, "01_first", stale=1)  # left by an earlier run into the same folder
    runs = run_report(out, data_dir=data, quick=True, notebooks_dir=series)
    assert [(r.name, r.status) for r in runs] == [("01_first", "ok"), ("02_second", "ok")]
    assert runs[0].figures == {"quick": True, "data": str(data.resolve()), "answer": 42.0}, "no stale figure"
    for name in ("01_first", "02_second"):
        assert (out / f"{name}.ipynb").exists() and (out / f"{name}.html").exists()
    page = (out / "index.html").read_text()
    assert "01_first.html" in page and "answer" in page and "42" in page
    folded = page.split("<details>")[1]
    assert "<td><code>answer</code></td><td>42</td>" in folded, "every recorded figure is folded away"
    assert page.count('<p class="smoke">') == 1, "a quick run's page says once that it is not judged"
    index = json.loads((out / "index.json").read_text())
    assert index["quick"] is True
    assert [(n["name"], n["status"], n["figures"].get("answer")) for n in index["notebooks"]] == [
        ("01_first", "ok", 42.0),
        ("02_second", "ok", None),
    ]
    executed = nbformat.read(out / "02_second.ipynb", as_version=4)
    assert "second True" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))


def test_without_data_each_notebook_finds_its_own_default(series: Path, tmp_path: Path) -> None:
    # No data_dir reaches the notebooks, so each one's setup generates its own default set (notebook 04:
    # one object per image); the runner still generates the shared quick set for the front page.
    out = tmp_path / "out"
    runs = run_report(out, quick=True, notebooks_dir=series, only=["01"])
    assert runs[0].figures["data"] is None
    assert (out / "data" / "synthetic-quick").is_dir()


def test_failing_cell_stops_the_run_and_keeps_the_partial_notebook(series: Path, tmp_path: Path) -> None:
    _notebook(series / "02_second.ipynb", "x = 1", "raise ValueError('planted failure')", "y = 2")
    _notebook(series / "03_third.ipynb", "print('never')")
    out = tmp_path / "out"
    with pytest.raises(ReportError, match=r"02_second\.ipynb.*ValueError: planted failure"):
        run_report(out, data_dir=tmp_path, notebooks_dir=series)
    index = json.loads((out / "index.json").read_text())
    assert [n["status"] for n in index["notebooks"]] == ["ok", "failed", "not run"]
    assert (out / "02_second.ipynb").exists(), "partly executed notebook must be kept"
    assert not (out / "03_third.ipynb").exists()
    page = (out / "index.html").read_text()
    assert "planted failure" in page
    assert '<p class="smoke">' not in page, "a full run's page is judged"


def test_record_merges_and_converts_numpy(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    record(tmp_path, "nb", a=np.float32(0.5), c=np.arange(3), where=tmp_path)
    path = record(tmp_path, "nb", b=np.int64(3), c=[7])
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 3, "c": [7], "where": str(tmp_path)}


def test_missing_data_folder_is_a_clear_error(series: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        run_report(tmp_path / "out", data_dir=tmp_path / "nope", notebooks_dir=series)


# ----------------------------------------------------------------------------- progress and failures
def test_progress_names_each_notebook_its_status_and_the_page(series: Path, tmp_path: Path) -> None:
    console = io.StringIO()
    run_report(tmp_path / "out", data_dir=tmp_path, notebooks_dir=series, progress=console)
    lines = console.getvalue().splitlines()
    assert re.fullmatch(r"\[1/2\] 01_first \.\.\. ok, \d+\.\d s", lines[0]), lines
    assert re.fullmatch(r"\[2/2\] 02_second \.\.\. ok, \d+\.\d s", lines[1]), lines
    assert lines[2] == f"report: {(tmp_path / 'out' / 'index.html').resolve()}"
    assert len(lines) == 3, "the kernel's own warnings must not reach the console"
    log = (tmp_path / "out" / "logs" / "01_first.kernel.log").read_text()
    assert "without encryption" not in log, log


def test_a_failure_names_the_cell_on_the_console(series: Path, tmp_path: Path) -> None:
    _notebook(series / "02_second.ipynb", "x = 1", "raise ValueError('planted failure')")
    console = io.StringIO()
    with pytest.raises(ReportError, match=r"02_second\.ipynb failed: cell 4 \(In \[4\]\) ValueError"):
        run_report(tmp_path / "out", data_dir=tmp_path, notebooks_dir=series, progress=console)
    text = console.getvalue()
    assert "[2/2] 02_second ... failed" in text and "planted failure" in text
    assert text.rstrip().endswith("index.html")


# ----------------------------------------------------------------------------- TensorFlow's start-up lines
#: The phrases of TensorFlow 2.21's start-up notices on a machine without GPU. Which of them a start
#: prints depends on the CPU (this AVX2-only machine prints no oneDNN notice), so a check asks for some.
NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations",
    "Could not find cuda drivers",
    "failed call to cuInit",
)


def _stderr_text(executed: Path) -> str:
    cells = nbformat.read(executed, as_version=4).cells
    return "".join(
        o.get("text", "") for c in cells for o in c.get("outputs", []) if o.get("name") == "stderr"
    )


@pytest.mark.slow
def test_notebooks_show_no_tensorflow_start_up_lines_but_real_warnings(tmp_path: Path) -> None:
    """Importing sprint2.notebook first filters the notices; a native error and a Python warning stay.

    The second notebook imports TensorFlow without it: the notices are there, so the check can fail.
    """
    pytest.importorskip("tensorflow")
    folder = tmp_path / "notebooks"
    folder.mkdir()
    work = (
        "import tensorflow as tf\n"
        "print(float(tf.reduce_sum(tf.constant([1.0, 2.0]))))\n"
        "import os, warnings\n"
        "os.write(2, b'E0000 00:00:01.0 1 other.cc:1] a planted native error\\n')\n"
        "warnings.warn('a planted python warning')"
    )
    _notebook(folder / "01_quiet.ipynb", "from sprint2 import notebook", work)
    _notebook(folder / "02_loud.ipynb", work)
    out = tmp_path / "out"
    run_report(out, data_dir=tmp_path, notebooks_dir=folder)
    quiet, loud = _stderr_text(out / "01_quiet.ipynb"), _stderr_text(out / "02_loud.ipynb")
    assert not [phrase for phrase in NOISE if phrase in quiet], quiet
    assert "a planted native error" in quiet and "a planted python warning" in quiet, quiet
    seen = [phrase for phrase in NOISE if phrase in loud]
    assert NOISE[0] in seen and len(seen) >= 2, f"the notices did not reach the notebook: {loud!r}"


def test_the_stderr_filter_drops_only_the_notices() -> None:
    code = (
        "import os, time\n"
        "from sprint2 import quiet\n"
        "assert quiet.filter_native_stderr() and quiet.filter_native_stderr()\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to"
        " STDERR\\n')\n"
        "os.write(2, b'I0000 00:00:1796127649.563064   31940 port.cc:153] oneDNN custom operations are on."
        " You may see ...\\nkept line\\n')\n"
        "os.write(2, b'E0000 00:00:1796127654.495291   31940 cuda_platform.cc:52] failed call to cuInit:"
        " INTERNAL\\n')\n"
        "os.write(2, b'E0000 00:00:1796127654.495291   31940 other.cc:52] failed for real\\n')\n"
        "os.write(2, b'no newline yet')\n"
        "time.sleep(0.6)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "kept line",
        "E0000 00:00:1796127654.495291   31940 other.cc:52] failed for real",
        "no newline yet",
    ]
