"""The layout is the architecture: packages import only the layers below them, and no module
imports itself back through others. Imports inside functions count: a lazy import still
ties two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Each package and the packages it may import (its own modules always).
LAYERS: dict[str, set[str]] = {
    "core": set(),
    "jobs": {"core"},
    "serving": {"core"},
    "models": {"core", "serving", "jobs"},  # jobs.spark: cluster training's SparkSession
    "pipeline": {"core", "jobs", "serving", "models"},
    "ops": {"core", "jobs", "serving", "models", "pipeline"},
    "benchmarks": {"core", "jobs", "serving", "models", "pipeline", "ops"},
    "dags": {"core", "jobs", "serving", "models", "pipeline"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party_imports(path: Path, modules: set[str]) -> set[str]:
    """Our modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and "." in name:  # a module, not a bare package
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for package in LAYERS for p in (REPO / package).glob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): first_party_imports(p, modules) - {module_name(p)} for p in files}


def test_every_package_imports_only_the_layers_below_it():
    graph = import_graph()
    assert "pipeline.nightly" in graph and "core.settings" in graph  # the walk found the tree
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if (package := module.split(".")[0]) != (other := target.split(".")[0])
        and other not in LAYERS[package]
    )
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_itself_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}) == [
        "a.x",
        "a.y",
        "a.z",
        "a.x",
    ]
    assert find_cycle({"a.x": {"a.y"}, "a.y": set()}) is None
