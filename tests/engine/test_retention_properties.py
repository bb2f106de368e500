"""The keep rules on random histories: against a naive reference, and against the rules' own promises.

The reference below is a second reading of docs/retention.md written for
clarity, not speed: buckets are grouped and ranked instead of streamed, and
dyadic removes one victim at a time, rescanning every interval from the
oldest as dss does, instead of thinning each interval with a heap. The
promises (every rule's keepers kept, dyadic's bound, order independence,
idempotence) are checked without either implementation's help.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from vmlfs import names
from vmlfs.engine.retention import Backup, Decision, Policy, apply_policy, parse_duration
from vmlfs.errors import InvalidRequest

UTC = timezone.utc
NOW = datetime(2027, 1, 3, 12, tzinfo=UTC)  # near ISO week 53 of 2026 and a year boundary
PROPERTIES = settings(max_examples=300, deadline=None)


def when(b: Backup) -> datetime:
    return names.parse_timestamp(b.ts)


# --- the reference -----------------------------------------------------------------------------


def flaw(b: Backup) -> str | None:
    if when(b) > NOW + timedelta(days=1):
        return "timestamp more than a day in the future"
    if b.started is None or b.completed is None:
        return None
    try:
        started, completed = (datetime.fromisoformat(t) for t in (b.started, b.completed))
    except ValueError:
        return "unreadable started or completed time"
    started, completed = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (started, completed))
    return "completed before started" if completed < started else None


#: The buckets as strftime patterns (%G-%V: ISO year and week), independent of the module's key functions.
REFERENCE_BUCKETS = (("last", "keep_last", ""), ("hourly", "keep_hourly", "%Y-%m-%d %H"), ("daily", "keep_daily", "%Y-%m-%d"),
                     ("weekly", "keep_weekly", "%G-%V"), ("monthly", "keep_monthly", "%Y-%m"), ("yearly", "keep_yearly", "%Y"))


def reference(backups: list[Backup], policy: Policy) -> list[Decision]:
    history = sorted(backups, key=when, reverse=True)
    datable = [b for b in history if flaw(b) is None and not b.running]
    newest = datable[0] if datable else None
    reasons: dict[str, list[str]] = {b.ts: [] for b in history}
    for b in history:
        reasons[b.ts] += (["newest"] if b is newest else []) + (["protected"] if b.protected else []) + \
                         (["running"] if b.running else []) + ([f"ignored: {flaw(b)}"] if flaw(b) else [])
    counted = [b for b in datable if not b.protected]  # newest first
    if newest is None:
        return [Decision(b.ts, bool(reasons[b.ts]), tuple(reasons[b.ts])) for b in history]
    for label, field, pattern in REFERENCE_BUCKETS:
        count = getattr(policy, field)
        buckets: dict[object, list[Backup]] = {}
        for i, b in enumerate(counted):
            buckets.setdefault(when(b).strftime(pattern) if pattern else i, []).append(b)
        ranked = list(buckets.values())  # in order of their newest backup, newest first
        for rank, members in enumerate(ranked[:count], 1):
            reasons[members[0].ts].append(f"{label} #{rank}")
        if ranked and len(ranked) < count and len(ranked[-1]) > 1:
            reasons[counted[-1].ts].append(f"{label}[oldest] #{len(ranked) + 1}")
    if policy.keep_within:
        limit = parse_duration(policy.keep_within)
        for b in counted:
            if when(newest) - when(b) < limit:
                reasons[b.ts].append(f"within {policy.keep_within}")
    if policy.dyadic:
        for b, k in reference_dyadic(counted, newest, policy):
            reasons[b.ts].append(f"dyadic interval {k}")
    return [Decision(b.ts, bool(reasons[b.ts]), tuple(reasons[b.ts])) for b in history]


def reference_dyadic(counted: list[Backup], newest: Backup, policy: Policy) -> list[tuple[Backup, int]]:
    unit, n = parse_duration(policy.unit_interval or ""), policy.num_intervals

    def interval(b: Backup) -> int:
        return (when(newest) - when(b)) // unit

    alive = sorted((b for b in counted if interval(b) < n), key=when)  # oldest first, as dss lists them
    while True:
        carry, victim = 0, None
        for k in range(n - 1, -1, -1):
            members = [b for b in alive if interval(b) == k]
            allowed = 2 ** (n - k - 1) + carry
            if len(members) <= allowed:
                carry = allowed - len(members)
                continue
            best: tuple[timedelta, Backup] | None = None
            for older, b in zip(members, members[1:]):
                if b is not newest and (best is None or when(b) - when(older) < best[0]):
                    best = (when(b) - when(older), b)
            victim = best[1] if best else members[0]  # the interval's oldest only when the rest is the newest
            break
        if victim is None:
            return [(b, interval(b)) for b in alive]
        alive.remove(victim)


# --- random histories and policies -------------------------------------------------------------

SPANS = (6 * 3600, 10 * 86400, 120 * 86400, 1500 * 86400)  # hours apart to years apart
#: Ages on a grid of whole minutes, hours or days hit the boundaries (exactly 1d old, midnight, a unit
#: interval's edge) that free seconds would almost never hit; step 1 keeps arbitrary times in play.
STEPS = (1, 60, 3600, 6 * 3600, 86400)


@st.composite
def scattered(draw: st.DrawFn) -> list[int]:
    """Ages (seconds before NOW) anywhere in a span, some in the future."""
    span, step = draw(st.sampled_from(SPANS)), draw(st.sampled_from(STEPS))
    return [g * step for g in draw(st.lists(st.integers(-3 * 86400 // step, span // step), unique=True, max_size=60))]


@st.composite
def scheduled(draw: st.DrawFn) -> list[int]:
    """Ages of a backup every hour, 6 hours or day, some missed, with one stretch where the VM was off."""
    step, count = draw(st.sampled_from(STEPS[2:])), draw(st.integers(0, 120))  # a count, not a list: lists stay short
    missed = draw(st.sets(st.integers(0, count), max_size=count // 5))
    off_from, off_for = draw(st.integers(0, count)), draw(st.sampled_from([0, 0, 3, 10, 40]))
    return [(i + (off_for if i >= off_from else 0)) * step for i in range(count) if i not in missed]


@st.composite
def histories(draw: st.DrawFn) -> list[Backup]:
    offsets = draw(st.one_of(scattered(), scheduled()))
    out = []
    for offset in offsets:
        ts = names.format_timestamp(NOW - timedelta(seconds=offset))
        started = completed = None
        times = draw(st.sampled_from(["fine", "fine", "fine", "unknown", "reversed", "unreadable"]))
        moment = names.parse_timestamp(ts)
        if times == "fine":
            started, completed = moment.isoformat(), (moment + timedelta(minutes=1)).replace(tzinfo=None).isoformat()
        elif times == "reversed":
            started, completed = moment.isoformat(), (moment - timedelta(seconds=1)).isoformat()
        elif times == "unreadable":
            started, completed = "soon", "later"
        out.append(Backup(ts, started, completed, protected=draw(st.integers(0, 9)) == 0,
                          running=draw(st.integers(0, 19)) == 0))
    return out


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    counts = {field: draw(st.sampled_from([0, 0, 1, 2, 3, 5])) for _, field, _ in REFERENCE_BUCKETS}
    within = draw(st.sampled_from([None, None, "1h", "12h", "1d", "3d", "30d", "1d12h"]))
    dyadic = draw(st.sampled_from([{}, {}, {"dyadic": True, "unit_interval": draw(st.sampled_from(["1h", "6h", "1d", "4d"])),
                                             "num_intervals": draw(st.integers(1, 6))}]))
    try:
        return Policy(**counts, keep_within=within, **dyadic)
    except InvalidRequest:  # empty: any single rule will do
        return Policy(keep_last=draw(st.integers(1, 3)))


def counted_backups(history: list[Backup]) -> list[Backup]:
    """The backups the rules count, newest first: datable, finished, unprotected."""
    return sorted((b for b in history if flaw(b) is None and not b.running and not b.protected), key=when, reverse=True)


# --- the properties ----------------------------------------------------------------------------


@PROPERTIES
@given(histories(), policies())
def test_matches_the_reference(history: list[Backup], policy: Policy) -> None:
    assert apply_policy(history, policy, NOW) == reference(history, policy)


@PROPERTIES
@given(histories(), st.sampled_from(["1h", "6h", "1d", "4d", "5d7h"]), st.integers(1, 7))
def test_dyadic_matches_the_reference(history: list[Backup], unit: str, n: int) -> None:
    policy = Policy(dyadic=True, unit_interval=unit, num_intervals=n)
    assert apply_policy(history, policy, NOW) == reference(history, policy)


@PROPERTIES
@given(histories(), policies())
def test_every_kept_set_satisfies_every_rule(history: list[Backup], policy: Policy) -> None:
    decisions = apply_policy(history, policy, NOW)
    keep = {d.ts for d in decisions if d.keep}
    counted = counted_backups(history)
    datable = [b for b in history if flaw(b) is None and not b.running]
    newest = max(datable, key=when, default=None)
    for b in history:  # always kept: the newest, protected, running and undatable backups
        if b.protected or b.running or flaw(b) or b is newest:
            assert b.ts in keep
    for label, field, pattern in REFERENCE_BUCKETS:  # the newest backup of each of the N newest buckets
        newest_of: dict[object, Backup] = {}
        for i, b in enumerate(counted):
            newest_of.setdefault(when(b).strftime(pattern) if pattern else i, b)
        assert {b.ts for b in list(newest_of.values())[:getattr(policy, field)]} <= keep, label
    if policy.keep_within and counted:
        anchor = max(when(b) for b in datable)
        assert {b.ts for b in counted if anchor - when(b) < parse_duration(policy.keep_within)} <= keep
    if policy.dyadic and counted:
        anchor = max(when(b) for b in datable)
        by_dyadic = [d for d in decisions if any(r.startswith("dyadic") for r in d.reasons)]
        assert len(by_dyadic) <= 2 ** policy.num_intervals - 1
        limit = policy.num_intervals * parse_duration(policy.unit_interval or "")
        assert all(anchor - names.parse_timestamp(d.ts) < limit for d in by_dyadic)
        assert all(len([d for d in by_dyadic if f"dyadic interval {k}" in d.reasons]) <=
                   2 ** (policy.num_intervals - k) - 1 for k in range(policy.num_intervals))  # with all carry
    removed = {d.ts for d in decisions if not d.keep}
    assert removed <= {b.ts for b in counted} and all(d.reasons for d in decisions if d.keep)


@PROPERTIES
@given(histories(), st.integers(1, 6), st.sampled_from(["1h", "6h", "1d", "4d"]))
def test_dyadic_alone_bounds_what_remains(history: list[Backup], n: int, unit: str) -> None:
    decisions = apply_policy(history, Policy(dyadic=True, unit_interval=unit, num_intervals=n), NOW)
    counted = {b.ts for b in counted_backups(history)}
    assert len([d for d in decisions if d.keep and d.ts in counted]) <= 2 ** n - 1


@PROPERTIES
@given(histories(), policies(), st.randoms(use_true_random=False))
def test_independent_of_input_order(history: list[Backup], policy: Policy, rng) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(history)
    rng.shuffle(shuffled)
    assert apply_policy(shuffled, policy, NOW) == apply_policy(history, policy, NOW)


def prune_twice(history: list[Backup], policy: Policy) -> list[Decision]:
    keep = {d.ts for d in apply_policy(history, policy, NOW) if d.keep}
    return apply_policy([b for b in history if b.ts in keep], policy, NOW)


@PROPERTIES
@given(histories(), policies())
def test_pruning_again_removes_nothing_without_dyadic_or_with_dyadic_alone(history: list[Backup], policy: Policy) -> None:
    if policy.dyadic:  # dyadic alone, with the random unit and count
        policy = Policy(dyadic=True, unit_interval=policy.unit_interval, num_intervals=policy.num_intervals)
    assert all(d.keep for d in prune_twice(history, policy))
