"""budgets.reserve_async (the gateway's reserve awaited on the event loop, PostgreSQL): the same
books as budgets.reserve, the same refusal, no overshoot against concurrent reserves from
worker threads, and a kept connection that died while idle is replaced without holding twice."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
import pytest
from sqlalchemy import Engine, select, text

from tether.core.budget import ScopeCap
from tether.core.errors import BudgetExceededError
from tether.store import budget_pg, budget_sql, budgets
from tether.store.ledger import SqlLedger
from tether.store.pg_async import AsyncPG
from tether.store.tables import reservations

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
USD = 1_000_000_000
T = TypeVar("T")


@pytest.fixture
def pg(db: Engine) -> AsyncPG:
    if db.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite reserves on the loop's thread (nowait)")
    return AsyncPG(db.url, tx_size=4)


def _run(pg: AsyncPG, fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        async with pg.lifespan():
            return await fn()

    return asyncio.run(main())


def _reserve(pg: AsyncPG, db: Engine, caps: list[ScopeCap], amount: int, rid: str,
             tokens: int = 0) -> Awaitable[budgets.Reservation]:  # fmt: skip
    return budgets.reserve_async(pg, db, caps, reservation_id=rid, amount_nusd=amount,
                                 tokens=tokens, run_id="run_1", now=NOW, ttl_s=60)  # fmt: skip


def _held(db: Engine) -> dict[str, str]:
    with db.connect() as conn:
        return dict(conn.execute(select(reservations.c.id, reservations.c.status)).all())


def test_reserve_async_keeps_the_same_books_and_refuses_alike(pg: AsyncPG, db: Engine) -> None:
    caps = [ScopeCap("agent_day:a:2026-11-25", 5 * USD), ScopeCap("run:run_1", USD, 1000, 2)]

    async def main() -> None:
        r = await _reserve(pg, db, caps, 700_000_000, "rsv_a", tokens=400)
        assert r.scopes == ("agent_day:a:2026-11-25", "run:run_1") and r.run_id == "run_1"
        with pytest.raises(BudgetExceededError) as exc:
            await _reserve(pg, db, caps, 400_000_000, "rsv_b")
        err = exc.value
        assert err.http_status == 402 and err.details["scope"] == "run:run_1"
        assert err.details["remaining_usd"] == pytest.approx(0.3)
        assert "run:run_1" in err.message and "$0.300000 left" in err.message
        with pytest.raises(BudgetExceededError) as exc:  # a token cap, on fresh caps
            await _reserve(pg, db, [ScopeCap("run:run_1", USD, 500, 2)], 1, "rsv_t", 101)
        assert exc.value.details["remaining_tokens"] == 100
        # the refusal rolled back the agent scope's take too, and held nothing
        snap = budgets.snapshot(db, "agent_day:a:2026-11-25")
        assert snap is not None and (snap[1].reserved_nusd, snap[1].calls) == (700_000_000, 1)
        assert _held(db) == {"rsv_a": "held"}
        budgets.settle(db, r, actual_nusd=700_000_000, actual_tokens=400, now=NOW)
        with pytest.raises(psycopg.errors.UniqueViolation):  # a refused statement, with room
            await _reserve(pg, db, caps, 0, "rsv_a")
        await _reserve(pg, db, caps, 300_000_000, "rsv_c")  # exactly what is left fits
        with pytest.raises(BudgetExceededError, match="no LLM calls left"):
            await _reserve(pg, db, caps, 0, "rsv_d")

    _run(pg, main)
    snap = budgets.snapshot(db, "run:run_1")
    assert snap is not None
    assert (snap[1].spent_nusd, snap[1].reserved_nusd, snap[1].calls) == (
        700_000_000,
        300_000_000,
        2,
    )
    assert snap[1].spent_tokens == 400 and snap[1].reserved_tokens == 0
    assert _held(db) == {"rsv_a": "settled", "rsv_c": "held"}


def test_async_and_thread_reserves_together_never_overshoot(pg: AsyncPG, db: Engine) -> None:
    """120 reserves on the loop and 80 from worker threads (another process) against $1.00."""
    rng = random.Random(11)
    sizes = [rng.randint(1_000_000, 80_000_000) for _ in range(200)]
    caps = [ScopeCap("run:run_c", USD), ScopeCap("global_day:2026-11-25", 3 * USD)]
    ledger = SqlLedger(db, pg=pg)

    def on_thread(i: int) -> tuple[int, bool]:
        try:
            budgets.reserve(db, caps, reservation_id=f"rsv_t{i}", amount_nusd=sizes[i],
                            tokens=0, run_id="run_c", now=NOW, ttl_s=60)  # fmt: skip
        except BudgetExceededError:
            return sizes[i], False
        return sizes[i], True

    async def on_loop(i: int) -> tuple[int, bool]:
        try:
            r = await ledger.reserve(caps, amount_nusd=sizes[i], tokens=0, run_id="run_c",
                                     now=NOW)  # fmt: skip
        except BudgetExceededError:
            return sizes[i], False
        assert r is not None
        return sizes[i], True

    async def main() -> list[tuple[int, bool]]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(8) as pool:
            threads = [loop.run_in_executor(pool, on_thread, i) for i in range(120, 200)]
            return list(await asyncio.gather(*(on_loop(i) for i in range(120)), *threads))

    results = _run(pg, main)
    admitted = [s for s, ok in results if ok]
    refused = [s for s, ok in results if not ok]
    snap = budgets.snapshot(db, "run:run_c")
    assert snap is not None
    assert snap[1].reserved_nusd == sum(admitted) <= USD and snap[1].calls == len(admitted)
    assert refused and all(snap[1].reserved_nusd + s > USD for s in refused)
    assert len(_held(db)) == len(admitted)


def test_a_connection_dead_while_idle_is_replaced_and_the_hold_taken_once(
    pg: AsyncPG, db: Engine
) -> None:
    caps = [ScopeCap("run:run_1", USD)]
    ledger = SqlLedger(db, pg=pg)

    async def main() -> None:
        assert await ledger.reserve([], amount_nusd=5, tokens=0, run_id="r", now=NOW)
        await _reserve(pg, db, caps, 100, "rsv_a")
        [conn] = pg._idle_auto
        with db.connect() as c:  # a restart, an idle timeout
            c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": conn.info.backend_pid})
        await asyncio.sleep(0.2)
        await _reserve(pg, db, caps, 100, "rsv_b")
        assert pg._idle_auto and pg._idle_auto[0] is not conn

    _run(pg, main)
    snap = budgets.snapshot(db, "run:run_1")
    assert snap is not None and (snap[1].reserved_nusd, snap[1].calls) == (200, 2)
    assert _held(db) == {"rsv_a": "held", "rsv_b": "held"}
    # without the pool open (no lifespan) the ledger reserves on a worker thread
    held = asyncio.run(ledger.reserve(caps, amount_nusd=1, tokens=0, run_id="r", now=NOW))
    assert held.scopes == ("run:run_1",) and _held(db)[held.id] == "held"


def test_a_reserve_sent_again_after_it_committed_holds_once(pg: AsyncPG, db: Engine) -> None:
    """budget_pg._send as pg.resendable sends it a second time (`resent`) after a connection
    died, when the first try may have committed: the hold it finds is the same hold, taken once,
    whether the room is still there (the INSERT fails on the hold's id) or the first try took
    the last of it (no room, but the hold exists). Not resent, the same id is refused."""
    caps = [ScopeCap("agent_day:a:2026-11-25", 5 * USD), ScopeCap("run:run_r", USD, None, 2)]

    async def send(rid: str, resent: bool) -> object:
        pre, stmt, values = budget_pg._params(
            db, caps, caps, reservation_id=rid, amount_nusd=USD // 4, tokens=0, run_id="run_r",
            now=NOW, expires=NOW,
        )  # fmt: skip
        conn = await psycopg.AsyncConnection.connect(pg.conninfo, autocommit=True)
        try:
            return await budget_pg._send(conn, pre, stmt, values, caps, resent=resent)
        finally:
            await conn.close()

    async def main() -> None:
        assert await send("rsv_1", False) is None
        assert await send("rsv_1", True) is None  # room left: the INSERT's conflict says held
        with pytest.raises(psycopg.errors.UniqueViolation):
            await send("rsv_1", False)
        assert await send("rsv_2", False) is None  # the run's last call
        assert await send("rsv_2", True) is None  # no room left, and the hold is there
        refused = await send("rsv_3", True)  # no room, no hold of that id: refused
        assert isinstance(refused, budget_sql.Refused) and refused.cap.scope == "run:run_r"

    asyncio.run(main())
    snap = budgets.snapshot(db, "run:run_r")
    assert snap is not None and (snap[1].reserved_nusd, snap[1].calls) == (USD // 2, 2)
    assert _held(db) == {"rsv_1": "held", "rsv_2": "held"}
