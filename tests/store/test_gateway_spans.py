"""store.gateway_spans on the real PostgreSQL: a batch of gateway spans leaves the runs exactly as
write_spans_in would (totals, attribution, start, agents seen); it declines, storing nothing,
whenever write_spans_in must do more (a span stored already, a run missing, a trace whose stored
spans belong to another run); and run totals stay exact while OTLP ingest writes the same run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, func, select

from tether.core.records import RunAttribution, SpanRecord
from tether.store.gateway_spans import write_gateway_spans
from tether.store.ingest import ensure_run, recompute_totals, write_spans
from tether.store.pg_async import AsyncPG
from tether.store.tables import agent_versions, agents, runs, spans

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
TRACE = "7" * 32
T = TypeVar("T")


@pytest.fixture
def pg(db: Engine) -> AsyncPG:
    if db.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has store.gateway_spans_sqlite (its own tests)")
    return AsyncPG(db.url)


def _run_async(pg: AsyncPG, fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        async with pg.lifespan():
            return await fn()

    return asyncio.run(main())


def _span(i: int, run_id: str = "run_gw", *, trace: str = TRACE, cost: int = 7,
          started: datetime = T0, **kw: Any) -> SpanRecord:  # fmt: skip
    return SpanRecord(
        trace_id=trace, span_id=f"{i:016x}", run_id=run_id, kind="llm", name="chat m",
        started_at=started, ended_at=started + timedelta(milliseconds=5), input='{"m":1}',
        output="hi", model="m", input_tokens=10, output_tokens=3, cached_tokens=1,
        cost_nusd=cost, status="ok", attributes={"tether.key_id": "key_1", "n": i},
        **{"attribution": RunAttribution(agent="gw", version="v1"), **kw},
    )  # fmt: skip


def _ensure(db: Engine, run_id: str = "run_gw", **attribution: Any) -> None:
    with db.begin() as conn:
        ensure_run(conn, run_id, trace_id=TRACE, attribution=RunAttribution(**attribution),
                   started_at=T0 + timedelta(seconds=1), source="gateway", now=T0)  # fmt: skip


def _row(db: Engine, run_id: str = "run_gw") -> dict[str, Any]:
    with db.connect() as conn:
        return dict(conn.execute(select(runs).where(runs.c.id == run_id)).one()._mapping)


def _count(db: Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(spans)).scalar_one())


def test_a_batch_leaves_its_run_as_write_spans_would(pg: AsyncPG, db: Engine) -> None:
    _ensure(db, agent="gw")  # the gateway's run: agent known, version and task not yet
    first = [_span(1, started=T0), _span(2), replace(_span(3), kind="embedding", cost_unknown=True)]
    later = [_span(4, attribution=RunAttribution(agent="gw", version="v2", task_id="t1"))]

    async def main() -> None:
        assert await write_gateway_spans(pg, first, T0)
        assert await write_gateway_spans(pg, later, T0 + timedelta(seconds=5))

    _run_async(pg, main)
    mine = _row(db)
    assert (mine["span_count"], mine["llm_calls"], mine["tool_calls"]) == (4, 3, 0)
    assert (mine["cost_nusd"], mine["input_tokens"], mine["output_tokens"]) == (28, 40, 12)
    assert mine["cached_tokens"] == 4 and mine["cost_unknown"] is True
    # the earliest span moved the start back; the first version said is kept, the task filled
    assert mine["started_at"] == T0 and (mine["version"], mine["task_id"]) == ("v1", "t1")
    assert mine["status"] == "running" and mine["updated_at"] == T0 + timedelta(seconds=5)
    # the same spans written by write_spans into a twin run: the same row, the same spans
    _ensure(db, "run_twin", agent="gw")
    twins = [replace(s, run_id="run_twin", trace_id="8" * 32) for s in first]
    write_spans(db, twins, now=T0, source="gateway")
    write_spans(db, [replace(later[0], run_id="run_twin", trace_id="8" * 32)],
                now=T0 + timedelta(seconds=5), source="gateway")  # fmt: skip
    twin = _row(db, "run_twin")
    for name in ("span_count", "llm_calls", "cost_nusd", "input_tokens", "output_tokens",
                 "cached_tokens", "cost_unknown", "started_at", "version", "task_id", "agent",
                 "updated_at", "status"):  # fmt: skip
        assert mine[name] == twin[name], name
    cols = [c for c in spans.c if c.name not in ("trace_id", "run_id")]
    with db.connect() as conn:
        got = {r.run_id: r[1:] for r in conn.execute(
            select(spans.c.run_id, *cols).where(spans.c.span_id == f"{1:016x}"))}  # fmt: skip
        seen = conn.execute(select(agents.c.last_seen_at).where(agents.c.name == "gw")).scalar()
        versions = set(conn.execute(select(agent_versions.c.version)).scalars())
    assert got["run_gw"] == got["run_twin"]  # stored alike, JSON attributes included
    assert seen == T0 + timedelta(seconds=5) and versions == {"v1", "v2"}


def test_it_declines_and_stores_nothing_when_write_spans_must_decide(
    pg: AsyncPG, db: Engine
) -> None:
    _ensure(db)
    write_spans(db, [_span(1)], now=T0, source="otlp")  # span 1 is stored already
    # trace 9..9 has spans of its own default run stored: a named run's span would move them
    write_spans(db, [_span(5, "run_" + "9" * 32, trace="9" * 32)], now=T0, source="otlp")
    # trace 6..6 has spans of a named run: a span of its default run would be adopted
    _ensure(db, "run_named")
    write_spans(db, [_span(6, "run_named", trace="6" * 32)], now=T0, source="otlp")
    _ensure(db, "run_" + "6" * 32)  # it exists: only the trace's other run makes it decline

    async def main() -> list[bool]:
        return [
            await write_gateway_spans(pg, [_span(2), _span(1, cost=99)], T0),
            await write_gateway_spans(pg, [_span(3), _span(4, "run_missing")], T0),
            await write_gateway_spans(pg, [_span(7, trace="9" * 32)], T0),
            await write_gateway_spans(pg, [_span(8, "run_" + "6" * 32, trace="6" * 32)], T0),
            await write_gateway_spans(pg, [_span(9)], T0),
        ]

    assert _run_async(pg, main) == [False, False, False, False, True]
    assert _count(db) == 4  # spans 1, 5, 6 and 9: the declined batches stored nothing
    mine = _row(db)
    assert (mine["span_count"], mine["cost_nusd"]) == (2, 14)


def test_totals_stay_exact_with_otlp_ingest_of_the_same_run(pg: AsyncPG, db: Engine) -> None:
    """Gateway batches on the loop and OTLP batches (write_spans, recomputing from stored spans)
    from threads, on one run at once: every span counted once."""
    _ensure(db)
    gateway = [[_span(1000 + i * 10 + j, cost=3) for j in range(10)] for i in range(30)]
    otlp = [[_span(5000 + i * 10 + j, cost=5) for j in range(10)] for i in range(12)]

    def ingest(batch: list[SpanRecord]) -> None:
        write_spans(db, batch, now=T0, source="otlp")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        threads = [loop.run_in_executor(None, ingest, b) for b in otlp]

        async def gw() -> None:
            for b in gateway:
                assert await write_gateway_spans(pg, b, T0)

        await asyncio.gather(gw(), *threads)

    _run_async(pg, main)
    row = _row(db)
    assert (row["span_count"], row["cost_nusd"]) == (420, 300 * 3 + 120 * 5)
    with db.begin() as conn:
        recompute_totals(conn, ["run_gw"], now=T0)
    again = _row(db)
    assert (again["span_count"], again["cost_nusd"], again["llm_calls"]) == (420, 1500, 420)


def test_writers_of_the_same_runs_in_parallel(pg: AsyncPG, db: Engine) -> None:
    """40 batches at once over the pool's connections (as replicas' writers), each touching
    both runs: no deadlock (runs locked in id order), every span counted."""
    _ensure(db)
    _ensure(db, "run_b")
    batches = [[_span(i * 10 + j, "run_gw" if j % 2 else "run_b", cost=2) for j in range(10)]
               for i in range(1, 41)]  # fmt: skip

    async def main() -> None:
        done = await asyncio.gather(*(write_gateway_spans(pg, b, T0) for b in batches))
        assert all(done)

    _run_async(pg, main)
    assert _row(db)["span_count"] == 200 and _row(db, "run_b")["cost_nusd"] == 400


def test_a_run_of_its_own_is_created_whole_as_write_spans_would(pg: AsyncPG, db: Engine) -> None:
    """The gateway's root span (a request with no run id is a run of its own) creates its run with
    the root's status, input, output and error; a root whose run exists already (a stream's run,
    created ahead) is left to write_spans."""
    ok = replace(_span(1, "run_own", trace="1" * 32), is_root=True,
                 attribution=RunAttribution(agent="gw", user="u1"))  # fmt: skip
    failed = replace(_span(2, "run_bad", trace="2" * 32), is_root=True, status="error",
                     error="upstream 500")  # fmt: skip
    child = replace(_span(3, "run_bad", trace="2" * 32), started_at=T0 - timedelta(seconds=1))
    _ensure(db, "run_streamed")
    streamed = replace(_span(4, "run_streamed", trace="4" * 32), is_root=True)

    async def main() -> list[bool]:
        return [await write_gateway_spans(pg, [ok, failed, child], T0),
                await write_gateway_spans(pg, [streamed], T0)]  # fmt: skip

    assert _run_async(pg, main) == [True, False]
    twins = [replace(r, run_id=r.run_id + "_twin", trace_id=r.trace_id.replace("1", "a")
                     .replace("2", "b")) for r in (ok, failed, child)]  # fmt: skip
    write_spans(db, twins, now=T0, source="gateway")
    for run_id in ("run_own", "run_bad"):
        mine, twin = _row(db, run_id), _row(db, run_id + "_twin")
        for name in set(mine) - {"id", "trace_id"}:
            assert mine[name] == twin[name], (run_id, name)
    assert _row(db, "run_own")["status"] == "succeeded" and _row(db, "run_own")["user"] == "u1"
    bad = _row(db, "run_bad")
    assert (bad["status"], bad["error"], bad["span_count"]) == ("failed", "upstream 500", 2)
    assert bad["started_at"] == T0 - timedelta(seconds=1)
