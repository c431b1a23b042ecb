"""The `sprint2` command line: JSON shapes, exit codes (0 ok, 1 failures, 2 bad usage), clear errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sprint2.cli import _parser, main, parsers
from sprint2.schedule import DEFAULT_BUDGET_S
from sprint2.synthetic import generate, plant_bad_files

pytestmark = pytest.mark.slow  # trains, converts or starts processes: not in `make test-fast`


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One object per image: the inspect test counts one object per image.
    return generate(tmp_path_factory.mktemp("cli") / "data", train=24, test=8, classes=3, seed=3, objects=1)


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_generate_is_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        assert main(["generate", str(tmp_path / name), "--train", "5", "--test", "2", "--seed", "7"]) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len([f for f in files_a if f.suffix == ".jpg"]) == 7
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert "wrote 5 train and 2 test images" in capsys.readouterr().out


def test_inspect_clean_data_exits_0_with_the_documented_json(small: Path, capsys) -> None:
    assert main(["inspect", str(small), "--json"]) == 0
    summary = _json(capsys)
    assert set(summary) == {"images", "objects", "classes", "failed", "dropped_boxes"}
    assert summary["dropped_boxes"] == []
    assert summary["images"] == 32 and summary["objects"] == 32 and summary["failed"] == []
    assert sum(summary["classes"].values()) == 32 and len(summary["classes"]) == 3


def test_inspect_bad_files_exits_1_and_names_each(small: Path, tmp_path: Path, capsys) -> None:
    planted = plant_bad_files(small / "train", tmp_path / "bad")
    assert main(["inspect", str(tmp_path / "bad"), "--json"]) == 1
    summary = _json(capsys)
    assert summary["images"] == 24
    assert sorted(Path(f["path"]).name for f in summary["failed"]) == sorted(p.name for p in planted)
    assert all(f["error"] for f in summary["failed"])

    assert main(["inspect", str(tmp_path / "bad"), "--errors", "raise"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sprint2: error: ") and "bad_" in err


def test_bad_usage_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), "--model", "resnet"])
    assert exit_info.value.code == 2
    assert main(["train", str(tmp_path), "--val-fraction", "1"]) == 2
    assert "--val-fraction must be in [0, 1)" in capsys.readouterr().err


def test_inspect_real_datasets(shared_datasets: Path, capsys) -> None:
    assert main(["inspect", str(shared_datasets / "raccoon"), "--json"]) == 0
    raccoon = _json(capsys)
    assert (raccoon["images"], raccoon["objects"], raccoon["classes"]) == (200, 217, {"raccoon": 217})
    assert main(["inspect", str(shared_datasets / "bccd"), "--json"]) == 0  # a bad box is not a failed file
    bccd = _json(capsys)
    assert bccd["failed"] == [] and bccd["images"] == 364
    assert set(bccd["classes"]) == {"Platelets", "RBC", "WBC"}
    dropped = [(Path(d["path"]).name, d["index"]) for d in bccd["dropped_boxes"]]
    assert dropped == [("BloodImage_00338.xml", 13), ("BloodImage_00343.xml", 4)]
    assert all(d["reason"].startswith("degenerate box") for d in bccd["dropped_boxes"])
    assert main(["inspect", str(shared_datasets / "bccd")]) == 0
    text = capsys.readouterr().out
    assert "0 failed, 2 boxes dropped" in text and "BloodImage_00343.xml: object 4: degenerate box" in text


def test_bench_loading_json_has_median_and_spread_per_method(small: Path, capsys) -> None:
    args = [
        "bench",
        "loading",
        str(small / "train"),
        "--size",
        "32",
        "--rounds",
        "2",
        "--min-seconds",
        "0.05",
    ]
    assert main([*args, "--workers", "2", "--json"]) == 0
    result = _json(capsys)
    assert {"cores", "images", "methods", "best", "speedup_vs_serial", "vs_tf_data"} <= set(result)
    assert result["images"] == 24 and result["rounds"] == 2 and result["min_seconds"] == 0.05
    assert set(result["methods"]) == {"serial", "submit_result", "process", "thread", "tf_data"}
    for method in result["methods"].values():
        rates = method["round_images_per_s"]
        assert len(rates) == 2 and min(rates) > 0
        assert method["images_per_s"] == pytest.approx(float(np.median(rates)))
        assert method["spread"] == pytest.approx((max(rates) - min(rates)) / np.median(rates))


def _help_lines() -> dict[str, dict[str, str]]:
    """Per (sub)command, each argument's help as argparse prints it (defaults filled in)."""
    out = {}
    for name, parser in parsers(_parser()):
        formatter = parser._get_formatter()
        out[name] = {
            "/".join(a.option_strings) or a.dest: formatter._expand_help(a)
            for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        }
    return out


