"""The shape of vmlfs/fs: nodes that know only the context, and an adapter that knows only the protocols.

The import graph is the one tests/test_architecture.py derives (every import
statement, including those inside functions and under ``TYPE_CHECKING``);
that test also checks there is no cycle, no module over 500 lines, and that
only the adapter imports pyfuse3 and trio. Here: what the tree model may
depend on, so a WebDAV or WinFsp adapter can reuse it unchanged.
"""

from __future__ import annotations

import pytest

from tests.test_architecture import ROOT, import_graph, import_statements

PACKAGE = "vmlfs.fs"
NODE_MODULES = ("protocol", "context", "files", "vm", "archive", "tree")  # the tree model's nodes
GRAPH = import_graph(ROOT)


@pytest.mark.parametrize("name", NODE_MODULES)
def test_nodes_depend_on_the_context_not_on_the_mount_state(name: str) -> None:
    assert f"{PACKAGE}.state" not in GRAPH[f"{PACKAGE}.{name}"]
    assert f"{PACKAGE}.fuse_adapter" not in GRAPH[f"{PACKAGE}.{name}"]


def test_the_adapter_imports_only_the_protocols_and_the_entry_point() -> None:
    taken: dict[str, set[str]] = {}
    for module, names in import_statements(ROOT / "fs" / "fuse_adapter.py", ROOT):
        if module.startswith("vmlfs."):
            taken.setdefault(module, set()).update(names)
    assert set(taken) <= {f"{PACKAGE}.protocol", f"{PACKAGE}.state", "vmlfs.errors"}, taken
    assert taken[f"{PACKAGE}.state"] == {"MountState"}
    assert taken[f"{PACKAGE}.protocol"] <= {"FsNode", "Handle", "Listing", "Work", "Attrs"}


@pytest.mark.parametrize("package", [ROOT / "webdav", ROOT.parent / "winfsp_bridge"], ids=["webdav", "winfsp_bridge"])
def test_the_other_adapters_use_the_same_entry_points(package) -> None:
    """WebDAV and WinFsp see the tree as FUSE does (protocols and MountState), plus the two helpers for
    clients without Unix names or symlinks, and ``control.Jobs`` where they build a MountState; never the nodes."""
    allowed = {f"{PACKAGE}.{m}" for m in ("protocol", "state", "control", "winnames", "links")}
    root = ROOT if package.parent == ROOT else package
    used = {module for path in package.rglob("*.py") for module, _ in import_statements(path, root)
            if module.startswith(PACKAGE)}
    assert used and used <= allowed, used
