"""The shape of the code, checked: imports point down only, no cycles, small modules, a pure core.

docs/architecture.md declares the order of vmlfs's packages; this test
derives the import graph from the source (every ``import`` statement in the
AST, including those inside functions and under ``TYPE_CHECKING``, so a cycle
cannot hide behind a late import) and fails on

* an import of a package that is not below the importer in that order,
* a cycle between modules (inside a package, too),
* a module over 500 lines,
* an I/O adapter imported by the pure core.

The checks are plain functions over a source tree, so the tests at the end
run them on small made-up trees to show that each one can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "vmlfs"

#: The declared order (docs/architecture.md): a package may import only packages of a lower rank.
#: Packages of one rank do not import each other.
RANKS = {
    "errors": 0,
    "names": 1, "release": 1,
    "archive": 2,
    "engine": 3,
    "backends": 4, "hypervisor": 4,
    "cernvm": 5,
    "app": 6,
    "fs": 7, "webdav": 7, "winfsp_bridge": 7,
    "cli": 8, "__main__": 9,
}
#: The rank-7 front ends that reuse fs/'s tree model: the one exception to "one rank, no imports", and
#: never through the pyfuse3 adapter (fs/ itself may not import them: the rank check still says so).
SHARED_MODEL = {"webdav": "fs", "winfsp_bridge": "fs"}
FUSE_ADAPTER = "vmlfs.fs.fuse_adapter"
MAX_LINES = 500
ADAPTERS = {"pyfuse3", "trio", "asyncssh", "libvirt", "lxml", "httpx", "click", "tqdm", "boto3", "botocore", "wsgidav"}
CORE = ("errors", "names", "release", "archive", "engine")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_statements(path: Path, root: Path) -> list[tuple[str, list[str]]]:
    """Each import of ``path`` as (module, names imported from it); relative imports made absolute."""
    found: list[tuple[str, list[str]]] = []
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


def imports_of(path: Path, root: Path) -> set[str]:
    """The top-level names of everything ``path`` imports."""
    return {module for module, _ in import_statements(path, root)}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports. ``from pkg import mod`` is an edge
    to ``pkg.mod``, and to ``pkg`` itself only when it also imports a name defined there."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for module, imported in import_statements(path, root):
            submodules = {f"{module}.{n}" for n in imported if f"{module}.{n}" in modules}
            edges |= submodules
            if not imported or len(submodules) < len(imported):
                edges.add(module)
        graph[name] = {m for m in edges if m in modules and m != name}
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def order_violations(graph: dict[str, set[str]], ranks: dict[str, int]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        mine = package_of(module)
        for target in sorted(targets):
            theirs = package_of(target)
            if theirs == mine or "." not in target:  # within a package, or the (empty) top package
                continue
            if mine not in ranks or theirs not in ranks:
                unknown = mine if mine not in ranks else theirs
                out.append(f"{module} -> {target}: package {unknown} has no declared rank")
            elif SHARED_MODEL.get(mine) == theirs and target != FUSE_ADAPTER:
                continue
            elif ranks[theirs] >= ranks[mine]:
                out.append(f"{module} -> {target}: {mine} (rank {ranks[mine]}) may not import {theirs} (rank {ranks[theirs]})")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
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


def long_modules(root: Path, limit: int = MAX_LINES) -> list[str]:
    return sorted(f"{p.relative_to(root.parent)}: {n} lines" for p in root.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > limit)


def package_roots() -> list[Path]:
    return [ROOT] + [p for p in [REPO / "winfsp_bridge"] if p.is_dir()]


# the checks on vmlfs itself ------------------------------------------------------------


def test_imports_follow_the_declared_order() -> None:
    assert order_violations(import_graph(ROOT), RANKS) == []


def test_winfsp_bridge_uses_the_model_and_below_only() -> None:
    """winfsp_bridge/ sits beside vmlfs/ at rank 7: it may import app/ and below, and fs/'s model."""
    bridge = REPO / "winfsp_bridge"
    if not bridge.is_dir():
        pytest.skip("no winfsp_bridge/")
    offenders = []
    for path in bridge.rglob("*.py"):
        for module in imports_of(path, bridge):
            parts = module.split(".")
            if parts[0] != "vmlfs" or len(parts) < 2:
                continue
            allowed = RANKS.get(parts[1], 99) < RANKS["winfsp_bridge"] or (parts[1] == "fs" and module != FUSE_ADAPTER)
            if not allowed:
                offenders.append(f"{path.name} -> {module}")
    assert offenders == []


def test_no_import_cycles() -> None:
    for root in package_roots():
        assert cycles(import_graph(root)) == []


def test_no_module_over_500_lines() -> None:
    for root in package_roots():
        assert long_modules(root) == []


