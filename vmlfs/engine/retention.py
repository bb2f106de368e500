"""Which backups a prune keeps, and why: the keep rules of ``vmlfs prune``, with no I/O.

The caller passes each entry's backups, a :class:`Policy` and ``now``, and gets
one :class:`Decision` per backup with the reasons it is kept. There is no clock
and no store here, so ``vmlfs prune --dry-run``, the real prune and the
mount's ``control/prune-preview`` all print the same decisions, and the tests
can replay any history. docs/retention.md states each rule exactly and
compares them with restic, borg and dss; the choices that differ from those
tools are explained where they are made below.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from vmlfs import names
from vmlfs.errors import InvalidRequest

# --- durations -------------------------------------------------------------------------------

#: Units from largest to smallest. Fixed lengths (a year is 365 days) because a rule measures
#: ages, not calendar dates; there is no month unit, and ``m`` is minutes (restic's ``m`` is
#: months, so a restic user's ``6m`` means six minutes here: the dry run shows the effect).
UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_DURATION = re.compile("".join(rf"(?:(?P<{unit}>[0-9]+){unit})?" for unit, _ in UNITS))
MAX_DURATION = timedelta(days=1000 * 365)
DURATION_HINT = "a number and a unit, largest unit first: y (365 days), w, d, h, m (minutes), s; e.g. 30d, 12h, 2w, 1d12h"


def parse_duration(text: str) -> timedelta:
    """The length of a duration such as ``30d``, ``12h``, ``2w``, ``1y``, ``90m`` or ``1d12h``.

    Each unit appears at most once and in the order of :data:`UNITS`, so a
    duration has one reading; zero and over-long durations are refused.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) and text else None
    if match is None:
        raise InvalidRequest(f"invalid duration {text!r}", hint=DURATION_HINT)
    seconds = sum(int(match.group(unit)) * size for unit, size in UNITS if match.group(unit))
    if seconds == 0:
        raise InvalidRequest(f"duration {text!r} is zero", hint=DURATION_HINT)
    if seconds > MAX_DURATION.total_seconds():
        raise InvalidRequest(f"duration {text!r} is longer than 1000y", hint=DURATION_HINT)
    return timedelta(seconds=seconds)


# --- the policy ------------------------------------------------------------------------------

#: The calendar bucket rules (count fields), in the order their reasons are listed. A bucket is
#: a key of the backup's UTC time; ``last`` puts every backup in a bucket of its own.
BUCKETS: tuple[tuple[str, str, Callable[[datetime], object] | None], ...] = (
    ("last", "keep_last", None),
    ("hourly", "keep_hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", "keep_daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", "keep_weekly", lambda t: tuple(t.isocalendar())[:2]),  # ISO year and week
    ("monthly", "keep_monthly", lambda t: (t.year, t.month)),
    ("yearly", "keep_yearly", lambda t: t.year),
)
#: dss allows 1 to 30 intervals; 2^30 - 1 backups is beyond any store.
MAX_INTERVALS = 30