def test_every_option_of_every_subcommand_has_help_stating_its_default() -> None:
    parser = _parser()
    commands = {name for name, _ in parsers(parser)}
    assert {
        "sprint2 generate",
        "sprint2 bench loading",
        "sprint2 bench training",
        "sprint2 train",
    } <= commands
    for name, sub in parsers(parser):
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            text = _help_lines()[name]["/".join(action.option_strings) or action.dest]
            assert text.strip(), f"{label} has no help line"
            if action.option_strings and action.nargs != 0:  # an option with a value: its default is stated
                assert "default" in text, f"{label}: {text!r} does not state its default"
        assert "default: None" not in sub.format_help(), name
        assert sub.description, f"{name} --help has no summary line"
    lines = _help_lines()
    assert lines["sprint2 generate"]["--train"] == "training images (default: 200)"
    assert "(default: runs/train)" in lines["sprint2 train"]["--out"]
    assert "(default: every GPU, else one CPU)" in lines["sprint2 train"]["--replicas"]
    assert f"(default: {DEFAULT_BUDGET_S:.0f})" in lines["sprint2 train"]["--budget"]


def test_help_defaults_are_the_functions_defaults(capsys) -> None:
    from sprint2 import bench_loading, bench_training

    sub = dict(parsers(_parser()))
    loading, training = sub["sprint2 bench loading"], sub["sprint2 bench training"]
    assert loading.get_default("min_seconds") == bench_loading.DEFAULT_MIN_SECONDS
    assert loading.get_default("rounds") == bench_loading.DEFAULT_ROUNDS
    assert training.get_default("min_seconds") == bench_training.DEFAULT_MIN_SECONDS
    assert training.get_default("rounds") == bench_training.DEFAULT_ROUNDS
    assert training.get_default("model") == ",".join(bench_training.DEFAULT_MODELS)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--train TRAIN" in text and "(default: 200)" in text


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sprint2", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


#: Phrases of TensorFlow's start-up notices; the first, absl's banner, appears on every CPU.
STARTUP_NOTICES = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "This TensorFlow binary is optimized",
)


def test_commands_drop_tensorflow_start_up_notices_unless_verbose(tmp_path: Path) -> None:
    """`sprint2 evaluate` on a missing model imports TensorFlow, then fails: the error shows, the notices not.

    With -v the notices are there (absl's banner at least), so the check can fail.
    """
    missing = tmp_path / "missing.keras"
    quiet = _cli("evaluate", str(missing), str(tmp_path))
    loud = _cli("-v", "evaluate", str(missing), str(tmp_path))
    for run in (quiet, loud):
        assert run.returncode == 2, run.stderr[-2000:]
        assert f"sprint2: error: {missing}: model file not found" in run.stderr, run.stderr[-2000:]
        assert "Traceback" not in run.stderr
    assert not [phrase for phrase in STARTUP_NOTICES if phrase in quiet.stderr], quiet.stderr
    assert STARTUP_NOTICES[0] in loud.stderr, f"TensorFlow printed no start-up notice: {loud.stderr!r}"


