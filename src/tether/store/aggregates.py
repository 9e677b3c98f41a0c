"""Read-only aggregates over runs for the console (KPI tiles, sparklines, cost tables)
and /api/v1/costs: per agent, version and UTC day, with closed days served from a cache the
caller owns (the server keeps it in `State.console_cache`, at the edge); lists and single
resources come from the store modules the API uses."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.sql import ColumnElement

from tether.core.errors import BadRequestError
from tether.store.costs import cost_breakdown, day_of
from tether.store.engine import reading
from tether.store.tables import agents, runs

KPI_DAYS = 7
SPARK_DAYS = 14
CLOSED_DAYS_TTL_S = 300.0
P95_TTL_S = 60.0


@contextmanager
def aggregating(engine: Engine) -> Iterator[Connection]:
    """A read connection for GROUP BY queries: on PostgreSQL, enough work_mem that tens of
    thousands of runs hash-aggregate in memory instead of sorting on disk (4 MB default)."""
    with reading(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL work_mem = '32MB'"))
        yield conn


def duration_ms(conn: Connection) -> ColumnElement[Any]:
    """A finished run's duration in milliseconds, in either dialect."""
    c = runs.c
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", c.ended_at - c.started_at) * 1000.0
    return (func.julianday(c.ended_at) - func.julianday(c.started_at)) * 86_400_000.0


# (agent, version, UTC day, runs, cost in nano-dollars, input tokens, output tokens)
DayRow = tuple[str, str | None, str, int, int, int, int]
# key -> (time.monotonic() when computed, value); the caller's, e.g. State.console_cache
Cache = dict[tuple[Any, ...], tuple[float, Any]]


@dataclass
class AgentVersionStats:
    """One row of the home page: an agent at one version."""

    agent: str
    version: str | None
    runs: int = 0
    cost_today_nusd: int = 0
    cost_window_nusd: int = 0
    p95_ms: float | None = None
    running: int = 0
    runs_per_day: list[int] = field(default_factory=list)
    cost_per_day: list[int] = field(default_factory=list)
    # from store.costs.success_at_target: rate, interval, target, finished runs
    kpi: dict[str, Any] | None = None


def _iso(day: Any) -> str:
    """store.costs.day_of gives text on SQLite and a date on PostgreSQL."""
    return day if isinstance(day, str) else day.isoformat()


