"""The layer rules of raftmq/ (docs/architecture.md, "The tree"), read from the source.

Every import counts: module level, inside functions, and under ``TYPE_CHECKING``, because
each of them is a dependency a reader has to hold in mind.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

import raftmq
import raftmq.errors

ROOT = Path(raftmq.__file__).parent

# Which raftmq packages each layer may import (besides itself and raftmq.errors). A module
# directly in raftmq/ is its own layer ("runtime").
_BELOW_TESTING = {
    "runtime",
    "client",
    "services",
    "node",
    "storage",
    "transport",
    "_amqp",
    "protocol",
    "core",
}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": set(),
    "protocol": {"core"},
    "_amqp": {"protocol", "core"},
    "storage": {"core"},
    "transport": {"_amqp", "protocol", "core"},
    "node": {"storage", "transport", "protocol", "core"},
    "services": {"node", "_amqp", "protocol", "core"},
    "client": {"transport", "_amqp", "protocol", "core"},
    "runtime": {"node", "services", "storage", "transport", "_amqp", "protocol", "core"},
    "testing": _BELOW_TESTING,
    "cli": _BELOW_TESTING | {"testing"},
}

# Libraries below aio-pika's public API: only raftmq._amqp may import them.
INTERNALS = ("aiormq", "pamqp")
# What the sans-I/O core never imports.
IO_LIBRARIES = ("asyncio", "sqlalchemy", "aio_pika", "aiormq", "pamqp", "alembic", "socket")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, wherever it stands."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            for alias in node.names:
                # `from raftmq.a import b` depends on raftmq.a.b when that is a module.
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else base


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "raftmq" or len(parts) == 1:
        return None  # outside raftmq, or the package root (lazy re-exports only)
    return parts[1]


def _graph() -> dict[str, set[str]]:
    return {
        module: {name for _, name in _imports(path) if name in MODULES and name != module}
        for module, path in MODULES.items()
    }


def test_layers_import_only_what_is_below_them() -> None:
    wrong = []
    for module, path in MODULES.items():
        layer = _layer(module)
        if layer is None or layer == "__main__":
            continue
        allowed = ALLOWED[layer] | {layer, "errors"}
        for line, name in _imports(path):
            target = _layer(name)
            if name == "raftmq":
                wrong.append(f"{module}:{line} imports the package root")
            elif name.startswith("raftmq.") and target not in allowed:
                wrong.append(f"{module}:{line} ({layer}) imports {name} ({target})")
    assert wrong == []


def test_only_amqp_touches_aiormq_and_pamqp() -> None:
    wrong = [
        f"{module}:{line} imports {name}"
        for module, path in MODULES.items()
        if _layer(module) != "_amqp"
        for line, name in _imports(path)
        if name.split(".")[0] in INTERNALS
    ]
    assert wrong == []


def test_core_does_no_io() -> None:
    wrong = [
        f"{module}:{line} imports {name}"
        for module, path in MODULES.items()
        if _layer(module) == "core"
        for line, name in _imports(path)
        if name.split(".")[0] in IO_LIBRARIES
    ]
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_rules_cover_every_layer() -> None:
    layers = {_layer(module) for module in MODULES} - {None, "__main__"}
    assert layers == set(ALLOWED)


def test_every_exception_is_in_errors_and_exported() -> None:
    """The exception tree lives in one module and the package root exports all of it."""
    tree = {
        name
        for name, obj in vars(raftmq.errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == "raftmq.errors"
    }
    assert tree <= set(raftmq.__all__)
    for module in MODULES:
        if module.endswith("__main__"):
            continue
        for name, obj in vars(importlib.import_module(module)).items():
            if inspect.isclass(obj) and issubclass(obj, raftmq.errors.RaftMQError):
                assert obj.__module__ == "raftmq.errors", f"{module}.{name} outside errors.py"


@pytest.mark.parametrize("name", raftmq.__all__)
def test_the_public_surface_resolves(name: str) -> None:
    assert getattr(raftmq, name) is not None
