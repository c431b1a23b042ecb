"""sprint2.notebook: the settings table, setup(), say() and the notebooks' parameters cells."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sprint2 import notebook
from sprint2.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _parameters(path: Path) -> dict[str, object]:
    """Names and literal values assigned in a notebook's cell tagged 'parameters'."""
    cells = json.loads(path.read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    tree = ast.parse("".join(cell["source"]))
    return {
        node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
    }


def test_quick_and_full_values_differ_where_the_table_says() -> None:
    full = notebook.resolve("04_mirrored_training", quick=False)
    quick = notebook.resolve("04_mirrored_training", quick=True)
    assert (full["epochs"], full["batch"], full["size"]) == (40, 16, 64)
    assert (quick["epochs"], quick["batch"], quick["size"]) == (2, 8, 48)
    assert quick["n_cases"] == full["n_cases"] == 8 and quick["strategy"] == "auto"
    assert notebook.resolve("03_cpu_vs_gpu_timing", quick=True)["replicas"] == [1, 2]
    assert notebook.resolve("03_cpu_vs_gpu_timing", quick=False)["replicas"] == [1, 2, 4]
    assert notebook.resolve("01_parallel_loading", quick=True) == {
        "size": 128,
        "rounds": 2,
        "min_seconds": 0.1,
    }


def test_an_explicit_parameter_wins_and_none_takes_the_table() -> None:
    got = notebook.resolve(
        "04_mirrored_training", quick=True, epochs=5, batch=None, strategy="cpu", replicas=2
    )
    assert got["epochs"] == 5 and got["strategy"] == "cpu" and got["replicas"] == 2
    assert got["batch"] == 8  # left at None: the quick table's value
    assert notebook.resolve("07_scaling_out", quick=False, timeout=30)["timeout"] == 30


def test_unknown_names_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"04_mirrored_training: unknown parameter\(s\) epoch, sise"):
        notebook.resolve("04_mirrored_training", quick=False, epoch=3, sise=32)
    with pytest.raises(ValueError, match="unknown notebook '07_nothing'"):
        notebook.resolve("07_nothing", quick=False)


def test_quick_only_overrides_settings_that_full_mode_has() -> None:
    for name, modes in notebook.SETTINGS.items():
        assert set(modes) == {"full", "quick"}, name
        assert set(modes["quick"]) <= set(modes["full"]), name


def test_every_notebook_takes_its_settings_from_the_table() -> None:
    """The parameters cell names the table's settings, each left at None, and the three shared ones."""
    assert [nb.stem for nb in NOTEBOOKS] == list(notebook.SETTINGS)
    for nb in NOTEBOOKS:
        params = _parameters(nb)
        assert set(params) == {"data_dir", "out_dir", "quick"} | set(notebook.SETTINGS[nb.stem]["full"]), (
            nb.name
        )
        left = {
            k: v for k, v in params.items() if k not in ("data_dir", "out_dir", "quick") and v is not None
        }
        assert not left, f"{nb.name}: settings given a value in the parameters cell: {left}"
        assert params["data_dir"] is None and params["quick"] is False


def test_training_defaults_match_run_training() -> None:
    """Notebook 04's full mode trains with run_training's defaults (read from the source: no TensorFlow)."""
    tree = ast.parse((ROOT / "sprint2" / "recipes.py").read_text())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("DEFAULT_EPOCHS", "DEFAULT_BATCH", "DEFAULT_SIZE")
    }
    full = notebook.SETTINGS["04_mirrored_training"]["full"]
    assert constants == {
        "DEFAULT_EPOCHS": full["epochs"],
        "DEFAULT_BATCH": full["batch"],
        "DEFAULT_SIZE": full["size"],
    }


def test_setup_resolves_paths_and_checks_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "voc"
    (data / "train").mkdir(parents=True)
    cfg = notebook.setup("01_parallel_loading", data_dir=str(data), out_dir=tmp_path / "out", quick=True)
    assert cfg.data == data.resolve() and cfg.out == (tmp_path / "out").resolve() and cfg.out.is_dir()
    assert cfg.train_dir == data / "train" and cfg.rounds == 2 and cfg.quick is True
    assert cfg.settings == {"size": 128, "rounds": 2, "min_seconds": 0.1}
    assert "min_seconds" in cfg._repr_html_() and "mode: quick" in str(cfg)
    with pytest.raises(AttributeError, match="no setting 'epochs'"):
        _ = cfg.epochs
    with pytest.raises(DataError, match="missing: data folder does not exist"):
        notebook.setup("01_parallel_loading", data_dir=tmp_path / "missing", out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="unknown parameter"):
        notebook.setup("01_parallel_loading", data_dir=data, out_dir=tmp_path / "out", epochs=3)