def day_list(now: datetime, days: int) -> list[str]:
    today = now.date()
    return [(today - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def _midnight(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def cached(cache: Cache | None, key: tuple[Any, ...], ttl_s: float, compute: Any) -> Any:
    """`compute()`, or its value from `cache` if younger than `ttl_s` seconds."""
    if cache is None:
        return compute()
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and now - hit[0] < ttl_s:
        return hit[1]
    value = compute()
    if len(cache) > 256:
        cache.clear()
    cache[key] = (now, value)
    return value


def _day_rows(engine: Engine, start: datetime, end: datetime | None) -> list[DayRow]:
    c = runs.c
    with aggregating(engine) as conn:
        day = day_of(conn, c.started_at)
        total = [func.coalesce(func.sum(col), 0) for col in (c.cost_nusd, c.input_tokens,
                                                              c.output_tokens)]  # fmt: skip
        q = (
            select(c.agent, c.version, day, func.count(), *total)
            .where(c.started_at >= start, c.agent.is_not(None))
            .group_by(c.agent, c.version, day)
        )
        if end is not None:
            q = q.where(c.started_at < end)
        return [(a, v, _iso(d), int(n), int(cost), int(tin), int(tout))
                for a, v, d, n, cost, tin, tout in conn.execute(q)]  # fmt: skip


def daily_rows(engine: Engine, days: list[str], cache: Cache | None = None) -> list[DayRow]:
    """Runs and cost per agent, version and UTC day over `days` (oldest first). Closed days
    come from `cache` (only late spans change them; CLOSED_DAYS_TTL_S bounds that lag);
    today is always counted live."""
    today = _midnight(days[-1])
    closed = cached(cache, ("days", days[0], days[-1]), CLOSED_DAYS_TTL_S,
                     lambda: _day_rows(engine, _midnight(days[0]), today))  # fmt: skip
    return [*closed, *_day_rows(engine, today, None)]


def _live_runs(engine: Engine, since: datetime) -> dict[tuple[str, str | None], int]:
    c = runs.c
    q = (
        select(c.agent, c.version, func.count())
        .where(c.status.in_(("running", "awaiting_approval")), c.started_at >= since)
        .group_by(c.agent, c.version)
    )
    with reading(engine) as conn:
        return {(a, v): int(n) for a, v, n in conn.execute(q) if a is not None}


def agent_overview(
    engine: Engine, *, now: datetime, cache: Cache | None = None
) -> list[AgentVersionStats]:
    """Per agent and version: runs and cost per day, p95 duration, cost today, live runs."""
    days = day_list(now, SPARK_DAYS)
    index = {d: i for i, d in enumerate(days)}
    kpi_from = (now.date() - timedelta(days=KPI_DAYS - 1)).isoformat()
    out: dict[tuple[str, str | None], AgentVersionStats] = {}
    for agent, version, d, n, cost, _tin, _tout in daily_rows(engine, days, cache):
        st = out.get((agent, version))
        if st is None:
            st = out[(agent, version)] = AgentVersionStats(
                agent, version, runs_per_day=[0] * len(days), cost_per_day=[0] * len(days)
            )
        if d in index:
            st.runs_per_day[index[d]] += n
            st.cost_per_day[index[d]] += cost
        if d >= kpi_from:
            st.runs += n
            st.cost_window_nusd += cost
        if d == days[-1]:
            st.cost_today_nusd += cost
    for key, live in _live_runs(engine, _midnight(days[0])).items():
        if key in out:
            out[key].running = live
    since = now - timedelta(days=KPI_DAYS)
    p95 = cached(cache, ("p95", kpi_from), P95_TTL_S, lambda: p95_durations(engine, since))
    for key, value in p95.items():
        if key in out:
            out[key].p95_ms = value
    return sorted(out.values(), key=lambda s: (s.agent, s.version or ""))


def p95_durations(engine: Engine, since: datetime) -> dict[tuple[str, str | None], float]:
    """The 95th percentile duration of finished runs per agent and version since `since`."""
    c = runs.c
    where = (c.started_at >= since, c.ended_at.is_not(None), c.agent.is_not(None))
    with aggregating(engine) as conn:
        dur = duration_ms(conn)
        if conn.dialect.name == "postgresql":
            q = select(c.agent, c.version, func.percentile_cont(0.95).within_group(dur))
            rows = conn.execute(q.where(*where).group_by(c.agent, c.version)).all()
            return {(a, v): float(x) for a, v, x in rows if x is not None}
        samples: dict[tuple[str, str | None], list[float]] = defaultdict(list)
        for agent, version, value in conn.execute(select(c.agent, c.version, dur).where(*where)):
            if value is not None:
                samples[(agent, version)].append(float(value))
    return {k: percentile(v, 0.95) for k, v in samples.items()}


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def merge_by_agent(stats: list[AgentVersionStats]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for s in stats:
        row = merged.setdefault(s.agent, [0] * len(s.cost_per_day))
        for i, v in enumerate(s.cost_per_day):
            row[i] += v
    return merged


def daily_cost_by_agent(
    engine: Engine, *, days: list[str], agent: str | None = None, cache: Cache | None = None
) -> dict[str, list[int]]:
    """Cost per agent per day over `days` (ISO dates, oldest first), zeros filled in."""
    index = {d: i for i, d in enumerate(days)}
    out: dict[str, list[int]] = {}
    for name, _version, d, _n, cost, _tin, _tout in daily_rows(engine, days, cache):
        if d in index and (agent is None or name == agent):
            out.setdefault(name, [0] * len(days))[index[d]] += cost
    return out


def agent_names(engine: Engine) -> list[str]:
    """For filter drop-downs: the agents table, not an aggregate over runs."""
    with reading(engine) as conn:
        return list(conn.execute(select(agents.c.name).order_by(agents.c.name)).scalars())


def cost_by_day(
    engine: Engine, *, days: list[str], agent: str | None = None, cache: Cache | None = None
) -> list[dict[str, Any]]:
    """store.costs.cost_breakdown(group_by="day") rows over whole UTC days, from the day cache."""
    out: dict[str, dict[str, Any]] = {
        d: {"key": d, "cost_nusd": 0, "input_tokens": 0, "output_tokens": 0, "runs": 0}
        for d in days
    }
    for name, _version, d, n, cost, tin, tout in daily_rows(engine, days, cache):
        if d in out and (agent is None or name == agent):
            row = out[d]
            row["runs"] += n
            row["cost_nusd"] += cost
            row["input_tokens"] += tin
            row["output_tokens"] += tout
    return [r for r in out.values() if r["runs"]]


def top_costs(
    engine: Engine,
    group: str,
    *,
    start: datetime,
    agent: str | None,
    limit: int,
    end: datetime | None = None,
) -> tuple[list[dict[str, Any]], int, int]:
    """The `limit` costliest tasks or users started in [start, end) (cost_breakdown's rows,
    in its order), the number of groups and the total cost, in one pass: those groups number
    in the tens of thousands. The console's cost tables and `/api/v1/costs?limit=` use it."""
    if group not in ("task", "user"):
        raise BadRequestError(f"top costs are by task or user, not {group!r}")
    if end is not None and end <= start:
        raise BadRequestError("to: must be later than from")
    c = runs.c
    key = {"task": c.task_id, "user": c.user}[group]
    cost = func.coalesce(func.sum(c.cost_nusd), 0)
    q = (
        select(
            key.label("key"), cost.label("cost_nusd"),
            func.coalesce(func.sum(c.input_tokens), 0), func.coalesce(func.sum(c.output_tokens), 0),
            func.count(), func.count().over(), func.sum(cost).over(),
        )
        .where(c.started_at >= start)
        .group_by(key)
        .order_by(cost.desc(), key)
        .limit(limit)
    )  # fmt: skip
    if agent is not None:
        q = q.where(c.agent == agent)
    if end is not None:
        q = q.where(c.started_at < end)
    with aggregating(engine) as conn:
        rows = conn.execute(q).all()
    if not rows:
        return [], 0, 0
    out = [{"key": k, "cost_nusd": int(v), "input_tokens": int(i), "output_tokens": int(o),
            "runs": int(n)} for k, v, i, o, n, _g, _t in rows]  # fmt: skip
    return out, int(rows[0][5]), int(rows[0][6])


def cost_by_day_range(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    agent: str | None = None,
    cache: Cache | None = None,
) -> list[dict[str, Any]]:
    """`cost_breakdown(group_by="day")` over [start, end): from the day cache when the range is
    whole UTC days ending no later than tomorrow (the console's windows and whole-day API
    ranges), else straight from `cost_breakdown`. Both give the same rows."""
    first, last = start.astimezone(UTC), end.astimezone(UTC)
    tomorrow = _midnight(now.astimezone(UTC).date().isoformat()) + timedelta(days=1)
    whole = first == _midnight(first.date().isoformat()) and last == _midnight(
        last.date().isoformat()
    )
    n = (last - first).days
    if not whole or last > tomorrow or not 0 < n <= 400:
        return cost_breakdown(engine, "day", start=start, end=end, agent=agent)
    days = [(first + timedelta(days=i)).date().isoformat() for i in range(n)]
    return cost_by_day(engine, days=days, agent=agent, cache=cache)
