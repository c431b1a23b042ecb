"""Execute the whole notebook series in quick mode, as `make report` would, and check what it recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sprint2.report import find_notebooks, run_report

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    run_report(out, quick=True)
    return out


def test_every_notebook_runs_in_quick_mode(quick_report: Path) -> None:
    index = json.loads((quick_report / "index.json").read_text())
    names = [n["name"] for n in index["notebooks"]]
    assert names == [nb.stem for nb in find_notebooks()]
    for entry in index["notebooks"]:
        assert entry["status"] == "ok", entry
        assert (quick_report / entry["html"]).stat().st_size > 10_000
        assert entry["figures"], f"{entry['name']} recorded no key figures"
    assert (quick_report / "index.html").exists()


def test_executed_notebooks_hold_plots(quick_report: Path) -> None:
    for nb in find_notebooks():
        cells = json.loads((quick_report / nb.name).read_text())["cells"]
        images = [o for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{nb.name} shows no plot"