def test_setup_reads_the_parameters_cell_from_the_notebooks_namespace(tmp_path: Path) -> None:
    """setup(name, globals()) takes the shared parameters and the notebook's settings, nothing else."""
    data = tmp_path / "voc"
    data.mkdir()
    namespace = {"data_dir": str(data), "out_dir": tmp_path / "out", "quick": True, "rounds": 7, "other": 1}
    cfg = notebook.setup("01_parallel_loading", namespace)
    assert cfg.data == data.resolve() and cfg.quick is True
    assert cfg.settings == {"size": 128, "rounds": 7, "min_seconds": 0.1}
    assert notebook.setup("01_parallel_loading", namespace, rounds=3).rounds == 3


def test_setup_generates_the_quick_synthetic_dataset(tmp_path: Path) -> None:
    cfg = notebook.setup("02_box_visualization", out_dir=tmp_path, quick=True)
    assert cfg.data == (tmp_path / "data" / "synthetic-quick").resolve()
    assert len(list(cfg.train_dir.glob("*.xml"))) == 48


def test_setup_quiets_tensorflow_only_where_the_notebook_runs_a_strategy(tmp_path: Path) -> None:
    tf_logger = logging.getLogger("tensorflow")
    before = tf_logger.level
    (tmp_path / "d").mkdir()
    try:
        tf_logger.setLevel(logging.INFO)
        notebook.setup("01_parallel_loading", data_dir=tmp_path / "d", out_dir=tmp_path)
        assert tf_logger.level == logging.INFO
        notebook.setup("04_mirrored_training", data_dir=tmp_path / "d", out_dir=tmp_path)
        assert tf_logger.level == logging.WARNING
    finally:
        tf_logger.setLevel(before)


def test_say_displays_the_filled_template_as_markdown(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    shown: list[object] = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    assert notebook.say("The model reaches **{accuracy:.1%}** on {n} images.", accuracy=0.1234, n=16) is None
    (markdown,) = shown
    assert isinstance(markdown, IPython.display.Markdown)
    assert markdown.data == "The model reaches **12.3%** on 16 images."
    with pytest.raises(KeyError, match="missing"):
        notebook.say("{missing}")


def test_stopwatch_times_the_block_even_when_it_raises() -> None:
    with notebook.stopwatch() as watch:
        time.sleep(0.05)
    assert 0.05 <= watch.seconds < 1.0
    with pytest.raises(RuntimeError), notebook.stopwatch() as failed:
        time.sleep(0.02)
        raise RuntimeError("boom")
    assert failed.seconds >= 0.02


def test_plot_cases_draws_the_chosen_images() -> None:
    from sprint2.analysis import analyse_cases
    from sprint2.dataset import LoadedDataset

    ds = LoadedDataset(
        images=np.zeros((3, 32, 32, 3), np.uint8),
        boxes=[np.array([[2, 2, 20, 20]], np.float32)] * 3,
        labels=[np.array([0], np.int32)] * 3,
        class_names=["a", "b"],
        paths=[],
        size=(32, 32),
    )
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    cases = analyse_cases(probs, np.tile([2, 2, 20, 20], (3, 1)), ds)
    fig = notebook.plot_cases(ds.images, cases, [1, 2], ds.class_names, title="two cases", ncols=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["a -> b, IoU 1.00", "a -> a, IoU 1.00"], titles


def test_notebook_module_does_not_import_tensorflow() -> None:
    code = "import sys, sprint2.notebook; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_detector_notebook_sizes_fit_the_detector() -> None:
    """05_detector's detector input is the schedule's (None) or multiples of 32, as the detector needs."""
    from sprint2.images import target_size

    for quick in (False, True):
        size = notebook.resolve("05_detector", quick=quick)["detector_size"]
        assert size is None or all(side > 0 and side % 32 == 0 for side in target_size(size)), (quick, size)
    assert notebook.resolve("05_detector", quick=False)["detector_size"] is None
    assert "05_detector" in notebook.QUIET_TENSORFLOW


def test_the_stderr_filter_starts_only_in_a_jupyter_kernel() -> None:
    """Outside a kernel importing sprint2.notebook leaves descriptor 2 alone; inside one it filters it."""
    code = "import sys, sprint2.notebook, sprint2.quiet; print(sprint2.quiet._installed_fd)"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert plain.stdout.split() == ["None"], plain.stdout + plain.stderr
    kernel = subprocess.run(
        [sys.executable, "-c", "import ipykernel; " + code], capture_output=True, text=True
    )
    assert kernel.stdout.split() == ["2"], kernel.stdout + kernel.stderr
