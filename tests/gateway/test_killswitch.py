from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.pool import Pool

from tether.core.errors import NotFoundError, RunKilledError
from tether.core.records import RunAttribution
from tether.gateway.llm.killswitch import KillSwitch, kill_run
from tether.store import audit
from tether.store.engine import make_engine
from tether.store.ingest import ensure_run, set_run_status
from tether.store.kills import DURATION_REASON
from tether.store.tables import runs


def _run(engine: Engine, run_id: str) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        ensure_run(conn, run_id, trace_id=None, attribution=RunAttribution(agent="a"),
                   started_at=now, source="gateway", now=now)  # fmt: skip


@contextmanager
def _statements() -> Iterator[list[tuple[int, str]]]:
    """Every statement run meanwhile, with its thread: through SQLAlchemy on PostgreSQL, and on
    the SQLite connections opened from now on (the kill switch reads them in plain SQL)."""
    out: list[tuple[int, str]] = []

    def through(conn: Any, cursor: object, statement: str, *_: object) -> None:
        if conn.dialect.name != "sqlite":
            out.append((threading.get_ident(), statement))

    def traced(dbapi_conn: Any, _record: object) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.set_trace_callback(lambda s: out.append((threading.get_ident(), s)))

    event.listen(Engine, "before_cursor_execute", through)
    event.listen(Pool, "connect", traced)
    try:
        yield out
    finally:
        event.remove(Engine, "before_cursor_execute", through)
        event.remove(Pool, "connect", traced)


def _status(engine: Engine, run_id: str) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(runs.c.status, runs.c.kill_reason).where(runs.c.id == run_id)
        ).one()
    return row.status, row.kill_reason


async def test_kill_in_this_process_ends_streams_at_once_and_refuses_later_calls(
    db: Engine,
) -> None:
    _run(db, "run_k1")
    ks = KillSwitch(db)
    now = datetime.now(UTC)
    with ks.track("run_k1") as h1, ks.track("run_k1") as h2, ks.track("run_other") as h3:
        assert not ks.is_killed("run_k1")
        assert await ks.kill("run_k1", "runaway loop", now=now, actor="key_admin")
        assert h1.killed.is_set() and h2.killed.is_set() and not h3.killed.is_set()
        assert h1.reason == "runaway loop"
    assert ks.inflight() == []
    assert ks.killed_reason("run_k1") == "runaway loop"
    with pytest.raises(RunKilledError, match="runaway loop"):
        await ks.ensure_alive("run_k1", now=now)
    assert _status(db, "run_k1") == ("killed", "runaway loop")
    entries = list(audit.iter_entries(db))
    assert [(e.actor, e.action, e.subject, e.data) for e in entries] == [
        ("key_admin", "run.killed", "run_k1", {"reason": "runaway loop"})
    ]
    # a second kill changes nothing; a new handle of a killed run starts killed
    assert not await ks.kill("run_k1", "again", now=now)
    assert ks.register("run_k1").killed.is_set()
    assert not await ks.kill("run_missing", "x", now=now)


async def test_kill_from_another_process_reaches_streams_within_a_poll(
    db: Engine, db_url: str
) -> None:
    """Two engines on one database stand for two `tether serve` processes."""
    other = make_engine(db_url, pool_size=2)
    here, there = KillSwitch(db), KillSwitch(other)
    latencies = []
    try:
        async with here.lifespan():
            for i in range(3):
                run_id = f"run_x{i}"
                _run(db, run_id)
                with here.track(run_id) as handle:
                    t0 = time.perf_counter()
                    assert await there.kill(run_id, "stop", now=datetime.now(UTC))
                    with anyio.fail_after(2):
                        await handle.killed.wait()
                    latencies.append(time.perf_counter() - t0)
                    assert handle.reason == "stop"
                assert here.is_killed(run_id)
    finally:
        other.dispose()
    # the target is 100 ms (bench/budget_stress.py measures it); this bound only guards a
    # loaded test machine against a flake while still proving the poll works
    assert max(latencies) < 1.0


