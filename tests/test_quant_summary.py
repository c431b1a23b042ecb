"""sprint2.quant_summary on a hand-made detector quantize report whose targets and QAT arithmetic can be
worked out by hand."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sprint2 import quant_summary
from sprint2.dataset import Failure
from sprint2.decode import Detections
from sprint2.predict import ImageResult
from sprint2.quant_summary import QuantSummary


def _variant(name: str, mb: float, latency: float, map50: float, map50_95: float) -> dict[str, Any]:
    return {
        "name": name,
        "bytes": int(mb * 1e6),
        "size_ratio": mb / 2.0,
        "latency_ms": latency,
        "latency_spread": 0.1,
        "speedup": 10.0 / latency,
        "map50": map50,
        "map50_95": map50_95,
    }


# Keras float: 10 ms per image. int8 is small and fast but loses 0.05 mAP@0.5; QAT int8 loses 0.01;
# dynamic-range int8 is not 2x faster. The float control gains 0.01 over float32 by training alone.
REPORT: dict[str, Any] = {
    "kind": "detector",
    "reference": {**_variant("keras", 4.0, 10.0, 0.80, 0.50), "predict_latency_ms": 50.0},
    "variants": [
        _variant("float32", 2.0, 8.0, 0.80, 0.50),
        _variant("float16", 1.0, 8.0, 0.80, 0.50),
        _variant("dynamic_int8", 0.5, 6.0, 0.79, 0.49),
        _variant("int8", 0.52, 4.0, 0.75, 0.45),
        _variant("qat_int8", 0.52, 4.0, 0.79, 0.48),
    ],
    "qat": {
        "requested": True,
        "stage": "converted",
        "epochs": [
            {"epoch": 1, "loss": 1.5, "steps": 10, "seconds": 3.0},
            {"epoch": 2, "loss": 1.25, "steps": 10, "seconds": 3.5},
        ],
        "error": None,
        "seconds": 6.5,
        "control": {
            "map50": 0.81,
            "map50_95": 0.51,
            "epochs": [{"epoch": 1, "loss": 1.4}, {"epoch": 2, "loss": 1.125}],
            "stage": "fine-tuned",
            "error": None,
        },
    },
    "test_files": ["t0.jpg", "t1.jpg", "t2.jpg"],
    "files": {"int8": "quantized/int8.tflite"},
    "threads": {"litert": 2, "cpu_count": 2, "tf_intra_op": 0},
    "test_images": 3,
    "rounds": 2,
    "min_seconds": 0.1,
    "batch_size": 8,
    "representative_images": 20,
    "image_size": [64, 96],
}


def _summary(**qat: Any) -> QuantSummary:
    report = copy.deepcopy(REPORT)
    report["qat"].update(qat)
    return QuantSummary(report)


def test_rows_sizes_and_run_facts() -> None:
    summary = _summary()
    rows = summary.rows()
    assert [r["name"] for r in rows] == ["keras", "float32", "float16", "dynamic_int8", "int8", "qat_int8"]
    assert rows[0]["MB"] == 4.0 and summary.sizes_mb()["int8"] == pytest.approx(0.52)
    table = summary.table()
    assert table.columns[0][0] == "variant" and table.cells[4][:3] == ["int8", "0.52", "0.26x"]
    assert table.cells[0][-1] == "-", "the reference has no head differences"
    facts = summary.run_facts()
    assert (facts["h"], facts["w"], facts["intra"]) == (64, 96, "all") and facts["rounds"] == 2
    assert summary.reference_facts()["ratio"] == 5.0


def test_targets_met_and_missed() -> None:
    summary = _summary()
    assert list(summary.checks()) == ["int8", "qat_int8", "dynamic_int8"]
    assert summary.missed() == {
        "int8": "mAP@0.5 drop",
        "qat_int8": "none",
        "dynamic_int8": "speedup vs Keras float",
    }
    assert summary.meets_targets() == {"int8": False, "qat_int8": True, "dynamic_int8": False}
    table = summary.target_table()
    assert [row[0] for row in table.cells] == ["size vs float32", "speedup vs Keras float", "mAP@0.5 drop"]
    assert table.cells[2][:3] == ["mAP@0.5 drop", "<= +0.020", "+0.050 MISSED"]
    no_qat = copy.deepcopy(REPORT)
    no_qat["variants"] = no_qat["variants"][:-1]
    assert QuantSummary(no_qat).missed()["qat_int8"] == "no model to check"
    assert QuantSummary(no_qat).meets_targets()["qat_int8"] is None


def test_what_qat_bought_beside_its_control() -> None:
    summary = _summary()
    assert summary.qat_outcome == "compared"
    facts = summary.qat_facts()
    assert facts["gain"] == pytest.approx(0.04) and facts["extra"] == pytest.approx(0.01)
    assert facts["aware"] == pytest.approx(0.03) and facts["epochs"] == 2 and facts["seconds"] == 6.5
    assert (facts["qmb"], facts["pmb"]) == (0.52, 0.52) and facts["qms"] == facts["pms"] == 4.0
    epochs = summary.qat_table()
    assert epochs is not None and epochs.cells == [
        ["1", "1.5000", "1.4000", "10", "3.0"],
        ["2", "1.2500", "1.1250", "10", "3.5"],
    ]


def test_qat_problems_are_told_in_one_sentence() -> None:
    failed_control = _summary(control={"map50": None, "stage": "fine-tune", "error": "OOM", "epochs": []})
    assert failed_control.qat_outcome == "control failed"
    assert failed_control.qat_problem() == (
        "QAT int8 mAP@0.5 **0.790** against 0.750 for PTQ int8; the float control failed at fine-tune: `OOM`."
    )
    assert failed_control.qat_table() is not None and failed_control.qat_table().cells == []
    report = copy.deepcopy(REPORT)
    report["variants"] = report["variants"][:-1]
    report["qat"].update(stage="convert", error="ValueError: planted", epochs=[], control=None)
    failed = QuantSummary(report)
    assert failed.qat_outcome == "failed" and failed.qat_table() is None
    assert failed.qat_problem() == "Quantization-aware training failed at **convert**: `ValueError: planted`."
    assert (
        failed.figures()["qat_int8_meets_targets"] is None and failed.figures()["qat_control_map50"] is None
    )


def test_key_figures() -> None:
    figures = _summary().figures()
    assert (
        figures["test_images"] == 3 and figures["keras_latency_ms"] == 10.0 and figures["keras_map50"] == 0.8
    )
    assert figures["int8_bytes"] == 520_000 and figures["qat_int8_map50_95"] == 0.48
    assert figures["float16_speedup"] == 1.25 and figures["dynamic_int8_size_ratio"] == 0.25
    assert figures["int8_meets_targets"] is False and figures["qat_int8_meets_targets"] is True
    assert figures["dynamic_int8_meets_targets"] is False
    assert (figures["qat_stage"], figures["qat_error"], figures["qat_epochs"]) == ("converted", None, 2)
    assert figures["qat_control_map50"] == 0.81
    assert len([k for k in figures if k.startswith("float32_")]) == len(quant_summary.FIGURE_KEYS)


def test_prediction_table_counts_images_and_detections(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[tuple[Path, int | None]] = []

    def fake_load(path: Path, num_threads: int | None = None) -> str:
        loaded.append((Path(path), num_threads))
        return path.suffix

    def fake_predict(predictor: str, files: list[Path]) -> list[Any]:
        boxes = 2 if predictor == ".keras" else 1
        dets = Detections([[0, 0, 4, 4]] * boxes, [0.9] * boxes, [0] * boxes)
        return [Failure(str(files[0]), "truncated")] + [ImageResult(f, 8, 8, dets) for f in files[1:]]

    monkeypatch.setattr(quant_summary, "load_predictor", fake_load)
    monkeypatch.setattr(quant_summary, "predict_files", fake_predict)
    table = _summary().prediction_table(Path("models/model.keras"), n=3, num_threads=2)
    assert loaded == [(Path("models/model.keras"), 2), (Path("quantized/int8.tflite"), 2)]
    assert table.cells == [["keras", "2", "4"], ["int8", "2", "2"]]