@pytest.mark.parametrize("package", CORE)
def test_core_imports_no_adapter(package: str) -> None:
    paths = [ROOT / f"{package}.py"] if (ROOT / f"{package}.py").exists() else sorted((ROOT / package).rglob("*.py"))
    for path in paths:
        top = {m.split(".")[0] for m in imports_of(path, ROOT)}
        assert not top & ADAPTERS, path


#: Each I/O library is imported in one place only (a package prefix or a module).
ADAPTER_HOMES = {
    "libvirt": "vmlfs.hypervisor",
    "asyncssh": "vmlfs.backends.ssh_runner",
    "pyfuse3": "vmlfs.fs.fuse_adapter",
    "trio": "vmlfs.fs.fuse_adapter",
    "wsgidav": "vmlfs.webdav",
    "cheroot": "vmlfs.webdav",
    "winfspy": "winfsp_bridge",  # outside vmlfs/ altogether
    "boto3": "vmlfs.backends.s3_client",
    "botocore": "vmlfs.backends.s3_client",
}


@pytest.mark.parametrize("library", sorted(ADAPTER_HOMES))
def test_each_adapter_library_has_one_home(library: str) -> None:
    home = ADAPTER_HOMES[library]
    offenders = sorted(
        name for path in ROOT.rglob("*.py")
        if not ((name := module_name(path, ROOT)) == home or name.startswith(home + "."))
        and library in {m.split(".")[0] for m in imports_of(path, ROOT)}
    )
    assert offenders == []


def test_only_the_cli_boundary_exits() -> None:
    """Errors become exit codes in one place: vmlfs/cli/main.py (the SSH agent is a separate
    program that runs on the guest, so it has its own exit codes)."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path in (ROOT / "cli" / "main.py", ROOT / "backends" / "ssh_agent.py"):
            continue
        text = path.read_text()
        if "sys.exit(" in text or "raise SystemExit" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# the checks can fail ---------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "vmlfs"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "", "engine/__init__.py": "", "fs/__init__.py": "",
        "engine/backup.py": "def f():\n    from vmlfs.fs import nodes\n",  # hidden inside a function
        "fs/nodes.py": "from vmlfs.engine import backup\n",
    })
    assert order_violations(import_graph(root), RANKS) == [
        "vmlfs.engine.backup -> vmlfs.fs.nodes: engine (rank 3) may not import fs (rank 7)"]


def test_a_sibling_import_is_caught(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"__init__.py": "", "backends/__init__.py": "", "hypervisor/__init__.py": "",
                            "backends/x.py": "import vmlfs.hypervisor.y\n", "hypervisor/y.py": ""})
    assert len(order_violations(import_graph(root), RANKS)) == 1


def test_a_cycle_is_caught_even_behind_type_checking(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "", "fs/__init__.py": "",
        "fs/a.py": "from vmlfs.fs.b import B\n",
        "fs/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vmlfs.fs import c\n",
        "fs/c.py": "from . import a\n",
        "fs/d.py": "from vmlfs.fs import a\n",
    })
    assert cycles(import_graph(root)) == [["vmlfs.fs.a", "vmlfs.fs.b", "vmlfs.fs.c"]]


def test_a_front_end_may_use_the_model_but_not_the_fuse_adapter(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"__init__.py": "", "fs/__init__.py": "", "webdav/__init__.py": "", "fs/tree.py": "",
                            "fs/fuse_adapter.py": "", "webdav/a.py": "from vmlfs.fs import tree, fuse_adapter\n",
                            "fs/b.py": "import vmlfs.webdav.a\n"})
    assert order_violations(import_graph(root), RANKS) == [
        "vmlfs.fs.b -> vmlfs.webdav.a: fs (rank 7) may not import webdav (rank 7)",
        "vmlfs.webdav.a -> vmlfs.fs.fuse_adapter: webdav (rank 7) may not import fs (rank 7)"]


def test_a_long_module_is_caught(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"__init__.py": "", "big.py": "x = 1\n" * 501, "small.py": "x = 1\n" * 500})
    assert long_modules(root) == ["vmlfs/big.py: 501 lines"]


def package_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The package-level import graph: (importer, imported) pairs of distinct packages."""
    return sorted({(package_of(m), package_of(t)) for m, ts in graph.items() for t in ts
                   if "." in t and package_of(m) != package_of(t)})


if __name__ == "__main__":  # python tests/test_architecture.py: print the package graph, lowest rank first
    for importer, imported in sorted(package_edges(import_graph(ROOT)), key=lambda e: (RANKS.get(e[0], 99), e)):
        print(f"{importer:>10} ({RANKS.get(importer, '?')}) -> {imported} ({RANKS.get(imported, '?')})")
