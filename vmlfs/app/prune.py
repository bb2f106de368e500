"""Prune: which backups an entry's keep rules remove, shown first, then forgotten and garbage-collected.

The rules are :mod:`vmlfs.engine.retention` (pure); this module feeds them
each entry's backups as the store knows them (times, protection, a backup
whose times cannot be trusted) and then acts through the same use cases as
``vmlfs forget`` and ``vmlfs gc``. ``vmlfs prune``, the mount's
``control/prune-preview`` and ``control/prune`` and a backup with
``--prune-after`` all come here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from vmlfs.app.history import DEFAULT_GRACE_S, DEFAULT_REPACK_THRESHOLD, collect_garbage, forget
from vmlfs.app.session import Session
from vmlfs.engine.gc import GcReport, freed_by_forgetting
from vmlfs.engine.retention import Backup, Decision, Policy, apply_policies, format_report
from vmlfs.errors import InvalidRequest


@dataclass
class PrunePlan:
    """What a prune would do: each entry's decisions, newest first, and the bytes it would free at least."""

    decisions: dict[str, list[Decision]]
    frees: int
    unreadable: list[str] = field(default_factory=list)
    """Backups whose metadata cannot be read: kept, never counted, reported."""

    @property
    def doomed(self) -> list[str]:
        return [f"{entry}@{d.ts}" for entry, ds in self.decisions.items() for d in ds if not d.keep]

    def report(self) -> str:
        lines = format_report(self.decisions)
        lines += "".join(f"keep  {ref}  (ignored: its metadata cannot be read)\n" for ref in self.unreadable)
        return lines

    def summary(self, frees: str) -> str:
        """The last line of a dry run, the CLI's and the mount's (``frees``: the size as each shows sizes)."""
        return f"{backups(len(self.doomed))} to remove; gc would free at least {frees}"


def backups(count: int) -> str:
    """``count`` backups, in words ("1 backup", "3 backups")."""
    return f"{count} backup{'' if count == 1 else 's'}"


@dataclass
class PruneResult:
    plan: PrunePlan
    forgotten: list[str]
    gc: GcReport | None


def stored_policy(session: Session, entry: str) -> Policy:
    """The keep rules entry ``entry`` stores (``vmlfs entry edit NAME --keep-...``)."""
    stored = session.store().load_entry(entry).prune
    if stored is None:
        raise InvalidRequest(f"entry {entry!r} stores no prune policy",
                             hint=f"give keep rules, or store them: vmlfs entry edit {entry} --keep-daily 7 ...")
    return stored.policy


def plan_prune(session: Session, entries: list[str], policy: Policy | None = None,
               now: datetime | None = None) -> PrunePlan:
    """Decide every backup of ``entries`` under ``policy`` (None: each entry's stored policy)."""
    store = session.store()
    store.require_format(2, "prune")
    if not entries:
        raise InvalidRequest("name the entries to prune, or --all")
    groups: dict[str, list[Backup]] = {}
    unreadable: list[str] = []
    for entry in entries:
        protected = store.protected(entry)
        groups[entry] = []
        for record in store.backups(entry):
            if record.meta is None:
                unreadable.append(f"{entry}@{record.timestamp}")
                continue
            groups[entry].append(Backup(record.timestamp, record.meta.started, record.meta.completed,
                                        protected=record.timestamp in protected))
    policies = {entry: policy or stored_policy(session, entry) for entry in entries}
    decisions = apply_policies(groups, policies, now or datetime.now(timezone.utc))
    doomed = frozenset((entry, d.ts) for entry, ds in decisions.items() for d in ds if not d.keep)
    return PrunePlan(decisions, freed_by_forgetting(store, doomed), unreadable)


def prune(session: Session, plan: PrunePlan, *, gc: bool = True, repack_threshold: float = DEFAULT_REPACK_THRESHOLD,
          grace_s: float = DEFAULT_GRACE_S, say: Callable[[str], None] = lambda line: None) -> PruneResult:
    """Forget what ``plan`` removes (protection is checked again, under the lock), then gc unless told not to."""
    doomed = plan.doomed
    forgotten = forget(session, doomed).forgotten if doomed else []
    report = collect_garbage(session, repack_threshold=repack_threshold, grace_s=grace_s, say=say) if gc else None
    return PruneResult(plan, forgotten, report)
