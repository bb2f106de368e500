"""The snapshot tree drawing, from plain records (no libvirt)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from vmlfs.hypervisor.tree import SnapshotInfo, render_tree

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def snap(name: str, parent: str | None = None, minutes: int = 0, *, current: bool = False, state: str = "running", description: str = "") -> SnapshotInfo:
    return SnapshotInfo(name, parent, T0 + timedelta(minutes=minutes), state, description, current)


def test_empty() -> None:
    assert render_tree([]) == "no snapshots\n"


def test_branches_order_current_and_columns() -> None:
    text = render_tree(
        [
            snap("late-root", None, 50),
            snap("b2", "base", 20, state="shutoff"),
            snap("base", None, 0, description="fresh install\nsecond line"),
            snap("b1", "base", 10),
            snap("b1a", "b1", 30, current=True),
        ]
    )
    assert text == (
        "base           2024-05-01 12:00:00Z  running  fresh install\n"
        "├── b1         2024-05-01 12:10:00Z  running\n"
        "│   └── b1a *  2024-05-01 12:30:00Z  running\n"
        "└── b2         2024-05-01 12:20:00Z  shutoff\n"
        "late-root      2024-05-01 12:50:00Z  running\n"
        "(* current snapshot)\n"
    )


def test_missing_parent_and_cycles_still_show_every_snapshot_once() -> None:
    text = render_tree([snap("orphan", "deleted-meanwhile", 0), snap("x", "y", 1), snap("y", "x", 2), snap("self", "self", 3)])
    labels = [line[: line.index("  2024")].strip("└├│─ ") for line in text.splitlines()]
    assert sorted(labels) == ["orphan", "self", "x", "y"]
    assert "(* current" not in text


def test_control_characters_cannot_reach_the_terminal() -> None:
    text = render_tree([snap("evil\x1b[2J", None, 0, description="\x07bell\x1b]0;title\x07")])
    assert "\x1b" not in text and "\x07" not in text
    assert "evil?[2J" in text
