"""The import-layer contract: imports go one way through the layers, no module imports itself
back through others (no cycles), only the command line knows typer and rich.

Layers, lowest first (README "Architecture"): utils → metrics → data → models → training →
methods/usages/explain → report → audit → experiment → {bench, paper features, validation} → cli.
A module may import from its own layer or a lower one. Every import counts — at module level and
inside functions — except those under ``if TYPE_CHECKING:`` (annotations only, never executed).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medequity"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("utils", ("medequity", "medequity.utils", "medequity.registry", "medequity.provenance")),
    ("metrics", ("medequity.metrics",)),
    ("data", ("medequity.data",)),
    ("models", ("medequity.models",)),
    ("training", ("medequity.training",)),
    ("methods", ("medequity.methods", "medequity.usages", "medequity.explain")),
    ("report", ("medequity.report",)),
    ("audit", ("medequity.audit",)),
    ("experiment", ("medequity.experiment",)),
    ("features", ("medequity.bench", "medequity.fairdi", "medequity.fairtune", "medequity.fair_diagnosis",
                  "medequity.validation")),
    ("cli", ("medequity.cli", "medequity.__main__")),
]
CLI_ONLY = ("typer", "click", "rich")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "medequity" and module.startswith(prefix + "."))
            if matches and len(prefix) > depth:
                best, depth = index, len(prefix)
    if best < 0:
        raise AssertionError(f"module {module} is in no layer: add its package to LAYERS and the README")
    return best


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(tree: ast.AST, modules: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every executed import; ``from pkg import sub`` names the submodule."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in getattr(node, "orelse", []):
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.append((candidate if candidate in modules else node.module, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(ast.parse(path.read_text(encoding="utf-8")), modules) for name, path in files.items()}


def test_every_module_belongs_to_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_imports_go_down_the_layers(graph):
    upward = []
    for module, imported in graph.items():
        for target, line in imported:
            if target.split(".")[0] != "medequity" or target == "medequity":
                continue
            if layer_of(target) > layer_of(module):
                upward.append(f"{module}:{line} imports {target} "
                              f"({LAYERS[layer_of(module)][0]} → {LAYERS[layer_of(target)][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles(graph):
    edges = defaultdict(set)
    for module, imported in graph.items():
        for target, _ in imported:
            if target in graph and target != module:
                edges[module].add(target)
    assert not strongly_connected(dict(edges)), f"import cycles: {strongly_connected(dict(edges))}"


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_only_the_command_line_imports_typer_and_rich(graph):
    offenders = [f"{module}:{line} imports {target}" for module, imported in graph.items() for target, line in imported
                 if target.split(".")[0] in CLI_ONLY and layer_of(module) != len(LAYERS) - 1]
    assert not offenders, "library code must report progress through callbacks, not build a UI:\n" + "\n".join(offenders)


def test_an_upward_import_is_caught():
    tree = ast.parse("def f():\n    from medequity.cli.common import fail\n")
    imported = imports_of(tree, {"medequity.cli.common"})
    assert imported == [("medequity.cli.common", 2)]
    assert layer_of("medequity.cli.common") > layer_of("medequity.metrics.groups")
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medequity.cli import app\n")
    assert imports_of(guarded, set()) == [("typing", 1)]