def test_the_command_filter_keeps_warnings_errors_and_the_last_line_before_an_abort() -> None:
    """A command's filter drops the notices; a Python warning and a native error written just before
    the process aborts (the filter is a process, so it outlives the abort) both reach stderr."""
    code = (
        "import os, warnings\n"
        "from sprint2 import quiet\n"
        "assert quiet.filter_process_stderr() and quiet.filter_process_stderr()\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to"
        " STDERR\\n')\n"
        "os.write(2, b'E0000 00:00:1796127654.495291   31940 cuda_platform.cc:52] failed call to cuInit:"
        " INTERNAL\\n')\n"
        "warnings.warn('a planted python warning')\n"
        "os.write(2, b'F0000 00:00:1.0 1 other.cc:1] a native error, then abort\\n')\n"
        "os.abort()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode < 0 and "Traceback" not in done.stderr, done.stderr  # killed by SIGABRT
    lines = done.stderr.splitlines()
    assert "UserWarning: a planted python warning" in done.stderr, lines
    assert lines[-1] == "F0000 00:00:1.0 1 other.cc:1] a native error, then abort", lines
    assert not [line for line in lines if "InitializeLog" in line or "cuInit" in line], lines


def test_train_then_quantize_json(small: Path, tmp_path: Path) -> None:
    run = _cli(
        "train",
        str(small),
        "--model",
        "improved",
        "--epochs",
        "1",
        "--size",
        "32",
        "--batch",
        "8",
        "--out",
        str(tmp_path / "run"),
        "--val-fraction",
        "0.25",
        "--weight-decay",
        "0.01",
        "--json",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    trained = json.loads(run.stdout)
    assert {
        "strategy",
        "replicas",
        "epochs",
        "train_images",
        "test_images",
        "images_per_s",
        "test",
        "baseline",
    } <= set(trained)
    assert trained["test_images"] == 8 and trained["replicas"] == 1
    assert (trained["val_images"], trained["train_images"]) == (6, 18)  # a quarter of the 24 held out
    for section in ("test", "baseline"):
        assert {"accuracy", "mean_iou", "hit_rate_iou50"} <= set(trained[section])
        assert 0.0 <= trained[section]["mean_iou"] <= 1.0
    model = tmp_path / "run" / "model.keras"
    assert model.is_file() and (tmp_path / "run" / "metrics.json").is_file()

    quick = ["--rounds", "1", "--min-seconds", "0.05"]
    run = _cli("quantize", str(model), str(small), "--out", str(tmp_path / "tflite"), *quick, "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    variants = json.loads(run.stdout)["variants"]
    assert {"float32", "float16", "dynamic_int8", "int8"} <= {v["name"] for v in variants}
    for v in variants:
        assert {"name", "bytes", "size_ratio", "latency_ms", "speedup", "accuracy", "mean_iou"} <= set(v)
        assert (tmp_path / "tflite").is_dir() and v["bytes"] > 0


def test_strategy_errors_are_reported_without_a_traceback(small: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sprint2",
            "train",
            str(small),
            "--strategy",
            "multiworker",
            "--out",
            str(tmp_path / "mw"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 1
    assert "sprint2: error:" in run.stderr and "TF_CONFIG" in run.stderr
    assert "Traceback" not in run.stderr


def test_quantize_a_detector_with_qat(small: Path, tmp_path: Path, capsys) -> None:
    """`sprint2 quantize MODEL DATA --qat --json` on a saved (untrained) detector and its card."""
    import keras

    from sprint2.detector import build_detector
    from sprint2.loading import load_splits
    from sprint2.modelcard import ModelCard

    classes = list(load_splits(small, 64, seed=0)[0].class_names)
    keras.utils.set_random_seed(0)
    model_path = tmp_path / "det" / "model.keras"
    model_path.parent.mkdir()
    build_detector(len(classes), (64, 64), width=0.25).save(model_path)
    extra = {"width": 0.25, "seed": 0, "default_val_fraction": 0.0}
    ModelCard("detector", classes, (64, 64), extra=extra).write(model_path)
    base = ["quantize", str(model_path), str(small), "--rounds", "1", "--min-seconds", "0.02"]
    assert main([*base, "--rounds", "0"]) == 2
    assert "--rounds >= 1" in capsys.readouterr().err
    # --qat-epochs 0: quantize_model, calibration and the int8 conversion without fine-tuning (fast)
    assert main([*base, "--max-images", "3", "--qat", "--qat-epochs", "0", "--json"]) == 0
    result = _json(capsys)
    names = ["float32", "float16", "dynamic_int8", "int8", "qat_int8"]
    assert [v["name"] for v in result["variants"]] == names
    assert result["test_images"] == 3 and result["qat"]["stage"] == "converted"
    assert result["qat"]["epochs"] == []
    for v in result["variants"]:
        assert {"name", "bytes", "size_ratio", "latency_ms", "speedup", "map50", "map50_95"} <= set(v)
        assert (model_path.parent / "tflite" / f"{v['name']}.tflite").is_file()
        assert (model_path.parent / "tflite" / f"{v['name']}.json").is_file()


def _cli_on_a_terminal(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Runs the CLI with stderr on a pseudo-terminal of 120 columns (tqdm draws its bars there only)."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the other end closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "sprint2", *args],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=600,
        )
    finally:
        os.close(slave)
    reader.join(10)
    os.close(master)
    return run, b"".join(chunks).decode(errors="replace")


def test_train_replicas_2_with_strategy_auto_on_cpu_trains_on_two_replicas_and_resumes_visibly(
    small: Path, tmp_path: Path
) -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("with GPUs, auto takes the GPUs")
    out = tmp_path / "run"
    common = ["train", str(small), "--model", "improved", "--size", "32", "--batch", "4", "--out", str(out)]
    common += ["--val-fraction", "0.25"]  # a validation split, whose score the bar shows
    run = _cli(*common, "--replicas", "2", "--strategy", "auto", "--epochs", "1", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    for metrics in (json.loads(run.stdout), json.loads((out / "metrics.json").read_text())):
        assert metrics["replicas"] == 2 and metrics["strategy"] == "auto"
        assert len(metrics["strategy_info"]["devices"]) == 2
    assert "resumed" not in run.stderr

    # One more epoch from the same folder: the run says where it resumed and shows its epoch bar.
    run, stderr = _cli_on_a_terminal(*common, "--replicas", "2", "--epochs", "2")
    assert run.returncode == 0, stderr[-2000:]
    assert "with 2 replica(s)" in run.stdout and "2 epochs" in run.stdout
    assert "(resumed at epoch 2)" in run.stdout
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["replicas"] == 2 and resumed["start_epoch"] == 2
    assert f"resumed from the checkpoint of epoch 1 in {out / 'checkpoints'}" in stderr
    assert "training continues at epoch 2 of 2" in stderr
    assert "2/2" in stderr and "loss=" in stderr and "val_loss=" in stderr and "val_mean_iou=" in stderr
