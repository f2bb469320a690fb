"""The core's modules depend on each other in one direction, through public names only.

Read from the source (imports under ``TYPE_CHECKING`` count too): every module of
``raftmq.core`` imports only modules listed before it in :data:`ORDER`, and no module
reads or writes another object's ``_private`` attribute (only its own, via ``self``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import raftmq.core

CORE = Path(raftmq.core.__file__).parent

# Lowest first: a module may import only modules to its left.
ORDER = (
    "types",
    "messages",
    "config",
    "log",
    "progress",
    "fast",
    "ready",
    "state",
    "membership",
    "reads",
    "applying",
    "votes",
    "snapshots",
    "replication",
    "election",
    "raft",
)


def _modules() -> dict[str, ast.Module]:
    return {
        path.stem: ast.parse(path.read_text(), str(path))
        for path in sorted(CORE.glob("*.py"))
        if path.stem != "__init__"
    }


def _core_imports(tree: ast.Module) -> set[str]:
    """Names of raftmq.core modules that ``tree`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "raftmq.core":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("raftmq.core."):
                found.add(node.module.removeprefix("raftmq.core.").split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("raftmq.core."):
                    found.add(alias.name.removeprefix("raftmq.core.").split(".")[0])
    return found


def test_every_core_module_is_placed_in_the_order() -> None:
    """A new module must be given its place in ORDER (and so in the layering)."""
    assert sorted(_modules()) == sorted(ORDER)


def test_imports_only_go_down_the_order() -> None:
    """No import cycles, not even TYPE_CHECKING-only ones: each import points left."""
    rank = {name: pos for pos, name in enumerate(ORDER)}
    upward = {
        f"{name} -> {dep}"
        for name, tree in _modules().items()
        for dep in _core_imports(tree)
        if dep not in rank or rank[dep] >= rank[name]
    }
    assert not upward


def test_no_private_attribute_of_another_object() -> None:
    """``x._name`` appears only as ``self._name``: role modules use public state only."""
    offenders = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")
            ):
                offenders.append(f"{name}.py:{node.lineno} {ast.unparse(node)}")
    assert not offenders
