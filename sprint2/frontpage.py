"""The report's front page: the original sprint's claims against this run's figures, thumbnails, environment.

Claims are data (:data:`CLAIMS`): each names the figures it reads (:data:`FIGURES`, the one place that
knows the keys the notebooks record), how it states them, and the rule that turns them into a
one-word verdict. A figure a notebook did not record makes its claim "not measured", never an error.
A quick report's figures come from a smoke run (tiny data, an epoch or two), so its claims show them
with the verdict "smoke run" instead: the rules were set for the full run's numbers.
Light: standard library only, so the runner can write the page without TensorFlow.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sprint2 import installed_version

logger = logging.getLogger(__name__)

NOT_MEASURED = "not measured"
#: The verdict of every measured claim in a quick report: its figures are shown, not judged.
SMOKE_RUN = "smoke run"
THUMBNAILS_DIR = "thumbnails"
#: A code cell with this tag supplies its notebook's thumbnail; then the first cell calling the
#: notebook's entry in THUMBNAIL_CALLS; then the notebook's first plot.
THUMBNAIL_TAG = "thumbnail"
THUMBNAIL_CALLS: dict[str, str] = {
    "04_mirrored_training": "notebook.plot_cases(",
    "05_detector": "viz.plot_detection_gallery(",
}

Figures = Mapping[str, Any]

#: Every recorded key the claims read: name -> (notebook, candidate keys, the first recorded one wins).
#: ``a.b`` reads entry ``b`` of the dict recorded as ``a``.
FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "load_method": ("01_parallel_loading", ("default_method",)),
    "load_speedup": ("01_parallel_loading", ("speedup_vs_serial",)),
    "original_pattern": ("01_parallel_loading", ("original_pattern_vs_serial",)),
    "cores": ("01_parallel_loading", ("cores",)),
    "planted_failures": ("01_parallel_loading", ("planted_failures",)),
    "dask_identical": ("07_scaling_out", ("dask_identical",)),
    "gpus": ("03_cpu_vs_gpu_timing", ("gpus",)),
    "gpu_speedup": ("03_cpu_vs_gpu_timing", ("gpu_speedup.detector", "gpu_speedup.improved")),
    "cpu_rate_detector": ("03_cpu_vs_gpu_timing", ("no_strategy_images_per_s.detector",)),
    "cpu_rate_improved": ("03_cpu_vs_gpu_timing", ("no_strategy_images_per_s.improved",)),
    "strategy_overhead": (
        "03_cpu_vs_gpu_timing",
        ("strategy_overhead.detector", "strategy_overhead.improved"),
    ),
    "efficiency_x2": (
        "03_cpu_vs_gpu_timing",
        ("mirrored_efficiency.detector x2", "mirrored_efficiency.improved x2"),
    ),
    "train_replicas": ("04_mirrored_training", ("replicas",)),
    "int8_size_ratio": ("06_quantization", ("int8_size_ratio",)),
    "int8_speedup": ("06_quantization", ("int8_speedup",)),
    "int8_map50": ("06_quantization", ("int8_map50",)),
    "float_map50": ("06_quantization", ("float32_map50", "keras_map50")),
    "int8_meets_targets": ("06_quantization", ("int8_meets_targets",)),
    "qat_int8_map50": ("06_quantization", ("qat_int8_map50",)),
    "qat_meets_targets": ("06_quantization", ("qat_int8_meets_targets",)),
    "qat_stage": ("06_quantization", ("qat_stage",)),
    "qat_error": ("06_quantization", ("qat_error",)),
    "detector_map50": ("05_detector", ("detector_map50",)),
    "baseline_map50": ("05_detector", ("baseline_map50",)),
    "test_images": ("05_detector", ("test_images",)),
    "improved_accuracy": ("04_mirrored_training", ("improved_accuracy",)),
}


@dataclass(frozen=True)
class Reading:
    """One way to state a claim: the figures it needs, when it applies, its text and its verdict rule."""

    needs: tuple[str, ...]
    text: str  # str.format over the needed figures
    verdict: Callable[[Figures], str]
    when: Callable[[Figures], bool] = lambda f: True


@dataclass(frozen=True)
class Claim:
    """A claim of the original sprint: what it said, and the readings of this run, in order of preference."""

    key: str
    title: str
    original: str
    notebook: str
    section: str  # the start of the heading the claim's link points at
    readings: tuple[Reading, ...]


def at_least(name: str, met: float, partial: float) -> Callable[[Figures], str]:
    """Verdict rule: "met" from ``met`` up, "partial" from ``partial`` up, else "missed"."""
    return lambda f: "met" if f[name] >= met else "partial" if f[name] >= partial else "missed"


def _targets(flag: str, size: str) -> Callable[[Figures], str]:
    """Verdict rule for a quantized variant: "met" when notebook 06's targets (size, speed and mAP drop)
    all hold, "partial" when it is at least half the size, else "missed"."""
    return lambda f: "met" if f[flag] is True else "partial" if f[size] <= 0.5 else "missed"


def _detection_quality(f: Figures) -> str:
    """Verdict rule for the detector: met at mAP@0.5 0.5 or more and 0.1 over the baseline."""
    margin = f["detector_map50"] - f["baseline_map50"]
    if f["detector_map50"] >= 0.5 and margin >= 0.1:
        return "met"
    return "partial" if margin > 0 else "missed"


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "parallel_loading",
        "Parallel image loading",
        "a concurrent.futures process pool, used submit-then-result: it ran serially; no timing",
        "01_parallel_loading",
        "Every loading method",
        (
            Reading(
                ("load_method", "load_speedup", "original_pattern", "cores"),
                "{load_method}: {load_speedup:.2f}x a plain loop on {cores} cores; "
                "the original's pattern {original_pattern:.2f}x",
                at_least("load_speedup", met=1.3, partial=1.1),
            ),
        ),
    ),
    Claim(
        "task_queue",
        "Task queue",
        "planned, never built",
        "01_parallel_loading",
        "The task queue",
        (
            Reading(
                ("planted_failures", "dask_identical"),
                "built: {planted_failures} planted bad files reported while the rest loads; "
                "on a Dask cluster identical to the process pool: {dask_identical}",
                lambda f: "met" if f["planted_failures"] > 0 and f["dask_identical"] is True else "partial",
            ),
            Reading(
                ("planted_failures",),
                "built: {planted_failures} planted bad files reported while the rest loads",
                lambda f: "partial",
            ),
        ),
    ),
    Claim(
        "cpu_vs_gpu",
        "Training time, CPU vs GPU",
        "10 epochs: 12 min on CPU (sprint 1) vs 47 s on GPU (sprint 2), two screenshots from two sprints",
        "03_cpu_vs_gpu_timing",
        "One run, every model",
        (
            Reading(
                ("gpu_speedup", "gpus"),
                "{gpus} GPU(s): {gpu_speedup:.1f}x the CPU, measured in one run",
                at_least("gpu_speedup", met=1.0, partial=0.0),
            ),
            Reading(
                ("cpu_rate_detector", "cpu_rate_improved", "gpus"),
                "CPU, one run: detector {cpu_rate_detector:.0f} images/s, single-box {cpu_rate_improved:.0f} "
                "images/s; no GPU on this machine",
                lambda f: "partial",
                when=lambda f: f["gpus"] == 0,
            ),
            Reading(
                ("cpu_rate_detector", "gpus"),
                "{gpus} GPU(s) found, no GPU figure recorded; CPU: detector {cpu_rate_detector:.0f} images/s",
                lambda f: "partial",
            ),
        ),
    ),
    Claim(
        "mirrored_strategy",
        "MirroredStrategy training",
        "the model built and compiled in the strategy's scope; no multi-device timing",
        "03_cpu_vs_gpu_timing",
        "What the strategy itself costs",
        (
            Reading(
                ("strategy_overhead", "efficiency_x2", "train_replicas"),
                "one replica costs {strategy_overhead:+.1%} against no strategy; 2 logical-CPU replicas: "
                "{efficiency_x2:.2f} scaling efficiency; notebook 04 trained on {train_replicas} replica(s)",
                lambda f: "met" if abs(f["strategy_overhead"]) <= 0.10 else "partial",
            ),
        ),
    ),
    Claim(
        "post_training_quantization",
        "Post-training quantization",
        '"the size dropped significantly"; no size, speed or accuracy figure',
        "06_quantization",
        "Five conversions",
        (
            Reading(
                ("int8_size_ratio", "int8_speedup", "int8_map50", "float_map50", "int8_meets_targets"),
                "int8: {int8_size_ratio:.2f}x size, {int8_speedup:.1f}x faster than Keras, "
                "mAP@0.5 {int8_map50:.3f} (float {float_map50:.3f})",
                _targets("int8_meets_targets", "int8_size_ratio"),
            ),
        ),
    ),
    Claim(
        "quantization_aware_training",
        "Quantization-aware training",
        "failed with an error the sprint could not solve",
        "06_quantization",
        "What quantization-aware training bought",
        (
            Reading(
                ("qat_int8_map50", "int8_map50", "float_map50", "qat_meets_targets"),
                "QAT int8 mAP@0.5 {qat_int8_map50:.3f} (post-training int8 {int8_map50:.3f}, "
                "float {float_map50:.3f})",
                lambda f: "met" if f["qat_meets_targets"] is True else "partial",
            ),
            Reading(("qat_stage", "qat_error"), "fails at {qat_stage}: {qat_error}", lambda f: "missed"),
        ),
    ),
    Claim(
        "model_quality",
        "Model quality",
        "16.6% class accuracy on 10 classes (4 test images), box MSE 1588-1754",
        "05_detector",
        "3 · One table for every model",
        (
            Reading(
                ("detector_map50", "baseline_map50", "test_images"),
                "detector mAP@0.5 {detector_map50:.2f} on {test_images} test images "
                "(mean-box baseline {baseline_map50:.2f})",
                _detection_quality,
            ),
            Reading(
                ("improved_accuracy",),
                "single-box model: {improved_accuracy:.1%} class accuracy",
                at_least("improved_accuracy", met=0.5, partial=0.166),
            ),
        ),
    ),
)


def figure(figures: Mapping[str, Mapping[str, Any]], name: str) -> Any:
    """The value of FIGURES entry ``name`` from the recorded figures by notebook; None when not recorded."""
    return _lookup(figures, name)[1]


def _lookup(figures: Mapping[str, Mapping[str, Any]], name: str) -> tuple[str, Any]:
    """The first recorded candidate key of FIGURES entry ``name``, as (``notebook:key``, value)."""
    notebook, keys = FIGURES[name]
    recorded = figures.get(notebook, {})
    for key in keys:
        head, _, entry = key.partition(".")
        value = recorded.get(head)
        if entry:
            value = value.get(entry) if isinstance(value, Mapping) else None
        if value is not None:
            return f"{notebook}:{key}", value
    return "", None


def read_claims(
    figures: Mapping[str, Mapping[str, Any]], anchors: Mapping[str, str] | None = None, *, quick: bool = False
) -> list[dict[str, Any]]:
    """Each claim with this run's text, verdict, the keys it read and the link to its notebook section.

    ``anchors`` maps a notebook name to its HTML file; without one the claim links nowhere. In a quick
    run (``quick``) a measured claim's verdict is SMOKE_RUN: the verdict rules are not applied.
    """
    rows = []
    for claim in CLAIMS:
        row: dict[str, Any] = {
            "key": claim.key,
            "claim": claim.title,
            "original": claim.original,
            "measured": NOT_MEASURED,
            "verdict": NOT_MEASURED,
            "figures": {},
            "link": (anchors or {}).get(claim.key, ""),
        }
        for reading in claim.readings:
            values = {name: figure(figures, name) for name in reading.needs}
            if any(v is None for v in values.values()) or not reading.when(values):
                continue
            verdict = SMOKE_RUN if quick else reading.verdict(values)
            row.update(measured=reading.text.format(**values), verdict=verdict)
            row["figures"] = {name: _lookup(figures, name)[0] for name in reading.needs}
            break
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- executed notebooks
def section_anchor(html_text: str, heading: str) -> str:
    """The id nbconvert gave the first heading that starts with ``heading``; empty when there is none."""
    want = _normalise(heading)
    for match in re.finditer(r"<h[1-6][^>]*\bid=\"([^\"]+)\"[^>]*>(.*?)</h[1-6]>", html_text, re.S):
        text = _normalise(re.sub(r"<[^>]+>", "", match.group(2)).replace("¶", ""))
        if text.startswith(want):
            return html.unescape(match.group(1))
    return ""


def _normalise(text: str) -> str:
    return " ".join(html.unescape(text).replace("`", "").split()).lower()


def claim_links(out: Path, html_files: Mapping[str, str]) -> dict[str, str]:
    """Per claim, the link into its notebook's HTML at its section (the file alone when not found)."""
    links = {}
    cache: dict[str, str] = {}
    for claim in CLAIMS:
        name = html_files.get(claim.notebook, "")
        if not name or not (out / name).is_file():
            continue
        if name not in cache:
            cache[name] = (out / name).read_text(encoding="utf-8")
        anchor = section_anchor(cache[name], claim.section)
        links[claim.key] = f"{name}#{anchor}" if anchor else name
    return links


