"""The headless runner: parameters reach the notebooks, figures reach the index, failures stop it."""

from __future__ import annotations

import json
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
    runs = run_report(out, data_dir=data, quick=True, notebooks_dir=series)
    assert [(r.name, r.status) for r in runs] == [("01_first", "ok"), ("02_second", "ok")]
    assert runs[0].figures == {"quick": True, "data": str(data.resolve()), "answer": 42.0}
    for name in ("01_first", "02_second"):
        assert (out / f"{name}.ipynb").exists() and (out / f"{name}.html").exists()
    page = (out / "index.html").read_text()
    assert "01_first.html" in page and "answer" in page and "42" in page
    executed = nbformat.read(out / "02_second.ipynb", as_version=4)
    assert "second True" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))


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
    assert "planted failure" in (out / "index.html").read_text()


def test_record_merges_and_converts_numpy(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    record(tmp_path, "nb", a=np.float32(0.5), c=np.arange(3), where=tmp_path)
    path = record(tmp_path, "nb", b=np.int64(3), c=[7])
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 3, "c": [7], "where": str(tmp_path)}


def test_missing_data_folder_is_a_clear_error(series: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        run_report(tmp_path / "out", data_dir=tmp_path / "nope", notebooks_dir=series)
