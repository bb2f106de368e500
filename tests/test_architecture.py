"""The pure core imports no I/O adapter: pyfuse3, trio, asyncssh, libvirt, lxml or httpx.

STYLE.md: the tree model, the manifest and layer code, diffing and
retention stay testable without mounts or servers, and every adapter only
translates. This reads the import statements of the core packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vmlfs"
ADAPTERS = {"pyfuse3", "trio", "asyncssh", "libvirt", "lxml", "httpx", "click", "tqdm"}
CORE = sorted([*(ROOT / "archive").glob("*.py"), *(ROOT / "engine").glob("*.py"), ROOT / "names.py", ROOT / "errors.py"])


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_adapter(path: Path) -> None:
    assert not imported_modules(path) & ADAPTERS


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
