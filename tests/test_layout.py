"""The layout shows the design: imports run one way, with no cycle, and modules stay small.

facade (``_store``, ``_factory``, ``_affinity``, ...) -> runtime (``_runtime``) -> core
(``_core``) -> model; adapters implement ``adapters.base`` and know nothing of the core or the
runtime. Type-only imports count: a cycle through them is still a cycle for a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "src" / "assistant_sessions"
PACKAGE = "assistant_sessions"
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every library module ``name`` imports (at any depth of the file, type-only included)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                continue
            yield target
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    yield f"{target}.{alias.name}"


GRAPH = {name: sorted(set(_imports(name, path)) & MODULES.keys()) for name, path in MODULES.items()}


def _parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_the_library_has_no_import_cycle() -> None:
    # Edges to a module's own parent packages are how Python imports a submodule; they are not
    # dependencies a reader follows, so only edges to modules outside one's ancestry count.
    def edges(name: str) -> list[str]:
        return [t for t in GRAPH[name] if t not in _parents(name) and t != name]

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in edges(name):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in GRAPH:
        if name not in state:
            visit(name)


def _layer(name: str) -> str:
    rest = name.removeprefix(PACKAGE + ".")
    first = rest.split(".")[0]
    if first in {"_core", "_runtime", "adapters"}:
        return first
    if first in {"model", "errors", "_validate", "_clock"}:
        return "leaf"
    return "facade"


#: Which layers each layer may import.
ALLOWED = {
    "leaf": {"leaf"},
    "adapters": {"adapters", "leaf"},
    "_core": {"_core", "leaf", "adapters"},
    "_runtime": {"_runtime", "_core", "leaf", "adapters"},
    "facade": {"facade", "_runtime", "_core", "leaf", "adapters"},
}


def test_imports_run_one_way() -> None:
    wrong = []
    for name, targets in GRAPH.items():
        layer = _layer(name)
        for target in targets:
            if target == PACKAGE or target in _parents(name):
                continue
            if _layer(target) not in ALLOWED[layer]:
                wrong.append(f"{name} ({layer}) imports {target} ({_layer(target)})")
    assert wrong == []


def test_the_core_imports_only_the_adapter_contract_of_the_adapters() -> None:
    for name, targets in GRAPH.items():
        if _layer(name) in {"_core", "_runtime"}:
            for target in targets:
                if _layer(target) == "adapters":
                    assert target in {f"{PACKAGE}.adapters", f"{PACKAGE}.adapters.base"}, name


def test_only_the_storage_port_knows_whether_an_adapter_is_synchronous() -> None:
    knowing = sorted(
        name
        for name, path in MODULES.items()
        if _layer(name) in {"_runtime", "_core", "facade"}
        and "SynchronousAdapter" in path.read_text()
    )
    assert knowing == [f"{PACKAGE}._runtime.storage"]


#: The load benchmark's package (``bench/assistant_sessions_bench``) keeps to the same limit.
BENCH = Path(__file__).parent.parent / "bench" / "assistant_sessions_bench"
BENCH_MODULES = {f"assistant_sessions_bench.{p.stem}": p for p in sorted(BENCH.glob("*.py"))}


def test_the_benchmark_package_is_found() -> None:
    assert "assistant_sessions_bench._cli" in BENCH_MODULES


@pytest.mark.parametrize("name", sorted(MODULES.keys() | BENCH_MODULES.keys()))
def test_modules_stay_small(name: str) -> None:
    path = MODULES.get(name) or BENCH_MODULES[name]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"
