"""The package's shape: imports point one way, units read in one sitting, notebooks hold calls.

Read from the source with `ast` (nothing is imported), so these checks cost a second.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sprint2"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 700
MAX_NOTEBOOK_CODE_LINES = 800


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))}


def _imports(tree: ast.Module, known: set[str]) -> Iterator[tuple[str, list[str]]]:
    """(sprint2 module imported, names taken from it) for every import in the tree, inside functions too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sprint2":
            target = node.module.partition(".")[2]
            if target:
                yield target, [alias.name for alias in node.names]
            else:  # from sprint2 import a, b
                yield from ((alias.name, []) for alias in node.names if alias.name in known)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sprint2."):
                    yield alias.name.split(".")[1], []


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {target for target, _ in _imports(tree, known) if target in known and target != name}
        for name, tree in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] when the graph has none (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_among_the_modules_counting_imports_inside_functions() -> None:
    graph = _graph()
    assert {"training", "experiment", "scoring", "splits"} <= set(graph)
    assert not _cycle(graph), " -> ".join(_cycle(graph))


def test_the_loop_sits_below_the_run_and_the_benchmarks() -> None:
    graph = _graph()
    assert not graph["training"] & {"experiment", "quantize", "bench_training", "bench_detector", "cli"}
    assert not graph["scoring"] & {"training", "experiment"} and not graph["splits"] & {
        "training",
        "experiment",
    }


def test_no_private_name_is_imported_across_modules() -> None:
    modules = _modules()
    crossing = [
        f"{name} takes {target}.{taken}"
        for name, tree in modules.items()
        for target, names in _imports(tree, set(modules))
        for taken in names
        if taken.startswith("_") and not taken.startswith("__")
    ]
    assert not crossing, crossing


def test_functions_and_modules_read_in_one_sitting() -> None:
    long_functions = [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(PACKAGE.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long_functions, long_functions
    long_modules = {
        path.name: lines
        for path in sorted(PACKAGE.glob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long_modules, long_modules


def test_notebooks_are_calls_and_plots() -> None:
    counts = {
        path.name: sum(
            len("".join(cell["source"]).splitlines())
            for cell in json.loads(path.read_text())["cells"]
            if cell["cell_type"] == "code"
        )
        for path in sorted((ROOT / "notebooks").glob("*.ipynb"))
    }
    assert len(counts) == 7 and sum(counts.values()) <= MAX_NOTEBOOK_CODE_LINES, counts
