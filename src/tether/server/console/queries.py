"""Read-only aggregates only the console draws (KPI tiles, sparklines, anomalies); lists and
single resources come from the store modules the API uses."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select, text
from sqlalchemy.sql import ColumnElement

from tether.store.costs import day_of
from tether.store.engine import reading
from tether.store.tables import agents, approvals, runs

KPI_DAYS = 7
SPARK_DAYS = 14
ANOMALY_FACTOR = 2.0
ANOMALY_FLOOR_NUSD = 10_000_000  # $0.01: a day that cheap is never an anomaly
MIN_BASELINE_DAYS = 3


@contextmanager
def aggregating(engine: Engine) -> Iterator[Connection]:
    """A read connection for GROUP BY queries: on PostgreSQL, enough work_mem that tens of
    thousands of runs hash-aggregate in memory instead of sorting on disk (4 MB default)."""
    with reading(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL work_mem = '32MB'"))
        yield conn


def duration_ms(conn: Connection) -> ColumnElement[float]:
    c = runs.c
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", c.ended_at - c.started_at) * 1000.0
    return (func.julianday(c.ended_at) - func.julianday(c.started_at)) * 86_400_000.0


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


@dataclass(frozen=True)
class Anomaly:
    agent: str
    day: str
    what: str
    value_nusd: int
    baseline_nusd: int

    @property
    def factor(self) -> float:
        return self.value_nusd / self.baseline_nusd if self.baseline_nusd else float("inf")


def _iso(day: Any) -> str:
    """store.costs.day_of gives text on SQLite and a date on PostgreSQL."""
    return day if isinstance(day, str) else day.isoformat()


def day_list(now: datetime, days: int) -> list[str]:
    today = now.date()
    return [(today - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def agent_overview(engine: Engine, *, now: datetime) -> list[AgentVersionStats]:
    """Per agent and version: runs and cost per day, p95 duration, cost today, live runs."""
    days = day_list(now, SPARK_DAYS)
    since = datetime.fromisoformat(days[0]).replace(tzinfo=UTC)
    index = {d: i for i, d in enumerate(days)}
    kpi_from = (now.date() - timedelta(days=KPI_DAYS - 1)).isoformat()
    c = runs.c
    out: dict[tuple[str, str | None], AgentVersionStats] = {}
    with aggregating(engine) as conn:
        day = day_of(conn, c.started_at)
        q = (
            select(
                c.agent, c.version, day.label("day"), func.count().label("n"),
                func.coalesce(func.sum(c.cost_nusd), 0),
                func.sum(case((c.status.in_(("running", "awaiting_approval")), 1), else_=0)),
            )
            .where(c.started_at >= since, c.agent.is_not(None))
            .group_by(c.agent, c.version, day)
        )  # fmt: skip
        for agent, version, day_value, n, cost, live in conn.execute(q):
            d = _iso(day_value)
            st = out.get((agent, version))
            if st is None:
                st = out[(agent, version)] = AgentVersionStats(
                    agent, version, runs_per_day=[0] * len(days), cost_per_day=[0] * len(days),
                )  # fmt: skip
            if d in index:
                i = index[d]
                st.runs_per_day[i] += int(n)
                st.cost_per_day[i] += int(cost)
            if d >= kpi_from:
                st.runs += int(n)
                st.cost_window_nusd += int(cost)
            st.running += int(live or 0)
            if d == days[-1]:
                st.cost_today_nusd += int(cost)
        _fill_p95(conn, out, since=now - timedelta(days=KPI_DAYS))
    return sorted(out.values(), key=lambda s: (s.agent, s.version or ""))


def _fill_p95(
    conn: Connection, out: dict[tuple[str, str | None], AgentVersionStats], *, since: datetime
) -> None:
    c = runs.c
    dur = duration_ms(conn)
    where = (c.started_at >= since, c.ended_at.is_not(None), c.agent.is_not(None))
    if conn.dialect.name == "postgresql":
        p95 = func.percentile_cont(0.95).within_group(dur)
        for agent, version, value in conn.execute(
            select(c.agent, c.version, p95).where(*where).group_by(c.agent, c.version)
        ):
            if (agent, version) in out and value is not None:
                out[(agent, version)].p95_ms = float(value)
        return
    samples: dict[tuple[str, str | None], list[float]] = defaultdict(list)
    for agent, version, value in conn.execute(select(c.agent, c.version, dur).where(*where)):
        if value is not None:
            samples[(agent, version)].append(float(value))
    for k, values in samples.items():
        if k in out:
            out[k].p95_ms = percentile(values, 0.95)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def cost_anomalies(
    days: list[str], cost_by_agent: dict[str, list[int]], *, trailing: int = 7
) -> list[Anomaly]:
    """Days whose cost is more than ANOMALY_FACTOR x the median of the `trailing` days before."""
    found = []
    for agent, costs in cost_by_agent.items():
        for i in range(trailing, len(costs)):
            window = costs[i - trailing : i]
            if sum(1 for v in window if v > 0) < MIN_BASELINE_DAYS:
                continue  # a new agent has no baseline yet: its first busy day is no anomaly
            base = int(statistics.median(window))
            value = costs[i]
            if value >= ANOMALY_FLOOR_NUSD and value > ANOMALY_FACTOR * base:
                found.append(Anomaly(agent, days[i], "cost/day", value, base))
    return sorted(found, key=lambda a: (a.day, a.agent), reverse=True)


def merge_by_agent(stats: list[AgentVersionStats]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for s in stats:
        row = merged.setdefault(s.agent, [0] * len(s.cost_per_day))
        for i, v in enumerate(s.cost_per_day):
            row[i] += v
    return merged


def pending_approvals_by_agent(engine: Engine) -> dict[str, int]:
    with reading(engine) as conn:
        rows = conn.execute(
            select(approvals.c.agent, func.count())
            .where(approvals.c.status == "pending")
            .group_by(approvals.c.agent)
        ).all()
    return {str(a or "—"): int(n) for a, n in rows}


def daily_cost_by_agent(
    engine: Engine, *, days: list[str], agent: str | None = None
) -> dict[str, list[int]]:
    """Cost per agent per day over `days` (ISO dates, oldest first), zeros filled in."""
    c = runs.c
    since = datetime.fromisoformat(days[0]).replace(tzinfo=UTC)
    out: dict[str, list[int]] = {}
    with aggregating(engine) as conn:
        day = day_of(conn, c.started_at)
        q = (
            select(c.agent, day, func.coalesce(func.sum(c.cost_nusd), 0))
            .where(c.started_at >= since, c.agent.is_not(None))
            .group_by(c.agent, day)
        )
        if agent is not None:
            q = q.where(c.agent == agent)
        index = {d: i for i, d in enumerate(days)}
        for name, day_value, cost in conn.execute(q):
            d = _iso(day_value)
            if d in index:
                out.setdefault(name, [0] * len(days))[index[d]] += int(cost)
    return out


def agent_names(engine: Engine) -> list[str]:
    """For filter drop-downs: the agents table, not an aggregate over runs."""
    with reading(engine) as conn:
        return list(conn.execute(select(agents.c.name).order_by(agents.c.name)).scalars())
