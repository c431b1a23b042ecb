"""Execute the whole notebook series in quick mode, as `make report` would, and check what it recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sprint2.report import find_notebooks, run_report

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


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


#: The phrases of TensorFlow 2.21's start-up notices (absl banner, oneDNN notice, no-GPU error).
TENSORFLOW_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations",
    "failed call to cuInit",
)


def test_executed_notebooks_hold_no_tensorflow_start_up_lines(quick_report: Path) -> None:
    """The runner's kernel captures native output as Jupyter's does, so these would show if emitted."""
    for nb in find_notebooks():
        cells = json.loads((quick_report / nb.name).read_text())["cells"]
        texts = [
            "".join(o.get("text", "")) + "".join(o.get("traceback", []))
            for c in cells
            for o in c.get("outputs", [])
        ]
        found = [phrase for phrase in TENSORFLOW_NOISE if any(phrase in text for text in texts)]
        assert not found, f"{nb.name} shows TensorFlow start-up lines: {found}"


def test_front_page_shows_every_claim_and_every_notebook_thumbnail(quick_report: Path) -> None:
    from sprint2.frontpage import CLAIMS, NOT_MEASURED

    page = (quick_report / "index.html").read_text()
    index = json.loads((quick_report / "index.json").read_text())
    for claim in CLAIMS:
        assert f'id="claim-{claim.key}"' in page, claim.key
    measured = {c["key"] for c in index["claims"] if c["measured"] != NOT_MEASURED}
    stable = {"parallel_loading", "task_queue", "cpu_vs_gpu", "mirrored_strategy", "model_quality"}
    assert stable <= measured, f"not measured: {sorted(stable - measured)}"
    for entry in index["notebooks"]:
        assert entry["thumbnail"] and (quick_report / entry["thumbnail"]).stat().st_size > 1000, entry["name"]
        assert f'<img src="{entry["thumbnail"]}"' in page, entry["name"]
    assert index["environment"]["mode"].startswith("quick")
