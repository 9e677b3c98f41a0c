"""The gateway's span writer: batches off the request path, flushes everything at shutdown, and a
span that cannot be built or stored does not take the others down with it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from tether.core.records import RunAttribution, SpanRecord
from tether.gateway.llm.spans import SpanWriter
from tether.store.ingest import ensure_run, write_spans
from tether.store.pg_async import AsyncPG
from tether.store.tables import runs, spans


def record(i: int, run_id: str = "run_writer") -> SpanRecord:
    now = datetime.now(UTC)
    return SpanRecord(trace_id="a" * 32, span_id=f"{i:016x}", run_id=run_id, kind="llm",
                      name="chat m", started_at=now, ended_at=now, input_tokens=1,
                      output_tokens=2, cost_nusd=5, status="ok",
                      attribution=RunAttribution(agent="writer"))  # fmt: skip


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(spans)).scalar_one())


async def test_everything_submitted_is_stored_by_shutdown(db: Engine) -> None:
    writer = SpanWriter(db)
    async with writer.running():
        for i in range(120):
            writer.submit(record(i) if i % 2 else (lambda i=i: record(i)))  # type: ignore[misc]
    assert count(db) == 120 and writer.written == 120
    with db.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.id == "run_writer")).one()
    assert (run.llm_calls, run.cost_nusd, run.agent) == (120, 600, "writer")


async def test_a_broken_span_does_not_lose_the_others(sqlite_db: Engine) -> None:
    writer = SpanWriter(sqlite_db)

    def broken() -> SpanRecord:
        raise RuntimeError("a bug while building one span")

    async with writer.running():
        writer.submit(record(1))
        writer.submit(broken)
        writer.submit(record(2))
        # the store refuses a naive timestamp: this span alone fails, its batch-mates are kept
        naive = datetime(2026, 1, 1)
        writer.submit(SpanRecord(trace_id="b" * 32, span_id="f" * 16, run_id="run_bad",
                                 kind="llm", name="x", started_at=naive))  # fmt: skip
        writer.submit(record(3))
    assert count(sqlite_db) == 3
    assert writer.failed == 1


async def test_flush_run_waits_for_that_run_only_and_cuts_the_batch_window(db: Engine) -> None:
    writer = SpanWriter(db)
    async with writer.running():
        assert await writer.flush_run("run_nothing_queued", timeout=0.01)  # nothing to wait for
        writer.submit(lambda: record(1, "run_a"), "run_a")
        writer.submit(record(2, "run_b"))
        assert await writer.flush_run("run_a", timeout=30)
        with db.connect() as conn:
            stored = conn.execute(select(spans.c.run_id).where(spans.c.run_id == "run_a")).all()
        assert len(stored) == 1

        # a run whose span cannot be built is not waited for until the timeout
        def broken() -> SpanRecord:
            raise RuntimeError("a bug while building run_c's span")

        writer.submit(broken, "run_c")
        assert await writer.flush_run("run_c", timeout=30)
    assert count(db) == 2 and writer._by_run == {}


async def test_a_take_cancelled_while_it_waits_gives_its_spans_back(db: Engine) -> None:
    writer = SpanWriter(db)
    writer.submit(record(1, "run_t"))
    writing = writer._take(list(writer._untaken["run_t"]))  # a batch write has begun on span 1
    writer.submit(record(2, "run_t"))
    take = asyncio.create_task(writer.take_runs(["run_t"], timeout=30))
    while not writer._run_waiters.get("run_t"):  # taken span 2, now waiting for span 1
        await asyncio.sleep(0)
    take.cancel()
    with pytest.raises(asyncio.CancelledError):
        await take
    assert [e.item.span_id for e in writer._untaken["run_t"]] == [f"{2:016x}"]
    writer._done(writing)  # the batch write of span 1 ends (it stored nothing here)
    async with writer.running():
        pass
    with db.connect() as conn:
        assert conn.execute(select(spans.c.span_id)).scalars().all() == [f"{2:016x}"]
    assert writer._by_run == {} and writer._pending == 0


async def test_take_runs_hands_over_the_spans_no_write_has_started_on(db: Engine) -> None:
    writer = SpanWriter(db)
    async with writer.running():
        writer.submit(record(1, "run_t"))
        writer.submit(lambda: record(2, "run_t"), "run_t")
        writer.submit(record(3, "run_u"))
        taken = await writer.take_runs(["run_t", "run_none"])
        assert [run for _, run in taken] == ["run_t", "run_t"]
        records = writer.build([item for item, _ in taken])
        write_spans(db, records, now=datetime.now(UTC), source="gateway")
        writer.stored(records)
        assert await writer.take_runs(["run_t"]) == []  # nothing left to take, nothing to wait for
    # run_u's span by the writer, run_t's once, by their taker; all counted
    assert count(db) == 3 and writer.written == 3
    assert writer._untaken == {} and writer._by_run == {} and writer._pending == 0


async def test_known_runs_take_the_fast_path_and_the_rest_the_general_one(db: Engine) -> None:
    """Spans of runs that exist go through store.gateway_spans (PostgreSQL, the server's async
    connections) or store.gateway_spans_sqlite; a batch with a run not created yet is still
    stored whole (ingest.write_spans creates the run), and a batch sent again is not counted
    twice."""
    now = datetime.now(UTC)
    with db.begin() as conn:
        ensure_run(conn, "run_known", trace_id=None, attribution=RunAttribution(),
                   started_at=now, source="gateway", now=now)  # fmt: skip
    pg = AsyncPG(db.url) if db.dialect.name == "postgresql" else None
    async with pg.lifespan() if pg is not None else contextlib.nullcontext():
        writer = SpanWriter(db, pg)
        async with writer.running():
            for i in range(50):
                writer.submit(record(i, "run_known"))
            assert await writer.flush_run("run_known", timeout=30)
            assert writer.written_fast == 50
            writer.submit(record(100, "run_new"))
            writer.submit(replace(record(101, "run_root"), is_root=True))
            writer.submit(record(102, "run_known"))
        # the second batch again, as after a COMMIT whose reply was lost
        await writer._store([record(100, "run_new"), record(102, "run_known")])
    assert count(db) == 53 and writer.written == 53
    with db.connect() as conn:
        got = {r.id: r for r in conn.execute(select(runs))}
    assert (got["run_known"].llm_calls, got["run_known"].cost_nusd) == (51, 255)
    assert got["run_known"].agent == "writer"  # filled in from the spans
    assert (got["run_new"].span_count, got["run_new"].agent) == (1, "writer")
    assert got["run_root"].status == "succeeded"
