"""The front page: claims read from recorded figures, verdicts from rules, thumbnails, environment."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from sprint2 import frontpage
from sprint2.report import NotebookRun, write_index

#: A 1x1 PNG, the plot output of the fake executed notebooks.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc00000030101001b8ba8a10000000049454e44ae426082"
    )
).decode()

#: Figures as the quick report's notebooks record them (a subset of each).
FIGURES: dict[str, dict[str, Any]] = {
    "01_parallel_loading": {
        "cores": 2,
        "default_method": "thread",
        "speedup_vs_serial": 1.72,
        "original_pattern_vs_serial": 0.31,
        "planted_failures": 10,
    },
    "02_box_visualization": {"images": 48},
    "03_cpu_vs_gpu_timing": {
        "gpus": 0,
        "no_strategy_images_per_s": {"detector": 102.0, "improved": 320.4},
        "strategy_overhead": {"detector": 0.027, "improved": -0.056},
        "mirrored_efficiency": {"detector x1": 0.98, "detector x2": 0.52, "improved x2": 0.55},
    },
    "04_mirrored_training": {"strategy": "auto", "replicas": 1, "improved_accuracy": 0.0625},
    "05_detector": {"detector_map50": 0.87, "baseline_map50": 0.0003, "test_images": 100},
    "06_quantization": {
        "int8_size_ratio": 0.258,
        "int8_speedup": 2.7,
        "int8_map50": 0.85,
        "float32_map50": 0.86,
        "keras_map50": 0.86,
        "int8_meets_targets": True,
        "qat_int8_map50": 0.858,
        "qat_int8_meets_targets": True,
        "qat_stage": None,
        "qat_error": None,
    },
    "07_scaling_out": {"dask_identical": True, "multiworker_ok": True},
}

#: The section headings the claims link to, by notebook, as the fake notebooks hold them.
HEADINGS: dict[str, list[str]] = {}
for _claim in frontpage.CLAIMS:
    HEADINGS.setdefault(_claim.notebook, []).append(_claim.section)


def _claims(figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in frontpage.read_claims(figures)}


def test_every_claim_reads_its_figures_in_human_units() -> None:
    claims = _claims(FIGURES)
    assert [c.key for c in frontpage.CLAIMS] == list(claims)
    assert claims["parallel_loading"]["measured"] == (
        "thread: 1.72x a plain loop on 2 cores; the original's pattern 0.31x"
    )
    assert claims["post_training_quantization"]["measured"] == (
        "int8: 0.26x size, 2.7x faster than Keras, mAP@0.5 0.850 (float 0.860)"
    )
    assert claims["model_quality"]["measured"].startswith("detector mAP@0.5 0.87 on 100 test images")
    assert "no GPU" in claims["cpu_vs_gpu"]["measured"]
    assert claims["quantization_aware_training"]["measured"] == (
        "QAT int8 mAP@0.5 0.858 (post-training int8 0.850, float 0.860)"
    )
    verdicts = {k: c["verdict"] for k, c in claims.items()}
    assert verdicts == {
        "parallel_loading": "met",
        "task_queue": "met",
        "cpu_vs_gpu": "partial",
        "mirrored_strategy": "met",
        "post_training_quantization": "met",
        "quantization_aware_training": "met",
        "model_quality": "met",
    }
    assert claims["parallel_loading"]["figures"]["load_speedup"] == "01_parallel_loading:speedup_vs_serial"


def test_verdicts_follow_the_figures() -> None:
    figures = copy.deepcopy(FIGURES)
    figures["01_parallel_loading"]["speedup_vs_serial"] = 0.99
    figures["03_cpu_vs_gpu_timing"]["strategy_overhead"]["detector"] = 0.4
    figures["05_detector"]["detector_map50"] = 0.04
    figures["06_quantization"]["int8_meets_targets"] = False
    figures["06_quantization"]["qat_int8_meets_targets"] = False
    figures["07_scaling_out"]["dask_identical"] = False
    verdicts = {k: c["verdict"] for k, c in _claims(figures).items()}
    assert verdicts["parallel_loading"] == "missed"
    assert verdicts["mirrored_strategy"] == "partial"
    assert verdicts["model_quality"] == "partial"  # above the baseline, far from 0.5
    assert verdicts["post_training_quantization"] == "partial"  # smaller, but a target missed
    assert verdicts["quantization_aware_training"] == "partial"
    assert verdicts["task_queue"] == "partial"
    figures["06_quantization"]["int8_size_ratio"] = 0.9
    assert _claims(figures)["post_training_quantization"]["verdict"] == "missed"


def test_a_quick_run_shows_its_figures_unjudged() -> None:
    full, quick = _claims(FIGURES), {row["key"]: row for row in frontpage.read_claims(FIGURES, quick=True)}
    assert {k: c["measured"] for k, c in quick.items()} == {k: c["measured"] for k, c in full.items()}
    assert {c["verdict"] for c in quick.values()} == {frontpage.SMOKE_RUN}
    figures = {k: v for k, v in FIGURES.items() if k != "06_quantization"}
    verdicts = {row["key"]: row["verdict"] for row in frontpage.read_claims(figures, quick=True)}
    assert verdicts["post_training_quantization"] == frontpage.NOT_MEASURED  # absent stays absent
    assert verdicts["parallel_loading"] == frontpage.SMOKE_RUN


def test_missing_figures_read_as_not_measured() -> None:
    figures = {k: v for k, v in FIGURES.items() if k not in ("06_quantization", "07_scaling_out")}
    figures["03_cpu_vs_gpu_timing"] = {"gpus": 1}  # a GPU, but no figure of it or of the CPU
    claims = _claims(figures)
    for key in (
        "post_training_quantization",
        "quantization_aware_training",
        "cpu_vs_gpu",
        "mirrored_strategy",
    ):
        assert claims[key]["measured"] == claims[key]["verdict"] == frontpage.NOT_MEASURED, key
    assert claims["task_queue"]["verdict"] == "partial"  # the Dask half is missing
    assert _claims({})["model_quality"]["verdict"] == frontpage.NOT_MEASURED


def test_a_failed_qat_reads_as_missed_with_its_error() -> None:
    figures = copy.deepcopy(FIGURES)
    for key in ("qat_int8_map50", "qat_int8_meets_targets"):
        del figures["06_quantization"][key]
    figures["06_quantization"].update(qat_stage="convert", qat_error="ValueError: planted")
    qat = _claims(figures)["quantization_aware_training"]
    assert (qat["measured"], qat["verdict"]) == ("fails at convert: ValueError: planted", "missed")
    assert qat["figures"] == {
        "qat_stage": "06_quantization:qat_stage",
        "qat_error": "06_quantization:qat_error",
    }


def test_a_later_candidate_key_is_read_when_the_first_is_missing() -> None:
    figures = copy.deepcopy(FIGURES)
    del figures["06_quantization"]["float32_map50"]
    figures["06_quantization"]["keras_map50"] = 0.9
    ptq = _claims(figures)["post_training_quantization"]
    assert ptq["measured"].endswith("(float 0.900)")
    assert ptq["figures"]["float_map50"] == "06_quantization:keras_map50"


def test_every_figure_key_belongs_to_a_notebook_of_the_series() -> None:
    names = {p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert {notebook for notebook, _ in frontpage.FIGURES.values()} <= names
    assert {claim.notebook for claim in frontpage.CLAIMS} <= names
    needed = {name for claim in frontpage.CLAIMS for r in claim.readings for name in r.needs}
    assert needed == set(frontpage.FIGURES), "FIGURES holds exactly the figures the claims read"


def _executed(out: Path, name: str, headings: list[str], *, plots: int) -> None:
    """A fake executed notebook: its headings, a text output, then ``plots`` PNG outputs."""
    nb = nbformat.v4.new_notebook()
    text = nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")])
    shown = nbformat.v4.new_code_cell(
        "plot()",
        outputs=[nbformat.v4.new_output("display_data", data={"image/png": PNG}) for _ in range(plots)],
    )
    sections = "".join(f"\n\n## {heading}, with more words" for heading in headings)
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}{sections}"), text, shown]
    nbformat.write(nb, out / f"{name}.ipynb")


def test_the_page_shows_each_claim_each_thumbnail_and_the_environment(tmp_path: Path) -> None:
    from sprint2.report import _render_html

    out = tmp_path / "report"
    out.mkdir()
    runs = []
    for name, figures in FIGURES.items():
        _executed(
            out, name, HEADINGS.get(name, ["Somewhere"]), plots=0 if name == "02_box_visualization" else 2
        )
        run = NotebookRun(name=name, status="ok", seconds=3.25, notebook=f"{name}.ipynb", figures=figures)
        run.html = _render_html(out / run.notebook)
        run.thumbnail = frontpage.extract_thumbnail(out / run.notebook, out / frontpage.THUMBNAILS_DIR)
        runs.append(run)
    runs[-1].status, runs[-1].error = "failed", "cell 3 (In [2]) ValueError: planted"
    page_path = write_index(out, runs, quick=True, data_dir=tmp_path)
    page = page_path.read_text()

    for claim in frontpage.CLAIMS:
        row = re.search(rf'<tr class="claim" id="claim-{claim.key}">(.*?)</tr>', page, re.S)
        assert row, f"no row for {claim.key}"
        link = re.search(r'<a href="([^"]+)#([^"]+)">', row.group(1))
        assert link, f"{claim.key}: no link to a section"
        target = (out / link.group(1)).read_text()
        assert f'id="{link.group(2)}"' in target, (
            f"{claim.key}: anchor {link.group(2)} not in {link.group(1)}"
        )
    for run in runs:
        card = re.search(
            rf'<figure class="notebook [^"]+" id="notebook-{run.name}">(.*?)</figure>', page, re.S
        )
        assert card, f"no card for {run.name}"
        if run.name == "02_box_visualization":
            assert "no plot" in card.group(1) and run.thumbnail == ""
        else:
            src = re.search(r'<img src="([^"]+)"', card.group(1)).group(1)
            assert (out / src).read_bytes() == base64.b64decode(PNG)
            assert f'href="{run.name}.html"' in card.group(1)
    assert "planted" in page and "failed" in page
    for label in (
        "machine",
        "cores",
        "gpus",
        "python",
        "tensorflow",
        "keras",
        "litert",
        "seed",
        "git commit",
    ):
        assert f"<th>{label}</th>" in page, label
    assert "<details>" in page and "speedup_vs_serial" in page.split("<details>")[1]

    index = json.loads((out / "index.json").read_text())
    assert [c["key"] for c in index["claims"]] == [c.key for c in frontpage.CLAIMS]
    assert index["environment"]["mode"].startswith("quick") and index["environment"]["gpus"] == 0
    assert index["notebooks"][0]["figures"]["speedup_vs_serial"] == 1.72


def _verdict_cells(page: str) -> list[str]:
    return re.findall(r'<td class="verdict [^"]+">([^<]*)</td>', page)


@pytest.mark.parametrize("quick", [True, False])
def test_a_quick_page_shows_smoke_run_and_a_full_page_its_verdicts(tmp_path: Path, quick: bool) -> None:
    figures = copy.deepcopy(FIGURES)
    figures["01_parallel_loading"]["speedup_vs_serial"] = 0.79  # a quick run's tiny-image figure
    del figures["07_scaling_out"]  # task queue: partial
    runs = [NotebookRun(name=name, status="ok", figures=f) for name, f in figures.items()]
    del runs[-1].figures["int8_map50"]  # both quantization claims: not measured
    page = write_index(tmp_path, runs, quick=quick, data_dir=tmp_path).read_text()
    verdicts = _verdict_cells(page)
    assert len(verdicts) == len(frontpage.CLAIMS)
    assert verdicts.count(frontpage.NOT_MEASURED) == 2
    index = json.loads((tmp_path / "index.json").read_text())
    assert [c["verdict"] for c in index["claims"]] == verdicts
    assert "thread: 0.79x a plain loop" in page, "a quick page shows its figures too"
    if quick:
        assert set(verdicts) == {frontpage.SMOKE_RUN, frontpage.NOT_MEASURED}
        assert not {"met", "partial", "missed"} & set(verdicts)
        assert page.count("not judged") == 1
    else:
        assert frontpage.SMOKE_RUN not in verdicts and "not judged" not in page
        assert {"met", "partial", "missed"} <= set(verdicts)


def test_a_tagged_cell_supplies_the_thumbnail(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(
        "a()", outputs=[nbformat.v4.new_output("display_data", data={"image/png": PNG})]
    )
    other = base64.b64encode(base64.b64decode(PNG) + b"tagged").decode()
    tagged = nbformat.v4.new_code_cell(
        "b()", outputs=[nbformat.v4.new_output("display_data", data={"image/png": other})]
    )
    tagged.metadata["tags"] = [frontpage.THUMBNAIL_TAG]
    nb.cells = [first, tagged]
    nbformat.write(nb, tmp_path / "09_x.ipynb")
    assert frontpage.extract_thumbnail(tmp_path / "09_x.ipynb", tmp_path / "t") == "t/09_x.png"
    assert (tmp_path / "t" / "09_x.png").read_bytes().endswith(b"tagged")
    assert frontpage.extract_thumbnail(tmp_path / "missing.ipynb", tmp_path / "t") == ""


@pytest.mark.parametrize(
    ("heading", "found"),
    [("Every loading method", "Every-loading-method,-side-by-side"), ("Nowhere", "")],
)
def test_section_anchor_finds_nbconvert_heading_ids(heading: str, found: str) -> None:
    page = (
        '<h2 id="Every-loading-method,-side-by-side">Every loading method, side by side<a class="anchor-link"'
    )
    page += ' href="#Every-loading-method,-side-by-side">¶</a></h2>'
    assert frontpage.section_anchor(page, heading) == found


def test_the_named_call_supplies_the_thumbnail_before_the_first_plot(tmp_path: Path) -> None:
    (name, call), *_ = frontpage.THUMBNAIL_CALLS.items()
    other = base64.b64encode(base64.b64decode(PNG) + b"called").decode()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "a()", outputs=[nbformat.v4.new_output("display_data", data={"image/png": PNG})]
        ),
        nbformat.v4.new_code_cell(
            f"{call}x)", outputs=[nbformat.v4.new_output("display_data", data={"image/png": other})]
        ),
    ]
    nbformat.write(nb, tmp_path / f"{name}.ipynb")
    frontpage.extract_thumbnail(tmp_path / f"{name}.ipynb", tmp_path / "t")
    assert (tmp_path / "t" / f"{name}.png").read_bytes().endswith(b"called")