def extract_thumbnail(executed: Path, target_dir: Path) -> str:
    """Save the executed notebook's representative plot as PNG in ``target_dir``; its path, or "".

    The representative plot is the first of a cell tagged THUMBNAIL_TAG, else of the first cell that
    makes the notebook's THUMBNAIL_CALLS call, else the notebook's first plot.
    """
    if not executed.is_file():
        return ""
    try:
        cells = json.loads(executed.read_text(encoding="utf-8")).get("cells", [])
    except ValueError as exc:
        logger.warning("%s: no thumbnail, the notebook does not parse (%s)", executed, exc)
        return ""
    tagged = [c for c in cells if THUMBNAIL_TAG in c.get("metadata", {}).get("tags", [])]
    call = THUMBNAIL_CALLS.get(executed.stem)
    calling = [c for c in cells if call and call in "".join(c.get("source", ""))]
    for cell in tagged + calling + cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                target_dir.mkdir(parents=True, exist_ok=True)
                target = target_dir / f"{executed.stem}.png"
                target.write_bytes(base64.b64decode("".join(png) if isinstance(png, list) else png))
                return f"{target_dir.name}/{target.name}"
    return ""


# ----------------------------------------------------------------------------- the run's environment
#: The libraries whose versions the front page lists: its key, then the distribution's pip name.
_LIBRARIES = {
    "tensorflow": "tensorflow",
    "keras": "keras",
    "tf_keras": "tf_keras",
    "litert": "ai-edge-litert",
}


