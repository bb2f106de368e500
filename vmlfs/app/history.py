"""An entry's history: forget backups, protect them, collect garbage, upgrade the store's format.

One function per use case, called by the CLI (and later by the mount's
control files and prune). Deleting is two-sided: :func:`forget` removes
records only — each with one atomic unlink, so a crash leaves a store in
which every remaining backup is whole — and :func:`collect_garbage` frees
what no remaining record needs (docs/FORMAT.md, "Deleting").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vmlfs import names
from vmlfs.app.refs import split_ref
from vmlfs.app.session import Session
from vmlfs.engine import faults
from vmlfs.engine.gc import GcReport, collect
from vmlfs.engine.upgrade import UpgradeReport, upgrade_store
from vmlfs.engine.verify import VerifyReport, verify_store
from vmlfs.errors import InvalidRequest, NotFound, ReadOnly

DEFAULT_GRACE_S = 3600.0
DEFAULT_REPACK_THRESHOLD = 0.2


@dataclass
class ForgetResult:
    forgotten: list[str] = field(default_factory=list)


def _exact(session: Session, ref: str) -> tuple[str, str]:
    """``NAME@TS`` naming one existing backup by its whole timestamp (forget takes no guesses)."""
    name, ts = split_ref(ref)
    if ts is None or ts == "latest" or not names.TIMESTAMP.fullmatch(ts):
        raise InvalidRequest(f"{ref!r}: name the backup by its full timestamp, NAME@YYYYMMDDTHHMMSSZ",
                             hint=f"see 'vmlfs list {name}'")
    if ts not in session.store().timestamps(name):
        raise NotFound(f"entry {name!r} has no backup {ts}", hint=f"see 'vmlfs list {name}'")
    return name, ts


def forget(session: Session, refs: list[str]) -> ForgetResult:
    """Remove the named backups. Refused as a whole, before anything is removed, if one of
    them is protected. The newest may go only because it is named here, by its timestamp."""
    store = session.store()
    store.require_format(2, "forget")
    wanted = [_exact(session, ref) for ref in refs]
    result = ForgetResult()
    for entry in sorted({e for e, _ in wanted}):
        with store.lock(entry):
            protected = store.protected(entry)
            refused = [f"{entry}@{ts}" for e, ts in wanted if e == entry and ts in protected]
            if refused:
                raise ReadOnly(f"{', '.join(refused)} {'is' if len(refused) == 1 else 'are'} protected: not forgotten",
                               hint=f"'vmlfs unprotect {refused[0]}' first if it really should go")
            for ts in sorted({ts for e, ts in wanted if e == entry}):
                faults.step("forget-record")
                store.forget_record(entry, ts)
                result.forgotten.append(f"{entry}@{ts}")
    return result


def protect(session: Session, ref: str, on: bool = True) -> str:
    """Mark a backup as never to be removed by forget or prune (or lift the mark)."""
    store = session.store()
    store.require_format(2, "protect")
    entry, ts = _exact(session, ref)
    with store.lock(entry):
        store.set_protected(entry, ts, on)
    return f"{entry}@{ts}"


def collect_garbage(session: Session, entry: str | None = None, *, repack_threshold: float = DEFAULT_REPACK_THRESHOLD,
                    grace_s: float = DEFAULT_GRACE_S, say: Callable[[str], None] = lambda line: None) -> GcReport:
    """Move aside what no backup needs, repack layers mostly dead (of ``entry``'s backups, or all),
    and delete garbage older than the grace period that no mount may still read."""
    store = session.store(create=False)
    if entry is not None:
        store.load_entry(entry)
    if not 0 <= repack_threshold <= 1:
        raise InvalidRequest("--repack-threshold is a fraction from 0 to 1")
    return collect(store, threshold=repack_threshold, grace=grace_s, entry=entry, say=say)


def upgrade(session: Session, *, dry_run: bool = False,
            say: Callable[[str], None] = lambda line: None) -> tuple[UpgradeReport, VerifyReport | None]:
    """Convert the store to the current format in place, then verify every backup."""
    store = session.store(create=False)
    report = upgrade_store(store, dry_run=dry_run, say=say)
    if dry_run:
        return report, None
    targets = [(e, r.timestamp) for e in store.entry_names() for r in store.backups(e)]
    return report, verify_store(store, targets)