@dataclass(frozen=True)
class Policy:
    """Keep rules, ORed: a backup stays if any rule keeps it (as restic, unlike borg; see the doc).

    Counts are whole numbers, 0 meaning "rule off". Durations are strings for
    :func:`parse_duration`, kept as given so that reasons and the stored
    policy read as the user wrote them. Construction validates, so every
    Policy that exists can be applied; an empty one is refused, because it
    would remove every backup but the newest.
    """

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: str | None = None
    dyadic: bool = False
    unit_interval: str | None = None
    num_intervals: int = 0

    def __post_init__(self) -> None:
        for name in [field for _, field, _ in BUCKETS] + ["num_intervals"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRequest(f"prune policy: {name} must be a whole number >= 0, not {value!r}")
        for name in ("keep_within", "unit_interval"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"prune policy: {name} must be a duration string such as '30d', not {value!r}",
                                     hint=DURATION_HINT)
            if value is not None:
                parse_duration(value)
        if not isinstance(self.dyadic, bool):
            raise InvalidRequest(f"prune policy: dyadic must be true or false, not {self.dyadic!r}")
        if self.dyadic and (self.unit_interval is None or not 1 <= self.num_intervals <= MAX_INTERVALS):
            raise InvalidRequest("prune policy: dyadic needs unit_interval and num_intervals (1 to 30)",
                                 hint="e.g. --dyadic --unit-interval 4d --num-intervals 5, as dss's defaults")
        if not self.dyadic and (self.unit_interval is not None or self.num_intervals):
            raise InvalidRequest("prune policy: unit_interval and num_intervals apply only with dyadic")
        if not self.dyadic and self.keep_within is None and not any(getattr(self, f) for _, f, _ in BUCKETS):
            raise InvalidRequest(
                "empty prune policy: it would remove every backup but the newest",
                hint="give at least one of --keep-last, --keep-hourly/-daily/-weekly/-monthly/-yearly, "
                     "--keep-within or --dyadic")

    def to_doc(self) -> dict[str, Any]:
        """The policy as a JSON object: only the fields that differ from "off", so it reads like the command."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    @classmethod
    def from_doc(cls, doc: Any) -> "Policy":
        """The policy :meth:`to_doc` wrote, checked by type.

        An unknown key is refused rather than skipped: it may be a keep rule of
        a newer vmlfs, and ignoring a keep rule removes backups its author
        meant to keep.
        """
        if not isinstance(doc, dict):
            raise InvalidRequest(f"prune policy must be a JSON object, not {type(doc).__name__}")
        unknown = sorted(set(doc) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidRequest(f"prune policy: unknown key(s) {', '.join(map(repr, unknown))}",
                                 hint=f"known keys: {', '.join(f.name for f in fields(cls))}")
        return cls(**doc)


@dataclass(frozen=True)
class StoredPolicy:
    """What an entry stores as ``"prune"`` in entry.json: its policy, and whether to prune after every backup.

    The document is the policy's own keys plus ``prune_after``, one flat
    object, so ``vmlfs entry edit NAME --keep-daily 7 --prune-after`` maps
    onto it key by key.
    """

    policy: Policy
    prune_after: bool = False

    def to_doc(self) -> dict[str, Any]:
        return {**self.policy.to_doc(), "prune_after": self.prune_after}

    @classmethod
    def from_doc(cls, doc: Any) -> "StoredPolicy":
        if not isinstance(doc, dict):
            raise InvalidRequest(f"stored prune policy must be a JSON object, not {type(doc).__name__}")
        rest = dict(doc)
        prune_after = rest.pop("prune_after", False)
        if not isinstance(prune_after, bool):
            raise InvalidRequest(f"prune policy: prune_after must be true or false, not {prune_after!r}")
        return cls(Policy.from_doc(rest), prune_after)


# --- inputs and outputs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Backup:
    """What the rules need to know about one backup: its timestamp, its recorded times, its flags.

    ``started`` and ``completed`` are the ISO times of the backup's metadata
    (naive ones are read as UTC); None means unknown and is not checked.
    """

    ts: str
    started: str | None = None
    completed: str | None = None
    protected: bool = False
    running: bool = False


@dataclass(frozen=True)
class Decision:
    """Keep or remove one backup; a kept backup has at least one reason, a removed one none."""

    ts: str
    keep: bool
    reasons: tuple[str, ...] = ()




def apply_policy(backups: Iterable[Backup], policy: Policy, now: datetime) -> list[Decision]:
    """Decide every backup of one entry, newest first.

    * A backup whose metadata cannot be dated (completed before started,
      unreadable times, a timestamp more than a day after ``now``) is kept
      with the reason ``ignored: ...``: removing what we cannot date is the
      riskier mistake. It is no anchor and fills no rule's slot (dss, too,
      skips snapshots created after they completed).
    * Running backups are kept (``running``) and take no part in the rules.
    * The newest remaining backup is the anchor: it is always kept
      (``newest``), and ``keep_within`` and dyadic measure ages from it, not
      from ``now``, so a VM that was off for months keeps its history.
    * Protected backups are kept (``protected``), may be the anchor, but fill
      no slot: ``keep_last 3`` keeps three unprotected backups besides them.
    * Every rule then runs on its own over the rest (datable, finished,
      unprotected); the reasons are the union.
    """
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidRequest("apply_policy needs a timezone-aware 'now'")
    items = list(backups)
    reasons: dict[str, list[str]] = {}
    for b in items:
        if names.timestamp(b.ts) in reasons:
            raise InvalidRequest(f"backup {b.ts} is listed twice")
        reasons[b.ts] = []
    items.sort(key=lambda b: b.ts, reverse=True)  # the timestamp format sorts as time does
    anchor: datetime | None = None
    candidates: list[tuple[str, datetime]] = []  # unprotected, datable, finished; newest first
    for b in items:
        when = names.parse_timestamp(b.ts)
        flaw = _flaw(b, when, now)
        if anchor is None and flaw is None and not b.running:
            anchor = when
            reasons[b.ts].append("newest")
        reasons[b.ts] += [why for why, on in (("protected", b.protected), ("running", b.running)) if on]
        if flaw is not None:
            reasons[b.ts].append(f"ignored: {flaw}")
        elif not b.running and not b.protected:
            candidates.append((b.ts, when))
    if anchor is not None:
        for ts, why in _rule_keeps(candidates, policy, anchor):
            reasons[ts].append(why)
    return [Decision(b.ts, bool(reasons[b.ts]), tuple(reasons[b.ts])) for b in items]


def apply_policies(groups: Mapping[str, Iterable[Backup]], policies: Mapping[str, Policy],
                   now: datetime) -> dict[str, list[Decision]]:
    """Decide each entry's backups under that entry's policy; entries never share a rule's slots.

    Grouping by entry is what keeps one VM's prune from removing another's
    backups (borg#241). Every entry needs a policy: the caller leaves out
    the entries it does not mean to prune rather than have them skipped here.
    """
    missing = sorted(set(groups) - set(policies))
    if missing:
        raise InvalidRequest(f"no prune policy for {', '.join(missing)}",
                             hint="give keep rules, or store them with 'vmlfs entry edit NAME --keep-...'")
    return {names.entry_name(entry): apply_policy(groups[entry], policies[entry], now) for entry in sorted(groups)}


def format_decision(entry: str, decision: Decision) -> str:
    """One line as the dry run prints it: ``keep  NAME@TS  (reasons)`` or ``remove NAME@TS``.

    Two spaces after ``keep`` and one after ``remove`` make the names line up.
    """
    name = f"{entry}@{decision.ts}"
    return f"keep  {name}  ({', '.join(decision.reasons)})" if decision.keep else f"remove {name}"


def format_report(results: Mapping[str, Sequence[Decision]]) -> str:
    """Every decision of :func:`apply_policies`, one line each, entries in name order."""
    return "".join(format_decision(entry, d) + "\n" for entry in sorted(results) for d in results[entry])


# --- the rules -------------------------------------------------------------------------------


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _flaw(b: Backup, when: datetime, now: datetime) -> str | None:
    """Why a backup cannot be dated, or None."""
    if when - now > names.FUTURE_SLACK:
        return "timestamp more than a day in the future"
    if b.started is None or b.completed is None:
        return None
    try:
        started, completed = _instant(b.started), _instant(b.completed)
    except (TypeError, ValueError):
        return "unreadable started or completed time"
    return "completed before started" if completed < started else None


def _rule_keeps(candidates: list[tuple[str, datetime]], policy: Policy,
                anchor: datetime) -> Iterable[tuple[str, str]]:
    """(timestamp, reason) for each rule that keeps a candidate, rule by rule."""
    for label, field, key in BUCKETS:
        yield from _bucket_keeps(candidates, label, getattr(policy, field), key)
    if policy.keep_within is not None:
        limit = parse_duration(policy.keep_within)
        # Strictly younger than the limit, as restic: "within 30d" of daily backups keeps 30 of them.
        yield from ((ts, f"within {policy.keep_within}") for ts, when in candidates if anchor - when < limit)
    if policy.dyadic:
        assert policy.unit_interval is not None  # Policy checked it
        yield from _dyadic_keeps(candidates, anchor, parse_duration(policy.unit_interval), policy.num_intervals)


def _bucket_keeps(candidates: list[tuple[str, datetime]], label: str, count: int,
                  key: Callable[[datetime], object] | None) -> Iterable[tuple[str, str]]:
    """restic's bucket rule: the newest backup of each of the ``count`` newest buckets.

    Also, as restic does, the oldest backup when the rule still has count
    left on reaching it (``daily[oldest] #4``, named like borg's
    ``rule[oldest]``): a young history keeps its first backup until the rule
    has enough buckets, which keeps the longest history the count allows.
    """
    last: object = object()
    used = 0
    for i, (ts, when) in enumerate(candidates):
        if used == count:
            return
        bucket = i if key is None else key(when)
        if bucket != last:
            used += 1
            last = bucket
            yield ts, f"{label} #{used}"
        elif i == len(candidates) - 1:
            used += 1
            yield ts, f"{label}[oldest] #{used}"


def _dyadic_keeps(candidates: list[tuple[str, datetime]], anchor: datetime, unit: timedelta,
                  intervals: int) -> Iterable[tuple[str, str]]:
    """The Dyadic Snapshot Scheduler's thinning, with ages measured from the anchor.

    Interval k holds the candidates aged [k*unit, (k+1)*unit) and keeps at most
    2^(intervals-k-1) of them; older ones all go. As in dss
    (``find_redundant_snapshot`` in dss.c), intervals are thinned from the
    oldest, and the slots an interval leaves empty are carried over to the
    newer ones. Unlike dss, a carried slot is used up where it is used: dss
    never lowers its "missing" count, so several newer intervals can each
    spend the same slot and more than 2^intervals - 1 backups remain. Here
    the total never exceeds that bound.
    """
    groups: dict[int, list[tuple[str, datetime]]] = {}
    for ts, when in candidates:
        k = (anchor - when) // unit
        if k < intervals:
            groups.setdefault(k, []).append((ts, when))
    carry = 0
    for k in range(intervals - 1, -1, -1):
        members = sorted(groups.get(k, []), key=lambda item: item[1])  # oldest first
        allowed = 2 ** (intervals - k - 1) + carry
        kept = members if len(members) <= allowed else _thin(members, allowed, anchor)
        carry = allowed - len(kept)
        yield from ((ts, f"dyadic interval {k}") for ts, _ in kept)


def _thin(members: list[tuple[str, datetime]], allowed: int, anchor: datetime) -> list[tuple[str, datetime]]:
    """Remove members (oldest first) one at a time until ``allowed`` remain, dss's way.

    The victim is the member with the smallest gap to its older neighbour in
    the interval, the older one on a tie; that is what dss's scan picks, and
    it keeps the survivors evenly spaced. As in dss, the interval's oldest
    member is not a victim while another is removable, so each interval's
    oldest backup, and hence the longest history, survives. The anchor is
    never a victim (dss never removes the snapshot it is making); it counts
    towards interval 0's slots. A heap of gaps with lazy deletion makes this
    O(n log n) rather than dss's rescan per victim.
    """
    times = [when for _, when in members]
    older = list(range(-1, len(times) - 1))
    newer = list(range(1, len(times) + 1))
    gone = [False] * len(times)

    def gap(i: int) -> timedelta:
        return timedelta.max if older[i] < 0 else times[i] - times[older[i]]

    heap = [(gap(i), i) for i in range(len(times)) if times[i] != anchor]
    heapq.heapify(heap)
    left = len(times)
    while left > allowed:
        score, i = heapq.heappop(heap)
        if gone[i] or score != gap(i):
            continue  # stale: i was removed, or its gap grew when its older neighbour went
        gone[i] = True
        left -= 1
        o, n = older[i], newer[i]
        if o >= 0:
            newer[o] = n
        if n < len(times):
            older[n] = o
            if times[n] != anchor:
                heapq.heappush(heap, (gap(n), n))
    return [m for m, g in zip(members, gone) if not g]