def environment(
    figures: Mapping[str, Mapping[str, Any]], *, quick: bool, seeds: Sequence[Any]
) -> dict[str, Any]:
    """Where and how this run happened: machine, cores, GPUs, versions, seed, commit, date, mode."""
    gpus = figure(figures, "gpus")
    return {
        "machine": _cpu_model(),
        "cores": os.cpu_count(),
        "gpus": gpus if gpus is not None else NOT_MEASURED,
        "python": platform.python_version(),
        **{key: installed_version(dist) or "not installed" for key, dist in _LIBRARIES.items()},
        "seed": ", ".join(sorted({str(s) for s in seeds})) or NOT_MEASURED,
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": "quick (small synthetic data, few epochs: a smoke run, not a measurement)"
        if quick
        else "full",
    }


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()}, {platform.system()})"
    return platform.processor() or platform.machine() or "unknown"


def _git_commit() -> str:
    """The checkout's commit, "+ local changes" when tracked files differ from it; "unknown" outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} + local changes" if dirty else commit


# ----------------------------------------------------------------------------- the page
def render(
    *,
    claims: Sequence[Mapping[str, Any]],
    notebooks: Sequence[Mapping[str, Any]],
    env: Mapping[str, Any],
    data_dir: str,
    quick: bool = False,
) -> str:
    """The front page's HTML: claims table, notebook thumbnails, environment, raw figures folded away.

    A quick run's page says once, above the claims, that its figures are not judged.
    """
    claim_rows = "\n".join(_claim_row(c) for c in claims)
    cards = "\n".join(_notebook_card(n) for n in notebooks)
    env_rows = "".join(
        f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in env.items()
    )
    raw = "\n".join(_raw_figures(n) for n in notebooks)
    return _PAGE.format(
        mode=html.escape(str(env.get("mode", ""))),
        date=html.escape(str(env.get("date", ""))),
        data=html.escape(data_dir),
        note=_SMOKE_NOTE if quick else "",
        claims=claim_rows,
        cards=cards,
        env=env_rows,
        raw=raw,
        count=sum(len(n.get("figures", {})) for n in notebooks),
    )


def _claim_row(claim: Mapping[str, Any]) -> str:
    verdict = str(claim["verdict"])
    link = str(claim.get("link", ""))
    label = link.split("#")[0].removesuffix(".html")
    where = f'<a href="{html.escape(link)}">{html.escape(label)}</a>' if link else ""
    return (
        f'<tr class="claim" id="claim-{html.escape(claim["key"])}"><td>{html.escape(claim["claim"])}</td>'
        f"<td>{html.escape(claim['original'])}</td><td>{html.escape(claim['measured'])}</td>"
        f'<td class="verdict {verdict.replace(" ", "-")}">{html.escape(verdict)}</td><td>{where}</td></tr>'
    )


def _notebook_card(run: Mapping[str, Any]) -> str:
    name = html.escape(run["name"])
    link = html.escape(run.get("html", ""))
    thumb = run.get("thumbnail", "")
    image = f'<img src="{html.escape(thumb)}" alt="{name}">' if thumb else '<div class="noplot">no plot</div>'
    body = f'<a href="{link}">{image}</a>' if link else image
    title = f'<a href="{link}">{name}</a>' if link else name
    status = html.escape(run["status"])
    error = f'<div class="error">{html.escape(run["error"])}</div>' if run.get("error") else ""
    return (
        f'<figure class="notebook {status.replace(" ", "-")}" id="notebook-{name}">{body}'
        f"<figcaption>{title}<br>{status}, {float(run.get('seconds', 0.0)):.1f} s{error}</figcaption>"
        "</figure>"
    )


def _raw_figures(run: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in sorted(run.get("figures", {}).items())
    )
    return f'<h3>{html.escape(run["name"])}</h3><table class="raw">{rows}</table>' if rows else ""


def _fmt(value: Any) -> str:
    """A figure as text: floats to 4 significant digits, dicts as k=v pairs."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


