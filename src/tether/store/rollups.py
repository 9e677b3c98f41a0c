"""Spend rollups: settled LLM spend per hour and per day, by agent, version, user and task
type, with the runs that spent most in each interval; rebuilt incrementally behind a
high-water mark, and read back as the series cost anomaly detection works on.

Spend is attributed to the hour its span started in. A pass rebuilds every hour from
`LOOKBACK` before its mark up to now, and the days those hours belong to from their hours, so
spans that arrive up to that late are counted; later ones wait for `rebuild_from=`. A day's
`runs` and top runs are summed from its hours' (a run in two hours counts twice).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import Connection, Engine, delete, select

from tether.core.anomaly import Granularity, bucket_of
from tether.store.engine import reading
from tether.store.profiles import TASK_TYPE_ATTR, chunks, read_mark, write_mark
from tether.store.tables import runs, spans, spend_rollups

MARK = "rollups"
LOOKBACK = timedelta(hours=2)
# the first pass over an existing database reads this much history
BACKFILL = timedelta(days=35)
TOP_RUNS = 5

Dimension = Literal["agent", "version", "user", "task_type"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)

Key = tuple[str, str, datetime]  # (dimension, key, bucket)


@dataclass(frozen=True)
class RollupPass:
    spans: int
    from_at: datetime
    buckets: int


def rollup_spend(
    engine: Engine, *, now: datetime, rebuild_from: datetime | None = None
) -> RollupPass:
    """Rebuilds the hour and day rollups from the mark (less LOOKBACK) to now."""
    with reading(engine) as conn:
        mark = read_mark(conn, MARK)
    if rebuild_from is not None:
        start = rebuild_from
    elif mark is not None:
        start = min(mark, now) - LOOKBACK
    else:
        start = now - BACKFILL
    start = bucket_of(start, "hour")
    day = bucket_of(start, "day")
    with engine.begin() as conn:
        hours, count = _hour_totals(conn, start)
        # a day bucket is rebuilt from its earlier hours (stored) and the hours just read
        days = _day_totals({**_stored_hours(conn, day, start), **hours})
        t = spend_rollups.c
        conn.execute(delete(spend_rollups).where(t.granularity == "hour", t.bucket_at >= start))
        conn.execute(delete(spend_rollups).where(t.granularity == "day", t.bucket_at >= day))
        rows = [_row("hour", k, v) for k, v in hours.items()]
        rows += [_row("day", k, v) for k, v in days.items()]
        if rows:
            conn.execute(spend_rollups.insert(), rows)
        write_mark(conn, MARK, now, now=now)
    return RollupPass(count, start, len(rows))


class _Total:
    """An interval's spend, its runs' spend (all of them, or a stored hour's top runs) and
    how many runs spent (None: count `runs`)."""

    __slots__ = ("cost", "count", "runs")

    def __init__(self) -> None:
        self.cost = 0
        self.count: int | None = None
        self.runs: dict[str, int] = defaultdict(int)

    @property
    def run_count(self) -> int:
        return len(self.runs) if self.count is None else self.count


def _hour_totals(conn: Connection, start: datetime) -> tuple[dict[Key, _Total], int]:
    s, r = spans.c, runs.c
    q = (
        select(s.started_at, s.cost_nusd, s.run_id, r.agent, r.version, r.user)
        .join(runs, r.id == s.run_id)
        .where(s.started_at >= start, s.cost_nusd > 0)
    )
    rows = conn.execute(q).all()
    task_types = _task_types(conn, sorted({row.run_id for row in rows}))
    totals: dict[Key, _Total] = defaultdict(_Total)
    for row in rows:
        hour = bucket_of(row.started_at, "hour")
        cost = int(row.cost_nusd)
        for dim, key in _keys(row.agent, row.version, row.user, task_types.get(row.run_id)):
            total = totals[(dim, key, hour)]
            total.cost += cost
            total.runs[row.run_id] += cost
    return totals, len(rows)


def _keys(
    agent: str | None, version: str | None, user: str | None, task_type: str | None
) -> Iterable[tuple[str, str]]:
    if agent:
        yield "agent", agent
        if version:
            yield "version", f"{agent}@{version}"
        if task_type:
            yield "task_type", f"{agent}:{task_type}"
    if user:
        yield "user", user


def _task_types(conn: Connection, run_ids: list[str]) -> dict[str, str]:
    s = spans.c
    out: dict[str, str] = {}
    for chunk in chunks(run_ids):
        q = select(s.run_id, s.attributes).where(s.run_id.in_(chunk), s.parent_id.is_(None))
        for run_id, attrs in conn.execute(q):
            value = (attrs or {}).get(TASK_TYPE_ATTR)
            if isinstance(value, str) and value:
                out[run_id] = value[:200]
    return out


def _stored_hours(conn: Connection, start: datetime, end: datetime) -> dict[Key, _Total]:
    """Hour rollups already stored in [start, end); their top runs stand for their runs."""
    t = spend_rollups.c
    q = select(t.dimension, t.key, t.bucket_at, t.cost_nusd, t.runs, t.top_runs).where(
        t.granularity == "hour", t.bucket_at >= start, t.bucket_at < end
    )
    out: dict[Key, _Total] = {}
    for dim, key, bucket, cost, count, top in conn.execute(q):
        total = out[(dim, key, bucket)] = _Total()
        total.cost, total.count = int(cost), int(count)
        for run_id, run_cost in top or []:
            total.runs[str(run_id)] += int(run_cost)
    return out


def _day_totals(hours: dict[Key, _Total]) -> dict[Key, _Total]:
    days: dict[Key, _Total] = defaultdict(_Total)
    for (dim, key, hour), total in hours.items():
        day = days[(dim, key, bucket_of(hour, "day"))]
        day.cost += total.cost
        day.count = (day.count or 0) + total.run_count
        for run_id, cost in total.runs.items():
            day.runs[run_id] += cost
    return days


def _row(granularity: str, key: Key, total: _Total) -> dict[str, Any]:
    dim, name, bucket = key
    top = heapq.nlargest(TOP_RUNS, total.runs.items(), key=lambda kv: (kv[1], kv[0]))
    return {"granularity": granularity, "dimension": dim, "key": name[:400], "bucket_at": bucket,
            "cost_nusd": total.cost, "runs": total.run_count,
            "top_runs": [[rid, cost] for rid, cost in top]}  # fmt: skip


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Series:
    dimension: str
    key: str
    values: dict[datetime, int]
    top_runs: dict[datetime, list[tuple[str, int]]]


def series_since(
    engine: Engine,
    granularity: Granularity,
    since: datetime,
    *,
    dimension: str | None = None,
    key: str | None = None,
) -> list[Series]:
    """Every series with spend since `since` (one query), ordered by dimension and key."""
    t = spend_rollups.c
    q = select(t.dimension, t.key, t.bucket_at, t.cost_nusd, t.top_runs).where(
        t.granularity == granularity, t.bucket_at >= since
    )
    if dimension is not None:
        q = q.where(t.dimension == dimension)
    if key is not None:
        q = q.where(t.key == key)
    out: dict[tuple[str, str], Series] = {}
    with reading(engine) as conn:
        for dim, name, bucket, cost, top in conn.execute(q):
            series = out.setdefault((dim, name), Series(dim, name, {}, {}))
            series.values[bucket] = int(cost)
            series.top_runs[bucket] = [(str(r), int(c)) for r, c in (top or [])]
    return [out[k] for k in sorted(out)]
