"""``NAME[@TS]``: which backup a user means, resolved once for every command and control file."""

from __future__ import annotations

from vmlfs import names
from vmlfs.engine.store import StoreLayout
from vmlfs.errors import InvalidRequest, NotFound


def split_ref(ref: str) -> tuple[str, str | None]:
    """``NAME[@TS]`` -> (name, ts-or-prefix, or None for the newest)."""
    name, _, ts = ref.partition("@")
    names.entry_name(name)
    return name, (ts or None)


def check_ref(ref: str) -> str:
    """Refuse a malformed ``NAME[@TS-PREFIX|@latest]`` without asking the store."""
    name, ts = split_ref(ref)
    if ts is not None and ts != "latest" and not names.TIMESTAMP.fullmatch(ts + "20000101T000000Z"[len(ts):]):
        raise InvalidRequest(f"{ts!r} is not a timestamp or a prefix of one")
    return ref


def resolve_backup(store: StoreLayout, ref: str) -> tuple[str, str]:
    """``NAME[@TS]``: the newest readable backup, ``@latest`` (the same), or a unique timestamp prefix."""
    name, ts = split_ref(ref)
    records = store.backups(name)
    stamps = [r.timestamp for r in records]
    if not stamps:
        raise NotFound(f"entry {name!r} has no backups yet", hint=f"take one with 'vmlfs backup {name}'")
    if ts is None or ts == "latest":
        readable = [r.timestamp for r in records if r.meta is not None]  # a damaged newest is no one's latest
        return name, (readable or stamps)[-1]
    matches = [s for s in stamps if s.startswith(ts)]
    if len(matches) == 1:
        return name, matches[0]
    if not matches:
        raise NotFound(f"entry {name!r} has no backup matching {ts!r}", hint=f"see 'vmlfs list {name}'")
    raise InvalidRequest(f"{ts!r} matches {len(matches)} backups of {name!r}: {', '.join(matches[:5])}", hint="give more digits")