#: Said once on a quick report's page, above the claims.
_SMOKE_NOTE = (
    '<p class="smoke">Quick mode: every figure below comes from a smoke run (few images, an epoch or two, '
    "short timings), so quick-mode figures are not judged: each measured claim reads "
    f'"{SMOKE_RUN}". The verdicts come from the full report (<code>make report</code>).</p>\n'
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sprint 2, reproduced</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 76rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .45rem; text-align: left; vertical-align: top; }}
td.verdict {{ font-weight: bold; white-space: nowrap; }}
.met {{ color: #1a7f37; }} .partial {{ color: #9a6700; }} .missed {{ color: #cf222e; }}
.not-measured, .smoke-run {{ color: #888; }}
p.smoke {{ background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .75rem; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure.notebook {{ margin: 0; width: 15rem; }} figure.notebook img {{ width: 15rem; border: 1px solid #ddd; }}
figure.failed figcaption {{ color: #cf222e; }} figure.not-run {{ color: #888; }}
.noplot {{ width: 15rem; height: 8rem; border: 1px dashed #bbb; display: flex; align-items: center;
  justify-content: center; color: #888; }}
.error {{ color: #cf222e; }} table.raw td {{ padding: .15rem .45rem; }} table.env th {{ width: 10rem; }}
</style></head><body>
<h1>Sprint 2, reproduced</h1>
<p>Mode: {mode}. Written {date}. Data: <code>{data}</code>.</p>
<h2>The sprint's claims, measured</h2>
{note}<table class="claims"><thead><tr><th>Claim</th><th>Original sprint</th><th>This run</th><th>Verdict</th>
<th>Shown in</th></tr></thead>
<tbody>
{claims}
</tbody></table>
<h2>Notebooks</h2>
<div class="cards">
{cards}
</div>
<h2>Environment</h2>
<table class="env">{env}</table>
<details><summary>Every recorded figure ({count})</summary>
{raw}
</details>
</body></html>
"""
