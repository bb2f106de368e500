"""One result row of the benchmarks, printed the same way by every part, with its target checked.

A row compares our figure with a peer's from the same run (``ours / theirs =
ratio``) or, with no peer, holds an absolute figure (the mount's peak RSS,
the worst cold cat). Its target bounds the ratio or the absolute figure from
above (``<=``) or below (``>=``); a row without a target is only reported.

The parts run as subprocesses (each mounts, starts servers or changes its
environment): they print their rows as JSON lines tagged ``ROW_TAG`` when run
with ``--json``, which bench/run.py collects; run on their own they print the
rows in the readable form.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

ROW_TAG = "@row "


@dataclass(frozen=True)
class Row:
    name: str
    ours: float
    unit: str
    theirs: float | None = None  # None: an absolute row, the target bounds ``ours``
    op: str = ""  # "<=", ">=" or "" (reported, no target)
    limit: float = 0.0

    @property
    def ratio(self) -> float | None:
        return None if self.theirs is None else self.ours / self.theirs

    @property
    def ok(self) -> bool:
        value = self.ours if self.ratio is None else self.ratio
        return {"<=": value <= self.limit, ">=": value >= self.limit, "": True}[self.op]

    def target(self) -> str:
        if not self.op:
            return "report"
        sign = "≤" if self.op == "<=" else "≥"
        return f"{sign} {self.limit:g}×" if self.theirs is not None else f"{sign} {self.limit:g} {self.unit}"

    def format(self) -> str:
        if self.ratio is None:
            figure = f"{self.ours:.3f} {self.unit}"
        else:
            figure = f"{self.ours:.3f} / {self.theirs:.3f} {self.unit} = {self.ratio:.2f}×"
        verdict = ("ok" if self.ok else "MISSED") if self.op else ""
        return f"{self.name}: {figure} (target {self.target()}) {verdict}".rstrip()

    def json_line(self) -> str:
        return ROW_TAG + json.dumps(asdict(self))


def parse(line: str) -> Row | None:
    """The row a part printed on this line, or None for any other output."""
    return Row(**json.loads(line[len(ROW_TAG):])) if line.startswith(ROW_TAG) else None


def ratio_row(name: str, ours: float, theirs: float, unit: str, target: str = "") -> Row:
    """A row against a peer; ``target`` like ``"<= 0.5"`` or ``">= 1.3"`` (empty: report only)."""
    op, _, limit = target.partition(" ")
    return Row(name, ours, unit, theirs, op, float(limit or 0))


def value_row(name: str, ours: float, unit: str, target: str = "") -> Row:
    """An absolute row, ``target`` as for :func:`ratio_row` but bounding the figure itself."""
    op, _, limit = target.partition(" ")
    return Row(name, ours, unit, None, op, float(limit or 0))


def emit(rows: list[Row], as_json: bool) -> None:
    """Print a part's rows: JSON lines for bench/run.py, or readable lines."""
    for row in rows:
        print(row.json_line() if as_json else row.format(), flush=True)
