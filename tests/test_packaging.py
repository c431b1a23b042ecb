"""Packaging promises: the two dependency lists agree, the import stays light, notebooks are clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The distribution name of a requirement, normalised (extras and versions dropped)."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _environment_pip_deps() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    deps = []
    for line in lines[start + 1 :]:
        match = re.match(r"^\s+- (.+)$", line)
        if not match:
            break
        deps.append(match.group(1))
    return [d for d in deps if not d.startswith("-e")]


def test_runtime_dependencies_agree_with_environment_yml() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(d): d for d in project["dependencies"]}
    extras = {_name(d): d for group in project["optional-dependencies"].values() for d in group}
    env = {_name(d): d for d in _environment_pip_deps()}
    assert runtime, "pyproject lists no dependencies"
    missing = sorted(set(runtime) - set(env))
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"
    unknown = sorted(set(env) - set(runtime) - set(extras))
    assert not unknown, f"in environment.yml but in no pyproject.toml list: {unknown}"
    for name, spec in runtime.items():
        assert env[name].replace(" ", "") == spec.replace(" ", ""), f"{name}: versions differ"


# Modules that must import without TensorFlow or Keras (the loading workers and the CLI's start-up).
LIGHT_MODULES = ["sprint2"] + [
    f"sprint2.{name}"
    for name in "errors dataset table decode cli report voc images taskqueue cache loading synthetic viz "
    "bench_loading bench_training evaluate frontpage quiet notebook schedule metrics modelcard analysis "
    "launch experiment predict recipes splits scoring timing drawing bench_results single_box_runs".split()
]


def test_light_modules_do_not_import_tensorflow() -> None:
    """Imports each light module in turn in a fresh interpreter; names the first that pulls in TF or Keras."""
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    heavy = sorted({'tensorflow', 'keras'} & set(sys.modules))\n"
        "    if heavy:\n"
        "        sys.exit(f'{name} imports {heavy}')\n"
        "print('light')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["light"], out.stdout + out.stderr


def test_notebooks_are_committed_clean_with_a_parameters_cell() -> None:
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 5
    numbers = [int(nb.name[:2]) for nb in notebooks]
    assert numbers == list(range(1, len(notebooks) + 1)), "notebooks must be numbered 01..0N"
    for nb in notebooks:
        cells = json.loads(nb.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), nb.name
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters'"
        source = "".join(tagged[0]["source"])
        for name in ("data_dir", "out_dir", "quick"):
            assert re.search(rf"^{name}\s*=", source, re.M), f"{nb.name}: parameter {name} missing"


def test_ci_runs_make_test_and_readme_starts_with_the_two_commands() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    head = (ROOT / "README.md").read_text()[:600]
    assert "make report" in head and "make test" in head


def test_installed_version_reads_the_metadata_and_says_none_when_absent() -> None:
    import numpy

    from sprint2 import installed_version

    assert installed_version("numpy") == numpy.__version__
    assert installed_version("no-such-distribution-sprint2") is None
