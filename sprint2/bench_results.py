"""The two benchmarks as notebooks 01 and 03 show them: each result dict in a small object that knows
its tables (and their columns), the numbers the notebook's sentences quote and its key figures.

`LoadingResult` wraps `bench_loading.bench_loading`'s dict, `TimingResult` `bench_training.bench_training`'s.
Light: plain dicts in, rows and `Table`s out; the benchmarks themselves run in the notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sprint2.analysis import (
    allreduce_share_by_model,
    bench_figures,
    bench_model_rows,
    best_row,
    flops_by_model,
    loading_rows,
    primary_model,
    projection_rows_by_model,
    values_by_model,
)
from sprint2.table import Table, table

Row = dict[str, Any]


@dataclass(frozen=True)
class LoadingResult:
    """A bench_loading result: every loading method's images/s, median over interleaved rounds."""

    result: Mapping[str, Any]

    @property
    def rates(self) -> dict[str, float]:
        """Images per second by method, in the benchmark's order."""
        return {name: m["images_per_s"] for name, m in self.result["methods"].items()}

    def table(self) -> Table:
        """Each method's images/s and its ratio to the plain loop ("serial")."""
        columns = [("method", "method", "{}"), ("images/s", "images/s", "{:.0f}")]
        return table(loading_rows(self.result), [*columns, ("vs plain loop", "vs plain loop", "{:.2f}x")])

    def facts(self) -> Row:
        """The result's own numbers, plus the default method's share of the ceiling (cores x plain loop)
        and the original sprint's submit-then-result pattern: its images/s, its ratio to the plain loop and
        that ratio as a change."""
        rates = self.rates
        return {
            **self.result,
            "share": rates[self.result["default"]] / self.result["ceiling"],
            "original": rates["submit_result"],
            "original_vs_serial": rates["submit_result"] / rates["serial"],
            "original_change": rates["submit_result"] / rates["serial"] - 1,
        }

    def figures(self, *, planted_failures: int, cache_second_load_s: float) -> Row:
        """Notebook 01's key figures for the report index, with the two measured beside the benchmark."""
        facts = self.facts()
        return {
            "images": facts["images"],
            "cores": facts["cores"],
            "default_method": facts["default"],
            "speedup_vs_serial": facts["speedup_vs_serial"],
            "vs_tf_data": facts["vs_tf_data"],
            "original_pattern_vs_serial": facts["original_vs_serial"],
            "images_per_s": self.rates,
            "planted_failures": planted_failures,
            "cache_second_load_s": cache_second_load_s,
        }


