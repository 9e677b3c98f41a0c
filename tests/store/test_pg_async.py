"""AsyncPG (store/pg_async.py) on the real PostgreSQL: one statement's first row on a kept
connection; a connection that died while idle is replaced without the caller noticing; a refused
statement raises and leaves the pool usable."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import Engine, text

from tether.store.pg_async import AsyncPG, NotCommitted


@pytest.fixture
def pg(db: Engine) -> AsyncPG:
    if db.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite runs the checkpoint statements inline")
    return AsyncPG(db.url, pool_size=2)


def test_first_rows_on_kept_connections(pg: AsyncPG, db: Engine) -> None:
    async def main() -> None:
        async with pg.lifespan():
            assert await pg.first("SELECT %(a)s::int + 1", {"a": 1}) == (2,)
            assert await pg.first("SELECT 1 WHERE false", {}) is None
            # the schema of the engine's URL (search_path in its options) is the one used
            with db.connect() as conn:
                schema = conn.execute(text("SELECT current_schema()")).scalar()
            assert await pg.first("SELECT current_schema()", {}) == (schema,)
            pid = await pg.first("SELECT pg_backend_pid()", {})
            assert await pg.first("SELECT pg_backend_pid()", {}) == pid  # reused
            with db.connect() as conn:  # the server drops it while idle
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid[0]})
            await asyncio.sleep(0.2)
            again = await pg.first("SELECT pg_backend_pid()", {})
            assert again is not None and again != pid
            with pytest.raises(psycopg.errors.DivisionByZero):
                await pg.first("SELECT 1 / %(z)s::int", {"z": 0})
            assert await pg.first("SELECT pg_backend_pid()", {}) == again  # still usable
            both = await asyncio.gather(
                *(pg.first("SELECT pg_sleep(0.05), 1", {}) for _ in range(4))
            )
            assert [row[1] for row in both] == [1, 1, 1, 1]
            assert len(pg._idle) <= pg.pool_size
        assert pg._idle == [] and not pg.ready

    asyncio.run(main())


def test_a_transaction_is_sent_again_only_when_it_cannot_have_committed(
    pg: AsyncPG, db: Engine
) -> None:
    """transaction(): a kept connection found dead before COMMIT was sent is replaced and the
    work run once more; a connection lost after its COMMIT is never sent again (it may have
    committed); a refused statement leaves the connection kept."""
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE tx_probe (n int)"))
    calls: list[int] = []

    async def insert(conn: psycopg.AsyncConnection) -> int:  # type: ignore[type-arg]
        calls.append(1)
        try:
            await conn.execute("INSERT INTO tx_probe VALUES (1)")
            cur = await conn.execute("SELECT pg_backend_pid()")
            row = await cur.fetchone()
        except psycopg.OperationalError as exc:
            raise NotCommitted from exc
        await conn.commit()
        assert row is not None
        return int(row[0])

    async def commit_then_die(conn: psycopg.AsyncConnection) -> None:  # type: ignore[type-arg]
        calls.append(1)
        await conn.execute("INSERT INTO tx_probe VALUES (2)")
        await conn.commit()
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    async def refused(conn: psycopg.AsyncConnection) -> None:  # type: ignore[type-arg]
        try:
            await conn.execute("INSERT INTO tx_probe VALUES (1 / 0)")
        except psycopg.Error:
            await conn.rollback()
            raise

    async def main() -> None:
        async with pg.lifespan():
            pid = await pg.transaction(insert)
            assert await pg.transaction(insert) == pid  # kept
            with db.connect() as c:  # the server drops it while idle
                c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            await asyncio.sleep(0.2)
            calls.clear()
            assert await pg.transaction(insert) != pid
            assert len(calls) == 2  # the first try failed before any COMMIT: sent again
            calls.clear()
            with pytest.raises(psycopg.OperationalError):
                await pg.transaction(commit_then_die)
            assert len(calls) == 1  # committed, then lost: never sent again
            with pytest.raises(psycopg.errors.DivisionByZero):
                await pg.transaction(refused)
            assert len(pg._idle_tx) == 1  # the refused one was rolled back and kept
        assert pg._idle_tx == []

    asyncio.run(main())
    with db.connect() as conn:
        rows = conn.execute(text("SELECT n FROM tx_probe ORDER BY n")).scalars().all()
    assert rows == [1, 1, 1, 2]
