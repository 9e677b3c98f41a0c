"""The budget ledgers behind one Protocol (store/ledger.py): the SQL ledger on SQLite and
PostgreSQL, the Redis ledger with its spend durable in either. The no-overshoot properties are
written once and run against every ledger (`new_ledger`); the Redis specifics follow."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event

from tests.conftest import REDIS_URL
from tether.core.budget import CounterState, ScopeCap, fits
from tether.core.errors import BudgetExceededError
from tether.store import budget_sql, budgets, writelock
from tether.store.engine import make_engine
from tether.store.ledger import Ledger, SqlLedger, make_ledger
from tether.store.migrate import upgrade
from tether.store.pg_async import AsyncPG
from tether.store.redis_ledger import RedisLedger

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
USD = 1_000_000_000


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"t{uuid.uuid4().hex[:10]}:"
    yield p
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(p + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def rclient() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture(params=["sql", "redis"])
async def new_ledger(
    request: pytest.FixtureRequest, db: Engine, db_url: str, prefix: str
) -> AsyncIterator[Callable[[], Ledger]]:
    """Makes ledgers over one set of books, each with connections of its own as two gateway
    processes would have: a SqlLedger on its own engine (SQLite, PostgreSQL), or a RedisLedger
    on its own Redis client, its spend durable in that database."""
    engines: list[Engine] = []
    clients: list[redis.asyncio.Redis] = []

    def make(ttl_s: int = budgets.DEFAULT_TTL_S) -> Ledger:
        if request.param == "sql":
            engines.append(make_engine(db_url, pool_size=5))
            return SqlLedger(engines[-1], ttl_s=ttl_s)
        clients.append(redis.asyncio.Redis.from_url(REDIS_URL))
        return RedisLedger(clients[-1], db, prefix=prefix, ttl_s=ttl_s)

    yield make
    for engine in engines:
        engine.dispose()
    for client in clients:
        await client.aclose()


@pytest.fixture
def ledger(new_ledger: Callable[[], Ledger]) -> Ledger:
    return new_ledger()


async def test_concurrent_reservations_from_two_ledgers_never_overshoot(
    new_ledger: Callable[[], Ledger], db: Engine
) -> None:
    """200 requests of random worst cases against $1.00, from two ledgers (two processes)."""
    ledgers = [new_ledger(), new_ledger()]
    rng = random.Random(7)
    sizes = [rng.randint(1_000_000, 80_000_000) for _ in range(200)]
    caps = [ScopeCap("run:run_c", USD), ScopeCap("global_day:2026-11-25", 3 * USD),
            ScopeCap("user_day:u:2026-11-25", 2 * USD)]  # fmt: skip

    async def one(i: int) -> tuple[int, bool]:
        ledger = ledgers[i % 2]
        try:
            r = await ledger.reserve(caps, amount_nusd=sizes[i], tokens=0, run_id="run_c",
                                     now=NOW)  # fmt: skip
        except BudgetExceededError:
            return sizes[i], False
        await asyncio.sleep(0.001 * (i % 3))  # the upstream call: holds overlap
        await ledger.settle(r, actual_nusd=sizes[i], actual_tokens=0, now=NOW)
        return sizes[i], True

    results = await asyncio.gather(*(one(i) for i in range(200)))
    admitted = [s for s, ok in results if ok]
    refused = [s for s, ok in results if not ok]
    snap = await new_ledger().snapshot("run:run_c")  # as a third process reads it
    assert snap is not None
    spent = snap[1].spent_nusd
    assert spent == sum(admitted) <= USD
    assert snap[1].reserved_nusd == 0 and snap[1].calls == len(admitted)
    # as many as fit: every refused request would have overshot even the final spend
    assert refused and all(spent + s > USD for s in refused)
    # the settled spend is in the database, the durable truth, whichever ledger counted it
    durable = budgets.snapshot(db, "run:run_c")
    assert durable is not None and durable[1].spent_nusd == spent


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    cap=st.integers(0, 5_000),
    steps=st.lists(st.tuples(st.integers(0, 1_500), st.floats(0, 1), st.booleans()), max_size=12),
)
async def test_any_sequence_keeps_settled_spend_within_cap(
    ledger: Ledger, cap: int, steps: list[tuple[int, float, bool]]
) -> None:
    scope = f"run:{uuid.uuid4().hex}"  # hypothesis seeds `random`; uuid4 is os.urandom
    held: list[budgets.Reservation] = []
    for size, frac, settle_one in steps:
        before = await ledger.snapshot(scope)
        should_fit = fits(before[1] if before else CounterState(), ScopeCap(scope, cap), size, 0)
        try:
            held.append(await ledger.reserve([ScopeCap(scope, cap)], amount_nusd=size,
                                             tokens=size, run_id=None, now=NOW))  # fmt: skip
            assert should_fit
        except BudgetExceededError:
            assert not should_fit
        if settle_one and held:
            r = held.pop(0)
            await ledger.settle(r, actual_nusd=int(r.amount_nusd * frac), actual_tokens=0,
                                now=NOW)  # fmt: skip
        snap = await ledger.snapshot(scope)
        if snap is not None:
            state = snap[1]
            assert state.spent_nusd + state.reserved_nusd <= cap
            assert state.reserved_nusd == sum(r.amount_nusd for r in held)
    for r in held:
        await ledger.release(r, now=NOW)
    snap = await ledger.snapshot(scope)
    assert snap is None or snap[1].reserved_nusd == 0


def test_factory_picks_redis_only_when_configured(db: Engine, rclient: redis.asyncio.Redis) -> None:
    assert isinstance(make_ledger(db), SqlLedger)
    assert isinstance(make_ledger(db, rclient), RedisLedger)


async def test_no_caps_means_no_round_trip(db: Engine) -> None:
    ledger = make_ledger(db)
    r = await ledger.reserve([], amount_nusd=10, tokens=5, run_id="run_x", now=NOW)
    assert r.scopes == ()
    s = await ledger.settle(r, actual_nusd=4, actual_tokens=2, now=NOW)
    assert (s.charged_nusd, s.released_nusd, s.overrun) == (4, 6, False)
    assert (await ledger.settle(r, actual_nusd=11, actual_tokens=0, now=NOW)).overrun


async def test_redis_reserve_settle_release_and_durable_spend(
    db: Engine, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    ledger = RedisLedger(rclient, db, prefix=prefix)
    caps = [ScopeCap("run:run_r", USD, 10_000, 3), ScopeCap("global_day:2026-11-25", 5 * USD)]
    a = await ledger.reserve(caps, amount_nusd=600_000_000, tokens=100, run_id="run_r", now=NOW)
    b = await ledger.reserve(caps, amount_nusd=300_000_000, tokens=100, run_id="run_r", now=NOW)
    with pytest.raises(BudgetExceededError) as exc:
        await ledger.reserve(caps, amount_nusd=200_000_000, tokens=1, run_id="run_r", now=NOW)
    assert exc.value.details["scope"] == "run:run_r"
    assert exc.value.details["remaining_usd"] == pytest.approx(0.1)
    # the refused call held nothing, not even on the scope that had room
    day = await ledger.snapshot("global_day:2026-11-25")
    assert day is not None and day[1].reserved_nusd == 900_000_000 and day[1].calls == 2
    s = await ledger.settle(a, actual_nusd=250_000_000, actual_tokens=80, now=NOW)
    assert (s.charged_nusd, s.released_nusd, s.was_held) == (250_000_000, 350_000_000, True)
    assert await ledger.release(b, now=NOW)
    assert not await ledger.release(b, now=NOW)
    assert not (await ledger.settle(a, actual_nusd=1, actual_tokens=1, now=NOW)).was_held
    cap, st = await ledger.snapshot("run:run_r") or (None, None)
    assert cap == caps[0] and st is not None
    assert (st.spent_nusd, st.reserved_nusd, st.spent_tokens, st.calls) == (250_000_000, 0, 80, 1)
    # the settled spend is in the database too, the durable truth
    durable = budgets.snapshot(db, "run:run_r")
    assert durable is not None and (durable[1].spent_nusd, durable[1].calls) == (250_000_000, 1)


async def test_counter_lost_from_redis_is_seeded_from_the_database(
    db: Engine, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    ledger = RedisLedger(rclient, db, prefix=prefix)
    caps = [ScopeCap("run:run_s", USD)]
    r = await ledger.reserve(caps, amount_nusd=900_000_000, tokens=0, run_id="run_s", now=NOW)
    await ledger.settle(r, actual_nusd=900_000_000, actual_tokens=0, now=NOW)
    await rclient.delete(prefix + "b:run:run_s")  # Redis restarted without persistence
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(caps, amount_nusd=100_000_001, tokens=0, run_id="run_s", now=NOW)
    await ledger.reserve(caps, amount_nusd=100_000_000, tokens=0, run_id="run_s", now=NOW)


async def test_redis_sweep_releases_expired_holds(
    db: Engine, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    ledger = RedisLedger(rclient, db, prefix=prefix, ttl_s=10)
    caps = [ScopeCap("run:run_w", USD)]
    r = await ledger.reserve(caps, amount_nusd=USD, tokens=0, run_id="run_w", now=NOW)
    assert await ledger.sweep_expired(NOW + timedelta(seconds=5)) == 0
    assert await ledger.sweep_expired(NOW + timedelta(seconds=11)) == 1
    snap = await ledger.snapshot("run:run_w")
    assert snap is not None and (snap[1].reserved_nusd, snap[1].calls) == (0, 0)
    late = await ledger.settle(r, actual_nusd=7, actual_tokens=0, now=NOW)  # it came back
    assert late.charged_nusd == 7 and not late.was_held
    snap = await ledger.snapshot("run:run_w")
    assert snap is not None and (snap[1].spent_nusd, snap[1].calls) == (7, 1)


async def test_a_settle_batch_settles_each_hold_once(
    new_ledger: Callable[..., Ledger], db: Engine
) -> None:
    """settle_many (the settle writer's batch) settles every hold of a batch (one for the run,
    two for the day), skips one already settled, charges a swept one without freeing it
    twice, and the batch's spend is in the database (the Redis ledger's durable copy)."""
    ledger = new_ledger(ttl_s=10)
    run, day = ScopeCap("run:run_m", USD), ScopeCap("global_day:2026-11-25", 5 * USD)
    a = await ledger.reserve([run, day], amount_nusd=400, tokens=40, run_id="run_m", now=NOW)
    b = await ledger.reserve([day], amount_nusd=300, tokens=30, run_id=None, now=NOW)
    c = await ledger.reserve([day], amount_nusd=200, tokens=20, run_id=None,
                             now=NOW + timedelta(seconds=30))  # fmt: skip
    await ledger.settle(b, actual_nusd=100, actual_tokens=10, now=NOW)
    assert await ledger.sweep_expired(NOW + timedelta(seconds=11)) == 1  # a, not c
    await ledger.settle_many([(a, 350, 35), (b, 999, 99), (c, 150, 15)], now=NOW)
    r = await ledger.snapshot("run:run_m")
    d = await ledger.snapshot("global_day:2026-11-25")
    assert r is not None and d is not None
    assert (r[1].spent_nusd, r[1].reserved_nusd, r[1].calls) == (350, 0, 1)
    assert (d[1].spent_nusd, d[1].reserved_nusd, d[1].spent_tokens, d[1].reserved_tokens,
            d[1].calls) == (600, 0, 60, 0, 3)  # fmt: skip
    durable = budgets.snapshot(db, "global_day:2026-11-25")
    assert durable is not None and (durable[1].spent_nusd, durable[1].calls) == (600, 3)


async def test_default_namespace_is_per_database(db: Engine, tmp_path: Path) -> None:
    clients = [redis.asyncio.Redis.from_url(REDIS_URL) for _ in range(3)]
    a, b = RedisLedger(clients[0], db), RedisLedger(clients[1], db)
    second = make_engine(f"sqlite:///{tmp_path / 'second.db'}")
    upgrade(second)
    other = RedisLedger(clients[2], second)
    try:
        assert a.prefix == b.prefix != other.prefix
        assert a.prefix.startswith("tether:")
        caps = [ScopeCap("global_day:2026-11-25", USD)]
        await a.reserve(caps, amount_nusd=USD, tokens=0, run_id=None, now=NOW)
        with pytest.raises(BudgetExceededError):
            await b.reserve(caps, amount_nusd=1, tokens=0, run_id=None, now=NOW)
        await other.reserve(caps, amount_nusd=USD, tokens=0, run_id=None, now=NOW)
    finally:
        for ledger in (a, other):
            keys = [k async for k in clients[0].scan_iter(ledger.prefix + "*")]
            if keys:
                await clients[0].delete(*keys)
        for c in clients:
            await c.aclose()
        second.dispose()


async def test_a_batch_of_held_holds_settles_on_shared_scopes(
    new_ledger: Callable[..., Ledger], db: Engine
) -> None:
    """The common batch (every hold still held; on SQLite the plain-SQL path on the loop): each
    run's counter and the shared day counter get exactly their calls' real cost and free
    exactly their holds; a second settle of the same batch changes nothing."""
    ledger = new_ledger()
    day = ScopeCap("agent_day:a:2026-11-25", 10 * USD)
    holds = [
        await ledger.reserve([ScopeCap(f"run:run_{i % 3}", USD), day], amount_nusd=1000 + i,
                             tokens=100 + i, run_id=f"run_{i % 3}", now=NOW)
        for i in range(9)
    ]  # fmt: skip
    await ledger.settle_many([(r, 500 + i, 50 + i) for i, r in enumerate(holds)], now=NOW)
    await ledger.settle_many([(r, 7, 7) for r in holds], now=NOW)
    for k in range(3):
        snap = await ledger.snapshot(f"run:run_{k}")
        assert snap is not None
        mine = range(k, 9, 3)
        assert (snap[1].spent_nusd, snap[1].reserved_nusd, snap[1].spent_tokens,
                snap[1].reserved_tokens, snap[1].calls) == (
            sum(500 + i for i in mine), 0, sum(50 + i for i in mine), 0, 3)  # fmt: skip
    d = await ledger.snapshot(day.scope)
    assert d is not None
    assert (d[1].spent_nusd, d[1].reserved_nusd, d[1].reserved_tokens, d[1].calls) == (
        sum(500 + i for i in range(9)), 0, 0, 9)  # fmt: skip
    durable = budgets.snapshot(db, day.scope)
    assert durable is not None and durable[1].spent_nusd == sum(500 + i for i in range(9))


async def test_sqlite_reserves_waiting_for_the_writer_lock_are_held_in_one_transaction(
    db: Engine,
) -> None:
    """20 reserves arrive while another thread writes (the span writer); when it lets the lock
    go they are held together (one BEGIN) in arrival order: exactly the 12 that fit, each
    refusal naming what was left after the ones before it, nothing held for the refused."""
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL reserves run concurrently on row locks")
    ledger = SqlLedger(db)
    begins: list[str] = []

    def trace(statement: str) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    def traced(dbapi_conn: Any, *_: Any) -> None:  # every connection a reserve may use
        dbapi_conn.set_trace_callback(trace)

    raw = budget_sql._nowait_connection(db)
    traced(raw.driver_connection)
    event.listen(db.pool, "checkout", traced)
    caps = [ScopeCap("run:run_g", 12 * 1000), ScopeCap("agent_day:a:2026-11-25", USD)]
    locked, release = threading.Event(), threading.Event()

    def writer() -> None:
        with writelock.span_writer(db):
            locked.set()
            release.wait(5)

    thread = threading.Thread(target=writer)
    thread.start()
    locked.wait(5)

    async def one(i: int) -> budgets.Reservation | BudgetExceededError:
        try:
            return await ledger.reserve(caps, amount_nusd=1000, tokens=1, run_id="run_g", now=NOW)
        except BudgetExceededError as exc:
            return exc

    tasks = [asyncio.create_task(one(i)) for i in range(20)]
    await asyncio.sleep(0.05)  # all of them in line
    assert not any(t.done() for t in tasks)
    release.set()
    results = await asyncio.gather(*tasks)
    await asyncio.to_thread(thread.join)
    event.remove(db.pool, "checkout", traced)
    raw.driver_connection.set_trace_callback(None)
    held = [r for r in results if isinstance(r, budgets.Reservation)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert results[:12] == held and len(refused) == 8  # first come, first held
    assert all(e.details["scope"] == "run:run_g" and e.details["remaining_usd"] == 0
               for e in refused)  # fmt: skip
    assert 1 <= len(begins) <= 2  # one batch (two if the lock came free mid-way)
    for scope in ("run:run_g", "agent_day:a:2026-11-25"):
        snap = await ledger.snapshot(scope)
        assert snap is not None and (snap[1].reserved_nusd, snap[1].calls) == (12_000, 12)
    with db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id FROM reservations WHERE status = 'held'").all()
    assert {r[0] for r in rows} == {r.id for r in held}


async def test_sqlite_reserves_of_one_loop_turn_share_a_commit_while_calls_are_in_flight(
    db: Engine,
) -> None:
    """With a call of this process in flight, the reserves that arrive in the same turn of the
    event loop are held in one transaction (fails before: one BEGIN each); with none in flight
    a reserve is held alone at once."""
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL reserves run concurrently on row locks")
    ledger = SqlLedger(db)
    caps = [ScopeCap("run:run_t", 100 * 1000), ScopeCap("agent_day:a:2026-11-25", USD)]
    begins: list[str] = []

    def trace(statement: str) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    def traced(dbapi_conn: Any, *_: Any) -> None:
        dbapi_conn.set_trace_callback(trace)

    raw = budget_sql._nowait_connection(db)
    traced(raw.driver_connection)
    event.listen(db.pool, "checkout", traced)
    try:
        first = await ledger.reserve(caps, amount_nusd=1000, tokens=1, run_id="run_t", now=NOW)
        assert len(begins) == 1  # alone, nothing else in flight
        held = await asyncio.gather(*(
            ledger.reserve(caps, amount_nusd=1000, tokens=1, run_id="run_t", now=NOW)
            for _ in range(10)))  # fmt: skip
        assert len(begins) == 2  # the ten together
        await ledger.settle_many([(r, 500, 1) for r in (first, *held)], now=NOW)
        begins.clear()
        alone = await ledger.reserve(caps, amount_nusd=1000, tokens=1, run_id="run_t", now=NOW)
        assert len(begins) == 1
    finally:
        event.remove(db.pool, "checkout", traced)
        raw.driver_connection.set_trace_callback(None)
    snap = await ledger.snapshot("run:run_t")
    assert snap is not None
    assert (snap[1].spent_nusd, snap[1].reserved_nusd, snap[1].calls) == (5500, 1000, 12)
    assert len({r.id for r in (first, *held, alone)}) == 12


async def test_redis_ledger_on_postgresql_keeps_its_durable_side_on_the_event_loop(
    db: Engine, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    """With the server's async pool open, a settle batch's spend reaches the database in one
    statement awaited on the loop, and a counter lost from Redis is seeded from it there."""
    if db.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: the async pool is PostgreSQL's")
    pg = AsyncPG(db.url)
    threads: set[int] = set()

    def seen(*_: object) -> None:
        threads.add(threading.get_ident())

    async with pg.lifespan():
        ledger = RedisLedger(rclient, db, prefix=prefix, pg=pg)
        caps = [ScopeCap("run:run_p", USD), ScopeCap("agent_day:a:2026-11-25", 5 * USD)]
        held = [await ledger.reserve(caps, amount_nusd=300_000_000, tokens=10, run_id="run_p",
                                     now=NOW) for _ in range(3)]  # fmt: skip
        event.listen(Engine, "before_cursor_execute", seen)  # SQLAlchemy: worker threads
        try:
            await ledger.settle_many([(r, 250_000_000, 8) for r in held], now=NOW)
            await rclient.delete(prefix + "b:run:run_p")  # Redis lost the run's counter
            with pytest.raises(BudgetExceededError) as exc:
                await ledger.reserve(caps, amount_nusd=250_000_001, tokens=0, run_id="run_p",
                                     now=NOW)  # fmt: skip
            await ledger.reserve(caps, amount_nusd=250_000_000, tokens=0, run_id="run_p", now=NOW)
        finally:
            event.remove(Engine, "before_cursor_execute", seen)
    assert threads == set()  # nothing went through SQLAlchemy
    assert exc.value.details["scope"] == "run:run_p"
    for scope in ("run:run_p", "agent_day:a:2026-11-25"):
        durable = budgets.snapshot(db, scope)
        assert durable is not None
        assert (durable[1].spent_nusd, durable[1].spent_tokens, durable[1].calls) == (
            750_000_000, 24, 3)  # fmt: skip
