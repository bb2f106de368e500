"""Snapshot records and the text tree ``vmlfs vm snapshots`` prints.

Pure: no libvirt import, so the drawing is unit-tested from plain records and
any front end (CLI, a mount's status file) can draw the same tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    parent: str | None
    created: datetime
    """Creation time, timezone-aware UTC."""
    state: str
    """Domain state the snapshot recorded: running, paused, shutoff, disk-snapshot, ..."""
    description: str
    current: bool


def _printable(text: str) -> str:
    # Names and descriptions come from the hypervisor; never let them move
    # the cursor or inject escape sequences into a terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


def _order(info: SnapshotInfo) -> tuple[datetime, str]:
    return (info.created, info.name)


def render_tree(snapshots: Sequence[SnapshotInfo]) -> str:
    """Draw ``snapshots`` as a tree, oldest first, the current one marked ``*``.

    A snapshot whose parent is not in the list is drawn as a root, so a
    partial listing still shows every snapshot exactly once.
    """
    if not snapshots:
        return "no snapshots\n"
    by_name = {s.name: s for s in snapshots}
    children: dict[str | None, list[SnapshotInfo]] = {}
    for snap in snapshots:
        parent = snap.parent if snap.parent in by_name and snap.parent != snap.name else None
        children.setdefault(parent, []).append(snap)

    rows: list[tuple[str, SnapshotInfo]] = []
    seen: set[str] = set()

    def walk(snap: SnapshotInfo, lead: str, branch: str, child_lead: str) -> None:
        if snap.name in seen:
            return
        seen.add(snap.name)
        rows.append((lead + branch + _printable(snap.name) + (" *" if snap.current else ""), snap))
        kids = sorted(children.get(snap.name, []), key=_order)
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            walk(kid, lead + child_lead, "└── " if last else "├── ", "    " if last else "│   ")

    for root in sorted(children.get(None, []), key=_order):
        walk(root, "", "", "")
    # Parent links that form a cycle have no root; draw what is left as roots.
    for snap in sorted(snapshots, key=_order):
        walk(snap, "", "", "")

    width = max(len(label) for label, _ in rows)
    state_width = max(len(snap.state) for _, snap in rows)
    lines = []
    for label, snap in rows:
        created = snap.created.strftime("%Y-%m-%d %H:%M:%SZ")
        description = _printable(snap.description.splitlines()[0]) if snap.description.strip() else ""
        lines.append(f"{label:<{width}}  {created}  {snap.state:<{state_width}}  {description}".rstrip())
    if any(s.current for s in snapshots):
        lines.append("(* current snapshot)")
    return "\n".join(lines) + "\n"