async def test_on_postgresql_a_kill_is_pushed_to_other_processes(
    db: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """LISTEN/NOTIFY, not the poll, carries the kill: `here` runs only its listener (no poll
    loop), so its handle can fire only through the notification the kill's commit sends."""
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite has no notifications: the kill switch polls its log there")
    other = make_engine(db_url, pool_size=2)
    here, there = KillSwitch(db), KillSwitch(other)
    latencies = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(here.listen_loop)
            with anyio.fail_after(30):
                while not here.pushed:
                    await anyio.sleep(0.01)
            for i in range(3):
                run_id = f"run_push{i}"
                _run(db, run_id)
                with here.track(run_id) as handle:
                    t0 = time.perf_counter()
                    assert await there.kill(run_id, "pushed", now=datetime.now(UTC))
                    with anyio.fail_after(10):  # a bound for a loaded machine, not the target
                        await handle.killed.wait()
                    latencies.append(time.perf_counter() - t0)
                    assert handle.reason == "pushed"
                # the push vouches for the runs it has not announced: no query per call
                assert here.killed_reason(run_id) == "pushed"
            tg.cancel_scope.cancel()
    finally:
        other.dispose()
    with capsys.disabled():
        print(f"\nkill pushed across engines in {[round(x * 1000, 1) for x in latencies]} ms")
    assert not here.pushed  # the listener's end is noticed: calls check the store again


async def test_alive_run_is_cached_only_briefly(db: Engine, db_url: str) -> None:
    other = make_engine(db_url, pool_size=2)
    try:
        _run(db, "run_c")
        here, there = KillSwitch(db, poll_s=0.01), KillSwitch(other)
        assert not here.is_killed("run_c")
        await there.kill("run_c", "elsewhere", now=datetime.now(UTC))
        with anyio.fail_after(2):
            while not here.is_killed("run_c"):
                await anyio.sleep(0.005)
        assert here.killed_reason("run_c") == "elsewhere"
    finally:
        other.dispose()


async def test_deadline_kills_in_flight_run_and_refuses_later_calls(db: Engine) -> None:
    _run(db, "run_d")
    ks = KillSwitch(db)
    now = datetime.now(UTC)
    with ks.track("run_d", deadline=now - timedelta(milliseconds=1)) as handle:
        await ks.poll_once()
        assert handle.killed.is_set() and handle.reason == DURATION_REASON
    assert _status(db, "run_d") == ("killed", DURATION_REASON)

    _run(db, "run_e")
    with pytest.raises(RunKilledError, match="max_duration_s"):
        await ks.ensure_alive("run_e", now=now, deadline=now - timedelta(seconds=1))
    await ks.ensure_alive("run_f", now=now, deadline=now + timedelta(seconds=1))


async def test_kill_run_for_the_api_cli_and_console(db: Engine) -> None:
    _run(db, "run_api")
    ks = KillSwitch(db)
    with ks.track("run_api") as handle:
        now = datetime.now(UTC)
        assert await kill_run(ks, "run_api", actor="key_1", reason="manual", now=now)
        assert handle.killed.is_set()
    assert not await kill_run(ks, "run_api", actor="key_1", reason="manual", now=now)
    with pytest.raises(NotFoundError):
        await kill_run(ks, "run_nope", actor="key_1", reason="manual", now=now)


async def test_calls_of_a_watched_run_need_no_query_and_still_see_remote_kills(
    db: Engine, db_url: str
) -> None:
    other = make_engine(db_url, pool_size=2)
    queries: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        queries.append(statement)

    _run(db, "run_w")
    # a slow poll, so that a loaded test machine cannot stretch one gap past "alive" (2 polls)
    here, there = KillSwitch(db, poll_s=0.5), KillSwitch(other)
    try:
        async with here.lifespan():
            await here.ensure_alive("run_w", now=datetime.now(UTC))  # starts watching it
            with anyio.fail_after(5):
                while time.monotonic() - here._synced_at > 0.1:
                    await anyio.sleep(0.01)  # until a poll has just vouched for every run
            event.listen(db, "before_cursor_execute", count)
            for _ in range(20):
                await here.ensure_alive("run_w", now=datetime.now(UTC))
            event.remove(db, "before_cursor_execute", count)
            assert queries == []
            await there.kill("run_w", "remote", now=datetime.now(UTC))
            with anyio.fail_after(2):
                while True:
                    try:
                        await here.ensure_alive("run_w", now=datetime.now(UTC))
                    except RunKilledError as exc:
                        assert "remote" in exc.message
                        break
                    await anyio.sleep(0.005)
    finally:
        other.dispose()


async def test_a_run_that_ended_can_still_be_killed_and_stays_killed(db: Engine) -> None:
    """Ending a run (a root span with an end time, or POST .../end) must not dodge a kill."""
    ks = KillSwitch(db)
    now = datetime.now(UTC)
    for status in ("succeeded", "failed"):
        run_id = f"run_ended_{status}"
        _run(db, run_id)
        with db.begin() as conn:
            assert set_run_status(conn, run_id, status, now=now)
        assert await ks.kill(run_id, "caught later", now=now, actor="key_admin")
        assert _status(db, run_id) == ("killed", "caught later")
        with pytest.raises(RunKilledError, match="caught later"):
            await ks.ensure_alive(run_id, now=now)
        # nothing the agent reports afterwards reopens it
        with db.begin() as conn:
            assert not set_run_status(conn, run_id, "succeeded", now=now)
        assert _status(db, run_id)[0] == "killed"


async def test_an_ended_run_past_its_deadline_is_killed_by_its_next_call(db: Engine) -> None:
    ks = KillSwitch(db)
    now = datetime.now(UTC)
    _run(db, "run_late")
    with db.begin() as conn:
        set_run_status(conn, "run_late", "succeeded", now=now)
    with pytest.raises(RunKilledError, match="max_duration_s"):
        await ks.ensure_alive("run_late", now=now, deadline=now - timedelta(seconds=1))
    assert _status(db, "run_late") == ("killed", DURATION_REASON)


async def test_a_poll_is_one_query_however_many_runs_are_in_use(db: Engine, db_url: str) -> None:
    """The poll reads the kill log by time, not every watched run by an IN-list."""
    ks = KillSwitch(db)
    for i in range(300):
        with ks.track(f"run_many{i}"):
            pass
    # every engine: on SQLite the poll reads through a no-wait engine of its own
    with ks.track("run_many_live"), _statements() as queries:
        await ks.poll_once()
    reads = [q for _, q in queries if "run_kills" in q]
    assert len(reads) == 1 and " IN " not in reads[0].upper()


async def test_on_sqlite_polls_and_checks_read_on_the_event_loop_thread(
    db: Engine, db_url: str
) -> None:
    """No thread hop per check: a poll and a call's own check (its last poll too old) query on
    the loop's thread, and see a kill made by another process."""
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL reads on a worker thread, kills are pushed")
    other = make_engine(db_url, pool_size=2)
    ks = KillSwitch(db)
    _run(db, "run_t1")
    _run(db, "run_t2")
    with _statements() as seen:
        await ks.ensure_alive("run_t1", now=datetime.now(UTC))  # never polled: reads the run
        assert await KillSwitch(other).kill("run_t1", "stop", now=datetime.now(UTC))
        await ks.poll_once()
        assert ks._killed == {"run_t1": "stop"}
        assert await KillSwitch(other).kill("run_t2", "halt", now=datetime.now(UTC))
        ks._synced_at = 0.0  # the last poll is too old to vouch for run_t2
        with pytest.raises(RunKilledError, match="halt"):
            await ks.ensure_alive("run_t2", now=datetime.now(UTC))
    other.dispose()
    reads = [thread for thread, q in seen
             if q.lstrip().upper().startswith("SELECT") and "run_kills" in q]  # fmt: skip
    # the run read, the poll, the run read again: all on this (the loop's) thread
    assert reads == [threading.get_ident()] * 3


async def test_a_kill_made_before_this_process_started_is_seen(db: Engine, db_url: str) -> None:
    other = make_engine(db_url, pool_size=2)
    try:
        _run(db, "run_old_kill")
        assert await KillSwitch(other).kill("run_old_kill", "yesterday", now=datetime.now(UTC))
        fresh = KillSwitch(db)  # never polled: the first check asks the database
        with pytest.raises(RunKilledError, match="yesterday"):
            await fresh.ensure_alive("run_old_kill", now=datetime.now(UTC))
    finally:
        other.dispose()
