"""The shape of vmlfs/fs: an acyclic import graph, nodes that know only the context, a thin adapter.

The graph is read from every import statement of every module, including
imports inside functions and under ``TYPE_CHECKING``: a cycle held together
by a late import is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FS = Path(__file__).resolve().parents[2] / "vmlfs" / "fs"
PACKAGE = "vmlfs.fs"
MODULES = {f"{PACKAGE}.{p.stem}": p for p in sorted(FS.glob("*.py")) if p.stem != "__init__"}
NODE_MODULES = ("protocol", "context", "files", "vm", "archive", "tree")  # the tree model's nodes


def imports(source: str) -> dict[str, set[str]]:
    """Modules of vmlfs.fs that ``source`` imports, each with the names it takes from it."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                base = ".".join([PACKAGE] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:  # from vmlfs.fs import layout
                    found.setdefault(f"{base}.{alias.name}", set())
                elif base in MODULES:
                    found.setdefault(base, set()).add(alias.name)
    return found


GRAPH = {module: set(imports(path.read_text())) for module, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_graph_sees_late_imports() -> None:
    """The reader finds imports inside functions and TYPE_CHECKING blocks, so it can see a hidden cycle."""
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vmlfs.fs.state import MountState\n" \
             "def f():\n    from vmlfs.fs import tree\n    from . import layout\n"
    assert set(imports(source)) == {"vmlfs.fs.state", "vmlfs.fs.tree", "vmlfs.fs.layout"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_inside_vmlfs_fs() -> None:
    assert len(GRAPH) >= 10, GRAPH
    assert find_cycle(GRAPH) is None


@pytest.mark.parametrize("name", NODE_MODULES)
def test_nodes_depend_on_the_context_not_on_the_mount_state(name: str) -> None:
    assert f"{PACKAGE}.state" not in GRAPH[f"{PACKAGE}.{name}"]
    assert f"{PACKAGE}.fuse_adapter" not in GRAPH[f"{PACKAGE}.{name}"]


def test_the_adapter_imports_only_the_protocols_and_the_entry_point() -> None:
    taken = imports(MODULES[f"{PACKAGE}.fuse_adapter"].read_text())
    assert set(taken) == {f"{PACKAGE}.protocol", f"{PACKAGE}.state"}, taken
    assert taken[f"{PACKAGE}.state"] == {"MountState"}
    assert taken[f"{PACKAGE}.protocol"] <= {"FsNode", "Handle", "Listing", "Work", "Attrs"}


def test_only_the_adapter_imports_pyfuse3_or_trio() -> None:
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("pyfuse3", "trio") for n in names):
                assert module == f"{PACKAGE}.fuse_adapter", (module, names)


@pytest.mark.parametrize("path", sorted(FS.glob("*.py")), ids=lambda p: p.name)
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) < 500