#: bench_training's rows, one per model and setting: (header, key, format).
SETTING_COLUMNS = [
    ("model", "model", "{}"),
    ("setting", "setting", "{}"),
    ("replicas", "replicas", "{}"),
    ("precision", "precision", "{}"),
    ("global batch", "global_batch", "{}"),
    ("images/s", "images_per_s", "{:.1f}"),
    ("spread", "spread", "{:.1%}"),
    ("step s", "step_s", "{:.4f}"),
    ("epoch start s", "epoch_start_s", "{:.3f}"),
    ("first epoch s", "first_epoch_s", "{:.2f}"),
    ("speedup", "speedup", "{:.2f}"),
    ("efficiency", "efficiency", "{:.2f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
]


@dataclass(frozen=True)
class TimingResult:
    """A bench_training result: every model timed under every setting, its FLOPs against the CPU's matmul
    peak and its projection to several GPUs. `primary` is the model the sentences are about."""

    result: Mapping[str, Any]

    @property
    def primary(self) -> str:
        """The detector when it ran, else the first model."""
        return primary_model(self.result)

    @property
    def projection(self) -> Mapping[str, Any]:
        """The primary model's multi-GPU projection (its rows and any measured GPU points)."""
        return self.result["models"][self.primary]["projection"]

    def model_row(self, model: str | None = None) -> Row:
        """bench_model_rows' row of one model (default: the primary one)."""
        name = model or self.primary
        return next(row for row in bench_model_rows(self.result) if row["model"] == name)

    def by_model(self, key: str) -> dict[str, dict[str, float]]:
        """{model: {setting: row[key]}}, the bars of plot_grouped_bars."""
        return values_by_model(self.result["rows"], key)

    def flops_by_model(self) -> dict[str, dict[str, float]]:
        """{model: {achieved GFLOP/s, matmul peak of its dtype}}, the bars of plot_grouped_bars."""
        return flops_by_model(self.result)

    def settings_table(self) -> Table:
        """One row per model and setting: rate, spread, step and epoch times, speedup, memory."""
        return table(self.result["rows"], SETTING_COLUMNS)

    def models_table(self) -> Table:
        """One row per model: input, batch, precision, parameters, the no-strategy rate, largest spread."""
        return table(
            bench_model_rows(self.result),
            [
                ("model", "model", "{}"),
                ("input", "input", "{}"),
                ("batch / replica", "batch", "{}"),
                ("precision", "precision", "{}"),
                ("parameters", "parameters", "{:,}"),
                ("images/s, no strategy", "images_per_s", "{:.1f}"),
                ("largest spread", "largest_spread", "{:.1%}"),
            ],
        )

    def overhead_table(self) -> Table:
        """Per model, MirroredStrategy x1 against no strategy (time per image), beside the largest spread."""
        return table(
            bench_model_rows(self.result),
            [
                ("model", "model", "{}"),
                ("mirrored x1 overhead (time per image)", "strategy_overhead", "{:+.1%}"),
                ("largest spread of its settings", "largest_spread", "{:.1%}"),
            ],
        )

    def flops_table(self) -> Table:
        """Per model, GFLOP per training image and the share of the matmul peak its training achieves."""
        return table(
            bench_model_rows(self.result),
            [
                ("model", "model", "{}"),
                ("GFLOP / training image", "train_gflop_per_image", "{:.3f}"),
                ("achieved GFLOP/s", "achieved_gflops", "{:.1f}"),
                ("peak dtype", "peak_dtype", "{}"),
                ("matmul peak GFLOP/s", "matmul_gflops", "{:.0f}"),
                ("share of the peak", "fraction_of_peak", "{:.1%}"),
            ],
        )

    def projection_table(self) -> Table:
        """Per model, link and GPU count (1, 2, 4, 8): all-reduce and step times, speedup, images/s."""
        return table(
            projection_rows_by_model(self.result),
            [
                ("model", "model", "{}"),
                ("link", "link", "{}"),
                ("GPUs", "gpus", "{}"),
                ("all-reduce ms", "allreduce_ms", "{:.3f}"),
                ("step ms", "step_ms", "{:.2f}"),
                ("speedup", "speedup", "{:.2f}"),
                ("efficiency", "efficiency", "{:.3f}"),
                ("images/s", "images_per_s", "{:.0f}"),
            ],
        )

    def allreduce_table(self, gpus: int = 8) -> Table:
        """Per model and link, the gradient size and the all-reduce as a share of the compute step."""
        return table(
            allreduce_share_by_model(self.result, gpus=gpus),
            [
                ("model", "model", "{}"),
                ("gradient MB", "gradient_mb", "{:.2f}"),
                ("link", "link", "{}"),
                ("GPUs", "gpus", "{}"),
                ("all-reduce / compute step", "allreduce_share", "{:.1%}"),
            ],
        )

    def run_facts(self) -> Row:
        """How the run went: cores, rounds, seconds per round, load average before and after, the
        settings skipped (with why) as text."""
        skipped = "; ".join(f"{s['setting']} ({s['reason']})" for s in self.result["skipped"]) or "none"
        load = self.result["load_average"]
        keys = ("cores", "rounds", "min_seconds")
        return {
            **{k: self.result[k] for k in keys},
            "load_before": load["before"],
            "load_after": load["after"],
            "skipped": skipped,
        }

    def ceiling_facts(self) -> Row:
        """The primary model's FLOPs per image, achieved GFLOP/s and share of its dtype's matmul peak."""
        return {"model": self.primary, **self.result["models"][self.primary]["cpu_ceiling"]}

    def fastest_cpu(self) -> Row:
        """The primary model's fastest CPU setting (its row), with the machine's cores."""
        row = best_row(self.result["rows"], "images_per_s", device="cpu", model=self.primary)
        return {**row, "cores": self.result["cores"]}

    def feed_facts(self) -> Row:
        """The primary model's host input pipeline (images/s) against what the largest projected GPU
        count needs: feed, gpus, link, need and their ratio need / feed."""
        feed = self.result["models"][self.primary]["cpu_ceiling"]["input_pipeline_images_per_s"]
        top = best_row(self.projection["rows"], "images_per_s")
        return {
            "model": self.primary,
            "cores": self.result["cores"],
            "feed": feed,
            "gpus": top["gpus"],
            "link": top["link"],
            "need": top["images_per_s"],
            "ratio": top["images_per_s"] / feed,
        }

    def figures(self, quick: bool) -> Row:
        """Notebook 03's key figures for the report index (analysis.bench_figures) and the mode."""
        return {**bench_figures(self.result), "quick": quick}
