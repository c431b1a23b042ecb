"""Notebook 06's reading of a detector's `sprint2 quantize` report (`quantize.quantize_report`): the
variants' table, the targets each int8 model meets or misses, what quantization-aware training bought
beside its float fine-tuning control, the int8 file in `sprint2 predict`, and the key figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sprint2.analysis import missed_targets, target_rows
from sprint2.predict import ImageResult, load_predictor, predict_files
from sprint2.quantize import QAT_VARIANT, check_targets
from sprint2.table import Table, table

Row = dict[str, Any]

#: The variants' table: (header, key, format).
VARIANT_COLUMNS = [
    ("variant", "name", "{}"),
    ("size (MB)", "MB", "{:.2f}"),
    ("size vs float32", "size_ratio", "{:.2f}x"),
    ("batch-1 ms/image", "latency_ms", "{:.2f}"),
    ("spread", "latency_spread", "{:.0%}"),
    ("speedup vs Keras", "speedup", "{:.2f}x"),
    ("batched ms/image", "batched_ms_per_image", "{:.2f}"),
    ("batched speedup", "batched_speedup", "{:.2f}x"),
    ("mAP@0.5", "map50", "{:.3f}"),
    ("mAP@[.5:.95]", "map50_95", "{:.3f}"),
    ("max |Δ heatmap|", "max_diff_heatmap", "{:.3f}"),
    ("max |Δ size| (px)", "max_diff_size", "{:.2f}"),
]
#: The variants checked against the targets: the two full-integer models and dynamic-range int8,
#: which needs no calibration data.
CHECKED = ("int8", QAT_VARIANT, "dynamic_int8")
#: Per-variant fields kept as key figures ("<variant>_<field>").
FIGURE_KEYS = ("bytes", "size_ratio", "latency_ms", "speedup", "map50", "map50_95")


@dataclass(frozen=True)
class QuantSummary:
    """A detector's quantize report: "reference" (Keras float), "variants" (one row per LiteRT model),
    "qat" (stage, epochs, error and the float "control") and the run's settings."""

    report: Mapping[str, Any]

    @property
    def variants(self) -> dict[str, Mapping[str, Any]]:
        return {row["name"]: row for row in self.report["variants"]}

    def rows(self) -> list[Row]:
        """The Keras reference then every variant, each with its size in MB."""
        rows = [self.report["reference"], *self.report["variants"]]
        return [{**r, "MB": None if r.get("bytes") is None else r["bytes"] / 1e6} for r in rows]

    def table(self) -> Table:
        return table(self.rows(), VARIANT_COLUMNS)

    def sizes_mb(self) -> dict[str, float]:
        """File size in MB by model, for a bar chart."""
        return {r["name"]: r["MB"] for r in self.rows() if r["MB"] is not None}

    def run_facts(self) -> Row:
        """How the measurement ran: the report's fields, input height and width, TensorFlow's threads."""
        r = self.report
        return {
            **r,
            "h": r["image_size"][0],
            "w": r["image_size"][1],
            "intra": r["threads"]["tf_intra_op"] or "all",
        }

    def reference_facts(self) -> Row:
        """The Keras reference row, with how much slower one `model.predict` call is than its traced call."""
        ref = self.report["reference"]
        return {**ref, "ratio": ref["predict_latency_ms"] / ref["latency_ms"]}

    def checks(self) -> dict[str, dict[str, Any]]:
        """quantize.check_targets of each CHECKED variant the report holds."""
        return {name: check_targets(self.report, name) for name in CHECKED if name in self.variants}

    def target_table(self) -> Table:
        """One row per target: its limit and, per checked variant, the value with met or MISSED."""
        return table(target_rows(self.checks()))

    def missed(self) -> dict[str, str]:
        """Per CHECKED variant, the targets it misses ("none"), or "no model to check" when it is absent."""
        checks = self.checks()
        return {
            name: ", ".join(missed_targets(checks[name])) or "none" if name in checks else "no model to check"
            for name in CHECKED
        }

    def meets_targets(self) -> dict[str, bool | None]:
        """Per CHECKED variant, whether it meets every target (None when it is absent)."""
        checks = self.checks()
        return {name: not missed_targets(checks[name]) if name in checks else None for name in CHECKED}

    @property
    def qat_outcome(self) -> str:
        """ "compared" (QAT int8 and its float control both scored), "control failed" or "failed"."""
        control = self.report["qat"].get("control")
        if QAT_VARIANT not in self.variants:
            return "failed"
        return "compared" if control and control.get("map50") is not None else "control failed"

    def qat_table(self) -> Table | None:
        """QAT's loss per epoch beside the control's, steps and seconds; None when no epoch ran."""
        qat = self.report["qat"]
        if not qat["epochs"]:
            return None
        control_epochs = (qat.get("control") or {}).get("epochs", qat["epochs"])
        return table(
            [{**e, "control loss": c["loss"]} for e, c in zip(qat["epochs"], control_epochs)],
            [
                ("epoch", "epoch", "{}"),
                ("QAT loss", "loss", "{:.4f}"),
                ("control loss", "control loss", "{:.4f}"),
                ("steps", "steps", "{}"),
                ("QAT seconds", "seconds", "{:.1f}"),
            ],
        )

    def qat_facts(self) -> Row:
        """QAT int8 against post-training int8, float32 and the float control (qat_outcome "compared").

        gain: QAT's mAP@0.5 over PTQ int8; extra: what the control's extra training alone added to
        float32; aware: the rest, what quantization-awareness bought. Sizes in MB, latency in ms.
        """
        qat, control = self.report["qat"], self.report["qat"]["control"]
        ptq, qrow, f32 = (self.variants[name] for name in ("int8", QAT_VARIANT, "float32"))
        gain = qrow["map50"] - ptq["map50"]
        extra = control["map50"] - f32["map50"]
        return {
            "epochs": len(qat["epochs"]),
            "seconds": qat["seconds"],
            "qat": qrow["map50"],
            "ptq": ptq["map50"],
            "f32": f32["map50"],
            "gain": gain,
            "qat95": qrow["map50_95"],
            "ptq95": ptq["map50_95"],
            "ctl": control["map50"],
            "ctl95": control["map50_95"],
            "extra": extra,
            "aware": gain - extra,
            "qmb": qrow["bytes"] / 1e6,
            "pmb": ptq["bytes"] / 1e6,
            "qms": qrow["latency_ms"],
            "pms": ptq["latency_ms"],
        }

    def qat_problem(self) -> str:
        """What went wrong when qat_outcome is not "compared", in one Markdown sentence."""
        qat = self.report["qat"]
        if self.qat_outcome == "control failed":
            control = qat.get("control")
            return (
                f"QAT int8 mAP@0.5 **{self.variants[QAT_VARIANT]['map50']:.3f}** against "
                f"{self.variants['int8']['map50']:.3f} for PTQ int8; the float control failed at "
                f"{control['stage'] if control else '-'}: `{control['error'] if control else 'not run'}`."
            )
        if self.qat_outcome == "failed":
            return f"Quantization-aware training failed at **{qat['stage']}**: `{qat['error']}`."
        return "QAT int8 and its float control were both scored."

    def prediction_table(self, keras_model: Path, n: int = 16, num_threads: int | None = None) -> Table:
        """The Keras model and the int8 file run by `sprint2 predict`'s code on the first n test images:
        images read and detections kept at each card's threshold."""
        files = [Path(p) for p in self.report["test_files"][:n]]
        models = {"keras": Path(keras_model), "int8": Path(self.report["files"]["int8"])}
        return table(prediction_counts(models, files, num_threads))

    def figures(self) -> Row:
        """Key figures: test images, the Keras reference, every variant's FIGURE_KEYS, whether each
        checked variant meets the targets, and how QAT and its control went."""
        qat, met = self.report["qat"], self.meets_targets()
        ref = self.report["reference"]
        return {
            "test_images": self.report["test_images"],
            "keras_latency_ms": ref["latency_ms"],
            "keras_map50": ref["map50"],
            **{f"{r['name']}_{k}": r[k] for r in self.report["variants"] for k in FIGURE_KEYS},
            "int8_meets_targets": met["int8"],
            "dynamic_int8_meets_targets": met["dynamic_int8"],
            "qat_int8_meets_targets": met[QAT_VARIANT],
            "qat_stage": qat["stage"],
            "qat_error": qat["error"],
            "qat_epochs": len(qat["epochs"]),
            "qat_control_map50": (qat.get("control") or {}).get("map50"),
        }


def prediction_counts(
    models: Mapping[str, Path], files: Sequence[Path], num_threads: int | None = None
) -> list[Row]:
    """Per model file (loaded with its card), the images `predict_files` read and its detections on them."""
    rows = []
    for name, path in models.items():
        predictor = load_predictor(path, num_threads=num_threads)
        results = [r for r in predict_files(predictor, files) if isinstance(r, ImageResult)]
        rows.append(
            {"model": name, "images": len(results), "detections": sum(len(r.detections) for r in results)}
        )
    return rows
