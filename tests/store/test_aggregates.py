"""store.aggregates.cost_by_day_range: the one function the console's cost table and
/api/v1/costs?group_by=day call gives cost_breakdown's rows, from the day cache for whole UTC
days (today always live) and straight from SQL for any other range; on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from tests.store.test_runs import make_run
from tether.store import aggregates
from tether.store.costs import cost_breakdown

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 11, 30, tzinfo=UTC)


def _seed(db: Engine) -> None:
    for i, days_ago in enumerate([0, 0, 1, 3, 3, 6, 12]):
        start = NOW - timedelta(days=days_ago, hours=i)
        make_run(db, i, agent="a" if i % 2 else "b", cost=1_000_000 * (i + 1), start=start)


def test_whole_days_and_partial_ranges_give_cost_breakdowns_rows(db: Engine) -> None:
    _seed(db)
    ranges = [
        (MIDNIGHT - timedelta(days=7), MIDNIGHT + timedelta(days=1)),  # whole days to tomorrow
        (MIDNIGHT - timedelta(days=14), MIDNIGHT - timedelta(days=2)),  # whole closed days
        (NOW - timedelta(days=5), NOW),  # a rolling window
        (MIDNIGHT - timedelta(days=3), MIDNIGHT + timedelta(days=5)),  # ends in the future
    ]
    for start, end in ranges:
        for agent in (None, "a"):
            want = cost_breakdown(db, "day", start=start, end=end, agent=agent)
            got = aggregates.cost_by_day_range(db, start=start, end=end, now=NOW, agent=agent,
                                               cache={})  # fmt: skip
            assert got == want, (start, end, agent)
    assert sum(r["runs"] for r in want) > 0


def test_closed_days_come_from_the_cache_and_today_stays_live(db: Engine) -> None:
    _seed(db)
    cache: aggregates.Cache = {}
    start, end = MIDNIGHT - timedelta(days=7), MIDNIGHT + timedelta(days=1)
    first = aggregates.cost_by_day_range(db, start=start, end=end, now=NOW, cache=cache)
    assert cache  # the closed days were kept
    make_run(db, 50, cost=7_000_000, start=NOW - timedelta(minutes=5))  # today: live
    make_run(db, 51, cost=9_000_000, start=NOW - timedelta(days=2))  # a late closed day: cached
    again = aggregates.cost_by_day_range(db, start=start, end=end, now=NOW, cache=cache)
    today = MIDNIGHT.date().isoformat()
    before = {r["key"]: r for r in first}
    after = {r["key"]: r for r in again}
    assert after[today]["cost_nusd"] == before[today]["cost_nusd"] + 7_000_000
    two_days = (MIDNIGHT - timedelta(days=2)).date().isoformat()
    assert two_days not in after  # served from the cache until CLOSED_DAYS_TTL_S passes
    fresh = aggregates.cost_by_day_range(db, start=start, end=end, now=NOW, cache={})
    assert {r["key"]: r for r in fresh}[two_days]["runs"] == 1
