"""store.runs_pg on the real PostgreSQL: the gateway's first look at a named run makes the rows
ingest.ensure_run makes (run, agent, version), never overwrites a run that exists, and reads
back its kill state and own caps in the same round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, insert, select

from tether.core.records import RunAttribution
from tether.store import kills
from tether.store.ingest import ensure_run
from tether.store.pg_async import AsyncPG
from tether.store.runs_pg import ensure_run_pg
from tether.store.tables import agent_versions, agents, run_caps, runs

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
TRACE = "5" * 32
T = TypeVar("T")
WHO = RunAttribution(agent="rp", version="v2", task_id="task_9", user="ana")


@pytest.fixture
def pg(db: Engine) -> AsyncPG:
    if db.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite's run rows go through ingest.ensure_run")
    return AsyncPG(db.url)


def _run_async(pg: AsyncPG, fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        async with pg.lifespan():
            return await fn()

    return asyncio.run(main())


def _rows(db: Engine, run_id: str) -> tuple[dict[str, Any], list[Any], list[Any]]:
    with db.connect() as conn:
        run = dict(conn.execute(select(runs).where(runs.c.id == run_id)).one()._mapping)
        ag = [tuple(r) for r in conn.execute(select(agents).where(agents.c.name == "rp"))]
        ver = [tuple(r) for r in conn.execute(select(agent_versions))]
    return run, ag, ver


def test_a_new_run_gets_the_rows_ensure_run_makes(pg: AsyncPG, db: Engine) -> None:
    with db.begin() as conn:
        ensure_run(conn, "run_twin", trace_id=TRACE, attribution=WHO, started_at=T0,
                   source="gateway", now=T0)  # fmt: skip
    twin, twin_agents, twin_versions = _rows(db, "run_twin")
    with db.begin() as conn:  # the agent rows as they were before ensure_run_pg
        conn.execute(agents.delete())
        conn.execute(agent_versions.delete())
    seen = _run_async(pg, lambda: ensure_run_pg(
        pg, "run_async", trace_id=TRACE, attribution=WHO, started_at=T0, source="gateway",
        now=T0))  # fmt: skip
    run, got_agents, got_versions = _rows(db, "run_async")
    assert {**run, "id": "run_twin"} == twin
    assert (got_agents, got_versions) == (twin_agents, twin_versions)
    assert (seen.started_at, seen.agent, seen.status, seen.kill_reason, seen.caps) == (
        T0, "rp", "running", None, None)  # fmt: skip
    assert seen.started_at.tzinfo is not None


def test_an_existing_run_is_read_not_overwritten(pg: AsyncPG, db: Engine) -> None:
    later = T0 + timedelta(minutes=5)
    with db.begin() as conn:
        ensure_run(conn, "run_old", trace_id=TRACE, attribution=RunAttribution(agent="rp"),
                   started_at=T0, source="sdk", now=T0)  # fmt: skip
        kills.kill(conn, "run_old", reason="budget of $1 spent", now=T0)
        conn.execute(insert(run_caps).values(run_id="run_old", max_cost_nusd=5, max_tokens=None,
                                             max_llm_calls=3, updated_at=T0))  # fmt: skip
    before, _, _ = _rows(db, "run_old")
    seen = _run_async(pg, lambda: ensure_run_pg(
        pg, "run_old", trace_id="6" * 32, attribution=WHO, started_at=later, source="gateway",
        now=later))  # fmt: skip
    after, ag, _ = _rows(db, "run_old")
    assert after == before  # the run's row is untouched; only the agent was seen again
    assert ag[0][agents.c.keys().index("last_seen_at")] == later
    assert (seen.started_at, seen.agent, seen.status, seen.kill_reason) == (
        T0, "rp", "killed", "budget of $1 spent")  # fmt: skip
    assert seen.caps == {"max_cost_nusd": 5, "max_tokens": None, "max_llm_calls": 3}


def test_concurrent_first_calls_of_one_run_agree(pg: AsyncPG, db: Engine) -> None:
    """Many calls naming the same new run at once (and other runs of the same agent): one row
    each, no deadlock, every call sees the same start."""

    async def many() -> list[Any]:
        return await asyncio.gather(*(ensure_run_pg(
            pg, f"run_c{i % 3}", trace_id=TRACE, attribution=WHO,
            started_at=T0 + timedelta(seconds=i), source="gateway", now=T0,
        ) for i in range(24)))  # fmt: skip

    seen = _run_async(pg, many)
    for i, s in enumerate(seen):
        assert s.started_at == seen[i % 3].started_at
    with db.connect() as conn:
        assert conn.execute(select(runs.c.id).where(runs.c.id.like("run_c%"))).all().__len__() == 3
