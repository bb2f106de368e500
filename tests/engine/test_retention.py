"""The keep rules on hand-checked histories: each rule, its boundaries, and the dss figures.

The property-based tests against a reference implementation are in
test_retention_properties.py; here every expected set was worked out by hand
(the reasoning is in the comments) so a wrong reading of a rule shows up even
if the reference shares it.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest

from vmlfs import names
from vmlfs.engine.retention import (Backup, Decision, Policy, StoredPolicy, apply_policies, apply_policy,
                                    format_decision, format_report, parse_duration)
from vmlfs.errors import InvalidRequest

UTC = timezone.utc


def at(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> str:
    return names.format_timestamp(datetime(y, m, d, h, mi, tzinfo=UTC))


def series(start: datetime, step: timedelta, count: int) -> list[Backup]:
    return [Backup(names.format_timestamp(start + i * step)) for i in range(count)]


def kept(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    return {d.ts: d.reasons for d in decisions if d.keep}


def decide(backups: list[Backup], now: datetime | None = None, **policy: object) -> list[Decision]:
    newest = max(names.parse_timestamp(b.ts) for b in backups)
    return apply_policy(backups, Policy(**policy), now or newest + timedelta(hours=1))  # type: ignore[arg-type]


# --- durations and policies --------------------------------------------------------------------


@pytest.mark.parametrize("text, length", [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("2w", timedelta(days=14)),
    ("1y", timedelta(days=365)), ("90m", timedelta(minutes=90)), ("1d12h", timedelta(hours=36)),
    ("45s", timedelta(seconds=45)), ("1y2w3d4h5m6s", timedelta(days=365 + 14 + 3, hours=4, minutes=5, seconds=6)),
])
def test_parse_duration(text: str, length: timedelta) -> None:
    assert parse_duration(text) == length


@pytest.mark.parametrize("text, message", [
    ("", "invalid duration"), ("d", "invalid duration"), ("12", "invalid duration"), ("1h1d", "invalid duration"),
    ("1d1d", "invalid duration"), ("1.5d", "invalid duration"), (" 1d", "invalid duration"), ("1D", "invalid duration"),
    ("-1d", "invalid duration"), ("6mo", "invalid duration"), (30, "invalid duration"), (None, "invalid duration"),
    ("0d", "is zero"), ("0h0m", "is zero"), ("1001y", "longer than 1000y"),
])
def test_parse_duration_refuses(text: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as caught:
        parse_duration(text)  # type: ignore[arg-type]
    assert "m (minutes)" in caught.value.hint


def test_empty_policy_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="empty prune policy") as caught:
        Policy()
    assert "--keep-last" in caught.value.hint and "--dyadic" in caught.value.hint
    with pytest.raises(InvalidRequest, match="empty prune policy"):
        Policy.from_doc({})


@pytest.mark.parametrize("fields, message", [
    ({"keep_daily": -1}, "keep_daily must be a whole number"),
    ({"keep_daily": True}, "keep_daily must be a whole number"),
    ({"keep_daily": 7.0}, "keep_daily must be a whole number"),
    ({"keep_daily": "7"}, "keep_daily must be a whole number"),
    ({"keep_within": 30}, "keep_within must be a duration string"),
    ({"keep_within": "30 days"}, "invalid duration"),
    ({"dyadic": True}, "dyadic needs unit_interval and num_intervals"),
    ({"dyadic": True, "unit_interval": "4d"}, "dyadic needs"),
    ({"dyadic": True, "unit_interval": "4d", "num_intervals": 31}, "dyadic needs"),
    ({"dyadic": "yes", "unit_interval": "4d", "num_intervals": 5}, "dyadic must be true or false"),
    ({"keep_last": 1, "unit_interval": "4d"}, "apply only with dyadic"),
    ({"keep_last": 1, "num_intervals": 5}, "apply only with dyadic"),
])
def test_policy_refuses_bad_values(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Policy.from_doc(fields)


def test_policy_document_round_trip() -> None:
    policy = Policy(keep_daily=7, keep_within="2w", dyadic=True, unit_interval="4d", num_intervals=5)
    doc = policy.to_doc()
    assert doc == {"keep_daily": 7, "keep_within": "2w", "dyadic": True, "unit_interval": "4d", "num_intervals": 5}
    assert Policy.from_doc(json.loads(json.dumps(doc))) == policy
    with pytest.raises(InvalidRequest, match="unknown key.*'keep_sometimes'"):
        Policy.from_doc({"keep_daily": 7, "keep_sometimes": 1})
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        Policy.from_doc([("keep_daily", 7)])


def test_stored_policy_round_trip() -> None:
    stored = StoredPolicy(Policy(keep_last=3), prune_after=True)
    assert stored.to_doc() == {"keep_last": 3, "prune_after": True}
    assert StoredPolicy.from_doc(stored.to_doc()) == stored
    assert StoredPolicy.from_doc({"keep_last": 3}) == StoredPolicy(Policy(keep_last=3), prune_after=False)
    with pytest.raises(InvalidRequest, match="prune_after must be true or false"):
        StoredPolicy.from_doc({"keep_last": 3, "prune_after": "yes"})
    with pytest.raises(InvalidRequest, match="empty prune policy"):
        StoredPolicy.from_doc({"prune_after": True})
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        StoredPolicy.from_doc("keep_last=3")


# --- the bucket rules --------------------------------------------------------------------------


def test_keep_last_and_the_dry_run_lines() -> None:
    decisions = decide(series(datetime(2026, 11, 18, 10, 15, tzinfo=UTC), timedelta(days=1), 5), keep_last=2)
    assert [format_decision("higgs", d) for d in decisions] == [
        "keep  higgs@20261122T101500Z  (newest, last #1)",
        "keep  higgs@20261121T101500Z  (last #2)",
        "remove higgs@20261120T101500Z",
        "remove higgs@20261119T101500Z",
        "remove higgs@20261118T101500Z",
    ]
    report = format_report({"zeta": decisions[:1], "higgs": decisions[2:3]})
    assert report == "remove higgs@20261120T101500Z\nkeep  zeta@20261122T101500Z  (newest, last #1)\n"


DAYS = [Backup(at(2026, 11, 22, 10, 15)), Backup(at(2026, 11, 22, 8)), Backup(at(2026, 11, 21, 23, 59)),
        Backup(at(2026, 11, 21, 9)), Backup(at(2026, 11, 20, 0)), Backup(at(2026, 11, 19, 12)), Backup(at(2026, 11, 19, 6))]


def test_keep_daily_keeps_the_newest_backup_of_each_day() -> None:
    assert kept(decide(DAYS, keep_daily=2)) == {at(2026, 11, 22, 10, 15): ("newest", "daily #1"),
                                                at(2026, 11, 21, 23, 59): ("daily #2",)}
    assert set(kept(decide(DAYS, keep_daily=4))) == {at(2026, 11, 22, 10, 15), at(2026, 11, 21, 23, 59),
                                                     at(2026, 11, 20, 0), at(2026, 11, 19, 12)}


def test_a_rule_with_count_left_keeps_the_oldest_backup() -> None:
    # Four days hold seven backups: keep_daily 5 has one slot left when it reaches the oldest, as in restic.
    assert kept(decide(DAYS, keep_daily=5))[at(2026, 11, 19, 6)] == ("daily[oldest] #5",)
    # When the oldest is its day's newest, it is kept as that day's representative, once.
    assert kept(decide(DAYS[:-1], keep_daily=5))[at(2026, 11, 19, 12)] == ("daily #4",)
    # keep_last never needs it: each backup is a bucket of its own.
    assert kept(decide(DAYS, keep_last=9))[at(2026, 11, 19, 6)] == ("last #7",)


def test_keep_hourly_buckets_by_utc_hour() -> None:
    history = [Backup(at(2026, 3, 1, 10, 5)), Backup(at(2026, 3, 1, 10, 50)), Backup(at(2026, 3, 1, 11, 10)),
               Backup(at(2026, 3, 1, 9, 59))]
    assert set(kept(decide(history, keep_hourly=2))) == {at(2026, 3, 1, 11, 10), at(2026, 3, 1, 10, 50)}


def test_weekly_is_the_iso_week_across_a_year_boundary() -> None:
    # 2026 has an ISO week 53 (1 January 2026 is a Thursday): it runs from Mon 28 Dec 2026 to Sun 3 Jan 2027.
    assert date(2027, 1, 2).isocalendar()[:2] == (2026, 53) and date(2027, 1, 4).isocalendar()[:2] == (2027, 1)
    history = [Backup(at(2026, 12, 27, 12)), Backup(at(2026, 12, 28, 12)), Backup(at(2026, 12, 31, 12)),
               Backup(at(2027, 1, 2, 12)), Backup(at(2027, 1, 4, 12))]
    assert kept(decide(history, keep_weekly=3)) == {at(2027, 1, 4, 12): ("newest", "weekly #1"),
                                                    at(2027, 1, 2, 12): ("weekly #2",),
                                                    at(2026, 12, 27, 12): ("weekly #3",)}
    # The same history by calendar year: 2 January belongs to 2027, so 31 December stands for 2026.
    assert kept(decide(history, keep_yearly=2)) == {at(2027, 1, 4, 12): ("newest", "yearly #1"),
                                                    at(2026, 12, 31, 12): ("yearly #2",)}


def test_monthly_and_yearly_across_a_year_boundary() -> None:
    history = [Backup(at(2025, 6, 1)), Backup(at(2026, 11, 30)), Backup(at(2026, 12, 1)), Backup(at(2026, 12, 31, 23)),
               Backup(at(2027, 1, 1, 0, 30))]
    assert set(kept(decide(history, keep_monthly=2))) == {at(2027, 1, 1, 0, 30), at(2026, 12, 31, 23)}
    assert kept(decide(history, keep_monthly=3))[at(2026, 11, 30)] == ("monthly #3",)
    assert kept(decide(history, keep_yearly=3)) == {at(2027, 1, 1, 0, 30): ("newest", "yearly #1"),
                                                    at(2026, 12, 31, 23): ("yearly #2",),
                                                    at(2025, 6, 1): ("yearly #3",)}


def test_rules_are_ored_and_one_backup_fills_a_slot_of_each() -> None:
    # Daily backups Wed 18 to Mon 23 Nov 2026; Mon 23 starts ISO week 48, so Sun 22 is week 47's newest.
    history = series(datetime(2026, 11, 18, 10, 15, tzinfo=UTC), timedelta(days=1), 6)
    assert kept(decide(history, keep_daily=2, keep_weekly=2, keep_last=1)) == {
        at(2026, 11, 23, 10, 15): ("newest", "last #1", "daily #1", "weekly #1"),
        at(2026, 11, 22, 10, 15): ("daily #2", "weekly #2"),
    }


# --- keep_within -------------------------------------------------------------------------------


def test_within_is_measured_from_the_newest_backup_of_a_vm_that_was_off() -> None:
    # Daily backups from 1 June to 1 October, then the VM is off for 45 days.
    history = series(datetime(2026, 6, 1, 10, tzinfo=UTC), timedelta(days=1), 123)
    now = datetime(2026, 11, 15, 10, tzinfo=UTC)
    keep = kept(apply_policy(history, Policy(keep_within="30d"), now))
    # Ages 0 to 29 days: 2 September to 1 October. A backup exactly 30 days old is not "within".
    assert sorted(keep) == [b.ts for b in history[-30:]]
    assert keep[at(2026, 9, 2, 10)] == ("within 30d",)
    # Measured from now (as borg does) none of them would be within 30 days.
    assert all(now - names.parse_timestamp(ts) > timedelta(days=30) for ts in keep)


def test_within_a_compound_duration() -> None:
    history = series(datetime(2026, 5, 1, tzinfo=UTC), timedelta(hours=6), 12)
    assert len(kept(decide(history, keep_within="1d12h"))) == 6  # ages 0, 6, ..., 30 h; 36 h is out


# --- dyadic ------------------------------------------------------------------------------------


def dyadic_counts(decisions: list[Decision]) -> Counter[str]:
    return Counter(r for d in decisions for r in d.reasons if r.startswith("dyadic"))


def test_dyadic_the_dss_example() -> None:
    # u = 4 days, n = 5, a backup every 6 hours for 40 days: 16 per unit interval, so every interval fills.
    history = series(datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=6), 160)
    decisions = decide(history, dyadic=True, unit_interval="4d", num_intervals=5)
    assert len(kept(decisions)) == 31
    assert dyadic_counts(decisions) == {f"dyadic interval {k}": 2 ** (4 - k) for k in range(5)}
    newest = names.parse_timestamp(history[-1].ts)
    ages = {k: sorted((newest - names.parse_timestamp(d.ts)) // timedelta(hours=1) for d in decisions
                      if f"dyadic interval {k}" in d.reasons) for k in range(5)}
    # Each interval keeps its oldest backup and thins the rest to an even spacing: the victim is always the
    # older of the tied smallest gaps, so interval 1 (ages 96-186 h) keeps every other one down from 186 h.
    assert ages[0] == list(range(0, 96, 6))
    assert ages[1] == list(range(102, 192, 12))
    assert ages[2] == [210, 234, 258, 282]  # of 192-282 h: 24 h apart
    assert ages[3] == [330, 378]  # of 288-378 h: 48 h apart
    assert ages[4] == [474]  # 19 d 18 h, the oldest backup of the last interval


@pytest.mark.parametrize("intervals, unit_days, count, span_days", [(5, 16, 31, 79), (6, 32, 63, 191), (7, 64, 127, 447)])
def test_dyadic_one_backup_per_day(intervals: int, unit_days: int, count: int, span_days: int) -> None:
    history = series(datetime(2025, 1, 1, tzinfo=UTC), timedelta(days=1), 600)
    keep = kept(decide(history, dyadic=True, unit_interval=f"{unit_days}d", num_intervals=intervals))
    assert len(keep) == count == 2 ** intervals - 1
    oldest = min(names.parse_timestamp(ts) for ts in keep)
    assert (names.parse_timestamp(history[-1].ts) - oldest).days == span_days == intervals * unit_days - 1


def test_dyadic_underfilled_carries_free_slots_to_newer_intervals() -> None:
    # One backup a day for 30 days, u = 4 d, n = 5: four backups per interval. Interval 4 (ages 16-19 d) keeps
    # its oldest, interval 3 (12-15 d) keeps 15 and 13, intervals 2, 1 and 0 have room for all of theirs.
    history = series(datetime(2026, 1, 1, tzinfo=UTC), timedelta(days=1), 30)
    decisions = decide(history, dyadic=True, unit_interval="4d", num_intervals=5)
    newest = names.parse_timestamp(history[-1].ts)
    assert sorted((newest - names.parse_timestamp(ts)).days for ts in kept(decisions)) == [*range(12), 13, 15, 19]


def test_dyadic_uses_up_a_carried_slot_where_dss_would_spend_it_twice() -> None:
    # u = 1 d, n = 3 (slots 4, 2, 1). Interval 2 is empty: its slot goes to interval 1, which needs it for its
    # 3 backups. dss keeps counting it as missing and lets interval 0 keep all 5 too (8 > 2^3 - 1); here
    # interval 0 keeps 4: of ages 20, 12, 8, 4, 0 h the victim is 8 h (gap 4 h, older than 4 h's equal gap).
    newest = datetime(2026, 2, 1, 12, tzinfo=UTC)
    history = [Backup(names.format_timestamp(newest - timedelta(hours=h))) for h in (0, 4, 8, 12, 20, 26, 30, 40)]
    keep = kept(decide(history, dyadic=True, unit_interval="1d", num_intervals=3))
    assert sorted(int((newest - names.parse_timestamp(ts)) / timedelta(hours=1)) for ts in keep) == [0, 4, 12, 20,
                                                                                                      26, 30, 40]


def test_dyadic_never_removes_the_newest_and_drops_what_is_too_old() -> None:
    history = series(datetime(2026, 2, 1, tzinfo=UTC), timedelta(hours=1), 30)
    decisions = decide(history, dyadic=True, unit_interval="1d", num_intervals=1)
    assert kept(decisions) == {history[-1].ts: ("newest", "dyadic interval 0")}


def test_dyadic_with_another_rule_is_not_idempotent() -> None:
    # u = 1 d, n = 3, plus keep_last 2; ages 0, 28, 31, 36, 44, 50 h. Interval 1 (24-47 h) has two slots: of
    # 44, 36, 31, 28 dyadic removes 28 (gap 3 h), then 31 (gap 5 h), keeping 44 and 36; keep_last keeps 0 and 28.
    newest = datetime(2026, 3, 10, 12, tzinfo=UTC)
    history = [Backup(names.format_timestamp(newest - timedelta(hours=h))) for h in (0, 28, 31, 36, 44, 50)]
    policy = Policy(keep_last=2, dyadic=True, unit_interval="1d", num_intervals=3)
    first = kept(apply_policy(history, policy, newest))
    assert [int((newest - names.parse_timestamp(ts)) / timedelta(hours=1)) for ts in first] == [0, 28, 36, 44, 50]
    # Pruning again: now 36 and 28 tie at 8 h, so dyadic keeps 28 (already kept by keep_last) and 36 goes.
    # dyadic alone is idempotent (the property tests check it); ORed with other rules it is not.
    second = apply_policy([b for b in history if b.ts in first], policy, newest)
    assert [d.ts for d in second if not d.keep] == [names.format_timestamp(newest - timedelta(hours=36))]


# --- always kept, never counted ----------------------------------------------------------------


def test_protected_backups_are_kept_and_fill_no_slot() -> None:
    history = series(datetime(2026, 11, 18, tzinfo=UTC), timedelta(days=1), 5)
    history[3] = Backup(history[3].ts, protected=True)
    assert kept(decide(history, keep_last=2)) == {history[4].ts: ("newest", "last #1"), history[3].ts: ("protected",),
                                                  history[2].ts: ("last #2",)}
    # A protected newest backup is still the newest and the anchor, but the rules count from the next one.
    history[4] = Backup(history[4].ts, protected=True)
    assert kept(decide(history, keep_last=1, keep_within="1d12h")) == {
        history[4].ts: ("newest", "protected"), history[3].ts: ("protected",), history[2].ts: ("last #1",)}
    assert kept(decide(history, dyadic=True, unit_interval="1d", num_intervals=1)) == {
        history[4].ts: ("newest", "protected"), history[3].ts: ("protected",)}


def test_a_running_backup_is_kept_and_is_not_the_newest() -> None:
    history = series(datetime(2026, 11, 18, tzinfo=UTC), timedelta(days=1), 4)
    history[-1] = Backup(history[-1].ts, started="2026-11-21T00:00:00.000+00:00", running=True)
    assert kept(decide(history, keep_last=1)) == {history[3].ts: ("running",), history[2].ts: ("newest", "last #1")}


def test_backups_that_cannot_be_dated_are_reported_kept_and_not_counted() -> None:
    now = datetime(2026, 10, 2, 12, tzinfo=UTC)
    history = series(datetime(2026, 9, 1, 10, tzinfo=UTC), timedelta(days=1), 31)  # up to 1 October
    bad_order = Backup(at(2026, 9, 30, 22), started="2026-09-30T22:00:00+00:00", completed="2026-09-30T21:59:59+00:00")
    unreadable = Backup(at(2026, 9, 30, 23), started="yesterday", completed="2026-09-30T23:10:00")
    future = Backup(at(2027, 6, 1))
    tomorrow = Backup(names.format_timestamp(now + timedelta(days=1)))  # one day ahead is clock skew, not a flaw
    decisions = apply_policy([*history, bad_order, unreadable, future], Policy(keep_within="3d", keep_last=1), now)
    keep = kept(decisions)
    assert keep[future.ts] == ("ignored: timestamp more than a day in the future",)
    assert keep[bad_order.ts] == ("ignored: completed before started",)
    assert keep[unreadable.ts] == ("ignored: unreadable started or completed time",)
    # The anchor is 1 October, not the bogus 2027 backup, so keep_within keeps the last three real days.
    assert keep[history[-1].ts] == ("newest", "last #1", "within 3d")
    assert {history[-2].ts, history[-3].ts} < set(keep) and history[-4].ts not in keep
    assert len(keep) == 6
    assert kept(apply_policy([*history, tomorrow], Policy(keep_last=1), now)) == {tomorrow.ts: ("newest", "last #1")}


def test_nothing_to_count_removes_nothing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert apply_policy([], Policy(keep_last=1), now) == []
    bad = [Backup(at(2025, 12, d), started="2025-12-02T00:00:00", completed="2025-12-01T00:00:00") for d in (1, 2)]
    assert all(d.keep for d in apply_policy(bad, Policy(keep_last=1), now))
    protected = [Backup(at(2025, 12, d), protected=True) for d in (1, 2)]
    assert [d.reasons for d in apply_policy(protected, Policy(keep_last=1), now)] == [("newest", "protected"),
                                                                                       ("protected",)]


def test_malformed_input_is_refused() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidRequest, match="listed twice"):
        apply_policy([Backup(at(2025, 12, 1)), Backup(at(2025, 12, 1))], Policy(keep_last=1), now)
    with pytest.raises(InvalidRequest, match="invalid backup timestamp"):
        apply_policy([Backup("2025-12-01")], Policy(keep_last=1), now)
    with pytest.raises(InvalidRequest, match="timezone-aware"):
        apply_policy([Backup(at(2025, 12, 1))], Policy(keep_last=1), datetime(2026, 1, 1))


# --- grouping ----------------------------------------------------------------------------------


def test_each_entry_is_decided_under_its_own_policy() -> None:
    history = series(datetime(2026, 11, 18, tzinfo=UTC), timedelta(days=1), 3)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    results = apply_policies({"zeta": history, "higgs": history[:2]},
                             {"higgs": Policy(keep_last=1), "zeta": Policy(keep_last=2), "unused": Policy(keep_last=1)},
                             now)
    assert list(results) == ["higgs", "zeta"]
    assert [d.keep for d in results["higgs"]] == [True, False]
    assert [d.keep for d in results["zeta"]] == [True, True, False]
    with pytest.raises(InvalidRequest, match="no prune policy for higgs"):
        apply_policies({"higgs": history, "zeta": history}, {"zeta": Policy(keep_last=1)}, now)
    with pytest.raises(InvalidRequest, match="invalid entry name"):
        apply_policies({"../x": history}, {"../x": Policy(keep_last=1)}, now)
