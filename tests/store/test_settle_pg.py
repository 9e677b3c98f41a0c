"""The SQL ledger's settle batch on PostgreSQL awaited on the event loop (budget_pg.settle_held_pg):
the counters and holds it leaves equal those of budgets.settle_many's general path on a twin of
the books; a batch with a hold that is no longer held is left to that path (charged once, no hold
freed twice); nothing goes through SQLAlchemy when every hold is held."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, select

from tether.core.budget import ScopeCap
from tether.store import budgets
from tether.store.ledger import SqlLedger
from tether.store.pg_async import AsyncPG
from tether.store.tables import reservations

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
USD = 1_000_000_000


@pytest.fixture
def pg(db: Engine) -> AsyncPG:
    if db.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite's settle batch is settle_sql's")
    return AsyncPG(db.url)


def _caps(tag: str) -> list[ScopeCap]:
    return [ScopeCap(f"run:run_{tag}", 5 * USD, 100_000, 50),
            ScopeCap(f"agent_day:a{tag}:2026-11-25", 50 * USD)]  # fmt: skip


def _state(db: Engine, tag: str) -> list[tuple[int, ...]]:
    out = []
    for c in _caps(tag):
        snap = budgets.snapshot(db, c.scope)
        assert snap is not None
        s = snap[1]
        out.append((s.spent_nusd, s.reserved_nusd, s.spent_tokens, s.reserved_tokens, s.calls))
    return out


def _statuses(db: Engine, tag: str) -> list[str]:
    with db.connect() as conn:
        rows = conn.execute(
            select(reservations.c.status)
            .where(reservations.c.run_id == f"run_{tag}")
            .order_by(reservations.c.id)
        ).scalars()
        return list(rows)  # fmt: skip


async def test_a_batch_on_the_loop_leaves_the_books_as_the_general_path(
    pg: AsyncPG, db: Engine
) -> None:
    threads: set[int] = set()

    def seen(*_: object) -> None:
        threads.add(threading.get_ident())

    async with pg.lifespan():
        fast, slow = SqlLedger(db, pg=pg), SqlLedger(db)
        for ledger, tag in ((fast, "f"), (slow, "s")):
            held = [
                await ledger.reserve(_caps(tag), amount_nusd=400_000_000, tokens=900,
                                     run_id=f"run_{tag}", now=NOW)
                for _ in range(6)
            ]  # fmt: skip
            batch = [(r, 100_000_000 + i, 300 + i) for i, r in enumerate(held[:5])]
            if ledger is slow:
                await ledger.settle_many(batch, now=NOW)
                continue
            event.listen(Engine, "before_cursor_execute", seen)
            try:
                await ledger.settle_many(batch, now=NOW)
            finally:
                event.remove(Engine, "before_cursor_execute", seen)
    assert threads == set()  # the fast batch went through no SQLAlchemy statement
    assert _state(db, "f") == _state(db, "s")
    assert sorted(_statuses(db, "f")) == sorted(_statuses(db, "s")) == ["held"] + ["settled"] * 5
    assert _state(db, "f")[0] == (500_000_010, 400_000_000, 1510, 900, 6)


async def test_a_batch_with_a_hold_no_longer_held_takes_the_general_path(
    pg: AsyncPG, db: Engine
) -> None:
    async with pg.lifespan():
        ledger = SqlLedger(db, pg=pg, ttl_s=10)
        held = [await ledger.reserve(_caps("w"), amount_nusd=400_000_000, tokens=900,
                                     run_id="run_w", now=NOW) for _ in range(3)]  # fmt: skip
        await ledger.settle_many([(held[0], 100, 1)], now=NOW)
        # the second hold expires and is swept: its call gave its room back
        assert await ledger.sweep_expired(NOW + timedelta(seconds=11)) >= 2
        # a batch naming a settled hold, a swept one and (after the sweep) the third
        await ledger.settle_many([(r, 100, 1) for r in held], now=NOW)
    spent, reserved, stokens, rtokens, calls = _state(db, "w")[0]
    # each call charged once; nothing is held any more; swept calls counted again when settled
    assert (spent, reserved, stokens, rtokens) == (300, 0, 3, 0)
    assert calls == 3
    assert set(_statuses(db, "w")) == {"settled"}
