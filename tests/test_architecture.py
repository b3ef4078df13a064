"""The layering of the code, read from the source with `ast`: imports run one way
(features <- training <- serving), no two modules import each other (directly or round
a longer cycle, package `__init__`s included), and a module over 300 lines says why in
its docstring.

An import counts wherever it is written (inside a function too). `import a.b.c` and
`from a.b.c import x` depend on module `a.b.c`; `from a.b import c` depends on `a.b.c`
when that is a module, and on the package `a.b` as well (it reads the package's names).
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("features", "training", "serving")  # each may import only the ones before it
MAX_LINES = 300
SAYS_WHY = re.compile(r"over 300 lines|more than 300 lines|300\+ lines", re.IGNORECASE)



def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def imported_modules(name: str) -> set[str]:
    """The project modules that module `name` imports."""
    known = modules()
    tree = ast.parse(known[name].read_text(), filename=str(known[name]))
    package = name if is_package(name) else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in out if m in known and m != name}


@lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(name) for name in modules()}


def layer(name: str) -> int:
    return LAYERS.index(name.split(".")[0])


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports():
    graph = import_graph()
    assert {"features", "training", "serving"} <= set(graph)
    assert "training.registry" in graph["training.run"]  # `from training import registry`
    assert "training.tracking" in graph["training.registry"]  # `from training.tracking import ...`
    assert "training" in graph["training.run"]  # reads the package's names
    assert "features.errors" in graph["serving.cli.console"]


def test_no_import_runs_up_the_layers():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets if layer(b) > layer(a))
    assert not upward, "imports must run features <- training <- serving:\n" + "\n".join(upward)


def test_no_two_modules_import_each_other():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in found)


def too_long(name: str) -> bool:
    source = modules()[name].read_text()
    docstring = ast.get_docstring(ast.parse(source)) or ""
    return len(source.splitlines()) > MAX_LINES and not SAYS_WHY.search(docstring)


@pytest.mark.parametrize("layer_name", LAYERS)
def test_long_modules_say_why(layer_name):
    long = sorted(m for m in modules() if m.split(".")[0] == layer_name and too_long(m))
    assert not long, (f"over {MAX_LINES} lines without a docstring line saying why "
                      f"('... over 300 lines because ...'): {long}")
